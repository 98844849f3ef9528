// The decode matvec fed by a weight ring (RingMatvecKernel): the same MatvecParams and epilogues as
// DecodeMatvecKernel (kernels_matvec.cuh), but the weights reach shared memory by 1-D bulk copies (TMA)
// that one producer thread issues, never through the threads' registers. Kernel lab version v10
// (cuda/kernels/README.md, "v10: the weight ring"), and with DYN > 0 v11.
//
// Why: the kernel lab's read ceiling is highest (4.5-4.6 TB/s on an H200, 7-10% past the best load
// kernel) when the SMs bulk-copy neighbouring slices of memory, and the one-kernel chain
// (cuda/kernels/chain_stream.cuh) streamed a decode step's weights through such a ring at that rate.
// This is that ring as one kernel per matrix, so that the engine's graph of kernels can use it.
//
// Contract:
//   grid = G blocks (the host's choice: the SM count), block = (CW + 1) warps: CW consumer warps, then one
//   producer warp (its lane 0 alone works). Dynamic shared memory RingSmemBytes(p, G, STAGES, SC),
//   above 48 KB (raise cudaFuncAttributeMaxDynamicSharedMemorySize). K % 8 == 0, W and x 16-byte
//   aligned; p.stage, p.second, p.l2_prefetch and p.out_host are not used (p.out_host's logits are
//   written by ordinary stores).
//   Block b owns the units [n_units b / G, n_units (b + 1) / G) (a unit: the two rows UnitRows gives, as
//   in DecodeMatvecKernel). A unit's rows are cut into P = ceil(nch / SC) pieces of SC 16-byte chunks
//   (the last one shorter); a "stage" is one piece of both rows, 2 SC chunks of the ring's STAGES.
//   - The producer, before anything else, copies the block's stages in order (two bulk copies each,
//     one per row) into free ring slots: its first STAGES stages go out at once, before the PDL wait
//     the consumers sit in (the weights depend on nothing), then one whenever a slot is released.
//     With 0 < p.ring_pre < STAGES (DYN = 0 only) it issues p.ring_pre stages, then waits until the
//     consumers have passed the PDL wait (the `go` barrier) before it fills the rest of the ring.
//   - Consumer warp w takes the stages w, w + CW, ... (STAGES % CW == 0: a slot always serves the same
//     warp, so no warp can wait on a slot's next fill while its current one is pending). Per stage:
//     lane l's products over chunks l, l + 32, ... of both rows, the warp sum, lane 0 writes the two
//     partial sums to shared memory and releases the slot.
//   - Before the first stage the consumers wait for the previous kernel (PDL), then stage x (fp32 or
//     p.x16, times norm_w and each chunk's sum of squares when there is a norm) in the split layout of
//     DecodeMatvecKernel. p.norm_early: norm_w comes from shared memory, where thread 0 copied it (one
//     bulk copy, K*4 bytes, 16-byte aligned) before the wait; the same values, so bitwise the same x.
//   - After the last stage: each unit's pieces are added in order, times the RMS scale (every warp adds
//     the chunks' sums of squares in one order), and the epilogue writes the unit's outputs.
//   Deterministic (fixed pieces, fixed orders), but not bitwise DecodeMatvecKernel's: the sums are
//   grouped by piece.
//   XB (v13; LAB_GPU_X_BULK; the residual epilogue only, DYN = 0, p.x16 16-byte aligned): after the PDL
//   wait consumer thread 0 copies the fp16 x into shared memory (one bulk copy, K*2 bytes, where the fp32 x
//   would be), and each consumer warp waits for that copy alone, with no staging loop and no barrier across
//   the consumers. A product unpacks its chunk of x. fp16 -> fp32 is exact, so the outputs are bitwise
//   those of XB false.
//   DYN > 0 (v11, the ring with a shared tail): block b first takes the units [b F, (b + 1) F), F the
//   (8 - DYN)/8 share of n_units / G (RingDynShare); the other units are handed out at run time, D at a
//   time (about 64 KB of weights), by an atomicAdd on p.ring_work[0] that the producer issues D units
//   before its batch ends. A block takes at most cap units (part[] and its unit list are sized for cap;
//   a block stopped by cap holds more than twice its share of the shared units, so they cannot all stop
//   before the units run out). p.ring_work[0..1] must be zero at launch; the last
//   block's producer to finish (p.ring_work[1], blocks done) sets both back to zero. Launches that may
//   overlap (PDL) need different counters. The stage loop ends on a marker: the producer arrives on the
//   next CW slots without bytes after writing the stage count. Each unit's arithmetic is the same
//   whichever block takes it, so the outputs are bitwise those of DYN = 0.
//   STEAL (v12, with DYN > 0: stolen tails): block b keeps the static slice [u0, u1) and its first
//   (8 - DYN)/8; the rest is open in p.ring_work read as G 64-bit words, one a block (front | back << 32,
//   RingProduceSteal). The owner claims from the front, blocks that have run out steal from the back of
//   their neighbours' words. Each launch leaves every word empty, so the words need no reset, but
//   launches that may overlap (PDL) need different words. Bitwise DYN = 0's outputs too.
// New against DecodeMatvecKernel: no register batches to size (128 KB in flight per SM whatever the
// consumers do), one contiguous slice of the matrix per SM, and a deeper start before the PDL wait.
// Measured (H200, session 17): 6-9% faster per shape in the kernel lab, the step's weight chain 92.5% of
// the read ceiling against 86.2%; in the engine the tuner takes it for gate_up, down and lm_head, +4.7% a
// step at context 512. 64 KB rings were slower than the register tiles; 192 KB ones no faster.
// New in DYN against the static ring: the blocks that stream faster take more of the last units, so
// that the grid's last block would end sooner after the mean (session 17's trace: the next kernel's
// first block started 4-7 us before its release, the spread of this one's block ends). Measured slower
// (kernel lab v11, session 18, three forms): 3-27% per shape, 9-10% on the step's weights, mostly the
// slower the more units are shared; the engine's tiles are all DYN = 0 (cuda/kernels/README.md, "v11").
// New in norm_early (session 19): norm_w (K floats, the same for every block) by one bulk copy into shared
// memory before the PDL wait, instead of 132 SMs loading it from L2 together with x after the wait (the
// kernel lab's handoff_latency: such a broadcast read takes longer the more bytes every SM reads).
// New in ring_pre (session 19) against the full ring before the wait: at its release a block's ring was
// full, so its producer sat idle while the consumers staged x (1.9-2.3 us a launch in the step traces),
// and every SM at once: HBM idle. Stages held back from the pre-wait fill are free slots that stream
// during the staging; what the pre-wait fill took came out of the previous kernel's bandwidth anyway
// (cuda/kernels/README.md, "SM rates").
// New in XB (v13, session 23) against the staging loop: the register tiles' bulk copy of x (XB 1), which
// the ring had not had. In session 23's step trace the ring tiles took 1.5 (gate_up) and 2.2 us (down) a
// launch from the release to x staged, where the register tiles with the copy took 1.3-1.7, and the ring
// was full by then: HBM idle. Measured (H200, session 23): in the step trace, down on ring.c16.s16.k256 with
// the copy took 1.0 us to x and 873 us a step busy, against 894 on the register tile; in alternating
// processes, +0.5% a step.
// gate_up's ring (8 consumer warps; its norm weights folded, so the same kernel with the RMS scale from the
// fp16 x) reached x in 0.7 us instead of 1.5 but streamed slower, 1,793 us busy against 1,736: -1.5% a
// step. Its consumers unpack every chunk of x once per two rows, half again the conversions of the
// weights' alone; they keep the staged fp32 x.
// New in STEAL against DYN: no counter that every block asks at once, and a stolen unit is in a slice
// whose owner is still streaming it. Measured slower still (session 19): 12-25% per shape, the step's
// weights 17%. The spread both balance is mostly bandwidth moving between SMs, not lost
// (cuda/kernels/README.md, "SM rates").
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/gpu_opt/kernels_matvec.cuh"

