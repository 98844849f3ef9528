"""gpu_opt's decode matvec tiles and their knobs (gpu_opt_tune.cu, kernels_matvec.cuh,
kernels_matvec_ring.cuh): every register tile bitwise equal to the others (widths where threads stage
several chunks of x, staged and persistent tiles, the second weight batch, x by bulk copy); the weight-ring
tiles, which add by pieces, within the fp16 bound of the torch reference and of a register tile; the
tiles the variant names, the pins of LAB_GPU_TILES, and the refusal of bad knob values. All marked `gpu`;
they skip without a CUDA GPU. The engines against torch are test_gpu_engines.py. Every test here runs the
split MLP (gate_up and down, whose tiles they compare): the fused one, the default where it can run, is one
kernel with no tile to choose, and adds its partial sums in the order they land, so not bitwise run to run.
"""

import numpy as np
import pytest
from conftest import gpu_present

from engine_cases import ALL_CASES, CASES, ref_device, write_model
from lab import _engine, tolerances
from lab.reference import load_reference, reference_logits
from lab.tolerances import rel_error as rel


@pytest.fixture(autouse=True)
def _split_mlp(monkeypatch):
    monkeypatch.setenv("LAB_GPU_MLP", "split")


@pytest.mark.gpu
@pytest.mark.parametrize("hidden", [2048, 1032])
def test_gpu_opt_tiles_bitwise_at_width(tmp_path, monkeypatch, hidden):
    """Every tile gives the same logits bitwise where a thread stages more than one chunk of x: at hidden
    2048 (256 chunks) a w2 tile's 64 threads stage four chunks each, a w4 tile's two, a w8 tile's one; at
    1032 (129 chunks) some threads of every tile stage one more chunk than the others. The RMSNorm's sum
    of squares is added in one order whatever the block (kernels_matvec.cuh): summed per thread and then
    per warp, as before session 14, the tiles differed in the last bit of the RMS, which the tile tests at
    hidden 512 (at most one chunk a thread) could not see. Also with x by bulk copy in every matvec (the
    default; XB 2 stages the same sums from its copy) and by the staging loop (X_BULK=off), and a staged and a
    persistent tile. LAB_GPU_NORM_EARLY=all (session
    21: a register tile asks its norm weights into L1 before the wait, a line a thread; at 1032 the last
    line is partly past the weights) gives the same values too, in the loop's staging and in XB 2's."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = dict(CASES["gqa4_hd64_ropeparams"], hidden_size=hidden, intermediate_size=1024)
    d = write_model(tmp_path / "m", cfg, "fp16", seed=71)
    tokens = np.random.default_rng(73).integers(0, cfg["vocab_size"], 30)
    want, want_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": "2"}, monkeypatch)  # w8.u1.r4
    for env in ({"LAB_GPU_MATVEC_CONFIG": "5"}, {"LAB_GPU_MATVEC_CONFIG": "0"}, {"LAB_GPU_MATVEC_CONFIG": "3"},
                {"LAB_GPU_MATVEC_CONFIG": "17"}, {"LAB_GPU_MATVEC_CONFIG": "13"},
                {"LAB_GPU_MATVEC_CONFIG": "5", "LAB_GPU_X_BULK": "off"}, {"LAB_GPU_MATVEC_CONFIG": "2", "LAB_GPU_X_BULK": "off"},
                {"LAB_GPU_MATVEC_CONFIG": "2", "LAB_GPU_NORM_EARLY": "all"},
                {"LAB_GPU_MATVEC_CONFIG": "5", "LAB_GPU_X_BULK": "all", "LAB_GPU_NORM_EARLY": "all"}):
        got, got_gen = _decode_logits(d, tokens, env, monkeypatch)
        np.testing.assert_array_equal(got, want, err_msg=str(env))
        assert got_gen.tolist() == want_gen.tolist(), env
    monkeypatch.setenv("LAB_GPU_NORM_EARLY", "all")
    assert "norm weights into L1 before the wait" in _engine.Engine("gpu_opt", str(d), 64).variant


# Staged tiles (v8, LAB_GPU_O_STAGE) against the same tile unstaged: indices into gpu_opt's Configs().
STAGED_PAIRS = [("w8.u2.r2", 4, "w8.u2.r2.s", 12), ("w4.u2.r4", 3, "w4.u2.r4.s", 13), ("w8.u1.r4", 2, "w8.u1.r4.s", 14)]


def _tile_model(tmp_path, seed, token_seed):
    """The tile tests' model: 512 / 1024 inputs are 64 / 128 chunks per row, so a 32-chunk staged first
    batch leaves a remainder streamed through registers. 30 tokens: 20 prefilled, 10 decoded."""
    cfg = dict(CASES["gqa4_hd64_ropeparams"], hidden_size=512, intermediate_size=1024)
    d = write_model(tmp_path / "m", cfg, "fp16", seed=seed)
    return d, np.random.default_rng(token_seed).integers(0, cfg["vocab_size"], 30)


def _greedy_by_decode(eng, prompt, first, n):
    """The n tokens generate(first, n) must give after `prompt`: decode()'s argmax fed back, from `first`. The
    engine is left prefilled with `prompt` again, ready for that generate()."""
    eng.reset()
    eng.prefill(prompt)
    out = [int(np.argmax(eng.decode(int(first))))]
    for _ in range(n - 1):
        out.append(int(np.argmax(eng.decode(out[-1]))))
    eng.reset()
    eng.prefill(prompt)
    return out


def _decode_logits(d, tokens, env, monkeypatch, counts=None):
    """Logits of 10 decode() steps after a 20-token prefill, and 4 generate() tokens, under env; `counts`
    (a dict), if given, gets the engine's launch_counts() at the end."""
    for k in ("LAB_GPU_MATVEC_CONFIG", "LAB_GPU_O_STAGE", "LAB_GPU_O_STAGE_KB", "LAB_GPU_PERSIST_GRID", "LAB_GPU_EARLY",
              "LAB_GPU_SECOND", "LAB_GPU_ACT16", "LAB_GPU_X_BULK", "LAB_GPU_RING_PRE", "LAB_GPU_NORM_EARLY",
              "LAB_GPU_NORM_FOLD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAB_GPU_PREFILL", "simple")  # no timed GEMM choice: two engines prefill alike
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    eng = _engine.Engine("gpu_opt", str(d), 128)
    eng.prefill(tokens[:20])
    out = np.stack([eng.decode(int(t)) for t in tokens[20:]])
    gen = eng.generate(int(tokens[-1]), 4)
    if counts is not None:
        counts.update(eng.launch_counts())
    return out, gen


