// fp32 reference kernels (see reference.h). Slow on purpose only where it does not matter: they run on
// a sample of rows, so checking the 8192-row shapes costs milliseconds.
#include <cmath>

#include "cuda/prefill/device_common.h"
#include "cuda/prefill/reference.h"

namespace lab::prefill::reference {
namespace {

constexpr int kKc = 64;

// One thread per column n, 64 sampled rows: A rows staged through shared memory in k-chunks as fp32.
__global__ void __launch_bounds__(128) GemmRowsKernel(const half* A, int64_t lda, const half* W, int64_t ldw, int N, int K,
                                                      const int* rows, float* out) {
  __shared__ float As[kRefRows][kKc + 1];
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  float acc[kRefRows];
#pragma unroll
  for (int r = 0; r < kRefRows; ++r) acc[r] = 0.f;
  const half* w = W + static_cast<int64_t>(n < N ? n : 0) * ldw;
  for (int k0 = 0; k0 < K; k0 += kKc) {
    __syncthreads();
    for (int i = threadIdx.x; i < kRefRows * kKc; i += blockDim.x) {
      const int r = i / kKc, k = k0 + i % kKc;
      As[r][i % kKc] = k < K ? __half2float(A[static_cast<int64_t>(rows[r]) * lda + k]) : 0.f;
    }
    __syncthreads();
    const int kn = min(kKc, K - k0);
    for (int k = 0; k < kn; ++k) {
      const float x = __half2float(w[k0 + k]);
#pragma unroll
      for (int r = 0; r < kRefRows; ++r) acc[r] = fmaf(As[r][k], x, acc[r]);
    }
  }
  if (n < N) {
#pragma unroll
    for (int r = 0; r < kRefRows; ++r) out[static_cast<int64_t>(r) * N + n] = acc[r];
  }
}

// One block (4 warps) per (sampled row, head); warp w takes keys w, w+4, ...; lanes split the head dim.
template <int D>
__global__ void __launch_bounds__(128) AttentionRowsKernel(AttentionParams p, const int* rows, float scale, float* out) {
  constexpr int DPL = D / 32;
  const int r = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int i = rows[r];
  const int kvh = h / (p.n_heads / p.n_kv_heads);
  const int last = p.pos + i;
  float q[DPL], acc[DPL];
  const half* qp = p.Q + static_cast<int64_t>(i) * p.q_pos_stride + static_cast<int64_t>(h) * D + lane * DPL;
#pragma unroll
  for (int d = 0; d < DPL; ++d) {
    q[d] = __half2float(qp[d]);
    acc[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int t = warp; t <= last; t += 4) {
    const int64_t off = static_cast<int64_t>(t) * p.kv_pos_stride + static_cast<int64_t>(kvh) * p.kv_head_stride + lane * DPL;
    float s = 0.f;
#pragma unroll
    for (int d = 0; d < DPL; ++d) s = fmaf(q[d], __half2float(p.K[off + d]), s);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    s *= scale;
    const float mn = fmaxf(m, s);
    const float a = expf(m - mn), e = expf(s - mn);
    l = l * a + e;
#pragma unroll
    for (int d = 0; d < DPL; ++d) acc[d] = acc[d] * a + e * __half2float(p.V[off + d]);
    m = mn;
  }
  __shared__ float sm[4], sl[4], sacc[4][D];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int d = 0; d < DPL; ++d) sacc[warp][lane * DPL + d] = acc[d];
  __syncthreads();
  if (warp == 0) {
    float mm = -INFINITY;
    for (int w = 0; w < 4; ++w) mm = fmaxf(mm, sm[w]);
    float ll = 0.f;
    for (int w = 0; w < 4; ++w) ll += sm[w] == -INFINITY ? 0.f : sl[w] * expf(sm[w] - mm);
#pragma unroll
    for (int d = 0; d < DPL; ++d) {
      float v = 0.f;
      for (int w = 0; w < 4; ++w) v += sm[w] == -INFINITY ? 0.f : sacc[w][lane * DPL + d] * expf(sm[w] - mm);
      out[(static_cast<int64_t>(r) * p.n_heads + h) * D + lane * DPL + d] = v / ll;
    }
  }
}

__global__ void CountNonFiniteKernel(const void* data, int64_t count, bool f32, int* result) {
  int bad = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = f32 ? static_cast<const float*>(data)[i] : __half2float(static_cast<const half*>(data)[i]);
    bad += isfinite(v) ? 0 : 1;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) bad += __shfl_xor_sync(0xffffffffu, bad, o);
  if ((threadIdx.x & 31) == 0 && bad) atomicAdd(result, bad);
}

}  // namespace

cudaError_t GemmRows(const half* A, int64_t lda, const half* W, int64_t ldw, int N, int K, const int* rows, float* out,
                     cudaStream_t stream) {
  GemmRowsKernel<<<(N + 127) / 128, 128, 0, stream>>>(A, lda, W, ldw, N, K, rows, out);
  return cudaGetLastError();
}

cudaError_t AttentionRows(const AttentionParams& p, const int* rows, int n_rows, float* out, cudaStream_t stream) {
  const float scale = p.scale > 0.f ? p.scale : 1.f / std::sqrt(static_cast<float>(p.head_dim));
  dim3 grid(n_rows, p.n_heads);
  if (p.head_dim == 128) {
    AttentionRowsKernel<128><<<grid, 128, 0, stream>>>(p, rows, scale, out);
  } else if (p.head_dim == 64) {
    AttentionRowsKernel<64><<<grid, 128, 0, stream>>>(p, rows, scale, out);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t CountNonFinite(const void* data, int64_t count, bool f32, int* result, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(result, 0, sizeof(int), stream);
  if (e != cudaSuccess) return e;
  CountNonFiniteKernel<<<1024, 256, 0, stream>>>(data, count, f32, result);
  return cudaGetLastError();
}

}  // namespace lab::prefill::reference
