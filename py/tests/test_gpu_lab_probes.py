"""The kernel lab's machine probes (cuda/kernels/README.md: "SM rates", "Latency under load", "The
handoff"), run as the GPU bundle ships them:

- sm_rates: every launch puts its blocks on distinct SMs (the precondition of slices chosen by %smid), and
  slices sized by the measured rates end the blocks closer together than equal slices do. The last claim
  is the tool's finding on the H200; it fails if the calibration is wrong (rates inverted or slices
  misplaced make the spread grow), and would fail on a card whose SMs all stream alike.
- latency_under_load: a chase through L2-resident lines is faster than one through 1 GiB of lines (so the
  persisting window and the moving start work), the streaming modes stream, and the idle mode does not.
- handoff_latency: reading a 56 KB vector right after the PDL wait takes longer than a 16 KB one.

Bad arguments are refused with a usage line before any CUDA call, so those tests run on the CPU too.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUNFILES = Path(os.environ.get("TEST_SRCDIR", "/nonexistent")) / "llm_inference_lab"  # under bazel test


def _binary(name: str) -> Path:
    for p in (HERE.parent / "tools" / name,  # the GPU bundle
              RUNFILES / "cuda" / name):  # data = //cuda:<name>
        if p.is_file():
            return p
    pytest.skip(f"{name} is not built here (bazel build //cuda:{name}, or run from the GPU bundle)")


def _result(args, timeout=180):
    p = subprocess.run([str(_binary(args[0])), *args[1:]], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:]), p.stdout


@pytest.mark.gpu
def test_sm_rates_calibrated_slices_end_together():
    r, out = _result(["sm_rates", "117", "24"])
    assert r["distinct"] is True
    assert r["sms"] > 0 and r["mb"] > 100
    for v in ("equal", "by_smid", "calibrated"):
        assert r[v]["us"] > 0 and r[v]["spread_us"] >= 0, r
    assert r["calibrated"]["spread_us"] < r["equal"]["spread_us"], out


@pytest.mark.gpu
def test_latency_under_load_sets_and_modes():
    r, out = _result(["latency_under_load", "500"])
    assert r["l2"]["idle"][0] < r["hbm"]["idle"][0], out
    for s in ("l2", "hbm"):
        assert r[s]["idle"][1] == 0, out
        for m in ("remote_ldg", "remote_tma", "half_tma"):
            assert r[s][m][0] > 0 and r[s][m][1] > 100, (s, m, out)  # GB/s: the other SMs stream


@pytest.mark.gpu
def test_handoff_latency_grows_with_the_vector():
    """Every SM reading the same vector right after the PDL wait: a 56 KB vector takes longer than a 16 KB
    one, with the writers streaming first and PDL on (the kernel lab's finding, "The handoff")."""
    def phase(k):
        r, out = _result(["handoff_latency", str(k), "8"])
        assert r["k"] == k and len(r["rows"]) == 8 and all(x["phase_us"] > 0 for x in r["rows"]), out
        assert sorted(x["flags"] for x in r["engine"]) == [0, 4, 5, 6, 7, 12, 21], out  # the engine-like readers
        assert all(x["phase_us"] > 0 for x in r["engine"]), out
        # the last block's staged stamp minus the first release bounds every block's own phase, so its median
        # over pairs bounds the median of the blocks' mean, up to a tick of %globaltimer (256 ns on the H200),
        # since "last" takes its two stamps on two SMs (first run: 0.768 against a mean of 0.801)
        assert all(0 < x["last_us"] and x["last_us"] >= x["phase_us"] - 0.3 for x in r["engine"]), out
        assert all(1 <= x["most"] and 1 <= x["sms"] <= 256 for x in r["engine"]), out
        return next(x["phase_us"] for x in r["rows"] if x["stream"] and x["pdl"] and not x["untouched"])
    assert phase(14336) > phase(4096)


@pytest.mark.parametrize("args", [["sm_rates", "0"], ["sm_rates", "117", "2"], ["sm_rates", "1", "2", "3"],
                                  ["latency_under_load", "5"], ["latency_under_load", "100", "1"],
                                  ["handoff_latency", "100"], ["handoff_latency", "4096", "2"]])
def test_bad_arguments_refused(args):
    p = subprocess.run([str(_binary(args[0])), *args[1:]], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and f"usage: {args[0]}" in p.stderr, (args, p.stderr)
