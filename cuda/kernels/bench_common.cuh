// What the kernel lab's bench files share (bench.cu: main, the versions, the engines; bench_chain.cu: the
// decode step's weight stream as a chain): random device data, timing, the v5 launch.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/gpu_opt/gpu_opt_launch.cuh"
#include "cuda/gpu_opt/kernels.cuh"
#include "cuda/gpu_opt/kernels_mlp.cuh"

namespace lab {
namespace kbench {

// Hash-based random values on the device (reproducible, never all zeros): scale * [-1, 1) (+ offset).
void Fill(__half* p, size_t n, uint32_t seed, float scale);
void Fill(float* p, size_t n, uint32_t seed, float scale, float offset = 0.f);

struct Timing {
  double med_us = 0, min_us = 0, max_us = 0;
  int per_sample = 1;
};


// The relative L2 error of got against ref (infinite if any of got is not finite, *all_written false then),
// and the fp64 host reference y = W x (W as fp16 bits); bench.cu.
double RelErr(const std::vector<float>& got, const std::vector<double>& ref, bool* all_written);
std::vector<double> HostMatvec(const std::vector<uint16_t>& W, const std::vector<float>& x, int M, int K);

// launch(i) enqueues the i-th launch on `s`. Per-launch time over `reps` samples of a batch.
Timing TimeLaunches(const std::function<void(int)>& launch, cudaStream_t s, int reps, double target_us = 300);

struct Shape {
  const char* name;
  int M, K;
};

// static: see RunRing below (each translation unit sets the attribute on its own copy of the kernel).
template <int W, int U, int R, int EPI = gpu::kEpiStore, int PRE = 1>
static void RunV5(const gpu::MatvecParams& p, cudaStream_t s) {
  auto fn = gpu::DecodeMatvecKernel<W, U, R, EPI, PRE>;
  static bool attr_set = false;
  if (!attr_set) {
    LAB_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
    attr_set = true;
  }
  const int per_block = W * U;
  fn<<<(p.n_units + per_block - 1) / per_block, W * 32, gpu::MatvecSmemBytes(p.K, 0, p.norm_w != nullptr), s>>>(p);
  LAB_CUDA_LAUNCH_CHECK("DecodeMatvecKernel");
}

// v11's counters (RunRing with DYN > 0): each launch takes the next pair of this file's pool of
// kRingWorkSlots, zeroed once (each launch leaves its pair zero), so launches that overlap under PDL never
// share one. Call it once before any stream capture (cudaMalloc is not allowed in one): RunChains does.
constexpr int kRingWorkSlots = 512;
template <typename T, size_t PER_LAUNCH>
static int* NextLaunchWords() {  // one pool per T and size, zeroed once, kRingWorkSlots launches deep
  static T* pool = nullptr;
  static unsigned next = 0;
  constexpr size_t kBytes = size_t(kRingWorkSlots) * PER_LAUNCH * sizeof(T);
  if (!pool) {
    LAB_CUDA_CHECK(cudaMalloc(&pool, kBytes));
    LAB_CUDA_CHECK(cudaMemset(pool, 0, kBytes));
  }
  return reinterpret_cast<int*>(pool + size_t(next++ % kRingWorkSlots) * PER_LAUNCH);
}
static int* NextRingWork() { return NextLaunchWords<int, 2>(); }
// v12's words (RunRing with STEAL): kStealGridMax 64-bit words per launch, from a pool that rotates the
// same way. No reset: every launch leaves its words empty.
constexpr int kStealGridMax = 256;
static int* NextStealWords() { return NextLaunchWords<unsigned long long, kStealGridMax>(); }

// v10 and v11 (kernels_matvec_ring.cuh): one block per SM; with `pdl`, launched with programmatic
// dependent launch (the engine's way: its producer streams the first STAGES stages before the previous
// kernel ends).
// Launched by the engine's helper (gpu_opt_launch.cuh), which throws DeviceError if the launch fails (the
// chain prints it with the shape, and skips its row). `static`: each translation unit registers its own
// copy of a kernel (nvcc without relocatable device code), so each needs its own attribute call; an
// inline function's flag would be shared by all of them (session 17: bench_chain.cu's launches failed
// with "invalid argument", the attribute set on bench.cu's copy only).
template <int CW, int ST, int SC, int EPI = gpu::kEpiStore, int DYN = 0, bool STEAL = false>
static void RunRing(const gpu::MatvecParams& p, cudaStream_t s, int sms, bool pdl = false) {
  auto fn = gpu::RingMatvecKernel<CW, ST, SC, EPI, DYN, STEAL>;
  static bool attr_set = false;
  if (!attr_set) {
    LAB_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));  // 227 KB less static
    attr_set = true;
  }
  const int grid = std::min(sms, p.n_units);
  gpu::MatvecParams q = p;
  if (STEAL && grid > kStealGridMax) throw std::invalid_argument("v12: more SMs than kStealGridMax words a launch");
  if (DYN) q.ring_work = STEAL ? NextStealWords() : NextRingWork();
  gpu_opt::Launch(fn, dim3(unsigned(grid)), dim3((CW + 1) * 32), gpu::RingSmemBytes(q, grid, ST, SC, DYN, STEAL), s,
                  pdl, "RingMatvecKernel", q);
}

