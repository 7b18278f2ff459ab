"""Pictures of attention patterns, like the paper's Figure 3 (section 4.3).

One panel per head and plan component: query positions down, key positions across, allowed
cells dark. The tile grid of the plan is drawn as thin lines and the tiles the plan computes
are lightly shaded, so the masked-out part of computed tiles (wasted work) shows at a glance;
the figure's title names the pattern in words (``describe``: "Fixed attention, l = 16, c = 4")
and counts computed tiles against dense causal attention at the same tile size.

A head's part that the plan computes in the paper's reordered positions (section 5.5: strided
columns, i -> (i mod l)(n/l) + i // l) is drawn in those positions, where it is a causal band
of n / l keys, and its axes say "reordered". A head with a natural-order part as well (strided
"merge") gets one panel per part. ``reorder=False`` plans and draws everything in natural
order.

The format follows the file's suffix: PNG (``dpi``, 200 by default, print quality at the
figure's 3-inch panels), or SVG and PDF, which are vector and scale for a paper.

Needs matplotlib (``pip install 'sparse-transformer[pictures]'``); imported lazily.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.plan import ComponentPlan, strided_permutation

MAX_PICTURE_CTX = 4096  # the picture is n x n pixels per panel
FORMATS = (".png", ".svg", ".pdf")  # by the path's suffix; SVG and PDF are vector
DPI = 200  # PNG resolution: sharp in print at the panels' 3.1 x 3.3 inches
MAX_DPI = 1200

_ALLOWED = np.array([0.11, 0.20, 0.42])  # dark blue
_COMPUTED = np.array([0.80, 0.87, 0.97])  # light blue: computed but masked out
_EMPTY = np.array([1.0, 1.0, 1.0])
_PADDING = np.array([0.88, 0.88, 0.88])  # positions added to reach a multiple of the stride

_PANEL_IN = (3.1, 3.3)  # inches per panel (width, height), labels included
_TITLE_CHARS = 38  # per line of a panel title at 8 pt in a 3.1-inch panel
_TITLE_CHARS_PER_IN = 12  # for the 9 pt figure title


def _figure_cls():
    # The object-oriented Figure renders to files without pyplot, so we never switch the
    # user's global backend (a notebook keeps its inline display of the returned Figure).
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "drawing patterns needs matplotlib: pip install 'sparse-transformer[pictures]'"
        ) from err
    return Figure


def _tiles_image(shape: tuple[int, int], pairs, qb: int, kb: int) -> np.ndarray:
    """Bool [rows, cols] marking every element of the listed (a, b) tiles."""
    n_rows, n_cols = -(-shape[0] // qb), -(-shape[1] // kb)
    tiles = np.zeros((n_rows + 1, n_cols + 1), dtype=bool)
    for a, b in pairs:
        keep = (a < n_rows) & (b < n_cols)
        tiles[a[keep], b[keep]] = True
    img = np.repeat(np.repeat(tiles, qb, 0), kb, 1)
    return img[: shape[0], : shape[1]]


def _component_mask(cp: ComponentPlan, cls: int) -> np.ndarray:
    """Bool [N, N] of one class's terms in the component's own positions (N = cp.n_ctx)."""
    pos = np.arange(cp.n_ctx)
    mask = np.zeros((cp.n_ctx, cp.n_ctx), dtype=bool)
    for t in cp.terms[cls]:
        mask |= t.allowed_np(pos[:, None], pos[None, :])
    return mask


def _ticks(n: int, block: int) -> list[int]:
    """At most five ticks on tile boundaries, from 0 to n."""
    step = block * max(1, math.ceil(n / block / 4))
    return list(range(0, n + 1, step))


def _panel(ax, mask: np.ndarray, computed: np.ndarray, pad: np.ndarray | None, block: int,
           title: str, reordered: bool) -> None:
    rgb = np.broadcast_to(_EMPTY, mask.shape + (3,)).copy()
    if pad is not None:
        rgb[pad] = _PADDING
    rgb[computed] = _COMPUTED
    rgb[mask] = _ALLOWED
    n_q, n_k = mask.shape
    ax.imshow(rgb, interpolation="nearest", extent=(0, n_k, n_q, 0))
    grid = dict(color="0.55", linewidth=0.4)
    for x in range(block, n_k, block):
        ax.axvline(x, **grid)
    for y in range(block, n_q, block):
        ax.axhline(y, **grid)
    ax.set_xlim(0, n_k)
    ax.set_ylim(n_q, 0)
    ax.set_xticks(_ticks(n_k, block))
    ax.set_yticks(_ticks(n_q, block))
    ax.tick_params(labelsize=7, length=2, pad=1)
    ax.xaxis.set_ticks_position("top")  # queries run down from the top-left corner
    ax.xaxis.set_label_position("top")
    where = " (reordered)" if reordered else ""
    ax.set_xlabel(f"key position{where}", fontsize=7, labelpad=2)
    ax.set_ylabel(f"query position{where}", fontsize=7, labelpad=2)
    ax.set_title(textwrap.fill(title, _TITLE_CHARS), fontsize=8, pad=4)


def _panels(pattern: Pattern, n_ctx: int, n_heads: int, block: int, reorder: bool):
    """(mask, computed, padding, title, reordered) per head and component, and the plan."""
    plan = pattern.plan(n_ctx, n_heads, block, block, reorder=reorder)
    panels = []
    for h in range(n_heads):
        comps = plan.head_components(h)
        natural = [cp for cp in comps if cp.order == 0]
        for cp in natural:
            c = int(cp.head_class[cp.heads.index(h)])
            parts = ", ".join(dict.fromkeys(t.rules.label for t in cp.terms[c]))
            title = f"head {h}" if len(comps) == 1 else f"head {h}: {parts} part"
            tiles = _tiles_image((n_ctx, n_ctx), [cp.pairs[c][:2]], block, block)
            panels.append((_component_mask(cp, c)[:n_ctx, :n_ctx], tiles, None, title, False))
        for cp in comps:
            if cp.order == 0:
                continue
            # In its own positions: slot p holds original position perm[p]; padding is grey.
            c = int(cp.head_class[cp.heads.index(h)])
            n, l = cp.n_ctx, cp.order
            pad = strided_permutation(n, l).numpy() >= n_ctx
            mask = _component_mask(cp, c) & ~pad[:, None] & ~pad[None, :]
            tiles = _tiles_image((n, n), [cp.pairs[c][:2]], block, block)
            what = "column part" if natural else "column"
            title = (f"head {h}: {what} in reordered positions, "
                     f"i → (i mod {l})·{n // l} + ⌊i/{l}⌋")
            panels.append((mask, tiles, pad[:, None] | pad[None, :], title, True))
    return panels, plan


def describe(pattern: Pattern) -> str:
    """A pattern in words, for a figure's title: "Strided attention, l = 128, heads split
    between the row and the column part" rather than its spec string."""
    from sparse_transformer.patterns.causal import Causal
    from sparse_transformer.patterns.compose import PerHead, Union
    from sparse_transformer.patterns.fixed import Fixed
    from sparse_transformer.patterns.local import Local
    from sparse_transformer.patterns.strided import Column

    if isinstance(pattern, Causal):
        return "Dense causal attention"
    if isinstance(pattern, Local):
        return f"Local attention, window {pattern.window}"
    if isinstance(pattern, Column):
        return f"Column attention, stride {pattern.stride}"
    if isinstance(pattern, Fixed):
        distinct = (f", {pattern.distinct} distinct summary blocks per head group"
                    if pattern.distinct > 1 else "")
        return f"Fixed attention, l = {pattern.stride}, c = {pattern.summary}{distinct}"
    if isinstance(pattern, (Union, PerHead)):
        parts = pattern.parts
        strided = (len(parts) == 2 and isinstance(parts[0], Local)
                   and isinstance(parts[1], Column) and parts[0].window == parts[1].stride)
        if strided and isinstance(pattern, Union):
            return (f"Strided attention, l = {parts[1].stride}, row and column parts in "
                    f"every head")
        if strided:
            return (f"Strided attention, l = {parts[1].stride}, heads split between the row "
                    f"and the column part")
        inner = "; ".join(describe(q) for q in parts)
        return f"Union of {inner}" if isinstance(pattern, Union) else f"Heads split: {inner}"
    return pattern.name


