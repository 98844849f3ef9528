"""gpu_opt's fused MLP (LAB_GPU_MLP=fused; kernels_mlp.cuh, kernel lab v14): gate/up, SiLU and down as one
kernel per layer, down split by the intermediate dimension, each block adding its partial sums into the
residual (red.global.add). Within the fp16 bound of the fp32 torch reference, near the split kernels, with
gate_up's and down's launches gone; refused, naming the need, where it cannot run. All marked `gpu`; they
skip without a CUDA GPU.
"""

import numpy as np
import pytest
from conftest import gpu_present

from engine_cases import ALL_CASES, CASES, ref_device, write_model
from lab import _engine, tolerances
from lab.reference import load_reference, reference_logits
from lab.tolerances import rel_error as rel
from test_gpu_opt_tiles import RING_MODELS, _decode_logits, _greedy_by_decode

MLP_MODELS = {
    "gqa3_hd128_llama3": ALL_CASES["gqa3_hd128_llama3"],  # 80 groups of 8 columns: 80 blocks of 8
    "gqa1_hd64_tied": ALL_CASES["gqa1_hd64_tied"],
    # 269 groups over the card's SMs (132 on an H100 / H200): slices of 16 and 24 columns, two ring widths
    "uneven_2152": dict(CASES["gqa1_hd64_tied"], intermediate_size=2152),
}


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", sorted(MLP_MODELS))
def test_gpu_opt_mlp_fused_matches_reference(tmp_path, monkeypatch, model_name):
    """Fused, the decode logits (after the simple prefill and after the tensor-core one) are within the fp16
    bound of the fp32 torch reference and of the split kernels, gate_up and down are never launched (qkv
    is, taking its fp32 x by one bulk copy, XB 3, or by the loop with LAB_GPU_X_BULK=gate_up), generate()
    gives decode()'s argmax tokens, and the step trace times one mlp launch a layer. A slice of W_down that
    does not match its block's h, a wrong column offset, a lost partial sum or x copied to the wrong place
    moves the logits far past the bound. Fused is the default (auto) here, and split where ACT16 is h."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = MLP_MODELS[model_name]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=131)
    tokens = np.random.default_rng(137).integers(0, cfg["vocab_size"], 30)
    ref = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)[20:]
    tol = tolerances.logits_rel("gpu_opt")
    split, _ = _decode_logits(d, tokens, {"LAB_GPU_MLP": "split"}, monkeypatch)
    n = {}
    fused, _ = _decode_logits(d, tokens, {"LAB_GPU_MLP": "fused"}, monkeypatch, n)
    err, err_split = rel(fused, ref), rel(fused, split)
    print(f"{model_name} fused: vs torch {err:.2e}, vs split {err_split:.2e} (split vs torch {rel(split, ref):.2e})")
    assert err < tol and err_split < tol, (err, err_split)
    assert n["gate_up"] == 0 and n["down"] == 0 and n["qkv"] > 0 and n["qkv.x_bulk"] == n["qkv"], n
    n_loop = {}
    loop, _ = _decode_logits(d, tokens, {"LAB_GPU_MLP": "fused", "LAB_GPU_X_BULK": "gate_up"}, monkeypatch, n_loop)
    assert rel(loop, ref) < tol and n_loop["qkv.x_bulk"] == 0 and n_loop["qkv"] == n["qkv"], (rel(loop, ref), n_loop)
    monkeypatch.delenv("LAB_GPU_MLP")
    monkeypatch.delenv("LAB_GPU_X_BULK")
    assert "mlp fused (v14)" in _engine.Engine("gpu_opt", str(d), 128).variant  # auto, the default
    monkeypatch.setenv("LAB_GPU_ACT16", "h")  # auto falls back to split where fused cannot run
    assert "mlp fused" not in _engine.Engine("gpu_opt", str(d), 128).variant
    monkeypatch.delenv("LAB_GPU_ACT16")
    monkeypatch.setenv("LAB_GPU_PREFILL", "tc")  # the prefill reads W_down's first copy
    eng = _engine.Engine("gpu_opt", str(d), 128)
    eng.prefill(tokens[:20])
    got = np.stack([eng.decode(int(t)) for t in tokens[20:]])
    assert rel(got, ref) < tol, rel(got, ref)
    want = _greedy_by_decode(eng, tokens[:20], tokens[20], 6)
    assert eng.generate(int(tokens[20]), 6).tolist() == want
    monkeypatch.setenv("LAB_GPU_TRACE", "1")  # the step trace times the fused kernel as one kind, mlp
    eng = _engine.Engine("gpu_opt", str(d), 128)
    eng.prefill(tokens[:20])
    for t in tokens[20:24]:
        eng.decode(int(t))
    ph = eng.phase_seconds()
    layers = cfg["num_hidden_layers"]
    assert ph["steps"] >= 4 and ph["mlp.launches"] == ph["steps"] * layers and ph["qkv.launches"] == ph["mlp.launches"]
    assert ph["gate_up.launches"] == 0 and ph["down.launches"] == 0 and ph["mlp.busy"] > 0 and ph["mlp.staged"] > 0


@pytest.mark.gpu
def test_gpu_opt_mlp_fused_refused(tmp_path, monkeypatch):
    """LAB_GPU_MLP=fused is refused, naming the need, before the engine allocates anything: without the fp16
    residual copy it reads (ACT16) or the folded norm (NORM_FOLD), and on a width that is not a multiple of
    32 (1032), where auto (the default) runs split; a bad value names the choices."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d = write_model(tmp_path / "m", ALL_CASES["gqa1_hd64_tied"], "fp16", seed=139)
    monkeypatch.setenv("LAB_GPU_MLP", "both")
    with pytest.raises(ValueError, match="LAB_GPU_MLP must be .*split or fused"):
        _engine.Engine("gpu_opt", str(d), 128)
    monkeypatch.setenv("LAB_GPU_MLP", "fused")
    for knob, value in (("LAB_GPU_ACT16", "h"), ("LAB_GPU_NORM_FOLD", "0")):
        monkeypatch.setenv(knob, value)
        with pytest.raises(ValueError, match="LAB_GPU_MLP=fused needs LAB_GPU_ACT16=all and LAB_GPU_NORM_FOLD=1"):
            _engine.Engine("gpu_opt", str(d), 128)
        monkeypatch.delenv(knob)
    wide = write_model(tmp_path / "w", RING_MODELS["width_1032_4104"], "fp16", seed=149)
    with pytest.raises(ValueError, match="LAB_GPU_MLP=fused: RingMlpKernel: H % 8 and K % 32 must be 0"):
        _engine.Engine("gpu_opt", str(wide), 128)
    monkeypatch.setenv("LAB_GPU_MLP", "auto")  # the default: split where fused cannot cut the widths
    assert "mlp fused" not in _engine.Engine("gpu_opt", str(wide), 128).variant


