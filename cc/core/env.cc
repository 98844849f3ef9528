// EnvChoice, EnvInt (env.h).
#include "cc/core/env.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "cc/core/errors.h"

namespace lab {

int EnvChoice(const char* name, std::initializer_list<const char*> values, const std::string& more) {
  const char* v = std::getenv(name);
  const std::string s = v ? v : "";
  if (s.empty()) return 0;
  std::vector<std::string> all;
  for (const char* x : values) {
    if (s == x) return static_cast<int>(all.size());
    all.emplace_back(x);
  }
  if (!more.empty()) all.push_back(more);
  std::string list = all[0];
  for (size_t i = 1; i < all.size(); ++i) list += (i + 1 == all.size() ? " or " : ", ") + all[i];
  throw InputError(std::string(name) + " must be " + list + ", not '" + s + "'");
}

bool EnvGiven(const char* name) {
  const char* v = std::getenv(name);
  return v && *v;
}

long long EnvInt(const char* name, long long lo, long long hi, long long dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end || n < lo || n > hi)
    throw InputError(std::string(name) + " must be " + std::to_string(lo) + ".." + std::to_string(hi) + ", not '" + v + "'");
  return n;
}

}  // namespace lab
