"""Writes a random-weight Llama-3.1-8B-shaped model (or a smaller arch) in the lab format, fast, on a GPU.

  python3 cuda/tools/make_random_model.py OUT_DIR [--arch llama-3.1-8b] [--precision fp16]

Weights normal(0, 0.02), norm weights 1 + normal(0, 0.05), drawn by torch on CUDA tensor by tensor
(never zeros: zeros run faster than real data). The GPU benches' stand-in where lab.synthetic is not
available; same format (docs/model_format.md): config.json + model.bin with
{"format": "pt", "lab_format_version": "1"}, written under a temporary name and renamed when complete.
"""

import argparse
import json
import os
import time

import torch
from safetensors.torch import save_file

ARCHS = {
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--arch", default="llama-3.1-8b", choices=sorted(ARCHS))
    ap.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    cfg = dict(ARCHS[a.arch], architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
               rms_norm_eps=1e-5, max_position_embeddings=131072, rope_theta=500000.0,
               rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8192),
               bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
               torch_dtype="float16" if a.precision == "fp16" else "float32")
    dim, hidden, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q_dim, kv_dim = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], dim), "model.norm.weight": (dim,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (cfg["vocab_size"], dim)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (dim,), p + "post_attention_layernorm.weight": (dim,),
            p + "self_attn.q_proj.weight": (q_dim, dim), p + "self_attn.k_proj.weight": (kv_dim, dim),
            p + "self_attn.v_proj.weight": (kv_dim, dim), p + "self_attn.o_proj.weight": (dim, q_dim),
            p + "mlp.gate_proj.weight": (hidden, dim), p + "mlp.up_proj.weight": (hidden, dim),
            p + "mlp.down_proj.weight": (dim, hidden),
        })
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dt = torch.float16 if a.precision == "fp16" else torch.float32
    g = torch.Generator(device=dev).manual_seed(a.seed)
    tensors = {}
    for name, shape in shapes.items():
        x = torch.randn(*shape, generator=g, device=dev, dtype=torch.float32)
        x = x.mul_(0.05).add_(1.0) if len(shape) == 1 else x.mul_(0.02)
        tensors[name] = x.to(dt).cpu()
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    tmp = os.path.join(a.out_dir, "model.bin.tmp")
    save_file(tensors, tmp, metadata={"format": "pt", "lab_format_version": "1"})
    os.replace(tmp, os.path.join(a.out_dir, "model.bin"))
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {a.out_dir}: {a.arch} {a.precision}, {n / 1e9:.2f} B params, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