def draw_pattern(pattern: Pattern, n_ctx: int, n_heads: int | None = None,
                 block: int | None = None, path: str | Path | None = None,
                 reorder: bool = True, *, dpi: int = DPI, title: str | None = None):
    """Draw each head of ``pattern`` at ``n_ctx`` positions with its tile grid.

    ``block`` (square tiles) defaults to ``max(1, n_ctx // 16)``. With ``reorder`` (the
    default) a head's part that the plan reorders is drawn in reordered positions. Saves the
    picture to ``path`` (parent folders created; PNG at ``dpi``, or vector SVG or PDF, by the
    suffix) and returns the path; without ``path`` returns the matplotlib Figure. ``title``
    replaces the first title line, ``describe(pattern)``.
    """
    if not isinstance(pattern, Pattern):
        raise TypeError(f"draw_pattern takes a Pattern, got {type(pattern).__name__}")
    if path is not None and Path(path).suffix.lower() not in FORMATS:
        raise ValueError(f"a pattern picture is {', '.join(FORMATS)} (by its suffix), got "
                         f"{str(path)!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 1 <= dpi <= MAX_DPI:
        raise ValueError(f"dpi must be an integer in [1, {MAX_DPI}], got {dpi!r}")
    _check_positive_int("n_ctx", n_ctx)
    if n_ctx > MAX_PICTURE_CTX:
        raise ValueError(f"pictures are n_ctx x n_ctx pixels per head; use n_ctx <= "
                         f"{MAX_PICTURE_CTX}, got {n_ctx}")
    n_heads = pattern.head_multiple if n_heads is None else n_heads
    pattern.check_heads(n_heads)
    block = max(1, n_ctx // 16) if block is None else _check_positive_int("block", block)
    panels, plan = _panels(pattern, n_ctx, n_heads, block, reorder)
    heading = describe(pattern) if title is None else title

    Figure = _figure_cls()
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(_PANEL_IN[0] * cols, _PANEL_IN[1] * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (mask, computed, pad, label, reordered) in zip(axes.flat, panels):
        _panel(ax, mask, computed, pad, block, label, reordered)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")

    t = -(-n_ctx // block)
    causal = n_heads * t * (t + 1) // 2  # dense causal at the same tiles, as ``cost`` counts
    done = plan.tiles_computed()
    heads = f"{n_heads} head{'s' if n_heads > 1 else ''}"
    width = int(_TITLE_CHARS_PER_IN * _PANEL_IN[0] * cols)
    stats = (f"n = {n_ctx}, {heads}, {block} x {block} tiles: {done:,} of {causal:,} causal "
             f"tiles computed ({done / causal:.0%})")
    fig.suptitle("\n".join(textwrap.fill(s, width) for s in (heading, stats)), fontsize=9)
    _legend(fig, any(p[2] is not None and p[2].any() for p in panels), cols)
    if path is None:
        return fig
    from sparse_transformer.codecs import atomic_write

    fmt = Path(path).suffix.lower().lstrip(".")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))


def _legend(fig, padding: bool, cols: int) -> None:
    from matplotlib.patches import Patch

    items = [(_ALLOWED, "allowed: the query attends to the key"),
             (_COMPUTED, "computed tile, masked out (wasted work)")]
    if padding:
        items.append((_PADDING, "padding (n rounded up to reorder)"))
    handles = [Patch(facecolor=c, edgecolor="0.4", linewidth=0.5, label=s) for c, s in items]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(items), cols),
               fontsize=7,
               frameon=False, handlelength=1.2, columnspacing=1.2)
