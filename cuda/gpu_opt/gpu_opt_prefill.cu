// Stage 4 — gpu_opt's prefill (time to first token): the GpuOptEngine methods that run a prompt
// (gpu_opt_engine_impl.cuh declares the class; gpu_opt_engine.cu holds creation and decode).
//
// The tensor-core path (default):
// Per chunk of B <= C tokens at positions p .. p+B-1 (x: fp32 residual [B, dim]; h: fp16):
//   x = embed(tokens);  h = RMSNorm(x) * attn_norm[0]
//   per layer:  qkv32 = h Wqkv^T (GEMM, fp32 out)          -> RoPE: q16, K/V cache rows p..p+B-1
//               att16 = FlashAttention(q16, cache keys 0..p+i)
//               d32 = att16 Wo^T (GEMM, fp32 out);   x += d32, h = RMSNorm(x) * ffn_norm  (one kernel)
//               act16 = SiLU(h Wg^T) * (h Wu^T)      (one GEMM over [gate; up], SwiGLU epilogue)
//               d32 = act16 Wdown^T (GEMM, fp32 out); x += d32, h = RMSNorm(x) * next norm (one kernel)
//   logits: last row -> the decode lm_head matvec on fp32 x (fused final norm); all rows -> lm_head
//   GEMM on hi and lo fp16 halves of the final-normed rows, summed (fp32-grade input).
// The residual adds are fused into the next RMSNorm rather than into the GEMMs' kResidual epilogue,
// because that epilogue reads an fp16 residual and the residual stream here is fp32 (README.md).
//
// The simple path (LAB_GPU_PREFILL=simple, and the fallback when a tensor-core precondition fails):
// chunks of kPrefillChunk tokens through a tiled CUDA-core GEMM, row RMSNorm, RoPE/KV write, SwiGLU and
// the decode attention kernel with one more grid dimension for the tokens.
//
// Knobs: LAB_GPU_PREFILL=tc|simple (tensor-core, the default, or the simple kernels),
// LAB_GPU_PREFILL_CHUNK=<tokens> (tensor-core chunk, default 2048, capped at max_context),
// LAB_GPU_ATTN=flash|unfused (tensor-core path's attention: FlashAttention, or the lab's unfused
// baseline S = QK^T -> softmax -> PV, whose workspace is allocated on first use),
// LAB_GPU_PREFILL_GEMM=<1..4> (force that lab GEMM version where it applies), LAB_GPU_PREFILL_PROFILE=1
// (CUDA events between the prefill's steps; per-step device time printed to stderr after each prefill).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cc/core/errors.h"
#include "cuda/gpu_opt/gpu_opt_engine_impl.cuh"
#include "cuda/gpu_opt/kernels_prefill.cuh"

