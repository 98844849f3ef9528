// AVX-512F kernels: kernels_avx2.cc's loops with 16 floats per register and 32 registers.
//
// Read kernels_avx2.cc first. What differs here: the 32 registers let the prefill tile grow to 8 weight
// rows x 48 tokens (24 accumulators), whose results are written with one store per token after an
// 8 x 8 transpose in registers; the element-wise kernels and attention use 16 lanes. Decode stays the
// AVX2 loop (memory-bound: wider registers do not read memory faster).
// GCC 12 warns about its own _mm512_undefined_ps() inside the intrinsics headers (a false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "cc/core/fp16.h"
#include "cc/cpu_opt/kernels.h"

#define LAB_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

namespace lab {
namespace cpu_opt {
namespace {

LAB_AVX512 inline __m256 LoadHalf8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

LAB_AVX512 inline __m256 Low256(__m512 v) { return _mm512_castps512_ps256(v); }
LAB_AVX512 inline __m256 High256(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

// exp(x), 16 lanes: the same Cephes polynomial as Exp8; _mm512_scalef_ps multiplies by 2^n.
LAB_AVX512 inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.f)), _mm512_set1_ps(88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// ---- Decode: the AVX2 loop. It is memory-bound, so wider registers do not make it faster; on AMD Zen 4
// (512-bit instructions split in two) the 256-bit loop measured a few percent faster.
void MatVec(float* out, const float* x, const uint16_t* W, int64_t n, int64_t i0, int64_t i1) {
  kAvx2Kernels.matvec(out, x, W, n, i0, i1);
}

// ---- Decode, four rows at a time: four weight streams per thread instead of one. Each row's arithmetic
// is exactly the AVX2 MatVec's (four accumulators over 32-wide steps, the 8-wide tail, the same
// horizontal sum), so the results are bitwise identical; only the order memory is touched in differs.
// Which reads DRAM faster depends on the CPU (its prefetchers and how many misses a core keeps in
// flight): the engine times both on its own weights (cpu_opt_engine.cc). 16 accumulators + 4 inputs:
// AVX-512VL's 32 ymm registers.
#define LAB_AVX512VL __attribute__((target("avx512f,avx512vl,avx2,fma,f16c")))

LAB_AVX512VL inline float Sum8(__m256 v) {  // kernels_avx2.cc's Sum8, the same order of additions
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LAB_AVX512VL void MatVec4(float* out, const float* x, const uint16_t* W, int64_t n, int64_t i0, int64_t i1) {
  const int64_t n4 = n / 32 * 32;
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const uint16_t* w = W + i * n;
    __m256 a[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm256_setzero_ps();
    for (int64_t k = 0; k < n4; k += 32) {
      const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
      const __m256 x2 = _mm256_loadu_ps(x + k + 16), x3 = _mm256_loadu_ps(x + k + 24);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const uint16_t* wr = w + r * n + k;
        a[r][0] = _mm256_fmadd_ps(LoadHalf8(wr), x0, a[r][0]);
        a[r][1] = _mm256_fmadd_ps(LoadHalf8(wr + 8), x1, a[r][1]);
        a[r][2] = _mm256_fmadd_ps(LoadHalf8(wr + 16), x2, a[r][2]);
        a[r][3] = _mm256_fmadd_ps(LoadHalf8(wr + 24), x3, a[r][3]);
      }
    }
    for (int r = 0; r < 4; ++r) {
      const uint16_t* wr = w + r * n;
      int64_t k = n4;
      for (; k + 8 <= n; k += 8) a[r][0] = _mm256_fmadd_ps(LoadHalf8(wr + k), _mm256_loadu_ps(x + k), a[r][0]);
      float s = Sum8(_mm256_add_ps(_mm256_add_ps(a[r][0], a[r][1]), _mm256_add_ps(a[r][2], a[r][3])));
      for (; k < n; ++k) s += HalfToFloat(wr[k]) * x[k];
      out[i + r] = s;
    }
  }
  if (i < i1) MatVec(out, x, W, n, i, i1);  // the last rows, one at a time
}

// ---- Prefill: 8 weight rows x 16*NV tokens per register tile (8 x 48: 24 accumulators) ------------
// Eight rows, so that one token's results are eight contiguous floats of `out`: an 8 x 8 transpose in
// registers turns the tile into one 256-bit store per token. (Writing a row-major output one float at
// a time cost about 15% of the multiply.)

// r[j] = column j of the 8 x 8 matrix whose rows were r[0..7] (the shuffles of kernels_avx2.cc's Transpose).
LAB_AVX512 inline __attribute__((always_inline)) void Transpose8x8(__m256* r) {
  __m256 u[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; j += 2) {
    u[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    u[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
#pragma GCC unroll 8
  for (int j = 0; j < 8; j += 4) {
    r[j] = _mm256_shuffle_ps(u[j], u[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[j + 1] = _mm256_shuffle_ps(u[j], u[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[j + 2] = _mm256_shuffle_ps(u[j + 1], u[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[j + 3] = _mm256_shuffle_ps(u[j + 1], u[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
#pragma GCC unroll 8
  for (int j = 0; j < 4; ++j) {
    u[j] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x20);
    u[j + 4] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x31);
  }
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) r[j] = u[j];
}

template <int MR, int NV>
LAB_AVX512 void Tile(float* out, int64_t ldo, const float* xt, int64_t Bp, int64_t tokens, const float* w,
                     int64_t n) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; ++k) {
    __m512 x[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) x[v] = _mm512_loadu_ps(xt + k * Bp + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 wr = _mm512_set1_ps(w[k * 8 + r]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(wr, x[v], acc[r][v]);
    }
  }
  if constexpr (MR == 8) {  // eight tokens at a time: transpose, one store per token
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        __m256 c[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) c[r] = half ? High256(acc[r][v]) : Low256(acc[r][v]);
        Transpose8x8(c);
        const int64_t t0 = 16 * v + 8 * half;
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j)
          if (t0 + j < tokens) _mm256_storeu_ps(out + (t0 + j) * ldo, c[j]);
      }
  } else {  // the last few rows of a matrix: one float at a time
    for (int r = 0; r < MR; ++r) {
      float lanes[16 * NV];
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(lanes + 16 * v, acc[r][v]);
      for (int64_t t = 0; t < tokens && t < 16 * NV; ++t) out[t * ldo + r] = lanes[t];
    }
  }
}

constexpr int kRowTile = 8;

template <int MR>
LAB_AVX512 void RowTile(float* out, int64_t ldo, const float* xt, int64_t B, int64_t Bp, const float* w, int64_t n) {
  int64_t t = 0;
  for (; t + 32 < B; t += 48) Tile<MR, 3>(out + t * ldo, ldo, xt + t, Bp, B - t, w, n);
  if (B - t > 16) Tile<MR, 2>(out + t * ldo, ldo, xt + t, Bp, B - t, w, n);  // x^T is zero-padded to Bp
  else if (t < B) Tile<MR, 1>(out + t * ldo, ldo, xt + t, Bp, B - t, w, n);
}

LAB_AVX512 void MatMul(float* out, int64_t ldo, const float* xt, int64_t B, int64_t Bp, const uint16_t* W,
                       int64_t n, int64_t i0, int64_t i1) {
  float* w = ThreadScratch(kRowTile * n);
  for (int64_t i = i0; i < i1; i += kRowTile) {
    const int64_t mr = i1 - i < kRowTile ? i1 - i : kRowTile;
    // Widen the rows to fp32, interleaved: w[k * 8 + r] = W[i + r, k], so that the tile's eight
    // broadcasts per step come from one 32-byte piece and the tile reads w front to back.
    const uint16_t* src = W + i * n;
    int64_t k = 0;
    if (mr == 8) {
      for (; k + 8 <= n; k += 8) {
        __m256 c[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) c[r] = LoadHalf8(src + r * n + k);
        Transpose8x8(c);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(w + (k + j) * 8, c[j]);
      }
    }
    for (; k < n; ++k)
      for (int64_t r = 0; r < mr; ++r) w[k * 8 + r] = HalfToFloat(src[r * n + k]);
    const char* next = reinterpret_cast<const char*>(src + mr * n);
    const int64_t ahead = (i1 - i - mr < kRowTile ? i1 - i - mr : kRowTile) * n * 2;  // bytes of the next rows
    for (int64_t b = 0; b < ahead; b += 64) _mm_prefetch(next + b, _MM_HINT_T1);
    switch (mr) {
      case 8: RowTile<8>(out + i, ldo, xt, B, Bp, w, n); break;
      case 7: RowTile<7>(out + i, ldo, xt, B, Bp, w, n); break;
      case 6: RowTile<6>(out + i, ldo, xt, B, Bp, w, n); break;
      case 5: RowTile<5>(out + i, ldo, xt, B, Bp, w, n); break;
      case 4: RowTile<4>(out + i, ldo, xt, B, Bp, w, n); break;
      case 3: RowTile<3>(out + i, ldo, xt, B, Bp, w, n); break;
      case 2: RowTile<2>(out + i, ldo, xt, B, Bp, w, n); break;
      default: RowTile<1>(out + i, ldo, xt, B, Bp, w, n); break;
    }
  }
}

// x^T: the AVX2 version is fast enough (a small share of prefill).
void Transpose(float* xt, int64_t Bp, const float* x, int64_t B, int64_t n, int64_t k0, int64_t k1) {
  kAvx2Kernels.transpose(xt, Bp, x, B, n, k0, k1);
}

// ---- Prefill on AVX512-BF16: the same 8 x 48 tile, two multiply-adds per fp32 lane per instruction ----------
// vdpbf16ps multiplies pairs of bf16 values and adds both products to one fp32 lane: acc += a0*b0 + a1*b1.
// At the same instruction rate as the fp32 FMA it does twice the work, and the fp32 tile above already
// runs near the FMA peak, so this is the only way past it. Both operands become bf16 (8-bit mantissa,
// round to nearest even), the sums stay fp32. Layout, with pairs along k (n is even in every model here;
// an odd n is padded with a zero):
//   weights   wb[kp * 8 + r]  = (W[i + r, 2kp], W[i + r, 2kp + 1])   one 32-bit word per (pair, row)
//   input     xb[kp * Bp + t] = (x[t, 2kp],     x[t, 2kp + 1])       written by TransposeBf16 into xt's buffer
// so one broadcast word of wb times one 16-token load of xb is one vdpbf16ps.
#define LAB_AVX512BF16 __attribute__((target("avx512f,avx512bf16,avx512vl,avx512bw,avx2,fma,f16c")))

// fp32 -> bf16, round to nearest even (the scalar tails; the vector code uses vcvtneps2bf16).
inline uint32_t Bf16Bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;  // NaN stays NaN
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
inline uint32_t Bf16Pair(float lo, float hi) { return Bf16Bits(lo) | Bf16Bits(hi) << 16; }

// 16 floats -> 8 bf16 pairs (256 bits), rounded to nearest even.
LAB_AVX512BF16 inline __m256 PackBf16(__m512 v) { return (__m256)_mm512_cvtneps_pbh(v); }

template <int MR, int NV>
LAB_AVX512BF16 void TileBf16(float* out, int64_t ldo, const uint32_t* xb, int64_t Bp, int64_t tokens,
                             const uint32_t* wb, int64_t np) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < np; ++kp) {
    __m512i x[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) x[v] = _mm512_loadu_si512(xb + kp * Bp + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i wr = _mm512_set1_epi32(static_cast<int>(wb[kp * 8 + r]));
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)wr, (__m512bh)x[v]);
    }
  }
  if constexpr (MR == 8) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        __m256 c[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) c[r] = half ? High256(acc[r][v]) : Low256(acc[r][v]);
        Transpose8x8(c);
        const int64_t t0 = 16 * v + 8 * half;
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j)
          if (t0 + j < tokens) _mm256_storeu_ps(out + (t0 + j) * ldo, c[j]);
      }
  } else {
    for (int r = 0; r < MR; ++r) {
      float lanes[16 * NV];
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(lanes + 16 * v, acc[r][v]);
      for (int64_t t = 0; t < tokens && t < 16 * NV; ++t) out[t * ldo + r] = lanes[t];
    }
  }
}

template <int MR>
LAB_AVX512BF16 void RowTileBf16(float* out, int64_t ldo, const uint32_t* xb, int64_t B, int64_t Bp,
                                const uint32_t* wb, int64_t np) {
  int64_t t = 0;
  for (; t + 32 < B; t += 48) TileBf16<MR, 3>(out + t * ldo, ldo, xb + t, Bp, B - t, wb, np);
  if (B - t > 16) TileBf16<MR, 2>(out + t * ldo, ldo, xb + t, Bp, B - t, wb, np);
  else if (t < B) TileBf16<MR, 1>(out + t * ldo, ldo, xb + t, Bp, B - t, wb, np);
}

// The kernels.h matmul contract, except that `xt` holds TransposeBf16's pairs instead of fp32.
LAB_AVX512BF16 void MatMulBf16(float* out, int64_t ldo, const float* xt, int64_t B, int64_t Bp, const uint16_t* W,
                               int64_t n, int64_t i0, int64_t i1) {
  const uint32_t* xb = reinterpret_cast<const uint32_t*>(xt);
  const int64_t np = (n + 1) / 2;
  uint32_t* wb = reinterpret_cast<uint32_t*>(ThreadScratch(kRowTile * np));
  for (int64_t i = i0; i < i1; i += kRowTile) {
    const int64_t mr = i1 - i < kRowTile ? i1 - i : kRowTile;
    // fp16 -> fp32 (exact) -> bf16 pairs, eight rows interleaved: 16 columns of 8 rows make 8 pairs x 8 rows,
    // transposed in registers so that each pair's 8 row words are one 32-byte store.
    const uint16_t* src = W + i * n;
    int64_t k = 0;
    if (mr == 8) {
      for (; k + 16 <= n; k += 16) {
        __m256 c[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r)
          c[r] = PackBf16(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + r * n + k))));
        Transpose8x8(c);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(reinterpret_cast<float*>(wb + (k / 2 + j) * 8), c[j]);
      }
    }
    for (; k < n; k += 2)
      for (int64_t r = 0; r < mr; ++r)
        wb[k / 2 * 8 + r] = Bf16Pair(HalfToFloat(src[r * n + k]), k + 1 < n ? HalfToFloat(src[r * n + k + 1]) : 0.f);
    const char* next = reinterpret_cast<const char*>(src + mr * n);
    const int64_t ahead = (i1 - i - mr < kRowTile ? i1 - i - mr : kRowTile) * n * 2;
    for (int64_t b = 0; b < ahead; b += 64) _mm_prefetch(next + b, _MM_HINT_T1);
    switch (mr) {
      case 8: RowTileBf16<8>(out + i, ldo, xb, B, Bp, wb, np); break;
      case 7: RowTileBf16<7>(out + i, ldo, xb, B, Bp, wb, np); break;
      case 6: RowTileBf16<6>(out + i, ldo, xb, B, Bp, wb, np); break;
      case 5: RowTileBf16<5>(out + i, ldo, xb, B, Bp, wb, np); break;
      case 4: RowTileBf16<4>(out + i, ldo, xb, B, Bp, wb, np); break;
      case 3: RowTileBf16<3>(out + i, ldo, xb, B, Bp, wb, np); break;
      case 2: RowTileBf16<2>(out + i, ldo, xb, B, Bp, wb, np); break;
      default: RowTileBf16<1>(out + i, ldo, xb, B, Bp, wb, np); break;
    }
  }
}

