// Stage 4: the optimized CUDA engine ("gpu_opt"): fp16 weights and KV cache, fused decode kernels at
// the HBM roofline, the whole decode step replayed from a CUDA graph.
#pragma once
#include <memory>
#include <string>

#include "cc/core/engine.h"

namespace lab {
// Throws DeviceError where there is no CUDA GPU or too little device memory, ModelFormatError for
// shapes the kernels do not support (head_dim other than 64/128, GQA group above 8, dims not a
// multiple of 8).
std::unique_ptr<Engine> MakeGpuOptEngine(const std::string& model_dir, int64_t max_context);

// Device time (CUDA events around the graph replay) of the last decode step of a gpu_opt engine, in
// milliseconds; -1 if `e` is not a gpu_opt engine or has not decoded yet. Used by the kernel bench.
double GpuOptLastDecodeDeviceMs(const Engine& e);
}  // namespace lab