namespace lab {
namespace gpu_opt {
namespace {

// Tensor-core all-logits: rows per lm_head pass; logits_ ([kPrefillChunk, vocab] fp32) holds the hi
// rows' logits in its first half and the lo rows' in its second.
constexpr int kTcLogitsRows = kPrefillChunk / 2;

const char* const kPhaseNames[kNumPhases] = {"embed+norm", "qkv", "rope+kv", "attention", "o_proj",
                                             "gate_up",    "down", "lm_head"};

prefill::GemmParams GemmArgs(const __half* A, int64_t lda, const __half* W, int64_t ldw, void* C, int64_t ldc, int M,
                             int N, int K, prefill::Epilogue epi, bool c_f32) {
  prefill::GemmParams p;
  p.A = A;
  p.lda = lda;
  p.W = W;
  p.ldw = ldw;
  p.C = C;
  p.ldc = ldc;
  p.M = M;
  p.N = N;
  p.K = K;
  p.epilogue = epi;
  p.c_f32 = c_f32;
  return p;
}

}  // namespace

void GpuOptEngine::Forward(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) {
  if (n == 1 && !all_logits) {
    DecodeStep(tokens[0], pos, logits);
    return;
  }
  ProfileBegin();
  if (tc_prefill_) {
    try {
      ForwardTc(tokens, n, pos, all_logits, logits);
      ProfileReport(n, "tensor-core");
      return;
    } catch (const InputError&) {
      throw;  // a caller's mistake (InputError is an invalid_argument too): no fallback
    } catch (const std::invalid_argument& e) {
      // A precondition of the prefill kernels (prefill.h) failed on the host, before that launch.
      // What was enqueued so far wrote only positions pos.. of this call (KV cache) and buffers that
      // the simple path rewrites, so the simple path redoes the whole call, now and from then on.
      std::fprintf(stderr, "gpu_opt: tensor-core prefill not possible (%s); using the simple prefill\n", e.what());
      tc_prefill_ = false;
      LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
      ProfileBegin();
    }
  }
  ForwardSimple(tokens, n, pos, all_logits, logits);
  ProfileReport(n, "simple");
}

// ---- simple prefill (LAB_GPU_PREFILL=simple; the fallback when a tensor-core precondition fails) ----
void GpuOptEngine::ForwardSimple(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) {
  const int64_t vocab = cfg_.vocab_size, dim = cfg_.dim;
  for (int64_t done = 0; done < n; done += kPrefillChunk) {
    const int B = int(std::min<int64_t>(kPrefillChunk, n - done));
    int* hi = h_ints_.as<int>();
    hi[0] = int(pos + done);
    std::memcpy(hi + 1, tokens + done, B * sizeof(int32_t));
    LAB_CUDA_CHECK(cudaMemcpyAsync(ints_, hi, (B + 1) * sizeof(int), cudaMemcpyHostToDevice, stream_));
    Mark(-1);
    PrefillChunk(B);
    if (all_logits) {
      RmsNormRows(xb_, x_, final_norm_, B);
      Gemm(logits_, xb_, lm_head_, B, int(vocab), int(dim), false);
      LAB_CUDA_CHECK(cudaMemcpyAsync(logits + done * vocab, logits_, size_t(B) * vocab * 4, cudaMemcpyDeviceToHost,
                                     stream_));
      Mark(kPhLogits);
    } else if (done + B == n) {
      Matvec(kLm, x_ + size_t(B - 1) * dim, false, -1, ints_, /*step=*/false);
      Mark(kPhLogits);
      LAB_CUDA_CHECK(cudaMemcpyAsync(logits, logits_, size_t(vocab) * 4, cudaMemcpyDeviceToHost, stream_));
    }
    // h_ints_ is reused by the next chunk: its copy must have been consumed.
    LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
    ProfileCollect();
  }
}

void GpuOptEngine::Gemm(float* C, const float* A, const __half* W, int B, int N, int K, bool accumulate) {
  const dim3 grid(unsigned((N + gpu::kGemmBN - 1) / gpu::kGemmBN), unsigned((B + gpu::kGemmBM - 1) / gpu::kGemmBM));
  if (accumulate) {
    gpu::GemmKernel<true><<<grid, 256, 0, stream_>>>(C, A, W, B, N, K);
  } else {
    gpu::GemmKernel<false><<<grid, 256, 0, stream_>>>(C, A, W, B, N, K);
  }
  LAB_CUDA_LAUNCH_CHECK("GemmKernel");
}

void GpuOptEngine::RmsNormRows(float* out, const float* x, const float* w, int B) {
  gpu::RmsNormRowsKernel<<<B, 256, 0, stream_>>>(out, x, w, int(cfg_.dim), float(cfg_.rms_norm_eps));
  LAB_CUDA_LAUNCH_CHECK("RmsNormRowsKernel");
}

// B tokens (ints_[1..B]) at positions ints_[0].. through all layers; leaves the residual in x_.
void GpuOptEngine::PrefillChunk(int B) {
  const ModelConfig& c = cfg_;
  const int dim = int(c.dim), q_dim = int(c.q_dim()), H = int(c.hidden_dim);
  const int n_qkv = int(c.q_dim() + 2 * c.kv_dim());
  gpu::EmbedKernel<<<B, 256, 0, stream_>>>(x_, nullptr, embed_, ints_ + 1, dim);
  LAB_CUDA_LAUNCH_CHECK("EmbedKernel");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const DeviceLayer& L = layers_[l];
    RmsNormRows(xb_, x_, L.attn_norm, B);
    Mark(kPhEmbedNorm);
    Gemm(qkv_, xb_, L.wqkv, B, n_qkv, dim, false);
    Mark(kPhQkv);
    const int n_units = n_qkv / 2;
    gpu::RopeQkvKernel<<<(B * n_units + 255) / 256, 256, 0, stream_>>>(qkv_, QkvOutFor(l), B, ints_);
    LAB_CUDA_LAUNCH_CHECK("RopeQkvKernel");
    Mark(kPhRope);
    Attention(B, kPrefillSplits, l, false, ints_, /*prefill=*/true);
    Mark(kPhAttn);
    Gemm(x_, att_, L.wo, B, dim, q_dim, true);
    Mark(kPhO);
    RmsNormRows(xb_, x_, L.ffn_norm, B);
    Mark(kPhEmbedNorm);
    Gemm(gu_, xb_, L.wgu, B, 2 * H, dim, false);
    gpu::SwiGluRowsKernel<<<(B * H + 255) / 256, 256, 0, stream_>>>(h_, gu_, B, H);
    LAB_CUDA_LAUNCH_CHECK("SwiGluRowsKernel");
    Mark(kPhGateUp);
    Gemm(x_, h_, L.wdown, B, dim, H, true);
    Mark(kPhDown);
  }
}

void GpuOptEngine::ReadPrefillEnv() {
  const ModelConfig& c = cfg_;
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
  };
  const std::string mode = env("LAB_GPU_PREFILL");
  if (mode.empty() || mode == "tc" || mode == "tensor") {
    tc_prefill_ = true;
  } else if (mode == "simple") {
    tc_prefill_ = false;
  } else {
    throw InputError("LAB_GPU_PREFILL must be tc or simple, not '" + mode + "'");
  }
  const std::string attn = env("LAB_GPU_ATTN");
  if (attn.empty() || attn == "flash") {
    attn_unfused_ = false;
  } else if (attn == "unfused") {
    attn_unfused_ = true;
  } else {
    throw InputError("LAB_GPU_ATTN must be flash or unfused, not '" + attn + "'");
  }
  const std::string chunk = env("LAB_GPU_PREFILL_CHUNK");
  tc_chunk_ = kTcChunkDefault;
  if (!chunk.empty()) {
    char* end = nullptr;
    const long long v = std::strtoll(chunk.c_str(), &end, 10);
    if (!end || *end || v < 1 || v > 65535) throw InputError("LAB_GPU_PREFILL_CHUNK must be 1..65535 tokens");
    tc_chunk_ = v;
  }
  const std::string gv = env("LAB_GPU_PREFILL_GEMM");
  gemm_version_ = 0;
  if (!gv.empty()) {
    gemm_version_ = std::atoi(gv.c_str());
    if (gemm_version_ < 1 || gemm_version_ > 4) throw InputError("LAB_GPU_PREFILL_GEMM must be 1..4");
  }
  profile_ = EnvFlag("LAB_GPU_PREFILL_PROFILE", false);
  // The kernels' preconditions (prefill.h) that depend on the model: FlashAttention handles head_dim
  // 64/128 and whole GQA groups; every stride (dim, q_dim, kv_dim, hidden_dim) must be a multiple of
  // 8 elements. MakeGpuOptEngine refuses models outside these already; checked again here so that
  // the engine falls back to the simple prefill rather than fail if that ever changes.
  std::string why;
  if (c.head_dim != 64 && c.head_dim != 128) why = "head_dim must be 64 or 128";
  if (c.n_heads % c.n_kv_heads) why = "n_heads must be a multiple of n_kv_heads";
  if (c.dim % 8 || c.q_dim() % 8 || c.kv_dim() % 8 || c.hidden_dim % 8)
    why = "dim, n_heads*head_dim, n_kv_heads*head_dim, hidden_dim must be multiples of 8";
  if (tc_prefill_ && !why.empty()) {
    std::fprintf(stderr, "gpu_opt: tensor-core prefill not possible (%s); using the simple prefill\n", why.c_str());
    tc_prefill_ = false;
  }
}

