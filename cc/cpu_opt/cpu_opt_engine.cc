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
// Knobs for experiments (environment, read when an engine is created): cc/cpu_opt/options.h.
#include "cc/cpu_opt/cpu_opt_engine.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <numeric>
#include <string>
#include <vector>

#include "cc/core/errors.h"
#include "cc/core/fp16.h"
#include "cc/core/inference_state.h"
#include "cc/core/model_file.h"
#include "cc/core/weights.h"
#include "cc/cpu_opt/kernels.h"
#include "cc/cpu_opt/options.h"

namespace lab {
namespace {

using namespace cpu_opt;  // the knobs and the profile clock (options.h)

constexpr int64_t kAttnTile = 16;      // prefill attention: tokens per attend_tile call
constexpr int64_t kRowsPerTask = 24;    // weight rows per OpenMP work item (a multiple of the kernels' tiles)
constexpr int64_t kMinSplitKeys = 32;   // decode attention: fewest keys in a key range

int64_t RoundUp(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

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
           (matvec_ == K_.matvec4 ? ", decode 4 rows" : "") + (decode_region_ ? "" : ", decode op by op") +
           (guided_ ? "" : ", static schedule") + (attn_mode_ < 0 ? ", decode attention by query head"
                           : attn_mode_ > 0 ? ", decode attention in " + std::to_string(attn_mode_) + " key ranges"
                                            : "") +
           ", " +
           pages_note_;
  }
  std::vector<std::pair<std::string, double>> PhaseSeconds() const override {
    if (!profile_) return {};
    std::vector<std::pair<std::string, double>> out;
    const int nt = static_cast<int>(prof_.size() / (2 * kPhases));
    for (int ph = 0; ph < kPhases; ++ph) {
      for (int part = 0; part < 2; ++part) {
        double sum = 0;  // the threads' mean
        for (int t = 0; t < nt; ++t) sum += prof_[(t * kPhases + ph) * 2 + part];
        out.emplace_back(std::string(kPhaseNames[ph]) + (part ? ".wait" : ".work"), nt ? sum / nt : 0.0);
      }
    }
    out.emplace_back("step", prof_step_s_);  // the calling thread's wall clock around the region
    out.emplace_back("steps", static_cast<double>(prof_steps_));
    return out;
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
    const int64_t half = hd / 2, group = c.group_size();
    const float eps = static_cast<float>(c.rms_norm_eps);
    const float* cos = s_.rope_cos.data() + pos * half;
    const float* sin = s_.rope_sin.data() + pos * half;
    const int nt = omp_get_max_threads();
    const int64_t per_thread = 2 * dim + hidden + q_dim;  // x, x normed, SwiGLU(h), attention output
    if (static_cast<int64_t>(own_.size()) < nt * per_thread) own_.resize(nt * per_thread);
    const int64_t scratch = group * max_context_;  // one attention item's scores
    if (static_cast<int64_t>(scores_.size()) < nt * scratch) scores_.resize(nt * scratch);
    int64_t splits = 1;
    const int64_t attn_items = DecodeAttnItems(pos + 1, &splits);
    if (profile_ && static_cast<int>(prof_.size()) < nt * kPhases * 2) prof_.resize(nt * kPhases * 2, 0.0);
    const auto step_start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num();
      PhaseClock clk(profile_ ? prof_.data() + t * kPhases * 2 : nullptr);
      float* x = own_.data() + t * per_thread;  // this thread's copy of the residual stream
      float* xn = x + dim;                      // x, RMS-normed
      float* h = xn + dim;                      // SwiGLU(gate, up)
      float* att = h + hidden;                  // attention output, merged from the items' partials
      for (int64_t i = 0; i < dim; ++i) x[i] = HalfToFloat(w_.embed[token * dim + i]);
      for (int64_t l = 0; l < c.n_layers; ++l) {
        const LayerWeights<uint16_t>& L = w_.layers[l];
        float* kc = s_.key_cache.data() + l * s_.max_context * kv_dim;
        float* vc = s_.value_cache.data() + l * s_.max_context * kv_dim;
        K_.rmsnorm(xn, x, L.attn_norm, dim, eps);
        clk.Mark(kVector, 0);
        DecodeMatVecs(xn, dim, {{L.wq, s_.q.data(), q_dim}, {L.wk, s_.k.data(), kv_dim}, {L.wv, s_.v.data(), kv_dim}},
                      clk, kQkv);
        // Each `omp for` below ends in an explicit barrier (nowait + barrier is the implicit one, made
        // visible so that the profile can tell a thread's work from its wait).
#pragma omp for schedule(static) nowait
        for (int64_t g = 0; g < c.n_kv_heads; ++g) {  // a KV head: its keys and queries rotated, K/V cached
          K_.rope(s_.k.data() + g * hd, 1, hd, cos, sin);
          K_.rope(s_.q.data() + g * group * hd, group, hd, cos, sin);
          std::copy_n(s_.k.data() + g * hd, hd, kc + (g * s_.max_context + pos) * hd);
          std::copy_n(s_.v.data() + g * hd, hd, vc + (g * s_.max_context + pos) * hd);
        }
        clk.Mark(kRope, 0);
#pragma omp barrier
        clk.Mark(kRope, 1);
#pragma omp for schedule(static) nowait
        for (int64_t it = 0; it < attn_items; ++it) DecodeAttnItem(it, splits, pos + 1, kc, vc, scores_.data() + t * scratch);
        clk.Mark(kAttention, 0);
#pragma omp barrier
        clk.Mark(kAttention, 1);
        MergeSplits(att, splits);
        clk.Mark(kVector, 0);
        DecodeMatVecs(att, q_dim, {{L.wo, s_.xb.data(), dim}}, clk, kO);
        K_.add(x, s_.xb.data(), dim);
        K_.rmsnorm(xn, x, L.ffn_norm, dim, eps);
        clk.Mark(kVector, 0);
        DecodeMatVecs(xn, dim, {{L.w_gate, s_.hb.data(), hidden}, {L.w_up, s_.hb2.data(), hidden}}, clk, kGateUp);
        std::copy_n(s_.hb.data(), hidden, h);
        K_.swiglu(h, s_.hb2.data(), hidden);
        clk.Mark(kVector, 0);
        DecodeMatVecs(h, hidden, {{L.w_down, s_.xb.data(), dim}}, clk, kDown);
        K_.add(x, s_.xb.data(), dim);
      }
      K_.rmsnorm(xn, x, w_.final_norm, dim, eps);
      clk.Mark(kVector, 0);
      DecodeMatVecs(xn, dim, {{w_.lm_head, logits, c.vocab_size}}, clk, kLmHead);
      if (t == 0) std::copy_n(x, dim, s_.x.data());
    }
    if (profile_) {
      prof_step_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
      ++prof_steps_;
    }
  }