// The kernels.h transpose contract in bf16 pairs: xb[kp * Bp + t] = (x[t, 2kp], x[t, 2kp + 1]) for the pairs
// of columns [k0, k1) (k0 even: the engine passes blocks of 64), 0 for padding tokens and a missing odd column.
// Eight tokens x 16 columns at a time: each token's 16 floats round to 8 pairs, an 8 x 8 transpose of words.
LAB_AVX512BF16 void TransposeBf16(float* xt, int64_t Bp, const float* x, int64_t B, int64_t n, int64_t k0,
                                  int64_t k1) {
  uint32_t* xb = reinterpret_cast<uint32_t*>(xt);
  int64_t k = k0;
  for (; k + 16 <= k1; k += 16) {
    int64_t t = 0;
    for (; t + 8 <= B; t += 8) {
      __m256 c[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) c[j] = PackBf16(_mm512_loadu_ps(x + (t + j) * n + k));
      Transpose8x8(c);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) _mm256_storeu_ps(reinterpret_cast<float*>(xb + (k / 2 + j) * Bp + t), c[j]);
    }
    for (int64_t kp = k / 2; kp < k / 2 + 8; ++kp)
      for (int64_t s = t; s < Bp; ++s) xb[kp * Bp + s] = s < B ? Bf16Pair(x[s * n + 2 * kp], x[s * n + 2 * kp + 1]) : 0u;
  }
  for (; k < k1; k += 2)
    for (int64_t s = 0; s < Bp; ++s)
      xb[k / 2 * Bp + s] = s < B ? Bf16Pair(x[s * n + k], k + 1 < k1 ? x[s * n + k + 1] : 0.f) : 0u;
}

