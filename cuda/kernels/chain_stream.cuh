// The kernel lab's chain, second form: a decode step's whole weight stream (the matvecs of every layer and
// lm_head, one after another, each depending on the one before) as ONE persistent kernel whose weight
// loads never wait for a dependency. bench.cu times it beside the first form, one launch per matvec
// (stream, CUDA graph, graph + PDL).
//
// Why: with one launch per matvec the next kernel's blocks can hold only what fits in their registers
// (or staged shared memory) before the PDL wait; everything else waits for the previous grid to finish.
// The weights never depend on x, so a producer can stream them ahead across every boundary; only the
// dot products wait. This is the half of the "megakernel" idea (Hazy Research, 2025) that matters for a
// model whose matrices are large: how close does a step's weight stream get to the read ceiling when
// the boundaries cost no streaming at all? (cuda/kernels/README.md, "The chain as one kernel".)
//
// Contract (ChainStreamKernel):
//   grid = G blocks, one per SM, all resident (cooperative launch); block = (kCsWarps + 1) warps;
//   dynamic smem ChainStreamSmemBytes(). mats[0..n): row-major fp16 W [M, K] (K % 2048 == 0, 16-byte
//   aligned), output y [M] fp32; ceil(M / G) <= kCsMaxRows; K <= kCsMaxK; *bar == 0 at launch.
//   Matrix m's input is x0 for m = 0, and x0 + 1e-30 * y_{m-1}[0, K) after it: numerically x0 (so every
//   output can be checked against an ordinary matvec of x0), but a true read of the previous matrix's
//   output, after a grid barrier, as in a decode step.
//   Block b owns rows [M b / G, M (b + 1) / G) of every matrix: one contiguous byte range of W.
//   - The producer warp (lane 0) streams the block's ranges of all matrices, in order, through a ring
//     of kCsStages shared-memory stages of kCsStageBytes by 1-D bulk copies (TMA): stage s's "full"
//     barrier counts its bytes; it reuses a stage once its "empty" barrier has seen the warps of the
//     team that takes it. It never waits on the grid barrier.
//   - The kCsWarps consumer warps, per matrix: wait until all G blocks have written the previous matrix
//     (a counter, acquire), stage x in shared memory (fp32, split layout), then consume the stages. The
//     warps form kCsTeams teams; team t takes the stages whose index (over all matrices) is t modulo
//     kCsTeams, so that several stages are consumed at once. A stage is 32 groups of 32 chunks (512
//     bytes); warp u of a team takes groups kCsGpw u .. kCsGpw (u + 1) - 1, which lie inside one row
//     (K % 2048 == 0: a row is a multiple of 8 groups, and so is every stage, the last one of a block's
//     range included), lane l chunk l of each: its products summed, then over the warp, then added to the row's
//     accumulator in shared memory (atomicAdd: the order of the warps' sums is not fixed, so the result
//     is not bitwise reproducible). Then they write the block's rows and release the counter (one
//     increment per block, after a fence).
//   Measured (cuda/kernels/README.md): as fast as the graph + PDL chain with the barrier, 10% faster
//   without it. Tried and slower (d820e68..9c61782): 64 KB units of rows, part of them claimed from a
//   per-matrix counter so that faster SMs take more of each matrix's tail.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/gpu_opt/kernels_common.cuh"