int GpuOptEngine::GemmVersionFor(const prefill::GemmParams& p) const {
  if (gemm_version_ > 0 && !prefill::GemmUnsupported(gemm_version_, p)) return gemm_version_;
  return prefill::GemmBestVersion(p);
}

// Throws std::invalid_argument (from the lab, before launching) when p breaks a precondition;
// DeviceError when the launch fails.
void GpuOptEngine::TcGemm(const char* what, const prefill::GemmParams& p) {
  cuda::Check(prefill::GemmVersion(GemmVersionFor(p), p, stream_), what, __FILE__, __LINE__);
}

// The layer GEMMs of one chunk of B rows (layer l's weights).
prefill::GemmParams GpuOptEngine::QkvGemm(int64_t l, int B) const {
  const ModelConfig& c = cfg_;
  const int n_qkv = int(c.q_dim() + 2 * c.kv_dim());
  return GemmArgs(txh_, c.dim, layers_[l].wqkv, c.dim, tqkv_, n_qkv, B, n_qkv, int(c.dim), prefill::Epilogue::kNone,
                  true);
}

prefill::GemmParams GpuOptEngine::OGemm(int64_t l, int B) const {
  const ModelConfig& c = cfg_;
  return GemmArgs(tatt16_, c.q_dim(), layers_[l].wo, c.q_dim(), tdelta_, c.dim, B, int(c.dim), int(c.q_dim()),
                  prefill::Epilogue::kNone, true);
}

