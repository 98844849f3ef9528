"""The lab's model file (docs/model_format.md): a streaming safetensors writer, a reader, a checker.

Why our own writer: the `safetensors` package can only save a dict of tensors that are all in
memory at once (`save_file`), which for Llama-3.1-8B means holding 16 GB of fp16 plus whatever the
source format needs. `ModelWriter` instead computes the whole header up front from the config (every
tensor's name, shape and offset are known), writes it, then takes tensors one at a time in any order
and `pwrite`s each at its offset. The file is written as `model.bin.tmp-<pid>` and renamed to
`model.bin` only once every tensor is there, so a model dir is valid exactly when model.bin exists.

Reading: `SafetensorsReader` memory-maps any safetensors file (F32, F16, BF16 -> float32 via a bit
shift), one tensor at a time; `check_model_dir` repeats the C++ loader's checks in Python, and
`write_corrupt_variants` makes broken copies of a model for the loaders' error-path tests.
"""

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from lab import hfconfig

FORMAT_VERSION = "1"
PRECISIONS = {"fp32": (np.float32, "F32"), "fp16": (np.float16, "F16")}
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
_LAYER_TENSORS = [  # (suffix, shape as a function of the config numbers), in file order
    ("input_layernorm", lambda d, h, q, kv: [d]),
    ("self_attn.q_proj", lambda d, h, q, kv: [q, d]),
    ("self_attn.k_proj", lambda d, h, q, kv: [kv, d]),
    ("self_attn.v_proj", lambda d, h, q, kv: [kv, d]),
    ("self_attn.o_proj", lambda d, h, q, kv: [d, q]),
    ("post_attention_layernorm", lambda d, h, q, kv: [d]),
    ("mlp.gate_proj", lambda d, h, q, kv: [h, d]),
    ("mlp.up_proj", lambda d, h, q, kv: [h, d]),
    ("mlp.down_proj", lambda d, h, q, kv: [d, h]),
]


def expected_tensors(config: dict) -> dict:
    """{name: shape} of every tensor a model with this (HF-style) config has, in file order."""
    c = hfconfig.normalize_config(config)
    d, h, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q = c["num_attention_heads"] * c["head_dim"]
    kv = c["num_key_value_heads"] * c["head_dim"]
    out = {"model.embed_tokens.weight": [v, d]}
    for i in range(c["num_hidden_layers"]):
        for suffix, shape in _LAYER_TENSORS:
            out[f"model.layers.{i}.{suffix}.weight"] = shape(d, h, q, kv)
    out["model.norm.weight"] = [d]
    if not c["tie_word_embeddings"]:
        out["lm_head.weight"] = [v, d]
    return out


def read_config(model_dir) -> dict:
    """The config.json of a model dir (FileNotFoundError says how to make one)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: prepare the model (bazel run //py:download, //py:convert or //py:synthetic)"
        )
    return json.loads(path.read_text())


def atomic_write_bytes(path, data: bytes) -> None:
    """Writes `path` through a temporary name in the same folder, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def encode_header(header: dict) -> bytes:
    """8-byte little-endian length + JSON padded with spaces so the data starts at a multiple of 8."""
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js


