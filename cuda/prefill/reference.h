// fp32 reference kernels for the prefill bench and tests (independent of the kernels under test:
// plain CUDA cores, fp32 products and sums, no tensor cores, no fp16 intermediates).
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/prefill/prefill.h"

namespace lab::prefill::reference {

constexpr int kRefRows = 64;  // rows per reference call (callers repeat rows to fill it)

// out[r, n] = sum_k A[rows[r], k] * W[n, k] for r < 64, n < N (the raw product, no epilogue), fp32.
// rows: device array of 64 row indices.
cudaError_t GemmRows(const half* A, int64_t lda, const half* W, int64_t ldw, int N, int K, const int* rows, float* out,
                     cudaStream_t stream);

// out[r, h, :] for query rows[r] (r < n_rows) of every head: causal GQA attention in fp32, [n_rows, n_heads, D].
cudaError_t AttentionRows(const AttentionParams& p, const int* rows, int n_rows, float* out, cudaStream_t stream);

// Number of non-finite values among count fp16 (or fp32) elements, written to *result (device int).
cudaError_t CountNonFinite(const void* data, int64_t count, bool f32, int* result, cudaStream_t stream);

}  // namespace lab::prefill::reference
