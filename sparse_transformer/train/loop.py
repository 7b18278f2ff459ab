"""``train(cfg)``: the training loop of the paper (section 6), top to bottom.

setup (processes, seeds, precision) -> data -> model (+ DDP) -> AdamW -> loop: learning rate
(linear warm-up, cosine decay), gradient accumulation (DDP syncs on the last micro-step only),
clip at 1.0, step; evaluation in bits per byte, metrics, checkpoints at intervals.

A run lives in one directory (``cfg.out``): metrics.csv, loss.png, run.json, checkpoints/.
``resume=True`` continues the run from its latest checkpoint exactly as if it had not stopped
(same batches, dropout masks and learning rates; single process). Ctrl-C stops after the
current step and saves a checkpoint; a second Ctrl-C aborts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from sparse_transformer.data.bytes import ByteData, check_fits, random_batch, resolve_data
from sparse_transformer.evaluate import LN2, evaluate_bpb
from sparse_transformer.model.config import ModelConfig
from sparse_transformer.model.transformer import SparseTransformer, loss_nats
from sparse_transformer.train import distributed as D
from sparse_transformer.train.checkpoint import (
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sparse_transformer.train.metrics import MetricsLogger, plot_loss_curve
from sparse_transformer.train.precision import autocast, check_precision, grad_scaler
from sparse_transformer.train.schedule import lr_at, lr_at_time, make_optimizer

RUN_FILES = ("checkpoints", "metrics.csv", "loss.png", "run.json", "summary.json", "tensorboard")


@dataclass
class TrainConfig:
    """Options of one training run (CLI flags of ``sparse-transformer train``)."""

    data: str = "wiki"                 # data set name, prepared directory, or any file
    data_root: str = "data"            # where named data sets are prepared
    preset: str = "wiki-small"         # ModelConfig preset ...
    model: dict[str, Any] = field(default_factory=dict)  # ... with these field overrides
    out: str = "runs/wiki-small"       # run directory
    steps: int | None = None           # optimizer updates; default 1000 unless max_minutes
    max_minutes: float | None = None   # wall-clock budget (evaluation included); without
                                       # steps the cosine decay follows the clock
    batch_size: int = 16               # windows per micro-batch per process
    grad_accum: int = 1                # micro-batches per update
    lr: float = 1e-3
    warmup: int = 100                  # paper: 5,000 for its long runs
    min_lr_ratio: float = 0.0          # cosine decays to lr * this
    weight_decay: float = 0.01         # paper 6, matrices only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip: float = 1.0                  # global gradient-norm clip (paper 6)
    eval_every: int = 250              # updates between validation runs (0: only at the end)
    eval_bytes: int = 131_072          # validation bytes scored at each evaluation (0: all)
    eval_batch: int = 16
    log_every: int = 10
    save_every: int = 500              # updates between checkpoints (always one at the end)
    keep_last: int = 2
    seed: int = 1337
    precision: str = "fp32"            # fp32 | bf16 | fp16 (dynamic loss scaling)
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_run_dir(cfg: TrainConfig) -> list[Path]:
    """Refuse to clobber an existing run unless asked; returns our files to replace."""
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} is a file, not a run directory")
    ours = [run / f for f in RUN_FILES if (run / f).exists()]
    if not cfg.resume and ours and not cfg.overwrite:
        raise ValueError(f"{run} already holds a run; pass --resume to continue it or "
                         f"--overwrite to start it again")
    return [] if cfg.resume else ours


def _make_run_dir(cfg: TrainConfig, info: D.DistInfo, replace: list[Path]) -> Path:
    """Create the run directory (removing only files an earlier run of ours wrote)."""
    run = Path(cfg.out)
    D.barrier(info)
    if info.is_main:
        for p in replace:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        run.mkdir(parents=True, exist_ok=True)
    D.barrier(info)
    return run


class _StopFlag:
    """First Ctrl-C: stop after this step and save. Second: abort."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary: per-step losses, final bits/byte, the model.

    ``callback(row)`` is called after every update with that step's metrics; setting
    ``row["stop"] = True`` stops the run as Ctrl-C would (used by tests).
    """
    check_precision(cfg.precision, torch.device("cpu"))
    info = D.setup(cfg.device)
    try:
        return _train(cfg, info, callback)
    finally:
        D.teardown(info)


def _train(cfg: TrainConfig, info: D.DistInfo, callback) -> dict[str, Any]:
    dev = info.device
    replace = _check_run_dir(cfg)
    ckpt = None
    if cfg.resume:
        if not (Path(cfg.out) / "checkpoints").exists():
            raise FileNotFoundError(f"--resume: {cfg.out} holds no checkpoint to resume")
        ckpt = load_checkpoint(cfg.out)

    # -- data: rank 0 prepares a missing named data set, the others wait --------------------
    if info.is_main:
        data = resolve_data(cfg.data, cfg.data_root)
    D.barrier(info)
    if not info.is_main:
        data = resolve_data(cfg.data, cfg.data_root, prepare_missing=False)

    # -- model ----------------------------------------------------------------------------------
    mcfg = ckpt.model_config if ckpt else ModelConfig.from_preset(cfg.preset, **cfg.model)
    _check_data(data, mcfg)
    run = _make_run_dir(cfg, info, replace)  # only now that the inputs are known to be good
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = SparseTransformer(mcfg).to(dev)
    if ckpt:
        load_weights(model, ckpt)
    opt = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
                         eps=cfg.eps)
    scaler = grad_scaler(cfg.precision, dev)
    gen = torch.Generator().manual_seed(cfg.seed + info.rank)  # data seed + rank
    torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout masks differ across ranks
    step, total, elapsed0 = 0, cfg.steps, 0.0
    if ckpt:
        state = ckpt.state
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"]) if state.get("scaler") else None
        set_rng_state(state["rng"], gen)
        step, elapsed0 = int(state["step"]), float(state.get("elapsed_s", 0.0))
        total = cfg.steps or int(state["total"])
    if cfg.max_minutes is not None and not cfg.steps:
        total = None  # the run ends when the budget does
    elif total is None:
        total = 1000
    ddp = model
    if info.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)

    train_split, valid_split = data.split("train"), data.split("valid")
    record = data.record_size if mcfg.embedding == "image" else None
    tokens_per_update = cfg.batch_size * cfg.grad_accum * mcfg.n_ctx * info.world_size
    logger = MetricsLogger(run, cfg.tensorboard) if info.is_main else None
    if info.is_main:
        _write_json(run / "run.json", {"train": cfg.to_dict(), "model": mcfg.to_dict(),
                                       "data": data.meta, "world_size": info.world_size,
                                       "params": model.num_params()})
    pbar = _progress(cfg, info, step, total)

    def evaluate() -> float:
        res = evaluate_bpb(model, valid_split, batch_size=cfg.eval_batch,
                           max_bytes=cfg.eval_bytes or None, record_size=record,
                           precision=cfg.precision, device=dev)
        return res.bits_per_byte

    def save(reason: str) -> None:
        if not info.is_main:
            return
        train_meta = {"step": step, "total": total, "options": cfg.to_dict(),
                      "data": data.meta, "reason": reason}
        state = {"optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "step": step,
                 "total": total, "elapsed_s": elapsed, "rng": rng_state(gen)}
        save_checkpoint(run, model=model, model_config=mcfg, train=train_meta, state=state,
                        keep_last=cfg.keep_last)

    losses: list[float] = []
    valid_bpb = None
    t_start = time.time()
    elapsed = elapsed0
    # time budget (seconds from this start) and the time kept back for the final evaluation
    budget = 60 * cfg.max_minutes if cfg.max_minutes else float("inf")
    eval_reserve = 0.0
    window_t, window_tokens, window_loss, window_n = time.time(), 0, 0.0, 0
    model.train()
    with _StopFlag() as stop:
        while total is None or step < total:
            if total is None:  # time budget: the cosine follows (rank 0's) wall clock
                frac = (elapsed - elapsed0) / max(1e-9, budget - eval_reserve)
                frac = D.broadcast_float(info, frac)
                lr = lr_at_time(step, frac, lr=cfg.lr, warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio)
            else:
                lr = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=total,
                           min_lr_ratio=cfg.min_lr_ratio)
            for group in opt.param_groups:
                group["lr"] = lr
            step_loss = torch.zeros((), device=dev)
            for micro in range(cfg.grad_accum):
                x = random_batch(train_split, mcfg.n_ctx, cfg.batch_size, gen, record).to(dev)
                last = micro == cfg.grad_accum - 1
                sync = ddp.no_sync() if info.enabled and not last else contextlib.nullcontext()
                with sync:
                    with autocast(cfg.precision, dev):
                        logits = ddp(x)
                    loss = loss_nats(logits, x)
                    scaler.scale(loss / cfg.grad_accum).backward()
                step_loss += loss.detach() / cfg.grad_accum
            scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            loss_value = float(step_loss)
            if cfg.precision != "fp16" and not (math.isfinite(loss_value)
                                                and math.isfinite(float(grad_norm))):
                raise RuntimeError(f"training diverged: non-finite loss or gradient at step "
                                   f"{step}; try a lower --lr")
            scaler.step(opt)  # skipped (and the scale halved) on inf/NaN gradients in fp16
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss_value)
            now = time.time()
            elapsed = elapsed0 + now - t_start
            window_tokens += tokens_per_update
            window_loss += loss_value
            window_n += 1

            # -- time budget: stop early enough for the final evaluation ----------------------
            out_of_time = elapsed - elapsed0 >= budget - eval_reserve
            final = (total is not None and step >= total) or out_of_time
            if total is None and pbar is not None and step % cfg.log_every == 0:
                pbar.total = max(step + 1, int(step * (budget - eval_reserve)
                                               / max(1e-9, elapsed - elapsed0)))

            row = {"step": step, "lr": lr, "loss": loss_value, "train_bpb": loss_value / LN2,
                   "grad_norm": float(grad_norm), "loss_scale": float(scaler.get_scale())
                   if scaler.is_enabled() else None, "elapsed_s": elapsed,
                   "tokens": step * tokens_per_update}
            if info.is_main and ((cfg.eval_every and step % cfg.eval_every == 0) or final):
                t_eval = time.time()
                valid_bpb = evaluate()
                eval_reserve = max(eval_reserve, time.time() - t_eval)
                row["valid_bpb"] = valid_bpb
                window_t = time.time()  # keep evaluation out of the tokens/s figure
                window_tokens = 0
            if callback is not None:
                callback(row)
            stop_now = D.all_agree(info, stop.requested or bool(row.get("stop")) or out_of_time)
            if step % cfg.log_every == 0 or "valid_bpb" in row or final or stop_now:
                dt = max(1e-9, time.time() - window_t)
                if window_tokens:
                    row["tokens_per_s"] = window_tokens / dt
                row["loss"] = window_loss / max(1, window_n)
                row["train_bpb"] = row["loss"] / LN2
                if logger:
                    logger.log(row)
                if pbar is not None:
                    pbar.set_postfix(_postfix(row, valid_bpb), refresh=False)
                window_t, window_tokens, window_loss, window_n = time.time(), 0, 0.0, 0
            if pbar is not None:
                pbar.update(1)
            if final or stop_now:
                if info.is_main and not final and not out_of_time:
                    print(f"stopping at step {step}: saved; continue with --resume", flush=True)
                break
            if info.is_main and cfg.save_every and step % cfg.save_every == 0:
                save("interval")
    if pbar is not None:
        pbar.close()
    save("final" if total is not None and step >= total else "stopped")
    summary = {"run_dir": str(run), "step": step, "total": total, "valid_bpb": valid_bpb,
               "elapsed_s": elapsed, "params": model.num_params(),
               "tokens_per_s": step * tokens_per_update / max(1e-9, elapsed - elapsed0)
               if step else None, "losses": losses, "model": model}
    if info.is_main:
        logger.close()
        plot_loss_curve(run / "metrics.csv", run / "loss.png")
        _write_json(run / "summary.json",
                    {k: v for k, v in summary.items() if k not in ("losses", "model")})
    return summary


def _check_data(data: ByteData, mcfg: ModelConfig) -> None:
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


def _progress(cfg: TrainConfig, info: D.DistInfo, step: int, total: int | None):
    if not (cfg.progress and info.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, desc="train")


def _postfix(row: dict, valid_bpb: float | None) -> dict:
    out = {"loss": f"{row['loss']:.3f}", "bpb": f"{row['train_bpb']:.3f}"}
    if valid_bpb is not None:
        out["val_bpb"] = f"{valid_bpb:.3f}"
    if row.get("tokens_per_s"):
        out["tok/s"] = f"{row['tokens_per_s']:,.0f}"
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
