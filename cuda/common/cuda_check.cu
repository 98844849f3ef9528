#include "cuda/common/cuda_check.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <cuda_fp16.h>

namespace lab {
namespace cuda {

void Check(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return;
  const char* base = std::strrchr(file, '/');
  throw DeviceError(std::string(what) + " failed at " + (base ? base + 1 : file) + ":" + std::to_string(line) + ": " +
                    cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

std::string GiB(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

cudaDeviceProp RequireGpu(const char* engine_name) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();  // clear the sticky "no device" error for whoever calls CUDA next
    throw DeviceError(std::string("no CUDA GPU found: the gpu_* engines need an NVIDIA GPU with a driver for CUDA 13 "
                                  "(engine ") +
                      engine_name + "; cudaGetDeviceCount: " + (e == cudaSuccess ? "0 devices" : cudaGetErrorString(e)) +
                      "). Use a cpu_* engine on this machine, or run the GPU bundle on a GPU host.");
  }
  int dev = 0;
  if (const char* s = std::getenv("LAB_CUDA_DEVICE")) dev = std::atoi(s);
  if (dev < 0 || dev >= n)
    throw DeviceError("LAB_CUDA_DEVICE=" + std::to_string(dev) + " but only " + std::to_string(n) + " GPU(s) found");
  LAB_CUDA_CHECK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  LAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return prop;
}

DeviceArena::~DeviceArena() {
  if (base_) cudaFree(base_);
}

size_t DeviceArena::Plan(size_t bytes) {
  const size_t off = total_;
  total_ += (bytes + 255) & ~size_t(255);
  return off;
}

// Room Allocate() leaves for the CUDA context, graphs and library workspaces.
constexpr size_t kArenaSpare = size_t(256) << 20;

bool DeviceArena::Fits(size_t extra) const {
  size_t free_b = 0, total_b = 0;
  LAB_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_ + extra + kArenaSpare <= free_b;
}

void DeviceArena::Allocate(const char* engine_name, const std::string& breakdown) {
  size_t free_b = 0, total_b = 0;
  LAB_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const std::string need = std::string(engine_name) + ": model needs " + GiB(total_) + ", card has " + GiB(free_b) +
                           " free of " + GiB(total_b) + " (" + breakdown + ")";
  if (total_ + kArenaSpare > free_b)
    throw DeviceError(need + ": not enough device memory; use a smaller max_context, an fp16 engine, or a larger card");
  cudaError_t e = cudaMalloc(&base_, total_);
  if (e != cudaSuccess) {
    cudaGetLastError();
    base_ = nullptr;
    throw DeviceError(need + ": cudaMalloc failed: " + cudaGetErrorString(e));
  }
}

PinnedBuffer::PinnedBuffer(size_t bytes) { Reset(bytes); }

PinnedBuffer::~PinnedBuffer() {
  if (p_) cudaFreeHost(p_);
}

void PinnedBuffer::Reset(size_t bytes) {
  if (p_) cudaFreeHost(p_);
  p_ = nullptr;
  LAB_CUDA_CHECK(cudaMallocHost(&p_, bytes));
}

namespace {

__global__ void F16ToF32(const uint16_t* __restrict__ src, float* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = __half2float(__ushort_as_half(src[i]));
}

__global__ void F32ToF16(const float* __restrict__ src, uint16_t* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = __half_as_ushort(__float2half_rn(src[i]));
}

}  // namespace

Uploader::Uploader(cudaStream_t stream, size_t chunk_bytes) : stream_(stream), chunk_(chunk_bytes) {
  for (int i = 0; i < 2; ++i) {
    buf_[i].Reset(chunk_);
    LAB_CUDA_CHECK(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
    LAB_CUDA_CHECK(cudaEventRecord(done_[i], stream_));
  }
}

Uploader::~Uploader() {
  for (int i = 0; i < 2; ++i) {
    if (done_[i]) {
      cudaEventSynchronize(done_[i]);
      cudaEventDestroy(done_[i]);
    }
    if (staging_[i]) cudaFree(staging_[i]);
  }
}

void Uploader::Copy(void* dst, bool dst_f16, const void* src, bool src_f16, size_t n) {
  const size_t src_es = src_f16 ? 2 : 4, dst_es = dst_f16 ? 2 : 4;
  const size_t per_chunk = chunk_ / src_es;
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  while (n > 0) {
    const size_t m = n < per_chunk ? n : per_chunk;
    // Double buffering: fill one pinned buffer on the host while the other one's copy is in flight.
    LAB_CUDA_CHECK(cudaEventSynchronize(done_[next_]));
    std::memcpy(buf_[next_].as<char>(), s, m * src_es);
    if (src_f16 == dst_f16) {
      LAB_CUDA_CHECK(cudaMemcpyAsync(d, buf_[next_].as<char>(), m * src_es, cudaMemcpyHostToDevice, stream_));
    } else {
      if (!staging_[next_]) LAB_CUDA_CHECK(cudaMalloc(&staging_[next_], chunk_));
      LAB_CUDA_CHECK(cudaMemcpyAsync(staging_[next_], buf_[next_].as<char>(), m * src_es, cudaMemcpyHostToDevice, stream_));
      const int blocks = static_cast<int>((m + 255) / 256 < 4096 ? (m + 255) / 256 : 4096);
      if (src_f16) {
        F16ToF32<<<blocks, 256, 0, stream_>>>(static_cast<const uint16_t*>(staging_[next_]), reinterpret_cast<float*>(d), m);
      } else {
        F32ToF16<<<blocks, 256, 0, stream_>>>(static_cast<const float*>(staging_[next_]), reinterpret_cast<uint16_t*>(d), m);
      }
      LAB_CUDA_LAUNCH_CHECK("Uploader convert");
    }
    LAB_CUDA_CHECK(cudaEventRecord(done_[next_], stream_));
    next_ ^= 1;
    d += m * dst_es;
    s += m * src_es;
    n -= m;
  }
}

void Uploader::Finish() { LAB_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace cuda
}  // namespace lab
