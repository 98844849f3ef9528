"""Bad input gets a clear error and loses nothing; the C++ side never crashes.

Each case corrupts a copy of a valid tiny model (or calls with bad arguments) and checks the
exception type and that its message names the problem. A crash would kill this test process.
The calls with bad tokens and contexts run on every engine: the CPU ones everywhere, gpu_naive and
gpu_opt (marked `gpu`) where they are built and a CUDA GPU is present.
"""

import json
import shutil
import struct

import numpy as np
import pytest

from lab.engine import ModelFormatError, engine_names, open_engine
from lab import _engine
from lab.synthetic import write_random_model

CONFIG = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=100, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2,
)
CPU_ENGINES = [e for e in ("cpu_fp32", "cpu_opt") if e in engine_names()]
# The GPU engines get the same model with head_dim 64 (gpu_opt's kernels take head_dim 64 or 128).
GPU_CONFIG = dict(CONFIG, hidden_size=256, intermediate_size=512)
ENGINES = CPU_ENGINES + [
    pytest.param(e, marks=[pytest.mark.gpu] + ([] if e in engine_names() else
                                               [pytest.mark.skip(reason=f"{e} is not built into lab._engine")]))
    for e in ("gpu_naive", "gpu_opt")
]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    write_random_model(d, CONFIG, precision="fp32", seed=1)
    return d


@pytest.fixture(scope="module")
def good_gpu(tmp_path_factory):
    d = tmp_path_factory.mktemp("good_gpu")
    write_random_model(d, GPU_CONFIG, precision="fp32", seed=1)
    return d


def good_for(request, engine):
    """The valid model for this engine (made only when a test of its kind runs)."""
    return request.getfixturevalue("good_gpu" if engine.startswith("gpu") else "good")


@pytest.fixture
def bad(good, tmp_path):
    """A fresh copy of the good model to corrupt."""
    d = tmp_path / "bad"
    shutil.copytree(good, d)
    return d


def read_header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_header(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def expect_model_error(d, *words):
    for engine in CPU_ENGINES:
        with pytest.raises(ModelFormatError) as e:
            open_engine(engine, d, max_context=32)
        msg = str(e.value)
        for w in words:
            assert w in msg, f"{engine}: {w!r} not in {msg!r}"


@pytest.mark.parametrize("engine", ENGINES)
def test_good_model_opens(request, engine):
    good = good_for(request, engine)
    assert open_engine(engine, good, max_context=32).prefill([1, 2, 3]).shape == (100,)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        open_engine(engine, good, max_context=65)


def test_truncated_model_bin(bad):
    p = bad / "model.bin"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    expect_model_error(bad, "outside the data region")


def test_truncated_inside_header(bad):
    p = bad / "model.bin"
    p.write_bytes(p.read_bytes()[:100])
    expect_model_error(bad, "header length")


def test_tiny_file(bad):
    (bad / "model.bin").write_bytes(b"abc")
    expect_model_error(bad, "too short")


def test_header_offsets_out_of_range(bad):
    header, data = read_header(bad / "model.bin")
    header["model.norm.weight"]["data_offsets"] = [len(data) - 8, len(data) + 248]
    write_header(bad / "model.bin", header, data)
    expect_model_error(bad, "model.norm.weight", "outside the data region")


def test_header_size_lies_about_shape(bad):
    header, data = read_header(bad / "model.bin")
    header["model.norm.weight"]["shape"] = [65]
    write_header(bad / "model.bin", header, data)
    expect_model_error(bad, "model.norm.weight", "needs")


def test_overlapping_tensors(bad):
    header, data = read_header(bad / "model.bin")
    a, b = header["model.norm.weight"], header["model.layers.0.input_layernorm.weight"]
    b["data_offsets"] = a["data_offsets"]
    write_header(bad / "model.bin", header, data)
    expect_model_error(bad, "overlap")


def test_unsupported_dtype(bad):
    header, data = read_header(bad / "model.bin")
    header["model.norm.weight"]["dtype"] = "I32"
    write_header(bad / "model.bin", header, data)
    expect_model_error(bad, "I32")


def test_header_not_json(bad):
    raw = bytearray((bad / "model.bin").read_bytes())
    raw[8:20] = b"not json!!!!"
    (bad / "model.bin").write_bytes(bytes(raw))
    expect_model_error(bad, "JSON")


def test_missing_format_version(bad):
    header, data = read_header(bad / "model.bin")
    header["__metadata__"].pop("lab_format_version")
    write_header(bad / "model.bin", header, data)
    expect_model_error(bad, "lab_format_version")


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("intermediate_size", 96, ["mlp.down_proj", "config.json implies [64, 96]"]),
        ("num_key_value_heads", 4, ["k_proj", "config.json implies"]),
        ("num_hidden_layers", 3, ["model.layers.2", "missing"]),
        ("num_hidden_layers", 1, ["unexpected tensor model.layers.1"]),
        ("tie_word_embeddings", True, ["unexpected tensor lm_head.weight"]),
        ("vocab_size", 101, ["implies [101, 64]"]),
    ],
)
def test_config_does_not_match_weights(bad, key, value, words):
    cfg = json.loads((bad / "config.json").read_text())
    cfg[key] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    expect_model_error(bad, *words)


