"""Perplexity validation: every engine on the same text, compared with the cpu_fp32 engine's perplexity.

The text is cut into windows of `window` tokens (each a fresh sequence: reset); a window is fed in
chunks of `chunk` tokens with prefill(all_logits=True), each chunk continuing the KV cache, so chunked
prefill and cache reuse are exercised too. Row i of a chunk's logits predicts the token after it; the
last row of a chunk predicts the first token of the next chunk. NLL is summed in float64.
An engine is flagged when |ppl - ppl_ref| / ppl_ref > lab.tolerances.perplexity_rel(engine).
"""

from pathlib import Path

import numpy as np

from lab.perplexity import engine_nll, token_nll

from lab import tolerances


def load_tokens(text_path, tokenizer_dir, max_tokens: int) -> list:
    """Token ids of the text (the model's tokenizer: lab.tokenizer if present, else tokenizer.json).
    ValueError where there is no tokenizer, FileNotFoundError where its tokenizer.json or the text is missing."""
    if tokenizer_dir is None:
        raise ValueError("no tokenizer for --ppl_text: pass --tokenizer_dir (a folder with tokenizer.json), or a "
                         "--model_dir that holds tokenizer.json")
    tok_json = Path(tokenizer_dir) / "tokenizer.json"
    if not tok_json.is_file():
        raise FileNotFoundError(f"{tok_json} not found: the tokenizer folder must hold tokenizer.json")
    if not Path(text_path).is_file():
        raise FileNotFoundError(f"--ppl_text {text_path}: no such file")
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

        ids = Tokenizer.from_file(str(tok_json)).encode(text)
    ids = list(getattr(ids, "ids", ids))
    if len(ids) < 2:
        raise ValueError(f"{text_path}: fewer than 2 tokens")
    return [int(t) for t in ids[:max_tokens]]


def _windows(tokens, window: int):
    """The tokens cut into windows of `window` (a fresh sequence each); a last window of < 2 is dropped."""
    return [tokens[w0:w0 + window] for w0 in range(0, len(tokens), window) if len(tokens[w0:w0 + window]) >= 2]


def _result(nll: np.ndarray) -> dict:
    return {"ppl": float(np.exp(nll.mean())), "nll_sum": float(nll.sum()), "predicted_tokens": int(nll.size)}


def engine_perplexity(engine, tokens, window: int, chunk: int) -> dict:
    """Perplexity of `tokens` under `engine`: each window a fresh sequence, prefilled `chunk` tokens at a time
    continuing the KV cache (lab.perplexity.engine_nll)."""
    nll = np.concatenate([engine_nll(engine, win, chunk) for win in _windows(tokens, window)])
    engine.reset()
    return _result(nll)


def torch_perplexity(model, tokens, window: int) -> dict:
    """The torch reference's perplexity over the same windows (each window in one forward, no cache)."""
    from lab.reference import reference_logits

    return _result(np.concatenate([token_nll(reference_logits(model, win)[:-1], win[1:])
                                   for win in _windows(tokens, window)]))


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
