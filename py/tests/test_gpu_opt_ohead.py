"""gpu_opt's o_proj released per kv head (LAB_GPU_O_HEAD; kernels_oproj.cuh).

cols (v1, OHeadKernel): attention publishes each head's splits, and o_proj, split by the columns of each kv head,
merges them and adds its rows into the residual (and into the fused MLP's input copy that qkv wrote). Within the
fp16 bound of the fp32 torch reference and of the o_proj it replaces, at one split a head, a few, and more than
one merge round of them; o_proj's matvec never launched; refused, naming the need, without the fused MLP.
rows (v2, ORowsKernel): o_proj by rows as the register tiles, x staged a head at a time as attention raises each
head's flag: bitwise the register tiles' result (with the split MLP, whose sums are deterministic).
All marked `gpu`; they skip without a CUDA GPU.
"""

import numpy as np
import pytest
from conftest import gpu_present

from engine_cases import ALL_CASES, ref_device, write_model
from lab import _engine, tolerances
from lab.reference import load_reference, reference_logits
from lab.tolerances import rel_error as rel
from test_gpu_opt_tiles import _decode_logits, _greedy_by_decode

# (group size, head_dim): G HD = 384 (two chunks a lane, a short second), 256 over 4 kv heads, 256, 1024 (the
# widest: half the rows a batch) over one kv head, so a block's rows and columns and the head offsets all vary.
OHEAD_MODELS = ["gqa3_hd128_llama3", "gqa1_hd64_tied", "gqa4_hd64_ropeparams", "gqa8_hd128"]


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", OHEAD_MODELS)
def test_gpu_opt_o_head_cols_matches_reference(tmp_path, monkeypatch, model_name):
    """With LAB_GPU_O_HEAD=cols the decode logits are within the fp16 bound of the fp32 torch reference and of
    the default o_proj, from a one-split start (4 prompt tokens) and after a 20-token prefill; o_proj's matvec
    is never launched; generate() gives decode()'s argmax tokens; the step trace times one o_proj launch a
    layer. A wrong head offset, a lost or doubled row sum, a split counted wrongly or an MLP input copy that
    misses o_proj's sums moves the logits far past the bound."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = ALL_CASES[model_name]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=151)
    tokens = np.random.default_rng(157).integers(0, cfg["vocab_size"], 30)
    ref_all = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)
    ref = ref_all[20:]
    tol = tolerances.logits_rel("gpu_opt")
    base, _ = _decode_logits(d, tokens, {"LAB_GPU_MLP": "fused", "LAB_GPU_O_HEAD": "off"}, monkeypatch)
    n = {}
    head, gen = _decode_logits(d, tokens, {"LAB_GPU_MLP": "fused", "LAB_GPU_O_HEAD": "cols"}, monkeypatch, n)
    err, err_base = rel(head, ref), rel(head, base)
    print(f"{model_name} o_head: vs torch {err:.2e}, vs o_proj {err_base:.2e} (o_proj vs torch {rel(base, ref):.2e})")
    assert err < tol and err_base < tol, (err, err_base)
    assert n["o_proj"] == 0 and n["qkv"] > 0, n
    eng = _engine.Engine("gpu_opt", str(d), 128)  # (the env of the last call: fused, o_head)
    assert "o_proj by heads (cols)" in eng.variant
    eng.prefill(tokens[:4])  # positions 4..11: one split a head
    short = np.stack([eng.decode(int(t)) for t in tokens[4:12]])
    assert rel(short, ref_all[4:12]) < tol, rel(short, ref_all[4:12])
    want = _greedy_by_decode(eng, tokens[:20], tokens[20], 6)
    assert eng.generate(int(tokens[20]), 6).tolist() == want
    monkeypatch.setenv("LAB_GPU_TRACE", "1")
    eng = _engine.Engine("gpu_opt", str(d), 128)
    eng.prefill(tokens[:20])
    for t in tokens[20:24]:
        eng.decode(int(t))
    ph = eng.phase_seconds()
    assert ph["steps"] >= 4 and ph["o_proj.launches"] == ph["steps"] * cfg["num_hidden_layers"], ph
    assert ph["o_proj.busy"] > 0 and ph["o_proj.staged"] > 0, ph


@pytest.mark.gpu
def test_gpu_opt_o_head_long_context(tmp_path, monkeypatch):
    """At 1,200-1,209 keys a head has dozens of splits: OHeadKernel's merge takes several rounds of 8. Its
    logits stay within the fp16 bound of the fp32 torch reference and of the default o_proj; rows's (with the
    split MLP) are bitwise the default's."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = ALL_CASES["long_gqa4_hd128"]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=163)
    tokens = np.random.default_rng(167).integers(0, cfg["vocab_size"], 1210)
    ref = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)[1200:]
    tol = tolerances.logits_rel("gpu_opt")
    out = {}
    for name, mlp, head in (("o_proj", "fused", "off"), ("cols", "fused", "cols"), ("split", "split", "off"),
                            ("rows", "split", "rows")):
        monkeypatch.setenv("LAB_GPU_MLP", mlp)
        monkeypatch.setenv("LAB_GPU_O_HEAD", head)
        eng = _engine.Engine("gpu_opt", str(d), 1300)
        eng.prefill(tokens[:1200])
        out[name] = np.stack([eng.decode(int(t)) for t in tokens[1200:]])
    err, err_base = rel(out["cols"], ref), rel(out["cols"], out["o_proj"])
    print(f"cols at 1200 keys: vs torch {err:.2e}, vs o_proj {err_base:.2e}")
    assert err < tol and err_base < tol, (err, err_base)
    assert np.array_equal(out["rows"], out["split"]), rel(out["rows"], out["split"])


