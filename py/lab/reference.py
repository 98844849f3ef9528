"""The torch reference: transformers' LlamaForCausalLM on the very weights in one of our model dirs.

model.bin uses Hugging Face's tensor names and layouts (docs/model_format.md), so the state dict
loads as it is; config.json is HF-style, so LlamaConfig reads it as it is.
"""

from pathlib import Path

import numpy as np


def load_reference(model_dir, dtype="float32", device="cpu", attn_implementation="eager"):
    """LlamaForCausalLM in `dtype` on `device`, weights from model_dir/model.bin (no random init pass)."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model_dir = Path(model_dir)
    tdtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    cfg = LlamaConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn_implementation, dtype=tdtype)
    state = load_file(str(model_dir / "model.bin"), device=str(device))
    state = {k: v.to(tdtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"reference load: missing {missing}, unexpected {unexpected}")
    model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg).to(device)  # its buffers were on meta
    return model.eval()


def reference_logits(model, tokens) -> np.ndarray:
    """Logits [n, vocab] (fp32 numpy) of every position of one sequence."""
    import torch

    dev = next(model.parameters()).device
    ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64)[None, :], device=dev)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=False)
    return out.logits[0].float().cpu().numpy()


def perplexity_from_logits(logits: np.ndarray, tokens) -> float:
    """exp(mean NLL) of tokens[1:] given logits[:-1] (float64)."""
    from lab.perplexity import token_nll

    return float(np.exp(token_nll(logits[:-1], np.asarray(tokens)[1:]).mean()))