prefill::GemmParams GpuOptEngine::GateUpGemm(int64_t l, int B) const {
  const ModelConfig& c = cfg_;
  return GemmArgs(txh_, c.dim, layers_[l].wgu, c.dim, tact16_, c.hidden_dim, B, int(2 * c.hidden_dim), int(c.dim),
                  prefill::Epilogue::kSwiGLU, false);
}

prefill::GemmParams GpuOptEngine::DownGemm(int64_t l, int B) const {
  const ModelConfig& c = cfg_;
  return GemmArgs(tact16_, c.hidden_dim, layers_[l].wdown, c.hidden_dim, tdelta_, c.dim, B, int(c.dim),
                  int(c.hidden_dim), prefill::Epilogue::kNone, true);
}

prefill::GemmParams GpuOptEngine::LmGemm(const __half* A, float* C, int rows) const {
  const ModelConfig& c = cfg_;
  return GemmArgs(A, c.dim, lm_head_, c.dim, C, c.vocab_size, rows, int(c.vocab_size), int(c.dim),
                  prefill::Epilogue::kNone, true);
}

prefill::AttentionParams GpuOptEngine::AttnArgs(int64_t l, int B, int64_t pos) const {
  const ModelConfig& c = cfg_;
  prefill::AttentionParams a;
  a.Q = tq16_;
  a.q_pos_stride = c.q_dim();
  a.K = LayerK(l);
  a.V = LayerV(l);
  a.kv_pos_stride = c.kv_dim();  // cache [max_ctx, n_kv_heads, head_dim] per layer
  a.kv_head_stride = c.head_dim;
  a.O = tatt16_;
  a.o_pos_stride = c.q_dim();
  a.n = B;
  a.pos = int(pos);
  a.n_heads = int(c.n_heads);
  a.n_kv_heads = int(c.n_kv_heads);
  a.head_dim = int(c.head_dim);
  a.scale = 0.f;  // 1/sqrt(head_dim)
  return a;
}

// At creation (after the weights are up): prints the plan with LAB_GPU_VERBOSE, and checks the GEMM
// preconditions on a full chunk so that a problem shows now rather than in the first prefill.
void GpuOptEngine::PlanTcPrefill() {
  const int C = int(tc_chunk_);
  const prefill::GemmParams ps[5] = {QkvGemm(0, C), OGemm(0, C), GateUpGemm(0, C), DownGemm(0, C),
                                     LmGemm(txh_, logits_, kTcLogitsRows)};
  const char* names[5] = {"qkv", "o_proj", "gate_up", "down", "lm_head(all)"};
  std::string line;
  for (int i = 0; i < 5; ++i) {
    const int v = GemmVersionFor(ps[i]);
    if (const char* why = prefill::GemmUnsupported(v, ps[i])) {
      std::fprintf(stderr, "gpu_opt: tensor-core prefill not possible (%s GEMM: %s); using the simple prefill\n",
                   names[i], why);
      tc_prefill_ = false;
      return;
    }
    line += std::string(" ") + names[i] + "=v" + std::to_string(v);
  }
  if (verbose_)
    std::fprintf(stderr, "gpu_opt: tensor-core prefill, chunk %lld tokens, attention %s, GEMM versions at M=%d:%s\n",
                 static_cast<long long>(tc_chunk_), attn_unfused_ ? "unfused" : "flash", C, line.c_str());
}