// ---- Attention (element-wise kernels: the AVX2 ones, see kernels.h) ------------------------------

// q . k for eight consecutive keys, as 8 lanes: 16-lane partial sums, folded to 8 lanes, then the AVX2
// horizontal-add tree (Sum8x8 in kernels_avx2.cc).
LAB_AVX512 inline __m256 Dot8Keys(const float* q, const float* k, int64_t stride, int64_t hd) {
  __m512 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < hd; i += 16) {
    const __m512 qi = _mm512_loadu_ps(q + i);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = _mm512_fmadd_ps(qi, _mm512_loadu_ps(k + j * stride + i), acc[j]);
  }
  __m256 h[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) h[j] = _mm256_add_ps(Low256(acc[j]), High256(acc[j]));
  const __m256 h01 = _mm256_hadd_ps(h[0], h[1]), h23 = _mm256_hadd_ps(h[2], h[3]);
  const __m256 h45 = _mm256_hadd_ps(h[4], h[5]), h67 = _mm256_hadd_ps(h[6], h[7]);
  const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// Softmax of one row in place: the maximum, then exp(x - max) and their sum, then a scale by 1/sum.
// Returns max + log(sum), the row's log-sum-exp (attend's lse).
LAB_AVX512 float Softmax(float* x, int64_t n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  int64_t p = 0;
  for (; p + 16 <= n; p += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + p));
  float max = _mm512_reduce_max_ps(vmax);
  for (; p < n; ++p) max = x[p] > max ? x[p] : max;
  vmax = _mm512_set1_ps(max);
  __m512 vsum = _mm512_setzero_ps();
  for (p = 0; p + 16 <= n; p += 16) {
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_loadu_ps(x + p), vmax));
    _mm512_storeu_ps(x + p, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  float sum = _mm512_reduce_add_ps(vsum);
  for (; p < n; ++p) {
    x[p] = std::exp(x[p] - max);
    sum += x[p];
  }
  const __m512 inv = _mm512_set1_ps(1.f / sum);
  for (p = 0; p + 16 <= n; p += 16) _mm512_storeu_ps(x + p, _mm512_mul_ps(_mm512_loadu_ps(x + p), inv));
  for (; p < n; ++p) x[p] *= 1.f / sum;
  return max + std::log(sum);
}

