"""Which knob makes w4.u2.r4 (config 3) differ from w8.u1.r4 (config 2)? hidden 2048 model, 20 prefilled + 10 decoded."""
import os, sys, time, json
import numpy as np
sys.path.insert(0, sys.argv[1])  # bundle dir
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from lab import _engine
from engine_cases import CASES, write_model
import pathlib, tempfile
cfg = dict(CASES["gqa4_hd64_ropeparams"], hidden_size=2048, intermediate_size=1024)
d = pathlib.Path(tempfile.mkdtemp()) / "m"
write_model(d, cfg, "fp16", seed=71)
tokens = np.random.default_rng(73).integers(0, cfg["vocab_size"], 30)
KEYS = ("LAB_GPU_MATVEC_CONFIG", "LAB_GPU_X_BULK", "LAB_GPU_SECOND", "LAB_GPU_PDL", "LAB_GPU_GRAPH", "LAB_GPU_EARLY",
        "LAB_GPU_DECODE_ATTN", "LAB_GPU_ACT16")
def run(env):
    for k in KEYS: os.environ.pop(k, None)
    os.environ["LAB_GPU_PREFILL"] = "simple"
    os.environ.update(env)
    e = _engine.Engine("gpu_opt", str(d), 128)
    e.prefill(tokens[:20])
    out = np.stack([e.decode(int(t)) for t in tokens[20:]])
    return out
def cmp(a, b):
    rows = [i for i in range(len(a)) if not np.array_equal(a[i], b[i])]
    if not rows: return "bitwise"
    i = rows[0]
    return f"first differing step {i}, max rel {np.abs(a-b).max()/np.abs(b).max():.1e}"
cases = [{}, {"LAB_GPU_PDL": "0"}, {"LAB_GPU_GRAPH": "0", "LAB_GPU_PDL": "0"}, {"LAB_GPU_X_BULK": "off"},
         {"LAB_GPU_SECOND": "after_x"}, {"LAB_GPU_X_BULK": "down", "LAB_GPU_SECOND": "after_x"}, {"LAB_GPU_EARLY": "off"},
         {"LAB_GPU_ACT16": "off", "LAB_GPU_X_BULK": "off"}]
for extra in cases:
    t0 = time.time()
    try:
        ref = run(dict(extra, LAB_GPU_MATVEC_CONFIG="2"))
        ref2 = run(dict(extra, LAB_GPU_MATVEC_CONFIG="2"))
        res = {c: cmp(run(dict(extra, LAB_GPU_MATVEC_CONFIG=c)), ref) for c in ("3", "4", "1", "18")}
        print(json.dumps(extra), "| w8.u1.r4 twice:", cmp(ref2, ref), "|", res, f"({time.time()-t0:.1f} s)", flush=True)
    except Exception as ex:
        print(json.dumps(extra), "error", ex, flush=True)
