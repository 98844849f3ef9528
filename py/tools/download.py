"""Downloads a Llama checkpoint from the Hugging Face hub and converts it into the lab's format.

  bazel run //py:download -- --model=meta-llama/Llama-3.1-8B --precision=fp16
fetches config, safetensors and tokenizer files (resumable; token from HF_TOKEN or `hf auth login`;
gated models need their license accepted on huggingface.co), then writes
data/tokenizers/<slug>/ and data/models/<slug>_<precision>/ (slug: '/' -> '_').
"""

import os
import sys
from pathlib import Path

from absl import app, flags

try:
    import lab  # noqa: F401
except ImportError:  # plain `python py/tools/download.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import paths
from lab.convert import DownloadError, download_and_convert

flags.DEFINE_string("model", "meta-llama/Llama-3.1-8B", "Hugging Face repo id.")
flags.DEFINE_enum("precision", "fp16", ["fp32", "fp16"], "Precision of model.bin.")
flags.DEFINE_string("cache_dir", "", "Hub cache dir; default the hub's (HF_HOME / ~/.cache/huggingface).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    model_dir = paths.model_dir(FLAGS.model, FLAGS.precision)
    tok_dir = paths.tokenizer_dir(FLAGS.model)
    cache = Path(os.environ.get("BUILD_WORKING_DIRECTORY", ".")) / FLAGS.cache_dir if FLAGS.cache_dir else None
    try:
        path = download_and_convert(FLAGS.model, FLAGS.precision, model_dir, tok_dir, cache_dir=cache)
    except DownloadError as e:
        sys.exit(f"download: {e}")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"download: conversion of {FLAGS.model} failed: {e}")
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) and tokenizer {tok_dir}")


if __name__ == "__main__":
    app.run(main)
