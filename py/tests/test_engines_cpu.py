"""CPU engines against transformers' LlamaForCausalLM on the same random fp16 weights (fp32 reference).

Every position of a 72-token sequence through prefill (all logits) and through decode, greedy
tokens identical, for each config in engine_cases.CASES and each CPU engine that is built.
"""

import zlib

import numpy as np
import pytest

from engine_cases import CASES, SEQ_LEN, STD
from lab import tolerances
from lab.engine import engine_names, open_engine
from lab.reference import load_reference, reference_logits
from lab.synthetic import write_random_model

CPU_ENGINES = [e for e in ("cpu_fp32", "cpu_opt") if e in engine_names()]


@pytest.fixture(scope="module", params=sorted(CASES))
def model(request, tmp_path_factory):
    """(name, model_dir, torch reference, tokens, reference logits) for one random config."""
    d = tmp_path_factory.mktemp(request.param)
    # fp16 weights in the file: the fp16 engine and the fp32 reference then compute with the same weights
    # (only activations differ), so greedy tokens are comparable. A fixed seed: str hash() changes per process.
    write_random_model(d, CASES[request.param], precision="fp16", seed=zlib.crc32(request.param.encode()) % 1000,
                       std=STD)
    ref = load_reference(d, dtype="float32")
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, CASES[request.param]["vocab_size"], SEQ_LEN)
    return request.param, d, ref, tokens, reference_logits(ref, tokens)


@pytest.mark.parametrize("engine_name", CPU_ENGINES)
def test_prefill_all_positions(model, engine_name):
    _, d, _, tokens, ref_logits = model
    eng = open_engine(engine_name, d, max_context=128)
    ours = eng.prefill(tokens, all_logits=True)
    assert ours.shape == ref_logits.shape
    err = tolerances.rel_error(ours, ref_logits)
    assert err < tolerances.logits_rel(engine_name), f"{engine_name}: relative error {err:.2e}"
    # The default (last position only) equals the last row.
    eng.reset()
    last = eng.prefill(tokens)
    np.testing.assert_allclose(last, ours[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("engine_name", CPU_ENGINES)
def test_decode_every_position(model, engine_name):
    _, d, _, tokens, ref_logits = model
    eng = open_engine(engine_name, d, max_context=128)
    rows = [eng.prefill(tokens[:5])]
    for t in tokens[5:]:
        rows.append(eng.decode(int(t)))
    assert eng.pos == SEQ_LEN
    err = tolerances.rel_error(np.stack(rows), ref_logits[4:])
    assert err < tolerances.logits_rel(engine_name), f"{engine_name}: decode relative error {err:.2e}"


@pytest.mark.parametrize("engine_name", CPU_ENGINES)
def test_greedy_tokens_match_transformers(model, engine_name):
    import torch

    _, d, ref, tokens, _ = model
    prompt = tokens[:16]
    n_new = 24
    with torch.no_grad():
        out = ref.generate(
            torch.as_tensor(prompt[None, :]), max_new_tokens=n_new, do_sample=False, eos_token_id=None,
            pad_token_id=0,
        )
    want = out[0, len(prompt):].tolist()
    eng = open_engine(engine_name, d, max_context=128)
    logits = eng.prefill(prompt)
    got = []
    for _ in range(n_new):
        tok = int(np.argmax(logits))
        got.append(tok)
        logits = eng.decode(tok)
    assert got == want


@pytest.mark.parametrize("engine_name", CPU_ENGINES)
def test_reset_and_chunked_prefill_equal_one_pass(model, engine_name):
    """Prefill in pieces continues the KV cache exactly; reset() forgets it."""
    _, d, _, tokens, ref_logits = model
    eng = open_engine(engine_name, d, max_context=128)
    eng.prefill(np.random.default_rng(3).integers(0, 100, 30))  # unrelated history, then forget it
    eng.reset()
    a = eng.prefill(tokens[:40], all_logits=True)
    b = eng.prefill(tokens[40:], all_logits=True)
    err = tolerances.rel_error(np.concatenate([a, b]), ref_logits)
    assert err < tolerances.logits_rel(engine_name)
