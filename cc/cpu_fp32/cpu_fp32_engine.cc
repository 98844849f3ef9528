// Stage 1 — the CPU FP32 baseline: Llama in plain C++, written to be read.
//
// One token's trip through the model (decode):
//   x = embed[token]
//   for each layer:
//     xb = RMSNorm(x) * attn_norm
//     q, k, v = xb @ Wq^T, xb @ Wk^T, xb @ Wv^T          matrix-vector: every weight read once
//     rotate q and k by RoPE at this position; append k, v to the KV cache
//     each query head h attends over all cached keys of kv head h / group_size   (GQA)
//     x += attention_output @ Wo^T
//     xb = RMSNorm(x) * ffn_norm
//     x += (SiLU(xb @ Wgate^T) * (xb @ Wup^T)) @ Wdown^T   (SwiGLU)
//   logits = RMSNorm(x) * final_norm @ lm_head^T
//
// Prefill runs the same maths for a chunk of B prompt tokens at once. The only structural change is
// in MatMul: the loop over weight rows is outside the loop over tokens, so each weight row is loaded
// from memory once and used B times (matrix-matrix), where decode uses it once (matrix-vector).
// That is why prefill is compute-bound and decode memory-bound, a theme of every later stage.
//
// No threads, no SIMD intrinsics, fp32 weights (an fp16 model.bin is widened at load time):
// the baseline later stages are measured against.
#include "cc/cpu_fp32/cpu_fp32_engine.h"

#include <algorithm>
#include <cmath>

#include "cc/core/inference_state.h"
#include "cc/core/model_file.h"
#include "cc/core/weights.h"

namespace lab {
namespace {

constexpr int64_t kPrefillChunk = 64;  // prompt tokens per matrix-matrix pass

// out[t, :] = x[t, :] / rms(x[t, :]) * w, for t in [0, B)
void RmsNorm(float* out, const float* x, const float* w, int64_t B, int64_t dim, float eps) {
  for (int64_t t = 0; t < B; ++t) {
    const float* xt = x + t * dim;
    float ss = 0.f;
    for (int64_t i = 0; i < dim; ++i) ss += xt[i] * xt[i];
    const float scale = 1.f / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = w[i] * (xt[i] * scale);
  }
}

// out[t, i] = sum_j x[t, j] * W[i, j]  — x: [B, n], W: [d, n], out: [B, d].
// Weight-row-outer order: row i of W is read once for all B tokens.
void MatMul(float* out, const float* x, const float* W, int64_t B, int64_t n, int64_t d) {
  for (int64_t i = 0; i < d; ++i) {
    const float* w = W + i * n;
    for (int64_t t = 0; t < B; ++t) {
      const float* xt = x + t * n;
      float acc = 0.f;
      for (int64_t j = 0; j < n; ++j) acc += w[j] * xt[j];
      out[t * d + i] = acc;
    }
  }
}

// Rotates each head_dim-wide head of `v` ([n_heads, head_dim]) in the half-rotated layout that
// Hugging Face checkpoints use: pairs are (i, i + head_dim/2).
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

class CpuFp32Engine : public Engine {
 public:
  CpuFp32Engine(const ModelConfig& cfg, std::unique_ptr<ModelFile> file, int64_t max_context)
      : Engine(cfg, max_context),
        file_(std::move(file)),
        w_(LoadWeights<float>(*file_, cfg)),
        s_(cfg, max_context_, kPrefillChunk) {
    stats_.weight_bytes = w_.bytes;
    stats_.kv_cache_bytes = s_.kv_bytes();
    stats_.activation_bytes = s_.activation_bytes();
  }
  std::string name() const override { return "cpu_fp32"; }

 protected:
  void Forward(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) override {
    for (int64_t done = 0; done < n; done += kPrefillChunk) {
      const int64_t B = std::min(kPrefillChunk, n - done);
      ForwardChunk(tokens + done, B, pos + done);
      // Logits: every row for perplexity, else only the very last row of the whole call.
      const int64_t vocab = cfg_.vocab_size, dim = cfg_.dim;
      if (all_logits) {
        MatMul(logits + done * vocab, s_.xb.data(), w_.lm_head, B, dim, vocab);
      } else if (done + B == n) {
        MatMul(logits, s_.xb.data() + (B - 1) * dim, w_.lm_head, 1, dim, vocab);
      }
    }
  }

