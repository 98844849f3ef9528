// Unfused attention — the baseline FlashAttention is measured against.
//
// Contract: as FlashAttention (prefill.h), plus a device workspace of AttentionUnfusedWorkspaceBytes(p)
// bytes. For each KV head: K is packed to [keys, D] and V transposed to [D, keys] (keys = pos+n
// rounded up to 128, zero-padded). Then for each of its query heads, three launches:
//   1. S = Q_h K^T       the GEMM front door (v4/v3 on Hopper), fp32 scores [n, keys] in device memory;
//   2. causal softmax    one block per query row: one pass for the running max/sum, one pass writing
//                        P = exp(scale*s - max) / sum as fp16 [n, keys], zeros after the row's position;
//   3. O_h = P V         the GEMM front door again (A = P, W = V^T).
// The score matrix costs n*keys*(4 written + 8 read + 2 written + 2 read) bytes per head: at n = 32768
// that is 17 GB per head, which is what FlashAttention removes. QK^T and PV also do the full
// n x keys square on the tensor cores (the masked upper triangle included).
#include <cmath>

#include "cuda/prefill/device_common.h"

namespace lab::prefill {
namespace detail {
const char* AttentionCheck(const AttentionParams& p);
}

namespace {

int64_t KeysPadded(const AttentionParams& p) { return (static_cast<int64_t>(p.pos) + p.n + 127) / 128 * 128; }

struct Workspace {
  float* S;
  half* P;
  half* Kp;
  half* Vt;
};

size_t Align256(size_t x) { return (x + 255) / 256 * 256; }

Workspace Carve(const AttentionParams& p, void* ws) {
  const int64_t keys = KeysPadded(p), D = p.head_dim;
  char* b = static_cast<char*>(ws);
  Workspace w;
  w.S = reinterpret_cast<float*>(b);
  b += Align256(static_cast<size_t>(p.n) * keys * 4);
  w.P = reinterpret_cast<half*>(b);
  b += Align256(static_cast<size_t>(p.n) * keys * 2);
  w.Kp = reinterpret_cast<half*>(b);
  b += Align256(static_cast<size_t>(keys) * D * 2);
  w.Vt = reinterpret_cast<half*>(b);
  return w;
}

// Kp[t, d] = K[t, kvh, d] for t < kv_len, else 0.
__global__ void PackKKernel(const half* K, int64_t pos_stride, int kv_len, int keys, int D, half* Kp) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(keys) * D) return;
  const int t = static_cast<int>(i / D), d = static_cast<int>(i % D);
  Kp[i] = t < kv_len ? K[static_cast<int64_t>(t) * pos_stride + d] : __float2half(0.f);
}

// Vt[d, t] = V[t, kvh, d] for t < kv_len, else 0 (32x32 tiles through shared memory).
__global__ void TransposeVKernel(const half* V, int64_t pos_stride, int kv_len, int keys, int D, half* Vt) {
  __shared__ half tile[32][33];
  const int t0 = blockIdx.x * 32, d0 = blockIdx.y * 32;
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int t = t0 + r, d = d0 + threadIdx.x;
    tile[r][threadIdx.x] = (t < kv_len && d < D) ? V[static_cast<int64_t>(t) * pos_stride + d] : __float2half(0.f);
  }
  __syncthreads();
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int d = d0 + r, t = t0 + threadIdx.x;
    if (d < D && t < keys) Vt[static_cast<int64_t>(d) * keys + t] = tile[threadIdx.x][r];
  }
}

__device__ __forceinline__ void MergeMaxSum(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;
  s = s * exp2f(m - mn) + s2 * exp2f(m2 - mn);
  m = mn;
}

