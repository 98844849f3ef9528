// prefill_bench: the kernel lab's one program (in the manner of llm.c's dev/cuda). For every version of
// every kernel: random inputs (never zeros), a poisoned (NaN) output, one run checked against an fp32
// reference (reference.h) on a sample of rows plus a scan of the whole output for unwritten (NaN)
// values, then timing with CUDA events: warm-up, median/min/max of --reps runs.
//
//   prefill_bench [--only gemm|attn|all] [--versions 1,2,3,4] [--m 128,1024,8192] [--attn_n 1024,8192,32768]
//                 [--reps 20] [--v1_max_m 128] [--test]
//
// Each result is one line `RESULT {json}` (bench_prefill.py collects them) and a table row on stderr.
// --test: correctness only, on small odd shapes (M = 1, 37, 1000; n not a multiple of the tiles; chunked
// prefill with pos > 0); prints SKIP and exits 0 where no CUDA device exists. Exit status 1 on any failure.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/prefill/prefill.h"
#include "cuda/prefill/reference.h"

namespace lp = lab::prefill;
namespace ref = lab::prefill::reference;

#define CK(x)                                                                                       \
  do {                                                                                              \
    cudaError_t e_ = (x);                                                                           \
    if (e_ != cudaSuccess) {                                                                        \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
      exit(2);                                                                                      \
    }                                                                                               \
  } while (0)

namespace {

constexpr double kGemmTol = 2e-3;  // fp16 output of an fp32-accumulated product: ~3e-4 observed is typical
constexpr double kAttnTol = 1e-2;  // fp16 P and O (py/lab/tolerances.py LOGITS_REL["fp16"])

struct Options {
  std::string only = "all";
  std::vector<int> versions = {1, 2, 3, 4};
  std::vector<int> ms = {128, 1024, 8192};
  std::vector<int> attn_ns = {1024, 8192, 32768};
  int reps = 20, warmup = 3, v1_max_m = 128;
  bool test = false;  // --test also lifts v1_max_m
};

std::vector<int> ParseList(const char* s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::atoi(item.c_str()));
  return v;
}

// Deterministic uniform(-scale, scale) fill (hash of index and seed).
__global__ void FillKernel(half* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 0x9E3779B1u ^ (static_cast<uint32_t>(i >> 32) * 0x85EBCA77u) ^ (seed * 0xC2B2AE3Du);
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    const float u = (x >> 8) * (1.f / 16777216.f);  // [0, 1)
    p[i] = __float2half((2.f * u - 1.f) * scale);
  }
}
void Fill(half* p, int64_t n, uint32_t seed, float scale) {
  FillKernel<<<2048, 256>>>(p, n, seed, scale);
  CK(cudaGetLastError());
}

float HalfToFloat(uint16_t h) {
  __half_raw r;
  r.x = h;
  return __half2float(__half(r));
}

struct Stats {
  double median = 0, min = 0, max = 0;
};

