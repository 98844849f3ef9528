// The table of engines: one line per stage. A stage lives in its own directory and exports a factory.
#include <functional>
#include <map>

#include "cc/core/engine.h"
#include "cc/core/errors.h"
#include "cc/cpu_fp32/cpu_fp32_engine.h"
#include "cuda/gpu_naive/gpu_naive_engine.h"
#include "cuda/gpu_opt/gpu_opt_engine.h"
#include "cc/cpu_opt/cpu_opt_engine.h"

namespace lab {
namespace {

using Factory = std::function<std::unique_ptr<Engine>(const std::string&, int64_t)>;

const std::map<std::string, Factory>& Table() {
  static const std::map<std::string, Factory> table = {
      {"cpu_fp32", MakeCpuFp32Engine},    // stage 1: plain C++ FP32
      {"gpu_naive", MakeGpuNaiveEngine},  // stage 3: direct CUDA port of stage 1 (fp32)
      {"gpu_opt", MakeGpuOptEngine},      // stage 4: fp16, fused kernels, CUDA graph
      {"cpu_opt", MakeCpuOptEngine},  // stage 2
  };
  return table;
}

}  // namespace

std::unique_ptr<Engine> CreateEngine(const std::string& name, const std::string& model_dir, int64_t max_context) {
  auto it = Table().find(name);
  if (it == Table().end()) {
    std::string known;
    for (const auto& [n, f] : Table()) known += (known.empty() ? "" : ", ") + n;
    throw InputError("unknown engine \"" + name + "\" (known: " + known + ")");
  }
  return it->second(model_dir, max_context);
}

std::vector<std::string> EngineNames() {
  std::vector<std::string> names;
  for (const auto& [n, f] : Table()) names.push_back(n);
  return names;
}

}  // namespace lab
