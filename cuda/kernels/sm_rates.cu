// sm_rates: does every SM stream its slice of a matrix at the same rate, and if not, is the difference the
// SM's own (the same in every launch), so that a slice sized per SM could end all blocks together?
//
// Why: session 18's step trace saw each ring kernel's blocks end over 2.6-7.4 us of a launch (gate_up: 7.4
// of 54 us), and two run-time balances of the ring (v11's shared counter, v12's stolen tails) cost more
// than they gave. A balance measured once and applied as static slice sizes costs nothing at run time,
// if the rates are a property of the SMs.
//
// What it does, on one card, in one process:
//   1. `equal`: G = SM-count blocks (one per SM: the ring's shared memory leaves room for one), block b
//      streams the contiguous slice b of a buffer through a 128 KB ring of bulk copies (the producer and
//      consumer warps of RingMatvecKernel, the consumers only xor the bytes). Each block records its SM
//      (%smid) and its start and end (%globaltimer). Rate of an SM: its slice's bytes over its time.
//   2. Each SM's rate, relative to the launch's median, averaged over the launches of each half: the
//      correlation of the two halves says whether the rate belongs to the SM.
//   3. `by_smid`: the same launches with the slice chosen by %smid instead of the block index (equal
//      slices: the peer), and `calibrated`: slices sized by each SM's rate from step 2. Launches alternate,
//      each timed by events; medians and spreads are printed.
// Needs sm_90 (bulk copies). Usage: sm_rates [MB of the buffer, default 235 = gate_up's weights]
// [launches per variant, default 40].
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/gpu_opt/kernels_common.cuh"

