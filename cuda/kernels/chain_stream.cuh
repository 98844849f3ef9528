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
//   aligned, K <= kCsMaxK), output y [M] fp32, zero at launch (the kernel adds into it); ctr: 2 n
//   counters, zero at launch.
//   Matrix m's input is x0 for m = 0, and x0 + 1e-30 * y_{m-1}[0, K) after it: numerically x0 (so every
//   output can be checked against an ordinary matvec of x0), but a true read of the previous matrix's
//   output, after a grid barrier, as in a decode step.
//   Work: a matrix is cut into units of CsUnitRows(K) whole rows (about 64 KB). Block b takes units
//   b S .. b S + S - 1 (S = T static_pct / 100 / G of the T units), then claims the rest one at a time
//   from the matrix's counter ctr[m] (atomicAdd; each claim sent one unit ahead, the first with the last
//   static unit): the SMs that stream faster take more of the tail, so
//   all finish a matrix within about a unit of each other. static_pct 100 leaves only T mod G to claim.
//   - The producer warp (lane 0) streams its units of all matrices, in order, through a ring of
//     kCsStages shared-memory stages of kCsStageBytes by 1-D bulk copies (TMA), a unit in consecutive
//     stages (its last one partial); each stage carries a tag (the unit's first row, the stage's first
//     chunk in the unit, its chunks). After a matrix's last unit come kCsTeams empty END stages, one for
//     each team. Stage s's "full" barrier counts its bytes; the producer reuses it once its "empty"
//     barrier has seen the team's warps. It never waits on the grid barrier; the next claim's atomic is
//     issued before the current unit's copies, so its latency hides behind them.
//   - The kCsWarps consumer warps, per matrix: wait until the G blocks have added every product of the
//     previous matrix (ctr[n + m - 1] counts 512-byte groups, acquire), stage x in shared memory (fp32,
//     split layout), then consume stages until their END. The warps form kCsTeams teams; team t takes
//     the stages whose index (over the whole launch) is t modulo kCsTeams, so that several stages are
//     consumed at once. A stage is up to 32 groups of 32 chunks; warp u of a team takes groups
//     kCsGpw u .. kCsGpw (u + 1) - 1, which lie inside one row (K % 2048: a row is a multiple of 8
//     groups, and so is every stage), lane l chunk l of each: products summed, then over the warp, then
//     added into y[row] (atomicAdd: the order is not fixed, so the sums are not bitwise reproducible).
//     At END the block's consumers meet, and one thread adds the block's groups to ctr[n + m] (release).
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
constexpr int kCsUnitBytes = 65536;     // a unit of work: whole rows, about this many bytes
// What the kernel does (its diagnostics isolate the costs): kCsFull, the contract; kCsNoBarrier, no grid
// barrier, every matrix multiplies x0 (the same outputs, no dependency); kCsRingOnly, the weight stream
// through the ring alone (consumers wait for each stage and release it; y is left as it was).
enum ChainStreamMode : int { kCsFull = 0, kCsNoBarrier = 1, kCsRingOnly = 2 };

__host__ __device__ inline int CsUnitRows(int K) {
  const int r = kCsUnitBytes / (2 * K);
  return r > 0 ? r : 1;
}

inline size_t ChainStreamSmemBytes() { return size_t(kCsStages) * kCsStageBytes + size_t(kCsMaxK) * sizeof(float); }