// One block (256 threads) per query row i: keys 0 .. pos+i are live.
__global__ void __launch_bounds__(256) CausalSoftmaxKernel(const float* S, half* P, int keys, int pos, float scale_log2) {
  const int i = blockIdx.x;
  const int live = pos + i + 1;
  const float* srow = S + static_cast<int64_t>(i) * keys;
  half* prow = P + static_cast<int64_t>(i) * keys;
  float m = -INFINITY, sum = 0.f;
  for (int t = threadIdx.x * 4; t < live; t += 1024) {
    const float4 v = *reinterpret_cast<const float4*>(srow + t);
    const float x[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (t + e < live) MergeMaxSum(m, sum, x[e] * scale_log2, 1.f);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, sum, o);
    MergeMaxSum(m, sum, m2, s2);
  }
  __shared__ float sm[8], ss[8];
  if ((threadIdx.x & 31) == 0) {
    sm[threadIdx.x >> 5] = m;
    ss[threadIdx.x >> 5] = sum;
  }
  __syncthreads();
  m = sm[0];
  sum = ss[0];
  for (int w = 1; w < 8; ++w) MergeMaxSum(m, sum, sm[w], ss[w]);
  const float inv = 1.f / sum;
  for (int t = threadIdx.x * 4; t < keys; t += 1024) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (t < live) v = *reinterpret_cast<const float4*>(srow + t);
    const float x[4] = {v.x, v.y, v.z, v.w};
    __half2 out[2];
    float y[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) y[e] = (t + e < live) ? exp2f(x[e] * scale_log2 - m) * inv : 0.f;
    out[0] = __floats2half2_rn(y[0], y[1]);
    out[1] = __floats2half2_rn(y[2], y[3]);
    *reinterpret_cast<uint2*>(prow + t) = *reinterpret_cast<uint2*>(out);
  }
}

}  // namespace

size_t AttentionUnfusedWorkspaceBytes(const AttentionParams& p) {
  const size_t keys = KeysPadded(p), D = p.head_dim;
  return Align256(static_cast<size_t>(p.n) * keys * 4) + Align256(static_cast<size_t>(p.n) * keys * 2) +
         Align256(keys * D * 2) + Align256(keys * D * 2);
}

cudaError_t AttentionUnfused(const AttentionParams& p, void* workspace, cudaStream_t stream) {
  detail::ThrowIf(detail::AttentionCheck(p), "AttentionUnfused");
  if (!workspace || (reinterpret_cast<uintptr_t>(workspace) & 255))
    throw std::invalid_argument("AttentionUnfused: workspace must be non-null and 256-byte aligned");
  const Workspace w = Carve(p, workspace);
  const int keys = static_cast<int>(KeysPadded(p)), D = p.head_dim, kv_len = p.pos + p.n;
  const int group = p.n_heads / p.n_kv_heads;
  const float scale = p.scale > 0.f ? p.scale : 1.f / std::sqrt(static_cast<float>(D));
  cudaError_t err = cudaSuccess;
  for (int kvh = 0; kvh < p.n_kv_heads; ++kvh) {
    const half* K = p.K + static_cast<int64_t>(kvh) * p.kv_head_stride;
    const half* V = p.V + static_cast<int64_t>(kvh) * p.kv_head_stride;
    const int64_t total = static_cast<int64_t>(keys) * D;
    PackKKernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(K, p.kv_pos_stride, kv_len, keys, D, w.Kp);
    TransposeVKernel<<<dim3(keys / 32, (D + 31) / 32), dim3(32, 8), 0, stream>>>(V, p.kv_pos_stride, kv_len, keys, D, w.Vt);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    for (int hh = 0; hh < group; ++hh) {
      const int h = kvh * group + hh;
      GemmParams s;
      s.A = p.Q + static_cast<int64_t>(h) * D;
      s.lda = p.q_pos_stride;
      s.W = w.Kp;
      s.ldw = D;
      s.C = w.S;
      s.ldc = keys;
      s.c_f32 = true;
      s.M = p.n;
      s.N = keys;
      s.K = D;
      if ((err = Gemm(s, stream)) != cudaSuccess) return err;
      CausalSoftmaxKernel<<<p.n, 256, 0, stream>>>(w.S, w.P, keys, p.pos, scale * 1.4426950408889634f);
      if ((err = cudaGetLastError()) != cudaSuccess) return err;
      GemmParams o;
      o.A = w.P;
      o.lda = keys;
      o.W = w.Vt;
      o.ldw = keys;
      o.C = p.O + static_cast<int64_t>(h) * D;
      o.ldc = p.o_pos_stride;
      o.M = p.n;
      o.N = D;
      o.K = keys;
      if ((err = Gemm(o, stream)) != cudaSuccess) return err;
    }
  }
  return cudaSuccess;
}

}  // namespace lab::prefill
