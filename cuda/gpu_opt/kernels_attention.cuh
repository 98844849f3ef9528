// Split-K flash-decoding attention (AttentionKernel) with GQA and the in-kernel merge; overview in
// kernels.cuh.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cooperative_groups.h>

#include <cstdint>

#include "cuda/gpu_opt/kernels_attention_merge.cuh"
#include "cuda/gpu_opt/kernels_common.cuh"

namespace lab {
namespace gpu {

// ---------------------------------------------------------------------------------------------
// Attention (decode and prefill): split-K flash-decoding with GQA and an in-kernel merge.
// ---------------------------------------------------------------------------------------------

constexpr int kAttnWarps = 4;
// Decode launches kAttnMaxSplits splits per kv head (blocks past the needed count exit at once).
// 32 keeps the in-kernel merge short (one round of loads) and still gives 256 blocks at context 2048.
constexpr int kAttnMaxSplits = 32;
// V2's merge loops over the splits (V1's gives each split a lane): the engine may launch up to this
// many (LAB_GPU_ATTN_SPLITS), so that long contexts still take one round of loads per block.
constexpr int kAttnMaxSplitsV2 = 64;
// V3 (LAB_GPU_DECODE_ATTN=v3, measured slower than V2: cuda/gpu_opt/README.md, "Attention in clusters"):
// the splits of a kv head merge in thread-block clusters of this many blocks.
constexpr int kAttnCluster = 8;

__device__ __forceinline__ void MergeState(float& m, float& l, float* acc, float mo, float lo, const float* acco) {
  const float mn = fmaxf(m, mo);
  const float ca = m == -INFINITY ? 0.f : exp2f(m - mn);
  const float cb = mo == -INFINITY ? 0.f : exp2f(mo - mn);
  l = l * ca + lo * cb;
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = acc[i] * ca + acco[i] * cb;
  m = mn;
}

// Four floats from shared memory, as a volatile load so that it stays where it is used: not hoisted out of a
// loop, where its registers would be live throughout.
__device__ __forceinline__ void LdsF4(const float* p, float* v) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3]) : "r"(a));
}

// One key's score for one query head: the lane's 8 dims of q . k, then summed over the LPK lanes that share
// the key (a butterfly, so every one of them holds the sum). Both softmax forms of AttentionKernel use it.
template <int LPK>
__device__ __forceinline__ float KeyScore(const float (&q)[8], const float (&k)[8]) {
  float d = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) d = fmaf(q[i], k[i], d);
#pragma unroll
  for (int o = LPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
  return d;
}

