// The kernel lab's matvec versions, as bench.cu runs them: v1-v4 (matvec_versions.cuh), then the engine's
// kernels at the tiles it tunes between: v5 (DecodeMatvecKernel), v6 (+ L2 prefetch), v7 (a longer first
// batch), v8 (staged), v9 (persistent), v10 (RingMatvecKernel, the weight ring), v11 (its shared
// tail) and v12 (its stolen tails). Each is a name and a launch of y = W x with the plain store
// epilogue (bench_common.cuh's Version).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/gpu_opt/kernels.cuh"
#include "cuda/kernels/bench_common.cuh"
#include "cuda/kernels/matvec_versions.cuh"

namespace lab {
namespace kbench {
namespace {

// v1..v4 (matvec_versions.cuh): blocks of 256 threads, `rows` rows a block.
using PlainKernel = void (*)(const __half*, const float*, float*, int, int);
template <PlainKernel KERNEL>
Version V1to4(const char* name, int rows) {
  return {name, [rows](const __half* W, const float* x, float* y, int M, int K, cudaStream_t s) {
            KERNEL<<<(M + rows - 1) / rows, 256, 0, s>>>(W, x, y, M, K);
            LAB_CUDA_LAUNCH_CHECK("a v1..v4 matvec");
          }};
}

template <int W, int U, int R, int PREFETCH = 0, int PRE = 1>
Version V5(const char* cfg) {
  return {std::string(PRE > 1 ? "v7 " : PREFETCH ? "v6 " : "v5 ") + cfg + (PREFETCH ? " +L2 prefetch" : ""),
          [](const __half* Wt, const float* x, float* y, int M, int K, cudaStream_t s) {
            gpu::MatvecParams p = PlainParams(Wt, x, y, M, K);
            p.l2_prefetch = PREFETCH;
            RunV5<W, U, R, gpu::kEpiStore, PRE>(p, s);
          }};
}

// v8: the first batch staged in shared memory (one bulk copy per row before the PDL wait), about `kb` KB
// of rows per block. Alone it can only match v5 at best (fewer blocks fit per SM); its point is the
// overlap with a latency-bound kernel before it (attention), measured in the engine rows.
template <int W, int U, int R>
Version V8(const char* cfg, int kb) {
  return {std::string("v8 ") + cfg + ".s " + std::to_string(kb) + " KB staged",
          [kb](const __half* Wt, const float* x, float* y, int M, int K, cudaStream_t s) {
            auto fn = gpu::DecodeMatvecKernel<W, U, R, gpu::kEpiStore, 1, true>;
            constexpr int kMaxSmem = 224 * 1024;  // a block's dynamic shared memory (an H100/H200 allows 227 KB)
            static bool attr_set = false;
            if (!attr_set) {
              LAB_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
              attr_set = true;
            }
            gpu::MatvecParams p = PlainParams(Wt, x, y, M, K);
            // The budget is kb KB or what kMaxSmem leaves beside x (down's K = 14,336: x alone takes
            // 56 KB, so its 176 KB row stages 160 KB).
            const int budget = std::min(kb * 1024, kMaxSmem - int(gpu::MatvecSmemBytes(K)));
            p.stage = gpu::MatvecStageChunks(W, U, K, budget);
            const size_t smem = gpu::MatvecSmemBytes(K) + gpu::MatvecStageBytes(W, U, p.stage);
            const int per_block = W * U;
            fn<<<(p.n_units + per_block - 1) / per_block, W * 32, smem, s>>>(p);
            LAB_CUDA_LAUNCH_CHECK("DecodeMatvecKernel (staged)");
          }};
}

// v9: persistent (balanced): as many blocks as fit on the SMs, each warp looping over tasks of UPW units
// spaced gridDim.x * W apart, so every SM streams the same share of the rows to within one task.
template <int W, int U, int R>
Version V9(const char* cfg) {
  return {std::string("v9 ") + cfg + ".b persistent",
          [](const __half* Wt, const float* x, float* y, int M, int K, cudaStream_t s) {
            auto fn = gpu::DecodeMatvecKernel<W, U, R, gpu::kEpiStore, 1, false, true>;
            static int grid = 0;
            const size_t smem = gpu::MatvecSmemBytes(K);
            if (!grid) {
              LAB_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
              int fit = 0, dev = 0, sms = 0;
              LAB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, fn, W * 32, 64 * 1024));
              LAB_CUDA_CHECK(cudaGetDevice(&dev));
              LAB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
              grid = std::max(1, fit) * sms;  // sized for the longest input (64 KB of x): the same grid for every shape
            }
            gpu::MatvecParams p = PlainParams(Wt, x, y, M, K);
            const int per_block = W * U;
            fn<<<std::min(grid, (p.n_units + per_block - 1) / per_block), W * 32, smem, s>>>(p);
            LAB_CUDA_LAUNCH_CHECK("DecodeMatvecKernel (persistent)");
          }};
}

// v10: the weight ring (kernels_matvec_ring.cuh): one block per SM on a contiguous range of rows, the
// weights brought into shared memory by bulk copies from one producer thread, CW consumer warps.
// v11 (DYN > 0): the same ring whose last DYN eighths of the units go to whichever block asks first.
// v12 (STEAL): the last DYN eighths of each block's slice open to the blocks that run out (".tN").
template <int CW, int ST, int SC, int DYN = 0, bool STEAL = false>
Version V10(const char* cfg) {
  const std::string name = STEAL ? std::string("v12 ") + cfg + ".t" + std::to_string(DYN) + " ring, stolen tails"
                           : DYN ? std::string("v11 ") + cfg + ".d" + std::to_string(DYN) + " ring, shared tail"
                                 : std::string("v10 ") + cfg + " ring";
  return {name,
          [](const __half* Wt, const float* x, float* y, int M, int K, cudaStream_t s) {
            static int sms = 0;
            if (!sms) {
              int dev = 0;
              LAB_CUDA_CHECK(cudaGetDevice(&dev));
              LAB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
            }
            RunRing<CW, ST, SC, gpu::kEpiStore, DYN, STEAL>(PlainParams(Wt, x, y, M, K), s, sms);
          }};
}

}  // namespace

