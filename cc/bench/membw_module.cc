// lab._membw: the machine's CPU ceilings, measured with all cores (OpenMP).
//
//   read_bandwidth(n_bytes, repeats, threads=0, isa="auto", pages="huge", schedule="guided") -> [GB/s per pass]
//                    sum of a float array on 2 MiB ("huge", the ceiling) or 4 KiB ("small") pages, its
//                    256 KiB chunks dealt to the threads guided (as they free up) or static (equal shares)
//   read_bandwidth_pages(...same...) -> ([GB/s per pass], share of the array on 2 MiB pages)
//   fma_peak(isa="auto", seconds=0.2, threads=0) -> GFLOP/s           independent FMA chains
//   read_sum(n_bytes, schedule="guided", threads=0) -> the sum one pass computes (a check, not a ceiling)
//   simd_levels() -> e.g. ["avx512", "avx2", "scalar"] (those this CPU runs; the FMA kernel needs
//                    avx2 or avx512, the read kernel runs on all three);  max_threads()
//
// The read kernel sums a large float array (first-touched by the threads that later read it) with
// eight independent vector accumulators per thread, so neither add latency nor a single core's load
// ports limit it: the time is DRAM's. The chunks go to whichever thread is free (guided), so one slow
// thread of a shared host does not hold the pass back: with equal shares the GPU host's Xeon read less
// than cpu_opt's guided decode then streamed (cc/cpu_opt/README.md, "Where a decode step's time goes"). The FMA kernel runs 12 independent FMA chains per thread on
// registers only; FLOPs = 2 per lane per FMA. The array lives in a lab::PageBuffer (cc/core/huge_pages.h):
// on 2 MiB pages by default, since a stream on 4 KiB pages pays a page-table walk per 4 KiB, which on
// a virtual machine reads measurably below what the memory can deliver (the machine's ceiling is the
// best it can do; the engines that stream weights put them on the same pages). Both release the GIL. Kernels are compiled per ISA
// with target attributes and chosen at run time, so one .so runs on any x86-64 host.
#include <immintrin.h>
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "cc/core/huge_pages.h"

namespace py = pybind11;

namespace {

using Clock = std::chrono::steady_clock;

bool HasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool HasAvx512() { return __builtin_cpu_supports("avx512f"); }

// ---- read kernels: sum of p[0..n) ----------------------------------------------------------------

__attribute__((target("avx512f"))) double SumAvx512(const float* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    a4 = _mm512_add_ps(a4, _mm512_load_ps(p + i + 64));
    a5 = _mm512_add_ps(a5, _mm512_load_ps(p + i + 80));
    a6 = _mm512_add_ps(a6, _mm512_load_ps(p + i + 96));
    a7 = _mm512_add_ps(a7, _mm512_load_ps(p + i + 112));
  }
  a0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                     _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
  double s = _mm512_reduce_add_ps(a0);
  for (; i < n; ++i) s += p[i];
  return s;
}

__attribute__((target("avx2"))) double SumAvx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    a4 = _mm256_add_ps(a4, _mm256_load_ps(p + i + 32));
    a5 = _mm256_add_ps(a5, _mm256_load_ps(p + i + 40));
    a6 = _mm256_add_ps(a6, _mm256_load_ps(p + i + 48));
    a7 = _mm256_add_ps(a7, _mm256_load_ps(p + i + 56));
  }
  a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                     _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  alignas(32) float t[8];
  _mm256_store_ps(t, a0);
  double s = 0;
  for (float v : t) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

double SumScalar(const float* p, size_t n) {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) a[k] += p[i + k];
  double s = 0;
  for (float v : a) s += v;
  for (; i < n; ++i) s += p[i];
  return s;
}

using SumFn = double (*)(const float*, size_t);

SumFn PickSum(const std::string& isa) {
  if ((isa == "auto" || isa == "avx512") && HasAvx512()) return SumAvx512;
  if ((isa == "auto" || isa == "avx2") && HasAvx2()) return SumAvx2;
  if (isa == "auto" || isa == "scalar") return SumScalar;
  throw std::invalid_argument("ISA \"" + isa + "\" is not available on this CPU");
}

