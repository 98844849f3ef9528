// lab._prefill_kernels: the prefill kernels for Python tests, on device pointers the caller owns
// (torch tensors' data_ptr()), enqueued on the caller's stream (torch.cuda.current_stream().cuda_stream).
//
//   gemm(version, A, lda, W, ldw, C, ldc, M, N, K, epilogue=0, R=0, ldr=0, c_f32=False, stream=0)
//       version 0 = the best for the shape; epilogue 0 none, 1 residual, 2 swiglu
//   gemm_unsupported(version, ...same shape arguments...) -> None or the reason
//   v4_available()
//   flash_attention(Q, q_pos_stride, K, V, kv_pos_stride, kv_head_stride, O, o_pos_stride, n, pos,
//                   n_heads, n_kv_heads, head_dim, scale=0.0, stream=0, version=0)   version 0 = the default
//   attention_unfused(..., workspace, stream=0), attention_unfused_workspace_bytes(n, pos, head_dim)
// Precondition failures raise ValueError; CUDA errors raise RuntimeError. Calls do not synchronize.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "cuda/prefill/prefill.h"

namespace py = pybind11;
namespace lp = lab::prefill;

namespace {

void Check(cudaError_t e) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(e));
}

lp::GemmParams MakeGemm(uintptr_t A, int64_t lda, uintptr_t W, int64_t ldw, uintptr_t C, int64_t ldc, int M, int N, int K,
                        int epilogue, uintptr_t R, int64_t ldr, bool c_f32) {
  if (epilogue < 0 || epilogue > 2) throw std::invalid_argument("epilogue must be 0 (none), 1 (residual) or 2 (swiglu)");
  lp::GemmParams p;
  p.A = reinterpret_cast<const __half*>(A);
  p.lda = lda;
  p.W = reinterpret_cast<const __half*>(W);
  p.ldw = ldw;
  p.C = reinterpret_cast<void*>(C);
  p.ldc = ldc;
  p.R = reinterpret_cast<const __half*>(R);
  p.ldr = ldr;
  p.M = M;
  p.N = N;
  p.K = K;
  p.epilogue = static_cast<lp::Epilogue>(epilogue);
  p.c_f32 = c_f32;
  return p;
}

lp::AttentionParams MakeAttn(uintptr_t Q, int64_t q_pos_stride, uintptr_t K, uintptr_t V, int64_t kv_pos_stride,
                             int64_t kv_head_stride, uintptr_t O, int64_t o_pos_stride, int n, int pos, int n_heads,
                             int n_kv_heads, int head_dim, float scale) {
  lp::AttentionParams p;
  p.Q = reinterpret_cast<const __half*>(Q);
  p.q_pos_stride = q_pos_stride;
  p.K = reinterpret_cast<const __half*>(K);
  p.V = reinterpret_cast<const __half*>(V);
  p.kv_pos_stride = kv_pos_stride;
  p.kv_head_stride = kv_head_stride;
  p.O = reinterpret_cast<__half*>(O);
  p.o_pos_stride = o_pos_stride;
  p.n = n;
  p.pos = pos;
  p.n_heads = n_heads;
  p.n_kv_heads = n_kv_heads;
  p.head_dim = head_dim;
  p.scale = scale;
  return p;
}

}  // namespace

