"""``sparse-transformer eval``: bits per byte of a checkpoint, beside lzma/bz2/zlib (paper 7)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="bits per byte on valid/test, with compressors for context",
                       description=__doc__)
    p.add_argument("--checkpoint", "-c", required=True, help="run directory or step folder")
    p.add_argument("--data", help="data set (default: the one the run trained on)")
    p.add_argument("--data-root", default=None, help="where named data sets live")
    p.add_argument("--split", default="valid", choices=("valid", "test"))
    p.add_argument("--min-context", type=int, default=0,
                   help="score only bytes with at least this much context (paper Table 3)")
    p.add_argument("--max-bytes", type=int, default=0, help="evaluate the first N bytes, 0 = all")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--device", default="auto")
    p.add_argument("--no-compressors", action="store_true", help="skip lzma/bz2/zlib")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparse_transformer.data.bytes import resolve_data
    from sparse_transformer.evaluate import compressor_bpb, evaluate_bpb
    from sparse_transformer.train.checkpoint import load_model
    from sparse_transformer.train.distributed import pick_device

    device = pick_device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    opts = ckpt.train.get("options", {})
    spec = args.data or opts.get("data")
    if not spec:
        raise ValueError("the checkpoint does not say which data it trained on; pass --data")
    data = resolve_data(spec, args.data_root or opts.get("data_root", "data"))
    split = data.split(args.split)
    if args.max_bytes:
        split = split[:args.max_bytes]
    record = data.record_size if model.cfg.embedding == "image" else None
    res = evaluate_bpb(model, split, batch_size=args.batch_size, min_context=args.min_context,
                       record_size=record, precision=args.precision, device=device,
                       progress=not args.no_progress and not args.json)
    out = {"checkpoint": str(ckpt.path), "step": ckpt.step, "data": data.name,
           "split": args.split, "bytes": int(split.size), "scored": res.n_scored,
           "min_context": res.min_context, "model_bpb": res.bits_per_byte}
    if not args.no_compressors:
        out["compressors_bpb"] = compressor_bpb(split)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{data.name} {args.split} ({split.size:,} bytes), checkpoint step {ckpt.step}:")
    ctx = f", min context {res.min_context}" if res.min_context else ""
    unit = "bits per dim" if data.kind == "image" else "bits per byte"  # images: byte = dim
    print(f"  sparse transformer  {res.bits_per_byte:.4f} {unit}{ctx}")
    for name, bpb in sorted(out.get("compressors_bpb", {}).items(), key=lambda kv: kv[1]):
        print(f"  {name:<18s}  {bpb:.4f} {unit}")
    return 0
