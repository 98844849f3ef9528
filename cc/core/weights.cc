#include "cc/core/weights.h"

#include <cstring>
#include <string>
#include <type_traits>

#include "cc/core/errors.h"
#include "cc/core/fp16.h"

namespace lab {
namespace {

constexpr size_t kAlign = 64;  // each matrix starts on a cache line in the arena

// Puts tensor t where the placement says: the map (same dtype, kMap), an owned conversion (kMap), or
// the next slot of the arena (copy or conversion).
template <typename T>
class Placer {
 public:
  Placer(const ModelFile& f, const ModelConfig& cfg, WeightMemory memory, Weights<T>* w) : w_(w) {
    w->memory = memory;
    if (memory == WeightMemory::kMap) return;
    size_t total = 0;  // every matrix the config implies (the 2-D tensors; lm_head only when untied)
    for (const auto& [name, shape] : ModelFile::ExpectedTensors(cfg))
      if (shape.size() == 2)
        total += (static_cast<size_t>(shape[0] * shape[1]) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    try {
      w->arena = PageBuffer(total, memory == WeightMemory::kHugePages ? PageKind::kHuge : PageKind::kSmall);
    } catch (const std::bad_alloc&) {
      throw DeviceError("cannot reserve " + std::to_string(total >> 20) + " MiB of host memory for the weights (" +
                        WeightMemoryName(memory) + " pages); LAB_CPU_PAGES=map keeps them in the file's memory map");
    }
    next_ = static_cast<char*>(w->arena.data());
  }

  const T* Matrix(const TensorInfo& t) {
    const int64_t n = t.numel();
    w_->bytes += static_cast<uint64_t>(n) * sizeof(T);
    const bool same = (t.dtype == DType::kF32) == std::is_same<T, float>::value;
    T* dst;
    if (next_) {  // the arena
      dst = reinterpret_cast<T*>(next_);
      next_ += (static_cast<size_t>(n) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    } else if (same) {
      return static_cast<const T*>(t.data);
    } else {
      w_->owned.emplace_back(new T[n]);
      dst = w_->owned.back().get();
    }
    if (same) {
      std::memcpy(dst, t.data, static_cast<size_t>(n) * sizeof(T));
    } else if constexpr (std::is_same<T, float>::value) {
      const auto* src = static_cast<const uint16_t*>(t.data);
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
    } else {
      const auto* src = static_cast<const float*>(t.data);
      for (int64_t i = 0; i < n; ++i) dst[i] = FloatToHalf(src[i]);
    }
    return dst;
  }

  const float* Norm(const TensorInfo& t) {
    w_->bytes += static_cast<uint64_t>(t.numel()) * 4;
    if (t.dtype == DType::kF32) return static_cast<const float*>(t.data);
    std::unique_ptr<float[]> buf(new float[t.numel()]);
    const auto* src = static_cast<const uint16_t*>(t.data);
    for (int64_t i = 0; i < t.numel(); ++i) buf[i] = HalfToFloat(src[i]);
    const float* p = buf.get();
    w_->owned_f32.push_back(std::move(buf));
    return p;
  }

 private:
  Weights<T>* w_;
  char* next_ = nullptr;
};

}  // namespace

const char* WeightMemoryName(WeightMemory m) {
  switch (m) {
    case WeightMemory::kMap: return "map";
    case WeightMemory::kHugePages: return "huge";
    case WeightMemory::kSmallPages: return "small";
  }
  return "?";
}

template <typename T>
Weights<T> LoadWeights(const ModelFile& f, const ModelConfig& cfg, WeightMemory memory) {
  Weights<T> w;
  Placer<T> put(f, cfg, memory, &w);
  w.embed = put.Matrix(f.Get("model.embed_tokens.weight"));
  w.final_norm = put.Norm(f.Get("model.norm.weight"));
  w.lm_head = cfg.tie_word_embeddings ? w.embed : put.Matrix(f.Get("lm_head.weight"));
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LayerWeights<T> lw;
    lw.attn_norm = put.Norm(f.Get(LayerTensor(l, "input_layernorm")));
    lw.ffn_norm = put.Norm(f.Get(LayerTensor(l, "post_attention_layernorm")));
    lw.wq = put.Matrix(f.Get(LayerTensor(l, "self_attn.q_proj")));
    lw.wk = put.Matrix(f.Get(LayerTensor(l, "self_attn.k_proj")));
    lw.wv = put.Matrix(f.Get(LayerTensor(l, "self_attn.v_proj")));
    lw.wo = put.Matrix(f.Get(LayerTensor(l, "self_attn.o_proj")));
    lw.w_gate = put.Matrix(f.Get(LayerTensor(l, "mlp.gate_proj")));
    lw.w_up = put.Matrix(f.Get(LayerTensor(l, "mlp.up_proj")));
    lw.w_down = put.Matrix(f.Get(LayerTensor(l, "mlp.down_proj")));
    w.layers.push_back(lw);
  }
  return w;
}

template Weights<float> LoadWeights<float>(const ModelFile&, const ModelConfig&, WeightMemory);
template Weights<uint16_t> LoadWeights<uint16_t>(const ModelFile&, const ModelConfig&, WeightMemory);

}  // namespace lab
