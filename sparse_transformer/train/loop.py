"""``train(cfg)``: the training loop of the paper (section 6), top to bottom.

setup (processes, seeds, precision) -> checks (``start.py``) -> the run directory claimed ->
data, model (+ DDP, or FSDP2 with ``shard``), AdamW -> loop: learning rate (linear warm-up,
cosine decay), gradient accumulation (DDP syncs on the last micro-step only), clip at 1.0,
step; evaluation in bits per byte (per dim for images), metrics, checkpoints at intervals ->
the final checkpoint, the final evaluation, metrics.csv, loss.png and summary.json.

What changes as a run trains is one small object, ``TrainState`` (step, time, the schedule's
position, the best validation, the current metrics window); ``Trainer`` holds what is built
once and does the work in named steps: ``step()`` one update, ``validate()`` an evaluation
(saving a new best), ``save()`` a checkpoint, ``finish()`` the end of a session.

A run lives in one directory (``cfg.out``): metrics.csv, loss.png, run.json, summary.json,
checkpoints/. ``resume=True`` continues the run from its latest checkpoint exactly as if it
had not stopped (same batches, dropout masks and learning rates; with several processes each
rank's RNG and data position are restored, so the number of processes must stay the same).
Ctrl-C or SIGTERM stops after the current update and saves a checkpoint (``summary
["stopped_by"]`` names the signal); a second signal aborts at once. The final checkpoint is
saved before the final evaluation, and the evaluation and the summary are inside the same
signal-safe region: a signal there cuts the evaluation short, the summary is still written,
and ``--resume`` runs the evaluation.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sparse_transformer.baselines import stream_bits
from sparse_transformer.checks import printable
from sparse_transformer.data.bytes import ByteData, byte_log_frequencies, random_batch
from sparse_transformer.evaluate import LN2, evaluate_bpb
from sparse_transformer.model import checkpoint_io as io
from sparse_transformer.model.transformer import SparseTransformer, loss_nats
from sparse_transformer.precision import autocast, grad_scaler
from sparse_transformer.train import distributed as D
from sparse_transformer.train import rundir as R
from sparse_transformer.train.checkpoint import (
    Checkpoint,
    load_weights,
    mark_best,
    rank_rng_states,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sparse_transformer.train.config import TrainConfig
from sparse_transformer.train.metrics import (
    MetricsLogger,
    plot_loss_curve,
    record_validation,
    unit_abbreviation,
    unit_name,
)
from sparse_transformer.train.schedule import (
    SETUP_UPDATES,
    lr_at,
    lr_at_time,
    make_optimizer,
    resumed_fraction,
    set_lr,
    step_fraction,
)
from sparse_transformer.train.signals import StopFlag
from sparse_transformer.train.start import Start, check_start, claim_run_dir

__all__ = ["TrainConfig", "TrainState", "Trainer", "train"]


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary: per-step losses, final bits/byte, the model.

    ``callback(row)`` is called after every update with that step's metrics; setting
    ``row["stop"] = True`` stops the run as Ctrl-C would (used by tests).
    """
    info = D.setup(cfg.device)
    try:
        start = check_start(cfg, info)  # every refusal: before the run directory is touched
        claim = claim_run_dir(cfg, info, start)
        try:
            try:
                trainer = Trainer(cfg, info, start)  # writes run.json, opens metrics.csv
            except BaseException:
                claim.undo()  # a run that never started leaves nothing behind
                raise
            return trainer.run(callback)
        finally:
            claim.release()
    finally:
        D.teardown(info)


@dataclass
class Window:
    """The updates since the last metrics row: their mean loss and tokens/s (evaluations
    excluded from the time)."""

    t: float = field(default_factory=time.time)
    tokens: int = 0
    loss: float = 0.0
    n: int = 0


