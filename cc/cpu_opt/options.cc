// cpu_opt's environment knobs (options.h).
#include "cc/cpu_opt/options.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "cc/core/errors.h"

namespace lab {
namespace cpu_opt {

int64_t PrefillChunk() {
  const char* v = std::getenv("LAB_CPU_PREFILL_CHUNK");
  if (!v || !*v) return kPrefillChunk;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end || n < 16 || n > 4096) throw InputError(std::string("LAB_CPU_PREFILL_CHUNK must be 16..4096, not '") + v + "'");
  return n;
}

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

WeightMemory CpuPages() {
  const WeightMemory m[] = {WeightMemory::kHugePages, WeightMemory::kSmallPages, WeightMemory::kMap};
  return m[EnvChoice("LAB_CPU_PAGES", {"huge", "small", "map"})];
}

bool DecodeRegion() { return EnvChoice("LAB_CPU_DECODE", {"region", "ops"}) == 0; }

int DecodeAttnMode() {
  const char* v = std::getenv("LAB_CPU_DECODE_ATTN");
  const std::string s = v ? v : "";
  if (s.size() <= 2 && !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit) && std::stoi(s) >= 1 &&
      std::stoi(s) <= kMaxSplits)
    return std::stoi(s);
  return EnvChoice("LAB_CPU_DECODE_ATTN", {"split", "head"}, "1.." + std::to_string(kMaxSplits)) == 1 ? -1 : 0;
}

bool GuidedSchedule() { return EnvChoice("LAB_CPU_SCHEDULE", {"guided", "static"}) == 0; }

}  // namespace cpu_opt
}  // namespace lab
