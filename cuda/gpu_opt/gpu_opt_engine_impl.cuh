// The gpu_opt engine class, shared by its translation units (not a public header: the interface is
// MakeGpuOptEngine in gpu_opt_engine.h):
//   gpu_opt_engine.cu   creation (device memory plan, weight upload, knobs), the decode step and its
//                       CUDA graphs, greedy generation on the device, attention's launch — the lesson;
//   gpu_opt_matvec.cu   the decode matvecs: each kind's weights, inputs and epilogue, and its tile's launch;
//   gpu_opt_prefill.cu  prefill: the tensor-core path (default), the simple one, and their profiling;
//   gpu_opt_tune.cu     the matvec tiles (Configs) and their timing at creation (AutoTune, GraphTune);
//   gpu_opt_knobs.cu    the environment knobs; gpu_opt_trace.cu the step trace (LAB_GPU_TRACE).
// Members are grouped by the file that owns them; a member set in one file and read in the other says so.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cc/core/config.h"
#include "cc/core/engine.h"
#include "cc/core/model_file.h"
#include "cuda/common/cuda_check.h"
#include "cuda/gpu_opt/kernels.cuh"
#include "cuda/prefill/prefill.h"

namespace lab {
namespace gpu_opt {

using gpu::MatvecParams;

constexpr int kPrefillChunk = 256;         // simple prefill: prompt tokens per batched pass (and logits_ rows)
constexpr int kPrefillSplits = 8;          // simple prefill: attention key splits per (token, kv head)
constexpr int64_t kTcChunkDefault = 2048;  // tensor-core prefill: tokens per chunk (LAB_GPU_PREFILL_CHUNK)
// Greedy generation (GenerateImpl): decode steps per captured graph. Within a graph the steps follow
// each other with programmatic dependent launch like the kernels of one step; the graph boundary (one
// per kGenSteps tokens) costs a few microseconds.
constexpr int kGenSteps = 8;

// Steps of a prefill, for LAB_GPU_PREFILL_PROFILE.
enum Phase { kPhEmbedNorm = 0, kPhQkv, kPhRope, kPhAttn, kPhO, kPhGateUp, kPhDown, kPhLogits, kNumPhases };

// An environment flag: unset or empty -> dflt; "0", "n...", "f..." -> false; anything else -> true.
inline bool EnvFlag(const char* name, bool dflt) {
  const char* s = std::getenv(name);
  if (!s || !*s) return dflt;
  return !(s[0] == '0' || s[0] == 'n' || s[0] == 'N' || s[0] == 'f' || s[0] == 'F');
}

// A matvec tile: (warps per block, units of 2 rows per warp, 16-byte loads per row per batch), one
// kernel instantiation per epilogue. The list is Configs() in gpu_opt_tune.cu. A staged tile's first
// batch goes to shared memory (DecodeMatvecKernel's STAGE; the auto-tuner leaves them out: their point
// is the overlap with the kernel before them, which a matvec timed alone does not have).
using MatvecFn = void (*)(const MatvecParams);
// MatvecConfig::fn's slots: the four epilogues (gpu::Epi), then each of them with x by one bulk copy at
// kFnXB + epilogue (DecodeMatvecKernel's XB: 1 for the residual one, 2 for those with a norm), and qkv with
// its fp32 x by the copy at kFnX32 (XB 3: LAB_GPU_MLP=fused leaves no fp16 residual copy).
constexpr int kFnXB = 4, kFnX32 = 8;
constexpr int XbOfFn(int fn) { return fn < kFnXB ? 0 : fn == kFnX32 ? 3 : fn == kFnXB + gpu::kEpiResid ? 1 : 2; }
constexpr int EpiOfFn(int fn) { return fn == kFnX32 ? gpu::kEpiQkv : fn % kFnXB; }  // the slot's epilogue
struct MatvecConfig {
  const char* name;
  int warps, upw;
  MatvecFn fn[9];  // by slot (above); a staged tile has no XB kernels, a ring tile only XB 1 (nullptr)
  bool staged;
  bool persist;    // a grid of a few blocks per SM looping over the warps' tasks (".b", balanced)
  // A weight-ring tile (v10, RingMatvecKernel; "ring." names): its ring's stages and chunks per row piece;
  // `warps` are its consumer warps (one more produces), one block per SM. 0: a DecodeMatvecKernel tile.
  int ring_stages = 0, ring_sc = 0;
};
constexpr size_t kRingStaticSmem = 1024;  // room left for a ring kernel's static shared memory (its mbarriers)
const std::vector<MatvecConfig>& Configs();

using AttnFn = void (*)(const gpu::AttnParams);

struct DeviceLayer {
  float *attn_norm, *ffn_norm;
  __half *wqkv, *wo, *wgu, *wdown;
  __half* wdown_sliced;  // LAB_GPU_MLP=fused: W_down in RingMlpKernel's column slices (a second copy), else nullptr
};

enum Kind { kQkv = 0, kO, kGateUp, kDown, kLm, kNumKinds };
inline constexpr const char* kKindNames[kNumKinds] = {"qkv", "o_proj", "gate_up", "down", "lm_head"};

class GpuOptEngine : public Engine {
 public:
  GpuOptEngine(const ModelConfig& cfg, const ModelFile& file, int64_t max_context) : Engine(cfg, max_context) {
    try {
      Init(file);
    } catch (...) {
      Release();  // no destructor runs for a half-built object
      throw;
    }
  }
  ~GpuOptEngine() override { Release(); }

