// Device helpers shared by the prefill kernels (internal: not part of the API in prefill.h).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/prefill/prefill.h"

namespace lab::prefill::detail {

// ---- host-side checks ----------------------------------------------------------------------------
inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Common GEMM argument check; returns nullptr or a reason.
inline const char* GemmBasicCheck(const GemmParams& p) {
  if (!p.A || !p.W || !p.C) return "A, W and C must be non-null";
  if (p.M < 1 || p.N < 1 || p.K < 1) return "M, N, K must be >= 1";
  if (p.lda < p.K || p.ldw < p.K) return "lda and ldw must be >= K";
  const int64_t n_out = p.epilogue == Epilogue::kSwiGLU ? p.N / 2 : p.N;
  if (p.ldc < n_out) return "ldc must be >= the output width (N, or N/2 for SwiGLU)";
  if (p.epilogue == Epilogue::kSwiGLU && (p.N % 2)) return "SwiGLU needs an even N ([gate; up] rows)";
  if (p.epilogue == Epilogue::kResidual && (!p.R || p.ldr < p.N)) return "kResidual needs R with ldr >= N";
  return nullptr;
}

inline const char* GemmVectorCheck(const GemmParams& p) {
  if (!Aligned16(p.A) || !Aligned16(p.W) || !Aligned16(p.C)) return "A, W, C must be 16-byte aligned";
  if (p.lda % 8 || p.ldw % 8 || p.ldc % 8) return "lda, ldw, ldc must be multiples of 8";
  if (p.epilogue == Epilogue::kResidual && (!Aligned16(p.R) || p.ldr % 8)) return "R must be 16-byte aligned, ldr % 8 == 0";
  return nullptr;
}

inline void ThrowIf(const char* reason, const char* who) {
  if (reason) throw std::invalid_argument(std::string(who) + ": " + reason);
}

inline int CurrentSmCount() {
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  return sms > 0 ? sms : 1;
}

// ---- PTX wrappers ----------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t SmemU32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared async copy; src_bytes in [0, 16], the rest is zero-filled (0: all zeros).
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void Ldmatrix4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void Ldmatrix4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// D[16x8] += A[16x16] (row) * B[16x8] (col), fp16 inputs, fp32 accumulators.
// Fragments (g = lane/4, t = lane%4):  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g);   d0,d1 (g, 2t..2t+1)  d2,d3 (g+8, 2t..2t+1).
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ float Silu(float x) { return x / (1.f + __expf(-x)); }

// ---- the shared epilogue --------------------------------------------------------------------------
// Stores two adjacent outputs (m, c) and (m, c+1). For kSwiGLU, v* are the gate values and u* the up
// values of output columns c, c+1; otherwise u* are unused. c is even, so the pair is 4/8-byte aligned.
template <Epilogue EPI, typename OutT>
__device__ __forceinline__ void StorePair(const GemmParams& p, int m, int c, float v0, float v1, float u0, float u1) {
  if (EPI == Epilogue::kSwiGLU) {
    v0 = Silu(v0) * u0;
    v1 = Silu(v1) * u1;
  } else if (EPI == Epilogue::kResidual) {
    const __half2 r = *reinterpret_cast<const __half2*>(p.R + static_cast<int64_t>(m) * p.ldr + c);
    v0 += __low2float(r);
    v1 += __high2float(r);
  }
  OutT* dst = static_cast<OutT*>(p.C) + static_cast<int64_t>(m) * p.ldc + c;
  if constexpr (sizeof(OutT) == 4) {
    *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
  } else {
    *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(v0, v1);
  }
}

// Scalar version (v1: any N).
template <Epilogue EPI, typename OutT>
__device__ __forceinline__ void StoreOne(const GemmParams& p, int m, int c, float v, float u) {
  if (EPI == Epilogue::kSwiGLU) {
    v = Silu(v) * u;
  } else if (EPI == Epilogue::kResidual) {
    v += __half2float(p.R[static_cast<int64_t>(m) * p.ldr + c]);
  }
  OutT* dst = static_cast<OutT*>(p.C) + static_cast<int64_t>(m) * p.ldc + c;
  if constexpr (sizeof(OutT) == 4) {
    *dst = v;
  } else {
    *dst = __float2half_rn(v);
  }
}

// Grouped tile order (L2 reuse): consecutive blocks walk GROUP_M row tiles of one column tile, then
// the next column tile, so the blocks in flight share both their A rows and their W rows.
template <int GROUP_M>
__device__ __forceinline__ void GroupedTile(int bid, int num_tm, int num_tn, int& tm, int& tn) {
  const int per_group = GROUP_M * num_tn;
  const int group = bid / per_group;
  const int first = group * GROUP_M;
  const int size = min(num_tm - first, GROUP_M);
  const int local = bid - group * per_group;
  tm = first + local % size;
  tn = local / size;
}

// The weight row behind tile row r (0 <= r < BN) of column tile tn. Without SwiGLU it is tn*BN + r.
// With SwiGLU a tile holds BN/2 gate rows then the BN/2 matching up rows, so output column
// tn*BN/2 + j (j < BN/2) finds its gate value at tile column j and its up value at BN/2 + j.
template <int BN>
__host__ __device__ __forceinline__ int TileWeightRow(bool swiglu, int N, int tn, int r) {
  if (!swiglu) return tn * BN + r;
  const int half_n = N / 2;
  return (r < BN / 2) ? tn * (BN / 2) + r : half_n + tn * (BN / 2) + (r - BN / 2);
}

// Dispatch a templated kernel launcher on (epilogue, output type).
template <template <Epilogue, typename> class Launch>
cudaError_t DispatchEpilogue(const GemmParams& p, cudaStream_t s) {
  switch (p.epilogue) {
    case Epilogue::kNone:
      return p.c_f32 ? Launch<Epilogue::kNone, float>::Run(p, s) : Launch<Epilogue::kNone, half>::Run(p, s);
    case Epilogue::kResidual:
      return p.c_f32 ? Launch<Epilogue::kResidual, float>::Run(p, s) : Launch<Epilogue::kResidual, half>::Run(p, s);
    case Epilogue::kSwiGLU:
      return p.c_f32 ? Launch<Epilogue::kSwiGLU, float>::Run(p, s) : Launch<Epilogue::kSwiGLU, half>::Run(p, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace lab::prefill::detail
