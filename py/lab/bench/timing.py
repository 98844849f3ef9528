"""Timing any runner (an engine or a peer) the same way: TTFT of a prompt, decode tok/s at a context.

A runner has reset(), prefill(tokens) (returns once the last position's logits are on the host),
decode(token) (likewise), generate(token, n) (greedy: n steps, each fed the last one's argmax; returns the
n token ids on the host), pos, max_context, name, label, device, kind ("engine" or "peer"); and optionally
fit(n): a runner whose cache is sized for its request (hf_compile's static cache) gets one of n positions
before each TTFT length and decode context, n what that point needs, as an application would size it.
Inputs are random token ids (fresh for every repeat), never a fixed or all-zero prompt.

TTFT at N: reset, prefill N tokens; wall-clock time of the prefill call. warmup runs, then repeats.
Decode at a context C: the runner holds C positions (one prefill, not timed; contexts are visited in
increasing order and the cache is extended rather than rebuilt, except where fit() gave a new one), then
blocks of decode_tokens steps are timed, warmup blocks first. The cache grows by decode_tokens per block,
so each block's mean attended length (recorded) is C + (blocks before) x decode_tokens +
(decode_tokens + 1) / 2.
A block is timed in one of two modes (recorded as "mode"):
  greedy  generate(random first token, decode_tokens): greedy generation as an application runs it,
          each runner choosing the next token where its logits are (an engine's device, torch's device
          for the peers), so a GPU step needs no round trip to the host;
  logits  decode_tokens x decode(random token): every step's logits copied to the host and returned
          as a numpy array (teacher forcing: the lab's per-step API), a round trip per token.
Optionally (probe) a short read-bandwidth sample is taken right after each timed block and recorded
with the point ("adjacent_read"), so a decode can be judged against the bandwidth of its own minute.

Interleaved TTFT (measure_ttft_interleaved): several runners measured in paired rounds. Per prompt
length: every runner's warm-ups, then `repeats` rounds of one timed prefill per runner, all on the same
random prompt, the order rotated by one every round; a runner's i-th sample is from round i, so the
samples of two runners pair up (pair_ratios) and a change of the machine's phase hits both alike.
"""

import time

import numpy as np