@pytest.mark.gpu
@pytest.mark.parametrize("pair", STAGED_PAIRS, ids=[p[2] for p in STAGED_PAIRS])
def test_gpu_opt_staged_tiles_bitwise(tmp_path, monkeypatch, pair):
    """A staged tile (first batch copied into shared memory by bulk copies before the PDL wait) adds each
    lane's chunks in the unstaged tile's order: bitwise the same logits and tokens, for every epilogue
    (every matvec on the tile), with rows staged whole (the default budget on this small model) and
    staged 32 chunks deep with the rest streamed through registers (a 1 KB budget); and as o_proj's
    tile alone (LAB_GPU_O_STAGE) beside the unstaged tile everywhere else. Any misplaced chunk (a wrong
    row, offset or byte count in the copies) changes the logits."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d, tokens = _tile_model(tmp_path, 21, 13)
    plain, plain_i, staged, staged_i = pair
    want, want_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": str(plain_i)}, monkeypatch)
    for env in ({"LAB_GPU_MATVEC_CONFIG": str(staged_i)},
                {"LAB_GPU_MATVEC_CONFIG": str(staged_i), "LAB_GPU_O_STAGE_KB": "1"},
                {"LAB_GPU_MATVEC_CONFIG": str(plain_i), "LAB_GPU_O_STAGE": staged, "LAB_GPU_O_STAGE_KB": "1"}):
        got, got_gen = _decode_logits(d, tokens, env, monkeypatch)
        np.testing.assert_array_equal(got, want, err_msg=f"{staged} {env}")
        assert got_gen.tolist() == want_gen.tolist(), env


# Persistent tiles (v9, ".b") against the same tile with one task per warp.
PERSIST_PAIRS = [("w8.u1.r4", 2, "w8.u1.r4.b", 15), ("w8.u2.r2", 4, "w8.u2.r2.b", 16),
                 ("w4.u1.r4", 0, "w4.u1.r4.b", 17), ("w4.u2.r4", 3, "w4.u2.r4.b", 18)]


@pytest.mark.gpu
@pytest.mark.parametrize("pair", PERSIST_PAIRS, ids=[p[2] for p in PERSIST_PAIRS])
def test_gpu_opt_persistent_tiles_bitwise(tmp_path, monkeypatch, pair):
    """A persistent tile (a grid of a few blocks looping over the warps' tasks) computes every row as the
    one-task tile does: bitwise the same logits and tokens, with the grid the engine picks and with grids
    of 1 and 5 blocks, where each warp loops over many tasks, some warps fewer than others; a task
    skipped, repeated or given another warp's rows changes the logits."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d, tokens = _tile_model(tmp_path, 23, 17)
    plain, plain_i, persist, persist_i = pair
    want, want_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": str(plain_i)}, monkeypatch)
    for grid in (None, "1", "5"):
        env = {"LAB_GPU_MATVEC_CONFIG": str(persist_i)}
        if grid:
            env["LAB_GPU_PERSIST_GRID"] = grid
        got, got_gen = _decode_logits(d, tokens, env, monkeypatch)
        np.testing.assert_array_equal(got, want, err_msg=f"{persist} {env}")
        assert got_gen.tolist() == want_gen.tolist(), env


# Weight-ring tiles (v10, "ring."): indices into gpu_opt's Configs().
RING_TILES = [("ring.c8.s16.k256", 19), ("ring.c8.s8.k512", 20), ("ring.c16.s16.k256", 21)]
RING_MODELS = {  # (a case, and the widths that cut rows into pieces with a short last one)
    "gqa3_hd128_llama3": {},
    "gqa1_hd64_tied": {},
    "width_1032_4104": dict(CASES["gqa4_hd64_ropeparams"], hidden_size=1032, intermediate_size=4104),
}


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", sorted(RING_MODELS))
def test_gpu_opt_ring_tiles_match_reference(tmp_path, monkeypatch, model_name):
    """Every matvec on a weight-ring tile (the weights by bulk copies through a ring of shared memory;
    kernels_matvec_ring.cuh): every epilogue (qkv with RoPE and the KV write, residual, SiLU*up, the
    logits and generate()'s argmax) within the fp16 bound of the fp32 torch reference, as close to the
    register tile w8.u1.r4 (the same products, added by pieces), and generate() gives decode()'s argmax
    tokens. At width 1032 / 4104 rows are 129 / 513 chunks: pieces of 256 and 512 with a short last one,
    and gate_up's 31 units a block wrap every ring several times. A wrong row, piece, offset or ring
    phase moves the logits far past the bound."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = RING_MODELS[model_name] or ALL_CASES[model_name]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=83)
    tokens = np.random.default_rng(89).integers(0, cfg["vocab_size"], 30)
    ref = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)[20:]
    tol = tolerances.logits_rel("gpu_opt")
    loop, loop_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": "2"}, monkeypatch)  # w8.u1.r4
    for name, i in RING_TILES:
        monkeypatch.setenv("LAB_GPU_MATVEC_CONFIG", str(i))
        assert name in _engine.Engine("gpu_opt", str(d), 128).variant  # the tile this index names
        got, got_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": str(i)}, monkeypatch)
        err, err_loop = rel(got, ref), rel(got, loop)
        print(f"{model_name} {name}: vs torch {err:.2e}, vs w8.u1.r4 {err_loop:.2e}")
        assert err < tol and err_loop < tol, f"{name}: {err:.2e} against torch, {err_loop:.2e} against w8.u1.r4"
        # generate() against decode()'s argmax on the same tile (the ring's argmax epilogue)
        monkeypatch.setenv("LAB_GPU_PREFILL", "simple")
        eng = _engine.Engine("gpu_opt", str(d), 128)
        want = _greedy_by_decode(eng, tokens[:20], tokens[20], 6)
        assert eng.generate(int(tokens[20]), 6).tolist() == want, name


@pytest.mark.gpu
@pytest.mark.parametrize("name,i", RING_TILES, ids=[t[0] for t in RING_TILES])
def test_gpu_opt_ring_x_bulk_bitwise(tmp_path, monkeypatch, name, i):
    """A ring tile's XB kernel (v13, session 23; the residual matvecs): the fp16 x by one bulk copy after the
    PDL wait, kept fp16 in shared memory, each consumer warp waiting for the copy alone. fp16 to fp32 is exact,
    so the logits and tokens are bitwise the staging loop's, for down alone (LAB_GPU_X_BULK=down), o_proj and
    down (resid) and every kind that has the kernel (all, the default): the kinds with a norm (qkv, gate_up,
    lm_head) keep the staging on a ring tile (gate_up's copy measured slower). down's rows of 513 chunks and
    o_proj's of 129 cut pieces with a short last one. The launch counts show where the copy ran (equal logits
    alone would pass if it never did). A copy of the wrong bytes or a chunk unpacked out of place changes
    the logits."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = RING_MODELS["width_1032_4104"]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=113)
    tokens = np.random.default_rng(127).integers(0, cfg["vocab_size"], 30)
    kinds = ("qkv", "o_proj", "gate_up", "down", "lm_head")
    base = {"LAB_GPU_MATVEC_CONFIG": str(i)}
    n = {}
    want, want_gen = _decode_logits(d, tokens, dict(base, LAB_GPU_X_BULK="off"), monkeypatch, n)
    assert all(n[k] > 0 and n[k + ".x_bulk"] == 0 for k in kinds), n
    for xb, on in (("down", {"down"}), ("resid", {"o_proj", "down"}), ("all", {"o_proj", "down"})):
        n = {}
        env = dict(base, LAB_GPU_X_BULK=xb)
        got, got_gen = _decode_logits(d, tokens, env, monkeypatch, n)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} {env}")
        assert got_gen.tolist() == want_gen.tolist(), (name, env)
        for k in kinds:
            assert n[k + ".x_bulk"] == (n[k] if k in on else 0), (name, env, k, n)


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", ["gqa3_hd128_llama3", "gqa1_hd64_tied"])
def test_gpu_opt_norm_fold(tmp_path, monkeypatch, model_name):
    """LAB_GPU_NORM_FOLD (on by default, session 22): each layer's two RMSNorm weights multiplied into Wqkv and
    Wgate_up at load (rounded once more to fp16) and set to ones, so that the register tiles neither load nor
    apply them after the PDL wait. Folded and unfolded, on a register tile (w8.u1.r4) and a ring tile (which
    multiplies by the ones), the logits are within the fp16 bound of the fp32 torch reference, after the
    simple prefill and the tensor-core one; folded and unfolded are not bitwise equal (the fold happened). g
    applied twice (folded, ones not set) or lost (ones without the fold) moves them far past the bound; the
    tied model's final norm and shared embedding are not folded. variant() names the knob off."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = ALL_CASES[model_name]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=107)
    tokens = np.random.default_rng(109).integers(0, cfg["vocab_size"], 30)
    ref = reference_logits(load_reference(d, dtype="float32", device=ref_device()), tokens)[20:]
    tol = tolerances.logits_rel("gpu_opt")
    for tile in ("2", "19"):  # w8.u1.r4, ring.c8.s16.k256
        got = {}
        for fold in ("1", "0"):
            got[fold], _ = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": tile, "LAB_GPU_NORM_FOLD": fold},
                                          monkeypatch)
            err = rel(got[fold], ref)
            print(f"{model_name} tile {tile} fold {fold}: vs torch {err:.2e}")
            assert err < tol, (tile, fold, err)
        assert not np.array_equal(got["1"], got["0"]), tile
    for fold in ("1", "0"):  # the tensor-core prefill reads the same weights and ones
        monkeypatch.setenv("LAB_GPU_NORM_FOLD", fold)
        monkeypatch.setenv("LAB_GPU_PREFILL", "tc")
        eng = _engine.Engine("gpu_opt", str(d), 128)
        eng.prefill(tokens[:20])
        got = np.stack([eng.decode(int(t)) for t in tokens[20:]])
        assert rel(got, ref) < tol, (fold, rel(got, ref))
    monkeypatch.setenv("LAB_GPU_NORM_FOLD", "0")
    assert "norm weights not folded" in _engine.Engine("gpu_opt", str(d), 64).variant
    monkeypatch.setenv("LAB_GPU_NORM_FOLD", "1")
    assert "folded" not in _engine.Engine("gpu_opt", str(d), 64).variant


@pytest.mark.gpu
def test_gpu_opt_ring_knobs_bitwise(tmp_path, monkeypatch):
    """Two ring-tile knobs of session 19 move only when bytes arrive, so both give bitwise the logits and
    tokens of the defaults, on the model whose rings wrap several times:
    - LAB_GPU_RING_PRE holds part of the pre-wait fill until the consumers pass the PDL wait: 1 stage (the
      producer stops at once), 5 (no divisor of the rings' 8 or 16 stages) and 64 (at least every ring:
      the whole ring, as unset). A wrong phase of the hold deadlocks or reads a slot early.
    - LAB_GPU_NORM_EARLY (on by default) copies the norm weights into shared memory before the wait; =0
      loads them from global memory with x after it: the same values.
    variant() names both, and a bad RING_PRE is refused."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = RING_MODELS["width_1032_4104"]
    d = write_model(tmp_path / "m", cfg, "fp16", seed=101)
    tokens = np.random.default_rng(103).integers(0, cfg["vocab_size"], 30)
    for name, i in RING_TILES:
        want, want_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": str(i)}, monkeypatch)
        for pre in ("1", "5", "64"):
            got, got_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": str(i), "LAB_GPU_RING_PRE": pre},
                                          monkeypatch)
            assert np.array_equal(got, want), (name, pre, float(np.abs(got - want).max()))
            assert got_gen.tolist() == want_gen.tolist(), (name, pre)
        got, got_gen = _decode_logits(d, tokens, {"LAB_GPU_MATVEC_CONFIG": str(i), "LAB_GPU_NORM_EARLY": "0"},
                                      monkeypatch)  # norm weights loaded after the wait: the same values
        assert np.array_equal(got, want), (name, "norm after the wait", float(np.abs(got - want).max()))
        assert got_gen.tolist() == want_gen.tolist(), (name, "norm after the wait")
    monkeypatch.setenv("LAB_GPU_RING_PRE", "5")
    monkeypatch.setenv("LAB_GPU_NORM_EARLY", "0")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert "ring 5 stages before the wait" in v and "ring norm weights after the wait" in v, v
    monkeypatch.delenv("LAB_GPU_NORM_EARLY")
    for bad in ("0", "65", "x"):
        monkeypatch.setenv("LAB_GPU_RING_PRE", bad)
        with pytest.raises(ValueError, match="LAB_GPU_RING_PRE must be 1..64"):
            _engine.Engine("gpu_opt", str(d), 64)


