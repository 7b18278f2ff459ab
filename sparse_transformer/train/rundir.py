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

from sparse_transformer import schema
from sparse_transformer.data.atomic import refuse_unowned

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None

LOCK = ".lock"
RUN_JSON = "run.json"
# Every name a run writes; run.json's "files" records the ones a run actually uses.
RUN_FILES = schema.RUN_NAMES


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock."""


def read_manifest(run: Path) -> list[str] | None:
    """The names an earlier run of ours wrote in ``run``, or None if it holds no run of ours.

    A run.json that looks like ours (an object with ``train`` and ``model``) is then checked
    strictly (``schema.check_run_info``): its file list may name only what a run writes, so a
    tampered manifest cannot make ``--force`` delete a file of the user's; a bad one is a
    ValueError that names the field."""
    path = run / RUN_JSON
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(info, dict) or not {"train", "model"} <= set(info):
        return None
    info = schema.check_run_info(schema.read_object(path), str(path))
    files = info.get("files")
    return list(RUN_FILES) if files is None else files  # None: before run.json had a list


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
        # O_NOFOLLOW: a .lock planted as a symlink would have us truncate the file it names
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise OSError(err.errno, f"cannot lock {self.path}: {err.strerror}") from None
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
        self._fd = fd
        try:  # the pid only names the owner in a second process's error
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as err:  # a full disk: let go of the lock, say what failed
            self.release()
            raise OSError(err.errno, f"{err.strerror} while writing {self.path}") from None
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


class Claim:
    """A run directory as this process claims it: created if missing, then locked.

    ``undo`` takes back what claiming and starting created, for a run that fails before it
    trains (a full disk, a model that does not fit): the names of ours that were not there
    before, the lock file if it is new, and the folders made for the run, so a failed start
    leaves the disk as it was. What was there before (a resumed run) is never touched.
    """

    def __init__(self, run: Path):
        self.run = run
        self.lock: RunLock | None = None
        self._made: list[Path] = []  # folders we created, innermost first
        self._before: set[str] | None = None  # the names there before the claim

    def acquire(self) -> "Claim":
        p = self.run
        while not p.exists() and not p.is_symlink():
            self._made.append(p)
            p = p.parent
        self.run.mkdir(parents=True, exist_ok=True)
        self._before = {p.name for p in self.run.iterdir()}
        try:
            self.lock = RunLock(self.run).acquire()
        except OSError:  # not RunDirBusy: a lock file we just created is ours to remove
            if LOCK not in self._before:
                (self.run / LOCK).unlink(missing_ok=True)
            raise
        return self

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def undo(self) -> None:
        # files only while we hold the lock: without it (another process's run, a rank that
        # never claimed) what appeared since our listing is not ours
        if self.lock is not None and self._before is not None:
            new = [name for name in RUN_FILES if name not in self._before and name != LOCK]
            remove_files(self.run, [name for name in new if (self.run / name).exists()
                                    or (self.run / name).is_symlink()])
            if LOCK not in self._before:
                # unlinked while still held: a process that opens .lock now makes a new file,
                # and the rmdir below then leaves the directory to it
                (self.run / LOCK).unlink(missing_ok=True)
        self.release()
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # not empty (another process's now, or a user's): leave it
                break
