// Stage 3 — gpu_naive: stage 1 (cc/cpu_fp32/cpu_fp32_engine.cc) ported line by line to CUDA.
//
// Same maths, same fp32 weights, same order of operations; every loop of the CPU engine becomes a
// kernel, and every kernel is the most direct translation possible:
//   - global memory only: no shared memory, no warp shuffles, no vector loads;
//   - one thread per output element (matmul: one thread per (token, output row) walks the whole row;
//     attention: one thread per (token, head, key) score, one per (token, head) softmax row);
//   - one thread per row for the reductions (RMSNorm, softmax), exactly like the CPU loops;
//   - one launch per op, no fusion, no CUDA graph.
// It is correct and it is slow, and README.md beside this file explains why (uncoalesced weight
// loads, serial reductions, launch overhead, and twice the bytes of fp16). Stage 4 (cuda/gpu_opt)
// fixes each of those in turn.
#include "cuda/gpu_naive/gpu_naive_engine.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "cc/core/config.h"
#include "cc/core/errors.h"
#include "cc/core/model_file.h"
#include "cuda/common/cuda_check.h"

namespace lab {
namespace {

constexpr int64_t kPrefillChunk = 64;  // prompt tokens per pass, as in stage 1
constexpr int kThreads = 256;

inline unsigned Blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// ---------------------------------------------------------------------------------------------
// Kernels. Each one is the body of one CPU loop with the loop index replaced by the thread index.
// ---------------------------------------------------------------------------------------------

// x[t, i] = embed[tokens[t], i]
__global__ void EmbedKernel(float* x, const float* embed, const int32_t* tokens, int64_t B, int64_t dim) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * dim) return;
  const int64_t t = idx / dim, i = idx % dim;
  x[idx] = embed[int64_t(tokens[t]) * dim + i];
}

// One thread per token row: the whole sum of squares in one thread, as the CPU loop does.
__global__ void RmsNormKernel(float* out, const float* x, const float* w, int64_t B, int64_t dim, float eps) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= B) return;
  const float* xt = x + t * dim;
  float ss = 0.f;
  for (int64_t i = 0; i < dim; ++i) ss += xt[i] * xt[i];
  const float scale = 1.f / sqrtf(ss / dim + eps);
  for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = w[i] * (xt[i] * scale);
}

// out[t, i] = sum_j x[t, j] * W[i, j]. One thread per (t, i): neighbouring threads (i, i+1) read
// W[i, j] and W[i+1, j], n floats apart, so a warp's 32 loads touch 32 different cache lines.
__global__ void MatMulKernel(float* out, const float* x, const float* W, int64_t B, int64_t n, int64_t d) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * d) return;
  const int64_t t = idx / d, i = idx % d;
  const float* w = W + i * n;
  const float* xt = x + t * n;
  float acc = 0.f;
  for (int64_t j = 0; j < n; ++j) acc += w[j] * xt[j];
  out[idx] = acc;
}

// RoPE in the half-rotated layout: one thread per (t, head, i < head_dim/2) pair. `v` is [B, n_heads*hd].
__global__ void RopeKernel(float* v, int64_t B, int64_t n_heads, int64_t hd, const float* cos_t, const float* sin_t,
                           int64_t pos) {
  const int64_t half = hd / 2;
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * n_heads * half) return;
  const int64_t t = idx / (n_heads * half), h = (idx / half) % n_heads, i = idx % half;
  float* x = v + t * n_heads * hd + h * hd;
  const float c = cos_t[(pos + t) * half + i], s = sin_t[(pos + t) * half + i];
  const float a = x[i], b = x[i + half];
  x[i] = a * c - b * s;
  x[i + half] = b * c + a * s;
}

// cache[(pos + t), j] = src[t, j]
__global__ void StoreKvKernel(float* cache, const float* src, int64_t B, int64_t kv_dim, int64_t pos) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * kv_dim) return;
  const int64_t t = idx / kv_dim, j = idx % kv_dim;
  cache[(pos + t) * kv_dim + j] = src[idx];
}

