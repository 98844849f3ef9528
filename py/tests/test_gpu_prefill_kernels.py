"""GPU tests of the prefill kernel lab (cuda/prefill/): every GEMM version and both attention versions
against torch on random inputs at sizes that do not fit the tiles (M = 1, 37, 1000; n not a multiple
of 64/128; chunked prefill with pos > 0), through the bindings lab._prefill_kernels.

Outputs are poisoned with NaN before each call, so an unwritten element fails the check
(rel_error returns inf on any non-finite value).
"""

import pytest

from lab.tolerances import LOGITS_REL, rel_error

pytestmark = pytest.mark.gpu

# fp16 output of an fp32-accumulated product: the final rounding alone is ~3e-4 relative (rms).
GEMM_REL_FP16 = 2e-3
# fp32 output: the same products summed in another order (tensor cores vs torch fp32 matmul).
GEMM_REL_FP32 = 1e-5
# Attention with fp16 P and O: the engines' fp16 bar (py/lab/tolerances.py).
ATTN_REL = LOGITS_REL["fp16"]

NONE, RESIDUAL, SWIGLU = 0, 1, 2


@pytest.fixture(scope="module")
def pk():
    try:
        from lab import _prefill_kernels
    except ImportError as e:  # a GPU host without the module built for its Python
        pytest.skip(f"lab._prefill_kernels is not built for this Python ({e}); build //py/lab:_prefill_kernels.so")
    return _prefill_kernels


@pytest.fixture(scope="module")
def torch():
    import torch

    torch.manual_seed(1234)
    return torch


def _stream(torch):
    return torch.cuda.current_stream().cuda_stream


def _gemm_ref(torch, a, w, epilogue, r):
    acc = a.float() @ w.float().t()
    if epilogue == SWIGLU:
        f = w.shape[0] // 2
        return torch.nn.functional.silu(acc[:, :f]) * acc[:, f:]
    if epilogue == RESIDUAL:
        return acc + r.float()
    return acc


SHAPES = [(256, 320, NONE), (384, 128, RESIDUAL), (512, 192, SWIGLU)]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("m", [1, 37, 1000])
@pytest.mark.parametrize("n,k,epilogue", SHAPES)
def test_gemm_vs_torch(pk, torch, version, m, n, k, epilogue):
    a = torch.randn(m, k, device="cuda", dtype=torch.float16)
    w = (torch.randn(n, k, device="cuda") / k**0.5).half()
    r = torch.randn(m, n, device="cuda", dtype=torch.float16) if epilogue == RESIDUAL else None
    n_out = n // 2 if epilogue == SWIGLU else n
    c = torch.full((m, n_out), float("nan"), device="cuda", dtype=torch.float16)
    args = dict(A=a.data_ptr(), lda=k, W=w.data_ptr(), ldw=k, C=c.data_ptr(), ldc=n_out, M=m, N=n, K=k,
                epilogue=epilogue, R=r.data_ptr() if r is not None else 0, ldr=n if r is not None else 0)
    why = pk.gemm_unsupported(version, **args)
    if why is not None:
        assert version == 4, why  # v1-v3 must take every shape here
        pytest.skip(f"v4 not available here: {why}")
    assert pk.gemm(version, **args, stream=_stream(torch)) == version
    torch.cuda.synchronize()
    ref = _gemm_ref(torch, a, w, epilogue, r)
    err = rel_error(c.float().cpu().numpy(), ref.cpu().numpy())
    assert err < GEMM_REL_FP16, f"v{version} M={m} N={n} K={k} epilogue={epilogue}: rel error {err:.3e}"


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_gemm_fp32_out_strided_inplace(pk, torch, version):
    """fp32 output, lda/ldc wider than the matrices (views into bigger rows), and in-place residual."""
    m, n, k = 37, 256, 128
    a_big = torch.randn(m, k + 64, device="cuda", dtype=torch.float16)
    a = a_big[:, 16:16 + k]  # row stride k + 64, 32-byte offset
    w = (torch.randn(n, k, device="cuda") / k**0.5).half()
    c_big = torch.full((m, n + 128), float("nan"), device="cuda", dtype=torch.float32)
    args = dict(A=a.data_ptr(), lda=k + 64, W=w.data_ptr(), ldw=k, C=c_big.data_ptr(), ldc=n + 128, M=m, N=n, K=k,
                c_f32=True)
    why = pk.gemm_unsupported(version, **args)
    if why is not None:
        pytest.skip(f"v{version}: {why}")
    pk.gemm(version, **args, stream=_stream(torch))
    torch.cuda.synchronize()
    ref = a.float() @ w.float().t()
    assert rel_error(c_big[:, :n].cpu().numpy(), ref.cpu().numpy()) < GEMM_REL_FP32
    assert torch.isnan(c_big[:, n:]).all(), "wrote outside its columns"

    # x += x_attn W^T with C aliasing R (the residual stream updated in place), fp16.
    x = torch.randn(m, n, device="cuda", dtype=torch.float16)
    x0 = x.clone()
    pk.gemm(version, A=a.data_ptr(), lda=k + 64, W=w.data_ptr(), ldw=k, C=x.data_ptr(), ldc=n, M=m, N=n, K=k,
            epilogue=RESIDUAL, R=x.data_ptr(), ldr=n, stream=_stream(torch))
    torch.cuda.synchronize()
    assert rel_error(x.float().cpu().numpy(), (ref + x0.float()).cpu().numpy()) < GEMM_REL_FP16


