"""Streaming generation on any engine: prefill the prompt, then decode token by token until EOS."""

import time
from dataclasses import dataclass, field

from lab.sampler import Sampler


@dataclass
class GenerationResult:
    tokens: list = field(default_factory=list)  # generated ids (EOS excluded)
    ttft_s: float = 0.0                          # prompt in -> first token chosen
    prefill_tok_s: float = 0.0
    decode_tok_s: float = 0.0
    stopped_on_eos: bool = False


def generate(engine, prompt_ids, max_tokens: int, sampler: Sampler, eos_ids=(), on_token=None) -> GenerationResult:
    """Runs one sequence from position 0; calls on_token(id) as each token is chosen."""
    if len(prompt_ids) == 0:
        raise ValueError("empty prompt: nothing to condition on")
    if len(prompt_ids) + max_tokens > engine.max_context:
        raise ValueError(
            f"prompt of {len(prompt_ids)} tokens + {max_tokens} new tokens exceeds the context of "
            f"{engine.max_context} tokens (lower --max_tokens or raise --max_context)"
        )
    engine.reset()
    res = GenerationResult()
    t0 = time.perf_counter()
    logits = engine.prefill(prompt_ids)
    tok = sampler(logits)
    res.ttft_s = time.perf_counter() - t0
    res.prefill_tok_s = len(prompt_ids) / res.ttft_s
    eos = set(int(e) for e in eos_ids)
    t1 = time.perf_counter()
    n_decoded = 0
    for i in range(max_tokens):
        if tok in eos:
            res.stopped_on_eos = True
            break
        res.tokens.append(tok)
        if on_token:
            on_token(tok)
        if i == max_tokens - 1:
            break
        logits = engine.decode(tok)
        n_decoded += 1
        tok = sampler(logits)
    dt = time.perf_counter() - t1
    res.decode_tok_s = n_decoded / dt if n_decoded and dt > 0 else 0.0
    return res
