// GEMM v1 — naive: one thread per output element.
//
// Contract: C = epilogue(A[M,K] · W[N,K]^T). M, N, K any (N even for kSwiGLU); any strides and
// alignment. fp16 loads, fp32 FMA in k order, one rounding at the store.
// Launch: grid (ceil(N_out/128), M), 128 threads; thread x owns output column x of row blockIdx.y.
//
// What it teaches: each output re-reads a whole row of W and of A from device memory (through L1/L2),
// 2 loads per FMA, and the W reads of neighbouring threads are K*2 bytes apart (uncoalesced). It is
// the correctness reference of the kernel lab and runs far under 1% of the tensor-core rate.
#include "cuda/prefill/device_common.h"

namespace lab::prefill {
namespace {


template <Epilogue EPI, typename OutT>
__global__ void __launch_bounds__(128) GemmV1Kernel(GemmParams p) {
  const int n_out = EPI == Epilogue::kSwiGLU ? p.N / 2 : p.N;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const int m = blockIdx.y;
  if (c >= n_out) return;
  const half* a = p.A + static_cast<int64_t>(m) * p.lda;
  const half* w = p.W + static_cast<int64_t>(c) * p.ldw;
  float acc = 0.f, up = 0.f;
  if (EPI == Epilogue::kSwiGLU) {
    const half* wu = p.W + static_cast<int64_t>(c + n_out) * p.ldw;
    for (int k = 0; k < p.K; ++k) {
      const float x = __half2float(a[k]);
      acc = fmaf(x, __half2float(w[k]), acc);
      up = fmaf(x, __half2float(wu[k]), up);
    }
  } else {
    for (int k = 0; k < p.K; ++k) acc = fmaf(__half2float(a[k]), __half2float(w[k]), acc);
  }
  detail::StoreOne<EPI, OutT>(p, m, c, acc, up);
}

template <Epilogue EPI, typename OutT>
struct LaunchV1 {
  static cudaError_t Run(const GemmParams& p, cudaStream_t s) {
    const int n_out = EPI == Epilogue::kSwiGLU ? p.N / 2 : p.N;
    dim3 grid((n_out + 127) / 128, p.M);
    GemmV1Kernel<EPI, OutT><<<grid, 128, 0, s>>>(p);
    return cudaGetLastError();
  }
};

}  // namespace

cudaError_t GemmV1(const GemmParams& p, cudaStream_t stream) {
  detail::ThrowIf(GemmUnsupported(1, p), "GemmV1");
  return detail::DispatchEpilogue<LaunchV1>(p, stream);
}

}  // namespace lab::prefill