def test_gemm_preconditions_raise(pk, torch):
    a = torch.randn(8, 64, device="cuda", dtype=torch.float16)
    w = torch.randn(100, 64, device="cuda", dtype=torch.float16)
    c = torch.empty(8, 100, device="cuda", dtype=torch.float16)
    args = dict(A=a.data_ptr(), lda=64, W=w.data_ptr(), ldw=64, C=c.data_ptr(), ldc=100, M=8, N=100, K=64)
    assert "N % 128" in pk.gemm_unsupported(3, **args)
    with pytest.raises(ValueError, match="N % 128"):
        pk.gemm(3, **args)
    assert pk.gemm_unsupported(1, **args) is None
    assert pk.gemm(0, **args, stream=_stream(torch)) == 1  # the front door falls back to v1
    torch.cuda.synchronize()


ATTN_CASES = [
    # n, pos, heads, kv_heads, head_dim
    (1, 0, 8, 2, 128),
    (37, 0, 8, 2, 128),
    (200, 0, 8, 2, 128),
    (1000, 0, 32, 8, 128),
    (300, 700, 8, 2, 128),  # chunked prefill: the cache already holds 700 positions
    (130, 0, 8, 8, 64),
    (77, 200, 4, 2, 64),
]


def _attention_inputs(torch, n, pos, h, kv, d):
    """Q inside a fused QKV row (as the QKV GEMM leaves it), KV cache [max_ctx, kv, d] with spare rows."""
    ctx = pos + n
    max_ctx = ctx + 40
    qkv = torch.randn(n, (h + 2 * kv) * d, device="cuda", dtype=torch.float16)
    qkv[:, : h * d] *= 2.0  # sharper softmax than unit scores
    k_cache = torch.randn(max_ctx, kv, d, device="cuda", dtype=torch.float16)
    v_cache = torch.randn(max_ctx, kv, d, device="cuda", dtype=torch.float16)
    k_cache[ctx:] = float("nan")  # positions past the sequence must never be read
    v_cache[ctx:] = float("nan")
    return qkv, k_cache, v_cache


