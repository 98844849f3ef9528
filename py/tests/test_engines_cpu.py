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
# (engine, environment): cpu_opt as it runs by default (bf16 MLP products where the CPU has AVX512-BF16,
# else fp32; the decode loop it times fastest), with its fp32 prefill forced, and with the 4-row decode
# matvec forced, with its weights read from the file's map instead of the copy on 2 MiB pages, with
# decode run op by op instead of as one parallel region, and with decode attention in 5 key ranges per KV
# head whatever the context (the default splits only where keys and threads call for it, which these small
# configs on a 2-core machine never do; 5 ranges also leave some empty at short contexts) or by query
# head, and with the AVX2 kernels (the lesson's path; this CPU's default is AVX-512) and the scalar ones, so
# that every path meets the same bounds.
VARIANTS = [(e, {}) for e in CPU_ENGINES] + [("cpu_opt", {"LAB_CPU_PREFILL": "fp32"}),
                                             ("cpu_opt", {"LAB_CPU_MATVEC": "4"}),
                                             ("cpu_opt", {"LAB_CPU_PAGES": "map"}),
                                             ("cpu_opt", {"LAB_CPU_DECODE": "ops"}),
                                             ("cpu_opt", {"LAB_CPU_DECODE_ATTN": "5"}),
                                             ("cpu_opt", {"LAB_CPU_DECODE_ATTN": "head"}),
                                             ("cpu_opt", {"LAB_CPU_ISA": "avx2"}),
                                             ("cpu_opt", {"LAB_CPU_ISA": "scalar"})] * ("cpu_opt" in CPU_ENGINES)
KNOBS = ("LAB_CPU_PREFILL", "LAB_CPU_MATVEC", "LAB_CPU_PAGES", "LAB_CPU_DECODE", "LAB_CPU_DECODE_ATTN", "LAB_CPU_ISA",
         "LAB_CPU_SCHEDULE")


@pytest.fixture(params=VARIANTS, ids=lambda v: "-".join([v[0]] + [f"{k[8:].lower()}_{x}" for k, x in v[1].items()]))
def open_variant(request, monkeypatch):
    """(engine name, opener(model_dir, max_context)) for one engine variant."""
    name, env = request.param
    for k in KNOBS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def open_(d, max_context):
        try:
            return open_engine(name, d, max_context=max_context)
        except ValueError as e:
            if "no 4-row matvec" in str(e):
                pytest.skip(f"{e} (this CPU has no AVX-512)")
            if "this CPU does not support" in str(e):
                pytest.skip(str(e))
            raise
    return name, open_


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


def test_prefill_all_positions(model, open_variant):
    _, d, _, tokens, ref_logits = model
    engine_name, open_ = open_variant
    eng = open_(d, 128)
    ours = eng.prefill(tokens, all_logits=True)
    assert ours.shape == ref_logits.shape
    err = tolerances.rel_error(ours, ref_logits)
    print(f"{engine_name} ({eng.variant}) on {model[0]}: prefill logits relative error {err:.2e}")  # pytest -s
    assert err < tolerances.logits_rel(engine_name), f"{engine_name} ({eng.variant}): relative error {err:.2e}"
    # The default (last position only) equals the last row. With bf16 MLP products it is close, not
    # equal: the last layer then runs one row, through the fp32 decode matvec (cpu_opt_engine.cc).
    eng.reset()
    last = eng.prefill(tokens)
    if "bf16" in eng.variant:
        assert tolerances.rel_error(last, ours[-1]) < tolerances.logits_rel(engine_name)
        assert tolerances.rel_error(last, ours[-1]) > 0  # the two paths differ: the bf16 path did run
    else:
        np.testing.assert_allclose(last, ours[-1], rtol=1e-5, atol=1e-5)


def test_decode_every_position(model, open_variant):
    _, d, _, tokens, ref_logits = model
    engine_name, open_ = open_variant
    eng = open_(d, 128)
    rows = [eng.prefill(tokens[:5])]
    for t in tokens[5:]:
        rows.append(eng.decode(int(t)))
    assert eng.pos == SEQ_LEN
    err = tolerances.rel_error(np.stack(rows), ref_logits[4:])
    assert err < tolerances.logits_rel(engine_name), f"{engine_name}: decode relative error {err:.2e}"


def test_greedy_tokens_match_transformers(model, open_variant):
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
    engine_name, open_ = open_variant
    eng = open_(d, 128)
    logits = eng.prefill(prompt)
    got = []
    for _ in range(n_new):
        tok = int(np.argmax(logits))
        got.append(tok)
        logits = eng.decode(tok)
    assert got == want


