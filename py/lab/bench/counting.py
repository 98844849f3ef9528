"""What each measured step must move and compute: bytes read per decoded token, FLOPs of prefill.

The counts are the work the maths requires, whatever an engine actually does:
  decode, one token at KV length L (the L cached positions it attends over, its own included):
    weights: every matrix of every layer, both norms, the final norm and the lm_head, read once;
             the embedding table is only gathered (one row). With tied embeddings the lm_head *is*
             the embedding matrix, read once.
    KV:      2 (K and V) x n_layers x L x kv_dim elements.
  prefill of N tokens starting at position p0 (TTFT needs only the last position's logits):
    FLOPs = 2 x layer-params x N + 2 x lm_head-params (one row of logits)
          + attention 2 x 2 x n_layers x n_heads x head_dim x sum over positions of keys attended
    bytes = weights once + the N new K/V rows written.
Element sizes come from the engine's precisions (tables below; the bench's flags override them).
"""

import json
from pathlib import Path

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}

# Weight precision each engine holds (and reads) its matrices in: the tolerance table's.
from lab.tolerances import ENGINE_PRECISION as WEIGHT_PRECISION  # noqa: E402

# KV-cache element precision per engine: CPU engines and gpu_naive keep fp32, gpu_opt fp16.
KV_PRECISION = {
    "cpu_fp32": "fp32",
    "cpu_opt": "fp32",
    "gpu_naive": "fp32",
    "gpu_opt": "fp16",
}

CONFIG_KEYS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size",
               "tie_word_embeddings")


def engine_precisions(engine: str, weight_overrides=None, kv_overrides=None):
    """(weight precision, KV precision) of `engine`; unknown engines default to fp16 / fp16."""
    w = (weight_overrides or {}).get(engine) or WEIGHT_PRECISION.get(engine, "fp16")
    kv = (kv_overrides or {}).get(engine) or KV_PRECISION.get(engine, "fp16")
    for p in (w, kv):
        if p not in BYTES_PER_ELEMENT:
            raise ValueError(f"unknown precision {p!r} (known: {', '.join(BYTES_PER_ELEMENT)})")
    return w, kv


def config_from_model_dir(model_dir) -> dict:
    """The counting config (engine.config's keys) from an HF-style config.json."""
    c = json.loads((Path(model_dir) / "config.json").read_text())
    n_heads = int(c["num_attention_heads"])
    return {
        "dim": int(c["hidden_size"]),
        "hidden_dim": int(c["intermediate_size"]),
        "n_layers": int(c["num_hidden_layers"]),
        "n_heads": n_heads,
        "n_kv_heads": int(c.get("num_key_value_heads") or n_heads),
        "head_dim": int(c.get("head_dim") or c["hidden_size"] // n_heads),
        "vocab_size": int(c["vocab_size"]),
        "tie_word_embeddings": bool(c.get("tie_word_embeddings", False)),
    }


def param_counts(cfg: dict) -> dict:
    """Element counts by role."""
    d, h, hd = cfg["dim"], cfg["hidden_dim"], cfg["head_dim"]
    q_dim, kv_dim = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    per_layer_matrices = d * q_dim + 2 * d * kv_dim + q_dim * d + 3 * d * h
    per_layer_norms = 2 * d
    return {
        "per_layer_matrices": per_layer_matrices,
        "per_layer_norms": per_layer_norms,
        "layers": cfg["n_layers"] * (per_layer_matrices + per_layer_norms),
        "layer_matrices": cfg["n_layers"] * per_layer_matrices,
        "final_norm": d,
        "lm_head": cfg["vocab_size"] * d,
        "embedding_row": d,
        "embedding_table": cfg["vocab_size"] * d,
        "kv_dim": kv_dim,
    }


def product_elements(cfg: dict) -> dict:
    """Weight elements of each matrix product of a decode step, over all layers (lm_head once): the
    parts the engines' step profiles report (cc/cpu_opt/decode_profile.py, cuda/gpu_opt/step_trace.py)."""
    d, h, hd, n = cfg["dim"], cfg["hidden_dim"], cfg["head_dim"], cfg["n_layers"]
    q_dim, kv_dim = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    return {"qkv": n * d * (q_dim + 2 * kv_dim), "o_proj": n * q_dim * d, "gate_up": n * 2 * d * h,
            "down": n * h * d, "lm_head": cfg["vocab_size"] * d}


def decode_weight_elements(cfg: dict) -> int:
    """Weight elements one decoded token reads: layers + final norm + lm_head + one embedding row."""
    p = param_counts(cfg)
    return p["layers"] + p["final_norm"] + p["lm_head"] + p["embedding_row"]


def kv_elements(cfg: dict, kv_len: float) -> float:
    """K and V elements of kv_len cached positions over all layers."""
    return 2 * cfg["n_layers"] * kv_len * cfg["n_kv_heads"] * cfg["head_dim"]


def decode_bytes(cfg: dict, weight_precision: str, kv_precision: str, kv_len: float) -> dict:
    """Bytes one decoded token must read when it attends over kv_len positions."""
    w = decode_weight_elements(cfg) * BYTES_PER_ELEMENT[weight_precision]
    kv = kv_elements(cfg, kv_len) * BYTES_PER_ELEMENT[kv_precision]
    return {"weights": w, "kv": kv, "total": w + kv}


def attention_flops(cfg: dict, keys_attended: float) -> float:
    """QK^T and PV over `keys_attended` (query, key) pairs summed over positions: 2 x 2 x head_dim each."""
    return 2 * 2 * cfg["n_layers"] * cfg["n_heads"] * cfg["head_dim"] * keys_attended


def decode_flops(cfg: dict, kv_len: float) -> float:
    p = param_counts(cfg)
    return 2 * (p["layer_matrices"] + p["lm_head"]) + attention_flops(cfg, kv_len)


def prefill_flops(cfg: dict, n_tokens: int, start_pos: int = 0, all_logits: bool = False) -> float:
    """FLOPs of a prefill of n_tokens at positions start_pos.. (token at position t attends t+1 keys)."""
    p = param_counts(cfg)
    keys = n_tokens * start_pos + n_tokens * (n_tokens + 1) / 2
    logit_rows = n_tokens if all_logits else 1
    return 2 * p["layer_matrices"] * n_tokens + 2 * p["lm_head"] * logit_rows + attention_flops(cfg, keys)


def prefill_bytes(cfg: dict, weight_precision: str, kv_precision: str, n_tokens: int) -> float:
    """Least bytes a prefill moves: the weights once and the new K/V rows written."""
    p = param_counts(cfg)
    w = (p["layers"] + p["final_norm"] + p["lm_head"]) * BYTES_PER_ELEMENT[weight_precision]
    w += n_tokens * p["embedding_row"] * BYTES_PER_ELEMENT[weight_precision]
    return w + kv_elements(cfg, n_tokens) * BYTES_PER_ELEMENT[kv_precision]


def precision_from_stats(cfg: dict, stats: dict, max_context: int) -> dict:
    """Bytes per element the engine's own stats() imply (a cross-check of the tables; None if unknown)."""
    p = param_counts(cfg)
    stored = p["layers"] + p["final_norm"] + p["embedding_table"] + (0 if cfg["tie_word_embeddings"] else p["lm_head"])
    out = {"weight_bytes_per_element": None, "kv_bytes_per_element": None}
    if stats.get("weight_bytes"):
        out["weight_bytes_per_element"] = stats["weight_bytes"] / stored
    kv = kv_elements(cfg, max_context)
    if stats.get("kv_cache_bytes") and kv:
        out["kv_bytes_per_element"] = stats["kv_cache_bytes"] / kv
    return out
