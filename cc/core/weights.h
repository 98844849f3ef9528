// Weights<T>: pointers to every tensor of the model in the element type an engine computes with.
//
// When the file's dtype is T the pointers go straight into the memory map (no copy); otherwise the
// loader converts tensor by tensor into owned buffers. RMSNorm weights are always fp32.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cc/core/config.h"
#include "cc/core/model_file.h"

namespace lab {

template <typename T>
struct LayerWeights {
  const float* attn_norm;  // [dim]
  const float* ffn_norm;   // [dim]
  const T* wq;             // [n_heads*head_dim, dim]
  const T* wk;             // [n_kv_heads*head_dim, dim]
  const T* wv;             // [n_kv_heads*head_dim, dim]
  const T* wo;             // [dim, n_heads*head_dim]
  const T* w_gate;         // [hidden_dim, dim]
  const T* w_up;           // [hidden_dim, dim]
  const T* w_down;         // [dim, hidden_dim]
};

template <typename T>
struct Weights {
  const T* embed = nullptr;         // [vocab, dim]
  const float* final_norm = nullptr;
  const T* lm_head = nullptr;       // [vocab, dim]; == embed when tied
  std::vector<LayerWeights<T>> layers;
  std::vector<std::unique_ptr<T[]>> owned;          // converted copies
  std::vector<std::unique_ptr<float[]>> owned_f32;  // norms converted to fp32
  uint64_t bytes = 0;  // bytes of the weights as held in memory (embedding and lm_head counted once)
};

// T is float or uint16_t (IEEE fp16 bits). `file` must already be validated against `cfg`.
template <typename T>
Weights<T> LoadWeights(const ModelFile& file, const ModelConfig& cfg);

}  // namespace lab
