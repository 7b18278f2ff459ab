"""Write a prepared data-set directory whole, and never delete a file this library did not write.

A prepared data set is a directory with ``train.bin``, ``valid.bin``, ``test.bin`` (uint8 byte
streams) and ``meta.json``, whose ``files`` lists those names: the manifest of what we wrote.

Preparation can fail half way (a corrupt batch file, a silent audio track, Ctrl-C), so
everything is written into a hidden temporary directory first and moved onto the target only
after the last byte and the metadata are on disk (``commit``):

- a missing target is created by one rename;
- a target that holds a data set of ours gets our files replaced, meta.json last, and every
  other file in it left alone;
- an empty target is filled;
- a non-empty target that is not ours is refused unless ``force``; with ``force`` our files are
  added beside the user's, and a user's file with the name of one of ours is still refused.

``check_target`` applies the same rules without writing, so a command can refuse before it
downloads or decodes anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

__all__ = ["DATA_FILES", "SPLITS", "PreparedWriter", "check_target", "commit",
           "prepared_writer", "read_manifest", "staging_dir"]

SPLITS = ("train", "valid", "test")
META = "meta.json"
DATA_FILES = tuple(f"{s}.bin" for s in SPLITS) + (META,)


def read_manifest(directory: Path) -> list[str] | None:
    """The files a preparation of ours wrote in ``directory``, or None if it is not ours."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    files = meta.get("files")
    if isinstance(files, list) and all(isinstance(f, str) and "/" not in f for f in files):
        return files
    if "kind" in meta and "sizes" in meta:
        return list(DATA_FILES)  # prepared before meta.json carried a manifest
    return None


def check_target(out_dir: str | Path, force: bool = False) -> list[str]:
    """Refuse a target that preparing would damage; returns the names ours replaces there."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a directory for a data set")
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not present:
        return []
    manifest = read_manifest(out)
    if manifest is not None:
        return [name for name in manifest if name in present]
    refuse_unowned(out, present, DATA_FILES, force, "prepared data set", "directory")
    return []


def refuse_unowned(directory: Path, present: list[str], our_names, force: bool, holds: str,
                   instead: str) -> None:
    """A non-empty ``directory`` with no manifest of ours: refused without ``force``; with it,
    a file there named like one of ours (``our_names``) is the user's and is refused too."""
    if not force:
        raise ValueError(f"{directory} is not empty and holds no {holds}; choose another "
                         f"{instead} or pass --force (files not written by sparse-transformer "
                         f"are kept)")
    clash = [name for name in our_names if name in present]
    if clash:
        raise ValueError(f"{directory / clash[0]} was not written by sparse-transformer; move it "
                         f"away or choose another {instead}")


def commit(src: Path, out_dir: str | Path, force: bool = False) -> None:
    """Move the complete data set in ``src`` onto ``out_dir`` by the rules above; ``src`` goes."""
    out = Path(out_dir)
    old = check_target(out, force)
    new = read_manifest(src)
    if new is None:  # pragma: no cover - src is always written by prepared_writer
        raise RuntimeError(f"{src} is not a complete data set")
    if not out.exists():
        os.rename(src, out)
        return
    for name in new:
        if name != META:
            os.replace(src / name, out / name)
    # meta.json last: until it lands, open_prepared sees sizes that do not match and refuses
    os.replace(src / META, out / META)
    for name in old:
        if name not in new:  # a file an older version of ours wrote and this one does not
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    shutil.rmtree(src, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(out_dir: str | Path) -> Iterator[Path]:
    """A fresh path with the same name as ``out_dir`` inside a hidden sibling folder, removed
    on exit: a preparer writes there, and the caller commits it onto ``out_dir`` itself."""
    out = Path(out_dir)
    with _parents_of(out):
        parent = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        try:
            yield parent / out.name
        finally:
            shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def _parents_of(path: Path) -> Iterator[None]:
    """Create the missing parent folders of ``path``; remove them again if the block fails,
    so a refused or failed preparation leaves no empty ``data/`` behind."""
    made = []
    p = path.parent
    while not p.exists():
        made.append(p)
        p = p.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for d in made:  # innermost first; stop at the first that is not empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


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
def prepared_writer(out_dir: str | Path, force: bool = False) -> Iterator[PreparedWriter]:
    """Context manager: yields a PreparedWriter; on success writes meta.json and commits.

    Set ``writer.meta`` inside the block; ``sizes`` (bytes per split, as in
    `sparse_transformer.data.registry`) and ``files`` (the manifest) are added. Every split
    must be non-empty, since training and evaluation need all three. The target is checked
    on entry, before the block does its work; on any exception the temporary directory is
    removed and ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir)
    check_target(out_dir, force)
    with _parents_of(out_dir):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a data set is meant to be shared
        writer = None
        try:
            writer = PreparedWriter(tmp)
            yield writer
            writer.close()
            empty = [s for s in SPLITS if writer.nbytes[s] == 0]
            if empty:
                raise ValueError(f"{out_dir.name}: split(s) {', '.join(empty)} would be "
                                 "empty; give more input data")
            meta = dict(writer.meta)
            meta["sizes"] = dict(writer.nbytes)
            meta["files"] = list(DATA_FILES)
            with open(tmp / META, "w") as fh:
                json.dump(meta, fh, indent=2)
                fh.write("\n")
            commit(tmp, out_dir, force)
        except BaseException:
            if writer is not None:
                writer.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
