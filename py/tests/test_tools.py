"""The command-line tools as a user runs them: inference (default model, sampling flags, errors),
perplexity's last line, and the sampler's rules."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.sampler import Sampler

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def run_tool(name, *args, data_dir):
    env = dict(os.environ, LAB_DATA_DIR=str(data_dir), PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, str(TOOLS / f"{name}.py"), *args], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_inference_default_model_streams_text_and_timings(data):
    r = run_tool("inference", "--prompt", "The capital of France is", "--max_tokens", "12", data_dir=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is")
    assert len(r.stdout.split()) > 6
    assert "TTFT" in r.stderr and "decode" in r.stderr and "tok/s" in r.stderr


def test_inference_seed_reproducible(data):
    args = ["--prompt", "Hello", "--max_tokens", "16", "--temperature", "1.0", "--top_p", "0.9"]
    a = run_tool("inference", *args, "--seed", "3", data_dir=data)
    b = run_tool("inference", *args, "--seed", "3", data_dir=data)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout


def test_inference_prompt_longer_than_context_is_a_clear_error(data):
    r = run_tool("inference", "--prompt", "word " * 300, "--max_context", "64", "--max_tokens", "4", data_dir=data)
    assert r.returncode != 0
    assert "exceeds the context of 64" in r.stderr
    assert "Traceback" not in r.stderr


def test_inference_missing_tokenizer_is_a_clear_error(data, tmp_path):
    model_dir = next((data / "models").iterdir())
    r = run_tool("inference", "--model_dir", str(model_dir), "--tokenizer_dir", str(tmp_path / "none"),
                 data_dir=data)
    assert r.returncode != 0
    assert "tokenizer" in r.stderr.lower() and str(tmp_path / "none") in r.stderr
    assert "Traceback" not in r.stderr


def test_perplexity_last_line(data):
    r = run_tool("perplexity", "--max_tokens", "64", "--precision", "fp16", data_dir=data)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("perplexity: ")
    assert 1.0 < float(last.split(":")[1]) < 1000.0


def test_sampler_rules():
    logits = np.array([0.0, 5.0, 4.9, -3.0, 1.0])
    assert Sampler()(logits) == 1  # greedy
    top1 = Sampler(temperature=1.0, top_k=1, seed=0)
    assert {top1(logits) for _ in range(50)} == {1}
    top2 = Sampler(temperature=1.0, top_k=2, seed=0)
    assert {top2(logits) for _ in range(200)} == {1, 2}
    nucleus = Sampler(temperature=1.0, top_p=0.5, seed=0)  # token 1 alone holds > 50% of the mass
    assert {nucleus(logits) for _ in range(50)} == {1}
    hot = Sampler(temperature=100.0, seed=0)
    assert len({hot(logits) for _ in range(300)}) == 5
    with pytest.raises(ValueError):
        Sampler(top_p=0.0)
