"""Starting a run: everything it checks before it touches its directory, then the claim.

``check_start`` refuses, before any write: a run directory we would damage (``rundir``), a
damaged or tampered checkpoint (``model/checkpoint_io.py``, ``schema.py``), a resume that
would change the model, the number of processes or the optimizer's layout, a resume with
nothing left to do (a finished run: refused; one whose final evaluation was stopped: only that
evaluation), a budget below what the run has already trained, data the model cannot use, a disk
without room for one checkpoint.

``claim_run_dir`` then creates and locks the directory (rank 0) and checks again under the
lock: the directory, and that the checkpoint is still the one checked (another process may
have trained the run in between).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparse_transformer import schema
from sparse_transformer.data.bytes import ByteData, check_fits, resolve_data
from sparse_transformer.model import checkpoint_io as io
from sparse_transformer.model.config import ModelConfig
from sparse_transformer.model.size import param_count
from sparse_transformer.model.transformer import SparseTransformer
from sparse_transformer.train import distributed as D
from sparse_transformer.train import rundir as R
from sparse_transformer.train.checkpoint import (
    Checkpoint,
    clean_temporaries,
    load_checkpoint,
    rank_rng_states,
)
from sparse_transformer.train.config import TrainConfig
from sparse_transformer.train.metrics import truncate_metrics
from sparse_transformer.train.schedule import param_groups

SUMMARY = "summary.json"


@dataclass
class Start:
    """What the checks found: the run's checkpoint (on resume), model config and data."""

    run: Path
    ckpt: Checkpoint | None
    mcfg: ModelConfig
    data: ByteData
    eval_only: bool  # a resumed run whose training is done but whose final evaluation is not
    manifest: list[str] | None  # the names a resumed run wrote (run.json's files)
    seen: tuple[Path, int] | None  # the checkpoint checked: (folder, train.json's mtime)


def check_start(cfg: TrainConfig, info: D.DistInfo) -> Start:
    """Every check a run can fail before its directory is touched (see the module doc)."""
    run = Path(cfg.out)
    R.check_start(run, resume=cfg.resume, force=cfg.force)
    if cfg.shard and not info.enabled:
        raise ValueError("--shard needs several processes: launch with torchrun "
                         "--nproc_per_node N (N >= 2)")
    cfg.speed_options(info.device.type, info.world_size)  # --cuda-graphs without CUDA
    ckpt = load_checkpoint(run) if cfg.resume else None
    eval_only, manifest, seen = False, None, None
    if ckpt:
        check_resume(cfg, ckpt)
        check_resume_processes(cfg, ckpt, info)
        check_resume_optimizer(cfg, ckpt)
    mcfg = ckpt.model_config if ckpt else ModelConfig.from_preset(cfg.preset, **cfg.model)
    if cfg.eval_bytes and cfg.eval_bytes < mcfg.n_ctx:
        raise ValueError(f"--eval-bytes must be 0 (all) or at least n_ctx={mcfg.n_ctx}, "
                         f"got {cfg.eval_bytes}")
    if info.is_main:
        check_disk(run, mcfg, cfg.keep_last)
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError("--tensorboard needs tensorboard", name="tensorboard")

    # data: a new run's rank 0 prepares a missing named data set; a resumed run never does
    if info.is_main:
        data = resolve_data(cfg.data, cfg.data_root, prepare_missing=not cfg.resume)
    D.barrier(info)
    if not info.is_main:
        data = resolve_data(cfg.data, cfg.data_root, prepare_missing=False)
    check_data(data, mcfg)
    if ckpt:  # last: a bad option or missing data is the more useful message
        eval_only = resume_left(cfg, ckpt, run)
        manifest = R.read_manifest(run)  # a tampered run.json refused now, not after a write
        seen = (ckpt.path, (ckpt.path / io.TRAIN_NAME).stat().st_mtime_ns)
    return Start(run, ckpt, mcfg, data, eval_only, manifest, seen)


