// Stage 4 — gpu_opt's step trace (LAB_GPU_TRACE=1; the class is in gpu_opt_engine_impl.cuh): each launch
// of a decode() step marks its first block's start, its release from the PDL wait and its last block's
// end with %globaltimer (TraceMarks, kernels_common.cuh); here the slots are handed out while the step is
// enqueued, and summed per kind after each step (phase_seconds(); cuda/gpu_opt/step_trace.py; README
// "Inside the graph: the step trace").
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/gpu_opt/gpu_opt_engine_impl.cuh"

namespace lab {
namespace gpu_opt {

unsigned long long* GpuOptEngine::TraceSlot(int kind) {
  if (!trace_capture_ || trace_kind_.size() >= trace_slots_) return nullptr;
  trace_kind_.push_back(kind);
  return trace_ + gpu::kTraceSlots * (trace_kind_.size() - 1);
}

void GpuOptEngine::CollectTrace() {
  const size_t n = trace_kind_.size();
  if (n == 0) return;
  constexpr int S = gpu::kTraceSlots;
  std::vector<unsigned long long> t(S * n);
  LAB_CUDA_CHECK(cudaMemcpy(t.data(), trace_, t.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
  unsigned long long first = ~0ull, last = 0, prev_end = 0;
  for (size_t i = 0; i < n; ++i) {
    const unsigned long long* m = &t[S * i];
    const unsigned long long s = m[0], e = ~m[2];
    const unsigned long long r = m[1] == ~0ull ? s : m[1];  // no block waited: its start
    if (s == ~0ull || e < r) continue;  // a launch that marked nothing (cannot happen; kept out of the sums)
    double* k = &trace_sum_[size_t(trace_kind_[i]) * kTraceSums];
    k[0] += (e - r) * 1e-9;
    k[1] += (r - s) * 1e-9;
    if (prev_end) k[2] += (double(r) - double(prev_end)) * 1e-9;
    k[3] += 1;
    const unsigned long long staged_ns = m[3] + 1, staged_blocks = m[4] + 1;  // they start at -1
    if (staged_blocks) k[4] += double(staged_ns) / double(staged_blocks) * 1e-9;
    const unsigned long long run_ns = m[6] + 1, run_blocks = m[7] + 1;
    if (run_blocks && m[5] <= e) {
      k[5] += (e - m[5]) * 1e-9;                                                      // spread of the ends
      k[6] += std::max(0.0, double(e - r) - double(run_ns) / double(run_blocks)) * 1e-9;  // tail past the mean
    }
    k[7] += __builtin_popcountll(~m[8]) + __builtin_popcountll(~m[9]) + __builtin_popcountll(~m[10]);  // SMs used
    first = std::min(first, s);
    last = std::max(last, e);
    prev_end = e;
  }
  if (last > first) trace_step_s_ += (last - first) * 1e-9;
  ++trace_steps_;
}

std::vector<std::pair<std::string, double>> GpuOptEngine::PhaseSeconds() const {
  if (!trace_on_) return {};
  static const char* const names[kNumKinds + 2] = {"qkv", "o_proj", "gate_up", "down", "lm_head", "attention", "mlp"};
  std::vector<std::pair<std::string, double>> out;
  for (int k = 0; k <= kNumKinds + 1; ++k) {
    const double* v = &trace_sum_[size_t(k) * kTraceSums];
    out.emplace_back(std::string(names[k]) + ".busy", v[0]);
    out.emplace_back(std::string(names[k]) + ".pre", v[1]);
    out.emplace_back(std::string(names[k]) + ".drain", v[2]);
    out.emplace_back(std::string(names[k]) + ".launches", v[3]);
    out.emplace_back(std::string(names[k]) + ".staged", v[4]);
    out.emplace_back(std::string(names[k]) + ".spread", v[5]);
    out.emplace_back(std::string(names[k]) + ".tail", v[6]);
    out.emplace_back(std::string(names[k]) + ".sms", v[7]);  // summed over launches (a count, not seconds)
  }
  out.emplace_back("step", trace_step_s_);
  out.emplace_back("steps", double(trace_steps_));
  return out;
}

std::vector<std::pair<std::string, int64_t>> GpuOptEngine::LaunchCounts() const {
  std::vector<std::pair<std::string, int64_t>> out;
  for (int k = 0; k < kNumKinds; ++k) {
    out.emplace_back(kKindNames[k], launches_[k][0]);
    out.emplace_back(std::string(kKindNames[k]) + ".x_bulk", launches_[k][1]);
    out.emplace_back(std::string(kKindNames[k]) + ".second_after_wait", launches_[k][2]);
  }
  return out;
}

}  // namespace gpu_opt
}  // namespace lab