  // Inside a parallel region: out = W x for every Proj, the rows dealt to the threads in MatMul's tasks
  // (an orphaned `omp for`), then the barrier that ends it; clk marks this thread's work and its wait.
  void DecodeMatVecs(const float* x, int64_t n, std::initializer_list<Proj> projs, PhaseClock& clk, Phase phase) {
    const Proj* P = projs.begin();
    int64_t tasks = 0;
    for (const Proj& p : projs) tasks += (p.d + kRowsPerTask - 1) / kRowsPerTask;
    const auto run = [&](int64_t task) {
      int64_t j = 0, i0 = task * kRowsPerTask;
      while (i0 >= RoundUp(P[j].d, kRowsPerTask)) i0 -= RoundUp(P[j++].d, kRowsPerTask);
      matvec_(P[j].out, x, P[j].W, n, i0, std::min(P[j].d, i0 + kRowsPerTask));
    };
    // Guided (the default): equal shares left the threads of the GPU host's 16-core Xeon waiting 19% of an
    // 8B step at the barriers for the slowest one (README "Where a decode step's time goes"); guided hands
    // out large contiguous chunks first and small ones last, to whichever thread is free. The same tasks,
    // so the same results: only which thread computes a row differs.
    if (guided_) {
#pragma omp for schedule(guided) nowait
      for (int64_t task = 0; task < tasks; ++task) run(task);
    } else {
#pragma omp for schedule(static) nowait
      for (int64_t task = 0; task < tasks; ++task) run(task);
    }
    clk.Mark(phase, 0);
#pragma omp barrier
    clk.Mark(phase, 1);
  }

