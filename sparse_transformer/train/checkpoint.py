"""Checkpoints: safetensors weights + JSON configs + a weights_only-loadable training state.

A run directory holds ``checkpoints/step-XXXXXXXX/`` folders, each with

    model.safetensors   the model's weights (safe to load from anyone)
    config.json         the ModelConfig
    train.json          the training options and data description
    state.pt            optimizer, loss scaler, step, and the RNG and data-generator states
                        of every rank (``rng``: a list in rank order): only tensors, numbers,
                        strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it

and ``checkpoints/latest`` naming the newest folder; ``checkpoints/best`` names the folder
whose validation was the best so far (``train`` keeps it through pruning, so a run that starts
to overfit loses nothing; ``--checkpoint RUN/checkpoints/best`` reads it). A folder is written under a temporary
name and renamed into place, and ``latest`` is replaced with ``os.replace``, so an interrupted
save never leaves a half-written checkpoint where a reader looks; the temporary names a kill
leaves behind are removed by ``clean_temporaries`` when the run next starts.

Reading trusts nothing in the folder: ``latest`` must name a step folder beside it, the JSON
files must hold objects, and weights that are not finite are refused.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparse_transformer.model.config import ModelConfig

LATEST = "latest"
BEST = "best"
POINTERS = (LATEST, BEST)  # files in checkpoints/ that name a step folder beside them
_STEP_NAME = re.compile(r"step-\d{8}")
_TEMPORARY = (".step-*.tmp-*", ".step-*.old-*", f".{LATEST}.tmp-*", f".{BEST}.tmp-*")


@dataclass
class Checkpoint:
    path: Path
    model_config: ModelConfig
    weights: dict[str, torch.Tensor]
    train: dict[str, Any]
    state: dict[str, Any] | None

    @property
    def step(self) -> int:
        return int(self.train.get("step", 0))


# -- RNG state as weights_only-safe values ---------------------------------------------------
def rng_state(generator: torch.Generator | None = None,
              device: torch.device | None = None) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain values.

    A CUDA ``device``: that GPU's state only (a rank under torchrun touches only its own GPU;
    reading every GPU's state would make each rank a context on all of them). Without one:
    every GPU's state, as a list.
    """
    np_state = np.random.get_state()
    py_version, py_ints, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_ints, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    elif device is None and torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        out["data"] = generator.get_state()
    return out


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None,
                  device: torch.device | None = None) -> None:
    """Restore what ``rng_state`` saved (one GPU's state goes to ``device``)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if isinstance(state["cuda"], torch.Tensor):
            torch.cuda.set_rng_state(state["cuda"], device if device is not None else "cuda")
        else:
            torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "data" in state:
        generator.set_state(state["data"])


def rank_rng_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The RNG states of a saved training state, one per rank (an older single dict: one)."""
    rng = state["rng"]
    return [rng] if isinstance(rng, dict) else list(rng)


# -- writing -----------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))


