// CoordinateSearch (tile_search.h) on cost tables built here: the search GraphTune runs over the decode
// step's tiles, checked on the CPU. Each check prints what it found; a failed one exits 1.
#include "cuda/gpu_opt/tile_search.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <vector>

namespace {

using lab::gpu_opt::CoordinateSearch;
using lab::gpu_opt::PickByRounds;
using lab::gpu_opt::TopChoices;
using lab::gpu_opt::TileSearchResult;
using lab::gpu_opt::TileTrial;

int failures = 0;
void Expect(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

// A step-like cost: each kind's own time, plus a term for every pair of kinds (the neighbours' effect on
// each other), all random.
struct PairCost {
  int kinds, cands;
  std::vector<double> own, pair;  // own[k * cands + c], pair[((k * kinds + l) * cands + c) * cands + d]
  int calls = 0;
  PairCost(int k, int c, unsigned seed, double pair_scale) : kinds(k), cands(c) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    own.resize(size_t(k) * c);
    for (double& v : own) v = 1.0 + u(rng);
    pair.resize(size_t(k) * k * c * c);
    for (double& v : pair) v = pair_scale * u(rng);
  }
  double operator()(const std::vector<int>& ch) {
    ++calls;
    double t = 0;
    for (int k = 0; k < kinds; ++k) {
      t += own[k * cands + ch[k]];
      for (int l = k + 1; l < kinds; ++l) t += pair[((k * kinds + l) * cands + ch[k]) * cands + ch[l]];
    }
    return t;
  }
};

bool CoordinateMinimum(PairCost& f, const std::vector<int>& ch, double cost) {
  for (int k = 0; k < f.kinds; ++k)
    for (int c = 0; c < f.cands; ++c) {
      std::vector<int> t = ch;
      t[k] = c;
      if (f(t) < cost - 1e-12) return false;
    }
  return true;
}

std::vector<std::vector<int>> AllCandidates(int kinds, int cands) {
  std::vector<std::vector<int>> all(kinds);
  for (auto& v : all)
    for (int c = 0; c < cands; ++c) v.push_back(c);
  return all;
}

void RandomTablesEndAtACoordinateMinimum() {
  const int kinds = 5, cands = 8;
  int minima = 0, one_pass_minima = 0, worse_one_pass = 0;
  const double inf = std::numeric_limits<double>::infinity();
  for (unsigned seed = 1; seed <= 200; ++seed) {
    PairCost f(kinds, cands, seed, 0.5);
    const std::vector<int> start(kinds, 0), order = {0, 1, 2, 3, 4};
    auto cost = [&](const std::vector<int>& c) { return f(c); };
    const TileSearchResult r = CoordinateSearch(start, order, AllCandidates(kinds, cands), cost, 50, inf, false);
    const TileSearchResult one = CoordinateSearch(start, order, AllCandidates(kinds, cands), cost, 1, inf, false);
    minima += r.converged && CoordinateMinimum(f, r.choice, r.cost) && std::abs(f(r.choice) - r.cost) < 1e-12;
    one_pass_minima += CoordinateMinimum(f, one.choice, one.cost);
    worse_one_pass += one.cost > r.cost + 1e-12;
  }
  std::printf("  200 random tables: %d end at a coordinate-wise minimum; one pass alone: %d, and %d of its "
              "results cost more\n", minima, one_pass_minima, worse_one_pass);
  Expect(minima == 200, "repeated passes end at a coordinate-wise minimum whose cost is the one returned");
  // The reason for the passes: with neighbours that matter, one pass in a fixed order often stops short.
  Expect(one_pass_minima < 200 && worse_one_pass > 0, "one pass alone stops short on some tables");
}

// The H200's case (session 20), in miniature: kind 0 (small, o_proj) tuned first beside the start's tile of
// kind 1 (large, down) takes tile 1, with which kind 1's best tile (2) loses; tuned largest first, kind 1
// takes tile 2 and kind 0 keeps tile 0, the cheaper pair.
double TrapCost(const std::vector<int>& c) {
  static const double t[3][3] = {  // t[kind 0's tile][kind 1's tile]
      {4.02, 4.01, 3.84},
      {3.98, 3.88, 3.89},
      {4.05, 4.04, 4.03}};
  return t[c[0]][c[1]];
}

void LargestFirstAvoidsTheTrap() {
  const std::vector<std::vector<int>> all = AllCandidates(2, 3);
  const TileSearchResult small_first = CoordinateSearch({0, 0}, {0, 1}, all, TrapCost, 4, 0.01, false);
  const TileSearchResult large_first = CoordinateSearch({0, 0}, {1, 0}, all, TrapCost, 4, 0.01, false);
  std::printf("  small first: (%d, %d) %.2f; large first: (%d, %d) %.2f\n", small_first.choice[0],
              small_first.choice[1], small_first.cost, large_first.choice[0], large_first.choice[1], large_first.cost);
  Expect(small_first.choice == std::vector<int>({1, 1}) && small_first.cost == 3.88,
         "tuned small kind first, the search stops at the trap (a coordinate-wise minimum)");
  Expect(large_first.choice == std::vector<int>({0, 2}) && large_first.cost == 3.84,
         "tuned largest first, it finds the cheaper pair");
}

// Call 7 of session 20, in miniature: kind 0 (gate_up: ring.c16.s16.k256, ring.c8.s16.k256, another) and
// kind 1 (down: w8.u1.r4, w8.u1.r4.b, a ring). From (0, 0) either change alone loses; both together win.
double PairTrapCost(const std::vector<int>& c) {
  static const double t[3][3] = {  // t[kind 0's tile][kind 1's tile], ms a step
      {3.893, 3.895, 3.940},
      {3.911, 3.875, 3.945},
      {3.950, 3.952, 3.990}};
  return t[c[0]][c[1]];
}

void PairStepLeavesTheTrap() {
  const std::vector<std::vector<int>> all = AllCandidates(2, 3);
  const TileSearchResult plain = CoordinateSearch({0, 0}, {0, 1}, all, PairTrapCost, 4, 0.01, false);
  const TileSearchResult paired = CoordinateSearch({0, 0}, {0, 1}, all, PairTrapCost, 4, 0.01, true);
  std::printf("  without the pair step (%d, %d) %.3f in %d trials; with it (%d, %d) %.3f in %d\n",
              plain.choice[0], plain.choice[1], plain.cost, plain.trials, paired.choice[0], paired.choice[1],
              paired.cost, paired.trials);
  Expect(plain.choice == std::vector<int>({0, 0}), "one kind at a time stays in the trap");
  Expect(paired.choice == std::vector<int>({1, 1}) && paired.cost == 3.875 && paired.converged,
         "the pair step finds the cheaper pair, and the passes after it converge");
  Expect(paired.trials == plain.trials + 1 + 2, "the pair step tries only the pools' pairs (one here), then passes");
  // On random tables: never worse than without it, sometimes better, still a coordinate-wise minimum.
  const double inf = std::numeric_limits<double>::infinity();
  int better = 0, worse = 0, minima = 0;
  for (unsigned seed = 1; seed <= 200; ++seed) {
    PairCost f(5, 6, seed, 0.5);
    auto cost = [&](const std::vector<int>& c) { return f(c); };
    const std::vector<int> start(5, 0), order = {0, 1, 2, 3, 4};
    const TileSearchResult a = CoordinateSearch(start, order, AllCandidates(5, 6), cost, 50, inf, false);
    const TileSearchResult b = CoordinateSearch(start, order, AllCandidates(5, 6), cost, 50, inf, true);
    better += b.cost < a.cost - 1e-12;
    worse += b.cost > a.cost + 1e-12;
    minima += b.converged && CoordinateMinimum(f, b.choice, b.cost);
  }
  std::printf("  200 random tables: the pair step better on %d, worse on %d, %d coordinate-wise minima\n", better,
              worse, minima);
  Expect(worse == 0 && better > 0 && minima == 200, "the pair step never loses and sometimes wins");
}

void LaterPassesTryOnlyTheNearBest() {
  // Kind 0's tiles cost 1, 1.005, 3, 4, ...; kind 1's do not matter. Pass 1 tries the 7 tiles of each
  // kind that it does not start on; pass 2 only kind 0's tiles within 1% of the best (two, one of them
  // kept: one trial) and kind 1's (all equal: 7 trials).
  auto cost = [](const std::vector<int>& c) { return c[0] < 2 ? 1.0 + 0.005 * c[0] : 1.0 + c[0]; };
  std::vector<TileTrial> trials;
  const TileSearchResult r =
      CoordinateSearch({5, 0}, {0, 1}, AllCandidates(2, 8), cost, 4, 0.01, false, [&](const TileTrial& t) {
        trials.push_back(t);
      });
  int pass2 = 0;
  for (const TileTrial& t : trials) pass2 += t.pass == 2;
  std::printf("  %d trials, %d in pass 2, %d passes, choice (%d, %d)\n", r.trials, pass2, r.passes, r.choice[0],
              r.choice[1]);
  Expect(r.choice[0] == 0 && r.cost == 1.0 && r.converged && r.passes == 2, "the best tile, converged in two passes");
  Expect(pass2 == 1 + 7, "pass 2 tries only the candidates within the prune of the best");
  Expect(r.trials == 1 + 7 + 7 + pass2, "every timing counted");
}

void FailuresAreSkipped() {
  // Tile 3 of kind 0 cannot run (cost < 0): never chosen. A start that cannot run ends the search at once.
  auto cost = [](const std::vector<int>& c) { return c[0] == 3 ? -1.0 : 2.0 - 0.1 * c[0] + 0.01 * c[1]; };
  const TileSearchResult r = CoordinateSearch({0, 1}, {0, 1}, AllCandidates(2, 4), cost, 4, 0.01, false);
  Expect(r.choice == std::vector<int>({2, 0}) && r.converged, "a failed candidate is skipped, not chosen");
  const TileSearchResult none = CoordinateSearch({3, 1}, {0, 1}, AllCandidates(2, 4), cost, 4, 0.01, false);
  Expect(none.cost < 0 && none.trials == 1 && none.choice == std::vector<int>({3, 1}) && !none.converged,
         "a start that cannot run: one trial, the start returned, cost < 0");
  // Kinds outside `order` (pinned) keep their start; a kind with no candidates too.
  const TileSearchResult pinned = CoordinateSearch({0, 3}, {0}, AllCandidates(2, 4), cost, 4, 0.01, false);
  Expect(pinned.choice == std::vector<int>({2, 3}), "a kind left out of the order keeps its start");
}

void TopChoicesAreTheCheapestDistinct() {
  // Two kinds of 3 tiles, cost = 10 c0 + c1: the search times (0,0) first and ends there; the choices it
  // timed, cheapest first and each once.
  auto cost = [](const std::vector<int>& c) { return 1.0 + 10 * c[0] + c[1]; };
  const TileSearchResult r = CoordinateSearch({2, 2}, {0, 1}, AllCandidates(2, 3), cost, 4, 0.5, false);
  const std::vector<std::vector<int>> top = TopChoices(r, 3);
  std::printf("  %zu timed, top 3: (%d,%d) (%d,%d) (%d,%d)\n", r.timed.size(), top[0][0], top[0][1], top[1][0],
              top[1][1], top[2][0], top[2][1]);
  Expect(r.choice == std::vector<int>({0, 0}) && top.size() == 3 && top[0] == r.choice, "the search's choice first");
  Expect(top[1] == std::vector<int>({0, 1}) && top[2] == std::vector<int>({0, 2}), "then the next cheapest timed");
  Expect(int(r.timed.size()) == r.trials, "every trial that ran is kept (none failed)");
}

// The lowest median when each candidate's timings run in one block after another's (what the playoff avoids).
int PickSequentially(int n, int rounds, const std::function<double(int)>& time) {
  int best = -1;
  double best_med = 0;
  for (int i = 0; i < n; ++i) {
    std::vector<double> t;
    for (int r = 0; r < rounds; ++r) t.push_back(time(i));
    std::sort(t.begin(), t.end());
    const double med = 0.5 * (t[rounds / 2 - 1] + t[rounds / 2]);
    if (best < 0 || med < best_med) best = i, best_med = med;
  }
  return best;
}

void PlayoffSeesThroughDrift() {
  // Four tile sets 0.3% apart; the timings drift by 2% over the playoff (clocks, heat) and move by 0.1% at
  // random. The cheapest is the last candidate under a rising drift and the first under a falling one: the
  // places where timing the candidates one block after another picks another, and the playoff must not.
  for (int dir : {+1, -1}) {
    const std::vector<double> truth =
        dir > 0 ? std::vector<double>{1.009, 1.006, 1.003, 1.0} : std::vector<double>{1.0, 1.003, 1.006, 1.009};
    const int cheapest = dir > 0 ? 3 : 0;
    std::mt19937 rng(7 + dir);
    std::uniform_real_distribution<double> noise(-0.001, 0.001);
    int calls = 0;
    auto time = [&](int i) { return truth[i] * (1.0 + dir * 0.02 * calls++ / 32.0) + noise(rng); };
    std::vector<double> med;
    const int win = PickByRounds(4, 8, time, &med);
    const int timings = calls;
    calls = 0;
    const int seq = PickSequentially(4, 8, time);
    std::printf("  drift %+d: playoff %d (medians %.4f %.4f %.4f %.4f, %d timings), one block after another %d\n",
                dir, win, med[0], med[1], med[2], med[3], timings, seq);
    Expect(win == cheapest && timings == 32, "the playoff picks the cheapest under a drift 7x the gaps");
    Expect(seq != cheapest, "(timed one block after another, the same drift picks another)");
  }
  // A candidate that fails is out after its first failure; all failing gives -1.
  int calls = 0;
  const int win = PickByRounds(3, 4, [&](int i) { ++calls; return i == 0 ? -1.0 : 2.0 - i; });
  Expect(win == 2 && calls == 1 + 4 + 4, "a failing candidate is timed once and never wins");
  Expect(PickByRounds(2, 3, [](int) { return -1.0; }) == -1, "all failing: -1");
}

}  // namespace

int main() {
  RandomTablesEndAtACoordinateMinimum();
  LargestFirstAvoidsTheTrap();
  PairStepLeavesTheTrap();
  LaterPassesTryOnlyTheNearBest();
  FailuresAreSkipped();
  TopChoicesAreTheCheapestDistinct();
  PlayoffSeesThroughDrift();
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