def summarize(samples) -> dict:
    """Median with the min-max spread (and the samples themselves)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()), "n": int(a.size),
            "samples": [float(x) for x in a]}


class EngineRunner:
    """One of our engines (lab.engine.open_engine) as a runner."""

    kind = "engine"

    def __init__(self, name, engine):
        self.name = name
        self.label = name
        self.engine = engine
        self.device = "cuda" if name.startswith("gpu") else "cpu"
        self.precision = None  # filled in by the caller (weight precision)

    @property
    def pos(self):
        return self.engine.pos

    @property
    def max_context(self):
        return self.engine.max_context

    def reset(self):
        self.engine.reset()

    def prefill(self, tokens):
        return self.engine.prefill(np.asarray(tokens, dtype=np.int32))

    def decode(self, token):
        return self.engine.decode(int(token))

    def generate(self, token, n):
        return self.engine.generate(int(token), int(n))

    def close(self):
        self.engine = None


def needed_context(prompt_lengths, contexts, decode_tokens, warmup, repeats) -> int:
    """KV length a runner needs for the whole measurement plan."""
    need = max(list(prompt_lengths) + [0])
    if contexts:
        need = max(need, max(contexts) + (warmup + repeats) * decode_tokens)
    return need


def measure_ttft(runner, lengths, warmup, repeats, rng, vocab, log=print) -> list:
    """One runner's TTFT points: the rounds of measure_ttft_interleaved with a single runner (a fresh
    random prompt per warm-up and per repeat), its errors raised."""
    points, _, _ = _ttft_rounds([runner], lengths, warmup, repeats, rng, vocab, log, paired=False)
    return points[0]


DECODE_MODES = ("greedy", "logits")


def measure_decode(runner, contexts, decode_tokens, warmup, repeats, rng, vocab, log=print, mode="greedy",
                   probe=None) -> list:
    """Decode points at each context (the module's docstring). probe: None, or a callable returning GB/s
    samples (a list), called right after each timed block; its samples go to the point's "adjacent_read"
    (summarize()'s dict: median, min, max, n, samples)."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {mode!r}")
    out = []
    runner.reset()
    fit = getattr(runner, "fit", None)
    for ctx in sorted(contexts):
        if ctx < 1:
            raise ValueError(f"decode context must be >= 1, got {ctx}")
        end = ctx + (warmup + repeats) * decode_tokens
        if fit is not None:
            fit(end)  # a new, empty cache of `end` positions where the size changes
        if end > runner.max_context:
            log(f"{runner.label}: skipping decode at context {ctx} (needs {end} > max context {runner.max_context})")
            continue
        if runner.pos > ctx:
            runner.reset()
        t0 = time.perf_counter()
        if runner.pos < ctx:
            runner.prefill(rng.integers(0, vocab, size=ctx - runner.pos))
        fill_s = time.perf_counter() - t0
        tok_s, kv_lens, adjacent = [], [], []
        for b in range(warmup + repeats):
            toks = rng.integers(0, vocab, size=decode_tokens)
            start = runner.pos
            t0 = time.perf_counter()
            if mode == "greedy":
                runner.generate(toks[0], decode_tokens)
            else:
                for t in toks:
                    runner.decode(t)
            dt = time.perf_counter() - t0
            if b >= warmup:
                tok_s.append(decode_tokens / dt)
                kv_lens.append(start + (decode_tokens + 1) / 2)
                if probe is not None:
                    adjacent += [float(g) for g in probe()]
        s = summarize(tok_s)
        log(f"{runner.label}: decode ({mode}) at context {ctx}: {s['median']:.2f} tok/s (min {s['min']:.2f}, max "
            f"{s['max']:.2f}; {repeats} x {decode_tokens} tokens; fill {fill_s:.2f} s)")
        point = {"context": int(ctx), "tok_s": s, "mean_kv_len": float(np.mean(kv_lens)),
                 "decode_tokens": int(decode_tokens), "mode": mode}
        if probe is not None:
            a = point["adjacent_read"] = summarize(adjacent)
            log(f"{runner.label}: read bandwidth sampled after each block: median {a['median']:.1f} GB/s "
                f"({a['min']:.1f}-{a['max']:.1f})")
        out.append(point)
    runner.reset()
    return out


def rotation(runners, round_index) -> list:
    """The order of one interleaved round: the runners rotated left by round_index (mod their number)."""
    k = round_index % len(runners) if runners else 0
    return list(runners[k:]) + list(runners[:k])


def measure_ttft_interleaved(runners, lengths, warmup, repeats, rng, vocab, log=print):
    """TTFT of several runners in paired rounds (the module's docstring). Returns (points, orders, errors):
    points[i] is runners[i]'s list of TTFT points, as measure_ttft's (sample j from round j), each with
    "interleaved": True; orders is [{"prompt_len": n, "rounds": [[runner index, ...] per round]}];
    errors maps the index of a runner whose prefill raised to "Type: message" (it is left out from then on,
    its points so far dropped)."""
    return _ttft_rounds(runners, lengths, warmup, repeats, rng, vocab, log, paired=True)


def _ttft_rounds(runners, lengths, warmup, repeats, rng, vocab, log, paired):
    """measure_ttft_interleaved's rounds. paired=False (measure_ttft, one runner): a prefill's exception
    propagates, and the points carry no "interleaved" mark."""
    points = [[] for _ in runners]
    orders, errors = [], {}
    for n in lengths:
        live = [i for i in range(len(runners)) if i not in errors]
        for i in list(live):
            if getattr(runners[i], "fit", None) is not None:
                runners[i].fit(n)
            if n > runners[i].max_context:
                log(f"{runners[i].label}: skipping TTFT at {n} tokens (max context {runners[i].max_context})")
                live.remove(i)
        secs = {i: [] for i in live}
        rounds = []

        def timed(i, toks):
            r = runners[i]
            try:
                r.reset()
                t0 = time.perf_counter()
                r.prefill(toks)
                return time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001 - one failing runner must not cost the others' numbers
                if not paired:
                    raise
                errors[i] = f"{type(e).__name__}: {e}"
                log(f"ERROR {r.label}: {errors[i]}")
                return None

        for _ in range(warmup):
            toks = rng.integers(0, vocab, size=n)
            for i in live:
                if i not in errors:
                    timed(i, toks)
        for k in range(repeats):
            toks = rng.integers(0, vocab, size=n)
            order = [i for i in rotation(live, k) if i not in errors]
            rounds.append(order)
            for i in order:
                dt = timed(i, toks)
                if dt is not None:
                    secs[i].append(dt)
        for i in live:
            if i in errors:
                continue
            s = summarize(secs[i])
            log(f"{runners[i].label}: TTFT {n} tokens: {s['median'] * 1e3:.2f} ms (min {s['min'] * 1e3:.2f}, "
                f"max {s['max'] * 1e3:.2f}, {repeats} {'interleaved rounds' if paired else 'repeats'})")
            point = {"prompt_len": int(n), "seconds": s}
            if paired:
                point["interleaved"] = True
            points[i].append(point)
        orders.append({"prompt_len": int(n), "rounds": rounds})
    for i, r in enumerate(runners):
        if i in errors:
            points[i] = []
        else:
            r.reset()
    return points, orders, errors


def pair_ratios(engine_seconds, peer_seconds) -> dict:
    """Paired comparison of two runners' interleaved samples (sample j of each from round j): per-round
    ratio peer time / engine time (> 1: the engine was faster in that round), their median, and in how
    many rounds the engine was faster. Rounds missing on either side are not counted."""
    ratios = [p / e for e, p in zip(engine_seconds, peer_seconds)]
    s = summarize(ratios)
    return {"ratio_median": s["median"], "ratio_min": s["min"], "ratio_max": s["max"], "ratios": s["samples"],
            "wins": int(sum(x > 1 for x in ratios)), "rounds": len(ratios)}
