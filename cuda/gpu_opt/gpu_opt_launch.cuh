// Stage 4 — gpu_opt's launch helpers: the decode step's kernels are launched through LaunchEx (or Launch),
// which adds programmatic dependent launch (PDL) and thread-block clusters where asked, and turns a failed
// launch into a DeviceError naming the kernel (cuda::Check). Used by gpu_opt_engine.cu (the step,
// attention) and gpu_opt_matvec.cu (the matvecs).
#pragma once
#include <cuda_runtime.h>

#include "cuda/common/cuda_check.h"

namespace lab {
namespace gpu_opt {

template <typename T>
struct Identity {
  using type = T;
};

// Launches `kernel` with the PDL attribute when pdl is set (the kernels wait in griddepcontrol.wait) and,
// when cluster_y > 0, in thread-block clusters of (1, cluster_y, 1) (decode attention v3).
template <typename... Args>
void LaunchEx(int cluster_y, void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
              bool pdl, const char* what, typename Identity<Args>::type... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_y > 0) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = 1;
    attr[n].val.clusterDim.y = unsigned(cluster_y);
    attr[n++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  cuda::Check(cudaLaunchKernelEx(&cfg, kernel, args...), what, __FILE__, __LINE__);
}

template <typename... Args>
void Launch(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool pdl,
            const char* what, typename Identity<Args>::type... args) {
  LaunchEx(0, kernel, grid, block, smem, stream, pdl, what, args...);
}

}  // namespace gpu_opt
}  // namespace lab
