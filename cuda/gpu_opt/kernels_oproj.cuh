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
