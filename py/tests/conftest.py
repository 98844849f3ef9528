"""Shared pytest set-up: import path outside Bazel, the `gpu` marker, and common fixtures."""

import importlib.util
import sys
from pathlib import Path

import pytest

# Under Bazel, runfiles put `lab` (with the built _engine.so) on the path. Outside it (the GPU bundle,
# plain pytest) the package sits next to tests/: use that, unless `lab` is importable already.
if importlib.util.find_spec("lab") is None:
    sys.path.insert(0, str(Path(__file__).parent.parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped with a reason where none is present")


def gpu_present() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - torch missing or broken means no GPU for us
        return False


def pytest_collection_modifyitems(config, items):
    if gpu_present():
        return
    skip = pytest.mark.skip(reason="GPU test: no CUDA GPU on this machine (run the GPU bundle on a GPU host)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tmp_data_dir(tmp_path_factory):
    """A private LAB_DATA_DIR for tests that prepare models."""
    d = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:  # session scope: the monkeypatch fixture is per test
        mp.setenv("LAB_DATA_DIR", str(d))
        yield d