def claim_run_dir(cfg: TrainConfig, info: D.DistInfo, start: Start) -> R.Claim:
    """Rank 0 creates and locks the run directory, then makes it ready: the checks again (now
    that no other process can change it), an earlier run's files removed (``force``), a
    killed save's leftovers cleaned, metrics.csv cut back to the checkpoint (resume). A failure
    here takes back what the claim created."""
    D.barrier(info)
    claim = R.Claim(start.run)
    if info.is_main:
        try:
            claim.acquire()
            R.remove_files(start.run, R.check_start(start.run, resume=cfg.resume,
                                                    force=cfg.force))
            if start.seen is not None:
                _check_unchanged(start)
            clean_temporaries(start.run)
            if start.ckpt is not None:
                truncate_metrics(start.run / "metrics.csv", start.ckpt.step)
        except BaseException:
            claim.undo()
            raise
    D.barrier(info)
    return claim


def _check_unchanged(start: Start) -> None:
    """The latest checkpoint must still be the one checked: a training process that held the
    lock until a moment ago may have saved another (we would resume from a stale one)."""
    folder, mtime = start.seen
    try:
        same = io.find_step_folder(start.run) == folder and \
            (folder / io.TRAIN_NAME).stat().st_mtime_ns == mtime
    except (OSError, ValueError):
        same = False
    if not same:
        raise RuntimeError(f"--resume: {start.run} changed while it was being checked (another "
                           f"process trained it); run the command again")


def check_resume(cfg: TrainConfig, ckpt: Checkpoint) -> None:
    """A resumed run keeps its model: a different preset or a changed field is refused."""
    saved = ckpt.train.get("options") if isinstance(ckpt.train.get("options"), dict) else {}
    preset = saved.get("preset")
    if preset and cfg.preset != preset:
        raise ValueError(f"--resume: {cfg.out} is a {preset!r} run; --preset {cfg.preset!r} "
                         f"conflicts (leave --preset out)")
    current = ckpt.model_config.to_dict()
    for key, value in cfg.model.items():
        if key not in current:
            raise ValueError(f"--set {key}: ModelConfig has no field {key!r}")
        try:
            wanted = ModelConfig.from_dict({**current, key: value}).to_dict()[key]
        except (ValueError, TypeError):
            wanted = value
        if wanted != current[key]:
            raise ValueError(f"--resume cannot change the model: --set {key}={value!r} "
                             f"conflicts with the run's {current[key]!r} (leave --set out)")


def check_resume_processes(cfg: TrainConfig, ckpt: Checkpoint, info: D.DistInfo) -> None:
    """Exact resume restores each rank's RNG and data position, so it needs as many
    processes as saved them, and the optimizer state's layout (``--shard`` or not)."""
    saved = len(rank_rng_states(ckpt.state))
    if saved != info.world_size:
        how = ("in one process (without torchrun)" if saved == 1
               else f"with torchrun --nproc_per_node {saved}")
        raise ValueError(f"--resume: {cfg.out} was trained by {saved} process"
                         f"{'es' if saved > 1 else ''}, this is {info.world_size}; resume it "
                         f"{how}")
    sharded = bool(ckpt.state.get("shard", False))
    if sharded != cfg.shard:
        raise ValueError(f"--resume: {cfg.out} was trained {'with' if sharded else 'without'} "
                         f"--shard; resume it {'with' if sharded else 'without'} --shard")


def check_resume_optimizer(cfg: TrainConfig, ckpt: Checkpoint) -> None:
    """The saved optimizer state must have this version's parameter groups (runs saved before
    the output matrix got its own group have two, not three): refused before any work."""
    saved = ckpt.state.get("optimizer", {}).get("param_groups")
    with torch.device("meta"):  # the groups' sizes only: no memory, no initialisation cost
        model = SparseTransformer(ckpt.model_config)
    want = [len(g["params"]) for g in param_groups(model, 0.0)]
    got = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list)
           else None for g in saved] if isinstance(saved, list) else None
    if got != want:
        raise ValueError(
            f"--resume: the optimizer state in {cfg.out} has parameter groups of sizes {got}, "
            f"this version of sparse-transformer uses {want} (the output matrix has a group of "
            f"its own), so the run cannot be resumed exactly; its weights still load with "
            f"SparseTransformer.from_pretrained({str(cfg.out)!r})")


