"""Random tiny Llama configs shared by the CPU and GPU engine tests (torch reference on the same weights),
and the writer they use.

Together they cover GQA group sizes 1, 3 and 4, head_dim 64 and 128, tied and untied embeddings,
llama3 RoPE scaling (with a short original context so that all three frequency bands are used),
and both config styles (Meta's rope_scaling, transformers 5's rope_parameters).
"""

BASE = dict(
    rms_norm_eps=1e-5,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
)

LLAMA3_ROPE = dict(
    rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64
)

CASES = {
    # group size 1 (MHA), head_dim 64, tied embeddings, plain RoPE
    "gqa1_hd64_tied": dict(
        BASE, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, head_dim=64, vocab_size=384, tie_word_embeddings=True, rope_theta=10000.0,
    ),
    # group size 3, head_dim 128, untied, llama3 scaling (Meta style keys)
    "gqa3_hd128_llama3": dict(
        BASE, hidden_size=384, intermediate_size=640, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=2, head_dim=128, vocab_size=512, tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling=LLAMA3_ROPE,
    ),
    # group size 4, head_dim 64, untied, llama3 scaling given as transformers 5's rope_parameters
    "gqa4_hd64_ropeparams": dict(
        BASE, hidden_size=512, intermediate_size=768, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, head_dim=64, vocab_size=448, tie_word_embeddings=False,
        rope_parameters=dict(LLAMA3_ROPE, rope_theta=500000.0),
    ),
}

SEQ_LEN = 72   # every position of a 64+ token sequence is compared
STD = 0.08     # weight std: larger than real init so that logits are peaked and greedy ties are rare


# Extra shapes for the GPU tests: the largest GQA group the attention kernel is built for (8), and a small
# model for long contexts.
EXTRA = {
    "gqa8_hd128": dict(
        CASES["gqa3_hd128_llama3"], hidden_size=1024, intermediate_size=1536, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=1, head_dim=128, vocab_size=320,
    ),
    "long_gqa4_hd128": dict(
        CASES["gqa3_hd128_llama3"], hidden_size=512, intermediate_size=768, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=128, vocab_size=256, max_position_embeddings=4096,
    ),
}
ALL_CASES = dict(CASES, **EXTRA)


def write_model(d, config: dict, precision: str, seed: int, std: float = STD):
    """A random model in our format (lab.synthetic, the one writer every test uses)."""
    from lab.synthetic import write_random_model

    write_random_model(d, config, precision=precision, seed=seed, std=std, progress=False)
    return d


def ref_device():
    """Where the torch reference runs: the GPU when torch sees one (fp32 there too), else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
