# Session 13: LAB_GPU_X_BULK=all against off on the 8B-shaped model, tiles fixed (no tuner in the way).
import os, sys
import numpy as np
import lab._engine as E
M = "/tmp/lab_models/synthetic-llama-3.1-8b_fp16"
T = "qkv=w8.u1.r2,o_proj=w8.u1.r4,gate_up=w8.u1.r4,down=w8.u1.r4,lm_head=w8.u1.r4"
prompt = np.random.default_rng(512).integers(0, 128256, 513)
ref = {}
for label, env in (("cfg2", {"LAB_GPU_MATVEC_CONFIG": "2"}), ("tiles", {"LAB_GPU_TILES": T})):
    for xb in ("off", "all", "down"):
        for k in ("LAB_GPU_MATVEC_CONFIG", "LAB_GPU_TILES"):
            os.environ.pop(k, None)
        os.environ.update(env)
        os.environ["LAB_GPU_X_BULK"] = xb
        eng = E.Engine("gpu_opt", M, 700)
        eng.prefill(prompt[:512])
        steps = np.stack([eng.decode(int(t)) for t in prompt[512:513]] + [eng.decode(int(prompt[5]))])
        del eng
        if xb == "off":
            ref[label] = steps
            print(label, "off: done", flush=True)
        else:
            r = ref[label]
            print(label, xb, "rel", [float(np.linalg.norm(steps[i] - r[i]) / np.linalg.norm(r[i])) for i in range(2)], flush=True)
