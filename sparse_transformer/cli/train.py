"""sparse-transformer train: train a Sparse Transformer on bytes (paper section 6).

A run lives in one directory (--out): metrics.csv, loss.png, run.json, summary.json and
checkpoints/. Ctrl-C or SIGTERM stops after the current step and saves a checkpoint (exit
status 130 or 143); --resume continues the run exactly. A second signal aborts at once.
Once training has started, one line on stderr names the model, its parameters, the data and
the schedule; with --no-progress, plain lines follow every --log-every updates (at most one
per 10 s, and at every validation). Image runs count bits per dim, others bits per byte.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from sparse_transformer.checks import printable
from sparse_transformer.precision import PRECISIONS
from sparse_transformer.train.config import TrainConfig
from sparse_transformer.train.metrics import unit_name
from sparse_transformer.train.recipes import BASE, RECIPES

# flag -> (TrainConfig field, type, help). Defaults come from TrainConfig; on --resume a flag
# that is given replaces the saved value and one left out keeps it.
FLAGS = {
    "--data": ("data", str, "data set name, prepared directory, or any file (read as raw "
                            "bytes, split 90/5/5)"),
    "--data-root": ("data_root", str, "where named data sets are prepared"),
    "--preset": ("preset", str, "model preset, e.g. wiki-tiny, wiki-small, enwik8, cifar10 "
                                "(an unknown name lists them all)"),
    "--out": ("out", str, "run directory (default: runs/PRESET)"),
    "--steps": ("steps", int, "optimizer updates (default: 1000, or as many as --max-minutes "
                              "allows)"),
    "--max-minutes": ("max_minutes", float, "wall-clock budget in minutes, evaluations "
                      "included: the run stops when it is spent; without --steps the cosine "
                      "decays over the budget (not bit-reproducible)"),
    "--batch-size": ("batch_size", int, "windows per micro-batch per process"),
    "--grad-accum": ("grad_accum", int, "micro-batches per update"),
    "--lr": ("lr", float, "peak learning rate"),
    "--warmup": ("warmup", int, "linear warm-up updates"),
    "--min-lr-ratio": ("min_lr_ratio", float, "cosine floor as a fraction of --lr, in [0, 1]"),
    "--weight-decay": ("weight_decay", float, "AdamW decay on matrices"),
    "--output-lr-mult": ("output_lr_mult", float, "learning-rate factor of the zero-started "
                         "output matrix (it would otherwise hold the model at unigram "
                         "entropy for hundreds of updates; docs/training.md)"),
    "--clip": ("clip", float, "gradient-norm clip (> 0)"),
    "--eval-every": ("eval_every", int, "updates between validations (0: only at the end)"),
    "--eval-bytes": ("eval_bytes", int, "validation bytes per evaluation (0: all; else at "
                                        "least n_ctx)"),
    "--eval-batch": ("eval_batch", int, "windows per evaluation batch"),
    "--log-every": ("log_every", int, "updates between metric rows"),
    "--save-every": ("save_every", int, "updates between checkpoints (0: only at the end)"),
    "--keep-last": ("keep_last", int, "checkpoints kept (0: all)"),
    "--seed": ("seed", int, "random seed (weights, batches, dropout)"),
    "--precision": ("precision", str, "fp32, bf16, or fp16 with dynamic loss scaling"),
    "--device": ("device", str, "auto, cpu, cuda or cuda:N"),
}


class _Given(argparse.Action):
    """Store the value and remember that the flag was given (--resume keeps the others)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def register(sub: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    p = sub.add_parser("train", help="train a model", description=__doc__,
                       epilog=_recipes_epilog())
    for flag, (name, typ, help_) in FLAGS.items():
        extra = {"choices": PRECISIONS} if name == "precision" else {}
        if name in BASE:  # a recipe field: None until TrainConfig fills it from the preset
            default = None
            help_ = f"{help_} (default: the preset's recipe, else {BASE[name]})"
        else:
            default = None if name == "out" else getattr(defaults, name)
        p.add_argument(flag, type=typ, default=default, action=_Given, help=help_, **extra)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ModelConfig field, e.g. --set n_layer=6 --set dropout=0.1 "
                   "(values are JSON; refused with --resume if it changes the run's model)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint")
    p.add_argument("--force", action="store_true",
                   help="start the run in --out again: removes only the files an earlier run "
                   "wrote there, or trains in a non-empty directory that holds no run")
    p.add_argument("--overwrite", dest="force", action="store_true",
                   help=argparse.SUPPRESS)  # the old name of --force
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events to OUT/tensorboard (needs tensorboard)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each residual block (one graph for all; on CUDA the "
                   "layer norms, gelu and residual adds around the attention op are fused). "
                   "Default: the recipe's choice when one GPU trains (on for the GPU "
                   "presets), off on the CPU and across several processes")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="replay the compiled blocks from CUDA graphs, so the host does not "
                   "launch each kernel (implies --compile; one GPU, no --shard). Default: "
                   "the recipe's choice when one GPU trains (on for the GPU presets)")
    p.add_argument("--shard", action="store_true",
                   help="under torchrun: shard parameters, gradients and optimizer state "
                   "across the processes (FSDP2, one unit per residual block) instead of "
                   "replicating them (DDP); give it again with --resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, given=frozenset())


def _recipes_epilog() -> str:
    lines = ["recipes (what a preset trains with unless a flag says otherwise; "
             "train/recipes.py):"]
    for preset, values in RECIPES.items():
        lines.append(f"  {preset}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # a bare string such as a pattern spec
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags ask for (on --resume: the saved options, updated by them)."""
    given = {field: getattr(args, field) for _, (field, _, _) in FLAGS.items()
             if field in args.given}
    sets = parse_sets(args.set)
    switches = dict(progress=not args.no_progress, tensorboard=args.tensorboard,
                    force=args.force, resume=args.resume, compile=args.compile,
                    cuda_graphs=args.cuda_graphs,
                    shard=args.shard)
    if not args.resume:
        opts = {field: getattr(args, field) for _, (field, _, _) in FLAGS.items()}
        if opts["out"] is None:
            opts["out"] = f"runs/{opts['preset']}"
        return TrainConfig(**opts, model=sets, **switches)
    if args.force:
        return TrainConfig(**switches)  # refuses --resume with --force
    from pathlib import Path

    from sparse_transformer.cli.common import run_data
    from sparse_transformer.train.checkpoint import load_train_meta

    out = given["out"] if "out" in given else f"runs/{given.get('preset', TrainConfig.preset)}"
    try:
        meta = load_train_meta(Path(out))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"--resume: {err}") from None
    saved = {k: v for k, v in dict(meta.get("options") or {}).items()
             if k in TrainConfig.field_names() and k not in switches}
    # a budget given replaces the saved one, as it replaces a recipe's: --steps alone trains
    # to that many updates, --max-minutes alone for that long (both counted from the start)
    for budget, other in (("steps", "max_minutes"), ("max_minutes", "steps")):
        if budget in given and other not in given:
            saved.pop(other, None)
    if "data" not in given and "data_root" not in given:
        # the absolute data directory the run recorded; never prepared on resume
        saved["data"] = str(run_data(meta, None, None).path)
    saved.update(given, out=out)
    saved["model"] = {**dict(saved.get("model") or {}), **sets}
    return TrainConfig(**saved, **switches)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # every option checked before any work
    mcfg = _model_config(cfg)
    if mcfg is not None and not cfg.resume:
        _check_memory(cfg, mcfg)  # a batch that cannot fit: refused before the run is claimed

    from sparse_transformer.train.loop import train

    log = TrainLog(cfg, mcfg)
    summary = train(cfg, callback=log)
    if summary["stopped_by"] is not None:
        return 128 + summary["stopped_by"]
    # under torchrun every rank returns a summary (with --shard every rank evaluates): one line
    if summary["valid_bpb"] is not None and _rank0():
        tps = summary["tokens_per_s"] or 0.0
        unit = unit_name(summary["model"].cfg)
        run_dir = printable(summary["run_dir"])  # a path need not be UTF-8
        print(f"step {summary['step']}: validation {summary['valid_bpb']:.4f} {unit}; "
              f"{summary['elapsed_s']:.0f} s, {tps:,.0f} tokens/s; run in {run_dir}")
        if summary.get("best_step") is not None and summary["best_step"] != summary["step"]:
            print(f"best validation {summary['best_valid_bpb']:.4f} {unit} at step "
                  f"{summary['best_step']}, kept in {run_dir}/checkpoints/best "
                  f"(give that path to eval, sample or from_pretrained)")
    return 0


def _rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _model_config(cfg: TrainConfig):
    """The ModelConfig a new run builds (its fields checked, its size against this machine's
    memory); on --resume the run's own (None if the flags do not describe it: the loop then
    says why)."""
    from sparse_transformer.model.config import ModelConfig

    if not cfg.resume:
        return ModelConfig.from_preset(cfg.preset, **cfg.model)
    try:
        return ModelConfig.from_preset(cfg.preset, **cfg.model)
    except (ValueError, TypeError):
        return None


def _check_memory(cfg: TrainConfig, mcfg: Any) -> None:
    """Refuse a model and batch whose training cannot fit the device's memory (a lower bound:
    weights, gradients, AdamW's moments, the kept residual stream and the logits), and an
    evaluation batch that cannot either."""
    import torch

    from sparse_transformer.checks import check_memory, memory_bytes
    from sparse_transformer.model.size import forward_bytes, training_bytes
    from sparse_transformer.train.distributed import pick_device

    dev = pick_device(cfg.device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
        have = torch.cuda.get_device_properties(index).total_memory
        where = f"GPU {index} ({torch.cuda.get_device_name(index)})"
    else:
        have, where = memory_bytes(), "this machine"
    shards = int(os.environ.get("WORLD_SIZE", "1")) if cfg.shard else 1
    check_memory(f"training {cfg.preset} with --batch-size {cfg.batch_size}",
                 training_bytes(mcfg, cfg.batch_size, cfg.precision, shards), have, where,
                 "use a smaller --batch-size (and --grad-accum for the same batch) or model")
    if cfg.eval_bytes:  # a batch holds at most the windows there are to score
        batch = min(cfg.eval_batch, -(-cfg.eval_bytes // mcfg.n_ctx))
        check_memory(f"evaluating with --eval-batch {cfg.eval_batch}",
                     forward_bytes(mcfg, batch, cfg.precision), have, where,
                     "use a smaller --eval-batch")


class TrainLog:
    """The training loop's callback: the config line once training has started, then (with
    --no-progress) a plain line every --log-every updates. Rank 0 only."""

    EVERY_S = 10.0  # at most one periodic line per this many seconds (validations always)

    def __init__(self, cfg: TrainConfig, mcfg: Any):
        self.cfg, self.mcfg = cfg, mcfg
        self.unit = unit_name(mcfg) if mcfg is not None else "bits per byte"
        self.started = False
        self.last_t = 0.0
        self.last_tokens, self.last_elapsed = 0, 0.0
        self.losses: list[float] = []

    def __call__(self, row: dict) -> None:
        if not _rank0():
            return
        if not self.started:
            self.started = True
            self._say(self._config_line(row))
            self.last_t = time.monotonic()
            self.last_tokens, self.last_elapsed = row["tokens"], row["elapsed_s"]
        self.losses.append(row["loss"])
        if self.cfg.progress:
            return  # the bar shows the figures
        due = row["step"] % self.cfg.log_every == 0 \
            and time.monotonic() - self.last_t >= self.EVERY_S
        if due or "valid_bpb" in row:
            self._say(self._row_line(row))
            self.last_t = time.monotonic()
            self.last_tokens, self.last_elapsed = row["tokens"], row["elapsed_s"]
            self.losses = []

    def _config_line(self, row: dict) -> str:
        cfg, m = self.cfg, self.mcfg
        if m is not None:
            from sparse_transformer.model.size import param_count

            model = (f"{cfg.preset}: {m.n_layer} layers, d_model {m.d_model}, {m.n_head} heads, "
                     f"n_ctx {m.n_ctx}, {m.attention}, {param_count(m):,} parameters")
        else:
            model = cfg.preset
        budget = (f"{cfg.steps:,} updates" if cfg.steps else
                  f"{cfg.max_minutes:g} minutes" if cfg.max_minutes else "1,000 updates")
        start = f"resumed at step {row['step'] - 1:,}; " if cfg.resume else ""
        window = f" x {m.n_ctx} bytes" if m is not None else " windows"
        accum = f" x {cfg.grad_accum} micro-batches" if cfg.grad_accum > 1 else ""
        device = cfg.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return (f"train {model}; data {cfg.data}; {start}{budget} of batch {cfg.batch_size}"
                f"{window}{accum}, lr {cfg.lr:g}, warm-up {cfg.warmup}, {cfg.precision} on "
                f"{device}; run in {cfg.out}")

    def _row_line(self, row: dict) -> str:
        from math import log

        loss = sum(self.losses) / max(1, len(self.losses))
        dt = row["elapsed_s"] - self.last_elapsed
        tps = (row["tokens"] - self.last_tokens) / dt if dt > 0 else 0.0
        total = f"/{self.cfg.steps:,}" if self.cfg.steps else ""
        line = (f"step {row['step']:,}{total}: loss {loss:.4f} ({loss / log(2):.3f} "
                f"{self.unit}), lr {row['lr']:.3g}, {tps:,.0f} tokens/s, "
                f"{row['elapsed_s']:.0f} s")
        if row.get("valid_bpb") is not None:
            line += f"; validation {row['valid_bpb']:.4f} {self.unit}"
        return line

    def _say(self, line: str) -> None:
        line = printable(line)  # paths (--out, --data) need not be UTF-8
        if self.cfg.progress:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # above the bar, which stays intact
        else:
            print(line, file=sys.stderr, flush=True)
