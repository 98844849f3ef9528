// Error types of the lab's C++ side. The C++ code never aborts on bad input: it throws one of these,
// and the pybind11 module turns each into a Python exception with the same message.
#pragma once
#include <stdexcept>
#include <string>

namespace lab {

// model.bin / config.json is truncated, lies about offsets, or does not match the config.
struct ModelFormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A caller's mistake: token id out of range, prompt longer than the context, empty prompt.
struct InputError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A device problem: no CUDA GPU, out of device memory, a failed kernel launch.
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace lab
