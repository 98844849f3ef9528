// AVX2 + FMA + F16C kernels: the readable SIMD lesson of stage 2.
//
// A __m256 register holds 8 floats. Three instructions carry the stage:
//   _mm256_cvtph_ps(8 x fp16) -> 8 x fp32   (F16C: weights stay fp16 in memory, fp32 in registers)
//   _mm256_fmadd_ps(a, b, c)  =  a * b + c  (FMA: 16 flops per instruction, two per cycle per core)
//   _mm256_broadcast_ss(p)    =  *p in all 8 lanes
// Every function carries LAB_AVX2 (a GCC target attribute) instead of compiling the file with -mavx2:
// the rest of the library stays plain x86-64, and the dispatcher only calls these after asking the CPU.
#include <immintrin.h>

#include <cmath>

#include "cc/core/fp16.h"
#include "cc/cpu_opt/kernels.h"

#define LAB_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace lab {
namespace cpu_opt {
namespace {

LAB_AVX2 inline __m256 LoadHalf8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

LAB_AVX2 inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LAB_AVX2 inline float Max8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// exp(x) for 8 lanes (Cephes' expf: x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r, then
// 2^n through the exponent bits). About 1 ulp; inputs are clamped to [-87, 88] (no inf, no denormals).
LAB_AVX2 inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

// ---- Decode: matrix-vector, memory-bound -------------------------------------------------------
// One row at a time, front to back: each thread reads its slice of W as one sequential stream, which
// the hardware prefetchers follow best (interleaving several rows measured slower). Four independent
// accumulators hide the FMA latency; each fp16 weight is read once and used once.
LAB_AVX2 void MatVec(float* out, const float* x, const uint16_t* W, int64_t n, int64_t i0, int64_t i1) {
  const int64_t n4 = n / 32 * 32;
  for (int64_t i = i0; i < i1; ++i) {
    const uint16_t* w = W + i * n;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k < n4; k += 32) {
      a0 = _mm256_fmadd_ps(LoadHalf8(w + k), _mm256_loadu_ps(x + k), a0);
      a1 = _mm256_fmadd_ps(LoadHalf8(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
      a2 = _mm256_fmadd_ps(LoadHalf8(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
      a3 = _mm256_fmadd_ps(LoadHalf8(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k + 8 <= n; k += 8) a0 = _mm256_fmadd_ps(LoadHalf8(w + k), _mm256_loadu_ps(x + k), a0);
    float s = Sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; k < n; ++k) s += HalfToFloat(w[k]) * x[k];
    out[i] = s;
  }
}

// ---- Prefill: matrix-matrix, compute-bound -----------------------------------------------------
// A register tile of MR weight rows x 8*NV tokens: MR*NV accumulators (12 of the 16 ymm registers
// for 6 x 2). Per step k: NV loads of x^T[k, tokens], MR broadcasts of w[r, k], MR*NV FMAs. Each
// loaded value is used MR or NV times from a register, so the FMA units, not memory, set the pace.
// (`#pragma GCC unroll` unrolls the loops over r and v completely, so that acc[][] lives in registers.)
template <int MR, int NV>
LAB_AVX2 void Tile(float* out, int64_t ldo, const float* xt, int64_t Bp, int64_t tokens, const float* w, int64_t n) {
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; ++k) {
    __m256 x[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) x[v] = _mm256_loadu_ps(xt + k * Bp + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 wr = _mm256_broadcast_ss(w + r * n + k);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(wr, x[v], acc[r][v]);
    }
  }
  // Lane j of acc[r][v] is token 8v + j of row r; out is [token, row].
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float lanes[8 * NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(lanes + 8 * v, acc[r][v]);
    for (int64_t t = 0; t < tokens && t < 8 * NV; ++t) out[t * ldo + r] = lanes[t];
  }
}

constexpr int kRowTile = 6;

template <int MR>
LAB_AVX2 void RowTile(float* out, int64_t ldo, const float* xt, int64_t B, int64_t Bp, const float* w, int64_t n) {
  int64_t t = 0;
  for (; t + 16 <= B; t += 16) Tile<MR, 2>(out + t * ldo, ldo, xt + t, Bp, 16, w, n);
  if (B - t > 8) Tile<MR, 2>(out + t * ldo, ldo, xt + t, Bp, B - t, w, n);  // x^T is zero-padded to Bp
  else if (t < B) Tile<MR, 1>(out + t * ldo, ldo, xt + t, Bp, B - t, w, n);
}

LAB_AVX2 void MatMul(float* out, int64_t ldo, const float* xt, int64_t B, int64_t Bp, const uint16_t* W, int64_t n,
                     int64_t i0, int64_t i1) {
  float* w = ThreadScratch(kRowTile * n);
  for (int64_t i = i0; i < i1; i += kRowTile) {
    const int64_t mr = i1 - i < kRowTile ? i1 - i : kRowTile;
    // Widen these rows to fp32 once; they are then used for all B tokens from the L1/L2 cache.
    const uint16_t* src = W + i * n;
    int64_t k = 0;
    for (; k + 8 <= mr * n; k += 8) _mm256_storeu_ps(w + k, LoadHalf8(src + k));
    for (; k < mr * n; ++k) w[k] = HalfToFloat(src[k]);
    // Ask for the next rows now, so that they arrive from DRAM while these are multiplied.
    const char* next = reinterpret_cast<const char*>(src + mr * n);
    const int64_t ahead = (i1 - i - mr < kRowTile ? i1 - i - mr : kRowTile) * n * 2;  // bytes of the next rows
    for (int64_t b = 0; b < ahead; b += 64) _mm_prefetch(next + b, _MM_HINT_T1);
    switch (mr) {
      case 6: RowTile<6>(out + i, ldo, xt, B, Bp, w, n); break;
      case 5: RowTile<5>(out + i, ldo, xt, B, Bp, w, n); break;
      case 4: RowTile<4>(out + i, ldo, xt, B, Bp, w, n); break;
      case 3: RowTile<3>(out + i, ldo, xt, B, Bp, w, n); break;
      case 2: RowTile<2>(out + i, ldo, xt, B, Bp, w, n); break;
      default: RowTile<1>(out + i, ldo, xt, B, Bp, w, n); break;
    }
  }
}

// x^T for MatMul, in 8 x 8 blocks: eight rows loaded, shuffled in registers, stored as eight columns.
// Tokens are the inner loop, so each of the eight output rows is written front to back.
LAB_AVX2 void Transpose(float* xt, int64_t Bp, const float* x, int64_t B, int64_t n, int64_t k0, int64_t k1) {
  const int64_t B8 = B / 8 * 8;
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    for (int64_t t = 0; t < B8; t += 8) {
      __m256 r[8], u[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(x + (t + j) * n + k);
#pragma GCC unroll 8
      for (int j = 0; j < 8; j += 2) {
        u[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);      // a0 b0 a1 b1 | a4 b4 a5 b5
        u[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);  // a2 b2 a3 b3 | a6 b6 a7 b7
      }
#pragma GCC unroll 8
      for (int j = 0; j < 8; j += 4) {
        r[j] = _mm256_shuffle_ps(u[j], u[j + 2], _MM_SHUFFLE(1, 0, 1, 0));      // a0 b0 c0 d0 | a4 b4 c4 d4
        r[j + 1] = _mm256_shuffle_ps(u[j], u[j + 2], _MM_SHUFFLE(3, 2, 3, 2));  // columns 1 | 5
        r[j + 2] = _mm256_shuffle_ps(u[j + 1], u[j + 3], _MM_SHUFFLE(1, 0, 1, 0));  // columns 2 | 6
        r[j + 3] = _mm256_shuffle_ps(u[j + 1], u[j + 3], _MM_SHUFFLE(3, 2, 3, 2));  // columns 3 | 7
      }
#pragma GCC unroll 8
      for (int j = 0; j < 4; ++j) {
        _mm256_storeu_ps(xt + (k + j) * Bp + t, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
        _mm256_storeu_ps(xt + (k + j + 4) * Bp + t, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
      }
    }
    for (int64_t j = k; j < k + 8; ++j)
      for (int64_t t = B8; t < Bp; ++t) xt[j * Bp + t] = t < B ? x[t * n + j] : 0.f;
  }
  for (; k < k1; ++k)
    for (int64_t t = 0; t < Bp; ++t) xt[k * Bp + t] = t < B ? x[t * n + k] : 0.f;
}

// ---- Attention ---------------------------------------------------------------------------------

// The sums of eight registers as one register (lane j = sum of v[j]): a tree of horizontal adds does the
// eight reductions together, instead of eight separate shuffle-and-add sequences.
LAB_AVX2 inline __m256 Sum8x8(const __m256* v) {
  const __m256 h01 = _mm256_hadd_ps(v[0], v[1]), h23 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 h45 = _mm256_hadd_ps(v[4], v[5]), h67 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);  // per 128-bit half
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// q . k for eight consecutive keys (k, k + stride, ...), returned as one register.
LAB_AVX2 inline __m256 Dot8Keys(const float* q, const float* k, int64_t stride, int64_t hd) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < hd; i += 8) {
    const __m256 qi = _mm256_loadu_ps(q + i);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qi, _mm256_loadu_ps(k + j * stride + i), acc[j]);
  }
  return Sum8x8(acc);
}

// Softmax of one row in place: the maximum, then exp(x - max) and their sum, then a scale by 1/sum.
// Returns max + log(sum), the row's log-sum-exp (attend's lse).
LAB_AVX2 float Softmax(float* x, int64_t n) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int64_t p = 0;
  for (; p + 8 <= n; p += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + p));
  float max = Max8(vmax);
  for (; p < n; ++p) max = x[p] > max ? x[p] : max;
  vmax = _mm256_set1_ps(max);
  __m256 vsum = _mm256_setzero_ps();
  for (p = 0; p + 8 <= n; p += 8) {
    const __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(x + p), vmax));
    _mm256_storeu_ps(x + p, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = Sum8(vsum);
  for (; p < n; ++p) {
    x[p] = std::exp(x[p] - max);
    sum += x[p];
  }
  const __m256 inv = _mm256_set1_ps(1.f / sum);
  for (p = 0; p + 8 <= n; p += 8) _mm256_storeu_ps(x + p, _mm256_mul_ps(_mm256_loadu_ps(x + p), inv));
  for (; p < n; ++p) x[p] *= 1.f / sum;
  return max + std::log(sum);
}

// out_j[0, 8*NV) = sum_p a_j[p] * v_p[0, 8*NV) for NQ queries j (a_j = a + j * n_keys, out_j = out + j * hd):
// each piece of v_p is loaded once for all NQ queries, into NQ*NV independent accumulators.
template <int NQ, int NV>
LAB_AVX2 void WeightedSum(float* out, int64_t hd, const float* a, int64_t n_keys, const float* v, int64_t stride) {
  __m256 acc[NQ][NV];
#pragma GCC unroll 8
  for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) acc[j][u] = _mm256_setzero_ps();
  for (int64_t p = 0; p < n_keys; ++p) {
    __m256 vp[NV];
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) vp[u] = _mm256_loadu_ps(v + p * stride + 8 * u);
#pragma GCC unroll 8
    for (int j = 0; j < NQ; ++j) {
      const __m256 aj = _mm256_broadcast_ss(a + j * n_keys + p);
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) acc[j][u] = _mm256_fmadd_ps(aj, vp[u], acc[j][u]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) _mm256_storeu_ps(out + j * hd + 8 * u, acc[j][u]);
}

// All hd output lanes of NQ queries: wide blocks (about eight accumulators, enough to hide the FMA
// latency), then 8-lane blocks for the rest.
template <int NQ>
LAB_AVX2 void WeightedSums(float* out, int64_t hd, const float* a, int64_t n_keys, const float* v, int64_t stride) {
  constexpr int NV = NQ == 1 ? 8 : NQ == 2 ? 4 : 2;
  int64_t i = 0;
  for (; i + 8 * NV <= hd; i += 8 * NV) WeightedSum<NQ, NV>(out + i, hd, a, n_keys, v + i, stride);
  for (; i < hd; i += 8) WeightedSum<NQ, 1>(out + i, hd, a, n_keys, v + i, stride);
}

LAB_AVX2 void Attend(float* out, const float* q, int64_t nq, const float* kc, const float* vc, int64_t n_keys,
                     int64_t stride, int64_t hd, float scale, float* scores, float* lse) {
  if (hd % 8 != 0) return kScalarKernels.attend(out, q, nq, kc, vc, n_keys, stride, hd, scale, scores, lse);
  // 1. Scores, eight keys at a time; the group's queries reuse each block of keys while it is in L1.
  int64_t p = 0;
  for (; p + 8 <= n_keys; p += 8)
    for (int64_t j = 0; j < nq; ++j)
      _mm256_storeu_ps(scores + j * n_keys + p,
                       _mm256_mul_ps(Dot8Keys(q + j * hd, kc + p * stride, stride, hd), _mm256_set1_ps(scale)));
  for (; p < n_keys; ++p)
    for (int64_t j = 0; j < nq; ++j) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t i = 0; i < hd; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + j * hd + i), _mm256_loadu_ps(kc + p * stride + i), acc);
      scores[j * n_keys + p] = Sum8(acc) * scale;
    }
  // 2. Softmax of each query's row.
  for (int64_t j = 0; j < nq; ++j) {
    const float row_lse = Softmax(scores + j * n_keys, n_keys);
    if (lse) lse[j] = row_lse;
  }
  // 3. Weighted sums of the values, up to four queries per pass over them.
  for (int64_t j = 0; j < nq; j += 4) {
    float* o = out + j * hd;
    const float* a = scores + j * n_keys;
    switch (nq - j < 4 ? nq - j : 4) {
      case 4: WeightedSums<4>(o, hd, a, n_keys, vc, stride); break;
      case 3: WeightedSums<3>(o, hd, a, n_keys, vc, stride); break;
      case 2: WeightedSums<2>(o, hd, a, n_keys, vc, stride); break;
      default: WeightedSums<1>(o, hd, a, n_keys, vc, stride); break;
    }
  }
}

}  // namespace