@dataclass
class TrainState:
    """Everything that changes as a run trains. ``step``, ``elapsed``, the schedule's position
    and the best validation go into state.pt; the rest belongs to this session."""

    step: int                     # updates done, over every session of the run
    total: int | None             # updates the run makes; None: its time budget ends it
    elapsed: float                # seconds of training, over every session
    start_step: int               # this session's first step (tokens/s counts from here)
    start_elapsed: float
    left: float                   # seconds of the run's time budget left (inf: no budget)
    schedule_start: float | None  # a resumed budget's cosine continues from here (None:
                                  # the cosine over updates, lr_at(step, total))
    best_bpb: float = math.inf    # the best validation so far and its step
    best_step: int | None = None
    valid_bpb: float | None = None  # the latest validation
    eval_reserve: float = 0.0     # time kept back from the budget for the final evaluation
    final: bool = False           # the last update is done (steps or time): evaluate at the end
    out_of_time: bool = False
    losses: list[float] = field(default_factory=list)
    window: Window = field(default_factory=Window)
    row: dict | None = None       # the last update's metrics, logged after the final save
    t_start: float = field(default_factory=time.time)
    setup_s: float | None = None  # seconds of this session's first SETUP_UPDATES updates

    def fraction(self) -> float:
        """How far the cosine has gone (a time budget, or a time budget continued by steps)."""
        if self.total is None:
            return resumed_fraction(self.schedule_start or 0.0, self.elapsed - self.start_elapsed,
                                    self.left - self.eval_reserve)
        return resumed_fraction(self.schedule_start or 0.0, self.step - self.start_step,
                                self.total - self.start_step)

    def warm_fraction(self) -> float:
        """The budget's share the warm-up's time cap counts: ``fraction`` of a time budget
        without this session's setup updates (compilation, CUDA-graph capture; none counted
        until they are done). Updates are counted as they are in ``fraction``."""
        if self.total is not None:
            return self.fraction()
        spent = 0.0 if self.setup_s is None else self.elapsed - self.start_elapsed - self.setup_s
        return resumed_fraction(self.schedule_start or 0.0, max(0.0, spent),
                                self.left - self.eval_reserve)


