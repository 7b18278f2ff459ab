"""Write a prepared data-set directory so that it appears whole or not at all.

A prepared data set is a directory with ``train.bin``, ``valid.bin``, ``test.bin`` (uint8 byte
streams) and ``meta.json``. Preparation can fail half way (a corrupt batch file, a silent audio
track, Ctrl-C), so everything is written into a hidden sibling directory first and renamed onto
the target only after the last byte and the metadata are on disk; an older prepared copy is
replaced only then.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

__all__ = ["SPLITS", "PreparedWriter", "prepared_writer"]

SPLITS = ("train", "valid", "test")


class PreparedWriter:
    """Open split files in a temporary directory; ``write(split, data)`` appends bytes."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.files: dict[str, BinaryIO] = {s: open(tmp / f"{s}.bin", "wb") for s in SPLITS}
        self.nbytes = {s: 0 for s in SPLITS}
        self.meta: dict[str, Any] = {}

    def write(self, split: str, data) -> None:
        """Append a bytes-like object (e.g. a C-contiguous uint8 ndarray) to ``split``."""
        if split not in self.files:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        view = memoryview(data).cast("B")
        self.files[split].write(view)
        self.nbytes[split] += view.nbytes

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


@contextlib.contextmanager
def prepared_writer(out_dir: str | Path) -> Iterator[PreparedWriter]:
    """Context manager: yields a PreparedWriter; on success writes meta.json and renames.

    Set ``writer.meta`` inside the block; ``sizes`` (bytes per split, as in
    `sparse_transformer.data.registry`) is added. Every split must be
    non-empty, since training and evaluation need all three. On any exception the temporary
    directory is removed and ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a data set is meant to be shared
    writer = None
    try:
        writer = PreparedWriter(tmp)
        yield writer
        writer.close()
        empty = [s for s in SPLITS if writer.nbytes[s] == 0]
        if empty:
            raise ValueError(f"{out_dir.name}: split(s) {', '.join(empty)} would be empty; "
                             "give more input data")
        meta = dict(writer.meta)
        meta["sizes"] = dict(writer.nbytes)
        with open(tmp / "meta.json", "w") as fh:
            json.dump(meta, fh, indent=2)
            fh.write("\n")
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if writer is not None:
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