namespace avx2 {

// ---- Element-wise (shared with the AVX-512 table: memory-bound, wider registers buy nothing) ----

LAB_AVX2 void RmsNorm(float* out, const float* x, const float* w, int64_t n, float eps) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    a0 = _mm256_fmadd_ps(x0, x0, a0);
    a1 = _mm256_fmadd_ps(x1, x1, a1);
  }
  float ss = Sum8(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.f / std::sqrt(ss / n + eps);
  const __m256 s = _mm256_set1_ps(scale);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), s)));
  for (; i < n; ++i) out[i] = w[i] * (x[i] * scale);
}

LAB_AVX2 void Add(float* x, const float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) x[i] += y[i];
}

LAB_AVX2 void SwiGlu(float* g, const float* u, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, Exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

LAB_AVX2 void Rope(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* x = v + h * head_dim;
    int64_t i = 0;
    for (; i + 8 <= half; i += 8) {
      const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + half);
      const __m256 c = _mm256_loadu_ps(cos + i), s = _mm256_loadu_ps(sin + i);
      _mm256_storeu_ps(x + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
      _mm256_storeu_ps(x + i + half, _mm256_fmadd_ps(b, c, _mm256_mul_ps(a, s)));
    }
    for (; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * cos[i] - b * sin[i];
      x[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

}  // namespace avx2

const Kernels kAvx2Kernels = {"avx2", 8, MatVec, nullptr, MatMul, Transpose, avx2::RmsNorm, avx2::Add, avx2::SwiGlu, avx2::Rope, Attend, nullptr};

}  // namespace cpu_opt
}  // namespace lab
