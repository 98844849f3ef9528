// The MLP as one kernel (RingMlpKernel, kernel lab v14): gate/up, SiLU and down in one launch, with no
// dependency between its blocks, so the boundary between gate_up and down is gone.
//
// Why: the kernel lab's chain (session 24, cuda/kernels/README.md, "v14") read the same bytes 2.2% faster
// when each layer's gate/up and down weights went through one ring launch instead of two: a boundary
// cost the weight stream about 2.5 us. Down depends on all of h, and h on all of gate/up, only when
// down's blocks split its rows. Split by columns instead (the intermediate dimension, as tensor-parallel
// MLPs split across GPUs) and block b needs only its own slice of h: out += W_down[:, slice] h[slice].
// The price: each block adds a partial sum to every one of the K outputs (red.global.add.f32, so the
// order of the additions, and the last bits of out, vary from run to run).
//
// Contract:
//   grid = G blocks (the SM count, at most H/8), block = (CW + 1) warps: CW consumer warps, then one
//   producer warp (its lane 0 alone works). Dynamic shared memory MlpSmemBytes(p, STAGES, SC), above 48 KB.
//   H % 8 == 0, K % 32 == 0; Wgu, x, Wdb 16-byte aligned; 32 rows x (nu_lo + 8) fp16 fit one ring slot
//   (nu_lo + 8 <= SC / 2); MlpUnfit says which of these fails.
//   Block b owns the intermediate slice [u0, u0 + nu): groups of 8 columns [H/8 b/G, H/8 (b+1)/G), so nu
//   is nu_lo or nu_lo + 8.
//   - Phase A, as RingMatvecKernel (v10) with kEpiGateUp: stage = one piece (SC 16-byte chunks) of gate row
//     u and up row H + u, for u in the slice; the producer's bulk copies start before the PDL wait.
//   - After phase A's stages: h[u] = SiLU(g_u s) (v_u s) in shared memory, fp32 (s = 1/rms(x) when
//     p.rms: the norm, its weights folded into Wgu), behind a barrier of the consumers.
//   - Phase B: stage = rows [32 j, 32 j + 32) of W_down's columns [u0, u0 + nu), issued as soon as ring
//     slots free up (during phase A's last stages). Lane l of the warp that takes the stage computes output
//     row 32 j + l over the slice and adds it to p.out (red.global.add).
//     BLOCKED false: W_down [K, H] row-major, each stage one 2-D tensor copy (TMA) of a 32 x nu box through
//     map_lo or map_hi (box widths nu_lo and nu_lo + 8).
//     BLOCKED true: W_down in column slices laid out one after another (p.Wdb: block b's [K, nu] row-major
//     slice from element K u0), each stage one 1-D bulk copy of 32 nu contiguous values.
//   Consumer warp w takes stages w, w + CW, ... of both phases (STAGES % CW == 0).
//   p.out is added to, never read: it must not be the buffer x is read from (the engine's residual stream
//   is out; its fp16 copy, written by the kernel before, would be x16).
//   p.only (diagnostics, timing only; out is not the product): 1, phase A alone; 2, phase B alone.
// New against two launches (v10 gate_up, then v10 down): one boundary a layer fewer (the drain, down's
// staging of its 14,336-wide input, gate_up's tail); h never leaves the SM.
// Measured (H200, session 24's lab): with W_down in slices, 81.8 us for the MLP against 85.9 for the two
// launches (-4.8%), and the step's weight chain 3,503 us against 3,578 (-2.1%), as fast as one ring launch
// of both matrices' bytes. The 2-D boxes (208 or 224 bytes a row, from rows 28 KB apart) read 7% slower:
// 87.4 us. The producer's two loops are part of the speed: one loop over both phases, with a branch per
// stage, streamed phase A 7% slower (59.6-60.7 us alone, against 55.4-56.6 with two loops or no phase B).
// In the engine (LAB_GPU_MLP=fused, session 24's A/B): +0.7% a step at 512 and 2048; the default (auto) since
// session 25, with qkv's fp32 x by one bulk copy behind it: +1.4% at 512 over split (cuda/gpu_opt/README.md).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/common/tensor_map.h"  // CUtensorMap, and the encoder for the lab's 2-D boxes
#include "cuda/gpu_opt/kernels_matvec_ring.cuh"

