"""``train(cfg)``: the training loop of the paper (section 6), top to bottom.

setup (processes, seeds, precision) -> data -> model (+ DDP, or FSDP2 with ``shard``) -> AdamW
-> loop: learning rate (linear warm-up, cosine decay), gradient accumulation (DDP syncs on the
last micro-step only), clip at 1.0, step; evaluation in bits per byte, metrics, checkpoints at
intervals.

A run lives in one directory (``cfg.out``): metrics.csv, loss.png, run.json, checkpoints/.
Every option is checked, the model built and the data opened before the directory is touched;
then the process locks the directory (``rundir.RunLock``) for as long as it trains.
``resume=True`` continues the run from its latest checkpoint exactly as if it had not stopped
(same batches, dropout masks and learning rates; with several processes each rank's RNG and
data position are restored, so the number of processes must stay the same). Ctrl-C or SIGTERM
stops after the current step and saves a checkpoint (``summary["stopped_by"]`` names the
signal); a second signal aborts at once. The final checkpoint is saved before the final
evaluation.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from sparse_transformer.data.bytes import (
    ByteData,
    byte_log_frequencies,
    check_fits,
    random_batch,
    resolve_data,
)
from sparse_transformer.baselines import stream_bits
from sparse_transformer.evaluate import LN2, evaluate_bpb
from sparse_transformer.model.config import ModelConfig
from sparse_transformer.model.transformer import SparseTransformer, loss_nats
from sparse_transformer.precision import autocast, grad_scaler
from sparse_transformer.train import distributed as D
from sparse_transformer.train import rundir as R
from sparse_transformer.train.checkpoint import (
    Checkpoint,
    clean_temporaries,
    load_checkpoint,
    mark_best,
    load_weights,
    rank_rng_states,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sparse_transformer.train.config import TrainConfig
from sparse_transformer.train.metrics import MetricsLogger, plot_loss_curve, truncate_metrics
from sparse_transformer.train.schedule import (
    lr_at,
    lr_at_time,
    make_optimizer,
    param_groups,
    set_lr,
)

__all__ = ["TrainConfig", "train"]


class Aborted(KeyboardInterrupt):
    """A second stop signal: abort at once, without saving (exit status 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopFlag:
    """First SIGINT (Ctrl-C) or SIGTERM (schedulers, ``timeout``): stop after this step and
    save. A second one: abort. Only the main thread can install signal handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise Aborted(signum)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary: per-step losses, final bits/byte, the model.

    ``callback(row)`` is called after every update with that step's metrics; setting
    ``row["stop"] = True`` stops the run as Ctrl-C would (used by tests).
    """
    info = D.setup(cfg.device)
    try:
        return _train(cfg, info, callback)
    finally:
        D.teardown(info)


def _train(cfg: TrainConfig, info: D.DistInfo, callback) -> dict[str, Any]:
    # -- everything that can be refused, before the run directory is touched -----------------
    run = Path(cfg.out)
    R.check_start(run, resume=cfg.resume, force=cfg.force)
    if cfg.shard and not info.enabled:
        raise ValueError("--shard needs several processes: launch with torchrun "
                         "--nproc_per_node N (N >= 2)")
    ckpt = load_checkpoint(run) if cfg.resume else None
    if ckpt:
        _check_resume(cfg, ckpt)
        _check_resume_processes(cfg, ckpt, info)
        _check_resume_optimizer(cfg, ckpt)
    mcfg = ckpt.model_config if ckpt else ModelConfig.from_preset(cfg.preset, **cfg.model)
    if cfg.eval_bytes and cfg.eval_bytes < mcfg.n_ctx:
        raise ValueError(f"--eval-bytes must be 0 (all) or at least n_ctx={mcfg.n_ctx}, "
                         f"got {cfg.eval_bytes}")
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError("--tensorboard needs tensorboard", name="tensorboard")

    # -- data: a new run's rank 0 prepares a missing named data set; a resumed run never ------
    if info.is_main:
        data = resolve_data(cfg.data, cfg.data_root, prepare_missing=not cfg.resume)
    D.barrier(info)
    if not info.is_main:
        data = resolve_data(cfg.data, cfg.data_root, prepare_missing=False)
    _check_data(data, mcfg)

    lock = _claim_run_dir(cfg, info, run, ckpt)
    try:
        return _run(cfg, info, callback, run, ckpt, mcfg, data)
    finally:
        if lock is not None:
            lock.release()


def _check_resume(cfg: TrainConfig, ckpt: Checkpoint) -> None:
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


def _check_resume_processes(cfg: TrainConfig, ckpt: Checkpoint, info: D.DistInfo) -> None:
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


def _check_resume_optimizer(cfg: TrainConfig, ckpt: Checkpoint) -> None:
    """The saved optimizer state must have this version's parameter groups (runs saved before
    the output matrix got its own group have two, not three): refused before any work."""
    saved = ckpt.state.get("optimizer", {}).get("param_groups")
    with torch.device("meta"):  # the groups' sizes only: no memory, no initialisation cost
        model = SparseTransformer(ckpt.model_config)
    want = [len(g["params"]) for g in param_groups(model, 0.0)]
    got = [len(g["params"]) for g in saved] if isinstance(saved, list) else None
    if got != want:
        raise ValueError(
            f"--resume: the optimizer state in {cfg.out} has parameter groups of sizes {got}, "
            f"this version of sparse-transformer uses {want} (the output matrix has a group of "
            f"its own), so the run cannot be resumed exactly; its weights still load with "
            f"SparseTransformer.from_pretrained({str(cfg.out)!r})")


def _claim_run_dir(cfg: TrainConfig, info: D.DistInfo, run: Path,
                   ckpt: Checkpoint | None) -> R.RunLock | None:
    """Rank 0 creates and locks the run directory, then makes it ready: the checks again
    (now that no other process can change it), an earlier run's files removed (``force``),
    a killed save's leftovers cleaned, metrics.csv cut back to the checkpoint (resume)."""
    D.barrier(info)
    lock = None
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        lock = R.RunLock(run).acquire()
        try:
            R.remove_files(run, R.check_start(run, resume=cfg.resume, force=cfg.force))
            clean_temporaries(run)
            if ckpt is not None:
                truncate_metrics(run / "metrics.csv", ckpt.step)
        except BaseException:
            lock.release()
            raise
    D.barrier(info)
    return lock


def _run(cfg: TrainConfig, info: D.DistInfo, callback, run: Path, ckpt: Checkpoint | None,
         mcfg: ModelConfig, data: ByteData) -> dict[str, Any]:
    dev = info.device
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = SparseTransformer(mcfg)  # on the CPU: --shard moves only shards to the device
    if ckpt:
        load_weights(model, ckpt)
    elif mcfg.output_bias:  # a new run: the logits start as the train bytes' unigram model
        model.init_output_bias(byte_log_frequencies(data.split("train")))
    if cfg.compile:
        model.compile_blocks()  # one graph serves every block; our attention op inside it
    if cfg.shard:
        # imported only when asked: torch.distributed.fsdp takes about a second to import
        from sparse_transformer.train import sharding

        ddp = model = sharding.shard_model(model, dev, cfg.precision)
    else:
        ddp = D.data_parallel(model.to(dev), info)
    opt = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
                         eps=cfg.eps, output_lr_mult=cfg.output_lr_mult)
    scaler = grad_scaler(cfg.precision, dev)
    gen = torch.Generator().manual_seed(cfg.seed + info.rank)  # data seed + rank
    torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout masks differ across ranks
    step, total, elapsed0 = 0, cfg.steps, 0.0
    best_bpb, best_step = math.inf, None  # the best validation so far and its step
    if ckpt:
        state = ckpt.state
        if cfg.shard:
            sharding.load_optimizer_state(model, opt, state["optimizer"])
        else:
            opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"]) if state.get("scaler") else None
        set_rng_state(rank_rng_states(state)[info.rank], gen, dev)
        step, elapsed0 = int(state["step"]), float(state.get("elapsed_s", 0.0))
        total = cfg.steps or int(state["total"])
        if state.get("best_step") is not None:
            best_bpb, best_step = float(state["best_valid_bpb"]), int(state["best_step"])
    if cfg.max_minutes is not None and not cfg.steps:
        total = None  # the run ends when the budget does
    elif total is None:
        total = 1000
    step0 = step  # this session's first step: tokens/s counts only what it trained

    train_split, valid_split = data.split("train"), data.split("valid")
    record = data.record_size if mcfg.embedding == "image" else None
    tokens_per_update = cfg.batch_size * cfg.grad_accum * mcfg.n_ctx * info.world_size
    logger = None
    if info.is_main:
        # run.json first: its manifest makes every file below ours before it exists
        files = sorted(set(R.RUN_FILES) - ({"tensorboard"} if not cfg.tensorboard else set())
                       | set(R.read_manifest(run) or []))
        run_info = {"train": cfg.to_dict(), "model": mcfg.to_dict(), "data": data.meta,
                    "data_path": str(data.path), "world_size": info.world_size,
                    "params": model.num_params(), "tensorboard": False, "files": files}
        _write_json(run / R.RUN_JSON, run_info)
        logger = MetricsLogger(run, cfg.tensorboard, purge_step=step + 1 if ckpt else None)
        run_info["tensorboard"] = logger.tensorboard_written  # true only with event files
        _write_json(run / R.RUN_JSON, run_info)
    budget = 60 * cfg.max_minutes if cfg.max_minutes else float("inf")
    evaluates = info.is_main or cfg.shard  # a sharded forward needs every rank (same windows)
    pbar = _progress(cfg, info, step, total, budget)

    def evaluate() -> float:
        res = evaluate_bpb(model, valid_split, batch_size=cfg.eval_batch,
                           max_bytes=cfg.eval_bytes or None, record_size=record,
                           precision=cfg.precision, device=dev)
        if cfg.shard:  # a forward without a backward leaves the root unit's weights gathered
            model.reshard()
        return res.bits_per_byte

    def save(reason: str, best: bool = False) -> None:
        # every rank takes part: its RNG state is gathered, a sharded model's tensors too
        rngs = D.gather_objects(info, rng_state(gen, dev))
        if cfg.shard:
            weights, optim = sharding.full_state_dicts(model, opt)
        else:
            weights, optim = model.state_dict(), opt.state_dict()
        if not info.is_main:
            return
        train_meta = {"step": step, "total": total, "options": cfg.to_dict(),
                      "data": data.meta, "data_path": str(data.path), "reason": reason}
        state = {"optimizer": optim, "scaler": scaler.state_dict(), "step": step,
                 "total": total, "elapsed_s": elapsed, "rng": rngs, "shard": cfg.shard,
                 "best_valid_bpb": best_bpb if best_step is not None else None,
                 "best_step": best_step}
        save_checkpoint(run, model=weights, model_config=mcfg, train=train_meta, state=state,
                        keep_last=cfg.keep_last, best=best)


    losses: list[float] = []
    valid_bpb = None
    t_start = time.time()
    elapsed = elapsed0
    # time budget (seconds from this start) and the time kept back for the final evaluation
    eval_reserve = 0.0
    window_t, window_tokens, window_loss, window_n = time.time(), 0, 0.0, 0
    row: dict | None = None  # the last step's metrics, logged after the final save
    final = False
    model.train()
    with _StopFlag() as stop:
        while total is None or step < total:
            if total is None:  # time budget: the cosine follows (rank 0's) wall clock
                frac = (elapsed - elapsed0) / max(1e-9, budget - eval_reserve)
                frac = D.broadcast_float(info, frac)
                lr = lr_at_time(step, frac, lr=cfg.lr, warmup=cfg.warmup,
                                min_lr_ratio=cfg.min_lr_ratio)
            else:
                lr = lr_at(step, lr=cfg.lr, warmup=cfg.warmup, total=total,
                           min_lr_ratio=cfg.min_lr_ratio)
            set_lr(opt, lr)
            step_loss = torch.zeros((), device=dev)
            for micro in range(cfg.grad_accum):
                x = random_batch(train_split, mcfg.n_ctx, cfg.batch_size, gen, record).to(dev)
                last = micro == cfg.grad_accum - 1
                with D.grad_sync(ddp, sync=last):
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
            if math.isfinite(budget):  # rank 0's clock decides, so every rank stops together
                out_of_time = D.rank0_flag(info, out_of_time)
            final = (total is not None and step >= total) or out_of_time

            row = {"step": step, "lr": lr, "loss": loss_value, "train_bpb": loss_value / LN2,
                   "grad_norm": float(grad_norm), "loss_scale": float(scaler.get_scale())
                   if scaler.is_enabled() else None, "elapsed_s": elapsed,
                   "tokens": step * tokens_per_update}
            if cfg.eval_every and step % cfg.eval_every == 0 and not final:
                t_eval = time.time()
                if evaluates:
                    valid_bpb = evaluate()
                    row["valid_bpb"] = valid_bpb
                # rank 0's score on every rank: the save of a new best is collective
                score = D.broadcast_float(info, valid_bpb if info.is_main else math.nan)
                if score < best_bpb:  # kept through pruning: overfitting later loses nothing
                    best_bpb, best_step = score, step
                    save("best", best=True)
                eval_reserve = max(eval_reserve, time.time() - t_eval)
                window_t = time.time()  # keep evaluation out of the tokens/s figure
                window_tokens = 0
            if callback is not None:
                callback(row)
            stop_now = D.all_agree(info, stop.requested or bool(row.get("stop")) or out_of_time)
            if pbar is not None:
                if total is None:  # the bar follows the clock
                    pbar.update(min(budget, elapsed - elapsed0) - pbar.n)
                else:
                    pbar.update(1)
            if final or stop_now:
                break  # logged after the final save (and evaluation) below
            if step % cfg.log_every == 0 or "valid_bpb" in row:
                _log(row, logger, pbar, valid_bpb, window_t, window_tokens, window_loss,
                     window_n, total)
                window_t, window_tokens, window_loss, window_n = time.time(), 0, 0.0, 0
            if cfg.save_every and step % cfg.save_every == 0:
                save("interval")
        if step > step0:  # saved first: a failing evaluation must not lose a finished run
            save("final" if final else "stopped")
        signalled = D.all_agree(info, stop.signum is not None)  # a signal to any rank
    if pbar is not None:
        pbar.close()
    if stop.signum is not None and info.is_main:
        print(f"stopped at step {step} by {signal.Signals(stop.signum).name}: checkpoint "
              f"saved; continue with --resume", file=sys.stderr, flush=True)
    elif row is not None and not final and info.is_main:
        print(f"stopping at step {step}: saved; continue with --resume", file=sys.stderr,
              flush=True)
    if row is not None:
        if final and not signalled and evaluates:
            valid_bpb = evaluate()
            row["valid_bpb"] = valid_bpb
            if info.is_main and valid_bpb < best_bpb:  # the final checkpoint (saved above)
                best_bpb, best_step = valid_bpb, step
                mark_best(run, step, cfg.keep_last)
        _log(row, logger, None, valid_bpb, window_t, window_tokens, window_loss, window_n,
             total)
    session_s = max(1e-9, elapsed - elapsed0)
    summary = {"run_dir": str(run), "step": step, "total": total, "valid_bpb": valid_bpb,
               "elapsed_s": elapsed, "session_steps": step - step0, "session_s": session_s,
               "params": model.num_params(),
               "tokens_per_s": (step - step0) * tokens_per_update / session_s
               if step > step0 else None,
               "best_valid_bpb": best_bpb if best_step is not None else None,
               "best_step": best_step,
               "stopped_by": stop.signum, "losses": losses, "model": model}
    if info.is_main:
        logger.close()
        unit = "bits per dim" if mcfg.embedding == "image" else "bits per byte"
        plot_loss_curve(run / "metrics.csv", run / "loss.png", unit,
                        title=f"{run.name}: {cfg.preset} on {data.name}, {step} updates",
                        references=_plot_references(data, valid_split, cfg.eval_bytes))
        _write_json(run / "summary.json",
                    {k: v for k, v in summary.items() if k not in ("losses", "model")})
    return summary


