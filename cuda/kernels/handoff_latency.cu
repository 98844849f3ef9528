// handoff_latency: how long a kernel takes, after its PDL wait returns, to have in shared memory the vector
// the kernel before it wrote: the "first phase" that every decode matvec starts with (1.8-2.3 us a launch
// in the step traces of session 19, cuda/gpu_opt/README.md).
//
// Two kernels per pair, launched back to back with programmatic dependent launch: Writer (G blocks, one
// per SM) streams its share of a weight-sized buffer (as a matvec would; mode "stream") or not (mode
// "idle"), then writes its slice of x (K floats in all). Reader (G blocks) triggers nothing, waits
// (griddepcontrol.wait), stamps %globaltimer, loads all of x (or, as a control, a vector of the same size
// that no kernel writes: "untouched", in L2 after the warm-up), stores it in shared memory, syncs, stamps
// again. Per pair: the mean over blocks of that span, the readers' mean "pre" (from their start to the
// wait's return), the span from the writers' last end to the readers' first release (the drain), and
// (session 21) "last": from the first release to the last block's staged stamp, the critical path that a
// mean over blocks can hide when the blocks are released at different times; and where the readers ran
// (%smid): blocks on the busiest SM ("most") and the SMs used.
// A second table (EngineReader; first run in session 20) adds the engine's own steps one at a time: x in
// fp16, the norm weights, a landed 128 KB ring; 128 KB of shared memory reserved without a ring (kBig,
// session 20); and (kNormL1, session 21) the norm weights' lines asked into L1 before the wait.
// Needs sm_90 (PDL). Usage: handoff_latency [K floats, default 4096] [pairs, default 50].
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/gpu_opt/kernels_common.cuh"

namespace {

using namespace lab::gpu;  // GlobalTimer, SmId, PdlWait, PdlTrigger and the bulk copies (kernels_common.cuh)

constexpr int kMaxSm = 256;
struct Stamps {
  unsigned long long w_end_max;                          // writers: the last block's end
  unsigned long long r_rel_min;                          // readers: the first release
  unsigned long long r_pre_sum, r_phase_sum, r_blocks;   // readers: start to release, release to staged
  unsigned long long r_staged_max;                       // readers: the last block's staged stamp
  unsigned per_sm[kMaxSm];                               // readers: blocks that ran on each SM (%smid)
};

__global__ void __launch_bounds__(256) Writer(const uint4* w, long long chunks_per_block, float* x, int K, int stream,
                                              unsigned* sink, Stamps* st) {
  PdlTrigger();
  unsigned acc = 0;
  if (stream) {
    const uint4* mine = w + size_t(blockIdx.x) * chunks_per_block;
    for (long long c = threadIdx.x; c < chunks_per_block; c += 4 * 256) {
      uint4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) v[u] = __ldcs(mine + (c + u * 256 < chunks_per_block ? c + u * 256 : c));
#pragma unroll
      for (int u = 0; u < 4; ++u) acc ^= v[u].x;
    }
  }
  const int per = (K + gridDim.x - 1) / gridDim.x;
  for (int i = blockIdx.x * per + threadIdx.x; i < min(K, int(blockIdx.x + 1) * per); i += 256)
    x[i] = float(i & 7) + (acc == 0x9e3779b9u ? 1.f : 0.f);
  __syncthreads();
  if (threadIdx.x == 0) atomicMax(&st->w_end_max, GlobalTimer());
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1u);
}

// A reader block's stamps, by its thread 0 after the block's barrier: start (t0), past the wait (t1), staged (t2).
__device__ __forceinline__ void Record(Stamps* st, unsigned long long t0, unsigned long long t1,
                                       unsigned long long t2) {
  if (threadIdx.x != 0) return;
  atomicMin(&st->r_rel_min, t1);
  atomicAdd(&st->r_pre_sum, t1 - t0);
  atomicAdd(&st->r_phase_sum, t2 - t1);
  atomicAdd(&st->r_blocks, 1ull);
  atomicMax(&st->r_staged_max, t2);
  const unsigned sm = unsigned(SmId());
  if (sm < kMaxSm) atomicAdd(&st->per_sm[sm], 1u);
}