@pytest.mark.gpu
def test_gpu_opt_o_head_refused_where_it_cannot_run(tmp_path, monkeypatch):
    """cols adds into the fused MLP's input copy: with the split MLP it is refused, naming the need, before
    anything is allocated; either mode waits for attention v2's counters, so attention v1 or v3 refuses both."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d = write_model(tmp_path / "m", ALL_CASES["gqa1_hd64_tied"], "fp16", seed=173)
    monkeypatch.setenv("LAB_GPU_O_HEAD", "cols")
    monkeypatch.setenv("LAB_GPU_MLP", "split")
    with pytest.raises(ValueError, match="LAB_GPU_O_HEAD=cols needs the fused MLP"):
        _engine.Engine("gpu_opt", str(d), 128)
    monkeypatch.delenv("LAB_GPU_MLP")
    for mode in ("cols", "rows"):
        monkeypatch.setenv("LAB_GPU_O_HEAD", mode)
        for attn in ("v1", "v3"):
            monkeypatch.setenv("LAB_GPU_DECODE_ATTN", attn)
            with pytest.raises(ValueError, match="LAB_GPU_O_HEAD needs decode attention v2 without clusters"):
                _engine.Engine("gpu_opt", str(d), 128)
    monkeypatch.setenv("LAB_GPU_O_HEAD", "both")
    monkeypatch.delenv("LAB_GPU_DECODE_ATTN")
    with pytest.raises(ValueError, match="LAB_GPU_O_HEAD must be"):
        _engine.Engine("gpu_opt", str(d), 128)


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", OHEAD_MODELS)
def test_gpu_opt_o_head_rows_bitwise(tmp_path, monkeypatch, model_name):
    """With LAB_GPU_O_HEAD=rows (and rows_all) and the split MLP, the decode logits and generate()'s tokens are bitwise those of
    the register tiles' o_proj, with attention's output in fp16 and (LAB_GPU_ACT16=h) in fp32: the same chunks
    added in the same order, x staged a head at a time. A head staged before its flag, from the wrong offset, or
    twice, changes them. One split a head (4 prompt tokens) and the fused MLP stay within the fp16 bound of the
    fp32 torch reference; the step trace times one o_proj launch a layer."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = ALL_CASES[model_name]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=181)
    tokens = np.random.default_rng(191).integers(0, cfg["vocab_size"], 30)
    ref_all = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)
    tol = tolerances.logits_rel("gpu_opt")
    for act16 in ("all", "h"):
        base, base_gen = _decode_logits(
            d, tokens, {"LAB_GPU_MLP": "split", "LAB_GPU_ACT16": act16, "LAB_GPU_O_HEAD": "off"}, monkeypatch
        )
        for mode in ("rows", "rows_all"):
            rows, rows_gen = _decode_logits(
                d, tokens, {"LAB_GPU_MLP": "split", "LAB_GPU_ACT16": act16, "LAB_GPU_O_HEAD": mode}, monkeypatch
            )
            assert np.array_equal(rows, base), (act16, mode, rel(rows, base))
            assert rows_gen.tolist() == base_gen.tolist(), (act16, mode)
    monkeypatch.setenv("LAB_GPU_O_HEAD", "rows")
    monkeypatch.delenv("LAB_GPU_MLP")
    monkeypatch.delenv("LAB_GPU_ACT16")
    eng = _engine.Engine("gpu_opt", str(d), 128)  # rows behind the default MLP (fused where it runs)
    assert "o_proj by rows, x by heads" in eng.variant
    eng.prefill(tokens[:4])
    short = np.stack([eng.decode(int(t)) for t in tokens[4:12]])
    assert rel(short, ref_all[4:12]) < tol, rel(short, ref_all[4:12])
    got = np.stack([eng.decode(int(t)) for t in tokens[12:30]])
    assert rel(got, ref_all[12:30]) < tol, rel(got, ref_all[12:30])
    monkeypatch.setenv("LAB_GPU_TRACE", "1")
    eng = _engine.Engine("gpu_opt", str(d), 128)
    eng.prefill(tokens[:20])
    for t in tokens[20:24]:
        eng.decode(int(t))
    ph = eng.phase_seconds()
    assert ph["steps"] >= 4 and ph["o_proj.launches"] == ph["steps"] * cfg["num_hidden_layers"], ph
