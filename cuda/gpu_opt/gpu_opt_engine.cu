// Stage 4 — gpu_opt: single-batch Llama decode at the speed of light of HBM.
//
// What changes from stage 3 (cuda/gpu_naive), and why (README.md beside this file has the numbers):
//   * fp16 weights and KV cache (half the bytes of fp32), fp32 activations and accumulation;
//   * per decode step 5 kernels per layer + 2, every one reading its weights exactly once with
//     16-byte coalesced loads and the elementwise work fused in (kernels_matvec.cuh);
//   * weights re-laid out at load time: [q; k; v] and [gate; up] concatenated so one kernel reads them;
//   * the whole decode step is captured once into a CUDA graph and replayed; the token and position
//     live in device memory (written by one 8-byte copy before each replay), so the graph never changes
//     (one graph per attention layout: short contexts run their own, LAB_GPU_ATTN_SHORT);
//   * programmatic dependent launch lets each kernel start its weight loads (the first batch, into
//     registers) while the previous one drains, and attention load its older K/V rows;
//   * the matvec tile shape is auto-tuned per layer kind at start-up on the real weights
//     (gpu_opt_tune.cu), among register tiles and weight rings (bulk copies into shared memory by one
//     producer thread, kernels_matvec_ring.cuh: the tuner's pick for gate_up, down and lm_head).
// Prefill (gpu_opt_prefill.cu) runs on the tensor cores by default; the class both files share is in
// gpu_opt_engine_impl.cuh.
//
// Environment knobs (for experiments and the kernel lab): gpu_opt_knobs.cu lists and reads them;
// the prefill's are listed in gpu_opt_prefill.cu.
#include "cuda/gpu_opt/gpu_opt_engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "cc/core/env.h"
#include "cc/core/errors.h"
#include "cuda/gpu_opt/gpu_opt_engine_impl.cuh"
#include "cuda/gpu_opt/gpu_opt_launch.cuh"
#include "cuda/gpu_opt/kernels_prefill.cuh"

