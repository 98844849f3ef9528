// Stage 2 — the CPU-optimized engine: stage 1's model, run at the speed of the hardware.
//
// The maths and the layer loop are stage 1's (cc/cpu_fp32/cpu_fp32_engine.cc); four things change.
//
// 1. Half the bytes. Weights stay fp16 in memory (Weights<uint16_t>; an fp16 model.bin is used straight
//    from the memory map) and are widened to fp32 in registers (F16C). Decode reads every weight once per
//    token, so its speed limit is  memory bandwidth / bytes of weights:  halving the bytes doubles it.
// 2. SIMD. The inner loops are AVX2/AVX-512 kernels (kernels.h): 8 or 16 fused multiply-adds per
//    instruction instead of one. SelectKernels() picks the widest the CPU has (LAB_CPU_ISA overrides).
// 3. Threads. OpenMP splits each matrix by weight rows and attention by (token, head): every core
//    streams its own slice of the weights (OMP_NUM_THREADS, default all cores). A decode step runs as one
//    parallel region (DecodeStep): barriers between the products instead of a fork/join around each.
// 4. Blocking. Prefill multiplies a chunk of prompt tokens by a few weight rows at a time in registers
//    (a tile of rows x tokens), so each weight is widened once per chunk and reused for every token of
//    it while it sits in cache: prefill becomes compute-bound. Where the CPU has AVX512-BF16, the MLP's
//    products (3/4 of the FLOPs) take bf16 dot products at twice the fp32 rate (kernels.h, SelectPrefill). Decode (one token) stays the streaming
//    matrix-vector product, as close to memory bandwidth as the kernel can get.
//
// The KV cache stays fp32 (InferenceState's, stored head-major): at the contexts of this lab it is a small
// share of the bytes per token, and keeping it exact keeps this stage's numerics equal to stage 1's on
// fp16 weights. Prefill also skips the last layer's work for tokens whose outputs nobody reads.
//
// The weights are copied at load onto 2 MiB pages (transparent huge pages, cc/core/huge_pages.h): decode
// streams ~270 MB (SmolLM2) to 15 GB (8B) per token, and on 4 KiB pages each 4 KiB of it costs a
// page-table walk, two-dimensional inside a virtual machine. The README's "Pages" section measures it.
//
// Knobs for experiments (environment, read when an engine is created; variants.py compares them):
//   LAB_CPU_ISA=avx512|avx2|scalar   the kernel table (kernels.h, SelectKernels)
//   LAB_CPU_PREFILL=mlp|bf16|fp32    where prefill uses bf16 products (kernels.h, SelectPrefill)
//   LAB_CPU_ATTN=tile|token          prefill attention kernel (default tile where the table has one)
//   LAB_CPU_MATVEC=1|4|auto          decode weight streams per thread (default: timed at creation)
//   LAB_CPU_PREFILL_CHUNK=16..4096   prompt tokens per matrix-matrix pass (default 192)
//   LAB_CPU_PRUNE=1|0                last-layer pruning when only the last logits are asked for
//                                    (default 1; 0 runs the last layer on every row, to measure it)
//   LAB_CPU_PAGES=huge|small|map     where the weights live (cc/core/weights.h): copied onto 2 MiB pages
//                                    (default), copied onto 4 KiB pages, or used from the file's map
//   LAB_CPU_DECODE=region|ops        a decode step as one parallel region with barriers (DecodeStep), or
//                                    as prefill's path with one token (a parallel region per op)
#include "cc/cpu_opt/cpu_opt_engine.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "cc/core/errors.h"
#include "cc/core/fp16.h"
#include "cc/core/inference_state.h"
#include "cc/core/model_file.h"
#include "cc/core/weights.h"
#include "cc/cpu_opt/kernels.h"

