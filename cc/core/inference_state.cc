#include "cc/core/inference_state.h"

namespace lab {

InferenceState::InferenceState(const ModelConfig& c, int64_t max_ctx, int64_t max_b)
    : max_context(max_ctx), max_batch(max_b) {
  x.resize(max_b * c.dim);
  xb.resize(max_b * c.dim);
  q.resize(max_b * c.q_dim());
  k.resize(max_b * c.kv_dim());
  v.resize(max_b * c.kv_dim());
  att_out.resize(max_b * c.q_dim());
  att.resize(c.n_heads * max_ctx);
  hb.resize(max_b * c.hidden_dim);
  hb2.resize(max_b * c.hidden_dim);
  key_cache.resize(c.n_layers * max_ctx * c.kv_dim());
  value_cache.resize(c.n_layers * max_ctx * c.kv_dim());
  RopeTables(c, max_ctx, &rope_cos, &rope_sin);
}

uint64_t InferenceState::activation_bytes() const {
  return (x.size() + xb.size() + q.size() + k.size() + v.size() + att_out.size() + att.size() + hb.size() +
          hb2.size() + rope_cos.size() + rope_sin.size()) * sizeof(float);
}

}  // namespace lab