def save_checkpoint(run_dir: str | Path, *, model: torch.nn.Module | Mapping[str, torch.Tensor],
                    model_config: ModelConfig, train: dict[str, Any], state: dict[str, Any],
                    keep_last: int = 2, best: bool = False) -> Path:
    """Write ``run_dir/checkpoints/step-XXXXXXXX`` atomically and point ``latest`` at it (and
    ``best`` too when ``best``).

    ``model`` is the model or its full state dict (a sharded model's, gathered by
    ``train.sharding.full_state_dicts``).
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(train['step']):08d}"
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = model.state_dict() if isinstance(model, torch.nn.Module) else model
    weights = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _write_json(tmp / "config.json", model_config.to_dict())
    _write_json(tmp / "train.json", train)
    torch.save(state, tmp / "state.pt")
    if final.exists():  # re-saving the same step of this run (after a resume)
        old = root / f".{name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    point(root, LATEST, name)
    if best:
        point(root, BEST, name)
    _prune(root, keep_last, keep=name)
    return final


def point(root: Path, pointer: str, name: str) -> None:
    """Make ``root/pointer`` (latest or best) name the step folder ``name``, atomically."""
    tmp = root / f".{pointer}.tmp-{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / pointer)


def mark_best(run_dir: str | Path, step: int, keep_last: int = 2) -> None:
    """Point ``checkpoints/best`` at the saved folder of ``step``; the folder it named before
    is pruned if it has fallen out of the ``keep_last`` window."""
    root = Path(run_dir) / "checkpoints"
    name = f"step-{int(step):08d}"
    if not (root / name).is_dir():
        raise FileNotFoundError(f"{root / name} does not exist")
    point(root, BEST, name)
    _prune(root, keep_last, keep=name)


def clean_temporaries(run_dir: str | Path) -> list[str]:
    """Remove what a save killed half way left in ``run_dir/checkpoints``; returns the names.

    Call only while holding the run's lock: a live save of another process looks the same.
    """
    root = Path(run_dir) / "checkpoints"
    removed = []
    for pattern in _TEMPORARY:
        for p in root.glob(pattern):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


def _prune(root: Path, keep_last: int, keep: str) -> None:
    if keep_last <= 0:
        return
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    kept = {keep, _pointed(root, BEST)}  # the best folder outlives the keep_last window
    for p in steps[:-keep_last]:
        if p.name not in kept:
            shutil.rmtree(p, ignore_errors=True)


def _pointed(root: Path, pointer: str) -> str | None:
    try:
        name = (root / pointer).read_text(errors="replace").strip()
    except OSError:
        return None
    return name if _STEP_NAME.fullmatch(name) else None


# -- reading -----------------------------------------------------------------------------------
def find_checkpoint(path: str | Path) -> Path:
    """A run directory, its ``checkpoints`` folder, a ``step-*`` folder, or the pointer file
    ``checkpoints/latest`` / ``checkpoints/best`` -> the step folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if p.is_file() and p.name in POINTERS:
        return _follow(p.parent, p.name, p)
    if (p / "model.safetensors").exists() or (p / "config.json").exists():
        return p
    for root in (p / "checkpoints", p):
        if (root / LATEST).is_file():
            return _follow(root, LATEST, p)
    raise FileNotFoundError(f"{p} holds no checkpoint (no model.safetensors or checkpoints/latest)")


def _follow(root: Path, pointer: str, asked: Path) -> Path:
    name = (root / pointer).read_text(errors="replace").strip()
    # only a step folder beside it: a pointer must not lead a reader anywhere else
    if not _STEP_NAME.fullmatch(name):
        raise ValueError(f"checkpoint {asked}: {pointer!r} names {name[:80]!r}, not a "
                         f"step-XXXXXXXX folder of {root}")
    target = root / name
    if not target.is_dir() or target.is_symlink():
        raise ValueError(f"checkpoint {asked}: {pointer!r} points at missing {name}")
    return target


def load_train_meta(path: str | Path) -> dict[str, Any]:
    """train.json (options, data, step) of a run's latest checkpoint or of a step folder."""
    d = find_checkpoint(path)
    try:
        return _read_object(d / "train.json")
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {d}: train.json is missing or corrupt ({err})") from None


def load_checkpoint(path: str | Path, with_state: bool = True) -> Checkpoint:
    """Read a checkpoint; any damage gives a ValueError naming the bad file."""
    d = find_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(_read_object(d / "config.json"))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {d}: config.json is missing or corrupt ({err})") from None
    try:
        train = _read_object(d / "train.json")
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint {d}: train.json is missing or corrupt ({err})") from None
    try:
        weights = load_file(str(d / "model.safetensors"))
    except (OSError, SafetensorError, RuntimeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"checkpoint {d}: model.safetensors is missing or corrupt ({msg})"
                         ) from None
    for name, w in weights.items():
        if w.is_floating_point() and not bool(torch.isfinite(w).all()):
            raise ValueError(f"checkpoint {d}: the weights are not finite (NaN or inf in "
                             f"{name}); the run diverged, use an earlier checkpoint")
    state = None
    if with_state:
        try:
            state = torch.load(d / "state.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling errors come in many types
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"checkpoint {d}: state.pt is missing or corrupt ({msg})") from None
    return Checkpoint(d, cfg, weights, train, state)


def _read_object(path: Path) -> dict:
    obj = json.loads(path.read_text())
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, found a {type(obj).__name__}")
    return obj


def load_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    try:
        model.load_state_dict(ckpt.weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {ckpt.path}: weights do not fit the model "
                         f"({str(err).splitlines()[0]})") from None


def load_model(path: str | Path, device: torch.device | str = "cpu"):
    """(SparseTransformer in eval mode on ``device``, Checkpoint) from a run or step folder."""
    from sparse_transformer.model.transformer import SparseTransformer

    ckpt = load_checkpoint(path, with_state=False)
    model = SparseTransformer(ckpt.model_config)
    load_weights(model, ckpt)
    return model.to(device).eval(), ckpt