@pytest.mark.parametrize(
    "text,words",
    [
        ("{not json", ["not valid JSON"]),
        ("[]", ["JSON object"]),
        ('{"hidden_size": 64}', ["missing", "intermediate_size"]),
        ('{"hidden_size": "64"}', ["hidden_size", "integer"]),
    ],
)
def test_bad_config_json(bad, text, words):
    (bad / "config.json").write_text(text)
    expect_model_error(bad, *words)


def test_unsupported_rope_type(bad):
    cfg = json.loads((bad / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (bad / "config.json").write_text(json.dumps(cfg))
    expect_model_error(bad, "yarn")


def test_missing_files(bad):
    (bad / "model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="model.bin"):
        open_engine("cpu_fp32", bad)
    with pytest.raises(ModelFormatError, match="cannot open"):  # the C++ side directly
        _engine.Engine("cpu_fp32", str(bad), 16)
    with pytest.raises(FileNotFoundError, match="config.json"):
        open_engine("cpu_fp32", bad.parent / "nowhere")


def test_unknown_engine_and_bad_context(good):
    with pytest.raises(ValueError, match="unknown engine"):
        open_engine("tpu_magic", good)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        open_engine("cpu_fp32", good, max_context=65)


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_tokens_and_context_lose_nothing(request, engine, monkeypatch):
    # gpu_opt's split MLP: the fused one (the default) adds its partial sums in the order they land, so its
    # logits are not bitwise run to run, and the check below is bitwise.
    monkeypatch.setenv("LAB_GPU_MLP", "split")
    eng = open_engine(engine, good_for(request, engine), max_context=16)
    first = eng.prefill([5, 6, 7])
    assert eng.pos == 3
    with pytest.raises(ValueError, match="token id 100 .*out of range"):
        eng.prefill([1, 100])
    with pytest.raises(ValueError, match="token id -1"):
        eng.decode(-1)
    with pytest.raises(ValueError, match="out of range"):
        eng.decode(2**40)
    with pytest.raises(ValueError, match="exceeds the context of 16"):
        eng.prefill(list(range(14)))
    with pytest.raises(ValueError, match="empty prompt"):
        eng.prefill([])
    with pytest.raises(ValueError, match="one-dimensional"):
        eng.prefill([[1, 2]])
    with pytest.raises(ValueError, match="generating 14 tokens from position 3 exceeds the context of 16"):
        eng.generate(8, 14)
    with pytest.raises(ValueError, match="token id 100 .*out of range"):
        eng.generate(100, 2)
    with pytest.raises(ValueError, match="token id -1"):
        eng.generate(-1, 2)
    with pytest.raises(ValueError, match="at least one step"):
        eng.generate(8, 0)
    assert eng.pos == 3  # nothing was consumed by the failed calls
    nxt = eng.decode(8)
    eng.reset()
    # The same calls on a fresh sequence give the same logits, bit for bit: the failed calls changed
    # nothing. (Not an all-logits prefill of the four tokens: with cpu_opt's bf16 MLP products that
    # path rounds differently from a last-position prefill followed by a decode.)
    np.testing.assert_array_equal(eng.prefill([5, 6, 7]), first)
    np.testing.assert_array_equal(eng.decode(8), nxt)
    for t in range(12):  # fill the context to the brim, then one more is refused
        eng.decode(t)
    assert eng.pos == 16
    with pytest.raises(ValueError, match="exceeds the context"):
        eng.decode(1)
    with pytest.raises(ValueError, match="exceeds the context"):
        eng.generate(1, 1)
    assert eng.pos == 16

# No GPU at all (DeviceError naming the need) and GPU out of memory: py/tests/test_gpu_engines.py.
