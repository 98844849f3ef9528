// latency_under_load: how long a dependent load takes on one SM while the weights stream, and whether
// what slows it is the streaming on its own SM or anywhere on the chip.
//
// Why: session 19's step traces (cuda/gpu_opt/README.md, "Session 19") found that every microsecond
// o_proj's weights stream during attention costs attention about as much: attention's chain of
// dependent loads (q, the partials: L2 hits) waits behind the prefetch. If the wait is in the SM's own
// memory pipeline, a prefetch kept off attention's SMs would be free; if it is in the L2 or HBM queues
// every SM shares, nothing placed elsewhere helps.
//
// What it does: one block per SM (shared memory forces it), block 0's lane 0 of warp 0 chases pointers
// (each load's address is the previous load's value) through a set of 128-byte lines, timing H hops with
// %globaltimer. Two sets: 64 lines, read in a warm-up first and kept in L2 by a persisting access
// policy window (an L2 hit each hop), and 1 GiB of random lines (an HBM read each hop). Meanwhile, by
// mode, other warps stream 4 GiB of other memory until the chase ends:
//   idle        nothing else runs
//   remote_ldg  blocks 1..G-1: 7 warps of 16-byte loads, 8 per lane in flight (the register tiles' way)
//   remote_tma  blocks 1..G-1: a 112 KB ring of 8 KB bulk copies, 7 consumer warps (the ring tiles' way)
//   half_tma    the same on blocks 1..G/2-1 only
//   local_ldg   block 0's warps 1..7 only, loads (block 0 streams exactly as a remote block does)
//   local_tma   block 0's producer only, bulk copies
// Prints, per mode and set, the median ns per hop over 9 launches (min-max), and the streamers' GB/s; each
// launch's chase goes on from where the last one stopped, so the 1 GiB set's lines are not in L2.
// Needs sm_90 (bulk copies). Usage: latency_under_load [hops per launch, default 2000].
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/gpu_opt/kernels_common.cuh"

