"""GPU engines (gpu_naive, gpu_opt) against transformers' LlamaForCausalLM on the same random weights.

GPU tests are marked `gpu` (skipped where there is no CUDA GPU); a few checks run everywhere: the
engines are in the module, creating one without a GPU raises DeviceError with a clear message, and
unsupported shapes are refused before any device work.

What is compared (relative L2 error of logits against an fp32 torch reference, bounds in
lab.tolerances): every position of a prompt through prefill (all logits), then several decode steps
(the CUDA-graph path), for GQA group sizes 1/3/4/8, head_dim 64/128, tied/untied embeddings, plain and
llama3 RoPE; fp16 and fp32 model files; a prompt longer than gpu_opt's prefill chunk (256) fed in
pieces; decode past 2,048 positions (many attention splits merged in-kernel); reset; and the graph,
PDL and plain launch paths agreeing with each other. gpu_opt's decode attention layouts and their knobs
have their own file, test_gpu_opt_attention.py, and its matvec tiles and their knobs
test_gpu_opt_tiles.py.
"""

import numpy as np
import pytest
from conftest import gpu_present

from engine_cases import ALL_CASES, CASES, EXTRA, ref_device, write_model
from lab import _engine, tolerances
from lab.reference import load_reference, reference_logits

GPU_ENGINES = ["gpu_naive", "gpu_opt"]


def rel(ours, ref):
    return tolerances.rel_error(ours, ref)


# ------------------------------------------------------------------------------------------------
# Everywhere (CPU CI too)
# ------------------------------------------------------------------------------------------------


def test_gpu_engines_are_built():
    names = _engine.engine_names()
    for e in GPU_ENGINES:
        assert e in names


@pytest.mark.skipif(gpu_present(), reason="checks the no-GPU error; this machine has a GPU")
@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_no_gpu_raises_device_error(tmp_path, engine):
    d = write_model(tmp_path / "m", CASES["gqa1_hd64_tied"], "fp16", 1)
    with pytest.raises(_engine.DeviceError, match="no CUDA GPU found: the gpu_\\* engines need an NVIDIA GPU"):
        _engine.Engine(engine, str(d), 64)


def test_gpu_opt_refuses_unsupported_head_dim(tmp_path):
    cfg = dict(CASES["gqa1_hd64_tied"], head_dim=32, num_attention_heads=8, num_key_value_heads=8)
    d = write_model(tmp_path / "m", cfg, "fp16", 1)
    with pytest.raises(_engine.ModelFormatError, match="head_dim 32 is not supported"):
        _engine.Engine("gpu_opt", str(d), 64)


# ------------------------------------------------------------------------------------------------
# On a GPU
# ------------------------------------------------------------------------------------------------

N_PROMPT, N_DECODE = 40, 10


@pytest.fixture(scope="module", params=[(c, p) for c in sorted(ALL_CASES) if not c.startswith("long")
                                        for p in ("fp32", "fp16")], ids=lambda cp: f"{cp[0]}-{cp[1]}")
def model(request, tmp_path_factory):
    case, precision = request.param
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d = write_model(tmp_path_factory.mktemp(f"{case}_{precision}"), ALL_CASES[case], precision,
                    seed=sum(map(ord, case)))
    ref = load_reference(d, dtype="float32", device=ref_device())
    tokens = np.random.default_rng(3).integers(0, ALL_CASES[case]["vocab_size"], N_PROMPT + N_DECODE)
    return case, precision, d, tokens, reference_logits(ref, tokens)


@pytest.mark.gpu
@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_prefill_then_decode_match_reference(model, engine):
    case, precision, d, tokens, ref = model
    tol = tolerances.logits_rel(engine)
    eng = _engine.Engine(engine, str(d), 128)
    pre = eng.prefill(tokens[:N_PROMPT], all_logits=True)
    assert pre.shape == (N_PROMPT, ref.shape[1])
    err = rel(pre, ref[:N_PROMPT])
    assert err < tol, f"{engine} {case} {precision}: prefill relative error {err:.2e} (bound {tol})"
    dec = np.stack([eng.decode(int(t)) for t in tokens[N_PROMPT:]])
    err_d = rel(dec, ref[N_PROMPT:])
    assert err_d < tol, f"{engine} {case} {precision}: decode relative error {err_d:.2e} (bound {tol})"
    assert eng.pos == len(tokens)
    print(f"{engine} {case} {precision}: prefill {err:.2e} decode {err_d:.2e}")
    # Reset, then the default prefill (last position only) equals the all-logits last row.
    eng.reset()
    last = eng.prefill(tokens[:N_PROMPT])
    assert last.shape == (ref.shape[1],)
    np.testing.assert_allclose(last, pre[-1], rtol=0, atol=1e-4 * np.abs(pre[-1]).max())


