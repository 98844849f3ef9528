// Decode attention on the tensor cores (AttentionMmaKernel, kernel version v4): the short-context layout's kernel in
// the engine's spread steps (LAB_GPU_ATTN_MMA=auto, the default since session 27; 1, 4 or 8 in every short step)
// instead of AttentionKernel's 8-warp one. Overview in kernels.cuh.
//
// Why: at short contexts a block of the short layout holds its split's 64 keys in registers before the PDL
// wait, so what follows the wait is a chain of arithmetic and shuffles: per key and query head 8 FMAs and a
// 4-level butterfly across the 16 lanes that share the key, then a warp merge of 10 shuffles a head. The step
// trace put release-to-partial at 3.3 us a launch at context 512 (cuda/gpu_opt/README.md, "Session 26"), about
// 0.8 of it q's load. With GQA the query heads of a kv head are a small matrix (G x HD), so q K^T and P V are
// matrix products: one warp's mma.sync does a 16-key slice of both with no shuffle for the dot products (the
// tensor core sums over the head dimension), FlashInfer's choice for grouped decode.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/gpu_opt/kernels_attention_merge.cuh"
#include "cuda/gpu_opt/kernels_common.cuh"

namespace lab {
namespace gpu {

// d += A B for one m16n8k16 tile: A 16 x 16 fp16 (row-major fragments a0..a3), B 16 x 8 fp16 (b0, b1), d 16 x 8
// fp32 (PTX ISA, "mma.sync m16n8k16"; lane = 4 g + q holds a0 = A[g][2q, 2q+1], a1 = A[g+8][..], a2 = A[g][2q+8,
// 2q+9], a3 = A[g+8][..]; b0 = B[2q, 2q+1][g], b1 = B[2q+8, 2q+9][g]; d = D[g][2q, 2q+1], D[g+8][2q, 2q+1]).
__device__ __forceinline__ void Mma16816(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                         unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ unsigned Word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
__device__ __forceinline__ unsigned PackHalf2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
}

// One warp's 16-key window [w0, w0 + 16) in the fragment order below: K rows w0 + 8 j + g (j = 0, 1), the lane's
// dims [q HD/4, (q+1) HD/4); V rows w0 + 2q + (e & 1) + 8 (e >> 1) (e = 0..3), dims [g HD/8, (g+1) HD/8). Only the
// keys in [lo, hi) are loaded; with zero set, the others become 0 (V must be, so that masked keys add 0 x 0).
template <int HD>
__device__ __forceinline__ void MmaLoadKV(uint4 (&kr)[2][HD / 32], uint4 (&vr)[4][HD / 64], const __half* kb,
                                          const __half* vb, int kv_dim, int w0, int g, int q, int lo, int hi,
                                          bool zero) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int key = w0 + 8 * j + g;
    const bool in = key >= lo && key < hi;
#pragma unroll
    for (int c = 0; c < HD / 32; ++c)
      if (in)
        kr[j][c] = __ldcg(reinterpret_cast<const uint4*>(kb + size_t(key) * kv_dim) + c);
      else if (zero)
        kr[j][c] = make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int key = w0 + 2 * q + (e & 1) + 8 * (e >> 1);
    const bool in = key >= lo && key < hi;
#pragma unroll
    for (int c = 0; c < HD / 64; ++c)
      if (in)
        vr[e][c] = __ldcg(reinterpret_cast<const uint4*>(vb + size_t(key) * kv_dim) + c);
      else if (zero)
        vr[e][c] = make_uint4(0, 0, 0, 0);
  }
}

