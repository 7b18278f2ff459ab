"""Save and load a model as ``config.json`` + ``model.safetensors``: a checkpoint step folder.

    model.save_pretrained("my-model")                          # my-model/config.json + weights
    SparseTransformer.from_pretrained("my-model")              # a step folder
    SparseTransformer.from_pretrained("runs/demo")             # a run: its checkpoints/latest

A training run (``sparse-transformer train``) writes ``checkpoints/step-XXXXXXXX/`` folders in
this layout (plus train.json and state.pt, which loading ignores) and a ``checkpoints/latest``
file naming the newest one. Loading reads only JSON and safetensors, so it never executes code
from the files (a pickle could). ``latest`` must name a folder directly inside ``checkpoints``:
a path, ``..`` or a symlink leading elsewhere is refused, so a run directory cannot point the
loader outside itself.

Saving writes a temporary sibling folder and renames it into place with ``os.replace``, so a
reader never sees a half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from sparse_transformer.model.config import ModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"  # the step folder of the best validation so far (train keeps it)

M = TypeVar("M", bound=nn.Module)


def _safetensors():
    # safetensors is needed only to save or load weights, not to build or run a model.
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError("saving and loading models needs safetensors: "
                          "pip install safetensors") from None
    return safetensors.torch


def _is_step_folder(p: Path) -> bool:
    return (p / CONFIG_NAME).is_file() or (p / WEIGHTS_NAME).is_file()


def _follow_latest(root: Path, pointer: str = LATEST) -> Path:
    """The step folder ``root/pointer`` (latest or best) names, refused unless it lies
    directly inside root."""
    name = (root / pointer).read_text().strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{root / pointer} must name a folder inside {root}, got {name!r}")
    target = root / name
    if target.resolve().parent != root.resolve():  # a symlink out of the run directory
        raise ValueError(f"{root / pointer} names {name!r}, which leads outside {root}")
    if not target.is_dir():
        raise FileNotFoundError(f"{root / pointer} names {name!r}, which does not exist")
    return target


def resolve_pretrained(path: str | os.PathLike) -> Path:
    """A step folder, a run directory or its ``checkpoints`` folder -> the step folder to load."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if p.is_file() and p.name in (LATEST, BEST):  # RUN/checkpoints/latest or .../best
        return _follow_latest(p.parent, p.name)
    if _is_step_folder(p):
        return p
    for root in (p / CHECKPOINTS, p):
        if (root / LATEST).is_file():
            return _follow_latest(root)
    raise FileNotFoundError(f"{p} is neither a step folder ({CONFIG_NAME} + {WEIGHTS_NAME}) "
                            f"nor a run directory ({CHECKPOINTS}/{LATEST})")


def read_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[ModelConfig, dict[str, torch.Tensor], Path]:
    """(config, weights on ``map_location``, step folder) of a saved model; JSON + safetensors."""
    folder = resolve_pretrained(path)
    try:
        cfg = ModelConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    except (OSError, ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{folder / CONFIG_NAME} is missing or not a model config ({err})"
                         ) from None
    st = _safetensors()
    try:
        weights = st.load_file(str(folder / WEIGHTS_NAME), device=str(torch.device(map_location)))
    except Exception as err:  # safetensors raises its own error types, OSError, RuntimeError
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{folder / WEIGHTS_NAME} is missing or corrupt ({msg})") from None
    return cfg, weights, folder


def load_pretrained(build: Callable[[ModelConfig], M], path: str | os.PathLike,
                    device: str | torch.device | None = None,
                    map_location: str | torch.device = "cpu") -> M:
    """``build(config)`` with the saved weights, in eval mode, on ``device`` (default:
    ``map_location``, where safetensors reads the tensors)."""
    cfg, weights, folder = read_pretrained(path, map_location)
    model = build(cfg)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{folder / WEIGHTS_NAME} does not fit the model in {CONFIG_NAME} "
                         f"({str(err).splitlines()[0]})") from None
    return model.to(map_location if device is None else device).eval()


def save_pretrained(model: nn.Module, config: ModelConfig, path: str | os.PathLike, *,
                    overwrite: bool = False) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors`` atomically; return ``path``.

    An existing non-empty folder is refused unless ``overwrite``, which replaces the whole
    folder (so no file of an older model stays beside the new weights).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder")
        if not overwrite and any(path.iterdir()):
            raise FileExistsError(f"{path} is not empty; pass overwrite=True to replace it")
    st = _safetensors()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        st.save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(config.to_json() + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() and any(path.iterdir()):
        # A non-empty folder cannot be renamed over: move it aside, put the new one in place,
        # and restore the old one if that fails.
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)  # an absent or empty folder is replaced atomically
    return path
