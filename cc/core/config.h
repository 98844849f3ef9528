// ModelConfig: the Llama architecture read from an HF-style config.json.
//
// Both config styles are read: Meta's published `rope_theta` + `rope_scaling`, and the
// `rope_parameters` object that transformers 5 writes. Only rope_type "default" and "llama3" are
// supported; anything else is a clear ModelFormatError rather than a silently wrong model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lab {

struct RopeScaling {
  std::string type = "default";  // "default" or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  int64_t dim = 0;          // hidden_size
  int64_t hidden_dim = 0;   // intermediate_size (SwiGLU width)
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;     // defaults to dim / n_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  std::vector<int64_t> eos_token_ids;
  int64_t bos_token_id = -1;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t group_size() const { return n_heads / n_kv_heads; }
  // Parameters of the transformer (embedding and lm_head counted once each as stored).
  int64_t NumParams() const;
};

// Parses and validates a config.json (text) / a file. Throws ModelFormatError.
ModelConfig ParseConfig(const std::string& json_text);
ModelConfig LoadConfig(const std::string& path);

// RoPE inverse frequencies (head_dim/2 of them), computed exactly as transformers does
// (float32, including Llama 3's smooth frequency scaling).
std::vector<float> RopeInvFreq(const ModelConfig& cfg);

// cos/sin tables [max_pos][head_dim/2] for positions 0..max_pos-1 (fp32, as transformers rounds).
void RopeTables(const ModelConfig& cfg, int64_t max_pos, std::vector<float>* cos_table,
                std::vector<float>* sin_table);

}  // namespace lab
