"""sparse-transformer patterns: list, draw and cost the attention patterns (paper 4.2-4.3).

    sparse-transformer patterns list
    sparse-transformer patterns show fixed --stride 16 --summary 4 --n-ctx 256 --out fig.pdf
    sparse-transformer patterns cost "strided(stride=128, mode='split')" --n-ctx 16384 --heads 8
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparse_transformer.checks import check_int, check_text

# name -> (one-line description, paper section, parameters the family takes)
FAMILIES = {
    "causal": ("dense causal attention, j <= i (the baseline)", "4.2", ()),
    "local": ("sliding window, 0 <= i - j < window", "4.3, Fig. 3b", ("window",)),
    "strided": ("local window of l plus every l-th earlier key; modes merge/split/local/column",
                "4.3, Fig. 3b; 5.1", ("stride", "mode")),
    "column": ("every l-th earlier key, j <= i and (i - j) mod l == 0", "4.3, Fig. 3b",
               ("stride",)),
    "fixed": ("own block of l plus the last c columns of every block (V distinct per head)",
              "4.3, Fig. 3c", ("stride", "summary", "distinct")),
}
MODES = ("merge", "split", "local", "column")

_EPILOG = textwrap.fill(
    "NAME is a family (" + ", ".join(FAMILIES) + ") with its options, or a full spec such as "
    "\"fixed(stride=128, summary=32, distinct=4)\" or "
    "\"union(local(window=64), column(stride=64))\".", width=78)

# Sizes that fit in memory. The planner holds about 100 bytes per tile it considers, and it
# settles a partial tile element by element, so both the tile count and a tile's area are
# bounded; a picture holds a few float arrays of n_pad x n_pad per head.
MAX_SHOW_CTX = 4096  # patterns.draw.MAX_PICTURE_CTX: pictures are n x n pixels per head
MAX_BLOCK = 2048
MAX_HEADS = 1024
MAX_TILES = 1 << 25
MAX_PIXELS = 1 << 26


@dataclass
class PatternOptions:
    """What ``show`` and ``cost`` share: the pattern, its heads and the tiling, all checked
    (against memory too) when built; ``pattern`` and ``heads`` are then ready to use."""

    name: str
    stride: int | None = None
    summary: int | None = None
    distinct: int | None = None
    mode: str | None = None
    window: int | None = None
    heads: int | None = None
    n_ctx: int = 256
    block: int | None = None
    reorder: bool = True
    pattern: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_text("NAME", self.name)
        for name in ("stride", "summary", "distinct", "window"):
            if getattr(self, name) is not None:
                check_int("--" + name, getattr(self, name), 1)
        check_int("--n-ctx", self.n_ctx, 1)
        self.pattern = _build_pattern(self)
        if self.heads is None:
            self.heads = self.pattern.head_multiple
        check_int("--heads", self.heads, 1, MAX_HEADS)
        self.pattern.check_heads(self.heads)
        self.block = self.default_block() if self.block is None else self.block
        check_int("--block", self.block, 1, MAX_BLOCK)
        bound = _tile_bound(self.pattern, self.n_ctx, self.heads, self.block, self.reorder)
        if bound > MAX_TILES:
            raise ValueError(f"n_ctx={self.n_ctx:,} with --block {self.block} and {self.heads} "
                             f"head(s) plans up to {bound:.3g} tiles, more than the "
                             f"{MAX_TILES:,} that fit in memory; use a larger --block or a "
                             f"smaller --n-ctx")

    def default_block(self) -> int:
        return 64


@dataclass
class ShowOptions(PatternOptions):
    png: str | None = None  # the picture's path (--out; --png is its older name)
    force: bool = False
    dpi: int = 200
    title: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_ctx, int) and not 1 <= self.n_ctx <= MAX_SHOW_CTX:
            raise ValueError(f"patterns show draws n_ctx <= {MAX_SHOW_CTX} positions (use "
                             f"'patterns cost' for longer ones), got --n-ctx {self.n_ctx}")
        if self.block is not None and isinstance(self.block, int) and self.block > self.n_ctx:
            raise ValueError(f"--block must be in [1, n_ctx={self.n_ctx}], got {self.block}")
        super().__post_init__()
        from sparse_transformer.patterns.draw import FORMATS, MAX_DPI

        check_int("--dpi", self.dpi, 1, MAX_DPI)
        if self.title is not None:
            check_text("--title", self.title)
        if self.png is not None:
            check_text("--out", self.png)
            if Path(self.png).suffix.lower() not in FORMATS:
                raise ValueError(f"--out must end in {', '.join(FORMATS)} (the picture's "
                                 f"format), got {self.png!r}")
            n_pad, _ = _planned_length(self.pattern, self.n_ctx, self.heads, self.block,
                                       self.reorder)
            if self.heads * n_pad * n_pad > MAX_PIXELS:
                raise ValueError(f"a picture of {self.heads} head(s) at {n_pad} positions is "
                                 f"{self.heads * n_pad * n_pad:,} pixels, more than "
                                 f"{MAX_PIXELS:,}; draw fewer heads or a smaller --n-ctx")
            from sparse_transformer.cli import require
            from sparse_transformer.codecs import check_new_files

            check_new_files([self.png], self.force)
            require("patterns show --out", "matplotlib")

    def default_block(self) -> int:
        return max(1, self.n_ctx // 16)


@dataclass
class CostOptions(PatternOptions):
    n_ctx: int = 16384
    head_dim: int = 64
    json: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("--head-dim", self.head_dim, 1)


def _build_pattern(opts: PatternOptions):
    """The pattern named on the command line; ValueError with one line on bad input."""
    from sparse_transformer.patterns import Pattern, parse_pattern

    name = opts.name.strip()
    given = {k: getattr(opts, k) for k in ("stride", "summary", "distinct", "mode", "window")
             if getattr(opts, k) is not None}
    if name not in FAMILIES:
        if "(" not in name:
            raise ValueError(f"unknown pattern {name!r}; choose one of {', '.join(FAMILIES)} "
                             f"or give a spec like \"fixed(stride=16, summary=4)\"")
        if given:
            raise ValueError("give parameters either inside the spec string or as options, "
                             "not both")
        p = parse_pattern(name)
        if not isinstance(p, Pattern):
            raise ValueError("a schedule has one pattern per layer; show one of its parts")
        return p
    wanted = FAMILIES[name][2]
    extra = sorted(set(given) - set(wanted))
    if extra:
        raise ValueError(f"{name} takes no --{', --'.join(extra)}"
                         + (f" (it takes --{', --'.join(wanted)})" if wanted else ""))
    required = {"local": ("window",), "strided": ("stride",), "column": ("stride",),
                "fixed": ("stride", "summary")}.get(name, ())
    missing = [k for k in required if k not in given]
    if missing:
        raise ValueError(f"{name} needs --{', --'.join(missing)}")
    import sparse_transformer.patterns as patterns

    return getattr(patterns, name)(**given)  # the factory checks every value's range


def _planned_length(p, n_ctx: int, heads: int, block: int, reorder: bool):
    """(the length the planner pads to, each head's split into natural and reordered parts),
    by the planner's own rules, without planning."""
    from sparse_transformer.patterns.plan import padded_length, split_head

    splits = [split_head(p.head_terms(h, heads), reorder) for h in range(heads)]
    return padded_length(n_ctx, block, block, {col[0] for _, col in splits if col}), splits


def _tile_bound(p, n_ctx: int, heads: int, block: int, reorder: bool) -> int:
    """An upper bound on the (query tile, key tile) pairs the planner emits, over all terms
    and heads, computed from the terms alone (so it costs nothing at any n_ctx): each kind's
    ``row_tiles`` (``patterns/kinds.py``), at the length and reordering the planner uses."""
    n, splits = _planned_length(p, n_ctx, heads, block, reorder)
    rows = n // block
    total = 0
    for h, (_, col) in enumerate(splits):
        total += sum(rows * min(rows, t.rules.row_tiles(t, n, block, col is not None))
                     for t in p.head_terms(h, heads))
    return total


def _show(args: argparse.Namespace) -> int:
    opts = ShowOptions(args.name, args.stride, args.summary, args.distinct, args.mode,
                       args.window, args.heads, args.n_ctx, args.block, not args.no_reorder,
                       png=args.out, force=args.force, dpi=args.dpi, title=args.title)
    p, heads, block = opts.pattern, opts.heads, opts.block
    if opts.png:
        from sparse_transformer.patterns.draw import draw_pattern

        path = draw_pattern(p, opts.n_ctx, heads, block, opts.png, reorder=opts.reorder,
                            dpi=opts.dpi, title=opts.title)
        print(f"wrote {path}")
    cost = p.cost(opts.n_ctx, block, heads, reorder=opts.reorder)
    print(f"{p.name}: {heads} head(s), n_ctx={opts.n_ctx}, block={block}: "
          f"{cost.tiles_computed} of {cost.tiles_causal} causal tiles "
          f"({cost.work_fraction:.1%}), density {cost.density:.1%}")
    if not opts.png and opts.n_ctx <= 64:
        _print_ascii(p, opts.n_ctx, heads)
    elif not opts.png:
        print("(add --out PATH.png, .svg or .pdf for a picture; n_ctx <= 64 prints the mask as "
              "text)")
    return 0


def _print_ascii(p, n: int, heads: int) -> None:
    mask = p.mask(n, heads)
    for h in range(heads):
        print(f"head {h}:")
        for row in mask[h].tolist():
            print("".join("#" if x else "." for x in row))


def _cost(args: argparse.Namespace) -> int:
    opts = CostOptions(args.name, args.stride, args.summary, args.distinct, args.mode,
                       args.window, args.heads, args.n_ctx, args.block, not args.no_reorder,
                       head_dim=args.head_dim, json=args.json)
    c = opts.pattern.cost(opts.n_ctx, opts.block, opts.heads, opts.head_dim,
                          reorder=opts.reorder)
    from sparse_transformer.kernels.dispatch import auto_backend

    picks = {dev: auto_backend(opts.pattern, opts.n_ctx, opts.heads, dev)
             for dev in ("cuda", "cpu")}
    if opts.json:
        print(json.dumps({**json.loads(c.to_json()), "auto_backend": picks}, indent=2))
    else:
        print(c)
        print(f'backend "auto" picks: {picks["cuda"]} on CUDA, {picks["cpu"]} on the CPU')
    return 0


def _list(args: argparse.Namespace) -> int:
    width = max(len(k) for k in FAMILIES)
    for name, (desc, section, params) in FAMILIES.items():
        opts = " ".join(f"--{k}" for k in params) or "-"
        print(f"{name:<{width}}  {desc}  [paper {section}]  options: {opts}")
    print("\nCombine in a spec string: union(...), per_head(...), schedule(...) (paper 5.1).")
    return 0


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _add_pattern_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="pattern family or full spec string")
    g = p.add_argument_group("pattern parameters (for a family NAME)")
    g.add_argument("--stride", type=int, help="l: block size / stride (strided, column, fixed)")
    g.add_argument("--summary", type=int, help="c: summary columns per block (fixed)")
    g.add_argument("--distinct", type=int, help="V: distinct summary sub-blocks (fixed; default 1)")
    g.add_argument("--mode", choices=MODES,
                   help="strided heads: merge (default), split, local or column")
    g.add_argument("--window", type=int, help="local window (local)")
    p.add_argument("--heads", type=_positive, default=None,
                   help=f"number of heads, at most {MAX_HEADS} (default: the fewest the "
                   f"pattern allows)")