@pytest.mark.gpu
def test_gpu_opt_ring_tile_that_does_not_fit(tmp_path, monkeypatch):
    """A ring tile keeps its whole input in shared memory beside a 128 KB ring: down's x at an intermediate
    size of 26,624 (104 KB in fp32) does not fit in a block. Pinned there, the tile is refused when the
    engine is made, naming tile and kind; left to the tuners, they skip it and the engine runs."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = dict(CASES["gqa1_hd64_tied"], intermediate_size=26624)
    d = write_model(tmp_path / "m", cfg, "fp16", seed=97)
    monkeypatch.setenv("LAB_GPU_TILES", "down=ring.c8.s16.k256")
    with pytest.raises(ValueError, match="tile ring.c8.s16.k256 does not fit down on this card"):
        _engine.Engine("gpu_opt", str(d), 64)
    monkeypatch.setenv("LAB_GPU_TILES", "gate_up=ring.c8.s16.k256")  # gate_up's x is hidden-long: it fits
    eng = _engine.Engine("gpu_opt", str(d), 64)
    assert "gate_up ring.c8.s16.k256" in eng.variant and "down ring." not in eng.variant, eng.variant
    eng.prefill([1, 2, 3])
    assert np.isfinite(eng.decode(4)).all()


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["2", "5", "9", "16"])
@pytest.mark.parametrize("act16", ["off", "all"])
def test_gpu_opt_second_batch_bitwise(tmp_path, monkeypatch, config, act16):
    """Where the second weight batch goes out (LAB_GPU_SECOND=after_wait: right after the PDL wait, before
    x is staged; LAB_GPU_EARLY=all, not_o or off: before the wait for every kind, all but o_proj, or
    none; the default is qkv only) changes when loads
    go out, not what is added: bitwise the logits and tokens of the defaults, with fp32 and with fp16
    inputs (LAB_GPU_ACT16=all). down's input here is 5,000 long (625 chunks), so a thread stages several
    chunks and the last round is partial, for every tile tried (w8, w2, the PRE=2 tile, a persistent
    tile)."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = dict(CASES["gqa4_hd64_ropeparams"], hidden_size=512, intermediate_size=5000)
    d = write_model(tmp_path / "m", cfg, "fp16", seed=41)
    tokens = np.random.default_rng(43).integers(0, cfg["vocab_size"], 30)
    base = {"LAB_GPU_MATVEC_CONFIG": config, "LAB_GPU_ACT16": act16}
    want, want_gen = _decode_logits(d, tokens, base, monkeypatch)
    for env in ({"LAB_GPU_SECOND": "after_wait"}, {"LAB_GPU_EARLY": "all"}, {"LAB_GPU_EARLY": "not_o"},
                {"LAB_GPU_EARLY": "off"}):
        got, got_gen = _decode_logits(d, tokens, dict(base, **env), monkeypatch)
        np.testing.assert_array_equal(got, want, err_msg=str(env))
        assert got_gen.tolist() == want_gen.tolist(), env


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["2", "4", "5", "16"])
def test_gpu_opt_x_bulk_bitwise(tmp_path, monkeypatch, config):
    """LAB_GPU_X_BULK: the fp16 x of down (down), of o_proj and down (resid), of gate_up too (gate_up) or of
    every matvec (all, the default since session 23) copied into shared memory by one bulk copy after the PDL wait,
    instead of the staging loop (off). The residual kernels (XB 1) keep it fp16 and unpack it at each
    product; the kernels with a norm (XB 2) turn it into the loop's fp32 x * norm_w in shared memory.
    fp16 to fp32 is exact and each lane adds the same products in the same order, so the logits and
    tokens (decode() and generate()) are bitwise the loop's, for w8.u1.r4, w8.u2.r2, w2.u1.r8 and a
    persistent tile; and so they are with LAB_GPU_SECOND=xb (the default: the second weight batch right
    after the wait in the bulk-copy kernels) or after_x. down's input is 5,000 long (625 chunks, 10,000
    bytes in one copy); w2.u1.r8's 64 threads hold the first two of a thread's eight chunks of norm
    weights in registers and load the rest in the staging. A copy that read the previous layer's x, a
    wrong byte count or a chunk unpacked out of place changes the logits (or never completes). The
    engine's launch counts show that the bulk-copy kernels ran where the knob says and nowhere else, and
    where the second batch went (equal logits alone would pass if they never ran)."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    cfg = dict(CASES["gqa4_hd64_ropeparams"], hidden_size=512, intermediate_size=5000)
    d = write_model(tmp_path / "m", cfg, "fp16", seed=59)
    tokens = np.random.default_rng(61).integers(0, cfg["vocab_size"], 30)
    base = {"LAB_GPU_MATVEC_CONFIG": config}
    kinds = ("qkv", "o_proj", "gate_up", "down", "lm_head")
    n = {}
    want, want_gen = _decode_logits(d, tokens, dict(base, LAB_GPU_X_BULK="off"), monkeypatch, n)
    assert n["down"] > 0 and all(n[k + ".x_bulk"] == n[k + ".second_after_wait"] == 0 for k in kinds), n
    for xb, on, second in (("down", {"down"}, "after_x"), ("resid", {"down", "o_proj"}, "after_x"),
                           ("resid", {"down", "o_proj"}, "xb"), ("gate_up", {"down", "o_proj", "gate_up"}, "xb"),
                           ("all", set(kinds), "xb")):
        n = {}
        env = dict(base, LAB_GPU_X_BULK=xb, LAB_GPU_SECOND=second)
        got, got_gen = _decode_logits(d, tokens, env, monkeypatch, n)
        np.testing.assert_array_equal(got, want, err_msg=str(env))
        assert got_gen.tolist() == want_gen.tolist(), env
        for k in kinds:  # every decode launch of an `on` kind (qkv's second batch goes before the wait)
            assert n[k] > 0 and n[k + ".x_bulk"] == (n[k] if k in on else 0), (env, k, n)
            after_wait = k in on and second == "xb" and k != "qkv"
            assert n[k + ".second_after_wait"] == (n[k] if after_wait else 0), (env, k, n)


@pytest.mark.gpu
def test_gpu_opt_x_bulk_with_staged_o_proj(tmp_path, monkeypatch):
    """A staged o_proj tile has no bulk-copy kernel: with LAB_GPU_X_BULK=resid o_proj keeps its staging
    loop and down takes the copy; the logits are bitwise those of the staged tile alone."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d, tokens = _tile_model(tmp_path, 63, 67)
    base = {"LAB_GPU_MATVEC_CONFIG": "2", "LAB_GPU_O_STAGE": "w8.u1.r4.s"}
    want, want_gen = _decode_logits(d, tokens, dict(base, LAB_GPU_X_BULK="off"), monkeypatch)
    n = {}
    got, got_gen = _decode_logits(d, tokens, dict(base, LAB_GPU_X_BULK="resid"), monkeypatch, n)
    np.testing.assert_array_equal(got, want)
    assert got_gen.tolist() == want_gen.tolist()
    assert n["o_proj"] > 0 and n["o_proj.x_bulk"] == 0 and n["down.x_bulk"] == n["down"] > 0, n


