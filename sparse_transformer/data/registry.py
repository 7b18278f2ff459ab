"""Named data sets and sample writers.

A prepared data set is a directory (by default ``./data/<name>/``) holding

    train.bin valid.bin test.bin   uint8 streams (bytes, sub-pixels, mu-law samples)
    meta.json                      {"name", "kind": "text"|"image"|"audio", "record_size"
                                    (bytes per example, images only), "shape" [H, W, C]
                                    (images), "sample_rate" (audio), "source", "license",
                                    "sizes": {"train": n, "valid": n, "test": n}}

Modules register what they can prepare:

    register_dataset("wiki", prepare_wiki, help="...")
    # prepare_fn(out_dir: Path, *, source: str | None, cache_dir: Path) -> None
    #   writes the files above, best through ``write_splits``; ``source`` is the user's
    #   ``--path`` (a local file) or None; ``cache_dir`` holds downloads.

and how samples of a kind are written:

    register_writer("text", write_text)
    # writer(samples: np.ndarray uint8 [S, N], path: str | None, meta: dict) -> list[str]
    #   path None means stdout (text) or a default name; returns the files written.

Text lives in ``data/text.py``; images and audio (``data/images.py``, ``data/audio.py``) are
imported here if present and register themselves.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    prepare: Callable[..., None]
    help: str


DATASETS: dict[str, DatasetEntry] = {}
WRITERS: dict[str, Callable[..., list[str]]] = {}
_LOADED = False


def register_dataset(name: str, prepare_fn: Callable[..., None], help: str = "") -> None:
    """Make ``sparse-transformer prepare NAME`` and ``--data NAME`` know a data set."""
    DATASETS[name] = DatasetEntry(name, prepare_fn, help)


def register_writer(kind: str, fn: Callable[..., list[str]]) -> None:
    """Register how samples of ``kind`` ("text", "image", "audio") are written."""
    WRITERS[kind] = fn


def load_builtin() -> None:
    """Import the modules that register data sets (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    importlib.import_module("sparse_transformer.data.text")
    for mod in ("sparse_transformer.data.images", "sparse_transformer.data.audio"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:  # a missing dependency inside the module is a real error
                raise


def datasets() -> dict[str, DatasetEntry]:
    load_builtin()
    return DATASETS


def get_writer(kind: str) -> Callable[..., list[str]]:
    load_builtin()
    if kind not in WRITERS:
        raise ValueError(f"no sample writer for data kind {kind!r}; known: {', '.join(WRITERS)}")
    return WRITERS[kind]


def prepare(name: str, out_dir: str | Path | None = None, *, source: str | None = None,
            cache_dir: str | Path | None = None, root: str | Path = "data") -> Path:
    """Prepare the registered data set ``name`` into ``out_dir`` (default ``root/name``)."""
    entries = datasets()
    if name not in entries:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(entries))}")
    out = Path(out_dir) if out_dir is not None else Path(root) / name
    cache = Path(cache_dir) if cache_dir is not None else Path(root) / ".cache"
    out.mkdir(parents=True, exist_ok=True)
    entries[name].prepare(out, source=source, cache_dir=cache)
    if not (out / "meta.json").is_file():
        raise RuntimeError(f"preparing {name!r} wrote no meta.json in {out}")
    return out


def _atomic_write_bytes(path: Path, data: bytes | np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.tobytes() if isinstance(data, np.ndarray) else data)
    os.replace(tmp, path)


def write_splits(out_dir: str | Path, *, name: str, kind: str, train, valid, test,
                 **meta) -> dict:
    """Write ``{train,valid,test}.bin`` (uint8) and ``meta.json`` atomically; returns meta.

    meta.json is written last, so a directory with a meta.json is a complete data set.
    """
    if kind not in ("text", "image", "audio"):
        raise ValueError(f"kind must be text, image or audio, got {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, data in zip(SPLITS, (train, valid, test)):
        arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray,
                                                                       memoryview)) else data
        arr = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)
        _atomic_write_bytes(out / f"{split}.bin", arr)
        sizes[split] = int(arr.size)
    full = {"name": name, "kind": kind, **meta, "sizes": sizes}
    _atomic_write_bytes(out / "meta.json", json.dumps(full, indent=2).encode())
    return full


def split_by_position(n: int, fractions=(0.90, 0.05, 0.05)) -> tuple[slice, slice, slice]:
    """Slices of a length-n stream cut 90/5/5 by position (train first, as Enwik8)."""
    n_train = int(n * fractions[0])
    n_valid = int(n * fractions[1])
    return slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, n)
