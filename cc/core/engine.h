// Engine: the one interface every stage implements, and the checks every stage shares.
//
//   Prefill(tokens)  appends tokens at the current position; returns the last position's logits
//                    ([vocab]) or, with all_logits, every position's ([n, vocab]), row-major fp32.
//   Decode(token)    appends one token; returns its logits [vocab].
//   Reset()          forgets the sequence (position 0); weights stay loaded.
//
// The base class validates input (token ids, context length, empty prompt) and times each call;
// a stage implements Forward() only. Stage implementations must return only after the logits are
// on the host (so the timings are wall-clock true for GPU engines too).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cc/core/config.h"

namespace lab {

struct EngineStats {
  uint64_t weight_bytes = 0;      // weights as held by the engine (host or device), each once
  uint64_t weight_copy_bytes = 0; // second copies in a kernel's layout (gpu_opt's fused MLP: W_down's slices)
  uint64_t kv_cache_bytes = 0;    // KV cache allocation at max_context
  uint64_t activation_bytes = 0;  // other per-sequence buffers
  double last_prefill_s = 0, last_decode_s = 0;
  int64_t last_prefill_tokens = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;  // totals since creation
  double prefill_s = 0, decode_s = 0;
};

class Engine {
 public:
  Engine(const ModelConfig& cfg, int64_t max_context);
  virtual ~Engine() = default;

  std::vector<float> Prefill(const std::vector<int32_t>& tokens, bool all_logits = false);
  std::vector<float> Decode(int32_t token);
  // Greedy generation: feeds `token` at the current position, then each step's argmax, n steps in all;
  // returns the n argmax tokens (the last one not fed yet; lowest id on ties, as numpy's argmax). The
  // same tokens as n x Decode + argmax; an engine may keep the whole loop on its device (GenerateImpl).
  std::vector<int32_t> Generate(int32_t token, int64_t n);
  void Reset();

  const ModelConfig& config() const { return cfg_; }
  int64_t pos() const { return pos_; }
  int64_t max_context() const { return max_context_; }
  virtual std::string name() const = 0;
  // Which code paths this instance runs where an engine has several (e.g. "avx512, prefill mlp-bf16"); "" if one.
  virtual std::string variant() const { return ""; }
  EngineStats stats() const { return stats_; }
  // Where the decode steps' time went, for engines that can take their step apart (cpu_opt with
  // LAB_CPU_PROFILE=1): cumulative seconds per named part since creation ("qkv.work", "qkv.wait", ...,
  // "steps": the number of steps counted). Empty when the engine does not profile.
  virtual std::vector<std::pair<std::string, double>> PhaseSeconds() const { return {}; }
  // Which code path each kind of launch took, for engines with several (gpu_opt: "<kind>" the matvec
  // launches of a decode step's kind, "<kind>.x_bulk" those that took x by one bulk copy,
  // "<kind>.second_after_wait" those whose second weight batch went out right after the wait), counted on the
  // host as the launches are issued or captured into a graph (a replay adds nothing). Lets a test see that
  // a path ran, not only that the results agree. Empty where an engine has one path.
  virtual std::vector<std::pair<std::string, int64_t>> LaunchCounts() const { return {}; }

 protected:
  // Runs tokens[0..n) at positions pos..pos+n; writes logits of every position (all_logits) or of the
  // last one into `logits` ([n or 1, vocab]). `n` >= 1 and pos + n <= max_context are guaranteed.
  virtual void Forward(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) = 0;
  virtual void OnReset() {}
  // n >= 1 greedy steps from `token` at pos (pos + n <= max_context guaranteed); out[n]. Default: Forward
  // one token at a time and take the argmax on the host.
  virtual void GenerateImpl(int32_t token, int64_t n, int64_t pos, int32_t* out);

  ModelConfig cfg_;
  int64_t max_context_;
  int64_t pos_ = 0;
  EngineStats stats_;

 private:
  void Check(const int32_t* tokens, int64_t n) const;
};

// Creates an engine by name ("cpu_fp32", "cpu_opt", "gpu_naive", "gpu_opt", ...) from a model
// directory holding config.json and model.bin. max_context <= 0 means the config's
// max_position_embeddings. Throws ModelFormatError / InputError / DeviceError.
std::unique_ptr<Engine> CreateEngine(const std::string& name, const std::string& model_dir, int64_t max_context);
std::vector<std::string> EngineNames();

}  // namespace lab
