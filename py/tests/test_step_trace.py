"""cuda/gpu_opt/step_trace.py's host side (its traces need a GPU): the tables rendered from a trace's json,
the split of the step's time beyond its bytes, and --from_json on the command line."""

import json
import subprocess
import sys

import pytest

import repo_script

SCRIPT = repo_script.REPO / "cuda" / "gpu_opt" / "step_trace.py"
KINDS = ["qkv", "attention", "o_proj", "gate_up", "down", "lm_head"]


@pytest.fixture(scope="module")
def st():
    return repo_script.load(SCRIPT.relative_to(repo_script.REPO))


def trace(busy, ideal, drain, step_us, ceiling=4000.0):
    """A trace dict as step_trace.py writes it, from per-kind busy, ideal and drain times (us)."""
    rows = []
    for k, b, i, dr in zip(KINDS, busy, ideal, drain):
        mb = i * ceiling * 1e-3  # MB read in i us at the ceiling
        rows.append({"kind": k, "launches": 32.0, "MB": mb, "busy_us": b, "drain_us": dr, "pre_us": 1.0, "ideal_us": i,
                     "busy_gbps": mb * 1e3 / b, "staged_us": 2.0, "spread_us": 0.75, "tail_us": b / 10, "sms": 64.0})
    return {"model_dir": "/m/synthetic", "context": 512, "tokens": 64, "ceiling_gbps": ceiling, "ceiling_how": "test",
            "variant": "v", "rows": rows, "step_s": step_us * 1e-6, "wall_s": 5e-3, "per_step": {}}


def test_losses_split_the_step_beyond_its_bytes(st):
    busy, ideal, drain = [40, 30, 20, 100, 60, 10], [35, 5, 19, 90, 50, 9], [3, 2, 1, 4, 2, 1]
    d = trace(busy, ideal, drain, step_us=sum(busy) + sum(drain) + 2.5)
    loss = dict(st.losses(d))
    assert loss["attention beyond its bytes"] == pytest.approx(25)
    assert loss["gate_up beyond its bytes"] == pytest.approx(10)
    assert loss["drains between kernels"] == pytest.approx(13)
    assert loss["the rest of the step"] == pytest.approx(2.5)
    # the parts add up to the step less its bytes at the ceiling
    assert sum(loss.values()) == pytest.approx(d["step_s"] * 1e6 - sum(ideal))


def test_render_tables(st):
    d = trace([40, 30, 20, 100, 60, 10], [35, 5, 19, 90, 50, 9], [3, 2, 1, 4, 2, 1], step_us=273)
    md = "\n".join(st.render(d))
    assert "| attention | 32 | 20.0 | 30.0 | 5.0 |" in md  # kind, launches, MB, busy, at the ceiling
    assert "| 2.00 | 0.75 | 3.0 | 64 |" in md  # attention's first phase, ends spread, tail (a tenth of its busy), SMs
    assert "**273.0 us**" in md and "= 76.2% of the step" in md  # 208 us of bytes in 273
    share = [line for line in md.splitlines() if line.startswith("| attention beyond its bytes")]
    assert share == ["| attention beyond its bytes | 25.0 | 38.5% |"]  # 25 of 65
    assert "| the rest of the step | 0.0 | 0.0% |" in md  # 273 = busy 260 + drains 13, not "-0.0"
    assert "an engine of" not in md and "date not recorded" in md  # fields an older json lacks
    for r in d["rows"]:  # a trace from before the SM marks, and one from before the spread and tail marks too
        del r["sms"]
    assert "| 2.00 | 0.75 | 3.0 | — |" in "\n".join(st.render(d))
    for r in d["rows"]:
        del r["spread_us"], r["tail_us"]
    assert "| 2.00 | — | — | — |" in "\n".join(st.render(d))
    d.update(max_context=2500, date="2026-11-28 18:56 UTC")
    md = "\n".join(st.render(d))
    assert "an engine of 2500 positions" in md and "(2026-11-28 18:56 UTC)" in md


def test_rows_from_a_split_and_a_fused_step(st):
    """The rows come from the kinds that launched: gate_up and down in a split step, mlp (their bytes together)
    in a fused one (LAB_GPU_MLP=fused); per launch, the first phase and the spread are the sums over launches."""
    cfg = {"dim": 64, "hidden_dim": 256, "head_dim": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 100}
    nbytes = st.bytes_per_step(cfg, 8)
    assert nbytes["mlp"] == nbytes["gate_up"] + nbytes["down"] == 2 * 2 * 3 * 64 * 256

    def per(kinds):
        p = {}
        for k in st.KINDS:
            n = 2.0 if k in kinds else 0.0
            p.update({f"{k}.{x}": n * 1e-6 for x in ("busy", "drain", "pre", "staged", "spread", "tail", "sms")})
            p[f"{k}.launches"] = n
        return p

    split = st.rows_from(per({"qkv", "attention", "o_proj", "gate_up", "down", "lm_head"}), nbytes, 4000.0)
    assert [r["kind"] for r in split] == ["qkv", "attention", "o_proj", "gate_up", "down", "lm_head"]
    fused = st.rows_from(per({"qkv", "attention", "o_proj", "mlp", "lm_head"}), nbytes, 4000.0)
    assert [r["kind"] for r in fused] == ["qkv", "attention", "o_proj", "mlp", "lm_head"]
    mlp = fused[3]
    assert mlp["MB"] == pytest.approx(nbytes["mlp"] / 1e6) and mlp["busy_us"] == pytest.approx(2.0)
    assert mlp["staged_us"] == pytest.approx(1e-6 * 1e6) and mlp["ideal_us"] == pytest.approx(nbytes["mlp"] / 4e12 * 1e6)
    old = {k: v for k, v in per({"qkv", "attention", "o_proj", "gate_up", "down", "lm_head"}).items()
           if not k.startswith("mlp.")}  # an engine from before session 24
    assert [r["kind"] for r in st.rows_from(old, nbytes, 4000.0)] == [r["kind"] for r in split]


def test_from_json_on_the_command_line(tmp_path):
    d = trace([40, 30, 20, 100, 60, 10], [35, 5, 19, 90, 50, 9], [3, 2, 1, 4, 2, 1], step_us=273)
    src = tmp_path / "in.json"
    src.write_text(json.dumps(d))
    p = subprocess.run([sys.executable, str(SCRIPT), "--from_json", str(src), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "| drains between kernels | 13.0 | 20.0% |" in (tmp_path / "o" / "step_trace.md").read_text()
    assert json.loads((tmp_path / "o" / "step_trace.json").read_text()) == d
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "o2")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "--model_dir or --from_json" in p.stderr
