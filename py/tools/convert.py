"""Converts a Hugging Face Llama checkpoint dir into the lab's model format.

  bazel run //py:convert -- --hf_dir=/path/to/Llama-3.2-1B --precision=fp16
writes data/models/<name>_<precision>/ (config.json, model.bin) and copies the tokenizer files to
data/tokenizers/<name>/, where <name> is --name (default: the folder name of --hf_dir).
"""

import os
import sys
from pathlib import Path

from absl import app, flags

try:
    import lab  # noqa: F401
except ImportError:  # plain `python py/tools/convert.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import paths
from lab.convert import convert_hf_checkpoint

flags.DEFINE_string("hf_dir", None, "HF checkpoint dir: config.json + model.safetensors or shards + index.", required=True)
flags.DEFINE_string("model_dir", "", "Output model dir; default data/models/<name>_<precision>.")
flags.DEFINE_string("tokenizer_dir", "", "Where to copy tokenizer files; default data/tokenizers/<name>.")
flags.DEFINE_string("name", "", "Model name for the default dirs; default the folder name of --hf_dir.")
flags.DEFINE_enum("precision", "fp16", ["fp32", "fp16"], "Precision of model.bin.")
flags.DEFINE_bool("tokenizer", True, "Copy the tokenizer files (tokenizer.json must exist).")
FLAGS = flags.FLAGS


def user_path(p: str) -> Path:
    """A path as the user typed it (bazel run starts us in the runfiles, not where the user was)."""
    return Path(os.environ.get("BUILD_WORKING_DIRECTORY", ".")) / os.path.expanduser(p)


def main(argv):
    del argv
    hf_dir = user_path(FLAGS.hf_dir)
    name = FLAGS.name or hf_dir.resolve().name
    model_dir = user_path(FLAGS.model_dir) if FLAGS.model_dir else paths.model_dir(name, FLAGS.precision)
    tok_dir = None
    if FLAGS.tokenizer:
        tok_dir = user_path(FLAGS.tokenizer_dir) if FLAGS.tokenizer_dir else paths.tokenizer_dir(name)
    try:
        path = convert_hf_checkpoint(hf_dir, model_dir, FLAGS.precision, tokenizer_dir=tok_dir)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"convert: {e}")
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB)" + (f" and tokenizer {tok_dir}" if tok_dir else ""))


if __name__ == "__main__":
    app.run(main)
