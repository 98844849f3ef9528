// Environment knobs shared by the engines: a choice among named values or an integer in a range, a bad
// value refused with an InputError that says what would do (cpu_opt's and gpu_opt's experiment knobs).
#pragma once
#include <initializer_list>
#include <string>

namespace lab {

// The index of environment variable `name`'s value in `values`; values[0] is the default, also when the
// variable is unset or empty. Any other value is refused, naming the choices (and `more`, a description
// of choices the caller parses itself).
int EnvChoice(const char* name, std::initializer_list<const char*> values, const std::string& more = "");

// Environment variable `name` as an integer in lo..hi, or `dflt` when it is unset or empty; anything else
// is refused ("NAME must be lo..hi, not 'v'").
long long EnvInt(const char* name, long long lo, long long hi, long long dflt);

// Whether environment variable `name` is set to a non-empty value (a knob given explicitly, which a
// variant string names and a refusal may depend on).
bool EnvGiven(const char* name);

}  // namespace lab