  std::string name() const override { return "gpu_opt"; }
  // The matvec tile each kind runs (the tuners' picks move decode speed by a few percent, so every bench
  // row names them), and LAB_GPU_EARLY where it is not the default. gpu_opt_tune.cu.
  std::string variant() const override;
  double last_decode_device_ms() const { return last_decode_device_ms_; }
  // LAB_GPU_TRACE=1: where decode() steps' time went inside the graph, per kind of launch (CollectTrace).
  std::vector<std::pair<std::string, double>> PhaseSeconds() const override;
  // Matvec launches of the decode steps per kind, those on the bulk-copy kernel (LaunchMatvec's pick), and
  // those whose second batch went out right after the wait.
  std::vector<std::pair<std::string, int64_t>> LaunchCounts() const override;

 protected:
  // n == 1 without all logits: DecodeStep; otherwise the prefill (gpu_opt_prefill.cu).
  void Forward(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits) override;
  void GenerateImpl(int32_t token, int64_t n, int64_t pos, int32_t* out) override;

 private:
  // ---- gpu_opt_engine.cu: creation, decode (and gpu_opt_matvec.cu: the matvecs) ----
  void Release();
  void Init(const ModelFile& file);
  void ReadDecodeEnv();  // called by Init
  void ReadTileEnv();    // gpu_opt_tune.cu; called by ReadDecodeEnv
  int WaveSplits(AttnFn fn, int warps, size_t smem = 0) const;  // gpu_opt_knobs.cu
  void DecodeStep(int32_t token, int64_t pos, float* logits);
  void EnqueueDecode(bool pdl, int gen_step = -1);
  cudaGraphExec_t BuildGraph(bool pdl, cudaError_t* why, int gen_steps = 0);
  void CaptureGraphs();  // graph_exec_[layout] of every layout in use
  void GraphTune();  // gpu_opt_tune.cu
  // GraphTune's search and playoff at step position `pos`, over `tiles` (config_ or spread_config_) with the
  // kinds `pins` names fixed; the step it times launches StepTiles(), which must be `tiles` at that position.
  void TuneTiles(int pos, std::array<int, kNumKinds>* tiles, const std::array<int, kNumKinds>& pins);
  void PinSpreadTiles();  // spread_config_ = config_ with LAB_GPU_TILES_SPREAD's kinds; spread_tiles_ if any
  void AutoTune();   // gpu_opt_tune.cu
  // `pos`: the device int the kernels read the token's position from (ints_, or a generation slot).
  // `step`: a decode step's launch, whose inputs with LAB_GPU_ACT16 are the step's fp16 copies (x16_,
  // att16_, h16_); false for the prefill's last-row lm_head, which reads the fp32 x it is given.
  MatvecParams Params(Kind kind, const float* x, int64_t layer, const int* pos, bool step = true) const;
  // LAB_GPU_MLP=fused: the layer's gate/up, SiLU and down as one RingMlpKernel launch, and its setup at
  // creation (gpu_opt_matvec.cu): why it cannot run here ("" if it can; sets mlp_grid_), its shared memory.
  void Mlp(int64_t layer, bool pdl);
  void MlpSetup();
  void DropFusedMlp();  // auto's fallback to split (gate_up's and down's tiles back to the tuners)
  std::string MlpUnfit();
  size_t MlpSmem() const;
  static int EpiOf(Kind k);
  int FnOf(Kind k, const MatvecParams& p, bool step = true) const;  // EpiOf, or an XB slot where LAB_GPU_X_BULK applies
  // Launches mc's kernel for slot epi (an epilogue, or kFnXB + one); returns the path it took: the slot
  // launched and where its second batch went (gpu::SecondBatch).
  struct MatvecPath {
    int fn, second;
  };
  MatvecPath LaunchMatvec(const MatvecConfig& mc, int epi, const MatvecParams& p, bool pdl);
  // Whether mc can run `kind` on this model and card: a ring tile's shared memory grows with the input
  // length (x staged whole beside the ring); the tuners skip a tile that does not fit. gpu_opt_tune.cu.
  bool TileFits(const MatvecConfig& mc, Kind kind) const;
  // Every kind's chosen tile (config_, and spread_config_ where it is in use) fits, else InputError naming the
  // tile and kind.
  void CheckTilesFit() const;
  size_t RingSmem(const MatvecConfig& mc, const MatvecParams& p) const;
  void Count(Kind k, MatvecPath path);  // launches_
  // Staged tiles: the shared-memory budget (ReadStaging, after AutoTune) and the chunks per row it holds.
  void SetupStaging();
  int StageChunks(const MatvecConfig& mc, int K) const;
  // The next launch's TraceMarks slots while EnqueueDecode enqueues a traced step (kind: a Kind, kNumKinds
  // for attention, kNumKinds + 1 for the fused MLP), else nullptr; CollectTrace adds a finished step's slots to trace_sum_.
  unsigned long long* TraceSlot(int kind);
  void CollectTrace();
  void Matvec(Kind kind, const float* x, bool pdl, int64_t layer, const int* pos, bool step = true);
  void Attention(int B, int splits, int64_t layer, bool pdl, const int* pos, bool prefill = false);
  // Layer l's K / V cache, [max_context, kv_dim] fp16 rows.
  __half* LayerK(int64_t l) const { return k_cache_ + size_t(l) * max_context_ * cfg_.kv_dim(); }
  __half* LayerV(int64_t l) const { return v_cache_ + size_t(l) * max_context_ * cfg_.kv_dim(); }
  gpu::QkvOut QkvOutFor(int64_t layer) const;

