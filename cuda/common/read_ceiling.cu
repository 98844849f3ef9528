#include "cuda/common/read_ceiling.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <stdexcept>

#include "cuda/common/bulk_copy.cuh"
#include "cuda/common/cuda_check.h"

namespace lab {
namespace cuda {
namespace {

constexpr int kTmaMaxStages = 16;

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

// The same pass by 1-D bulk copies (TMA) into shared memory, sm_90 and later (session 16: the kernel lab's
// chain as one kernel streamed its weights this way 7-10% faster than ReadKernel reads). One block per SM,
// block b the bytes [b B / G, (b + 1) B / G) in chunks of `stage` bytes; thread 0 keeps `stages` copies
// in flight, each stage reissued once its last copy has landed (its barrier's phase). Nothing reads the
// shared memory: the bytes cross HBM and L2 into the SM, which is what a weight stream needs.
__global__ void TmaReadKernel(const char* __restrict__ p, size_t bytes, unsigned stage, int stages, size_t slice) {
  extern __shared__ __align__(128) uint4 ring[];  // (aligned: RingMatvecKernel's note; 16 barriers already made it so)
  __shared__ uint64_t bar[kTmaMaxStages];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < stages; ++s) MbarInit(&bar[s]);
  // slice 0: block b reads [b B / G, (b + 1) B / G); else the buffer is read as segments of G slices,
  // block b slice b of each, so that all SMs stream from one region at a time (as the chain's matrices do).
  const size_t seg = slice ? slice * gridDim.x : bytes;
  unsigned it = 0;
  for (size_t base = 0; base < bytes; base += seg) {
    const size_t len = bytes - base < seg ? bytes - base : seg;
    const size_t lo = base + len * blockIdx.x / gridDim.x / 16 * 16, hi = base + len * (blockIdx.x + 1) / gridDim.x / 16 * 16;
    for (size_t off = lo; off < hi; off += stage, ++it) {
      const int s = int(it % stages);
      const unsigned use = it / stages;
      if (use > 0) MbarWait(&bar[s], (use - 1) & 1);
      const unsigned nb = unsigned(hi - off < stage ? hi - off : stage);
      MbarArriveExpectTx(&bar[s], nb);
      BulkCopyToShared(ring + size_t(s) * (stage / 16), p + off, nb, &bar[s]);
    }
  }
  for (unsigned k = it > unsigned(stages) ? it - stages : 0; k < it; ++k) MbarWait(&bar[k % stages], (k / stages) & 1);
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

void LaunchTmaReadPass(const void* p, size_t bytes, int stages, unsigned stage_bytes, int sm_count, cudaStream_t s,
                       size_t slice) {
  if (stages < 1 || stages > kTmaMaxStages || stage_bytes % 16)
    throw std::invalid_argument("LaunchTmaReadPass: 1..16 stages of a multiple of 16 bytes");
  const size_t smem = size_t(stages) * stage_bytes;
  LAB_CUDA_CHECK(cudaFuncSetAttribute(TmaReadKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  TmaReadKernel<<<sm_count, 32, smem, s>>>(static_cast<const char*>(p), bytes, stage_bytes, stages, slice);
  LAB_CUDA_LAUNCH_CHECK("TmaReadKernel");
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
  // Launch shapes: the load kernel's (unroll, blocks per SM), then on sm_90+ the bulk-copy kernel's
  // (stages, KB a stage), marked by a negative first number.
  std::vector<std::pair<int, int>> shapes = {{4, 4}, {4, 8}, {8, 4}, {8, 8}};
  const bool tma = prop.major >= 9 && prop.sharedMemPerBlockOptin >= 128 * 1024;
  if (tma) shapes.insert(shapes.end(), {{-8, 16}, {-8, -16}});  // KB < 0: in 1 MB slices (LaunchTmaReadPass)
  for (const auto& shape : shapes) {
    const int a = shape.first, bk = shape.second, unroll = a, bps = bk;
    auto pass = [&]() {
      if (a > 0)
        LaunchReadPass(r.buf, n_bytes, r.sink, unroll, bps, prop.multiProcessorCount, r.s);
      else
        LaunchTmaReadPass(r.buf, n_bytes, -a, unsigned(std::abs(bk)) * 1024u, prop.multiProcessorCount, r.s,
                          bk < 0 ? size_t{1} << 20 : 0);
    };
    for (int w = 0; w < 3; ++w) pass();
    std::vector<double> g;
    for (int i = 0; i < repeats; ++i) {
      LAB_CUDA_CHECK(cudaEventRecord(r.e0, r.s));
      pass();
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
      char m[240];
      if (a > 0)
        std::snprintf(m, sizeof(m),
                      "lab read kernel over %.1f GiB: 16-byte streaming loads, %d in flight per thread, "
                      "%d x 512 threads per SM (best median of %d launch shapes)",
                      n_bytes / 1073741824.0, unroll, bps, int(shapes.size()));
      else
        std::snprintf(m, sizeof(m),
                      "lab read kernel over %.1f GiB: 1-D bulk copies (TMA) into shared memory, %d of %d KB "
                      "in flight per SM%s (best median of %d launch shapes)",
                      n_bytes / 1073741824.0, -a, std::abs(bk), bk < 0 ? ", the SMs on 1 MB slices of one region" : "",
                      int(shapes.size()));
      best = {g, m};
    }
  }
  return best;
}

}  // namespace cuda
}  // namespace lab
