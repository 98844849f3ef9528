"""Opening engines: the one place Python code creates a C++/CUDA engine from a model directory."""

from pathlib import Path

from lab import _engine

ModelFormatError = _engine.ModelFormatError
DeviceError = _engine.DeviceError
DEFAULT_MAX_CONTEXT = 4096


def engine_names() -> list:
    return list(_engine.engine_names())


def open_engine(engine: str, model_dir, max_context: int = 0) -> "_engine.Engine":
    """Creates `engine` on the model in `model_dir`.

    max_context: KV-cache length; 0 picks min(config's max_position_embeddings, DEFAULT_MAX_CONTEXT).
    Raises FileNotFoundError for a missing model, ModelFormatError for a bad one, DeviceError
    for GPU problems, ValueError for a bad engine name or context.
    """
    model_dir = Path(model_dir)
    for f in ("config.json", "model.bin"):
        if not (model_dir / f).exists():
            raise FileNotFoundError(
                f"{model_dir / f} not found: prepare the model first (bazel run //py:download, //py:convert "
                f"or //py:synthetic), or run //py:inference with no model flags for the embedded default"
            )
    if max_context <= 0:
        cfg = _engine.parse_config((model_dir / "config.json").read_text())
        max_context = min(cfg["max_position_embeddings"], DEFAULT_MAX_CONTEXT)
    return _engine.Engine(engine, str(model_dir), max_context)
