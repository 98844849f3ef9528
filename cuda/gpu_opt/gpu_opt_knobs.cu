// Stage 4 — gpu_opt's decode knobs (the class is in gpu_opt_engine_impl.cuh): ReadDecodeEnv reads them
// once, when the engine is created, refuses a bad value with InputError before any device work, and
// picks the decode attention kernels and layouts they name.
//
// Environment knobs (for experiments and the kernel lab): LAB_GPU_GRAPH=0 (launch kernels one by one),
// LAB_GPU_PDL=0 (no programmatic dependent launch), LAB_GPU_L2_PREFETCH=all|o (bulk L2 prefetch of
// every matvec's / only o_proj's weights before the PDL wait; off by default), LAB_GPU_MATVEC_CONFIG=<i> (skip auto-tuning, use
// config i for every kind), LAB_GPU_TUNE=graph|kernel (default graph: each matvec timed alone, then each
// kind's tile re-chosen by timing replays of the whole captured decode step, for models of 256 MB or
// more; kernel: the first part only, whose picks differ from process to process by up to 3% of decode
// speed, README "The third pass"), LAB_GPU_DECODE_ATTN=v2|v1|v3 (decode attention: v2, the default, lets
// o_proj launch while attention runs and merges any number of splits with fewer round trips; v1 the
// earlier kernel; v3 the splits of a kv head merged in thread-block clusters of 8 through distributed
// shared memory, measured slower than v2 and kept as a lab version, README "Attention in clusters"),
// LAB_GPU_ATTN_SPLITS=<n> (decode attention key splits per kv head, the grid's second dimension: by
// default with v2 as many as fit the SMs in one wave beside the kv heads (49 for Llama-3.1-8B's 4-warp
// blocks on 132 SMs), at most 64; 32 with v1, the most it merges; 64 with v3, whole clusters; README
// "One wave of splits"), LAB_GPU_ATTN_WARPS=2|4|8 (warps per decode attention block, v2 only),
// LAB_GPU_ATTN_SYNC=acqrel|fence (how a decode attention split releases its partial to the block that
// merges: the counter's increment as one acquire-release atomic, the default; or full fences around a relaxed
// increment, as before),
// LAB_GPU_ATTN_SOFTMAX=round|step (decode attention's online softmax once per round of loads, branch-free,
// its scores first: one max, one rescale, the default with v2 and 4 or 8 warps; or after every step of keys,
// with a per-step skip and a per-lane branch, as before),
// LAB_GPU_ATTN_SKIP=0 (with LAB_GPU_ATTN_SOFTMAX=step: attention warps also run the steps of a round past
// their split's last key, as before; the round softmax always runs them, masked),
// LAB_GPU_ATTN_U=8 (8 steps of K/V loads in flight per decode attention warp, as before; default 4),
// LAB_GPU_ATTN_MIN_CHUNK=<keys> (fewest keys per decode attention split, default 16; 32 before),
// LAB_GPU_ATTN_SHORT=<keys>|0 (steps attending at most this many keys run 8-warp attention blocks over
// 64-key splits, from their own graphs; default 64 x the 8-warp blocks that fit one wave per kv head
// (2 per SM: 2,112 keys for Llama-3.1-8B on an H100 or H200); 0 off, as it is by default when one of the three knobs above pins a layout; README
// "Attention at short contexts"), LAB_GPU_ATTN_SHORT_BLOCKS=2|1 (the short layout's kernel compiled for 2
// blocks per SM, the default, at most 128 registers; or 1, no register cap, the bound halved),
// LAB_GPU_ATTN_SPREAD=<keys>|0 (steps attending at most this many keys run the short layout's blocks one an SM,
// by unused dynamic shared memory; default, since session 21: as many as fit the SMs one each, 1,024 keys for
// Llama-3.1-8B on 132 SMs; 0: two an SM as before),
// LAB_GPU_ATTN_Q=shared|regs (the short layout's q read from shared memory at every score, so that its 128
// registers do not spill, the default for 4 or more query heads a kv head; or held in registers, as before
// and the default below 4),
// LAB_GPU_ATTN_MMA=auto|0|1|4|8 (1 or 4: the short layout's kernel is AttentionMmaKernel, 4 warps whose scores and
// sums over keys run on the tensor cores in fp16; 0: AttentionKernel's 8 warps on the CUDA cores in fp32, the
// default before session 27; 8: the tensor-core kernel's 8 warps over 128-key splits; auto, the default: 4 warps in
// the spread layout's steps, the CUDA-core kernel in the other short ones, and no tensor cores where a knob of the
// CUDA-core kernel is given; README "Session 27"),
// LAB_GPU_O_STAGE=off|<staged tile> (o_proj's first batch copied into shared memory while attention
// runs: gpu_opt_tune.cu, SetupStaging), LAB_GPU_O_STAGE_KB=<KB> (its budget per block instead of what
// fits beside attention), LAB_GPU_CARVEOUT=max|auto (the decode kernels' L1/shared split: max, the
// default with staging, keeps every decode kernel on one split so that their blocks can share an SM),
// LAB_GPU_EARLY=all|not_o|qkv|off (the matvecs' second weight batch is issued before the PDL wait too, so
// that HBM streams while x is staged after it: for every kind, all but o_proj, qkv only (the default), or
// none; README "The third pass"), LAB_GPU_SECOND=xb|after_x|after_wait (where the other matvecs issue it:
// right after the wait in the kernels whose x comes by one bulk copy (LAB_GPU_X_BULK) and after x is staged
// in the others, the default since session 14; after x is staged everywhere; or right after the wait
// everywhere, before x, measured 1.4% slower on the H200; README "x by one bulk copy"),
// LAB_GPU_ACT16=all|h|off (decode's matvec inputs in fp16, as transformers' fp16 forward and this
// engine's tensor-core prefill hold them, so each block stages half the bytes: all, every matvec's, the
// default, the residual stream kept in fp32 beside its fp16 copy; h, down's input only; off, fp32 as
// before the x-staging pass; README "Staging x"), LAB_GPU_X_BULK=all|resid|down|off|gate_up (which
// matvecs' fp16 x comes into shared memory by one bulk copy right after the wait instead of the staging
// loop's L2 round trips: every one that has such a kernel, the default since session 23 (the ring tiles:
// o_proj's and down's); o_proj's and down's, the default from session 14 to 22; down's only; none; those
// and gate_up's; README "x by one bulk copy", "Session 23"),
// LAB_GPU_TILES=<kind>=<tile>,... (those kinds' tiles fixed, not auto-tuned),
// LAB_GPU_PERSIST=0 (the tuners leave out the persistent ".b" tiles), LAB_GPU_PERSIST_GRID=<n> (their
// blocks, instead of as many as fit on the SMs alone), LAB_GPU_RING_PRE=<stages> (a ring tile's producer
// issues this many stages before its consumers pass the PDL wait, the rest of the ring after: free slots
// that stream while x is staged; unset, or at least the ring's stages: the whole ring before),
// LAB_GPU_NORM_EARLY=1|0|all (1, the default since session 19: a ring tile with a norm copies its norm weights
// into shared memory before its PDL wait; 0: loads them with x after it; all, session 21: that, and a register
// tile with a norm asks their lines into L1 before its wait),
// LAB_GPU_NORM_FOLD=1|0 (1, the default since session 22: each layer's two norm weights are folded into the
// matrix they feed, Wqkv and Wgate_up, at load, and set to ones; the register tiles then skip them),
// LAB_GPU_MLP=auto|split|fused (fused: each layer's gate/up, SiLU and down as one kernel, RingMlpKernel, down
// split by columns over a second copy of W_down cut at load; needs ACT16=all and NORM_FOLD=1; README "Session
// 24"; auto, the default since session 25: fused where it can run and the card holds W_down's second copy,
// else split; its qkv takes the fp32 x by one bulk copy, XB 3),
// LAB_GPU_TRACE=1 (each decode() step's launches timed inside the graph with %globaltimer, summed per
// kind: phase_seconds(), cuda/gpu_opt/step_trace.py), LAB_GPU_TUNE_POS=<position> (the step GraphTune
// times: default 1024, or the context's last if that is lower), LAB_GPU_TUNE_SPREAD_POS=<position> (where the
// spread layout is in use and GraphTune's position is past it, its steps get tiles of their own, tuned at a
// step of this position: default half the layout's keys; 0: they keep the main tiles; session 28),
// LAB_GPU_TILES_SPREAD=<kind>=<tile>,... (the spread steps' tiles of those kinds fixed), LAB_GPU_LOGITS=mapped|copy (mapped, the default: the decode step's lm_head writes the logits straight
// into mapped pinned host memory; copy: into device memory, then a device-to-host copy after the step),
// LAB_GPU_VERBOSE=1 (print the tuning tables and the prefill plan to stderr).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cc/core/env.h"
#include "cc/core/errors.h"
#include "cuda/gpu_opt/gpu_opt_engine_impl.cuh"

