"""gpu_opt's tensor-core prefill (lab GEMMs + FlashAttention, chunked) against the torch reference and
against the engine's own simple prefill.

What is checked (GPU tests, marked `gpu`; relative L2 error of logits, bounds in lab.tolerances):
  * all logits of a ~1k-token prompt vs transformers' LlamaForCausalLM (fp32) for head_dim 128 (GQA 3)
    and 64 (GQA 4), with the default chunk (one chunk) and with 384-token chunks over two prefill
    calls (a chunk boundary inside a call and a call starting mid-chunk), then decode;
  * an 8k-token prompt on a small model with long max_position_embeddings (several 2048-token
    chunks), then decode at ~8k;
  * simple prefill vs tensor-core prefill followed by greedy decode (the CUDA graph path): the same
    tokens, for head_dim 64 and 128, MHA and GQA;
  * LAB_GPU_ATTN=unfused (the lab's unfused attention baseline) gives the same logits as FlashAttention;
  * the last-position logits equal the all-logits last row (the two lm_head paths agree);
  * the activation budget grows with the chunk, not the prompt; bad knob values are refused;
    LAB_GPU_PREFILL_PROFILE prints per-step device times.
Environment knobs are read when an engine is created, so each engine is created inside `env(...)`.
"""

import contextlib

import numpy as np
import pytest
from conftest import gpu_present

from engine_cases import CASES, STD
from lab import _engine, tolerances
from lab.reference import load_reference, reference_logits
from lab.synthetic import write_random_model

KNOBS = ("LAB_GPU_PREFILL", "LAB_GPU_PREFILL_CHUNK", "LAB_GPU_ATTN", "LAB_GPU_PREFILL_GEMM", "LAB_GPU_PREFILL_PROFILE")

# ~1k-token prompts need a longer max_position_embeddings than engine_cases' 512.
HD128 = dict(CASES["gqa3_hd128_llama3"], max_position_embeddings=2048)     # GQA 3, head_dim 128, llama3 RoPE
HD64 = dict(CASES["gqa4_hd64_ropeparams"], max_position_embeddings=2048)   # GQA 4, head_dim 64
MHA64 = dict(CASES["gqa1_hd64_tied"], max_position_embeddings=2048)        # MHA, head_dim 64, tied
LONG8K = dict(
    CASES["gqa3_hd128_llama3"], hidden_size=512, intermediate_size=768, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=128, vocab_size=256, max_position_embeddings=8448,
)
SMALL = {"hd128": HD128, "hd64": HD64, "mha64": MHA64}

TOL = tolerances.logits_rel("gpu_opt")


def _need_gpu():
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")


@contextlib.contextmanager
def env(**kw):
    """Sets the prefill knobs given (None: unset), unsets the others; restores everything after."""
    with pytest.MonkeyPatch.context() as mp:
        for k in KNOBS:
            mp.delenv(k, raising=False)
        for k, v in kw.items():
            assert k in KNOBS, k
            if v is not None:
                mp.setenv(k, str(v))
        yield


def make_engine(d, max_context, **knobs):
    with env(**knobs):
        return _engine.Engine("gpu_opt", str(d), max_context)


def write_model(d, config, seed):
    write_random_model(d, config, precision="fp16", seed=seed, std=STD, progress=False)
    return d


def ref_logits(d, tokens):
    return reference_logits(load_reference(d, dtype="float32", device="cuda"), tokens)


def rel(a, b):
    return tolerances.rel_error(a, b)


@pytest.fixture(scope="module", params=["hd128", "hd64"])
def model_1k(request, tmp_path_factory):
    """A random model, a 1,024-token prompt + 8 decode tokens, and the reference logits of all of them."""
    _need_gpu()
    cfg = SMALL[request.param]
    d = write_model(tmp_path_factory.mktemp(f"tc1k_{request.param}"), cfg, seed=sum(map(ord, request.param)))
    tokens = np.random.default_rng(21).integers(0, cfg["vocab_size"], 1024 + 8)
    return request.param, cfg, d, tokens, ref_logits(d, tokens)


