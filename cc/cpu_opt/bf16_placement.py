#!/usr/bin/env python3
"""Where bf16 products may go: the torch reference with bf16 operands in chosen linear layers.

cpu_opt's bf16 prefill rounds a matmul's weights (fp16 -> bf16) and inputs (fp32 -> bf16) and sums in
fp32. This script does the same to transformers' LlamaForCausalLM in fp32 (F.linear on bf16-rounded
operands, fp32 everywhere else) for the random models of py/tests/engine_cases.py (fp16 weights, the
test's seeds and tokens), and prints the logits' relative error against the unmodified reference for
each placement: the table behind cc/cpu_opt/README.md, "bf16 where the error budget allows". Where the
engine module is importable it then prints cpu_opt's own prefill error under each LAB_CPU_PREFILL.

  bazel build //py:bench
  PYTHONPATH=bazel-bin/py/bench.runfiles/llm_inference_lab/py:py/tests python3 cc/cpu_opt/bf16_placement.py
"""

import tempfile
import zlib
from pathlib import Path

import numpy as np


def bf(t):
    import torch

    return t.to(torch.bfloat16).float()


PLACEMENTS = {  # label -> which nn.Linear (by module name) gets bf16 operands
    "mlp": lambda n: ".mlp." in n,
    "mlp+o": lambda n: ".mlp." in n or "o_proj" in n,
    "mlp+v": lambda n: ".mlp." in n or "v_proj" in n,
    "q/k/v/o": lambda n: "self_attn" in n,
    "all layers": lambda n: "lm_head" not in n,
}


def main():
    import torch.nn.functional as F
    from torch import nn

    from engine_cases import CASES, SEQ_LEN, STD
    from lab import tolerances
    from lab.reference import load_reference, reference_logits
    from lab.synthetic import write_random_model

    engine_rows = []
    print("| model | " + " | ".join(PLACEMENTS) + " | all layers, weights only | all layers, inputs only |")
    print("| --- |" + " --- |" * (len(PLACEMENTS) + 2))
    for name in sorted(CASES):
        d = Path(tempfile.mkdtemp())
        write_random_model(d, CASES[name], precision="fp16", seed=zlib.crc32(name.encode()) % 1000, std=STD,
                           progress=False)
        ref = load_reference(d, dtype="float32")
        tokens = np.random.default_rng(7).integers(0, CASES[name]["vocab_size"], SEQ_LEN)
        base = reference_logits(ref, tokens)
        linears = {n: m for n, m in ref.named_modules() if isinstance(m, nn.Linear)}

        def err(select, round_w=True, round_x=True):
            for n, m in linears.items():
                if select(n):
                    m.forward = (lambda x, W=m.weight: F.linear(bf(x) if round_x else x, bf(W) if round_w else W))
            try:
                return tolerances.rel_error(reference_logits(ref, tokens), base)
            finally:
                for m in linears.values():
                    m.__dict__.pop("forward", None)

        row = [err(sel) for sel in PLACEMENTS.values()]
        row += [err(PLACEMENTS["all layers"], round_x=False), err(PLACEMENTS["all layers"], round_w=False)]
        print(f"| {name} | " + " | ".join(f"{e:.2e}" for e in row) + " |", flush=True)
        engine_rows.append((name, engine_errors(d, tokens, base)))
    if any(e for _, e in engine_rows):
        print("\ncpu_opt itself, prefill logits (all positions) against the same reference:\n")
        print("| model | " + " | ".join(f"LAB_CPU_PREFILL={m}" for m in MODES) + " |")
        print("| --- |" + " --- |" * len(MODES))
        for name, errs in engine_rows:
            print(f"| {name} | " + " | ".join(errs.get(m, "n/a") for m in MODES) + " |")


MODES = ("fp32", "mlp", "bf16")


def engine_errors(d, tokens, base) -> dict:
    """cpu_opt's prefill error under each LAB_CPU_PREFILL ({} without the engine module; "n/a" where the
    CPU lacks AVX512-BF16)."""
    import os

    from lab import tolerances
    try:
        from lab.engine import open_engine
    except ImportError:
        return {}
    out = {}
    for mode in MODES:
        os.environ["LAB_CPU_PREFILL"] = mode
        try:
            out[mode] = f"{tolerances.rel_error(open_engine('cpu_opt', d, 128).prefill(tokens, all_logits=True), base):.2e}"
        except ValueError as e:
            out[mode] = f"n/a ({e})"
        finally:
            os.environ.pop("LAB_CPU_PREFILL", None)
    return out


if __name__ == "__main__":
    main()
