#include "cc/core/engine.h"

#include <algorithm>
#include <chrono>

#include "cc/core/errors.h"

namespace lab {

Engine::Engine(const ModelConfig& cfg, int64_t max_context) : cfg_(cfg), max_context_(max_context) {
  if (max_context_ <= 0) max_context_ = cfg.max_position_embeddings;
  if (max_context_ > cfg.max_position_embeddings)
    throw InputError("max_context " + std::to_string(max_context_) + " exceeds the model's max_position_embeddings " +
                     std::to_string(cfg.max_position_embeddings));
}

void Engine::Check(const int32_t* tokens, int64_t n) const {
  if (n <= 0) throw InputError("empty prompt: prefill needs at least one token");
  if (pos_ + n > max_context_)
    throw InputError("sequence of " + std::to_string(pos_ + n) + " tokens (position " + std::to_string(pos_) +
                     " + " + std::to_string(n) + " new) exceeds the context of " + std::to_string(max_context_) +
                     " tokens");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
      throw InputError("token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                       " is out of range [0, " + std::to_string(cfg_.vocab_size) + ")");
}

std::vector<float> Engine::Prefill(const std::vector<int32_t>& tokens, bool all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  Check(tokens.data(), n);
  std::vector<float> logits(static_cast<size_t>((all_logits ? n : 1) * cfg_.vocab_size));
  auto t0 = std::chrono::steady_clock::now();
  Forward(tokens.data(), n, pos_, all_logits, logits.data());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  pos_ += n;
  stats_.last_prefill_s = s;
  stats_.last_prefill_tokens = n;
  stats_.prefill_s += s;
  stats_.prefill_tokens += n;
  return logits;
}

std::vector<float> Engine::Decode(int32_t token) {
  Check(&token, 1);
  std::vector<float> logits(static_cast<size_t>(cfg_.vocab_size));
  auto t0 = std::chrono::steady_clock::now();
  Forward(&token, 1, pos_, false, logits.data());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  pos_ += 1;
  stats_.last_decode_s = s;
  stats_.decode_s += s;
  stats_.decode_tokens += 1;
  return logits;
}

std::vector<int32_t> Engine::Generate(int32_t token, int64_t n) {
  if (n < 1) throw InputError("generate needs at least one step, got " + std::to_string(n));
  if (pos_ + n > max_context_)
    throw InputError("generating " + std::to_string(n) + " tokens from position " + std::to_string(pos_) +
                     " exceeds the context of " + std::to_string(max_context_) + " tokens");
  Check(&token, 1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  auto t0 = std::chrono::steady_clock::now();
  GenerateImpl(token, n, pos_, out.data());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  pos_ += n;
  stats_.last_decode_s = s / n;
  stats_.decode_s += s;
  stats_.decode_tokens += n;
  return out;
}

void Engine::GenerateImpl(int32_t token, int64_t n, int64_t pos, int32_t* out) {
  std::vector<float> logits(static_cast<size_t>(cfg_.vocab_size));
  for (int64_t i = 0; i < n; ++i) {
    Forward(&token, 1, pos + i, false, logits.data());
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out[i] = token;
  }
}

void Engine::Reset() {
  pos_ = 0;
  OnReset();
}

}  // namespace lab
