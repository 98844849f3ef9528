// The decode matvec (DecodeMatvecKernel) and its fused epilogues; overview in kernels.cuh.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/gpu_opt/kernels_common.cuh"

namespace lab {
namespace gpu {

// ---------------------------------------------------------------------------------------------
// Decode matvec with fused prologue/epilogue.
// ---------------------------------------------------------------------------------------------

enum Epi : int {
  kEpiStore = 0,   // out[r] = y                       (lm_head -> logits; the kernel lab's plain matvec)
  kEpiResid = 1,   // out[r] += y                      (o_proj, down_proj: residual add into x)
  kEpiGateUp = 2,  // out[u] = SiLU(y[u]) * y[H + u]   (W = [gate; up])
  kEpiQkv = 3,     // RoPE, q scale, K/V -> fp16 cache (W = [q; k; v])
};

struct MatvecParams {
  const __half* W;       // [M, K] row-major fp16
  int M, K;              // K % 8 == 0
  int n_units;           // work units of two rows each (see UnitRows)
  const float* x;        // [K] fp32 input
  const __half* x16;     // or nullptr: [K] fp16 input instead of x (LAB_GPU_ACT16: half the bytes to
                         // stage, one load per chunk; unpacked to fp32 in shared memory, normed there)
  const float* norm_w;   // [K] RMSNorm weight, or nullptr for no norm
  float eps;
  float* out;            // Store/Resid: [M]; GateUp: [H]; Qkv: unused (see qkv)
  __half* out16;         // or nullptr. GateUp: [H] SiLU(gate) * up in fp16, instead of out; Resid: [M] an
                         // fp16 copy of the updated out (the residual stream: the next matvec's x16)
  int H;                 // GateUp: rows of gate (= of up)
  const int* pos;        // Qkv: device-side position of the token
  QkvOut qkv;
  int l2_prefetch;       // 1: bulk-prefetch the block's whole weight rows into L2 before the PDL wait
  int second;            // SecondBatch: where the second batch of weights is issued
  int stage;             // STAGE kernels only: chunks at the start of each row that the first batch copies
                         // into shared memory (a multiple of 32, or the whole row: nch = K/8); >= 1
  int out_host;          // Store only: out is mapped pinned host memory; the block gathers its rows in
                         // shared memory and writes them with one coalesced store (few, full PCIe writes)
  unsigned long long* argmax;  // Store only, or nullptr: greedy generation; each block atomicMax-es
                               // ArgmaxKey(value, row) of its rows into *argmax (cleared before the launch)
  unsigned long long* trace;   // nullptr, or this launch's three TraceMarks slots (LAB_GPU_TRACE)
  int* ring_work;              // RingMatvecKernel with DYN > 0: two counters, zero at launch and left zero
  int ring_pre;                // RingMatvecKernel (DYN = 0): the stages issued before the consumers pass the PDL
                               // wait; 0 (or >= STAGES): the whole ring (LAB_GPU_RING_PRE)
  int norm_early;              // with norm_w (LAB_GPU_NORM_EARLY): RingMatvecKernel, >= 1 copies norm_w into shared
                               // memory before the PDL wait (the default), 0 loads it with x after it;
                               // DecodeMatvecKernel (XB 0, 2), 2 asks for its lines in L1 before the wait
  int norm_unit;               // with norm_w: it holds ones, g folded into W (LAB_GPU_NORM_FOLD); DecodeMatvecKernel
                               // computes the RMS scale but neither loads nor multiplies norm_w
};

// Greedy generation on the device: the argmax of the logits as one 64-bit atomicMax. The key orders by
// value (the float's bits made monotone as unsigned: negative values flipped, positive ones given the
// top bit), then by the lower row on ties (numpy's argmax picks the first maximum).
__device__ __forceinline__ unsigned long long ArgmaxKey(float v, int row) {
  unsigned b = __float_as_uint(v);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<unsigned long long>(b) << 32) | (0xffffffffu - static_cast<unsigned>(row));
}
// The row of a key; also how the host seeds the first step's token (any value bits).
__host__ __device__ inline unsigned long long ArgmaxKeyOfRow(int row) {
  return (0xffffffffull << 32) | (0xffffffffu - static_cast<unsigned>(row));
}
__host__ __device__ inline long long ArgmaxRow(unsigned long long key) {
  return static_cast<long long>(0xffffffffu - static_cast<unsigned>(key & 0xffffffffu));
}

// Where a matvec issues its second weight batch (MatvecParams::second). After x is staged (the engine's
// default but for qkv), only the first batch is in flight during that L2 round trip and barrier; issuing
// the second earlier helps qkv only (README "The third pass", "Staging x").
enum SecondBatch : int {
  kSecondAfterX = 0,      // after x is staged and the block's barrier
  kSecondBeforeWait = 1,  // with the first, before the PDL wait (LAB_GPU_EARLY; the engine's qkv)
  kSecondAfterWait = 2,   // right after the PDL wait, before x is staged (LAB_GPU_SECOND; 1.4% slower)
};

template <int EPI>
__device__ __forceinline__ void UnitRows(const MatvecParams& p, int unit, int* r0, int* r1) {
  if (EPI == kEpiQkv) {
    QkvUnitRows(unit, p.qkv.hd, r0, r1);
  } else if (EPI == kEpiGateUp) {
    *r0 = unit;
    *r1 = unit + p.H;
  } else {
    *r0 = 2 * unit;
    *r1 = min(2 * unit + 1, p.M - 1);
  }
}

// The outputs of one unit from its two dot products y0, y1 (rows as UnitRows gives them), for every epilogue
// (a Store writes y; its logits gather and argmax are the kernels' own). e0, e1: the unit's operands
// fetched ahead, qkv: RoPE's cos and sin at `pos`; residual: the two values of out being added to.
template <int EPI>
__device__ __forceinline__ void UnitEpilogue(const MatvecParams& p, int unit, float y0, float y1, int pos, float e0,
                                             float e1) {
  if (EPI == kEpiQkv) {
    QkvEpilogue(p.qkv, unit, y0, y1, 0, pos, e0, e1);
  } else if (EPI == kEpiGateUp) {
    if (p.out16)
      p.out16[unit] = __float2half_rn(Silu(y0) * y1);
    else
      p.out[unit] = Silu(y0) * y1;
  } else {
    const int r0 = 2 * unit, r1 = 2 * unit + 1;
    if (EPI == kEpiResid) {
      p.out[r0] = e0 + y0;
      if (r1 < p.M) p.out[r1] = e1 + y1;
      if (p.out16) {
        p.out16[r0] = __float2half_rn(e0 + y0);
        if (r1 < p.M) p.out16[r1] = __float2half_rn(e1 + y1);
      }
    } else {
      p.out[r0] = y0;
      if (r1 < p.M) p.out[r1] = y1;
    }
  }
}

// Dynamic shared memory a DecodeMatvecKernel needs for input length K; a STAGE kernel needs
// MatvecStageBytes more. (XB 1 kernels hold x in fp16; XB 2 (3) kernels the fp32 staging and, after it, the
// fp16 (fp32) copy it is made from; a kernel with a norm (p.norm_w set) also each chunk's sum of squares, last.)
inline size_t MatvecSmemBytes(int K, int xb = 0, bool norm = false) {
  const size_t copy = xb == 1 || xb == 2 ? sizeof(__half) : xb == 3 ? sizeof(float) : 0;
  const size_t x = size_t(K) * ((xb == 1 ? 0 : sizeof(float)) + copy);
  return x + (norm ? (size_t(K / 8) * sizeof(float) + 15) / 16 * 16 : 0);
}

// The sum of squares of one chunk of x (8 values), in one fixed order of fused multiply-adds, the same
// wherever it is computed.
__device__ __forceinline__ float SumSq8(float4 a, float4 b) {
  float s = a.x * a.x;
  s = fmaf(a.y, a.y, s);
  s = fmaf(a.z, a.z, s);
  s = fmaf(a.w, a.w, s);
  s = fmaf(b.x, b.x, s);
  s = fmaf(b.y, b.y, s);
  s = fmaf(b.z, b.z, s);
  return fmaf(b.w, b.w, s);
}
inline size_t MatvecStageBytes(int warps, int upw, int stage) { return size_t(warps) * 2 * upw * stage * 16; }
// A STAGE kernel's p.stage for input length K and `budget` bytes of staged rows per block: a multiple of
// 32 chunks (one per lane) that fits, or the whole row; at least one round (32 chunks, or the row) even
// when the budget is smaller. The engine's budget is what fits beside attention, the kernel lab's a size.
inline int MatvecStageChunks(int warps, int upw, int K, int64_t budget) {
  const int nch = K / 8;
  const int s = int(std::max<int64_t>(0, budget) / (int64_t(2) * warps * upw * 16)) / 32 * 32;
  return std::max(std::min(s, nch), std::min(nch, 32));
}

// Contract:
//   grid  = ceil(n_units / (WARPS * UPW)) blocks of WARPS * 32 threads, dynamic smem MatvecSmemBytes(K)
//   (raise cudaFuncAttributeMaxDynamicSharedMemorySize above 48 KB).
//   Each warp owns UPW units (2*UPW weight rows) and reads them whole: lane l loads 16-byte chunks
//   l, l+32, ... of every row, UNROLL chunks per row per batch, so a thread has 2*UPW*UNROLL
//   independent 16-byte loads in flight, and the next batch is issued before the current one is used.
//   The first batch, issued before the PDL wait, is PRE batches long (PRE*UNROLL chunks per row):
//   PRE > 1 (kernel lab v7) starts more of the weight stream while the previous kernel still runs
//   (o_proj behind the latency-bound attention), at the cost of registers. The accumulation order
//   (chunk by chunk per lane, then the warp butterfly) is the same for every WARPS/UPW/UNROLL/PRE,
//   so all configurations give bitwise identical results.
//   The input x (normalized by RMSNorm when norm_w != nullptr: x*norm_w staged, or x alone with p.norm_unit;
//   1/rms applied to the dot products) is staged in shared memory as fp32 in a split layout (chunk c's first
//   four floats at lo[c], last four at hi[c]) so the warp's float4 reads are conflict-free. The RMS is bitwise the
//   same for every tile too: each chunk's sum of squares goes to shared memory (SumSq8), and every warp
//   adds them in one order, lane l the chunks l, l+32, ... in turn, then the butterfly. (Before session
//   14 each thread summed the chunks it staged and the warps' sums were added: the order depended on
//   the block size once a thread staged more than one chunk, so tiles of 4 and 8 warps differed in the
//   last bit of the RMS at hidden 4096; the tile tests ran at hidden 512, where they agreed.) x16 (LAB_GPU_ACT16):
//   the input arrives in fp16, half the bytes to stage (cuda/gpu_opt/README.md "Staging x").
//   STAGE (kernel lab v8; the engine's o_proj, LAB_GPU_O_STAGE): the first batch is the first p.stage
//   chunks of every row of the block, copied into shared memory (after x, MatvecStageBytes) by thread 0
//   with one bulk copy (TMA) per row before the PDL wait, instead of R0 chunks per lane into registers.
//   Behind a latency-bound kernel (attention) HBM is otherwise idle: with ~180 KB of staging per block
//   about 70% of o_proj's weights arrive before attention ends, where registers held ~10%. Each lane
//   still adds its chunks l, l+32, ... in order, so the result is bitwise that of the other tiles.
//   XB 1 (LAB_GPU_X_BULK; the residual epilogue only, with p.x16 and no norm; dynamic smem
//   MatvecSmemBytes(K, 1)): x arrives by one bulk copy (TMA) of the fp16 row into shared memory,
//   issued by thread 0 right after the PDL wait, and stays fp16 there; each product unpacks its chunk.
//   New against the loop: one L2 round trip instead of one per two chunks a thread (down: 1,792 chunks
//   over 256 threads, four round trips), fewer registers (w8.u1.r4: 113 -> 96), half the shared memory.
//   fp16 -> fp32 is exact and the products are added in the same order: bitwise the other tiles' result.
//   Since x comes by the copy engine and not by the threads' loads, the second weight batch can go out
//   right after the wait without delaying x (p.second = kSecondAfterWait, LAB_GPU_SECOND=xb). (Session
//   16 cut this copy into pieces, each waited for by the batch that needs it: down's release-to-staged
//   time fell 3.08 -> 1.16 us, the step did not move, since down streamed at the ceiling anyway;
//   reverted, code in 3d0775b, README "Session 16".)
//   XB 2 (LAB_GPU_X_BULK=gate_up|all; any epilogue, with p.x16; dynamic smem MatvecSmemBytes(K, 2)): the same
//   copy for the kernels with a norm (qkv, gate_up, lm_head), into shared memory after the fp32 staging
//   area; each thread's first two chunks of norm weights are loaded into registers right after the copy
//   is issued (L2 hits, ahead of the second weight batch's misses); once the copy lands each thread
//   turns its chunks into the usual fp32 x * norm_w (and the sum of squares) in shared memory, so the
//   main loop is the loop kernel's, bitwise. New against the first try at these kernels (session 13:
//   x kept fp16 and each product multiplied by norm weights copied by a second bulk copy, 1-2% slower):
//   nothing changes in the main loop, and no second copy.
//   XB 3 (qkv under LAB_GPU_MLP=fused, which leaves no fp16 residual copy; MatvecSmemBytes(K, 3)): XB 2 with
//   the fp32 x copied (K*4 bytes) instead of p.x16. New against the loop, which fused qkv took before: one
//   L2 round trip for x. The same fp32 values staged, so bitwise the loop's result.
// Blocks an SM a tile is compiled for: 2 persistent; the r2 tiles 768 threads' worth (80 registers), so that qkv's
// 384 w8 / 768 w4 blocks (hidden 4096) stay one wave (at 82, session 22's fold made two waves: a 285 us tail a step).
constexpr int MatvecMinBlocks(int w, int upw, int unroll, bool pers) { return pers ? 2 : upw * unroll == 2 ? 768 / (w * 32) : 1; }
template <int WARPS, int UPW, int UNROLL, int EPI, int PRE = 1, bool STAGE = false, bool PERSIST = false,
          int XB = 0>
__global__ void __launch_bounds__(WARPS * 32, MatvecMinBlocks(WARPS, UPW, UNROLL, PERSIST)) DecodeMatvecKernel(const MatvecParams p) {
  static_assert(!(STAGE && PERSIST), "a staged first batch covers one task per warp");
  static_assert(!(STAGE && XB), "the staged rows sit after a fp32 x");
  static_assert(XB != 1 || EPI == kEpiResid, "XB 1: the residual matvecs (no norm to apply)");
  static_assert(XB >= 0 && XB <= 3, "XB: 0, 1, 2 or 3");
  constexpr int ROWS = 2 * UPW;
  constexpr int R0 = STAGE ? 1 : UNROLL * PRE;  // chunks per row per lane in the register first batch
  TraceMarks trace(p.trace);
  extern __shared__ __align__(128) float4 smem4[];  // (aligned: RingMatvecKernel's note)
  __shared__ uint64_t stage_bar;
  __shared__ uint64_t x_bar;  // XB: x's bulk copy
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nch = p.K >> 3;  // 16-byte chunks per row
  // A task is one warp's UPW units. Persistent (PERSIST): task warp * gridDim.x + blockIdx.x, then
  // every gridDim.x * WARPS-th after it, so a grid of a few blocks per SM gives every SM the same work
  // to within one task; warps past the last task only help stage x. Otherwise one task per warp.
  const int n_tasks = (p.n_units + UPW - 1) / UPW;
  int task = PERSIST ? warp * gridDim.x + blockIdx.x : blockIdx.x * WARPS + warp;
  const int task_step = PERSIST ? gridDim.x * WARPS : n_tasks;  // not persistent: one pass
  const bool any = !PERSIST || task < n_tasks;                   // warp-uniform

  const uint4* rows[ROWS];
  auto set_rows = [&](int t) {
#pragma unroll
    for (int u = 0; u < UPW; ++u) {
      // Units past the end re-read the last unit (valid memory) and write nothing.
      const int unit = min(t * UPW + u, p.n_units - 1);
      int r0, r1;
      UnitRows<EPI>(p, unit, &r0, &r1);
      rows[2 * u] = reinterpret_cast<const uint4*>(p.W + size_t(r0) * p.K);
      rows[2 * u + 1] = reinterpret_cast<const uint4*>(p.W + size_t(r1) * p.K);
    }
  };
  uint4 first[ROWS][R0];
  auto load_first = [&]() {
#pragma unroll
    for (int u = 0; u < R0; ++u) {
      const int c = lane + 32 * u;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) first[r][u] = c < nch ? LdStream(rows[r] + c) : make_uint4(0, 0, 0, 0);
    }
  };
  if (any) set_rows(task);