namespace lab {
namespace kernels {

struct ChainMat {
  const __half* W;
  int M, K;
  float* y;
};

constexpr int kCsWarps = 16;            // consumer warps; one more warp produces
constexpr int kCsTeams = 4;             // the consumer warps in teams, each team on every kCsTeams-th stage
constexpr int kCsGpw = 8;               // groups of 32 chunks a consumer warp takes from a full stage
constexpr int kCsStageBytes = 16384;    // 32 groups of 32 16-byte chunks
static_assert(kCsWarps / kCsTeams * kCsGpw == kCsStageBytes / 512, "a team takes a stage's groups exactly");
constexpr int kCsStages = 8;            // 128 KB of weights in flight per SM
// Each stage belongs to one team for good. Otherwise a team could wait on a stage's next use while another
// team's current use of it is not filled yet: the parity it waits for is the previous phase's, already
// complete, and it would read the stage early (10 stages over 4 teams: a launch failure in session 16).
static_assert(kCsStages % kCsTeams == 0, "a stage always goes to the same team");
constexpr int kCsMaxK = 14336;
// What the kernel does (its diagnostics isolate the costs): kCsFull, the contract; kCsNoBarrier, no grid
// barrier, every matrix multiplies x0 (the same outputs, no dependency); kCsRingOnly, the weight stream
// through the ring alone (consumers wait for each stage and release it; outputs are the zeroed sums).
enum ChainStreamMode : int { kCsFull = 0, kCsNoBarrier = 1, kCsRingOnly = 2 };
constexpr int kCsMaxRows = 2048;

inline size_t ChainStreamSmemBytes() {
  return size_t(kCsStages) * kCsStageBytes + size_t(kCsMaxK) * sizeof(float) + size_t(kCsMaxRows) * sizeof(float);
}

__device__ __forceinline__ void CsConsumersSync() {  // the consumer warps only (named barrier 1)
  asm volatile("bar.sync 1, %0;" ::"n"(kCsWarps * 32) : "memory");
}
__device__ __forceinline__ unsigned CsLoadAcquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__global__ void __launch_bounds__((kCsWarps + 1) * 32, 1)
    ChainStreamKernel(const ChainMat* __restrict__ mats, int n, const float* __restrict__ x0, unsigned* bar, int mode) {
  extern __shared__ __align__(128) float4 cs_smem[];  // (aligned: RingMatvecKernel's note)
  __shared__ uint64_t full[kCsStages], empty[kCsStages];
  uint4* const ring = reinterpret_cast<uint4*>(cs_smem);
  float4* const xlo = cs_smem + kCsStages * kCsStageBytes / 16;
  float4* const xhi = xlo + kCsMaxK / 8;
  float* const acc = reinterpret_cast<float*>(xhi + kCsMaxK / 8);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, G = gridDim.x, b = blockIdx.x;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kCsStages; ++s) {
      gpu::MbarInit(&full[s]);
      gpu::MbarInit(&empty[s], kCsWarps / kCsTeams);  // the warps of the team that takes the stage
    }
  }
  __syncthreads();  // the last block-wide barrier: producer and consumers part here

  if (warp == kCsWarps) {  // ---- producer ----
    if (lane != 0) return;
    unsigned it = 0;  // stages issued, over all matrices
    for (int m = 0; m < n; ++m) {
      const ChainMat c = mats[m];
      const int r0 = int(int64_t(c.M) * b / G), r1 = int(int64_t(c.M) * (b + 1) / G);
      const char* src = reinterpret_cast<const char*>(c.W + size_t(r0) * c.K);
      const int64_t bytes = int64_t(r1 - r0) * c.K * 2;
      for (int64_t off = 0; off < bytes; off += kCsStageBytes, ++it) {
        const unsigned s = it % kCsStages, use = it / kCsStages;
        if (use > 0) gpu::MbarWait(&empty[s], (use - 1) & 1);
        const unsigned nb = unsigned(bytes - off < kCsStageBytes ? bytes - off : kCsStageBytes);
        gpu::MbarArriveExpectTx(&full[s], nb);
        gpu::BulkCopyToShared(ring + size_t(s) * (kCsStageBytes / 16), src + off, nb, &full[s]);
      }
    }
    return;
  }

