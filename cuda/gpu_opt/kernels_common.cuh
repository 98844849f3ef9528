// Device helpers every stage-4 kernel uses: the PDL wait and trigger, the streaming weight load, fp16
// unpacking and dot products, warp sums; and the qkv epilogue (RoPE and the KV-cache write), which decode and
// prefill share. The kernels: kernels.cuh (overview), kernels_matvec.cuh, kernels_attention.cuh, kernels_prefill.cuh.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/bulk_copy.cuh"

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

// The GPU's nanosecond clock, the same for every SM (PTX %globaltimer).
__device__ __forceinline__ unsigned long long GlobalTimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// The SM this thread runs on (PTX %smid; 0..SMs-1 on the H100 and H200).
__device__ __forceinline__ int SmId() {
  int s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
}

// LAB_GPU_TRACE (the engine's step trace, gpu_opt_engine.cu): one launch's timeline in kTraceSlots slots,
// cleared by one memset to 0xff: by atomicMin, [0] the first block's start, [1] the first block past
// griddepcontrol.wait (Released), [2] ~(the last block's end: the destructor, on every return path); by
// atomicAdd, [3] the blocks' summed time from their own release to Staged() and [4] how many blocks
// marked it (both read one less than the truth: they start at all ones, which is -1). Of the blocks that
// were released (attention's idle splits end before the wait): [5] the first one's end (atomicMin), [6]
// their summed time from release to end and [7] how many (atomicAdd, from -1 as above). The last end
// less the mean block is the kernel's tail: what a perfect balance of the blocks could give back. [8..10]
// (session 21) the SMs the launch's blocks ran on, as the bits atomicAnd cleared from the all-ones fill (bit
// %smid of a 192-bit mask; an SM past 191 is not counted): a grid launched early under PDL is packed onto the
// SMs with room, not spread (cuda/kernels/README.md, "Where the readers run").
// Thread 0 of each block marks; with a null slot (the default) nothing is marked.
constexpr int kTraceSlots = 11;
struct TraceMarks {
  unsigned long long* slot;
  unsigned long long released = 0;
  __device__ __forceinline__ explicit TraceMarks(unsigned long long* s) : slot(threadIdx.x == 0 ? s : nullptr) {
    if (slot) {
      atomicMin(slot, GlobalTimer());
      const unsigned sm = unsigned(SmId());
      if (sm < 192) atomicAnd(slot + 8 + sm / 64, ~(1ull << (sm % 64)));
    }
  }
  __device__ __forceinline__ void Released() {
    if (slot) {
      released = GlobalTimer();
      atomicMin(slot + 1, released);
    }
  }
  // The end of the block's first phase after its release (a matvec: x staged; attention: its partial
  // written), called by thread 0 after Released().
  __device__ __forceinline__ void Staged() const {
    if (slot) {
      atomicAdd(slot + 3, GlobalTimer() - released);
      atomicAdd(slot + 4, 1ull);
    }
  }
  __device__ __forceinline__ ~TraceMarks() {
    if (!slot) return;
    const unsigned long long end = GlobalTimer();
    atomicMin(slot + 2, ~end);
    if (released) {
      atomicMin(slot + 5, end);
      atomicAdd(slot + 6, end - released);
      atomicAdd(slot + 7, 1ull);
    }
  }
};

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

// Asks for the 128-byte line at p in this SM's L1 (prefetch.global.L1): no registers, nothing to wait for. For
// data no kernel writes (the norm weights), so that a load after the PDL wait finds it there.
__device__ __forceinline__ void PrefetchL1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }

// The 1-D bulk copy (TMA) into shared memory and its mbarriers: cuda/common/bulk_copy.cuh, shared with
// the read ceiling (cuda/common/read_ceiling.cu) and the kernel lab.
using cuda::BulkCopyToShared;
using cuda::MbarArrive;
using cuda::MbarArriveExpectTx;
using cuda::MbarInit;
using cuda::MbarWait;
using cuda::SmemAddr;

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
    // One fused multiply-add each, the other product rounded first (__fmul_rn is never fused): written as
    // y0 * c - y1 * s the compiler chose which product to fuse per instantiation, so tiles of one and two
    // units a warp rotated q and k 1 ulp apart (session 14: deterministic, and once fp16 K or the
    // attention output rounded the other way, 5e-4 in the logits a few steps later).
    const float a = fmaf(y0, c, -__fmul_rn(y1, s)), b = fmaf(y1, c, __fmul_rn(y0, s));
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

}  // namespace gpu
}  // namespace lab