@pytest.mark.gpu
@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_prefill_then_decode_match_fp16_torch_on_gpu(model, engine):
    """The same run against transformers in fp16 on the GPU (the reference the issue names; the fp32 one
    above is the stricter yardstick): fp16 model files, every prompt position and the decode steps, within
    the fp16 bound, since torch's own fp16 rounding is now on the reference side."""
    case, precision, d, tokens, ref32 = model
    if precision != "fp16":
        pytest.skip("fp16 reference: compared on the fp16 model files")
    ref16 = reference_logits(load_reference(d, dtype="float16", device="cuda"), tokens)
    assert 0 < rel(ref16, ref32) < tolerances.LOGITS_REL["fp16"]  # torch fp16 did run in fp16, and close
    eng = _engine.Engine(engine, str(d), 128)
    ours = np.concatenate([eng.prefill(tokens[:N_PROMPT], all_logits=True),
                           np.stack([eng.decode(int(t)) for t in tokens[N_PROMPT:]])])
    err = rel(ours, ref16)
    print(f"{engine} {case}: vs torch fp16 {err:.2e} (torch fp16 vs fp32 {rel(ref16, ref32):.2e})")
    assert err < tolerances.LOGITS_REL["fp16"], f"{engine} {case}: relative error {err:.2e} against torch fp16"


@pytest.mark.gpu
def test_gpu_opt_step_trace(model, monkeypatch):
    """LAB_GPU_TRACE=1: every decode() step's launches are timed inside the graph; per step the counts are
    n_layers launches of each layer kind and one lm_head, every kind has busy time, the step spans at
    least its longest kind, the ends' spread and the tail fit in the busy time, the logits are an untraced engine's (to the rounding of another prefill tile),
    each launch ran on 1 to all of the card's SMs, and generation graphs are not traced."""
    case, precision, d, tokens, _ = model
    # fp32 matvec inputs: with fp16 ones (the default) the two prefills' last-bit differences flip an
    # input's fp16 rounding now and then (1.4e-4 and 3.5e-4 relative on the H200), past the bound below.
    monkeypatch.setenv("LAB_GPU_ACT16", "off")
    plain = _engine.Engine("gpu_opt", str(d), 128)
    assert plain.phase_seconds() == {}
    monkeypatch.setenv("LAB_GPU_TRACE", "1")
    eng = _engine.Engine("gpu_opt", str(d), 128)
    for e in (eng, plain):
        e.prefill(tokens[:N_PROMPT])
    got = np.stack([eng.decode(int(t)) for t in tokens[N_PROMPT:N_PROMPT + 5]])
    want = np.stack([plain.decode(int(t)) for t in tokens[N_PROMPT:N_PROMPT + 5]])
    # Two engines may pick different prefill GEMM tiles, which round differently (~1e-6): not bitwise.
    assert rel(got, want) < 1e-4
    p = eng.phase_seconds()
    assert p["steps"] == 5
    layers = ALL_CASES[case]["num_hidden_layers"]
    import torch

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for k in ("qkv", "attention", "o_proj", "gate_up", "down", "lm_head"):
        assert p[f"{k}.launches"] == 5 * (1 if k == "lm_head" else layers), k
        assert p[f"{k}.busy"] > 0 and p[f"{k}.pre"] >= 0, k
        # a block's first phase (x staged, attention's partial) is part of the launch's busy time
        assert 0 < p[f"{k}.staged"] < p[f"{k}.busy"], k
        # the blocks' ends spread over part of the busy time; the last runs past the mean block by less than it
        assert 0 <= p[f"{k}.spread"] <= p[f"{k}.busy"] and 0 <= p[f"{k}.tail"] < p[f"{k}.busy"], k
        # each launch ran on at least one SM and on no more than the card has (session 21's SM marks)
        assert 1 <= p[f"{k}.sms"] / p[f"{k}.launches"] <= sms, k
    assert p["step"] >= max(p[f"{k}.busy"] for k in ("qkv", "attention", "o_proj", "gate_up", "down", "lm_head"))
    eng.generate(int(tokens[-1]), 3)
    assert eng.phase_seconds()["steps"] == 5


