"""A tool that runs from the repository by its path (not a package module), imported by a test."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load(rel_path):
    """The module of the script at REPO/rel_path, executed once."""
    path = REPO / rel_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