# ------------------------------------------------------------------------------------------------
# Against the torch reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("chunk", [None, 384], ids=["chunk_default", "chunk384"])
def test_tc_prefill_1k_matches_reference(model_1k, chunk):
    case, cfg, d, tokens, ref = model_1k
    n = 1024
    eng = make_engine(d, 1100, LAB_GPU_PREFILL_CHUNK=chunk)
    if chunk is None:
        pre = eng.prefill(tokens[:n], all_logits=True)
    else:  # two calls: chunk boundaries at 384 and 768 in the first, the second starts at 600
        pre = np.concatenate([eng.prefill(tokens[:600], all_logits=True),
                              eng.prefill(tokens[600:n], all_logits=True)])
    assert pre.shape == (n, cfg["vocab_size"])
    err = rel(pre, ref[:n])
    assert err < TOL, f"{case} chunk {chunk}: tensor-core prefill relative error {err:.2e} (bound {TOL})"
    dec = np.stack([eng.decode(int(t)) for t in tokens[n:]])
    err_d = rel(dec, ref[n:])
    assert err_d < TOL, f"{case} chunk {chunk}: decode after tensor-core prefill relative error {err_d:.2e}"
    print(f"{case} chunk {chunk}: prefill {err:.2e} decode {err_d:.2e}")
    # Last position only (decode lm_head matvec on the fp32 residual) == all-logits last row (lm_head
    # GEMM on the hi + lo fp16 halves of the normalized rows).
    eng.reset()
    last = eng.prefill(tokens[:n])
    assert last.shape == (cfg["vocab_size"],)
    np.testing.assert_allclose(last, pre[-1], rtol=0, atol=1e-4 * np.abs(pre[-1]).max())


@pytest.mark.gpu
def test_tc_prefill_8k_small_model(tmp_path):
    """8,192 prompt tokens (four 2048-token chunks), then decode at ~8k: all logits vs the reference."""
    _need_gpu()
    cfg = LONG8K
    d = write_model(tmp_path / "m", cfg, seed=8)
    n, n_dec = 8192, 6
    tokens = np.random.default_rng(8).integers(0, cfg["vocab_size"], n + n_dec)
    ref = ref_logits(d, tokens)
    eng = make_engine(d, n + 64)
    pre = eng.prefill(tokens[:n], all_logits=True)
    err = rel(pre, ref[:n])
    assert err < TOL, f"8k tensor-core prefill relative error {err:.2e} (bound {TOL})"
    # The last quarter alone (the longest attention rows) must be as good as the whole.
    err_tail = rel(pre[-2048:], ref[n - 2048:n])
    assert err_tail < TOL, f"8k tensor-core prefill, last chunk: relative error {err_tail:.2e}"
    dec = np.stack([eng.decode(int(t)) for t in tokens[n:]])
    err_d = rel(dec, ref[n:])
    assert err_d < TOL, f"decode at ~8k after tensor-core prefill: relative error {err_d:.2e}"
    print(f"8k: prefill {err:.2e} (last chunk {err_tail:.2e}) decode {err_d:.2e}")


@pytest.mark.gpu
def test_unfused_attention_matches_flash(model_1k):
    """LAB_GPU_ATTN=unfused (S = QK^T -> softmax -> PV, workspace allocated on first use) == FlashAttention."""
    case, cfg, d, tokens, ref = model_1k
    n = 1000
    out = {}
    for attn in ("flash", "unfused"):
        eng = make_engine(d, 1100, LAB_GPU_PREFILL_CHUNK=384, LAB_GPU_ATTN=attn)
        out[attn] = eng.prefill(tokens[:n], all_logits=True)
        del eng
    for attn, pre in out.items():
        err = rel(pre, ref[:n])
        assert err < TOL, f"{case} attention {attn}: relative error {err:.2e} (bound {TOL})"
    diff = rel(out["unfused"], out["flash"])
    assert diff < TOL, f"{case}: unfused vs flash relative difference {diff:.2e}"
    print(f"{case}: unfused vs flash {diff:.2e}")


# ------------------------------------------------------------------------------------------------
# Simple vs tensor-core prefill: the same greedy continuation
# ------------------------------------------------------------------------------------------------


