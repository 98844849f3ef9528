// The dispatcher and the scalar fallback: plain C++ with the same contracts as the SIMD kernels,
// for CPUs without AVX2 (and as a readable statement of what each kernel computes).
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "cc/core/errors.h"
#include "cc/core/fp16.h"
#include "cc/cpu_opt/kernels.h"

namespace lab {
namespace cpu_opt {

float* ThreadScratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

namespace {

void MatVec(float* out, const float* x, const uint16_t* W, int64_t n, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const uint16_t* w = W + i * n;
    float acc = 0.f;
    for (int64_t k = 0; k < n; ++k) acc += HalfToFloat(w[k]) * x[k];
    out[i] = acc;
  }
}

void MatMul(float* out, int64_t ldo, const float* xt, int64_t B, int64_t Bp, const uint16_t* W, int64_t n,
            int64_t i0, int64_t i1) {
  float* w = ThreadScratch(n + B);  // one call: a second one could move the buffer
  float* acc = w + n;
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t k = 0; k < n; ++k) w[k] = HalfToFloat(W[i * n + k]);  // widen the row once
    for (int64_t t = 0; t < B; ++t) acc[t] = 0.f;
    for (int64_t k = 0; k < n; ++k)
      for (int64_t t = 0; t < B; ++t) acc[t] += w[k] * xt[k * Bp + t];
    for (int64_t t = 0; t < B; ++t) out[t * ldo + i] = acc[t];
  }
}

void Transpose(float* xt, int64_t Bp, const float* x, int64_t B, int64_t n, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; ++k)
    for (int64_t t = 0; t < Bp; ++t) xt[k * Bp + t] = t < B ? x[t * n + k] : 0.f;
}

void RmsNorm(float* out, const float* x, const float* w, int64_t n, float eps) {
  float ss = 0.f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.f / std::sqrt(ss / n + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * scale);
}

void Add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void SwiGlu(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

void Rope(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* x = v + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * cos[i] - b * sin[i];
      x[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void Attend(float* out, const float* q, int64_t nq, const float* kc, const float* vc, int64_t n_keys,
            int64_t stride, int64_t hd, float scale, float* scores, float* lse) {
  for (int64_t j = 0; j < nq; ++j, q += hd, out += hd) {
    float max_score = -INFINITY;
    for (int64_t p = 0; p < n_keys; ++p) {
      const float* k = kc + p * stride;
      float dot = 0.f;
      for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
      scores[p] = dot * scale;
      max_score = std::fmax(max_score, scores[p]);
    }
    float sum = 0.f;
    for (int64_t p = 0; p < n_keys; ++p) {
      scores[p] = std::exp(scores[p] - max_score);
      sum += scores[p];
    }
    if (lse) lse[j] = max_score + std::log(sum);
    for (int64_t i = 0; i < hd; ++i) out[i] = 0.f;
    const float inv = 1.f / sum;
    for (int64_t p = 0; p < n_keys; ++p) {
      const float a = scores[p] * inv;
      const float* v = vc + p * stride;
      for (int64_t i = 0; i < hd; ++i) out[i] += a * v[i];
    }
  }
}

bool CpuHasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

bool CpuHasAvx512() { return CpuHasAvx2() && __builtin_cpu_supports("avx512f"); }

}  // namespace

const Kernels kScalarKernels = {"scalar", 1, MatVec, nullptr, MatMul, Transpose, RmsNorm, Add, SwiGlu, Rope, Attend, nullptr};

namespace {

bool CpuHasAvx512Bf16() { return CpuHasAvx512() && __builtin_cpu_supports("avx512bf16"); }

}  // namespace

// Both run each time an engine is created, so that tests can switch paths with the environment variables.
const Kernels& SelectKernels() {
  const char* env = std::getenv("LAB_CPU_ISA");
  const std::string want = env ? env : "";
  if (want.empty()) return CpuHasAvx512() ? kAvx512Kernels : CpuHasAvx2() ? kAvx2Kernels : kScalarKernels;
  if (want == "scalar") return kScalarKernels;
  if (want == "avx2" && CpuHasAvx2()) return kAvx2Kernels;
  if (want == "avx512" && CpuHasAvx512()) return kAvx512Kernels;
  if (want == "avx2" || want == "avx512")
    throw InputError("LAB_CPU_ISA=" + want + ": this CPU does not support " + want);
  throw InputError("LAB_CPU_ISA=" + want + ": expected avx512, avx2 or scalar");
}

PrefillKernels SelectPrefill(const Kernels& isa) {
  const char* env = std::getenv("LAB_CPU_PREFILL");
  const std::string want = env ? env : "";
  const bool bf16 = &isa == &kAvx512Kernels && CpuHasAvx512Bf16();
  if (want == "fp32" || (want.empty() && !bf16)) return {&isa, &isa, "fp32"};
  if (want.empty() || want == "mlp" || want == "bf16") {
    if (!bf16)
      throw InputError("LAB_CPU_PREFILL=" + want + ": " +
                       (&isa == &kAvx512Kernels ? "this CPU does not support avx512bf16"
                                                : "needs the avx512 kernels (LAB_CPU_ISA)"));
    if (want == "bf16") return {&kAvx512Bf16Kernels, &kAvx512Bf16Kernels, "bf16"};
    return {&isa, &kAvx512Bf16Kernels, "mlp-bf16"};
  }
  throw InputError("LAB_CPU_PREFILL=" + want + ": expected mlp, bf16 or fp32");
}

}  // namespace cpu_opt
}  // namespace lab
