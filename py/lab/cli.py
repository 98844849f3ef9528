"""What the command-line tools share: the seed's model flags resolved to folders, and clean errors."""

import sys

from lab import paths


def resolve_dirs(model=None, precision="fp16", model_dir=None, tokenizer_dir=None):
    """(model_dir, tokenizer_dir) from --model_dir/--tokenizer_dir, else --model, else the embedded default."""
    if model_dir or tokenizer_dir:
        if not (model_dir and tokenizer_dir):
            raise ValueError("give both --model_dir and --tokenizer_dir (or --model, or neither)")
        return model_dir, tokenizer_dir
    if model:
        return paths.model_dir(model, precision), paths.tokenizer_dir(model)
    from lab.prepare import ensure_default_model

    return ensure_default_model(precision)


def exit_on_error(main):
    """Wraps an absl main: a user's error (bad input, missing file, GPU problem) prints one line, exit 1."""

    def run(argv):
        try:
            return main(argv)
        except (ValueError, FileNotFoundError, RuntimeError, MemoryError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return run
