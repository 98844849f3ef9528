# Session 11 diagnostic: why bench rows at 512 read ~0.6% below decode_variants processes.
import json, subprocess, sys, time
import numpy as np
sys.path.insert(0, "/tmp/gpu_bundle")
import lab._engine as E
M = sys.argv[1]

def smi():
    q = "clocks.sm,clocks.mem,temperature.gpu,power.draw"
    return subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()

eng = E.Engine("gpu_opt", M, 2432)
print("variant", eng.variant, flush=True)
vocab = int(eng.config["vocab_size"])
rng = np.random.default_rng(5)

def blocks(n, label):
    r = []
    for _ in range(n):
        t0 = time.perf_counter(); eng.generate(int(rng.integers(0, vocab)), 64); r.append(64 / (time.perf_counter() - t0))
    print(f"{label}: pos now {eng.pos}, tok/s " + ", ".join(f"{x:.1f}" for x in r) + f" | {smi()}", flush=True)

def fresh512(label):
    eng.reset(); eng.prefill(rng.integers(0, vocab, 512)); blocks(4, label)

def benchlike(label):  # the bench's order: context 128 for 6 blocks, then on from 512
    eng.reset(); eng.prefill(rng.integers(0, vocab, 128)); blocks(6, label + " ctx128"); blocks(6, label + " ctx512")

fresh512("A fresh512, no torch")
benchlike("A benchlike, no torch")
import torch
from lab.bench import ceilings as C
C.gpu_ceilings(4 << 30, 8192, 10, log=lambda *a: None)
print("after gpu_ceilings", smi(), flush=True)
fresh512("B fresh512, after torch ceilings")
benchlike("B benchlike")
time.sleep(15)
fresh512("C fresh512, after 15 s idle")
benchlike("C benchlike")