@pytest.mark.gpu
def test_gpu_opt_mlp_auto_falls_back_where_the_copy_does_not_fit(tmp_path, monkeypatch):
    """auto plans W_down's second copy (the fused MLP's column slices) last, and where the card cannot hold it
    beside the rest it runs the split MLP: one copy, decode still within the fp16 bound; fused, asked for, is
    refused naming the copy. A torch tensor narrows the card's free memory to half the copy's size past what
    the split engine needs (the arena's 256 MB spare included)."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    import gc

    import torch

    # Llama-3.1-8B's MLP widths (slices of 104-112 columns) on 6 layers: W_down 352 MB a copy
    cfg = dict(ALL_CASES["gqa1_hd64_tied"], hidden_size=2048, intermediate_size=14336, num_hidden_layers=6,
               num_attention_heads=32, num_key_value_heads=8)
    d = write_model(tmp_path / "m", cfg, "fp16", seed=157)
    tokens = np.random.default_rng(163).integers(0, cfg["vocab_size"], 24)
    ref = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)[20:]
    monkeypatch.setenv("LAB_GPU_PREFILL", "simple")
    monkeypatch.setenv("LAB_GPU_TUNE", "kernel")  # (no graph tuning: three engines of 1.2 GB)
    monkeypatch.setenv("LAB_GPU_MLP", "split")
    eng = _engine.Engine("gpu_opt", str(d), 128)
    s = eng.stats()
    need = s["weight_bytes"] + s["kv_cache_bytes"] + s["activation_bytes"]
    copy = cfg["num_hidden_layers"] * cfg["hidden_size"] * cfg["intermediate_size"] * 2
    del eng
    gc.collect()
    torch.cuda.empty_cache()  # (the reference's memory back to the card)
    hold = torch.cuda.mem_get_info()[0] - (need + (256 << 20) + copy // 2)
    assert hold > 0
    block = torch.empty(hold, dtype=torch.uint8, device="cuda")
    try:
        monkeypatch.setenv("LAB_GPU_MLP", "auto")
        eng = _engine.Engine("gpu_opt", str(d), 128)
        assert "mlp fused" not in eng.variant and eng.stats()["weight_copy_bytes"] == 0, eng.variant
        eng.prefill(tokens[:20])
        got = np.stack([eng.decode(int(t)) for t in tokens[20:]])
        assert rel(got, ref) < tolerances.logits_rel("gpu_opt"), rel(got, ref)
        assert eng.launch_counts()["gate_up"] > 0
        del eng
        gc.collect()
        monkeypatch.setenv("LAB_GPU_MLP", "fused")
        with pytest.raises(_engine.DeviceError, match="W_down's column slices for the fused MLP .*LAB_GPU_MLP=split"):
            _engine.Engine("gpu_opt", str(d), 128)
    finally:
        del block
        torch.cuda.empty_cache()
    monkeypatch.setenv("LAB_GPU_MLP", "auto")  # with the memory back, auto runs fused again
    assert "mlp fused (v14)" in _engine.Engine("gpu_opt", str(d), 128).variant
