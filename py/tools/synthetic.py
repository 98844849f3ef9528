"""Writes a random-weight model at a named architecture (benchmarks and engine tests).

  bazel run //py:synthetic -- --arch=llama-3.1-8b --precision=fp16
writes data/models/synthetic-<arch>_<precision>/ and, for Llama 3 vocab archs, the Llama 3 tokenizer
to data/tokenizers/synthetic-<arch>/. Archs: llama-3.1-8b, llama-3.2-1b, tiny-llama3, tiny.
"""

import os
import sys
from pathlib import Path

from absl import app, flags

try:
    import lab  # noqa: F401
except ImportError:  # plain `python py/tools/synthetic.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import synthetic

flags.DEFINE_enum("arch", "llama-3.1-8b", sorted(synthetic.ARCHS), "Architecture (shapes and config).")
flags.DEFINE_enum("precision", "fp16", ["fp32", "fp16"], "Precision of model.bin.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("model_dir", "", "Output model dir; default data/models/synthetic-<arch>_<precision>.")
flags.DEFINE_string("tokenizer_dir", "", "Tokenizer dir; default data/tokenizers/synthetic-<arch>.")
FLAGS = flags.FLAGS


def user_path(p: str):
    """A path as the user typed it (bazel run starts us in the runfiles, not where the user was)."""
    return Path(os.environ.get("BUILD_WORKING_DIRECTORY", ".")) / os.path.expanduser(p) if p else None


def main(argv):
    del argv
    model_dir, tok_dir = synthetic.make_synthetic(
        FLAGS.arch, FLAGS.precision, FLAGS.seed, user_path(FLAGS.model_dir), user_path(FLAGS.tokenizer_dir)
    )
    size = (model_dir / "model.bin").stat().st_size / 1e9
    print(f"wrote {model_dir} ({size:.2f} GB)" + (f" and tokenizer {tok_dir}" if tok_dir else " (no tokenizer)"))


if __name__ == "__main__":
    app.run(main)
