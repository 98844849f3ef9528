#include "cc/core/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "cc/core/errors.h"
#include "nlohmann/json.hpp"

namespace lab {
namespace {

using nlohmann::json;

int64_t GetInt(const json& j, const char* key, bool required, int64_t fallback = 0) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw ModelFormatError(std::string("config.json: missing \"") + key + "\"");
    return fallback;
  }
  if (!it->is_number_integer())
    throw ModelFormatError(std::string("config.json: \"") + key + "\" must be an integer");
  return it->get<int64_t>();
}

double GetDouble(const json& j, const char* key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw ModelFormatError(std::string("config.json: \"") + key + "\" must be a number");
  return it->get<double>();
}

void ReadRope(const json& rope, ModelConfig* cfg) {
  if (!rope.is_object()) throw ModelFormatError("config.json: rope scaling must be an object");
  std::string type = "default";
  if (rope.contains("rope_type")) type = rope["rope_type"].get<std::string>();
  else if (rope.contains("type")) type = rope["type"].get<std::string>();
  if (rope.contains("rope_theta")) cfg->rope_theta = rope["rope_theta"].get<double>();
  if (type != "default" && type != "llama3")
    throw ModelFormatError("config.json: unsupported rope_type \"" + type + "\" (supported: default, llama3)");
  cfg->rope_scaling.type = type;
  if (type == "llama3") {
    cfg->rope_scaling.factor = GetDouble(rope, "factor", 8.0);
    cfg->rope_scaling.low_freq_factor = GetDouble(rope, "low_freq_factor", 1.0);
    cfg->rope_scaling.high_freq_factor = GetDouble(rope, "high_freq_factor", 4.0);
    cfg->rope_scaling.original_max_position_embeddings =
        GetInt(rope, "original_max_position_embeddings", false, 8192);
    if (cfg->rope_scaling.high_freq_factor <= cfg->rope_scaling.low_freq_factor)
      throw ModelFormatError("config.json: llama3 rope scaling needs high_freq_factor > low_freq_factor");
  }
}

}  // namespace

int64_t ModelConfig::NumParams() const {
  int64_t per_layer = dim * q_dim() + 2 * dim * kv_dim() + q_dim() * dim + 3 * dim * hidden_dim + 2 * dim;
  int64_t p = n_layers * per_layer + vocab_size * dim + dim;
  if (!tie_word_embeddings) p += vocab_size * dim;
  return p;
}

ModelConfig ParseConfig(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    throw ModelFormatError(std::string("config.json is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ModelFormatError("config.json must hold a JSON object");
  ModelConfig c;
  try {
    c.dim = GetInt(j, "hidden_size", true);
    c.hidden_dim = GetInt(j, "intermediate_size", true);
    c.n_layers = GetInt(j, "num_hidden_layers", true);
    c.n_heads = GetInt(j, "num_attention_heads", true);
    c.n_kv_heads = GetInt(j, "num_key_value_heads", false, c.n_heads);
    c.vocab_size = GetInt(j, "vocab_size", true);
    c.max_position_embeddings = GetInt(j, "max_position_embeddings", true);
    c.rms_norm_eps = GetDouble(j, "rms_norm_eps", 1e-5);
    c.rope_theta = GetDouble(j, "rope_theta", 10000.0);
    if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null())
      c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
    if (c.n_heads <= 0 || c.dim <= 0)
      throw ModelFormatError("config.json: hidden_size and num_attention_heads must be positive");
    c.head_dim = GetInt(j, "head_dim", false, c.dim / c.n_heads);
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) ReadRope(j["rope_scaling"], &c);
    if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) ReadRope(j["rope_parameters"], &c);
    if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
      const json& e = j["eos_token_id"];
      if (e.is_array()) for (const auto& v : e) c.eos_token_ids.push_back(v.get<int64_t>());
      else c.eos_token_ids.push_back(e.get<int64_t>());
    }
    c.bos_token_id = GetInt(j, "bos_token_id", false, -1);
  } catch (const nlohmann::json::exception& e) {
    throw ModelFormatError(std::string("config.json: wrong type: ") + e.what());
  }
  auto positive = [](int64_t v, const char* what) {
    if (v <= 0 || v > (int64_t(1) << 31))
      throw ModelFormatError(std::string("config.json: ") + what + " must be in 1..2^31, got " + std::to_string(v));
  };
  positive(c.dim, "hidden_size");
  positive(c.hidden_dim, "intermediate_size");
  positive(c.n_layers, "num_hidden_layers");
  positive(c.n_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.vocab_size, "vocab_size");
  positive(c.max_position_embeddings, "max_position_embeddings");
  if (c.n_heads % c.n_kv_heads != 0)
    throw ModelFormatError("config.json: num_attention_heads must be a multiple of num_key_value_heads");
  if (c.head_dim % 2 != 0) throw ModelFormatError("config.json: head_dim must be even for RoPE");
  if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 1)) throw ModelFormatError("config.json: bad rms_norm_eps or rope_theta");
  return c;
}

ModelConfig LoadConfig(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw ModelFormatError("cannot open config file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ParseConfig(ss.str());
}

std::vector<float> RopeInvFreq(const ModelConfig& cfg) {
  const int64_t half = cfg.head_dim / 2;
  std::vector<float> inv(half);
  const float base = static_cast<float>(cfg.rope_theta);
  for (int64_t i = 0; i < half; ++i) {
    float expo = static_cast<float>(2 * i) / static_cast<float>(cfg.head_dim);
    inv[i] = 1.0f / std::pow(base, expo);
  }
  if (cfg.rope_scaling.type == "llama3") {
    // transformers' _compute_llama3_parameters: long wavelengths are divided by `factor`, short ones
    // kept, and the band between is interpolated smoothly.
    const auto& s = cfg.rope_scaling;
    const float factor = static_cast<float>(s.factor);
    const float old_ctx = static_cast<float>(s.original_max_position_embeddings);
    const float low_wavelen = old_ctx / static_cast<float>(s.low_freq_factor);
    const float high_wavelen = old_ctx / static_cast<float>(s.high_freq_factor);
    for (int64_t i = 0; i < half; ++i) {
      float f = inv[i];
      float wavelen = static_cast<float>(2 * M_PI) / f;
      float scaled = wavelen > low_wavelen ? f / factor : f;
      bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        float smooth = (old_ctx / wavelen - static_cast<float>(s.low_freq_factor)) /
                       static_cast<float>(s.high_freq_factor - s.low_freq_factor);
        scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
      }
      inv[i] = scaled;
    }
  }
  return inv;
}

void RopeTables(const ModelConfig& cfg, int64_t max_pos, std::vector<float>* cos_table,
                std::vector<float>* sin_table) {
  const std::vector<float> inv = RopeInvFreq(cfg);
  const int64_t half = static_cast<int64_t>(inv.size());
  cos_table->assign(max_pos * half, 0.f);
  sin_table->assign(max_pos * half, 0.f);
  for (int64_t p = 0; p < max_pos; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      float angle = static_cast<float>(p) * inv[i];  // fp32 product, as torch's fp32 matmul
      (*cos_table)[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      (*sin_table)[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

}  // namespace lab
