// Stage 4 — gpu_opt's matvec tiles and their tuning at engine start (GpuOptEngine::AutoTune, GraphTune;
// the class is in gpu_opt_engine_impl.cuh). A tile is (warps per block, row-pair units per warp, 16-byte
// loads per row per batch, batches issued before the PDL wait; staged or persistent): the kernel lab's
// versions (cuda/kernels) that won somewhere. Which one is fastest depends on the matrix shape, the card
// and the neighbouring kernels, so the engine times them on its own weights, alone and then in the
// captured step, and keeps the fastest per layer kind. Also the tile knobs (ReadTileEnv), which of a
// tile's kernels a kind launches (FnOf: x by bulk copy or not) and o_proj's staging budget (SetupStaging).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cc/core/env.h"
#include "cc/core/errors.h"
#include "cuda/gpu_opt/gpu_opt_engine_impl.cuh"
#include "cuda/gpu_opt/tile_search.h"

namespace lab {
namespace gpu_opt {
namespace {

template <int W, int U, int R, int EPI, int PRE, bool STAGE, bool PERSIST, int XB = 0>
MatvecFn WithXB() {  // the epilogue with x by bulk copy (XB 1 residual, XB 2 with a norm, XB 3 qkv's fp32 x);
  if constexpr (STAGE) {  // none for staged tiles
    return nullptr;
  } else {
    return gpu::DecodeMatvecKernel<W, U, R, EPI, PRE, false, PERSIST, XB ? XB : EPI == gpu::kEpiResid ? 1 : 2>;
  }
}

template <int W, int U, int R, int PRE = 1, bool STAGE = false, bool PERSIST = false>
MatvecConfig MakeConfig(const char* name) {
  return {name,
          W,
          U,
          {gpu::DecodeMatvecKernel<W, U, R, gpu::kEpiStore, PRE, STAGE, PERSIST>,
           gpu::DecodeMatvecKernel<W, U, R, gpu::kEpiResid, PRE, STAGE, PERSIST>,
           gpu::DecodeMatvecKernel<W, U, R, gpu::kEpiGateUp, PRE, STAGE, PERSIST>,
           gpu::DecodeMatvecKernel<W, U, R, gpu::kEpiQkv, PRE, STAGE, PERSIST>,
           WithXB<W, U, R, gpu::kEpiStore, PRE, STAGE, PERSIST>(), WithXB<W, U, R, gpu::kEpiResid, PRE, STAGE, PERSIST>(),
           WithXB<W, U, R, gpu::kEpiGateUp, PRE, STAGE, PERSIST>(), WithXB<W, U, R, gpu::kEpiQkv, PRE, STAGE, PERSIST>(),
           WithXB<W, U, R, gpu::kEpiQkv, PRE, STAGE, PERSIST, 3>()},
          STAGE,
          PERSIST};
}

// A weight-ring tile (v10): CW consumer warps, a ring of ST stages of SC chunks per row piece; an XB
// kernel (v13: the fp16 x by one bulk copy) for the residual matvecs only (gate_up's measured slower,
// kernels_matvec_ring.cuh).
template <int CW, int ST, int SC>
MatvecConfig MakeRingConfig(const char* name) {
  using gpu::RingMatvecKernel;
  MatvecConfig c = {name,
                    CW,
                    1,
                    {RingMatvecKernel<CW, ST, SC, gpu::kEpiStore>, RingMatvecKernel<CW, ST, SC, gpu::kEpiResid>,
                     RingMatvecKernel<CW, ST, SC, gpu::kEpiGateUp>, RingMatvecKernel<CW, ST, SC, gpu::kEpiQkv>, nullptr,
                     RingMatvecKernel<CW, ST, SC, gpu::kEpiResid, 0, false, true>, nullptr, nullptr, nullptr},
                    false,
                    false};
  c.ring_stages = ST;
  c.ring_sc = SC;
  return c;
}

// Whether the tuners may give `kind` the tile `mc`: staged tiles never (LAB_GPU_O_STAGE chooses them);
// persistent tiles not for lm_head, whose logits gather needs one task per warp, nor with LAB_GPU_PERSIST=0.
// LAB_GPU_TILES pins by the same rule (persist_ok true: a pinned persistent tile is asked for by name).
bool Tunable(const MatvecConfig& mc, int kind, bool persist_ok) {
  return !mc.staged && !(mc.persist && (kind == kLm || !persist_ok));
}

// Pins the kinds `knob` names (<kind>=<tile>,...) in *pins; InputError on an unknown kind or tile.
void ParseTiles(const char* knob, std::array<int, kNumKinds>* pins) {
  const char* v = std::getenv(knob);
  for (std::string rest = v ? v : ""; !rest.empty();) {
    const size_t comma = rest.find(',');
    const std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    int k = -1, ci = -1;
    for (int i = 0; i < kNumKinds && eq != std::string::npos; ++i)
      if (item.compare(0, eq, kKindNames[i]) == 0 && eq == std::strlen(kKindNames[i])) k = i;
    for (size_t i = 0; i < Configs().size() && eq != std::string::npos; ++i)
      if (item.substr(eq + 1) == Configs()[i].name && Tunable(Configs()[i], k, true)) ci = int(i);
    if (k < 0 || ci < 0)
      throw InputError(std::string(knob) + ": '" + item + "' is not <qkv|o_proj|gate_up|down|lm_head>=<a tile> (staged " +
                       "tiles are LAB_GPU_O_STAGE's; lm_head takes no persistent tile)");
    (*pins)[k] = ci;
  }
}

}  // namespace

// 0..5: the kernel lab's v5 tiles; 6..11: v7, a longer first batch before the PDL wait (".pN": N batches)
// and two lighter tiles (fewer registers, so more blocks fit beside the neighbouring kernels); 12..14: v8,
// the first batch staged in shared memory (".s", LAB_GPU_O_STAGE; not auto-tuned); 15..: v9, persistent
// (".b": a grid of the blocks that fit per SM loops over the warps' tasks, so every SM gets the same
// share of the rows to within one task; the one-task grids leave e.g. qkv's 192 blocks of 32 rows on 132
// SMs, 60 of them with two blocks); 19..21: v10, the weight ring ("ring.": one block per SM, the weights
// by bulk copies into a ring of shared memory; README "The weight ring").
const std::vector<MatvecConfig>& Configs() {
  static const std::vector<MatvecConfig> c = {
      MakeConfig<4, 1, 4>("w4.u1.r4"),        MakeConfig<4, 1, 8>("w4.u1.r8"),
      MakeConfig<8, 1, 4>("w8.u1.r4"),        MakeConfig<4, 2, 4>("w4.u2.r4"),
      MakeConfig<8, 2, 2>("w8.u2.r2"),        MakeConfig<2, 1, 8>("w2.u1.r8"),
      MakeConfig<4, 1, 4, 2>("w4.u1.r4.p2"),  MakeConfig<4, 1, 4, 4>("w4.u1.r4.p4"),
      MakeConfig<8, 1, 4, 2>("w8.u1.r4.p2"),  MakeConfig<8, 2, 2, 2>("w8.u2.r2.p2"),
      MakeConfig<4, 1, 2>("w4.u1.r2"),        MakeConfig<8, 1, 2>("w8.u1.r2"),
      MakeConfig<8, 2, 2, 1, true>("w8.u2.r2.s"), MakeConfig<4, 2, 4, 1, true>("w4.u2.r4.s"),
      MakeConfig<8, 1, 4, 1, true>("w8.u1.r4.s"),
      MakeConfig<8, 1, 4, 1, false, true>("w8.u1.r4.b"), MakeConfig<8, 2, 2, 1, false, true>("w8.u2.r2.b"),
      MakeConfig<4, 1, 4, 1, false, true>("w4.u1.r4.b"), MakeConfig<4, 2, 4, 1, false, true>("w4.u2.r4.b"),
      MakeRingConfig<8, 16, 256>("ring.c8.s16.k256"), MakeRingConfig<8, 8, 512>("ring.c8.s8.k512"),
      MakeRingConfig<16, 16, 256>("ring.c16.s16.k256"),
  };
  return c;
}

// Tile choice on the real decode step (LAB_GPU_TUNE=graph, the default, for models of 256 MB of weights
// or more; LAB_GPU_TUNE=kernel skips it. It was off until the third pass, README "The third pass": on the
// H200 three processes of each gave 238.9-239.2 tok/s at context 512 with it and 233.8-236.9 without,
// whose AutoTune picks differed between processes, e.g. down's tile). AutoTune times each matvec alone,
// launched back to back without PDL, but in the step a kernel's speed also depends on its neighbours (how
// many of its blocks fit beside the previous kernel's tail and the attention blocks, how much of its
// weight stream starts before the PDL wait). So, starting from AutoTune's choices, each kind in turn (the
// largest byte stream first) tries every tile with the others fixed, timing replays of the whole captured
// step at position kGraphTunePos (LAB_GPU_TUNE_POS; or the last position of a shorter context), and keeps
// the fastest. The passes repeat until one changes nothing, the two largest kinds then try changing
// together, and a playoff replays the four cheapest tile sets in alternation (CoordinateSearch and
// PickByRounds, tile_search.h: one pass in a fixed order left the H200 0.9% slower than hand-pinned
// tiles, README "Session 20"). (lm_head since the x-staging pass: AutoTune once left it on w8.u1.r4,
// which streamed at 93% of the ceiling while busy, 18 us a step more than w8.u2.r2's 96-99.6% in the
// H200's other traces.)
// The replays write that position's K/V rows; a later step at position p reads only rows 0..p, all
// written by the prefill and decode steps before it, so nothing the replays leave is ever read.
// The spread layout's steps (at most 1,024 keys for Llama-3.1-8B on 132 SMs) run another attention grid,
// one block an SM and, by default, on the tensor cores; a step at kGraphTunePos runs the short layout, so
// its tiles were picked beside that one (session 27 found tiles tuned at a spread step faster there and
// slower at 2048). Where the spread layout is in use and the main position is past it, its steps get a
// search of their own at spread_tune_pos_ (half the layout's keys unless given), starting from the main
// choice, LAB_GPU_TILES and LAB_GPU_TILES_SPREAD pinning as they say. Measured (session 28, H200): +0.35% at 512
// in 3 of 3 pairs, nothing at 2048; the second search put o_proj on a ring tile, whose blocks do not fit beside
// a spread attention block, so attention runs with nothing of o_proj loading beside it (JOURNAL "Session 28").
void GpuOptEngine::GraphTune() {
  const int tune_pos = int(std::min<int64_t>(max_context_ - 1, graph_tune_pos_));
  spread_tiles_ = false;  // (the main search times config_ even where its position is a spread step)
  TuneTiles(tune_pos, &config_, pinned_);
  PinSpreadTiles();
  if (spread_tune_pos_ == 0 || attn_spread_keys_ <= 0 || AttnLayoutFor(tune_pos + 1) == 2) return;
  const int pos = spread_tune_pos_ < 0 ? attn_spread_keys_ / 2 : std::min(spread_tune_pos_, attn_spread_keys_ - 1);
  std::array<int, kNumKinds> pins = pinned_;
  for (int k = 0; k < kNumKinds; ++k)
    if (spread_pinned_[k] >= 0) pins[k] = spread_pinned_[k];
  spread_tiles_ = true;  // (StepTiles() at a spread step: spread_config_, the tiles being tuned)
  TuneTiles(pos, &spread_config_, pins);
}

void GpuOptEngine::PinSpreadTiles() {
  spread_config_ = config_;
  spread_tiles_ = false;
  for (int k = 0; k < kNumKinds; ++k)
    if (spread_pinned_[k] >= 0 && attn_spread_keys_ > 0) {  // (no spread layout: no spread steps to pin)
      spread_config_[k] = spread_pinned_[k];
      spread_tiles_ = true;
    }
  CheckTilesFit();
}

void GpuOptEngine::TuneTiles(int tune_pos, std::array<int, kNumKinds>* tiles, const std::array<int, kNumKinds>& pins) {
  int* hi = h_ints_.as<int>();
  hi[0] = tune_pos;
  hi[1] = 0;
  LAB_CUDA_CHECK(cudaMemcpyAsync(ints_, hi, 2 * sizeof(int), cudaMemcpyHostToDevice, stream_));
  LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  attn_sel_ = AttnLayoutFor(tune_pos + 1);  // the attention layout a step at tune_pos runs
  auto replay_ms = [&](cudaGraphExec_t exec, int n, cudaError_t* err) -> float {  // device ms per replay of n
    float ms = 0.f;
    if (*err == cudaSuccess) *err = cudaEventRecord(ev_start_, stream_);
    for (int i = 0; i < n && *err == cudaSuccess; ++i) *err = cudaGraphLaunch(exec, stream_);
    if (*err == cudaSuccess) *err = cudaEventRecord(ev_stop_, stream_);
    if (*err == cudaSuccess) *err = cudaEventSynchronize(ev_stop_);
    if (*err == cudaSuccess) *err = cudaEventElapsedTime(&ms, ev_start_, ev_stop_);
    return ms / n;
  };
  auto time_step = [&]() -> float {  // device ms per replay of the step (median of 3 x 4); < 0 on failure
    cudaGraphExec_t exec = BuildGraph(use_pdl_, nullptr);
    if (!exec) return -1.f;
    std::vector<float> t;
    cudaError_t err = cudaGraphLaunch(exec, stream_);  // warm-up
    for (int r = 0; r < 3 && err == cudaSuccess; ++r) t.push_back(replay_ms(exec, 4, &err));
    cudaGraphExecDestroy(exec);
    cuda::Check(err, "decode graph replay (tuning)", __FILE__, __LINE__);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  // The kinds in the order of the bytes they stream a step, the largest first (tile_search.h says why).
  std::vector<int> order;
  std::vector<std::vector<int>> cands(kNumKinds);
  std::vector<double> bytes(kNumKinds, 0.0);
  const auto& cfgs = Configs();
  for (int k = 0; k < kNumKinds; ++k) {
    const MatvecParams p = Params(Kind(k), xb_, k == kLm ? -1 : 0, ints_);
    bytes[k] = double(p.M) * p.K * (k == kLm ? 1 : cfg_.n_layers);
    if (pins[k] >= 0) continue;
    order.push_back(k);
    for (int ci = 0; ci < int(cfgs.size()); ++ci)
      if (Tunable(cfgs[ci], k, persist_ok_) && TileFits(cfgs[ci], Kind(k))) cands[k].push_back(ci);
  }
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return bytes[a] > bytes[b]; });
  std::vector<int> start(tiles->begin(), tiles->end());
  std::string line;  // verbose: one line per kind and pass, the candidates it timed
  int line_pass = 0, line_kind = -1;
  auto flush = [&]() {
    if (verbose_ && line_kind >= 0)
      std::fprintf(stderr, "  pass %d %-8s%s\n", line_pass, kKindNames[line_kind], line.c_str());
    line.clear();
    line_kind = -1;
  };
  const TileSearchResult r = CoordinateSearch(
      start, order, cands,
      [&](const std::vector<int>& choice) -> double {
        std::copy(choice.begin(), choice.end(), tiles->begin());
        return double(time_step());
      },
      kGraphTunePasses, kGraphTunePrune, /*pair_step=*/true, [&](const TileTrial& t) {
        if (t.pass != line_pass || t.kind != line_kind) flush();
        line_pass = t.pass;
        line_kind = t.kind;
        char buf[64];
        std::snprintf(buf, sizeof(buf), " %s=%.4f", cfgs[t.candidate].name, t.cost);
        line += buf;
      });
  flush();
  std::copy(r.choice.begin(), r.choice.end(), tiles->begin());
  if (r.cost < 0) return;  // no graph: the plain launches keep AutoTune's choices
  // The playoff: the cheapest distinct tile sets the search timed, each captured once, replayed in
  // alternation (PickByRounds), the lowest median kept.
  const std::vector<std::vector<int>> top = TopChoices(r, kGraphTuneFinalists);
  std::vector<cudaGraphExec_t> execs;
  for (const std::vector<int>& choice : top) {
    std::copy(choice.begin(), choice.end(), tiles->begin());
    execs.push_back(BuildGraph(use_pdl_, nullptr));
  }
  cudaError_t err = cudaSuccess;
  for (cudaGraphExec_t e : execs)  // each graph's first replay (its upload) outside the rounds
    if (e && err == cudaSuccess) err = cudaGraphLaunch(e, stream_);
  std::vector<double> medians;
  const int win = PickByRounds(
      int(top.size()), kGraphTuneRounds,
      [&](int i) -> double {
        if (!execs[i]) return -1.0;
        const float ms = replay_ms(execs[i], 4, &err);
        return err == cudaSuccess ? ms : -1.0;
      },
      &medians);
  for (cudaGraphExec_t e : execs)
    if (e) cudaGraphExecDestroy(e);
  cuda::Check(err, "decode graph replay (tuning playoff)", __FILE__, __LINE__);
  std::copy(top[win < 0 ? 0 : win].begin(), top[win < 0 ? 0 : win].end(), tiles->begin());
  if (verbose_) {
    auto names = [&](const std::vector<int>& choice) {
      std::string t;
      for (int k = 0; k < kNumKinds; ++k) t += std::string(" ") + kKindNames[k] + "=" + cfgs[choice[k]].name;
      return t;
    };
    std::fprintf(stderr, "gpu_opt: graph tune at position %d (attention layout %d): the start's choices %.4f ms per "
                 "step; the search's %.4f (%d trials, %d passes%s); playoff of %d, %d rounds of 4 replays (median ms):\n",
                 tune_pos, attn_sel_, r.timed.front().second, r.cost, r.trials, r.passes, r.converged ? ", converged" : "",
                 int(top.size()), kGraphTuneRounds);
    for (size_t i = 0; i < top.size(); ++i)
      std::fprintf(stderr, "  %s %.4f%s\n", int(i) == win ? "*" : " ", medians[i], names(top[i]).c_str());
  }
  LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- matvec dispatch ----
// Times every configuration for every kind of matvec on the real weights (outputs go to scratch
// buffers where they would otherwise change state) and keeps the fastest.
void GpuOptEngine::AutoTune() {
  const auto& cfgs = Configs();
  if (const char* s = std::getenv("LAB_GPU_MATVEC_CONFIG")) {
    const int i = std::atoi(s);
    if (i < 0 || i >= int(cfgs.size())) throw InputError("LAB_GPU_MATVEC_CONFIG out of range");
    for (int& k : config_) k = i;
    if (cfgs[i].persist) config_[kLm] = 0;  // lm_head's logits gather needs one task per warp
    for (int k = 0; k < kNumKinds; ++k)
      if (pinned_[k] >= 0) config_[k] = pinned_[k];
    CheckTilesFit();
    return;
  }
  for (int kind = 0; kind < kNumKinds; ++kind)
    if (pinned_[kind] >= 0) config_[kind] = pinned_[kind];
  CheckTilesFit();  // the pinned tiles: a clear error now rather than at the first launch
  if (verbose_)
    std::fprintf(stderr, "gpu_opt: matvec auto-tune on %s (GB/s of weight bytes, median of 5 batches)\n", prop_.name);
  for (int kind = 0; kind < kNumKinds; ++kind) {
    if (pinned_[kind] >= 0) continue;
    // Batches of back-to-back launches (as in the decode stream), so a launch's fixed latency does not
    // swamp the difference between configurations; each launch of a batch reads another layer's
    // weights, so that a matrix smaller than L2 is not served from L2 by the previous launch.
    const int batch = kind == kLm ? 2 : 10;
    std::vector<MatvecParams> ps;
    for (int b = 0; b < batch; ++b) {  // (with LAB_GPU_ACT16 the inputs are the step's fp16 copies, as in the step)
      MatvecParams p = Params(Kind(kind), kind == kDown ? h_ : (kind == kO ? att_ : xb_),
                              kind == kLm ? -1 : (cfg_.n_layers / 2 + b) % cfg_.n_layers, ints_);
      if (kind == kO || kind == kDown) p.out = scratch_;
      ps.push_back(p);
    }
    const MatvecParams& p = ps[0];
    const double bytes = double(p.M) * p.K * 2;
    float best = 1e30f;
    std::string line;
    for (size_t ci = 0; ci < cfgs.size(); ++ci) {
      if (!Tunable(cfgs[ci], kind, persist_ok_) || !TileFits(cfgs[ci], Kind(kind))) continue;
      LaunchMatvec(cfgs[ci], FnOf(Kind(kind), p), p, false);  // warm-up
      std::vector<float> t;
      for (int r = 0; r < 5; ++r) {
        LAB_CUDA_CHECK(cudaEventRecord(ev_start_, stream_));
        for (int b = 0; b < batch; ++b) LaunchMatvec(cfgs[ci], FnOf(Kind(kind), ps[b]), ps[b], false);
        LAB_CUDA_CHECK(cudaEventRecord(ev_stop_, stream_));
        LAB_CUDA_CHECK(cudaEventSynchronize(ev_stop_));
        float ms = 0.f;
        LAB_CUDA_CHECK(cudaEventElapsedTime(&ms, ev_start_, ev_stop_));
        t.push_back(ms / batch);
      }
      std::sort(t.begin(), t.end());
      const float med = t[t.size() / 2];
      if (med < best) {
        best = med;
        config_[kind] = int(ci);
      }
      char buf[64];
      std::snprintf(buf, sizeof(buf), " %s=%.0f", cfgs[ci].name, bytes / (med * 1e-3) / 1e9);
      line += buf;
    }
    if (verbose_)
      std::fprintf(stderr, "  %-8s M=%-6d K=%-6d best %s%s\n", kKindNames[kind], p.M, p.K, cfgs[config_[kind]].name,
                   line.c_str());
  }
  LAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// The tile knobs (the engine file's header lists them); called by ReadDecodeEnv, so a bad value throws
// InputError before any device work.
void GpuOptEngine::ReadTileEnv() {
  // o_proj's first batch staged in shared memory while attention runs (README "The third pass").
  if (const char* v = std::getenv("LAB_GPU_O_STAGE"); v && *v) {
    const std::string a = v;
    o_stage_config_ = -1;
    std::string names;
    for (size_t i = 0; i < Configs().size(); ++i) {
      if (!Configs()[i].staged) continue;
      names += std::string(" ") + Configs()[i].name;
      if (a == Configs()[i].name) o_stage_config_ = int(i);
    }
    if (o_stage_config_ < 0 && a != "off")
      throw InputError("LAB_GPU_O_STAGE must be off or one of the staged tiles (" + names + " ), not '" + a + "'");
  }
  stage_kb_ = size_t(EnvInt("LAB_GPU_O_STAGE_KB", 1, 256, 0));
  carveout_max_ = o_stage_config_ >= 0;
  persist_ok_ = EnvFlag("LAB_GPU_PERSIST", true);
  // LAB_GPU_TILES=qkv=w8.u2.r2,o_proj=w8.u1.r4,...: those kinds skip the auto-tuner (for A/B runs, whose
  // processes would otherwise each tune, and may pick other tiles where two are within the noise);
  // LAB_GPU_TILES_SPREAD the same for the spread layout's steps (GraphTune), whose other kinds follow
  // LAB_GPU_TILES or their own search.
  ParseTiles("LAB_GPU_TILES", &pinned_);
  ParseTiles("LAB_GPU_TILES_SPREAD", &spread_pinned_);
  // (EarlyBatch's order; unset: qkv, hence the explicit check before EnvChoice, whose default is the first.)
  if (const char* v = std::getenv("LAB_GPU_EARLY"); v && *v)
    early_ = EarlyBatch(EnvChoice("LAB_GPU_EARLY", {"all", "not_o", "qkv", "off"}));
  static const SecondAt kSecondOfChoice[] = {kSecondAtWaitXB, kSecondAtX, kSecondAtWait};  // (the default first)
  second_ = kSecondOfChoice[EnvChoice("LAB_GPU_SECOND", {"xb", "after_x", "after_wait"})];
  act16_ = Act16(EnvChoice("LAB_GPU_ACT16", {"all", "h", "off"}));  // Act16's order
  // (The default listed first, as EnvChoice wants; kXBulk below in XBulk's order.) The default applies
  // where there is an fp16 x; a value given by hand must have one.
  static const XBulk kXBulkOfChoice[] = {kXBulkAll, kXBulkResid, kXBulkDown, kXBulkOff, kXBulkGateUp};
  x_bulk_ = kXBulkOfChoice[EnvChoice("LAB_GPU_X_BULK", {"all", "resid", "down", "off", "gate_up"})];
  static const char* const kXBulk[] = {"off", "down", "resid", "gate_up", "all"};  // XBulk's order
  if (EnvGiven("LAB_GPU_X_BULK") &&
      ((x_bulk_ >= kXBulkResid && act16_ != kAct16All) || (x_bulk_ == kXBulkDown && act16_ == kAct16Off)))
    throw InputError(std::string("LAB_GPU_X_BULK=") + kXBulk[x_bulk_] + " needs LAB_GPU_ACT16=" +
                     (x_bulk_ == kXBulkDown ? "all or h" : "all") + ": the bulk copy brings an fp16 x");
  persist_grid_ = int(EnvInt("LAB_GPU_PERSIST_GRID", 1, 65535, 0));
  ring_pre_ = int(EnvInt("LAB_GPU_RING_PRE", 1, 64, 0));  // (a count at or past a ring's stages: the whole ring)
  static const int kNormEarlyOfChoice[] = {1, 0, 2};  // (the default first: 1, since session 19)
  norm_early_ = kNormEarlyOfChoice[EnvChoice("LAB_GPU_NORM_EARLY", {"1", "0", "all"})];
  norm_fold_ = EnvFlag("LAB_GPU_NORM_FOLD", true);
  // LAB_GPU_MLP=fused: gate_up and down as one kernel (v14). It reads the residual's fp16 copy and adds into
  // the fp32 residual, and applies the norm as the RMS scale alone; gate_up's and down's tiles then go unused,
  // so they are pinned to a register tile and left out of the tuning. auto (the default since session 25):
  // fused where it can run (these knobs, and a model and card it can cut), else split.
  const int mlp = EnvChoice("LAB_GPU_MLP", {"auto", "split", "fused"});
  mlp_auto_ = mlp == 0;  // (Init also drops it where W_down's second copy does not fit the card: DropFusedMlp)
  mlp_fused_ = mlp == 2 || (mlp_auto_ && act16_ == kAct16All && norm_fold_ && MlpUnfit().empty());
  if (mlp_fused_ && (act16_ != kAct16All || !norm_fold_))
    throw InputError("LAB_GPU_MLP=fused needs LAB_GPU_ACT16=all and LAB_GPU_NORM_FOLD=1: its input is the fp16 copy "
                     "of the residual stream, which it adds to, and it applies the norm as the RMS scale alone");
  for (int k : {int(kGateUp), int(kDown)})  // (a register tile that fits every shape; never launched)
    for (int i = 0; mlp_fused_ && pinned_[k] < 0 && i < int(Configs().size()); ++i)
      if (std::strcmp(Configs()[i].name, "w8.u1.r4") == 0) {
        pinned_[k] = i;
        mlp_pins_ |= 1 << k;
      }
  if (const char* v = std::getenv("LAB_GPU_CARVEOUT"); v && *v)  // unset: max with staging, else auto
    carveout_max_ = EnvChoice("LAB_GPU_CARVEOUT", {"max", "auto"}) == 0;
}

size_t GpuOptEngine::RingSmem(const MatvecConfig& mc, const MatvecParams& p) const {
  return gpu::RingSmemBytes(p, std::min(prop_.multiProcessorCount, p.n_units), mc.ring_stages, mc.ring_sc);
}

bool GpuOptEngine::TileFits(const MatvecConfig& mc, Kind kind) const {
  if (!mc.ring_stages) return true;
  const MatvecParams p = Params(kind, x_, kind == kLm ? -1 : 0, ints_);
  return RingSmem(mc, p) + kRingStaticSmem <= size_t(prop_.sharedMemPerBlockOptin);
}

void GpuOptEngine::CheckTilesFit() const {
  for (int i = 0; i < kNumKinds * (spread_tiles_ ? 2 : 1); ++i) {
    const int k = i % kNumKinds;
    const MatvecConfig& mc = Configs()[(i < kNumKinds ? config_ : spread_config_)[k]];
    if (!TileFits(mc, Kind(k)))
      throw InputError(std::string("gpu_opt: tile ") + mc.name + " does not fit " + kKindNames[k] +
                       " on this card: its ring and x need more shared memory than the " +
                       std::to_string(prop_.sharedMemPerBlockOptin) + " bytes a block may have");
  }
}

// LAB_GPU_X_BULK: the kinds it names take their fp16 x by one bulk copy, where they have one (decode steps
// with LAB_GPU_ACT16) and, for those with a norm (XB 2), where the fp32 staging and the copy fit in shared
// memory together. qkv behind the fused MLP (decode steps; no fp16 copy of x) takes its fp32 x so (XB 3).
int GpuOptEngine::FnOf(Kind k, const MatvecParams& p, bool step) const {
  const bool want = x_bulk_ == kXBulkAll || (x_bulk_ >= kXBulkDown && k == kDown) ||
                    (x_bulk_ >= kXBulkResid && k == kO) || (x_bulk_ >= kXBulkGateUp && k == kGateUp);
  const bool x32 = step && k == kQkv && mlp_fused_ && !p.x16;  // qkv behind the fused MLP: its fp32 x (XB 3)
  const int fn = x32 ? kFnX32 : kFnXB + EpiOf(k);
  const bool fits = gpu::MatvecSmemBytes(p.K, XbOfFn(fn), p.norm_w != nullptr) <= size_t(prop_.sharedMemPerBlockOptin);
  return want && (p.x16 || x32) && !(p.norm_w && XbOfFn(fn) == 1) && fits ? fn : EpiOf(k);
}

std::string GpuOptEngine::variant() const {
  std::string s;
  for (int k = 0; k < kNumKinds; ++k) {
    if (mlp_fused_ && k == kDown) continue;  // (LAB_GPU_MLP=fused: one kernel in gate_up's place)
    const std::string tile = mlp_fused_ && k == kGateUp ? std::string("mlp fused (v14)")
                                                        : std::string(kKindNames[k]) + " " + Configs()[config_[k]].name;
    s += (k ? ", " : "") + tile;
  }
  // The spread layout's steps' tiles where they differ (kinds joined by '+', so a ", " still ends a part).
  std::string spread;
  for (int k = 0; k < kNumKinds && spread_tiles_; ++k)
    if (spread_config_[k] != config_[k] && !(mlp_fused_ && (k == kDown || k == kGateUp)))
      spread += std::string(spread.empty() ? "" : " + ") + kKindNames[k] + " " + Configs()[spread_config_[k]].name;
  if (!spread.empty()) s += ", spread steps " + spread;
  static const char* const kEarly[] = {"all", "not_o", "qkv", "off"};  // EarlyBatch's order
  if (early_ != kEarlyQkv) s += std::string(", early ") + kEarly[early_];
  if (second_ != kSecondAtWaitXB)  // (xb, the default: not named)
    s += second_ == kSecondAtWait ? ", second after_wait" : ", second after_x";
  static const char* const kXBulk[] = {"x staged by the loop", "x by bulk copy down only", "x by bulk copy o_proj down",
                                       "x by bulk copy o_proj down gate_up", ""};  // XBulk's order
  // (all, the default: not named)
  if (x_bulk_ != kXBulkAll) s += std::string(", ") + kXBulk[x_bulk_];
  static const char* const kAct16[] = {"all", "h", "off"};  // Act16's order
  if (act16_ != kAct16All) s += std::string(", act16 ") + kAct16[act16_];
  if (!decode_attn_v2_) s += ", attention v1";
  if (attn_cluster_) s += ", attention v3 (clusters of " + std::to_string(attn_cluster_) + ")";
  if (attn_[0].warps != gpu::kAttnWarps) s += ", attention " + std::to_string(attn_[0].warps) + " warps";
  if (!attn_sync_acqrel_) s += ", attention merge fences";
  if (attn_softmax_set_) s += attn_round_softmax_ ? ", attention softmax per round" : ", attention softmax per step";
  if (attn_[0].min_chunk != kAttnMinChunk) s += ", splits of " + std::to_string(attn_[0].min_chunk) + "+ keys";
  // The split count when LAB_GPU_ATTN_SPLITS set it (the default follows the card: not named).
  if (attn_splits_set_) s += ", attention splits " + std::to_string(attn_[0].splits);
  // The short-context layout's bound when LAB_GPU_ATTN_SHORT set it (the default follows the card: not named).
  if (attn_short_set_)
    s += attn_short_keys_ ? ", attention short up to " + std::to_string(attn_short_keys_) + " keys" : ", attention short off";
  if (attn_short_blocks_set_) s += ", attention short " + std::to_string(attn_short_blocks_) + " block(s) per SM";
  // The short layout's kernel when LAB_GPU_ATTN_MMA chose it (auto, the default: not named).
  if (attn_mma_set_ && attn_short_keys_ > 0)
    s += attn_mma_ ? ", attention short on the tensor cores" + std::string(attn_mma_ == 8 ? " (8 warps, 128-key splits)" : "")
                   : ", attention short on the CUDA cores";
  if (attn_q_set_) s += attn_q_shared_ ? ", attention short q in shared" : ", attention short q in registers";
  if (attn_spread_set_) s += attn_spread_keys_ ? ", attention short spread up to " + std::to_string(attn_spread_keys_) + " keys"
                                              : ", attention short not spread";
  if (graph_tune_pos_set_) s += ", tuned at position " + std::to_string(graph_tune_pos_);
  if (spread_tune_pos_set_)
    s += spread_tune_pos_ ? ", spread steps tuned at position " + std::to_string(spread_tune_pos_) : ", spread steps not tuned apart";
  if (ring_pre_) s += ", ring " + std::to_string(ring_pre_) + " stages before the wait";
  if (norm_early_ == 0) s += ", ring norm weights after the wait";
  if (norm_early_ == 2) s += ", norm weights into L1 before the wait";
  if (!norm_fold_) s += ", norm weights not folded";
  return s;
}

// ---- staging o_proj (README "The third pass") ----
// o_proj follows attention, which is latency-bound: for ~10 us per layer HBM has almost nothing to do.
// With LAB_GPU_O_STAGE the o_proj blocks, launched as soon as attention's blocks have started (PDL),
// copy the first part of their rows into shared memory before they wait: as much as fits in an SM
// beside the attention blocks still running there. kAttnBlocksPerSm of those are budgeted for (the
// decode grid's ~264 working blocks at Llama-3.1-8B's 8 kv heads over 132 SMs).
constexpr int kAttnBlocksPerSm = 2;
constexpr int64_t kSmemMargin = 512;  // bytes kept back in case the SM rounds allocations up

void GpuOptEngine::SetupStaging() {
  const int sms = prop_.multiProcessorCount;
  const size_t reserved = prop_.reservedSharedMemPerBlock;
  cudaFuncAttributes fa;
  size_t attn_smem = 0;  // the larger of the decode attention layouts'
  for (const AttnLayout& a : attn_)
    if (a.fn) {
      LAB_CUDA_CHECK(cudaFuncGetAttributes(&fa, a.fn));
      attn_smem = std::max(attn_smem, fa.sharedSizeBytes + reserved);  // (a spread block is alone on its SM: not counted)
    }
  // The budget is sized for o_proj's grid with the tile LAB_GPU_O_STAGE names (or w8.u2.r2.s, for a
  // staged tile chosen by LAB_GPU_MATVEC_CONFIG): its blocks per SM share what attention leaves.
  const auto& cfgs = Configs();
  int ci = o_stage_config_;
  if (ci < 0)
    for (size_t i = 0; i < cfgs.size(); ++i)
      if (cfgs[i].staged) {
        ci = int(i);
        break;
      }
  const MatvecConfig& mc = cfgs[ci];
  LAB_CUDA_CHECK(cudaFuncGetAttributes(&fa, mc.fn[gpu::kEpiResid]));
  const int64_t units = (cfg_.dim + 1) / 2, blocks = (units + mc.warps * mc.upw - 1) / (mc.warps * mc.upw);
  const int64_t per_sm = std::max<int64_t>(1, (blocks + sms - 1) / sms);
  const int64_t room = (int64_t(prop_.sharedMemPerMultiprocessor) - kAttnBlocksPerSm * int64_t(attn_smem)) / per_sm -
                       int64_t(reserved) - int64_t(fa.sharedSizeBytes) - int64_t(gpu::MatvecSmemBytes(int(cfg_.q_dim()))) -
                       kSmemMargin;
  stage_budget_ = stage_kb_ ? stage_kb_ * 1024 : size_t(std::max<int64_t>(0, room));
  if (o_stage_config_ >= 0) config_[kO] = o_stage_config_;
  // A function's carveout is the process's, not the engine's: an engine made after one with
  // LAB_GPU_CARVEOUT=max (the kernel lab's engine rows, a test run) hands its kernels back to the driver's
  // choice, so that it is not timed on the split that cost 5%. Only a hint: a refusal is ignored.
  static bool carveout_set = false;
  if (carveout_max_) {  // one L1/shared split for every decode kernel, so that their blocks can share an SM
    for (const MatvecConfig& m : cfgs)
      for (MatvecFn f : m.fn)
        if (f) LAB_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    for (const AttnLayout& a : attn_)
      if (a.fn)
        LAB_CUDA_CHECK(cudaFuncSetAttribute(a.fn, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    carveout_set = true;
  } else if (carveout_set) {
    for (const MatvecConfig& m : cfgs)
      for (MatvecFn f : m.fn)
        if (f) cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutDefault);
    for (const AttnLayout& a : attn_)
      if (a.fn) cudaFuncSetAttribute(a.fn, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutDefault);
    cudaGetLastError();
    carveout_set = false;
  }
  if (verbose_ && o_stage_config_ >= 0)
    std::fprintf(stderr, "gpu_opt: o_proj staged with %s: %d of %d chunks per row in shared memory (%zu KB per block)\n",
                 mc.name, StageChunks(mc, int(cfg_.q_dim())), int(cfg_.q_dim() / 8), stage_budget_ / 1024);
}

// Chunks (16 bytes) at the start of each row that a staged tile copies into shared memory for input
// length K (MatvecStageChunks): within the budget and the block's limit.
int GpuOptEngine::StageChunks(const MatvecConfig& mc, int K) const {
  // The kernel's static shared memory (a few words per warp) is well under kStaticSmem.
  constexpr int64_t kStaticSmem = 1024;
  const int64_t cap = int64_t(prop_.sharedMemPerBlockOptin) - kStaticSmem - int64_t(gpu::MatvecSmemBytes(K, 0, true));
  return gpu::MatvecStageChunks(mc.warps, mc.upw, K, std::min<int64_t>(int64_t(stage_budget_), cap));
}

}  // namespace gpu_opt
}  // namespace lab