// att[t, h, p] = q[t, h] . k[p, h / group] * scale for p <= pos + t (causal). One thread per score.
__global__ void ScoresKernel(float* att, const float* q, const float* kc, int64_t B, int64_t n_heads, int64_t hd,
                             int64_t kv_dim, int64_t group, int64_t pos, int64_t max_ctx, float scale) {
  const int64_t n_keys_max = pos + B;
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * n_heads * n_keys_max) return;
  const int64_t t = idx / (n_heads * n_keys_max), h = (idx / n_keys_max) % n_heads, p = idx % n_keys_max;
  if (p > pos + t) return;  // a future key: masked
  const float* qh = q + t * n_heads * hd + h * hd;
  const float* k = kc + p * kv_dim + (h / group) * hd;
  float dot = 0.f;
  for (int64_t i = 0; i < hd; ++i) dot += qh[i] * k[i];
  att[(t * n_heads + h) * max_ctx + p] = dot * scale;
}

// Softmax over the n_keys = pos + t + 1 scores of one (t, h): one thread walks the row three times.
__global__ void SoftmaxKernel(float* att, int64_t B, int64_t n_heads, int64_t pos, int64_t max_ctx) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * n_heads) return;
  const int64_t t = idx / n_heads;
  float* a = att + idx * max_ctx;
  const int64_t n_keys = pos + t + 1;
  float m = -INFINITY;
  for (int64_t p = 0; p < n_keys; ++p) m = fmaxf(m, a[p]);
  float sum = 0.f;
  for (int64_t p = 0; p < n_keys; ++p) {
    a[p] = expf(a[p] - m);
    sum += a[p];
  }
  for (int64_t p = 0; p < n_keys; ++p) a[p] /= sum;
}

// out[t, h, i] = sum_p att[t, h, p] * v[p, h / group, i]. One thread per output element.
__global__ void AttnOutKernel(float* out, const float* att, const float* vc, int64_t B, int64_t n_heads, int64_t hd,
                              int64_t kv_dim, int64_t group, int64_t pos, int64_t max_ctx) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= B * n_heads * hd) return;
  const int64_t t = idx / (n_heads * hd), h = (idx / hd) % n_heads, i = idx % hd;
  const float* a = att + (t * n_heads + h) * max_ctx;
  const float* v = vc + (h / group) * hd + i;
  float acc = 0.f;
  for (int64_t p = 0; p <= pos + t; ++p) acc += a[p] * v[p * kv_dim];
  out[idx] = acc;
}

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx < n) x[idx] += y[idx];
}

// hb = SiLU(hb) * hb2
__global__ void SwiGluKernel(float* hb, const float* hb2, int64_t n) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= n) return;
  const float g = hb[idx];
  hb[idx] = g / (1.f + expf(-g)) * hb2[idx];
}

// ---------------------------------------------------------------------------------------------
// The engine: device buffers that mirror InferenceState, and Forward() as the CPU engine's loop.
// ---------------------------------------------------------------------------------------------

struct DeviceLayer {
  float *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
};

class GpuNaiveEngine : public Engine {
 public:
  GpuNaiveEngine(const ModelConfig& cfg, const ModelFile& file, int64_t max_context) : Engine(cfg, max_context) {
    try {
      Init(file);
    } catch (...) {
      if (stream_) cudaStreamDestroy(stream_);  // no destructor runs for a half-built object
      stream_ = nullptr;
      throw;
    }
  }

