// cpu_opt's environment knobs (options.h).
#include "cc/cpu_opt/options.h"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace lab {
namespace cpu_opt {

int64_t PrefillChunk() { return EnvInt("LAB_CPU_PREFILL_CHUNK", 16, 4096, kPrefillChunk); }

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
