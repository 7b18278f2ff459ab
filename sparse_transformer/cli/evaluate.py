"""sparse-transformer eval: bits per byte of a checkpoint, beside classical compressors (paper 7).

Scores every byte of a split once. With --min-context M, windows slide by n_ctx - M and only
their last n_ctx - M bytes are scored, so each byte sees at least M earlier bytes (paper
Table 3). The data is the one the run trained on (the absolute path it recorded) unless --data
says otherwise; eval never downloads or prepares data.

Beside the model it prints what classical compressors spend on the same bytes: PPMd (order 16)
after reading the whole train split, xz, bz2 and zlib on the bytes alone, and for images PNG
(sparse_transformer/baselines.py). For a whole split they come from meta.json, where prepare
stored them; for --max-bytes they are computed (PPMd reads the train split first: seconds to a
minute).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

from sparse_transformer.checks import check_choice, check_device, check_int, check_text
from sparse_transformer.precision import PRECISIONS

SPLITS = ("valid", "test")


@dataclass
class EvalOptions:
    checkpoint: str
    data: str | None = None
    data_root: str | None = None
    split: str = "valid"
    min_context: int = 0
    max_bytes: int = 0
    batch_size: int = 16
    precision: str = "fp32"
    device: str = "auto"
    compressors: bool = True
    json: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_text("--checkpoint", self.checkpoint)
        for name in ("data", "data_root"):
            if getattr(self, name) is not None:
                check_text("--" + name.replace("_", "-"), getattr(self, name))
        check_choice("--split", self.split, SPLITS)
        check_int("--min-context", self.min_context, 0)
        check_int("--max-bytes", self.max_bytes, 0)
        check_int("--batch-size", self.batch_size, 1)
        check_choice("--precision", self.precision, PRECISIONS)
        check_device("--device", self.device)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="bits per byte on valid/test, with compressors for context",
                       description=__doc__)
    d = EvalOptions("-")
    p.add_argument("--checkpoint", "-c", required=True, help="run directory or step folder")
    p.add_argument("--data", help="data set name, prepared directory or file (default: the "
                   "data the run trained on)")
    p.add_argument("--data-root", help="where a named --data is prepared (default: data)")
    p.add_argument("--split", default=d.split, choices=SPLITS, help="which split to score")
    p.add_argument("--min-context", type=int, default=d.min_context,
                   help="score only bytes with at least this much context (< n_ctx)")
    p.add_argument("--max-bytes", type=int, default=d.max_bytes,
                   help="evaluate the first N bytes of the split (0: all)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="windows per forward pass")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="activations: fp32, bf16 or fp16 (attention logits stay fp32)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-compressors", action="store_true",
                   help="skip the compressor baselines (PPMd, xz, bz2, zlib, PNG)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = EvalOptions(args.checkpoint, args.data, args.data_root, args.split,
                       args.min_context, args.max_bytes, args.batch_size, args.precision,
                       args.device, not args.no_compressors, args.json,
                       not args.no_progress and not args.json)

    from sparse_transformer.cli.common import run_data
    from sparse_transformer.evaluate import evaluate_bpb
    from sparse_transformer.train.checkpoint import load_model
    from sparse_transformer.baselines import describe
    from sparse_transformer.train.distributed import pick_device

    device = pick_device(opts.device)
    model, ckpt = load_model(opts.checkpoint, device)
    data = run_data(ckpt.train, opts.data, opts.data_root)
    split = data.split(opts.split)
    if opts.max_bytes:
        split = split[:opts.max_bytes]
    record = data.record_size if model.cfg.embedding == "image" else None
    res = evaluate_bpb(model, split, batch_size=opts.batch_size, min_context=opts.min_context,
                       record_size=record, precision=opts.precision, device=device,
                       progress=opts.progress)
    if not math.isfinite(res.bits_per_byte):  # finite weights can still overflow in fp16
        raise ValueError(f"the model's loss is not finite at --precision {opts.precision}; "
                         f"try fp32")
    out = {"checkpoint": str(ckpt.path), "step": ckpt.step, "data": data.name,
           "split": opts.split, "bytes": int(split.size), "scored": res.n_scored,
           "min_context": res.min_context, "model_bpb": res.bits_per_byte}
    if opts.compressors:
        out["baselines_bpb"] = split_baselines(data, opts.split, split)
    if opts.json:
        print(json.dumps(out))
        return 0
    print(f"{data.name} {opts.split} ({split.size:,} bytes), checkpoint step {ckpt.step}:")
    ctx = f", min context {res.min_context}" if res.min_context else ""
    unit = "bits per dim" if data.kind == "image" else "bits per byte"  # images: byte = dim
    print(f"  sparse transformer  {res.bits_per_byte:.4f} {unit}{ctx}")
    for name, bpb in sorted(out.get("baselines_bpb", {}).items(), key=lambda kv: kv[1]):
        print(f"  {name:<18s}  {bpb:.4f} {unit}  ({describe(name)})")
    return 0


def split_baselines(data, split_name: str, scored) -> dict[str, float]:
    """The baselines of the scored bytes: stored in meta.json for a whole split, else computed
    (PPMd reads the train split as context first)."""
    import sys

    from sparse_transformer.baselines import baselines

    stored = (data.meta.get("baselines") or {}).get(split_name)
    if isinstance(stored, dict) and scored.size == data.split(split_name).size:
        return {k: float(v) for k, v in stored.items()}
    shape = tuple(data.meta["shape"]) if data.kind == "image" and data.meta.get("shape") else None
    print(f"computing the compressor baselines of {scored.size:,} bytes (PPMd reads the "
          f"{data.split('train').size:,} train bytes first) ...", file=sys.stderr, flush=True)
    return baselines(scored, context=data.split("train"), image_shape=shape,
                     log=lambda msg: print(msg, file=sys.stderr))
