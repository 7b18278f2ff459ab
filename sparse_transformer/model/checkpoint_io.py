"""Checkpoint files on disk: the one place that finds, reads and writes them.

Training (``train/checkpoint.py``), ``eval``/``sample``/``report`` and
``from_pretrained``/``save_pretrained`` (``model/pretrained.py``) all go through here, so a
run directory is read by one set of rules and every file we write is written the same way.

Layout of a run directory's checkpoints::

    RUN/checkpoints/step-XXXXXXXX/   model.safetensors, config.json (the ModelConfig), and for
                                     training train.json (options, data) and state.pt
                                     (optimizer, RNG; loadable with weights_only=True)
    RUN/checkpoints/latest           one line: the name of the newest step folder
    RUN/checkpoints/best             one line: the step folder of the best validation

``save_pretrained`` writes a step folder with only the first two files.

**Reading trusts nothing in the files** (a run directory may come from someone else):

- ``latest``/``best`` must name a ``step-XXXXXXXX`` folder beside them, nothing else;
- nothing below the path the caller gave is followed through a symlink: not ``checkpoints/``,
  a pointer, the step folder, or a file in it. A run cannot point a reader at another run's
  weights (``eval`` would print one step and score another) or anywhere else on the disk.
  The path given may itself be a link: that is the caller's choice, not the run's;
- JSON is read strictly (``schema.py``: no NaN/Infinity, no integers beyond 64 bits) and
  checked field by field; ModelConfig checks its own fields; weights must be finite;
- ``state.pt`` is read with ``torch.load(weights_only=True)`` (no code runs) and checked by
  ``schema.check_state``.

Every damage is a ValueError (a missing thing a FileNotFoundError) of one line that names the
folder and the file.

**Writing is atomic and durable**: a file goes to a temporary sibling (``.NAME.tmp-PID``), is
synced to the disk (``os.fsync``) and renamed into place with ``os.replace``, and the folder
holding it is synced after; a step folder is filled under a temporary name and renamed (an
existing folder of the same name is moved aside first and restored if the rename fails).
A reader never sees a half-written file or folder. A failed write removes its temporaries and
raises an OSError of one line ("[Errno 28] No space left on device while writing ..."): neither
safetensors (its own error type) nor torch.save ("unexpected pos ...") say that themselves.
What a process killed mid-write leaves (the temporary names) is removed by
``clean_temporaries`` when the run next starts.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from sparse_transformer import schema
from sparse_transformer.model.config import ModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAIN_NAME = "train.json"
STATE_NAME = "state.pt"
STEP_FILES = (WEIGHTS_NAME, CONFIG_NAME, TRAIN_NAME, STATE_NAME)  # all a step folder holds
CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"
POINTERS = (LATEST, BEST)
STEP_NAME = re.compile(r"step-\d{8}")
# What an interrupted write leaves: ".step-00000004.tmp-123", ".latest.tmp-123", ...
_TEMPORARY = re.compile(r"\.(step-\d{8}\.(tmp|old)|(latest|best)\.tmp)-\d+")


def step_name(step: int) -> str:
    """The folder name of a checkpoint: step 4 -> ``step-00000004``."""
    return f"step-{int(step):08d}"


def _safetensors():
    # imported only to read or write weights: building or running a model does not need it
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError("saving and loading models needs safetensors: "
                          "pip install safetensors") from None
    return safetensors.torch


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# -- finding a step folder -------------------------------------------------------------------
def _refuse_link(path: Path, asked: Path) -> None:
    """A symlink below the path the caller gave leads out of the run: refused."""
    if path.is_symlink():
        raise ValueError(f"checkpoint {asked}: {path} is a symlink (to {os.readlink(path)}); "
                         f"a run cannot point outside itself, so it is not followed")


def find_step_folder(path: str | os.PathLike) -> Path:
    """A step folder, a run directory, its ``checkpoints`` folder, or a pointer file
    (``checkpoints/latest`` or ``checkpoints/best``) -> the step folder to read."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if p.is_file() and p.name in POINTERS:  # RUN/checkpoints/latest or .../best
        return _follow(p.parent, p.name, p)
    if any((p / name).exists() or (p / name).is_symlink() for name in (CONFIG_NAME,
                                                                        WEIGHTS_NAME)):
        return p
    for root in (p / CHECKPOINTS, p):
        if (root / LATEST).exists() or (root / LATEST).is_symlink():
            if root != p:
                _refuse_link(root, p)
            return _follow(root, LATEST, p)
    raise FileNotFoundError(f"{p} holds no checkpoint: neither a step folder ({CONFIG_NAME} + "
                            f"{WEIGHTS_NAME}) nor a run directory ({CHECKPOINTS}/{LATEST})")


