"""cuda/gpu_opt/decode_variants.py's host side: the engine context it sizes, its markdown table read back
for a plot, the plot, and a whole run on a CPU engine (its real runs need a GPU): every context's probe
comes from a fresh prefill, so it does not depend on the contexts before it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import repo_script

SCRIPT = repo_script.REPO / "cuda" / "gpu_opt" / "decode_variants.py"


@pytest.fixture(scope="module")
def dv():
    return repo_script.load(SCRIPT.relative_to(repo_script.REPO))


def test_context_needed(dv):
    # every context starts from its own prefill: the largest context and its steps (the probe step and
    # the blocks); 1792 then 2048 once ran out of room when the blocks of one context ran into the next
    assert dv.context_needed([1792, 2048], 257) == 2048 + 257
    assert dv.context_needed([2048, 512], 257) == 2048 + 257
    assert dv.context_needed([128], 65) == 193


def test_env_settings_with_commas_in_a_value(dv):
    # LAB_GPU_TILES pins several kinds in one value; the next setting starts at ",NAME="
    assert dv.parse_env("LAB_GPU_TILES=gate_up=w8.u1.r4.b,lm_head=w8.u2.r2,LAB_GPU_TUNE_POS=591") == {
        "LAB_GPU_TILES": "gate_up=w8.u1.r4.b,lm_head=w8.u2.r2", "LAB_GPU_TUNE_POS": "591"}
    assert dv.parse_env("A=1,B=2") == {"A": "1", "B": "2"} and dv.parse_env("defaults") == {} and dv.parse_env("") == {}


def test_table_read_back_and_plotted(dv, tmp_path):
    rows = [
        {"label": "base", "env": {}, "contexts": [
            {"context": 512, "median": 240.4, "min": 239.6, "max": 240.6, "pct_read": 84.6,
             "rel_err_vs_base": 0.0, "argmax_same": True, "finite": True},
            {"context": 2048, "median": 233.8, "min": 233.6, "max": 234.2, "pct_read": 83.3,
             "rel_err_vs_base": 0.0, "argmax_same": True, "finite": True}]},
        {"label": "w8", "env": {"LAB_GPU_ATTN_WARPS": "8", "LAB_GPU_ATTN_MIN_CHUNK": "64"}, "contexts": [
            {"context": 512, "median": 243.1, "min": 243.0, "max": 243.2, "pct_read": 85.5,
             "rel_err_vs_base": 2.4e-3, "argmax_same": False, "finite": True}]},
        {"label": "broken", "env": {"LAB_GPU_ATTN_SHORT": "0", "LAB_GPU_TILES": "gate_up=w8.u1.r4.b,lm_head=w8.u2.r2"},
         "error": "no result"},
    ]
    lines = dv.table_lines(rows, [512, 2048], "base")
    assert lines[2].startswith("| base | defaults | 240.4 (239.6-240.6) | 84.6% | 233.8")
    assert "2.4e-03 (!)" in lines[3] and "— | —" in lines[3] and lines[4].endswith("| no result |")
    assert dv.engine_lines(rows) == []  # no process named its tiles
    rows[0]["variant"] = "qkv w8.u1.r2, o_proj w8.u1.r4"
    rows[1]["variant"] = "qkv w8.u1.r2, o_proj w4.u1.r4.p2, attention 8 warps"
    more = dv.engine_lines(rows)
    assert more[2:] == ["- base: qkv w8.u1.r2, o_proj w8.u1.r4",
                        "- w8: qkv w8.u1.r2, o_proj w4.u1.r4.p2, attention 8 warps"], more
    text = ("Card: NVIDIA H200, 2026-11-28; read ceiling 4291 GB/s (x).\n\n" + "\n".join(lines) + "\n\n" +
            "\n".join(more) + "\nw8: rc 0\n| junk |\n")
    contexts, back = dv.rows_from_table(text)
    assert contexts == [512, 2048]
    assert [r["label"] for r in back] == ["base", "w8", "broken"]  # the table ends at its first other line
    assert back[1]["env"] == rows[1]["env"] and back[2]["env"] == rows[2]["env"] and back[2]["contexts"] == []
    assert [(p["context"], p["median"], p["min"], p["max"]) for p in back[1]["contexts"]] == [(512, 243.1, 243.0, 243.2)]
    assert back[0]["contexts"][1] == {"context": 2048, "median": 233.8, "min": 233.6, "max": 234.2}
    png = tmp_path / "v.png"
    dv.plot(back, png, "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no decode_variants table"):
        dv.rows_from_table("nothing here\n")


def test_probe_does_not_depend_on_earlier_contexts(tmp_path):
    """A run over contexts 8 and 24 and a run over 24 alone give the same probe logits at 24, bit for bit:
    each context starts from a fresh prefill of the same prompt. (When a context ran on from the end of
    the previous one, the 8-token context's greedy blocks were in the cache at 24, and variants whose
    logits differed in the last bits compared different histories: README "One wave of splits".) Each
    variant's row records the engine's own variant string."""
    import lab
    from engine_cases import CASES
    from lab.synthetic import write_random_model

    model = tmp_path / "m"
    write_random_model(model, CASES["gqa1_hd64_tied"], "fp32", seed=3, use_torch=False, progress=False)
    bundle = str(Path(lab.__file__).parents[1])  # the folder that holds the lab package (and its _engine)

    def run(contexts, out, *extra):
        cmd = [sys.executable, str(SCRIPT), "--model_dir", str(model), "--out", str(out), "--engine", "cpu_fp32",
               "--contexts", contexts, "--tokens", "4", "--warmup", "0", "--repeats", "2", "--ceiling_gbps", "1",
               "--variant", f"a={bundle}", "--variant", f"b={bundle}:OMP_NUM_THREADS=1", *extra]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        return json.loads((out / "variants.json").read_text())

    both = run("8,24", tmp_path / "both", "--pack", str(tmp_path / "both.tgz"))
    import tarfile
    with tarfile.open(tmp_path / "both.tgz") as tar:  # --pack: one archive, the probes left out
        names = set(tar.getnames())
    assert {"variants.json", "variants.md", "variants.png", "a.log", "b.log"} <= names, names
    assert not any(n.startswith("probe_") for n in names), names
    alone = run("24", tmp_path / "alone")
    for doc in (both, alone):
        assert [r["rc"] for r in doc["variants"]] == [0, 0], [r.get("error") for r in doc["variants"]]
        assert all(r["variant"] is not None and "contexts" in r for r in doc["variants"])
    for label in ("a", "b"):
        x = np.load(tmp_path / "both" / f"probe_{label}_24.npy")
        y = np.load(tmp_path / "alone" / f"probe_{label}_24.npy")
        assert np.array_equal(x, y), label
    assert not np.array_equal(np.load(tmp_path / "both" / "probe_a_8.npy")[:8], np.load(tmp_path / "both" / "probe_a_24.npy")[:8])
    assert (tmp_path / "both" / "variants.png").exists()