namespace lab {
namespace {

constexpr int64_t kPrefillChunk = 192;  // prompt tokens per matrix-matrix pass (LAB_CPU_PREFILL_CHUNK)
constexpr int64_t kAttnTile = 16;      // prefill attention: tokens per attend_tile call
constexpr int64_t kRowsPerTask = 24;    // weight rows per OpenMP work item (a multiple of the kernels' tiles)

int64_t RoundUp(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The prefill chunk: kPrefillChunk, or LAB_CPU_PREFILL_CHUNK (16..4096 tokens) for experiments.
int64_t PrefillChunk() {
  const char* v = std::getenv("LAB_CPU_PREFILL_CHUNK");
  if (!v || !*v) return kPrefillChunk;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end || n < 16 || n > 4096) throw InputError(std::string("LAB_CPU_PREFILL_CHUNK must be 16..4096, not '") + v + "'");
  return n;
}

// LAB_CPU_PAGES: where the weights live (default: a copy on 2 MiB pages).
WeightMemory CpuPages() {
  const char* v = std::getenv("LAB_CPU_PAGES");
  const std::string s = v ? v : "";
  if (s.empty() || s == "huge") return WeightMemory::kHugePages;
  if (s == "small") return WeightMemory::kSmallPages;
  if (s == "map") return WeightMemory::kMap;
  throw InputError("LAB_CPU_PAGES must be huge, small or map, not '" + s + "'");
}

// LAB_CPU_DECODE: one parallel region per decode step (default) or one per op.
bool DecodeRegion() {
  const char* v = std::getenv("LAB_CPU_DECODE");
  const std::string s = v ? v : "";
  if (s.empty() || s == "region") return true;
  if (s == "ops") return false;
  throw InputError("LAB_CPU_DECODE must be region or ops, not '" + s + "'");
}

bool EnvEquals(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::string(v) == value;
}

class CpuOptEngine : public Engine {
 public:
  CpuOptEngine(const ModelConfig& cfg, std::unique_ptr<ModelFile> file, int64_t max_context)
      : Engine(cfg, max_context),
        K_(cpu_opt::SelectKernels()),
        prefill_(cpu_opt::SelectPrefill(K_)),
        file_(std::move(file)),
        w_(LoadWeights<uint16_t>(*file_, cfg, CpuPages())),
        s_(cfg, max_context_, chunk_) {
    xt_.resize(std::max({cfg.dim, cfg.q_dim(), cfg.hidden_dim}) * RoundUp(chunk_, 16));
    matvec_ = PickMatVec();
    pages_note_ = PagesNote();
    stats_.weight_bytes = w_.bytes;
    stats_.kv_cache_bytes = s_.kv_bytes();
    stats_.activation_bytes = s_.activation_bytes() + xt_.size() * sizeof(float);
  }
  std::string name() const override { return "cpu_opt"; }
  std::string variant() const override {
    return std::string(K_.isa) + ", prefill " + prefill_.name + (attn_tile_ ? ", attention tiles" : "") +
           (matvec_ == K_.matvec4 ? ", decode 4 rows" : "") + (decode_region_ ? "" : ", decode op by op") + ", " +
           pages_note_;
  }

 protected:
  void Forward(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) override {
    if (n == 1 && decode_region_) return DecodeStep(tokens[0], pos, logits);
    for (int64_t done = 0; done < n; done += chunk_) {
      const int64_t B = std::min(chunk_, n - done);
      // Rows whose output is needed: every row for all_logits, else only the very last one of the call.
      // ForwardChunk computes `rows` of them to the end (all B with LAB_CPU_PRUNE=0); keep are the last.
      const int64_t keep = all_logits ? B : done + B == n ? 1 : 0, rows = prune_ ? keep : B;
      ForwardChunk(tokens + done, B, pos + done, rows);
      const int64_t vocab = cfg_.vocab_size, dim = cfg_.dim;
      if (keep > 0)
        MatMul(*prefill_.attn, s_.xb.data() + (rows - keep) * dim, keep, dim,
               {{w_.lm_head, logits + (all_logits ? done * vocab : 0), vocab}});
    }
  }