@pytest.mark.gpu
def test_gpu_opt_variant_names_the_tiles(tmp_path, monkeypatch):
    """engine.variant names every kind's tile (the bench puts it on each row); LAB_GPU_TILES pins a kind's
    tile and leaves the others to the tuner; a non-default LAB_GPU_EARLY or LAB_GPU_SECOND is named too, and
    LAB_GPU_TUNE_POS (the step position the graph tuner times) when given."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d, _ = _tile_model(tmp_path, 7, 7)
    kinds = ("qkv", "o_proj", "gate_up", "down", "lm_head")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert [part.split(" ")[0] for part in v.split(", ")] == list(kinds), v
    monkeypatch.setenv("LAB_GPU_TILES", "down=w2.u1.r8,qkv=w8.u2.r2.b")
    monkeypatch.setenv("LAB_GPU_EARLY", "off")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert "down w2.u1.r8" in v and "qkv w8.u2.r2.b" in v and v.endswith("early off"), v
    monkeypatch.setenv("LAB_GPU_SECOND", "after_wait")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert v.endswith("early off, second after_wait"), v
    monkeypatch.setenv("LAB_GPU_X_BULK", "all")  # the default: not named
    assert _engine.Engine("gpu_opt", str(d), 64).variant.endswith("second after_wait")
    monkeypatch.setenv("LAB_GPU_X_BULK", "resid")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert v.endswith("second after_wait, x by bulk copy o_proj down"), v
    monkeypatch.setenv("LAB_GPU_X_BULK", "off")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert v.endswith("second after_wait, x staged by the loop"), v
    monkeypatch.setenv("LAB_GPU_X_BULK", "down")
    monkeypatch.setenv("LAB_GPU_TUNE_POS", "700")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert v.endswith("x by bulk copy down only, tuned at position 700"), v
    monkeypatch.setenv("LAB_GPU_SECOND", "xb")  # the default: not named
    monkeypatch.setenv("LAB_GPU_X_BULK", "gate_up")
    v = _engine.Engine("gpu_opt", str(d), 64).variant
    assert v.endswith("early off, x by bulk copy o_proj down gate_up, tuned at position 700"), v
    monkeypatch.setenv("LAB_GPU_SECOND", "after_x")
    assert "early off, second after_x, x by bulk copy o_proj down gate_up" in _engine.Engine("gpu_opt", str(d), 64).variant


@pytest.mark.gpu
def test_gpu_opt_spread_steps_take_their_own_tiles(tmp_path, monkeypatch):
    """LAB_GPU_TILES_SPREAD gives the spread attention layout's steps tiles of their own (session 28; the graph
    tuner's second search fills them on large models): here the steps of at most 24 keys (LAB_GPU_ATTN_SPREAD),
    the first 4 of the 10 decoded after a 20-token prefill. qkv on a ring tile, which has no bulk-copy kernel for
    qkv, in those steps and on w8.u1.r4, which takes x by one, in the others: the launch counts show both ran
    (the logits alone could not tell), the decode() and generate() paths give the logits and tokens of the
    register tile within the fp16 bound, the variant names the spread tiles, and a pin for a layout that is off
    (LAB_GPU_ATTN_SPREAD=0) changes no launch."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d, tokens = _tile_model(tmp_path, 31, 37)
    base = {"LAB_GPU_ATTN_SPREAD": "24", "LAB_GPU_TILES": "qkv=w8.u1.r4"}
    tol = tolerances.logits_rel("gpu_opt")
    runs = {}
    for name, env in (("register", base), ("ring", dict(base, LAB_GPU_TILES="qkv=ring.c8.s16.k256")),
                      ("mixed", dict(base, LAB_GPU_TILES_SPREAD="qkv=ring.c8.s16.k256")),
                      ("off", dict(base, LAB_GPU_TILES_SPREAD="qkv=ring.c8.s16.k256", LAB_GPU_ATTN_SPREAD="0"))):
        n = {}
        logits, gen = _decode_logits(d, tokens, env, monkeypatch, n)
        runs[name] = (logits, gen, n["qkv"], n["qkv.x_bulk"], _engine.Engine("gpu_opt", str(d), 128).variant)
        monkeypatch.delenv("LAB_GPU_TILES_SPREAD", raising=False)
    want, want_gen, _, _, _ = runs["register"]
    for name, (logits, gen, launches, x_bulk, variant) in runs.items():
        assert launches > 0, (name, launches)
        assert rel(logits, want) < tol, f"{name}: {rel(logits, want):.2e} against w8.u1.r4 everywhere"
        assert gen.tolist() == want_gen.tolist(), name
        spread_named = "spread steps qkv ring.c8.s16.k256" in variant
        assert spread_named == (name == "mixed"), (name, variant)
        if name in ("register", "off"):
            assert x_bulk == launches, (name, x_bulk, launches)
        elif name == "ring":
            assert x_bulk == 0, (name, x_bulk, launches)
        else:  # the spread steps' qkv on the ring tile, the others' on the register tile
            assert 0 < x_bulk < launches, (name, x_bulk, launches)