def _plot_references(data: ByteData, valid, eval_bytes: int | None) -> dict[str, float]:
    """Compressor baselines for the loss plot: the whole valid split's, stored at prepare
    (PPMd with the train split as context among them), else xz/bz2/zlib on the scored bytes."""
    stored = (data.meta.get("baselines") or {}).get("valid")
    if isinstance(stored, dict) and stored:
        return {f"{k} (valid)": float(v) for k, v in stored.items()}
    scored = valid[:eval_bytes] if eval_bytes else valid
    return stream_bits(scored[:1 << 20])


def _log(row: dict, logger: MetricsLogger | None, pbar, valid_bpb: float | None,
         window_t: float, window_tokens: int, window_loss: float, window_n: int,
         total: int | None) -> None:
    """One metrics row: the loss averaged over the updates since the last row, tokens/s over
    their training time (evaluations excluded)."""
    dt = max(1e-9, time.time() - window_t)
    if window_tokens:
        row["tokens_per_s"] = window_tokens / dt
    row["loss"] = window_loss / max(1, window_n)
    row["train_bpb"] = row["loss"] / LN2
    if logger:
        logger.log(row)
    if pbar is not None:
        pbar.set_postfix(_postfix(row, valid_bpb, total), refresh=False)


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


def _progress(cfg: TrainConfig, info: D.DistInfo, step: int, total: int | None,
              budget: float):
    """A bar over the steps, or over the seconds of a time budget (its end is the clock's)."""
    if not (cfg.progress and info.is_main):
        return None
    from tqdm import tqdm

    if total is not None:
        return tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, desc="train")
    return tqdm(total=budget, unit="s", dynamic_ncols=True, desc="train",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                           "[{elapsed}<{remaining}{postfix}]")


def _postfix(row: dict, valid_bpb: float | None, total: int | None) -> dict:
    out = {} if total is not None else {"step": row["step"]}
    out.update(loss=f"{row['loss']:.3f}", bpb=f"{row['train_bpb']:.3f}")
    if valid_bpb is not None:
        out["val_bpb"] = f"{valid_bpb:.3f}"
    if row.get("tokens_per_s"):
        out["tok/s"] = f"{row['tokens_per_s']:,.0f}"
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