 private:
  // One weight matrix applied to the shared input: out[B, d] = x[B, n] @ W[d, n]^T (W fp16).
  struct Proj {
    const uint16_t* W;
    float* out;
    int64_t d;
  };

  // Multiplies x[B, n] by up to three matrices (q/k/v, gate/up) in one parallel pass: the threads split
  // the weight rows of all of them (contiguous blocks of kRowsPerTask rows, so each streams its own slice).
  // Decode (B == 1) always streams with K_.matvec; prefill uses Km's matmul (fp32 or bf16, SelectPrefill).
  void MatMul(const cpu_opt::Kernels& Km, const float* x, int64_t B, int64_t n, std::initializer_list<Proj> projs) {
    const Proj* P = projs.begin();
    int64_t tasks = 0;
    for (const Proj& p : projs) tasks += (p.d + kRowsPerTask - 1) / kRowsPerTask;
    const int64_t Bp = RoundUp(B, Km.token_tile);
    float* xt = xt_.data();
#pragma omp parallel
    {
      if (B > 1) {  // prefill: x^T, zero-padded to whole register tiles (see kernels.h)
#pragma omp for schedule(static)
        for (int64_t k = 0; k < n; k += 64) Km.transpose(xt, Bp, x, B, n, k, std::min(n, k + 64));
      }
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) {
        int64_t j = 0, i0 = task * kRowsPerTask;
        while (i0 >= RoundUp(P[j].d, kRowsPerTask)) i0 -= RoundUp(P[j++].d, kRowsPerTask);
        const int64_t i1 = std::min(P[j].d, i0 + kRowsPerTask);
        if (B == 1) {
          matvec_(P[j].out, x, P[j].W, n, i0, i1);  // decode: stream the rows at memory bandwidth
        } else {
          Km.matmul(P[j].out, P[j].d, xt, B, Bp, P[j].W, n, i0, i1);  // prefill: row x token tiles
        }
      }
    }
  }

