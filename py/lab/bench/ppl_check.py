"""Perplexity validation: every engine on the same text, compared with the cpu_fp32 engine's perplexity.

The text is cut into windows of `window` tokens (each a fresh sequence: reset); a window is fed in
chunks of `chunk` tokens with prefill(all_logits=True), each chunk continuing the KV cache, so chunked
prefill and cache reuse are exercised too. Row i of a chunk's logits predicts the token after it; the
last row of a chunk predicts the first token of the next chunk. NLL is summed in float64.
An engine is flagged when |ppl - ppl_ref| / ppl_ref > lab.tolerances.perplexity_rel(engine).
"""

from pathlib import Path

import numpy as np

from lab import tolerances


def load_tokens(text_path, tokenizer_dir, max_tokens: int) -> list:
    """Token ids of the text (the model's tokenizer: lab.tokenizer if present, else tokenizer.json)."""
    text = Path(text_path).read_text(encoding="utf-8", errors="replace")
    ids = None
    try:
        from lab.tokenizer import load_tokenizer  # noqa: WPS433 - optional module of another stage

        tok = load_tokenizer(tokenizer_dir)
        ids = tok.encode(text)
    except (ImportError, TypeError, AttributeError):
        ids = None
    if ids is None:
        from tokenizers import Tokenizer

        if tokenizer_dir is None:
            raise ValueError("no tokenizer: pass --tokenizer_dir (a folder with tokenizer.json)")
        ids = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json")).encode(text)
    ids = list(getattr(ids, "ids", ids))
    if len(ids) < 2:
        raise ValueError(f"{text_path}: fewer than 2 tokens")
    return [int(t) for t in ids[:max_tokens]]


def _nll_sum(rows: np.ndarray, targets) -> float:
    z = np.asarray(rows, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(targets)), np.asarray(targets)].sum())


def engine_perplexity(engine, tokens, window: int, chunk: int) -> dict:
    """Perplexity of `tokens` under `engine` (anything with reset() and prefill(tokens, all_logits=True))."""
    nll, count = 0.0, 0
    for w0 in range(0, len(tokens), window):
        win = tokens[w0:w0 + window]
        if len(win) < 2:
            break
        engine.reset()
        prev_last = None
        for c0 in range(0, len(win), chunk):
            ch = win[c0:c0 + chunk]
            logits = np.asarray(engine.prefill(np.asarray(ch, dtype=np.int32), all_logits=True))
            logits = logits.reshape(len(ch), -1)
            if prev_last is not None:
                nll += _nll_sum(prev_last[None, :], [ch[0]])
                count += 1
            if len(ch) > 1:
                nll += _nll_sum(logits[:-1], ch[1:])
                count += len(ch) - 1
            prev_last = logits[-1]
    engine.reset()
    return {"ppl": float(np.exp(nll / count)), "nll_sum": nll, "predicted_tokens": count}


def torch_perplexity(model, tokens, window: int) -> dict:
    """The torch reference's perplexity over the same windows (each window in one forward, no cache)."""
    from lab.reference import reference_logits

    nll, count = 0.0, 0
    for w0 in range(0, len(tokens), window):
        win = tokens[w0:w0 + window]
        if len(win) < 2:
            break
        logits = reference_logits(model, win)
        nll += _nll_sum(logits[:-1], win[1:])
        count += len(win) - 1
    return {"ppl": float(np.exp(nll / count)), "nll_sum": nll, "predicted_tokens": count}


def check(ppls: dict, ref: str = "cpu_fp32", tolerance_of=tolerances.perplexity_rel) -> list:
    """One verdict per engine in `ppls` ({name: ppl}) against ppls[ref]."""
    ref_ppl = ppls[ref]
    out = []
    for name, ppl in ppls.items():
        tol = tolerance_of(name)
        rel = abs(ppl - ref_ppl) / ref_ppl if np.isfinite(ppl) else float("inf")
        out.append({"engine": name, "ppl": ppl, "reference": ref, "reference_ppl": ref_ppl, "rel_diff": rel,
                    "tolerance": tol, "flagged": bool(not rel <= tol)})
    return out


def markdown(verdicts: list, machine: str, n_tokens: int, window: int, chunk: int, text: str) -> str:
    lines = [f"Perplexity on `{Path(text).name}` ({n_tokens} tokens, windows of {window}, chunks of {chunk}), "
             f"{machine}", "", "| engine | perplexity | vs | rel. diff | tolerance | verdict |",
             "| --- | ---: | --- | ---: | ---: | --- |"]
    for v in verdicts:
        lines.append(f"| {v['engine']} | {v['ppl']:.4f} | {v['reference']} {v['reference_ppl']:.4f} | "
                     f"{v['rel_diff']:.2e} | {v['tolerance']:.0e} | {'**FLAGGED**' if v['flagged'] else 'ok'} |")
    return "\n".join(lines) + "\n"
