// Stage 4 — gpu_opt's decode matvecs: which weights, inputs and outputs each kind of layer reads and writes
// (Params, QkvOutFor), which epilogue it runs (EpiOf), and the launch of its tile (LaunchMatvec: a register
// tile of DecodeMatvecKernel, or a weight ring of RingMatvecKernel), counted per kind (Count). Which tile a
// kind runs is gpu_opt_tune.cu's choice; the class is in gpu_opt_engine_impl.cuh.
#include <algorithm>
#include <cmath>
#include <string>

#include "cc/core/errors.h"
#include "cuda/gpu_opt/gpu_opt_engine_impl.cuh"
#include "cuda/gpu_opt/gpu_opt_launch.cuh"

namespace lab {
namespace gpu_opt {

MatvecParams GpuOptEngine::Params(Kind kind, const float* x, int64_t layer, const int* pos, bool step) const {
  const ModelConfig& c = cfg_;
  MatvecParams p = {};
  p.eps = float(c.rms_norm_eps);
  p.x = x;
  p.pos = pos;
  p.l2_prefetch = (l2_prefetch_all_ || (kind == kO && l2_prefetch_o_)) ? 1 : 0;
  p.ring_pre = ring_pre_;  // ring tiles only
  p.norm_early = norm_early_;  // kernels with a norm only (ring tiles: >= 1; register tiles: 2)
  p.norm_unit = norm_fold_ && (kind == kQkv || kind == kGateUp);  // their norm weights are ones, folded into W
  // LAB_GPU_ACT16: which inputs are fp16 (h: down's; all: every matvec's, from the embedding, the residual
  // epilogues, attention and gate_up); x stays the fp32 residual stream either way.
  const bool all16 = step && act16_ == kAct16All;
  const bool early = early_ == kEarlyAll || (early_ == kEarlyNotO && kind != kO) || (early_ == kEarlyQkv && kind == kQkv);
  p.second = early ? gpu::kSecondBeforeWait : second_ == kSecondAtWait ? gpu::kSecondAfterWait : gpu::kSecondAfterX;
  const DeviceLayer* L = layer >= 0 ? &layers_[layer] : nullptr;
  switch (kind) {
    case kQkv:
      p.W = L->wqkv;
      p.M = int(c.q_dim() + 2 * c.kv_dim());
      p.K = int(c.dim);
      p.n_units = p.M / 2;
      p.norm_w = L->attn_norm;
      p.qkv = QkvOutFor(layer);
      if (all16 && !mlp_fused_) p.x16 = x16_;  // (the fused MLP leaves the residual's fp16 copy behind it)
      break;
    case kO:
      p.W = L->wo;
      p.M = int(c.dim);
      p.K = int(c.q_dim());
      p.n_units = (p.M + 1) / 2;
      p.out = x_;
      if (all16) {
        p.x16 = att16_;
        p.out16 = x16_;
      }
      break;
    case kGateUp:
      p.W = L->wgu;
      p.M = int(2 * c.hidden_dim);
      p.K = int(c.dim);
      p.n_units = int(c.hidden_dim);
      p.H = int(c.hidden_dim);
      p.norm_w = L->ffn_norm;
      p.out = h_;
      if (step && act16_ != kAct16Off) p.out16 = h16_;
      if (all16) p.x16 = x16_;
      break;
    case kDown:
      p.W = L->wdown;
      p.M = int(c.dim);
      p.K = int(c.hidden_dim);
      p.n_units = (p.M + 1) / 2;
      p.out = x_;
      if (step && act16_ != kAct16Off) p.x16 = h16_;
      if (all16) p.out16 = x16_;
      break;
    case kLm:
      p.W = lm_head_;
      p.M = int(c.vocab_size);
      p.K = int(c.dim);
      p.n_units = (p.M + 1) / 2;
      p.norm_w = final_norm_;
      p.out = logits_;
      if (all16 && !mlp_fused_) p.x16 = x16_;
      break;
    default:
      break;
  }
  return p;
}

int GpuOptEngine::EpiOf(Kind k) {
  switch (k) {
    case kQkv: return gpu::kEpiQkv;
    case kGateUp: return gpu::kEpiGateUp;
    case kO:
    case kDown: return gpu::kEpiResid;
    default: return gpu::kEpiStore;
  }
}

GpuOptEngine::MatvecPath GpuOptEngine::LaunchMatvec(const MatvecConfig& mc, int epi, const MatvecParams& p, bool pdl) {
  if (!mc.fn[epi]) epi = EpiOfFn(epi);  // staged tiles have no XB kernels, ring tiles only the residual one
  if (mc.ring_stages) {  // one block per SM (at most one per unit), CW consumer warps and the producer
    // (Every kind's ring tile fits: the tuners skip those that do not, CheckTilesFit refuses pinned ones.)
    Launch(mc.fn[epi], dim3(unsigned(std::min(prop_.multiProcessorCount, p.n_units))), dim3((mc.warps + 1) * 32),
           RingSmem(mc, p), stream_, pdl, "RingMatvecKernel", p);
    return {epi, p.second};
  }
  const int per_block = mc.warps * mc.upw;
  unsigned blocks = unsigned((p.n_units + per_block - 1) / per_block);
  size_t smem = gpu::MatvecSmemBytes(p.K, XbOfFn(epi), p.norm_w != nullptr);
  MatvecParams q = p;
  // LAB_GPU_SECOND=xb: x comes by the copy engine, not by the threads' loads, so the second weight batch can
  // go out right after the wait without delaying x.
  if (epi >= kFnXB && second_ == kSecondAtWaitXB && q.second == gpu::kSecondAfterX) q.second = gpu::kSecondAfterWait;
  if (mc.staged) {
    q.stage = StageChunks(mc, p.K);
    smem += gpu::MatvecStageBytes(mc.warps, mc.upw, q.stage);
  }
  if (mc.persist) {  // as many blocks as fit on the SMs alone (or LAB_GPU_PERSIST_GRID), at most the one-task grid
    int grid = persist_grid_;
    if (grid <= 0) {  // blocks per SM, asked once per kernel and shared-memory size (not on every launch)
      int& fit = persist_fit_[{mc.fn[epi], smem}];
      if (fit == 0) {
        LAB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, mc.fn[epi], mc.warps * 32, smem));
        fit = std::max(1, fit);
      }
      grid = fit * prop_.multiProcessorCount;
    }
    blocks = std::min<unsigned>(blocks, unsigned(grid));
  }
  Launch(mc.fn[epi], dim3(blocks), dim3(mc.warps * 32), smem, stream_, pdl, "DecodeMatvecKernel", q);
  return {epi, q.second};
}

