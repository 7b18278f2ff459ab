"""``sparse-transformer train``: train a Sparse Transformer on bytes (paper 6)."""

from __future__ import annotations

import argparse
import json

from sparse_transformer.model.config import PRESETS

# flag -> (TrainConfig field, type, help). Defaults live in TrainConfig; a flag left out keeps
# the default for a new run and the saved value on --resume.
FLAGS = {
    "--data": ("data", str, "data set name, prepared directory, or any file (default wiki)"),
    "--data-root": ("data_root", str, "where named data sets are prepared (default data)"),
    "--preset": ("preset", str, f"model preset: {', '.join(PRESETS)} (default wiki-small)"),
    "--out": ("out", str, "run directory (default runs/PRESET)"),
    "--steps": ("steps", int, "optimizer updates (default 1000, or set by --max-minutes)"),
    "--max-minutes": ("max_minutes", float, "wall-clock budget; picks --steps from the speed"),
    "--batch-size": ("batch_size", int, "windows per micro-batch per process (default 16)"),
    "--grad-accum": ("grad_accum", int, "micro-batches per update (default 1)"),
    "--lr": ("lr", float, "peak learning rate (default 1e-3)"),
    "--warmup": ("warmup", int, "linear warm-up updates (default 100)"),
    "--min-lr-ratio": ("min_lr_ratio", float, "cosine floor as a fraction of --lr (default 0)"),
    "--weight-decay": ("weight_decay", float, "AdamW decay on matrices (default 0.01)"),
    "--clip": ("clip", float, "gradient-norm clip (default 1.0)"),
    "--eval-every": ("eval_every", int, "updates between validations (default 250)"),
    "--eval-bytes": ("eval_bytes", int, "validation bytes per evaluation, 0 = all"),
    "--eval-batch": ("eval_batch", int, "windows per evaluation batch (default 16)"),
    "--log-every": ("log_every", int, "updates between metric rows (default 10)"),
    "--save-every": ("save_every", int, "updates between checkpoints (default 500)"),
    "--keep-last": ("keep_last", int, "checkpoints kept (default 2)"),
    "--seed": ("seed", int, "random seed (default 1337)"),
    "--precision": ("precision", str, "fp32, bf16, or fp16 with loss scaling (default fp32)"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:1 ... (default auto)"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model", description=__doc__)
    for flag, (_, typ, help_) in FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=help_)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a ModelConfig field, e.g. --set n_layer=6 --set dropout=0.1")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # a bare string such as a pattern spec
    return out


def options_from_args(args: argparse.Namespace) -> dict:
    opts = {field: getattr(args, flag[2:].replace("-", "_"))
            for flag, (field, _, _) in FLAGS.items()}
    opts = {k: v for k, v in opts.items() if v is not None}
    if args.set:
        opts["model"] = parse_sets(args.set)
    if args.no_progress:
        opts["progress"] = False
    return opts


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sparse_transformer.model.config import ModelConfig
    from sparse_transformer.train.checkpoint import load_checkpoint
    from sparse_transformer.train.loop import TrainConfig, train

    opts = options_from_args(args)
    opts.setdefault("out", f"runs/{opts.get('preset', 'wiki-small')}")
    if args.resume:
        ckpt = load_checkpoint(Path(opts["out"]), with_state=False)
        saved = dict(ckpt.train.get("options", {}))
        saved.update({k: v for k, v in opts.items() if k != "model"})
        opts = saved
    else:
        # validate the model options before touching data or the run directory
        ModelConfig.from_preset(opts.get("preset", "wiki-small"), **opts.get("model", {}))
    opts.update(resume=args.resume, overwrite=args.overwrite)
    cfg = TrainConfig(**opts)
    summary = train(cfg)
    if summary["valid_bpb"] is not None:
        tps = summary["tokens_per_s"] or 0.0
        print(f"step {summary['step']}: validation {summary['valid_bpb']:.4f} bits per byte; "
              f"{summary['elapsed_s']:.0f} s, {tps:,.0f} tokens/s; run in {summary['run_dir']}")
    return 0
