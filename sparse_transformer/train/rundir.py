"""A run directory has one owner and holds nothing we might delete by mistake.

Ownership of the files: ``run.json`` lists every name this library writes in the directory
(``files``). Starting a run again (``force``) removes exactly those names; anything else in the
directory (a user's notes, their own metrics.csv in a directory that was never a run) is left
alone. A non-empty directory without our run.json is refused unless ``force``, and even then a
file of the user's that has the name of one of ours is refused rather than replaced.

Ownership of the process: ``RunLock`` holds an exclusive ``flock`` on ``RUN/.lock`` while a
process trains. The kernel drops a flock when its process ends, however it ends (even
``kill -9``), so a lock file left by a dead process is stale by construction and is simply
taken over; the pid written inside only names the owner in the error a second process gets.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sparse_transformer.data.atomic import refuse_unowned

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None

LOCK = ".lock"
RUN_JSON = "run.json"
# Every name a run writes; run.json's "files" records the ones a run actually uses.
RUN_FILES = ("checkpoints", "metrics.csv", "loss.png", RUN_JSON, "summary.json", "tensorboard",
             LOCK)


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock."""


def read_manifest(run: Path) -> list[str] | None:
    """The names an earlier run of ours wrote in ``run``, or None if it holds no run of ours."""
    try:
        info = json.loads((run / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not {"train", "model"} <= set(info):
        return None
    files = info.get("files")
    if isinstance(files, list) and all(isinstance(f, str) and "/" not in f for f in files):
        return files
    return list(RUN_FILES)  # written before run.json carried a manifest


def check_start(run: Path, *, resume: bool, force: bool) -> list[str]:
    """Refuse to start where we would lose something; returns the names to remove first.

    Read-only, so it can run before any work and again once the lock is held.
    """
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} is a file, not a run directory")
    if resume:
        if not (run / "checkpoints").is_dir():
            raise FileNotFoundError(f"--resume: {run} holds no checkpoint to resume")
        return []
    present = sorted(p.name for p in run.iterdir()) if run.is_dir() else []
    present = [name for name in present if name != LOCK]
    if not present:
        return []
    manifest = read_manifest(run)
    if manifest is not None:
        if not force:
            raise ValueError(f"{run} already holds a run; pass --resume to continue it or "
                             f"--force to start it again")
        return [name for name in manifest if name != LOCK and (run / name).exists()]
    refuse_unowned(run, present, RUN_FILES, force, "run", "--out")
    return []


def remove_files(run: Path, names: list[str]) -> None:
    """Delete the named entries of ``run`` (names from our own manifest, never the lock)."""
    for name in names:
        if name == LOCK or "/" in name or name in ("", ".", ".."):
            continue
        p = run / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


class RunLock:
    """Exclusive lock on a run directory for the life of one training process."""

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self.path = self.run / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None:  # pragma: no cover
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirBusy(f"{self.run} is in use by another training process (pid {owner}); "
                             f"wait for it to end or stop it") from None
        except OSError as err:  # e.g. a file system without locks: say so, do not guess
            os.close(fd)
            raise OSError(f"cannot lock {self.path}: {err.strerror}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: unlinking a lock file lets a waiter and a newcomer lock two inodes.
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