namespace lab {
namespace gpu {

// DYN's split of the units (see the contract): F static units a block, D a grab, at most cap a block.
struct RingShare {
  int F, D, cap;
};
// STEAL (v12): F unused; a block holds its slice (at most ceil(n_units / G)) and at most as much again
// plus D stolen.
__host__ __device__ inline RingShare RingDynShare(int n_units, int grid, int K, int dyn, bool steal = false) {
  RingShare r;
  r.F = int(int64_t(n_units) * (8 - dyn) / 8 / grid);
  r.D = 65536 / (4 * K) > 1 ? 65536 / (4 * K) : 1;  // about 64 KB of weights (a unit is 4 K bytes)
  r.cap = steal ? 2 * ((n_units + grid - 1) / grid) + r.D : r.F + 2 * ((n_units - r.F * grid + grid - 1) / grid) + r.D;
  return r;
}

// Shared memory: the ring, x in the split fp32 layout, norm_w's copy (norm_early only), each chunk's sum of
// squares (norm only), each unit's per-piece partial sums; DYN: the block's units too.
inline size_t RingSmemBytes(const MatvecParams& p, int grid, int stages, int sc, int dyn = 0, bool steal = false) {
  const size_t nch = size_t(p.K / 8), pieces = (nch + sc - 1) / sc;
  const size_t units =
      dyn ? size_t(RingDynShare(p.n_units, grid, p.K, dyn, steal).cap) : (size_t(p.n_units) + grid - 1) / grid;
  const size_t ssq = p.norm_w ? (nch * sizeof(float) + 15) / 16 * 16 : 0;
  const size_t g = p.norm_w && p.norm_early ? nch * 32 : 0;
  return size_t(stages) * 2 * sc * 16 + nch * 32 + g + ssq + units * pieces * 2 * sizeof(float) +
         (dyn ? units * sizeof(int) : 0);
}

__device__ __forceinline__ void RingConsumersSync(int threads) {  // named barrier 1: the consumer warps
  asm volatile("bar.sync 1, %0;" ::"r"(threads) : "memory");
}

// What the producers of v11 and v12 share (lane 0 of the producer warp): a unit's P stages into the next
// free ring slots, in order, so that part[] and the consumers index stages as the static ring does (the
// unit goes into unit_of, published to the consumers by its first stage's mbarrier arrive); and the end:
// the stage count, then one marker per consumer warp (an arrive without bytes on the next CW slots).
template <int STAGES, int SC, int EPI>
struct RingFeeder {
  const MatvecParams& p;
  uint4* ring;
  uint64_t* full;
  uint64_t* empty;
  int* unit_of;
  int nch, P, it = 0, local = 0;
  __device__ RingFeeder(const MatvecParams& p_, uint4* r, uint64_t* f, uint64_t* e, int* u)
      : p(p_), ring(r), full(f), empty(e), unit_of(u), nch(p_.K >> 3), P((nch + SC - 1) / SC) {}
  __device__ __forceinline__ int NextSlot() {  // the ring slot of stage `it`, once free
    const int s = it % STAGES, use = it / STAGES;
    if (use > 0) MbarWait(&empty[s], (use - 1) & 1);
    return s;
  }
  __device__ __forceinline__ void Put(int u) {
    unit_of[local++] = u;
    int r0, r1;
    UnitRows<EPI>(p, u, &r0, &r1);
    for (int piece = 0; piece < P; ++piece, ++it) {
      const int s = NextSlot();
      const int c0 = piece * SC, len = min(SC, nch - c0);
      uint4* slot = ring + size_t(s) * 2 * SC;
      MbarArriveExpectTx(&full[s], unsigned(len) * 32u);
      BulkCopyToShared(slot, p.W + size_t(r0) * p.K + size_t(c0) * 8, unsigned(len) * 16u, &full[s]);
      BulkCopyToShared(slot + SC, p.W + size_t(r1) * p.K + size_t(c0) * 8, unsigned(len) * 16u, &full[s]);
    }
  }
  __device__ __forceinline__ void Finish(int* stages_out, int cw) {
    *static_cast<volatile int*>(stages_out) = it;
    for (int w = 0; w < cw; ++w, ++it) MbarArrive(&full[NextSlot()]);  // consumer warp (it % cw): stop
  }
};

// v11's producer: the block's static units, then grabs of D units from the launch's counter until none
// are left or the block holds cap; the counters' reset by the last block done; the end.
template <int STAGES, int SC, int EPI>
__device__ __forceinline__ void RingProduceDyn(const RingShare sh, RingFeeder<STAGES, SC, EPI>& f, int* stages_out,
                                               int cw) {
  const MatvecParams& p = f.p;
  const int dyn_base = sh.F * int(gridDim.x), dyn_units = p.n_units - dyn_base;
  int grab = 0;
  bool pending = false;
  auto ask = [&](int in_hand) {  // asks for the next D units if the block will still have room for them
    if (f.local + in_hand + sh.D <= sh.cap) {
      grab = atomicAdd(p.ring_work, sh.D);  // read only after this batch's copies: the latency hides behind them
      pending = true;
    }
  };
  int lo = int(blockIdx.x) * sh.F, hi = lo + sh.F;
  if (lo == hi) ask(0);
  for (;;) {
    for (int u = lo; u < hi; ++u) {
      if (hi - u == sh.D || (u == lo && hi - lo < sh.D)) ask(hi - u);  // D units (~64 KB) before the batch ends
      f.Put(u);
    }
    if (!pending || grab >= dyn_units) break;
    pending = false;
    lo = dyn_base + grab;
    hi = min(lo + sh.D, p.n_units);
  }
  // The counters' reset, while the ring still drains (the end's markers wait for its slots).
  if (atomicAdd(p.ring_work + 1, 1) == int(gridDim.x) - 1) {  // every block has made its last grab
    atomicExch(p.ring_work, 0);
    atomicExch(p.ring_work + 1, 0);
  }
  f.Finish(stages_out, cw);
}

// v12's word per block: its slice's open tail as front | back << 32 (empty when front >= back).
__device__ __forceinline__ unsigned long long StealWord(int front, int back) {
  return (static_cast<unsigned long long>(unsigned(back)) << 32) | unsigned(front);
}

// v12's producer: block b's static slice [u0, u1) (the kernel's u0, u0 + nu); it takes the first (8 - tail8)/8 of it without
// asking, and publishes the rest in its word. It claims that tail D units at a time from the front, one
// compare-and-swap each, issued before the previous claim's copies so that its answer comes behind them.
// Then, while it has room, it steals from the back of the fullest of the next kStealLook blocks' words:
// half of what is left there, at most D units, so the owner keeps the other half. Every word ends empty
// (an owner stops only on its own empty word), so the next launch on the same words finds nothing open
// before its owners publish.
constexpr int kStealLook = 8;
template <int STAGES, int SC, int EPI>
__device__ __forceinline__ void RingProduceSteal(const RingShare sh, int tail8, int u0, int u1,
                                                 RingFeeder<STAGES, SC, EPI>& f, int* stages_out, int cw) {
  const MatvecParams& p = f.p;
  unsigned long long* const words = reinterpret_cast<unsigned long long*>(p.ring_work);
  const int G = int(gridDim.x), b = int(blockIdx.x);
  const int mine = (u1 - u0) - (u1 - u0) * tail8 / 8;
  unsigned long long expect = StealWord(u0 + mine, u1);
  atomicExch(&words[b], expect);
  int plo = u0, phi = u0 + mine;  // claimed, not yet copied
  for (;;) {
    const int fr = int(expect & 0xffffffffu), bk = int(expect >> 32);
    if (fr >= bk) break;
    const int n = min(sh.D, bk - fr);
    const unsigned long long old = atomicCAS(&words[b], expect, StealWord(fr + n, bk));
    for (int u = plo; u < phi; ++u) f.Put(u);
    plo = phi = 0;
    if (old == expect) {
      plo = fr;
      phi = fr + n;
      expect = StealWord(fr + n, bk);
    } else {
      expect = old;  // a thief took some of the back: try again on what is left
    }
  }
  for (int u = plo; u < phi; ++u) f.Put(u);
  const int look = min(kStealLook, G - 1);
  while (f.local < sh.cap) {
    unsigned long long w[kStealLook];
#pragma unroll
    for (int j = 0; j < kStealLook; ++j)
      if (j < look) w[j] = *reinterpret_cast<volatile unsigned long long*>(&words[(b + 1 + j) % G]);
    int best = -1, left = 1;
    for (int j = 0; j < look; ++j) {
      const int r = int(w[j] >> 32) - int(w[j] & 0xffffffffu);
      if (r > left) {
        best = j;
        left = r;
      }
    }
    if (best < 0) break;  // nothing left but single units, which their owners take
    const unsigned long long seen = w[best];
    const int fr = int(seen & 0xffffffffu), bk = int(seen >> 32);
    const int n = min(min(sh.D, left / 2), sh.cap - f.local);
    if (atomicCAS(&words[(b + 1 + best) % G], seen, StealWord(fr, bk - n)) == seen)
      for (int u = bk - n; u < bk; ++u) f.Put(u);
  }
  f.Finish(stages_out, cw);
}

template <int CW, int STAGES, int SC, int EPI, int DYN = 0, bool STEAL = false, bool XB = false>
__global__ void __launch_bounds__((CW + 1) * 32, 1) RingMatvecKernel(const MatvecParams p) {
  static_assert(STAGES % CW == 0, "a ring slot always serves the same consumer warp");
  static_assert(!XB || (DYN == 0 && EPI == kEpiResid), "XB: the static ring's residual matvecs (v13)");
  static_assert(SC % 32 == 0, "a piece is whole rounds of 32 chunks");
  static_assert(DYN >= 0 && DYN <= 8, "DYN: eighths of the units handed out at run time");
  // 128-byte aligned whatever static shared memory the kernel declares: a warp reads 512 contiguous bytes of a
  // slot or of x at once, which span four 128-byte lines only from a line's start. Session 19's `go` barrier
  // (8 bytes) moved the base from 256 to 272 and made every ring tile 5-8% slower (cuda/kernels/README.md,
  // "An 8-byte variable").
  extern __shared__ __align__(128) float4 ring_smem[];
  __shared__ uint64_t full[STAGES], empty[STAGES];
  __shared__ uint64_t go;     // the consumers have passed the PDL wait (one arrival): ring_pre's hold
  __shared__ uint64_t g_bar;  // norm_early: norm_w's copy
  __shared__ uint64_t x_bar;  // XB: x's copy
  __shared__ int dyn_stages;  // DYN: the block's stage count, once the producer knows it
  TraceMarks trace(p.trace);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nch = p.K >> 3, P = (nch + SC - 1) / SC;
  const int u0 = int(int64_t(p.n_units) * blockIdx.x / gridDim.x);
  const int nu = int(int64_t(p.n_units) * (blockIdx.x + 1) / gridDim.x) - u0;
  const int n_stages = nu * P;  // DYN: unknown until the producer's last grab
  uint4* const ring = reinterpret_cast<uint4*>(ring_smem);  // [STAGES][2][SC] chunks
  float4* const xlo = ring_smem + STAGES * 2 * SC;
  float4* const xhi = xlo + nch;
  const bool g_early = p.norm_w && p.norm_early;
  float4* const gsm = xhi + nch;  // norm_early: norm_w, [nch][2] float4
  float* const ssq = reinterpret_cast<float*>(gsm + (g_early ? 2 * nch : 0));
  float* const part = ssq + (p.norm_w ? (nch + 3) / 4 * 4 : 0);  // [nu][P][2]
  static_assert(!STEAL || DYN > 0, "v12 steals from the last DYN eighths of each slice");
  const RingShare share = DYN ? RingDynShare(p.n_units, gridDim.x, p.K, DYN, STEAL) : RingShare{0, 0, 0};
  int* const unit_of = reinterpret_cast<int*>(part + size_t(share.cap) * P * 2);  // DYN: [cap] the block's units

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      MbarInit(&full[s]);
      MbarInit(&empty[s]);
    }
    MbarInit(&go);
    if (g_early) {  // norm_w depends on nothing: its copy goes out now, before the PDL wait
      MbarInit(&g_bar);
      MbarArriveExpectTx(&g_bar, unsigned(nch) * 32u);
      BulkCopyToShared(gsm, p.norm_w, unsigned(nch) * 32u, &g_bar);
    }
    if (DYN) dyn_stages = INT32_MAX;
    if (XB) {  // x's copy is issued after the PDL wait (x is the previous kernel's output)
      MbarInit(&x_bar);
      MbarArriveExpectTx(&x_bar, unsigned(nch) * 16u);
    }
  }
  __syncthreads();  // the last block-wide barrier: producer and consumers part here

