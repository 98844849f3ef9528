"""Perplexity of an engine on a token sequence: one pass over the sequence, in windows.

Each window is a prefill that continues the KV cache (all_logits=True), so the result equals a
single forward over the whole sequence, while the logits held at once stay bounded.
"""

import numpy as np


def token_nll(logits, targets) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] for each row i, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(z)), np.asarray(targets)]


def engine_nll(engine, tokens, window: int = 256, progress=None) -> np.ndarray:
    """Negative log-likelihood of tokens[1:] (float64 array of len(tokens) - 1)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) < 2:
        raise ValueError("perplexity needs at least two tokens")
    engine.reset()
    nll = []
    for start in range(0, len(tokens) - 1, window):
        chunk = tokens[start : min(start + window, len(tokens) - 1)]
        nll.append(token_nll(engine.prefill(chunk, all_logits=True), tokens[start + 1 : start + 1 + len(chunk)]))
        if progress:
            progress(start + len(chunk), len(tokens) - 1)
    return np.concatenate(nll)


def engine_perplexity(engine, tokens, window: int = 256, progress=None) -> float:
    return float(np.exp(engine_nll(engine, tokens, window, progress).mean()))


def torch_perplexity(model, tokens) -> float:
    """The reference: one transformers forward over the whole sequence."""
    from lab.reference import perplexity_from_logits, reference_logits

    return perplexity_from_logits(reference_logits(model, tokens), tokens)