def test_reset_and_chunked_prefill_equal_one_pass(model, open_variant):
    """Prefill in pieces continues the KV cache exactly; reset() forgets it."""
    _, d, _, tokens, ref_logits = model
    engine_name, open_ = open_variant
    eng = open_(d, 128)
    eng.prefill(np.random.default_rng(3).integers(0, 100, 30))  # unrelated history, then forget it
    eng.reset()
    a = eng.prefill(tokens[:40], all_logits=True)
    b = eng.prefill(tokens[40:], all_logits=True)
    err = tolerances.rel_error(np.concatenate([a, b]), ref_logits)
    assert err < tolerances.logits_rel(engine_name)


def test_generate_equals_decode_argmax(model, open_variant):
    """generate(token, n) gives the tokens of n x decode + argmax and leaves the same state behind."""
    _, d, _, tokens, _ = model
    _, open_ = open_variant
    a, b = open_(d, 128), open_(d, 128)
    a.prefill(tokens[:16])
    b.prefill(tokens[:16])
    first = int(tokens[16])
    got = a.generate(first, 20)
    want, tok = [], first
    for _ in range(20):
        tok = int(np.argmax(b.decode(tok)))
        want.append(tok)
    assert got.dtype == np.int32 and got.tolist() == want
    assert a.pos == b.pos == 36
    np.testing.assert_array_equal(a.decode(int(got[-1])), b.decode(int(got[-1])))


def test_generate_bad_input(model):
    _, d, _, _, _ = model
    eng = open_engine(CPU_ENGINES[0], d, max_context=8)
    eng.prefill([1, 2, 3])
    for token, n in ((1, 6), (1, 0), (-1, 2), (10**6, 2)):
        with pytest.raises(ValueError):
            eng.generate(token, n)
        assert eng.pos == 3


def test_matvec_one_stream_or_four_bitwise_equal(model, monkeypatch):
    """cpu_opt's two decode loops (LAB_CPU_MATVEC=1|4) compute each row the same way: equal logits."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    _, d, _, tokens, _ = model
    out = {}
    for mode in ("1", "4"):
        monkeypatch.setenv("LAB_CPU_MATVEC", mode)
        try:
            eng = open_engine("cpu_opt", d, max_context=128)
        except ValueError as e:
            pytest.skip(str(e))
        assert ("decode 4 rows" in eng.variant) == (mode == "4")
        eng.prefill(tokens[:8])
        out[mode] = np.stack([eng.decode(int(t)) for t in tokens[8:20]])
    np.testing.assert_array_equal(out["1"], out["4"])
    monkeypatch.setenv("LAB_CPU_MATVEC", "8")
    with pytest.raises(ValueError, match="LAB_CPU_MATVEC"):
        open_engine("cpu_opt", d, max_context=128)


def _run_cpu_opt(monkeypatch, d, tokens, env, n_prompt=8, n_end=30):
    """cpu_opt with `env` set: (variant, prefill logits of tokens[:n_prompt] (all rows) followed by the
    decode logits of tokens[n_prompt:n_end], 8 greedy tokens after tokens[n_end])."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    eng = open_engine("cpu_opt", d, max_context=128)
    first = eng.prefill(tokens[:n_prompt], all_logits=True)
    logits = np.concatenate([first, np.stack([eng.decode(int(t)) for t in tokens[n_prompt:n_end]])])
    return eng.variant, logits, eng.generate(int(tokens[n_end]), 8)


def test_weight_pages_bitwise_equal(model, monkeypatch):
    """cpu_opt's weights copied onto 2 MiB pages (the default), onto 4 KiB pages, or read from the file's
    map (LAB_CPU_PAGES=huge|small|map): only where the bytes live differs, so prefill and decode logits are
    bitwise equal, and the variant says where they are. A copy that put a matrix in the wrong slot, or
    one tensor's bytes short, changes the logits."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    _, d, _, tokens, ref_logits = model
    out = {}
    for pages, note in (("huge", "2 MiB"), ("small", "4 KiB pages (0% huge)"), ("map", "in the file's map")):
        variant, out[pages], _ = _run_cpu_opt(monkeypatch, d, tokens, {"LAB_CPU_PAGES": pages}, n_end=20)
        assert note in variant, variant
    assert tolerances.rel_error(out["huge"], ref_logits[:20]) < tolerances.logits_rel("cpu_opt")
    np.testing.assert_array_equal(out["huge"], out["map"])
    np.testing.assert_array_equal(out["small"], out["map"])
    monkeypatch.setenv("LAB_CPU_PAGES", "2M")
    with pytest.raises(ValueError, match="LAB_CPU_PAGES must be huge, small or map"):
        open_engine("cpu_opt", d, max_context=128)


def _assert_knob_bitwise_equal(model, monkeypatch, knob, default, other, note, bad):
    """cpu_opt with `knob` at its default and at `other`: bitwise-equal prefill/decode logits and greedy
    tokens, the default within the fp16 bound, `note` in the variant only for `other`, and `bad` refused
    with a message naming the choices."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    _, d, _, tokens, ref_logits = model
    out, gen = {}, {}
    for mode in (default, other):
        variant, out[mode], gen[mode] = _run_cpu_opt(monkeypatch, d, tokens, {knob: mode})
        assert (note in variant) == (mode == other), variant
    assert tolerances.rel_error(out[default], ref_logits[:30]) < tolerances.logits_rel("cpu_opt")
    np.testing.assert_array_equal(out[default], out[other])
    np.testing.assert_array_equal(gen[default], gen[other])
    monkeypatch.setenv(knob, bad)
    with pytest.raises(ValueError, match=f"{knob} must be {default} or {other}, not '{bad}'"):
        open_engine("cpu_opt", d, max_context=128)


