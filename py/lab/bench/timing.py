"""Timing any runner (an engine or a peer) the same way: TTFT of a prompt, decode tok/s at a context.

A runner has reset(), prefill(tokens) (returns once the last position's logits are on the host),
decode(token) (likewise), generate(token, n) (greedy: n steps, each fed the last one's argmax; returns the
n token ids on the host), pos, max_context, name, label, device, kind ("engine" or "peer").
Inputs are random token ids (fresh for every repeat), never a fixed or all-zero prompt.

TTFT at N: reset, prefill N tokens; wall-clock time of the prefill call. warmup runs, then repeats.
Decode at a context C: the runner holds C positions (one prefill, not timed; contexts are visited in
increasing order and the cache is extended rather than rebuilt), then blocks of decode_tokens steps
are timed, warmup blocks first. The cache grows by decode_tokens per block, so each block's mean
attended length (recorded) is C + (blocks before) x decode_tokens + (decode_tokens + 1) / 2.
A block is timed in one of two modes (recorded as "mode"):
  greedy  generate(random first token, decode_tokens): greedy generation as an application runs it,
          each runner choosing the next token where its logits are (an engine's device, torch's device
          for the peers), so a GPU step needs no round trip to the host;
  logits  decode_tokens x decode(random token): every step's logits copied to the host and returned
          as a numpy array (teacher forcing: the lab's per-step API), a round trip per token.
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
    out = []
    for n in lengths:
        if n > runner.max_context:
            log(f"{runner.label}: skipping TTFT at {n} tokens (max context {runner.max_context})")
            continue
        secs = []
        for r in range(warmup + repeats):
            toks = rng.integers(0, vocab, size=n)
            runner.reset()
            t0 = time.perf_counter()
            runner.prefill(toks)
            dt = time.perf_counter() - t0
            if r >= warmup:
                secs.append(dt)
        s = summarize(secs)
        log(f"{runner.label}: TTFT {n} tokens: {s['median'] * 1e3:.2f} ms (min {s['min'] * 1e3:.2f}, "
            f"max {s['max'] * 1e3:.2f}, {repeats} repeats)")
        out.append({"prompt_len": int(n), "seconds": s})
    runner.reset()
    return out


DECODE_MODES = ("greedy", "logits")


def measure_decode(runner, contexts, decode_tokens, warmup, repeats, rng, vocab, log=print, mode="greedy") -> list:
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {mode!r}")
    out = []
    runner.reset()
    for ctx in sorted(contexts):
        if ctx < 1:
            raise ValueError(f"decode context must be >= 1, got {ctx}")
        end = ctx + (warmup + repeats) * decode_tokens
        if end > runner.max_context:
            log(f"{runner.label}: skipping decode at context {ctx} (needs {end} > max context {runner.max_context})")
            continue
        if runner.pos > ctx:
            runner.reset()
        t0 = time.perf_counter()
        if runner.pos < ctx:
            runner.prefill(rng.integers(0, vocab, size=ctx - runner.pos))
        fill_s = time.perf_counter() - t0
        tok_s, kv_lens = [], []
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
        s = summarize(tok_s)
        log(f"{runner.label}: decode ({mode}) at context {ctx}: {s['median']:.2f} tok/s (min {s['min']:.2f}, max "
            f"{s['max']:.2f}; {repeats} x {decode_tokens} tokens; fill {fill_s:.2f} s)")
        out.append({"context": int(ctx), "tok_s": s, "mean_kv_len": float(np.mean(kv_lens)),
                    "decode_tokens": int(decode_tokens), "mode": mode})
    runner.reset()
    return out