  // First batch of weights: depends on nothing the previous kernel writes, so it is issued before
  // the PDL wait and overlaps the previous kernel's tail.
  const int S = STAGE ? p.stage : 32 * R0;  // chunks per row in the first batch
  uint4* const staged = reinterpret_cast<uint4*>(smem4 + 2 * nch);  // STAGE: [WARPS * ROWS][S]
  if (STAGE) {
    if (threadIdx.x == 0) {
      MbarInit(&stage_bar);
      MbarArriveExpectTx(&stage_bar, unsigned(WARPS * ROWS * S * 16));
      for (int w = 0; w < WARPS; ++w) {
        for (int u = 0; u < UPW; ++u) {
          const int unit = min((blockIdx.x * WARPS + w) * UPW + u, p.n_units - 1);
          int r0, r1;
          UnitRows<EPI>(p, unit, &r0, &r1);
          BulkCopyToShared(staged + size_t(w * ROWS + 2 * u) * S, p.W + size_t(r0) * p.K, unsigned(S) * 16u, &stage_bar);
          BulkCopyToShared(staged + size_t(w * ROWS + 2 * u + 1) * S, p.W + size_t(r1) * p.K, unsigned(S) * 16u,
                           &stage_bar);
        }
      }
    }
  } else if (any) {
    load_first();
  }

