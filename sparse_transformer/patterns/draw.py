"""Pictures of attention patterns, like the paper's Figure 3 (section 4.3).

One panel per head: queries down, keys across, allowed cells dark. The block grid of the plan is
drawn as thin lines and the tiles the plan computes are lightly shaded, so the masked-out part of
computed tiles (wasted work) is visible at a glance. Heads whose strided column runs in the
paper's reordered positions (section 5.5) get a second panel in those positions, where the
column is a causal band of n / l keys.

Needs matplotlib (``pip install 'sparse-transformer[pictures]'``); imported lazily.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.plan import strided_permutation

MAX_PICTURE_CTX = 4096  # the picture is n x n pixels per head

_ALLOWED = np.array([0.11, 0.20, 0.42])  # dark blue
_COMPUTED = np.array([0.80, 0.87, 0.97])  # light blue: computed but masked out
_EMPTY = np.array([1.0, 1.0, 1.0])
_PADDING = np.array([0.88, 0.88, 0.88])  # positions added to reach a multiple of the stride


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


def _panel(ax, mask: np.ndarray, computed: np.ndarray, pad: np.ndarray | None, block: int,
           title: str) -> None:
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
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def draw_pattern(pattern: Pattern, n_ctx: int, n_heads: int | None = None,
                 block: int | None = None, path: str | Path | None = None,
                 reorder: bool = True):
    """Draw each head of ``pattern`` at ``n_ctx`` positions with its block grid.

    ``block`` defaults to ``max(1, n_ctx // 16)``. With ``reorder`` (the default), heads whose
    column part the plan reorders get a second panel in reordered positions. Saves a PNG to
    ``path`` (parent folders created) and returns the path; without ``path`` returns the
    matplotlib Figure.
    """
    if not isinstance(pattern, Pattern):
        raise TypeError(f"draw_pattern takes a Pattern, got {type(pattern).__name__}")
    _check_positive_int("n_ctx", n_ctx)
    if n_ctx > MAX_PICTURE_CTX:
        raise ValueError(f"pictures are n_ctx x n_ctx pixels per head; use n_ctx <= "
                         f"{MAX_PICTURE_CTX}, got {n_ctx}")
    n_heads = pattern.head_multiple if n_heads is None else n_heads
    pattern.check_heads(n_heads)
    block = max(1, n_ctx // 16) if block is None else _check_positive_int("block", block)
    plan = pattern.plan(n_ctx, n_heads, block, block, reorder=reorder)
    N = plan.n_pad
    full = pattern.mask(N, n_heads).numpy()
    short = pattern.name if len(pattern.name) <= 48 else pattern.name[:45] + "..."

    panels = []  # (mask, computed, padding, title)
    for h in range(n_heads):
        comps = plan.head_components(h)
        natural = [cp.pairs[int(cp.head_class[cp.heads.index(h)])][:2]
                   for cp in comps if cp.order == 0]
        reordered = [cp for cp in comps if cp.order]
        note = "" if not reordered else " (column: reordered)"
        panels.append((full[h, :n_ctx, :n_ctx], _tiles_image((n_ctx, n_ctx), natural, block, block),
                       None, f"{short}\nhead {h}{note}"))
        for cp in reordered:
            # only this component's part, in its own positions: a causal band of n / l keys
            c = int(cp.head_class[cp.heads.index(h)])
            pos = np.arange(N)
            mask = np.zeros((N, N), dtype=bool)
            for t in cp.terms[c]:
                mask |= t.allowed_np(pos[:, None], pos[None, :])
            pad = strided_permutation(N, cp.order).numpy() >= n_ctx
            mask &= ~pad[:, None] & ~pad[None, :]
            panels.append((mask, _tiles_image((N, N), [cp.pairs[c][:2]], block, block),
                           pad[:, None] | pad[None, :],
                           f"head {h}: column part, reordered\ni -> (i mod {cp.order}) n/{cp.order}"
                           f" + i // {cp.order}"))

    Figure = _figure_cls()
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(2.9 * cols, 3.1 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (mask, computed, pad, title) in zip(axes.flat, panels):
        _panel(ax, mask, computed, pad, block, title)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"n_ctx={n_ctx}, block={block}: dark = allowed, shaded = computed tile",
                 fontsize=8, y=0.995)
    fig.tight_layout()
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
