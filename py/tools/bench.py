"""The lab's benchmark: every stage measured the same way, against the machine's ceilings and peers.

  bazel run //py:bench -- --engines cpu_fp32,cpu_opt --peers hf_eager
  bazel run //py:bench -- --engines gpu_opt --device cuda --peers hf_eager,hf_compile \
      --model synthetic-llama-3.1-8b --precision fp16
  bazel run //py:bench -- --engines cpu_fp32,cpu_opt --ppl_text /usr/share/common-licenses/GPL-3
  GPU bundle (no Bazel): python3 tools/bench.py ...   (PYTHONPATH holding lab/)

Writes bench.json (raw numbers, machine), bench.md (the table), roofline.png to --out_dir
(default bench_results/<host>-<date>/); --readme PATH:NAME puts the table between <!-- bench:NAME -->
and <!-- /bench:NAME --> in PATH. Exit code 2 if an engine or peer failed (the others are still measured);
perplexity mode (--ppl_text) exits 1 if an engine is flagged. Bad input (a missing or invalid model folder, a
GPU engine or --device cuda without a CUDA GPU, no tokenizer for --ppl_text) ends with a one-line error, exit 1.
"""

import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path

try:
    import lab  # noqa: F401
except ImportError:  # run as a plain script from the source tree or the bundle: lab/ is beside tools/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags, logging

from lab.cli import exit_on_error

FLAGS = flags.FLAGS
flags.DEFINE_list("engines", ["cpu_fp32"], "Engines to measure (any set built into lab._engine).")
flags.DEFINE_string("model_dir", None, "Model directory (config.json + model.bin).")
flags.DEFINE_string("model", None, "Model name resolved through lab.paths (data/models/<model>_<precision>).")
flags.DEFINE_string("precision", "fp16", "Precision of the model directory for --model / the default model.")
flags.DEFINE_string("tokenizer_dir", None, "Tokenizer folder (tokenizer.json) for --ppl_text.")
flags.DEFINE_list("prompt_lengths", ["128", "512", "1024"], "TTFT: prefill lengths (random token ids).")
flags.DEFINE_list("contexts", ["128", "512", "2048"], "Decode tok/s at these contexts.")
flags.DEFINE_integer("decode_tokens", 32, "Decode steps per timed repeat.")
flags.DEFINE_list("decode_modes", ["greedy"], "How decode is timed, each mode measured: greedy (generate(): "
                  "argmax where the logits are, no host round trip on a GPU), logits (decode() per token, "
                  "logits copied to the host).")
flags.register_validator("decode_modes", lambda v: bool(v) and all(m in ("greedy", "logits") for m in v),
                         "--decode_modes: one or both of greedy, logits")
flags.DEFINE_integer("warmup", 1, "Untimed runs before the repeats.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (median and min-max reported).")
flags.DEFINE_list("peers", [], "Peers on the same weights: hf_eager, hf_compile.")
flags.DEFINE_enum("device", "cpu", ["cpu", "cuda"], "Where the peers run.")
flags.DEFINE_list("peer_dtypes", None, "Peer dtypes (default: float32,bfloat16 on cpu - best reported; float16 on cuda).")
flags.DEFINE_list("peer_attn", None, "transformers attn_implementation(s) of the peers, each measured, best "
                  "reported (default: sdpa on cpu; sdpa,eager on cuda; hf_compile uses the first).")
flags.DEFINE_string("out_dir", None, "Output folder (default bench_results/<host>-<date>/ in the repository).")
flags.DEFINE_bool("ceilings", True, "Measure the machine's ceilings in this run (--noceilings to skip).")
flags.DEFINE_bool("quick", False, "Small, short ceilings (tests, smoke runs): 256 MiB CPU / 512 MiB GPU reads, small matmuls.")
flags.DEFINE_float("cpu_read_gib", 2.0, "CPU read-bandwidth array size.")
flags.DEFINE_float("gpu_read_gib", 4.0, "GPU read-bandwidth tensor size.")
flags.DEFINE_integer("ceiling_repeats", 10, "Repeats of each ceiling measurement.")
flags.DEFINE_list("weight_precision", [], "Overrides of the per-engine weight precision table: engine=fp16,...")
flags.DEFINE_list("kv_precision", [], "Overrides of the per-engine KV-cache precision table: engine=fp32,...")
flags.DEFINE_multi_string("readme", [], "PATH:NAME - inject the Markdown table between bench:NAME markers.")
flags.DEFINE_bool("plot", True, "Write the roofline plot.")
flags.DEFINE_integer("seed", 0, "Seed of the random prompts.")
flags.DEFINE_string("ppl_text", None, "Perplexity validation mode: this text file, every engine vs cpu_fp32.")
flags.DEFINE_integer("ppl_tokens", 1024, "Perplexity mode: at most this many tokens of the text.")
flags.DEFINE_integer("ppl_window", 512, "Perplexity mode: tokens per window (a fresh sequence each).")
flags.DEFINE_integer("ppl_chunk", 128, "Perplexity mode: prefill chunk (continuing the KV cache).")
flags.DEFINE_string("from_json", None, "Re-render a finished run (bench.json: table, plot, --readme injection) "
                    "without measuring, e.g. results fetched from a GPU host.")