  ~GpuNaiveEngine() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "gpu_naive"; }

 private:
  void Init(const ModelFile& file) {
    cuda::RequireGpu("gpu_naive");
    LAB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const ModelConfig& c = cfg_;
    const int64_t B = kPrefillChunk, T = max_context_;

    // Plan every device buffer, then allocate once (a clear error if the card is too small).
    auto plan = [&](int64_t n_floats) { return arena_.Plan(static_cast<size_t>(n_floats) * sizeof(float)); };
    uint64_t weight_elems = 0;
    auto wplan = [&](const std::string& name) {
      const int64_t n = file.Get(name).numel();
      weight_elems += n;
      return plan(n);
    };
    const size_t o_embed = wplan("model.embed_tokens.weight");
    const size_t o_fnorm = wplan("model.norm.weight");
    const size_t o_lm = c.tie_word_embeddings ? o_embed : wplan("lm_head.weight");
    static const char* kNames[9] = {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                                    "self_attn.k_proj", "self_attn.v_proj",       "self_attn.o_proj",
                                    "mlp.gate_proj",    "mlp.up_proj",            "mlp.down_proj"};
    std::vector<std::array<size_t, 9>> o_layers(c.n_layers);
    for (int64_t l = 0; l < c.n_layers; ++l)
      for (int k = 0; k < 9; ++k) o_layers[l][k] = wplan(LayerTensor(l, kNames[k]));
    const uint64_t weight_bytes = arena_.total();
    const size_t o_x = plan(B * c.dim), o_xb = plan(B * c.dim), o_q = plan(B * c.q_dim()), o_k = plan(B * c.kv_dim()),
                 o_v = plan(B * c.kv_dim()), o_att_out = plan(B * c.q_dim()), o_att = plan(B * c.n_heads * T),
                 o_hb = plan(B * c.hidden_dim), o_hb2 = plan(B * c.hidden_dim), o_logits = plan(B * c.vocab_size),
                 o_cos = plan(T * (c.head_dim / 2)), o_sin = plan(T * (c.head_dim / 2));
    const size_t o_tokens = arena_.Plan(B * sizeof(int32_t));
    const uint64_t before_kv = arena_.total();
    const size_t o_kc = plan(c.n_layers * T * c.kv_dim()), o_vc = plan(c.n_layers * T * c.kv_dim());
    const uint64_t kv_bytes = arena_.total() - before_kv;
    arena_.Allocate("gpu_naive", "fp32 weights " + cuda::GiB(weight_bytes) + " + KV cache " + cuda::GiB(kv_bytes) +
                                     " at max_context " + std::to_string(T) + " + activations " +
                                     cuda::GiB(before_kv - weight_bytes));

    // Upload the weights, widening an fp16 file to fp32 on the device.
    {
      cuda::Uploader up(stream_);
      auto upload = [&](const std::string& name, size_t off) {
        const TensorInfo& t = file.Get(name);
        up.Copy(arena_.Get<float>(off), false, t.data, t.dtype == DType::kF16, static_cast<size_t>(t.numel()));
      };
      upload("model.embed_tokens.weight", o_embed);
      upload("model.norm.weight", o_fnorm);
      if (!c.tie_word_embeddings) upload("lm_head.weight", o_lm);
      for (int64_t l = 0; l < c.n_layers; ++l)
        for (int k = 0; k < 9; ++k) upload(LayerTensor(l, kNames[k]), o_layers[l][k]);
      up.Finish();
    }
    embed_ = arena_.Get<float>(o_embed);
    final_norm_ = arena_.Get<float>(o_fnorm);
    lm_head_ = arena_.Get<float>(o_lm);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      float* p[9];
      for (int k = 0; k < 9; ++k) p[k] = arena_.Get<float>(o_layers[l][k]);
      layers_.push_back({p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]});
    }
    x_ = arena_.Get<float>(o_x);
    xb_ = arena_.Get<float>(o_xb);
    q_ = arena_.Get<float>(o_q);
    k_ = arena_.Get<float>(o_k);
    v_ = arena_.Get<float>(o_v);
    att_out_ = arena_.Get<float>(o_att_out);
    att_ = arena_.Get<float>(o_att);
    hb_ = arena_.Get<float>(o_hb);
    hb2_ = arena_.Get<float>(o_hb2);
    logits_ = arena_.Get<float>(o_logits);
    key_cache_ = arena_.Get<float>(o_kc);
    value_cache_ = arena_.Get<float>(o_vc);
    tokens_ = arena_.Get<int32_t>(o_tokens);
    std::vector<float> cos_t, sin_t;
    RopeTables(c, T, &cos_t, &sin_t);
    rope_cos_ = arena_.Get<float>(o_cos);
    rope_sin_ = arena_.Get<float>(o_sin);
    LAB_CUDA_CHECK(cudaMemcpy(rope_cos_, cos_t.data(), cos_t.size() * sizeof(float), cudaMemcpyHostToDevice));
    LAB_CUDA_CHECK(cudaMemcpy(rope_sin_, sin_t.data(), sin_t.size() * sizeof(float), cudaMemcpyHostToDevice));

    stats_.weight_bytes = weight_bytes;
    stats_.kv_cache_bytes = kv_bytes;
    stats_.activation_bytes = before_kv - weight_bytes;
  }

 protected:
  void Forward(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) override {
    const int64_t vocab = cfg_.vocab_size, dim = cfg_.dim;
    for (int64_t done = 0; done < n; done += kPrefillChunk) {
      const int64_t B = std::min(kPrefillChunk, n - done);
      LAB_CUDA_CHECK(cudaMemcpyAsync(tokens_, tokens + done, B * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
      ForwardChunk(B, pos + done);
      if (all_logits) {
        MatMul(logits_, xb_, lm_head_, B, dim, vocab);
        LAB_CUDA_CHECK(cudaMemcpyAsync(logits + done * vocab, logits_, B * vocab * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
      } else if (done + B == n) {
        MatMul(logits_, xb_ + (B - 1) * dim, lm_head_, 1, dim, vocab);
        LAB_CUDA_CHECK(cudaMemcpyAsync(logits, logits_, vocab * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      }
    }
    LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));  // logits are on the host when Forward returns
  }

 private:
  void MatMul(float* out, const float* x, const float* W, int64_t B, int64_t n, int64_t d) {
    MatMulKernel<<<Blocks(B * d), kThreads, 0, stream_>>>(out, x, W, B, n, d);
    LAB_CUDA_LAUNCH_CHECK("MatMulKernel");
  }
  void RmsNorm(float* out, const float* x, const float* w, int64_t B) {
    RmsNormKernel<<<Blocks(B), kThreads, 0, stream_>>>(out, x, w, B, cfg_.dim, static_cast<float>(cfg_.rms_norm_eps));
    LAB_CUDA_LAUNCH_CHECK("RmsNormKernel");
  }
  void Add(float* x, const float* y, int64_t n) {
    AddKernel<<<Blocks(n), kThreads, 0, stream_>>>(x, y, n);
    LAB_CUDA_LAUNCH_CHECK("AddKernel");
  }

  // Runs B tokens at positions pos..pos+B through all layers; leaves the final-normed rows in xb.
  void ForwardChunk(int64_t B, int64_t pos) {
    const ModelConfig& c = cfg_;
    const int64_t dim = c.dim, hd = c.head_dim, kv_dim = c.kv_dim(), q_dim = c.q_dim(), hidden = c.hidden_dim;
    const int64_t T = max_context_;
    EmbedKernel<<<Blocks(B * dim), kThreads, 0, stream_>>>(x_, embed_, tokens_, B, dim);
    LAB_CUDA_LAUNCH_CHECK("EmbedKernel");
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const DeviceLayer& L = layers_[l];
      float* kc = key_cache_ + l * T * kv_dim;
      float* vc = value_cache_ + l * T * kv_dim;

      // Attention block.
      RmsNorm(xb_, x_, L.attn_norm, B);
      MatMul(q_, xb_, L.wq, B, dim, q_dim);
      MatMul(k_, xb_, L.wk, B, dim, kv_dim);
      MatMul(v_, xb_, L.wv, B, dim, kv_dim);
      RopeKernel<<<Blocks(B * c.n_heads * hd / 2), kThreads, 0, stream_>>>(q_, B, c.n_heads, hd, rope_cos_, rope_sin_, pos);
      LAB_CUDA_LAUNCH_CHECK("RopeKernel(q)");
      RopeKernel<<<Blocks(B * c.n_kv_heads * hd / 2), kThreads, 0, stream_>>>(k_, B, c.n_kv_heads, hd, rope_cos_,
                                                                                rope_sin_, pos);
      LAB_CUDA_LAUNCH_CHECK("RopeKernel(k)");
      StoreKvKernel<<<Blocks(B * kv_dim), kThreads, 0, stream_>>>(kc, k_, B, kv_dim, pos);
      LAB_CUDA_LAUNCH_CHECK("StoreKvKernel(k)");
      StoreKvKernel<<<Blocks(B * kv_dim), kThreads, 0, stream_>>>(vc, v_, B, kv_dim, pos);
      LAB_CUDA_LAUNCH_CHECK("StoreKvKernel(v)");
      const float scale = 1.f / std::sqrt(static_cast<float>(hd));
      ScoresKernel<<<Blocks(B * c.n_heads * (pos + B)), kThreads, 0, stream_>>>(att_, q_, kc, B, c.n_heads, hd, kv_dim,
                                                                                 c.group_size(), pos, T, scale);
      LAB_CUDA_LAUNCH_CHECK("ScoresKernel");
      SoftmaxKernel<<<Blocks(B * c.n_heads), kThreads, 0, stream_>>>(att_, B, c.n_heads, pos, T);
      LAB_CUDA_LAUNCH_CHECK("SoftmaxKernel");
      AttnOutKernel<<<Blocks(B * q_dim), kThreads, 0, stream_>>>(att_out_, att_, vc, B, c.n_heads, hd, kv_dim,
                                                                   c.group_size(), pos, T);
      LAB_CUDA_LAUNCH_CHECK("AttnOutKernel");
      MatMul(xb_, att_out_, L.wo, B, q_dim, dim);
      Add(x_, xb_, B * dim);

      // Feed-forward block (SwiGLU).
      RmsNorm(xb_, x_, L.ffn_norm, B);
      MatMul(hb_, xb_, L.w_gate, B, dim, hidden);
      MatMul(hb2_, xb_, L.w_up, B, dim, hidden);
      SwiGluKernel<<<Blocks(B * hidden), kThreads, 0, stream_>>>(hb_, hb2_, B * hidden);
      LAB_CUDA_LAUNCH_CHECK("SwiGluKernel");
      MatMul(xb_, hb_, L.w_down, B, hidden, dim);
      Add(x_, xb_, B * dim);
    }
    RmsNorm(xb_, x_, final_norm_, B);
  }

  cudaStream_t stream_ = nullptr;
  cuda::DeviceArena arena_;
  float *embed_ = nullptr, *final_norm_ = nullptr, *lm_head_ = nullptr;
  std::vector<DeviceLayer> layers_;
  float *x_, *xb_, *q_, *k_, *v_, *att_out_, *att_, *hb_, *hb2_, *logits_;
  float *key_cache_, *value_cache_, *rope_cos_, *rope_sin_;
  int32_t* tokens_;
};

}  // namespace

std::unique_ptr<Engine> MakeGpuNaiveEngine(const std::string& model_dir, int64_t max_context) {
  OpenedModel m = OpenModel(model_dir);
  const ModelConfig& cfg = m.cfg;
  const ModelFile& file = *m.file;
  if (cfg.head_dim % 2 != 0) throw ModelFormatError("gpu_naive: head_dim must be even for RoPE");
  // The file is only needed while the weights are uploaded: it is unmapped when this returns.
  return std::make_unique<GpuNaiveEngine>(cfg, file, max_context);
}

}  // namespace lab
