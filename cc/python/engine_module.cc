// lab._engine: every engine behind one Python interface (pybind11).
//
//   e = Engine("cpu_fp32", "data/models/x_fp32", max_context=2048)
//   e.prefill(np.array([...], np.int32), all_logits=False) -> np.ndarray [vocab] or [n, vocab]
//   e.decode(token) -> np.ndarray [vocab];  e.generate(token, n) -> np.ndarray [n] int32 (greedy)
//   e.reset();  e.stats() -> dict;  e.pos;  e.config;  e.name;  e.variant
//   gpu_read_bandwidth(n_bytes, repeats) -> ([GB/s per pass], method)   the GPU read ceiling
//
// C++ errors arrive as Python exceptions: ModelFormatError (a ValueError), ValueError for bad
// input, DeviceError (a RuntimeError), MemoryError. The GIL is released while engines compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>

#include "cc/core/engine.h"
#include "cc/core/errors.h"
#include "cuda/common/read_ceiling.h"

namespace py = pybind11;

namespace {

py::array_t<float> ToArray(std::vector<float>&& v, int64_t rows, int64_t cols, bool matrix) {
  auto* heap = new std::vector<float>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  if (!matrix) return py::array_t<float>({cols}, {sizeof(float)}, heap->data(), owner);
  return py::array_t<float>({rows, cols}, {cols * static_cast<int64_t>(sizeof(float)), static_cast<int64_t>(sizeof(float))},
                            heap->data(), owner);
}

std::vector<int32_t> ToTokens(const py::object& obj) {
  auto arr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!arr) throw lab::InputError("tokens must be a sequence of integers");
  if (arr.ndim() != 1) throw lab::InputError("tokens must be one-dimensional");
  std::vector<int32_t> out(arr.size());
  auto r = arr.unchecked<1>();
  for (py::ssize_t i = 0; i < arr.size(); ++i) {
    const int64_t t = r(i);
    if (t < INT32_MIN || t > INT32_MAX)
      throw lab::InputError("token id " + std::to_string(t) + " at index " + std::to_string(i) + " is out of range");
    out[i] = static_cast<int32_t>(t);
  }
  return out;
}

py::dict ConfigDict(const lab::ModelConfig& c) {
  py::dict d;
  d["dim"] = c.dim;
  d["hidden_dim"] = c.hidden_dim;
  d["n_layers"] = c.n_layers;
  d["n_heads"] = c.n_heads;
  d["n_kv_heads"] = c.n_kv_heads;
  d["head_dim"] = c.head_dim;
  d["vocab_size"] = c.vocab_size;
  d["max_position_embeddings"] = c.max_position_embeddings;
  d["tie_word_embeddings"] = c.tie_word_embeddings;
  d["rope_type"] = c.rope_scaling.type;
  d["eos_token_ids"] = c.eos_token_ids;
  d["num_params"] = c.NumParams();
  return d;
}

}  // namespace

