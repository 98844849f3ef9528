// Weights<T>: pointers to every tensor of the model in the element type an engine computes with.
//
// Where the matrices live (WeightMemory):
//   kMap        when the file's dtype is T the pointers go straight into the memory map (no copy), else
//               the loader converts tensor by tensor into owned buffers;
//   kHugePages  every matrix copied (or converted) into one anonymous buffer on 2 MiB pages
//               (huge_pages.h: a per-token stream of hundreds of MiB walks 512x fewer page tables);
//   kSmallPages the same copy on 4 KiB pages, to measure the page size alone against kHugePages.
// RMSNorm weights are always fp32 (owned_f32, or the map when the file holds fp32).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cc/core/config.h"
#include "cc/core/huge_pages.h"
#include "cc/core/model_file.h"

namespace lab {

enum class WeightMemory { kMap, kHugePages, kSmallPages };
const char* WeightMemoryName(WeightMemory m);  // "map", "huge", "small" (LAB_CPU_PAGES' values)

template <typename T>
struct LayerWeights {
  const float* attn_norm;  // [dim]
  const float* ffn_norm;   // [dim]
  const T* wq;             // [n_heads*head_dim, dim]
  const T* wk;             // [n_kv_heads*head_dim, dim]
  const T* wv;             // [n_kv_heads*head_dim, dim]
  const T* wo;             // [dim, n_heads*head_dim]
  const T* w_gate;         // [hidden_dim, dim]
  const T* w_up;           // [hidden_dim, dim]
  const T* w_down;         // [dim, hidden_dim]
};

template <typename T>
struct Weights {
  const T* embed = nullptr;         // [vocab, dim]
  const float* final_norm = nullptr;
  const T* lm_head = nullptr;       // [vocab, dim]; == embed when tied
  std::vector<LayerWeights<T>> layers;
  std::vector<std::unique_ptr<T[]>> owned;          // converted copies
  std::vector<std::unique_ptr<float[]>> owned_f32;  // norms converted to fp32
  PageBuffer arena;                                 // the matrices, with kHugePages / kSmallPages
  WeightMemory memory = WeightMemory::kMap;
  uint64_t bytes = 0;  // bytes of the weights as held in memory (embedding and lm_head counted once)
};

// T is float or uint16_t (IEEE fp16 bits). `file` must already be validated against `cfg`.
template <typename T>
Weights<T> LoadWeights(const ModelFile& file, const ModelConfig& cfg, WeightMemory memory = WeightMemory::kMap);

}  // namespace lab