  // Causal grouped-query attention, as in stage 1, spread over the threads. Prefill: one work item per
  // (token, KV head), whose group of query heads is done together so that each cached key and value is
  // loaded once for all of them. Decode: the items of DecodeAttnItem, merged by MergeSplits.
  // The cache is head-major, [kv_head][position][head_dim] within a layer (stage 1: [position][kv_dim]),
  // so the keys and values one head reads are each one contiguous stream.
  void Attention(const float* kc, const float* vc, int64_t B, int64_t pos) {
    const ModelConfig& c = cfg_;
    if (B == 1) {  // decode: the items of DecodeStep, merged on this thread
      int64_t splits = 1;
      const int64_t items = DecodeAttnItems(pos + 1, &splits), scratch = c.group_size() * max_context_;
      if (static_cast<int64_t>(scores_.size()) < omp_get_max_threads() * scratch)
        scores_.resize(omp_get_max_threads() * scratch);
#pragma omp parallel for schedule(static)
      for (int64_t it = 0; it < items; ++it)
        DecodeAttnItem(it, splits, pos + 1, kc, vc, scores_.data() + omp_get_thread_num() * scratch);
      MergeSplits(s_.att_out.data(), splits);
      return;
    }
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
    const int64_t nq = group, items = c.n_kv_heads;  // query heads per item, items per token
    const int64_t scratch = group * max_context_;                    // softmax rows of one thread
    if (static_cast<int64_t>(scores_.size()) < omp_get_max_threads() * scratch)
      scores_.resize(omp_get_max_threads() * scratch);
#pragma omp parallel for schedule(dynamic)
    for (int64_t it = 0; it < B * items; ++it) {
      const int64_t t = it / items, h = it % items * nq, kvh = h / group;  // first query head of the item
      K_.attend(s_.att_out.data() + t * q_dim + h * hd, s_.q.data() + t * q_dim + h * hd, nq, kc + kvh * head_stride,
                vc + kvh * head_stride, pos + t + 1, hd, hd, scale, scores_.data() + omp_get_thread_num() * scratch,
                nullptr);
    }
  }