namespace lab {
namespace gpu_opt {
namespace {

// Decode tile tuning on the whole captured step (GraphTune): only for models whose weights stream long
// enough for tile choices to matter (tiny test models are launch-bound).
constexpr uint64_t kGraphTuneMinBytes = uint64_t(256) << 20;

// LAB_GPU_NORM_FOLD (session 22), once at load: an RMSNorm's weights g folded into the matrix it feeds,
// W[r][c] = fp16(W[r][c] * g[c]) (rounded once more), so that (RMSNorm(x) * g) . W = RMSNorm(x) . W' and the
// decode matvecs need no norm-weight loads after their PDL wait. W is [rows, K] row-major; any grid (a
// grid-stride loop over rows * K elements). The caller sets g to ones afterwards, for the kernels that still
// read it (prefill, the ring tiles).
__global__ void FoldNormKernel(__half* W, int64_t rows, int K, const float* g) {
  const int64_t n = rows * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    W[i] = __float2half_rn(__half2float(W[i]) * g[i % K]);
}

__global__ void FillPatternKernel(float* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = (float(h & 0xffff) / 65535.f - 0.5f) * 2.f;  // uniform in [-1, 1]
  }
}

}  // namespace

void GpuOptEngine::Release() {
  if (stream_) cudaStreamSynchronize(stream_);  // nothing in flight uses what is freed below
  if (unfused_ws_) cudaFree(unfused_ws_);
  unfused_ws_ = nullptr;
  unfused_ws_bytes_ = 0;
  for (cudaEvent_t e : prof_events_) cudaEventDestroy(e);
  prof_events_.clear();
  for (cudaGraphExec_t& g : graph_exec_) {
    if (g) cudaGraphExecDestroy(g);
    g = nullptr;
  }
  for (auto& gens : gen_exec_)
    for (cudaGraphExec_t& g : gens) {
      if (g) cudaGraphExecDestroy(g);
      g = nullptr;
    }
  if (gen_mem_) cudaFree(gen_mem_);
  gen_mem_ = nullptr;
  if (trace_) cudaFree(trace_);
  trace_ = nullptr;
  if (ev_start_) cudaEventDestroy(ev_start_);
  if (ev_stop_) cudaEventDestroy(ev_stop_);
  if (stream_) cudaStreamDestroy(stream_);
  ev_start_ = ev_stop_ = nullptr;
  stream_ = nullptr;
}

void GpuOptEngine::Init(const ModelFile& file) {
  prop_ = cuda::RequireGpu("gpu_opt");
  ReadDecodeEnv();
  ReadPrefillEnv();
  LAB_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  LAB_CUDA_CHECK(cudaEventCreate(&ev_start_));
  LAB_CUDA_CHECK(cudaEventCreate(&ev_stop_));
  const ModelConfig& c = cfg_;
  const int64_t P = kPrefillChunk, T = max_context_;
  const int64_t dim = c.dim, hd = c.head_dim, q_dim = c.q_dim(), kv_dim = c.kv_dim(), H = c.hidden_dim;
  const int64_t n_qkv = q_dim + 2 * kv_dim;

  // ---- plan device memory ----
  auto h16 = [&](int64_t n) { return arena_.Plan(size_t(n) * 2); };
  auto f32 = [&](int64_t n) { return arena_.Plan(size_t(n) * 4); };
  const size_t o_embed = h16(c.vocab_size * dim);
  const size_t o_lm = c.tie_word_embeddings ? o_embed : h16(c.vocab_size * dim);
  const size_t o_fnorm = f32(dim);
  struct LayerOff { size_t an, fn, qkv, o, gu, down, down_sliced; };
  std::vector<LayerOff> lo(c.n_layers);
  if (mlp_fused_) MlpSetup();  // LAB_GPU_MLP=fused: its grid (W_down's slices are cut for it), or a clear refusal
  for (auto& L : lo) {
    L.an = f32(dim);
    L.fn = f32(dim);
    L.qkv = h16(n_qkv * dim);
    L.o = h16(dim * q_dim);
    L.gu = h16(2 * H * dim);
    L.down = h16(dim * H);
  }
  const uint64_t weight_bytes = arena_.total();
  const size_t o_kc = h16(c.n_layers * T * kv_dim), o_vc = h16(c.n_layers * T * kv_dim);
  const uint64_t kv_bytes = arena_.total() - weight_bytes;
  const int64_t slots = std::max<int64_t>(gpu::kAttnMaxSplitsV2 * c.n_kv_heads, P * c.n_kv_heads * kPrefillSplits);
  const size_t o_x = f32(P * dim), o_xb = f32(P * dim), o_qkv = f32(P * n_qkv), o_q = f32(P * q_dim),
               o_att = f32(P * q_dim), o_gu = f32(P * 2 * H), o_h = f32(P * H), o_logits = f32(P * c.vocab_size),
               o_cos = f32(T * hd / 2), o_sin = f32(T * hd / 2), o_pacc = f32(slots * c.group_size() * hd),
               o_pml = f32(2 * slots * c.group_size()), o_cnt = arena_.Plan(P * c.n_kv_heads * gpu::kAttnCluster * sizeof(unsigned)),
               o_ints = arena_.Plan((P + 1) * sizeof(int)), o_scratch = f32(std::max(dim, H)),
               o_x16 = h16(dim), o_att16 = h16(q_dim), o_h16 = h16(H);  // decode's fp16 inputs (LAB_GPU_ACT16)
  // Tensor-core prefill: every buffer sized for one chunk of C tokens (a fixed budget, whatever the
  // prompt length), plus the prompt's token ids ([max_context] ints, uploaded once per call).
  size_t o_tx = 0, o_tdelta = 0, o_txh = 0, o_txl = 0, o_tqkv = 0, o_tq = 0, o_tatt = 0, o_tact = 0, o_ttok = 0;
  uint64_t tc_bytes = 0;
  if (tc_prefill_) {
    const uint64_t before = arena_.total();
    const int64_t C = tc_chunk_ = std::max<int64_t>(1, std::min<int64_t>(tc_chunk_, T));
    o_tx = f32(C * dim);       // residual stream x (fp32)
    o_tdelta = f32(C * dim);   // o_proj / down output, added into x by the next norm kernel
    o_txh = h16(C * dim);      // RMSNorm(x) in fp16: the GEMMs' input
    o_txl = h16(C * dim);      // its low part (final norm, all-logits only)
    o_tqkv = f32(C * n_qkv);   // QKV GEMM output (fp32, before RoPE)
    o_tq = h16(C * q_dim);     // rotated q, FlashAttention's Q
    o_tatt = h16(C * q_dim);   // attention output, o_proj's input
    o_tact = h16(C * H);       // SiLU(gate) * up, down's input
    o_ttok = arena_.Plan(size_t(T) * sizeof(int));
    tc_bytes = arena_.total() - before;
  }
  const uint64_t act_bytes = arena_.total() - weight_bytes - kv_bytes;
  // The fused MLP's second copy of W_down (its column slices; the prefill's GEMMs read the first), planned
  // last: with LAB_GPU_MLP=auto a card that cannot hold it beside the rest runs the split MLP instead.
  const uint64_t slices_bytes = uint64_t(c.n_layers) * dim * H * 2;
  if (mlp_fused_ && mlp_auto_ && !arena_.Fits(slices_bytes + size_t(c.n_layers) * 256)) DropFusedMlp();
  for (auto& L : lo) L.down_sliced = mlp_fused_ ? h16(dim * H) : 0;
  arena_.Allocate("gpu_opt", "fp16 weights " + cuda::GiB(weight_bytes) +
                                 (mlp_fused_ ? " + W_down's column slices for the fused MLP " + cuda::GiB(slices_bytes) +
                                                   " (LAB_GPU_MLP=split keeps one copy)"
                                             : std::string()) +
                                 " + fp16 KV cache " + cuda::GiB(kv_bytes) +
                                 " at max_context " + std::to_string(T) + " + activations " + cuda::GiB(act_bytes) +
                                 (tc_prefill_ ? " (of which tensor-core prefill, chunk " + std::to_string(tc_chunk_) +
                                                    " tokens: " + cuda::GiB(tc_bytes) + ")"
                                              : std::string()));

  // ---- upload weights (fp32 files are narrowed to fp16 on the device) ----
  {
    cuda::Uploader up(stream_);
    auto upload = [&](const std::string& name, size_t off, bool to_f16, size_t elem_offset = 0) {
      const TensorInfo& t = file.Get(name);
      char* dst = arena_.Get<char>(off) + elem_offset * (to_f16 ? 2 : 4);
      up.Copy(dst, to_f16, t.data, t.dtype == DType::kF16, size_t(t.numel()));
    };
    upload("model.embed_tokens.weight", o_embed, true);
    if (!c.tie_word_embeddings) upload("lm_head.weight", o_lm, true);
    upload("model.norm.weight", o_fnorm, false);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerOff& L = lo[l];
      upload(LayerTensor(l, "input_layernorm"), L.an, false);
      upload(LayerTensor(l, "post_attention_layernorm"), L.fn, false);
      upload(LayerTensor(l, "self_attn.q_proj"), L.qkv, true, 0);
      upload(LayerTensor(l, "self_attn.k_proj"), L.qkv, true, size_t(q_dim * dim));
      upload(LayerTensor(l, "self_attn.v_proj"), L.qkv, true, size_t((q_dim + kv_dim) * dim));
      upload(LayerTensor(l, "self_attn.o_proj"), L.o, true);
      upload(LayerTensor(l, "mlp.gate_proj"), L.gu, true, 0);
      upload(LayerTensor(l, "mlp.up_proj"), L.gu, true, size_t(H * dim));
      upload(LayerTensor(l, "mlp.down_proj"), L.down, true);
    }
    up.Finish();
  }
  if (norm_fold_) {  // LAB_GPU_NORM_FOLD: g into the matrix it feeds, then g = 1 (FoldNormKernel)
    const std::vector<float> ones(size_t(dim), 1.f);
    for (const LayerOff& L : lo) {
      FoldNormKernel<<<1024, 256, 0, stream_>>>(arena_.Get<__half>(L.qkv), n_qkv, int(dim), arena_.Get<float>(L.an));
      FoldNormKernel<<<1024, 256, 0, stream_>>>(arena_.Get<__half>(L.gu), 2 * H, int(dim), arena_.Get<float>(L.fn));
      LAB_CUDA_LAUNCH_CHECK("FoldNormKernel");
      for (size_t off : {L.an, L.fn})
        LAB_CUDA_CHECK(cudaMemcpyAsync(arena_.Get<float>(off), ones.data(), ones.size() * 4, cudaMemcpyHostToDevice, stream_));
    }
    LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  if (mlp_fused_) {  // W_down's column slices for RingMlpKernel (SliceDownKernel), once
    for (const LayerOff& L : lo)
      gpu::SliceDownKernel<<<dim3(64, unsigned(mlp_grid_)), 256, 0, stream_>>>(
          arena_.Get<__half>(L.down), arena_.Get<__half>(L.down_sliced), int(dim), int(H));
    LAB_CUDA_LAUNCH_CHECK("SliceDownKernel");
    LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  embed_ = arena_.Get<__half>(o_embed);
  lm_head_ = arena_.Get<__half>(o_lm);
  final_norm_ = arena_.Get<float>(o_fnorm);
  for (const LayerOff& L : lo)
    layers_.push_back({arena_.Get<float>(L.an), arena_.Get<float>(L.fn), arena_.Get<__half>(L.qkv),
                       arena_.Get<__half>(L.o), arena_.Get<__half>(L.gu), arena_.Get<__half>(L.down),
                       mlp_fused_ ? arena_.Get<__half>(L.down_sliced) : nullptr});
  k_cache_ = arena_.Get<__half>(o_kc);
  v_cache_ = arena_.Get<__half>(o_vc);
  x_ = arena_.Get<float>(o_x);
  xb_ = arena_.Get<float>(o_xb);
  qkv_ = arena_.Get<float>(o_qkv);
  q_ = arena_.Get<float>(o_q);
  att_ = arena_.Get<float>(o_att);
  gu_ = arena_.Get<float>(o_gu);
  h_ = arena_.Get<float>(o_h);
  logits_ = arena_.Get<float>(o_logits);
  part_acc_ = arena_.Get<float>(o_pacc);
  part_ml_ = arena_.Get<float2>(o_pml);
  counters_ = arena_.Get<unsigned>(o_cnt);
  ints_ = arena_.Get<int>(o_ints);  // [0] = position, [1..] = tokens
  scratch_ = arena_.Get<float>(o_scratch);
  x16_ = arena_.Get<__half>(o_x16);
  att16_ = arena_.Get<__half>(o_att16);
  h16_ = arena_.Get<__half>(o_h16);
  rope_cos_ = arena_.Get<float>(o_cos);
  rope_sin_ = arena_.Get<float>(o_sin);
  if (tc_prefill_) {
    tx_ = arena_.Get<float>(o_tx);
    tdelta_ = arena_.Get<float>(o_tdelta);
    txh_ = arena_.Get<__half>(o_txh);
    txl_ = arena_.Get<__half>(o_txl);
    tqkv_ = arena_.Get<float>(o_tqkv);
    tq16_ = arena_.Get<__half>(o_tq);
    tatt16_ = arena_.Get<__half>(o_tatt);
    tact16_ = arena_.Get<__half>(o_tact);
    ttokens_ = arena_.Get<int>(o_ttok);
  }
  {
    std::vector<float> cos_t, sin_t;
    RopeTables(c, T, &cos_t, &sin_t);
    LAB_CUDA_CHECK(cudaMemcpy(rope_cos_, cos_t.data(), cos_t.size() * 4, cudaMemcpyHostToDevice));
    LAB_CUDA_CHECK(cudaMemcpy(rope_sin_, sin_t.data(), sin_t.size() * 4, cudaMemcpyHostToDevice));
  }
  // V2: one merge counter per (token, kv head); V3: one per (token, kv head, cluster rank).
  LAB_CUDA_CHECK(cudaMemset(counters_, 0, P * c.n_kv_heads * gpu::kAttnCluster * sizeof(unsigned)));
  LAB_CUDA_CHECK(cudaMemset(ints_, 0, (P + 1) * sizeof(int)));
  FillPatternKernel<<<1024, 256>>>(arena_.Get<float>(o_x), (arena_.Get<char>(o_cos) - arena_.Get<char>(o_x)) / 4, 1234);
  LAB_CUDA_LAUNCH_CHECK("FillPatternKernel");
  LAB_CUDA_CHECK(cudaDeviceSynchronize());

  h_ints_.Reset((P + 1) * sizeof(int));
  {
    // Greedy generation: the argmax key, kGenSteps position slots, the token fed at each position.
    const size_t gen_bytes = 8 + (kGenSteps + size_t(max_context_)) * sizeof(int);
    LAB_CUDA_CHECK(cudaMalloc(&gen_mem_, gen_bytes));
    LAB_CUDA_CHECK(cudaMemset(gen_mem_, 0, gen_bytes));
    best_ = static_cast<unsigned long long*>(gen_mem_);
    gen_pos_ = reinterpret_cast<int*>(best_ + 1);
    tok_log_ = gen_pos_ + kGenSteps;
    h_iota_.Reset((size_t(max_context_) + kGenSteps) * sizeof(int));
    if (trace_on_) {  // LAB_GPU_TRACE: kTraceSlots marks per launch of a step (5 launches a layer, lm_head, spare)
      trace_slots_ = size_t(5 * cfg_.n_layers + 8);
      LAB_CUDA_CHECK(cudaMalloc(&trace_, trace_slots_ * gpu::kTraceSlots * sizeof(unsigned long long)));
    }
    for (int64_t i = 0; i < max_context_ + kGenSteps; ++i) h_iota_.as<int>()[i] = int(i);
    h_gen_.Reset(8 + size_t(max_context_) * sizeof(int));
  }
  h_logits_.Reset(size_t(c.vocab_size) * sizeof(float));
  if (logits_mapped_) {
    // Pinned memory is mapped into the device's address space (unified addressing); the decode
    // step's lm_head writes its logits there, so no copy follows the step.
    void* dev = nullptr;
    if (cudaHostGetDevicePointer(&dev, h_logits_.as<void>(), 0) == cudaSuccess && dev) {
      d_host_logits_ = static_cast<float*>(dev);
    } else {
      cudaGetLastError();
      logits_mapped_ = false;
      if (verbose_) std::fprintf(stderr, "gpu_opt: logits not mappable; copying them after each step\n");
    }
  }

  // Kernels with more than 48 KB of dynamic shared memory must say so.
  const size_t smem_max = gpu::MatvecSmemBytes(int(std::max(dim, std::max(H, q_dim))));
  if (smem_max > size_t(prop_.sharedMemPerBlockOptin))
    throw ModelFormatError("gpu_opt: input length " + std::to_string(smem_max / 4) +
                           " needs more shared memory than the card's " +
                           std::to_string(prop_.sharedMemPerBlockOptin) + " bytes per block");
  // (XB 2 (3) kernels need 1.5x (2x) their input's fp32 staging; FnOf leaves them out where that does not fit.
  // The kernels with a norm, whose input is dim long, keep its chunks' sums of squares too.)
  const size_t smem_fn = std::min(std::max(smem_max, gpu::MatvecSmemBytes(int(dim), 3, true)),
                                  size_t(prop_.sharedMemPerBlockOptin));
  for (const MatvecConfig& mc : Configs())
    for (MatvecFn f : mc.fn) {
      if (!f) continue;  // (staged tiles have no XB kernels)
      int need = int(smem_fn);
      if (mc.staged || mc.ring_stages) {  // staged: x plus as many rows as the budget allows (StageChunks)
        cudaFuncAttributes fa;
        LAB_CUDA_CHECK(cudaFuncGetAttributes(&fa, f));
        need = int(prop_.sharedMemPerBlockOptin - fa.sharedSizeBytes);
      }
      LAB_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, need));
    }