class Trainer:
    """One session of a run: what is built once (model, optimizer, data, metrics) and its
    ``TrainState``. Built after the run directory is claimed; ``run()`` trains."""

    def __init__(self, cfg: TrainConfig, info: D.DistInfo, start: Start):
        self.cfg, self.info, self.run_dir = cfg, info, start.run
        self.mcfg, self.data, self.dev = start.mcfg, start.data, info.device
        ckpt = start.ckpt
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        model = SparseTransformer(self.mcfg)  # on the CPU: --shard moves only shards
        if ckpt:
            load_weights(model, ckpt)
        elif self.mcfg.output_bias:  # a new run: the logits start as the unigram model
            model.init_output_bias(byte_log_frequencies(self.data.split("train")))
        self.compiled, self.graphed = cfg.speed_options(self.dev.type, info.world_size)
        if self.compiled:  # one graph serves every block; our attention op inside
            # CUDA graphs (Inductor's "reduce-overhead"): each block's kernels replay without
            # the host, which at the enwik8 shape otherwise outlasts the strided kernels
            model.compile_blocks(**({"mode": "reduce-overhead"} if self.graphed else {}))
        if cfg.shard:
            # imported only when asked: torch.distributed.fsdp takes a second to import
            from sparse_transformer.train import sharding

            self.ddp = model = sharding.shard_model(model, self.dev, cfg.precision)
        else:
            self.ddp = D.data_parallel(model.to(self.dev), info)
        self.model = model
        self.opt = make_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=cfg.betas, eps=cfg.eps,
                                  output_lr_mult=cfg.output_lr_mult)
        self.scaler = grad_scaler(cfg.precision, self.dev)
        self.gen = torch.Generator().manual_seed(cfg.seed + info.rank)  # data seed + rank
        torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout masks differ across ranks
        if ckpt:
            self._restore(ckpt.state)
        self.state = self._start_state(ckpt, start.eval_only)

        self.train_split, self.valid_split = self.data.split("train"), self.data.split("valid")
        self.record = self.data.record_size if self.mcfg.embedding == "image" else None
        self.tokens_per_update = (cfg.batch_size * cfg.grad_accum * self.mcfg.n_ctx
                                  * info.world_size)
        self.unit = unit_name(self.mcfg)
        self.evaluates = info.is_main or cfg.shard  # a sharded forward needs every rank
        self.logger = self._open_run_files(start.manifest, ckpt) if info.is_main else None

    # -- setting up ------------------------------------------------------------------------
    def _restore(self, state: dict[str, Any]) -> None:
        if self.cfg.shard:
            from sparse_transformer.train import sharding

            sharding.load_optimizer_state(self.model, self.opt, state["optimizer"])
        else:
            self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(rank_rng_states(state)[self.info.rank], self.gen, self.dev)

    def _start_state(self, ckpt: Checkpoint | None, eval_only: bool) -> TrainState:
        cfg = self.cfg
        saved = ckpt.state if ckpt else {}
        step, elapsed = int(saved.get("step", 0)), float(saved.get("elapsed_s", 0.0))
        if cfg.steps:
            total = cfg.steps
        else:  # a time budget ends the run, else the saved total (1,000 for a new run)
            total = None if cfg.max_minutes is not None else saved.get("total") or 1000
        # a time budget continues the saved cosine; so does --steps given to a run that a
        # time budget scheduled. A run of updates resumed by updates: lr_at, bit-exact.
        timed_before = ckpt is not None and saved.get("total") is None
        schedule_start = None
        if total is None or timed_before:
            schedule_start = _saved_fraction(ckpt, cfg) if ckpt else 0.0
        if total is None and ckpt is not None and schedule_start >= 1.0 and cfg.max_minutes:
            # a run whose budget ran out, given a larger one: its cosine ended at the floor,
            # where more minutes would change nothing; it is re-planned over the whole new
            # budget (as --steps re-plans a run of updates), so the rate rises to where the
            # longer schedule stands after the minutes already trained, not to its peak
            schedule_start = min(1.0, elapsed / (60 * cfg.max_minutes))
        st = TrainState(step=step, total=total, elapsed=elapsed, start_step=step,
                        start_elapsed=elapsed, schedule_start=schedule_start,
                        left=60 * cfg.max_minutes - elapsed if cfg.max_minutes else math.inf,
                        final=eval_only)
        if saved.get("best_step") is not None:
            st.best_bpb, st.best_step = float(saved["best_valid_bpb"]), int(saved["best_step"])
        return st

    def _open_run_files(self, manifest: list[str] | None, ckpt: Checkpoint | None
                        ) -> MetricsLogger:
        """run.json first: its manifest makes every file below ours before it exists."""
        cfg, run = self.cfg, self.run_dir
        files = sorted(set(R.RUN_FILES) - ({"tensorboard"} if not cfg.tensorboard else set())
                       | set(manifest or []))
        run_info = {"train": cfg.to_dict(), "model": self.mcfg.to_dict(),
                    "data": self.data.meta, "data_path": str(self.data.path),
                    "world_size": self.info.world_size, "params": self.model.num_params(),
                    "tensorboard": False, "files": files}
        io.write_json(run / R.RUN_JSON, run_info)
        logger = MetricsLogger(run, cfg.tensorboard, unit=self.unit,
                               purge_step=self.state.step + 1 if ckpt else None)
        run_info["tensorboard"] = logger.tensorboard_written  # true only with event files
        io.write_json(run / R.RUN_JSON, run_info)
        return logger

    # -- one update --------------------------------------------------------------------------
    def lr(self) -> float:
        cfg, st = self.cfg, self.state
        if st.total is None:  # a time budget: the cosine follows (rank 0's) wall clock
            frac = D.broadcast_float(self.info, st.fraction())
            warm = None  # the warm-up's cap, while the update count has not ended it
            if st.step + 1 < cfg.warmup:
                warm = D.broadcast_float(self.info, st.warm_fraction())
            return lr_at_time(st.step, frac, lr=cfg.lr, warmup=cfg.warmup,
                              min_lr_ratio=cfg.min_lr_ratio, warm_fraction=warm)
        if st.schedule_start is not None:  # a time-budgeted run continued by updates
            return lr_at_time(st.step, st.fraction(), lr=cfg.lr, warmup=cfg.warmup,
                              min_lr_ratio=cfg.min_lr_ratio)
        return lr_at(st.step, lr=cfg.lr, warmup=cfg.warmup, total=st.total,
                     min_lr_ratio=cfg.min_lr_ratio)

    def step(self) -> dict[str, Any]:
        """One optimizer update; returns its metrics row (also ``state.row``)."""
        cfg, st, dev = self.cfg, self.state, self.dev
        lr = self.lr()
        set_lr(self.opt, lr)
        step_loss = torch.zeros((), device=dev)
        for micro in range(cfg.grad_accum):
            x = random_batch(self.train_split, self.mcfg.n_ctx, cfg.batch_size, self.gen,
                             self.record).to(dev)
            if self.graphed:  # a new forward and backward: the graphs' buffers are free
                torch.compiler.cudagraph_mark_step_begin()
            with D.grad_sync(self.ddp, sync=micro == cfg.grad_accum - 1):
                with autocast(cfg.precision, dev):
                    logits = self.ddp(x)
                loss = loss_nats(logits, x)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            step_loss += loss.detach() / cfg.grad_accum
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        loss_value = float(step_loss)
        if cfg.precision != "fp16" and not (math.isfinite(loss_value)
                                            and math.isfinite(float(grad_norm))):
            raise RuntimeError(f"training diverged: non-finite loss or gradient at step "
                               f"{st.step}; try a lower --lr")
        self.scaler.step(self.opt)  # skipped (and the scale halved) on inf/NaN grads in fp16
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

        st.step += 1
        st.losses.append(loss_value)
        st.elapsed = st.start_elapsed + time.time() - st.t_start
        if st.step - st.start_step == SETUP_UPDATES:
            st.setup_s = st.elapsed - st.start_elapsed
        st.window.tokens += self.tokens_per_update
        st.window.loss += loss_value
        st.window.n += 1
        # the time budget: stop early enough for the final evaluation
        st.out_of_time = st.elapsed - st.start_elapsed >= st.left - st.eval_reserve
        if math.isfinite(st.left):  # rank 0's clock decides, so every rank stops together
            st.out_of_time = D.rank0_flag(self.info, st.out_of_time)
        st.final = (st.total is not None and st.step >= st.total) or st.out_of_time
        st.row = {"step": st.step, "lr": lr, "loss": loss_value, "train_bpb": loss_value / LN2,
                  "grad_norm": float(grad_norm), "elapsed_s": st.elapsed,
                  "loss_scale": float(self.scaler.get_scale()) if self.scaler.is_enabled()
                  else None, "tokens": st.step * self.tokens_per_update}
        return st.row

    # -- evaluation and checkpoints ----------------------------------------------------------
    def evaluate(self) -> float:
        """Bits per token on the validation split (its first ``eval_bytes``)."""
        res = evaluate_bpb(self.model, self.valid_split, batch_size=self.cfg.eval_batch,
                           max_bytes=self.cfg.eval_bytes or None, record_size=self.record,
                           precision=self.cfg.precision, device=self.dev)
        if self.cfg.shard:  # a forward without a backward leaves the root's weights gathered
            self.model.reshard()
        return res.bits_per_byte

    def validate(self, row: dict[str, Any]) -> None:
        """An interval evaluation: into ``row``; a new best is saved (kept through pruning,
        so a run that starts to overfit loses nothing). Collective: every rank calls it."""
        st = self.state
        t_eval = time.time()
        if self.evaluates:
            st.valid_bpb = row["valid_bpb"] = self.evaluate()
        # rank 0's score on every rank: the save of a new best is collective
        score = D.broadcast_float(self.info, st.valid_bpb if self.info.is_main else math.nan)
        if score < st.best_bpb:
            st.best_bpb, st.best_step = score, st.step
            self.save("best", best=True)
        st.eval_reserve = max(st.eval_reserve, time.time() - t_eval)
        st.window.t, st.window.tokens = time.time(), 0  # evaluation out of tokens/s

    def save(self, reason: str, best: bool = False) -> None:
        """A checkpoint of the current step. Collective: every rank's RNG state is gathered,
        a sharded model's tensors too; rank 0 writes."""
        cfg, st, info = self.cfg, self.state, self.info
        rngs = D.gather_objects(info, rng_state(self.gen, self.dev))
        if cfg.shard:
            from sparse_transformer.train import sharding

            weights, optim = sharding.full_state_dicts(self.model, self.opt)
        else:
            weights, optim = self.model.state_dict(), self.opt.state_dict()
        if not info.is_main:
            return
        train_meta = {"step": st.step, "total": st.total, "options": cfg.to_dict(),
                      "data": self.data.meta, "data_path": str(self.data.path),
                      "reason": reason}
        state = {"optimizer": optim, "scaler": self.scaler.state_dict(), "step": st.step,
                 "total": st.total, "elapsed_s": st.elapsed, "rng": rngs, "shard": cfg.shard,
                 "best_valid_bpb": st.best_bpb if st.best_step is not None else None,
                 "best_step": st.best_step, "schedule_fraction": self._schedule_position()}
        save_checkpoint(self.run_dir, model=weights, model_config=self.mcfg, train=train_meta,
                        state=state, keep_last=cfg.keep_last, best=best)

    def _schedule_position(self) -> float:
        """How far the cosine has gone: where a resumed time budget continues from."""
        st = self.state
        if st.total is None or st.schedule_start is not None:
            return st.fraction()
        return step_fraction(st.step, warmup=self.cfg.warmup, total=st.total)

    def log(self, row: dict[str, Any], pbar) -> None:
        """One metrics row: the loss averaged over the updates since the last row, tokens/s
        over their training time (evaluations excluded)."""
        w = self.state.window
        if w.tokens:
            row["tokens_per_s"] = w.tokens / max(1e-9, time.time() - w.t)
        row["loss"] = w.loss / max(1, w.n)
        row["train_bpb"] = row["loss"] / LN2
        if self.logger:
            self.logger.log(row)
        if pbar is not None:
            pbar.set_postfix(self._postfix(row), refresh=False)
        self.state.window = Window()

    def _postfix(self, row: dict[str, Any]) -> dict[str, str]:
        short = unit_abbreviation(self.unit)  # bpb, or bpd for images
        out = {} if self.state.total is not None else {"step": row["step"]}
        out.update({"loss": f"{row['loss']:.3f}", short: f"{row['train_bpb']:.3f}"})
        if self.state.valid_bpb is not None:
            out[f"val_{short}"] = f"{self.state.valid_bpb:.3f}"
        if row.get("tokens_per_s"):
            out["tok/s"] = f"{row['tokens_per_s']:,.0f}"
        return out

    # -- a session ---------------------------------------------------------------------------
    def run(self, callback: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Train until the budget is spent or a stop is asked for, then ``finish``."""
        cfg, st, info = self.cfg, self.state, self.info
        self.model.train()
        pbar = _progress(cfg, info, st)
        st.t_start, st.window = time.time(), Window()  # the clocks start with the first update
        with StopFlag() as stop:
            while not st.final:
                row = self.step()
                if cfg.eval_every and st.step % cfg.eval_every == 0 and not st.final:
                    self.validate(row)
                if callback is not None:
                    callback(row)
                stop_now = D.all_agree(info, stop.requested or bool(row.get("stop"))
                                       or st.out_of_time)
                if pbar is not None:
                    pbar.update(1 if st.total is not None else
                                min(st.left, st.elapsed - st.start_elapsed) - pbar.n)
                if st.final or stop_now:
                    break  # logged after the final save (and evaluation) in finish()
                if st.step % cfg.log_every == 0 or "valid_bpb" in row:
                    self.log(row, pbar)
                if cfg.save_every and st.step % cfg.save_every == 0:
                    self.save("interval")
            if pbar is not None:
                pbar.close()
            return self.finish(stop)

    def finish(self, stop: StopFlag) -> dict[str, Any]:
        """The end of a session, inside the signal-safe region: the checkpoint (before the
        evaluation, so a failing one never loses a finished run), the final evaluation (a
        signal cuts it short), the last metrics row, loss.png and summary.json."""
        st, info = self.state, self.info
        if st.step > st.start_step:
            self.save("final" if st.final else "stopped")
        signalled = D.all_agree(info, stop.signum is not None)  # a signal to any rank
        if info.is_main and stop.signum is not None:
            print(f"stopped at step {st.step} by {signal.Signals(stop.signum).name}: "
                  f"checkpoint saved; continue with --resume", file=sys.stderr, flush=True)
        elif info.is_main and st.row is not None and not st.final:
            print(f"stopping at step {st.step}: saved; continue with --resume",
                  file=sys.stderr, flush=True)
        if st.final and not signalled and self.evaluates:
            self._final_validation(stop)
        if st.row is not None:
            self.log(st.row, None)
        if self.compiled:  # the model handed back runs eager (SparseTransformer.eager_blocks)
            self.model.eager_blocks()
        summary = self.summary(stop.signum)
        if info.is_main:
            self.logger.close()
            plot_loss_curve(self.run_dir / "metrics.csv", self.run_dir / "loss.png", self.unit,
                            title=printable(f"{self.run_dir.name}: {self.cfg.preset} on "
                                             f"{self.data.name}, {st.step} updates"),
                            references=_plot_references(self.data, self.valid_split,
                                                        self.cfg.eval_bytes))
            io.write_json(self.run_dir / "summary.json",
                          {k: v for k, v in summary.items() if k not in ("losses", "model")})
        return summary

    def _final_validation(self, stop: StopFlag) -> None:
        st = self.state
        try:
            with stop.interrupting():  # the checkpoint is saved: safe to cut short
                valid = self.evaluate()
        except KeyboardInterrupt as err:
            stop.signum = getattr(err, "signum", signal.SIGINT)
            if self.info.is_main:
                print(f"stopped by {signal.Signals(stop.signum).name} during the final "
                      f"evaluation: the checkpoint of step {st.step} is saved; --resume "
                      f"evaluates it", file=sys.stderr, flush=True)
            return
        st.valid_bpb = valid
        if st.row is not None:
            st.row["valid_bpb"] = valid
        elif self.info.is_main:  # a resumed session that only evaluates: that step's row
            record_validation(self.run_dir / "metrics.csv", st.step, valid, self.unit)
        if self.info.is_main and valid < st.best_bpb:  # the final checkpoint (saved above)
            st.best_bpb, st.best_step = valid, st.step
            mark_best(self.run_dir, st.step, self.cfg.keep_last)

    def summary(self, stopped_by: int | None) -> dict[str, Any]:
        st = self.state
        session_steps = st.step - st.start_step
        session_s = max(1e-9, st.elapsed - st.start_elapsed)
        return {"run_dir": str(self.run_dir), "step": st.step, "total": st.total,
                "valid_bpb": st.valid_bpb, "elapsed_s": st.elapsed,
                "session_steps": session_steps, "session_s": session_s,
                "params": self.model.num_params(),
                "tokens_per_s": session_steps * self.tokens_per_update / session_s
                if session_steps else None,
                "best_valid_bpb": st.best_bpb if st.best_step is not None else None,
                "best_step": st.best_step, "stopped_by": stopped_by, "losses": st.losses,
                "model": self.model}


def _saved_fraction(ckpt: Checkpoint, cfg: TrainConfig) -> float:
    """Where a checkpoint's cosine stood: saved since schedules could be resumed; for an
    older checkpoint, its updates' share of its total, or its time's share of its budget."""
    state = ckpt.state
    if state.get("schedule_fraction") is not None:
        return float(state["schedule_fraction"])
    if state.get("total"):
        return step_fraction(ckpt.step, warmup=cfg.warmup, total=int(state["total"]))
    minutes = (ckpt.train.get("options") or {}).get("max_minutes")
    if isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0:
        return min(1.0, float(state.get("elapsed_s", 0.0)) / (60 * minutes))
    return 0.0


def _plot_references(data: ByteData, valid, eval_bytes: int | None) -> dict[str, float]:
    """Compressor baselines for the loss plot: the whole valid split's, stored at prepare
    (PPMd with the train split as context among them), else xz/bz2/zlib on the scored bytes."""
    stored = (data.meta.get("baselines") or {}).get("valid")
    if isinstance(stored, dict) and stored:
        return {f"{k} (valid)": float(v) for k, v in stored.items()}
    scored = valid[:eval_bytes] if eval_bytes else valid
    return stream_bits(scored[:1 << 20])


def _progress(cfg: TrainConfig, info: D.DistInfo, st: TrainState):
    """A bar over the steps, or over the seconds of a time budget (its end is the clock's)."""
    if not (cfg.progress and info.is_main) or st.final:  # nothing to train: no bar
        return None
    from tqdm import tqdm

    if st.total is not None:
        return tqdm(total=st.total, initial=st.step, unit="step", dynamic_ncols=True,
                    desc="train")
    return tqdm(total=st.left, unit="s", dynamic_ncols=True, desc="train",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
                           "[{elapsed}<{remaining}{postfix}]")