  if (warp == CW) {  // ---- producer ----
    if (lane != 0) return;
    PdlTrigger();  // the next kernel may launch (it waits for this grid's completion before reading)
    if constexpr (DYN > 0) {
      RingFeeder<STAGES, SC, EPI> feeder(p, ring, full, empty, unit_of);
      if constexpr (STEAL)
        RingProduceSteal<STAGES, SC, EPI>(share, DYN, u0, u0 + nu, feeder, &dyn_stages, CW);
      else
        RingProduceDyn<STAGES, SC, EPI>(share, feeder, &dyn_stages, CW);
    } else {
      const int pre = p.ring_pre > 0 && p.ring_pre < STAGES ? p.ring_pre : STAGES;
      for (int it = 0; it < n_stages; ++it) {
        const int s = it % STAGES, use = it / STAGES;
        if (it == pre && pre < STAGES) MbarWait(&go, 0);  // ring_pre: the rest of the ring after the release
        if (use > 0) MbarWait(&empty[s], (use - 1) & 1);
        const int ul = it / P, piece = it - ul * P;
        const int c0 = piece * SC, len = min(SC, nch - c0);
        int r0, r1;
        UnitRows<EPI>(p, u0 + ul, &r0, &r1);
        uint4* slot = ring + size_t(s) * 2 * SC;
        MbarArriveExpectTx(&full[s], unsigned(len) * 32u);
        BulkCopyToShared(slot, p.W + size_t(r0) * p.K + size_t(c0) * 8, unsigned(len) * 16u, &full[s]);
        BulkCopyToShared(slot + SC, p.W + size_t(r1) * p.K + size_t(c0) * 8, unsigned(len) * 16u, &full[s]);
      }
    }
    return;
  }