  AutoTune();
  SetupStaging();
  // The spread steps' pinned tiles now, so that one that does not fit is refused before any tuning and the pins
  // hold where GraphTune does not run; GraphTune pins them again onto its own choice.
  PinSpreadTiles();
  if (graph_tune_ && use_graph_ && !std::getenv("LAB_GPU_MATVEC_CONFIG") && weight_bytes >= kGraphTuneMinBytes)
    GraphTune();
  if (tc_prefill_) PlanTcPrefill();

  stats_.weight_copy_bytes = mlp_fused_ ? slices_bytes : 0;  // W_down's column slices
  stats_.weight_bytes = weight_bytes;
  stats_.kv_cache_bytes = kv_bytes;
  stats_.activation_bytes = act_bytes;
}

// ---- decode ----
void GpuOptEngine::DecodeStep(int32_t token, int64_t pos, float* logits) {
  int* hi = h_ints_.as<int>();
  hi[0] = int(pos);
  hi[1] = token;
  LAB_CUDA_CHECK(cudaMemcpyAsync(ints_, hi, 2 * sizeof(int), cudaMemcpyHostToDevice, stream_));
  const int layout = AttnLayoutFor(pos + 1);
  if (use_graph_ && !graph_exec_[layout]) CaptureGraphs();
  if (trace_)
    LAB_CUDA_CHECK(cudaMemsetAsync(trace_, 0xff, trace_slots_ * gpu::kTraceSlots * sizeof(unsigned long long), stream_));
  LAB_CUDA_CHECK(cudaEventRecord(ev_start_, stream_));
  if (graph_exec_[layout]) {
    LAB_CUDA_CHECK(cudaGraphLaunch(graph_exec_[layout], stream_));
  } else {
    attn_sel_ = layout;
    EnqueueDecode(use_pdl_);
  }
  LAB_CUDA_CHECK(cudaEventRecord(ev_stop_, stream_));
  if (!logits_mapped_)  // else lm_head wrote them to h_logits_ (mapped) already
    LAB_CUDA_CHECK(cudaMemcpyAsync(h_logits_.as<float>(), logits_, size_t(cfg_.vocab_size) * 4,
                                   cudaMemcpyDeviceToHost, stream_));
  LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  float ms = 0.f;
  LAB_CUDA_CHECK(cudaEventElapsedTime(&ms, ev_start_, ev_stop_));
  last_decode_device_ms_ = ms;
  std::memcpy(logits, h_logits_.as<float>(), size_t(cfg_.vocab_size) * 4);
  if (trace_) CollectTrace();
}

