// GEMM v2 — shared-memory tiled SIMT (no tensor cores).
//
// Contract: C = epilogue(A[M,K] · W[N,K]^T). M any; N % 128 == 0; K % 16 == 0; A, W, C (and R) 16-byte
// aligned, lda/ldw/ldc/ldr multiples of 8.
// Launch: 1-D grid of ceil(M/128) * (N/128) blocks in grouped order (device_common.h), 256 threads.
// Tiles: block 128x128 outputs, k-step 16; thread 8x8 outputs (rows ty*4+i and 64+ty*4+i, columns
// tx*4+j and 64+tx*4+j) so its shared-memory reads are two float4 per operand per k.
//
// New vs v1: each A and W element is loaded from device memory once per block tile (16-byte loads)
// and reused 128 times from shared memory (converted to fp32 on the way in, stored k-major so a
// thread's operands are contiguous); register double-buffering overlaps the next tile's global loads
// with this tile's 1024 FMAs per thread. Rows past M are loaded as zeros and never stored.
// Still bound by the fp32 FMA pipe (~1/15 of the fp16 tensor-core rate on Hopper).
#include "cuda/prefill/device_common.h"

namespace lab::prefill {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 16, kPad = 4;

template <Epilogue EPI, typename OutT>
__global__ void __launch_bounds__(256) GemmV2Kernel(GemmParams p) {
  __shared__ __align__(16) float As[2][kBK][kBM + kPad];
  __shared__ __align__(16) float Ws[2][kBK][kBN + kPad];
  constexpr bool kSwiglu = EPI == Epilogue::kSwiGLU;
  const int num_tm = (p.M + kBM - 1) / kBM, num_tn = p.N / kBN;
  int tm, tn;
  detail::GroupedTile<8>(blockIdx.x, num_tm, num_tn, tm, tn);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;

  // Loader: thread loads 8 consecutive k of one A row and one W row per k-step.
  const int lr = tid >> 1, lk = (tid & 1) * 8;
  const int am = tm * kBM + lr;
  const bool a_ok = am < p.M;
  const half* a_src = p.A + static_cast<int64_t>(a_ok ? am : 0) * p.lda + lk;
  const half* w_src = p.W + static_cast<int64_t>(detail::TileWeightRow<kBN>(kSwiglu, p.N, tn, lr)) * p.ldw + lk;
  uint4 ra, rw;
  auto gload = [&](int kt) {
    ra = a_ok ? *reinterpret_cast<const uint4*>(a_src + kt * kBK) : make_uint4(0, 0, 0, 0);
    rw = *reinterpret_cast<const uint4*>(w_src + kt * kBK);
  };
  auto sstore = [&](int buf) {
    const half* ha = reinterpret_cast<const half*>(&ra);
    const half* hw = reinterpret_cast<const half*>(&rw);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      As[buf][lk + i][lr] = __half2float(ha[i]);
      Ws[buf][lk + i][lr] = __half2float(hw[i]);
    }
  };

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  const int KT = p.K / kBK;
  gload(0);
  sstore(0);
  __syncthreads();
  for (int kt = 0; kt < KT; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < KT) gload(kt + 1);
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Ws[buf][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Ws[buf][k][64 + tx * 4]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (kt + 1 < KT) sstore(buf ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = tm * kBM + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    if (m >= p.M) continue;
    if (kSwiglu) {
      const int c = tn * (kBN / 2) + tx * 4;
#pragma unroll
      for (int j = 0; j < 4; j += 2)
        detail::StorePair<EPI, OutT>(p, m, c + j, acc[i][j], acc[i][j + 1], acc[i][j + 4], acc[i][j + 5]);
    } else {
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        const int c = tn * kBN + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
        detail::StorePair<EPI, OutT>(p, m, c, acc[i][j], acc[i][j + 1], 0.f, 0.f);
      }
    }
  }
}

template <Epilogue EPI, typename OutT>
struct LaunchV2 {
  static cudaError_t Run(const GemmParams& p, cudaStream_t s) {
    const int blocks = ((p.M + kBM - 1) / kBM) * (p.N / kBN);
    GemmV2Kernel<EPI, OutT><<<blocks, 256, 0, s>>>(p);
    return cudaGetLastError();
  }
};

}  // namespace

cudaError_t GemmV2(const GemmParams& p, cudaStream_t stream) {
  detail::ThrowIf(GemmUnsupported(2, p), "GemmV2");
  return detail::DispatchEpilogue<LaunchV2>(p, stream);
}

}  // namespace lab::prefill