// Each thread reads (and first touched) its own contiguous, 64-float-aligned slice.
void Slice(size_t n, int tid, int nt, size_t* lo, size_t* hi) {
  const size_t blocks = n / 64, per = blocks / nt, extra = blocks % nt;
  const size_t b0 = tid * per + std::min<size_t>(tid, extra);
  *lo = b0 * 64;
  *hi = (b0 + per + (static_cast<size_t>(tid) < extra ? 1 : 0)) * 64;
  if (tid == nt - 1) *hi = n;
}

lab::PageKind Pages(const std::string& pages) {
  if (pages == "huge") return lab::PageKind::kHuge;
  if (pages == "small") return lab::PageKind::kSmall;
  throw std::invalid_argument("pages must be \"huge\" or \"small\", not \"" + pages + "\"");
}

// A float array of n_bytes on the given pages, first-touched by the threads that later read it.
lab::PageBuffer TouchedArray(int64_t n_bytes, const std::string& pages, int nt) {
  if (n_bytes < (1 << 20)) throw std::invalid_argument("n_bytes must be at least 1 MiB");
  const size_t n = static_cast<size_t>(n_bytes) / sizeof(float);
  lab::PageBuffer buf(n * sizeof(float), Pages(pages));
  float* a = static_cast<float*>(buf.data());
  // First touch by the reading thread (NUMA placement); values are varied, never zeros.
#pragma omp parallel num_threads(nt)
  {
    size_t lo, hi;
    Slice(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
    uint32_t x = 2463534242u + 977u * omp_get_thread_num();
    for (size_t i = lo; i < hi; ++i) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      a[i] = static_cast<float>(x & 0xffff) * (1.0f / 65536.0f) - 0.5f;
    }
  }
  return buf;
}

struct Reads {
  std::vector<double> gbps;  // one per timed pass
  double huge_fraction;      // of the array read, after the passes (PageBuffer::HugeFraction)
  double sum;                // what the last pass summed (read_sum: both schedules must read every value)
};

constexpr size_t kChunk = 65536;  // floats per chunk of a guided pass (256 KiB)

Reads ReadBandwidth(int64_t n_bytes, int repeats, int threads, const std::string& isa, const std::string& pages,
                    const std::string& schedule) {
  if (repeats < 1) throw std::invalid_argument("repeats must be >= 1");
  if (schedule != "guided" && schedule != "static")
    throw std::invalid_argument("schedule must be \"guided\" or \"static\", not \"" + schedule + "\"");
  const bool guided = schedule == "guided";
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  const SumFn sum = PickSum(isa);
  const lab::PageBuffer buf = TouchedArray(n_bytes, pages, nt);
  const float* a = static_cast<const float*>(buf.data());
  const size_t n = static_cast<size_t>(n_bytes) / sizeof(float);
  std::vector<double> gbps;
  volatile double sink = 0;
  double total = 0;
  for (int r = 0; r < repeats + 1; ++r) {  // pass 0 warms up (page tables, thread pool)
    total = 0;
    const auto t0 = Clock::now();
    if (guided) {
      const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for num_threads(nt) schedule(guided) reduction(+ : total)
      for (int64_t c = 0; c < chunks; ++c) {
        const size_t lo = c * kChunk;
        total += sum(a + lo, std::min(n, lo + kChunk) - lo);
      }
    } else {
#pragma omp parallel num_threads(nt) reduction(+ : total)
      {
        size_t lo, hi;
        Slice(n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        total += sum(a + lo, hi - lo);
      }
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    sink = sink + total;
    if (r > 0) gbps.push_back(static_cast<double>(n) * sizeof(float) / s / 1e9);
  }
  return {gbps, buf.HugeFraction(), total};
}

// ---- FMA peak: 12 independent chains per thread, x = x * m + c (bounded: m < 1) -----------------

constexpr int kChains = 12;

__attribute__((target("avx512f"))) double FmaAvx512(int64_t iters) {
  __m512 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm512_set1_ps(1.0f + k * 0.01f);
  const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < kChains; ++k) acc[k] = _mm512_fmadd_ps(acc[k], m, c);
  __m512 s = acc[0];
  for (int k = 1; k < kChains; ++k) s = _mm512_add_ps(s, acc[k]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) double FmaAvx2(int64_t iters) {
  __m256 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm256_set1_ps(1.0f + k * 0.01f);
  const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int k = 0; k < kChains; ++k) acc[k] = _mm256_fmadd_ps(acc[k], m, c);
  __m256 s = acc[0];
  for (int k = 1; k < kChains; ++k) s = _mm256_add_ps(s, acc[k]);
  alignas(32) float t[8];
  _mm256_store_ps(t, s);
  double r = 0;
  for (float v : t) r += v;
  return r;
}

double FmaPeak(const std::string& isa_in, double seconds, int threads) {
  std::string isa = isa_in;
  if (isa == "auto") isa = HasAvx512() ? "avx512" : "avx2";
  double (*fn)(int64_t);
  int lanes;
  if (isa == "avx512" && HasAvx512()) fn = FmaAvx512, lanes = 16;
  else if (isa == "avx2" && HasAvx2()) fn = FmaAvx2, lanes = 8;
  else throw std::invalid_argument("ISA \"" + isa + "\" is not available on this CPU");
  const int nt = threads > 0 ? threads : omp_get_max_threads();
  volatile double sink = 0;
  // Calibrate on one thread: iterations for about `seconds`.
  int64_t iters = 1 << 16;
  for (;;) {
    const auto t0 = Clock::now();
    sink = sink + fn(iters);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s > 0.02 || iters > (int64_t{1} << 40)) {
      iters = std::max<int64_t>(iters, static_cast<int64_t>(iters * seconds / s));
      break;
    }
    iters *= 4;
  }
  double total = 0;
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(nt) reduction(+ : total)
  total += fn(iters);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  sink = sink + total;
  return 2.0 * lanes * kChains * static_cast<double>(iters) * nt / s / 1e9;
}

}  // namespace

