// GEMM v4 — Hopper: TMA + mbarrier pipeline, warp specialization, wgmma (sm_90a only).
//
// Contract: C = epilogue(A[M,K] · W[N,K]^T). M any; N % 128 == 0 (N % 256 == 0 to use 256-wide
// tiles); K % 64 == 0; A, W, C (and R) 16-byte aligned, lda/ldw/ldc/ldr multiples of 8. Needs a
// compute-capability 9.0 device and a build with sm_90a (-gencode=arch=compute_90a,code=sm_90a).
// Launch: 1-D grid of ceil(M/128) * (N/BN) blocks in grouped order, 384 threads = 3 warpgroups,
// one block per SM (~193 KB of dynamic shared memory). BN = 256 (4 stages) or 128 (6 stages), chosen
// per shape to limit wave quantization (the last, partly filled wave of blocks).
//
// New vs v3:
// - wgmma: one warpgroup (4 warps) issues a 64xBNx16 matrix product that reads both operands straight
//   from shared memory through descriptors (no ldmatrix, no register staging of A or B), runs
//   asynchronously, and is about twice as fast per SM as mma.sync on Hopper.
// - TMA (cp.async.bulk.tensor.2d): one thread moves a whole 128x64 or BN/2x64 tile per instruction,
//   writing it in the 128-byte swizzle that wgmma reads conflict-free; rows past M (and the ragged
//   last tile) are zero-filled by the copy engine, so M needs no padding.
// - mbarrier pipeline: per stage a "full" barrier (the TMA's transaction bytes) and an "empty" barrier
//   (all 256 consumer threads arrive once they are done with the stage).
// - Warp specialization: warpgroup 0 is the producer (one thread issues all copies, setmaxnreg gives
//   its registers away), warpgroups 1-2 are consumers (rows 0-63 and 64-127 of the tile) with up to
//   232 registers each for the 64xBN fp32 accumulator; each keeps one wgmma batch in flight.
// - Same split column mapping as v3 (a tile holds BN/2 gate rows then the matching BN/2 up rows), so
//   SwiGLU pairs d[j] with d[j + BN/16] in one thread.
#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder is fetched through cudart)

#include <cmath>

#include "cuda/common/tensor_map.h"
#include "cuda/prefill/device_common.h"

