"""``sparse-transformer sample``: draw bytes from a checkpoint (temperature 1.0 as in paper 6)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample bytes (text) from a checkpoint", description=__doc__)
    p.add_argument("--checkpoint", "-c", required=True, help="run directory or step folder")
    p.add_argument("--prompt", default=None, help="text the samples continue (UTF-8)")
    p.add_argument("--prompt-file", default=None, help="file whose bytes the samples continue")
    p.add_argument("--n-bytes", type=int, default=None,
                   help="bytes to generate (default 500; one image for image models)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--no-cache", action="store_true",
                   help="decode without the pattern-aware key/value cache (the whole window "
                   "through the model for every byte; same output, much slower)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sparse_transformer.data.registry import get_writer
    from sparse_transformer.sample.generate import generate
    from sparse_transformer.train.checkpoint import load_model
    from sparse_transformer.train.distributed import pick_device

    if args.out and Path(args.out).exists() and not args.force:
        raise ValueError(f"{args.out} exists; pass --force to overwrite it")
    if args.prompt is not None and args.prompt_file:
        raise ValueError("give --prompt or --prompt-file, not both")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    device = pick_device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    meta = dict(ckpt.train.get("data") or {})
    kind = meta.get("kind", "text")
    writer = get_writer(kind)  # fail before sampling if this kind cannot be written
    if args.prompt_file:
        prompt = Path(args.prompt_file).read_bytes()
    else:
        prompt = (args.prompt or "").encode("utf-8")
    n_new = args.n_bytes
    if n_new is None:
        n_new = model.cfg.n_ctx - len(prompt) if kind != "text" else 500
    if n_new < 0:
        raise ValueError(f"--n-bytes must be >= 0, got {n_new}")
    gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    tokens = torch.tensor(list(prompt), dtype=torch.long).repeat(args.num_samples, 1)
    out = generate(model, tokens, n_new, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, generator=gen, progress=args.progress,
                   cache=not args.no_cache)
    samples = out.cpu().numpy().astype(np.uint8)
    written = writer(samples, args.out, meta)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
