// What the decode attention kernels share (AttentionKernel in kernels_attention.cuh, AttentionMmaKernel in
// kernels_attention_mma.cuh): their parameters, the output store, and the split merge through global memory
// (V2's: the last block of a kv head to arrive merges every split's partial).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lab {
namespace gpu {

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
};

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

// The key splits of token t's step: keys 0..n_keys-1 (n_keys = *pos + t + 1) in n_splits splits of chunk keys,
// chunk = max(mc, round_up(ceil(n_keys / S), mc)) (mc = p.min_chunk, 32 if 0). The position comes from a host copy
// made before the step's kernels, not from the kernel a launch waits for, so it is known before the PDL wait.
struct DecodeSplit {
  int pos0, n_keys, chunk, n_splits;
};
__device__ __forceinline__ DecodeSplit SplitKeys(const AttnParams& p, int t, int S) {
  DecodeSplit r;
  r.pos0 = __ldcg(p.pos);
  r.n_keys = r.pos0 + t + 1;
  const int mc = p.min_chunk > 0 ? p.min_chunk : 32;
  r.chunk = max(mc, ((r.n_keys + S - 1) / S + mc - 1) / mc * mc);
  r.n_splits = (r.n_keys + r.chunk - 1) / r.chunk;
  return r;
}

// A block's state for one query head and dim from its WARPS warps' states in shared memory: warp w's max m[w ms], sum
// l[w ms] and unnormalized output acc[w as] (m = -inf: a warp that saw no key, adding nothing). Both decode kernels
// merge their warps with it.
template <int WARPS>
__device__ __forceinline__ void MergeWarps(const float* m, const float* l, const float* acc, int ms, int as, float& M,
                                           float& L, float& A) {
  M = -INFINITY;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) M = fmaxf(M, m[w * ms]);
  L = 0.f;
  A = 0.f;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) {
    const float c = m[w * ms] == -INFINITY ? 0.f : exp2f(m[w * ms] - M);
    L += l[w * ms] * c;
    A += acc[w * as] * c;
  }
}

// V2's split merge (also AttentionMmaKernel's), called by every thread of a block whose partial (slot) is
// written: the last of the n_splits blocks of (token t, kv head kvh) to arrive merges every split's partial
// into the output and resets the counter; the others return.
template <int HD, int G, int WARPS>
__device__ __forceinline__ void MergeSplitsV2(const AttnParams& p, unsigned* counter, size_t slot0, int n_splits, int t,
                                              int kvh, int q_dim) {
  if (!LastToArrive(counter, unsigned(n_splits), p.sync_acqrel)) return;  // one release per block (V1: a fence in every thread)
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
    StoreOut4(p, size_t(t) * q_dim + (kvh * G + g) * HD + d4 * 4, make_float4(a.x * li, a.y * li, a.z * li, a.w * li));
  }
  if (threadIdx.x == 0) *counter = 0;  // ready for the next launch
}

}  // namespace gpu
}  // namespace lab
