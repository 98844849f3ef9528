// Stage 4's prefill and small shared kernels: the embedding gather (decode uses it too), the simple
// prefill path's CUDA-core GEMM / RMSNorm / RoPE / SwiGLU, and the glue between the tensor-core
// prefill's GEMMs (residual add fused with RMSNorm, RoPE + KV write). The decode kernels are in
// kernels.cuh; the overview of both paths is at its top.
#pragma once
#include "cuda/gpu_opt/kernels.cuh"

namespace lab {
namespace gpu {

// ---------------------------------------------------------------------------------------------
// Prefill and shared small kernels
// ---------------------------------------------------------------------------------------------

// x[t, :] = embed[tokens[t], :] (fp16 -> fp32), and the row as it is into x16 unless it is null (decode
// with LAB_GPU_ACT16: the first matvec's fp16 input). One block per token; dim % 8 == 0 (16-byte rows).
// 16-byte loads, all of a thread's loads issued before the first store (the row is 8 KB for the 8B
// shape: 2 loads per thread of 256), so the gather costs about one DRAM latency instead of one per
// loop step (it was 8.7 us per decode step in ncu, a serial chain of 2-byte loads).
__device__ __forceinline__ void EmbedRow(float* __restrict__ x, __half* __restrict__ x16, const __half* __restrict__ embed,
                                         int token, int t, int dim) {
  const uint4* e = reinterpret_cast<const uint4*>(embed + size_t(token) * dim);
  float4* xo = reinterpret_cast<float4*>(x + size_t(t) * dim);
  const int nch = dim >> 3;
  constexpr int kBatch = 4;
  for (int c0 = threadIdx.x; c0 < nch; c0 += kBatch * blockDim.x) {
    uint4 w[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int c = c0 + b * blockDim.x;
      w[b] = c < nch ? __ldg(e + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int c = c0 + b * blockDim.x;
      if (c < nch) {
        float f[8];
        Unpack8(w[b], f);
        xo[2 * c] = make_float4(f[0], f[1], f[2], f[3]);
        xo[2 * c + 1] = make_float4(f[4], f[5], f[6], f[7]);
        if (x16) reinterpret_cast<uint4*>(x16 + size_t(t) * dim)[c] = w[b];
      }
    }
  }
}

static __global__ void EmbedKernel(float* __restrict__ x, __half* __restrict__ x16, const __half* __restrict__ embed,
                                   const int* __restrict__ tokens, int dim) {
  PdlWait();
  PdlTrigger();
  EmbedRow(x, x16, embed, __ldcg(tokens + blockIdx.x), blockIdx.x, dim);
}

// Greedy generation (GpuOptEngine::GenerateImpl): the first kernel of a decode step whose token is the
// argmax of the previous step's logits, left in *best by lm_head's argmax epilogue (ArgmaxKey), or
// seeded by the host for the first step. One block; thread 0 decodes the token, records it in
// tok_log[*pos] (the host reads the generated tokens from there) and clears *best for this step's lm_head.
// Launch with the PDL attribute after the previous step's lm_head: *best is read after the wait.
static __global__ void EmbedArgmaxKernel(float* __restrict__ x, __half* __restrict__ x16, const __half* __restrict__ embed,
                                         unsigned long long* best, int* tok_log, const int* pos, int vocab, int dim) {
  __shared__ int sm_tok;
  PdlWait();
  PdlTrigger();
  if (threadIdx.x == 0) {
    long long tok = ArgmaxRow(__ldcg(best));
    if (tok < 0 || tok >= vocab) tok = 0;  // only if no lm_head ran: never index outside the table
    sm_tok = int(tok);
    tok_log[__ldcg(pos)] = int(tok);
    *best = 0;
  }
  __syncthreads();
  EmbedRow(x, x16, embed, sm_tok, 0, dim);
}

// The sum of v over the block's threads, returned to every thread. blockDim.x a multiple of 32, at most
// 1024; every thread of the block must call it (one barrier).
__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float red[32];
  v = WarpSum(v);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float tot = 0.f;
  for (int i = 0; i < int(blockDim.x >> 5); ++i) tot += red[i];
  return tot;
}

// out[t, :] = x[t, :] / rms(x[t, :]) * w. One block (256 threads) per row.
static __global__ void RmsNormRowsKernel(float* __restrict__ out, const float* __restrict__ x, const float* __restrict__ w,
                                  int dim, float eps) {
  const int t = blockIdx.x;
  const float* xt = x + size_t(t) * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xt[i] * xt[i];
  const float scale = 1.f / sqrtf(BlockSum(ss) / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[size_t(t) * dim + i] = w[i] * (xt[i] * scale);
}

// C[b, n] (=|+=) sum_k A[b, k] * W[n, k]: A fp32 [B, K], W fp16 [N, K], C fp32 [B, N] (ldc = N).
// 64x64 output tile per 256-thread block, 4x4 per thread, K in steps of 16 through shared memory
// (fp16 widened on the way in). Plain CUDA-core FMA: prefill is compute-bound, and tensor cores are
// the next stage's lesson. Requires K % 4 == 0.
constexpr int kGemmBM = 64, kGemmBN = 64, kGemmBK = 16;
template <bool ACCUMULATE>
__global__ void __launch_bounds__(256) GemmKernel(float* __restrict__ C, const float* __restrict__ A,
                                                  const __half* __restrict__ W, int B, int N, int K) {
  __shared__ float As[kGemmBK][kGemmBM + 4];
  __shared__ float Ws[kGemmBK][kGemmBN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int n0 = blockIdx.x * kGemmBN, m0 = blockIdx.y * kGemmBM;
  const int lr = tid / 4, lc = (tid % 4) * 4;  // loader: row, first of 4 columns
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += kGemmBK) {
    {
      const int m = m0 + lr, k = k0 + lc;
      float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
      if (m < B && k < K) a = *reinterpret_cast<const float4*>(A + size_t(m) * K + k);
      As[lc + 0][lr] = a.x;
      As[lc + 1][lr] = a.y;
      As[lc + 2][lr] = a.z;
      As[lc + 3][lr] = a.w;
      const int n = n0 + lr;
      float2 w01 = make_float2(0.f, 0.f), w23 = w01;
      if (n < N && k < K) {
        const uint2 raw = *reinterpret_cast<const uint2*>(W + size_t(n) * K + k);
        w01 = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
        w23 = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
      }
      Ws[lc + 0][lr] = w01.x;
      Ws[lc + 1][lr] = w01.y;
      Ws[lc + 2][lr] = w23.x;
      Ws[lc + 3][lr] = w23.y;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmBK; ++kk) {
      const float4 a = *reinterpret_cast<const float4*>(&As[kk][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&Ws[kk][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= B) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (n >= N) continue;
      float* c = C + size_t(m) * N + n;
      *c = ACCUMULATE ? *c + acc[i][j] : acc[i][j];
    }
  }
}

// Prefill RoPE + KV write: qkv [B, (n_heads + 2 n_kv) * hd] from the GEMM. One thread per unit.
static __global__ void RopeQkvKernel(const float* __restrict__ qkv, QkvOut o, int B, const int* __restrict__ pos_ptr) {
  const int n_units = (o.n_heads + 2 * o.n_kv) * (o.hd / 2);
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * n_units) return;
  const int t = idx / n_units, unit = idx % n_units;
  int r0, r1;
  QkvUnitRows(unit, o.hd, &r0, &r1);
  const float* row = qkv + size_t(t) * (o.n_heads + 2 * o.n_kv) * o.hd;
  const int pos = *pos_ptr + t;
  float c, s;
  QkvRopeCoeffs(o, unit, pos, &c, &s);
  QkvEpilogue(o, unit, row[r0], row[r1], t, pos, c, s);
}

// h[t, i] = SiLU(gu[t, i]) * gu[t, H + i]
static __global__ void SwiGluRowsKernel(float* __restrict__ h, const float* __restrict__ gu, int B, int H) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * H) return;
  const int t = idx / H, i = idx % H;
  h[idx] = Silu(gu[size_t(t) * 2 * H + i]) * gu[size_t(t) * 2 * H + H + i];
}

// ---------------------------------------------------------------------------------------------
// Tensor-core prefill glue (the GEMMs and attention are lab::prefill's; these are the elementwise
// steps between them). Residual stream x: fp32 [B, dim]; GEMM inputs: fp16.
// ---------------------------------------------------------------------------------------------

// Row t (one 256-thread block per row): x[t, :] += d[t, :] (when d != nullptr), then, when hi !=
// nullptr, y = w * (x * 1/rms(x)) (the same formula as RmsNormRowsKernel, in fp32) is stored as fp16:
// hi = fp16(y), and when lo != nullptr also lo = fp16(y - hi), so that hi + lo carries y to ~2^-22
// (the all-logits lm_head runs on both: fp32-grade input through fp16 tensor cores).
// Requires dim % 4 == 0 and 16-byte aligned rows (dim % 8 == 0 in the engine).
static __global__ void __launch_bounds__(256) AddRmsNormHalfKernel(float* __restrict__ x, const float* __restrict__ d,
                                                                   const float* __restrict__ w, __half* __restrict__ hi,
                                                                   __half* __restrict__ lo, int dim, float eps) {
  const int t = blockIdx.x, n4 = dim >> 2;
  float4* x4 = reinterpret_cast<float4*>(x + size_t(t) * dim);
  const float4* d4 = d ? reinterpret_cast<const float4*>(d + size_t(t) * dim) : nullptr;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    float4 v = x4[i];
    if (d4) {
      const float4 e = d4[i];
      v.x += e.x;
      v.y += e.y;
      v.z += e.z;
      v.w += e.w;
      x4[i] = v;
    }
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  if (!hi) return;  // residual add only (the whole block returns: BlockSum's barrier is reached by none)
  const float scale = 1.f / sqrtf(BlockSum(ss) / dim + eps);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    const float4 v = x4[i], g = w4[i];  // x4[i]: this thread's own store above
    const float y0 = g.x * (v.x * scale), y1 = g.y * (v.y * scale), y2 = g.z * (v.z * scale), y3 = g.w * (v.w * scale);
    const __half2 h01 = __floats2half2_rn(y0, y1), h23 = __floats2half2_rn(y2, y3);
    __half2* ho = reinterpret_cast<__half2*>(hi + size_t(t) * dim + 4 * i);
    ho[0] = h01;
    ho[1] = h23;
    if (lo) {
      __half2* lw = reinterpret_cast<__half2*>(lo + size_t(t) * dim + 4 * i);
      lw[0] = __floats2half2_rn(y0 - __low2float(h01), y1 - __high2float(h01));
      lw[1] = __floats2half2_rn(y2 - __low2float(h23), y3 - __high2float(h23));
    }
  }
}

// RoPE + KV-cache write after the QKV GEMM of the tensor-core prefill: qkv fp32 [B, (n_heads + 2 n_kv)
// * hd] (the GEMM's fp32 output); q rotated -> q16 [B, n_heads * hd] fp16, NOT scaled (FlashAttention
// applies 1/sqrt(hd)); k rotated and v -> o.k_cache / o.v_cache fp16 rows pos0 .. pos0 + B - 1 (the
// cache layout [max_ctx, n_kv * hd] of decode). Same rotation as QkvEpilogue (o.q, o.q_scale unused).
// One thread per (token, unit); consecutive threads take consecutive j of one head (coalesced).
static __global__ void RopeQkvHalfKernel(const float* __restrict__ qkv, __half* __restrict__ q16, const QkvOut o, int B,
                                         int pos0) {
  const int half = o.hd >> 1;
  const int n_units = (o.n_heads + 2 * o.n_kv) * half;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(B) * n_units) return;
  const int t = int(idx / n_units), unit = int(idx - int64_t(t) * n_units);
  int r0, r1;
  QkvUnitRows(unit, o.hd, &r0, &r1);
  const float* row = qkv + size_t(t) * (o.n_heads + 2 * o.n_kv) * o.hd;
  const float y0 = row[r0], y1 = row[r1];
  const int pos = pos0 + t;
  const int hb = unit / half, j = unit - hb * half;
  const size_t kv_dim = size_t(o.n_kv) * o.hd;
  if (hb < o.n_heads + o.n_kv) {
    float c, s;
    QkvRopeCoeffs(o, unit, pos, &c, &s);
    const float a = fmaf(y0, c, -__fmul_rn(y1, s)), b = fmaf(y1, c, __fmul_rn(y0, s));  // as QkvEpilogue
    __half* dst = hb < o.n_heads ? q16 + size_t(t) * o.n_heads * o.hd + size_t(hb) * o.hd + j
                                 : o.k_cache + size_t(pos) * kv_dim + size_t(hb - o.n_heads) * o.hd + j;
    dst[0] = __float2half_rn(a);
    dst[half] = __float2half_rn(b);
  } else {
    __half* v = o.v_cache + size_t(pos) * kv_dim + size_t(hb - o.n_heads - o.n_kv) * o.hd + j;
    v[0] = __float2half_rn(y0);
    v[half] = __float2half_rn(y1);
  }
}

// a[i] += b[i], i < n (the all-logits merge of the hi and lo halves).
static __global__ void AddInPlaceKernel(float* __restrict__ a, const float* __restrict__ b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) a[i] += b[i];
}

}  // namespace gpu
}  // namespace lab