void GpuOptEngine::Count(Kind k, MatvecPath path) {
  ++launches_[k][0];
  launches_[k][1] += path.fn >= kFnXB;
  launches_[k][2] += path.second == gpu::kSecondAfterWait;
}

void GpuOptEngine::Matvec(Kind kind, const float* x, bool pdl, int64_t layer, const int* pos, bool step) {
  MatvecParams p = Params(kind, x, layer, pos, step);
  p.trace = TraceSlot(kind);
  const MatvecPath path = LaunchMatvec(Configs()[(step ? StepTiles() : config_)[kind]], FnOf(kind, p, step), p, pdl);
  if (step) Count(kind, path);  // (the prefill's lm_head is not a decode step's)
}

// One block per SM (at most H/8); W_down's column slices are cut for this grid at load. The shared-memory
// attribute is set here, in the file that launches the kernel: each file compiled without relocatable device
// code registers its own copy of a kernel, and the attribute is per copy (cuda/kernels/README.md, "v10").
std::string GpuOptEngine::MlpUnfit() {
  const int K = int(cfg_.dim), H = int(cfg_.hidden_dim);
  mlp_grid_ = gpu::MlpGrid(prop_.multiProcessorCount, H);
  std::string unfit = mlp_grid_ > 0 ? gpu::MlpUnfit(K, H, mlp_grid_, 256) : "hidden_dim < 8";
  if (unfit.empty() && MlpSmem() + kRingStaticSmem > size_t(prop_.sharedMemPerBlockOptin))
    unfit = "its ring and x need more shared memory than a block may have";
  return unfit;
}

size_t GpuOptEngine::MlpSmem() const {
  gpu::MlpParams mp = {};
  mp.K = int(cfg_.dim);
  mp.nu_lo = mlp_grid_ > 0 ? gpu::MlpNarrow(int(cfg_.hidden_dim), mlp_grid_) : 0;
  return gpu::MlpSmemBytes(mp, 16, 256);
}

void GpuOptEngine::MlpSetup() {
  if (const std::string unfit = MlpUnfit(); !unfit.empty()) throw InputError("LAB_GPU_MLP=fused: " + unfit);
  LAB_CUDA_CHECK(cudaFuncSetAttribute(gpu::RingMlpKernel<8, 16, 256, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(MlpSmem())));
}

void GpuOptEngine::DropFusedMlp() {
  mlp_fused_ = false;
  for (int k : {int(kGateUp), int(kDown)})
    if (mlp_pins_ >> k & 1) pinned_[k] = -1;
  mlp_pins_ = 0;
}

void GpuOptEngine::Mlp(int64_t layer, bool pdl) {
  gpu::MlpParams p = {};
  p.Wgu = layers_[layer].wgu;
  p.Wdb = layers_[layer].wdown_sliced;
  p.x16 = x16_;  // the residual's fp16 copy (o_proj's epilogue wrote it); the sums go into the fp32 residual
  p.K = int(cfg_.dim);
  p.H = int(cfg_.hidden_dim);
  p.rms = 1;  // the norm's weights are folded into Wgu (LAB_GPU_NORM_FOLD)
  p.eps = float(cfg_.rms_norm_eps);
  p.out = x_;
  p.nu_lo = gpu::MlpNarrow(p.H, mlp_grid_);
  p.trace = TraceSlot(kNumKinds + 1);  // (step_trace.py's "mlp")
  const CUtensorMap none = {};  // (the sliced layout reads W_down by 1-D copies: no maps)
  Launch(gpu::RingMlpKernel<8, 16, 256, true>, dim3(unsigned(mlp_grid_)), dim3(9 * 32), gpu::MlpSmemBytes(p, 16, 256),
         stream_, pdl, "RingMlpKernel", none, none, p);
}

gpu::QkvOut GpuOptEngine::QkvOutFor(int64_t layer) const {
  const ModelConfig& c = cfg_;
  gpu::QkvOut o;
  o.q = q_;
  o.k_cache = LayerK(layer);
  o.v_cache = LayerV(layer);
  o.rope_cos = rope_cos_;
  o.rope_sin = rope_sin_;
  o.hd = int(c.head_dim);
  o.n_heads = int(c.n_heads);
  o.n_kv = int(c.n_kv_heads);
  o.q_scale = float(1.4426950408889634 / std::sqrt(double(c.head_dim)));
  return o;
}

}  // namespace gpu_opt
}  // namespace lab