 private:
  // Runs B tokens at positions pos..pos+B through all layers; leaves the final-normed rows in xb.
  void ForwardChunk(const int32_t* tokens, int64_t B, int64_t pos) {
    const ModelConfig& c = cfg_;
    const int64_t dim = c.dim, hd = c.head_dim, kv_dim = c.kv_dim(), q_dim = c.q_dim(), hidden = c.hidden_dim;
    const int64_t half = hd / 2;
    const float eps = static_cast<float>(c.rms_norm_eps);
    float* x = s_.x.data();
    for (int64_t t = 0; t < B; ++t) std::copy_n(w_.embed + tokens[t] * dim, dim, x + t * dim);

    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights<float>& L = w_.layers[l];
      float* kc = s_.key_cache.data() + l * s_.max_context * kv_dim;
      float* vc = s_.value_cache.data() + l * s_.max_context * kv_dim;

      // Attention block.
      RmsNorm(s_.xb.data(), x, L.attn_norm, B, dim, eps);
      MatMul(s_.q.data(), s_.xb.data(), L.wq, B, dim, q_dim);
      MatMul(s_.k.data(), s_.xb.data(), L.wk, B, dim, kv_dim);
      MatMul(s_.v.data(), s_.xb.data(), L.wv, B, dim, kv_dim);
      for (int64_t t = 0; t < B; ++t) {
        const float* cos = s_.rope_cos.data() + (pos + t) * half;
        const float* sin = s_.rope_sin.data() + (pos + t) * half;
        Rope(s_.q.data() + t * q_dim, c.n_heads, hd, cos, sin);
        Rope(s_.k.data() + t * kv_dim, c.n_kv_heads, hd, cos, sin);
        std::copy_n(s_.k.data() + t * kv_dim, kv_dim, kc + (pos + t) * kv_dim);
        std::copy_n(s_.v.data() + t * kv_dim, kv_dim, vc + (pos + t) * kv_dim);
      }
      Attention(kc, vc, B, pos);
      MatMul(s_.xb.data(), s_.att_out.data(), L.wo, B, q_dim, dim);
      for (int64_t i = 0; i < B * dim; ++i) x[i] += s_.xb[i];

      // Feed-forward block (SwiGLU).
      RmsNorm(s_.xb.data(), x, L.ffn_norm, B, dim, eps);
      MatMul(s_.hb.data(), s_.xb.data(), L.w_gate, B, dim, hidden);
      MatMul(s_.hb2.data(), s_.xb.data(), L.w_up, B, dim, hidden);
      for (int64_t i = 0; i < B * hidden; ++i) {
        const float g = s_.hb[i];
        s_.hb[i] = g / (1.f + std::exp(-g)) * s_.hb2[i];
      }
      MatMul(s_.xb.data(), s_.hb.data(), L.w_down, B, hidden, dim);
      for (int64_t i = 0; i < B * dim; ++i) x[i] += s_.xb[i];
    }
    RmsNorm(s_.xb.data(), x, w_.final_norm, B, dim, eps);
  }

  // Causal grouped-query attention for B new tokens whose keys/values are already in the cache.
  // Token t (at position pos+t) sees positions 0..pos+t. Query head h reads KV head h / group_size:
  // with GQA several query heads share one cached key/value head, shrinking the cache.
  void Attention(const float* kc, const float* vc, int64_t B, int64_t pos) {
    const ModelConfig& c = cfg_;
    const int64_t hd = c.head_dim, kv_dim = c.kv_dim(), q_dim = c.q_dim(), group = c.group_size();
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    for (int64_t t = 0; t < B; ++t) {
      const int64_t n_keys = pos + t + 1;
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const float* q = s_.q.data() + t * q_dim + h * hd;
        const int64_t kvh = h / group;
        float* att = s_.att.data() + h * s_.max_context;
        float max_score = -INFINITY;
        for (int64_t p = 0; p < n_keys; ++p) {
          const float* k = kc + p * kv_dim + kvh * hd;
          float dot = 0.f;
          for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
          att[p] = dot * scale;
          max_score = std::max(max_score, att[p]);
        }
        float sum = 0.f;
        for (int64_t p = 0; p < n_keys; ++p) {
          att[p] = std::exp(att[p] - max_score);
          sum += att[p];
        }
        float* out = s_.att_out.data() + t * q_dim + h * hd;
        std::fill_n(out, hd, 0.f);
        for (int64_t p = 0; p < n_keys; ++p) {
          const float a = att[p] / sum;
          const float* v = vc + p * kv_dim + kvh * hd;
          for (int64_t i = 0; i < hd; ++i) out[i] += a * v[i];
        }
      }
    }
  }

  std::unique_ptr<ModelFile> file_;
  Weights<float> w_;
  InferenceState s_;
};

}  // namespace

std::unique_ptr<Engine> MakeCpuFp32Engine(const std::string& model_dir, int64_t max_context) {
  auto [cfg, file] = OpenModel(model_dir);
  return std::make_unique<CpuFp32Engine>(cfg, std::move(file), max_context);
}

}  // namespace lab