@pytest.mark.gpu
@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_generate_equals_decode_argmax(model, engine, monkeypatch):
    """generate(token, n): the tokens of n x decode + argmax, the same position and cache afterwards.
    21 steps cross gpu_opt's 8-step generation graphs twice and end with 5 single-step graphs. One engine
    for both runs (reset between): two engines may pick different prefill GEMM tiles, which round differently.
    The split MLP, whose sums are bitwise run to run (the fused one's generate(): test_gpu_opt_mlp.py)."""
    case, precision, d, tokens, _ = model
    monkeypatch.setenv("LAB_GPU_MLP", "split")
    eng = _engine.Engine(engine, str(d), 128)
    eng.prefill(tokens[:N_PROMPT])
    first = int(tokens[N_PROMPT])
    got = eng.generate(first, 21)
    assert eng.pos == N_PROMPT + 21
    after_generate = eng.decode(int(got[-1]))
    eng.reset()
    eng.prefill(tokens[:N_PROMPT])
    want, tok = [], first
    for _ in range(21):
        tok = int(np.argmax(eng.decode(tok)))
        want.append(tok)
    assert got.tolist() == want, f"{engine} {case} {precision}"
    np.testing.assert_array_equal(after_generate, eng.decode(int(got[-1])))  # the same cache was written
    eng.reset()
    eng.prefill(tokens[:N_PROMPT])
    assert eng.generate(first, 3).tolist() == want[:3]  # a later call starts from the given token


