# Session 13: why LAB_GPU_X_BULK=all was not bitwise on the 8B model. Small models, several dims and tiles.
import os, sys, tempfile, pathlib
import numpy as np
sys.path.insert(0, "/tmp/gpu_bundle/tests")
from engine_cases import CASES, write_model
from lab import _engine

def run(d, tokens, env):
    for k in ("LAB_GPU_MATVEC_CONFIG", "LAB_GPU_X_BULK", "LAB_GPU_GRAPH", "LAB_GPU_PDL"):
        os.environ.pop(k, None)
    os.environ["LAB_GPU_PREFILL"] = "simple"
    os.environ.update(env)
    eng = _engine.Engine("gpu_opt", str(d), 128)
    eng.prefill(tokens[:20])
    out = np.stack([eng.decode(int(t)) for t in tokens[20:]])
    return out, eng.variant

tmp = pathlib.Path(tempfile.mkdtemp())
for hidden in (512, 1024, 2048, 4096):
    cfg = dict(CASES["gqa4_hd64_ropeparams"], hidden_size=hidden, intermediate_size=1024, num_hidden_layers=2)
    d = write_model(tmp / f"m{hidden}", cfg, "fp16", seed=5)
    tokens = np.random.default_rng(3).integers(0, cfg["vocab_size"], 30)
    for ci in ("2", "0", "3", "17"):
        want, _ = run(d, tokens, {"LAB_GPU_MATVEC_CONFIG": ci})
        res = []
        for extra in ({}, {"LAB_GPU_GRAPH": "0", "LAB_GPU_PDL": "0"}):
            got, v = run(d, tokens, dict({"LAB_GPU_MATVEC_CONFIG": ci, "LAB_GPU_X_BULK": "all"}, **extra))
            wb, _ = run(d, tokens, dict({"LAB_GPU_MATVEC_CONFIG": ci}, **extra))
            rel = float(np.linalg.norm(got - wb) / np.linalg.norm(wb))
            res.append(f"{'plain' if extra else 'graph'} rel {rel:.1e} maxabs {float(np.abs(got - wb).max()):.1e} first-step-differs {int(np.argmax(np.any(got != wb, axis=1))) if (got != wb).any() else -1}")
        print(f"hidden {hidden} config {ci}: " + "; ".join(res), flush=True)
