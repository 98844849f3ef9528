// The SIMD kernels of stage 2, one implementation per instruction set, chosen once at run time.
//
//   kernels_avx2.cc    AVX2 + FMA + F16C, 8 floats per register: the readable lesson
//   kernels_avx512.cc  AVX-512F, 16 floats per register and 32 registers: the same loops, wider;
//                      and a prefill matmul on AVX512-BF16 dot products (bf16 operands, fp32 sums)
//   kernels.cc         a portable scalar fallback, and SelectKernels() (the dispatcher)
//
// Every kernel is single-threaded; the engine splits the work across OpenMP threads (rows of a
// weight matrix, heads of attention) and calls a kernel on each piece. Weight matrices are fp16
// ("uint16_t" bits), row-major [rows, n]; activations are fp32. The SIMD files mark each function
// with __attribute__((target(...))) so the library itself runs on any x86-64 CPU: only the
// dispatcher decides, after asking the CPU (__builtin_cpu_supports), which table is used.
#pragma once
#include <cstdint>

namespace lab {
namespace cpu_opt {

struct Kernels {
  const char* isa;     // "avx512", "avx2" or "scalar"
  int64_t token_tile;  // prefill: tokens per register tile; xt is padded to a multiple of this

  // Decode (matrix-vector): out[i] = W[i, :] . x  for rows i in [i0, i1).
  // Streams the fp16 rows once, converting to fp32 in registers; memory-bound.
  void (*matvec)(float* out, const float* x, const uint16_t* W, int64_t n, int64_t i0, int64_t i1);
  // The same products, four rows interleaved (four weight streams per thread), bitwise equal to matvec's;
  // nullptr where a table has none. Which is faster depends on the CPU: the engine times both.
  void (*matvec4)(float* out, const float* x, const uint16_t* W, int64_t n, int64_t i0, int64_t i1);

  // Prefill (matrix-matrix): out[t * ldo + i] = W[i, :] . x[t, :]  for t < B, rows i in [i0, i1),
  // given x transposed and zero-padded: xt[k * Bp + t], Bp a multiple of token_tile. A few weight
  // rows at a time are widened to fp32 once and used for all B tokens; compute-bound.
  void (*matmul)(float* out, int64_t ldo, const float* xt, int64_t B, int64_t Bp, const uint16_t* W, int64_t n,
                 int64_t i0, int64_t i1);

  // The prefill input transposed for matmul: xt[k * Bp + t] = x[t * n + k] for columns k in [k0, k1),
  // tokens t < B, and 0 for the padding tokens B <= t < Bp.
  void (*transpose)(float* xt, int64_t Bp, const float* x, int64_t B, int64_t n, int64_t k0, int64_t k1);

  // out[i] = x[i] / rms(x) * w[i]
  void (*rmsnorm)(float* out, const float* x, const float* w, int64_t n, float eps);
  // x[i] += y[i]
  void (*add)(float* x, const float* y, int64_t n);
  // g[i] = silu(g[i]) * u[i]
  void (*swiglu)(float* g, const float* u, int64_t n);
  // RoPE on n_heads heads of head_dim (half-rotated pairs (i, i + head_dim/2)).
  void (*rope)(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);
  // Attention of nq query heads that share one KV head (a GQA group) over n_keys cached positions:
  // for each query j, a = softmax(q_j . k_p * scale) over p, out_j = sum_p a_p v_p. Query j and its
  // output are at q + j * head_dim and out + j * head_dim; key and value p at kc + p * stride and
  // vc + p * stride. Each key and value is loaded once for all nq queries. `scores`: nq * n_keys floats.
  // lse (may be null): lse[j] = log of query j's softmax denominator in score units (its max score plus
  // log(sum of exp(score - max))), what merging outputs over several key ranges needs (decode's splits).
  void (*attend)(float* out, const float* q, int64_t nq, const float* kc, const float* vc, int64_t n_keys,
                 int64_t stride, int64_t head_dim, float scale, float* scores, float* lse);
  // Prefill attention of T consecutive tokens (positions p0..p0+T-1) x G query heads of one KV head,
  // causal: row (t, g) attends keys 0..p0+t. Query row at q + t * q_stride + g * head_dim, output row at
  // out + t * out_stride + g * head_dim, key/value p at kc/vc + p * stride. Each key and value is loaded
  // once for all T * G rows. head_dim 64 or 128; `scratch`: T * G * round_up(p0 + T, 16) + 16 * head_dim
  // floats. nullptr where a table has none (the engine then calls attend token by token).
  void (*attend_tile)(float* out, int64_t out_stride, const float* q, int64_t q_stride, int64_t G, int64_t T,
                      int64_t p0, const float* kc, const float* vc, int64_t stride, int64_t head_dim, float scale,
                      float* scratch);
};

// The table for the widest instruction set this CPU has (AVX-512 > AVX2 > scalar), or the one
// named by LAB_CPU_ISA=avx512|avx2|scalar (an unknown or unsupported name throws InputError).
const Kernels& SelectKernels();

// Which table's matmul/transpose each prefill product uses. bf16 dot products (AVX512-BF16) run at
// twice the fp32 FMA rate but round both operands to an 8-bit mantissa; where they are used is a
// trade of speed against the logits bound (README.md, "bf16 where the error budget allows"):
//   LAB_CPU_PREFILL unset   "mlp-bf16" where the CPU has AVX512-BF16 (and the avx512 table is in use),
//                           else "fp32"
//   LAB_CPU_PREFILL=mlp     gate/up/down on bf16 (3/4 of a Llama layer's FLOPs), attention projections
//                           and lm_head fp32: within the fp16 logits bound (tests)
//   LAB_CPU_PREFILL=bf16    every prefill matmul on bf16: fastest, outside the fp16 bound
//   LAB_CPU_PREFILL=fp32    every prefill matmul fp32 (the ISA table's own)
// mlp and bf16 throw InputError on a CPU (or LAB_CPU_ISA) without AVX-512 + AVX512-BF16.
struct PrefillKernels {
  const Kernels* attn;  // q/k/v and o_proj; lm_head when every position's logits are asked for
  const Kernels* mlp;   // gate/up and down
  const char* name;     // "fp32", "mlp-bf16" or "bf16"
};
PrefillKernels SelectPrefill(const Kernels& isa);

// Element-wise kernels of kernels_avx2.cc, also used by the AVX-512 tables: they touch each element
// once, so wider registers buy nothing there.
namespace avx2 {
void RmsNorm(float* out, const float* x, const float* w, int64_t n, float eps);
void Add(float* x, const float* y, int64_t n);
void SwiGlu(float* g, const float* u, int64_t n);
void Rope(float* v, int64_t n_heads, int64_t head_dim, const float* cos, const float* sin);
}  // namespace avx2

// The tables themselves (kernels_avx2.cc, kernels_avx512.cc, kernels.cc).
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;
extern const Kernels kAvx512Bf16Kernels;  // kAvx512Kernels with a bf16 prefill: matmul/transpose on bf16 pairs
extern const Kernels kScalarKernels;

// A per-thread scratch buffer of at least n floats (grown on demand, never shrunk; a call may move it,
// so take all the room a kernel needs in one call).
float* ThreadScratch(int64_t n);

}  // namespace cpu_opt
}  // namespace lab