// out_j[0, 16*NV) = sum_p a_j[p] * v_p[0, 16*NV) for NQ rows j (weights a_j, output out_j, each its own
// pointer): each piece of v_p is loaded once for all NQ rows, into NQ*NV independent accumulators.
template <int NQ, int NV>
LAB_AVX512 void WeightedSum(float* const* out, const float* const* a, int64_t n_keys, const float* v, int64_t stride) {
  __m512 acc[NQ][NV];
#pragma GCC unroll 8
  for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) acc[j][u] = _mm512_setzero_ps();
  for (int64_t p = 0; p < n_keys; ++p) {
    __m512 vp[NV];
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) vp[u] = _mm512_loadu_ps(v + p * stride + 16 * u);
#pragma GCC unroll 8
    for (int j = 0; j < NQ; ++j) {
      const __m512 aj = _mm512_set1_ps(a[j][p]);
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) acc[j][u] = _mm512_fmadd_ps(aj, vp[u], acc[j][u]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) _mm512_storeu_ps(out[j] + 16 * u, acc[j][u]);
}

// All hd output lanes of NQ queries (query j's weights at a + j * n_keys, output at out + j * hd): wide
// blocks (about eight accumulators, enough to hide the FMA latency), then 16-lane blocks for the rest.
template <int NQ>
LAB_AVX512 void WeightedSums(float* out, int64_t hd, const float* a, int64_t n_keys, const float* v, int64_t stride) {
  constexpr int NV = 4;
  float* o[NQ];
  const float* aj[NQ];
  for (int j = 0; j < NQ; ++j) aj[j] = a + j * n_keys;
  int64_t i = 0;
  for (; i + 16 * NV <= hd; i += 16 * NV) {
    for (int j = 0; j < NQ; ++j) o[j] = out + j * hd + i;
    WeightedSum<NQ, NV>(o, aj, n_keys, v + i, stride);
  }
  for (; i < hd; i += 16) {
    for (int j = 0; j < NQ; ++j) o[j] = out + j * hd + i;
    WeightedSum<NQ, 1>(o, aj, n_keys, v + i, stride);
  }
}