flags.DEFINE_list("summary", None, "Write the one-line-per-stage summary of these bench.json files (each may "
                  "end in @engine+engine to keep only those), with --readme PATH:NAME, and exit.")
flags.DEFINE_bool("interleave", True, "TTFT in paired rounds (CPU): every runner opened first and kept; per "
                  "prompt length every runner's warm-ups, then --repeats rounds of one prefill per runner, the order "
                  "rotated each round; the report gives each engine's per-round ratio to the best peer. Sequential "
                  "(each runner measured completely in turn, as with --nointerleave) where a runner is on a GPU or "
                  "the runners' weights do not fit in memory together.")
flags.DEFINE_bool("adjacent_read", True, "CPU decode: a short read-bandwidth sample (lab._membw, all threads, "
                  "--adjacent_read_mib) right after each timed block, and the decode's GB/s as % of their median "
                  "(--noadjacent_read to skip).")
flags.DEFINE_integer("adjacent_read_mib", 512, "Array size of the adjacent read-bandwidth samples, MiB.")
flags.DEFINE_integer("adjacent_read_repeats", 2, "Passes of each adjacent read-bandwidth sample (after a warm-up pass).")
flags.DEFINE_bool("ppl_torch", False, "Perplexity mode: also the torch fp32 reference (checks cpu_fp32 against it).")


def _path(p) -> Path:
    """Relative paths are relative to where `bazel run` was called from."""
    p = Path(p).expanduser()
    if not p.is_absolute():
        p = Path(os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())) / p
    return p


