"""The model data pipeline: ModelWriter, HF config normalization, HF checkpoint conversion, synthetic
models, corrupt-file helpers, and the download tool's offline failure."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lab import convert, hfconfig, modelfile, synthetic
from lab.modelfile import ModelWriter, SafetensorsReader, check_model_dir, expected_tensors

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 128}
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=256, max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=[2, 3])
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def make_hf_checkpoint(path, dtype="bf16", tied=False, rope="parameters", seed=0, shard="40KB", tokenizer=False):
    """A random tiny HF Llama checkpoint saved by transformers (sharded); returns its state dict (as saved)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(TINY, tie_word_embeddings=tied)
    if rope == "parameters":
        kw["rope_parameters"] = dict(LLAMA3_ROPE, rope_theta=50000.0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kw))
    with torch.no_grad():
        for name, p in model.named_parameters():  # random everywhere, norms 1 + noise (never all ones)
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.dim() == 1 else 0.05 * torch.randn_like(p))
    model = model.to(DTYPES[dtype])
    model.save_pretrained(path, max_shard_size=shard)
    if rope == "meta":  # Meta's published style: top-level rope_theta + rope_scaling
        cfg = json.loads((Path(path) / "config.json").read_text())
        cfg.pop("rope_parameters", None)
        cfg.update(rope_theta=50000.0, rope_scaling=dict(LLAMA3_ROPE))
        (Path(path) / "config.json").write_text(json.dumps(cfg))
    if tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE({chr(ord("a") + i): i for i in range(26)}, [], unk_token="a"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="z").save_pretrained(path)
    state = {}
    for f in convert.weight_files(path):
        state.update(load_file(str(f)))
    return state


def read_ours(model_dir):
    """Our model.bin through the safetensors library (an independent reader)."""
    with safe_open(str(Path(model_dir) / "model.bin"), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "lab_format_version": "1", "source": f.metadata()["source"]}
        return {k: f.get_tensor(k) for k in f.keys()}


def subprocess_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


# ---------------------------------------------------------------- HF checkpoint conversion


@pytest.mark.parametrize("src", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_convert_sharded_tensors_equal_source(tmp_path, src, precision):
    state = make_hf_checkpoint(tmp_path / "hf", dtype=src, seed=len(src))
    assert len(convert.weight_files(tmp_path / "hf")) > 2, "the checkpoint should be sharded"
    convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", precision, progress=False)
    ours = read_ours(tmp_path / "m")
    assert set(ours) == set(state) == set(expected_tensors(json.loads((tmp_path / "m/config.json").read_text())))
    want_dtype = torch.float32 if precision == "fp32" else torch.float16
    for name, t in state.items():
        assert ours[name].dtype == want_dtype
        # fp32 destination: exact; fp16: the one correct rounding of the exact source value
        assert torch.equal(ours[name], t.float().to(want_dtype)), name
    check_model_dir(tmp_path / "m")


@pytest.mark.parametrize("rope", ["parameters", "meta"])
def test_convert_config_and_rope_styles(tmp_path, rope):
    from transformers import LlamaConfig

    make_hf_checkpoint(tmp_path / "hf", rope=rope)
    convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp16", progress=False)
    cfg = json.loads((tmp_path / "m/config.json").read_text())
    assert "rope_parameters" not in cfg
    assert cfg["rope_theta"] == 50000.0 and cfg["rope_scaling"] == LLAMA3_ROPE
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["torch_dtype"] == "float16"
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps",
              "bos_token_id", "eos_token_id"):
        assert cfg[k] == TINY[k], k
    assert cfg["head_dim"] == 16 and cfg["tie_word_embeddings"] is False
    # transformers reads our file as it is and sees the same RoPE
    ours = LlamaConfig.from_pretrained(tmp_path / "m")
    assert ours.rope_parameters == dict(LLAMA3_ROPE, rope_theta=50000.0)


