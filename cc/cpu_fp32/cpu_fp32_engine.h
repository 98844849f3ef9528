// Stage 1: the CPU FP32 baseline engine ("cpu_fp32").
#pragma once
#include <memory>
#include <string>

#include "cc/core/engine.h"

namespace lab {
std::unique_ptr<Engine> MakeCpuFp32Engine(const std::string& model_dir, int64_t max_context);
}
