// stream_layout: decode's weight stream taken apart, on this machine, with cc/cpu_opt's own matvec.
//
// Decode reads a step's weights as ~211 matrices (SmolLM2: 7 per layer x 30, and lm_head), each split
// by rows over the threads, with a barrier after each; lab._membw's read ceiling is one long stream per
// thread. This program times the same bytes (2 MiB pages, as cpu_opt holds them) several ways,
// interleaved, with the ceiling's kind of read after each round, so that a slow or fast minute of a
// shared machine hits every way alike:
//   long      one matrix of all the bytes, rows split over the threads (one long stream per thread)
//   forkjoin  the layers' matrices one after the other, a parallel region each (cpu_opt's MatMul)
//   barrier   the same in one parallel region, a barrier after each matrix
//   nosync    the same without barriers (each thread streams its rows of every matrix back to back)
//   contig    as `barrier`, but each thread's rows of all matrices lie one after the other in memory
//             (one long stream per thread again, with the barriers kept)
// Each way's GB/s = weight bytes / time. Shapes: SmolLM2-135M's layer (dim 576, hidden 1536, 3 kv heads
// of 64), repeated to fill --mib.
//
//   bazel run //cc/cpu_opt:stream_layout -- [rounds] [mib]      (OMP_NUM_THREADS: the threads)
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cc/core/huge_pages.h"
#include "cc/cpu_opt/kernels.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kShapes[7][2] = {{576, 576}, {192, 576}, {192, 576}, {576, 576},
                                   {1536, 576}, {1536, 576}, {576, 1536}};  // rows, n: q k v o gate up down

struct Mat {
  const uint16_t* base[64];  // per thread: the address of row 0 as that thread sees it (contig layout)
  int64_t rows, n;
};

