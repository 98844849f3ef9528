// ModelFile: a memory-mapped model.bin (safetensors) validated before any tensor data is touched.
//
// Format (docs/model_format.md): 8-byte little-endian header length N, N bytes of JSON header,
// then the data region. Header: {"<name>": {"dtype": "F32"|"F16", "shape": [...],
// "data_offsets": [begin, end]}, "__metadata__": {"format": "pt", "lab_format_version": "1", ...}}.
// Offsets are relative to the data region. Tensor names and layouts are Hugging Face Llama's
// (row-major [out_features, in_features] linear weights; Q/K rows in the half-rotated RoPE layout).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cc/core/config.h"

namespace lab {

enum class DType { kF32, kF16 };
size_t DTypeSize(DType d);
const char* DTypeName(DType d);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data region
  const void* data = nullptr;   // into the mapping
  int64_t numel() const;
};

constexpr int kLabFormatVersion = 1;

class ModelFile {
 public:
  // Maps `path` and validates the header: JSON, dtypes, offsets inside the file, sizes equal to
  // shape x dtype, no overlapping tensors, format version. Throws ModelFormatError.
  explicit ModelFile(const std::string& path);
  ~ModelFile();
  ModelFile(const ModelFile&) = delete;
  ModelFile& operator=(const ModelFile&) = delete;

  // Checks that every tensor the config implies is present with the right shape, that all share one
  // dtype, and that no unexpected tensor is present. Throws ModelFormatError naming the first problem.
  void ValidateAgainst(const ModelConfig& cfg) const;

  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& Get(const std::string& name) const;
  DType dtype() const { return dtype_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return size_; }
  const std::string& path() const { return path_; }

  // Expected tensor names and shapes for a config (HF Llama names).
  static std::map<std::string, std::vector<int64_t>> ExpectedTensors(const ModelConfig& cfg);

 private:
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  uint64_t size_ = 0;
  DType dtype_ = DType::kF32;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A model directory opened the one way every engine opens it: config.json parsed, model.bin mapped and
// validated against it (throws ModelFormatError naming the first problem).
struct OpenedModel {
  ModelConfig cfg;
  std::unique_ptr<ModelFile> file;
};
OpenedModel OpenModel(const std::string& model_dir);

// Names of the per-layer tensors, e.g. LayerTensor(3, "self_attn.q_proj") ->
// "model.layers.3.self_attn.q_proj.weight".
std::string LayerTensor(int64_t layer, const char* what);

}  // namespace lab