@pytest.mark.gpu
@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_long_context_chunked_prefill_and_decode(tmp_path, engine):
    """A 2,100-token prompt in uneven pieces (chunks of 256 in gpu_opt, 64 in gpu_naive), then decode past
    2,100 positions: the attention splits keys over up to 64 blocks and merges them in the kernel."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = EXTRA["long_gqa4_hd128"]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=11)
    n_prompt, n_dec = 2100, 6
    tokens = np.random.default_rng(5).integers(0, cfg["vocab_size"], n_prompt + n_dec)
    ref = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)
    tol = tolerances.logits_rel(engine)
    eng = _engine.Engine(engine, str(d), 2304)
    pieces = [700, 301, 1099]
    outs, start = [], 0
    for p in pieces:
        outs.append(eng.prefill(tokens[start:start + p], all_logits=True))
        start += p
    pre = np.concatenate(outs)
    err = rel(pre, ref[:n_prompt])
    assert err < tol, f"{engine}: chunked prefill relative error {err:.2e}"
    dec = np.stack([eng.decode(int(t)) for t in tokens[n_prompt:]])
    err_d = rel(dec, ref[n_prompt:])
    assert err_d < tol, f"{engine}: decode at ~2100 relative error {err_d:.2e}"
    print(f"{engine} long: prefill {err:.2e} decode {err_d:.2e}")


@pytest.mark.gpu
def test_gpu_opt_launch_paths_agree(tmp_path, monkeypatch):
    """CUDA graph + PDL, graph without PDL, and plain launches give the same logits (same kernels; the split
    MLP, bitwise run to run)."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = CASES["gqa4_hd64_ropeparams"]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=5)
    tokens = np.random.default_rng(9).integers(0, cfg["vocab_size"], 60)
    results = {}
    for label, graph, pdl in (("graph+pdl", "1", "1"), ("graph", "1", "0"), ("plain", "0", "0")):
        for k, v in (("LAB_GPU_GRAPH", graph), ("LAB_GPU_PDL", pdl), ("LAB_GPU_MATVEC_CONFIG", "1"), ("LAB_GPU_MLP", "split")):
            monkeypatch.setenv(k, v)
        eng = _engine.Engine("gpu_opt", str(d), 128)
        eng.prefill(tokens[:20])
        results[label] = np.stack([eng.decode(int(t)) for t in tokens[20:]])
        del eng
    np.testing.assert_array_equal(results["graph+pdl"], results["plain"])
    np.testing.assert_array_equal(results["graph"], results["plain"])


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["gqa3_hd128_llama3", "gqa4_hd64_ropeparams", "gqa1_hd64_tied"])
def test_gpu_opt_act16_matches_reference(tmp_path, monkeypatch, case):
    """LAB_GPU_ACT16: decode's matvec inputs in fp16 (h: down's; all: every matvec's, written by the
    embedding, the residual epilogues, attention and gate_up). The decode logits stay within the fp16
    bound of the fp32 torch reference and are not bitwise those of the fp32 inputs (the knob took effect;
    the variant names it); generate() gives the argmax tokens of decode() on the same engine, so the
    generation graphs' embedding writes the fp16 copy too (a stale copy would change the tokens)."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = ALL_CASES[case]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=47)
    tokens = np.random.default_rng(53).integers(0, cfg["vocab_size"], N_PROMPT + N_DECODE)
    ref = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)
    monkeypatch.setenv("LAB_GPU_PREFILL", "simple")
    out = {}
    for act16 in ("off", "h", "all"):
        monkeypatch.setenv("LAB_GPU_ACT16", act16)
        eng = _engine.Engine("gpu_opt", str(d), 128)
        assert ("act16 " + act16 in eng.variant) == (act16 != "all"), eng.variant  # all: the default
        eng.prefill(tokens[:N_PROMPT])
        out[act16] = np.stack([eng.decode(int(t)) for t in tokens[N_PROMPT:]])
        err = rel(out[act16], ref[N_PROMPT:])
        assert err < tolerances.logits_rel("gpu_opt"), f"{case} act16 {act16}: decode relative error {err:.2e}"
        eng.reset()
        eng.prefill(tokens[:N_PROMPT])
        got = eng.generate(int(tokens[N_PROMPT]), 12)
        eng.reset()
        eng.prefill(tokens[:N_PROMPT])
        want, tok = [], int(tokens[N_PROMPT])
        for _ in range(12):
            tok = int(np.argmax(eng.decode(tok)))
            want.append(tok)
        assert got.tolist() == want, f"{case} act16 {act16}"
    assert not np.array_equal(out["h"], out["off"])
    assert not np.array_equal(out["all"], out["h"])


@pytest.mark.gpu
def test_gpu_stats_and_memory_error(tmp_path):
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    import torch

    cfg = CASES["gqa1_hd64_tied"]
    d = write_model(tmp_path / "m", cfg, "fp32", seed=2)
    naive = _engine.Engine("gpu_naive", str(d), 64)
    opt = _engine.Engine("gpu_opt", str(d), 64)
    # fp32 vs fp16 weights on the device (tied: embedding counted once); the fused MLP's second copy of
    # W_down (column slices) is counted apart, as weight_copy_bytes.
    assert naive.stats()["weight_bytes"] > 1.9 * opt.stats()["weight_bytes"]
    down = cfg["num_hidden_layers"] * cfg["hidden_size"] * cfg["intermediate_size"] * 2
    assert "mlp fused" in opt.variant and opt.stats()["weight_copy_bytes"] == down, opt.variant
    assert naive.stats()["weight_copy_bytes"] == 0
    # A KV cache bigger than the card: a DeviceError naming what is needed and what is free.
    free = torch.cuda.mem_get_info()[0]
    big = dict(cfg, max_position_embeddings=1 << 30)
    d2 = write_model(tmp_path / "big", big, "fp16", seed=2)
    per_pos = 2 * 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"]
    ctx = int(2 * free / per_pos)
    with pytest.raises(_engine.DeviceError, match=r"model needs .* GiB, card has .* GiB free"):
        _engine.Engine("gpu_opt", str(d2), ctx)


@pytest.mark.skipif(gpu_present(), reason="checks the no-GPU error; this machine has a GPU")
def test_gpu_read_ceiling_without_gpu():
    with pytest.raises(_engine.DeviceError, match="no CUDA GPU found"):
        _engine.gpu_read_bandwidth(1 << 30, 2)


@pytest.mark.gpu
def test_gpu_read_ceiling_against_torch():
    """The lab's read kernels (the bench's GPU ceiling: the load kernel, and on sm_90+ bulk copies into
    shared memory, which read 11% faster than torch on an H200 in session 16) against torch's x.sum() over
    the same number of bytes: a kernel that skipped part of the buffer would report a multiple of torch's
    bandwidth, one that read it twice half of it. Bad arguments are refused."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    from lab.bench.ceilings import _cuda_time
    import torch

    n = 2 << 30
    g, how = _engine.gpu_read_bandwidth(n, 5)
    assert len(g) == 5 and "lab read kernel" in how
    x = torch.randn(n // 2, dtype=torch.float16, device="cuda")
    torch_best = max(n / s / 1e9 for s in _cuda_time(lambda: x.sum(), 3, 5))
    del x
    assert 0.85 < max(g) / torch_best < 1.2, (max(g), torch_best, how)
    with pytest.raises(ValueError, match="at least 64 MiB"):
        _engine.gpu_read_bandwidth(1 << 20, 2)