namespace lab {
namespace gpu {

constexpr int kMlpRows = 32;  // W_down rows per phase-B stage: one per lane of the warp that takes it

struct MlpParams {
  const __half* Wgu;  // [2H, K]: gate rows 0..H-1, then up rows (kEpiGateUp's layout)
  const float* x;     // [K] fp32 input, or
  const __half* x16;  // [K] fp16 input (then x is unused)
  int K, H;
  int rms;            // 1: the dot products scaled by 1/sqrt(mean(x^2) + eps), the folded RMSNorm
  float eps;
  float* out;         // [K] fp32, += W_down h (W_down [K, H] row-major, read through the two maps, or:)
  const __half* Wdb;  // BLOCKED: W_down in column slices, block b's [K, nu] row-major at element K u0
  int only;           // diagnostics (timing only): 1, phase A alone (no W_down read); 2, phase B alone
  unsigned long long* trace;  // nullptr, or this launch's TraceMarks slots (the engine's LAB_GPU_TRACE)
  int nu_lo;          // 8 floor(H / 8 / G): the narrower slice (map_lo's box width; map_hi's is nu_lo + 8)
};

inline int MlpGrid(int sms, int H) { return sms < H / 8 ? sms : H / 8; }
// The narrower of a grid's two slice widths (the wider is 8 more): MlpParams::nu_lo.
inline int MlpNarrow(int H, int grid) { return 8 * (H / 8 / grid); }

// Shared memory: the ring, x in the split fp32 layout, each chunk's sum of squares, each unit's per-piece
// partial sums, h.
inline size_t MlpSmemBytes(const MlpParams& p, int stages, int sc) {
  const size_t nch = size_t(p.K / 8), pieces = (nch + sc - 1) / sc, nu_max = size_t(p.nu_lo) + 8;
  const size_t part = (nu_max * pieces * 2 + 3) / 4 * 4;
  return size_t(stages) * 2 * sc * 16 + nch * 32 + (nch + 3) / 4 * 16 + part * 4 + nu_max * 4;
}

// Empty when the kernel can run this shape with SC-chunk pieces; else what does not fit.
inline std::string MlpUnfit(int K, int H, int grid, int sc) {
  if (H % 8 || K % 32) return "RingMlpKernel: H % 8 and K % 32 must be 0";
  if (grid < 1 || grid > H / 8) return "RingMlpKernel: grid must be 1..H/8";
  const int nu_hi = MlpNarrow(H, grid) + 8;
  if (nu_hi * 2 * kMlpRows > 2 * sc * 16) return "RingMlpKernel: a slice's 32 rows of W_down exceed a ring slot";
  return "";
}

__device__ __forceinline__ void TensorCopy2dToShared(void* dst, const CUtensorMap* map, int col, int row,
                                                     uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          cuda::SmemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(col), "r"(row), "r"(cuda::SmemAddr(bar))
      : "memory");
#endif
}

template <int CW, int STAGES, int SC, bool BLOCKED>
__global__ void __launch_bounds__((CW + 1) * 32, 1)
    RingMlpKernel(const __grid_constant__ CUtensorMap map_lo, const __grid_constant__ CUtensorMap map_hi,
                  const MlpParams p) {
  static_assert(STAGES % CW == 0, "a ring slot always serves the same consumer warp");
  static_assert(SC % 32 == 0, "a piece is whole rounds of 32 chunks");
  extern __shared__ __align__(128) float4 ring_smem[];
  __shared__ uint64_t full[STAGES], empty[STAGES];
  TraceMarks trace(p.trace);  // (thread 0, a consumer: the block's start, release, x staged, end)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nch = p.K >> 3, P = (nch + SC - 1) / SC, ng = p.H >> 3;
  const int u0 = 8 * int(int64_t(ng) * blockIdx.x / gridDim.x);
  const int nu = 8 * int(int64_t(ng) * (blockIdx.x + 1) / gridDim.x) - u0;
  const int na = p.only == 2 ? 0 : nu * P, nb = p.only == 1 ? 0 : p.K / kMlpRows;  // phase A's, B's stages
  uint4* const ring = reinterpret_cast<uint4*>(ring_smem);  // [STAGES][2][SC] chunks
  float4* const xlo = ring_smem + STAGES * 2 * SC;
  float4* const xhi = xlo + nch;
  float* const ssq = reinterpret_cast<float*>(xhi + nch);  // [nch]
  float* const part = ssq + (nch + 3) / 4 * 4;              // [nu][P][2]
  float* const h = part + ((p.nu_lo + 8) * P * 2 + 3) / 4 * 4;  // [nu], 16-byte aligned

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      MbarInit(&full[s]);
      MbarInit(&empty[s]);
    }
  }
  __syncthreads();  // the last block-wide barrier: producer and consumers part here

  if (warp == CW) {  // ---- producer ----
    if (lane != 0) return;
    PdlTrigger();  // the next kernel may launch (it waits for this grid's completion before reading)
    // Phase A's stages, then phase B's: two loops (one loop with a branch per stage streamed phase A 7% slower
    // in session 24's lab, when phase B never ran).
    int it = 0;
    for (; it < na; ++it) {
      const int s = it % STAGES, use = it / STAGES;
      if (use > 0) MbarWait(&empty[s], (use - 1) & 1);
      const int ul = it / P, piece = it - ul * P;
      const int c0 = piece * SC, len = min(SC, nch - c0), r0 = u0 + ul, r1 = r0 + p.H;
      uint4* slot = ring + size_t(s) * 2 * SC;
      MbarArriveExpectTx(&full[s], unsigned(len) * 32u);
      BulkCopyToShared(slot, p.Wgu + size_t(r0) * p.K + size_t(c0) * 8, unsigned(len) * 16u, &full[s]);
      BulkCopyToShared(slot + SC, p.Wgu + size_t(r1) * p.K + size_t(c0) * 8, unsigned(len) * 16u, &full[s]);
    }
    const CUtensorMap* map = nu == p.nu_lo ? &map_lo : &map_hi;
    const __half* src = p.Wdb + size_t(p.K) * u0;  // BLOCKED: the block's [K, nu] slice
    for (; it < na + nb; ++it) {
      const int s = it % STAGES, use = it / STAGES;
      if (use > 0) MbarWait(&empty[s], (use - 1) & 1);
      uint4* slot = ring + size_t(s) * 2 * SC;
      MbarArriveExpectTx(&full[s], unsigned(kMlpRows * nu * 2));
      if (BLOCKED)
        BulkCopyToShared(slot, src + size_t(it - na) * kMlpRows * nu, unsigned(kMlpRows * nu * 2), &full[s]);
      else
        TensorCopy2dToShared(slot, map, u0, (it - na) * kMlpRows, &full[s]);
    }
    return;
  }

  // ---- consumers: x into shared memory ----
  const int tid = threadIdx.x, nthreads = CW * 32;
  PdlWait();
  trace.Released();
  {
    const float4* x4 = reinterpret_cast<const float4*>(p.x);
    const uint4* x16 = reinterpret_cast<const uint4*>(p.x16);
    for (int c = tid; c < nch; c += nthreads) {
      float4 a, b;
      if (x16) {
        float f[8];
        Unpack8(__ldcg(x16 + c), f);
        a = make_float4(f[0], f[1], f[2], f[3]);
        b = make_float4(f[4], f[5], f[6], f[7]);
      } else {
        a = __ldcg(x4 + 2 * c);
        b = __ldcg(x4 + 2 * c + 1);
      }
      if (p.rms) ssq[c] = SumSq8(a, b);
      xlo[c] = a;
      xhi[c] = b;
    }
  }
  RingConsumersSync(nthreads);
  trace.Staged();

  // ---- consumers: phase A, gate/up ----
  // (RingMatvecKernel's stage loop, copied rather than shared: v10's loop is the engine's measured code, and
  // session 24 saw a never-taken branch move this kernel's speed by 7%; a shared version needs its own A/B.)
  for (int it = warp; it < na; it += CW) {
    const int s = it % STAGES, use = it / STAGES;
    MbarWait(&full[s], use & 1);
    const int ul = it / P, piece = it - ul * P;
    const int c0 = piece * SC, len = min(SC, nch - c0);
    const uint4* w0 = ring + size_t(s) * 2 * SC;
    const uint4* w1 = w0 + SC;
    float a0 = 0.f, a1 = 0.f;
#pragma unroll 4
    for (int c = lane; c < len; c += 32) {
      const float4 lo = xlo[c0 + c], hi = xhi[c0 + c];
      a0 = Dot8(w0[c], lo, hi, a0);
      a1 = Dot8(w1[c], lo, hi, a1);
    }
    a0 = WarpSum(a0);
    a1 = WarpSum(a1);
    __syncwarp();  // every lane's reads of the slot are done
    if (lane == 0) {
      part[2 * it] = a0;
      part[2 * it + 1] = a1;
      MbarArrive(&empty[s]);
    }
  }
  RingConsumersSync(nthreads);
  float scale = 1.f;
  if (p.rms) {
    float t = 0.f;
    for (int c = lane; c < nch; c += 32) t += ssq[c];
    scale = 1.f / sqrtf(WarpSum(t) / p.K + p.eps);
  }
  for (int ul = tid; ul < nu; ul += nthreads) {
    float g = 0.f, v = 0.f;
    for (int k = 0; k < P; ++k) {
      g += part[2 * (ul * P + k)];
      v += part[2 * (ul * P + k) + 1];
    }
    h[ul] = Silu(g * scale) * (v * scale);
  }
  RingConsumersSync(nthreads);

  // ---- consumers: phase B, down by columns ----
  const float4* h4 = reinterpret_cast<const float4*>(h);
  const int nc = nu >> 3;  // 16-byte chunks of a stage's row
  for (int it = na + ((warp - na % CW) % CW + CW) % CW; it < na + nb; it += CW) {
    const int s = it % STAGES, use = it / STAGES;
    MbarWait(&full[s], use & 1);
    const uint4* row = ring + size_t(s) * 2 * SC + lane * nc;  // lane's row of the box: [nu] fp16
    float acc = 0.f;
    for (int c = 0; c < nc; ++c) acc = Dot8(row[c], h4[2 * c], h4[2 * c + 1], acc);
    __syncwarp();  // every lane's reads of the slot are done
    if (lane == 0) MbarArrive(&empty[s]);
    atomicAdd(p.out + (it - na) * kMlpRows + lane, acc);  // no return value used: red.global.add.f32
  }
}

