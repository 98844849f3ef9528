// The kernel lab: decode matvec y = W x, versions v1..v10 side by side (llm.c dev/cuda style).
//
// Common contract of every version:
//   W  fp16 [M, K] row-major (weights: read once per token, never written)
//   x  fp32 [K]             (the activation vector)
//   y  fp32 [M]             every element written, nothing else written
//   K % 8 == 0, W and x 16-byte aligned. fp32 accumulation.
// Bytes that must move: M*K*2 (W) + K*4 (x) + M*4 (y) — W dominates, so the speed limit is
// M*K*2 / (HBM read bandwidth). The bench (bench.cu) runs each version at the Llama-3.1-8B decode
// shapes and reports GB/s against a copy and a read kernel timed in the same run.
//
// Why each step helps (numbers: cuda/kernels/README.md):
//   v1 one thread per row. Thread i walks row i alone: in each load instruction the 32 threads of a
//      warp touch 32 rows K*2 bytes apart: 32 separate 32-byte sectors for 64 useful bytes, and the
//      L1 has to hold 32 rows' worth of lines for the next 15 loads to hit. This is stage 3's kernel
//      (in fp16 here).
//   v2 one warp per row, lanes read consecutive half2 (4 bytes): each load instruction is one fully
//      used 128-byte line (coalesced), and a warp-shuffle reduction combines the 32 partial sums.
//      Still 4 bytes per load instruction and one dependent load at a time per thread.
//   v3 16-byte loads (uint4 = 8 halves) per lane: 512 bytes per warp instruction, 4x fewer load
//      instructions and address computations for the same bytes.
//   v4 two rows per warp and 4 chunks per row issued back to back: 8 independent 16-byte loads in
//      flight per thread before the first is used (memory-level parallelism is what hides the ~600 ns
//      HBM latency), x reused from registers for both rows; weight loads marked streaming
//      (ld.global.nc.L1::no_allocate: no L1 pollution, 256-byte L2 prefetch hint).
//   v5 the engine's kernel (gpu_opt/kernels_matvec.cuh DecodeMatvecKernel, kEpiStore): x staged once per
//      block in shared memory in a bank-conflict-free split layout, the next batch of weight loads
//      issued before the current batch is consumed (register double buffering), first batch issued
//      before the PDL wait; tile shape (warps/block, rows/warp, loads/row) is a template parameter the
//      engine auto-tunes. Fused epilogues (RMSNorm, RoPE, SiLU*up, residual) cost no extra bytes.
//   v6 v5 + one cp.async.bulk.prefetch.L2 per weight row at block start (MatvecParams::l2_prefetch):
//      meant to keep HBM busy across kernel boundaries; measured 12-30% SLOWER (L2 churn), kept as a
//      lesson and off in the engine (README.md).
//   v7 v5 with a first batch PRE times as long (DecodeMatvecKernel's PRE template parameter, tiles
//      ".pN"): more of the weight stream issued before the PDL wait, into registers (no L2 churn),
//      for o_proj behind the latency-bound attention. Alone (no PDL) it can only cost registers; in
//      the engine's decode step, timed by the whole-step tuner on the H200, it gained nothing
//      (w8.u1.r4.p2 = w8.u1.r4 within 0.2%, w4.u1.r4.p4 at 186 registers 2.4% slower; README.md).
//      The tiles stay in the engine's auto-tune set.
//   v8, v9 the engine's staged and persistent tiles (README.md).
//   v10 the weight ring (gpu_opt/kernels_matvec_ring.cuh RingMatvecKernel): one block per SM on a contiguous
//      range of rows; one producer thread bulk-copies (TMA) the rows piece by piece into a ring of shared
//      memory, 128 KB in flight per SM, starting before the PDL wait; consumer warps take the stages in
//      turn. 6-9% faster per shape than v5, and the step's weight chain 92.5% of the read ceiling against
//      86.2% (README.md, "v10: the weight ring").
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/gpu_opt/kernels.cuh"