// x += d (d may be nullptr), then h = fp16(RMSNorm(x) * w) (h may be nullptr: add only); lo as in
// AddRmsNormHalfKernel.
void GpuOptEngine::AddNorm(const float* d, const float* w, __half* h, __half* lo, int B) {
  gpu::AddRmsNormHalfKernel<<<B, 256, 0, stream_>>>(tx_, d, w, h, lo, int(cfg_.dim), float(cfg_.rms_norm_eps));
  LAB_CUDA_LAUNCH_CHECK("AddRmsNormHalfKernel");
}

// The unfused baseline's workspace (S fp32 + P fp16 for one head, packed K and V^T): allocated on the
// first prefill that needs it, grown when a later one needs more, freed with the engine.
void GpuOptEngine::EnsureUnfusedWorkspace(int64_t n, int64_t pos) {
  size_t need = 0;
  for (int64_t done = 0; done < n; done += tc_chunk_) {
    const int B = int(std::min<int64_t>(tc_chunk_, n - done));
    need = std::max(need, prefill::AttentionUnfusedWorkspaceBytes(AttnArgs(0, B, pos + done)));
  }
  if (need <= unfused_ws_bytes_) return;
  LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (unfused_ws_) LAB_CUDA_CHECK(cudaFree(unfused_ws_));
  unfused_ws_ = nullptr;
  unfused_ws_bytes_ = 0;
  const cudaError_t e = cudaMalloc(&unfused_ws_, need);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear (out of memory is not sticky)
    unfused_ws_ = nullptr;
    throw DeviceError("gpu_opt: LAB_GPU_ATTN=unfused needs a workspace of " + cuda::GiB(need) + " for " +
                      std::to_string(tc_chunk_) + "-token chunks up to position " + std::to_string(pos + n) + ": " +
                      cudaGetErrorString(e));
  }
  unfused_ws_bytes_ = need;
}

