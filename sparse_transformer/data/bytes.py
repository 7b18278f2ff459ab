"""Byte streams through memory maps: resolve ``--data``, draw training windows, list eval windows.

Every modality is a uint8 stream (paper 3: text bytes, sub-pixels, 8-bit mu-law audio). Images
are fixed-size records (``record_size`` bytes = one image); their windows start on a record
boundary so positions line up with the (row, column, channel) embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sparse_transformer.data.registry import SPLITS, datasets, prepare, split_by_position
from sparse_transformer.schema import check_data_meta, read_object


@dataclass
class ByteData:
    """A prepared data set: one uint8 memory map per split plus its metadata."""

    name: str
    meta: dict
    splits: dict[str, np.ndarray] = field(repr=False)
    path: Path | None = None  # absolute: the prepared directory or the raw file

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "text")

    @property
    def record_size(self) -> int | None:
        return self.meta.get("record_size")

    def split(self, name: str) -> np.ndarray:
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return self.splits[name]


def _memmap(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"data file {path} is empty")
    return np.memmap(path, dtype=np.uint8, mode="r")


def open_prepared(directory: str | Path) -> ByteData:
    """Open a prepared directory (train/valid/test.bin + meta.json)."""
    d = Path(directory)
    try:  # strict JSON, and every field the loaders use typed and in range (schema.py)
        meta = check_data_meta(read_object(d / "meta.json"), str(d / "meta.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{d} has no meta.json; prepare it first") from None
    splits = {s: _memmap(d / f"{s}.bin") for s in SPLITS}
    sizes = meta.get("sizes")
    for s, arr in splits.items():
        # a size that disagrees means a damaged copy (or a preparation killed mid-commit)
        if isinstance(sizes, dict) and isinstance(sizes.get(s), int) and sizes[s] != arr.size:
            raise ValueError(f"{d / (s + '.bin')} has {arr.size} bytes, meta.json says "
                             f"{sizes[s]}; prepare the data set again")
    return ByteData(meta.get("name", d.name), meta, splits, d.resolve())


def open_raw_file(path: str | Path) -> ByteData:
    """Any file as raw bytes, split 90/5/5 by position (no copy: slices of one memory map)."""
    p = Path(path)
    data = _memmap(p)
    if data.size < 100:
        raise ValueError(f"data file {p} has only {data.size} bytes; need at least 100")
    tr, va, te = split_by_position(data.size)
    meta = {"name": p.name, "kind": "text", "source": str(p.resolve()),
            "sizes": {"train": tr.stop, "valid": va.stop - va.start, "test": te.stop - te.start}}
    return ByteData(p.name, meta, {"train": data[tr], "valid": data[va], "test": data[te]},
                    p.resolve())


def resolve_data(spec: str, root: str | Path = "data", prepare_missing: bool = True) -> ByteData:
    """``--data`` argument -> ByteData.

    A registered name ("wiki", ...) opens ``root/name`` and prepares it first if missing; a
    directory with meta.json is a prepared data set; any other file is raw bytes (90/5/5).
    """
    p = Path(spec)
    if p.is_dir():
        return open_prepared(p)
    if p.is_file():
        return open_raw_file(p)
    entries = datasets()
    if spec in entries:
        d = Path(root) / spec
        if not (d / "meta.json").is_file():
            if not prepare_missing:
                raise FileNotFoundError(f"data set {spec!r} is not prepared in {d}; prepare it "
                                        f"with: sparse-transformer prepare {spec} --root {root}")
            prepare(spec, d, root=root)
        return open_prepared(d)
    raise FileNotFoundError(
        f"--data {spec!r} is neither a file, a prepared directory nor a known data set "
        f"({', '.join(sorted(entries))})"
    )


def check_fits(data: np.ndarray, n_ctx: int, what: str) -> None:
    if data.size < n_ctx:
        raise ValueError(f"{what} has {data.size} bytes, fewer than the context n_ctx={n_ctx}")


def window_starts(n_bytes: int, n_ctx: int, batch: int, generator: torch.Generator,
                  record_size: int | None = None) -> torch.Tensor:
    """Random window starts [batch]: any offset, or a record boundary when records are images."""
    if record_size:
        # whole records only: a window of k images starts on an image boundary
        if n_ctx % record_size:
            raise ValueError(f"n_ctx ({n_ctx}) must be a multiple of the record size "
                             f"({record_size} bytes per example)")
        last = n_bytes // record_size - n_ctx // record_size
        return torch.randint(last + 1, (batch,), generator=generator) * record_size
    return torch.randint(n_bytes - n_ctx + 1, (batch,), generator=generator)


def random_batch(data: np.ndarray, n_ctx: int, batch: int, generator: torch.Generator,
                 record_size: int | None = None) -> torch.Tensor:
    """LongTensor [batch, n_ctx] of random windows of ``data`` (drawn with ``generator``)."""
    starts = window_starts(data.size, n_ctx, batch, generator, record_size)
    rows = np.stack([np.asarray(data[s:s + n_ctx]) for s in starts.tolist()])
    return torch.from_numpy(rows.astype(np.int64))


def byte_log_frequencies(data: np.ndarray, max_bytes: int = 1 << 26) -> torch.Tensor:
    """Float32 [256]: log relative frequency of each byte value in (the first ``max_bytes``
    of) ``data``, with half a count added to every value so none is -inf."""
    counts = np.bincount(np.asarray(data[:max_bytes]), minlength=256).astype(np.float64) + 0.5
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def eval_windows(n_bytes: int, n_ctx: int, min_context: int = 0) -> list[tuple[int, int]]:
    """(start, first scored position) of each window so every byte is scored exactly once.

    The first window scores all of its positions; each later window slides by
    ``n_ctx - min_context`` and scores only its last ``n_ctx - min_context`` positions, so every
    byte after the first window is predicted from at least ``min_context`` earlier bytes (the
    paper's minimum-context evaluation, Table 3). A final window flush with the end scores the
    remaining tail. ``min_context = 0`` gives plain non-overlapping windows.
    """
    if not 0 <= min_context < n_ctx:
        raise ValueError(f"min_context must be in [0, n_ctx={n_ctx}), got {min_context}")
    if n_bytes < n_ctx:
        raise ValueError(f"{n_bytes} bytes are fewer than one window of n_ctx={n_ctx}")
    out = [(0, 0)]
    covered = n_ctx
    while covered < n_bytes:
        start = min(covered - min_context, n_bytes - n_ctx)
        out.append((start, covered - start))
        covered = start + n_ctx
    return out