namespace lab {
namespace lab_kernels {

// v1 — grid ceil(M/256) x 256 threads. One thread per output row, scalar fp16 loads.
static __global__ void MatvecV1(const __half* __restrict__ W, const float* __restrict__ x, float* __restrict__ y, int M,
                         int K) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= M) return;
  const __half* w = W + size_t(i) * K;
  float acc = 0.f;
  for (int j = 0; j < K; ++j) acc = fmaf(__half2float(w[j]), x[j], acc);
  y[i] = acc;
}

// v2 — grid ceil(M/8) x 256 threads (8 warps, one row each). Coalesced half2 loads, shuffle reduce.
// New vs v1: the warp, not the thread, owns a row.
static __global__ void MatvecV2(const __half* __restrict__ W, const float* __restrict__ x, float* __restrict__ y, int M,
                         int K) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= M) return;  // warp-uniform
  const __half2* w = reinterpret_cast<const __half2*>(W + size_t(row) * K);
  const float2* x2 = reinterpret_cast<const float2*>(x);
  float acc = 0.f;
  for (int j = lane; j < K / 2; j += 32) {
    const float2 wf = __half22float2(w[j]);
    const float2 xv = __ldg(x2 + j);
    acc = fmaf(wf.x, xv.x, fmaf(wf.y, xv.y, acc));
  }
  acc = gpu::WarpSum(acc);
  if (lane == 0) y[row] = acc;
}

// v3 — grid ceil(M/8) x 256 threads. As v2 with 16-byte loads: lane l reads chunks l, l+32, ...
// New vs v2: 8 halves per load instruction (uint4), x read as two float4.
static __global__ void MatvecV3(const __half* __restrict__ W, const float* __restrict__ x, float* __restrict__ y, int M,
                         int K) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= M) return;
  const uint4* w = reinterpret_cast<const uint4*>(W + size_t(row) * K);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float acc = 0.f;
  for (int c = lane; c < K / 8; c += 32) acc = gpu::Dot8(w[c], __ldg(x4 + 2 * c), __ldg(x4 + 2 * c + 1), acc);
  acc = gpu::WarpSum(acc);
  if (lane == 0) y[row] = acc;
}

// v4 — grid ceil(M/16) x 256 threads (8 warps x 2 rows). New vs v3: 2 rows per warp and UNROLL=4
// chunks per row loaded before use (8 x 16 B in flight per thread), streaming loads, x shared by rows.
static __global__ void MatvecV4(const __half* __restrict__ W, const float* __restrict__ x, float* __restrict__ y, int M,
                         int K) {
  constexpr int UNROLL = 4;
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 2;
  if (row0 >= M) return;
  const int row1 = min(row0 + 1, M - 1);
  const uint4* w0 = reinterpret_cast<const uint4*>(W + size_t(row0) * K);
  const uint4* w1 = reinterpret_cast<const uint4*>(W + size_t(row1) * K);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const int nch = K / 8;
  float a0 = 0.f, a1 = 0.f;
  for (int base = 0; base < nch; base += 32 * UNROLL) {
    uint4 b0[UNROLL], b1[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int c = base + lane + 32 * u;
      b0[u] = c < nch ? gpu::LdStream(w0 + c) : make_uint4(0, 0, 0, 0);
      b1[u] = c < nch ? gpu::LdStream(w1 + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int c = base + lane + 32 * u;
      if (c < nch) {
        const float4 lo = __ldg(x4 + 2 * c), hi = __ldg(x4 + 2 * c + 1);
        a0 = gpu::Dot8(b0[u], lo, hi, a0);
        a1 = gpu::Dot8(b1[u], lo, hi, a1);
      }
    }
  }
  a0 = gpu::WarpSum(a0);
  a1 = gpu::WarpSum(a1);
  if (lane == 0) {
    y[row0] = a0;
    if (row0 + 1 < M) y[row0 + 1] = a1;
  }
}

// v5 — the engine's DecodeMatvecKernel<WARPS, UPW, UNROLL, kEpiStore> (gpu_opt/kernels_matvec.cuh); the
// bench instantiates the same configurations the engine auto-tunes between.

}  // namespace lab_kernels
}  // namespace lab