  // ---- consumers ----
  const int tid = threadIdx.x, team = warp / (kCsWarps / kCsTeams), sub = warp % (kCsWarps / kCsTeams);
  unsigned it = 0;
  for (int m = 0; m < n; ++m) {
    const ChainMat c = mats[m];
    const int r0 = int(int64_t(c.M) * b / G), r1 = int(int64_t(c.M) * (b + 1) / G), nch = c.K / 8;
    const int64_t bytes = int64_t(r1 - r0) * c.K * 2;
    if (m > 0 && mode == kCsFull) {  // every block has written matrix m - 1
      if (tid == 0)
        while (CsLoadAcquire(bar) < unsigned(m) * unsigned(G)) {
        }
      CsConsumersSync();
    }
    const float4* x4 = reinterpret_cast<const float4*>(x0);
    const float4* p4 = m > 0 && mode == kCsFull ? reinterpret_cast<const float4*>(mats[m - 1].y) : nullptr;
    // x's chunks of this thread (at most kXc: 14336 / 8 over 512 threads), every load issued before any is
    // used: one L2 round trip on the critical path, not one per chunk.
    constexpr int kXc = (kCsMaxK / 8 + kCsWarps * 32 - 1) / (kCsWarps * 32);
    float4 xa[kXc], xh[kXc], pa[kXc], ph[kXc];
#pragma unroll
    for (int i = 0; i < kXc; ++i) {
      const int ch = tid + i * kCsWarps * 32;
      if (ch < nch) {
        xa[i] = __ldg(x4 + 2 * ch);
        xh[i] = __ldg(x4 + 2 * ch + 1);
        if (p4) {
          pa[i] = __ldcg(p4 + 2 * ch);
          ph[i] = __ldcg(p4 + 2 * ch + 1);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kXc; ++i) {
      const int ch = tid + i * kCsWarps * 32;
      if (ch < nch) {
        float4 a = xa[i], h = xh[i];
        if (p4) {
          a = make_float4(fmaf(1e-30f, pa[i].x, a.x), fmaf(1e-30f, pa[i].y, a.y), fmaf(1e-30f, pa[i].z, a.z),
                          fmaf(1e-30f, pa[i].w, a.w));
          h = make_float4(fmaf(1e-30f, ph[i].x, h.x), fmaf(1e-30f, ph[i].y, h.y), fmaf(1e-30f, ph[i].z, h.z),
                          fmaf(1e-30f, ph[i].w, h.w));
        }
        xlo[ch] = a;
        xhi[ch] = h;
      }
    }
    for (int r = tid; r < r1 - r0; r += kCsWarps * 32) acc[r] = 0.f;
    CsConsumersSync();
    for (int64_t off = 0; off < bytes; off += kCsStageBytes, ++it) {
      if (it % kCsTeams != unsigned(team)) continue;  // another team's stage
      const unsigned s = it % kCsStages, use = it / kCsStages;
      gpu::MbarWait(&full[s], use & 1);
      const int groups = int((bytes - off < kCsStageBytes ? bytes - off : kCsStageBytes) / 512);
      const uint4* st = ring + size_t(s) * (kCsStageBytes / 16);
      const int g0 = sub * kCsGpw;  // this warp's kCsGpw groups of the stage, all in one row
      if (g0 < groups && mode != kCsRingOnly) {
        const int gc = int(off / 16) + g0 * 32;  // the first one's first chunk in the block's range (< 2^31:
        const int row = gc / nch, col = gc - row * nch + lane;  // rows <= kCsMaxRows of <= kCsMaxK)
        float p0 = 0.f, p1 = 0.f;  // two chains of products
#pragma unroll
        for (int j = 0; j < kCsGpw; j += 2) {
          p0 = gpu::Dot8(st[(g0 + j) * 32 + lane], xlo[col + 32 * j], xhi[col + 32 * j], p0);
          p1 = gpu::Dot8(st[(g0 + j + 1) * 32 + lane], xlo[col + 32 * j + 32], xhi[col + 32 * j + 32], p1);
        }
        const float v = gpu::WarpSum(p0 + p1);
        if (lane == 0) atomicAdd(acc + row, v);
      }
      __syncwarp();
      if (lane == 0) gpu::MbarArrive(&empty[s]);
    }
    CsConsumersSync();
    for (int r = tid; r < r1 - r0; r += kCsWarps * 32) c.y[r0 + r] = acc[r];
    CsConsumersSync();
    if (tid == 0 && mode == kCsFull) {
      __threadfence();
      atomicAdd(bar, 1u);
    }
  }
}

// Host side: the launch (the counter cleared first, then one cooperative launch of one block per SM), and
// why it cannot run here (an empty string when it can).
inline std::string ChainStreamUnfit(const cudaDeviceProp& prop, const ChainMat* host_mats, int n) {
  if (prop.major < 9) return "needs sm_90 (bulk copies, mbarriers)";
  if (!prop.cooperativeLaunch) return "no cooperative launch";
  if (ChainStreamSmemBytes() > size_t(prop.sharedMemPerBlockOptin)) return "not enough shared memory per block";
  for (int m = 0; m < n; ++m)
    if (host_mats[m].K % (256 * kCsGpw) || host_mats[m].K > kCsMaxK ||
        (host_mats[m].M + prop.multiProcessorCount - 1) / prop.multiProcessorCount > kCsMaxRows)
      return "a matrix outside the kernel's contract";
  return "";
}
inline cudaError_t LaunchChainStream(const ChainMat* dev_mats, int n, const float* x0, unsigned* bar, int sms,
                                     cudaStream_t s, int mode = kCsFull) {
  static bool attr = false;
  if (!attr) {
    const cudaError_t e = cudaFuncSetAttribute(ChainStreamKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               int(ChainStreamSmemBytes()));
    if (e != cudaSuccess) return e;
    attr = true;
  }
  cudaError_t e = cudaMemsetAsync(bar, 0, sizeof(unsigned), s);
  if (e != cudaSuccess) return e;
  void* args[] = {&dev_mats, &n, &x0, &bar, &mode};
  return cudaLaunchCooperativeKernel(reinterpret_cast<void*>(ChainStreamKernel), dim3(sms), dim3((kCsWarps + 1) * 32),
                                     args, ChainStreamSmemBytes(), s);
}

}  // namespace kernels
}  // namespace lab
