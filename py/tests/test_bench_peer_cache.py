"""hf_compile's static cache sized for each measured point (HFRunner.fit, session 23): transformers' attention
reads every slot of a static cache, so one sized for the run's longest context slowed the peer at the shorter
ones (at context 512 on H200s: 169.4 tok/s in one run, 157.4-157.6 in two others). The timing loops' calls,
the runner's caches by size, one compiled graph for decode() and generate(), and the bench table's note on
how a run sized them."""

import sys
from pathlib import Path

import numpy as np
import pytest

PY_DIR = Path(__file__).absolute().parents[1]  # as in test_bench.py: runfiles, source tree or bundle
if (PY_DIR / "lab").is_dir() and sys.path[0] != str(PY_DIR):
    sys.path.insert(0, str(PY_DIR))

from engine_cases import CASES, write_model  # noqa: E402

CFG = CASES["gqa1_hd64_tied"]  # a tiny tied Llama, the engine tests' own


def _tiny(tmp_path):
    return write_model(tmp_path / "tiny_fp32", CFG, "fp32", 0)


def test_timing_fits_each_point_where_a_runner_sizes_its_cache():
    """A runner with fit() (hf_compile's static cache) gets a cache sized for each point before it is
    measured: the TTFT length, then each decode context plus its warm-up and timed blocks; a new cache starts
    empty, so the context is prefilled again from position 0. A runner without fit() (the engines) keeps one
    cache for the run and extends it from one context to the next."""
    from lab.bench import timing

    class Fake:
        name = label = "fake"
        device, kind = "cpu", "peer"

        def __init__(self, fits):
            self.max_context, self.pos, self.log = 1000, 0, []
            if fits:
                self.fit = self._fit

        def _fit(self, n):
            if n != self.max_context:
                self.max_context, self.pos = n, 0
            self.log.append(("fit", n))

        def reset(self):
            self.pos = 0

        def prefill(self, toks):
            assert self.pos + len(toks) <= self.max_context
            self.log.append(("prefill", self.pos, len(toks)))
            self.pos += len(toks)

        def generate(self, tok, n):
            assert self.pos + n <= self.max_context
            self.pos += n

    rng = np.random.default_rng(3)
    r = Fake(True)
    timing.measure_ttft(r, [12, 40], 1, 2, rng, 512, log=lambda *_: None)
    assert [e for e in r.log if e[0] == "fit"] == [("fit", 12), ("fit", 40)]
    r.log.clear()
    pts = timing.measure_decode(r, [16, 4], 2, 1, 2, rng, 512, log=lambda *_: None)
    assert [p["context"] for p in pts] == [4, 16]
    assert r.log == [("fit", 10), ("prefill", 0, 4), ("fit", 22), ("prefill", 0, 16)]
    plain = Fake(False)
    timing.measure_decode(plain, [16, 4], 2, 1, 2, rng, 512, log=lambda *_: None)
    assert plain.log == [("prefill", 0, 4), ("prefill", 10, 6)]  # 4 + 3 blocks of 2 = 10, then up to 16


def test_bench_md_says_how_the_peer_cache_was_sized():
    """The table's header says how hf_compile's static cache was sized: for each point (runs since cf0a8bf
    record it in their settings), or, in a run without that record, for the run's longest need, with what
    that costs the peer; nothing when hf_compile did not run."""
    from lab.bench import report

    def note(names, settings):
        return report._static_cache_note({"runners": [{"name": n} for n in names], "settings": settings})

    assert "sized for each point" in note(["gpu_opt", "hf_compile"], {"peer_static_cache": "per point"})
    old = note(["gpu_opt", "hf_compile"], {})
    assert "longest need" in old and "below its best" in old
    assert note(["gpu_opt", "hf_eager"], {}) == ""


def test_hf_compile_cache_is_sized_by_fit(tmp_path, monkeypatch):
    """HFRunner.fit: hf_compile gets a new, empty StaticCache of n positions (and refuses to pass it); its
    prefill and decode on a fitted cache give hf_eager's logits on the same tokens (the positions restart at
    0 with the new cache). hf_eager's fit changes nothing. torch.compile is replaced by the plain forward
    here: compiling on a CPU would take minutes, and what is tested is the cache."""
    torch = pytest.importorskip("torch")
    from lab.bench import peers as peers_mod

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    model = peers_mod.load_peer_model(_tiny(tmp_path), "float32", "cpu")
    comp = peers_mod.HFRunner("hf_compile", model, "float32", "cpu", 64)
    eager = peers_mod.HFRunner("hf_eager", model, "float32", "cpu", 64)
    toks = np.random.default_rng(5).integers(0, CFG["vocab_size"], 14)
    comp.prefill(toks[:3])
    comp.fit(14)
    assert comp.max_context == 14 and comp.pos == 0
    length = comp.cache.get_max_length() if hasattr(comp.cache, "get_max_length") else comp.cache.max_cache_len
    assert length == 14
    got = [comp.prefill(toks[:10])] + [comp.decode(t) for t in toks[10:]]
    want = [eager.prefill(toks[:10])] + [eager.decode(t) for t in toks[10:]]
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="exceed the cache of 14"):
        comp.decode(int(toks[0]))
    first = comp.cache
    comp.fit(20)
    comp.fit(14)  # the 14-position cache again (its compiled graphs with it), emptied
    assert comp.cache is first and comp.pos == 0 and comp.cache.get_seq_length() == 0
    got2 = [comp.prefill(toks[:10])] + [comp.decode(t) for t in toks[10:]]
    np.testing.assert_allclose(np.stack(got2), np.stack(want), rtol=1e-4, atol=1e-4)
    eager.fit(3)
    assert eager.max_context == 64 and eager.pos == 14


def test_hf_compile_decode_and_generate_share_one_graph(tmp_path, monkeypatch):
    """decode() and generate() hand the compiled step ids of one shape and one stride: torch.compile guards on
    strides, and numpy's [None, :] (stride 0 on the new axis) against generate()'s (1, 1) made the logits
    mode compile the 8B step a second time (about 40 s a bench run on an H200; dynamo's recompile log on a
    CPU named the stride). The step is recorded here in place of the compiled one."""
    torch = pytest.importorskip("torch")
    from lab.bench import peers as peers_mod

    seen = []

    def fake_compile(fn, **kw):
        def step(**kwargs):
            seen.append((tuple(kwargs["input_ids"].shape), kwargs["input_ids"].stride(),
                         tuple(kwargs["position_ids"].shape), kwargs["position_ids"].stride()))
            return fn(**kwargs)
        return step

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = peers_mod.load_peer_model(_tiny(tmp_path), "float32", "cpu")
    r = peers_mod.HFRunner("hf_compile", model, "float32", "cpu", 32)
    r.prefill(np.random.default_rng(7).integers(0, CFG["vocab_size"], 6))
    r.generate(5, 3)
    r.decode(9)
    r.decode(11)
    assert len(seen) == 5 and len(set(seen)) == 1, seen