// W_down [K, H] row-major into RingMlpKernel's BLOCKED layout for a grid of G blocks (once, at load):
// block b's columns [u0, u0 + nu) as a [K, nu] row-major slice from element K u0 of dst. grid.y = G.
static __global__ void SliceDownKernel(const __half* src, __half* dst, int K, int H) {
  const int ng = H >> 3, b = blockIdx.y, G = gridDim.y;
  const int u0 = 8 * int(int64_t(ng) * b / G), nu = 8 * int(int64_t(ng) * (b + 1) / G) - u0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < size_t(K) * nu; i += size_t(gridDim.x) * blockDim.x)
    dst[size_t(K) * u0 + i] = src[(i / nu) * H + u0 + i % nu];
}

// ---- host side ----

// W_down [K, H] row-major in boxes of 32 rows x `width` columns, unswizzled (a box lands as [32][width]).
inline bool MakeMlpDownMap(CUtensorMap* map, const __half* Wd, int K, int H, int width) {
  cuda::EncodeTiledFn enc = cuda::TensorMapEncoder();
  if (!enc) return false;
  cuuint64_t dims[2] = {cuuint64_t(H), cuuint64_t(K)};
  cuuint64_t strides[1] = {cuuint64_t(H) * 2};
  cuuint32_t box[2] = {cuuint32_t(width), cuuint32_t(kMlpRows)};
  cuuint32_t estr[2] = {1, 1};
  return enc(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, const_cast<__half*>(Wd), dims, strides, box, estr,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace gpu
}  // namespace lab
