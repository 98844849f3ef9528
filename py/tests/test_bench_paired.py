"""The bench's paired measurements with fake runners, a fake clock and a fake bandwidth probe: the
interleaved TTFT's rotated rounds, the per-round ratios and win counts, the adjacent read samples of
CPU decode and the % derived from them, through run_bench and the report. Fast and deterministic."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

PY_DIR = Path(__file__).absolute().parents[1]  # as in test_bench.py: runfiles, source tree or bundle
if (PY_DIR / "lab").is_dir() and sys.path[0] != str(PY_DIR):
    sys.path.insert(0, str(PY_DIR))

from lab.bench import counting, report, run, timing  # noqa: E402
from lab.bench import peers as peers_mod  # noqa: E402

CFG = {  # hidden 64, 2 layers, 4 heads of 16, 2 KV heads, SwiGLU 160, vocab 512, tied embeddings
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "vocab_size": 512, "tie_word_embeddings": True,
}


class FakeClock:
    """time.perf_counter for lab.bench.timing: it moves only when a fake runner works."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class FakeRunner:
    """A runner whose prefill of the r-th call at length n takes prefill_s(n, r) seconds of the fake clock
    and whose decode step takes step_s; every call is logged (label, what, tokens)."""

    def __init__(self, label, clock, calls, prefill_s, step_s=0.01, kind="engine", name=None, max_context=4096):
        self.name, self.label, self.kind, self.device = name or label, label, kind, "cpu"
        self.clock, self.calls, self.prefill_s, self.step_s = clock, calls, prefill_s, step_s
        self.max_context, self.pos, self.n_prefills = max_context, 0, {}

    def reset(self):
        self.pos = 0

    def prefill(self, tokens):
        n = len(tokens)
        k = self.n_prefills.get(n, 0)
        self.n_prefills[n] = k + 1
        self.calls.append((self.label, "prefill", tuple(int(t) for t in tokens)))
        self.clock.now += self.prefill_s(n, k)
        self.pos += n
        return np.zeros(4, np.float32)

    def generate(self, token, n):
        self.calls.append((self.label, "generate", n))
        self.clock.now += n * self.step_s
        self.pos += n
        return np.zeros(n, np.int32)

    def decode(self, token):
        return self.generate(token, 1)

    def close(self):
        pass


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(timing, "time", c)
    return c