  // ---- gpu_opt_prefill.cu: prefill ----
  void ReadPrefillEnv();  // called by Init
  void PlanTcPrefill();   // called by Init after the upload
  void ForwardSimple(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits);
  void Gemm(float* C, const float* A, const __half* W, int B, int N, int K, bool accumulate);
  void RmsNormRows(float* out, const float* x, const float* w, int B);
  void PrefillChunk(int B);
  int GemmVersionFor(const prefill::GemmParams& p) const;
  void TcGemm(const char* what, const prefill::GemmParams& p);
  prefill::GemmParams QkvGemm(int64_t l, int B) const;
  prefill::GemmParams OGemm(int64_t l, int B) const;
  prefill::GemmParams GateUpGemm(int64_t l, int B) const;
  prefill::GemmParams DownGemm(int64_t l, int B) const;
  prefill::GemmParams LmGemm(const __half* A, float* C, int rows) const;
  prefill::AttentionParams AttnArgs(int64_t l, int B, int64_t pos) const;
  void AddNorm(const float* d, const float* w, __half* h, __half* lo, int B);
  void EnsureUnfusedWorkspace(int64_t n, int64_t pos);
  void ForwardTc(const int32_t* tokens, int64_t n, int64_t pos, bool all_logits, float* logits);
  void PrefillChunkTc(int B, int64_t pos, const int* d_tokens, bool all_logits);
  void ProfileBegin();
  void Mark(int phase);
  void ProfileCollect();
  void ProfileReport(int64_t n, const char* path);

