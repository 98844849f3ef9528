#include "cuda/common/read_ceiling.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <stdexcept>

#include "cuda/common/cuda_check.h"

namespace lab {
namespace cuda {
namespace {

__device__ __forceinline__ uint4 LoadOnce(const uint4* p) {  // the decode kernels' weight load
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <int U>
__global__ void ReadKernel(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = LoadOnce(p + i + u * stride);  // all U issued before any is used
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 a = LoadOnce(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1u);
}

__global__ void FillBits(uint32_t* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ uint32_t(i >> 32) * 40503u;
    h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
    p[i] = h | 1u;  // random bits, never zero
  }
}

}  // namespace

void LaunchReadPass(const void* p, size_t bytes, unsigned* sink, int unroll, int blocks_per_sm, int sm_count,
                    cudaStream_t s) {
  const auto* q = static_cast<const uint4*>(p);
  const dim3 grid(sm_count * blocks_per_sm), block(512);
  if (unroll == 8) {
    ReadKernel<8><<<grid, block, 0, s>>>(q, bytes / 16, sink);
  } else {
    ReadKernel<4><<<grid, block, 0, s>>>(q, bytes / 16, sink);
  }
  LAB_CUDA_LAUNCH_CHECK("ReadKernel");
}

ReadCeiling MeasureReadBandwidth(size_t n_bytes, int repeats) {
  if (n_bytes < (size_t{64} << 20)) throw std::invalid_argument("n_bytes must be at least 64 MiB (more than L2)");
  if (repeats < 1) throw std::invalid_argument("repeats must be >= 1");
  const cudaDeviceProp prop = RequireGpu("read ceiling");
  n_bytes = n_bytes / 16 * 16;
  // Everything this measurement allocates, released on every way out (errors throw).
  struct Resources {
    void* buf = nullptr;
    unsigned* sink = nullptr;
    cudaStream_t s = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    ~Resources() {
      cudaFree(buf), cudaFree(sink);
      if (s) cudaStreamDestroy(s);
      if (e0) cudaEventDestroy(e0);
      if (e1) cudaEventDestroy(e1);
    }
  } r;
  size_t free_b = 0, total_b = 0;
  LAB_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (n_bytes + (size_t{256} << 20) > free_b)
    throw DeviceError("read ceiling: needs " + GiB(n_bytes) + ", the card has " + GiB(free_b) + " free");
  LAB_CUDA_CHECK(cudaMalloc(&r.buf, n_bytes));
  LAB_CUDA_CHECK(cudaMalloc(&r.sink, sizeof(unsigned)));
  LAB_CUDA_CHECK(cudaStreamCreateWithFlags(&r.s, cudaStreamNonBlocking));
  LAB_CUDA_CHECK(cudaEventCreate(&r.e0));
  LAB_CUDA_CHECK(cudaEventCreate(&r.e1));
  FillBits<<<prop.multiProcessorCount * 8, 256, 0, r.s>>>(static_cast<uint32_t*>(r.buf), n_bytes / 4);
  LAB_CUDA_LAUNCH_CHECK("FillBits");
  ReadCeiling best;
  double best_median = -1;
  for (int unroll : {4, 8}) {
    for (int bps : {4, 8}) {
      for (int w = 0; w < 3; ++w) LaunchReadPass(r.buf, n_bytes, r.sink, unroll, bps, prop.multiProcessorCount, r.s);
      std::vector<double> g;
      for (int i = 0; i < repeats; ++i) {
        LAB_CUDA_CHECK(cudaEventRecord(r.e0, r.s));
        LaunchReadPass(r.buf, n_bytes, r.sink, unroll, bps, prop.multiProcessorCount, r.s);
        LAB_CUDA_CHECK(cudaEventRecord(r.e1, r.s));
        LAB_CUDA_CHECK(cudaEventSynchronize(r.e1));
        float ms = 0;
        LAB_CUDA_CHECK(cudaEventElapsedTime(&ms, r.e0, r.e1));
        g.push_back(double(n_bytes) / (ms * 1e-3) / 1e9);
      }
      std::vector<double> sorted = g;
      std::sort(sorted.begin(), sorted.end());
      const double median = sorted[sorted.size() / 2];
      if (median > best_median) {
        best_median = median;
        char m[200];
        std::snprintf(m, sizeof(m),
                      "lab read kernel over %.1f GiB: 16-byte streaming loads, %d in flight per thread, "
                      "%d x 512 threads per SM (best median of 4 launch shapes)",
                      n_bytes / 1073741824.0, unroll, bps);
        best = {g, m};
      }
    }
  }
  return best;
}

}  // namespace cuda
}  // namespace lab