def test_decode_region_bitwise_equal_op_by_op(model, monkeypatch):
    """cpu_opt's decode step as one parallel region (the default: each thread its own copy of the residual
    stream, six barriers a layer) against the same step op by op (LAB_CPU_DECODE=ops, a parallel region
    per product): the same kernels on the same rows, so decode and greedy tokens are bitwise equal, the
    cache they write included (the later steps read it). A missed barrier or a wrong RoPE/cache slot
    changes the logits. A bad value is refused."""
    _assert_knob_bitwise_equal(model, monkeypatch, "LAB_CPU_DECODE", "region", "ops", "decode op by op", "fused")


def test_decode_guided_schedule_bitwise_equal(model, monkeypatch):
    """cpu_opt's decode rows dealt out guided (the default: shrinking chunks, taken as threads free up) or
    in equal contiguous shares (LAB_CPU_SCHEDULE=static): the same 24-row tasks through the same kernel,
    so only which thread computes a row differs and the logits and greedy tokens are bitwise equal. A
    task skipped or done twice by the guided loop changes them. A bad value is refused."""
    _assert_knob_bitwise_equal(model, monkeypatch, "LAB_CPU_SCHEDULE", "guided", "static", "static schedule",
                               "dynamic")


def test_decode_profile_counts_every_step(model, monkeypatch):
    """LAB_CPU_PROFILE=1: phase_seconds() counts every decode step (generate's and decode's), gives each
    part of the step its work and wait, the parts of a thread add up to no more than the steps' wall clock,
    and profiling changes no result. Without the knob the engine returns no profile."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    _, d, _, tokens, _ = model
    plain = open_engine("cpu_opt", d, max_context=128)
    assert plain.phase_seconds() == {}
    monkeypatch.setenv("LAB_CPU_PROFILE", "1")
    eng = open_engine("cpu_opt", d, max_context=128)
    eng.prefill(tokens[:8])
    plain.prefill(tokens[:8])
    assert eng.phase_seconds()["steps"] == 0  # prefill is not a decode step
    np.testing.assert_array_equal(eng.generate(int(tokens[8]), 6), plain.generate(int(tokens[8]), 6))
    np.testing.assert_array_equal(eng.decode(int(tokens[9])), plain.decode(int(tokens[9])))
    p = eng.phase_seconds()
    assert p["steps"] == 7
    parts = ("vector", "qkv", "rope_cache", "attention", "o_proj", "gate_up", "down", "lm_head")
    assert all(p[f"{k}.work"] > 0 and p[f"{k}.wait"] >= 0 for k in parts if k != "vector") and p["vector.work"] > 0
    assert sum(p[f"{k}.{x}"] for k in parts for x in ("work", "wait")) <= p["step"] * 1.05 + 1e-4


@pytest.mark.parametrize("knob,bad", [("LAB_CPU_ATTN", "tiles"), ("LAB_CPU_PRUNE", "2"), ("LAB_CPU_PROFILE", "yes"),
                                      ("LAB_CPU_PAGES", "2M"), ("LAB_CPU_SCHEDULE", "dynamic")])
def test_bad_knob_values_refused(model, monkeypatch, knob, bad):
    """Every cpu_opt choice knob refuses a value it does not know, naming the knob (none falls back to a
    default silently)."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    monkeypatch.setenv(knob, bad)
    with pytest.raises(ValueError, match=f"{knob} must be .*, not '{bad}'"):
        open_engine("cpu_opt", model[1], max_context=128)