// Greedy generation with the whole loop on the device: graphs of kGenSteps (or 1) decode steps in
// which each step's token is the previous step's argmax (lm_head's argmax epilogue -> best_ ->
// EmbedArgmaxKernel) and each step reads its position from its own slot gen_pos_[k], filled by one
// small copy from a constant pinned table (h_iota_) before each graph. The host only enqueues: no
// synchronization until the last step, so consecutive steps run back to back on the GPU. A graph's
// attention layout is the one for its last step's keys (all its steps then fit that layout's bound).
// Every layout's graphs are captured at the first call, as the decode graphs are (CaptureGraphs).
void GpuOptEngine::GenerateImpl(int32_t token, int64_t n, int64_t pos, int32_t* out) {
  if (use_graph_ && !graph_exec_[0]) CaptureGraphs();  // settles use_pdl_
  // The generation graphs of `layout`, captured on first use; false: no graphs (the host loop).
  auto ready = [&](int layout) {
    cudaGraphExec_t* g = gen_exec_[layout];
    if (use_graph_ && !g[0]) {
      cudaError_t err = cudaSuccess;
      attn_sel_ = layout;
      g[0] = BuildGraph(use_pdl_, &err, 1);
      if (g[0]) g[1] = BuildGraph(use_pdl_, &err, kGenSteps);
      if (!g[1] && verbose_)
        std::fprintf(stderr, "gpu_opt: generation graph capture failed (%s): host loop\n", cudaGetErrorString(err));
    }
    return g[1] != nullptr;
  };
  bool graphs = true;
  for (int layout = 0; layout < NumAttnLayouts(); ++layout) graphs = graphs && ready(layout);
  if (!graphs) {
    Engine::GenerateImpl(token, n, pos, out);
    return;
  }
  auto* hb = h_gen_.as<unsigned long long>();
  hb[0] = gpu::ArgmaxKeyOfRow(token);
  LAB_CUDA_CHECK(cudaMemcpyAsync(best_, hb, 8, cudaMemcpyHostToDevice, stream_));
  for (int64_t done = 0; done < n;) {
    const int k = n - done >= kGenSteps ? kGenSteps : 1;
    LAB_CUDA_CHECK(cudaMemcpyAsync(gen_pos_, h_iota_.as<int>() + pos + done, k * sizeof(int),
                                   cudaMemcpyHostToDevice, stream_));
    LAB_CUDA_CHECK(cudaGraphLaunch(gen_exec_[AttnLayoutFor(pos + done + k)][k == kGenSteps], stream_));
    done += k;
  }
  int* const hlog = reinterpret_cast<int*>(hb + 1);
  if (n > 1)
    LAB_CUDA_CHECK(cudaMemcpyAsync(hlog, tok_log_ + pos + 1, (n - 1) * sizeof(int), cudaMemcpyDeviceToHost, stream_));
  LAB_CUDA_CHECK(cudaMemcpyAsync(hb, best_, 8, cudaMemcpyDeviceToHost, stream_));
  LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::copy(hlog, hlog + (n - 1), out);
  const long long last = gpu::ArgmaxRow(hb[0]);
  if (last < 0 || last >= cfg_.vocab_size) throw DeviceError("gpu_opt: generation produced no argmax");
  out[n - 1] = int32_t(last);
}

