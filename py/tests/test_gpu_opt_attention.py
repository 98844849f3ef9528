"""gpu_opt's decode attention: every launch layout and kernel version against the v2 reference layout, the
one-wave split rule, and the refusal of its knobs' bad values (cuda/gpu_opt/README.md, "Attention at short
contexts", "One wave of splits", "Attention's compute, branch-free"). All marked `gpu`; they skip without
a CUDA GPU.
"""

import re

import numpy as np
import pytest
from conftest import gpu_present

from engine_cases import ALL_CASES, CASES, write_model
from lab import _engine, tolerances


# Decode attention's layouts, each against v2 with one layout for every context (4 warps, 16-key split
# unit, LAB_GPU_ATTN_SHORT=0): its knobs (a callable takes the prompt length), and what the engine's
# variant must then name ("" : nothing about attention).
ATTN_LAYOUTS = {
    "v3": (lambda n: {"LAB_GPU_DECODE_ATTN": "v3"}, "attention v3"),
    "w8": (lambda n: {"LAB_GPU_ATTN_WARPS": "8", "LAB_GPU_ATTN_MIN_CHUNK": "64"}, "attention 8 warps, splits of 64+ keys"),
    "w2": (lambda n: {"LAB_GPU_ATTN_WARPS": "2"}, "attention 2 warps"),
    # the short-context layout (8 warps, 64-key splits) spread one block an SM up to 64 x (SMs / kv heads) keys,
    # which covers every step here (these models have 1 or 2 kv heads): the default until session 27, now on the
    # CUDA cores only by LAB_GPU_ATTN_MMA=0, which this test sets for every layout (test_gpu_opt_attention_mma_matches_v2
    # checks the tensor-core kernel, the default since)
    "cuda_cores": (lambda n: {}, "attention short on the CUDA cores"),
    # the short layout for the first 2 decode() steps, then the 4-warp one: two decode graphs
    "cross_decode": (lambda n: {"LAB_GPU_ATTN_SHORT": str(n + 2)}, "attention short up to"),
    # decode() steps and generate()'s first 8-step graph short, its single steps after 2 keys more long
    "cross_generate": (lambda n: {"LAB_GPU_ATTN_SHORT": str(n + 16)}, "attention short up to"),
    # few splits of many keys (the default's one-wave rule takes fewer splits than 64 on models with many
    # kv heads, README "One wave of splits"): at 2,100 keys 5 splits of 432 keys, 14 rounds of loads a
    # block, with 4 warps; of 448 keys, 7 rounds, with the short layout's 8
    "splits5": (lambda n: {"LAB_GPU_ATTN_SPLITS": "5", "LAB_GPU_ATTN_SHORT": "0"}, "attention splits 5, attention short off"),
    "splits5_short": (lambda n: {"LAB_GPU_ATTN_SPLITS": "5"}, "attention splits 5"),
    # the split merge's release / acquire as full fences around a relaxed increment (as before the acq_rel
    # atomic became the default): the short layout, the 4-warp one (at 2,100 keys up to 64 partials a kv head)
    # and the cluster merge's second level
    "fence": (lambda n: {"LAB_GPU_ATTN_SYNC": "fence"}, "attention merge fences"),
    "fence_long": (lambda n: {"LAB_GPU_ATTN_SYNC": "fence", "LAB_GPU_ATTN_SHORT": "0"}, "attention merge fences"),
    "fence_v3": (lambda n: {"LAB_GPU_ATTN_SYNC": "fence", "LAB_GPU_DECODE_ATTN": "v3"}, "attention merge fences"),
    # the online softmax after every step of keys with its per-step skip and per-lane branch (before the
    # branch-free round became the default): the short layout and the 4-warp one
    "step": (lambda n: {"LAB_GPU_ATTN_SOFTMAX": "step"}, "attention softmax per step"),
    "step_long": (lambda n: {"LAB_GPU_ATTN_SOFTMAX": "step", "LAB_GPU_ATTN_SHORT": "0"}, "attention softmax per step"),
    # the short layout's kernel compiled for one block per SM (no register cap, no spills)
    "short_1block": (lambda n: {"LAB_GPU_ATTN_SHORT_BLOCKS": "1"}, "attention short 1 block(s) per SM"),
    # the short layout's q held in registers (the default below 4 query heads a kv head, and before it was
    # staged in shared memory), and staged in shared memory (the default from 4 on)
    "short_q_regs": (lambda n: {"LAB_GPU_ATTN_Q": "regs"}, "attention short q in registers"),
    "short_q_shared": (lambda n: {"LAB_GPU_ATTN_Q": "shared"}, "attention short q in shared"),
    # the short layout's blocks one an SM, by unused dynamic shared memory (LAB_GPU_ATTN_SPREAD, the default since
    # session 21), off; and from spread to the short layout to the 4-warp one partway through decode() and
    # generate() (a launch that asked for memory it did not get would fail, one that overwrote it show here)
    "short_not_spread": (lambda n: {"LAB_GPU_ATTN_SPREAD": "0"}, "attention short not spread"),
    "spread_cross": (lambda n: {"LAB_GPU_ATTN_SPREAD": str(n + 4), "LAB_GPU_ATTN_SHORT": str(n + 12)},
                     "attention short spread up to"),
}