def test_decode_attention_key_ranges_equal_per_head(model, monkeypatch):
    """cpu_opt's decode attention in key ranges per KV head, merged by their log-sum-exps (the default
    chooses the ranges; "5" forces five, some empty at short contexts), against one item per query head
    over all keys (LAB_CPU_DECODE_ATTN=head): the same softmax summed in another order, so equal to fp32
    rounding. A range left out of the merge, or weighted wrongly, is off by far more. Bad values are
    refused."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    _, d, _, tokens, ref_logits = model
    out = {}
    for mode, note in (("head", "by query head"), ("5", "in 5 key ranges"), ("split", None)):
        variant, out[mode], _ = _run_cpu_opt(monkeypatch, d, tokens, {"LAB_CPU_DECODE_ATTN": mode}, n_prompt=4,
                                             n_end=SEQ_LEN - 1)
        assert note is None or note in variant, variant
    for mode in ("5", "split"):
        assert tolerances.rel_error(out[mode], out["head"]) < 1e-5, mode
    assert tolerances.rel_error(out["5"], ref_logits[:SEQ_LEN - 1]) < tolerances.logits_rel("cpu_opt")
    for bad in ("0", "17", "row"):
        monkeypatch.setenv("LAB_CPU_DECODE_ATTN", bad)
        with pytest.raises(ValueError, match="LAB_CPU_DECODE_ATTN must be split, head or 1..16"):
            open_engine("cpu_opt", d, max_context=128)


def test_prefill_attention_tiles_equal_token_by_token(model, monkeypatch):
    """cpu_opt's tiled prefill attention (keys loaded once per tile of tokens) against its per-token
    kernel, with fp32 prefill products so that only attention differs: fp32 rounding apart, equal; and
    both at the fp32 engines' distance from the reference. Chunked, so tiles also start past position 0."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    _, d, _, tokens, ref_logits = model
    monkeypatch.setenv("LAB_CPU_PREFILL", "fp32")
    out = {}
    for mode in ("token", "tile"):
        monkeypatch.setenv("LAB_CPU_ATTN", mode)
        eng = open_engine("cpu_opt", d, max_context=128)
        if mode == "tile" and "attention tiles" not in eng.variant:
            pytest.skip(f"no tiled attention in {eng.variant}")
        out[mode] = np.concatenate([eng.prefill(tokens[:20], all_logits=True), eng.prefill(tokens[20:], all_logits=True)])
        assert tolerances.rel_error(out[mode], ref_logits) < tolerances.LOGITS_REL["fp32"]
    assert tolerances.rel_error(out["tile"], out["token"]) < 1e-5


@pytest.mark.parametrize("n_prompt", [40, 48])  # chunks of 16: 16+16+8 (a short last chunk) and 16+16+16
def test_pruned_last_layer_over_chunks_then_decode(model, monkeypatch, n_prompt):
    """cpu_opt's last-layer pruning (prefill with only the last logits: the last layer's queries, attention
    and feed-forward run for the call's last row only, its keys and values for every row), over a prompt
    of several chunks (LAB_CPU_PREFILL_CHUNK=16): only the last chunk has that row, and every chunk's keys
    and values must still reach the last layer's cache, which the decode steps after it read. Against the
    reference, and against LAB_CPU_PRUNE=0 (the last layer on every row): the caches are computed by the
    same products, so the decode logits are equal bitwise. all_logits over the same chunks is unpruned."""
    if "cpu_opt" not in CPU_ENGINES:
        pytest.skip("cpu_opt not built")
    _, d, _, tokens, ref_logits = model
    monkeypatch.setenv("LAB_CPU_PREFILL_CHUNK", "16")
    rows, decoded = {}, {}
    for prune in ("1", "0"):
        monkeypatch.setenv("LAB_CPU_PRUNE", prune)
        eng = open_engine("cpu_opt", d, max_context=128)
        first = eng.prefill(tokens[:n_prompt])
        decoded[prune] = np.stack([eng.decode(int(t)) for t in tokens[n_prompt:n_prompt + 12]])
        rows[prune] = np.concatenate([first[None], decoded[prune]])
        err = tolerances.rel_error(rows[prune], ref_logits[n_prompt - 1:n_prompt + 12])
        assert err < tolerances.logits_rel("cpu_opt"), f"LAB_CPU_PRUNE={prune} ({eng.variant}): relative error {err:.2e}"
        eng.reset()
        every = eng.prefill(tokens, all_logits=True)
        assert tolerances.rel_error(every, ref_logits) < tolerances.logits_rel("cpu_opt")
        assert tolerances.rel_error(first, every[n_prompt - 1]) < tolerances.logits_rel("cpu_opt")
    np.testing.assert_array_equal(decoded["1"], decoded["0"])