namespace {

using namespace lab::gpu;  // GlobalTimer, PdlWait and the bulk copies (cuda/gpu_opt/kernels_common.cuh)

enum Mode { kIdle, kRemoteLdg, kRemoteTma, kHalfTma, kLocalLdg, kLocalTma, kModes };
const char* const kModeName[kModes] = {"idle", "remote_ldg", "remote_tma", "half_tma", "local_ldg", "local_tma"};

constexpr int kWarps = 8, kStream = kWarps - 1;  // warp 0: block 0's chase; warps 1..7 stream
constexpr int kStages = 14, kPiece = 8192;         // a 112 KB ring; stage s goes to warp 1 + s % 7
constexpr long long kStreamBytes = 4LL << 30;

struct Out {
  unsigned long long t0, t1, bytes;  // the chase's start and end; bytes streamed (all blocks)
  unsigned end, sink;                 // the chase's last index; a sink for the streamed bytes
};

// grid = G, block = kWarps warps + 1 (the producer), dynamic smem kStages * kPiece.
__global__ void __launch_bounds__((kWarps + 1) * 32, 1)
    Probe(const unsigned* chase, unsigned start, int hops, int mode, const uint4* stream, volatile int* stop,
          Out* out) {
  extern __shared__ __align__(128) uint4 ring[];  // (aligned: RingMatvecKernel's note)
  __shared__ uint64_t full[kStages], empty[kStages];
  __shared__ long long end_it;  // the producer's first end marker (consumers stop there)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, G = gridDim.x, b = blockIdx.x;
  const bool remote = mode == kRemoteLdg || mode == kRemoteTma || mode == kHalfTma;
  const bool tma = mode == kRemoteTma || mode == kHalfTma || mode == kLocalTma;
  const bool streams =
      remote ? (b > 0 && (mode != kHalfTma || b < G / 2)) : (b == 0 && (mode == kLocalLdg || mode == kLocalTma));
  const long long slice = kStreamBytes / 16 / G;  // 16-byte chunks per block
  const uint4* mine = stream + size_t(b) * slice;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      MbarInit(&full[s]);
      MbarInit(&empty[s]);
    }
    end_it = 1LL << 62;
  }
  __syncthreads();
  unsigned long long bytes = 0;
  unsigned acc = 0;
  if (b == 0 && warp == 0) {  // the chase: each load's address is the previous load's value
    if (lane == 0) {
      unsigned i = start;
      const unsigned long long t0 = GlobalTimer();
      for (int h = 0; h < hops; ++h) i = __ldcg(chase + i);
      const unsigned long long t1 = GlobalTimer();
      out->t0 = t0;
      out->t1 = t1;
      out->end = i;
      __threadfence();
      *stop = 1;
    }
  } else if (streams && tma) {
    const long long pieces = slice * 16 / kPiece;
    if (warp == kWarps) {  // producer: bulk copies until told to stop, then one end marker per consumer
      if (lane == 0)
        for (long long it = 0, last = -1; last < 0 || it < last; ++it) {
          const int s = int(it % kStages);
          if (it >= kStages) MbarWait(&empty[s], unsigned(((it / kStages) - 1) & 1));
          if (last < 0 && it % 32 == 31 && *stop) {  // a blocking L2 read: once every 256 KB
            last = it + kStream;
            *static_cast<volatile long long*>(&end_it) = it;
          }
          if (last >= 0) {
            MbarArrive(&full[s]);  // a marker: no bytes
            continue;
          }
          MbarArriveExpectTx(&full[s], kPiece);
          BulkCopyToShared(ring + size_t(s) * (kPiece / 16), mine + (it % pieces) * (kPiece / 16), kPiece, &full[s]);
          bytes += kPiece;
        }
    } else if (warp > 0) {  // consumers: warp 1 + s % 7 takes stage s
      for (long long it = warp - 1;; it += kStream) {
        const int s = int(it % kStages);
        MbarWait(&full[s], unsigned((it / kStages) & 1));
        if (it >= *static_cast<volatile long long*>(&end_it)) break;
        const uint4* w = ring + size_t(s) * (kPiece / 16);
        for (int c = lane; c < kPiece / 16; c += 32) acc ^= w[c].x;
        __syncwarp();
        if (lane == 0) MbarArrive(&empty[s]);
      }
    }
  } else if (streams && warp > 0 && warp < kWarps) {  // loads: 8 16-byte loads a lane in flight
    const long long per_warp = slice / kStream;
    const uint4* p = mine + size_t(warp - 1) * per_warp;
    for (long long off = lane, n = 0; n % 16 != 15 || !*stop; off += 8 * 32, ++n) {  // stop read every 16 rounds
      uint4 v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = __ldcs(p + (off + u * 32) % per_warp);
#pragma unroll
      for (int u = 0; u < 8; ++u) acc ^= v[u].x;
      bytes += 8 * 16;
    }
  }
  if (acc == 0x9e3779b9u) atomicAdd(&out->sink, 1u);
  if (bytes) atomicAdd(&out->bytes, bytes);
}

// A random cycle through n lines of 32 unsigned (128 bytes) each, starting at line 0: element 32 l holds
// the index of the next line's first element.
std::vector<unsigned> Cycle(size_t n, unsigned seed) {
  std::vector<unsigned> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::mt19937 rng(seed);
  std::shuffle(order.begin() + 1, order.end(), rng);
  std::vector<unsigned> v(n * 32, 0);
  for (size_t i = 0; i < n; ++i) v[size_t(order[i]) * 32] = order[(i + 1) % n] * 32;
  return v;
}

}  // namespace

