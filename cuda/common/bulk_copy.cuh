// The 1-D bulk copy (TMA) from global into shared memory and the mbarriers that count its bytes (sm_90+;
// compiled to nothing below). Shared by the decode kernels (cuda/gpu_opt/kernels_common.cuh, which names
// them in lab::gpu), the read ceiling (read_ceiling.cu) and the kernel lab's chain (cuda/kernels/).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace lab {
namespace cuda {

__device__ __forceinline__ unsigned SmemAddr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Thread-count 1 barrier, initialized by the one thread that will arrive on it; the fence makes the
// initialization visible to the copy engine (and, after a __syncthreads, to the block's other threads).
__device__ __forceinline__ void MbarInit(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(SmemAddr(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}
// The same for a barrier that `count` arrivals complete (MbarArrive, MbarArriveExpectTx).
__device__ __forceinline__ void MbarInit(uint64_t* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SmemAddr(bar)), "r"(count) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

// The arriving thread announces how many bytes the copies will deliver; phase 0 completes when they have.
__device__ __forceinline__ void MbarArriveExpectTx(uint64_t* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(SmemAddr(bar)), "r"(bytes) : "memory");
#endif
}

// One arrival, no bytes (release: the thread's earlier shared-memory writes are seen by the waiters).
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(SmemAddr(bar)) : "memory");
#endif
}

// Copies `bytes` (a multiple of 16; both addresses 16-byte aligned) from global to this block's shared
// memory without registers; completion is counted on `bar`.
__device__ __forceinline__ void BulkCopyToShared(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   SmemAddr(dst)),
               "l"(src), "r"(bytes), "r"(SmemAddr(bar))
               : "memory");
#endif
}

// Waits until phase `parity` of `bar` has completed (every announced byte has landed).
__device__ __forceinline__ void MbarWait(uint64_t* bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  unsigned done = 0;
  do {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(SmemAddr(bar)), "r"(parity)
        : "memory");
  } while (!done);
#endif
}

}  // namespace cuda
}  // namespace lab