def test_converted_model_gives_source_logits(tmp_path):
    """End to end: transformers on our model.bin gives the source model's logits (fp32, exact weights)."""
    from transformers import LlamaForCausalLM

    from lab.reference import load_reference

    make_hf_checkpoint(tmp_path / "hf", dtype="fp32", tied=True)
    convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp32", progress=False)
    src = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32, attn_implementation="eager").eval()
    ref = load_reference(tmp_path / "m", dtype="float32")
    ids = torch.tensor([[1, 17, 200, 5, 99, 255, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ref(ids).logits, src(ids).logits, rtol=0, atol=1e-5)


def test_tied_drops_lm_head_untied_keeps_it(tmp_path):
    tied = make_hf_checkpoint(tmp_path / "tied", tied=True)
    untied = make_hf_checkpoint(tmp_path / "untied", tied=False)
    assert "lm_head.weight" not in tied and "lm_head.weight" in untied
    convert.convert_hf_checkpoint(tmp_path / "tied", tmp_path / "mt", "fp32", progress=False)
    convert.convert_hf_checkpoint(tmp_path / "untied", tmp_path / "mu", "fp32", progress=False)
    assert "lm_head.weight" not in read_ours(tmp_path / "mt")
    assert json.loads((tmp_path / "mt/config.json").read_text())["tie_word_embeddings"] is True
    mu = read_ours(tmp_path / "mu")
    assert torch.equal(mu["lm_head.weight"], untied["lm_head.weight"].float())
    assert not torch.equal(mu["lm_head.weight"], mu["model.embed_tokens.weight"])


def test_tied_checkpoint_with_lm_head_and_buffers(tmp_path):
    """A tied checkpoint that still stores lm_head.weight and a rotary inv_freq buffer: both are skipped."""
    state = make_hf_checkpoint(tmp_path / "hf", tied=True, shard="10MB")
    single = tmp_path / "hf/model.safetensors"
    extra = dict(state, **{"lm_head.weight": state["model.embed_tokens.weight"].clone(),
                           "model.layers.0.self_attn.rotary_emb.inv_freq": torch.rand(8)})
    save_file(extra, str(single), metadata={"format": "pt"})
    convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp32", progress=False)
    assert set(read_ours(tmp_path / "m")) == set(state)


def test_untied_checkpoint_without_lm_head_fails(tmp_path):
    state = make_hf_checkpoint(tmp_path / "hf", tied=False, shard="10MB")
    del state["lm_head.weight"]
    save_file(state, str(tmp_path / "hf/model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="never written"):
        convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp32", progress=False)
    assert not (tmp_path / "m/model.bin").exists() and not list((tmp_path / "m").glob("model.bin.tmp-*"))


def test_tokenizer_files_copied(tmp_path):
    make_hf_checkpoint(tmp_path / "hf", tokenizer=True)
    convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp16", tokenizer_dir=tmp_path / "tok", progress=False)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "tok" / f).read_bytes() == (tmp_path / "hf" / f).read_bytes()
    assert not (tmp_path / "tok/generation_config.json").exists()


def test_missing_weights_and_unsupported_configs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/config.json").write_text(json.dumps(dict(TINY, model_type="llama")))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        convert.convert_hf_checkpoint(tmp_path / "empty", tmp_path / "m", "fp16", progress=False)
    make_hf_checkpoint(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf/config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}
    (tmp_path / "hf/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported rope_type 'yarn'"):
        convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp16", progress=False)
    assert not (tmp_path / "m/model.bin").exists()


# ---------------------------------------------------------------- killed conversions


def test_failure_midway_leaves_no_model_bin(tmp_path, monkeypatch):
    make_hf_checkpoint(tmp_path / "hf")
    real_write, calls = ModelWriter.write, []

    def failing_write(self, name, arr):
        calls.append(name)
        if len(calls) == 5:
            raise OSError("disk on fire")
        real_write(self, name, arr)

    monkeypatch.setattr(ModelWriter, "write", failing_write)
    with pytest.raises(OSError, match="disk on fire"):
        convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp16", progress=False)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == []


def test_failure_keeps_the_older_model(tmp_path, monkeypatch):
    make_hf_checkpoint(tmp_path / "hf")
    convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp16", progress=False)
    before = (tmp_path / "m/model.bin").read_bytes()
    monkeypatch.setattr(ModelWriter, "write", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp16", progress=False)
    assert (tmp_path / "m/model.bin").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.bin"]


def test_sigkill_midway_leaves_no_model_bin_and_rerun_cleans_up(tmp_path):
    make_hf_checkpoint(tmp_path / "hf")
    script = f"""
import os, signal
from lab import convert
from lab.modelfile import ModelWriter
real, n = ModelWriter.write, [0]
def write(self, name, arr):
    n[0] += 1
    if n[0] == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, name, arr)
ModelWriter.write = write
convert.convert_hf_checkpoint({str(tmp_path / 'hf')!r}, {str(tmp_path / 'm')!r}, "fp16", progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [p.name for p in (tmp_path / "m").iterdir()]
    assert "model.bin" not in left and any(n.startswith("model.bin.tmp-") for n in left), left
    convert.convert_hf_checkpoint(tmp_path / "hf", tmp_path / "m", "fp16", progress=False)  # removes the stale temp
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.bin"]
    check_model_dir(tmp_path / "m")


# ---------------------------------------------------------------- ModelWriter


def test_writer_header_layout_and_any_order(tmp_path):
    cfg = dict(TINY, tie_word_embeddings=False)
    shapes = expected_tensors(cfg)
    rng = np.random.default_rng(3)
    data = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    order = list(shapes)
    for d, names in (("a", order), ("b", [order[i] for i in rng.permutation(len(order))])):
        with ModelWriter(tmp_path / d, cfg, "fp32", source="test") as w:
            for n in names:
                w.write(n, data[n])
    raw = (tmp_path / "a/model.bin").read_bytes()
    assert raw == (tmp_path / "b/model.bin").read_bytes()
    (n,) = np.frombuffer(raw[:8], dtype="<u8")
    assert (8 + n) % 8 == 0 and raw[8 + n - 1 : 8 + n] in (b" ", b"}")
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"] == {"format": "pt", "lab_format_version": "1", "source": "test"}
    assert [k for k in header if k != "__metadata__"] == order  # file order: layer by layer
    r = SafetensorsReader(tmp_path / "a/model.bin")
    for name in shapes:
        assert np.array_equal(r.get(name), data[name])
    assert header["model.layers.1.mlp.down_proj.weight"]["shape"] == [64, 96]
    assert header["model.layers.0.self_attn.k_proj.weight"]["shape"] == [32, 64]


def test_writer_checks(tmp_path):
    cfg = dict(TINY, tie_word_embeddings=True)
    shapes = expected_tensors(cfg)
    w = ModelWriter(tmp_path / "m", cfg, "fp16")
    with pytest.raises(ValueError, match="unexpected tensor"):
        w.write("lm_head.weight", np.ones(shapes["model.embed_tokens.weight"], np.float32))
    with pytest.raises(ValueError, match="shape"):
        w.write("model.norm.weight", np.ones([65], np.float32))
    w.write("model.norm.weight", np.ones([64], np.float32))
    with pytest.raises(ValueError, match="twice"):
        w.write("model.norm.weight", np.ones([64], np.float32))
    with pytest.raises(ValueError, match="not finite"):
        w.write("model.layers.0.input_layernorm.weight", np.full([64], 1e6, np.float32))  # beyond fp16
    with pytest.raises(ValueError, match="never written"):
        w.close()
    w.abort()
    assert list((tmp_path / "m").iterdir()) == []
    with pytest.raises(ValueError, match="precision"):
        ModelWriter(tmp_path / "m", cfg, "bf16")


def test_writer_context_manager_deletes_temp_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ModelWriter(tmp_path / "m", TINY, "fp32") as w:
            assert w.tmp_path.exists()
            raise RuntimeError("boom")
    assert list((tmp_path / "m").iterdir()) == []


def test_expected_tensors_real_shapes():
    def params(cfg):
        return sum(int(np.prod(s)) for s in expected_tensors(cfg).values())

    assert params(synthetic.ARCHS["llama-3.1-8b"]) == 8_030_261_248
    assert params(synthetic.ARCHS["llama-3.2-1b"]) == 1_235_814_400
    e = expected_tensors(synthetic.ARCHS["llama-3.1-8b"])
    assert e["model.layers.31.self_attn.k_proj.weight"] == [1024, 4096]
    assert e["model.layers.0.mlp.down_proj.weight"] == [4096, 14336] and e["lm_head.weight"] == [128256, 4096]
    assert len(e) == 2 + 32 * 9 + 1


# ---------------------------------------------------------------- HF config normalization


def test_hfconfig_both_styles_agree():
    meta = dict(TINY, rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE, factor=32.0))
    tf5 = dict(TINY, rope_parameters=dict(LLAMA3_ROPE, factor=32.0, rope_theta=500000.0))
    a, b = hfconfig.normalize_config(meta, "fp16"), hfconfig.normalize_config(tf5, "fp16")
    assert a == b and a["rope_scaling"]["factor"] == 32.0 and a["rope_theta"] == 500000.0
    assert hfconfig.normalize_config(a) == a  # idempotent
    old_type_key = dict(TINY, rope_theta=1e4, rope_scaling={"type": "llama3", **{k: v for k, v in LLAMA3_ROPE.items() if k != "rope_type"}})
    assert hfconfig.normalize_config(old_type_key)["rope_scaling"]["rope_type"] == "llama3"
    plain = hfconfig.normalize_config(dict(TINY, rope_parameters={"rope_type": "default", "rope_theta": 1e5}))
    assert plain["rope_theta"] == 1e5 and plain["rope_scaling"] is None
    d = hfconfig.normalize_config({k: v for k, v in TINY.items() if k != "num_key_value_heads"})
    assert d["num_key_value_heads"] == 4 and d["head_dim"] == 16 and d["rope_theta"] == 10000.0


@pytest.mark.parametrize("bad, msg", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope_type 'yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "unsupported rope_type 'linear'"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "unsupported rope_type 'dynamic'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "lacks"),
    ({"model_type": "mistral"}, "LlamaForCausalLM only"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "gelu"}, "silu"),
    ({"num_key_value_heads": 3}, "multiple"),
])
def test_hfconfig_rejects(bad, msg):
    with pytest.raises(ValueError, match=msg):
        hfconfig.normalize_config(dict(TINY, **bad))


# ---------------------------------------------------------------- synthetic models


def test_write_random_model_is_random_and_seeded(tmp_path):
    cfg = dict(TINY, tie_word_embeddings=False)
    synthetic.write_random_model(tmp_path / "a", cfg, "fp32", seed=5, progress=False)
    synthetic.write_random_model(tmp_path / "b", cfg, "fp32", seed=5, progress=False)
    synthetic.write_random_model(tmp_path / "c", cfg, "fp16", seed=6, progress=False)
    synthetic.write_random_model(tmp_path / "n", cfg, "fp32", seed=5, progress=False, use_torch=False)
    a, b, c, n = (read_ours(tmp_path / x) for x in "abcn")
    check_model_dir(tmp_path / "a")
    for name, t in a.items():
        assert torch.equal(t, b[name]) and not torch.equal(t.half(), c[name]) and not torch.equal(t, n[name])
        for x in (t, n[name], c[name].float()):
            if x.dim() == 1:  # norms: 1 + noise
                assert abs(x.mean() - 1) < 0.02 and 0.03 < x.std() < 0.07, name
            else:
                assert abs(x.mean()) < 0.003 and abs(x.std() - 0.02) < 0.002 and (x != 0).float().mean() > 0.99, name
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"][:32], a["model.layers.0.self_attn.k_proj.weight"])


def test_make_synthetic_tiny_defaults(tmp_data_dir):
    model_dir, tok_dir = synthetic.make_synthetic("tiny", "fp16", seed=1, progress=False)
    assert model_dir == tmp_data_dir / "models/synthetic-tiny_fp16" and tok_dir is None
    check_model_dir(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["vocab_size"] == 512 and cfg["torch_dtype"] == "float16"
    with pytest.raises(ValueError, match="unknown arch"):
        synthetic.make_synthetic("llama-9", "fp16")


# ---------------------------------------------------------------- corrupt files (for the loaders' tests)

DEFECTS = {  # defect -> what check_model_dir says (after "<path>: ")
    "truncated": "fall outside the data region", "header_too_long": "header length", "bad_json": "header is not valid JSON",
    "bad_dtype": "has dtype I32", "mixed_dtype": "tensors mix dtypes", "offsets_outside": "fall outside the data region",
    "size_mismatch": "spans", "overlap": "two tensors overlap", "bad_version": "lab_format_version '2'",
    "no_version": "lab_format_version None", "missing_tensor": "missing tensor", "extra_tensor": "unexpected tensors",
    "wrong_shape": "has shape [64, 96], config needs [96, 64]",
}


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    synthetic.write_random_model(root / "good", dict(TINY, tie_word_embeddings=False), "fp32", seed=2, progress=False)
    return root / "good", modelfile.write_corrupt_variants(root / "good", root / "bad")


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_corrupt_variant_is_refused(corrupt, defect):
    good, variants = corrupt
    check_model_dir(good)
    assert set(variants) == set(DEFECTS)
    assert (variants[defect] / "model.bin").read_bytes() != (good / "model.bin").read_bytes()
    with pytest.raises(ValueError) as e:
        check_model_dir(variants[defect])
    assert str(e.value).startswith(str(variants[defect] / "model.bin") + ": ")
    assert DEFECTS[defect] in str(e.value).split("model.bin: ", 1)[1]


@pytest.mark.parametrize("defect", ["truncated", "header_too_long", "bad_json", "offsets_outside", "overlap", "size_mismatch"])
def test_corrupt_variant_refused_by_safetensors(corrupt, defect):
    _, variants = corrupt
    with pytest.raises(Exception):
        with safe_open(str(variants[defect] / "model.bin"), framework="np") as f:
            [f.get_tensor(k) for k in f.keys()]


def test_corrupt_variants_refused_by_cpp_loader(corrupt):
    """The C++ loader (lab.engine) must refuse every defect with ModelFormatError."""
    try:
        from lab import engine
    except ImportError as e:  # plain pytest without the built module
        pytest.skip(f"no engine module: {e}")
    if "cpu_fp32" not in engine.engine_names():
        pytest.skip("no cpu_fp32 engine built")
    good, variants = corrupt
    engine.open_engine("cpu_fp32", good, max_context=16)
    accepted = []
    for defect, d in sorted(variants.items()):
        try:
            engine.open_engine("cpu_fp32", d, max_context=16)
            accepted.append(defect)
        except engine.ModelFormatError:
            pass
    assert accepted == []


# ---------------------------------------------------------------- tools


def _runfile(target):
    """The launcher of a py_binary in our runfiles (bazel test), or None outside Bazel."""
    root = os.environ.get("TEST_SRCDIR")
    if not root:
        return None
    p = Path(root) / os.environ.get("TEST_WORKSPACE", "llm_inference_lab") / "py" / target
    return p if p.exists() else None


def _tool(target):
    exe = _runfile(target)
    if exe:
        return [str(exe)]
    return [sys.executable, str(Path(__file__).resolve().parents[1] / "tools" / f"{target}.py")]


def test_download_offline_gives_clear_error(tmp_path):
    env = dict(subprocess_env(), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), LAB_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run(_tool("download") + ["--model=meta-llama/Llama-3.1-8B", "--precision=fp16"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "download: meta-llama/Llama-3.1-8B" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data/models").exists()


def test_fetch_offline_raises_download_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(convert.DownloadError, match="not in the"):
        convert.fetch_hf_snapshot("meta-llama/Llama-3.1-8B", cache_dir=tmp_path)


def test_convert_tool(tmp_path):
    make_hf_checkpoint(tmp_path / "hf", tokenizer=True)
    env = dict(subprocess_env(), LAB_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run(_tool("convert") + [f"--hf_dir={tmp_path / 'hf'}", "--precision=fp32", "--name=tiny"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_model_dir(tmp_path / "data/models/tiny_fp32")
    assert (tmp_path / "data/tokenizers/tiny/tokenizer.json").exists()
    bad = subprocess.run(_tool("convert") + [f"--hf_dir={tmp_path / 'nope'}"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "convert:" in bad.stderr and "Traceback" not in bad.stderr
