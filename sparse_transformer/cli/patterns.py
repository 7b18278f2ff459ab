"""`sparse-transformer patterns`: list, draw and cost the attention patterns (paper 4.2-4.3).

    sparse-transformer patterns list
    sparse-transformer patterns show fixed --stride 16 --summary 4 --n-ctx 256 --png out.png
    sparse-transformer patterns cost "strided(stride=128, mode='split')" --n-ctx 16384 --heads 8
"""

from __future__ import annotations

import argparse
import sys

from sparse_transformer.patterns import parse_pattern
from sparse_transformer.patterns.base import Pattern

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

_EPILOG = ("NAME is a family (" + ", ".join(FAMILIES) + ") with its options, or a full spec "
           "such as \"fixed(stride=128, summary=32, distinct=4)\" or "
           "\"union(local(window=64), column(stride=64))\".")


def _add_pattern_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="pattern family or full spec string")
    g = p.add_argument_group("pattern parameters (for a family NAME)")
    g.add_argument("--stride", type=int, help="l: block size / stride (strided, column, fixed)")
    g.add_argument("--summary", type=int, help="c: summary columns per block (fixed)")
    g.add_argument("--distinct", type=int, help="V: distinct summary sub-blocks (fixed; default 1)")
    g.add_argument("--mode", choices=("merge", "split", "local", "column"),
                   help="strided heads: merge (default), split, local or column")
    g.add_argument("--window", type=int, help="local window (local)")
    p.add_argument("--heads", type=int, default=None,
                   help="number of heads (default: the fewest the pattern allows)")


def pattern_from_args(args: argparse.Namespace) -> Pattern:
    """Build the pattern named on the command line; ValueError with one line on bad input."""
    name = args.name.strip()
    given = {k: getattr(args, k) for k in ("stride", "summary", "distinct", "mode", "window")
             if getattr(args, k) is not None}
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
    kwargs = ", ".join(f"{k}={v!r}" for k, v in given.items())
    return parse_pattern(f"{name}({kwargs})")


def _heads(args: argparse.Namespace, p: Pattern) -> int:
    h = p.head_multiple if args.heads is None else args.heads
    p.check_heads(h)
    return h


def _show(args: argparse.Namespace) -> int:
    p = pattern_from_args(args)
    heads = _heads(args, p)
    from sparse_transformer.patterns.draw import draw_pattern

    block = args.block or max(1, args.n_ctx // 16)
    if args.png:
        path = draw_pattern(p, args.n_ctx, heads, block, args.png, reorder=not args.no_reorder)
        print(f"wrote {path}")
    cost = p.cost(args.n_ctx, block, heads, reorder=not args.no_reorder)
    print(f"{p.name}: {heads} head(s), n_ctx={args.n_ctx}, block={block}: "
          f"{cost.tiles_computed} of {cost.tiles_causal} causal tiles "
          f"({cost.work_fraction:.1%}), density {cost.density:.1%}")
    if not args.png and args.n_ctx <= 64:
        _print_ascii(p, args.n_ctx, heads)
    elif not args.png:
        print("(add --png PATH for a picture; n_ctx <= 64 prints the mask as text)")
    return 0


def _print_ascii(p: Pattern, n: int, heads: int) -> None:
    mask = p.mask(n, heads)
    for h in range(heads):
        print(f"head {h}:")
        for row in mask[h].tolist():
            print("".join("#" if x else "." for x in row))


def _cost(args: argparse.Namespace) -> int:
    p = pattern_from_args(args)
    heads = _heads(args, p)
    c = p.cost(args.n_ctx, args.block, heads, args.head_dim, reorder=not args.no_reorder)
    print(c.to_json() if args.json else c)
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
                      help="sequence length to draw (default 256, at most 4096)")
    show.add_argument("--block", type=_positive, default=None,
                      help="tile size of the grid (default n_ctx // 16)")
    show.add_argument("--png", metavar="PATH", help="write the picture here (folders created)")
    show.add_argument("--no-reorder", action="store_true",
                      help="plan strided columns in natural order (shows the wasted tiles)")
    show.set_defaults(func=_show)

    cost = sub.add_parser(
        "cost", help="tiles computed, density, FLOPs and speed-up vs dense causal",
        description="Static cost of a pattern for a block-sparse kernel at one length and "
        "tile size, compared with dense causal attention at the same tile size.",
        epilog=_EPILOG)
    _add_pattern_args(cost)
    cost.add_argument("--n-ctx", type=_positive, default=16384, help="sequence length "
                      "(default 16384)")
    cost.add_argument("--block", type=_positive, default=64, help="tile size (default 64)")
    cost.add_argument("--head-dim", type=_positive, default=64,
                      help="head dimension, for FLOPs (default 64)")
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