LAB_AVX512 void Attend(float* out, const float* q, int64_t nq, const float* kc, const float* vc, int64_t n_keys,
                     int64_t stride, int64_t hd, float scale, float* scores, float* lse) {
  if (hd % 16 != 0) return kAvx2Kernels.attend(out, q, nq, kc, vc, n_keys, stride, hd, scale, scores, lse);
  // 1. Scores, eight keys at a time; the group's queries reuse each block of keys while it is in L1.
  int64_t p = 0;
  for (; p + 8 <= n_keys; p += 8)
    for (int64_t j = 0; j < nq; ++j)
      _mm256_storeu_ps(scores + j * n_keys + p,
                       _mm256_mul_ps(Dot8Keys(q + j * hd, kc + p * stride, stride, hd), _mm256_set1_ps(scale)));
  for (; p < n_keys; ++p)
    for (int64_t j = 0; j < nq; ++j) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < hd; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + j * hd + i), _mm512_loadu_ps(kc + p * stride + i), acc);
      scores[j * n_keys + p] = _mm512_reduce_add_ps(acc) * scale;
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

// ---- Prefill attention for a tile of tokens (kernels.h, attend_tile) ------------------------------
// Attend above serves one token's GQA group: every key and value is loaded for its G (3 for SmolLM2)
// query rows, so prefill attention reads the cache from L2 once per token and runs at the speed of those
// loads. Here T tokens x G heads = R rows share each load. Scores: per block of 16 keys, the block is
// transposed into KT[hd][16] once, then each row's 16 scores are hd broadcast-FMAs into one register
// (4 rows at a time, 4 independent chains). Softmax per row over its own causal length, zeros after it.
// Values: WeightedSum with each v_p loaded once per group of rows (4 rows at hd 64, 2 at hd 128: 16
// accumulators), the rows' outputs and weights by pointer since a tile's rows span several tokens.
LAB_AVX512 void AttendTile(float* out, int64_t out_stride, const float* q, int64_t q_stride, int64_t G, int64_t T,
                           int64_t p0, const float* kc, const float* vc, int64_t stride, int64_t hd, float scale,
                           float* scratch) {
  const int64_t R = T * G, n_max = p0 + T, n_pad = (n_max + 15) / 16 * 16;
  float* S = scratch;               // [R][n_pad] scores, then weights
  float* KT = scratch + R * n_pad;  // [hd][16] one key block, transposed
  auto qrow = [&](int64_t r) { return q + (r / G) * q_stride + (r % G) * hd; };
  // 1. Scores of every row against every key block (keys past a row's position are masked in 2).
  for (int64_t kb = 0; kb < n_max; kb += 16) {
    const int64_t nk = std::min<int64_t>(16, n_max - kb);
    for (int64_t j = 0; j < 16; ++j)
      for (int64_t d = 0; d < hd; ++d) KT[d * 16 + j] = j < nk ? kc[(kb + j) * stride + d] : 0.f;
    int64_t r = 0;
    for (; r + 4 <= R; r += 4) {
      const float *q0 = qrow(r), *q1 = qrow(r + 1), *q2 = qrow(r + 2), *q3 = qrow(r + 3);
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t d = 0; d < hd; ++d) {
        const __m512 k = _mm512_loadu_ps(KT + d * 16);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(q0[d]), k, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(q1[d]), k, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(q2[d]), k, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(q3[d]), k, a3);
      }
      const __m512 sc = _mm512_set1_ps(scale);
      _mm512_storeu_ps(S + r * n_pad + kb, _mm512_mul_ps(a0, sc));
      _mm512_storeu_ps(S + (r + 1) * n_pad + kb, _mm512_mul_ps(a1, sc));
      _mm512_storeu_ps(S + (r + 2) * n_pad + kb, _mm512_mul_ps(a2, sc));
      _mm512_storeu_ps(S + (r + 3) * n_pad + kb, _mm512_mul_ps(a3, sc));
    }
    for (; r < R; ++r) {
      const float* q0 = qrow(r);
      __m512 a0 = _mm512_setzero_ps();
      for (int64_t d = 0; d < hd; ++d) a0 = _mm512_fmadd_ps(_mm512_set1_ps(q0[d]), _mm512_loadu_ps(KT + d * 16), a0);
      _mm512_storeu_ps(S + r * n_pad + kb, _mm512_mul_ps(a0, _mm512_set1_ps(scale)));
    }
  }
  // 2. Softmax of row (t, g) over its keys 0..p0+t; zero weights after them.
  for (int64_t r = 0; r < R; ++r) {
    const int64_t n = p0 + r / G + 1;
    Softmax(S + r * n_pad, n);
    std::fill(S + r * n_pad + n, S + r * n_pad + n_max, 0.f);
  }
  // 3. Weighted sums of the values, a group of rows per pass over them (up to the group's last key).
  constexpr int kRows64 = 4, kRows128 = 2;
  const int RB = hd == 64 ? kRows64 : kRows128;
  for (int64_t r = 0; r < R; r += RB) {
    float* outs[4];
    const float* a[4];
    for (int i = 0; i < RB; ++i) {  // a short last group repeats its last row (same output, same value)
      const int64_t rr = std::min(r + i, R - 1);
      outs[i] = out + (rr / G) * out_stride + (rr % G) * hd;
      a[i] = S + rr * n_pad;
    }
    const int64_t n = p0 + (std::min(r + RB, R) - 1) / G + 1;  // the group's last row sees the most keys
    if (hd == 64) {
      WeightedSum<kRows64, 4>(outs, a, n, vc, stride);
    } else {
      WeightedSum<kRows128, 8>(outs, a, n, vc, stride);
    }
  }
}

}  // namespace

const Kernels kAvx512Kernels = {"avx512", 16, MatVec, MatVec4, MatMul, Transpose, avx2::RmsNorm, avx2::Add, avx2::SwiGlu, avx2::Rope, Attend, AttendTile};
// The same table with the bf16 prefill pair (MatMulBf16 + TransposeBf16); decode and the rest are unchanged.
const Kernels kAvx512Bf16Kernels = {"avx512bf16", 16, MatVec, MatVec4, MatMulBf16, TransposeBf16, avx2::RmsNorm, avx2::Add, avx2::SwiGlu, avx2::Rope, Attend, AttendTile};

}  // namespace cpu_opt
}  // namespace lab
