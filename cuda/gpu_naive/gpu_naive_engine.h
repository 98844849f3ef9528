// Stage 3: the naive CUDA port of stage 1 ("gpu_naive"): fp32 weights, one simple kernel per op.
#pragma once
#include <memory>
#include <string>

#include "cc/core/engine.h"

namespace lab {
// Throws DeviceError where there is no CUDA GPU or too little device memory.
std::unique_ptr<Engine> MakeGpuNaiveEngine(const std::string& model_dir, int64_t max_context);
}