def _follow(root: Path, pointer: str, asked: Path) -> Path:
    """The step folder ``root/pointer`` names: only a real step folder directly inside root."""
    _refuse_link(root / pointer, asked)
    name = (root / pointer).read_text(errors="replace").strip()
    if not STEP_NAME.fullmatch(name):
        raise ValueError(f"checkpoint {asked}: {pointer!r} names {name[:80]!r}, not a "
                         f"step-XXXXXXXX folder of {root}")
    target = root / name
    _refuse_link(target, asked)
    if not target.is_dir():
        raise FileNotFoundError(f"checkpoint {asked}: {pointer!r} names {name}, which does "
                                f"not exist")
    return target


def pointed(root: Path, pointer: str) -> str | None:
    """The step folder name ``root/pointer`` holds, or None (missing, a link, not a name)."""
    p = root / pointer
    if p.is_symlink():
        return None
    try:
        name = p.read_text(errors="replace").strip()
    except OSError:
        return None
    return name if STEP_NAME.fullmatch(name) else None


# -- reading ---------------------------------------------------------------------------------
def _member(folder: Path, name: str) -> Path:
    """A file of a step folder, refused if it is a symlink (it would lead outside the run)."""
    path = folder / name
    _refuse_link(path, folder)
    return path


def read_config(folder: Path) -> ModelConfig:
    """The ModelConfig in ``folder/config.json``; every field checked by ModelConfig."""
    path = _member(folder, CONFIG_NAME)
    try:
        # plain json: ModelConfig names the field of a NaN or an Infinity, schema.loads would
        # only say that the file holds one
        return ModelConfig.from_dict(schema.check_model_dict(json.loads(path.read_text())))
    except (OSError, ValueError, TypeError, RecursionError) as err:
        raise ValueError(f"checkpoint {folder}: {CONFIG_NAME} is missing or corrupt "
                         f"({_first_line(err)})") from None


def read_weights(folder: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of ``folder/model.safetensors`` on ``device``, refused unless finite."""
    path = _member(folder, WEIGHTS_NAME)
    try:
        weights = _safetensors().load_file(str(path), device=str(torch.device(device)))
    except Exception as err:  # safetensors raises its own error types, OSError, RuntimeError
        raise ValueError(f"checkpoint {folder}: {WEIGHTS_NAME} is missing or corrupt "
                         f"({_first_line(err)})") from None
    for name, w in weights.items():
        if w.is_floating_point() and not bool(torch.isfinite(w).all()):
            raise ValueError(f"checkpoint {folder}: the weights are not finite (NaN or inf in "
                             f"{name}); the run diverged, use an earlier checkpoint")
    return weights


def read_train(folder: Path) -> dict[str, Any]:
    """``folder/train.json``: read strictly and checked (``schema.check_train_meta``)."""
    path = _member(folder, TRAIN_NAME)
    try:
        return schema.check_train_meta(schema.read_object(path, TRAIN_NAME), TRAIN_NAME)
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {folder}: {TRAIN_NAME} is missing or corrupt "
                         f"({_first_line(err)})") from None


def read_state(folder: Path, step: int) -> dict[str, Any]:
    """``folder/state.pt`` (weights_only: no code runs), checked by ``schema.check_state``
    against train.json's ``step``."""
    path = _member(folder, STATE_NAME)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"checkpoint {folder}: {STATE_NAME} is missing or corrupt "
                         f"({_first_line(err)})") from None
    try:
        return schema.check_state(state, STATE_NAME, step=step)
    except ValueError as err:
        raise ValueError(f"checkpoint {folder}: {err}") from None


