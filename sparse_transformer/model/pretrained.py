"""Save and load a model as ``config.json`` + ``model.safetensors``: a checkpoint step folder.

    model.save_pretrained("my-model")                          # my-model/config.json + weights
    SparseTransformer.from_pretrained("my-model")              # a step folder
    SparseTransformer.from_pretrained("runs/demo")             # a run: its checkpoints/latest
    SparseTransformer.from_pretrained("runs/demo/checkpoints/best")

A training run (``sparse-transformer train``) writes ``checkpoints/step-XXXXXXXX/`` folders in
this layout (plus train.json and state.pt, which loading ignores). Loading reads only JSON and
safetensors, so it never executes code from the files (a pickle could). Finding the folder,
reading and writing it are ``model/checkpoint_io.py``'s, the same rules training and the
command line use: a pointer names only a step folder beside it, no symlink below the path you
give is followed (a run cannot point the loader outside itself), and writes are atomic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

from sparse_transformer.model import checkpoint_io as io
from sparse_transformer.model.config import ModelConfig

M = TypeVar("M", bound=nn.Module)


def read_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[ModelConfig, dict[str, torch.Tensor], Path]:
    """(config, weights on ``map_location``, step folder) of a saved model; JSON + safetensors."""
    folder = io.find_step_folder(path)
    return io.read_config(folder), io.read_weights(folder, map_location), folder


def load_pretrained(build: Callable[[ModelConfig], M], path: str | os.PathLike,
                    device: str | torch.device | None = None,
                    map_location: str | torch.device = "cpu") -> M:
    """``build(config)`` with the saved weights, in eval mode, on ``device`` (default:
    ``map_location``, where safetensors reads the tensors)."""
    cfg, weights, folder = read_pretrained(path, map_location)
    model = build(cfg)
    io.load_into(model, weights, folder)
    return model.to(map_location if device is None else device).eval()


def save_pretrained(model: nn.Module, config: ModelConfig, path: str | os.PathLike, *,
                    overwrite: bool = False) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors`` atomically; return ``path``.

    An existing non-empty folder is refused unless ``overwrite``, which replaces the whole
    folder (so no file of an older model stays beside the new weights), and only a folder
    that holds nothing but a checkpoint's files: a run directory, or a folder with a file of
    yours in it, is refused even then.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise FileExistsError(f"{path} exists and is not a folder")
        present = sorted(p.name for p in path.iterdir())
        if present and not overwrite:
            raise FileExistsError(f"{path} is not empty; pass overwrite=True to replace it")
        foreign = [name for name in present
                   if name not in io.STEP_FILES or (path / name).is_symlink()]
        if foreign:
            raise FileExistsError(
                f"{path} holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}, "
                f"which save_pretrained did not write; overwrite=True replaces only a saved "
                f"model's folder (choose another path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return io.write_step_folder(path, model.state_dict(), config)
