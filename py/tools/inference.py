"""Generate text with one of the lab's engines, streaming tokens as they come.

  bazel run //py:inference -- --prompt "The capital of France is" --max_tokens 64
  bazel run //py:inference -- --tokenizer_dir data/tokenizers/X --model_dir data/models/X_fp16 \
      --engine cpu_opt --prompt "..." --temperature 0.8 --top_p 0.95 --seed 1

With no model flags it uses the embedded default (SmolLM2-135M-Instruct), preparing it on first use.
Ends with TTFT, prefill tok/s and decode tok/s.
"""

import sys

from absl import app, flags

from lab.cli import exit_on_error, resolve_dirs
from lab.engine import engine_names, open_engine
from lab.generate import generate
from lab.sampler import Sampler

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Hub-style model name; resolves --model_dir/--tokenizer_dir under data/.")
flags.DEFINE_string("precision", "fp16", "Precision of the model file to use with --model or the default model.")
flags.DEFINE_string("tokenizer_dir", None, "Folder with tokenizer.json.")
flags.DEFINE_string("model_dir", None, "Folder with config.json and model.bin.")
flags.DEFINE_string("engine", None, "Engine name; default: cpu_opt if built, else cpu_fp32.")
flags.DEFINE_string("prompt", "The three most useful things to know about the moon are", "Prompt text.")
flags.DEFINE_integer("max_tokens", 128, "Most tokens to generate.")
flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0 = off).")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
flags.DEFINE_integer("seed", 0, "Sampling seed: same seed, same text.")
flags.DEFINE_integer("max_context", 0, "KV-cache length (0 = min(model's, 4096)).")
flags.DEFINE_boolean("chat", False, "Wrap the prompt in the tokenizer's chat template, if it has one.")


def main(argv):
    del argv
    from lab.tokenizer import load_tokenizer

    model_dir, tok_dir = resolve_dirs(FLAGS.model, FLAGS.precision, FLAGS.model_dir, FLAGS.tokenizer_dir)
    engine_name = FLAGS.engine or ("cpu_opt" if "cpu_opt" in engine_names() else "cpu_fp32")
    tok = load_tokenizer(tok_dir)
    eng = open_engine(engine_name, model_dir, FLAGS.max_context)
    prompt = FLAGS.prompt
    if FLAGS.chat:
        prompt = tok.apply_chat_template(prompt)
    ids = tok.encode(prompt)
    sampler = Sampler(FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.seed)
    eos = eng.config["eos_token_ids"]
    print(f"[{engine_name} on {model_dir}: {len(ids)} prompt tokens]", file=sys.stderr)
    sys.stdout.write(FLAGS.prompt)
    sys.stdout.flush()
    stream = tok.stream_decoder()

    def on_token(t):
        sys.stdout.write(stream.push(t))  # text appears as soon as its UTF-8 bytes are complete
        sys.stdout.flush()

    res = generate(eng, ids, FLAGS.max_tokens, sampler, eos, on_token)
    print(stream.flush())
    print(
        f"TTFT {res.ttft_s * 1000:.1f} ms | prefill {res.prefill_tok_s:.1f} tok/s | "
        f"decode {res.decode_tok_s:.1f} tok/s | {len(res.tokens)} tokens"
        + (" (EOS)" if res.stopped_on_eos else ""),
        file=sys.stderr,
    )


if __name__ == "__main__":
    app.run(exit_on_error(main))