template <typename F>
Stats TimeIt(F&& run, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) run(i);
  CK(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(ev[2 * i]));
    run(warmup + i);
    CK(cudaEventRecord(ev[2 * i + 1]));
  }
  CK(cudaDeviceSynchronize());
  std::vector<double> ms(reps);
  for (int i = 0; i < reps; ++i) {
    float t = 0;
    CK(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  Stats s;
  s.median = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
  s.min = ms.front();
  s.max = ms.back();
  return s;
}

std::vector<int> SampleRows(int M, int count, uint32_t seed) {
  std::vector<int> rows;
  for (int r : {0, 1, M - 1, M - 2, 63, 64, 127, 128, M / 2}) {
    if (r >= 0 && r < M) rows.push_back(r);
  }
  std::mt19937 rng(seed);
  while (static_cast<int>(rows.size()) < count) rows.push_back(static_cast<int>(rng() % M));
  rows.resize(count);
  return rows;
}

bool g_failed = false;

// ---------------------------------------------------------------------------------------------------
struct GemmShape {
  const char* name;
  int N, K;
  lp::Epilogue epi;
};

const char* EpiName(lp::Epilogue e) {
  return e == lp::Epilogue::kNone ? "none" : e == lp::Epilogue::kResidual ? "residual" : "swiglu";
}

void BenchGemmShape(const Options& opt, int M, const GemmShape& sh, bool timing) {
  const int N = sh.N, K = sh.K;
  const bool swiglu = sh.epi == lp::Epilogue::kSwiGLU;
  const int n_out = swiglu ? N / 2 : N;
  const int64_t w_elems = static_cast<int64_t>(N) * K;
  const int nrot = timing ? std::max(1, std::min(4, static_cast<int>(std::ceil(150e6 / (w_elems * 2.0))))) : 1;
  half *A, *R = nullptr, *C;
  std::vector<half*> Ws(nrot);
  CK(cudaMalloc(&A, static_cast<size_t>(M) * K * 2));
  for (auto& w : Ws) CK(cudaMalloc(&w, w_elems * 2));
  CK(cudaMalloc(&C, static_cast<size_t>(M) * n_out * 2));
  Fill(A, static_cast<int64_t>(M) * K, 11 + M, 1.f);
  const float wscale = 2.f / std::sqrt(static_cast<float>(K));  // keeps |C| ~ 1 (fp16-friendly)
  for (int i = 0; i < nrot; ++i) Fill(Ws[i], w_elems, 101 + i, wscale);
  if (sh.epi == lp::Epilogue::kResidual) {
    CK(cudaMalloc(&R, static_cast<size_t>(M) * N * 2));
    Fill(R, static_cast<int64_t>(M) * N, 7, 1.f);
  }

  // Reference on 64 sampled rows (raw product), epilogue on the host.
  const std::vector<int> rows = SampleRows(M, ref::kRefRows, 5 + M);
  int* d_rows;
  float* d_ref;
  int* d_bad;
  CK(cudaMalloc(&d_rows, rows.size() * sizeof(int)));
  CK(cudaMalloc(&d_ref, static_cast<size_t>(ref::kRefRows) * N * 4));
  CK(cudaMalloc(&d_bad, sizeof(int)));
  CK(cudaMemcpy(d_rows, rows.data(), rows.size() * sizeof(int), cudaMemcpyHostToDevice));
  CK(ref::GemmRows(A, K, Ws[0], K, N, K, d_rows, d_ref, 0));
  std::vector<float> raw(static_cast<size_t>(ref::kRefRows) * N);
  CK(cudaMemcpy(raw.data(), d_ref, raw.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<double> expect(static_cast<size_t>(ref::kRefRows) * n_out);
  std::vector<uint16_t> rrow(N);
  for (int r = 0; r < ref::kRefRows; ++r) {
    if (R) CK(cudaMemcpy(rrow.data(), R + static_cast<int64_t>(rows[r]) * N, N * 2, cudaMemcpyDeviceToHost));
    for (int c = 0; c < n_out; ++c) {
      double v = raw[static_cast<size_t>(r) * N + c];
      if (swiglu) {
        const double u = raw[static_cast<size_t>(r) * N + n_out + c];
        v = v / (1.0 + std::exp(-v)) * u;
      } else if (R) {
        v += HalfToFloat(rrow[c]);
      }
      expect[static_cast<size_t>(r) * n_out + c] = v;
    }
  }

  for (int v : opt.versions) {
    if (v == 1 && M > opt.v1_max_m) continue;
    lp::GemmParams p;
    p.A = A;
    p.lda = K;
    p.W = Ws[0];
    p.ldw = K;
    p.C = C;
    p.ldc = n_out;
    p.R = R;
    p.ldr = N;
    p.M = M;
    p.N = N;
    p.K = K;
    p.epilogue = sh.epi;
    char head[256];
    snprintf(head, sizeof(head), "\"kind\":\"gemm\",\"name\":\"%s\",\"version\":\"v%d\",\"M\":%d,\"N\":%d,\"K\":%d,\"epilogue\":\"%s\"",
             sh.name, v, M, N, K, EpiName(sh.epi));
    if (const char* why = lp::GemmUnsupported(v, p)) {
      printf("RESULT {%s,\"skipped\":\"%s\"}\n", head, why);
      fprintf(stderr, "gemm %-7s v%d M=%-5d skipped: %s\n", sh.name, v, M, why);
      continue;
    }
    CK(cudaMemset(C, 0xFF, static_cast<size_t>(M) * n_out * 2));  // NaN poison
    CK(lp::GemmVersion(v, p, 0));
    CK(cudaDeviceSynchronize());
    int bad = 0;
    CK(ref::CountNonFinite(C, static_cast<int64_t>(M) * n_out, false, d_bad, 0));
    CK(cudaMemcpy(&bad, d_bad, sizeof(int), cudaMemcpyDeviceToHost));
    double num = 0, den = 0, maxerr = 0, maxref = 0;
    std::vector<uint16_t> crow(n_out);
    for (int r = 0; r < ref::kRefRows; ++r) {
      CK(cudaMemcpy(crow.data(), C + static_cast<int64_t>(rows[r]) * n_out, n_out * 2, cudaMemcpyDeviceToHost));
      for (int c = 0; c < n_out; ++c) {
        const double e = expect[static_cast<size_t>(r) * n_out + c], got = HalfToFloat(crow[c]);
        const double d = std::isfinite(got) ? got - e : INFINITY;
        num += d * d;
        den += e * e;
        maxerr = std::max(maxerr, std::fabs(d));
        maxref = std::max(maxref, std::fabs(e));
      }
    }
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    const bool ok = bad == 0 && rel < kGemmTol;
    if (!ok) g_failed = true;
    Stats st;
    if (timing && ok) {
      st = TimeIt([&](int i) {
        lp::GemmParams q = p;
        q.W = Ws[i % nrot];
        CK(lp::GemmVersion(v, q, 0));
      }, opt.warmup, opt.reps);
    }
    const double flops = 2.0 * M * N * K;
    const double tflops = st.median > 0 ? flops / (st.median * 1e-3) / 1e12 : 0;
    printf("RESULT {%s,\"ok\":%s,\"rel_err\":%.3e,\"max_abs_err\":%.3e,\"max_abs_ref\":%.3e,\"non_finite\":%d,"
           "\"ms_median\":%.5f,\"ms_min\":%.5f,\"ms_max\":%.5f,\"reps\":%d,\"tflops\":%.2f,\"w_copies\":%d}\n",
           head, ok ? "true" : "false", rel, maxerr, maxref, bad, st.median, st.min, st.max, timing ? opt.reps : 0, tflops, nrot);
    fprintf(stderr, "gemm %-7s v%d M=%-5d N=%-5d K=%-5d %-8s %s rel=%.2e nan=%d  %9.4f ms (%.4f-%.4f)  %7.1f TFLOP/s\n", sh.name, v, M,
            N, K, EpiName(sh.epi), ok ? "ok  " : "FAIL", rel, bad, st.median, st.min, st.max, tflops);
    fflush(stdout);
  }
  cudaFree(A);
  for (auto& w : Ws) cudaFree(w);
  cudaFree(C);
  if (R) cudaFree(R);
  cudaFree(d_rows);
  cudaFree(d_ref);
  cudaFree(d_bad);
}

// ---------------------------------------------------------------------------------------------------
struct AttnCase {
  int n, pos, H, KV, D;
};

void BenchAttention(const Options& opt, const AttnCase& a, bool timing, bool with_unfused) {
  const int ctx = a.pos + a.n;
  const int64_t q_elems = static_cast<int64_t>(a.n) * a.H * a.D, kv_elems = static_cast<int64_t>(ctx) * a.KV * a.D;
  half *Q, *K, *V, *O;
  CK(cudaMalloc(&Q, q_elems * 2));
  CK(cudaMalloc(&K, kv_elems * 2));
  CK(cudaMalloc(&V, kv_elems * 2));
  CK(cudaMalloc(&O, q_elems * 2));
  Fill(Q, q_elems, 21 + a.n, 2.f);  // scores of std ~0.7: softmax neither flat nor one-hot
  Fill(K, kv_elems, 22 + a.n, 1.f);
  Fill(V, kv_elems, 23 + a.n, 1.f);
  lp::AttentionParams p;
  p.Q = Q;
  p.q_pos_stride = static_cast<int64_t>(a.H) * a.D;
  p.K = K;
  p.V = V;
  p.kv_pos_stride = static_cast<int64_t>(a.KV) * a.D;
  p.kv_head_stride = a.D;
  p.O = O;
  p.o_pos_stride = static_cast<int64_t>(a.H) * a.D;
  p.n = a.n;
  p.pos = a.pos;
  p.n_heads = a.H;
  p.n_kv_heads = a.KV;
  p.head_dim = a.D;

  const int nrows = std::min(a.n, 64);
  const std::vector<int> rows = SampleRows(a.n, nrows, 9 + a.n);
  int *d_rows, *d_bad;
  float* d_ref;
  CK(cudaMalloc(&d_rows, nrows * sizeof(int)));
  CK(cudaMalloc(&d_bad, sizeof(int)));
  CK(cudaMalloc(&d_ref, static_cast<size_t>(nrows) * a.H * a.D * 4));
  CK(cudaMemcpy(d_rows, rows.data(), nrows * sizeof(int), cudaMemcpyHostToDevice));
  CK(ref::AttentionRows(p, d_rows, nrows, d_ref, 0));
  std::vector<float> expect(static_cast<size_t>(nrows) * a.H * a.D);
  CK(cudaMemcpy(expect.data(), d_ref, expect.size() * 4, cudaMemcpyDeviceToHost));

  void* ws = nullptr;
  if (with_unfused) CK(cudaMalloc(&ws, lp::AttentionUnfusedWorkspaceBytes(p)));
  // causal FLOPs actually needed: 4 * D * H * sum_i (pos + i + 1)
  const double pairs = static_cast<double>(a.n) * a.pos + 0.5 * static_cast<double>(a.n) * (a.n + 1);
  const double flops = 4.0 * a.D * a.H * pairs;

  for (const char* version : {"flash_v1", "flash_v2", "flash_v3", "unfused"}) {
    const bool fused = std::strncmp(version, "flash_v", 7) == 0;
    if (!fused && !with_unfused) continue;
    const int fv = fused ? version[7] - '0' : 0;
    auto run = [&]() { CK(fused ? lp::FlashAttentionVersion(fv, p, 0) : lp::AttentionUnfused(p, ws, 0)); };
    CK(cudaMemset(O, 0xFF, q_elems * 2));
    run();
    CK(cudaDeviceSynchronize());
    int bad = 0;
    CK(ref::CountNonFinite(O, q_elems, false, d_bad, 0));
    CK(cudaMemcpy(&bad, d_bad, sizeof(int), cudaMemcpyDeviceToHost));
    double num = 0, den = 0, maxerr = 0;
    std::vector<uint16_t> orow(static_cast<size_t>(a.H) * a.D);
    for (int r = 0; r < nrows; ++r) {
      CK(cudaMemcpy(orow.data(), O + static_cast<int64_t>(rows[r]) * a.H * a.D, orow.size() * 2, cudaMemcpyDeviceToHost));
      for (size_t j = 0; j < orow.size(); ++j) {
        const double e = expect[r * orow.size() + j], got = HalfToFloat(orow[j]);
        const double d = std::isfinite(got) ? got - e : INFINITY;
        num += d * d;
        den += e * e;
        maxerr = std::max(maxerr, std::fabs(d));
      }
    }
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    const bool ok = bad == 0 && rel < kAttnTol;
    if (!ok) g_failed = true;
    Stats st;
    if (timing && ok) st = TimeIt([&](int) { run(); }, opt.warmup, opt.reps);
    const double tflops = st.median > 0 ? flops / (st.median * 1e-3) / 1e12 : 0;
    printf("RESULT {\"kind\":\"attn\",\"version\":\"%s\",\"n\":%d,\"pos\":%d,\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d,"
           "\"ok\":%s,\"rel_err\":%.3e,\"max_abs_err\":%.3e,\"non_finite\":%d,\"ms_median\":%.5f,\"ms_min\":%.5f,\"ms_max\":%.5f,"
           "\"reps\":%d,\"tflops\":%.2f}\n",
           version, a.n, a.pos, a.H, a.KV, a.D, ok ? "true" : "false", rel, maxerr, bad, st.median, st.min, st.max,
           timing ? opt.reps : 0, tflops);
    fprintf(stderr, "attn %-8s n=%-6d pos=%-5d H=%d/%d D=%d %s rel=%.2e nan=%d  %9.3f ms (%.3f-%.3f)  %7.1f TFLOP/s (causal)\n", version,
            a.n, a.pos, a.H, a.KV, a.D, ok ? "ok  " : "FAIL", rel, bad, st.median, st.min, st.max, tflops);
    fflush(stdout);
  }
  cudaFree(Q);
  cudaFree(K);
  cudaFree(V);
  cudaFree(O);
  cudaFree(d_rows);
  cudaFree(d_bad);
  cudaFree(d_ref);
  if (ws) cudaFree(ws);
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        fprintf(stderr, "missing value after %s\n", a.c_str());
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--only") opt.only = next();
    else if (a == "--versions") opt.versions = ParseList(next());
    else if (a == "--m") opt.ms = ParseList(next());
    else if (a == "--attn_n") opt.attn_ns = ParseList(next());
    else if (a == "--reps") opt.reps = std::atoi(next());
    else if (a == "--v1_max_m") opt.v1_max_m = std::atoi(next());
    else if (a == "--test") {
      opt.test = true;
      opt.v1_max_m = 1 << 30;
    }
    else {
      fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("SKIP: no CUDA device here (the kernel lab needs an NVIDIA GPU)\n");
    return opt.test ? 0 : 1;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("DEVICE {\"name\":\"%s\",\"sm\":%d%d,\"sms\":%d,\"v4\":%s}\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
         lp::GemmV4Available() ? "true" : "false");
  fflush(stdout);

  const bool gemm = opt.only == "all" || opt.only == "gemm";
  const bool attn = opt.only == "all" || opt.only == "attn";
  try {
    if (opt.test) {
      const GemmShape small[] = {{"odd", 256, 320, lp::Epilogue::kNone},
                                 {"odd", 384, 128, lp::Epilogue::kResidual},
                                 {"odd", 512, 192, lp::Epilogue::kSwiGLU}};
      if (gemm)
        for (int M : {1, 37, 1000})
          for (const auto& sh : small) BenchGemmShape(opt, M, sh, false);
      if (attn) {
        for (const AttnCase& c : {AttnCase{1, 0, 8, 2, 128}, AttnCase{37, 0, 8, 2, 128}, AttnCase{200, 0, 8, 2, 128},
                                  AttnCase{1000, 0, 4, 1, 128}, AttnCase{300, 700, 8, 2, 128}, AttnCase{130, 0, 8, 8, 64},
                                  AttnCase{77, 200, 4, 2, 64}})
          BenchAttention(opt, c, false, true);
      }
    } else {
      const GemmShape shapes[] = {{"qkv", 6144, 4096, lp::Epilogue::kNone},
                                  {"o", 4096, 4096, lp::Epilogue::kResidual},
                                  {"gate_up", 28672, 4096, lp::Epilogue::kSwiGLU},
                                  {"down", 4096, 14336, lp::Epilogue::kResidual}};
      if (gemm)
        for (int M : opt.ms)
          for (const auto& sh : shapes) BenchGemmShape(opt, M, sh, true);
      if (attn) {
        BenchAttention(opt, AttnCase{1000, 3000, 32, 8, 128}, false, true);  // chunked prefill, correctness
        for (int n : opt.attn_ns) BenchAttention(opt, AttnCase{n, 0, 32, 8, 128}, true, true);
      }
    }
  } catch (const std::exception& e) {
    fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  printf("DONE {\"failed\":%s}\n", g_failed ? "true" : "false");
  return g_failed ? 1 : 0;
}
