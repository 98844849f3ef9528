"""Perplexity of an engine on a text file; the last line printed is `perplexity: X`.

  bazel run //py:perplexity -- --model_dir ... --tokenizer_dir ... --engine cpu_fp32 \
      --text_file /usr/share/common-licenses/GPL-3 --max_tokens 1024
"""

import sys

from absl import app, flags

from lab.cli import exit_on_error, resolve_dirs
from lab.engine import open_engine
from lab.perplexity import engine_perplexity

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Hub-style model name; resolves the dirs under data/.")
flags.DEFINE_string("precision", "fp32", "Precision of the model file with --model or the default model.")
flags.DEFINE_string("model_dir", None, "Folder with config.json and model.bin.")
flags.DEFINE_string("tokenizer_dir", None, "Folder with tokenizer.json.")
flags.DEFINE_string("engine", "cpu_fp32", "Engine name.")
flags.DEFINE_string("text_file", "/usr/share/common-licenses/GPL-3", "Text to score.")
flags.DEFINE_integer("max_tokens", 1024, "Score the first N tokens of the text.")
flags.DEFINE_integer("window", 256, "Tokens per prefill call (bounds the logits held at once).")


def main(argv):
    del argv
    from lab.tokenizer import load_tokenizer

    model_dir, tok_dir = resolve_dirs(FLAGS.model, FLAGS.precision, FLAGS.model_dir, FLAGS.tokenizer_dir)
    with open(FLAGS.text_file, encoding="utf-8") as f:
        text = f.read()
    tokens = load_tokenizer(tok_dir).encode(text)[: FLAGS.max_tokens]
    eng = open_engine(FLAGS.engine, model_dir, max(len(tokens), 16))

    def progress(done, total):
        print(f"\r{FLAGS.engine}: {done}/{total} tokens", end="", file=sys.stderr, flush=True)

    ppl = engine_perplexity(eng, tokens, FLAGS.window, progress)
    print(file=sys.stderr)
    print(f"tokens: {len(tokens)}  engine: {FLAGS.engine}  model: {model_dir}")
    print(f"perplexity: {ppl:.6f}")


if __name__ == "__main__":
    app.run(exit_on_error(main))
