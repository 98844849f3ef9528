#!/usr/bin/env python3
"""cpu_opt under different environment knobs, side by side and interleaved (A/B on a noisy machine).

Each variant is a label and environment settings (LAB_CPU_MATVEC, LAB_CPU_ATTN, LAB_CPU_PREFILL, ...),
read when its engine is created; all engines are created first, then timed in rounds, the order rotated
every round, so a slow minute of a shared machine, or the position in a round, hits every variant alike. Per round and variant: a prefill of
--prefill random tokens (wall clock of the call), and/or --decode greedy steps (engine.generate) after
a --context-token prompt. Prints each variant's median (min) and, against the first variant, the
median of the paired per-round differences and how many rounds the variant won.

  PYTHONPATH=bazel-bin/py/bench.runfiles/llm_inference_lab/py (after `bazel build //py:bench`; or the GPU
  bundle's folder) python3 cc/cpu_opt/variants.py --model_dir M \\
      --variant token=LAB_CPU_ATTN=token --variant tile=LAB_CPU_ATTN=tile --prefill 512 --rounds 12
"""

import argparse
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--variant", action="append", required=True, help="LABEL=KEY=VALUE[,KEY=VALUE...] or LABEL=")
    ap.add_argument("--prefill", type=int, default=0, help="prompt tokens of the timed prefill (0: none)")
    ap.add_argument("--decode", type=int, default=0, help="greedy steps timed per round (0: none)")
    ap.add_argument("--context", type=int, default=128, help="prompt before the timed decode steps")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--read_probe", action="store_true",
                    help="after each round, a CPU read-bandwidth sample (lab.bench.ceilings.read_probe): the "
                         "machine's phase, printed per round with every variant's numbers")
    a = ap.parse_args()
    if not (a.prefill or a.decode):
        ap.error("nothing to time: give --prefill and/or --decode")
    from lab.engine import open_engine

    engines = {}
    for spec in a.variant:
        label, _, envs = spec.partition("=")
        env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            max_ctx = max(a.prefill, a.context + a.rounds * a.decode + 1) + 1
            engines[label] = open_engine("cpu_opt", a.model_dir, max_ctx)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        print(f"{label}: {engines[label].variant}", flush=True)
    vocab = int(next(iter(engines.values())).config["vocab_size"])
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, max(a.prefill, a.context))
    times = {k: {"prefill": [], "decode": []} for k in engines}
    probe = None
    if a.read_probe:
        from lab.bench.ceilings import read_probe

        probe, method = read_probe()
        print(f"read probe after each round: {method}", flush=True)
    phases = []
    for label, e in engines.items():  # warm-up, and the decode prompt
        e.prefill(prompt[:a.prefill or a.context])
    order = list(engines.items())
    for r in range(a.rounds):
        # Rotated every round: whichever variant runs first after the read probe (which allocates and frees
        # 512 MiB) or after the other variants would otherwise always be the same one. Without the rotation,
        # two runs of one A/B with the variants listed in opposite orders each favoured the one listed
        # second (bench_results/devcpu-20261127-layout: 15 of 24, then 17 of 24 rounds).
        for label, e in order[r % len(order):] + order[:r % len(order)]:
            if a.prefill:
                e.reset()
                t0 = time.perf_counter()
                e.prefill(prompt[:a.prefill])
                times[label]["prefill"].append(time.perf_counter() - t0)
            if a.decode:
                e.reset()
                e.prefill(prompt[:a.context])
                t0 = time.perf_counter()
                e.generate(int(prompt[0]), a.decode)
                times[label]["decode"].append(a.decode / (time.perf_counter() - t0))
        if probe:
            phases.append(float(np.mean(probe())))
    first = next(iter(engines))
    if phases:
        print("\nper round: read GB/s sampled after it, then each variant (prefill ms / decode tok/s)")
        for i, g in enumerate(phases):
            cells = [f"{label} " + "/".join(f"{times[label][w][i] * (1e3 if w == 'prefill' else 1):.1f}"
                                             for w in ("prefill", "decode") if times[label][w]) for label in engines]
            print(f"  round {i + 1:2d}: {g:5.1f} GB/s  " + "  ".join(cells), flush=True)
    for what, unit, scale, better in (("prefill", "ms", 1e3, -1), ("decode", "tok/s", 1.0, 1)):
        if not times[first][what]:
            continue
        print(f"\n{what} ({'%d tokens' % a.prefill if what == 'prefill' else '%d steps after %d' % (a.decode, a.context)},"
              f" {a.rounds} interleaved rounds):")
        base = np.array(times[first][what]) * scale
        for label in engines:
            v = np.array(times[label][what]) * scale
            best = v.min() if better < 0 else v.max()
            line = f"  {label:12s} median {np.median(v):8.2f} {unit} (best {best:.2f})"
            if label != first:
                d = (v - base) * better  # > 0: this variant did better in that round
                line += f"  vs {first}: median paired difference {np.median(d) * better:+.2f} {unit}, better in {(d > 0).sum()} of {len(d)}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
