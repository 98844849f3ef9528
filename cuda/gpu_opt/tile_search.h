// The search GraphTune runs over the decode step's matvec tiles (gpu_opt_tune.cu), host-only so that a CPU
// test (tile_search_test.cc) can check it on cost tables it builds.
//
// A choice is one candidate index per kind; cost(choice) is the time of the whole step with those tiles (or
// < 0 where that choice cannot run). Coordinate descent: each kind in turn, in `order`, tries its candidates
// with the other kinds fixed and keeps the cheapest. Session 20 found one pass in a fixed order stuck on the
// H200: o_proj, tuned first beside AutoTune's down tile, took a tile that made down's ring tile lose, and
// the processes ran 0.9% slower than the tiles pinned by hand (cuda/gpu_opt/README.md, "Session 20"). So
// the passes repeat until one changes nothing (a coordinate-wise minimum), and the caller orders the kinds
// by the bytes they stream, the largest first. A later pass tries only a kind's candidates that came
// within `prune` (a fraction) of that kind's best in the pass before, which keeps it a few trials a kind.
//
// Then the pair step: the two largest kinds (gate_up and down, neighbours in the step) change together over
// their near-best candidates. In one call of session 20 one process ended on gate_up ring.c16.s16.k256 with
// down w8.u1.r4 (3.893 ms a step at position 1024), another on ring.c8.s16.k256 with w8.u1.r4.b (3.875): from
// the first, either change alone lost.
//
// Then a playoff (PickByRounds): near-equal choices are told apart by timing them in alternation. The same
// session's bench process, tuned that way but by single timings, kept a tile set that alternating
// processes then measured 0.5% slower than the set two other tuned processes had kept (cuda/gpu_opt/README.md,
// "Session 20"): one timing of a step moves by about as much as those sets differ.
#pragma once

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

namespace lab {
namespace gpu_opt {

struct TileTrial {  // one timed choice: the pass (1..), the kind and candidate varied, its cost (< 0: failed)
  int pass, kind, candidate;
  double cost;
};

struct TileSearchResult {
  std::vector<int> choice;  // the candidate per kind it ended on
  double cost = -1.0;       // cost(choice) as last timed; < 0 if even the start failed (choice = start)
  int passes = 0, trials = 0;
  bool converged = false;   // the last pass changed nothing
  std::vector<std::pair<std::vector<int>, double>> timed;  // every choice that ran, and its cost
};

// start[k]: the starting candidate of kind k. candidates[k]: what kind k may take (a kind with none, or
// absent from `order`, keeps its start). max_passes >= 1 (for each run of passes). pair_step: after the
// passes, the pair step below. on_trial, if set, sees every timed variation (a pair step's under the second
// kind, with the pass number after the last pass).
inline TileSearchResult CoordinateSearch(const std::vector<int>& start, const std::vector<int>& order,
                                         const std::vector<std::vector<int>>& candidates,
                                         const std::function<double(const std::vector<int>&)>& cost,
                                         int max_passes, double prune, bool pair_step,
                                         const std::function<void(const TileTrial&)>& on_trial = {}) {
  TileSearchResult r;
  r.choice = start;
  r.cost = cost(r.choice);
  r.trials = 1;
  if (r.cost < 0) return r;
  r.timed.push_back({r.choice, r.cost});
  std::vector<std::vector<int>> pool = candidates;  // what each kind tries in the next pass
  auto run = [&](const std::vector<int>& trial, int pass, int kind, int cand) {  // its cost, < 0 if it failed
    const double t = cost(trial);
    ++r.trials;
    if (on_trial) on_trial({pass, kind, cand, t});
    if (t >= 0) r.timed.push_back({trial, t});
    return t;
  };
  int pass = 0;
  auto coordinate_passes = [&](int budget) {  // until a pass changes nothing, at most `budget` passes
    for (int b = 0; b < budget; ++b) {
      ++pass;
      bool changed = false;
      for (int k : order) {
        const int keep = r.choice[k];
        int best = keep;
        std::vector<std::pair<int, double>> timed = {{keep, r.cost}};
        for (int c : pool[k]) {
          if (c == keep) continue;
          std::vector<int> trial = r.choice;
          trial[k] = c;
          const double t = run(trial, pass, k, c);
          if (t < 0) continue;
          timed.push_back({c, t});
          if (t < r.cost) {
            r.cost = t;
            best = c;
          }
        }
        r.choice[k] = best;
        changed |= best != keep;
        pool[k].clear();  // the next pass: the candidates within `prune` of this pass's best for the kind
        for (const auto& [c, t] : timed)
          if (t <= r.cost * (1.0 + prune)) pool[k].push_back(c);
      }
      r.passes = pass;
      if (!changed) return true;
    }
    return false;
  };
  r.converged = coordinate_passes(max_passes);
  // The pair step: the first two kinds of `order` (the largest streams, neighbours in the step) change
  // together, over their pools, where one at a time each would lose; then the passes again if it paid.
  if (order.size() >= 2 && pair_step) {
    const int k = order[0], l = order[1];
    std::vector<int> best = r.choice;
    for (int c : pool[k])
      for (int d : pool[l]) {
        if (c == r.choice[k] || d == r.choice[l]) continue;
        std::vector<int> trial = r.choice;
        trial[k] = c;
        trial[l] = d;
        const double t = run(trial, pass + 1, l, d);
        if (t >= 0 && t < r.cost) {
          r.cost = t;
          best = trial;
        }
      }
    if (best != r.choice) {
      r.choice = best;
      ++pass;
      r.converged = coordinate_passes(max_passes);
    }
  }
  return r;
}

// The n cheapest distinct choices a search timed (each at its lowest timing), the cheapest first.
inline std::vector<std::vector<int>> TopChoices(const TileSearchResult& r, int n) {
  std::vector<std::pair<std::vector<int>, double>> all = r.timed;
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  std::vector<std::vector<int>> top;
  for (const auto& [choice, cost] : all) {
    if (int(top.size()) >= n) break;
    if (std::find(top.begin(), top.end(), choice) == top.end()) top.push_back(choice);
  }
  return top;
}

// The playoff: rounds x n timings, candidate (round + j) % n the j-th of its round, so that a drift over
// the rounds (clocks, heat) falls on every candidate alike, and each takes every place in a round as often.
// time(i) < 0: candidate i failed and is out. Returns the candidate with the lowest median, or -1 if all
// failed; medians[i] (if given) gets each candidate's median (-1 for one that failed).
inline int PickByRounds(int n, int rounds, const std::function<double(int)>& time,
                        std::vector<double>* medians = nullptr) {
  std::vector<std::vector<double>> t(n);
  std::vector<bool> failed(n, false);
  for (int round = 0; round < rounds; ++round)
    for (int j = 0; j < n; ++j) {
      const int i = (round + j) % n;
      if (failed[i]) continue;
      const double v = time(i);
      if (v < 0) failed[i] = true;
      else t[i].push_back(v);
    }
  int best = -1;
  double best_med = 0;
  if (medians) medians->assign(n, -1.0);
  for (int i = 0; i < n; ++i) {
    if (failed[i] || t[i].empty()) continue;
    std::sort(t[i].begin(), t[i].end());
    const size_t m = t[i].size();
    const double med = m % 2 ? t[i][m / 2] : 0.5 * (t[i][m / 2 - 1] + t[i][m / 2]);
    if (medians) (*medians)[i] = med;
    if (best < 0 || med < best_med) {
      best = i;
      best_med = med;
    }
  }
  return best;
}

}  // namespace gpu_opt
}  // namespace lab