// One decode step: embed, 5 kernels per layer, final norm + lm_head. Reads token and position from
// ints_ (device memory), so the same sequence serves every step. gen_step >= 0: step gen_step of a
// generation graph (GenerateImpl): token from the previous argmax, position from gen_pos_[gen_step],
// lm_head's argmax epilogue on, logits to device memory.
void GpuOptEngine::EnqueueDecode(bool pdl, int gen_step) {
  const ModelConfig& c = cfg_;
  const bool gen = gen_step >= 0;
  const int* pos = gen ? gen_pos_ + gen_step : ints_;
  trace_capture_ = trace_ && !gen;
  if (trace_capture_) trace_kind_.clear();
  __half* const x16 = act16_ == kAct16All ? x16_ : nullptr;  // the first qkv's fp16 input (LAB_GPU_ACT16)
  if (gen)
    Launch(gpu::EmbedArgmaxKernel, dim3(1), dim3(256), 0, stream_, pdl && gen_step > 0, "EmbedArgmaxKernel", x_, x16,
           embed_, best_, tok_log_, pos, int(c.vocab_size), int(c.dim));
  else
    Launch(gpu::EmbedKernel, dim3(1), dim3(256), 0, stream_, false, "EmbedKernel", x_, x16, embed_, ints_ + 1, int(c.dim));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Matvec(kQkv, x_, pdl, l, pos);
    Attention(1, attn_[attn_sel_].splits, l, pdl, pos);
    Matvec(kO, att_, pdl, l, pos);
    if (mlp_fused_) {
      Mlp(l, pdl);  // LAB_GPU_MLP=fused: gate/up, SiLU and down as one kernel (v14)
    } else {
      Matvec(kGateUp, x_, pdl, l, pos);
      Matvec(kDown, h_, pdl, l, pos);
    }
  }
  MatvecParams lm = Params(kLm, x_, -1, pos);
  if (gen) {
    lm.argmax = best_;
  } else if (logits_mapped_) {
    lm.out = d_host_logits_;
    lm.out_host = 1;
  }
  lm.trace = TraceSlot(kLm);
  Count(kLm, LaunchMatvec(Configs()[StepTiles()[kLm]], FnOf(kLm, lm), lm, pdl));
  trace_capture_ = false;
}