def _pairs(items, what):
    out = {}
    for it in items:
        if "=" not in it:
            raise app.UsageError(f"--{what} takes engine=precision, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def resolve_model():
    """(model_dir, tokenizer_dir or None, display name)."""
    from lab import paths

    tok = _path(FLAGS.tokenizer_dir) if FLAGS.tokenizer_dir else None
    if FLAGS.model_dir:
        md = _path(FLAGS.model_dir)
        if tok is None and (md / "tokenizer.json").exists():
            tok = md
        return _checked_model_dir(md, "--model_dir"), tok, md.name
    if FLAGS.model:
        md = paths.model_dir(FLAGS.model, FLAGS.precision)
        if not md.exists():
            raise app.UsageError(f"{md} does not exist: prepare it first (//py:convert, //py:synthetic)")
        if tok is None and paths.tokenizer_dir(FLAGS.model).exists():
            tok = paths.tokenizer_dir(FLAGS.model)
        return md, tok, f"{FLAGS.model} ({FLAGS.precision})"
    try:
        from lab.prepare import ensure_default_model
    except ImportError as e:
        raise app.UsageError(f"no --model_dir/--model and lab.prepare is not available ({e})")
    md, default_tok = ensure_default_model(FLAGS.precision)
    return Path(md), tok or Path(default_tok), f"{paths.DEFAULT_MODEL} ({FLAGS.precision})"


def _checked_model_dir(md: Path, flag: str) -> Path:
    """md, or FileNotFoundError naming the flag where it is no model folder (no config.json in it)."""
    if not md.is_dir():
        raise FileNotFoundError(f"{flag} {md}: no such folder (a model folder holds config.json and model.bin)")
    if not (md / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {md}: no config.json in it (a model folder holds config.json and "
                                f"model.bin: prepare one with //py:convert or //py:synthetic)")
    return md


def default_out_dir() -> Path:
    from lab.paths import repo_root

    return repo_root() / "bench_results" / f"{socket.gethostname()}-{datetime.date.today():%Y%m%d}"


def readme_targets():
    out = []
    for spec in FLAGS.readme:
        path, sep, name = spec.rpartition(":")
        if not sep or not path or not name:
            raise app.UsageError(f"--readme takes PATH:NAME, got {spec!r}")
        out.append((_path(path), name))
    return out


def run_ppl(model_dir, tok_dir, name, out_dir) -> int:
    from lab.bench import ppl_check, report
    from lab.engine import open_engine

    tokens = ppl_check.load_tokens(_path(FLAGS.ppl_text), tok_dir, FLAGS.ppl_tokens)
    engines = list(FLAGS.engines)
    if "cpu_fp32" not in engines:
        logging.info("perplexity mode: adding cpu_fp32 as the reference")
        engines.insert(0, "cpu_fp32")
    window = min(FLAGS.ppl_window, len(tokens))
    ppls, detail = {}, {}
    for e in engines:
        t0 = time.perf_counter()
        eng = open_engine(e, model_dir, max_context=window)
        res = ppl_check.engine_perplexity(eng, tokens, window, FLAGS.ppl_chunk)
        res["seconds"] = time.perf_counter() - t0
        logging.info("%s: perplexity %.4f over %d predicted tokens (%.1f s)", e, res["ppl"], res["predicted_tokens"],
                     res["seconds"])
        ppls[e], detail[e] = res["ppl"], res
        del eng
    verdicts = ppl_check.check(ppls, "cpu_fp32")
    if FLAGS.ppl_torch:
        from lab.reference import load_reference

        ref = ppl_check.torch_perplexity(load_reference(model_dir, "float32", "cpu"), tokens, window)
        logging.info("torch fp32 reference: perplexity %.4f", ref["ppl"])
        detail["torch_fp32"] = ref
        verdicts += [v for v in ppl_check.check({"torch_fp32": ref["ppl"], "cpu_fp32": ppls["cpu_fp32"]},
                                                "torch_fp32") if v["engine"] == "cpu_fp32"]
    info = report.machine_info(any(e.startswith("gpu") for e in engines))
    machine = report.machine_label(info, "cuda" if any(e.startswith("gpu") for e in engines) else "cpu")
    md = ppl_check.markdown(verdicts, machine, len(tokens), window, FLAGS.ppl_chunk, FLAGS.ppl_text)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ppl.json").write_text(json.dumps({"machine": info, "model": name, "model_dir": str(model_dir),
                                                  "text": FLAGS.ppl_text, "tokens": len(tokens), "window": window,
                                                  "chunk": FLAGS.ppl_chunk, "results": detail,
                                                  "verdicts": verdicts}, indent=1) + "\n")
    (out_dir / "ppl.md").write_text(md)
    for path, marker in readme_targets():
        report.inject_readme(path, marker, md)
    print(md)
    flagged = [v["engine"] for v in verdicts if v["flagged"]]
    if flagged:
        logging.error("perplexity FLAGGED: %s", ", ".join(flagged))
        return 1
    logging.info("perplexity: all engines within tolerance; wrote %s", out_dir)
    return 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    from lab.bench.run import Options, run_bench, write_outputs

    if FLAGS.summary:
        from lab.bench import report, summary

        md = summary.markdown(summary.summary_rows([str(_path(p)) for p in FLAGS.summary]))
        for path, name in readme_targets():
            report.inject_readme(path, name, md)
        print(md)
        return 0
    if FLAGS.from_json:
        src = _path(FLAGS.from_json)
        results = json.loads(src.read_text())
        write_outputs(results, _path(FLAGS.out_dir) if FLAGS.out_dir else src.parent, plot=FLAGS.plot,
                      readme=readme_targets(), log=logging.info)
        print(results["table_markdown"])
        return 0
    model_dir, tok_dir, name = resolve_model()
    out_dir = _path(FLAGS.out_dir) if FLAGS.out_dir else default_out_dir()
    if FLAGS.ppl_text:
        return run_ppl(model_dir, tok_dir, name, out_dir)
    quick = FLAGS.quick
    opts = Options(
        model_dir=model_dir, model_name=name, engines=FLAGS.engines,
        prompt_lengths=[int(x) for x in FLAGS.prompt_lengths], contexts=[int(x) for x in FLAGS.contexts],
        decode_tokens=FLAGS.decode_tokens, decode_modes=FLAGS.decode_modes, warmup=FLAGS.warmup,
        repeats=FLAGS.repeats, peers=FLAGS.peers,
        device=FLAGS.device, peer_dtypes=FLAGS.peer_dtypes, peer_attn=FLAGS.peer_attn, out_dir=out_dir,
        ceilings=FLAGS.ceilings,
        cpu_read_bytes=(256 << 20) if quick else int(FLAGS.cpu_read_gib * 2**30),
        gpu_read_bytes=(512 << 20) if quick else int(FLAGS.gpu_read_gib * 2**30),
        cpu_matmul_n=512 if quick else 2048, gpu_matmul_n=2048 if quick else 8192,
        ceiling_repeats=3 if quick else FLAGS.ceiling_repeats, fma_seconds=0.03 if quick else 0.2,
        weight_precision=_pairs(FLAGS.weight_precision, "weight_precision"),
        kv_precision=_pairs(FLAGS.kv_precision, "kv_precision"), seed=FLAGS.seed, plot=FLAGS.plot,
        readme=readme_targets(), interleave=FLAGS.interleave, adjacent_read=FLAGS.adjacent_read,
        adjacent_read_bytes=FLAGS.adjacent_read_mib << 20, adjacent_read_repeats=FLAGS.adjacent_read_repeats,
    )
    results = run_bench(opts, log=logging.info)
    write_outputs(results, out_dir, plot=FLAGS.plot, readme=opts.readme, log=logging.info)
    print(results["table_markdown"])
    failed = [r.get("label", r["name"]) for r in results["runners"] if r.get("error")]
    if failed:
        logging.error("runners that failed: %s (their errors are in bench.json and bench.md)", ", ".join(failed))
        return 2
    return 0


if __name__ == "__main__":
    app.run(exit_on_error(main))