  // ---- consumers: x into shared memory ----
  const int tid = threadIdx.x, nthreads = CW * 32;
  PdlWait();
  trace.Released();
  if (tid == 0) MbarArrive(&go);  // ring_pre: the producer may fill the rest of the ring
  const uint4* const xs16 = reinterpret_cast<const uint4*>(xlo);  // XB: [nch] chunks of fp16 x
  if (XB && tid == 0) BulkCopyToShared(xlo, p.x16, unsigned(nch) * 16u, &x_bar);
  if (!XB) {
    constexpr int kXc = 4;  // chunks a thread loads before it uses any (one L2 round trip per kXc)
    const float4* x4 = reinterpret_cast<const float4*>(p.x);
    const uint4* x16 = reinterpret_cast<const uint4*>(p.x16);
    const float4* g4 = reinterpret_cast<const float4*>(p.norm_w);
    // GS (g_early): the norm weights from shared memory. One loop per source, chosen once. With the choice
    // made per chunk (a branch between each chunk's loads) the engine read 0.6% below session 18's, its
    // peer in the A/B; with one loop per source, 0.35% above (session 19, cuda/gpu_opt/README.md).
    auto stage_x = [&](auto gs) {
      constexpr bool GS = decltype(gs)::value;
      for (int base = tid; base < nch; base += kXc * nthreads) {
        float4 a[kXc], b[kXc], ga[kXc], gb[kXc];
#pragma unroll
        for (int i = 0; i < kXc; ++i) {
          const int c = base + i * nthreads;
          if (c < nch) {
            if (x16) {
              float f[8];
              Unpack8(__ldcg(x16 + c), f);
              a[i] = make_float4(f[0], f[1], f[2], f[3]);
              b[i] = make_float4(f[4], f[5], f[6], f[7]);
            } else {
              a[i] = __ldcg(x4 + 2 * c);
              b[i] = __ldcg(x4 + 2 * c + 1);
            }
            if (g4) {
              ga[i] = GS ? gsm[2 * c] : __ldg(g4 + 2 * c);
              gb[i] = GS ? gsm[2 * c + 1] : __ldg(g4 + 2 * c + 1);
            }
          }
        }
#pragma unroll
        for (int i = 0; i < kXc; ++i) {
          const int c = base + i * nthreads;
          if (c < nch) {
            if (g4) {
              ssq[c] = SumSq8(a[i], b[i]);
              a[i] = make_float4(a[i].x * ga[i].x, a[i].y * ga[i].y, a[i].z * ga[i].z, a[i].w * ga[i].w);
              b[i] = make_float4(b[i].x * gb[i].x, b[i].y * gb[i].y, b[i].z * gb[i].z, b[i].w * gb[i].w);
            }
            xlo[c] = a[i];
            xhi[c] = b[i];
          }
        }
      }
    };
    if (g_early) {
      MbarWait(&g_bar, 0);  // landed long ago, while the previous kernel ran
      stage_x(std::true_type{});
    } else {
      stage_x(std::false_type{});
    }
  }
  if (XB)
    MbarWait(&x_bar, 0);  // each warp on its own: no barrier across the consumers
  else
    RingConsumersSync(nthreads);
  trace.Staged();