// Captures one decode step (EnqueueDecode with the current tile choices), or gen_steps > 0 steps of
// greedy generation, into an executable graph; nullptr, with the error cleared and returned in *why,
// when capture or instantiation fails.
cudaGraphExec_t GpuOptEngine::BuildGraph(bool pdl, cudaError_t* why, int gen_steps) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
  if (err == cudaSuccess) {
    try {
      if (gen_steps == 0) EnqueueDecode(pdl);
      for (int k = 0; k < gen_steps; ++k) EnqueueDecode(pdl, k);
    } catch (const DeviceError&) {
      err = cudaErrorUnknown;
    }
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (err == cudaSuccess) err = end;
  }
  if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear
    exec = nullptr;
  }
  if (why) *why = err;
  return exec;
}

// The decode graph of every attention layout in use, all at the first step: a step that later crosses
// the short layout's bound then replays a graph instead of capturing and instantiating one (~10 ms) in
// the middle of a timed stretch. (Captured on first use, that cost landed in the bench's first timed
// block at 2048, the first past the bound: 226 against 234 tok/s in the next blocks,
// bench_results/h200-20261128-attn-short-stage4/bench.json.)
void GpuOptEngine::CaptureGraphs() {
  for (int layout = 0; layout < NumAttnLayouts() && use_graph_; ++layout) {
    if (graph_exec_[layout]) continue;
    attn_sel_ = layout;
    bool ok = false;
    for (int attempt = 0; attempt < 2 && !ok; ++attempt) {
      const bool pdl = use_pdl_ && attempt == 0;
      cudaError_t err = cudaSuccess;
      graph_exec_[layout] = BuildGraph(pdl, &err);
      ok = graph_exec_[layout] != nullptr;
      if (ok) use_pdl_ = pdl;
      if (verbose_)
        std::fprintf(stderr, "gpu_opt: decode step, attention layout %d, %s a CUDA graph (PDL %s)%s%s\n", layout,
                     ok ? "captured into" : "not captured into", pdl ? "on" : "off", ok ? "" : ": ",
                     ok ? "" : cudaGetErrorString(err));
    }
    if (!ok) use_graph_ = false;  // fall back to direct launches
  }
}