def load_into(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], folder: Path) -> None:
    """``model.load_state_dict(weights, strict=True)`` with a one-line error naming the folder."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {folder}: {WEIGHTS_NAME} does not fit the model in "
                         f"{CONFIG_NAME} ({_first_line(err)})") from None


# -- writing ---------------------------------------------------------------------------------
def _disk_error(err: OSError, path: Path) -> OSError:
    """One line that says what failed where: "[Errno 28] No space left on device while
    writing RUN/checkpoints/step-00000004"."""
    code = err.errno or errno.EIO
    out = OSError(code, f"{os.strerror(code)} while writing {path}")
    out.written = path  # write_folder names the file by its final path, not the temporary's
    return out


def _as_os_error(err: BaseException) -> OSError | None:
    """The OSError behind a write error of safetensors or torch.save, if there is one."""
    if isinstance(err, OSError):
        return err
    if isinstance(err.__context__, OSError):  # torch.save into our file: f.write raised it
        return err.__context__
    code = re.search(r"os error (\d+)", str(err))  # safetensors: "... (os error 28)"
    return OSError(int(code.group(1)), "") if code else None


def sync(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to the disk. A rename is atomic but
    not durable: after a power cut it can be on disk before the data it names, so every
    checkpoint file is synced before it is renamed into place and its folder after. Where a
    directory cannot be opened for it (Windows) that part is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write ``path`` atomically and durably: a temporary sibling, synced, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _disk_error(err, path) from None


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, atomically (paths and other objects written as strings)."""
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_weights(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """A safetensors file of ``tensors`` (copied to the CPU, contiguous)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        _safetensors().save_file(cpu, str(path), metadata={"format": "pt"})
        sync(path)
    except Exception as err:
        os_err = _as_os_error(err)
        if os_err is None:
            raise
        raise _disk_error(os_err, path) from None


def write_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` through a file of ours, so a failed write is its OSError."""
    try:
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        os_err = _as_os_error(err)
        if os_err is None:
            raise
        raise _disk_error(os_err, path) from None


def write_folder(final: Path, fill: Callable[[Path], None]) -> Path:
    """Make the folder ``final`` hold what ``fill(tmp)`` writes into a temporary sibling,
    atomically; on any failure the temporary is removed and ``final`` is as it was."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        fill(tmp)
        sync(tmp)  # its entries, before the folder is renamed into place
        if final.exists():
            # a non-empty folder cannot be renamed over: move it aside, put the new one in
            # place, and restore the old one if that fails
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        sync(final.parent)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            written = getattr(err, "written", None)
            inside = written is not None and written.parent == tmp
            raise _disk_error(err, final / written.name if inside else final) from None
        raise
    return final


def write_step_folder(final: Path, weights: Mapping[str, torch.Tensor], config: ModelConfig,
                      train: dict[str, Any] | None = None,
                      state: dict[str, Any] | None = None) -> Path:
    """A step folder: weights and config (what save_pretrained writes), and for training
    train.json and state.pt; atomically (``write_folder``)."""
    def fill(tmp: Path) -> None:
        write_weights(tmp / WEIGHTS_NAME, weights)
        write_json(tmp / CONFIG_NAME, config.to_dict())
        if train is not None:
            write_json(tmp / TRAIN_NAME, train)
        if state is not None:
            write_state(tmp / STATE_NAME, state)

    return write_folder(final, fill)


def point(root: Path, pointer: str, name: str) -> None:
    """Make ``root/pointer`` (latest or best) name the step folder ``name``, atomically."""
    write_text(root / pointer, name + "\n")


def prune(root: Path, keep_last: int, keep: str) -> None:
    """Delete all but the newest ``keep_last`` step folders of ``root`` (0: keep all), never
    ``keep`` or the one ``best`` names. Only folders named exactly ``step-XXXXXXXX`` are ours:
    a user's ``step-00000006.bak`` or a symlink stays."""
    if keep_last <= 0:
        return
    steps = sorted(p for p in root.iterdir()
                   if STEP_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    kept = {keep, pointed(root, BEST)}  # the best folder outlives the keep_last window
    for p in steps[:-keep_last]:
        if p.name not in kept:
            shutil.rmtree(p, ignore_errors=True)


def clean_temporaries(root: Path) -> list[str]:
    """Remove what a write killed half way left in ``root`` (a checkpoints folder); returns
    the names. Call only while holding the run's lock: a live save of another process looks
    the same."""
    removed = []
    for p in root.iterdir() if root.is_dir() else ():
        if _TEMPORARY.fullmatch(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)
