// GEMM front door: preconditions of each version, and the choice of the fastest one that applies.
#include "cuda/prefill/device_common.h"

namespace lab::prefill {

const char* GemmUnsupported(int version, const GemmParams& p) {
  if (const char* r = detail::GemmBasicCheck(p)) return r;
  switch (version) {
    case 1:
      if (p.M > 65535) return "v1 launches one block row per output row: M <= 65535";
      return nullptr;
    case 2:
      if (p.N % 128) return "v2 needs N % 128 == 0";
      if (p.K % 16) return "v2 needs K % 16 == 0";
      return detail::GemmVectorCheck(p);
    case 3:
      if (p.N % 128) return "v3 needs N % 128 == 0";
      if (p.K % 32) return "v3 needs K % 32 == 0";
      return detail::GemmVectorCheck(p);
    case 4:
      if (p.N % 128) return "v4 needs N % 128 == 0";
      if (p.K % 64) return "v4 needs K % 64 == 0";
      if (const char* r = detail::GemmVectorCheck(p)) return r;
      if (!GemmV4Available()) return "v4 needs an sm_90a build running on a compute-capability 9.0 GPU";
      return nullptr;
  }
  return "unknown GEMM version (1..4)";
}

cudaError_t GemmVersion(int version, const GemmParams& p, cudaStream_t stream) {
  switch (version) {
    case 1: return GemmV1(p, stream);
    case 2: return GemmV2(p, stream);
    case 3: return GemmV3(p, stream);
    case 4: return GemmV4(p, stream);
  }
  throw std::invalid_argument("GemmVersion: unknown version " + std::to_string(version));
}

int GemmBestVersion(const GemmParams& p) {
  for (int v : {4, 3, 2}) {
    if (!GemmUnsupported(v, p)) return v;
  }
  return 1;
}

cudaError_t Gemm(const GemmParams& p, cudaStream_t stream) { return GemmVersion(GemmBestVersion(p), p, stream); }

}  // namespace lab::prefill