// Decode (B = 1, the graph) uses the layout attn_[attn_sel_] (V2 by default); the simple prefill
// attn_prefill_fn_ (V1).
void GpuOptEngine::Attention(int B, int splits, int64_t layer, bool pdl, const int* pos, bool prefill) {
  const ModelConfig& c = cfg_;
  gpu::AttnParams a;
  a.q = q_;
  a.k_cache = LayerK(layer);
  a.v_cache = LayerV(layer);
  a.out = att_;
  a.out16 = act16_ == kAct16All && !prefill ? att16_ : nullptr;
  a.part_acc = part_acc_;
  a.part_ml = part_ml_;
  a.counters = counters_;
  a.pos = pos;
  a.n_heads = int(c.n_heads);
  a.n_kv = int(c.n_kv_heads);
  a.skip_idle = attn_skip_idle_;
  a.sync_acqrel = attn_sync_acqrel_;
  const AttnLayout& lay = attn_[attn_sel_];
  a.min_chunk = prefill ? 32 : lay.min_chunk;
  a.trace = prefill ? nullptr : TraceSlot(kNumKinds);
  LaunchEx(prefill ? 0 : attn_cluster_, prefill ? attn_prefill_fn_ : lay.fn,
           dim3(unsigned(c.n_kv_heads), unsigned(splits), unsigned(B)),
           dim3((prefill ? gpu::kAttnWarps : lay.warps) * 32), prefill ? 0 : lay.smem, stream_, pdl, "AttentionKernel", a);
}

}  // namespace gpu_opt