// v14 (kernels_mlp.cuh): out += W_down SiLU-gated (W_gu x) in one launch of MlpGrid blocks. Without BLOCKED
// the two tensor maps of Wd ([K, H] row-major) are made here, per launch; BLOCKED reads q.Wdb's slices and
// needs none. Throws std::invalid_argument for a shape it cannot run (MlpUnfit), DeviceError if the launch fails.
template <int CW, int ST, int SC, bool BLOCKED = false>
static void RunMlp(const gpu::MlpParams& q, const __half* Wd, cudaStream_t s, int sms, bool pdl = false) {
  auto fn = gpu::RingMlpKernel<CW, ST, SC, BLOCKED>;
  static bool attr_set = false;
  if (!attr_set) {
    LAB_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
    attr_set = true;
  }
  const int grid = gpu::MlpGrid(sms, q.H);
  const std::string unfit = gpu::MlpUnfit(q.K, q.H, grid, SC);
  if (!unfit.empty()) throw std::invalid_argument(unfit);
  gpu::MlpParams p = q;
  p.nu_lo = gpu::MlpNarrow(q.H, grid);
  CUtensorMap lo = {}, hi = {};
  if (!BLOCKED &&
      (!gpu::MakeMlpDownMap(&lo, Wd, q.K, q.H, p.nu_lo) || !gpu::MakeMlpDownMap(&hi, Wd, q.K, q.H, p.nu_lo + 8)))
    throw std::invalid_argument("RingMlpKernel: cuTensorMapEncodeTiled failed");
  gpu_opt::Launch(fn, dim3(unsigned(grid)), dim3((CW + 1) * 32), gpu::MlpSmemBytes(p, ST, SC), s, pdl, "RingMlpKernel",
                  lo, hi, p);
}

// bench_mlp.cu: v14 checked against the fp64 host reference (the folded norm's scale, SiLU, down), then
// timed against the two v10 launches it replaces; rows printed, *all_ok cleared on a failed check.
void RunMlpLab(const cudaDeviceProp& prop, cudaStream_t s, __half* pool, double read_gbps, int reps, bool* all_ok);

// A matvec version of the lab: its name and a launch of y = W x (W [M, K] fp16, x [K] fp32, y [M] fp32) on a
// stream; Versions() (bench_versions.cu) lists them all, v1..v12.
struct Version {
  std::string name;
  std::function<void(const __half*, const float*, float*, int, int, cudaStream_t)> run;
};
std::vector<Version> Versions();

// y = W x with the plain store epilogue: what every engine-kernel version of the lab launches.
inline gpu::MatvecParams PlainParams(const __half* W, const float* x, float* y, int M, int K) {
  gpu::MatvecParams p = {};
  p.W = W;
  p.M = M;
  p.K = K;
  p.n_units = (M + 1) / 2;
  p.x = x;
  p.out = y;
  return p;
}

// The engine's gate_up as the lab launches it: W [2H, K] (gate rows, then up rows), RMSNorm weights g on x,
// y[H] = SiLU(gate) * up.
inline gpu::MatvecParams GateUpParams(const __half* W, const float* x, const float* g, float* y, int H, int K) {
  gpu::MatvecParams p = {};
  p.W = W;
  p.M = 2 * H;
  p.K = K;
  p.n_units = H;
  p.H = H;
  p.x = x;
  p.norm_w = g;
  p.eps = 1e-5f;
  p.out = y;
  return p;
}

// bench_chain.cu: the step's weight stream (32 layers of shapes[0..3], then shapes[4]) as a chain of v5
// launches (stream, CUDA graph, graph + PDL, + L2 prefetch) and as one persistent kernel (chain_stream.cuh,
// its outputs checked against v5 first; a failure clears *all_ok); prints each row against read_gbps and
// returns the chain's bytes.
struct ChainRow {
  std::string how;
  Timing t;
};
double RunChains(const cudaDeviceProp& prop, cudaStream_t s, const std::vector<Shape>& shapes, const float* x,
                 double read_gbps, bool* all_ok, std::vector<ChainRow>* chain_rows);

}  // namespace kbench
}  // namespace lab
