"""cuda/kernels/plot_probes.py (the lab probes' plots, drawn from their logs on any machine): the parsers
read the probes' tables back exactly, refuse a log without them, and the command writes both PNGs."""

import subprocess
import sys

import pytest

import repo_script

SCRIPT = repo_script.REPO / "cuda" / "kernels" / "plot_probes.py"


@pytest.fixture(scope="module")
def pp():
    return repo_script.load(SCRIPT.relative_to(repo_script.REPO))


def sm_rates_log(values, card="NVIDIA H200"):
    rows = "".join("  " + " ".join(f"{v:.3f}" for v in values[i:i + 16]) + "\n" for i in range(0, len(values), 16))
    return (f"sm_rates: {card}, {len(values)} SMs, 234 MB in 8192-byte pieces, 60 launches a variant\n"
            "blocks on distinct SMs in every launch: yes\nrelative time by SM id:\n" + rows +
            "alternating, 60 launches each (median (min-max)):\n")


HANDOFF = """handoff_latency: NVIDIA H200, 132 SMs, x of 1024 floats, 40 pairs a row
writers  reader reads  PDL      phase us       pre us     drain us
stream   their x       yes          0.34        57.71         0.77
stream   their x       no           0.34         0.00         1.54
idle     their x       yes          0.45         0.00         3.33
handoff_latency: NVIDIA H200, 132 SMs, x of 14336 floats, 40 pairs a row
writers  reader reads  PDL      phase us       pre us     drain us
stream   their x       yes          2.37         4.08         0.77
stream   untouched     yes          2.32         3.97         0.77
"""


def test_sm_rates_table_read_back(pp):
    values = [1.0 + 0.001 * (i % 7) for i in range(132)]
    values[20] = values[21] = 0.78
    card, mb, got = pp.parse_sm_rates(sm_rates_log(values))
    assert (card, mb) == ("NVIDIA H200", 234)
    assert got == pytest.approx(values, abs=5e-4)
    with pytest.raises(ValueError, match="no sm_rates table"):
        pp.parse_sm_rates("sm_rates: NVIDIA H200, 132 SMs, 234 MB\n", "x.log")
    with pytest.raises(ValueError, match="131 SM times for 132 SMs"):
        pp.parse_sm_rates(sm_rates_log(values[:131]).replace("131 SMs", "132 SMs"), "x.log")


def test_handoff_rows_by_series(pp):
    s = pp.parse_handoff(HANDOFF)
    assert s[(True, False)] == [(4.0, 0.34), (56.0, 2.37)]  # KB, us; streaming writers only
    assert s[(False, False)] == [(4.0, 0.34)]
    assert s[(True, True)] == [(56.0, 2.32)]
    with pytest.raises(ValueError, match="no handoff_latency rows"):
        pp.parse_handoff("nothing here", "h.log")


def test_command_writes_both_plots(tmp_path):
    (tmp_path / "a.log").write_text(sm_rates_log([1.0] * 100 + [0.8] * 32))
    (tmp_path / "h.log").write_text(HANDOFF)
    p = subprocess.run([sys.executable, str(SCRIPT), "--sm_rates", str(tmp_path / "a.log"), "--handoff",
                        str(tmp_path / "h.log"), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    for name in ("sm_rates.png", "handoff.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    bad = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "o2")], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "at least one of --sm_rates, --handoff" in bad.stderr