def resume_left(cfg: TrainConfig, ckpt: Checkpoint, run: Path) -> bool:
    """What a resume has left to do: False to train on, True for only the final evaluation
    (the run's training is done, its final evaluation was stopped). A finished run, or a
    budget below what the run has trained, is refused: nothing in the run is rewritten.

    The budget is the run's, not this session's: ``--steps`` counts every update and
    ``--max-minutes`` every minute of training since the run began.
    """
    step, state = ckpt.step, ckpt.state
    total = cfg.steps or (None if cfg.max_minutes is not None else state.get("total") or 1000)
    if total is not None and step > total:
        raise ValueError(f"--resume: {run} is at step {step}, past --steps {total}; give "
                         f"--steps above {step} to train it further")
    done = total is not None and step >= total
    if cfg.max_minutes is not None:
        minutes = (ckpt.train.get("options") or {}).get("max_minutes")
        saved = 60 * minutes if isinstance(minutes, (int, float)) and math.isfinite(minutes) \
            else None
        budget, elapsed = 60 * cfg.max_minutes, float(state.get("elapsed_s", 0.0))
        reached = state.get("total") is not None and step >= state["total"]
        ran_out = ckpt.train.get("reason") == "final" and not reached and saved is not None
        # a run its budget ended may be given a larger one; a stopped run may not be given
        # less than it has trained
        spent = budget < saved if ran_out else elapsed >= budget and not done
        if spent:
            raise ValueError(f"--resume: {run} has trained {elapsed / 60:.3g} minutes; "
                             f"--max-minutes {cfg.max_minutes:g} is spent (give a larger one "
                             f"to train it further)")
        done = done or (ran_out and budget == saved)
    if not done:
        return False
    summary = _finished(run, step)
    if summary is not None:
        how = "--steps above " + str(step) if total is not None else "a larger --max-minutes"
        raise ValueError(f"--resume: {run} is finished (step {step}, validation "
                         f"{summary['valid_bpb']:.4f}); give {how} to train it further")
    return True


def _finished(run: Path, step: int) -> dict[str, Any] | None:
    """The run's summary.json if it records a completed run at ``step`` (its final
    evaluation done, not stopped by a signal), else None."""
    try:
        summary = schema.read_object(run / SUMMARY)
    except (OSError, ValueError):
        return None
    valid = summary.get("valid_bpb")
    if summary.get("step") == step and summary.get("stopped_by") is None and \
            isinstance(valid, (int, float)) and not isinstance(valid, bool):
        return summary
    return None


CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights and AdamW's two fp32 moments


def check_disk(run: Path, mcfg: ModelConfig, keep_last: int) -> None:
    """Refuse a run whose disk cannot hold one checkpoint: its first save would fail and the
    training before it be lost. Warn (stderr) when it cannot hold the checkpoints the run keeps
    (``keep_last``, plus ``best`` and the one being written): a later save would fail with the
    previous checkpoint kept (``save_checkpoint``)."""
    one = param_count(mcfg) * CHECKPOINT_BYTES_PER_PARAM
    where = run.absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < one:
        raise OSError(f"not enough free disk for {run}: a checkpoint of this model takes "
                      f"~{_size(one)}, {_size(free)} free at {where}; free some space or "
                      "choose another --out")
    window = one * ((keep_last or 1) + 2)
    if free < window:
        print(f"warning: {_size(free)} free at {where}; the checkpoints this run keeps may "
              f"take ~{_size(window)} ({_size(one)} each): a save that does not fit fails and "
              "keeps the previous one", file=sys.stderr)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def check_data(data: ByteData, mcfg: ModelConfig) -> None:
    check_fits(data.split("train"), mcfg.n_ctx, f"{data.name} train split")
    check_fits(data.split("valid"), mcfg.n_ctx, f"{data.name} valid split")
    if mcfg.embedding == "image":
        shape = data.meta.get("shape")
        if data.kind != "image" or not data.record_size:
            raise ValueError(f"model {mcfg.image_shape} expects image data; {data.name} is "
                             f"{data.kind}")
        if shape and tuple(shape) != tuple(mcfg.image_shape):
            raise ValueError(f"data {data.name} has images of shape {tuple(shape)}, the model "
                             f"expects {tuple(mcfg.image_shape)}")