def _pwrite_all(fd: int, buf, offset: int) -> None:
    view = memoryview(buf).cast("B")
    while len(view):  # Linux writes at most ~2 GiB per call
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _remove_stale_temps(out_dir: Path) -> None:
    """Deletes model.bin.tmp-<pid> files of writers that are no longer running."""
    for p in out_dir.glob("model.bin.tmp-*"):
        try:
            os.kill(int(p.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            pass


class ModelWriter:
    """Streams a model into `out_dir/model.bin` (+ config.json); see the module docstring.

    with ModelWriter(out_dir, config, "fp16", source="hf:...") as w:
        for name, array in ...: w.write(name, array)
    # leaving the block without an exception calls close(); with one, deletes the temporary file.
    """

    def __init__(self, out_dir, config: dict, precision: str, source: str = "unknown"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: the lab writes {sorted(PRECISIONS)}")
        self.out_dir = Path(out_dir)
        self.precision = precision
        self.np_dtype, st_dtype = PRECISIONS[precision]
        self.config = hfconfig.normalize_config(config, precision=precision)
        self.shapes = expected_tensors(self.config)
        self.offsets, pos = {}, 0
        header = {"__metadata__": {"format": "pt", "lab_format_version": FORMAT_VERSION, "source": str(source)}}
        for name, shape in self.shapes.items():
            nbytes = int(np.prod(shape)) * np.dtype(self.np_dtype).itemsize
            header[name] = {"dtype": st_dtype, "shape": shape, "data_offsets": [pos, pos + nbytes]}
            self.offsets[name] = pos
            pos += nbytes
        head = encode_header(header)
        self.data_start, self.total_bytes = len(head), len(head) + pos
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.out_dir)
        free = shutil.disk_usage(self.out_dir).free
        if free < self.total_bytes:
            raise OSError(f"{self.out_dir}: {self.total_bytes / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free")
        self.tmp_path = self.out_dir / f"model.bin.tmp-{os.getpid()}"
        self.path = self.out_dir / "model.bin"
        self.written = set()
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self._fd, self.total_bytes)
        _pwrite_all(self._fd, head, 0)

    @property
    def missing(self) -> list:
        return [n for n in self.shapes if n not in self.written]

    def write(self, name: str, array) -> None:
        """Checks `name` and the shape, casts to the file's precision, writes it at its offset."""
        if self._fd is None:
            raise ValueError("ModelWriter is closed")
        if name not in self.shapes:
            raise ValueError(f"unexpected tensor {name!r} for this config")
        if name in self.written:
            raise ValueError(f"tensor {name!r} written twice")
        arr = np.asarray(array)
        if list(arr.shape) != self.shapes[name]:
            raise ValueError(f"tensor {name!r} has shape {list(arr.shape)}, the config needs {self.shapes[name]}")
        if arr.dtype.kind != "f":
            raise ValueError(f"tensor {name!r} has dtype {arr.dtype}; floating point expected")
        if arr.dtype != self.np_dtype:
            with np.errstate(over="ignore"):
                arr = arr.astype(self.np_dtype)
            if not np.isfinite(arr).all():
                raise ValueError(f"tensor {name!r} has values that are not finite in {self.precision}")
        _pwrite_all(self._fd, np.ascontiguousarray(arr), self.data_start + self.offsets[name])
        self.written.add(name)

    def close(self) -> Path:
        """Checks that every tensor was written, fsyncs, writes config.json, renames model.bin into place."""
        if self._fd is None:
            return self.path
        if self.missing:
            raise ValueError(f"{len(self.missing)} tensors never written, e.g. {self.missing[:3]}")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        self.path.unlink(missing_ok=True)  # the dir is invalid (no model.bin) until the rename below
        atomic_write_json(self.out_dir / "config.json", self.config)
        os.replace(self.tmp_path, self.path)
        dfd = os.open(self.out_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return self.path

    def abort(self) -> None:
        """Closes and deletes the temporary file; model.bin (if an older one exists) is untouched."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
        return False


class SafetensorsReader:
    """Memory-maps a safetensors file; `get(name)` returns one tensor (F32/F16 as is, BF16 as float32)."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(n))
        self.metadata = self.header.pop("__metadata__", {}) or {}
        self.data_start = 8 + n
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")

    def names(self) -> list:
        return list(self.header)

    def dtype(self, name: str) -> str:
        return self.header[name]["dtype"]

    def shape(self, name: str) -> list:
        return list(self.header[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        t = self.header[name]
        if t["dtype"] not in _DTYPES:
            raise ValueError(f"{self.path}: tensor {name} has dtype {t['dtype']} (F32, F16 or BF16 expected)")
        b, e = t["data_offsets"]
        raw = self._map[self.data_start + b : self.data_start + e].view(_DTYPES[t["dtype"]]).reshape(t["shape"])
        if t["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw


def check_model_dir(model_dir) -> dict:
    """The C++ loader's checks (cc/core/model_file.cc) in Python; returns the header, raises ValueError."""
    path = Path(model_dir) / "model.bin"
    size = path.stat().st_size
    if size < 8:
        raise ValueError(f"{path}: {size} bytes, too short for a safetensors header")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{path}: header is not valid JSON: {e}") from None
    data_size, dtypes, ranges = size - 8 - n, set(), []
    meta = header.pop("__metadata__", {}) or {}
    for name, t in header.items():
        if t.get("dtype") not in ("F32", "F16"):
            raise ValueError(f"{path}: tensor {name} has dtype {t.get('dtype')}; the lab reads F32 or F16")
        b, e = t["data_offsets"]
        if not 0 <= b <= e <= data_size:
            raise ValueError(f"{path}: tensor {name} offsets [{b}, {e}) fall outside the data region")
        need = int(np.prod(t["shape"])) * (4 if t["dtype"] == "F32" else 2)
        if e - b != need:
            raise ValueError(f"{path}: tensor {name} spans {e - b} bytes but shape {t['shape']} needs {need}")
        dtypes.add(t["dtype"])
        ranges.append((b, e))
    if len(dtypes) > 1:
        raise ValueError(f"{path}: tensors mix dtypes {sorted(dtypes)}")
    ranges.sort()
    if any(r[0] < p[1] for p, r in zip(ranges, ranges[1:])):
        raise ValueError(f"{path}: two tensors overlap in the data region")
    if meta.get("lab_format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: lab_format_version {meta.get('lab_format_version')!r} is not {FORMAT_VERSION}")
    want = expected_tensors(read_config(model_dir))
    for name, shape in want.items():
        if name not in header:
            raise ValueError(f"{path}: missing tensor {name}")
        if header[name]["shape"] != shape:
            raise ValueError(f"{path}: tensor {name} has shape {header[name]['shape']}, config needs {shape}")
    extra = sorted(set(header) - set(want))
    if extra:
        raise ValueError(f"{path}: unexpected tensors {extra[:3]}")
    return header


def _layout(header: dict, blobs: dict) -> dict:
    """Gives every tensor of `header` that has no data_offsets the next free range (header order)."""
    pos = 0
    for n, t in header.items():
        if n != "__metadata__":
            t.setdefault("data_offsets", [pos, pos + len(blobs[n])])
            pos = t["data_offsets"][1]
    return header


def _write_raw(path: Path, header: dict, blobs: dict) -> None:
    """A safetensors file: `header` (laid out where it has no offsets), then its tensors' blobs in order,
    whatever offsets the header claims."""
    _layout(header, blobs)
    path.write_bytes(encode_header(header) + b"".join(blobs[n] for n in header if n != "__metadata__"))


def write_corrupt_variants(model_dir, out_root) -> dict:
    """Broken copies of a valid model dir, one defect each: {defect: dir with config.json + model.bin}.

    Defects: truncated, header_too_long, bad_json, bad_dtype, mixed_dtype, offsets_outside,
    size_mismatch, overlap, bad_version, no_version, missing_tensor, extra_tensor, wrong_shape.
    For the loaders' error-path tests: each must be refused with a clear message (check_model_dir
    and the C++ loader both do). Small models only: the tensors are read into memory.
    """
    src = Path(model_dir) / "model.bin"
    r = SafetensorsReader(src)
    names, raw = r.names(), src.read_bytes()
    blob = {n: r.get(n).tobytes() for n in names}
    dt = r.dtype(names[0])
    out = {}

    def fresh(meta_update=None, drop_meta=()):  # the same header without offsets
        h = {"__metadata__": {k: v for k, v in r.metadata.items() if k not in drop_meta}}
        h["__metadata__"].update(meta_update or {})
        h.update({n: {"dtype": dt, "shape": r.shape(n)} for n in names})
        return h

    def variant(defect, header=None, blobs=blob, data=None):
        d = Path(out_root) / defect
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(model_dir) / "config.json", d / "config.json")
        if data is not None:
            (d / "model.bin").write_bytes(data)
        else:
            _write_raw(d / "model.bin", header, blobs)
        out[defect] = d

    variant("truncated", data=raw[: r.data_start + (len(raw) - r.data_start) // 2])
    variant("header_too_long", data=struct.pack("<Q", len(raw)) + raw[8:])
    variant("bad_json", data=raw[:8] + b"{" * (r.data_start - 8) + raw[r.data_start :])
    h = fresh()
    for n in names:
        h[n]["dtype"] = {"F32": "I32", "F16": "BF16"}[dt]  # same item size, a dtype the lab does not read
    variant("bad_dtype", h)
    mix_dt, mix_np = ("F16", np.float16) if dt == "F32" else ("F32", np.float32)
    h = fresh()
    h[names[0]]["dtype"] = mix_dt
    variant("mixed_dtype", h, dict(blob, **{names[0]: r.get(names[0]).astype(mix_np).tobytes()}))
    h = _layout(fresh(), blob)
    h[names[-1]]["data_offsets"][1] += 64
    variant("offsets_outside", h)
    h = fresh()
    h[names[0]]["shape"] = [r.shape(names[0])[0] + 1] + r.shape(names[0])[1:]
    h[names[0]]["data_offsets"] = [0, len(blob[names[0]])]
    variant("size_mismatch", h)
    h = _layout(fresh(), blob)
    a = next(n for n in names if n.endswith("input_layernorm.weight"))
    b = next(n for n in names if n.endswith("post_attention_layernorm.weight"))
    h[b]["data_offsets"] = list(h[a]["data_offsets"])
    variant("overlap", h)
    variant("bad_version", fresh({"lab_format_version": "2"}))
    variant("no_version", fresh(drop_meta=("lab_format_version",)))
    h = fresh()
    del h[names[1]]
    variant("missing_tensor", h)
    h = fresh()
    h["model.layers.0.extra.weight"] = {"dtype": dt, "shape": r.shape(names[1])}
    variant("extra_tensor", h, dict(blob, **{"model.layers.0.extra.weight": blob[names[1]]}))
    h = fresh()
    gate = next(n for n in names if n.endswith("mlp.gate_proj.weight"))
    h[gate]["shape"] = r.shape(gate)[::-1]
    variant("wrong_shape", h)
    return out
