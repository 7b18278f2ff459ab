"""Static cost of a pattern at one (n_ctx, block): what a block-sparse kernel computes (issue 2).

Everything is read off the block plan (``plan.py``), so the numbers are those of the kernels
that execute that plan, and nothing n x n is built:

    tiles_computed   full + partial tiles over all heads and components
    tiles_causal     tiles a dense causal kernel computes at the same block size, all heads
    work_fraction    tiles_computed / tiles_causal; expected_speedup = 1 / work_fraction
    useful_entries   exact number of allowed (h, i, j) with i, j < n_ctx (the pattern's |S|)
    density          useful_entries / (tiles_computed * block^2): how much of a computed tile
                     is real work (the rest is masked inside partial tiles or padding)
    flops_*          4 * head_dim * block^2 per tile for the forward (QK^T and PV, 2 matmuls);
                     the backward adds 5 matmuls of the same size, so forward+backward = 3.5x

Paper 4.2-4.3: factorized patterns cut attention from O(n^2) to O(n sqrt n); this module says
how much of that a tiled kernel actually keeps at a given tile size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.plan import ComponentPlan

_CHUNK = 1 << 22  # tile elements evaluated at once when counting partial tiles


@dataclass(frozen=True)
class ComponentCost:
    """One plan component: its heads, position order (0 natural, l reordered by stride l)."""

    order: int
    heads: tuple[int, ...]
    tiles_full: int  # summed over the component's heads
    tiles_partial: int

    @property
    def tiles(self) -> int:
        return self.tiles_full + self.tiles_partial


@dataclass(frozen=True)
class PatternCost:
    pattern: str
    n_ctx: int
    block: int
    n_heads: int
    head_dim: int
    reorder: bool
    n_pad: int  # length the plan works at (n_ctx rounded up to tiles and reordering strides)
    tiles_computed: int
    tiles_causal: int
    useful_entries: int
    causal_entries: int  # n_heads * n_ctx * (n_ctx + 1) / 2
    flops_forward: int
    flops_forward_backward: int
    components: tuple[ComponentCost, ...]

    @property
    def work_fraction(self) -> float:
        return self.tiles_computed / self.tiles_causal

    @property
    def expected_speedup(self) -> float:
        """The tile-count bound: speed-up over dense causal at the same tile size if time
        followed tiles. An upper bound; measured speed-ups are lower (docs/kernels.md)."""
        return 1.0 / self.work_fraction

    @property
    def density(self) -> float:
        return self.useful_entries / (self.tiles_computed * self.block**2)

    @property
    def entry_fraction(self) -> float:
        """Allowed entries relative to causal attention (the tile-free ideal work fraction)."""
        return self.useful_entries / self.causal_entries

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("work_fraction", "expected_speedup", "density", "entry_fraction"):
            d[k] = getattr(self, k)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        rows = [
            ("pattern", self.pattern),
            ("n_ctx / padded", f"{self.n_ctx:,} / {self.n_pad:,}"),
            ("block, heads, head_dim", f"{self.block}, {self.n_heads}, {self.head_dim}"),
            ("reordered columns", "yes" if self.reorder else "no"),
            ("tiles computed", f"{self.tiles_computed:,}"),
            ("tiles dense causal", f"{self.tiles_causal:,}"),
            ("work vs causal", f"{self.work_fraction:.2%}"),
            ("tile-count bound", f"{self.expected_speedup:.2f}x (upper bound on speed-up; "
                                 "measured speed-ups\nare lower, see docs/kernels.md)"),
            ("useful entries", f"{self.useful_entries:,} ({self.entry_fraction:.2%} of causal)"),
            ("density in computed tiles", f"{self.density:.1%}"),
            ("GFLOP forward", f"{self.flops_forward / 1e9:,.3f}"),
            ("GFLOP forward+backward", f"{self.flops_forward_backward / 1e9:,.3f}"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = []
        for k, v in rows:  # a value's continuation lines align under its first line
            first, *more = v.split("\n")
            lines.append(f"{k:<{width}}  {first}")
            lines += [f"{'':<{width}}  {m}" for m in more]
        lines.append("")
        lines.append(f"{'component':<10} {'order':>8} {'heads':<16} {'full':>10} {'partial':>10}")
        for k, c in enumerate(self.components):
            heads = ",".join(map(str, c.heads))
            order = "natural" if c.order == 0 else f"l={c.order}"
            lines.append(f"{k:<10} {order:>8} {heads:<16} {c.tiles_full:>10,} "
                         f"{c.tiles_partial:>10,}")
        return "\n".join(lines)


def _real_positions(cp: ComponentPlan, n_ctx: int) -> np.ndarray:
    """Bool [cp.n_ctx]: which positions of the component's order are real (original < n_ctx)."""
    p = np.arange(cp.n_ctx, dtype=np.int64)
    if cp.order:
        g = cp.n_ctx // cp.order
        p = (p % g) * cp.order + p // g  # original position of reordered slot p
    return p < n_ctx