std::vector<Version> Versions() {
  using namespace lab_kernels;
  std::vector<Version> v;
  v.push_back(V1to4<MatvecV1>("v1 thread/row", 256));
  v.push_back(V1to4<MatvecV2>("v2 warp/row half2", 8));
  v.push_back(V1to4<MatvecV3>("v3 warp/row 16B", 8));
  v.push_back(V1to4<MatvecV4>("v4 2 rows x 4 in flight", 16));
  v.push_back(V5<4, 1, 4>("w4.u1.r4"));
  v.push_back(V5<4, 1, 8>("w4.u1.r8"));
  v.push_back(V5<8, 1, 4>("w8.u1.r4"));
  v.push_back(V5<4, 2, 4>("w4.u2.r4"));
  v.push_back(V5<8, 2, 2>("w8.u2.r2"));
  v.push_back(V5<2, 1, 8>("w2.u1.r8"));
  v.push_back(V5<8, 1, 4, 1>("w8.u1.r4"));
  v.push_back(V5<4, 2, 4, 1>("w4.u2.r4"));
  // v7: a first batch of PRE x R loads per row before the PDL wait (alone, launched without PDL, it
  // can only cost registers; its point is overlap with the previous kernel in the decode step).
  v.push_back(V5<8, 1, 4, 0, 2>("w8.u1.r4.p2"));
  v.push_back(V5<4, 1, 4, 0, 4>("w4.u1.r4.p4"));
  v.push_back(V8<8, 2, 2>("w8.u2.r2", 176));
  v.push_back(V8<8, 2, 2>("w8.u2.r2", 32));
  v.push_back(V9<8, 1, 4>("w8.u1.r4"));
  v.push_back(V9<8, 2, 2>("w8.u2.r2"));
  v.push_back(V9<4, 2, 4>("w4.u2.r4"));
  v.push_back(V10<8, 8, 512>("c8.s8.k512"));
  v.push_back(V10<4, 4, 512>("c4.s4.k512"));
  v.push_back(V10<8, 8, 256>("c8.s8.k256"));
  v.push_back(V10<8, 16, 256>("c8.s16.k256"));
  v.push_back(V10<16, 16, 256>("c16.s16.k256"));
  v.push_back(V10<8, 16, 256, 1>("c8.s16.k256"));
  v.push_back(V10<8, 16, 256, 2>("c8.s16.k256"));
  v.push_back(V10<8, 16, 256, 4>("c8.s16.k256"));
  v.push_back(V10<16, 16, 256, 2>("c16.s16.k256"));
  v.push_back(V10<8, 16, 256, 2, true>("c8.s16.k256"));
  v.push_back(V10<8, 16, 256, 4, true>("c8.s16.k256"));
  v.push_back(V10<16, 16, 256, 2, true>("c16.s16.k256"));
  return v;
}

}  // namespace kbench
}  // namespace lab