def _attention_ref(torch, qkv, k_cache, v_cache, n, pos, h, kv, d):
    ctx = pos + n
    q = qkv[:, : h * d].float().view(n, h, d).transpose(0, 1)  # [h, n, d]
    k = k_cache[:ctx].float().repeat_interleave(h // kv, dim=1).transpose(0, 1)  # [h, ctx, d]
    v = v_cache[:ctx].float().repeat_interleave(h // kv, dim=1).transpose(0, 1)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if pos == 0:
        o = sdpa(q, k, v, is_causal=True)
    else:
        i = torch.arange(n, device="cuda")[:, None]
        j = torch.arange(ctx, device="cuda")[None, :]
        o = sdpa(q, k, v, attn_mask=j <= pos + i)
    return o.transpose(0, 1).reshape(n, h * d)


@pytest.mark.parametrize("version", ["flash", "flash_v1", "flash_v2", "flash_v3", "unfused"])
@pytest.mark.parametrize("n,pos,h,kv,d", ATTN_CASES)
def test_attention_vs_torch(pk, torch, version, n, pos, h, kv, d):
    qkv, k_cache, v_cache = _attention_inputs(torch, n, pos, h, kv, d)
    o = torch.full((n, h * d), float("nan"), device="cuda", dtype=torch.float16)
    args = dict(Q=qkv.data_ptr(), q_pos_stride=qkv.shape[1], K=k_cache.data_ptr(), V=v_cache.data_ptr(),
                kv_pos_stride=kv * d, kv_head_stride=d, O=o.data_ptr(), o_pos_stride=h * d, n=n, pos=pos,
                n_heads=h, n_kv_heads=kv, head_dim=d, stream=_stream(torch))
    if version.startswith("flash"):
        pk.flash_attention(**args, version=int(version[-1]) if version[-1].isdigit() else 0)
    else:
        ws = torch.empty(pk.attention_unfused_workspace_bytes(n, pos, d), device="cuda", dtype=torch.uint8)
        pk.attention_unfused(**args, workspace=ws.data_ptr())
    torch.cuda.synchronize()
    ref = _attention_ref(torch, qkv, k_cache, v_cache, n, pos, h, kv, d)
    err = rel_error(o.float().cpu().numpy(), ref.cpu().numpy())
    assert err < ATTN_REL, f"{version} n={n} pos={pos} H={h}/{kv} D={d}: rel error {err:.3e}"


@pytest.mark.parametrize("version", [1, 2, 3])
def test_flash_chunked_equals_whole(pk, torch, version):
    """Prefill in two chunks (n = 150 at pos 0, then the rest at pos 150) gives the same rows as one call."""
    n, h, kv, d = 400, 8, 2, 128
    qkv, k_cache, v_cache = _attention_inputs(torch, n, 0, h, kv, d)
    whole = torch.full((n, h * d), float("nan"), device="cuda", dtype=torch.float16)
    parts = whole.clone()
    common = dict(K=k_cache.data_ptr(), V=v_cache.data_ptr(), kv_pos_stride=kv * d, kv_head_stride=d,
                  o_pos_stride=h * d, n_heads=h, n_kv_heads=kv, head_dim=d, stream=_stream(torch), version=version)
    row = qkv.shape[1]
    pk.flash_attention(Q=qkv.data_ptr(), q_pos_stride=row, O=whole.data_ptr(), n=n, pos=0, **common)
    pk.flash_attention(Q=qkv.data_ptr(), q_pos_stride=row, O=parts.data_ptr(), n=150, pos=0, **common)
    pk.flash_attention(Q=qkv[150:].data_ptr(), q_pos_stride=row, O=parts[150:].data_ptr(), n=n - 150, pos=150, **common)
    torch.cuda.synchronize()
    # Same key tiles in the same order either way (fully masked tiles are exact no-ops): expect bit equality.
    assert rel_error(parts.float().cpu().numpy(), whole.float().cpu().numpy()) < 1e-4


def test_attention_preconditions_raise(pk, torch):
    x = torch.zeros(64, device="cuda", dtype=torch.float16)
    p = x.data_ptr()
    with pytest.raises(ValueError, match="head_dim"):
        pk.flash_attention(Q=p, q_pos_stride=96, K=p, V=p, kv_pos_stride=96, kv_head_stride=96, O=p, o_pos_stride=96,
                           n=1, pos=0, n_heads=1, n_kv_heads=1, head_dim=96)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        pk.flash_attention(Q=p, q_pos_stride=384, K=p, V=p, kv_pos_stride=256, kv_head_stride=128, O=p,
                           o_pos_stride=384, n=1, pos=0, n_heads=3, n_kv_heads=2, head_dim=128)