PYBIND11_MODULE(_engine, m) {
  m.doc() = "C++/CUDA inference engines of the LLM inference lab";
  static py::exception<lab::ModelFormatError> model_error(m, "ModelFormatError", PyExc_ValueError);
  static py::exception<lab::DeviceError> device_error(m, "DeviceError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const lab::ModelFormatError& e) {
      py::set_error(model_error, e.what());
    } catch (const lab::DeviceError& e) {
      py::set_error(device_error, e.what());
    }
  });

  m.def("engine_names", &lab::EngineNames, "Names of the engines built into this module.");
  m.def("parse_config", [](const std::string& text) { return ConfigDict(lab::ParseConfig(text)); },
        "Parses config.json text as the engines do (raises ModelFormatError).");
  m.def(
      "gpu_read_bandwidth",
      [](int64_t n_bytes, int repeats) {
        if (n_bytes < 0) throw lab::InputError("n_bytes must be positive");
        lab::cuda::ReadCeiling c;
        {
          py::gil_scoped_release release;
          c = lab::cuda::MeasureReadBandwidth(static_cast<size_t>(n_bytes), repeats);
        }
        return py::make_tuple(c.gbps, c.method);
      },
      py::arg("n_bytes"), py::arg("repeats") = 10,
      "The GPU's read ceiling with the lab's read kernel (cuda/common/read_ceiling.h): GB/s of each timed "
      "pass of the best launch shape, and what was measured. DeviceError without a GPU.");

  py::class_<lab::Engine>(m, "Engine")
      .def(py::init([](const std::string& name, const std::string& model_dir, int64_t max_context) {
             py::gil_scoped_release release;
             return lab::CreateEngine(name, model_dir, max_context);
           }),
           py::arg("name"), py::arg("model_dir"), py::arg("max_context") = 0)
      .def(
          "prefill",
          [](lab::Engine& e, const py::object& tokens, bool all_logits) {
            std::vector<int32_t> t = ToTokens(tokens);
            std::vector<float> logits;
            {
              py::gil_scoped_release release;
              logits = e.Prefill(t, all_logits);
            }
            return ToArray(std::move(logits), all_logits ? static_cast<int64_t>(t.size()) : 1,
                           e.config().vocab_size, all_logits);
          },
          py::arg("tokens"), py::arg("all_logits") = false)
      .def(
          "decode",
          [](lab::Engine& e, int64_t token) {
            if (token < INT32_MIN || token > INT32_MAX) throw lab::InputError("token id out of range");
            std::vector<float> logits;
            {
              py::gil_scoped_release release;
              logits = e.Decode(static_cast<int32_t>(token));
            }
            return ToArray(std::move(logits), 1, e.config().vocab_size, false);
          },
          py::arg("token"))
      .def(
          "generate",
          [](lab::Engine& e, int64_t token, int64_t n) {
            if (token < INT32_MIN || token > INT32_MAX) throw lab::InputError("token id out of range");
            std::vector<int32_t> out;
            {
              py::gil_scoped_release release;
              out = e.Generate(static_cast<int32_t>(token), n);
            }
            py::array_t<int32_t> a(static_cast<py::ssize_t>(out.size()));
            std::copy(out.begin(), out.end(), a.mutable_data());
            return a;
          },
          py::arg("token"), py::arg("n"),
          "Greedy generation: feeds token, then each argmax, n steps; returns the n argmax token ids.")
      .def("reset", &lab::Engine::Reset)
      .def_property_readonly("pos", &lab::Engine::pos)
      .def_property_readonly("max_context", &lab::Engine::max_context)
      .def_property_readonly("name", &lab::Engine::name)
      .def_property_readonly("variant", &lab::Engine::variant)
      .def_property_readonly("config", [](const lab::Engine& e) { return ConfigDict(e.config()); })
      .def("phase_seconds", [](const lab::Engine& e) {
            py::dict d;
            for (const auto& [name, seconds] : e.PhaseSeconds()) d[py::str(name)] = seconds;
            return d;
          },
          "Cumulative seconds per part of the decode step (cpu_opt with LAB_CPU_PROFILE=1; else empty).")
      .def("launch_counts", [](const lab::Engine& e) {
            py::dict d;
            for (const auto& [name, n] : e.LaunchCounts()) d[py::str(name)] = n;
            return d;
          },
          "Launches per code path, counted as issued or captured (gpu_opt: '<kind>', '<kind>.x_bulk', "
          "'<kind>.second_after_wait'); else empty.")
      .def("stats", [](const lab::Engine& e) {
        const lab::EngineStats s = e.stats();
        py::dict d;
        d["weight_bytes"] = s.weight_bytes;
        d["weight_copy_bytes"] = s.weight_copy_bytes;
        d["kv_cache_bytes"] = s.kv_cache_bytes;
        d["activation_bytes"] = s.activation_bytes;
        d["last_prefill_s"] = s.last_prefill_s;
        d["last_prefill_tokens"] = s.last_prefill_tokens;
        d["last_decode_s"] = s.last_decode_s;
        d["prefill_tokens"] = s.prefill_tokens;
        d["prefill_s"] = s.prefill_s;
        d["decode_tokens"] = s.decode_tokens;
        d["decode_s"] = s.decode_s;
        return d;
      });
}