def layout_case(tmp_path, monkeypatch, case):
    """The layout tests' model (engine_cases' case, seed 31), its tokens and prompt length (2,100 for the long case),
    with the simple prefill and fp32 matvec inputs: with the default fp16 ones (LAB_GPU_ACT16=all) two merge orders'
    last-bit differences flip an attention output's fp16 rounding now and then (6e-5 to 2.4e-4 on the H200).
    Skips without a GPU."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = ALL_CASES[case]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=31)
    n_prompt = 2100 if case.startswith("long") else 20
    tokens = np.random.default_rng(37).integers(0, cfg["vocab_size"], n_prompt + 6)
    monkeypatch.setenv("LAB_GPU_ACT16", "off")
    monkeypatch.setenv("LAB_GPU_PREFILL", "simple")
    return d, tokens, n_prompt


def run_decode(monkeypatch, d, tokens, n_prompt, env, *names):
    """A gpu_opt engine on model d with env set for its creation, whose variant must name each of names: its decode()
    logits over tokens[n_prompt:] after a prefill of the rest, a 12-step generate()'s tokens, and its variant."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    eng = _engine.Engine("gpu_opt", str(d), n_prompt + 64)
    for k in env:
        monkeypatch.delenv(k)
    for name in names:
        assert name in eng.variant, (name, eng.variant)
    eng.prefill(tokens[:n_prompt])
    dec = np.stack([eng.decode(int(t)) for t in tokens[n_prompt:]])
    return dec, eng.generate(int(tokens[-1]), 12), eng.variant


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["gqa1_hd64_tied", "gqa3_hd128_llama3", "gqa8_hd128", "long_gqa4_hd128"])
def test_gpu_opt_attention_layouts_match_v2(tmp_path, monkeypatch, case):
    """Decode attention's layouts against v2 with one layout (4 warps, 16-key splits merged through global
    memory): v3 (the splits of a kv head merged in a thread-block cluster through DSMEM, a lab version),
    8-warp blocks over splits of 64+ keys, 2-warp blocks, the short layout on the CUDA cores (8 warps over
    64-key splits at short contexts, the default until session 27; LAB_GPU_ATTN_MMA=0 throughout), its switch
    from the short-context graphs to the 4-warp ones partway through decode() and generate(), 5 splits of many
    keys in either layout, the split merge synchronized by fences instead of the default's acquire-release
    atomic (LAB_GPU_ATTN_SYNC=fence) in the short, 4-warp and cluster layouts, the softmax after every step
    instead of the default's once per round (LAB_GPU_ATTN_SOFTMAX=step), and the short layout's kernel compiled
    for one block per SM (LAB_GPU_ATTN_SHORT_BLOCKS=1) or with q in registers or in shared memory whatever the
    group (LAB_GPU_ATTN_Q), and launched two blocks an SM instead of one at the shortest contexts
    (LAB_GPU_ATTN_SPREAD=0) or crossing from one to two to the 4-warp layout. The same logits to fp32 rounding
    (the merge order differs), at a short context (one cluster, one split of 64) and, for the long model, past
    2,100 positions (6 clusters per kv head, 33 splits of 64), with fp32 matvec inputs; greedy tokens of
    12-step generations agree. The engine's variant names the layout, so a knob that fell back to another
    would fail here rather than compare a layout with itself."""
    d, tokens, n_prompt = layout_case(tmp_path, monkeypatch, case)
    monkeypatch.setenv("LAB_GPU_ATTN_MMA", "0")  # the short layout's CUDA-core kernel, where a layout has it

    def run(env, name):
        return run_decode(monkeypatch, d, tokens, n_prompt, env, name)

    want = run({"LAB_GPU_ATTN_SHORT": "0"}, "attention short off")
    for layout, (env, name) in ATTN_LAYOUTS.items():
        got = run(env(n_prompt), name)
        err = tolerances.rel_error(got[0], want[0])
        assert err < tolerances.REORDER_REL, f"{case} {layout}: relative error {err:.2e} against v2"
        assert got[1].tolist() == want[1].tolist(), f"{case} {layout}"