@pytest.mark.gpu
def test_gpu_opt_tile_knobs_refused(tmp_path, monkeypatch):
    """Unknown tile-knob values are refused, naming what would work, before the engine allocates anything."""
    if not gpu_present():
        pytest.skip("GPU test: no CUDA GPU on this machine")
    d, _ = _tile_model(tmp_path, 5, 5)
    for knob, bad, msg in (("LAB_GPU_O_STAGE", "w8.u2.r2", "one of the staged tiles"),
                           ("LAB_GPU_O_STAGE_KB", "0", "1..256"), ("LAB_GPU_CARVEOUT", "most", "max or auto"),
                           ("LAB_GPU_PERSIST_GRID", "0", "1..65535"), ("LAB_GPU_EARLY", "on", "all, not_o, qkv or off"),
                           ("LAB_GPU_SECOND", "before", "xb, after_x or after_wait"), ("LAB_GPU_ACT16", "1", "all, h or off"),
                           ("LAB_GPU_TILES", "qkv=w9", "not <qkv"), ("LAB_GPU_TILES", "lm_head=w8.u1.r4.b", "persistent"),
                           ("LAB_GPU_TILES_SPREAD", "o_proj=ring.c9", "not <qkv"),
                           ("LAB_GPU_TUNE_POS", "-1", "0..1048576"), ("LAB_GPU_TUNE_SPREAD_POS", "x", "0..1048576"),
                           ("LAB_GPU_X_BULK", "on", "all, resid, down, off or gate_up")):
        monkeypatch.setenv(knob, bad)
        with pytest.raises(ValueError, match=f"{knob}( must be|:) .*{msg}"):
            _engine.Engine("gpu_opt", str(d), 128)
        monkeypatch.delenv(knob)
    monkeypatch.setenv("LAB_GPU_ACT16", "h")  # o_proj's x is fp32 then: nothing to copy in fp16
    monkeypatch.setenv("LAB_GPU_X_BULK", "resid")
    with pytest.raises(ValueError, match="LAB_GPU_X_BULK=resid needs LAB_GPU_ACT16=all"):
        _engine.Engine("gpu_opt", str(d), 128)
    monkeypatch.setenv("LAB_GPU_X_BULK", "all")
    with pytest.raises(ValueError, match="LAB_GPU_X_BULK=all needs LAB_GPU_ACT16=all"):
        _engine.Engine("gpu_opt", str(d), 128)
    monkeypatch.setenv("LAB_GPU_ACT16", "off")  # the default (all) steps aside where x is fp32
    monkeypatch.delenv("LAB_GPU_X_BULK")
    assert "act16 off" in _engine.Engine("gpu_opt", str(d), 128).variant
    monkeypatch.setenv("LAB_GPU_X_BULK", "down")
    with pytest.raises(ValueError, match="LAB_GPU_X_BULK=down needs LAB_GPU_ACT16=all or h"):
        _engine.Engine("gpu_opt", str(d), 128)
