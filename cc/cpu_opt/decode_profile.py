#!/usr/bin/env python3
"""Where a cpu_opt decode step's time goes: its parts timed per thread (LAB_CPU_PROFILE=1), round by
round next to a CPU read-bandwidth sample, so that the machine's phase can be told apart.

Per round: the --context-token prompt prefilled afresh, then --tokens greedy steps (engine.generate), the
engine's cumulative
phase_seconds() read before and after, then a read sample (lab.bench.ceilings.read_probe). Per part of
the step: the threads' mean time in their own work and in the barrier that ends the part, ms per token;
for the weight products also the bytes they stream per token over their work time (GB/s) against the
read sample of the round. Rounds are grouped by that sample (--fast_gbps: the dev VM's fast phase reads
~55 GB/s, its slow one ~30; README "The fast phase").

  PYTHONPATH=bazel-bin/py/bench.runfiles/llm_inference_lab/py (after `bazel build //py:bench`; or the GPU
  bundle's folder) python3 cc/cpu_opt/decode_profile.py --model_dir M --context 512 --rounds 24 --out DIR

Writes DIR/decode_profile.json and DIR/decode_profile.md and prints the table.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

PARTS = ["vector", "qkv", "rope_cache", "attention", "o_proj", "gate_up", "down", "lm_head"]


def bytes_per_token(cfg, attended):
    """Bytes each part reads per token: fp16 weights (2 bytes) for the products, the fp32 K and V cache
    rows of every layer for attention (each kv head's rows once; its query heads re-read them from cache)."""
    from lab.bench.counting import kv_elements, product_elements

    return dict({k: 2 * v for k, v in product_elements(cfg).items()}, attention=4 * kv_elements(cfg, attended))


def summarize(rounds, nbytes):
    """Medians over rounds of each part's ms/token (work, wait), its GB/s over its work time and that
    against the round's read sample; the step's total and what the region itself adds."""
    med = lambda xs: float(np.median(xs)) if xs else float("nan")
    out = {"rounds": len(rounds), "read_gbps": med([r["read_gbps"] for r in rounds]),
           "step_ms": med([r["step_ms"] for r in rounds]), "parts": {}}
    out["tok_s"] = 1e3 / out["step_ms"] if out["step_ms"] == out["step_ms"] else float("nan")
    total_bytes = sum(nbytes.values())
    out["step_gbps"] = med([total_bytes / r["step_ms"] / 1e6 for r in rounds])
    out["step_pct_of_read"] = med([100 * total_bytes / r["step_ms"] / 1e6 / r["read_gbps"] for r in rounds])
    for p in PARTS:
        work = [r["ms"][p + ".work"] for r in rounds]
        wait = [r["ms"][p + ".wait"] for r in rounds]
        d = {"work_ms": med(work), "wait_ms": med(wait),
             "share": med([(r["ms"][p + ".work"] + r["ms"][p + ".wait"]) / r["step_ms"] for r in rounds])}
        if p in nbytes and p != "vector":
            gb = [nbytes[p] / (r["ms"][p + ".work"] * 1e6) for r in rounds if r["ms"][p + ".work"] > 0]
            d["work_gbps"] = med(gb)
            d["work_pct_of_read"] = med([100 * nbytes[p] / (r["ms"][p + ".work"] * 1e6) / r["read_gbps"]
                                         for r in rounds if r["ms"][p + ".work"] > 0])
        out["parts"][p] = d
    out["threads_sum_ms"] = sum(v["work_ms"] + v["wait_ms"] for v in out["parts"].values())
    return out


def table(name, s, nbytes):
    lines = [f"### {name}: {s['rounds']} rounds, read sample {s['read_gbps']:.1f} GB/s (median), "
             f"step {s['step_ms']:.3f} ms = {s['tok_s']:.1f} tok/s, {s['step_gbps']:.1f} GB/s = "
             f"{s['step_pct_of_read']:.0f}% of the read sample", "",
             "| part | MB/token | work ms | wait ms | share of step | GB/s in its work | % of read sample |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in PARTS:
        d = s["parts"][p]
        mb = f"{nbytes[p] / 1e6:.1f}" if p in nbytes else "—"
        gb = f"{d['work_gbps']:.1f}" if "work_gbps" in d else "—"
        pct = f"{d['work_pct_of_read']:.0f}%" if "work_pct_of_read" in d else "—"
        lines.append(f"| {p} | {mb} | {d['work_ms']:.3f} | {d['wait_ms']:.3f} | {100 * d['share']:.1f}% | {gb} | {pct} |")
    region = s["step_ms"] - s["threads_sum_ms"]
    lines += ["", f"The parts' medians summed (a thread's mean): {s['threads_sum_ms']:.3f} ms; the step's wall clock (median) "
                  f"{s['step_ms']:.3f} ms; the difference (the region's opening and closing, and medians of sums against sums of medians): {region:.3f} ms.", ""]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--context", type=int, default=128, help="prompt before the timed steps")
    ap.add_argument("--tokens", type=int, default=32, help="greedy steps per round")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--fast_gbps", type=float, default=42.0,
                    help="rounds whose read sample is at least this are the 'fast' group")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.environ["LAB_CPU_PROFILE"] = "1"
    from lab.bench.ceilings import read_probe
    from lab.engine import open_engine

    probe, method = read_probe()
    if probe is None:
        raise SystemExit(f"decode_profile: no read sample ({method}); build //py:bench first")
    max_ctx = a.context + a.tokens + 2
    eng = open_engine("cpu_opt", a.model_dir, max_ctx)
    print(f"cpu_opt: {eng.variant}; read sample: {method}", flush=True)
    if not eng.phase_seconds():
        raise SystemExit("decode_profile: the engine returned no profile (LAB_CPU_PROFILE=1 not honoured?)")
    cfg = eng.config
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, int(cfg["vocab_size"]), a.context)
    eng.prefill(prompt)
    eng.generate(int(rng.integers(0, int(cfg["vocab_size"]))), 4)  # warm-up
    rounds = []
    for i in range(a.rounds):
        eng.reset()
        eng.prefill(prompt)  # every round attends to the same context
        before = eng.phase_seconds()
        start = eng.pos
        t0 = time.perf_counter()
        eng.generate(int(rng.integers(0, int(cfg["vocab_size"]))), a.tokens)
        wall = time.perf_counter() - t0
        after = eng.phase_seconds()
        steps = after["steps"] - before["steps"]
        ms = {k: 1e3 * (after[k] - before[k]) / steps for k in after if k not in ("steps",)}
        gbps = float(np.median(probe()))
        rounds.append({"read_gbps": gbps, "step_ms": ms.pop("step"), "wall_ms": 1e3 * wall / a.tokens, "ms": ms,
                       "attended": start + (a.tokens + 1) / 2})
        print(f"round {i + 1}/{a.rounds}: {1e3 / rounds[-1]['step_ms']:.1f} tok/s, read sample {gbps:.1f} GB/s",
              flush=True)
    nbytes = bytes_per_token(cfg, float(np.mean([r["attended"] for r in rounds])))
    groups = {"all": rounds, f"fast (read >= {a.fast_gbps:g} GB/s)": [r for r in rounds if r["read_gbps"] >= a.fast_gbps],
              f"slow (read < {a.fast_gbps:g} GB/s)": [r for r in rounds if r["read_gbps"] < a.fast_gbps]}
    summary = {name: summarize(rs, nbytes) for name, rs in groups.items() if rs}
    md = [f"# cpu_opt decode step taken apart ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
          f"Model `{Path(a.model_dir).name}`, context {a.context}, {a.tokens} greedy steps per round; "
          f"engine: {eng.variant}; read sample after each round: {method}. Work: a thread's own part of the "
          "products, attention, RoPE and cache writes, or its redundant vector work (RMSNorm, residual adds, "
          "SwiGLU); wait: its time in the barrier that ends the part (the threads' mean). GB/s: the part's "
          "bytes per token over its work time.", ""]
    for name, s in summary.items():
        md += table(name, s, nbytes)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_profile.json").write_text(json.dumps(
        {"model_dir": a.model_dir, "context": a.context, "tokens": a.tokens, "variant": eng.variant,
         "read_method": method, "bytes_per_token": nbytes, "rounds": rounds, "summary": summary}, indent=1))
    (out / "decode_profile.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
