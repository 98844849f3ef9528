"""Hugging Face Llama checkpoint -> the lab's model dir, tensor by tensor; and fetching one from the hub.

`convert_hf_checkpoint` reads config.json and model.safetensors (or the shards listed in
model.safetensors.index.json), bf16/fp16/fp32, one tensor in memory at a time (memory-mapped), and
streams them through `ModelWriter` (atomic: a killed conversion leaves no model.bin). It drops
lm_head.weight when the embeddings are tied and ignores non-weight buffers (rotary_emb.inv_freq).
Tokenizer files are copied to a tokenizer dir when asked.

`fetch_hf_snapshot` downloads what conversion needs with huggingface_hub (resumable, token from
HF_TOKEN or `hf auth login`) and turns hub failures into one clear `DownloadError`.
"""

import json
from pathlib import Path

from lab import hfconfig
from lab.modelfile import ModelWriter, SafetensorsReader, atomic_write_bytes

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", ".masked_bias", ".attn.bias")


class DownloadError(RuntimeError):
    """The hub could not give us the checkpoint; the message says why and what to do."""


def weight_files(hf_dir) -> list:
    """The checkpoint's safetensors files (shards in index order, or the single file)."""
    hf_dir = Path(hf_dir)
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [hf_dir / f for f in dict.fromkeys(weight_map.values())]
    single = hf_dir / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(p.name for p in hf_dir.iterdir()) if hf_dir.is_dir() else "no such directory"
    raise FileNotFoundError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json (found: {found})")


def copy_tokenizer_files(hf_dir, tokenizer_dir) -> list:
    """Copies the tokenizer files present in hf_dir (tokenizer.json last: it marks a complete dir)."""
    hf_dir, tokenizer_dir = Path(hf_dir), Path(tokenizer_dir)
    present = [f for f in TOKENIZER_FILES if (hf_dir / f).exists()]
    if "tokenizer.json" not in present:
        raise FileNotFoundError(f"{hf_dir} has no tokenizer.json (only fast tokenizers are supported)")
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    present.sort(key=lambda f: f == "tokenizer.json")
    for f in present:
        atomic_write_bytes(tokenizer_dir / f, (hf_dir / f).read_bytes())
    return present


def convert_hf_checkpoint(hf_dir, model_dir, precision: str, tokenizer_dir=None, source=None, progress=True) -> Path:
    """Converts the HF checkpoint in hf_dir into model_dir (config.json + model.bin); returns model.bin."""
    from tqdm import tqdm

    hf_dir = Path(hf_dir)
    hf_cfg = json.loads((hf_dir / "config.json").read_text())
    config = hfconfig.normalize_config(hf_cfg, precision=precision)
    files = weight_files(hf_dir)
    with ModelWriter(model_dir, config, precision, source=source or f"hf:{hf_dir.name}") as w:
        bar = tqdm(total=len(w.shapes), desc=f"convert {hf_dir.name} -> {precision}", unit="tensor", disable=not progress)
        for path in files:
            reader = SafetensorsReader(path)
            for name in reader.names():
                if name.endswith(_IGNORED_SUFFIXES) or (name == "lm_head.weight" and config["tie_word_embeddings"]):
                    continue
                w.write(name, reader.get(name))
                bar.update(1)
            del reader
        bar.close()
    if tokenizer_dir is not None:
        copy_tokenizer_files(hf_dir, tokenizer_dir)
    return Path(model_dir) / "model.bin"


def fetch_hf_snapshot(repo_id: str, cache_dir=None, revision=None) -> Path:
    """Downloads config, weights and tokenizer files of `repo_id`; returns the local snapshot dir."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hub_errors

    hint = "set HF_TOKEN or run `hf auth login`"
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS, cache_dir=cache_dir))
    except hub_errors.GatedRepoError as e:
        raise DownloadError(f"{repo_id} is gated: accept its license on huggingface.co, then {hint} ({e})") from e
    except hub_errors.RepositoryNotFoundError as e:
        raise DownloadError(f"{repo_id}: repository not found or not visible to you (private? {hint})") from e
    except hub_errors.OfflineModeIsEnabled as e:
        raise DownloadError(f"{repo_id}: HF_HUB_OFFLINE is set and the files are not in the cache") from e
    except hub_errors.LocalEntryNotFoundError as e:
        raise DownloadError(
            f"{repo_id}: cannot reach huggingface.co and the files are not in the local cache "
            f"(no network, or HF_HUB_OFFLINE=1). Connect and retry: downloads resume where they stopped."
        ) from e
    except (hub_errors.HfHubHTTPError, OSError) as e:
        raise DownloadError(f"{repo_id}: download failed: {e}. Retry to resume.") from e


def download_and_convert(repo_id: str, precision: str, model_dir, tokenizer_dir, cache_dir=None) -> Path:
    """fetch_hf_snapshot + convert_hf_checkpoint; returns model.bin."""
    snap = fetch_hf_snapshot(repo_id, cache_dir=cache_dir)
    return convert_hf_checkpoint(snap, model_dir, precision, tokenizer_dir=tokenizer_dir, source=f"hf:{repo_id}")

