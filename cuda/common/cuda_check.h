// Shared host-side helpers of the CUDA engines: error checks that throw lab::DeviceError, the
// "is there a GPU at all" check, and a device arena that sizes the whole allocation up front so an
// out-of-memory error can say how much the model needs against what the card has free.
//
// Every CUDA runtime call in cuda/ goes through LAB_CUDA_CHECK; every kernel launch is followed by
// LAB_CUDA_LAUNCH_CHECK (cudaGetLastError), so a bad launch configuration surfaces at its launch site
// and not as a mysterious failure three calls later.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <exception>
#include <string>

#include "cc/core/errors.h"

namespace lab {
namespace cuda {

// Throws DeviceError("<what> failed at file:line: <cudaGetErrorString>") unless e == cudaSuccess.
void Check(cudaError_t e, const char* what, const char* file, int line);

#define LAB_CUDA_CHECK(call) ::lab::cuda::Check((call), #call, __FILE__, __LINE__)
#define LAB_CUDA_LAUNCH_CHECK(name) ::lab::cuda::Check(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)

// A lab tool's main: returns run(argc, argv); an exception (DeviceError from LAB_CUDA_CHECK: no GPU, a bad
// launch) becomes "<tool>: <what>" on stderr and exit status 1.
inline int MainReportingErrors(const char* tool, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    return 1;
  }
}

// Selects device 0 (or $LAB_CUDA_DEVICE) and returns its properties. Throws
// DeviceError("no CUDA GPU found: the gpu_* engines need an NVIDIA GPU ...") where there is none
// (no driver, no device, or a driver too old for this CUDA runtime).
cudaDeviceProp RequireGpu(const char* engine_name);

// "12.34 GiB"
std::string GiB(uint64_t bytes);

// One cudaMalloc for everything an engine keeps on the device. Plan() sub-allocations first
// (256-byte aligned), then Allocate() once: it compares the total with cudaMemGetInfo's free bytes and
// throws DeviceError("<engine>: model needs X GiB, card has Y GiB free (...)") before trying.
class DeviceArena {
 public:
  DeviceArena() = default;
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  // Reserves `bytes` and returns the offset; resolve with Get<T>(offset) after Allocate().
  size_t Plan(size_t bytes);
  // Whether the plan and `extra` bytes more would pass Allocate()'s check on the card's free memory now.
  bool Fits(size_t extra) const;
  void Allocate(const char* engine_name, const std::string& breakdown);
  template <typename T>
  T* Get(size_t offset) const {
    return reinterpret_cast<T*>(base_ + offset);
  }
  size_t total() const { return total_; }

 private:
  char* base_ = nullptr;
  size_t total_ = 0;
};

// Page-locked host memory (for fast, asynchronous transfers of logits and step parameters).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void Reset(size_t bytes);
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

// Uploads tensors from (possibly pageable, memory-mapped) host memory in pieces through two pinned
// bounce buffers, converting fp16 <-> fp32 on the device when the engine keeps another dtype than the
// file, so a 16 GB model moves at PCIe speed and no host-side conversion pass is needed.
class Uploader {
 public:
  explicit Uploader(cudaStream_t stream, size_t chunk_bytes = size_t(64) << 20);
  ~Uploader();
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;
  // dst (device) gets n elements of src (host); dst_f16/src_f16 say whether each side is fp16 bits
  // (else fp32).
  void Copy(void* dst, bool dst_f16, const void* src, bool src_f16, size_t n);
  void Finish();  // waits for every copy to land

 private:
  cudaStream_t stream_;
  size_t chunk_;
  PinnedBuffer buf_[2];
  void* staging_[2] = {nullptr, nullptr};  // device side of a converting copy
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int next_ = 0;
};

}  // namespace cuda
}  // namespace lab