namespace {

using namespace lab::gpu;  // GlobalTimer, SmId, PdlWait and the bulk copies (cuda/gpu_opt/kernels_common.cuh)

constexpr int kCw = 8, kStages = 16, kPiece = 8192;  // the engine's ring.c8.s16.k256: 16 stages of 8 KB
constexpr int kPieceChunks = kPiece / 16;

struct Rec {
  unsigned long long start, end;
  int smid, idx;
};

// grid = G, block = (kCw + 1) warps, dynamic smem kStages * kPiece. bounds[0..G] in pieces; slice idx =
// by_smid ? %smid : blockIdx.x (by_smid needs one block per SM and smid < G, checked by the host).
__global__ void __launch_bounds__((kCw + 1) * 32, 1)
    SliceStream(const uint4* buf, const long long* bounds, int by_smid, Rec* rec, unsigned* sink) {
  extern __shared__ __align__(128) uint4 ring[];  // (aligned: RingMatvecKernel's note)
  __shared__ uint64_t full[kStages], empty[kStages];
  const unsigned long long t0 = GlobalTimer();
  const int smid = SmId(), idx = by_smid ? smid : int(blockIdx.x);
  const long long p0 = bounds[idx], n = bounds[idx + 1] - p0;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x == 0)
    for (int s = 0; s < kStages; ++s) {
      MbarInit(&full[s]);
      MbarInit(&empty[s]);
    }
  __syncthreads();
  if (warp == kCw) {
    if (lane == 0)
      for (long long it = 0; it < n; ++it) {
        const int s = int(it % kStages);
        const long long use = it / kStages;
        if (use > 0) MbarWait(&empty[s], unsigned((use - 1) & 1));
        MbarArriveExpectTx(&full[s], kPiece);
        BulkCopyToShared(ring + size_t(s) * kPieceChunks, buf + (p0 + it) * kPieceChunks, kPiece, &full[s]);
      }
  } else {
    unsigned acc = 0;
    for (long long it = warp; it < n; it += kCw) {
      const int s = int(it % kStages);
      MbarWait(&full[s], unsigned((it / kStages) & 1));
      const uint4* w = ring + size_t(s) * kPieceChunks;
#pragma unroll 4
      for (int c = lane; c < kPieceChunks; c += 32) acc ^= w[c].x ^ w[c].y ^ w[c].z ^ w[c].w;
      __syncwarp();
      if (lane == 0) MbarArrive(&empty[s]);
    }
    if (acc == 0x9e3779b9u) atomicAdd(sink, 1u);  // keeps the reads
  }
  __syncthreads();
  if (threadIdx.x == 0) rec[blockIdx.x] = Rec{t0, GlobalTimer(), smid, idx};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double Corr(const std::vector<double>& a, const std::vector<double>& b) {
  const double ma = std::accumulate(a.begin(), a.end(), 0.0) / a.size();
  const double mb = std::accumulate(b.begin(), b.end(), 0.0) / b.size();
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

// Slices in pieces proportional to w (sum of w over the G slices), each at least one piece.
std::vector<long long> Bounds(const std::vector<double>& w, long long pieces) {
  const int G = int(w.size());
  const double tot = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<long long> b(G + 1, 0);
  double c = 0;
  for (int i = 0; i < G; ++i) {
    c += w[i];
    b[i + 1] = std::llround(c / tot * double(pieces));
  }
  b[G] = pieces;
  for (int i = 0; i < G; ++i)
    if (b[i + 1] < b[i]) {
      std::fprintf(stderr, "sm_rates: slice %d has negative size\n", i);
      std::exit(1);
    }
  return b;
}

struct Variant {
  const char* name;
  int by_smid;
  std::vector<long long> bounds;
  long long* d_bounds = nullptr;
  std::vector<double> ms, spread_us;  // per launch: event time, last end - first end
  std::vector<std::vector<double>> rel;  // per launch: each SM's time (start to end) over the launch's median
};

}  // namespace

static int Run(int argc, char** argv) {
  const long long mb = argc > 1 ? std::atoll(argv[1]) : 235;
  const int launches = argc > 2 ? std::atoi(argv[2]) : 40;
  if (argc > 3 || mb < 1 || mb > 65536 || launches < 4 || launches > 100000) {
    std::fprintf(stderr,
                 "usage: sm_rates [MB of the buffer, 1..65536, default 235] [launches a variant, >= 4, default 40]\n");
    return 1;
  }
  cudaDeviceProp prop;
  LAB_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const int G = prop.multiProcessorCount;
  const long long pieces = mb * 1000000 / kPiece;
  std::printf("sm_rates: %s, %d SMs, %lld MB in %d-byte pieces, %d launches a variant\n", prop.name, G,
              pieces * kPiece / 1000000, kPiece, launches);
  uint4* buf;
  LAB_CUDA_CHECK(cudaMalloc(&buf, size_t(pieces) * kPiece));
  LAB_CUDA_CHECK(cudaMemset(buf, 0x5a, size_t(pieces) * kPiece));
  Rec* d_rec;
  unsigned* sink;
  LAB_CUDA_CHECK(cudaMalloc(&d_rec, sizeof(Rec) * G));
  LAB_CUDA_CHECK(cudaMalloc(&sink, 4));
  const int smem = kStages * kPiece;
  LAB_CUDA_CHECK(cudaFuncSetAttribute(SliceStream, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  cudaEvent_t e0, e1;
  LAB_CUDA_CHECK(cudaEventCreate(&e0));
  LAB_CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<Rec> rec(G);
  int bad = 0;

  auto run = [&](Variant& v) {
    LAB_CUDA_CHECK(cudaEventRecord(e0));
    SliceStream<<<G, (kCw + 1) * 32, smem>>>(buf, v.d_bounds, v.by_smid, d_rec, sink);
    LAB_CUDA_CHECK(cudaEventRecord(e1));
    LAB_CUDA_CHECK(cudaEventSynchronize(e1));
    LAB_CUDA_CHECK(cudaGetLastError());
    float ms;
    LAB_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    LAB_CUDA_CHECK(cudaMemcpy(rec.data(), d_rec, sizeof(Rec) * G, cudaMemcpyDeviceToHost));
    std::vector<int> seen(G, 0);
    std::vector<double> t(G, 0), ends;
    for (const Rec& r : rec) {
      if (r.smid < 0 || r.smid >= G || seen[r.smid]++) ++bad;
      else t[r.smid] = double(r.end - r.start);
      ends.push_back(double(r.end));
    }
    const double med = Median(t);
    for (double& x : t) x /= med;
    v.rel.push_back(t);
    v.ms.push_back(ms);
    const auto [first, last] = std::minmax_element(ends.begin(), ends.end());
    v.spread_us.push_back((*last - *first) / 1e3);
  };
  auto upload = [&](Variant& v) {
    if (!v.d_bounds) LAB_CUDA_CHECK(cudaMalloc(&v.d_bounds, sizeof(long long) * (G + 1)));
    LAB_CUDA_CHECK(cudaMemcpy(v.d_bounds, v.bounds.data(), sizeof(long long) * (G + 1), cudaMemcpyHostToDevice));
  };
  auto report = [&](const Variant& v) {
    std::vector<double> sp = v.spread_us, ms = v.ms;
    std::sort(sp.begin(), sp.end());
    std::sort(ms.begin(), ms.end());
    const double bytes = double(pieces) * kPiece;
    std::printf("  %-11s %8.1f us (%.1f-%.1f)  %6.0f GB/s   block ends spread %5.2f us (%.2f-%.2f)\n", v.name,
                ms[ms.size() / 2] * 1e3, ms.front() * 1e3, ms.back() * 1e3, bytes / (ms[ms.size() / 2] * 1e6),
                sp[sp.size() / 2], sp.front(), sp.back());
    return std::string("\"") + v.name + "\": {\"us\": " + std::to_string(ms[ms.size() / 2] * 1e3) +
           ", \"spread_us\": " + std::to_string(sp[sp.size() / 2]) + "}";
  };

  std::vector<double> ones(G, 1.0);
  Variant equal{"equal", 0, Bounds(ones, pieces)};
  upload(equal);
  for (int i = 0; i < 3; ++i) run(equal);  // warm-up
  equal.ms.clear(), equal.spread_us.clear(), equal.rel.clear();
  for (int i = 0; i < launches; ++i) run(equal);

  // Each SM's relative time, mean over each half of the launches.
  std::vector<double> h1(G, 0), h2(G, 0), all(G, 0);
  for (int i = 0; i < launches; ++i)
    for (int s = 0; s < G; ++s) (i < launches / 2 ? h1 : h2)[s] += equal.rel[i][s] / (launches / 2);
  for (int s = 0; s < G; ++s) all[s] = (h1[s] + h2[s]) / 2;
  std::vector<double> sd(G, 0);
  for (int i = 0; i < launches; ++i)
    for (int s = 0; s < G; ++s) sd[s] += (equal.rel[i][s] - all[s]) * (equal.rel[i][s] - all[s]) / launches;
  std::printf("blocks on distinct SMs in every launch: %s\n", bad ? "NO" : "yes");
  std::printf("an SM's time over the launch's median, mean of each half: correlation of the halves %.3f\n",
              Corr(h1, h2));
  std::vector<int> order(G);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return all[a] < all[b]; });
  std::printf("fastest SMs (relative time, sd over launches):");
  for (int i = 0; i < 6; ++i) std::printf(" %d:%.3f(%.3f)", order[i], all[order[i]], std::sqrt(sd[order[i]]));
  std::printf("\nslowest SMs:");
  for (int i = G - 6; i < G; ++i) std::printf(" %d:%.3f(%.3f)", order[i], all[order[i]], std::sqrt(sd[order[i]]));
  std::printf("\nrelative time by SM id:");
  for (int s = 0; s < G; ++s) std::printf("%s%.3f", s % 16 ? " " : "\n  ", all[s]);
  std::printf("\n");

  // Rates from the first half only (the second half checks them), then the three variants alternating.
  std::vector<double> rate(G);
  for (int s = 0; s < G; ++s) rate[s] = 1.0 / h1[s];
  Variant by_smid{"by_smid", 1, Bounds(ones, pieces)}, calibrated{"calibrated", 1, Bounds(rate, pieces)};
  equal.ms.clear(), equal.spread_us.clear(), equal.rel.clear();
  upload(by_smid);
  upload(calibrated);
  for (int i = 0; i < launches; ++i) {
    run(equal);
    run(by_smid);
    run(calibrated);
  }
  std::printf("alternating, %d launches each (median (min-max)):\n", launches);
  const std::string r0 = report(equal), r1 = report(by_smid), r2 = report(calibrated);
  std::printf("blocks on distinct SMs in every launch: %s\n", bad ? "NO" : "yes");
  // One line for the GPU test (py/tests/test_gpu_sm_rates.py).
  std::printf("RESULT {\"card\": \"%s\", \"sms\": %d, \"mb\": %lld, \"distinct\": %s, \"halves_corr\": %.4f, "
              "\"fast_over_slow\": %.4f, %s, %s, %s}\n",
              prop.name, G, pieces * kPiece / 1000000, bad ? "false" : "true", Corr(h1, h2),
              all[order[G - 1]] / all[order[0]], r0.c_str(), r1.c_str(), r2.c_str());

  return bad ? 2 : 0;
}

int main(int argc, char** argv) { return lab::cuda::MainReportingErrors("sm_rates", Run, argc, argv); }
