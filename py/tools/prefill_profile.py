"""Where gpu_opt's prefill time goes: TTFT and device time per step (attention's share) at several
prompt lengths, FlashAttention against the same engine's unfused attention.

  python3 tools/prefill_profile.py --model_dir /tmp/m8b --lengths 1024,8192,32768 --out_dir OUT

Each configuration runs in its own process (the engine reads LAB_GPU_* when it is created) with
LAB_GPU_PREFILL_PROFILE=1; the engine's per-step line is parsed into a Markdown table + JSON.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Model directory.", required=True)
flags.DEFINE_list("lengths", ["1024", "8192", "32768"], "Prompt lengths.")
flags.DEFINE_list("modes", ["flash", "unfused"], "Attention modes (LAB_GPU_ATTN).")
flags.DEFINE_string("unfused_max", "32768", "Longest prompt for the unfused mode (its score matrix grows as n^2).")
flags.DEFINE_integer("repeats", 3, "Timed prefills per configuration (median).")
flags.DEFINE_string("out_dir", ".", "Where prefill_profile.{json,md} go.")

CHILD = r"""
import sys, time, numpy as np
from lab.engine import open_engine
n, reps = int(sys.argv[2]), int(sys.argv[3])
eng = open_engine("gpu_opt", sys.argv[1], max_context=n + 8)
toks = np.random.default_rng(0).integers(0, eng.config["vocab_size"], n)
times = []
for i in range(reps + 1):
    eng.reset(); t = time.perf_counter(); eng.prefill(toks); times.append(time.perf_counter() - t)
print("TTFT_MS", sorted(times[1:])[len(times[1:]) // 2] * 1000, min(times[1:]) * 1000, max(times[1:]) * 1000)
"""

LINE = re.compile(r"gpu_opt prefill profile: (\d+) tokens, (\S+) path.*?chunk (\d+), device ms ([\d.]+):(.*)")


def run_one(n: int, mode: str) -> dict:
    env = dict(os.environ, LAB_GPU_PREFILL_PROFILE="1", LAB_GPU_ATTN=mode)
    r = subprocess.run([sys.executable, "-c", CHILD, FLAGS.model_dir, str(n), str(FLAGS.repeats)], env=env,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return {"n": n, "mode": mode, "error": r.stderr.strip().splitlines()[-1:]}
    ttft = [float(x) for x in r.stdout.split("TTFT_MS")[1].split()]
    profiles = [m for m in (LINE.search(l) for l in r.stderr.splitlines()) if m]
    last = profiles[-1]  # the last timed prefill
    steps = dict(zip(last.group(5).split()[::2], map(float, last.group(5).split()[1::2])))
    total = float(last.group(4))
    attn = steps.get("attention", 0.0)
    return {"n": n, "mode": mode, "chunk": int(last.group(3)), "ttft_ms": ttft[0], "ttft_min_ms": ttft[1],
            "ttft_max_ms": ttft[2], "device_ms": total, "steps_ms": steps, "attention_share": attn / total if total else 0}


def main(argv):
    del argv
    rows = []
    for n in map(int, FLAGS.lengths):
        for mode in FLAGS.modes:
            if mode == "unfused" and n > int(FLAGS.unfused_max):
                continue
            print(f"prefill {n} tokens, {mode} attention ...", file=sys.stderr, flush=True)
            rows.append(run_one(n, mode))
    out = Path(FLAGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prefill_profile.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = ["| tokens | attention | chunk | TTFT ms median (min–max) | device ms | attention ms | attention share |",
          "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['n']} | {r['mode']} | — | error: {r['error']} | | | |")
            continue
        md.append(f"| {r['n']} | {r['mode']} | {r['chunk']} | {r['ttft_ms']:.1f} ({r['ttft_min_ms']:.1f}–{r['ttft_max_ms']:.1f}) "
                  f"| {r['device_ms']:.1f} | {r['steps_ms'].get('attention', 0):.1f} | {100 * r['attention_share']:.1f}% |")
    for n in sorted({r["n"] for r in rows}):
        f = next((r for r in rows if r["n"] == n and r["mode"] == "flash" and "error" not in r), None)
        u = next((r for r in rows if r["n"] == n and r["mode"] == "unfused" and "error" not in r), None)
        if f and u and f["steps_ms"].get("attention"):
            md.append(f"\nAt {n} tokens FlashAttention is {u['steps_ms']['attention'] / f['steps_ms']['attention']:.2f}x "
                      f"faster than the unfused attention (attention device time), "
                      f"{u['ttft_ms'] / f['ttft_ms']:.2f}x on TTFT.")
    (out / "prefill_profile.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    app.run(main)