__global__ void __launch_bounds__(256) Reader(const float* x, int K, Stamps* st, float* out) {
  extern __shared__ __align__(128) float4 xs[];
  const unsigned long long t0 = GlobalTimer();
  PdlWait();
  const unsigned long long t1 = GlobalTimer();
  const float4* x4 = reinterpret_cast<const float4*>(x);
  for (int i = threadIdx.x; i < K / 4; i += 256) xs[i] = __ldcg(x4 + i);
  __syncthreads();
  Record(st, t0, t1, GlobalTimer());
  if (threadIdx.x == 0 && blockIdx.x == 0) *out = xs[K / 8].x;
}

// The engine's ring tiles do more than Reader between the wait and their first product. EngineReader adds
// it piece by piece (bit flags), so that the first phase of the step traces (1.8-2.3 us a launch, against
// this probe's 0.5 us for 8 KB) can be taken apart: kNorm also reads K fp32 norm weights that no kernel
// writes, as qkv, gate_up and lm_head do (LAB_GPU_NORM_EARLY=0); kRing first fills 128 KB of shared
// memory by bulk copies issued before the wait, as a ring does, and waits for them after it; kHalf reads
// x as fp16 (K halves, 2 bytes each) and unpacks it, as every engine matvec does. grid = G, 256 threads,
// dynamic smem EngineSmem(K, flags). kBig (session 20) reserves the ring's 128 KB without filling it: the
// first run found the readers with a ring faster after their release (0.70 against 1.21 us at K 4096), and
// a block that large cannot share an SM with a writer block, so it may start, and be released, later; kBig
// alone separates that placement from the ring's copies (first run, session 21: as fast as the ring, so the
// placement, not the copies: 128 KB leaves room for one reader an SM, where small readers launched early are
// packed six to an SM on 22 SMs, as the SM columns show). kNormL1 (session 21) has each block ask the norm weights' lines into its
// L1 before the wait (prefetch.global.L1, a line a thread), as the engine's LAB_GPU_NORM_EARLY=all does in
// its register tiles: the norm weights' share of the phase, if L1 keeps them across the wait, goes away.
enum : int { kNorm = 1, kRing = 2, kHalf = 4, kBig = 8, kNormL1 = 16 };
constexpr int kRingBytes = 128 * 1024;
inline size_t EngineSmem(int K, int flags) {
  return size_t(K) * 4 + ((flags & (kRing | kBig)) ? kRingBytes : 0);
}

__global__ void __launch_bounds__(256) EngineReader(const float* x, const float* g, const uint4* ringsrc, int K,
                                                    int flags, Stamps* st, float* out) {
  extern __shared__ __align__(128) float4 es[];
  __shared__ uint64_t ring_bar;
  float4* const xs = es + ((flags & (kRing | kBig)) ? kRingBytes / 16 : 0);
  if ((flags & kRing) && threadIdx.x == 0) {
    MbarInit(&ring_bar);
    MbarArriveExpectTx(&ring_bar, kRingBytes);
    for (int c = 0; c < kRingBytes / 8192; ++c)
      BulkCopyToShared(es + c * 512, ringsrc + (size_t(blockIdx.x) * (kRingBytes / 16)) + c * 512, 8192,
                                  &ring_bar);
  }
  if (flags & kNormL1)
    for (int i = threadIdx.x; i < K / 32; i += 256) PrefetchL1(g + 32 * i);
  const unsigned long long t0 = GlobalTimer();
  PdlWait();
  const unsigned long long t1 = GlobalTimer();
  if (flags & kHalf) {  // x as K halves: 8 a 16-byte chunk, unpacked to fp32
    const uint4* x16 = reinterpret_cast<const uint4*>(x);
    for (int c = threadIdx.x; c < K / 8; c += 256) {
      const uint4 v = __ldcg(x16 + c);
      const __half2* h = reinterpret_cast<const __half2*>(&v);
      float2 f[4];
      for (int j = 0; j < 4; ++j) f[j] = __half22float2(h[j]);
      float4 lo = make_float4(f[0].x, f[0].y, f[1].x, f[1].y), hi = make_float4(f[2].x, f[2].y, f[3].x, f[3].y);
      if (flags & kNorm) {
        const float4* g4 = reinterpret_cast<const float4*>(g);
        const float4 ga = __ldg(g4 + 2 * c), gb = __ldg(g4 + 2 * c + 1);
        lo = make_float4(lo.x * ga.x, lo.y * ga.y, lo.z * ga.z, lo.w * ga.w);
        hi = make_float4(hi.x * gb.x, hi.y * gb.y, hi.z * gb.z, hi.w * gb.w);
      }
      xs[2 * c] = lo;
      xs[2 * c + 1] = hi;
    }
  } else {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int i = threadIdx.x; i < K / 4; i += 256) {
      float4 v = __ldcg(x4 + i);
      if (flags & kNorm) {
        const float4 gv = __ldg(reinterpret_cast<const float4*>(g) + i);
        v = make_float4(v.x * gv.x, v.y * gv.y, v.z * gv.z, v.w * gv.w);
      }
      xs[i] = v;
    }
  }
  if (flags & kRing) MbarWait(&ring_bar, 0);
  __syncthreads();
  Record(st, t0, t1, GlobalTimer());
  if (threadIdx.x == 0 && blockIdx.x == 0) *out = xs[K / 8].x + ((flags & kRing) ? es[7].x : 0.f);
}

}  // namespace