PYBIND11_MODULE(_membw, m) {
  m.doc() = "CPU ceilings of the LLM inference lab: all-cores read bandwidth and FMA peak (OpenMP)";
  m.def(
      "read_bandwidth",
      [](int64_t n_bytes, int repeats, int threads, const std::string& isa, const std::string& pages,
         const std::string& schedule) {
        py::gil_scoped_release release;
        return ReadBandwidth(n_bytes, repeats, threads, isa, pages, schedule).gbps;
      },
      py::arg("n_bytes"), py::arg("repeats") = 5, py::arg("threads") = 0, py::arg("isa") = "auto",
      py::arg("pages") = "huge", py::arg("schedule") = "guided",
      "GB/s of each of `repeats` passes summing an n_bytes float array (after one warm-up pass), the array "
      "on 2 MiB pages (pages='huge') or 4 KiB pages ('small'), its chunks dealt out guided or static.");
  m.def(
      "read_bandwidth_pages",
      [](int64_t n_bytes, int repeats, int threads, const std::string& isa, const std::string& pages,
         const std::string& schedule) {
        Reads r;
        {
          py::gil_scoped_release release;
          r = ReadBandwidth(n_bytes, repeats, threads, isa, pages, schedule);
        }
        return py::make_tuple(r.gbps, r.huge_fraction);
      },
      py::arg("n_bytes"), py::arg("repeats") = 5, py::arg("threads") = 0, py::arg("isa") = "auto",
      py::arg("pages") = "huge", py::arg("schedule") = "guided",
      "read_bandwidth's passes and the share of the same array the kernel backed with 2 MiB pages (-1: "
      "unknown).");
  m.def(
      "read_sum",
      [](int64_t n_bytes, const std::string& schedule, int threads) {
        py::gil_scoped_release release;
        return ReadBandwidth(n_bytes, 1, threads, "auto", "huge", schedule).sum;
      },
      py::arg("n_bytes"), py::arg("schedule") = "guided", py::arg("threads") = 0,
      "The sum one read pass computes over the same array read_bandwidth reads (its values depend only on "
      "n_bytes and the thread count): the schedules must agree to rounding, or a pass skipped values.");
  m.def(
      "fma_peak",
      [](const std::string& isa, double seconds, int threads) {
        py::gil_scoped_release release;
        return FmaPeak(isa, seconds, threads);
      },
      py::arg("isa") = "auto", py::arg("seconds") = 0.2, py::arg("threads") = 0,
      "fp32 GFLOP/s of independent FMA chains on all threads (isa: auto, avx512, avx2).");
  m.def("simd_levels", [] {
    std::vector<std::string> v;
    if (HasAvx512()) v.push_back("avx512");
    if (HasAvx2()) v.push_back("avx2");
    v.push_back("scalar");
    return v;
  });
  m.def("max_threads", [] { return omp_get_max_threads(); });
}