// Contract:
//   grid = (n_kv, S <= kAttnMaxSplitsV2, B), WARPS * 32 threads; HD in {64, 128}; G = n_heads / n_kv <= 8; compute
//   capability 8.0 or newer (mma.sync). The splits, AttnParams, the partials and their merge are AttentionKernel
//   V2's (MergeSplitsV2; p.min_chunk a multiple of 16 keeps a round's windows inside a split, but any works:
//   keys past the split are masked).
//   A warp takes 16 keys a round (a block WARPS x 16), all of them loaded before the PDL wait where they are older
//   than this step; the next round's loads go out after a round's math, as AttentionKernel's do.
//   Scores S = q K^T: A = q (rows: the G query heads, rows G..15 zero), B = K^T, one m16n8k16 per 16 dims and 8
//   keys. The head dimension's order inside the product is the lanes' (lane q's k slots 2q, 2q+1, 2q+8, 2q+9 of
//   k-step ks are dims q HD/4 + 4 ks + 0..3), the same for A and B, so every B fragment is two words of the
//   lane's own 16-byte K loads and q needs no shuffle.
//   Softmax: S's fragment gives lane (g, q) head g's scores of keys 2q, 2q+1 of each 8; the online max over the
//   round is 2 shuffles across the quad (fp32, log2 units, keys past the split -inf), the weights P = exp2(S - m)
//   rounded to fp16, and l sums the rounded weights, so numerator and denominator agree.
//   O += P V: A = P straight from S's fragment (FlashAttention-2's register reuse), B = V, whose pairs of keys a
//   fragment needs (V is stored key-major) come from two keys' loads by one byte permute each; n-tile nt's column
//   g is dim g HD/8 + nt, so lane (g, q) accumulates head g's dims 2q HD/8 + nt and (2q+1) HD/8 + nt.
//   Then the warps' states merge through shared memory (rows padded by one float per 32, so that the quad's
//   stores fall in different banks) into the block's partial, and the splits merge as V2's.
// Numerics: q and the weights P in fp16 (round-off 2^-11 relative each), accumulation in fp32; AttentionKernel
// keeps q and P in fp32, so the two differ by that rounding, not by the merge order alone (tolerances.py).
// New against AttentionKernel (v2, its 8-warp short layout): the dot products and the sums over keys on the tensor
// cores, no butterfly per key and head, no shuffle merge of key groups; 4 warps of 16 keys instead of 8 of 8.
// Measured (H200, session 27, cuda/gpu_opt/README.md "Session 27"): release to partial 3.49 -> 2.86 us a launch at
// context 512, attention 197.5 -> 180.4 us a step; +0.55% decode tok/s at 512 with the tiles pinned, the same at 2048.
// 8 warps over 128-key splits (half the partials) became resident late (198 registers a thread) and gained nothing.
template <int HD, int G, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) AttentionMmaKernel(const AttnParams p) {
  static_assert(HD == 64 || HD == 128, "head_dim 64 or 128");
  static_assert(G >= 1 && G <= 8, "the query heads are rows 0..7 of the mma's A");
  constexpr int KW = 16;          // keys a warp takes a round
  constexpr int KS = HD / 16;     // q K^T's k-steps
  constexpr int NT = HD / 8;      // P V's n-tiles
  constexpr int RS = HD + HD / 32;  // a padded row of sm_acc
  TraceMarks trace(p.trace);
  PdlTrigger();  // V2's entry trigger: o_proj's blocks may launch while this grid runs
  __shared__ float sm_acc[WARPS][G][RS];
  __shared__ float sm_m[WARPS][G], sm_l[WARPS][G];

  const int kvh = blockIdx.x, s = blockIdx.y, t = blockIdx.z, S = gridDim.y;
  const int kv_dim = p.n_kv * HD, q_dim = p.n_heads * HD;
  const DecodeSplit sp = SplitKeys(p, t, S);
  const int pos0 = sp.pos0, chunk = sp.chunk, n_splits = sp.n_splits, n_keys = sp.n_keys;
  if (s >= n_splits) return;  // an idle split
  const int k_begin = s * chunk, k_end = min(n_keys, k_begin + chunk);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, qd = lane & 3;
  const __half* kb = p.k_cache + kvh * HD + qd * (HD / 4);
  const __half* vb = p.v_cache + kvh * HD + g * (HD / 8);

  int w0 = k_begin + warp * KW;  // warp-uniform
  uint4 kr[2][HD / 32], vr[4][HD / 64];
  MmaLoadKV<HD>(kr, vr, kb, vb, kv_dim, w0, g, qd, 0, min(pos0, k_end), true);  // older keys: before the wait
  PdlWait();
  trace.Released();
  MmaLoadKV<HD>(kr, vr, kb, vb, kv_dim, w0, g, qd, pos0, k_end, false);  // this step's key(s)

  // q's A fragments: head g's dims qd HD/4 + 4 ks + 0..3, in fp16 (rows past the group stay zero).
  unsigned qa[KS][2];
  {
    const float4* q4 = reinterpret_cast<const float4*>(p.q + size_t(t) * q_dim + (kvh * G + min(g, G - 1)) * HD +
                                                       qd * (HD / 4));
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const float4 v = g < G ? __ldcg(q4 + ks) : make_float4(0.f, 0.f, 0.f, 0.f);
      qa[ks][0] = PackHalf2(v.x, v.y);
      qa[ks][1] = PackHalf2(v.z, v.w);
    }
  }

  float m = -INFINITY, l = 0.f, acc[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = 0.f;
  while (w0 < k_end) {  // warp-uniform: one 16-key window per iteration
    float sc[2][2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
        Mma16816(d, qa[ks][0], 0u, qa[ks][1], 0u, Word(kr[j][ks / 2], 2 * (ks % 2)), Word(kr[j][ks / 2], 2 * (ks % 2) + 1));
#pragma unroll
      for (int e = 0; e < 2; ++e) sc[j][e] = w0 + 8 * j + 2 * qd + e < k_end ? d[e] : -INFINITY;
    }
    float mx = fmaxf(fmaxf(sc[0][0], sc[0][1]), fmaxf(sc[1][0], sc[1][1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    mx = fmaxf(m, mx);  // finite: key w0 is inside the split, and the quad shares it
    const float corr = exp2f(m - mx);  // m = -inf: 0
    const unsigned pa0 = PackHalf2(exp2f(sc[0][0] - mx), exp2f(sc[0][1] - mx));
    const unsigned pa2 = PackHalf2(exp2f(sc[1][0] - mx), exp2f(sc[1][1] - mx));
    const float2 f0 = __half22float2(*reinterpret_cast<const __half2*>(&pa0));
    const float2 f2 = __half22float2(*reinterpret_cast<const __half2*>(&pa2));
    l = fmaf(l, corr, (f0.x + f0.y) + (f2.x + f2.y));
    m = mx;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int c = nt / 8, wd = (nt % 8) / 2;
      const unsigned sel = nt % 2 ? 0x7632u : 0x5410u;  // the high or the low halves of the two keys' words
      const unsigned b0 = __byte_perm(Word(vr[0][c], wd), Word(vr[1][c], wd), sel);
      const unsigned b1 = __byte_perm(Word(vr[2][c], wd), Word(vr[3][c], wd), sel);
      float d[4] = {acc[nt][0] * corr, acc[nt][1] * corr, 0.f, 0.f};
      Mma16816(d, pa0, 0u, pa2, 0u, b0, b1);
      acc[nt][0] = d[0];
      acc[nt][1] = d[1];
    }
    w0 += WARPS * KW;
    if (w0 < k_end) MmaLoadKV<HD>(kr, vr, kb, vb, kv_dim, w0, g, qd, 0, k_end, true);
  }
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);

  // The warps' states (a warp without keys: m = -inf, l = 0, acc = 0) into shared memory, then the block's.
  auto pad = [](int d) { return d + d / 32; };
  if (g < G) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      sm_acc[warp][g][pad(2 * qd * (HD / 8) + nt)] = acc[nt][0];
      sm_acc[warp][g][pad((2 * qd + 1) * (HD / 8) + nt)] = acc[nt][1];
    }
    if (qd == 0) {
      sm_m[warp][g] = m;
      sm_l[warp][g] = l;
    }
  }
  __syncthreads();
  const size_t slot0 = (size_t(t) * p.n_kv + kvh) * S, slot = slot0 + s;
  for (int idx = threadIdx.x; idx < G * HD; idx += WARPS * 32) {
    const int hg = idx / HD, d = idx % HD;
    float M, L, A;
    MergeWarps<WARPS>(&sm_m[0][hg], &sm_l[0][hg], &sm_acc[0][hg][pad(d)], G, G * RS, M, L, A);
    if (n_splits == 1) {
      StoreOut(p, size_t(t) * q_dim + (kvh * G + hg) * HD + d, A / L);
    } else {
      p.part_acc[(slot * G + hg) * HD + d] = A;
      if (d == 0) p.part_ml[slot * G + hg] = make_float2(M, L);
    }
  }
  trace.Staged();  // this split's partial (or the output) is written
  if (n_splits == 1) return;
  MergeSplitsV2<HD, G, WARPS>(p, p.counters + size_t(t) * p.n_kv + kvh, slot0, n_splits, t, kvh, q_dim);
}

}  // namespace gpu
}  // namespace lab
