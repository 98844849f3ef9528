"""The bench tool: counting by hand, the CLI on a tiny random model, README injection, perplexity flags, bad
input ending in a one-line error, a peer that cannot load or runs out of memory recorded as its error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# py/ as this file sees it: Bazel's runfiles (where lab/ has its built .so files), the source tree or
# the GPU bundle's root. Not resolve()d: in runfiles that would lead to the source tree, which has no .so.
PY_DIR = Path(__file__).absolute().parents[1]
if (PY_DIR / "lab").is_dir() and sys.path[0] != str(PY_DIR):
    sys.path.insert(0, str(PY_DIR))

from lab.bench import counting, ppl_check, report  # noqa: E402
from lab.engine import engine_names, open_engine  # noqa: E402

BENCH = PY_DIR / "tools" / "bench.py"

TINY = {  # hidden 64, 2 layers, 4 heads of 16, 2 KV heads, SwiGLU 160, vocab 512, tied embeddings
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": 64,
    "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "vocab_size": 512, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
}
CPU_ENGINES = [e for e in ("cpu_fp32", "cpu_opt") if e in engine_names()]


def _write_model(d: Path, cfg: dict, precision="fp32", seed=0):
    """A random model in the lab's format (lab.synthetic's writer when present)."""
    try:
        from lab.synthetic import write_random_model

        write_random_model(d, cfg, precision, seed, use_torch=False, progress=False)
        return d
    except ImportError:
        pass
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    dt = np.float16 if precision == "fp16" else np.float32
    h, f, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv, v = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
                       p + "mlp.down_proj.weight": (h, f)})
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    t = {k: ((1 + 0.05 * rng.standard_normal(s)) if "norm" in k else 0.02 * rng.standard_normal(s)).astype(dt)
         for k, s in shapes.items()}
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(dict(cfg, torch_dtype="float32" if dt == np.float32 else "float16")))
    save_file(t, str(d / "model.bin"), metadata={"format": "pt", "lab_format_version": "1"})
    return d


def _write_byte_tokenizer(d: Path):
    """A 256-token byte-level tokenizer.json (ids fit the tiny model's vocab)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _write_model(tmp_path_factory.mktemp("tiny") / "tiny_fp32", TINY)


def _run_bench(args, timeout=240, **env_extra):
    env = dict(os.environ, PYTHONPATH=str(PY_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    env.pop("BUILD_WORKING_DIRECTORY", None)
    return subprocess.run([sys.executable, str(BENCH)] + args, capture_output=True, text=True, env=env,
                          timeout=timeout)


# ---- counting ------------------------------------------------------------------------------------


def test_decode_bytes_by_hand():
    c = {"dim": 64, "hidden_dim": 160, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16,
         "vocab_size": 512, "tie_word_embeddings": True}
    # Per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 + gate/up/down 3*64*160 + 2 norms of 64 = 43,136.
    # Two layers 86,272 + final norm 64 + lm_head (= the tied embedding, read once) 512*64 = 32,768
    # + one gathered embedding row 64 = 119,168 elements.
    assert counting.decode_weight_elements(c) == 119_168
    # KV at 10 positions: 2 (K, V) x 2 layers x 10 x kv_dim 32 = 1,280 elements.
    b = counting.decode_bytes(c, "fp32", "fp32", 10)
    assert b == {"weights": 119_168 * 4, "kv": 1_280 * 4, "total": 119_168 * 4 + 1_280 * 4}
    b = counting.decode_bytes(c, "fp16", "fp32", 10)
    assert b["total"] == 119_168 * 2 + 1_280 * 4 == 243_456
    # Untied: the lm_head is its own matrix (same size here); the table is still only gathered.
    assert counting.decode_weight_elements(dict(c, tie_word_embeddings=False)) == 119_168
    # Prefill of 8 tokens from position 0: 2 x 86,016 matrix params x 8 + 2 x lm_head once
    # + attention (2 x 2) x 2 layers x 4 heads x 16 = 512 per (query, key) pair, x (1+2+...+8 = 36) pairs.
    assert counting.prefill_flops(c, 8) == 2 * 86_016 * 8 + 2 * 32_768 + 512 * 36 == 1_460_224
    assert counting.prefill_flops(c, 8, all_logits=True) == 1_460_224 + 2 * 32_768 * 7
    assert counting.decode_flops(c, 10) == 2 * (86_016 + 32_768) + 512 * 10


def test_engine_precision_table():
    assert counting.engine_precisions("cpu_fp32") == ("fp32", "fp32")
    assert counting.engine_precisions("cpu_opt") == ("fp16", "fp32")
    assert counting.engine_precisions("gpu_naive") == ("fp32", "fp32")
    assert counting.engine_precisions("gpu_opt") == ("fp16", "fp16")
    assert counting.engine_precisions("gpu_opt", kv_overrides={"gpu_opt": "fp32"}) == ("fp16", "fp32")
    with pytest.raises(ValueError):
        counting.engine_precisions("cpu_opt", weight_overrides={"cpu_opt": "fp5"})


@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_counting_config_matches_engine(tiny, engine):
    eng = open_engine(engine, tiny, max_context=64)
    cfg = counting.config_from_model_dir(tiny)
    assert {k: eng.config[k] for k in counting.CONFIG_KEYS} == cfg
    implied = counting.precision_from_stats(cfg, eng.stats(), eng.max_context)
    wp, kvp = counting.engine_precisions(engine)
    assert implied["kv_bytes_per_element"] == pytest.approx(counting.BYTES_PER_ELEMENT[kvp], rel=0.15)


# ---- the CLI end to end --------------------------------------------------------------------------


def test_bench_cli_tiny(tiny, tmp_path):
    out = tmp_path / "out"
    readme = tmp_path / "README.md"
    readme.write_text("# Results\n\n<!-- bench:tiny -->\nold table\n<!-- /bench:tiny -->\n\nafter\n")
    args = ["--model_dir", str(tiny), "--engines", ",".join(CPU_ENGINES), "--prompt_lengths", "8,16",
            "--contexts", "8,24", "--decode_tokens", "4", "--warmup", "1", "--repeats", "2", "--quick",
            "--peers", "hf_eager", "--peer_dtypes", "float32,bfloat16", "--out_dir", str(out),
            "--readme", f"{readme}:tiny"]
    r = _run_bench(args)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text() in readme.read_text()
    assert (out / "roofline.png").stat().st_size > 1000
    for k in ("cpu_model", "logical_cpus", "date", "git_commit", "versions", "host"):
        assert k in res["machine"]
    cpu = res["ceilings"]["cpu"]
    assert cpu["bandwidth_GBps"] > 0 and cpu["compute_GFLOPs"] > 0 and cpu["read_all"]["samples"]
    names = [x["name"] for x in res["runners"]]
    assert names == CPU_ENGINES + ["hf_eager", "hf_eager"]
    for x in res["runners"]:
        assert [p["prompt_len"] for p in x["ttft"]] == [8, 16]
        assert [p["context"] for p in x["decode"]] == [8, 24]
        for p in x["ttft"]:
            s = p["ms"]
            assert 0 < s["min"] <= s["median"] <= s["max"] and s["n"] == 2
            assert p["flops"] == counting.prefill_flops(res["model"]["config"], p["prompt_len"])
            assert p["tflops"]["median"] > 0 and p["pct_of_roof"] > 0
        for p in x["decode"]:
            s = p["tok_s"]
            assert 0 < s["min"] <= s["median"] <= s["max"] and s["n"] == 2
            # Timed blocks of 4 steps start at ctx+4 and ctx+8 (after one warm-up block); a step at
            # position t attends t+1 keys: means ctx+6.5 and ctx+10.5, so ctx+8.5 overall.
            assert p["mean_kv_len"] == p["context"] + 8.5
            b = counting.decode_bytes(res["model"]["config"], x["weight_precision"], x["kv_precision"],
                                      p["mean_kv_len"])
            assert p["bytes_per_token"] == b
            assert p["gbps"]["median"] == pytest.approx(s["median"] * b["total"] / 1e9)
            assert p["ratio_vs_best_peer"] > 0 and p["best_peer"].startswith("hf_eager")
    peers = [x for x in res["runners"] if x["kind"] == "peer"]
    assert {x["dtype"] for x in peers} == {"float32", "bfloat16"}
    # Exactly one dtype is the reported best at each point.
    for i in range(2):
        assert sum(x["decode"][i]["best_of_variants"] for x in peers) == 1
    # CPU runs interleave the TTFT by default (paired with the best peer per round) and sample the read
    # bandwidth after each timed decode block (2 blocks x 2 passes).
    assert res["settings"]["ttft_plan"] == "interleaved" and len(res["ttft_rounds"]) == 2
    for x in res["runners"]:
        for p in x["ttft"]:
            assert p["interleaved"]
            if x["kind"] == "engine":
                q = p["paired_vs_best_peer"]
                assert q["rounds"] == 2 and 0 <= q["wins"] <= 2 and q["peer"] == p["best_peer"]
        for p in x["decode"]:
            assert p["adjacent_read"]["n"] == 4 and p["pct_of_adjacent_read"] > 0
    md = (out / "bench.md").read_text()
    assert res["machine"]["cpu_model"] in md and "decode @ 24" in md and "TTFT 16 tok" in md
    assert "Paired TTFT" in md and "sampled right after" in md
    assert "old table" not in readme.read_text() and readme.read_text().endswith("\nafter\n")


def test_perplexity_cli(tiny, tmp_path):
    tok = _write_byte_tokenizer(tmp_path / "tok")
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 8)
    out = tmp_path / "ppl"
    r = _run_bench(["--model_dir", str(tiny), "--tokenizer_dir", str(tok), "--engines", ",".join(CPU_ENGINES),
                    "--ppl_text", str(text), "--ppl_tokens", "200", "--ppl_window", "96", "--ppl_chunk", "40",
                    "--out_dir", str(out)])
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((out / "ppl.json").read_text())
    assert res["tokens"] == 200
    assert [v["engine"] for v in res["verdicts"]] == CPU_ENGINES
    assert not any(v["flagged"] for v in res["verdicts"])


# ---- bad input: one line, exit 1, no traceback ---------------------------------------------------


def _assert_clean_error(r, *words):
    """The bench ended with exit 1 and one `error: ...` line naming the problem, no Python traceback."""
    assert r.returncode == 1, (r.returncode, r.stderr[-4000:])
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr[-4000:]
    for w in words:
        assert w in last, f"{w!r} not in {last!r}"


def _bad_model_dir(tmp_path, kind):
    d = tmp_path / "model"
    if kind == "missing":
        return d
    d.mkdir()
    if kind == "not_json":
        (d / "config.json").write_text("{not json")
    elif kind == "no_keys":
        (d / "config.json").write_text(json.dumps({"hidden_size": 64}))
    return d


@pytest.mark.parametrize("kind,words", [
    ("missing", ["--model_dir", "no such folder"]),
    ("empty", ["--model_dir", "no config.json"]),
    ("not_json", ["config.json: not a usable model config", "JSONDecodeError"]),
    ("no_keys", ["config.json: not a usable model config", "num_attention_heads"]),
])
def test_bench_cli_bad_model_dir(tmp_path, kind, words):
    d = _bad_model_dir(tmp_path, kind)
    _assert_clean_error(_run_bench(["--model_dir", str(d), "--noceilings", "--out_dir", str(tmp_path / "out")]),
                        str(d), *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,words", [
    (["--engines", "gpu_opt"], ["engine gpu_opt"]),
    (["--engines", "cpu_fp32,gpu_naive", "--noceilings"], ["engine gpu_naive"]),
    (["--engines", "cpu_fp32", "--peers", "hf_eager", "--device", "cuda", "--noceilings"], ["--device cuda"]),
])
def test_bench_cli_gpu_asked_without_gpu(tiny, tmp_path, args, words):
    """With no GPU visible (CUDA_VISIBLE_DEVICES empty, so on a GPU host too), a GPU engine or cuda peers
    stop the run before any measurement with an error that names what needs the GPU."""
    r = _run_bench(["--model_dir", str(tiny), "--quick", "--out_dir", str(tmp_path / "out")] + args,
                   CUDA_VISIBLE_DEVICES="")
    _assert_clean_error(r, "a CUDA GPU is needed for", "torch.cuda.is_available() is False", *words)
    assert not (tmp_path / "out").exists()


def test_run_bench_checks_cuda_before_gpu_ceilings(tiny, monkeypatch):
    """run_bench asks torch for a GPU first: no GPU ceiling, machine probe or engine is tried without one."""
    torch = pytest.importorskip("torch")
    from lab.bench import run
    from lab.engine import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tried = []
    monkeypatch.setattr(run.ceil_mod, "gpu_ceilings", lambda *a, **k: tried.append("gpu_ceilings"))
    monkeypatch.setattr(run.ceil_mod, "cpu_ceilings", lambda *a, **k: tried.append("cpu_ceilings"))
    monkeypatch.setattr(report, "machine_info", lambda want_gpu: tried.append("machine_info"))
    for opts, words in ((run.Options(model_dir=tiny, engines=["gpu_opt", "gpu_naive"]), "engines gpu_opt, gpu_naive"),
                        (run.Options(model_dir=tiny, peers=["hf_eager"], device="cuda"), "--device cuda")):
        with pytest.raises(DeviceError, match="a CUDA GPU is needed for") as e:
            run.run_bench(opts, log=lambda *_: None)
        assert words in str(e.value)
    assert tried == []


def test_perplexity_cli_without_tokenizer(tiny, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox. " * 8)
    r = _run_bench(["--model_dir", str(tiny), "--engines", "cpu_fp32", "--ppl_text", str(text)])
    _assert_clean_error(r, "no tokenizer for --ppl_text", "--tokenizer_dir")
    r = _run_bench(["--model_dir", str(tiny), "--tokenizer_dir", str(tmp_path), "--engines", "cpu_fp32",
                    "--ppl_text", str(text)])
    _assert_clean_error(r, str(tmp_path / "tokenizer.json"), "not found")


# ---- a peer that cannot load or runs out of memory -----------------------------------------------


def _peer_opts(tiny, interleave):
    from lab.bench import run

    return run.Options(model_dir=tiny, model_name="tiny", engines=CPU_ENGINES[:1], prompt_lengths=[8], contexts=[8],
                       decode_tokens=2, warmup=0, repeats=2, peers=["hf_eager"], peer_dtypes=["float32", "bfloat16"],
                       ceilings=False, adjacent_read=False, plot=False, interleave=interleave)


def _check_peer_error(res, tmp_path, error):
    """The engine and the fp32 peer measured, the bf16 peer an error record with `error`, in every output."""
    from lab.bench import run

    eng, fp32, bf16 = res["runners"]
    assert not eng.get("error") and eng["ttft"] and eng["decode"]
    assert not fp32.get("error") and fp32["ttft"] and fp32["decode"] and fp32["label"] == "hf_eager (fp32, sdpa)"
    assert bf16["kind"] == "peer" and bf16["label"] == "hf_eager (bf16, sdpa)" and bf16["error"].startswith(error)
    assert bf16["ttft"] == [] and bf16["decode"] == []
    assert eng["ttft"][0]["best_peer"] == "hf_eager (fp32, sdpa)"  # the failed peer is no one's reference
    run.write_outputs(res, tmp_path, plot=False, log=lambda *_: None)
    assert f"**hf_eager (bf16, sdpa) failed**: {error}" in (tmp_path / "bench.md").read_text()
    assert json.loads((tmp_path / "bench.json").read_text())["runners"][2]["error"] == bf16["error"]


@pytest.mark.parametrize("interleave", [True, False], ids=["interleaved", "sequential"])
def test_peer_that_fails_to_load_is_its_error(tiny, tmp_path, monkeypatch, interleave):
    from lab.bench import peers as peers_mod, run

    real = peers_mod.load_peer_model

    def load(model_dir, dtype, device, attn_implementation="sdpa"):
        if dtype == "bfloat16":
            raise MemoryError("cannot allocate the bf16 copy")
        return real(model_dir, dtype, device, attn_implementation)

    monkeypatch.setattr(peers_mod, "load_peer_model", load)
    res = run.run_bench(_peer_opts(tiny, interleave), log=lambda *_: None)
    _check_peer_error(res, tmp_path, "MemoryError: cannot allocate the bf16 copy")


@pytest.mark.parametrize("interleave", [True, False], ids=["interleaved", "sequential"])
def test_peer_out_of_memory_is_its_error(tiny, tmp_path, monkeypatch, interleave):
    torch = pytest.importorskip("torch")
    from lab.bench import peers as peers_mod, run

    real = peers_mod.HFRunner.prefill

    def prefill(self, tokens):
        if self.dtype == "bfloat16":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, tokens)

    monkeypatch.setattr(peers_mod.HFRunner, "prefill", prefill)
    res = run.run_bench(_peer_opts(tiny, interleave), log=lambda *_: None)
    _check_peer_error(res, tmp_path, "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")


# ---- README injection ----------------------------------------------------------------------------


def test_readme_injection_idempotent(tmp_path):
    p = tmp_path / "README.md"
    p.write_text("intro\n<!-- bench:a -->\nold\n<!-- /bench:a -->\nmiddle\n<!-- bench:b -->\nkeep\n<!-- /bench:b -->\n")
    assert report.inject_readme(p, "a", "| new | table |\n")
    once = p.read_text()
    assert once == "intro\n<!-- bench:a -->\n| new | table |\n<!-- /bench:a -->\nmiddle\n<!-- bench:b -->\nkeep\n<!-- /bench:b -->\n"
    report.inject_readme(p, "a", "| new | table |\n")
    assert p.read_text() == once
    report.inject_readme(p, "a", "second $1 \\1 run")  # replacement text is taken literally
    assert "second $1 \\1 run" in p.read_text() and "keep" in p.read_text() and "| new |" not in p.read_text()
    # Missing markers: appended once, then replaced.
    assert not report.inject_readme(p, "c", "x")
    report.inject_readme(p, "c", "y")
    t = p.read_text()
    assert t.count("<!-- bench:c -->") == 1 and t.endswith("<!-- bench:c -->\ny\n<!-- /bench:c -->\n")


# ---- perplexity check ----------------------------------------------------------------------------


class _Perturbed:
    """An engine whose logits carry noise: the perplexity check must flag it."""

    def __init__(self, engine, scale, seed=0):
        self.engine, self.scale, self.rng = engine, scale, np.random.default_rng(seed)

    def reset(self):
        self.engine.reset()

    def prefill(self, tokens, all_logits=False):
        z = self.engine.prefill(tokens, all_logits=all_logits)
        return z + self.scale * self.rng.standard_normal(z.shape).astype(np.float32)


def test_perplexity_flags_perturbed_engine(tiny):
    from lab.reference import perplexity_from_logits

    rng = np.random.default_rng(1)
    tokens = [int(t) for t in rng.integers(0, TINY["vocab_size"], size=120)]
    eng = open_engine("cpu_fp32", tiny, max_context=128)
    ref = ppl_check.engine_perplexity(eng, tokens, window=120, chunk=17)
    # Chunked prefill continuing the cache = one pass over the whole window.
    full = perplexity_from_logits(eng.prefill(np.asarray(tokens, np.int32), all_logits=True), tokens)
    assert ref["ppl"] == pytest.approx(full, rel=1e-5) and ref["predicted_tokens"] == 119
    eng.reset()
    noisy = ppl_check.engine_perplexity(_Perturbed(eng, 1.0), tokens, window=120, chunk=17)["ppl"]
    tiny_noise = ppl_check.engine_perplexity(_Perturbed(eng, 1e-7), tokens, window=120, chunk=17)["ppl"]
    verdicts = {v["engine"]: v for v in ppl_check.check(
        {"cpu_fp32": ref["ppl"], "noisy_fp16": noisy, "quiet_fp16": tiny_noise, "nan": float("nan")})}
    assert not verdicts["cpu_fp32"]["flagged"]
    assert verdicts["noisy_fp16"]["flagged"] and verdicts["noisy_fp16"]["rel_diff"] > 5e-3
    assert not verdicts["quiet_fp16"]["flagged"]
    assert verdicts["nan"]["flagged"]
    assert "**FLAGGED**" in ppl_check.markdown(list(verdicts.values()), "m", 120, 120, 17, "t.txt")


def test_read_ceiling_pages():
    """lab._membw reads its array on 2 MiB pages by default (the machine's ceiling) or on 4 KiB pages:
    MADV_NOHUGEPAGE leaves none huge, and where the kernel offers transparent huge pages the default
    array gets them (the share is read back from /proc/self/smaps). Bad page names are refused."""
    m = pytest.importorskip("lab._membw", reason="lab._membw not built")
    assert m.read_bandwidth_pages(64 << 20, 1, pages="small")[1] == 0.0
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[never]" in thp.read_text():
        pytest.skip("this kernel offers no transparent huge pages")
    assert m.read_bandwidth_pages(64 << 20, 1, pages="huge")[1] > 0.5
    assert min(m.read_bandwidth(8 << 20, 2, pages="huge") + m.read_bandwidth(8 << 20, 2, pages="small")) > 0
    with pytest.raises(ValueError, match="pages must be"):
        m.read_bandwidth(8 << 20, 1, pages="2M")


def test_read_ceiling_schedules():
    """lab._membw deals its chunks to the threads guided (the default) or in equal static shares: both must
    read every value of the same array, so their sums agree to rounding (a guided pass that skipped or
    repeated a 256 KiB chunk of these values, uniform in [-0.5, 0.5), moves the sum by tens); a bad
    schedule is refused."""
    m = pytest.importorskip("lab._membw", reason="lab._membw not built")
    g = m.read_sum(64 << 20, schedule="guided")
    s = m.read_sum(64 << 20, schedule="static")
    assert g != 0 and abs(g - s) < 0.5, (g, s)
    assert min(m.read_bandwidth(8 << 20, 2, schedule="guided") + m.read_bandwidth(8 << 20, 2, schedule="static")) > 0
    with pytest.raises(ValueError, match="schedule must be"):
        m.read_bandwidth(8 << 20, 1, schedule="dynamic")


@pytest.mark.parametrize("huge,small", [(30.0, 26.0), (98.0, 147.0)])
def test_cpu_roof_is_the_best_read(monkeypatch, huge, small):
    """The CPU roof is the higher of the reads on 2 MiB and on 4 KiB pages (a host whose bandwidth moved
    between them must not be judged against the lower one), and the report names the other."""
    from lab.bench import ceilings

    class FakeMembw:
        def max_threads(self):
            return 2

        def simd_levels(self):
            return ["avx2", "scalar"]

        def read_bandwidth_pages(self, n, repeats, threads=0, pages="huge"):
            return [huge if pages == "huge" else small] * repeats, 1.0 if pages == "huge" else 0.0

        def fma_peak(self, isa, seconds, threads):
            return 100.0

    monkeypatch.setattr(ceilings, "_membw", lambda: FakeMembw())
    c = ceilings.cpu_ceilings(read_bytes=1 << 20, repeats=3, matmul_n=64, log=lambda *_: None)
    assert c["bandwidth_GBps"] == max(huge, small)
    assert ("4 KiB pages" in c["bandwidth_method"]) == (small > huge)
    note = report._other_read_note(c)
    assert f"{min(huge, small):.1f} GB/s" in note and ("2 MiB" in note) == (small > huge)


def test_summary_rows_from_bench_json(tmp_path):
    """The README's summary: one row per engine of each bench.json (only the engines after '@' when given),
    decode at the context nearest 512 (greedy rows before logits-to-host ones), TTFT at the prompt nearest
    1024, the run's folder (the one above bench/, where run.sh bench writes; its path below bench_results/,
    where a session keeps a folder a call) and date, and a run from uncommitted changes says so; percentages keep three significant digits, rounded down."""
    from lab.bench import summary

    def point(ctx, tok_s, mode):
        return {"context": ctx, "mode": mode, "tok_s": {"median": tok_s}, "gbps": {"median": tok_s * 2},
                "pct_of_roof": 84.96, "best_peer": "hf_eager (fp32)", "ratio_vs_best_peer": 2.0}

    def run(folder, dirty, runners):
        d = tmp_path / folder
        d.mkdir(parents=True)
        doc = {"machine": {"host": "h", "date": "2026-11-28T01:00:00", "cpu_model": "CPU X", "logical_cpus": 2,
                           "usable_cpus": 2, "git_dirty": dirty, "gpu": None},
               "model": {"name": "m"}, "runners": runners}
        (d / "bench.json").write_text(json.dumps(doc))
        return str(d / "bench.json")

    eng = {"kind": "engine", "name": "cpu_opt", "device": "cpu",
           "decode": [point(128, 10.0, "greedy"), point(500, 9.0, "logits"), point(512, 8.0, "greedy")],
           "ttft": [{"prompt_len": 128, "ms": {"median": 5.0}, "pct_of_roof": 10.0},
                    {"prompt_len": 1000, "ms": {"median": 50.0}, "pct_of_roof": 20.0}]}
    other = dict(eng, name="cpu_fp32")
    a = run("clean", False, [eng, other, {"kind": "peer", "name": "hf_eager"}])
    b = run("dirty/bench", True, [eng])  # run.sh bench's layout: <run folder>/bench/bench.json
    c = run("bench_results/s23/c5/bench", False, [eng])
    rows = summary.summary_rows([a + "@cpu_opt", b, c])
    assert sorted((r["engine"], r["source"]) for r in rows) == [
        ("cpu_opt", "clean"), ("cpu_opt", "dirty"), ("cpu_opt", "s23/c5")]
    assert all(r["decode"]["context"] == 512 and r["ttft"]["prompt_len"] == 1000 for r in rows)
    md = summary.markdown(rows)
    assert "8.0 (512, greedy)" in md and "2.00x hf_eager (fp32)" in md and "50.0 (1000)" in md
    # 84.96% of the roof is not shown as 85.0%: a target is not met by rounding
    assert "16, 84.9%" in md and "| 20.0% |" in md
    assert md.count("uncommitted changes") == 1 and "dirty (2026-11-28, uncommitted changes)" in md
    assert "clean (2026-11-28) |" in md and "cpu_fp32" not in md


def test_report_percent_of_roof_keeps_three_digits():
    """The bench table's % of roof keeps three significant digits, rounded down: 84.84% reads 84.8% and
    84.96% reads 84.9%, not 85% (a target is not met by rounding; `:.3g` showed 85), 13.96% reads 13.9%
    (it showed 14), 84.8% stays 84.8% (not 84.7% from the float 847.999...), 9.713% reads 9.71%, 100%
    reads 100%, and a point without a roof reads a dash; speed-ups keep two decimals, rounded down."""
    from lab.bench import report

    def point(pct):
        return {"context": 512, "mode": "greedy", "tok_s": {"median": 1.0, "min": 1.0, "max": 1.0},
                "gbps": {"median": 2.0}, "pct_of_roof": pct, "best_peer": None}

    res = {"runners": [{"machine": "M", "label": "e", "kind": "engine", "ttft": [],
                        "decode": [point(x) for x in (84.84, 84.96, 13.96, 84.8, 9.713, 100.0, None)]}]}
    assert [r["pct"] for r in report.table_rows(res)] == ["84.8%", "84.9%", "13.9%", "84.8%", "9.71%", "100%", "—"]
    # a speed-up against a peer is rounded down too: 1.696x is not shown as the 1.7x target
    assert report.ratio_text(1.696) == "1.69x" and report.ratio_text(1.7) == "1.70x" and report.ratio_text(2.0) == "2.00x"


def test_product_elements_add_up_to_the_decode_weights():
    """The per-product breakdown the step profiles use covers exactly the matrices a decode step reads:
    with the norms and one embedding row, decode_weight_elements; gate_up is twice down, qkv is q + k + v."""
    from lab.bench import counting

    cfg = {"dim": 576, "hidden_dim": 1536, "n_layers": 30, "n_heads": 9, "n_kv_heads": 3, "head_dim": 64,
           "vocab_size": 49152}
    e = counting.product_elements(cfg)
    p = counting.param_counts(cfg)
    assert sum(e.values()) + 30 * p["per_layer_norms"] + p["final_norm"] + p["embedding_row"] == \
        counting.decode_weight_elements(cfg)
    assert e["gate_up"] == 2 * e["down"] == 2 * 30 * 576 * 1536 and e["qkv"] == 30 * 576 * (576 + 2 * 192)


def test_bench_commit_is_the_bundles(tmp_path, monkeypatch):
    """A bench run from a GPU bundle names the bundle's commit (BUILD_INFO), not the HEAD of the checkout it
    runs in: on the GPU host that checkout's git metadata lagged the carried tree, and session 17's ring
    bench came out as the previous commit, "dirty". Outside a bundle it is the checkout's HEAD."""
    import shutil

    import lab.paths

    if not shutil.which("git"):
        pytest.skip("no git on this machine")
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=lab@example.com", "-c", "user.name=lab"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setattr(lab.paths, "repo_root", lambda: repo)
    assert report._git_commit(tmp_path / "no_bundle") == (head, False)
    info = tmp_path / "BUILD_INFO"
    info.write_text("python=3.12\ncuda_archs=sm_90a\ncommit=e97c8e3\n")
    assert report._git_commit(info) == ("e97c8e3 (bundle)", None)


def test_table_names_the_commit_whole():
    """The table's head cuts a full hash to 12 digits and keeps a bundle's short commit and its marks whole
    (a cut at 18 characters once printed '71839b1+dirty (bun')."""
    assert report._short_commit("71839b1+dirty (bundle)") == "71839b1+dirty (bundle)"
    assert report._short_commit("0123456789abcdef0123456789abcdef01234567") == "0123456789ab"
    assert report._short_commit("e97c8e3 (bundle)") == "e97c8e3 (bundle)"
