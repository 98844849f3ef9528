// Stage 4 kernels: fp16 weights and KV cache, fp32 activations and accumulation.
//
// Decode (one token) is a chain of matrix-vector products, each reading its weights from HBM exactly
// once, so its speed limit is bytes / bandwidth. These kernels try to keep HBM busy from the first
// to the last byte of a step:
//   DecodeMatvecKernel  one kernel per linear layer, with the neighbouring elementwise work fused in:
//                       RMSNorm folded into the input staging (scale computed per block), RoPE + q
//                       scaling + fp16 KV-cache write in the qkv epilogue, SiLU(gate)*up in the
//                       gate/up epilogue, the residual add in the o_proj/down_proj epilogues.
//                       16-byte streaming weight loads, coalesced across the warp, a whole batch of
//                       them in flight per thread and the next batch issued before the current one is
//                       used (register double buffering); the input vector lives in shared memory.
//   AttentionKernel     flash-decoding: the keys are split across blocks (grid = kv heads x splits),
//                       each block keeps an online softmax per query head of its GQA group, reading
//                       every cached K/V row once for the whole group; the last block of a kv head
//                       to finish merges the partial results (no second launch).
// Both begin with programmatic dependent launch (PDL): a kernel may start while the previous one
// drains; it issues its first weight loads (attention: its older K/V rows), which depend on nothing,
// and then waits in griddepcontrol.wait until the previous kernel's results are visible. Launched without the PDL
// attribute, the wait is a no-op, so the kernels are correct either way.
//
// Prefill (a chunk of prompt tokens) has two paths (README.md, "Prefill"):
//   tensor-core (default)  the GEMMs and FlashAttention of the prefill kernel lab (cuda/prefill/
//                          prefill.h) with the small glue kernels of kernels_prefill.cuh: embedding,
//                          residual add fused with RMSNorm (fp32 residual, fp16 GEMM input), RoPE + KV
//                          write from the fp32 QKV GEMM output (q to fp16 for FlashAttention);
//   simple (LAB_GPU_PREFILL=simple)  a tiled fp16-weight GEMM with fp32 accumulation on CUDA cores,
//                          row RMSNorm, RoPE/KV write, SwiGLU, and the decode attention kernel with one
//                          more grid dimension for the tokens (causal by position).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lab {
namespace gpu {

// ---------------------------------------------------------------------------------------------
// Small device helpers
// ---------------------------------------------------------------------------------------------

// Wait until the grids this one depends on (PDL) have completed and their writes are visible.
__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Allow the next kernel in the stream (launched with the PDL attribute) to start launching.
__device__ __forceinline__ void PdlTrigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// 16-byte load of data that is never written (weights): non-coherent path, no L1 allocation (each
// byte is used once), 256-byte L2 prefetch hint (the warp's next lines of the same row).
__device__ __forceinline__ uint4 LdStream(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// Asks the copy engine to bring `bytes` (multiple of 16, 16-byte aligned) into L2, asynchronously: one
// instruction per weight row, no registers, nothing to wait for.
__device__ __forceinline__ void PrefetchL2(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void Unpack8(const uint4& w, float f[8]) {
  const __half2* h = reinterpret_cast<const __half2*>(&w);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __half22float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

__device__ __forceinline__ float Dot8(const uint4& w, const float4& lo, const float4& hi, float acc) {
  float f[8];
  Unpack8(w, f);
  acc = fmaf(f[0], lo.x, acc);
  acc = fmaf(f[1], lo.y, acc);
  acc = fmaf(f[2], lo.z, acc);
  acc = fmaf(f[3], lo.w, acc);
  acc = fmaf(f[4], hi.x, acc);
  acc = fmaf(f[5], hi.y, acc);
  acc = fmaf(f[6], hi.z, acc);
  acc = fmaf(f[7], hi.w, acc);
  return acc;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float Silu(float g) { return g / (1.f + expf(-g)); }

// ---------------------------------------------------------------------------------------------
// The qkv epilogue, shared by decode (fused into the matvec) and prefill (after the GEMM).
// A "unit" is a pair of rows (j, j + hd/2) of one head of the concatenated [q; k; v] weight: the two
// rows RoPE rotates together (Hugging Face's half-rotated layout).
// ---------------------------------------------------------------------------------------------

struct QkvOut {
  float* q;                // [B, n_heads*hd] fp32, rotated and multiplied by q_scale
  __half* k_cache;         // this layer's [max_ctx, kv_dim] fp16
  __half* v_cache;
  const float* rope_cos;   // [max_ctx, hd/2]
  const float* rope_sin;
  int hd, n_heads, n_kv;
  float q_scale;           // log2(e) / sqrt(hd): scores come out in log2 units for exp2f
};

__device__ __forceinline__ void QkvUnitRows(int unit, int hd, int* r0, int* r1) {
  const int half = hd >> 1;
  const int hb = unit / half, j = unit - hb * half;
  *r0 = hb * hd + j;
  *r1 = *r0 + half;
}

// RoPE coefficients of a unit at position `pos` (1, 0 for v rows, which are not rotated).
__device__ __forceinline__ void QkvRopeCoeffs(const QkvOut& o, int unit, int pos, float* c, float* s) {
  const int half = o.hd >> 1;
  const int hb = unit / half, j = unit - hb * half;
  if (hb < o.n_heads + o.n_kv) {
    *c = o.rope_cos[pos * half + j];
    *s = o.rope_sin[pos * half + j];
  } else {
    *c = 1.f;
    *s = 0.f;
  }
}

// y0, y1: rows r0, r1 of token t at absolute position `pos`; c, s from QkvRopeCoeffs.
__device__ __forceinline__ void QkvEpilogue(const QkvOut& o, int unit, float y0, float y1, int t, int pos, float c,
                                            float s) {
  const int hd = o.hd, half = hd >> 1;
  const int hb = unit / half, j = unit - hb * half;
  const int kv_dim = o.n_kv * hd;
  if (hb < o.n_heads + o.n_kv) {  // q or k: rotate
    const float a = y0 * c - y1 * s, b = y1 * c + y0 * s;
    if (hb < o.n_heads) {
      float* q = o.q + size_t(t) * o.n_heads * hd + hb * hd + j;
      q[0] = a * o.q_scale;
      q[half] = b * o.q_scale;
    } else {
      __half* k = o.k_cache + size_t(pos) * kv_dim + (hb - o.n_heads) * hd + j;
      k[0] = __float2half_rn(a);
      k[half] = __float2half_rn(b);
    }
  } else {
    __half* v = o.v_cache + size_t(pos) * kv_dim + (hb - o.n_heads - o.n_kv) * hd + j;
    v[0] = __float2half_rn(y0);
    v[half] = __float2half_rn(y1);
  }
}

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
  const float* norm_w;   // [K] RMSNorm weight, or nullptr for no norm
  float eps;
  float* out;            // Store/Resid: [M]; GateUp: [H]; Qkv: unused (see qkv)
  int H;                 // GateUp: rows of gate (= of up)
  const int* pos;        // Qkv: device-side position of the token
  QkvOut qkv;
  int l2_prefetch;       // 1: bulk-prefetch the block's whole weight rows into L2 before the PDL wait
  int out_host;          // Store only: out is mapped pinned host memory; the block gathers its rows in
                         // shared memory and writes them with one coalesced store (few, full PCIe writes)
  unsigned long long* argmax;  // Store only, or nullptr: greedy generation; each block atomicMax-es
                               // ArgmaxKey(value, row) of its rows into *argmax (cleared before the launch)
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

// Dynamic shared memory a DecodeMatvecKernel needs for input length K.
inline size_t MatvecSmemBytes(int K) { return size_t(K) * sizeof(float); }

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
//   The input x (normalized by RMSNorm when norm_w != nullptr: x*norm_w staged, 1/rms applied to the
//   dot products) is staged in shared memory as fp32 in a split layout (chunk c's first four floats
//   at lo[c], last four at hi[c]) so the warp's float4 reads are conflict-free.
template <int WARPS, int UPW, int UNROLL, int EPI, int PRE = 1>
__global__ void __launch_bounds__(WARPS * 32) DecodeMatvecKernel(const MatvecParams p) {
  constexpr int ROWS = 2 * UPW;
  constexpr int R0 = UNROLL * PRE;  // chunks per row per lane in the first (pre-wait) batch
  extern __shared__ float4 smem4[];
  __shared__ float red[WARPS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nch = p.K >> 3;  // 16-byte chunks per row
  const int unit0 = (blockIdx.x * WARPS + warp) * UPW;

  const uint4* rows[ROWS];
#pragma unroll
  for (int u = 0; u < UPW; ++u) {
    // Units past the end re-read the last unit (valid memory) and write nothing.
    const int unit = min(unit0 + u, p.n_units - 1);
    int r0, r1;
    UnitRows<EPI>(p, unit, &r0, &r1);
    rows[2 * u] = reinterpret_cast<const uint4*>(p.W + size_t(r0) * p.K);
    rows[2 * u + 1] = reinterpret_cast<const uint4*>(p.W + size_t(r1) * p.K);
  }

  // First batch of weights: depends on nothing the previous kernel writes, so it is issued before
  // the PDL wait and overlaps the previous kernel's tail.
  uint4 first[ROWS][R0];
#pragma unroll
  for (int u = 0; u < R0; ++u) {
    const int c = lane + 32 * u;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) first[r][u] = c < nch ? LdStream(rows[r] + c) : make_uint4(0, 0, 0, 0);
  }

  // The rest of the rows: bulk L2 prefetch (one instruction per row, by lanes 0..ROWS-1). With PDL
  // this starts streaming while the previous kernel still runs (its tail, or a latency-bound
  // attention), so HBM is not idle across the kernel boundary.
  if (p.l2_prefetch) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
      if (lane == r) PrefetchL2(rows[r], unsigned(p.K) * 2u);
  }

  PdlWait();
  PdlTrigger();

  // Epilogue operands that do not depend on the dot products, fetched now so that their latency hides
  // under the main loop instead of adding to the kernel's tail: the position and RoPE cos/sin (qkv),
  // the residual being added to (o_proj, down_proj).
  int pos = 0;
  float ep0[UPW], ep1[UPW];
#pragma unroll
  for (int u = 0; u < UPW; ++u) ep0[u] = ep1[u] = 0.f;
  if (lane == 0) {
    if (EPI == kEpiQkv) pos = __ldcg(p.pos);
#pragma unroll
    for (int u = 0; u < UPW; ++u) {
      const int unit = min(unit0 + u, p.n_units - 1);
      if (EPI == kEpiQkv) {
        QkvRopeCoeffs(p.qkv, unit, pos, &ep0[u], &ep1[u]);
      } else if (EPI == kEpiResid) {
        ep0[u] = __ldcg(p.out + 2 * unit);
        ep1[u] = 2 * unit + 1 < p.M ? __ldcg(p.out + 2 * unit + 1) : 0.f;
      }
    }
  }

  // Stage x (x * norm_w) into shared memory; sum of squares for the RMSNorm scale.
  float4* xlo = smem4;
  float4* xhi = smem4 + nch;
  const float4* x4 = reinterpret_cast<const float4*>(p.x);
  const float4* g4 = reinterpret_cast<const float4*>(p.norm_w);
  float ss = 0.f;
  for (int c = threadIdx.x; c < nch; c += WARPS * 32) {
    float4 a = __ldcg(x4 + 2 * c), b = __ldcg(x4 + 2 * c + 1);
    if (g4) {
      ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
      const float4 ga = __ldg(g4 + 2 * c), gb = __ldg(g4 + 2 * c + 1);
      a = make_float4(a.x * ga.x, a.y * ga.y, a.z * ga.z, a.w * ga.w);
      b = make_float4(b.x * gb.x, b.y * gb.y, b.z * gb.z, b.w * gb.w);
    }
    xlo[c] = a;
    xhi[c] = b;
  }
  float scale = 1.f;
  if (g4) {
    ss = WarpSum(ss);
    if (lane == 0) red[warp] = ss;
  }
  __syncthreads();
  if (g4) {
    float tot = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) tot += red[w];
    scale = 1.f / sqrtf(tot / p.K + p.eps);
  }

  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = 0.f;
  // The batch after the first is issued before the first is consumed; then the steady state: each
  // batch is issued before the previous one is used (register double buffering).
  uint4 buf[ROWS][UNROLL];
  const int base1 = 32 * R0;
  if (base1 < nch) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int c = base1 + lane + 32 * u;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) buf[r][u] = c < nch ? LdStream(rows[r] + c) : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int u = 0; u < R0; ++u) {
    const int c = lane + 32 * u;
    if (c < nch) {
      const float4 lo = xlo[c], hi = xhi[c];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) acc[r] = Dot8(first[r][u], lo, hi, acc[r]);
    }
  }
  for (int base = base1; base < nch; base += 32 * UNROLL) {
    uint4 cur[ROWS][UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u)
#pragma unroll
      for (int r = 0; r < ROWS; ++r) cur[r][u] = buf[r][u];
    const int next = base + 32 * UNROLL;
    if (next < nch) {
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) {
        const int c = next + lane + 32 * u;
#pragma unroll
        for (int r = 0; r < ROWS; ++r) buf[r][u] = c < nch ? LdStream(rows[r] + c) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int c = base + lane + 32 * u;
      if (c < nch) {
        const float4 lo = xlo[c], hi = xhi[c];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) acc[r] = Dot8(cur[r][u], lo, hi, acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = WarpSum(acc[r]) * scale;

  if (EPI == kEpiStore && (p.out_host || p.argmax)) {  // block-uniform
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
      const float y0 = acc[2 * u], y1 = acc[2 * u + 1];
      if (EPI == kEpiQkv) {
        QkvEpilogue(p.qkv, unit, y0, y1, 0, pos, ep0[u], ep1[u]);
      } else if (EPI == kEpiGateUp) {
        p.out[unit] = Silu(y0) * y1;
      } else {
        const int r0 = 2 * unit, r1 = 2 * unit + 1;
        if (EPI == kEpiResid) {
          p.out[r0] = ep0[u] + y0;
          if (r1 < p.M) p.out[r1] = ep1[u] + y1;
        } else {
          p.out[r0] = y0;
          if (r1 < p.M) p.out[r1] = y1;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Attention (decode and prefill): split-K flash-decoding with GQA and an in-kernel merge.
// ---------------------------------------------------------------------------------------------

struct AttnParams {
  const float* q;        // [B, n_heads*HD] rotated, pre-scaled by log2(e)/sqrt(HD)
  const __half* k_cache; // this layer's [max_ctx, kv_dim]
  const __half* v_cache;
  float* out;            // [B, n_heads*HD]
  float* part_acc;       // [B, n_kv, S, G, HD] unnormalized partial outputs
  float2* part_ml;       // [B, n_kv, S, G] (running max in log2 units, sum of weights)
  unsigned* counters;    // [B * n_kv], zero before the launch; the merging block resets its own
  const int* pos;        // position of token 0 of the batch; token t sees keys 0..pos+t
  int n_heads, n_kv;
  int min_chunk;         // fewest keys per split (a multiple of 8; 0 means 32)
  int skip_idle;         // 1: a warp stops a round at its first step past the split's keys (the engine's
                         // default; a 32-key split leaves 4 of a warp's 8 steps idle at HD 128, and their
                         // dot products and shuffles lengthened the chain: +1.2% decode tok/s at ctx 512)
};

constexpr int kAttnWarps = 4;
// Decode launches kAttnMaxSplits splits per kv head (blocks past the needed count exit at once).
// 32 keeps the in-kernel merge short (one round of loads) and still gives 256 blocks at context 2048.
constexpr int kAttnMaxSplits = 32;
// V2's merge loops over the splits (V1's gives each split a lane): the engine may launch up to this
// many (LAB_GPU_ATTN_SPLITS), so that long contexts still take one round of loads per block.
constexpr int kAttnMaxSplitsV2 = 64;

__device__ __forceinline__ void MergeState(float& m, float& l, float* acc, float mo, float lo, const float* acco) {
  const float mn = fmaxf(m, mo);
  const float ca = m == -INFINITY ? 0.f : exp2f(m - mn);
  const float cb = mo == -INFINITY ? 0.f : exp2f(mo - mn);
  l = l * ca + lo * cb;
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = acc[i] * ca + acco[i] * cb;
  m = mn;
}

// Contract:
//   grid = (n_kv, S <= kAttnMaxSplits (V2: kAttnMaxSplitsV2), B), WARPS*32 threads; HD in {64, 128};
//   G = n_heads/n_kv.
//   Keys 0..n_keys-1 (n_keys = *pos + t + 1) are cut into ceil(n_keys/chunk) splits of chunk =
//   max(mc, round_up(ceil(n_keys/S), mc)) keys (mc = min_chunk, 32 if 0); blocks with a higher split
//   index exit at once.
//   A key's HD halves are read by HD/8 lanes (16 bytes each), so a warp covers 32/(HD/8) keys per
//   step and keeps U steps of K and V loads in flight (U = 8 for G <= 4, else 4, for registers): a
//   block covers 64 keys (HD 128) per round of loads, so decode at context 2048 takes one round. Each lane keeps an online softmax (max m,
//   sum l, unnormalized output acc for its 8 dims) for each of the G query heads; lanes, then warps,
//   then splits are merged with the usual rescaling by exp2(m_i - m).
//   V2 (decode default, kernel lab attention v2; README "Decode tuning"): (a) the dependent kernel
//   (o_proj) may launch as soon as every block of this one has started (griddepcontrol.launch_dependents
//   at entry instead of after the wait), so its first weight batch streams while attention runs; its
//   own griddepcontrol.wait still waits for this grid to complete. (b) A leaner split merge: one
//   release (fence + counter increment, by thread 0 after a barrier) per block instead of a fence in
//   every thread, and the merging block loads each split's (max, sum) and partial output together,
//   16 splits per round trip, merging them online, where V1 waited for the (max, sum) loads and a
//   barrier before loading the partial outputs.
//   WARPS (default kAttnWarps = 4; the engine's LAB_GPU_ATTN_WARPS=2 for decode): fewer warps per block
//   cover fewer keys per round of loads (a 32-key decode split still takes one round with 2 warps at
//   HD 128) but hold half the registers, so more of the next kernel's blocks fit beside them.
//   UU (0: the U rule above; the engine's decode uses 4): steps in flight per round.
//   min_chunk (AttnParams; the engine's decode: 16, LAB_GPU_ATTN_MIN_CHUNK): the fewest keys a split
//   takes, and the unit a split's key count is rounded up to (32 before: at ~2,150 keys over 64 splits
//   that rounded 34 keys up to 64, two rounds of loads; 16 rounds it to 48).
template <int HD, int G, bool V2 = false, int WARPS = kAttnWarps, int UU = 0>
__global__ void __launch_bounds__(WARPS * 32) AttentionKernel(const AttnParams p) {
  if (V2) PdlTrigger();
  constexpr int LPK = HD / 8;    // lanes per key
  constexpr int KPW = 32 / LPK;  // keys per warp step
  constexpr int U = UU ? UU : G <= 4 ? 8 : 4;  // steps in flight
  __shared__ float sm_acc[WARPS][G][HD];
  __shared__ float sm_m[WARPS][G], sm_l[WARPS][G];
  __shared__ float sm_w[G][kAttnMaxSplits];
  __shared__ float sm_linv[G];
  __shared__ int sm_last;

  constexpr int STRIDE = WARPS * KPW * U;  // keys per block per round of loads
  const int kvh = blockIdx.x, s = blockIdx.y, t = blockIdx.z, S = gridDim.y;
  const int kv_dim = p.n_kv * HD, q_dim = p.n_heads * HD;
  // The position comes from a host copy made before this step's kernels, not from the kernel this one
  // waits for, so the key range is known before the PDL wait.
  const int pos0 = __ldcg(p.pos);
  const int n_keys = pos0 + t + 1;
  int chunk = (n_keys + S - 1) / S;
  const int mc = p.min_chunk > 0 ? p.min_chunk : 32;
  chunk = max(mc, (chunk + mc - 1) / mc * mc);
  const int n_splits = (n_keys + chunk - 1) / chunk;
  if (s >= n_splits) return;
  const int k_begin = s * chunk, k_end = min(n_keys, k_begin + chunk);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, grp = lane / LPK, sub = lane % LPK;
  const __half* kb = p.k_cache + kvh * HD + sub * 8;
  const __half* vb = p.v_cache + kvh * HD + sub * 8;

  // First round of K/V loads. Keys below pos0 were written by earlier launches, so they are loaded
  // before the PDL wait (the DRAM latency overlaps the qkv kernel's tail); keys from pos0 on were
  // written by the kernel this one waits for, and are loaded after it.
  int p0 = k_begin + warp * KPW;  // warp-uniform
  uint4 kr[U], vr[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int key = p0 + u * WARPS * KPW + grp;
    if (key < k_end && key < pos0) {
      kr[u] = __ldcg(reinterpret_cast<const uint4*>(kb + size_t(key) * kv_dim));
      vr[u] = __ldcg(reinterpret_cast<const uint4*>(vb + size_t(key) * kv_dim));
    } else {
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = make_uint4(0, 0, 0, 0);
    }
  }
  PdlWait();
  PdlTrigger();
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int key = p0 + u * WARPS * KPW + grp;
    if (key < k_end && key >= pos0) {
      kr[u] = __ldcg(reinterpret_cast<const uint4*>(kb + size_t(key) * kv_dim));
      vr[u] = __ldcg(reinterpret_cast<const uint4*>(vb + size_t(key) * kv_dim));
    }
  }

  float qv[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float4* q4 = reinterpret_cast<const float4*>(p.q + size_t(t) * q_dim + (kvh * G + g) * HD + sub * 8);
    const float4 a = __ldcg(q4), b = __ldcg(q4 + 1);
    qv[g][0] = a.x; qv[g][1] = a.y; qv[g][2] = a.z; qv[g][3] = a.w;
    qv[g][4] = b.x; qv[g][5] = b.y; qv[g][6] = b.z; qv[g][7] = b.w;
  }
  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }

  while (p0 < k_end) {  // warp-uniform: one round of U steps per iteration
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (p.skip_idle && p0 + u * WARPS * KPW >= k_end) break;  // warp-uniform: no key of this step or later
      const bool ok = p0 + u * WARPS * KPW + grp < k_end;
      float kf[8], vf[8];
      Unpack8(kr[u], kf);
      Unpack8(vr[u], vf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d = fmaf(qv[g][i], kf[i], d);
#pragma unroll
        for (int o = LPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        if (ok) {
          const float mn = fmaxf(m[g], d);
          const float corr = exp2f(m[g] - mn);  // m = -inf: exp2(-inf) = 0
          const float w = exp2f(d - mn);
          l[g] = l[g] * corr + w;
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(acc[g][i], corr, w * vf[i]);
          m[g] = mn;
        }
      }
    }
    p0 += STRIDE;
    if (p0 < k_end) {  // next round (all its keys are older than this launch or written before it)
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int key = p0 + u * WARPS * KPW + grp;
        if (key < k_end) {
          kr[u] = __ldcg(reinterpret_cast<const uint4*>(kb + size_t(key) * kv_dim));
          vr[u] = __ldcg(reinterpret_cast<const uint4*>(vb + size_t(key) * kv_dim));
        } else {
          kr[u] = make_uint4(0, 0, 0, 0);
          vr[u] = make_uint4(0, 0, 0, 0);
        }
      }
    }
  }

  // Merge the KPW key groups of the warp (lanes sub, sub+LPK, ...).
#pragma unroll
  for (int o = LPK; o < 32; o <<= 1) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[g], o);
      float ao[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) ao[i] = __shfl_xor_sync(0xffffffffu, acc[g][i], o);
      MergeState(m[g], l[g], acc[g], mo, lo, ao);
    }
  }
  if (grp == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int i = 0; i < 8; ++i) sm_acc[warp][g][sub * 8 + i] = acc[g][i];
      if (sub == 0) {
        sm_m[warp][g] = m[g];
        sm_l[warp][g] = l[g];
      }
    }
  }
  __syncthreads();

  // Merge the warps: block-level (m, l, acc) for each head and dim.
  const size_t slot = (size_t(t) * p.n_kv + kvh) * S + s;  // this block's partial
  for (int idx = threadIdx.x; idx < G * HD; idx += WARPS * 32) {
    const int g = idx / HD, d = idx % HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) M = fmaxf(M, sm_m[w][g]);
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      const float c = sm_m[w][g] == -INFINITY ? 0.f : exp2f(sm_m[w][g] - M);
      L += sm_l[w][g] * c;
      A += sm_acc[w][g][d] * c;
    }
    if (n_splits == 1) {
      p.out[size_t(t) * q_dim + (kvh * G + g) * HD + d] = A / L;
    } else {
      p.part_acc[(slot * G + g) * HD + d] = A;
      if (d == 0) p.part_ml[slot * G + g] = make_float2(M, L);
    }
  }
  if (n_splits == 1) return;

  unsigned* const counter = p.counters + size_t(t) * p.n_kv + kvh;
  const size_t slot0 = (size_t(t) * p.n_kv + kvh) * S;
  if (V2) {
    // Release: the barrier orders every thread's partial stores before thread 0's fence and increment
    // (the pattern of cooperative groups' grid sync); the last block acquires with its own fence.
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      sm_last = atomicAdd(counter, 1u) == unsigned(n_splits - 1);
    }
    __syncthreads();
    if (!sm_last) return;
    __threadfence();
    // Each thread merges 4 consecutive dims of one head over all splits: online rescaling, with the
    // (max, sum) pairs and the partial outputs of 16 splits loaded together per round trip.
    constexpr int kB = 16;
    for (int idx = threadIdx.x; idx < G * HD / 4; idx += WARPS * 32) {
      const int g = idx / (HD / 4), d4 = idx % (HD / 4);
      const float4* src = reinterpret_cast<const float4*>(p.part_acc + (slot0 * G + g) * HD) + d4;
      const size_t step = size_t(G) * HD / 4;  // float4s from one split to the next
      const float2* mls = p.part_ml + slot0 * G + g;
      float M = -INFINITY, L = 0.f;
      float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int i0 = 0; i0 < n_splits; i0 += kB) {
        float2 ml[kB];
        float4 v[kB];
#pragma unroll
        for (int j = 0; j < kB; ++j) {
          const int i = i0 + j;
          if (i < n_splits) {
            ml[j] = __ldcg(mls + size_t(i) * G);
            v[j] = __ldcg(src + i * step);
          } else {
            ml[j] = make_float2(-INFINITY, 0.f);
            v[j] = make_float4(0.f, 0.f, 0.f, 0.f);
          }
        }
        float Mb = M;
#pragma unroll
        for (int j = 0; j < kB; ++j) Mb = fmaxf(Mb, ml[j].x);
        const float c = M == -INFINITY ? 0.f : exp2f(M - Mb);
        L *= c;
        a = make_float4(a.x * c, a.y * c, a.z * c, a.w * c);
#pragma unroll
        for (int j = 0; j < kB; ++j) {
          const float w = ml[j].x == -INFINITY ? 0.f : exp2f(ml[j].x - Mb);
          L = fmaf(ml[j].y, w, L);
          a.x = fmaf(v[j].x, w, a.x);
          a.y = fmaf(v[j].y, w, a.y);
          a.z = fmaf(v[j].z, w, a.z);
          a.w = fmaf(v[j].w, w, a.w);
        }
        M = Mb;
      }
      const float li = 1.f / L;
      *reinterpret_cast<float4*>(p.out + size_t(t) * q_dim + (kvh * G + g) * HD + d4 * 4) =
          make_float4(a.x * li, a.y * li, a.z * li, a.w * li);
    }
    if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
    return;
  }

  // V1: the last block of this (token, kv head) to finish merges all splits.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) sm_last = atomicAdd(counter, 1u) == unsigned(n_splits - 1);
  __syncthreads();
  if (!sm_last) return;
  __threadfence();
  for (int g = warp; g < G; g += WARPS) {  // split weights: lane i handles split i (n_splits <= 32)
    const float2 ml = lane < n_splits ? __ldcg(&p.part_ml[(slot0 + lane) * G + g]) : make_float2(-INFINITY, 0.f);
    float M = ml.x;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    const float w = lane < n_splits ? exp2f(ml.x - M) : 0.f;  // every used split saw a key: finite m
    sm_w[g][lane] = w;
    const float L = WarpSum(ml.y * w);
    if (lane == 0) sm_linv[g] = 1.f / L;
  }
  __syncthreads();
  // Each thread merges 4 consecutive dims of one head: float4 loads, all splits' loads in flight.
  for (int idx = threadIdx.x; idx < G * HD / 4; idx += WARPS * 32) {
    const int g = idx / (HD / 4), d4 = idx % (HD / 4);
    const float4* src = reinterpret_cast<const float4*>(p.part_acc + (slot0 * G + g) * HD) + d4;
    const size_t step = size_t(G) * HD / 4;  // float4s from one split to the next
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16
    for (int i = 0; i < n_splits; ++i) {
      const float4 v = __ldcg(src + i * step);
      const float w = sm_w[g][i];
      a.x = fmaf(v.x, w, a.x);
      a.y = fmaf(v.y, w, a.y);
      a.z = fmaf(v.z, w, a.z);
      a.w = fmaf(v.w, w, a.w);
    }
    const float li = sm_linv[g];
    *reinterpret_cast<float4*>(p.out + size_t(t) * q_dim + (kvh * G + g) * HD + d4 * 4) =
        make_float4(a.x * li, a.y * li, a.z * li, a.w * li);
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
}

}  // namespace gpu
}  // namespace lab