  // Runs B tokens at positions pos..pos+B through all layers and leaves the final-normed rows of the last
  // `keep` tokens in xb (rows 0..keep). Every token's keys and values are cached in every layer.
  void ForwardChunk(const int32_t* tokens, int64_t B, int64_t pos, int64_t keep) {
    const ModelConfig& c = cfg_;
    const int64_t dim = c.dim, hd = c.head_dim, kv_dim = c.kv_dim(), q_dim = c.q_dim(), hidden = c.hidden_dim;
    const int64_t half = hd / 2;
    const float eps = static_cast<float>(c.rms_norm_eps);
    float* x = s_.x.data();
    for (int64_t t = 0; t < B; ++t)
      for (int64_t i = 0; i < dim; ++i) x[t * dim + i] = HalfToFloat(w_.embed[tokens[t] * dim + i]);

    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights<uint16_t>& L = w_.layers[l];
      float* kc = s_.key_cache.data() + l * s_.max_context * kv_dim;
      float* vc = s_.value_cache.data() + l * s_.max_context * kv_dim;

      // The last layer of a prefill that keeps fewer rows than it has (only the last logits asked for):
      // every row's keys and values go into the cache (decode reads them), but nothing reads the other
      // rows' queries, attention output or feed-forward, so those run for the kept rows only, moved to
      // the front (what llama.cpp does with its output ids). Prefill usually keeps one row, or none in
      // the chunks before the call's last one.
      const bool prune = l == c.n_layers - 1 && keep < B;

      // Attention block. Per-token work is split over the threads too when there are many tokens.
#pragma omp parallel for if (B > 1)
      for (int64_t t = 0; t < B; ++t) K_.rmsnorm(s_.xb.data() + t * dim, x + t * dim, L.attn_norm, dim, eps);
      if (!prune) {
        MatMul(*prefill_.attn, s_.xb.data(), B, dim,
               {{L.wq, s_.q.data(), q_dim}, {L.wk, s_.k.data(), kv_dim}, {L.wv, s_.v.data(), kv_dim}});
      } else {  // k/v of every row (the same products as the fused pass: the cache is bitwise the same)
        MatMul(*prefill_.attn, s_.xb.data(), B, dim, {{L.wk, s_.k.data(), kv_dim}, {L.wv, s_.v.data(), kv_dim}});
        if (keep > 0) MatMul(*prefill_.attn, s_.xb.data() + (B - keep) * dim, keep, dim, {{L.wq, s_.q.data(), q_dim}});
      }
#pragma omp parallel for if (B > 1)
      for (int64_t t = 0; t < B; ++t) {
        const float* cos = s_.rope_cos.data() + (pos + t) * half;
        const float* sin = s_.rope_sin.data() + (pos + t) * half;
        const int64_t qrow = prune ? t - (B - keep) : t;  // the row of s_.q with token t's query, if any
        if (qrow >= 0) K_.rope(s_.q.data() + qrow * q_dim, c.n_heads, hd, cos, sin);
        K_.rope(s_.k.data() + t * kv_dim, c.n_kv_heads, hd, cos, sin);
        for (int64_t g = 0; g < c.n_kv_heads; ++g) {  // head-major cache: see Attention
          std::copy_n(s_.k.data() + t * kv_dim + g * hd, hd, kc + (g * s_.max_context + pos + t) * hd);
          std::copy_n(s_.v.data() + t * kv_dim + g * hd, hd, vc + (g * s_.max_context + pos + t) * hd);
        }
      }
      if (prune) {
        if (keep == 0) return;
        std::copy_n(x + (B - keep) * dim, keep * dim, x);
        pos += B - keep;
        B = keep;
      }
      Attention(kc, vc, B, pos);
      MatMul(*prefill_.attn, s_.att_out.data(), B, q_dim, {{L.wo, s_.xb.data(), dim}});

      // Feed-forward block (SwiGLU), after the residual add.
#pragma omp parallel for if (B > 1)
      for (int64_t t = 0; t < B; ++t) {
        K_.add(x + t * dim, s_.xb.data() + t * dim, dim);
        K_.rmsnorm(s_.xb.data() + t * dim, x + t * dim, L.ffn_norm, dim, eps);
      }
      MatMul(*prefill_.mlp, s_.xb.data(), B, dim, {{L.w_gate, s_.hb.data(), hidden}, {L.w_up, s_.hb2.data(), hidden}});
#pragma omp parallel for if (B > 1)
      for (int64_t t = 0; t < B; ++t) K_.swiglu(s_.hb.data() + t * hidden, s_.hb2.data() + t * hidden, hidden);
      MatMul(*prefill_.mlp, s_.hb.data(), B, hidden, {{L.w_down, s_.xb.data(), dim}});
#pragma omp parallel for if (B > 1)
      for (int64_t t = 0; t < B; ++t) K_.add(x + t * dim, s_.xb.data() + t * dim, dim);
    }
#pragma omp parallel for if (B > 1)
    for (int64_t t = 0; t < B; ++t) K_.rmsnorm(s_.xb.data() + t * dim, x + t * dim, w_.final_norm, dim, eps);
  }

