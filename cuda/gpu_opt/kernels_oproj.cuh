// o_proj by kv heads (OHeadKernel; the engine's LAB_GPU_O_HEAD=1): attention hands each kv head to o_proj
// as soon as that head's splits are written, instead of at the end of its grid.
//
// Why: at context 512 on the H200 the step spends ~6 us a layer in attention for ~0.5 us of K/V bytes
// (session 26's trace, cuda/gpu_opt/README.md "o_proj by heads"), and o_proj's release waits for the last
// block of the whole attention grid, then for that grid's drain, then stages x. The chain a layer:
//   attention's splits -> the last split of each head merges (a counter round trip, the partials read back,
//   the output written) -> every attention block done -> o_proj released -> x staged -> o_proj's products.
// Split o_proj by columns instead, one slice of G*HD columns per kv head (the columns that head's G query
// heads write), and each block needs only its own head: out[r] += W_o[r, head cols] . att[head]. A block
// waits for its head's split counter, merges that head's partials itself (MergeSplits4, the merge attention
// ran before) and adds its rows' sums into the residual. Gone: the merging block's hop, the grid boundary
// and its drain, the output's write and re-read; a head whose splits finish early has its rows added while
// the other heads still run. The price: R blocks per head each merge the head's partials (R * n_splits * G *
// HD * 4 bytes of L2 reads a layer), and the sums land by red.global.add, in the order the blocks finish
// (the last bits of the residual vary from run to run, as with the fused MLP).
//
// Contract:
//   grid = (R, n_kv) blocks of WARPS * 32 threads; static shared memory G * HD floats. Block (r, h) owns rows
//   [M r / R, M (r+1) / R) of W_o's columns [h G HD, (h+1) G HD); warp w takes rows row0 + w, row0 + w + WARPS,
//   ..., U rows a batch, lane l chunks l, l + 32, ... (16 bytes) of each row.
//   Launched after AttentionKernel V2 with p.publish set (it triggers its dependents at entry, so every one of its
//   blocks is resident before any of these waits: the wait cannot starve it). It does not call griddepcontrol.wait:
//   its inputs are ordered by the counters (attention's release, this kernel's acquire), and attention's own
//   wait for qkv comes before its release, so qkv has read the residual before anything is added to it.
//   ready[h] counts the splits published (attention's counters, token 0); done[h] is zero at launch. The last of
//   a head's R blocks to pass its merge resets both, for the next layer's attention.
//   out2 (nullptr, or the fused MLP's input copy, which qkv wrote from the same residual): the same sums added, so
//   that it equals out afterwards.
// New against DecodeMatvecKernel's o_proj (w8.u1.r4.b, x by one bulk copy of attention's fp16 output): no PDL
// wait, per-head release, x merged from the partials in fp32 (not rounded to fp16), rows added by atomics.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/gpu_opt/kernels_attention_merge.cuh"
#include "cuda/gpu_opt/kernels_common.cuh"