  // ---- consumers: the stages ----
  for (int it = warp; DYN || it < n_stages; it += CW) {
    const int s = it % STAGES, use = it / STAGES;
    MbarWait(&full[s], use & 1);
    if (DYN && it >= *static_cast<volatile int*>(&dyn_stages)) break;  // the end marker
    const int ul = it / P, piece = it - ul * P;
    const int c0 = piece * SC, len = min(SC, nch - c0);
    const uint4* w0 = ring + size_t(s) * 2 * SC;
    const uint4* w1 = w0 + SC;
    float a0 = 0.f, a1 = 0.f;
#pragma unroll 4
    for (int c = lane; c < len; c += 32) {
      float4 lo, hi;
      if (XB) {  // fp16 -> fp32 is exact: the same operands as the staged x's
        float f[8];
        Unpack8(xs16[c0 + c], f);
        lo = make_float4(f[0], f[1], f[2], f[3]);
        hi = make_float4(f[4], f[5], f[6], f[7]);
      } else {
        lo = xlo[c0 + c];
        hi = xhi[c0 + c];
      }
      a0 = Dot8(w0[c], lo, hi, a0);
      a1 = Dot8(w1[c], lo, hi, a1);
    }
    a0 = WarpSum(a0);
    a1 = WarpSum(a1);
    __syncwarp();  // every lane's reads of the slot are done
    if (lane == 0) {
      part[2 * it] = a0;  // it = ul * P + piece
      part[2 * it + 1] = a1;
      MbarArrive(&empty[s]);
    }
  }
  RingConsumersSync(nthreads);