  // ---- state: device, model, decode (gpu_opt_engine.cu) ----
  cudaDeviceProp prop_;
  bool use_graph_ = true, use_pdl_ = true, l2_prefetch_all_ = false, l2_prefetch_o_ = false, verbose_ = false;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ev_start_ = nullptr, ev_stop_ = nullptr;
  // The decode step's graph for each attention layout (attn_ below), all captured at the first step.
  cudaGraphExec_t graph_exec_[3] = {nullptr, nullptr, nullptr};
  // Greedy generation (GenerateImpl): per attention layout, graphs of 1 and kGenSteps steps; best_,
  // gen_pos_, tok_log_ in gen_mem_.
  cudaGraphExec_t gen_exec_[3][2] = {{nullptr, nullptr}, {nullptr, nullptr}, {nullptr, nullptr}};
  void* gen_mem_ = nullptr;
  unsigned long long* best_ = nullptr;
  int *gen_pos_ = nullptr, *tok_log_ = nullptr;
  cuda::PinnedBuffer h_iota_, h_gen_;
  cuda::DeviceArena arena_;
  cuda::PinnedBuffer h_ints_, h_logits_;
  AttnFn attn_prefill_fn_ = nullptr;  // the simple prefill's attention (V1)
  bool decode_attn_v2_ = true, graph_tune_ = true, logits_mapped_ = true;
  static constexpr int kGraphTunePos = 1024;  // GraphTune's step position (or the context's last)
  static constexpr int kGraphTunePasses = 4;      // GraphTune: passes at most (tile_search.h)
  static constexpr double kGraphTunePrune = 0.01;  // a later pass tries a kind's tiles within 1% of its best
  static constexpr int kGraphTuneFinalists = 4;    // GraphTune's playoff: the search's cheapest tile sets
  static constexpr int kGraphTuneRounds = 8;        // and its rounds (4 replays of each set a round)
  int graph_tune_pos_ = kGraphTunePos;        // LAB_GPU_TUNE_POS
  bool graph_tune_pos_set_ = false;           // LAB_GPU_TUNE_POS was given (variant() names it)
  float* d_host_logits_ = nullptr;  // h_logits_ as the device sees it (LAB_GPU_LOGITS=mapped)
  bool attn_splits_set_ = false;              // LAB_GPU_ATTN_SPLITS was given (variant() names it)
  int attn_cluster_ = 0;                     // LAB_GPU_DECODE_ATTN=v3: splits per thread-block cluster
  static constexpr int kAttnMinChunk = 16;   // AttnLayout::min_chunk's default
  static constexpr int kAttnShortChunk = 64;  // the short-context layout's split unit (one round of 8 warps)
  // A decode attention launch layout: the kernel (V2 by default), warps per block, fewest keys per split.
  struct AttnLayout {
    AttnFn fn = nullptr;
    int warps = gpu::kAttnWarps;     // LAB_GPU_ATTN_WARPS
    int min_chunk = kAttnMinChunk;   // LAB_GPU_ATTN_MIN_CHUNK
    int splits = gpu::kAttnMaxSplitsV2;  // the grid's splits per kv head (LAB_GPU_ATTN_SPLITS sets both)
    size_t smem = 0;                 // dynamic shared memory a launch asks for, unused (LAB_GPU_ATTN_SPREAD)
  };
  // [0]: the layout the knobs name; [1]: the short-context layout (8 warps over 64-key splits), which a
  // step attending at most attn_short_keys_ keys runs instead (0: never; LAB_GPU_ATTN_SHORT; README
  // "Attention at short contexts"); [2]: the same kernel spread one block an SM (LAB_GPU_ATTN_SPREAD, session
  // 21), for steps of at most attn_spread_keys_ keys (0: never). attn_sel_ is the one Attention() launches,
  // set before a step is enqueued or captured.
  AttnLayout attn_[3];
  int attn_short_keys_ = 0, attn_spread_keys_ = 0, attn_sel_ = 0;
  bool attn_short_set_ = false;  // LAB_GPU_ATTN_SHORT was given (variant() names the bound)
  int AttnLayoutFor(int64_t keys) const {
    return attn_spread_keys_ > 0 && keys <= attn_spread_keys_ ? 2 : attn_short_keys_ > 0 && keys <= attn_short_keys_ ? 1 : 0;
  }
  int NumAttnLayouts() const { return attn_spread_keys_ > 0 ? 3 : attn_short_keys_ > 0 ? 2 : 1; }
  int attn_skip_idle_ = 1;                   // AttnParams::skip_idle (LAB_GPU_ATTN_SKIP=0 turns it off)
  bool attn_round_softmax_ = true;           // AttentionKernel's RS (LAB_GPU_ATTN_SOFTMAX=step: false)
  bool attn_softmax_set_ = false;            // LAB_GPU_ATTN_SOFTMAX was given (variant() names it)
  int attn_short_blocks_ = 2;                // the short layout's blocks per SM (LAB_GPU_ATTN_SHORT_BLOCKS)
  bool attn_short_blocks_set_ = false;       // LAB_GPU_ATTN_SHORT_BLOCKS was given (variant() names it)
  bool attn_q_shared_ = true;                // the short layout's q in shared memory (LAB_GPU_ATTN_Q; default from G = 4)
  bool attn_q_set_ = false;                  // LAB_GPU_ATTN_Q was given (variant() names it)
  int attn_mma_ = 0;                         // the short layout on the tensor cores, AttentionMmaKernel: its warps (LAB_GPU_ATTN_MMA), 0 off
  bool attn_mma_set_ = false;                // LAB_GPU_ATTN_MMA was given (variant() names it)
  bool attn_spread_set_ = false;             // LAB_GPU_ATTN_SPREAD was given (variant() names it)
  int attn_sync_acqrel_ = 1;                 // AttnParams::sync_acqrel (LAB_GPU_ATTN_SYNC=fence: 0)
  std::array<int, kNumKinds> config_ = {};   // the matvec tile per kind (an index into Configs())
  // The spread layout's steps (attn_[2]) with tiles of their own (spread_tiles_; session 28): GraphTune times
  // a spread step at spread_tune_pos_ (LAB_GPU_TUNE_SPREAD_POS; 0: those steps keep config_), and
  // LAB_GPU_TILES_SPREAD pins kinds by hand. StepTiles(): the tiles of the step being enqueued or captured.
  static constexpr int kSpreadTunePosHalf = -1;  // spread_tune_pos_'s default: half the spread layout's keys
  std::array<int, kNumKinds> spread_config_ = {};
  std::array<int, kNumKinds> spread_pinned_ = {-1, -1, -1, -1, -1};
  bool spread_tiles_ = false;
  int spread_tune_pos_ = kSpreadTunePosHalf;  // LAB_GPU_TUNE_SPREAD_POS
  bool spread_tune_pos_set_ = false;          // LAB_GPU_TUNE_SPREAD_POS was given (variant() names it)
  const std::array<int, kNumKinds>& StepTiles() const {
    return spread_tiles_ && attn_sel_ == 2 ? spread_config_ : config_;
  }
  bool mlp_fused_ = false;  // LAB_GPU_MLP=fused, or auto where it can run (ReadTileEnv): gate_up and down as one kernel, v14
  bool mlp_auto_ = false;   // LAB_GPU_MLP=auto (the default)
  int mlp_pins_ = 0;        // the kinds (bits) ReadTileEnv pinned for the fused MLP, not the user
  int mlp_grid_ = 0;        // its blocks (gpu::MlpGrid), fixed at load with W_down's slices
  std::array<int, kNumKinds> pinned_ = {-1, -1, -1, -1, -1};  // LAB_GPU_TILES: a kind's tile fixed by hand, or -1
  int o_stage_config_ = -1;    // LAB_GPU_O_STAGE: the staged tile o_proj uses (an index into Configs()), or -1
  size_t stage_budget_ = 0;    // bytes of staged weight rows per block of a staged tile (SetupStaging)
  size_t stage_kb_ = 0;        // LAB_GPU_O_STAGE_KB: stage_budget_ set by hand (0: what fits beside attention)
  bool carveout_max_ = false;  // LAB_GPU_CARVEOUT=max: decode kernels ask for the largest shared memory split
  // LAB_GPU_EARLY: which matvecs issue their second weight batch before the PDL wait.
  enum EarlyBatch { kEarlyAll, kEarlyNotO, kEarlyQkv, kEarlyOff } early_ = kEarlyQkv;
  // LAB_GPU_X_BULK: which matvecs take x by one bulk copy (the matvec kernels' XB): none, down, o_proj and
  // down (the default from session 14 to 22), those and gate_up, every one (the default since session 23).
  enum XBulk { kXBulkOff, kXBulkDown, kXBulkResid, kXBulkGateUp, kXBulkAll } x_bulk_ = kXBulkAll;
  // LAB_GPU_SECOND: where the matvecs without LAB_GPU_EARLY issue their second batch: after x is staged,
  // right after the wait, or right after the wait where x comes by bulk copy and after x elsewhere (xb: the
  // default since session 14).
  enum SecondAt { kSecondAtX, kSecondAtWait, kSecondAtWaitXB } second_ = kSecondAtWaitXB;
  enum Act16 { kAct16All, kAct16H, kAct16Off } act16_ = kAct16All;  // LAB_GPU_ACT16: decode's fp16 matvec inputs
  bool persist_ok_ = true;     // LAB_GPU_PERSIST=0: the tuners leave the persistent tiles out
  int persist_grid_ = 0;       // LAB_GPU_PERSIST_GRID: a persistent tile's blocks (0: as many as fit alone)
  int ring_pre_ = 0;           // LAB_GPU_RING_PRE: a ring tile's stages issued before its PDL wait (0: all)
  bool norm_fold_ = true;      // LAB_GPU_NORM_FOLD: the layers' norm weights folded into Wqkv and Wgate_up at load
  int norm_early_ = 1;         // LAB_GPU_NORM_EARLY: 1 a ring tile copies its norm weights before the PDL wait, 2 also
                               // a register tile asks them into L1 there (all), 0 neither
  std::map<std::pair<MatvecFn, size_t>, int> persist_fit_;  // LaunchMatvec: blocks per SM by (kernel, smem)
  double last_decode_device_ms_ = -1;
  // LAB_GPU_TRACE=1 (decode() steps only; generation graphs are not traced): trace_ holds kTraceSlots
  // marks per launch of a step (TraceMarks), trace_kind_ the kind of each, and trace_sum_
  // [kNumKinds + 2][kTraceSums] (the kinds, attention, the fused MLP) the seconds summed over steps: busy (first block past the wait to the last
  // block's end), pre (first block's start to the wait's release), drain (the previous launch's end to
  // this one's release: the kernel boundary), the count of launches, staged (a block's mean time
  // from its release to TraceMarks::Staged: a matvec's x staging, attention's own split), spread (the
  // first released block's end to the last's), tail (busy less the mean block's release-to-end time) and
  // the SMs its blocks ran on (a count, summed over launches; session 21).
  static constexpr int kTraceSums = 8;
  bool trace_on_ = false, trace_capture_ = false;
  unsigned long long* trace_ = nullptr;
  size_t trace_slots_ = 0;
  std::vector<int> trace_kind_;
  std::vector<double> trace_sum_ = std::vector<double>((kNumKinds + 2) * kTraceSums, 0.0);
  double trace_step_s_ = 0;
  int64_t trace_steps_ = 0;
  // The decode steps' matvec launches per kind: all, x by bulk copy, second batch right after the wait.
  std::array<std::array<int64_t, 3>, kNumKinds> launches_ = {};

