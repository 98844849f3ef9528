"""Normalizes a Hugging Face Llama config.json into the lab's config.json (docs/model_format.md).

HF configs come in two styles: Meta's published ones (`rope_theta` + `rope_scaling`) and
transformers 5's (`rope_parameters`, which holds rope_theta and the scaling). We always write Meta's
style, which both transformers and the C++ loader read, and reject what our engines cannot run
(other rope types, biases, other activations) with a clear message.
"""

SUPPORTED_ROPE = ("default", "llama3")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
_TORCH_DTYPE = {"fp32": "float32", "fp16": "float16"}


def _rope(hf: dict):
    """(rope_theta, rope_scaling or None) from either style."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    if params and not isinstance(params, dict) or scaling and not isinstance(scaling, dict):
        raise ValueError("config: rope_parameters / rope_scaling must be objects")
    if params and all(isinstance(v, dict) for v in params.values()):
        raise ValueError("config: per-layer-type rope_parameters are not supported by the lab")
    merged = {**scaling, **params}
    theta = merged.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
    if merged.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("config: partial_rotary_factor != 1 is not supported by the lab")
    if rope_type not in SUPPORTED_ROPE:
        raise ValueError(f"config: unsupported rope_type {rope_type!r}; the lab's engines implement {SUPPORTED_ROPE}")
    if rope_type == "default":
        return float(theta), None
    missing = [k for k in _LLAMA3_KEYS if k not in merged]
    if missing:
        raise ValueError(f"config: llama3 rope scaling lacks {missing}")
    scaling = {"rope_type": "llama3"}
    for k in _LLAMA3_KEYS:
        scaling[k] = int(merged[k]) if k == "original_max_position_embeddings" else float(merged[k])
    if scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ValueError("config: llama3 rope scaling needs high_freq_factor > low_freq_factor")
    return float(theta), scaling


def normalize_config(hf: dict, precision: str = None) -> dict:
    """Our config.json dict (Meta style) from an HF Llama config dict of either style.

    precision ("fp32"/"fp16") sets torch_dtype; None keeps the input's. Raises ValueError for
    configs the lab cannot run.
    """
    model_type = hf.get("model_type", "llama")
    archs = hf.get("architectures") or ["LlamaForCausalLM"]
    if model_type != "llama" or "LlamaForCausalLM" not in archs:
        raise ValueError(f"config: model_type {model_type!r} / architectures {archs}: the lab runs LlamaForCausalLM only")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise ValueError(f"config: {key}=true is not supported by the lab")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config: hidden_act {hf['hidden_act']!r}; the lab implements silu")
    need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in need if k not in hf]
    if missing:
        raise ValueError(f"config lacks {missing}")
    heads = int(hf["num_attention_heads"])
    theta, scaling = _rope(hf)
    out = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": int(hf["hidden_size"]),
        "intermediate_size": int(hf["intermediate_size"]),
        "num_hidden_layers": int(hf["num_hidden_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(hf.get("num_key_value_heads") or heads),
        "head_dim": int(hf.get("head_dim") or hf["hidden_size"] // heads),
        "vocab_size": int(hf["vocab_size"]),
        "max_position_embeddings": int(hf.get("max_position_embeddings", 2048)),
        "rms_norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "tie_word_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    }
    if heads % out["num_key_value_heads"]:
        raise ValueError("config: num_attention_heads must be a multiple of num_key_value_heads")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if hf.get(key) is not None:
            out[key] = hf[key]
    dtype = _TORCH_DTYPE[precision] if precision else hf.get("torch_dtype", hf.get("dtype"))
    if dtype:
        out["torch_dtype"] = dtype
    return out
