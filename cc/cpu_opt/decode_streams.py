#!/usr/bin/env python3
"""cpu_opt decode with one weight stream per thread or four (LAB_CPU_MATVEC=1|4|auto), side by side.

The engine picks the faster loop at start by timing both on its own weights (cpu_opt_engine.cc,
PickMatVec); this script checks that choice against what each loop gives end to end: for each
setting, a fresh engine, a random prompt of --context tokens, then --repeats blocks of --tokens greedy
steps (engine.generate), wall clock, each block's tok/s printed, alternating settings --rounds times.

  PYTHONPATH=<bundle or bazel-bin/py> python3 cc/cpu_opt/decode_streams.py --model_dir M [--context 128]
"""

import argparse
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--settings", default="1,4,auto")
    a = ap.parse_args()
    from lab.engine import open_engine

    vocab = None
    for rnd in range(a.rounds):
        for mode in a.settings.split(","):
            os.environ["LAB_CPU_MATVEC"] = mode
            t0 = time.perf_counter()
            eng = open_engine("cpu_opt", a.model_dir, a.context + (a.repeats + 1) * a.tokens + 1)
            opened = time.perf_counter() - t0
            vocab = vocab or int(eng.config["vocab_size"])
            eng.prefill(np.random.default_rng(rnd).integers(0, vocab, a.context))
            eng.generate(1, a.tokens)  # warm-up block
            rates = []
            for b in range(a.repeats):
                t0 = time.perf_counter()
                eng.generate(int(np.random.default_rng(b).integers(0, vocab)), a.tokens)
                rates.append(a.tokens / (time.perf_counter() - t0))
            print(f"LAB_CPU_MATVEC={mode:4s} {eng.variant:45s} open {opened:5.2f} s  tok/s median "
                  f"{np.median(rates):7.2f} ({min(rates):.2f}-{max(rates):.2f})", flush=True)
            del eng


if __name__ == "__main__":
    main()