namespace lab {
namespace gpu_opt {
namespace {

template <int HD, bool V2, int W = gpu::kAttnWarps, int U = 0, int CL = 0, bool RS = false, int MINB = 0, bool QS = false>
AttnFn AttnFor(int G) {
  switch (G) {
    case 1: return gpu::AttentionKernel<HD, 1, V2, W, U, CL, RS, MINB, QS>;
    case 2: return gpu::AttentionKernel<HD, 2, V2, W, U, CL, RS, MINB, QS>;
    case 3: return gpu::AttentionKernel<HD, 3, V2, W, U, CL, RS, MINB, QS>;
    case 4: return gpu::AttentionKernel<HD, 4, V2, W, U, CL, RS, MINB, QS>;
    case 5: return gpu::AttentionKernel<HD, 5, V2, W, U, CL, RS, MINB, QS>;
    case 6: return gpu::AttentionKernel<HD, 6, V2, W, U, CL, RS, MINB, QS>;
    case 7: return gpu::AttentionKernel<HD, 7, V2, W, U, CL, RS, MINB, QS>;
    case 8: return gpu::AttentionKernel<HD, 8, V2, W, U, CL, RS, MINB, QS>;
  }
  return nullptr;
}

// warps: 4 (kAttnWarps) for every path; 2 or 8 only with V2 (decode, LAB_GPU_ATTN_WARPS; 8 runs 4 steps
// in flight). u: 0 (the kernel's rule) or 4 (V2 with 4 warps, LAB_GPU_ATTN_U=4). rs: the softmax updated
// once per round of loads (LAB_GPU_ATTN_SOFTMAX=round), for the decode layouts with 4 steps in flight.
// min_blocks: 1 compiles the 8-warp round-softmax kernel for one block per SM, no register cap
// (LAB_GPU_ATTN_SHORT_BLOCKS=1); otherwise the kernel's rule. qs: the 8-warp round-softmax kernel with q in
// shared memory (the short layout's default; LAB_GPU_ATTN_Q=regs: false).
AttnFn AttnKernelFor(int hd, int G, bool v2, int warps = gpu::kAttnWarps, int u = 0, int cluster = 0, bool rs = false,
                     int min_blocks = 0, bool qs = false) {
  if (v2 && cluster == gpu::kAttnCluster && warps == gpu::kAttnWarps && u == 4)
    return hd == 64 ? AttnFor<64, true, gpu::kAttnWarps, 4, gpu::kAttnCluster>(G)
                    : AttnFor<128, true, gpu::kAttnWarps, 4, gpu::kAttnCluster>(G);
  if (v2 && warps == 2) return hd == 64 ? AttnFor<64, true, 2>(G) : AttnFor<128, true, 2>(G);
  if (v2 && warps == 8 && rs && qs)
    return hd == 64 ? AttnFor<64, true, 8, 4, 0, true, 0, true>(G) : AttnFor<128, true, 8, 4, 0, true, 0, true>(G);
  if (v2 && warps == 8 && rs && min_blocks == 1)
    return hd == 64 ? AttnFor<64, true, 8, 4, 0, true, 1>(G) : AttnFor<128, true, 8, 4, 0, true, 1>(G);
  if (v2 && warps == 8 && rs) return hd == 64 ? AttnFor<64, true, 8, 4, 0, true>(G) : AttnFor<128, true, 8, 4, 0, true>(G);
  if (v2 && warps == 8) return hd == 64 ? AttnFor<64, true, 8, 4>(G) : AttnFor<128, true, 8, 4>(G);
  if (v2 && u == 4 && rs)
    return hd == 64 ? AttnFor<64, true, gpu::kAttnWarps, 4, 0, true>(G) : AttnFor<128, true, gpu::kAttnWarps, 4, 0, true>(G);
  if (v2 && u == 4) return hd == 64 ? AttnFor<64, true, gpu::kAttnWarps, 4>(G) : AttnFor<128, true, gpu::kAttnWarps, 4>(G);
  if (hd == 64) return v2 ? AttnFor<64, true>(G) : AttnFor<64, false>(G);
  return v2 ? AttnFor<128, true>(G) : AttnFor<128, false>(G);
}

// The short layout's tensor-core kernel (LAB_GPU_ATTN_MMA=1|4|8): W warps of 16 keys, splits of 16 W keys.
template <int HD, int W>
AttnFn AttnMmaFor(int G) {
  switch (G) {
    case 1: return gpu::AttentionMmaKernel<HD, 1, W>;
    case 2: return gpu::AttentionMmaKernel<HD, 2, W>;
    case 3: return gpu::AttentionMmaKernel<HD, 3, W>;
    case 4: return gpu::AttentionMmaKernel<HD, 4, W>;
    case 5: return gpu::AttentionMmaKernel<HD, 5, W>;
    case 6: return gpu::AttentionMmaKernel<HD, 6, W>;
    case 7: return gpu::AttentionMmaKernel<HD, 7, W>;
    case 8: return gpu::AttentionMmaKernel<HD, 8, W>;
  }
  return nullptr;
}
AttnFn AttnMmaKernelFor(int hd, int G, int warps) {
  if (warps == 8) return hd == 64 ? AttnMmaFor<64, 8>(G) : AttnMmaFor<128, 8>(G);
  return hd == 64 ? AttnMmaFor<64, 4>(G) : AttnMmaFor<128, 4>(G);
}

}  // namespace

// The decode knobs (the file's header lists them); a bad value throws InputError before any device work.
void GpuOptEngine::ReadDecodeEnv() {
  const ModelConfig& c = cfg_;
  const int64_t hd = c.head_dim;
  use_graph_ = EnvFlag("LAB_GPU_GRAPH", true);
  use_pdl_ = EnvFlag("LAB_GPU_PDL", true) && prop_.major >= 9;
  trace_on_ = EnvFlag("LAB_GPU_TRACE", false);
  // Bulk L2 prefetch of weights before the PDL wait: off by default (measured slower, see README);
  // "all" for every matvec, "o" for o_proj only (the kernel after the latency-bound attention).
  if (const char* pf = std::getenv("LAB_GPU_L2_PREFETCH"); pf && prop_.major >= 9) {
    const std::string v = pf;
    l2_prefetch_all_ = v == "1" || v == "all";
    l2_prefetch_o_ = l2_prefetch_all_ || v == "o";
  }
  verbose_ = EnvFlag("LAB_GPU_VERBOSE", false);
  {
    const int a = EnvChoice("LAB_GPU_DECODE_ATTN", {"v2", "v1", "v3"});
    decode_attn_v2_ = a != 1;
    attn_cluster_ = a == 2 ? gpu::kAttnCluster : 0;
    if (attn_cluster_ && prop_.major < 9)
      throw InputError("LAB_GPU_DECODE_ATTN=v3 needs thread-block clusters (compute capability 9.0 or newer)");
  }
  // V1 merges at most 32 splits; V3 keeps 64 (whole clusters). V2's default is set below, once its
  // kernel is known: one wave.
  attn_[0].splits = decode_attn_v2_ ? gpu::kAttnMaxSplitsV2 : gpu::kAttnMaxSplits;
  attn_splits_set_ = EnvGiven("LAB_GPU_ATTN_SPLITS");
  if (attn_splits_set_) {
    const int n = std::atoi(std::getenv("LAB_GPU_ATTN_SPLITS"));
    const int cap = decode_attn_v2_ ? gpu::kAttnMaxSplitsV2 : gpu::kAttnMaxSplits;
    if (n < 1 || n > cap)
      throw InputError("LAB_GPU_ATTN_SPLITS must be 1.." + std::to_string(cap) + " with decode attention " +
                       (decode_attn_v2_ ? "v2" : "v1"));
    attn_[0].splits = n;
    if (attn_cluster_ && n % attn_cluster_)
      throw InputError("LAB_GPU_ATTN_SPLITS must be a multiple of " + std::to_string(attn_cluster_) +
                       " with decode attention v3 (whole clusters)");
  }
  logits_mapped_ = EnvChoice("LAB_GPU_LOGITS", {"mapped", "copy"}) == 0;
  graph_tune_ = EnvChoice("LAB_GPU_TUNE", {"graph", "kernel"}) == 0;
  // The position whose step GraphTune times. Added to test whether tuning at 591 instead of 1024 picked
  // faster tiles for context 512; its A/B found no difference (README "The bench's tiles are tuned at 1024").
  graph_tune_pos_set_ = EnvGiven("LAB_GPU_TUNE_POS");
  graph_tune_pos_ = int(EnvInt("LAB_GPU_TUNE_POS", 0, 1 << 20, kGraphTunePos));
  // The spread layout's steps tuned apart at this position (GraphTune; 0: they keep the main tiles).
  spread_tune_pos_set_ = EnvGiven("LAB_GPU_TUNE_SPREAD_POS");
  spread_tune_pos_ = int(EnvInt("LAB_GPU_TUNE_SPREAD_POS", 0, 1 << 20, kSpreadTunePosHalf));
  // Decode attention: V2 by default (LAB_GPU_DECODE_ATTN=v1 for the earlier kernel); the simple
  // prefill keeps V1 (launched without PDL, it gains nothing from V2's early trigger).
  AttnLayout& a0 = attn_[0];
  bool layout_knob = false;  // warps, steps in flight or split unit given: one layout for every context
  if (const char* w = std::getenv("LAB_GPU_ATTN_WARPS")) {
    layout_knob = true;
    a0.warps = std::atoi(w);
    if ((a0.warps != 2 && a0.warps != gpu::kAttnWarps && a0.warps != 8) || (a0.warps != gpu::kAttnWarps && !decode_attn_v2_))
      throw InputError(std::string("LAB_GPU_ATTN_WARPS must be 2, 4 or 8 (2 and 8 need the v2 decode attention), not '") +
                       w + "'");
  }
  // 4 steps of K/V loads in flight per warp (the decode default since the pass of README "Attention
  // latency"); LAB_GPU_ATTN_U=8 restores the kernel's own rule (8 for groups up to 4).
  int attn_u = decode_attn_v2_ && a0.warps >= gpu::kAttnWarps ? 4 : 0;
  if (const char* u = std::getenv("LAB_GPU_ATTN_U")) {
    layout_knob = true;
    attn_u = std::atoi(u);
    if ((attn_u != 4 && attn_u != 8) || !decode_attn_v2_ || a0.warps != gpu::kAttnWarps)
      throw InputError(std::string("LAB_GPU_ATTN_U must be 4 or 8 (with the v2 decode attention, 4 warps), not '") +
                       u + "'");
    if (attn_u == 8) attn_u = 0;
  }
  if (const char* m = std::getenv("LAB_GPU_ATTN_MIN_CHUNK")) {
    layout_knob = true;
    a0.min_chunk = std::atoi(m);
    if (a0.min_chunk < 8 || a0.min_chunk > 1024 || a0.min_chunk % 8)
      throw InputError(std::string("LAB_GPU_ATTN_MIN_CHUNK must be a multiple of 8 in 8..1024, not '") + m + "'");
  }
  ReadTileEnv();
  if (attn_cluster_ && (a0.warps != gpu::kAttnWarps || attn_u != 4))
    throw InputError("decode attention v3 runs 4 warps with 4 steps in flight (LAB_GPU_ATTN_WARPS / LAB_GPU_ATTN_U)");
  // The online softmax once per round of loads, branch-free (AttentionKernel's RS): the default wherever the
  // layout allows it, the 4-warp layout with 4 steps in flight and the 8-warp one, not clusters (+0.7% decode
  // tok/s at 512, +1.3% at 2048 on the H200, README "Attention's compute, branch-free");
  // LAB_GPU_ATTN_SOFTMAX=step as before, =round refused where the layout does not allow it.
  {
    const bool fits = decode_attn_v2_ && !attn_cluster_ && a0.warps != 2 && !(a0.warps == gpu::kAttnWarps && attn_u != 4);
    attn_softmax_set_ = EnvGiven("LAB_GPU_ATTN_SOFTMAX");
    const int sm = EnvChoice("LAB_GPU_ATTN_SOFTMAX", {"round", "step"});
    if (attn_softmax_set_ && sm == 0 && !fits)
      throw InputError("LAB_GPU_ATTN_SOFTMAX=round needs the v2 decode attention with 4 or 8 warps and 4 steps in flight");
    attn_round_softmax_ = sm == 0 && fits;
  }
  a0.fn = AttnKernelFor(int(hd), int(c.group_size()), decode_attn_v2_, a0.warps, attn_u, attn_cluster_, attn_round_softmax_);
  // V2's splits per kv head: as many as the SMs hold at once (README "One wave of splits"). The old
  // default, 64, put 512 4-warp blocks (143 registers: 3 per SM, 396 resident on 132 SMs) on Llama-3.1-8B
  // past 2,048 keys, and the 16-key unit then gave 49 to 64 splits: from ~2,350 keys a second wave,
  // decode 3% slower on the H200.
  if (decode_attn_v2_ && !attn_cluster_ && !attn_splits_set_)
    a0.splits = std::min(gpu::kAttnMaxSplitsV2, WaveSplits(a0.fn, a0.warps));
  // The short-context layout (README "Attention at short contexts"): 8-warp blocks over 64-key splits,
  // a merge of few partials, while the kv heads' working blocks fit the SMs at the two per SM the
  // kernel is compiled for (2,112 keys at 8 kv heads on 132 SMs); past that they take a second wave and
  // the 4-warp layout is faster. On by default with v2 unless a layout knob (warps, steps in flight,
  // split unit) pins one layout for every context; LAB_GPU_ATTN_SHORT=<keys> sets the bound, 0 turns it off.
  const bool pinned = !decode_attn_v2_ || attn_cluster_ || layout_knob;
  attn_short_set_ = EnvGiven("LAB_GPU_ATTN_SHORT");
  // The short layout's registers (README "Attention's registers"). Its 8-warp round-softmax kernel needs
  // 163 registers at HD 128, G 4; compiled for 2 blocks per SM it gets 128 and spilled. Since session 12
  // (2026-11-28) q is staged in shared memory and read back at every score (AttentionKernel's QS): 128
  // registers, no spills, still 2 blocks per SM (+0.8% decode tok/s at 512 on the H200, 2 of 2 process
  // pairs), the default for groups of 4 or more; LAB_GPU_ATTN_Q=regs as before, =shared for any group.
  // LAB_GPU_ATTN_SHORT_BLOCKS=1 instead compiles it for one block per SM, no register cap: attention itself
  // is faster, but o_proj's blocks no longer fit beside it to start their weight loads early, and the
  // one-wave bound halves (1,056 keys for Llama-3.1-8B on 132 SMs); +0.5%, q then in registers. Explicit
  // values that do not apply are refused.
  attn_short_blocks_set_ = EnvGiven("LAB_GPU_ATTN_SHORT_BLOCKS");
  const int short_blocks = EnvChoice("LAB_GPU_ATTN_SHORT_BLOCKS", {"2", "1"}) == 1 ? 1 : 2;
  if (short_blocks == 1 && (pinned || !attn_round_softmax_))
    throw InputError("LAB_GPU_ATTN_SHORT_BLOCKS=1 needs the short layout (v2, no layout knob) with the round softmax");
  attn_short_blocks_ = short_blocks;
  attn_q_set_ = EnvGiven("LAB_GPU_ATTN_Q");
  const bool q_fits = !pinned && attn_round_softmax_ && short_blocks == 2;
  // By default only where q in registers spills: ptxas spills it for every group of 4 or more query heads a
  // kv head (HD 64 and 128), none below, where staging would only add the shared loads.
  const bool q_shared = attn_q_set_ ? EnvChoice("LAB_GPU_ATTN_Q", {"shared", "regs"}) == 0 : c.group_size() >= 4;
  if (attn_q_set_ && q_shared && !q_fits)
    throw InputError("LAB_GPU_ATTN_Q=shared needs the short layout (v2, no layout knob) with the round softmax, 2 blocks per SM");
  attn_q_shared_ = q_shared && q_fits;
  // The tensor-core kernel for the short layout (LAB_GPU_ATTN_MMA=1 or 4: 4 warps of 16 keys, the same 64-key splits
  // and merge; 8: 8 warps over 128-key splits, half the partials; README "Session 27"); no register or q knobs.
  // auto, the default since session 27: the 4-warp tensor-core kernel for the spread layout's steps (at most 1,024
  // keys for Llama-3.1-8B on 132 SMs), the CUDA-core kernel for the other short steps, unless a knob of the
  // CUDA-core kernel is given (LAB_GPU_ATTN_SHORT_BLOCKS, LAB_GPU_ATTN_Q, LAB_GPU_ATTN_SOFTMAX) or the card predates
  // mma.sync. With tiles pinned the tensor cores read +0.55% at 512 and the same at 2048; but with them in every short
  // step the graph tuner, which times position 1,024 (a short step past the spread bound), picked tiles 0.4% slower
  // at 512 and 1% at 2048 (README "Session 27"). An explicit 1, 4 or 8 runs them in both short layouts.
  attn_mma_set_ = EnvGiven("LAB_GPU_ATTN_MMA");
  {
    static constexpr int kWarps[] = {-1, 0, 4, 4, 8};  // the choices' warps; auto (-1) decides below
    const int warps = kWarps[EnvChoice("LAB_GPU_ATTN_MMA", {"auto", "0", "1", "4", "8"})];
    const bool cuda_core_knob = attn_short_blocks_set_ || attn_q_set_ || attn_softmax_set_;
    attn_mma_ = warps >= 0 ? warps : pinned || cuda_core_knob || prop_.major < 8 ? 0 : 4;
    if (attn_mma_ && attn_mma_set_ && (pinned || cuda_core_knob || prop_.major < 8))
      throw InputError("LAB_GPU_ATTN_MMA needs the short layout (v2, no layout knob), none of LAB_GPU_ATTN_SHORT_BLOCKS, "
                       "LAB_GPU_ATTN_Q and LAB_GPU_ATTN_SOFTMAX, and compute capability 8.0 or newer");
  }
  const bool mma_short = attn_mma_ && attn_mma_set_;  // the tensor cores in the short layout too, not only spread
  if (mma_short) attn_q_shared_ = false;
  // The two kernels a short step may run: kernel, warps, keys a block covers in one round (the split unit).
  const AttnLayout mma_lay = {attn_mma_ ? AttnMmaKernelFor(int(hd), int(c.group_size()), attn_mma_) : nullptr,
                              attn_mma_, 16 * attn_mma_};
  const AttnLayout cuda_lay = {AttnKernelFor(int(hd), int(c.group_size()), true, 8, 4, 0, attn_round_softmax_,
                                             short_blocks == 1 ? 1 : 0, attn_q_shared_),
                               8, kAttnShortChunk};
  const AttnLayout& short_lay = mma_short ? mma_lay : cuda_lay;
  attn_short_keys_ = int(EnvInt("LAB_GPU_ATTN_SHORT", 0, 1 << 20,
                                pinned ? 0 : short_lay.min_chunk * std::min(gpu::kAttnMaxSplitsV2,
                                                                            WaveSplits(short_lay.fn, short_lay.warps))));
  if (attn_short_keys_ > 0 && (!decode_attn_v2_ || attn_cluster_))
    throw InputError("LAB_GPU_ATTN_SHORT needs the v2 decode attention (LAB_GPU_DECODE_ATTN=v2)");
  if (attn_short_keys_ == 0 && (short_blocks == 1 || (attn_q_set_ && q_shared)))
    throw InputError("LAB_GPU_ATTN_SHORT_BLOCKS=1 and LAB_GPU_ATTN_Q=shared need the short layout (LAB_GPU_ATTN_SHORT not 0)");
  if (attn_short_keys_ == 0) attn_q_shared_ = false;  // no short layout: nothing staged (variant() agrees)
  if (attn_short_keys_ == 0 && attn_mma_ && attn_mma_set_)
    throw InputError("LAB_GPU_ATTN_MMA needs the short layout (LAB_GPU_ATTN_SHORT not 0)");
  if (attn_short_keys_ == 0) attn_mma_ = 0;  // no short layout: no tensor-core kernel (variant() agrees)
  // Its steps use at most one wave of splits by the bound's definition; the grid keeps 64 (the blocks past
  // a step's splits exit at once) unless LAB_GPU_ATTN_SPLITS is given. At 512 keys 64 and 49 measured
  // the same in one call and 0.3% apart in another (README "One wave of splits"); the bench ran with 64.
  if (attn_short_keys_ > 0)
    attn_[1] = {short_lay.fn, short_lay.warps, short_lay.min_chunk, attn_splits_set_ ? a0.splits : gpu::kAttnMaxSplitsV2};
  // The short layout spread one block an SM (LAB_GPU_ATTN_SPREAD, on by default since session 21; README
  // "Session 21"): the same kernel, its launches asking for unused dynamic shared memory, half an SM's, for
  // steps whose working blocks fit the SMs one each (1,024 keys at 8 kv heads on 132 SMs). A grid launched
  // early under PDL is packed onto the SMs with room (kernel lab: handoff_latency's "most" column, 6 small
  // blocks an SM on 22 SMs): at 512 keys its 64 blocks, compiled for two an SM, may share 32; spread, each has
  // an SM's issue slots alone (+0.6% a step at 512, attention 203 -> 186 us busy in the step trace). Its grid
  // is that one wave: idle blocks, placed one an SM too, would take waves to exit, and the next kernel starts
  // after the last of them (the first cut's 64 splits a kv head: o_proj's head start fell from 165 to 33 us a
  // step). Past the spread bound the short layout runs as before.
  // LAB_GPU_ATTN_SPREAD=<keys> sets the bound (steps past one wave then take more keys a split), 0 turns it off.
  attn_spread_set_ = EnvGiven("LAB_GPU_ATTN_SPREAD");
  attn_spread_keys_ = 0;
  if (attn_short_keys_ > 0) {
    const size_t pad = prop_.sharedMemPerMultiprocessor / 2;
    const AttnLayout& sp = attn_mma_ ? mma_lay : short_lay;  // auto: the tensor cores here only
    LAB_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(sp.fn), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(pad)));
    int wave = std::min(gpu::kAttnMaxSplitsV2, WaveSplits(sp.fn, sp.warps, pad));
    if (attn_splits_set_) wave = std::min(wave, a0.splits);
    attn_spread_keys_ = int(EnvInt("LAB_GPU_ATTN_SPREAD", 0, 1 << 20, std::min(attn_short_keys_, sp.min_chunk * wave)));
    attn_[2] = {sp.fn, sp.warps, sp.min_chunk, wave, pad};
  } else if (attn_spread_set_ && EnvInt("LAB_GPU_ATTN_SPREAD", 0, 1 << 20, 0) > 0) {
    throw InputError("LAB_GPU_ATTN_SPREAD needs the short layout (v2, no layout knob, LAB_GPU_ATTN_SHORT not 0)");
  }
  attn_skip_idle_ = EnvFlag("LAB_GPU_ATTN_SKIP", true) ? 1 : 0;
  // The split merge's release / acquire as one acq_rel atomic: +0.2-0.3% decode tok/s at 512 on the H200
  // in 3 of 3 process pairs (README "Attention's compute, branch-free", its last part); LAB_GPU_ATTN_SYNC=fence
  // as before.
  attn_sync_acqrel_ = EnvChoice("LAB_GPU_ATTN_SYNC", {"acqrel", "fence"}) == 0 ? 1 : 0;
  attn_prefill_fn_ = AttnKernelFor(int(hd), int(c.group_size()), false);
  if (verbose_)
    std::fprintf(stderr,
                 "gpu_opt: decode attention %d-warp blocks, %d splits per kv head; short layout %s%d keys; spread up to "
                 "%d keys\n", a0.warps, a0.splits, attn_short_keys_ ? "up to " : "off: ", attn_short_keys_, attn_spread_keys_);
}

// Decode attention blocks of `fn` (warps x 32 threads, `smem` bytes of dynamic shared memory) that the SMs hold at
// once, per kv head: the most splits a step can launch without a second wave (README "One wave of splits").
int GpuOptEngine::WaveSplits(AttnFn fn, int warps, size_t smem) const {
  int per_sm = 0;
  LAB_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, reinterpret_cast<const void*>(fn), warps * 32, smem));
  return std::max(1, per_sm * prop_.multiProcessorCount / int(cfg_.n_kv_heads));
}

}  // namespace gpu_opt
}  // namespace lab