  // ---- consumers: each unit's sums and its epilogue ----
  float scale = 1.f;
  if (p.norm_w) {
    float t = 0.f;
    for (int c = lane; c < nch; c += 32) t += ssq[c];
    scale = 1.f / sqrtf(WarpSum(t) / p.K + p.eps);
  }
  const int pos = EPI == kEpiQkv ? __ldcg(p.pos) : 0;
  unsigned long long best = 0;  // Store with p.argmax: this thread's best key
  const int n_local = DYN ? dyn_stages / P : nu;  // (every marker seen: the count is in)
  for (int ul = tid; ul < n_local; ul += nthreads) {
    float y0 = 0.f, y1 = 0.f;
    for (int k = 0; k < P; ++k) {
      y0 += part[2 * (ul * P + k)];
      y1 += part[2 * (ul * P + k) + 1];
    }
    y0 *= scale;
    y1 *= scale;
    const int unit = DYN ? unit_of[ul] : u0 + ul, r0 = 2 * unit, r1 = 2 * unit + 1;
    float e0 = 0.f, e1 = 0.f;  // UnitEpilogue's operands, loaded here (the weights are all in by now)
    if (EPI == kEpiQkv) QkvRopeCoeffs(p.qkv, unit, pos, &e0, &e1);
    if (EPI == kEpiResid) {
      e0 = __ldcg(p.out + r0);
      e1 = r1 < p.M ? __ldcg(p.out + r1) : 0.f;
    }
    UnitEpilogue<EPI>(p, unit, y0, y1, pos, e0, e1);
    if (EPI == kEpiStore && p.argmax) {
      best = max(best, ArgmaxKey(y0, r0));
      if (r1 < p.M) best = max(best, ArgmaxKey(y1, r1));
    }
  }
  if (EPI == kEpiStore && p.argmax) {  // one atomic per warp
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    if (lane == 0 && best) atomicMax(p.argmax, best);
  }
}

}  // namespace gpu
}  // namespace lab
