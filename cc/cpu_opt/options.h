// cpu_opt's options: the environment knobs its engine reads when it is created, and the stopwatch its
// decode step keeps per thread when LAB_CPU_PROFILE=1. Kept apart from cpu_opt_engine.cc so that the
// engine file reads as the lesson.
//
// Knobs for experiments (environment, read when an engine is created; variants.py compares them; a bad
// value is refused with an InputError naming the choices, by EnvChoice (cc/core/env.h) or by kernels.cc):
//   LAB_CPU_ISA=avx512|avx2|scalar   the kernel table (kernels.h, SelectKernels)
//   LAB_CPU_PREFILL=mlp|bf16|fp32    where prefill uses bf16 products (kernels.h, SelectPrefill)
//   LAB_CPU_ATTN=tile|token          prefill attention kernel (default tile where the table has one)
//   LAB_CPU_MATVEC=1|4|auto          decode weight streams per thread (default: timed at creation)
//   LAB_CPU_PREFILL_CHUNK=16..4096   prompt tokens per matrix-matrix pass (default 192)
//   LAB_CPU_PRUNE=1|0                last-layer pruning when only the last logits are asked for
//                                    (default 1; 0 runs the last layer on every row, to measure it)
//   LAB_CPU_PAGES=huge|small|map     where the weights live (cc/core/weights.h): copied onto 2 MiB pages
//                                    (default), copied onto 4 KiB pages, or used from the file's map
//   LAB_CPU_DECODE=region|ops        a decode step as one parallel region with barriers (DecodeStep), or
//                                    as prefill's path with one token (a parallel region per op)
//   LAB_CPU_DECODE_ATTN=split|head|N decode attention: one item per (KV head, key range) with the whole
//                                    GQA group (default), N ranges (1..16) forced, or one item per query
//                                    head (before; DecodeAttnItem)
//   LAB_CPU_SCHEDULE=guided|static   how DecodeStep deals a product's row tasks to the threads: OpenMP's
//                                    guided (shrinking chunks, taken as threads free up; default), or
//                                    equal contiguous shares (before; DecodeMatVecs)
//   LAB_CPU_PROFILE=1                DecodeStep times its parts per thread, work and barrier wait apart
//                                    (phase_seconds(); cc/cpu_opt/decode_profile.py)
#pragma once
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "cc/core/env.h"  // EnvChoice
#include "cc/core/weights.h"

namespace lab {
namespace cpu_opt {

constexpr int64_t kPrefillChunk = 192;  // prompt tokens per matrix-matrix pass (LAB_CPU_PREFILL_CHUNK)
constexpr int64_t kMaxSplits = 16;      // decode attention: most key ranges per KV head

// The prefill chunk: kPrefillChunk, or LAB_CPU_PREFILL_CHUNK (16..4096 tokens) for experiments.
int64_t PrefillChunk();
// LAB_CPU_PAGES: where the weights live (default: a copy on 2 MiB pages).
WeightMemory CpuPages();
// LAB_CPU_DECODE: one parallel region per decode step (default) or one per op.
bool DecodeRegion();
// LAB_CPU_DECODE_ATTN: decode attention split by (KV head, key range), the ranges chosen per step (0,
// the default), or N ranges per KV head whatever the keys (1..kMaxSplits; some may be empty: tests), or
// one item per query head (-1).
int DecodeAttnMode();
// LAB_CPU_SCHEDULE: DecodeStep's row tasks guided (default) or in equal contiguous shares (static).
bool GuidedSchedule();

// The parts of a decode step that LAB_CPU_PROFILE=1 times (DecodeStep, PhaseSeconds).
enum Phase { kVector, kQkv, kRope, kAttention, kO, kGateUp, kDown, kLmHead, kPhases };
constexpr const char* kPhaseNames[kPhases] = {"vector", "qkv", "rope_cache", "attention", "o_proj", "gate_up", "down", "lm_head"};

// One thread's stopwatch for DecodeStep: Mark(phase, part) adds the time since the last mark to
// acc[phase][part] (part 0: the thread's own work, 1: its wait at the barrier that ends the phase).
// A clock without acc (profiling off) does nothing, so the step runs the same code either way.
struct PhaseClock {
  double* acc = nullptr;  // [kPhases][2] of this thread, or null
  std::chrono::steady_clock::time_point last;
  explicit PhaseClock(double* a) : acc(a) {
    if (acc) last = std::chrono::steady_clock::now();
  }
  void Mark(Phase phase, int part) {
    if (!acc) return;
    const auto now = std::chrono::steady_clock::now();
    acc[2 * phase + part] += std::chrono::duration<double>(now - last).count();
    last = now;
  }
};

}  // namespace cpu_opt
}  // namespace lab