def _useful(cp: ComponentPlan, cls: int, n_ctx: int) -> int:
    """Allowed real (i, j) pairs of one class of a component, counted tile by tile."""
    a, b, full = cp.pairs[cls]
    qb, kb = cp.q_block, cp.k_block
    real = _real_positions(cp, n_ctx)
    q_real = real.reshape(-1, qb).all(1)[a]
    k_real = real.reshape(-1, kb).all(1)[b]
    easy = full & q_real & k_real
    total = int(easy.sum()) * qb * kb
    idx = np.nonzero(~easy)[0]
    ii = np.arange(qb)[:, None]
    jj = np.arange(kb)[None, :]
    step = max(1, _CHUNK // (qb * kb))
    for s in range(0, idx.size, step):
        sub = idx[s:s + step]
        i = (a[sub] * qb)[:, None, None] + ii
        j = (b[sub] * kb)[:, None, None] + jj
        ok = np.zeros((sub.size, qb, kb), dtype=bool)
        for t in cp.terms[cls]:
            ok |= t.allowed_np(i, j)
        ok &= real[i] & real[j]
        total += int(ok.sum())
    return total


def pattern_cost(pattern: Pattern, n_ctx: int, block: int = 64, n_heads: int | None = None,
                 head_dim: int = 64, reorder: bool = True) -> PatternCost:
    """Cost report of ``pattern`` at ``n_ctx`` positions with square ``block`` tiles.

    ``tiles_causal`` is the dense causal kernel at the same tile size on n_ctx rounded up to the
    tile (T (T + 1) / 2 tiles per head, T = ceil(n_ctx / block)), the honest baseline even when
    the plan pads further for a reordering stride.
    """
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern_cost takes a Pattern, got {type(pattern).__name__}")
    _check_positive_int("n_ctx", n_ctx)
    _check_positive_int("block", block)
    n_heads = pattern.head_multiple if n_heads is None else n_heads
    _check_positive_int("n_heads", n_heads)
    _check_positive_int("head_dim", head_dim)
    if not isinstance(reorder, bool):
        raise TypeError(f"reorder must be a bool, got {type(reorder).__name__}")
    plan = pattern.plan(n_ctx, n_heads, block, block, reorder=reorder)

    comps, useful = [], 0
    for cp in plan.components:
        cls = cp.head_class.long()
        full = int(cp.full_count.sum(-1).long()[cls].sum())
        part = int(cp.partial_count.sum(-1).long()[cls].sum())
        comps.append(ComponentCost(cp.order, tuple(cp.heads), full, part))
        heads_per_class = np.bincount(cls.numpy(), minlength=len(cp.terms))
        for c, count in enumerate(heads_per_class):
            if count:
                useful += int(count) * _useful(cp, c, n_ctx)

    tiles = sum(c.tiles for c in comps)
    t = -(-n_ctx // block)
    causal_tiles = n_heads * t * (t + 1) // 2
    flops = 4 * head_dim * block * block * tiles
    return PatternCost(
        pattern=pattern.name, n_ctx=n_ctx, block=block, n_heads=n_heads, head_dim=head_dim,
        reorder=reorder, n_pad=plan.n_pad, tiles_computed=tiles, tiles_causal=causal_tiles,
        useful_entries=useful, causal_entries=n_heads * n_ctx * (n_ctx + 1) // 2,
        flops_forward=flops, flops_forward_backward=flops * 7 // 2,
        components=tuple(comps),
    )
