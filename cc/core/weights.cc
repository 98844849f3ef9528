#include "cc/core/weights.h"

#include <cstring>
#include <type_traits>

#include "cc/core/fp16.h"

namespace lab {
namespace {

template <typename T>
const T* Convert(const TensorInfo& t, Weights<T>* w) {
  const int64_t n = t.numel();
  w->bytes += static_cast<uint64_t>(n) * sizeof(T);
  const bool same = (t.dtype == DType::kF32) == std::is_same<T, float>::value;
  if (same) return static_cast<const T*>(t.data);
  std::unique_ptr<T[]> buf(new T[n]);
  if constexpr (std::is_same<T, float>::value) {
    const auto* src = static_cast<const uint16_t*>(t.data);
    for (int64_t i = 0; i < n; ++i) buf[i] = HalfToFloat(src[i]);
  } else {
    const auto* src = static_cast<const float*>(t.data);
    for (int64_t i = 0; i < n; ++i) buf[i] = FloatToHalf(src[i]);
  }
  const T* p = buf.get();
  w->owned.push_back(std::move(buf));
  return p;
}

template <typename T>
const float* Norm(const TensorInfo& t, Weights<T>* w) {
  w->bytes += static_cast<uint64_t>(t.numel()) * 4;
  if (t.dtype == DType::kF32) return static_cast<const float*>(t.data);
  std::unique_ptr<float[]> buf(new float[t.numel()]);
  const auto* src = static_cast<const uint16_t*>(t.data);
  for (int64_t i = 0; i < t.numel(); ++i) buf[i] = HalfToFloat(src[i]);
  const float* p = buf.get();
  w->owned_f32.push_back(std::move(buf));
  return p;
}

}  // namespace

template <typename T>
Weights<T> LoadWeights(const ModelFile& f, const ModelConfig& cfg) {
  Weights<T> w;
  w.embed = Convert<T>(f.Get("model.embed_tokens.weight"), &w);
  w.final_norm = Norm<T>(f.Get("model.norm.weight"), &w);
  w.lm_head = cfg.tie_word_embeddings ? w.embed : Convert<T>(f.Get("lm_head.weight"), &w);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LayerWeights<T> lw;
    lw.attn_norm = Norm<T>(f.Get(LayerTensor(l, "input_layernorm")), &w);
    lw.ffn_norm = Norm<T>(f.Get(LayerTensor(l, "post_attention_layernorm")), &w);
    lw.wq = Convert<T>(f.Get(LayerTensor(l, "self_attn.q_proj")), &w);
    lw.wk = Convert<T>(f.Get(LayerTensor(l, "self_attn.k_proj")), &w);
    lw.wv = Convert<T>(f.Get(LayerTensor(l, "self_attn.v_proj")), &w);
    lw.wo = Convert<T>(f.Get(LayerTensor(l, "self_attn.o_proj")), &w);
    lw.w_gate = Convert<T>(f.Get(LayerTensor(l, "mlp.gate_proj")), &w);
    lw.w_up = Convert<T>(f.Get(LayerTensor(l, "mlp.up_proj")), &w);
    lw.w_down = Convert<T>(f.Get(LayerTensor(l, "mlp.down_proj")), &w);
    w.layers.push_back(lw);
  }
  return w;
}

template Weights<float> LoadWeights<float>(const ModelFile&, const ModelConfig&);
template Weights<uint16_t> LoadWeights<uint16_t>(const ModelFile&, const ModelConfig&);

}  // namespace lab
