// The GPU's read ceiling, measured with a kernel of ours: what "% of the measured read bandwidth" means
// for every GPU number of the lab (the bench tool, the kernel lab).
//
// A weight stream is a read stream, so the ceiling is the fastest pure read we can write: every byte
// of a buffer far larger than L2 read once, with the decode kernels' own load (16 bytes, non-coherent,
// no L1 allocation), or, since session 16 on sm_90+, by 1-D bulk copies (TMA) into shared memory, which
// the kernel lab's chain measured 7-10% faster on the H200. torch's x.sum() over the same bytes is the
// bench's second opinion; the bench keeps the higher, so no kernel of ours is judged against a ceiling
// that a simple read already beats.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

namespace lab {
namespace cuda {

// One pass over p[0, bytes): bytes a multiple of 16, p 16-byte aligned. Grid-stride loop, `unroll`
// (4 or 8) 16-byte loads in flight per thread, `blocks_per_sm` blocks of 512 threads per SM. The XOR of
// everything read goes to *sink only if it equals a magic value (never in practice), which keeps the
// loads alive. Launch errors throw DeviceError.
void LaunchReadPass(const void* p, size_t bytes, unsigned* sink, int unroll, int blocks_per_sm, int sm_count,
                    cudaStream_t s);

// The same pass by 1-D bulk copies (TMA) into shared memory (sm_90+): one block per SM, `stages` copies
// of `stage_bytes` (a multiple of 16, stages * stage_bytes within the opt-in shared memory) in flight;
// slice 0: each SM a contiguous 1/SMs of the buffer; else the SMs read slices of `slice` bytes (a multiple
// of 16) side by side, one region of SMs x slice at a time.
void LaunchTmaReadPass(const void* p, size_t bytes, int stages, unsigned stage_bytes, int sm_count, cudaStream_t s,
                       size_t slice = 0);

struct ReadCeiling {
  std::vector<double> gbps;  // one per timed pass of the best configuration
  std::string method;        // what was measured, for the report
};

// Allocates n_bytes on the current device, fills them with random bits, and times `repeats` passes
// (CUDA events, after 3 warm-up passes) of each launch configuration (unroll 4 / 8, 4 / 8 blocks per
// SM; on sm_90+ also bulk copies, 8 x 16 KB in flight per SM, contiguous and in 1 MB slices); returns the
// samples of the configuration with the best median. Throws DeviceError (no GPU, out
// of memory) or std::invalid_argument (n_bytes < 64 MiB, repeats < 1).
ReadCeiling MeasureReadBandwidth(size_t n_bytes, int repeats);

}  // namespace cuda
}  // namespace lab
