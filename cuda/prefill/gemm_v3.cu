// GEMM v3 — tensor cores through mma.sync m16n8k16, cp.async multi-stage pipeline, ldmatrix.
//
// Contract: C = epilogue(A[M,K] · W[N,K]^T). M any; N % 128 == 0; K % 32 == 0; A, W, C (and R)
// 16-byte aligned, lda/ldw/ldc/ldr multiples of 8. Runs on sm_80 and newer.
// Launch: 1-D grid of ceil(M/BM) * (N/128) blocks in grouped order, 128 threads (2x2 warps), dynamic
// shared memory STAGES * (BM + 128) * 64 bytes (64 KB at BM = 128). BM = 128 (warp tile 64x64), or
// BM = 64 (warp tile 32x64) when 128-row tiles would leave the GPU under-filled (small M).
//
// New vs v2:
// - The tensor cores: one mma.sync does 16x8x16 multiply-adds (4096 FLOP) per warp instruction,
//   against 32 FMA (64 FLOP) for an FFMA; fp16 operands stay fp16 in shared memory.
// - Fragments come from shared memory through ldmatrix.x4 (four 8x8 matrices per instruction, in
//   exactly the register layout mma expects: see Mma16816 in device_common.h).
// - Shared memory rows are 64 bytes (32 halves of k); a 16-byte chunk c of row r is stored at chunk
//   c ^ ((r >> 1) & 3), so the 8 row addresses of each ldmatrix phase hit 8 different bank groups
//   (no conflicts) while cp.async writes stay 16-byte aligned.
// - cp.async (global -> shared without registers) keeps STAGES-1 k-tiles in flight while the tensor
//   cores work on the current one; rows past M are zero-filled (src-size 0) and never stored.
// - The 2x2 warps each own 32 "gate" columns and the 32 matching "up" columns of the tile (tile
//   columns wn*32.. and 64+wn*32..), so the SwiGLU epilogue finds both values in one thread.
#include "cuda/prefill/device_common.h"