__device__ __forceinline__ void CsBarInit(uint64_t* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(gpu::SmemAddr(bar)), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void CsBarArrive(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(gpu::SmemAddr(bar)) : "memory");
#endif
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
    ChainStreamKernel(const ChainMat* __restrict__ mats, int n, const float* __restrict__ x0, unsigned* ctr, int mode,
                      int static_pct) {
  extern __shared__ float4 cs_smem[];
  __shared__ uint64_t full[kCsStages], empty[kCsStages];
  __shared__ int4 tag[kCsStages];   // {first row of the unit, first chunk in the unit, chunks, END: -1 rows}
  __shared__ unsigned blk_groups;   // groups this block's consumers have added, this matrix
  uint4* const ring = reinterpret_cast<uint4*>(cs_smem);
  float4* const xlo = cs_smem + kCsStages * kCsStageBytes / 16;
  float4* const xhi = xlo + kCsMaxK / 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, G = gridDim.x, b = blockIdx.x;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kCsStages; ++s) {
      CsBarInit(&full[s], 1);
      CsBarInit(&empty[s], kCsWarps / kCsTeams);  // the warps of the team that takes the stage
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();  // the last block-wide barrier: producer and consumers part here

  if (warp == kCsWarps) {  // ---- producer ----
    if (lane != 0) return;
    unsigned it = 0;  // stages issued, over all matrices
    auto next_stage = [&](int4 t, const char* src, unsigned nb) {
      const unsigned s = it % kCsStages, use = it / kCsStages;
      if (use > 0) gpu::MbarWait(&empty[s], (use - 1) & 1);
      tag[s] = t;  // made visible to the consumers by the arrive below (release at CTA scope)
      if (nb) {
        gpu::MbarArriveExpectTx(&full[s], nb);
        gpu::BulkCopyToShared(ring + size_t(s) * (kCsStageBytes / 16), src, nb, &full[s]);
      } else {
        CsBarArrive(&full[s]);
      }
      ++it;
    };
    for (int m = 0; m < n; ++m) {
      const ChainMat c = mats[m];
      const int ur = CsUnitRows(c.K), T = (c.M + ur - 1) / ur, S = int(int64_t(T) * static_pct / 100 / G);
      const int64_t row_bytes = int64_t(c.K) * 2;
      auto stream_unit = [&](int u) {
        const int r0 = u * ur, r1 = min(c.M, r0 + ur);
        const char* src = reinterpret_cast<const char*>(c.W + size_t(r0) * c.K);
        const int64_t bytes = (r1 - r0) * row_bytes;
        for (int64_t off = 0; off < bytes; off += kCsStageBytes) {
          const unsigned nb = unsigned(bytes - off < kCsStageBytes ? bytes - off : kCsStageBytes);
          next_stage(make_int4(r0, int(off / 16), int(nb / 16), 0), src + off, nb);
        }
      };
      // The first claim goes out with the last static unit: late enough that the claims follow each SM's
      // progress (sent before all static units, they were dealt at random and the SMs drifted apart: the
      // ring alone fell to 99%), early enough that its latency hides behind that unit's copies (sent after
      // them, it stalled the stream at every matrix: 100.7%).
      unsigned first = 0;
      for (int u = b * S; u < (b + 1) * S; ++u) {
        if (u == (b + 1) * S - 1) first = atomicAdd(ctr + m, 1u);
        stream_unit(u);
      }
      if (S == 0) first = atomicAdd(ctr + m, 1u);
      int cur = G * S + int(first);
      while (cur < T) {
        const int nxt = G * S + int(atomicAdd(ctr + m, 1u));  // in flight while cur's copies are issued
        stream_unit(cur);
        cur = nxt;
      }
      for (int t = 0; t < kCsTeams; ++t) next_stage(make_int4(-1, 0, 0, 0), nullptr, 0);
    }
    return;
  }

  // ---- consumers ----
  const int tid = threadIdx.x, team = warp / (kCsWarps / kCsTeams), sub = warp % (kCsWarps / kCsTeams);
  unsigned it = unsigned(team);  // this team's next stage
  for (int m = 0; m < n; ++m) {
    const ChainMat c = mats[m];
    const int nch = c.K / 8;
    if (m > 0 && mode == kCsFull) {  // every block has added every product of matrix m - 1
      const ChainMat p = mats[m - 1];
      const unsigned want = unsigned(int64_t(p.M) * p.K / 256);
      if (tid == 0)
        while (CsLoadAcquire(ctr + n + m - 1) < want) {
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
    if (tid == 0) blk_groups = 0;
    CsConsumersSync();
    for (;; it += kCsTeams) {  // this team's stages of matrix m, up to its END
      const unsigned s = it % kCsStages, use = it / kCsStages;
      gpu::MbarWait(&full[s], use & 1);
      const int4 t = tag[s];
      if (t.x >= 0 && mode != kCsRingOnly) {
        const int g0 = sub * kCsGpw, groups = t.z / 32;  // this warp's groups of the stage, all in one row
        if (g0 < groups) {
          const uint4* st = ring + size_t(s) * (kCsStageBytes / 16);
          const int gc = t.y + g0 * 32, row = t.x + gc / nch, col = gc % nch + lane;
          const int ng = groups - g0 < kCsGpw ? groups - g0 : kCsGpw;  // even: rows and stages are 8k groups
          float p0 = 0.f, p1 = 0.f;  // two chains of products
#pragma unroll
          for (int j = 0; j < kCsGpw; j += 2) {
            if (j < ng) {
              p0 = gpu::Dot8(st[(g0 + j) * 32 + lane], xlo[col + 32 * j], xhi[col + 32 * j], p0);
              p1 = gpu::Dot8(st[(g0 + j + 1) * 32 + lane], xlo[col + 32 * j + 32], xhi[col + 32 * j + 32], p1);
            }
          }
          const float v = gpu::WarpSum(p0 + p1);
          if (lane == 0) {
            atomicAdd(c.y + row, v);
            atomicAdd(&blk_groups, unsigned(ng));
          }
        }
      }
      __syncwarp();
      if (lane == 0) CsBarArrive(&empty[s]);
      if (t.x < 0) {
        it += kCsTeams;
        break;
      }
    }
    CsConsumersSync();  // every team is past its END: x is free, and the block's sums are all added
    if (tid == 0) {
      __threadfence();
      atomicAdd(ctr + n + m, blk_groups);
    }
  }
}

// Host side: why it cannot run here (an empty string when it can), and the launch (y and the counters
// cleared first, then one cooperative launch of one block per SM).
inline std::string ChainStreamUnfit(const cudaDeviceProp& prop, const ChainMat* host_mats, int n) {
  if (prop.major < 9) return "needs sm_90 (bulk copies, mbarriers)";
  if (!prop.cooperativeLaunch) return "no cooperative launch";
  if (ChainStreamSmemBytes() > size_t(prop.sharedMemPerBlockOptin)) return "not enough shared memory per block";
  for (int m = 0; m < n; ++m)
    if (host_mats[m].K % 2048 || host_mats[m].K > kCsMaxK) return "a matrix outside the kernel's contract";
  return "";
}
inline cudaError_t LaunchChainStream(const ChainMat* dev_mats, int n, const float* x0, float* y_all, size_t y_n,
                                     unsigned* ctr, int sms, cudaStream_t s, int mode, int static_pct) {
  static bool attr = false;
  if (!attr) {
    const cudaError_t e = cudaFuncSetAttribute(ChainStreamKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               int(ChainStreamSmemBytes()));
    if (e != cudaSuccess) return e;
    attr = true;
  }
  cudaError_t e = cudaMemsetAsync(ctr, 0, 2 * size_t(n) * sizeof(unsigned), s);
  if (e == cudaSuccess && mode != kCsRingOnly) e = cudaMemsetAsync(y_all, 0, y_n * sizeof(float), s);
  if (e != cudaSuccess) return e;
  void* args[] = {&dev_mats, &n, &x0, &ctr, &mode, &static_pct};
  return cudaLaunchCooperativeKernel(reinterpret_cast<void*>(ChainStreamKernel), dim3(sms), dim3((kCsWarps + 1) * 32),
                                     args, ChainStreamSmemBytes(), s);
}

}  // namespace kernels
}  // namespace lab