namespace lab::prefill {
namespace {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LAB_V4_DEVICE 1
#include "cuda/prefill/wgmma_ops.inc"
#endif

constexpr int kBM = 128, kBK = 64, kThreads = 384;

template <int BN>
struct CfgV4 {
  static constexpr int kStages = BN == 256 ? 4 : 6;
  static constexpr int kABytes = kBM * kBK * 2;       // 16 KB
  static constexpr int kBBytes = BN * kBK * 2;        // 32 or 16 KB
  static constexpr int kStage = kABytes + kBBytes;    // multiple of 1024 (swizzle atom alignment)
  static constexpr int kSmem = 1024 + kStages * kStage + 2 * kStages * 8;
};

#ifdef LAB_V4_DEVICE
__device__ __forceinline__ void MbarInit(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
}
__device__ __forceinline__ void MbarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void MbarExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void TmaLoad2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
// Shared-memory matrix descriptor: K-major tile of 128-byte rows in the 128-byte swizzle, 8-row core
// groups 1024 bytes apart (stride byte offset), leading byte offset unused for this layout.
__device__ __forceinline__ uint64_t SmemDesc(uint32_t addr) {
  uint64_t d = static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(16 >> 4) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}
__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int BN>
__device__ __forceinline__ void Wgmma(float (&d)[BN / 8][4], uint64_t da, uint64_t db) {
  if constexpr (BN == 256) {
    Wgmma64x256(d, da, db);
  } else {
    Wgmma64x128(d, da, db);
  }
}
#endif  // LAB_V4_DEVICE

template <Epilogue EPI, typename OutT, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    GemmV4Kernel(const __grid_constant__ CUtensorMap tm_a, const __grid_constant__ CUtensorMap tm_w, GemmParams p) {
#ifdef LAB_V4_DEVICE
  using Cfg = CfgV4<BN>;
  constexpr int S = Cfg::kStages;
  constexpr bool kSwiglu = EPI == Epilogue::kSwiGLU;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t base = (detail::SmemU32(smem_raw) + 1023u) & ~1023u;
  const uint32_t bars = base + S * Cfg::kStage;  // full[s] = bars + 8s, empty[s] = bars + 8(S+s)

  const int num_tm = (p.M + kBM - 1) / kBM, num_tn = p.N / BN;
  int tm, tn;
  detail::GroupedTile<16>(blockIdx.x, num_tm, num_tn, tm, tn);
  const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
  const int KT = p.K / kBK;

  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      MbarInit(bars + 8 * s, 1);
      MbarInit(bars + 8 * (S + s), 256);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (tid == 0) {
      const int w_row0 = detail::TileWeightRow<BN>(kSwiglu, p.N, tn, 0);
      const int w_row1 = detail::TileWeightRow<BN>(kSwiglu, p.N, tn, BN / 2);
      for (int kt = 0; kt < KT; ++kt) {
        const int s = kt % S;
        if (kt >= S) MbarWait(bars + 8 * (S + s), ((kt / S) - 1) & 1);
        const uint32_t full = bars + 8 * s, dst = base + s * Cfg::kStage;
        MbarExpectTx(full, Cfg::kStage);
        TmaLoad2d(dst, &tm_a, kt * kBK, tm * kBM, full);
        TmaLoad2d(dst + Cfg::kABytes, &tm_w, kt * kBK, w_row0, full);
        TmaLoad2d(dst + Cfg::kABytes + (BN / 2) * 128, &tm_w, kt * kBK, w_row1, full);
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int cw = wg - 1;  // consumer: tile rows cw*64 .. cw*64+63
    float d[BN / 8][4];
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) d[j][e] = 0.f;

    for (int kt = 0; kt < KT; ++kt) {
      const int s = kt % S;
      MbarWait(bars + 8 * s, (kt / S) & 1);
      const uint32_t sa = base + s * Cfg::kStage + cw * 64 * 128, sb = base + s * Cfg::kStage + Cfg::kABytes;
      WgmmaFence();
#pragma unroll
      for (int k16 = 0; k16 < kBK / 16; ++k16) Wgmma<BN>(d, SmemDesc(sa + k16 * 32), SmemDesc(sb + k16 * 32));
      WgmmaCommit();
      WgmmaWait<1>();  // the previous stage's batch is done: hand that stage back to the producer
      if (kt > 0) MbarArrive(bars + 8 * (S + (kt - 1) % S));
    }
    WgmmaWait<0>();

    const int lane = tid & 31, w4 = tid >> 5, g = lane >> 2, t = lane & 3;
    const int r0 = tm * kBM + cw * 64 + w4 * 16 + g, r1 = r0 + 8;
    if (kSwiglu) {
#pragma unroll
      for (int j = 0; j < BN / 16; ++j) {
        const int c = tn * (BN / 2) + 8 * j + 2 * t;
        if (r0 < p.M) detail::StorePair<EPI, OutT>(p, r0, c, d[j][0], d[j][1], d[j + BN / 16][0], d[j + BN / 16][1]);
        if (r1 < p.M) detail::StorePair<EPI, OutT>(p, r1, c, d[j][2], d[j][3], d[j + BN / 16][2], d[j + BN / 16][3]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int c = tn * BN + 8 * j + 2 * t;
        if (r0 < p.M) detail::StorePair<EPI, OutT>(p, r0, c, d[j][0], d[j][1], 0.f, 0.f);
        if (r1 < p.M) detail::StorePair<EPI, OutT>(p, r1, c, d[j][2], d[j][3], 0.f, 0.f);
      }
    }
  }
#endif  // LAB_V4_DEVICE
}

// ---- host side --------------------------------------------------------------------------------------
using lab::cuda::EncodeTiledFn;
EncodeTiledFn GetEncoder() { return lab::cuda::TensorMapEncoder(); }

// 2-D map of a row-major [rows, cols] fp16 matrix with row stride ld, box [box_rows, 64], 128B swizzle.
bool MakeMap(CUtensorMap* map, const half* ptr, int64_t rows, int64_t cols, int64_t ld, int box_rows) {
  EncodeTiledFn enc = GetEncoder();
  if (!enc) return false;
  cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld) * 2};
  cuuint32_t box[2] = {64, static_cast<cuuint32_t>(box_rows)};
  cuuint32_t estr[2] = {1, 1};
  return enc(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, const_cast<half*>(ptr), dims, strides, box, estr,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <Epilogue EPI, typename OutT, int BN>
cudaError_t LaunchV4Tile(const GemmParams& p, cudaStream_t s) {
  auto kernel = GemmV4Kernel<EPI, OutT, BN>;
  static bool configured = false;
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, CfgV4<BN>::kSmem);
    if (e != cudaSuccess) return e;
    configured = true;
  }
  CUtensorMap ma, mw;
  if (!MakeMap(&ma, p.A, p.M, p.K, p.lda, kBM) || !MakeMap(&mw, p.W, p.N, p.K, p.ldw, BN / 2))
    return cudaErrorInvalidValue;
  const int blocks = ((p.M + kBM - 1) / kBM) * (p.N / BN);
  kernel<<<blocks, kThreads, CfgV4<BN>::kSmem, s>>>(ma, mw, p);
  return cudaGetLastError();
}

// 256-wide tiles do ~10% more work per SM-second; 128-wide tiles quantize into waves more finely.
bool PreferBN256(const GemmParams& p) {
  if (p.N % 256) return false;
  const double sms = detail::CurrentSmCount();
  const double tm = (p.M + kBM - 1) / kBM;
  auto eff = [&](double tiles) { return tiles / (std::ceil(tiles / sms) * sms); };
  return eff(tm * (p.N / 256)) * 1.1 >= eff(tm * (p.N / 128));
}

template <Epilogue EPI, typename OutT>
struct LaunchV4 {
  static cudaError_t Run(const GemmParams& p, cudaStream_t s) {
    return PreferBN256(p) ? LaunchV4Tile<EPI, OutT, 256>(p, s) : LaunchV4Tile<EPI, OutT, 128>(p, s);
  }
};

}  // namespace

// True when this build carries sm_90a code for v4 and the current device runs it.
bool GemmV4Available() {
  static int available = -1;
  if (available < 0) {
    int dev = 0, major = 0, minor = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    cudaFuncAttributes attr{};
    const bool have_code =
        cudaFuncGetAttributes(&attr, GemmV4Kernel<Epilogue::kNone, half, 128>) == cudaSuccess && attr.binaryVersion == 90;
    cudaGetLastError();
    available = (major == 9 && minor == 0 && have_code && GetEncoder() != nullptr) ? 1 : 0;
  }
  return available == 1;
}

cudaError_t GemmV4(const GemmParams& p, cudaStream_t stream) {
  detail::ThrowIf(GemmUnsupported(4, p), "GemmV4");
  return detail::DispatchEpilogue<LaunchV4>(p, stream);
}

}  // namespace lab::prefill