  // The rest of the rows: bulk L2 prefetch (one instruction per row, by lanes 0..ROWS-1). With PDL
  // this starts streaming while the previous kernel still runs (its tail, or a latency-bound
  // attention), so HBM is not idle across the kernel boundary.
  if (p.l2_prefetch && any) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
      if (lane == r) PrefetchL2(rows[r], unsigned(p.K) * 2u);
  }

  const unsigned x_bytes = unsigned(nch) * (XB == 3 ? 32u : 16u);  // XB 3: the fp32 x, twice the bytes
  if (XB && threadIdx.x == 0) {  // x's copy must wait for the producer: issued after PdlWait
    MbarInit(&x_bar);
    MbarArriveExpectTx(&x_bar, x_bytes);
  }
  if (XB >= 2) __syncthreads();  // the init visible to every thread before it waits (XB 1: the barrier below)

  // The second batch (the register double buffer's other half): with kSecondBeforeWait it too goes out
  // before the wait, with kSecondAfterWait right after it, so that HBM keeps streaming while x is staged;
  // either costs no registers, as the two batches are live together when the first is consumed anyway.
  const int base1 = S;
  uint4 buf[ROWS][UNROLL];
  auto load_batch = [&](int base) {  // chunks base + lane + 32u of every row into buf
    if (base < nch) {
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int c = base + lane + 32 * u;
#pragma unroll
        for (int r = 0; r < ROWS; ++r) buf[r][u] = c < nch ? LdStream(rows[r] + c) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  if (p.second == kSecondBeforeWait && any) load_batch(base1);
  // norm_early 2 (session 21): the norm weights (K floats, the same for every block, no kernel writes them)
  // asked into L1 before the wait, a line a thread, so that the staging's __ldg after it hits L1 instead of
  // every block reading them from L2 at the release (kernel lab: handoff_latency's "norm weights" rows).
  // Measured: no faster in the kernel lab, 0.23% slower in the step (README "Session 21"); off by default.
  if (XB != 1 && p.norm_w && p.norm_early == 2)
    for (int i = threadIdx.x; i < (p.K + 31) / 32; i += WARPS * 32) PrefetchL1(p.norm_w + 32 * i);

  PdlWait();
  trace.Released();
  PdlTrigger();
  if (XB && threadIdx.x == 0)
    BulkCopyToShared(XB >= 2 ? smem4 + 2 * nch : smem4, XB == 3 ? static_cast<const void*>(p.x) : p.x16, x_bytes, &x_bar);
  // XB 2: this thread's first kXG chunks of norm weights, before the second batch's loads.
  constexpr int kXG = XB >= 2 ? 2 : 1;
  const float4* const gw4 = p.norm_unit ? nullptr : reinterpret_cast<const float4*>(p.norm_w);
  float4 gxl[kXG] = {}, gxh[kXG] = {};
  if (XB >= 2 && gw4) {
#pragma unroll
    for (int i = 0; i < kXG; ++i) {
      const int c = threadIdx.x + i * WARPS * 32;
      if (c < nch) {
        gxl[i] = __ldg(gw4 + 2 * c);
        gxh[i] = __ldg(gw4 + 2 * c + 1);
      }
    }
  }

  if (p.second == kSecondAfterWait && any) load_batch(base1);

  // Epilogue operands that do not depend on the dot products, fetched before the task's main loop so
  // that their latency hides under it instead of adding to the tail: the position and RoPE cos/sin
  // (qkv), the residual being added to (o_proj, down_proj).
  int pos = 0;
  if (EPI == kEpiQkv && lane == 0) pos = __ldcg(p.pos);
  float ep0[UPW], ep1[UPW];
  auto fetch_epilogue = [&](int t) {
#pragma unroll
    for (int u = 0; u < UPW; ++u) ep0[u] = ep1[u] = 0.f;
    if (lane == 0) {
#pragma unroll
      for (int u = 0; u < UPW; ++u) {
        const int unit = min(t * UPW + u, p.n_units - 1);
        if (EPI == kEpiQkv) {
          QkvRopeCoeffs(p.qkv, unit, pos, &ep0[u], &ep1[u]);
        } else if (EPI == kEpiResid) {
          ep0[u] = __ldcg(p.out + 2 * unit);
          ep1[u] = 2 * unit + 1 < p.M ? __ldcg(p.out + 2 * unit + 1) : 0.f;
        }
      }
    }
  };
  if (any) fetch_epilogue(task);

  // Stage x (x * norm_w) into shared memory; sum of squares for the RMSNorm scale. The compiler keeps
  // two chunks' loads in flight, so down's 1,792 chunks over 256 threads take four dependent L2 round
  // trips. An fp16 x (p.x16) is one 16-byte load per chunk instead of two: a block's mean time from its
  // release to here, at context 512 on the H200, fell from 3.85 to 2.33 us for down and from 1.50 to
  // 1.03 for o_proj (README "Staging x").
  float4* xlo = smem4;
  float4* xhi = smem4 + nch;
  const uint4* xs16 = reinterpret_cast<const uint4*>(smem4);  // XB 1: [nch] chunks of fp16 x
  const float4* x4 = reinterpret_cast<const float4*>(p.x);
  const bool norm = XB != 1 && p.norm_w;  // the RMS scale; g4: the norm weights to apply (none when folded)
  const float4* g4 = XB == 1 || p.norm_unit ? nullptr : reinterpret_cast<const float4*>(p.norm_w);
  // Norm: each chunk's sum of squares, after x (XB 2: after its copy; STAGE: after the staged rows).
  float* const ssq = reinterpret_cast<float*>(smem4 + 2 * nch + (XB == 2 ? nch : XB == 3 ? 2 * nch : 0) + (STAGE ? WARPS * ROWS * S : 0));
  if constexpr (XB >= 2) {  // x by the copy, then the loop's staging from shared memory
    MbarWait(&x_bar, 0);
    const uint4* xc = reinterpret_cast<const uint4*>(smem4 + 2 * nch);
    auto stage = [&](int c, float4 ga, float4 gb) {  // as the loop below, x (x16) read from shared memory
      float4 a, b;
      if constexpr (XB == 3) {
        a = smem4[2 * nch + 2 * c];
        b = smem4[2 * nch + 2 * c + 1];
      } else {
        float f[8];
        Unpack8(xc[c], f);
        a = make_float4(f[0], f[1], f[2], f[3]);
        b = make_float4(f[4], f[5], f[6], f[7]);
      }
      if (norm) ssq[c] = SumSq8(a, b);
      if (g4) {
        a = make_float4(a.x * ga.x, a.y * ga.y, a.z * ga.z, a.w * ga.w);
        b = make_float4(b.x * gb.x, b.y * gb.y, b.z * gb.z, b.w * gb.w);
      }
      xlo[c] = a;
      xhi[c] = b;
    };
#pragma unroll
    for (int i = 0; i < kXG; ++i) {
      const int c = threadIdx.x + i * WARPS * 32;
      if (c < nch) stage(c, gxl[i], gxh[i]);
    }
    for (int c = threadIdx.x + kXG * WARPS * 32; c < nch; c += WARPS * 32)
      stage(c, g4 ? __ldg(g4 + 2 * c) : float4{}, g4 ? __ldg(g4 + 2 * c + 1) : float4{});
  }
  // (XB 2's `stage` above repeats this loop's body on purpose. One lambda shared by both, the norm weights'
  // loads issued with x's, changed this loop's machine code (gate_up w8.u1.r4: 106 -> 96 registers) and
  // measured 0.2-0.6% slower in alternating processes, bitwise equal: bench_results/h200-20261128-stage-merge.)
  for (int c = threadIdx.x; !XB && c < nch; c += WARPS * 32) {
    float4 a, b;
    if (p.x16) {
      float f[8];
      Unpack8(__ldcg(reinterpret_cast<const uint4*>(p.x16) + c), f);
      a = make_float4(f[0], f[1], f[2], f[3]);
      b = make_float4(f[4], f[5], f[6], f[7]);
    } else {
      a = __ldcg(x4 + 2 * c);
      b = __ldcg(x4 + 2 * c + 1);
    }
    if (norm) ssq[c] = SumSq8(a, b);
    if (g4) {
      const float4 ga = __ldg(g4 + 2 * c), gb = __ldg(g4 + 2 * c + 1);
      a = make_float4(a.x * ga.x, a.y * ga.y, a.z * ga.z, a.w * ga.w);
      b = make_float4(b.x * gb.x, b.y * gb.y, b.z * gb.z, b.w * gb.w);
    }
    xlo[c] = a;
    xhi[c] = b;
  }
  float scale = 1.f;
  __syncthreads();  // XB 1: also makes thread 0's MbarInit visible before the others wait on it
  if (XB == 1) MbarWait(&x_bar, 0);
  trace.Staged();  // x is in shared memory
  // The RMS scale, the same order in every warp and every tile (the contract above). Called in the first
  // task after its second weight batch is issued: before it (bd65cb9) the ~16 dependent shared-memory
  // adds held that batch back, -0.7% in the A/B of session 14.
  auto rms_scale = [&]() {
    float t = 0.f;
#pragma unroll 8
    for (int c = lane; c < nch; c += 32) t += ssq[c];
    return 1.f / sqrtf(WarpSum(t) / p.K + p.eps);
  };

  // Chunk c of x (8 values) as two float4: from the fp32 split layout, or unpacked from fp16 (XB 1).
  auto XChunk = [&](int c, float4& lo, float4& hi) {
    if (XB == 1) {
      float f[8];
      Unpack8(xs16[c], f);
      lo = make_float4(f[0], f[1], f[2], f[3]);
      hi = make_float4(f[4], f[5], f[6], f[7]);
    } else {
      lo = xlo[c];
      hi = xhi[c];
    }
  };

  // Warp-uniform. Not persistent: exactly one pass for every warp (a task past the end re-reads the last
  // unit and writes nothing, and the Store gather below needs every warp at its barrier).
  for (int it = 0; PERSIST ? task < n_tasks : it == 0; ++it, task += task_step) {
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = 0.f;
    // The batch after the first is issued before the first is consumed; then the steady state: each
    // batch is issued before the previous one is used (register double buffering).
    if (it > 0 || p.second == kSecondAfterX) load_batch(base1);
    if (norm && it == 0) scale = rms_scale();
    if (STAGE) {
      MbarWait(&stage_bar, 0);  // the __syncthreads above made thread 0's MbarInit visible
      const uint4* mine = staged + size_t(warp) * ROWS * S;
#pragma unroll 4
      for (int c = lane; c < S; c += 32) {  // S <= nch
        float4 lo, hi;
        XChunk(c, lo, hi);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) acc[r] = Dot8(mine[size_t(r) * S + c], lo, hi, acc[r]);
      }
    } else {
#pragma unroll
      for (int u = 0; u < R0; ++u) {
        const int c = lane + 32 * u;
        if (c < nch) {
          float4 lo, hi;
          XChunk(c, lo, hi);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) acc[r] = Dot8(first[r][u], lo, hi, acc[r]);
        }
      }
    }
    for (int base = base1; base < nch; base += 32 * UNROLL) {
      uint4 cur[ROWS][UNROLL];
#pragma unroll
      for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) cur[r][u] = buf[r][u];
      load_batch(base + 32 * UNROLL);
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int c = base + lane + 32 * u;
        if (c < nch) {
          float4 lo, hi;
          XChunk(c, lo, hi);
#pragma unroll
          for (int r = 0; r < ROWS; ++r) acc[r] = Dot8(cur[r][u], lo, hi, acc[r]);
        }
      }
    }
    const int unit0 = task * UPW;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = WarpSum(acc[r]) * scale;

    if (EPI == kEpiStore && (p.out_host || p.argmax)) {  // block-uniform; never persistent (the engine's rule)
      // The block's rows are contiguous: 2 * (blockIdx.x * WARPS * UPW) + [0, WARPS * ROWS).
      __shared__ float sm_out[WARPS * ROWS];
      if (lane == 0) {
#pragma unroll
        for (int r = 0; r < ROWS; ++r) sm_out[warp * ROWS + r] = acc[r];
      }
      __syncthreads();
      const int row0 = 2 * blockIdx.x * WARPS * UPW, row = row0 + threadIdx.x;
      if (threadIdx.x < WARPS * ROWS && row < p.M) p.out[row] = sm_out[threadIdx.x];
      if (p.argmax && warp == 0) {  // the block's best row, then one atomic per block
        unsigned long long best = 0;
        for (int i = lane; i < WARPS * ROWS && row0 + i < p.M; i += 32) best = max(best, ArgmaxKey(sm_out[i], row0 + i));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
        if (lane == 0) atomicMax(p.argmax, best);
      }
      return;
    }

    if (lane == 0) {
#pragma unroll
      for (int u = 0; u < UPW; ++u) {
        const int unit = unit0 + u;
        if (unit >= p.n_units) break;
        UnitEpilogue<EPI>(p, unit, acc[2 * u], acc[2 * u + 1], pos, ep0[u], ep1[u]);
      }
    }
    // Persistent: the next task's first batch and epilogue operands.
    if (!STAGE && task + task_step < n_tasks) {
      set_rows(task + task_step);
      load_first();
      fetch_epilogue(task + task_step);
    }
  }
}

}  // namespace gpu
}  // namespace lab