PYBIND11_MODULE(_prefill_kernels, m) {
  m.doc() = "The lab's prefill kernels (GEMM v1-v4, FlashAttention, unfused attention) on raw device pointers.";
  m.def(
      "gemm",
      [](int version, uintptr_t A, int64_t lda, uintptr_t W, int64_t ldw, uintptr_t C, int64_t ldc, int M, int N, int K,
         int epilogue, uintptr_t R, int64_t ldr, bool c_f32, uintptr_t stream) {
        const lp::GemmParams p = MakeGemm(A, lda, W, ldw, C, ldc, M, N, K, epilogue, R, ldr, c_f32);
        const int v = version == 0 ? lp::GemmBestVersion(p) : version;
        Check(lp::GemmVersion(v, p, reinterpret_cast<cudaStream_t>(stream)));
        return v;
      },
      py::arg("version"), py::arg("A"), py::arg("lda"), py::arg("W"), py::arg("ldw"), py::arg("C"), py::arg("ldc"),
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("epilogue") = 0, py::arg("R") = 0, py::arg("ldr") = 0,
      py::arg("c_f32") = false, py::arg("stream") = 0, "Enqueue C = epilogue(A W^T); returns the version that ran.");
  m.def(
      "gemm_unsupported",
      [](int version, uintptr_t A, int64_t lda, uintptr_t W, int64_t ldw, uintptr_t C, int64_t ldc, int M, int N, int K,
         int epilogue, uintptr_t R, int64_t ldr, bool c_f32) -> py::object {
        const char* why = lp::GemmUnsupported(version, MakeGemm(A, lda, W, ldw, C, ldc, M, N, K, epilogue, R, ldr, c_f32));
        if (!why) return py::none();
        return py::str(why);
      },
      py::arg("version"), py::arg("A"), py::arg("lda"), py::arg("W"), py::arg("ldw"), py::arg("C"), py::arg("ldc"),
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("epilogue") = 0, py::arg("R") = 0, py::arg("ldr") = 0,
      py::arg("c_f32") = false);
  m.def("v4_available", &lp::GemmV4Available);
  m.def(
      "flash_attention",
      [](uintptr_t Q, int64_t q_pos_stride, uintptr_t K, uintptr_t V, int64_t kv_pos_stride, int64_t kv_head_stride,
         uintptr_t O, int64_t o_pos_stride, int n, int pos, int n_heads, int n_kv_heads, int head_dim, float scale,
         uintptr_t stream, int version) {
        const lp::AttentionParams p =
            MakeAttn(Q, q_pos_stride, K, V, kv_pos_stride, kv_head_stride, O, o_pos_stride, n, pos, n_heads, n_kv_heads, head_dim, scale);
        const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
        Check(version == 0 ? lp::FlashAttention(p, s) : lp::FlashAttentionVersion(version, p, s));
      },
      py::arg("Q"), py::arg("q_pos_stride"), py::arg("K"), py::arg("V"), py::arg("kv_pos_stride"), py::arg("kv_head_stride"),
      py::arg("O"), py::arg("o_pos_stride"), py::arg("n"), py::arg("pos"), py::arg("n_heads"), py::arg("n_kv_heads"),
      py::arg("head_dim"), py::arg("scale") = 0.f, py::arg("stream") = 0, py::arg("version") = 0);
  m.def(
      "attention_unfused_workspace_bytes",
      [](int n, int pos, int head_dim) {
        lp::AttentionParams p;
        p.n = n;
        p.pos = pos;
        p.head_dim = head_dim;
        return lp::AttentionUnfusedWorkspaceBytes(p);
      },
      py::arg("n"), py::arg("pos"), py::arg("head_dim"));
  m.def(
      "attention_unfused",
      [](uintptr_t Q, int64_t q_pos_stride, uintptr_t K, uintptr_t V, int64_t kv_pos_stride, int64_t kv_head_stride,
         uintptr_t O, int64_t o_pos_stride, int n, int pos, int n_heads, int n_kv_heads, int head_dim, uintptr_t workspace,
         float scale, uintptr_t stream) {
        Check(lp::AttentionUnfused(
            MakeAttn(Q, q_pos_stride, K, V, kv_pos_stride, kv_head_stride, O, o_pos_stride, n, pos, n_heads, n_kv_heads, head_dim, scale),
            reinterpret_cast<void*>(workspace), reinterpret_cast<cudaStream_t>(stream)));
      },
      py::arg("Q"), py::arg("q_pos_stride"), py::arg("K"), py::arg("V"), py::arg("kv_pos_stride"), py::arg("kv_head_stride"),
      py::arg("O"), py::arg("o_pos_stride"), py::arg("n"), py::arg("pos"), py::arg("n_heads"), py::arg("n_kv_heads"),
      py::arg("head_dim"), py::arg("workspace"), py::arg("scale") = 0.f, py::arg("stream") = 0);
}