static int Run(int argc, char** argv) {
  const int hops = argc > 1 ? std::atoi(argv[1]) : 2000;
  if (argc > 2 || hops < 10 || hops > 1000000) {
    std::fprintf(stderr, "usage: latency_under_load [hops per launch, 10..1000000, default 2000]\n");
    return 1;
  }
  cudaDeviceProp prop;
  LAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const int G = prop.multiProcessorCount;
  std::printf("latency_under_load: %s, %d SMs, %d hops a launch, streaming over %lld MB\n", prop.name, G, hops,
              kStreamBytes >> 20);
  struct Set {
    const char* name;
    size_t lines;
    unsigned* d = nullptr;
  } sets[2] = {{"L2 hit (64 lines, persisting)", 64}, {"HBM (1 GiB of random lines)", (1u << 30) / 128}};
  for (Set& s : sets) {
    const std::vector<unsigned> v = Cycle(s.lines, 7u + unsigned(s.lines));
    LAB_CUDA_CHECK(cudaMalloc(&s.d, v.size() * 4));
    LAB_CUDA_CHECK(cudaMemcpy(s.d, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  }
  uint4* stream;
  LAB_CUDA_CHECK(cudaMalloc(&stream, size_t(kStreamBytes)));
  LAB_CUDA_CHECK(cudaMemset(stream, 0x3c, size_t(kStreamBytes)));
  int* stop;
  Out* d_out;
  LAB_CUDA_CHECK(cudaMalloc(&stop, 4));
  LAB_CUDA_CHECK(cudaMalloc(&d_out, sizeof(Out)));
  cudaStream_t st;
  LAB_CUDA_CHECK(cudaStreamCreate(&st));
  // Keep the small set in L2 against the stream's lines.
  LAB_CUDA_CHECK(cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, 1 << 20));
  cudaStreamAttrValue attr = {};
  attr.accessPolicyWindow.base_ptr = sets[0].d;
  attr.accessPolicyWindow.num_bytes = sets[0].lines * 128;
  attr.accessPolicyWindow.hitRatio = 1.0f;
  attr.accessPolicyWindow.hitProp = cudaAccessPropertyPersisting;
  attr.accessPolicyWindow.missProp = cudaAccessPropertyStreaming;
  LAB_CUDA_CHECK(cudaStreamSetAttribute(st, cudaStreamAttributeAccessPolicyWindow, &attr));
  const int smem = kStages * kPiece;
  LAB_CUDA_CHECK(cudaFuncSetAttribute(Probe, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));

  std::string result = std::string("RESULT {\"card\": \"") + prop.name + "\"";
  for (int k = 0; k < 2; ++k) {
    const Set& s = sets[k];
    std::printf("%s:\n", s.name);
    result += std::string(", \"") + (k == 0 ? "l2" : "hbm") + "\": {";
    unsigned next = 0;  // each launch goes on where the last one stopped
    for (int m = 0; m < kModes; ++m) {
      std::vector<double> ns, gbs;
      for (int rep = 0; rep < 10; ++rep) {
        LAB_CUDA_CHECK(cudaMemsetAsync(stop, 0, 4, st));
        LAB_CUDA_CHECK(cudaMemsetAsync(d_out, 0, sizeof(Out), st));
        Probe<<<G, (kWarps + 1) * 32, smem, st>>>(s.d, next, hops, m, stream, stop, d_out);
        LAB_CUDA_CHECK(cudaGetLastError());
        LAB_CUDA_CHECK(cudaStreamSynchronize(st));
        Out o;
        LAB_CUDA_CHECK(cudaMemcpy(&o, d_out, sizeof(Out), cudaMemcpyDeviceToHost));
        next = o.end;
        if (rep == 0) continue;  // warm-up (the small set into L2)
        const double t = double(o.t1 - o.t0);
        ns.push_back(t / hops);
        gbs.push_back(double(o.bytes) / t);
      }
      std::sort(ns.begin(), ns.end());
      std::sort(gbs.begin(), gbs.end());
      std::printf("  %-11s %7.0f ns a hop (%.0f-%.0f)   streamers %6.0f GB/s\n", kModeName[m], ns[ns.size() / 2],
                  ns.front(), ns.back(), gbs[gbs.size() / 2]);
      result += std::string(m ? ", " : "") + "\"" + kModeName[m] + "\": [" + std::to_string(ns[ns.size() / 2]) + ", " +
                std::to_string(gbs[gbs.size() / 2]) + "]";
    }
    result += "}";
  }
  std::printf("%s}\n", result.c_str());  // for py/tests/test_gpu_lab_probes.py: [ns a hop, streamers GB/s]
  return 0;
}

int main(int argc, char** argv) { return lab::cuda::MainReportingErrors("latency_under_load", Run, argc, argv); }