# The short layout on the tensor cores (AttentionMmaKernel; the default since session 27, LAB_GPU_ATTN_MMA=auto, and
# named when LAB_GPU_ATTN_MMA=1 asks for it): its knobs beside that one, and what the variant must name.
MMA_LAYOUTS = {
    "mma": (lambda n: {}, "attention short on the tensor cores"),
    # two blocks an SM instead of one (not spread)
    "mma_not_spread": (lambda n: {"LAB_GPU_ATTN_SPREAD": "0"}, "attention short not spread"),
    # 5 splits: at 2,100 keys 448 keys a split, 7 rounds of a block's 64 keys and a last split of 308 (a partial round)
    "mma_splits5": (lambda n: {"LAB_GPU_ATTN_SPLITS": "5"}, "attention splits 5"),
    # from the tensor-core short layout to the 4-warp one partway through decode() and generate()
    "mma_cross": (lambda n: {"LAB_GPU_ATTN_SHORT": str(n + 12)}, "attention short up to"),
    # 8 warps over 128-key splits; with 5 splits, 4 rounds of 128 keys a block and a partial last round
    "mma8": (lambda n: {"LAB_GPU_ATTN_MMA": "8"}, "(8 warps, 128-key splits)"),
    "mma8_splits5": (lambda n: {"LAB_GPU_ATTN_MMA": "8", "LAB_GPU_ATTN_SPLITS": "5"}, "attention splits 5"),
}


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["gqa1_hd64_tied", "gqa3_hd128_llama3", "gqa8_hd128", "long_gqa4_hd128"])
def test_gpu_opt_attention_mma_matches_v2(tmp_path, monkeypatch, case):
    """The short layout's tensor-core kernel (AttentionMmaKernel, kernel version v4) against v2 with one layout (4
    warps, 16-key splits, CUDA cores): spread one block an SM (the default placement) or two, with 5 splits of
    many keys (rounds of 64 keys, a partial last round), and crossing to the 4-warp layout partway through decode()
    and generate(); at a short context and past 2,100 positions, GQA groups 1, 3, 4 and 8, head_dim 64 and 128.
    It rounds q and the softmax weights to fp16 where v2 keeps them in fp32, so the bound is
    tolerances.ATTN_FP16_REL, not the merge order's; a wrong fragment mapping (a dim or key paired with another's)
    moves the logits by far more. Greedy tokens of 12-step generations agree. The variant names the kernel when the
    knob asks for it; the default (auto) runs the same kernel unnamed in the spread layout (its logits within the merge
    order's bound of LAB_GPU_ATTN_MMA=1's) and the CUDA-core one in the short layout past it (within that bound of
    v2's)."""
    d, tokens, n_prompt = layout_case(tmp_path, monkeypatch, case)

    def run(env, *names):
        got = run_decode(monkeypatch, d, tokens, n_prompt, env, *names)
        assert ("tensor cores" in got[2]) == ("LAB_GPU_ATTN_MMA" in env), got[2]
        return got

    want = run({"LAB_GPU_ATTN_SHORT": "0"}, "attention short off")
    dflt = run({})  # auto: the 4-warp tensor-core kernel in the spread layout (every step here), not named
    assert "attention" not in dflt[2], dflt[2]
    # auto, the spread layout off: the short layout keeps the CUDA-core kernel, so v2's numerics to the merge order
    nosp = run({"LAB_GPU_ATTN_SPREAD": "0"}, "attention short not spread")
    assert tolerances.rel_error(nosp[0], want[0]) < tolerances.REORDER_REL, case
    for layout, (env, name) in MMA_LAYOUTS.items():
        got = run({"LAB_GPU_ATTN_MMA": "1", **env(n_prompt)}, name, "attention short on the tensor cores")
        if layout == "mma":  # the default is this kernel: the same numerics to the matvecs' order
            assert tolerances.rel_error(dflt[0], got[0]) < tolerances.REORDER_REL, case
            assert dflt[1].tolist() == got[1].tolist(), case
        err = tolerances.rel_error(got[0], want[0])
        print(f"{case} {layout}: relative error {err:.2e} against v2")
        assert err < tolerances.ATTN_FP16_REL, f"{case} {layout}: relative error {err:.2e} against v2"
        assert got[1].tolist() == want[1].tolist(), f"{case} {layout}"


