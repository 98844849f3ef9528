// Split-K attention's shared pieces: its parameters, the split rule, and the merges of the splits' partial
// states (in-block, across blocks by a counter, across a thread-block cluster, and by a consumer kernel).
// Used by AttentionKernel (kernels_attention.cuh) and OHeadKernel (kernels_oproj.cuh).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cooperative_groups.h>

#include <cstdint>

#include "cuda/gpu_opt/kernels_common.cuh"

namespace lab {
namespace gpu {

// ---------------------------------------------------------------------------------------------
// Attention (decode and prefill): split-K flash-decoding with GQA and an in-kernel merge.
// ---------------------------------------------------------------------------------------------

struct AttnParams {
  const float* q;        // [B, n_heads*HD] rotated, pre-scaled by log2(e)/sqrt(HD)
  const __half* k_cache; // this layer's [max_ctx, kv_dim]
  const __half* v_cache;
  float* out;            // [B, n_heads*HD]
  __half* out16;         // or nullptr: the output in fp16 here instead (LAB_GPU_ACT16: o_proj's x16)
  float* part_acc;       // [B, n_kv, S, G, HD] unnormalized partial outputs
  float2* part_ml;       // [B, n_kv, S, G] (running max in log2 units, sum of weights)
  unsigned* counters;    // [B * n_kv], zero before the launch; the merging block resets its own
  const int* pos;        // position of token 0 of the batch; token t sees keys 0..pos+t
  int n_heads, n_kv;
  int min_chunk;         // fewest keys per split (a multiple of 8; 0 means 32)
  int skip_idle;         // per-step softmax only (RS false): 1, a warp stops a round at its first step past
                         // the split's keys (the engine's default there; a 32-key split leaves 4 of a warp's
                         // 8 steps idle at HD 128: +1.2% decode tok/s at ctx 512); the round softmax always
                         // computes every step and masks the idle ones
  unsigned long long* trace;  // nullptr, or this launch's three TraceMarks slots (LAB_GPU_TRACE)
  int sync_acqrel;       // V2/V3's split merge (LastToArrive): 1 (the engine's default), one atom.add.acq_rel.gpu
                         // by thread 0 and no fence; 0 (LAB_GPU_ATTN_SYNC=fence, as before), the block's
                         // release and the last block's acquire as full fences (__threadfence) around a
                         // relaxed atomicAdd
  int publish;           // V2 only (LAB_GPU_O_HEAD): every working split writes its partial (one split too) and
                         // releases it with its counter increment; no block merges. The consumer (OHeadKernel)
                         // merges each kv head's splits and resets the counter.
  unsigned* head_ready;  // V2, or nullptr (LAB_GPU_O_HEAD=rows): [n_kv], raised (a release) by the block that
                         // writes a head's output (its only split, or the merging block); ORowsKernel resets it
};

// head_ready's raise: every thread's stores of the block before thread 0's release (through the barrier).
__device__ __forceinline__ void RaiseFlag(unsigned* flag) {
  __syncthreads();
  if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(flag) : "memory");
}

// Keys per split for n_keys keys over at most S splits, at least mc (0: 32) and a multiple of it: the one
// rule AttentionKernel and OHeadKernel (which counts the splits it waits for) share.
__host__ __device__ inline int AttnChunk(int n_keys, int S, int mc) {
  mc = mc > 0 ? mc : 32;
  const int chunk = (n_keys + S - 1) / S;
  return max(mc, (chunk + mc - 1) / mc * mc);
}

// V2's merge of one kv head's n_splits partials for 4 consecutive dims (d4) of query head g of its group:
// online rescaling, the (max, sum) pairs and partial outputs of kB splits loaded together per round trip
// (16: attention's; OHeadKernel's 8 leave room for the weights it holds in registers meanwhile).
// Returns the normalized output. slot0: the head's first split slot ((t * n_kv + kvh) * S).
template <int G, int HD, int kB = 16>
__device__ __forceinline__ float4 MergeSplits4(const float* part_acc, const float2* part_ml, size_t slot0, int g,
                                               int d4, int n_splits) {
  const float4* src = reinterpret_cast<const float4*>(part_acc + (slot0 * G + g) * HD) + d4;
  const size_t step = size_t(G) * HD / 4;  // float4s from one split to the next
  const float2* mls = part_ml + slot0 * G + g;
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
  return make_float4(a.x * li, a.y * li, a.z * li, a.w * li);
}

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

// The attention output: element i, or elements i..i+3 (i % 4 == 0), in fp32 or (p.out16) fp16.
__device__ __forceinline__ void StoreOut(const AttnParams& p, size_t i, float v) {
  if (p.out16)
    p.out16[i] = __float2half_rn(v);
  else
    p.out[i] = v;
}
__device__ __forceinline__ void StoreOut4(const AttnParams& p, size_t i, float4 v) {
  if (p.out16) {
    __half2* o = reinterpret_cast<__half2*>(p.out16 + i);
    o[0] = __floats2half2_rn(v.x, v.y);
    o[1] = __floats2half2_rn(v.z, v.w);
  } else {
    *reinterpret_cast<float4*>(p.out + i) = v;
  }
}

__device__ __forceinline__ void MergeState(float& m, float& l, float* acc, float mo, float lo, const float* acco) {
  const float mn = fmaxf(m, mo);
  const float ca = m == -INFINITY ? 0.f : exp2f(m - mn);
  const float cb = mo == -INFINITY ? 0.f : exp2f(mo - mn);
  l = l * ca + lo * cb;
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = acc[i] * ca + acco[i] * cb;
  m = mn;
}

// V2's and V3's release / acquire across the blocks that share *counter: true in the block that arrives
// last of n, which then sees every arriving block's stores made before its call. Called by every thread
// of the block. The barrier orders the block's stores before thread 0's increment (the pattern of
// cooperative groups' grid sync and of CUTLASS's semaphores); acqrel = 0 releases and acquires with full
// fences (__threadfence: fence.sc.gpu) around a relaxed increment, acqrel = 1 with the increment itself
// (atom.add.acq_rel.gpu: release and acquire at gpu scope), thread 0's acquire reaching the block's other
// threads through the second barrier (PTX memory model: causality order is transitive through bar.sync).
// It does not reset the counter: the last block does, after its merge.
__device__ __forceinline__ unsigned AtomicAddAcqRelGpu(unsigned* p, unsigned v) {
  unsigned old;
  asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}
__device__ __forceinline__ bool LastToArrive(unsigned* counter, unsigned n, int acqrel) {
  __shared__ int last;
  __syncthreads();
  if (threadIdx.x == 0) {
    if (acqrel) {
      last = AtomicAddAcqRelGpu(counter, 1u) == n - 1;
    } else {
      __threadfence();
      last = atomicAdd(counter, 1u) == n - 1;
    }
  }
  __syncthreads();
  if (!last) return false;
  if (!acqrel) __threadfence();
  return true;
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

}  // namespace gpu
}  // namespace lab
