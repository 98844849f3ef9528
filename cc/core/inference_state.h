// InferenceState: every buffer a CPU forward pass needs, allocated once at engine creation.
//
// Activations hold up to `max_batch` token rows so that prefill runs as matrix-matrix work over a
// chunk of the prompt (each weight row read once per chunk), while decode is the 1-row case
// (matrix-vector, every weight read once per token). The KV cache holds all max_context positions.
#pragma once
#include <cstdint>
#include <vector>

#include "cc/core/config.h"

namespace lab {

struct InferenceState {
  InferenceState(const ModelConfig& cfg, int64_t max_context, int64_t max_batch);

  int64_t max_context, max_batch;
  std::vector<float> x;       // [B, dim] residual stream
  std::vector<float> xb;      // [B, dim] normed input / matmul output
  std::vector<float> q;       // [B, n_heads*head_dim]
  std::vector<float> k, v;    // [B, kv_dim] (written into the cache after RoPE)
  std::vector<float> att_out; // [B, n_heads*head_dim]
  std::vector<float> att;     // [n_heads, max_context] scores of one token
  std::vector<float> hb, hb2; // [B, hidden_dim] gate / up
  std::vector<float> key_cache, value_cache;  // [n_layers, max_context, kv_dim]
  std::vector<float> rope_cos, rope_sin;      // [max_context, head_dim/2]

  uint64_t kv_bytes() const { return (key_cache.size() + value_cache.size()) * sizeof(float); }
  uint64_t activation_bytes() const;
};

}  // namespace lab