def register(subparsers) -> None:
    top = subparsers.add_parser(
        "patterns", help="list, draw and cost attention patterns",
        description="Sparse Transformer attention patterns (paper sections 4.2-4.3, 5.1): "
        "list the families, draw a pattern's heads with their block grid, or report what a "
        "block-sparse kernel computes for it.")
    sub = top.add_subparsers(dest="patterns_command", metavar="ACTION")
    sub.required = True

    show = sub.add_parser(
        "show", help="draw a pattern's heads (PNG) and summarize its tiles",
        description="Draw each head's mask (queries down, keys across, like the paper's "
        "Figure 3) with the block grid and the computed tiles shaded.", epilog=_EPILOG)
    _add_pattern_args(show)
    show.add_argument("--n-ctx", type=_positive, default=256,
                      help=f"sequence length to draw, at most {MAX_SHOW_CTX}")
    show.add_argument("--block", type=_positive, default=None,
                      help="tile size of the grid, at most n_ctx (default: n_ctx // 16)")
    show.add_argument("--out", "--png", dest="out", metavar="PATH",
                      help="write the picture here: .png, or vector .svg or .pdf for a paper "
                      "(folders created)")
    show.add_argument("--dpi", type=_positive, default=ShowOptions.dpi,
                      help="resolution of a .png picture")
    show.add_argument("--title", help="the picture's title (default: the pattern in words, "
                      "e.g. 'Fixed attention, l = 16, c = 4')")
    show.add_argument("--force", action="store_true", help="replace --out if it exists")
    show.add_argument("--no-reorder", action="store_true",
                      help="plan strided columns in natural order (shows the wasted tiles)")
    show.set_defaults(func=_show)

    cost = sub.add_parser(
        "cost", help="tiles computed, density, FLOPs and speed-up vs dense causal",
        description="Static cost of a pattern for a block-sparse kernel at one length and "
        "tile size, compared with dense causal attention at the same tile size.",
        epilog=_EPILOG)
    _add_pattern_args(cost)
    cost.add_argument("--n-ctx", type=_positive, default=CostOptions.n_ctx,
                      help="sequence length")
    cost.add_argument("--block", type=_positive, default=64, help=f"tile size, at most "
                      f"{MAX_BLOCK}")
    cost.add_argument("--head-dim", type=_positive, default=CostOptions.head_dim,
                      help="head dimension, for FLOPs")
    cost.add_argument("--no-reorder", action="store_true",
                      help="plan strided columns in natural order instead of reordered")
    cost.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cost.set_defaults(func=_cost)

    lst = sub.add_parser("list", help="the pattern families with a one-line description",
                         description="List the pattern families and their paper sections.")
    lst.set_defaults(func=_list)


if __name__ == "__main__":  # pragma: no cover
    from sparse_transformer.cli import main

    sys.exit(main(["patterns", *sys.argv[1:]]))