static int Run(int argc, char** argv) {
  const int K = argc > 1 ? std::atoi(argv[1]) : 4096;
  const int pairs = argc > 2 ? std::atoi(argv[2]) : 50;
  if (argc > 3 || K < 256 || K > 32768 || K % 4 || pairs < 4 || pairs > 100000) {
    std::fprintf(stderr, "usage: handoff_latency [K floats, 256..32768, a multiple of 4] [pairs, >= 4]\n");
    return 1;
  }
  cudaDeviceProp prop;
  LAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const int G = prop.multiProcessorCount;
  const long long wbytes = 256LL << 20;  // what the writers stream in mode "stream" (gate_up's size)
  const long long per_block = wbytes / 16 / G;
  uint4* w;
  float *x, *x_other, *out;
  unsigned* sink;
  Stamps* st;
  LAB_CUDA_CHECK(cudaMalloc(&w, size_t(wbytes)));
  LAB_CUDA_CHECK(cudaMemset(w, 0x11, size_t(wbytes)));
  LAB_CUDA_CHECK(cudaMalloc(&x, size_t(K) * 4));
  float* g;  // EngineReader's norm weights
  LAB_CUDA_CHECK(cudaMalloc(&g, size_t(K) * 4));
  LAB_CUDA_CHECK(cudaMemset(g, 0, size_t(K) * 4));
  LAB_CUDA_CHECK(cudaMalloc(&x_other, size_t(K) * 4));
  LAB_CUDA_CHECK(cudaMemset(x_other, 0, size_t(K) * 4));
  LAB_CUDA_CHECK(cudaMalloc(&out, 4));
  LAB_CUDA_CHECK(cudaMalloc(&sink, 4));
  LAB_CUDA_CHECK(cudaMalloc(&st, sizeof(Stamps)));
  cudaStream_t s;
  LAB_CUDA_CHECK(cudaStreamCreate(&s));
  LAB_CUDA_CHECK(cudaFuncSetAttribute(Reader, cudaFuncAttributeMaxDynamicSharedMemorySize, K * 4));
  std::printf("handoff_latency: %s, %d SMs, x of %d floats, %d pairs a row\n", prop.name, G, K, pairs);
  // One row: `pairs` writer/reader pairs (after 2 warm-up pairs); medians of the readers' mean phase and
  // pre, of the drain, of `last`, and of the readers' placement (blocks on the busiest SM, SMs used).
  struct Row {
    double phase, pre, drain, last, most, used;  // most: readers on the busiest SM; used: SMs with one
  };
  auto measure = [&](int stream, int pdl, size_t smem, auto kernel, auto... args) {
    std::vector<double> phase, pre, drain, last, most, used;
    for (int i = 0; i < pairs + 2; ++i) {
      Stamps z = {0, ~0ull, 0, 0, 0, 0, {}};
      LAB_CUDA_CHECK(cudaMemcpyAsync(st, &z, sizeof(z), cudaMemcpyHostToDevice, s));
      Writer<<<G, 256, 0, s>>>(w, per_block, x, K, stream, sink, st);
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(G);
      cfg.blockDim = dim3(256);
      cfg.dynamicSmemBytes = smem;
      cfg.stream = s;
      cudaLaunchAttribute at;
      at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      at.val.programmaticStreamSerializationAllowed = pdl;
      cfg.attrs = &at;
      cfg.numAttrs = 1;
      LAB_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, args...));
      Stamps h;
      LAB_CUDA_CHECK(cudaMemcpyAsync(&h, st, sizeof(h), cudaMemcpyDeviceToHost, s));
      LAB_CUDA_CHECK(cudaStreamSynchronize(s));
      if (i < 2) continue;  // warm-up
      phase.push_back(double(h.r_phase_sum) / double(h.r_blocks) / 1e3);
      pre.push_back(double(h.r_pre_sum) / double(h.r_blocks) / 1e3);
      drain.push_back((double(h.r_rel_min) - double(h.w_end_max)) / 1e3);
      last.push_back((double(h.r_staged_max) - double(h.r_rel_min)) / 1e3);
      most.push_back(*std::max_element(h.per_sm, h.per_sm + kMaxSm));
      used.push_back(double(std::count_if(h.per_sm, h.per_sm + kMaxSm, [](unsigned n) { return n > 0; })));
    }
    auto med = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    return Row{med(phase), med(pre), med(drain), med(last), med(most), med(used)};
  };
  std::printf("%-8s %-13s %-4s %12s %12s %12s %6s %6s\n", "writers", "reader reads", "PDL", "phase us", "pre us", "drain us",
              "most", "SMs");
  std::string result;
  for (int stream = 0; stream < 2; ++stream)
    for (int other = 0; other < 2; ++other)
      for (int pdl = 1; pdl >= 0; --pdl) {
        const Row r = measure(stream, pdl, size_t(K) * 4, Reader, static_cast<const float*>(other ? x_other : x), K,
                              st, out);
        std::printf("%-8s %-13s %-4s %12.2f %12.2f %12.2f %6.0f %6.0f\n", stream ? "stream" : "idle",
                    other ? "untouched" : "their x", pdl ? "yes" : "no", r.phase, r.pre, r.drain, r.most, r.used);
        char row[160];
        std::snprintf(row, sizeof row, "%s{\"stream\": %d, \"untouched\": %d, \"pdl\": %d, \"phase_us\": %.3f}",
                      result.empty() ? "" : ", ", stream, other, pdl, r.phase);
        result += row;
      }
  // The engine's steps added one by one (EngineReader), writers streaming, PDL on, the writer's x.
  std::printf("engine-like readers (writers stream, PDL): %-28s %12s %12s %12s %12s %6s %6s\n", "", "phase us",
              "pre us", "drain us", "last us", "most", "SMs");
  std::string engine;
  const int kFlagRows[] = {0,           kHalf,         kHalf | kNorm, kHalf | kRing, kHalf | kNorm | kRing,
                           kHalf | kBig, kHalf | kNorm | kNormL1};
  for (int flags : kFlagRows) {
    const size_t smem = EngineSmem(K, flags);
    LAB_CUDA_CHECK(cudaFuncSetAttribute(EngineReader, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const Row r = measure(1, 1, smem, EngineReader, static_cast<const float*>(x), static_cast<const float*>(g),
                          static_cast<const uint4*>(w), K, flags, st, out);
    const std::string name = std::string(flags & kHalf ? "x fp16" : "x fp32") +
                             (flags & kNorm ? " + norm weights" : "") + (flags & kNormL1 ? " (into L1 before the wait)" : "") +
                             (flags & kRing ? " + 128 KB ring landed" : "") +
                             (flags & kBig ? " + 128 KB shared memory, no ring" : "");
    std::printf("  %-70s %12.2f %12.2f %12.2f %12.2f %6.0f %6.0f\n", name.c_str(), r.phase, r.pre, r.drain, r.last,
                r.most, r.used);
    char row[300];
    std::snprintf(row, sizeof row,
                  "%s{\"flags\": %d, \"phase_us\": %.3f, \"pre_us\": %.3f, \"drain_us\": %.3f, \"last_us\": %.3f, "
                  "\"most\": %.0f, \"sms\": %.0f}",
                  engine.empty() ? "" : ", ", flags, r.phase, r.pre, r.drain, r.last, r.most, r.used);
    engine += row;
  }
  std::printf("RESULT {\"k\": %d, \"rows\": [%s], \"engine\": [%s]}\n", K, result.c_str(),
              engine.c_str());  // py/tests/test_gpu_lab_probes.py
  return 0;
}

int main(int argc, char** argv) { return lab::cuda::MainReportingErrors("handoff_latency", Run, argc, argv); }