std::unique_ptr<Engine> MakeGpuOptEngine(const std::string& model_dir, int64_t max_context) {
  OpenedModel m = OpenModel(model_dir);
  const ModelConfig& cfg = m.cfg;
  const ModelFile& file = *m.file;
  auto bad = [](const std::string& m) { throw ModelFormatError("gpu_opt: " + m); };
  if (cfg.head_dim != 64 && cfg.head_dim != 128)
    bad("head_dim " + std::to_string(cfg.head_dim) + " is not supported (the attention kernel is built for 64 and 128)");
  if (cfg.n_heads % cfg.n_kv_heads != 0 || cfg.group_size() > 8)
    bad("GQA group size " + std::to_string(cfg.n_heads) + "/" + std::to_string(cfg.n_kv_heads) +
        " is not supported (1..8 query heads per kv head)");
  if (cfg.dim % 8 || cfg.hidden_dim % 8 || cfg.q_dim() % 8)
    bad("dim, hidden_dim and n_heads*head_dim must be multiples of 8 (16-byte weight loads)");
  return std::make_unique<gpu_opt::GpuOptEngine>(cfg, file, max_context);
}

double GpuOptLastDecodeDeviceMs(const Engine& e) {
  const auto* g = dynamic_cast<const gpu_opt::GpuOptEngine*>(&e);
  return g ? g->last_decode_device_ms() : -1.0;
}

}  // namespace lab