// V3's merge (AttentionKernel's CL > 0), called by every thread of a block of a working cluster with
// the block's own (acc, (m, l)) in shared memory. Slice r = [r * PER, (r + 1) * PER) of the G*HD outputs
// is block rank r's to merge.
template <int HD, int G, int WARPS, int CL>
__device__ void ClusterMerge(const AttnParams& p, float* cl_acc, float2* cl_ml, int t, int kvh, int s, int n_splits,
                             int q_dim) {
  namespace cg = cooperative_groups;
  constexpr int PER = G * HD / CL;
  static_assert(G * HD % CL == 0, "slices of equal size");
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every member's state is in its shared memory
  const int rank = int(cluster.block_rank());
  const int c0 = s - rank;  // this cluster's first split
  const int n_cl = (n_splits + CL - 1) / CL, cl_idx = c0 / CL;
  // Every member's state is read, idle members' too (their m = -inf, l = 0, acc = 0 add nothing), in
  // one unrolled batch of 2 * CL remote loads per output. A remote load crosses the SM-to-SM network,
  // far slower than one from the block's own shared memory. The first cut looped to `members` (known
  // only at run time) in two passes, max then sums, so its loads went out in small groups: attention
  // took about 1.5 us a layer more on the H100's step trace (README "Attention in clusters").
  float2 ml[CL];
  float a[CL];
  // Cluster partials: slot (token, head, cluster) of the [B, n_kv, S / CL] slots, acc [G*HD] each and
  // (m, l) per rank [CL][G]: within the [B, n_kv, S, G, HD] and [B, n_kv, S, G] buffers of V1/V2.
  const size_t cslot0 = (size_t(t) * p.n_kv + kvh) * (gridDim.y / CL);
  for (int i = threadIdx.x; i < PER; i += WARPS * 32) {
    const int idx = rank * PER + i, g = idx / HD, d = idx % HD;
#pragma unroll
    for (int j = 0; j < CL; ++j) {
      ml[j] = cluster.map_shared_rank(cl_ml, j)[g];
      a[j] = cluster.map_shared_rank(cl_acc, j)[idx];
    }
    float M = -INFINITY;
#pragma unroll
    for (int j = 0; j < CL; ++j) M = fmaxf(M, ml[j].x);
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int j = 0; j < CL; ++j) {
      const float c = ml[j].x == -INFINITY ? 0.f : exp2f(ml[j].x - M);
      L += ml[j].y * c;
      A += a[j] * c;
    }
    if (n_cl == 1) {
      StoreOut(p, size_t(t) * q_dim + kvh * G * HD + idx, A / L);
    } else {  // this cluster's partial of the slice; (m, l) written once per (rank, head) it touches
      const size_t slot = cslot0 + cl_idx;
      p.part_acc[slot * G * HD + idx] = A;
      if (i == 0 || d == 0) p.part_ml[(slot * CL + rank) * G + g] = make_float2(M, L);
    }
  }
  cluster.sync();  // no member leaves (and frees its shared memory) while others still read it
  if (n_cl == 1) return;

  // The last cluster to finish this slice merges it over the clusters (V2's release / acquire), its
  // loads batched as above (at most kMaxCl clusters: S <= kAttnMaxSplitsV2).
  constexpr int kMaxCl = kAttnMaxSplitsV2 / CL;
  unsigned* const counter = p.counters + (size_t(t) * p.n_kv + kvh) * CL + rank;
  if (!LastToArrive(counter, unsigned(n_cl), p.sync_acqrel)) return;
  for (int i = threadIdx.x; i < PER; i += WARPS * 32) {
    const int idx = rank * PER + i, g = idx / HD;
    float2 cm[kMaxCl];
    float ca[kMaxCl];
#pragma unroll
    for (int c = 0; c < kMaxCl; ++c) {
      cm[c] = c < n_cl ? __ldcg(p.part_ml + ((cslot0 + c) * CL + rank) * G + g) : make_float2(-INFINITY, 0.f);
      ca[c] = c < n_cl ? __ldcg(p.part_acc + (cslot0 + c) * G * HD + idx) : 0.f;
    }
    float M = -INFINITY, L = 0.f, A = 0.f;
#pragma unroll
    for (int c = 0; c < kMaxCl; ++c) M = fmaxf(M, cm[c].x);
#pragma unroll
    for (int c = 0; c < kMaxCl; ++c) {
      const float w = cm[c].x == -INFINITY ? 0.f : exp2f(cm[c].x - M);
      L = fmaf(cm[c].y, w, L);
      A = fmaf(ca[c], w, A);
    }
    StoreOut(p, size_t(t) * q_dim + kvh * G * HD + idx, A / L);
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
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
//   WARPS (default kAttnWarps = 4; the engine's LAB_GPU_ATTN_WARPS=2|8 for decode): fewer warps per block
//   cover fewer keys per round of loads (a 32-key decode split still takes one round with 2 warps at
//   HD 128) but hold half the registers, so more of the next kernel's blocks fit beside them. 8 warps
//   cover 64 keys per round at HD 128 with U = 4: with 64-key splits a kv head at context 512 is 8
//   splits, whose merge is one round of loads. Compiled for 2 blocks per SM (at most 128 registers a
//   thread; 148 without the bound, so one 256-thread block per SM and two waves at 264 blocks).
//   UU (0: the U rule above; the engine's decode uses 4): steps in flight per round.
//   RS (the engine's decode default since c0f724a, LAB_GPU_ATTN_SOFTMAX=round; V2 with 4 or 8 warps and
//   4 steps): the online softmax once per round of loads, branch-free: all U steps of a round computed
//   (keys past the split masked to -inf; skip_idle unused), the U x G scores first, then one max and one
//   rescale per head. The per-step form (RS false) compiled to 16 serial (step, head) chains, each inside
//   a divergent branch; a round took ~2.4 us at 8 keys a warp on the H200 (README "Attention's compute,
//   branch-free"). Numerically the same softmax, the fp32 rounding of another order.
//   min_chunk (AttnParams; the engine's decode: 16, LAB_GPU_ATTN_MIN_CHUNK): the fewest keys a split
//   takes, and the unit a split's key count is rounded up to (32 before: at ~2,150 keys over 64 splits
//   that rounded 34 keys up to 64, two rounds of loads; 16 rounds it to 48).
//   MINB (0: 2 blocks per SM with 8 warps, else 1): the blocks per SM the kernel is compiled for
//   (__launch_bounds__). 8 warps at 2 cap a thread at 128 registers, where the RS form with q in registers
//   spills (163 registers unbounded); MINB = 1 (the engine's LAB_GPU_ATTN_SHORT_BLOCKS=1, 8 warps with RS
//   only) lifts the cap: one block per SM, half the splits in one wave, and the next kernel's blocks no
//   longer fit beside it (README "Attention's registers").
//   QS (RS only; the engine's short layout for G >= 4 by default, LAB_GPU_ATTN_Q): q staged in shared memory
//   and read back at every score (two 16-byte loads a key and head), not 8*G registers held through the
//   loop: at G 4 the 8-warp kernel fits 128 registers without spills (128 B stored, 88 B loaded a thread
//   without it), still 2 blocks per SM; the same arithmetic, bitwise (README "Attention's registers").
//   CL (0, or 8: V3, LAB_GPU_DECODE_ATTN=v3, a measured failure kept as a lab version): launched in
//   thread-block clusters of CL consecutive splits of one kv head (cluster dims (1, CL, 1); S a
//   multiple of CL). Each block leaves its (m, l, acc) in its own shared memory; after a cluster
//   barrier, block rank r merges slice r of the G*HD outputs over the cluster's blocks through
//   distributed shared memory (DSMEM), with no global partials, fence or counter. If the head's splits
//   fit one cluster (n_splits <= CL) that is the output; otherwise each cluster's merged slice is a
//   global partial, and the last cluster to finish a slice (a counter per kv head and rank) merges
//   that slice over the clusters as V2 does over splits. Idle blocks of a working cluster take part
//   with an empty state (m = -inf, l = 0); whole idle clusters exit at once.
template <int HD, int G, bool V2 = false, int WARPS = kAttnWarps, int UU = 0, int CL = 0, bool RS = false, int MINB = 0,
          bool QS = false>
__global__ void __launch_bounds__(WARPS * 32, MINB ? MINB : WARPS >= 8 ? 2 : 1) AttentionKernel(const AttnParams p) {
  static_assert(CL == 0 || V2, "the cluster merge builds on V2's entry trigger");
  static_assert(!QS || RS, "q staged in shared memory serves the round softmax");
  TraceMarks trace(p.trace);
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
  const DecodeSplit sp = SplitKeys(p, t, S);  // known before the PDL wait
  const int pos0 = sp.pos0, chunk = sp.chunk, n_splits = sp.n_splits, n_keys = sp.n_keys;
  constexpr int kCl = CL > 0 ? CL : 1;
  if (s / kCl * kCl >= n_splits) return;  // CL = 0: an idle split; CL > 0: a whole idle cluster (none of its blocks syncs)
  const bool idle = s >= n_splits;                 // CL > 0: an idle member of a working cluster
  const int k_begin = idle ? 0 : s * chunk, k_end = idle ? 0 : min(n_keys, k_begin + chunk);
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
  trace.Released();
  PdlTrigger();
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int key = p0 + u * WARPS * KPW + grp;
    if (key < k_end && key >= pos0) {
      kr[u] = __ldcg(reinterpret_cast<const uint4*>(kb + size_t(key) * kv_dim));
      vr[u] = __ldcg(reinterpret_cast<const uint4*>(vb + size_t(key) * kv_dim));
    }
  }

  // QS: q staged in shared memory as [g][h][sub][4] (dims sub*8 + h*4 + c, so the LPK lanes of a key read 16
  // contiguous 16-byte chunks) and read back at every score, so that it does not hold 8*G registers through
  // the loop (the barrier after it waits for q, which every warp waits for anyway).
  __shared__ __align__(16) float sm_q[QS ? G * HD : 4];
  if constexpr (QS) {
    for (int i = threadIdx.x; i < G * HD / 4; i += WARPS * 32) {
      const int g = i / (HD / 4), d4 = i % (HD / 4);
      const float4 v = __ldcg(reinterpret_cast<const float4*>(p.q + size_t(t) * q_dim + (kvh * G + g) * HD) + d4);
      *reinterpret_cast<float4*>(sm_q + ((g * 2 + d4 % 2) * LPK + d4 / 2) * 4) = v;
    }
    __syncthreads();
  }
  float qv[QS ? 1 : G][8];
#pragma unroll
  for (int g = 0; g < (QS ? 0 : G); ++g) {
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
    if constexpr (RS) {
      // Branch-free (README "Attention's compute, branch-free"): the round's U x G scores first, every step
      // of the round computed and the keys past the split masked to -inf (no per-step skip, no per-lane
      // branch), so that the compiler can interleave the 16 dot products and their shuffle chains; then one
      // online-softmax update per head (one max, one rescale) and the weighted V sums.
      float sc[U][G];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const bool ok = p0 + u * WARPS * KPW + grp < k_end;
        float kf[8];
        Unpack8(kr[u], kf);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float qg[8];
          if constexpr (QS) {
            LdsF4(sm_q + ((g * 2 + 0) * LPK + sub) * 4, qg);
            LdsF4(sm_q + ((g * 2 + 1) * LPK + sub) * 4, qg + 4);
          } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) qg[i] = qv[g][i];
          }
          const float d = KeyScore<LPK>(qg, kf);
          sc[u][g] = ok ? d : -INFINITY;
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float mx = m[g];
#pragma unroll
        for (int u = 0; u < U; ++u) mx = fmaxf(mx, sc[u][g]);
        // mx = -inf: no key of this lane's group yet; base 0 makes every factor below exp2(-inf) = 0, and
        // l and acc, still 0, stay 0.
        const float base = mx == -INFINITY ? 0.f : mx;
        const float corr = exp2f(m[g] - base);
        float lw = l[g] * corr;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          sc[u][g] = exp2f(sc[u][g] - base);  // the key's weight; a masked key: 0
          lw += sc[u][g];
        }
        l[g] = lw;
        m[g] = mx;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] *= corr;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float vf[8];
        Unpack8(vr[u], vf);
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(sc[u][g], vf[i], acc[g][i]);
      }
    } else {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (p.skip_idle && p0 + u * WARPS * KPW >= k_end) break;  // warp-uniform: no key of this step or later
        const bool ok = p0 + u * WARPS * KPW + grp < k_end;
        float kf[8], vf[8];
        Unpack8(kr[u], kf);
        Unpack8(vr[u], vf);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float d = KeyScore<LPK>(qv[g], kf);
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
  __shared__ float cl_acc[CL ? G * HD : 1];
  __shared__ float2 cl_ml[CL ? G : 1];
  for (int idx = threadIdx.x; idx < G * HD; idx += WARPS * 32) {
    const int g = idx / HD, d = idx % HD;
    float M, L, A;
    MergeWarps<WARPS>(&sm_m[0][g], &sm_l[0][g], &sm_acc[0][g][d], G, G * HD, M, L, A);
    if (CL > 0) {
      cl_acc[idx] = A;
      if (d == 0) cl_ml[g] = make_float2(M, L);
    } else if (n_splits == 1) {
      StoreOut(p, size_t(t) * q_dim + (kvh * G + g) * HD + d, A / L);
    } else {
      p.part_acc[(slot * G + g) * HD + d] = A;
      if (d == 0) p.part_ml[slot * G + g] = make_float2(M, L);
    }
  }
  trace.Staged();  // this split's state is written (its partial or the output; v3: in its shared memory)
  if constexpr (CL > 0) {
    ClusterMerge<HD, G, WARPS, CL>(p, cl_acc, cl_ml, t, kvh, s, n_splits, q_dim);
    return;
  }
  if (n_splits == 1) return;

  unsigned* const counter = p.counters + size_t(t) * p.n_kv + kvh;
  const size_t slot0 = (size_t(t) * p.n_kv + kvh) * S;
  if (V2) {
    MergeSplitsV2<HD, G, WARPS>(p, counter, slot0, n_splits, t, kvh, q_dim);
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
    StoreOut4(p, size_t(t) * q_dim + (kvh * G + g) * HD + d4 * 4, make_float4(a.x * li, a.y * li, a.z * li, a.w * li));
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
}

}  // namespace gpu
}  // namespace lab
