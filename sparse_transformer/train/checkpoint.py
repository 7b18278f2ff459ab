"""Training checkpoints: what a step folder holds for training, and the RNG states in it.

A run directory holds ``checkpoints/step-XXXXXXXX/`` folders, each with

    model.safetensors   the model's weights (safe to load from anyone)
    config.json         the ModelConfig
    train.json          the training options and data description
    state.pt            optimizer, loss scaler, step, and the RNG and data-generator states
                        of every rank (``rng``: a list in rank order): only tensors, numbers,
                        strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it

and ``checkpoints/latest`` naming the newest folder; ``checkpoints/best`` names the folder
whose validation was the best so far (``train`` keeps it through pruning, so a run that starts
to overfit loses nothing; ``--checkpoint RUN/checkpoints/best`` reads it).

Finding, reading and writing the files is ``model/checkpoint_io.py``'s (shared with
``from_pretrained``): atomic writes, a full disk as one line with the previous checkpoint
intact, pointers confined to step folders beside them, no symlink followed out of the run, and
every file checked (train.json and state.pt by ``schema.py``) before anything uses it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparse_transformer.model import checkpoint_io as io
from sparse_transformer.model.config import ModelConfig


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
def save_checkpoint(run_dir: str | Path, *, model: torch.nn.Module | Mapping[str, torch.Tensor],
                    model_config: ModelConfig, train: dict[str, Any], state: dict[str, Any],
                    keep_last: int = 2, best: bool = False) -> Path:
    """Write ``run_dir/checkpoints/step-XXXXXXXX`` atomically and point ``latest`` at it (and
    ``best`` too when ``best``); then prune to the last ``keep_last``.

    ``model`` is the model or its full state dict (a sharded model's, gathered by
    ``train.sharding.full_state_dicts``). On a full disk: an OSError of one line, the folder
    not written, ``latest`` still naming the previous one.
    """
    root = Path(run_dir) / io.CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = io.step_name(train["step"])
    tensors = model.state_dict() if isinstance(model, torch.nn.Module) else model
    final = io.write_step_folder(root / name, tensors, model_config, train, state)
    io.point(root, io.LATEST, name)
    if best:
        io.point(root, io.BEST, name)
    io.prune(root, keep_last, keep=name)
    return final


def mark_best(run_dir: str | Path, step: int, keep_last: int = 2) -> None:
    """Point ``checkpoints/best`` at the saved folder of ``step``; the folder it named before
    is pruned if it has fallen out of the ``keep_last`` window."""
    root = Path(run_dir) / io.CHECKPOINTS
    name = io.step_name(step)
    if not (root / name).is_dir():
        raise FileNotFoundError(f"{root / name} does not exist")
    io.point(root, io.BEST, name)
    io.prune(root, keep_last, keep=name)


def clean_temporaries(run_dir: str | Path) -> list[str]:
    """Remove what a save killed half way left in ``run_dir/checkpoints``; returns the names.

    Call only while holding the run's lock: a live save of another process looks the same.
    """
    return io.clean_temporaries(Path(run_dir) / io.CHECKPOINTS)


# -- reading -----------------------------------------------------------------------------------
find_checkpoint = io.find_step_folder  # a run, checkpoints/, a step folder or a pointer


def load_train_meta(path: str | Path) -> dict[str, Any]:
    """train.json (options, data, step) of a run's latest checkpoint or of a step folder."""
    return io.read_train(io.find_step_folder(path))


def load_checkpoint(path: str | Path, with_state: bool = True) -> Checkpoint:
    """Read a checkpoint; any damage gives a ValueError naming the bad file."""
    d = io.find_step_folder(path)
    cfg = io.read_config(d)
    train = io.read_train(d)
    weights = io.read_weights(d)
    state = io.read_state(d, train["step"]) if with_state else None
    return Checkpoint(d, cfg, weights, train, state)


def load_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    io.load_into(model, ckpt.weights, ckpt.path)


def load_model(path: str | Path, device: torch.device | str = "cpu"):
    """(SparseTransformer in eval mode on ``device``, Checkpoint) from a run or step folder."""
    from sparse_transformer.model.transformer import SparseTransformer

    ckpt = load_checkpoint(path, with_state=False)
    model = SparseTransformer(ckpt.model_config)
    load_weights(model, ckpt)
    return model.to(device).eval(), ckpt
