// Prefill kernels of the lab: tensor-core GEMM (four versions side by side) and FlashAttention.
//
// Everything here is fp16 in, fp32 accumulate, fp16 (or fp32) out, on one CUDA stream, with plain
// device pointers: no allocation, no synchronization, safe to capture in a CUDA graph (except
// AttentionUnfused, which needs a caller-provided workspace but is otherwise capturable too).
// Launchers check their preconditions on the host and throw std::invalid_argument with the reason;
// they return the launch's cudaGetLastError().
//
// Layouts (row-major throughout, strides in elements):
//   activations  A [M, K]            row stride lda   (token-major: one row per prompt position)
//   weights      W [N, K]            row stride ldw   (the Llama/PyTorch nn.Linear layout [out, in])
//   GEMM output  C [M, N]            row stride ldc   (C = A · W^T)
//   queries      Q [n, n_heads, D]   position stride q_pos_stride, head stride D (RoPE already applied)
//   KV cache     K,V [max_ctx, n_kv_heads, D] per layer: position stride kv_pos_stride (= n_kv_heads*D),
//                head stride kv_head_stride (= D). Other layouts (head-major [n_kv_heads, max_ctx, D])
//                are the same call with other strides.
//   attention out O [n, n_heads, D]  position stride o_pos_stride, head stride D
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

// fp16 elements are cuda_fp16.h's __half; only pointers cross this API, so a declaration is enough
// (and host C++ that never includes cuda_fp16.h can call it).
struct __half;

namespace lab::prefill {

// What the GEMM does with the fp32 accumulator before the one store.
enum class Epilogue : int {
  kNone = 0,      // C[m, n] = acc[m, n]
  kResidual = 1,  // C[m, n] = acc[m, n] + R[m, n]   (R may alias C: the in-place residual add x += W·h)
  kSwiGLU = 2,    // W is the concatenated [gate; up] weight [2F, K] (N = 2F):
                  // C[m, f] = silu(A·Wgate^T)[m, f] * (A·Wup^T)[m, f], C is [M, F]
};

struct GemmParams {
  const __half* A = nullptr;  // [M, K]
  int64_t lda = 0;
  const __half* W = nullptr;  // [N, K]
  int64_t ldw = 0;
  void* C = nullptr;        // [M, N] ([M, N/2] for kSwiGLU): half, or float when c_f32
  int64_t ldc = 0;
  const __half* R = nullptr;  // [M, N] residual, kResidual only
  int64_t ldr = 0;
  int M = 0, N = 0, K = 0;  // N is W's row count (2F for kSwiGLU)
  Epilogue epilogue = Epilogue::kNone;
  bool c_f32 = false;
};

// ---- GEMM versions (each file's comment is the full contract) -----------------------------------
// v1 naive: one thread per output element, fp32 FMA.       M, N, K any (N even for kSwiGLU).
// v2 SIMT tiled: 128x128x16 shared-memory tiles, 8x8 outputs per thread, fp32 FMA.
//                                                           M any, N%128==0, K%16==0.
// v3 mma.sync m16n8k16 + ldmatrix, cp.async 4-stage pipeline, XOR-swizzled shared memory.
//                                                           M any, N%128==0, K%32==0.
// v4 Hopper: TMA (cp.async.bulk.tensor) + mbarrier pipeline, warp-specialized producer, wgmma
//    m64n{128,256}k16, sm_90a only.                         M any, N%128==0, K%64==0.
// All versions: A, W, C, R 16-byte aligned and lda, ldw, ldc, ldr multiples of 8 (v1: any).
cudaError_t GemmV1(const GemmParams& p, cudaStream_t stream);
cudaError_t GemmV2(const GemmParams& p, cudaStream_t stream);
cudaError_t GemmV3(const GemmParams& p, cudaStream_t stream);
cudaError_t GemmV4(const GemmParams& p, cudaStream_t stream);
// version 1..4; nullptr when the version can run p on this device, else the reason it cannot.
const char* GemmUnsupported(int version, const GemmParams& p);
// True when this build carries sm_90a code for v4 and the current device (compute capability 9.0) runs it.
bool GemmV4Available();
cudaError_t GemmVersion(int version, const GemmParams& p, cudaStream_t stream);
// The fastest version that supports p on the current device (v4, else v3, else v2, else v1).
int GemmBestVersion(const GemmParams& p);
cudaError_t Gemm(const GemmParams& p, cudaStream_t stream);

// ---- Attention (causal, GQA) ----------------------------------------------------------------------
// Query i (0 <= i < n) sits at absolute position pos + i and attends to keys 0 .. pos + i, which must
// already be in the cache (this chunk's own keys included): chunked prefill continues a cache.
// Query head h reads KV head h / (n_heads / n_kv_heads).
struct AttentionParams {
  const __half* Q = nullptr;
  int64_t q_pos_stride = 0;
  const __half* K = nullptr;  // cache base (position 0, kv head 0) of this layer
  const __half* V = nullptr;
  int64_t kv_pos_stride = 0, kv_head_stride = 0;
  __half* O = nullptr;
  int64_t o_pos_stride = 0;
  int n = 0;                // queries in this chunk
  int pos = 0;              // absolute position of query 0 (= keys already in the cache before it)
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float scale = 0.f;        // softmax scale; 0 means 1/sqrt(head_dim)
};

// FlashAttention-2 style, tensor cores (mma.sync m16n8k16), online softmax: scores never reach
// device memory. head_dim 64 or 128; n >= 1, pos >= 0; n_heads % n_kv_heads == 0; pointers 16-byte
// aligned, strides multiples of 8. FlashAttention() runs the fastest version on the bench.
cudaError_t FlashAttention(const AttentionParams& p, cudaStream_t stream);
// The versions side by side (flash_attn.cu): 1 = Q fragments in registers, 64-key tiles, 8 warps per
// SM; 2 = Q re-read from shared memory, 64-key tiles, 2 blocks (16 warps) per SM; 3 = as 2 with
// 32-key tiles (fewer live registers). Same contract for all.
cudaError_t FlashAttentionVersion(int version, const AttentionParams& p, cudaStream_t stream);

// The unfused baseline: per head, S = Q K^T (fp32, [n, keys] in device memory, with the GEMM above),
// a causal softmax kernel writing P (fp16), then O = P V (GEMM). Same preconditions; needs
// AttentionUnfusedWorkspaceBytes(p) bytes of device workspace (256-byte aligned).
size_t AttentionUnfusedWorkspaceBytes(const AttentionParams& p);
cudaError_t AttentionUnfused(const AttentionParams& p, void* workspace, cudaStream_t stream);

}  // namespace lab::prefill
