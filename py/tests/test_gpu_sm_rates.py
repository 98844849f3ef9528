"""GPU test of cuda/kernels/sm_rates (the kernel lab's per-SM streaming rates): it runs on the card, every
launch puts its blocks on distinct SMs (the precondition of slices chosen by %smid), and slices sized by
the measured rates end the blocks closer together than equal slices do. The last claim is the tool's
finding on the H200 (cuda/kernels/README.md, "SM rates"); it fails if the calibration is wrong (rates
inverted or slices misplaced make the spread grow), and would fail on a card whose SMs all stream alike.
Bad arguments are refused with a usage line, before any CUDA call (so that test runs on the CPU too)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUNFILES = Path(os.environ.get("TEST_SRCDIR", "/nonexistent")) / "llm_inference_lab"  # under bazel test


def _binary() -> Path:
    for p in (os.environ.get("LAB_SM_RATES", ""), HERE.parent / "tools" / "sm_rates",  # the GPU bundle
              RUNFILES / "cuda" / "sm_rates"):  # data = //cuda:sm_rates
        if p and Path(p).is_file():
            return Path(p)
    pytest.skip("sm_rates is not built here (bazel build //cuda:sm_rates, or run from the GPU bundle)")


@pytest.mark.gpu
def test_calibrated_slices_end_together():
    p = subprocess.run([str(_binary()), "117", "24"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert r["distinct"] is True
    assert r["sms"] > 0 and r["mb"] > 100
    for v in ("equal", "by_smid", "calibrated"):
        assert r[v]["us"] > 0 and r[v]["spread_us"] >= 0, r
    assert r["calibrated"]["spread_us"] < r["equal"]["spread_us"], p.stdout


@pytest.mark.parametrize("args", [["0"], ["117", "2"], ["1", "2", "3"]])
def test_bad_arguments_refused(args):
    p = subprocess.run([str(_binary()), *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "usage: sm_rates" in p.stderr, (args, p.stderr)