def test_rotation():
    assert timing.rotation(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert timing.rotation(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert timing.rotation(["a", "b", "c"], 2) == ["c", "a", "b"]
    assert timing.rotation(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert timing.rotation([], 3) == []


def test_interleaved_rounds_rotate_and_pair(clock):
    calls = []
    # Each runner's r-th prefill (warm-up included) at length n takes a distinct, recognisable time.
    a = FakeRunner("A", clock, calls, lambda n, r: n + r * 0.001)
    b = FakeRunner("B", clock, calls, lambda n, r: 2 * n + r * 0.001)
    c = FakeRunner("C", clock, calls, lambda n, r: 3 * n + r * 0.001)
    points, orders, errors = timing.measure_ttft_interleaved([a, b, c], [8, 16], warmup=1, repeats=4,
                                                             rng=np.random.default_rng(0), vocab=100,
                                                             log=lambda *_: None)
    assert errors == {}
    # Per length: the warm-ups of every runner, then 4 rounds, the order rotated by one each round.
    want = "ABC" + "ABC" + "BCA" + "CAB" + "ABC"
    assert "".join(x[0] for x in calls) == want * 2
    assert [len(x[2]) for x in calls] == [8] * 15 + [16] * 15
    assert orders == [{"prompt_len": n, "rounds": [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]} for n in (8, 16)]
    # One random prompt per round, the same for every runner in it; a fresh one each round.
    for length in range(2):
        prompts = [x[2] for x in calls[15 * length:15 * (length + 1)]]
        rounds = [prompts[3 * k:3 * k + 3] for k in range(5)]
        assert all(len(set(r)) == 1 for r in rounds)
        assert len({r[0] for r in rounds}) == 5
    # Sample j is the runner's prefill in round j (its (j+1)-th call: the warm-up was call 0).
    for runner, pts, scale in ((a, points[0], 1), (b, points[1], 2), (c, points[2], 3)):
        assert [p["prompt_len"] for p in pts] == [8, 16]
        for p in pts:
            n = p["prompt_len"]
            assert p["interleaved"] and p["seconds"]["samples"] == pytest.approx(
                [scale * n + j * 0.001 for j in (1, 2, 3, 4)])


def test_interleaved_skips_and_drops_a_failing_runner(clock):
    calls = []

    def bad(n, r):
        if r == 2:
            raise RuntimeError("boom")
        return 0.1

    a = FakeRunner("A", clock, calls, lambda n, r: 0.2)
    b = FakeRunner("B", clock, calls, bad)
    short = FakeRunner("S", clock, calls, lambda n, r: 0.3, max_context=10)
    points, orders, errors = timing.measure_ttft_interleaved([a, b, short], [8, 16], 1, 3, np.random.default_rng(0),
                                                             100, log=lambda *_: None)
    assert errors == {1: "RuntimeError: boom"} and points[1] == []
    assert [p["prompt_len"] for p in points[0]] == [8, 16] and points[0][0]["seconds"]["n"] == 3
    assert [p["prompt_len"] for p in points[2]] == [8]  # 16 > its max context: skipped, not failed
    assert orders[1]["rounds"] == [[0], [0], [0]]


def test_pair_ratios():
    # Per round: peer / engine = 1.2, 1.3, 0.8, 1.5, 1.1 -> median 1.2, the engine faster in 4 of 5.
    eng = [1.0, 2.0, 1.0, 2.0, 1.0]
    peer = [1.2, 2.6, 0.8, 3.0, 1.1]
    q = timing.pair_ratios(eng, peer)
    assert q["ratios"] == pytest.approx([1.2, 1.3, 0.8, 1.5, 1.1])
    assert q["ratio_median"] == pytest.approx(1.2) and q["wins"] == 4 and q["rounds"] == 5
    assert q["ratio_min"] == pytest.approx(0.8) and q["ratio_max"] == pytest.approx(1.5)
    # Swapped sides: the peer's view (1/ratio), faster in 1 of 5.
    s = timing.pair_ratios(peer, eng)
    assert s["wins"] == 1 and s["ratio_median"] == pytest.approx(1 / 1.2)
    # Pairing by round, not by sorted value: medians alone would give 1.1 / 1.0 here.
    assert timing.pair_ratios([1.0, 3.0, 2.0], [3.3, 2.0, 2.2])["ratios"] == pytest.approx([3.3, 2 / 3, 1.1])
    # A tie is not a win.
    assert timing.pair_ratios([1.0, 1.0], [1.0, 2.0])["wins"] == 1


def test_decode_probe_after_each_timed_block(clock):
    calls = []
    r = FakeRunner("A", clock, calls, lambda n, k: 0.0, step_s=0.01)
    samples = iter([[30.0, 31.0], [28.0, 29.0], [40.0, 41.0], [20.0, 22.0]])

    def probe():
        calls.append(("probe",))
        return next(samples)

    pts = timing.measure_decode(r, [8], 4, warmup=1, repeats=2, rng=np.random.default_rng(0), vocab=100,
                                log=lambda *_: None, probe=probe)
    # Fill (prefill of 8), a warm-up block without a sample, then each timed block followed by one.
    assert [x[1] if len(x) > 1 else x[0] for x in calls] == ["prefill", "generate", "generate", "probe",
                                                              "generate", "probe"]
    a = pts[0]["adjacent_read"]
    assert a["samples"] == [30.0, 31.0, 28.0, 29.0] and a["median"] == 29.5 and a["n"] == 4
    assert pts[0]["tok_s"]["median"] == pytest.approx(100.0)
    # Without a probe: no samples, no key.
    assert "adjacent_read" not in timing.measure_decode(r, [8], 4, 1, 2, np.random.default_rng(0), 100,
                                                        log=lambda *_: None)[0]


# ---- run_bench end to end, with fake engines, peers and probe ----------------------------------------


class FakeEngine:
    variant = "fake"
    max_context = 4096

    def stats(self):
        return {}


def _fake_bench(monkeypatch, tmp_path, clock, interleave=True, adjacent=True):
    """run_bench over one fake engine and a fake hf_eager in fp32 and bf16; returns (results, calls)."""
    import lab.engine

    (tmp_path / "config.json").write_text(json.dumps(CFG))
    calls = []
    # Prefill seconds at 8 tokens by round (warm-up first): the engine steady, the peers drifting; bf16
    # is the best peer by median. Engine vs bf16 per round: 0.15/0.10, 0.09/0.10, 0.12/0.10 -> 1.5,
    # 0.9, 1.2: median 1.2, faster in 2 of 3 (the medians' ratio, 0.12/0.10, happens to agree).
    times = {"eng": [1.0, 0.10, 0.10, 0.10], "hf_eager (fp32, sdpa)": [1.0, 0.30, 0.30, 0.30],
             "hf_eager (bf16, sdpa)": [1.0, 0.15, 0.09, 0.12]}
    steps = {"eng": 0.01, "hf_eager (fp32, sdpa)": 0.05, "hf_eager (bf16, sdpa)": 0.04}

    def fake_peer(name, model, dtype, device, max_context, attn="sdpa", compile_mode=None):
        label = f"{name} ({peers_mod.DTYPE_PRECISION[dtype]}, {attn})"
        r = FakeRunner(label, clock, calls, lambda n, k: times[label][k], steps[label], kind="peer", name=name)
        r.dtype, r.attn, r.compile_mode = dtype, attn, None
        return r

    def fake_open(name, opts, need, log):
        r = FakeRunner("eng", clock, calls, lambda n, k: times["eng"][k], steps["eng"], name=name)
        r.engine = FakeEngine()
        return r, None

    probe_values = iter([[30.0, 32.0], [20.0, 22.0], [25.0, 25.0]] * 10)
    monkeypatch.setattr(lab.engine, "engine_names", lambda: ["fake_cpu"])
    monkeypatch.setattr(run, "_open_engine", fake_open)
    monkeypatch.setattr(peers_mod, "load_peer_model",
                        lambda *a, **k: types.SimpleNamespace(set_attn_implementation=lambda attn: None))
    monkeypatch.setattr(peers_mod, "HFRunner", fake_peer)
    monkeypatch.setattr(run.ceil_mod, "read_probe", lambda n, reps: (lambda: next(probe_values), "FAKE probe"))
    monkeypatch.setattr(report, "machine_info", lambda want_gpu: {
        "cpu_model": "Fake CPU", "usable_cpus": 2, "date": "2026-11-27T00:00:00+00:00", "git_commit": "0" * 40,
        "git_dirty": False, "loadavg_at_start": [0.0, 0.0, 0.0]})
    opts = run.Options(model_dir=tmp_path, model_name="fake", engines=["fake_cpu"], prompt_lengths=[8],
                       contexts=[16], decode_tokens=4, warmup=1, repeats=3, peers=["hf_eager"], ceilings=False,
                       plot=False, interleave=interleave, adjacent_read=adjacent)
    return run.run_bench(opts, log=lambda *_: None), calls


def test_run_bench_interleaved_paired_and_adjacent(monkeypatch, tmp_path, clock):
    res, calls = _fake_bench(monkeypatch, tmp_path, clock)
    assert res["settings"]["ttft_plan"] == "interleaved"
    labels = ["eng", "hf_eager (fp32, sdpa)", "hf_eager (bf16, sdpa)"]
    assert [r["label"] for r in res["runners"]] == labels
    assert res["ttft_rounds"] == [{"prompt_len": 8, "rounds": [labels, labels[1:] + labels[:1],
                                                               labels[2:] + labels[:2]]}]
    # Every prefill of the TTFT rounds (8 tokens; 1 warm-up + 3 rounds x 3 runners) comes before any decode.
    assert [i for i, x in enumerate(calls) if x[1] == "prefill" and len(x[2]) == 8] == list(range(12))
    eng, fp32, bf16 = res["runners"]
    p = eng["ttft"][0]
    assert p["best_peer"] == "hf_eager (bf16, sdpa)"
    q = p["paired_vs_best_peer"]
    assert q["peer"] == "hf_eager (bf16, sdpa)"
    assert q["ratios"] == pytest.approx([1.5, 0.9, 1.2])
    assert q["ratio_median"] == pytest.approx(1.2) and q["wins"] == 2 and q["rounds"] == 3
    assert "paired_vs_best_peer" not in bf16["ttft"][0]
    # Adjacent samples: the probe is called after each of the 3 timed blocks of every runner, in the
    # order the runners decode; values cycle [30, 32], [20, 22], [25, 25] -> median 25 for each.
    for r, step in ((eng, 0.01), (fp32, 0.05), (bf16, 0.04)):
        d = r["decode"][0]
        assert d["adjacent_read"]["samples"] == [30.0, 32.0, 20.0, 22.0, 25.0, 25.0]
        b = counting.decode_bytes(res["model"]["config"], r["weight_precision"], r["kv_precision"], d["mean_kv_len"])
        assert d["gbps"]["median"] == pytest.approx(b["total"] / step / 1e9)
        assert d["pct_of_adjacent_read"] == pytest.approx(100 * b["total"] / step / 1e9 / 25.0)
    md = report.markdown(res)
    assert "TTFT interleaved" in md and "3 rounds" in md
    assert "eng vs hf_eager (bf16, sdpa), TTFT 8 tok: median of the per-round ratios 1.20x" in md
    assert "faster in 2 of 3 rounds" in md and "FAKE probe" in md
    pct = eng["decode"][0]["pct_of_adjacent_read"]
    assert f"- eng, decode @ 16: {report._fmt(eng['decode'][0]['gbps']['median'])} GB/s = {pct:.0f}% of 25.0 GB/s" in md
    # The main table keeps its eight columns.
    rows = [line for line in md.splitlines() if line.startswith("| Fake CPU")]
    assert len(rows) == 4 and all(line.count("|") == 9 for line in rows)


def test_run_bench_sequential_and_no_adjacent(monkeypatch, tmp_path, clock):
    res, calls = _fake_bench(monkeypatch, tmp_path, clock, interleave=False, adjacent=False)
    assert res["settings"]["ttft_plan"] == "sequential" and "ttft_rounds" not in res
    # Each runner measured completely (its prefills, then its decode) before the next.
    who = [x[0] for x in calls]
    assert who == sorted(who, key=["eng", "hf_eager (fp32, sdpa)", "hf_eager (bf16, sdpa)"].index)
    eng = res["runners"][0]
    assert eng["ttft"][0].get("paired_vs_best_peer") is None and eng["ttft"][0]["ratio_vs_best_peer"] > 0
    assert "adjacent_read" not in eng["decode"][0] and eng["decode"][0]["pct_of_adjacent_read"] is None
    md = report.markdown(res)
    assert "TTFT sequential" in md and "Paired TTFT" not in md and "sampled right after" not in md


def test_ttft_plan(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    cfg = counting.config_from_model_dir(tmp_path)
    opts = run.Options(model_dir=tmp_path, engines=["cpu_opt"], peers=["hf_eager"])
    assert run.ttft_plan(opts, cfg)[0] == "interleaved"
    assert run.ttft_plan(run.Options(model_dir=tmp_path, interleave=False), cfg)[0] == "sequential"
    assert run.ttft_plan(run.Options(model_dir=tmp_path, engines=["gpu_opt"]), cfg)[0] == "sequential"
    assert run.ttft_plan(run.Options(model_dir=tmp_path, engines=["cpu_opt"], device="cuda"), cfg)[0] == "sequential"


def test_blocks_note_pairs_each_block_with_the_samples_after_it():
    # Two samples per block: block 0 (20 GB/s) with 40, 40; block 1 (30 GB/s) with 25, 35.
    note = report._blocks_note([20.0, 30.0], [40.0, 40.0, 25.0, 35.0])
    assert "20.0 / 40.0 GB/s (50%)" in note and "30.0 / 30.0 GB/s (100%)" in note
    assert report._blocks_note([20.0, 30.0], [40.0, 40.0, 25.0]) == ""  # do not pair up: nothing claimed