namespace lab {
namespace gpu {

struct OHeadParams {
  const __half* W;          // W_o [M, q_dim] row-major fp16
  int M, q_dim;             // rows (dim) and the row length (n_heads * HD)
  const float* part_acc;    // attention's partials (AttnParams::part_acc, part_ml), token 0
  const float2* part_ml;
  unsigned* ready;          // [n_kv] attention's counters: the splits of each head published
  unsigned* done;           // [n_kv] zero at launch: this kernel's blocks per head past their merge
  const int* pos;           // the step's position: its key count, and so its split count
  int S, min_chunk;         // attention's grid splits per head and AttnParams::min_chunk
  float* out;               // [M] the residual stream, += W_o att
  float* out2;              // or nullptr: [M] its copy for the fused MLP, += the same
  unsigned long long* trace;  // nullptr, or this launch's TraceMarks slots (released: the head's splits seen)
};

constexpr int kOHeadWarps = 8, kOHeadRows = 4;  // warps a block; rows a warp has in flight (a batch)

__device__ __forceinline__ unsigned LdAcquireGpu(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// 2 blocks an SM (at most 128 registers a thread): a block must fit beside attention's, which holds its SM
// while this one waits.
template <int G, int HD, int WARPS = kOHeadWarps, int U = kOHeadRows>
__global__ void __launch_bounds__(WARPS * 32, 2) OHeadKernel(const OHeadParams p) {
  constexpr int C = G * HD, NCH = C / 8, CPL = (NCH + 31) / 32;  // columns, chunks of a row, chunks a lane
  constexpr int UB = CPL > 2 ? U / 2 : U;  // rows a batch: half for the widest groups (G HD > 512), for registers
  __shared__ float4 xlo[NCH], xhi[NCH];  // x split as DecodeMatvecKernel stages it: conflict-free float4 reads
  TraceMarks trace(p.trace);
  PdlTrigger();  // the fused MLP may launch; it waits for this grid's completion before reading the residual
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, kvh = blockIdx.y;
  const int row0 = int(int64_t(p.M) * blockIdx.x / gridDim.x), row1 = int(int64_t(p.M) * (blockIdx.x + 1) / gridDim.x);
  const __half* const Wh = p.W + size_t(kvh) * C;
  uint4 w[UB][CPL];
  auto load = [&](int rb) {  // the batch of rows rb, rb + WARPS, ...
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      const int row = rb + u * WARPS;
#pragma unroll
      for (int i = 0; i < CPL; ++i) {
        const int c = lane + 32 * i;
        w[u][i] = row < row1 && c < NCH ? LdStream(reinterpret_cast<const uint4*>(Wh + size_t(row) * p.q_dim) + c)
                                        : make_uint4(0, 0, 0, 0);
      }
    }
  };
  int rb = row0 + warp;
  load(rb);  // the first batch: weights depend on nothing, so before the wait

  // Wait for this head's splits (the count attention used: the same rule, the same position).
  const int n_keys = __ldcg(p.pos) + 1;
  const int chunk = AttnChunk(n_keys, p.S, p.min_chunk), n_splits = (n_keys + chunk - 1) / chunk;
  if (threadIdx.x == 0)
    while (LdAcquireGpu(p.ready + kvh) < unsigned(n_splits)) __nanosleep(32);
  __syncthreads();  // thread 0's acquire reaches the block's loads below through the barrier
  trace.Released();
  for (int idx = threadIdx.x; idx < C / 4; idx += WARPS * 32) {
    const float4 v = MergeSplits4<G, HD, 8>(p.part_acc, p.part_ml, size_t(kvh) * p.S, idx / (HD / 4), idx % (HD / 4), n_splits);
    (idx & 1 ? xhi : xlo)[idx >> 1] = v;
  }
  __syncthreads();
  trace.Staged();
  if (threadIdx.x == 0 && atomicAdd(p.done + kvh, 1u) == gridDim.x - 1) {  // the head's last block past its merge
    p.ready[kvh] = 0;
    p.done[kvh] = 0;
  }

  for (; rb < row1; rb += UB * WARPS) {  // warp-uniform
    uint4 cur[UB][CPL];
#pragma unroll
    for (int u = 0; u < UB; ++u)
#pragma unroll
      for (int i = 0; i < CPL; ++i) cur[u][i] = w[u][i];
    if (rb + UB * WARPS < row1) load(rb + UB * WARPS);  // the next batch in flight while this one is used
#pragma unroll
    for (int u = 0; u < UB; ++u) {
      float acc = 0.f;
#pragma unroll
      for (int i = 0; i < CPL; ++i) {
        const int c = lane + 32 * i;
        if (c < NCH) acc = Dot8(cur[u][i], xlo[c], xhi[c], acc);
      }
      acc = WarpSum(acc);
      const int row = rb + u * WARPS;
      if (lane == u && row < row1) {  // one lane a row: no return value used, red.global.add.f32
        atomicAdd(p.out + row, acc);
        if (p.out2) atomicAdd(p.out2 + row, acc);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// v2, o_proj by rows with x by heads (ORowsKernel; LAB_GPU_O_HEAD=rows). OHeadKernel (v1, LAB_GPU_O_HEAD=cols,
// above) gave attention back 40-70 us a step at context 512 but streamed o_proj's weights at ~2.9 TB/s
// instead of ~4.4 (session 26, calls 2-3: its heads' blocks start at different times and each streams a
// fixed share, so the last head's blocks end alone; and every block merges its head's partials again).
// v2 keeps the register tile's row split (every block all columns of its rows, all blocks released together
// in effect, no atomics) and takes only the per-head release: x is staged a head at a time, as the chunk
// loop reaches that head's columns, each head waited for by its own flag. Attention still merges its splits
// (the merging block, or a head's only split, raises the head's flag after writing its output).
//
// Contract:
//   grid = ceil(ceil(M / 2) / WARPS) blocks of WARPS * 32 threads (a warp: rows 2 w', 2 w' + 1 of the block's
//   units, as DecodeMatvecKernel's w8.u1 tiles), dynamic smem K * 4 bytes (x in the split fp32 layout).
//   Lane l reads chunks l + 32 u of each row, UNROLL a batch, two batches issued before the first wait.
//   x: attention's output, fp16 (x16) or fp32 (x); head h's chunks [h C/8, (h+1) C/8) are staged once
//   ready[h] is non-zero (thread 0's acquire, then a barrier), the first time the loop needs one of them.
//   ready[n_kv] is set by attention (AttnParams::head_ready); done is zero at launch; the last block past its
//   last head resets both. out[r] (the residual) is read after the first head's acquire and written with
//   out16[r] as kEpiResid does. The chunks of a row are added in the register tiles' order, from the same
//   fp16 x, so the sums are bitwise those of w8.u1.r4.
//   Not waited for by griddepcontrol.wait (see OHeadKernel): launched behind AttentionKernel V2, whose
//   blocks are all resident before any of these waits.
struct ORowsParams {
  const __half* W;          // W_o [M, K] row-major fp16
  int M, K;                 // K = n_kv * C
  int C;                    // columns a kv head's group writes (G * HD)
  const __half* x16;        // attention's output in fp16 [K], or (nullptr)
  const float* x;           // in fp32
  unsigned* ready;          // [n_kv] non-zero once the head's output is written
  unsigned* done;           // zero at launch: blocks past their last head
  float* out;               // [M] the residual stream: out[r] += W_o[r] . x
  __half* out16;            // or nullptr: its fp16 copy
  unsigned long long* trace;  // TraceMarks slots (released: the first head seen; staged: the last head staged)
  int wait_all;             // 1 (LAB_GPU_O_HEAD=rows_all): the first wait is for every head's flag, so that no
                            // weight batch past the first two is issued while attention runs
};

template <int WARPS = 8, int UNROLL = 4>
__global__ void __launch_bounds__(WARPS * 32, 2) ORowsKernel(const ORowsParams p) {
  extern __shared__ __align__(16) float4 xs4[];  // [nch] lo halves, then [nch] hi halves
  TraceMarks trace(p.trace);
  PdlTrigger();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nch = p.K >> 3, chc = p.C >> 3;
  float4* const xlo = xs4;
  float4* const xhi = xs4 + nch;
  const int unit = min(int(blockIdx.x) * WARPS + warp, (p.M + 1) / 2 - 1);  // past the end: re-read the last unit
  const int r0 = 2 * unit, r1 = min(2 * unit + 1, p.M - 1);
  const uint4* const w0 = reinterpret_cast<const uint4*>(p.W + size_t(r0) * p.K);
  const uint4* const w1 = reinterpret_cast<const uint4*>(p.W + size_t(r1) * p.K);
  constexpr int B = 32 * UNROLL;  // chunks a batch
  uint4 a0[UNROLL], a1[UNROLL], b0[UNROLL], b1[UNROLL];
  auto load = [&](int base, uint4* d0, uint4* d1) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int c = base + lane + 32 * u;
      d0[u] = c < nch ? LdStream(w0 + c) : make_uint4(0, 0, 0, 0);
      d1[u] = c < nch ? LdStream(w1 + c) : make_uint4(0, 0, 0, 0);
    }
  };
  load(0, a0, a1);  // two batches before the first wait: weights depend on nothing
  load(B, b0, b1);
  float acc0 = 0.f, acc1 = 0.f, e0 = 0.f, e1 = 0.f;
  int staged = 0;  // chunks of x staged (whole heads)
  for (int base = 0; base < nch; base += B) {  // block-uniform
    const int need = min(nch, base + B);
    while (staged < need) {  // block-uniform: the next head, waited for and staged
      const int h = staged / chc;
      if (threadIdx.x == 0)
        for (int hh = h; hh <= (p.wait_all && h == 0 ? p.K / p.C - 1 : h); ++hh)
          while (LdAcquireGpu(p.ready + hh) == 0) __nanosleep(20);
      __syncthreads();  // thread 0's acquire reaches every thread's loads below through the barrier
      if (h == 0) {
        trace.Released();
        if (lane == 0) {  // the residual, now ordered after the previous layer's writes
          e0 = __ldcg(p.out + r0);
          e1 = __ldcg(p.out + r1);
        }
      }
      for (int c = staged + threadIdx.x; c < staged + chc; c += WARPS * 32) {
        if (p.x16) {
          float f[8];
          Unpack8(__ldcg(reinterpret_cast<const uint4*>(p.x16) + c), f);
          xlo[c] = make_float4(f[0], f[1], f[2], f[3]);
          xhi[c] = make_float4(f[4], f[5], f[6], f[7]);
        } else {
          xlo[c] = __ldcg(reinterpret_cast<const float4*>(p.x) + 2 * c);
          xhi[c] = __ldcg(reinterpret_cast<const float4*>(p.x) + 2 * c + 1);
        }
      }
      __syncthreads();
      staged += chc;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {  // batch `base` in a*, the next in b*: use a, then a <- b, b <- the one after
      const int c = base + lane + 32 * u;
      if (c < nch) {
        acc0 = Dot8(a0[u], xlo[c], xhi[c], acc0);
        acc1 = Dot8(a1[u], xlo[c], xhi[c], acc1);
      }
      a0[u] = b0[u];
      a1[u] = b1[u];
    }
    if (base + 2 * B < nch) load(base + 2 * B, b0, b1);
  }
  trace.Staged();
  if (threadIdx.x == 0 && atomicAdd(p.done, 1u) == gridDim.x - 1) {  // the last block past its last head
    for (int h = 0; h < p.K / p.C; ++h) p.ready[h] = 0;
    *p.done = 0;
  }
  acc0 = WarpSum(acc0);
  acc1 = WarpSum(acc1);
  if (lane == 0 && int(blockIdx.x) * WARPS + warp < (p.M + 1) / 2) {
    p.out[r0] = e0 + acc0;
    if (p.out16) p.out16[r0] = __float2half_rn(e0 + acc0);
    if (r1 != r0) {
      p.out[r1] = e1 + acc1;
      if (p.out16) p.out16[r1] = __float2half_rn(e1 + acc1);
    }
  }
}

using OHeadFn = void (*)(const OHeadParams);
// The instantiation for a model's group size G (1..8) and head_dim (64, 128), or nullptr.
inline OHeadFn OHeadKernelFor(int G, int HD) {
#define LAB_OHEAD_G(g) \
  case g: return HD == 64 ? OHeadKernel<g, 64> : HD == 128 ? OHeadKernel<g, 128> : nullptr;
  switch (G) {
    LAB_OHEAD_G(1) LAB_OHEAD_G(2) LAB_OHEAD_G(3) LAB_OHEAD_G(4) LAB_OHEAD_G(5) LAB_OHEAD_G(6) LAB_OHEAD_G(7)
    LAB_OHEAD_G(8)
    default: return nullptr;
  }
#undef LAB_OHEAD_G
}

}  // namespace gpu
}  // namespace lab