  // One decode step as one parallel region (LAB_CPU_DECODE=region, the default): the same kernels on the
  // same rows as ForwardChunk with one token, but where that path forks and joins the threads for every
  // matrix product and leaves the small vector work between them (RMSNorm, RoPE, residual adds, SwiGLU)
  // to one thread while the others wait, here the threads stay together for the whole step and meet at
  // six barriers a layer (the implicit ones at the end of each `omp for`). Each thread keeps its own copy
  // of the residual stream and does the vector work itself, redundantly: a few thousand floats, cheaper
  // than a barrier, and it needs none. The results are bitwise those of the other path (a test).
  void DecodeStep(int32_t token, int64_t pos, float* logits) {
    const ModelConfig& c = cfg_;
    const int64_t dim = c.dim, hd = c.head_dim, kv_dim = c.kv_dim(), q_dim = c.q_dim(), hidden = c.hidden_dim;
    const int64_t half = hd / 2, group = c.group_size(), head_stride = s_.max_context * hd;
    const float eps = static_cast<float>(c.rms_norm_eps), scale = 1.f / std::sqrt(static_cast<float>(hd));
    const float* cos = s_.rope_cos.data() + pos * half;
    const float* sin = s_.rope_sin.data() + pos * half;
    const int nt = omp_get_max_threads();
    const int64_t per_thread = 2 * dim + hidden;  // x, x normed, SwiGLU(h)
    if (static_cast<int64_t>(own_.size()) < nt * per_thread) own_.resize(nt * per_thread);
    if (static_cast<int64_t>(scores_.size()) < nt * max_context_) scores_.resize(nt * max_context_);
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num();
      float* x = own_.data() + t * per_thread;  // this thread's copy of the residual stream
      float* xn = x + dim;                      // x, RMS-normed
      float* h = xn + dim;                      // SwiGLU(gate, up)
      for (int64_t i = 0; i < dim; ++i) x[i] = HalfToFloat(w_.embed[token * dim + i]);
      for (int64_t l = 0; l < c.n_layers; ++l) {
        const LayerWeights<uint16_t>& L = w_.layers[l];
        float* kc = s_.key_cache.data() + l * s_.max_context * kv_dim;
        float* vc = s_.value_cache.data() + l * s_.max_context * kv_dim;
        K_.rmsnorm(xn, x, L.attn_norm, dim, eps);
        DecodeMatVecs(xn, dim, {{L.wq, s_.q.data(), q_dim}, {L.wk, s_.k.data(), kv_dim}, {L.wv, s_.v.data(), kv_dim}});
#pragma omp for schedule(static)
        for (int64_t g = 0; g < c.n_kv_heads; ++g) {  // a KV head: its keys and queries rotated, K/V cached
          K_.rope(s_.k.data() + g * hd, 1, hd, cos, sin);
          K_.rope(s_.q.data() + g * group * hd, group, hd, cos, sin);
          std::copy_n(s_.k.data() + g * hd, hd, kc + (g * s_.max_context + pos) * hd);
          std::copy_n(s_.v.data() + g * hd, hd, vc + (g * s_.max_context + pos) * hd);
        }
#pragma omp for schedule(dynamic)
        for (int64_t hq = 0; hq < c.n_heads; ++hq) {
          const int64_t g = hq / group;
          K_.attend(s_.att_out.data() + hq * hd, s_.q.data() + hq * hd, 1, kc + g * head_stride, vc + g * head_stride,
                    pos + 1, hd, hd, scale, scores_.data() + t * max_context_);
        }
        DecodeMatVecs(s_.att_out.data(), q_dim, {{L.wo, s_.xb.data(), dim}});
        K_.add(x, s_.xb.data(), dim);
        K_.rmsnorm(xn, x, L.ffn_norm, dim, eps);
        DecodeMatVecs(xn, dim, {{L.w_gate, s_.hb.data(), hidden}, {L.w_up, s_.hb2.data(), hidden}});
        std::copy_n(s_.hb.data(), hidden, h);
        K_.swiglu(h, s_.hb2.data(), hidden);
        DecodeMatVecs(h, hidden, {{L.w_down, s_.xb.data(), dim}});
        K_.add(x, s_.xb.data(), dim);
      }
      K_.rmsnorm(xn, x, w_.final_norm, dim, eps);
      DecodeMatVecs(xn, dim, {{w_.lm_head, logits, c.vocab_size}});
      if (t == 0) std::copy_n(x, dim, s_.x.data());
    }
  }

  // Inside a parallel region: out = W x for every Proj, the rows dealt to the threads in MatMul's tasks
  // (an orphaned `omp for`, with its barrier at the end).
  void DecodeMatVecs(const float* x, int64_t n, std::initializer_list<Proj> projs) {
    const Proj* P = projs.begin();
    int64_t tasks = 0;
    for (const Proj& p : projs) tasks += (p.d + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      int64_t j = 0, i0 = task * kRowsPerTask;
      while (i0 >= RoundUp(P[j].d, kRowsPerTask)) i0 -= RoundUp(P[j++].d, kRowsPerTask);
      matvec_(P[j].out, x, P[j].W, n, i0, std::min(P[j].d, i0 + kRowsPerTask));
    }
  }

  // Causal grouped-query attention, as in stage 1, spread over the threads. Prefill: one work item per
  // (token, KV head), whose group of query heads is done together so that each cached key and value is
  // loaded once for all of them. Decode: one item per query head, to give every core work.
  // The cache is head-major, [kv_head][position][head_dim] within a layer (stage 1: [position][kv_dim]),
  // so the keys and values one head reads are each one contiguous stream.
  void Attention(const float* kc, const float* vc, int64_t B, int64_t pos) {
    const ModelConfig& c = cfg_;
    const int64_t hd = c.head_dim, q_dim = c.q_dim(), group = c.group_size(), head_stride = s_.max_context * hd;
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    if (B > 1 && attn_tile_ && (hd == 64 || hd == 128)) {
      // Prefill with the tiled kernel: one item per (tile of kAttnTile tokens, KV head); each cached key
      // and value is loaded once for the tile's kAttnTile x group query rows (kernels.h, attend_tile).
      const int64_t tiles = (B + kAttnTile - 1) / kAttnTile, n_kv = c.n_kv_heads;
      const int64_t scratch = kAttnTile * group * RoundUp(pos + B, 16) + 16 * hd;
      if (static_cast<int64_t>(scores_.size()) < omp_get_max_threads() * scratch)
        scores_.resize(omp_get_max_threads() * scratch);
#pragma omp parallel for schedule(dynamic)
      for (int64_t it = 0; it < tiles * n_kv; ++it) {
        const int64_t t0 = it / n_kv * kAttnTile, kvh = it % n_kv, T = std::min(kAttnTile, B - t0);
        const int64_t off = t0 * q_dim + kvh * group * hd;
        K_.attend_tile(s_.att_out.data() + off, q_dim, s_.q.data() + off, q_dim, group, T, pos + t0,
                       kc + kvh * head_stride, vc + kvh * head_stride, hd, hd, scale,
                       scores_.data() + omp_get_thread_num() * scratch);
      }
      return;
    }
    const int64_t nq = B == 1 ? 1 : group, items = c.n_heads / nq;  // query heads per item, items per token
    const int64_t scratch = group * max_context_;                    // softmax rows of one thread
    if (static_cast<int64_t>(scores_.size()) < omp_get_max_threads() * scratch)
      scores_.resize(omp_get_max_threads() * scratch);
#pragma omp parallel for schedule(dynamic)
    for (int64_t it = 0; it < B * items; ++it) {
      const int64_t t = it / items, h = it % items * nq, kvh = h / group;  // first query head of the item
      K_.attend(s_.att_out.data() + t * q_dim + h * hd, s_.q.data() + t * q_dim + h * hd, nq, kc + kvh * head_stride,
                vc + kvh * head_stride, pos + t + 1, hd, hd, scale, scores_.data() + omp_get_thread_num() * scratch);
    }
  }

  // "weights on 2 MiB pages (100%)": the placement, and for a copy the share the kernel backs with huge
  // pages (THP may be off, or short of free 2 MiB blocks; then the copy sits on 4 KiB pages).
  // Read once, at creation (HugeFraction reads /proc/self/smaps).
  std::string PagesNote() const {
    if (w_.memory == WeightMemory::kMap) return "weights in the file's map";
    const double f = w_.arena.HugeFraction();
    const std::string share = f < 0 ? "?" : std::to_string(static_cast<int>(f * 100 + 0.5)) + "%";
    return std::string("weights copied to ") + PageKindName(w_.arena.kind()) + " pages (" + share + " huge)";
  }

  // Decode streams the weights at memory bandwidth, and how many weight streams one core should read
  // at once depends on the CPU: one (matvec) on the dev machine's AMD Zen 4, four (matvec4) on the
  // GPU host's Xeon (README, "Decode: one stream or four"). Both give bitwise equal results, so the
  // engine times them on its own weights, more bytes than the caches hold, and keeps the faster unless
  // LAB_CPU_MATVEC=1|4 picks one.
  using MatVecFn = void (*)(float*, const float*, const uint16_t*, int64_t, int64_t, int64_t);
  MatVecFn PickMatVec() {
    const char* env = std::getenv("LAB_CPU_MATVEC");
    const std::string want = env ? env : "";
    if (want == "4" && !K_.matvec4)
      throw InputError("LAB_CPU_MATVEC=4: the " + std::string(K_.isa) + " kernels have no 4-row matvec");
    if (want == "1" || !K_.matvec4) return K_.matvec;
    if (want == "4") return K_.matvec4;
    if (!want.empty() && want != "auto") throw InputError("LAB_CPU_MATVEC=" + want + ": expected 1, 4 or auto");
    const ModelConfig& c = cfg_;
    std::vector<const uint16_t*> mats;  // gate and up of as many layers as make 256 MB (or all)
    uint64_t bytes = 0;
    for (int64_t l = 0; l < c.n_layers && bytes < (uint64_t(256) << 20); ++l) {
      mats.push_back(w_.layers[l].w_gate);
      mats.push_back(w_.layers[l].w_up);
      bytes += uint64_t(4) * c.hidden_dim * c.dim;
    }
    std::fill_n(s_.xb.data(), c.dim, 1.f);
    const MatVecFn fns[2] = {K_.matvec, K_.matvec4};
    double best[2] = {1e30, 1e30};
    for (int rep = 0; rep < 3; ++rep) {
      for (int v = 0; v < 2; ++v) {
        matvec_ = fns[v];
        const auto t0 = std::chrono::steady_clock::now();
        for (const uint16_t* W : mats) MatMul(K_, s_.xb.data(), 1, c.dim, {{W, s_.hb.data(), c.hidden_dim}});
        best[v] = std::min(best[v], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    }
    return best[1] < 0.97 * best[0] ? K_.matvec4 : K_.matvec;  // four streams only for a clear gain
  }

  const cpu_opt::Kernels& K_;
  // Prefill attention: the tiled kernel where the table has one, unless LAB_CPU_ATTN=token.
  const bool attn_tile_ = K_.attend_tile && !EnvEquals("LAB_CPU_ATTN", "token");
  MatVecFn matvec_ = nullptr;  // the decode matvec PickMatVec chose
  const cpu_opt::PrefillKernels prefill_;  // which matmul each prefill product uses
  std::unique_ptr<ModelFile> file_;
  Weights<uint16_t> w_;
  const int64_t chunk_ = PrefillChunk();  // prompt tokens per matrix-matrix pass
  // Last-layer pruning (ForwardChunk) unless LAB_CPU_PRUNE=0, which exists to measure what it saves.
  const bool prune_ = !EnvEquals("LAB_CPU_PRUNE", "0");
  // Decode as one parallel region (DecodeStep) unless LAB_CPU_DECODE=ops.
  const bool decode_region_ = DecodeRegion();
  std::string pages_note_;  // PagesNote() at creation, for variant()
  std::vector<float> own_;  // DecodeStep: per thread its residual stream, normed copy and SwiGLU output
  InferenceState s_;
  std::vector<float> xt_;      // [n, chunk] the prefill input, transposed
  std::vector<float> scores_;  // [threads, group * max_context] attention scores
};

}  // namespace

std::unique_ptr<Engine> MakeCpuOptEngine(const std::string& model_dir, int64_t max_context) {
  auto [cfg, file] = OpenModel(model_dir);
  return std::make_unique<CpuOptEngine>(cfg, std::move(file), max_context);
}

}  // namespace lab