void GpuOptEngine::ForwardTc(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) {
  const int64_t vocab = cfg_.vocab_size, dim = cfg_.dim;
  if (attn_unfused_) EnsureUnfusedWorkspace(n, pos);
  // Every token id of the call at once (pageable source: returns once staged; stream-ordered).
  LAB_CUDA_CHECK(cudaMemcpyAsync(ttokens_, tokens, size_t(n) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  for (int64_t done = 0; done < n; done += tc_chunk_) {
    const int B = int(std::min<int64_t>(tc_chunk_, n - done));
    const bool last_chunk = done + B == n;
    Mark(-1);
    PrefillChunkTc(B, pos + done, ttokens_ + done, all_logits);
    if (all_logits) {
      for (int r0 = 0; r0 < B; r0 += kTcLogitsRows) {
        const int rows = std::min(kTcLogitsRows, B - r0);
        float* lo_logits = logits_ + size_t(kTcLogitsRows) * vocab;
        TcGemm("lm_head GEMM (hi)", LmGemm(txh_ + size_t(r0) * dim, logits_, rows));
        TcGemm("lm_head GEMM (lo)", LmGemm(txl_ + size_t(r0) * dim, lo_logits, rows));
        const size_t cnt = size_t(rows) * vocab;
        gpu::AddInPlaceKernel<<<unsigned(std::min<size_t>((cnt + 255) / 256, 4096)), 256, 0, stream_>>>(logits_,
                                                                                                   lo_logits, cnt);
        LAB_CUDA_LAUNCH_CHECK("AddInPlaceKernel");
        // Pageable destination: returns after the copy, so logits_ is free for the next rows.
        LAB_CUDA_CHECK(cudaMemcpyAsync(logits + (done + r0) * vocab, logits_, cnt * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
        Mark(kPhLogits);
      }
    } else if (last_chunk) {
      Matvec(kLm, tx_ + size_t(B - 1) * dim, false, -1, ints_, /*step=*/false);  // final RMSNorm fused, fp32 input
      Mark(kPhLogits);
      LAB_CUDA_CHECK(cudaMemcpyAsync(logits, logits_, size_t(vocab) * 4, cudaMemcpyDeviceToHost, stream_));
    }
    if (profile_) {
      LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
      ProfileCollect();
    }
  }
  LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuOptEngine::PrefillChunkTc(int B, int64_t pos, const int* d_tokens, bool all_logits) {
  const ModelConfig& c = cfg_;
  const int dim = int(c.dim);
  gpu::EmbedKernel<<<B, 256, 0, stream_>>>(tx_, nullptr, embed_, d_tokens, dim);
  LAB_CUDA_LAUNCH_CHECK("EmbedKernel");
  AddNorm(nullptr, layers_[0].attn_norm, txh_, nullptr, B);
  Mark(kPhEmbedNorm);
  const int n_units = int((c.n_heads + 2 * c.n_kv_heads) * (c.head_dim / 2));
  const int64_t rope_threads = int64_t(B) * n_units;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const DeviceLayer& L = layers_[l];
    TcGemm("qkv GEMM", QkvGemm(l, B));
    Mark(kPhQkv);
    gpu::RopeQkvHalfKernel<<<unsigned((rope_threads + 255) / 256), 256, 0, stream_>>>(tqkv_, tq16_, QkvOutFor(l), B,
                                                                                     int(pos));
    LAB_CUDA_LAUNCH_CHECK("RopeQkvHalfKernel");
    Mark(kPhRope);
    const prefill::AttentionParams a = AttnArgs(l, B, pos);
    if (attn_unfused_) {
      cuda::Check(prefill::AttentionUnfused(a, unfused_ws_, stream_), "AttentionUnfused", __FILE__, __LINE__);
    } else {
      cuda::Check(prefill::FlashAttention(a, stream_), "FlashAttention", __FILE__, __LINE__);
    }
    Mark(kPhAttn);
    TcGemm("o_proj GEMM", OGemm(l, B));
    Mark(kPhO);
    AddNorm(tdelta_, L.ffn_norm, txh_, nullptr, B);
    Mark(kPhEmbedNorm);
    TcGemm("gate_up GEMM (SwiGLU)", GateUpGemm(l, B));
    Mark(kPhGateUp);
    TcGemm("down GEMM", DownGemm(l, B));
    Mark(kPhDown);
    if (l + 1 < c.n_layers) {
      AddNorm(tdelta_, layers_[l + 1].attn_norm, txh_, nullptr, B);
    } else if (all_logits) {
      AddNorm(tdelta_, final_norm_, txh_, txl_, B);  // final norm, hi + lo halves for the lm_head GEMMs
    } else {
      AddNorm(tdelta_, nullptr, nullptr, nullptr, B);  // residual only: the lm_head matvec normalizes
    }
    Mark(kPhEmbedNorm);
  }
}

// ---- LAB_GPU_PREFILL_PROFILE: device time between consecutive marks, summed per step ----
void GpuOptEngine::ProfileBegin() {
  if (!profile_) return;
  prof_used_ = 0;
  prof_phase_.clear();
  for (double& m : prof_ms_) m = 0;
}

// Records an event; the time since the previous mark is charged to `phase` (-1: a chunk's start).
void GpuOptEngine::Mark(int phase) {
  if (!profile_) return;
  if (prof_used_ == prof_events_.size()) {
    cudaEvent_t e = nullptr;
    LAB_CUDA_CHECK(cudaEventCreate(&e));
    prof_events_.push_back(e);
  }
  LAB_CUDA_CHECK(cudaEventRecord(prof_events_[prof_used_++], stream_));
  prof_phase_.push_back(phase);
}

// After a synchronization: adds up the recorded intervals and frees the events for reuse.
void GpuOptEngine::ProfileCollect() {
  if (!profile_) return;
  for (size_t i = 1; i < prof_used_; ++i) {
    if (prof_phase_[i] < 0) continue;
    float ms = 0.f;
    LAB_CUDA_CHECK(cudaEventElapsedTime(&ms, prof_events_[i - 1], prof_events_[i]));
    prof_ms_[prof_phase_[i]] += ms;
  }
  prof_used_ = 0;
  prof_phase_.clear();
}

void GpuOptEngine::ProfileReport(int64_t n, const char* path) {
  if (!profile_) return;
  double total = 0;
  for (double m : prof_ms_) total += m;
  std::string line;
  for (int i = 0; i < kNumPhases; ++i) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), " %s %.3f", kPhaseNames[i], prof_ms_[i]);
    line += buf;
  }
  std::fprintf(stderr, "gpu_opt prefill profile: %lld tokens, %s path%s, chunk %lld, device ms %.3f:%s\n",
               static_cast<long long>(n), path,
               std::string(path) == "simple" ? "" : (attn_unfused_ ? " (unfused attention)" : " (flash attention)"),
               static_cast<long long>(std::string(path) == "simple" ? kPrefillChunk : tc_chunk_), total, line.c_str());
}

}  // namespace gpu_opt
}  // namespace lab
