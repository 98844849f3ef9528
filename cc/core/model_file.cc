#include "cc/core/model_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "cc/core/errors.h"
#include "nlohmann/json.hpp"

namespace lab {

size_t DTypeSize(DType d) { return d == DType::kF32 ? 4 : 2; }
const char* DTypeName(DType d) { return d == DType::kF32 ? "F32" : "F16"; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string LayerTensor(int64_t layer, const char* what) {
  return "model.layers." + std::to_string(layer) + "." + what + ".weight";
}

namespace {

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

ModelFile::ModelFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw ModelFormatError("cannot open model file " + path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    ::close(fd_);
    throw ModelFormatError("cannot stat " + path);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  auto fail = [&](const std::string& msg) {
    if (map_) munmap(map_, size_);
    map_ = nullptr;
    ::close(fd_);
    fd_ = -1;
    throw ModelFormatError(path + ": " + msg);
  };
  if (size_ < 8) fail("file is " + std::to_string(size_) + " bytes: too short for a safetensors header");
  map_ = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail("mmap failed");
  }
  const auto* bytes = static_cast<const uint8_t*>(map_);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size_ - 8 || header_len > (uint64_t(100) << 20))
    fail("header length " + std::to_string(header_len) + " exceeds the file (" + std::to_string(size_) +
         " bytes): truncated or not a safetensors file");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size_ - data_start;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8),
                                   reinterpret_cast<const char*>(bytes + 8 + header_len));
  } catch (const std::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("header is not a JSON object");
  bool first = true;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  try {
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        for (auto m = it->begin(); m != it->end(); ++m)
          metadata_[m.key()] = m->is_string() ? m->get<std::string>() : m->dump();
        continue;
      }
      const auto& t = it.value();
      TensorInfo info;
      info.name = it.key();
      const std::string dt = t.at("dtype").get<std::string>();
      if (dt == "F32") info.dtype = DType::kF32;
      else if (dt == "F16") info.dtype = DType::kF16;
      else fail("tensor " + info.name + " has dtype " + dt + "; the lab reads F32 or F16");
      info.shape = t.at("shape").get<std::vector<int64_t>>();
      auto off = t.at("data_offsets").get<std::vector<uint64_t>>();
      if (off.size() != 2) fail("tensor " + info.name + ": data_offsets must have two entries");
      info.begin = off[0];
      info.end = off[1];
      for (int64_t s : info.shape)
        if (s < 0 || s > (int64_t(1) << 40)) fail("tensor " + info.name + " has a bad shape " + ShapeStr(info.shape));
      if (info.begin > info.end || info.end > data_size)
        fail("tensor " + info.name + " offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
             ") fall outside the data region of " + std::to_string(data_size) + " bytes (truncated file?)");
      const uint64_t want = static_cast<uint64_t>(info.numel()) * DTypeSize(info.dtype);
      if (info.end - info.begin != want)
        fail("tensor " + info.name + " spans " + std::to_string(info.end - info.begin) + " bytes but shape " +
             ShapeStr(info.shape) + " x " + dt + " needs " + std::to_string(want));
      if (info.begin % DTypeSize(info.dtype) != 0) fail("tensor " + info.name + " is misaligned");
      if (first) dtype_ = info.dtype;
      else if (info.dtype != dtype_) fail("tensors mix dtypes (" + info.name + " is " + dt + ")");
      first = false;
      info.data = bytes + data_start + info.begin;
      ranges.push_back({info.begin, info.end});
      tensors_[info.name] = std::move(info);
    }
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("malformed tensor entry in header: ") + e.what());
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail("two tensors overlap in the data region");
  auto v = metadata_.find("lab_format_version");
  if (v == metadata_.end()) fail("no lab_format_version in __metadata__: not written by the lab's converter");
  if (v->second != std::to_string(kLabFormatVersion))
    fail("lab_format_version " + v->second + " is not the supported " + std::to_string(kLabFormatVersion));
}

ModelFile::~ModelFile() {
  if (map_) munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo& ModelFile::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw ModelFormatError(path_ + ": missing tensor " + name);
  return it->second;
}

std::map<std::string, std::vector<int64_t>> ModelFile::ExpectedTensors(const ModelConfig& c) {
  std::map<std::string, std::vector<int64_t>> e;
  e["model.embed_tokens.weight"] = {c.vocab_size, c.dim};
  e["model.norm.weight"] = {c.dim};
  if (!c.tie_word_embeddings) e["lm_head.weight"] = {c.vocab_size, c.dim};
  for (int64_t l = 0; l < c.n_layers; ++l) {
    e[LayerTensor(l, "input_layernorm")] = {c.dim};
    e[LayerTensor(l, "post_attention_layernorm")] = {c.dim};
    e[LayerTensor(l, "self_attn.q_proj")] = {c.q_dim(), c.dim};
    e[LayerTensor(l, "self_attn.k_proj")] = {c.kv_dim(), c.dim};
    e[LayerTensor(l, "self_attn.v_proj")] = {c.kv_dim(), c.dim};
    e[LayerTensor(l, "self_attn.o_proj")] = {c.dim, c.q_dim()};
    e[LayerTensor(l, "mlp.gate_proj")] = {c.hidden_dim, c.dim};
    e[LayerTensor(l, "mlp.up_proj")] = {c.hidden_dim, c.dim};
    e[LayerTensor(l, "mlp.down_proj")] = {c.dim, c.hidden_dim};
  }
  return e;
}

void ModelFile::ValidateAgainst(const ModelConfig& cfg) const {
  const auto expected = ExpectedTensors(cfg);
  for (const auto& [name, shape] : expected) {
    auto it = tensors_.find(name);
    if (it == tensors_.end())
      throw ModelFormatError(path_ + ": tensor " + name + " required by config.json is missing");
    if (it->second.shape != shape)
      throw ModelFormatError(path_ + ": tensor " + name + " has shape " + ShapeStr(it->second.shape) +
                             " but config.json implies " + ShapeStr(shape));
  }
  for (const auto& [name, info] : tensors_)
    if (!expected.count(name))
      throw ModelFormatError(path_ + ": unexpected tensor " + name + " (does config.json match this model?)");
}

OpenedModel OpenModel(const std::string& model_dir) {
  OpenedModel m;
  m.cfg = LoadConfig(model_dir + "/config.json");
  m.file = std::make_unique<ModelFile>(model_dir + "/model.bin");
  m.file->ValidateAgainst(m.cfg);
  return m;
}

}  // namespace lab
