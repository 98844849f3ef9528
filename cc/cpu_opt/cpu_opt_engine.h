// Stage 2: the CPU-optimized engine ("cpu_opt"): fp16 weights, AVX2/AVX-512 kernels, OpenMP threads.
#pragma once
#include <memory>
#include <string>

#include "cc/core/engine.h"

namespace lab {
std::unique_ptr<Engine> MakeCpuOptEngine(const std::string& model_dir, int64_t max_context);
}
