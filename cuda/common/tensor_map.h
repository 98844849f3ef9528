// cuTensorMapEncodeTiled, the driver call that describes a tensor to the TMA unit, fetched through cudart
// once (no link against libcuda, which a workstation without a GPU may lack). Shared by the prefill's GEMM v4
// (cuda/prefill/gemm_v4.cu) and the kernel lab's v14 (cuda/gpu_opt/kernels_mlp.cuh).
#pragma once
#include <cuda.h>  // CUtensorMap and its enums (types only)
#include <cuda_runtime.h>

#include <mutex>

namespace lab {
namespace cuda {

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The encoder, or nullptr where the driver has none (older than CUDA 12).
inline EncodeTiledFn TensorMapEncoder() {
  static EncodeTiledFn fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeTiledFn>(ptr);
  });
  return fn;
}

}  // namespace cuda
}  // namespace lab