namespace lab::prefill {
namespace {

constexpr int kBN = 128, kBK = 32, kStages = 4, kThreads = 128;

template <int BM>
constexpr int SmemBytesV3() {
  return kStages * (BM + kBN) * kBK * 2;
}

// Byte offset of 16-byte chunk `chunk` (0..3) of row `row` in a [rows][32 halves] swizzled tile.
__device__ __forceinline__ uint32_t SwzOffset(int row, int chunk) {
  return static_cast<uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

template <Epilogue EPI, typename OutT, int MI>
__global__ void __launch_bounds__(kThreads) GemmV3Kernel(GemmParams p) {
  constexpr int BM = 32 * MI;
  constexpr int kStageA = BM * kBK * 2, kStageB = kBN * kBK * 2, kStage = kStageA + kStageB;
  constexpr bool kSwiglu = EPI == Epilogue::kSwiGLU;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sbase = detail::SmemU32(smem);

  const int num_tm = (p.M + BM - 1) / BM, num_tn = p.N / kBN;
  int tm, tn;
  detail::GroupedTile<8>(blockIdx.x, num_tm, num_tn, tm, tn);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;

  // Per-thread load plan: A has BM*4 chunks (BM/32 per thread), W has 512 chunks (4 per thread).
  constexpr int kAChunks = BM * 4 / kThreads, kBChunks = kBN * 4 / kThreads;
  const half* a_src[kAChunks];
  int a_bytes[kAChunks];
  uint32_t a_dst[kAChunks];
#pragma unroll
  for (int i = 0; i < kAChunks; ++i) {
    const int idx = tid + i * kThreads, row = idx >> 2, ch = idx & 3;
    const int m = tm * BM + row;
    a_bytes[i] = m < p.M ? 16 : 0;
    a_src[i] = p.A + static_cast<int64_t>(m < p.M ? m : 0) * p.lda + ch * 8;
    a_dst[i] = SwzOffset(row, ch);
  }
  const half* b_src[kBChunks];
  uint32_t b_dst[kBChunks];
#pragma unroll
  for (int i = 0; i < kBChunks; ++i) {
    const int idx = tid + i * kThreads, row = idx >> 2, ch = idx & 3;
    b_src[i] = p.W + static_cast<int64_t>(detail::TileWeightRow<kBN>(kSwiglu, p.N, tn, row)) * p.ldw + ch * 8;
    b_dst[i] = kStageA + SwzOffset(row, ch);
  }
  auto load_stage = [&](int stage, int kt) {
    const uint32_t s = sbase + stage * kStage;
    const int koff = kt * kBK;
#pragma unroll
    for (int i = 0; i < kAChunks; ++i) detail::CpAsync16(s + a_dst[i], a_src[i] + koff, a_bytes[i]);
#pragma unroll
    for (int i = 0; i < kBChunks; ++i) detail::CpAsync16(s + b_dst[i], b_src[i] + koff, 16);
  };

  float acc[MI][8][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  // ldmatrix row addresses (without the stage base and the k-chunk, which vary).
  int a_row[MI];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) a_row[mi] = wm * (16 * MI) + mi * 16 + (lane & 15);
  const int a_kc = lane >> 4;
  int b_row[4];
#pragma unroll
  for (int q = 0; q < 4; ++q)
    b_row[q] = (q < 2 ? wn * 32 + q * 16 : 64 + wn * 32 + (q - 2) * 16) + (lane & 7) + ((lane >> 4) << 3);
  const int b_kc = (lane >> 3) & 1;

  const int KT = p.K / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < KT) load_stage(s, s);
    detail::CpAsyncCommit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    detail::CpAsyncWait<kStages - 2>();
    __syncthreads();
    const int nk = kt + kStages - 1;
    if (nk < KT) load_stage(nk % kStages, nk);
    detail::CpAsyncCommit();

    const uint32_t sa = sbase + (kt % kStages) * kStage, sb = sa + kStageA;
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t af[MI][4], bf[4][4];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) detail::Ldmatrix4(af[mi], sa + SwzOffset(a_row[mi], kk * 2 + a_kc));
#pragma unroll
      for (int q = 0; q < 4; ++q) detail::Ldmatrix4(bf[q], sb + SwzOffset(b_row[q], kk * 2 + b_kc));
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int j = 0; j < 8; ++j) detail::Mma16816(acc[mi][j], af[mi], bf[j >> 1][(j & 1) * 2], bf[j >> 1][(j & 1) * 2 + 1]);
    }
  }
  detail::CpAsyncWait<0>();

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
    const int r0 = tm * BM + wm * (16 * MI) + mi * 16 + g, r1 = r0 + 8;
    if (kSwiglu) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = tn * (kBN / 2) + wn * 32 + j * 8 + 2 * t;
        if (r0 < p.M) detail::StorePair<EPI, OutT>(p, r0, c, acc[mi][j][0], acc[mi][j][1], acc[mi][j + 4][0], acc[mi][j + 4][1]);
        if (r1 < p.M) detail::StorePair<EPI, OutT>(p, r1, c, acc[mi][j][2], acc[mi][j][3], acc[mi][j + 4][2], acc[mi][j + 4][3]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int tc = ((j >> 1) < 2 ? wn * 32 + (j >> 1) * 16 : 64 + wn * 32 + ((j >> 1) - 2) * 16) + (j & 1) * 8;
        const int c = tn * kBN + tc + 2 * t;
        if (r0 < p.M) detail::StorePair<EPI, OutT>(p, r0, c, acc[mi][j][0], acc[mi][j][1], 0.f, 0.f);
        if (r1 < p.M) detail::StorePair<EPI, OutT>(p, r1, c, acc[mi][j][2], acc[mi][j][3], 0.f, 0.f);
      }
    }
  }
}

template <Epilogue EPI, typename OutT, int MI>
cudaError_t LaunchV3Tile(const GemmParams& p, cudaStream_t s) {
  constexpr int BM = 32 * MI;
  auto kernel = GemmV3Kernel<EPI, OutT, MI>;
  static bool configured = false;  // the attribute is per function; setting it twice is harmless
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SmemBytesV3<BM>());
    if (e != cudaSuccess) return e;
    configured = true;
  }
  const int blocks = ((p.M + BM - 1) / BM) * (p.N / kBN);
  kernel<<<blocks, kThreads, SmemBytesV3<BM>(), s>>>(p);
  return cudaGetLastError();
}

template <Epilogue EPI, typename OutT>
struct LaunchV3 {
  static cudaError_t Run(const GemmParams& p, cudaStream_t s) {
    const int64_t tiles128 = static_cast<int64_t>((p.M + 127) / 128) * (p.N / kBN);
    if (tiles128 < 2 * detail::CurrentSmCount()) return LaunchV3Tile<EPI, OutT, 2>(p, s);
    return LaunchV3Tile<EPI, OutT, 4>(p, s);
  }
};

}  // namespace

cudaError_t GemmV3(const GemmParams& p, cudaStream_t stream) {
  detail::ThrowIf(GemmUnsupported(3, p), "GemmV3");
  return detail::DispatchEpilogue<LaunchV3>(p, stream);
}

}  // namespace lab::prefill