  __half *embed_ = nullptr, *lm_head_ = nullptr;
  float* final_norm_ = nullptr;
  std::vector<DeviceLayer> layers_;
  __half *k_cache_ = nullptr, *v_cache_ = nullptr;
  // Activations, sized for kPrefillChunk tokens (the simple prefill uses them batched, decode row 0).
  float *x_, *xb_, *qkv_, *q_, *att_, *gu_, *h_, *logits_, *part_acc_, *scratch_, *rope_cos_, *rope_sin_;
  __half *x16_ = nullptr, *att16_ = nullptr, *h16_ = nullptr;  // LAB_GPU_ACT16: decode's fp16 matvec inputs
  float2* part_ml_;
  unsigned* counters_;
  int* ints_;  // [0] = position, [1..] = tokens

  // ---- state: prefill (gpu_opt_prefill.cu; the tensor-core buffers are planned and allocated by Init) ----
  bool tc_prefill_ = true, attn_unfused_ = false, profile_ = false;
  int64_t tc_chunk_ = kTcChunkDefault;
  int gemm_version_ = 0;  // 0: the lab's fastest applicable version
  float *tx_ = nullptr, *tdelta_ = nullptr, *tqkv_ = nullptr;
  __half *txh_ = nullptr, *txl_ = nullptr, *tq16_ = nullptr, *tatt16_ = nullptr, *tact16_ = nullptr;
  int* ttokens_ = nullptr;
  void* unfused_ws_ = nullptr;  // freed by Release
  size_t unfused_ws_bytes_ = 0;
  std::vector<cudaEvent_t> prof_events_;  // destroyed by Release
  std::vector<int> prof_phase_;
  size_t prof_used_ = 0;
  double prof_ms_[kNumPhases] = {};
};

}  // namespace gpu_opt
}  // namespace lab