  // Decode attention as work items (both decode paths, so they stay bitwise equal). Split (default): one
  // item per (KV head, key range), each with the head's whole GQA group, so that every cached key and
  // value is read once per token for the group: one item per query head (LAB_CPU_DECODE_ATTN=head, what
  // decode did before) read each of them `group` times, from DRAM more often than not, since 30 layers'
  // caches do not stay in cache between tokens, and attention took 16-27% of a step at context 512
  // (README "Where a decode step's time goes"). The ranges per KV head (*splits) make the item count a
  // multiple of the threads, so the static schedule is balanced (3 KV heads on 2 threads: 2 ranges
  // each, 6 items), while every range keeps at least kMinSplitKeys keys. Item it writes its group's
  // partial outputs to part_[it][group][hd] and their log-sum-exps to lse_[it][group]; head mode uses
  // the same layout with one range (the item index is then the query head).
  int64_t DecodeAttnItems(int64_t n_keys, int64_t* splits) const {
    const ModelConfig& c = cfg_;
    if (attn_mode_ < 0) {
      *splits = 1;
      return c.n_heads;
    }
    if (attn_mode_ > 0) {
      *splits = attn_mode_;
      return c.n_kv_heads * attn_mode_;
    }
    const int64_t nt = omp_get_max_threads();
    int64_t s = nt / std::gcd(nt, c.n_kv_heads);  // n_kv * s = lcm(n_kv, threads)
    s = std::max<int64_t>(1, std::min({s, n_keys / kMinSplitKeys, kMaxSplits}));
    *splits = s;
    return c.n_kv_heads * s;
  }
  void DecodeAttnItem(int64_t it, int64_t splits, int64_t n_keys, const float* kc, const float* vc, float* scores) {
    const ModelConfig& c = cfg_;
    const int64_t hd = c.head_dim, group = c.group_size(), head_stride = s_.max_context * hd;
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    float* out = part_.data() + it * (attn_mode_ >= 0 ? group : 1) * hd;
    float* lse = lse_.data() + it * (attn_mode_ >= 0 ? group : 1);
    if (attn_mode_ < 0) {  // it = query head
      const int64_t g = it / group;
      K_.attend(out, s_.q.data() + it * hd, 1, kc + g * head_stride, vc + g * head_stride, n_keys, hd, hd, scale,
                scores, lse);
      return;
    }
    const int64_t g = it / splits, r = it % splits, chunk = (n_keys + splits - 1) / splits;
    const int64_t k0 = r * chunk, k1 = std::min(n_keys, k0 + chunk);
    if (k1 <= k0) {  // an empty range weighs nothing in the merge
      std::fill_n(lse, group, -INFINITY);
      return;
    }
    K_.attend(out, s_.q.data() + g * group * hd, group, kc + g * head_stride + k0 * hd, vc + g * head_stride + k0 * hd,
              k1 - k0, hd, hd, scale, scores, lse);
  }
  // out[n_heads * hd] = each query head's output from its `splits` partials, weighted by exp(lse - max);
  // with one range the weight is exactly 1 and out is the partial itself.
  void MergeSplits(float* out, int64_t splits) const {
    const ModelConfig& c = cfg_;
    const int64_t hd = c.head_dim, group = c.group_size();
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const int64_t g = h / group, j = h % group;
      const auto at = [&](int64_t r) { return (g * splits + r) * group + j; };  // partial r of head h
      float m = -INFINITY;
      for (int64_t r = 0; r < splits; ++r) m = std::max(m, lse_[at(r)]);
      float* o = out + h * hd;
      float w = std::exp(lse_[at(0)] - m), sum = w;
      const float* p = part_.data() + at(0) * hd;
      for (int64_t i = 0; i < hd; ++i) o[i] = w * p[i];
      for (int64_t r = 1; r < splits; ++r) {
        if (lse_[at(r)] == -INFINITY) continue;
        w = std::exp(lse_[at(r)] - m);
        sum += w;
        p = part_.data() + at(r) * hd;
        for (int64_t i = 0; i < hd; ++i) o[i] += w * p[i];
      }
      const float inv = 1.f / sum;
      if (inv != 1.f)
        for (int64_t i = 0; i < hd; ++i) o[i] *= inv;
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
  const bool attn_tile_ = K_.attend_tile && EnvChoice("LAB_CPU_ATTN", {"tile", "token"}) == 0;
  MatVecFn matvec_ = nullptr;  // the decode matvec PickMatVec chose
  const cpu_opt::PrefillKernels prefill_;  // which matmul each prefill product uses
  std::unique_ptr<ModelFile> file_;
  Weights<uint16_t> w_;
  const int64_t chunk_ = PrefillChunk();  // prompt tokens per matrix-matrix pass
  // Last-layer pruning (ForwardChunk) unless LAB_CPU_PRUNE=0, which exists to measure what it saves.
  const bool prune_ = EnvChoice("LAB_CPU_PRUNE", {"1", "0"}) == 0;
  // Decode as one parallel region (DecodeStep) unless LAB_CPU_DECODE=ops.
  const bool decode_region_ = DecodeRegion();
  // Decode attention by (KV head, key range) unless LAB_CPU_DECODE_ATTN=head (DecodeAttnItem).
  const int attn_mode_ = DecodeAttnMode();
  // DecodeStep's product rows dealt out guided unless LAB_CPU_SCHEDULE=static (equal shares).
  const bool guided_ = GuidedSchedule();
  std::vector<float> part_ = std::vector<float>(kMaxSplits * cfg_.q_dim());  // [items][group][hd] partials
  std::vector<float> lse_ = std::vector<float>(kMaxSplits * cfg_.n_heads);   // [items][group]
  std::string pages_note_;  // PagesNote() at creation, for variant()
  std::vector<float> own_;  // DecodeStep: per thread its residual stream, normed copy and SwiGLU output
  // LAB_CPU_PROFILE=1: DecodeStep's per-thread [kPhases][work, wait] seconds, its wall clock and count.
  const bool profile_ = EnvChoice("LAB_CPU_PROFILE", {"0", "1"}) == 1;
  std::vector<double> prof_;
  double prof_step_s_ = 0;
  int64_t prof_steps_ = 0;
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
