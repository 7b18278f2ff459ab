"""Named data sets and sample writers.

A prepared data set is a directory (by default ``./data/<name>/``) holding

    train.bin valid.bin test.bin   uint8 streams (bytes, sub-pixels, mu-law samples)
    meta.json                      {"name", "kind": "text"|"image"|"audio", "record_size"
                                    (bytes per example, images only), "shape" [H, W, C]
                                    (images), "sample_rate" (audio), "source", "license",
                                    "sizes": {"train": n, "valid": n, "test": n},
                                    "files": the names this library wrote there}

``prepare`` never deletes a file it did not write (``data/atomic.py`` has the rules).

Modules register what they can prepare:

    register_dataset("wiki", prepare_wiki, help="...")
    # prepare_fn(out_dir: Path, *, source: str | None, cache_dir: Path) -> None
    #   writes the files above into the fresh directory out_dir, best through
    #   ``write_splits``; ``source`` is the user's ``--path`` (a local file) or None;
    #   ``cache_dir`` holds downloads.

and how samples of a kind are written:

    register_writer("text", write_text_samples)
    # writer(samples: np.ndarray uint8 [S, N], path: str | None, meta: dict, *,
    #        force: bool = False) -> list[str]
    #   path None means stdout (text) or a default name; an existing file is refused unless
    #   force; returns the files written.

Text lives in ``data/text.py``; images and audio (``data/images.py``, ``data/audio.py``) are
imported here if present and register themselves.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sparse_transformer.data.atomic import (
    DATA_FILES,
    SPLITS,
    check_target,
    commit,
    prepared_writer,
    staging_dir,
)


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
    importlib.import_module("sparse_transformer.data.text100m")
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
            cache_dir: str | Path | None = None, root: str | Path = "data",
            force: bool = False) -> Path:
    """Prepare the registered data set ``name`` into ``out_dir`` (default ``root/name``).

    A directory that already holds a data set of ours is prepared again (our files replaced,
    others kept). A non-empty directory that is not ours is refused unless ``force``, before
    anything is downloaded or decoded.
    """
    entries = datasets()
    if name not in entries:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(entries))}")
    out = Path(out_dir) if out_dir is not None else Path(root) / name
    cache = Path(cache_dir) if cache_dir is not None else Path(root) / ".cache"
    check_target(out, force)
    # The preparer writes into a fresh directory; moving its files onto ``out`` is ours, so a
    # preparer cannot delete anything there (a registered one may write files directly).
    with staging_dir(out) as stage:
        stage.mkdir()
        entries[name].prepare(stage, source=source, cache_dir=cache)
        try:
            meta = json.loads((stage / "meta.json").read_text())
        except (OSError, ValueError):
            raise RuntimeError(f"preparing {name!r} wrote no valid meta.json") from None
        if not isinstance(meta, dict):
            raise RuntimeError(f"preparing {name!r} wrote a meta.json that is not an object")
        if "files" not in meta:
            meta["files"] = sorted(p.name for p in stage.iterdir())
        meta["baselines"] = split_baselines(stage, meta)
        (stage / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        commit(stage, out, force)
    return out


def split_baselines(directory: Path, meta: dict, log=print) -> dict[str, dict[str, float]]:
    """The compressor baselines (``sparse_transformer.baselines``) of the whole valid and test
    splits in ``directory``, PPMd given the train split as context."""
    from sparse_transformer.baselines import baselines

    shape = tuple(meta["shape"]) if meta.get("kind") == "image" and meta.get("shape") else None
    train = (directory / "train.bin").read_bytes()
    if train:
        log(f"baselines: PPMd with the {len(train):,} train bytes as context, xz, bz2, zlib"
            f"{', PNG' if shape else ''} on valid and test ...")
    out = {}
    for split in ("valid", "test"):
        data = (directory / f"{split}.bin").read_bytes()
        if data:
            out[split] = {k: round(v, 4) for k, v in
                          baselines(data, context=train, image_shape=shape, log=log).items()}
    return out


def write_splits(out_dir: str | Path, *, name: str, kind: str, train, valid, test,
                 force: bool = False, **meta) -> dict:
    """Write ``{train,valid,test}.bin`` (uint8) and ``meta.json`` as one commit; returns meta.

    meta.json is written last, so a directory with a meta.json is a complete data set; the
    rules for an existing ``out_dir`` are those of ``data.atomic.prepared_writer``.
    """
    if kind not in ("text", "image", "audio"):
        raise ValueError(f"kind must be text, image or audio, got {kind!r}")
    with prepared_writer(out_dir, force) as w:
        for split, data in zip(SPLITS, (train, valid, test)):
            arr = np.frombuffer(data, dtype=np.uint8) if isinstance(
                data, (bytes, bytearray, memoryview)) else data
            w.write(split, np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1))
        w.meta = {"name": name, "kind": kind, **meta}
    return {**w.meta, "sizes": dict(w.nbytes), "files": list(DATA_FILES)}


def split_by_position(n: int, fractions=(0.90, 0.05, 0.05)) -> tuple[slice, slice, slice]:
    """Slices of a length-n stream cut 90/5/5 by position (train first, as Enwik8)."""
    n_train = int(n * fractions[0])
    n_valid = int(n * fractions[1])
    return slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, n)