def greedy(eng, prompt, steps):
    """Greedy tokens after `prompt` through the decode path, and each step's top-2 margin relative to
    the largest |logit| (a near-tie is the only acceptable reason for two paths to part)."""
    logits = eng.prefill(prompt)
    first = logits.copy()
    toks, margins = [], []
    for _ in range(steps):
        top2 = np.sort(logits)[-2:]
        margins.append(float((top2[1] - top2[0]) / max(np.abs(logits).max(), 1e-30)))
        t = int(np.argmax(logits))
        toks.append(t)
        logits = eng.decode(t)
    return toks, margins, first


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(SMALL))
def test_simple_and_tc_prefill_give_same_greedy_tokens(tmp_path, case):
    _need_gpu()
    cfg = SMALL[case]
    d = write_model(tmp_path / "m", cfg, seed=100 + len(case))
    prompt = np.random.default_rng(31).integers(0, cfg["vocab_size"], 600)  # > 1 chunk on both paths
    steps = 24
    simple = make_engine(d, 700, LAB_GPU_PREFILL="simple")
    t_s, m_s, first_s = greedy(simple, prompt, steps)
    del simple
    tc = make_engine(d, 700, LAB_GPU_PREFILL_CHUNK=256)  # 600 = 256 + 256 + 88
    t_t, _, first_t = greedy(tc, prompt, steps)
    del tc
    diff = rel(first_t, first_s)
    assert diff < TOL, f"{case}: last-position logits, tensor-core vs simple prefill differ by {diff:.2e}"
    for i, (a, b) in enumerate(zip(t_s, t_t)):
        if a != b:
            assert m_s[i] < 5e-3, (f"{case}: greedy tokens part at step {i} ({a} simple vs {b} tensor-core) "
                                   f"although the simple path's top-2 margin there is {m_s[i]:.2e} of max |logit|")
            pytest.skip(f"{case}: near-tie at step {i} (margin {m_s[i]:.1e}); tokens equal before it")
    assert t_s == t_t


# ------------------------------------------------------------------------------------------------
# Knobs, memory budget, profile
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_activation_budget_follows_chunk(tmp_path):
    """The tensor-core buffers are sized for one chunk at creation: doubling the chunk adds exactly one
    chunk's worth per extra row (x, delta fp32; h, h_lo fp16; qkv fp32; q, attn fp16; act fp16)."""
    _need_gpu()
    cfg = HD128
    d = write_model(tmp_path / "m", cfg, seed=3)
    a = make_engine(d, 1024, LAB_GPU_PREFILL_CHUNK=256).stats()["activation_bytes"]
    b = make_engine(d, 1024, LAB_GPU_PREFILL_CHUNK=512).stats()["activation_bytes"]
    s = make_engine(d, 1024, LAB_GPU_PREFILL="simple").stats()["activation_bytes"]
    dim, hd = cfg["hidden_size"], cfg["head_dim"]
    q_dim, kv_dim = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_row = dim * (4 + 4 + 2 + 2) + (q_dim + 2 * kv_dim) * 4 + q_dim * (2 + 2) + cfg["intermediate_size"] * 2
    assert abs((b - a) - 256 * per_row) <= 8 * 256, (a, b, per_row)
    assert s < a  # the simple path allocates none of them


@pytest.mark.gpu
def test_bad_prefill_knobs_are_refused(tmp_path):
    _need_gpu()
    d = write_model(tmp_path / "m", MHA64, seed=4)
    for knobs in ({"LAB_GPU_PREFILL": "fast"}, {"LAB_GPU_ATTN": "sdpa"}, {"LAB_GPU_PREFILL_CHUNK": "0"},
                  {"LAB_GPU_PREFILL_GEMM": "7"}):
        with pytest.raises(ValueError, match="LAB_GPU_"):
            make_engine(d, 256, **knobs)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["tc", "simple"])
def test_prefill_profile_prints_steps(tmp_path, capfd, mode):
    _need_gpu()
    cfg = HD64
    d = write_model(tmp_path / "m", cfg, seed=6)
    eng = make_engine(d, 512, LAB_GPU_PREFILL=mode, LAB_GPU_PREFILL_PROFILE=1, LAB_GPU_PREFILL_CHUNK=128)
    tokens = np.random.default_rng(2).integers(0, cfg["vocab_size"], 300)
    eng.prefill(tokens)
    err = capfd.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("gpu_opt prefill profile:")]
    assert line, err
    assert "300 tokens" in line[-1] and "attention" in line[-1] and "gate_up" in line[-1], line[-1]
    # LAB_GPU_PREFILL_GEMM=3 (mma.sync instead of wgmma) on the same prompt: the same logits within the
    # fp16 bound.
    if mode == "tc":
        base = make_engine(d, 512, LAB_GPU_PREFILL_CHUNK=128).prefill(tokens, all_logits=True)
        v3 = make_engine(d, 512, LAB_GPU_PREFILL_CHUNK=128, LAB_GPU_PREFILL_GEMM=3).prefill(tokens, all_logits=True)
        assert rel(v3, base) < TOL