@pytest.mark.gpu
def test_gpu_opt_attention_splits_fit_one_wave(tmp_path, monkeypatch, capfd):
    """Decode attention's splits per kv head default to what the SMs hold in one wave (README "One wave of
    splits"): with 32 kv heads that is far fewer than the 64 the merge allows (the old default, which put
    a second wave on Llama-3.1-8B past ~2,350 keys), and at least one block per SM over all heads;
    LAB_GPU_ATTN_SPLITS overrides it and is named. The engine prints the count with LAB_GPU_VERBOSE=1."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    import torch

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    cfg = dict(CASES["gqa1_hd64_tied"], hidden_size=2048, intermediate_size=256, num_hidden_layers=1,
               num_attention_heads=32, num_key_value_heads=32, head_dim=64, vocab_size=128)
    d = write_model(tmp_path / "m", cfg, "fp16", seed=5)
    monkeypatch.setenv("LAB_GPU_VERBOSE", "1")
    monkeypatch.setenv("LAB_GPU_PREFILL", "simple")

    def splits(env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        capfd.readouterr()
        eng = _engine.Engine("gpu_opt", str(d), 64)
        for k in env:
            monkeypatch.delenv(k)
        m = re.search(r"decode attention 4-warp blocks, (\d+) splits per kv head", capfd.readouterr().err)
        assert m, "the engine's verbose log names its split count"
        return int(m[1]), eng.variant

    n, variant = splits({})
    # At most 16 blocks of 128 threads fit an SM (2,048 threads); at least one does.
    assert sms // 32 <= n < 64 and n * 32 <= 16 * sms, (n, sms)
    assert "splits" not in variant, variant
    n, variant = splits({"LAB_GPU_ATTN_SPLITS": "63"})
    assert n == 63 and "attention splits 63" in variant, variant


@pytest.mark.gpu
def test_gpu_opt_attention_knobs_refused(tmp_path, monkeypatch):
    """Decode attention's knobs: an unknown version, and v3 (clusters of 8 splits, 4 warps, 4 steps in
    flight) with a split count that is not whole clusters or another warp count, an unknown warp count,
    a short-context bound that is negative or asked of v1, a short layout's blocks per SM other than 1 or 2
    or 1 without the short layout or the round softmax, q in shared memory elsewhere, the short layout spread
    one block an SM with a bad value or without that layout, and a split count past
    what the version merges (64 with v2, 32 with v1) or below 1, are refused by name."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d = write_model(tmp_path / "m", dict(CASES["gqa4_hd64_ropeparams"], hidden_size=512, intermediate_size=1024), "fp16",
                    seed=5)
    for env, msg in (({"LAB_GPU_DECODE_ATTN": "v4"}, "LAB_GPU_DECODE_ATTN must be .*v3"),
                     ({"LAB_GPU_DECODE_ATTN": "v3", "LAB_GPU_ATTN_SPLITS": "12"}, "multiple of 8 with decode attention v3"),
                     ({"LAB_GPU_DECODE_ATTN": "v3", "LAB_GPU_ATTN_WARPS": "2"}, "v3 runs 4 warps"),
                     ({"LAB_GPU_ATTN_WARPS": "6"}, "LAB_GPU_ATTN_WARPS must be 2, 4 or 8"),
                     ({"LAB_GPU_ATTN_SYNC": "sc"}, "LAB_GPU_ATTN_SYNC must be .*fence"),
                     ({"LAB_GPU_ATTN_SOFTMAX": "round", "LAB_GPU_ATTN_WARPS": "2"}, "SOFTMAX=round needs"),
                     ({"LAB_GPU_ATTN_SHORT": "-1"}, "LAB_GPU_ATTN_SHORT must be 0..1048576"),
                     ({"LAB_GPU_ATTN_SHORT_BLOCKS": "3"}, "LAB_GPU_ATTN_SHORT_BLOCKS must be"),
                     ({"LAB_GPU_ATTN_SHORT_BLOCKS": "1", "LAB_GPU_ATTN_SOFTMAX": "step"}, "SHORT_BLOCKS=1 needs the short"),
                     ({"LAB_GPU_ATTN_SHORT_BLOCKS": "1", "LAB_GPU_ATTN_SHORT": "0"}, "SHORT_BLOCKS=1 and LAB_GPU_ATTN_Q=shared need"),
                     ({"LAB_GPU_ATTN_Q": "smem"}, "LAB_GPU_ATTN_Q must be"),
                     ({"LAB_GPU_ATTN_Q": "shared", "LAB_GPU_ATTN_SHORT_BLOCKS": "1"}, "ATTN_Q=shared needs the short"),
                     ({"LAB_GPU_ATTN_Q": "shared", "LAB_GPU_ATTN_SHORT": "0"}, "LAB_GPU_ATTN_Q=shared need the short"),
                     ({"LAB_GPU_ATTN_Q": "shared", "LAB_GPU_ATTN_SOFTMAX": "step"}, "ATTN_Q=shared needs the short"),
                     ({"LAB_GPU_ATTN_SPREAD": "-1"}, "LAB_GPU_ATTN_SPREAD must be 0..1048576"),
                     ({"LAB_GPU_ATTN_SPREAD": "64", "LAB_GPU_ATTN_SHORT": "0"}, "SPREAD needs the short layout"),
                     ({"LAB_GPU_ATTN_SPREAD": "64", "LAB_GPU_ATTN_WARPS": "8"}, "SPREAD needs the short layout"),
                     ({"LAB_GPU_ATTN_SPLITS": "65"}, "LAB_GPU_ATTN_SPLITS must be 1..64 with decode attention v2"),
                     ({"LAB_GPU_ATTN_SPLITS": "0"}, "LAB_GPU_ATTN_SPLITS must be 1..64"),
                     ({"LAB_GPU_DECODE_ATTN": "v1", "LAB_GPU_ATTN_SPLITS": "33"}, "must be 1..32 with decode attention v1"),
                     ({"LAB_GPU_DECODE_ATTN": "v1", "LAB_GPU_ATTN_SHORT": "512"}, "SHORT needs the v2 decode attention"),
                     ({"LAB_GPU_ATTN_MMA": "2"}, "LAB_GPU_ATTN_MMA must be"),
                     ({"LAB_GPU_ATTN_MMA": "1", "LAB_GPU_ATTN_WARPS": "8"}, "ATTN_MMA needs the short layout"),
                     ({"LAB_GPU_ATTN_MMA": "8", "LAB_GPU_ATTN_Q": "regs"}, "ATTN_MMA needs the short layout"),
                     ({"LAB_GPU_ATTN_MMA": "1", "LAB_GPU_ATTN_SOFTMAX": "step"}, "ATTN_MMA needs the short layout"),
                     ({"LAB_GPU_ATTN_MMA": "1", "LAB_GPU_ATTN_SHORT": "0"}, "ATTN_MMA needs the short layout")):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(ValueError, match=msg):
            _engine.Engine("gpu_opt", str(d), 128)
        for k in env:
            monkeypatch.delenv(k)