// Thread t's rows of a matrix: the same split as an OpenMP static schedule over whole rows.
void Rows(int64_t rows, int t, int nt, int64_t* i0, int64_t* i1) {
  *i0 = rows * t / nt;
  *i1 = rows * (t + 1) / nt;
}

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The ceiling's kind of read: each thread sums its half of a float array with 8 accumulators (AVX2).
__attribute__((target("avx2"))) double ReadGBs(const float* a, size_t n) {
  const auto t0 = Clock::now();
  double total = 0;
#pragma omp parallel reduction(+ : total)
  {
    int64_t lo, hi;
    Rows(static_cast<int64_t>(n / 64), omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
    __m256 s[8];
    for (auto& v : s) v = _mm256_setzero_ps();
    for (int64_t b = lo; b < hi; ++b)
      for (int j = 0; j < 8; ++j) s[j] = _mm256_add_ps(s[j], _mm256_load_ps(a + b * 64 + j * 8));
    alignas(32) float t[8];
    for (int j = 1; j < 8; ++j) s[0] = _mm256_add_ps(s[0], s[j]);
    _mm256_store_ps(t, s[0]);
    for (float v : t) total += v;
  }
  static volatile double sink;
  sink = total;
  return n * 4.0 / Seconds(t0) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 12;
  const int64_t mib = argc > 2 ? std::atoi(argv[2]) : 256;
  if (rounds < 1 || mib < 16 || mib > (1 << 16)) {
    std::fprintf(stderr, "usage: stream_layout [rounds >= 1] [mib 16..65536]\n");
    return 2;
  }
  const lab::cpu_opt::Kernels& K = lab::cpu_opt::SelectKernels();
  const int nt = omp_get_max_threads();
  if (nt > 64) {
    std::fprintf(stderr, "at most 64 threads\n");
    return 2;
  }
  int64_t layer = 0;
  for (auto& s : kShapes) layer += s[0] * s[1];
  const int64_t layers = std::max<int64_t>(1, (mib << 20) / (layer * 2));
  const int64_t elems = layers * layer;
  // Two copies of the weights (plain layout, contiguous-per-thread layout) and the read array.
  lab::PageBuffer plain(elems * 2, lab::PageKind::kHuge), contig(elems * 2, lab::PageKind::kHuge),
      sum(elems * 2, lab::PageKind::kHuge);
  auto* W = static_cast<uint16_t*>(plain.data());
  auto* C = static_cast<uint16_t*>(contig.data());
  auto* S = static_cast<float*>(sum.data());
  std::vector<Mat> mats;
  {
    std::vector<int64_t> offset(nt + 1, 0);  // contig: thread t's region starts at offset[t]
    for (int64_t l = 0; l < layers; ++l)
      for (auto& s : kShapes)
        for (int t = 0; t < nt; ++t) {
          int64_t i0, i1;
          Rows(s[0], t, nt, &i0, &i1);
          offset[t + 1] += (i1 - i0) * s[1];
        }
    for (int t = 0; t < nt; ++t) offset[t + 1] += offset[t];
    std::vector<int64_t> at(offset.begin(), offset.end() - 1);
    for (int64_t l = 0; l < layers; ++l)
      for (auto& s : kShapes) {
        Mat m{{}, s[0], s[1]};
        for (int t = 0; t < nt; ++t) {
          int64_t i0, i1;
          Rows(s[0], t, nt, &i0, &i1);
          m.base[t] = C + at[t] - i0 * s[1];  // row i of thread t at C + at[t] + (i - i0) * n
          at[t] += (i1 - i0) * s[1];
        }
        mats.push_back(m);
      }
  }
  // Random fp16 weights in [1, 2) (never zeros) written into both layouts, the read array likewise.
  uint32_t x = 2463534242u;
  {
    int64_t w = 0;
    for (const Mat& m : mats) {
      for (int64_t i = 0; i < m.rows * m.n; ++i) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        W[w + i] = static_cast<uint16_t>(0x3c00 | (x & 0x3ff));
      }
      for (int t = 0; t < nt; ++t) {
        int64_t i0, i1;
        Rows(m.rows, t, nt, &i0, &i1);
        for (int64_t i = i0; i < i1; ++i)
          std::copy(W + w + i * m.n, W + w + (i + 1) * m.n, const_cast<uint16_t*>(m.base[t]) + i * m.n);
      }
      w += m.rows * m.n;
    }
    for (int64_t i = 0; i < elems / 2; ++i) S[i] = static_cast<float>(i & 1023) * 0.001f;
  }
  std::vector<float> in(1536, 0.5f), out(std::max<int64_t>(1536, elems / 576));  // out[i] for every row i
  const double bytes = elems * 2.0;

  auto plain_way = [&](int mode) {  // 0 forkjoin, 1 barrier, 2 nosync
    const auto t0 = Clock::now();
    if (mode == 0) {
      int64_t w = 0;
      for (const Mat& m : mats) {
#pragma omp parallel
        {
          int64_t i0, i1;
          Rows(m.rows, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
          K.matvec(out.data(), in.data(), W + w, m.n, i0, i1);
        }
        w += m.rows * m.n;
      }
    } else {
#pragma omp parallel
      {
        int64_t w = 0;
        for (const Mat& m : mats) {
          int64_t i0, i1;
          Rows(m.rows, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
          K.matvec(out.data(), in.data(), W + w, m.n, i0, i1);
          w += m.rows * m.n;
          if (mode == 1) {
#pragma omp barrier
          }
        }
      }
    }
    return bytes / Seconds(t0) / 1e9;
  };
  auto contig_way = [&] {
    const auto t0 = Clock::now();
#pragma omp parallel
    {
      const int t = omp_get_thread_num();
      for (const Mat& m : mats) {
        int64_t i0, i1;
        Rows(m.rows, t, omp_get_num_threads(), &i0, &i1);
        K.matvec(out.data(), in.data(), m.base[t], m.n, i0, i1);
#pragma omp barrier
      }
    }
    return bytes / Seconds(t0) / 1e9;
  };
  auto long_way = [&] {  // all the bytes as one [elems / 576, 576] matrix
    const auto t0 = Clock::now();
#pragma omp parallel
    {
      int64_t i0, i1;
      Rows(elems / 576, omp_get_thread_num(), omp_get_num_threads(), &i0, &i1);
      K.matvec(out.data(), in.data(), W, 576, i0, i1);
    }
    return bytes / Seconds(t0) / 1e9;
  };

  std::printf("stream_layout: %s matvec, %d thread(s), %lld layers of SmolLM2-135M shapes = %.0f MiB on 2 MiB pages "
              "(THP granted: %.0f%%), %d rounds\n",
              K.isa, nt, static_cast<long long>(layers), bytes / 1048576.0, 100 * plain.HugeFraction(), rounds);
  std::printf("GB/s of weights per way (best of 2 passes), then the read after the round (best of 2):\n");
  const char* names[5] = {"long", "forkjoin", "barrier", "nosync", "contig"};
  std::vector<std::vector<double>> all(5);
  std::vector<double> reads;
  for (int r = 0; r < rounds; ++r) {
    double g[5];
    for (int k = 0; k < 5; ++k) {
      const int way = (k + r) % 5;  // rotated order
      double best = 0;
      for (int p = 0; p < 2; ++p)
        best = std::max(best, way == 0 ? long_way() : way == 4 ? contig_way() : plain_way(way - 1));
      g[way] = best;
      all[way].push_back(best);
    }
    const double rd = std::max(ReadGBs(S, elems / 2), ReadGBs(S, elems / 2));
    reads.push_back(rd);
    std::printf("round %2d:", r + 1);
    for (int k = 0; k < 5; ++k) std::printf("  %s %5.1f (%3.0f%%)", names[k], g[k], 100 * g[k] / rd);
    std::printf("  | read %5.1f\n", rd);
    std::fflush(stdout);
  }
  // Per way, the median of the per-round ratio to the read after the round; where the read moved by more
  // than 30% over the run (this VM's slow and fast phases), for the rounds below and above the midpoint.
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  const double lo = *std::min_element(reads.begin(), reads.end()), hi = *std::max_element(reads.begin(), reads.end());
  struct Group {
    const char* name;
    double from, to;
  };
  std::vector<Group> groups = {{"all rounds", 0, 1e30}};
  if (hi > 1.3 * lo) groups.push_back({"slow rounds", 0, (lo + hi) / 2}), groups.push_back({"fast rounds", (lo + hi) / 2, 1e30});
  for (const Group& g : groups) {
    std::vector<double> rd;
    std::vector<std::vector<double>> pct(5);
    for (size_t r = 0; r < reads.size(); ++r) {
      if (reads[r] < g.from || reads[r] >= g.to) continue;
      rd.push_back(reads[r]);
      for (int k = 0; k < 5; ++k) pct[k].push_back(100 * all[k][r] / reads[r]);
    }
    if (rd.empty()) continue;
    std::printf("%s (%zu, read median %.1f GB/s), median %% of the read:", g.name, rd.size(), median(rd));
    for (int k = 0; k < 5; ++k) std::printf("  %s %.0f%%", names[k], median(pct[k]));
    std::printf("\n");
  }
  return 0;
}
