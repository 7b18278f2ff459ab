"""Element rules: the atoms every attention pattern is built from.

A pattern gives each head a small OR of *terms*. A term is one conjunction: causality with an
offset (``j <= i - offset``) AND at most one extra constraint, so that both its element truth
and the set of key blocks it touches can be written in closed form:

    window  W    i - j < W                          local band (paper 4.3, A^(1) of "strided")
    group   G    i // G == j // G                   own block (paper 4.3, A^(1) of "fixed"), or,
                                                    in reordered positions, one column of "strided"
    summary L    lo <= j mod L < hi                 summary columns (paper 4.3, A^(2) of "fixed")
    stride  l    (i - j) mod l == 0                 strided column in natural order (A^(2))

Coordinates are 0-based: i is the query position, j the key position. The same terms drive
the dense mask (``allowed``), the block plan (``term_blocks``), the in-kernel masks of the
Triton kernel and the FlexAttention ``mask_mod``; nothing sized by n x n is ever stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("causal", "window", "group", "summary", "stride")


@dataclass(frozen=True)
class Term:
    """``j <= i - offset`` AND (at most) one of window / group / summary / stride."""

    offset: int = 0  # minimum distance i - j; 0 includes the query itself
    window: int = 0  # > 0: i - j < window
    group: int = 0  # > 0: same group of `group` consecutive positions
    period: int = 0  # > 0: summary columns lo <= j mod period < hi
    lo: int = 0
    hi: int = 0
    stride: int = 0  # > 0: (i - j) mod stride == 0

    def __post_init__(self) -> None:
        extras = sum(x > 0 for x in (self.window, self.group, self.period, self.stride))
        if extras > 1:
            raise ValueError(f"a Term takes at most one of window/group/summary/stride: {self}")
        if min(self.offset, self.window, self.group, self.period, self.stride) < 0:
            raise ValueError(f"Term parameters must be >= 0: {self}")
        if self.period and not (0 <= self.lo < self.hi <= self.period):
            raise ValueError(f"summary columns need 0 <= lo < hi <= period: {self}")

    @property
    def kind(self) -> str:
        if self.window:
            return "window"
        if self.group:
            return "group"
        if self.period:
            return "summary"
        if self.stride:
            return "stride"
        return "causal"

    def as_tuple(self) -> tuple[int, int, int, int, int, int, int]:
        """Integer parameters in kernel order (offset, window, group, period, lo, hi, stride)."""
        return (self.offset, self.window, self.group, self.period, self.lo, self.hi, self.stride)

    # -- element truth ---------------------------------------------------------------------
    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Bool tensor, broadcasting i (queries) against j (keys); works inside FlexAttention."""
        d = i - j
        ok = d >= self.offset
        if self.window:
            ok = ok & (d < self.window)
        if self.group:
            ok = ok & (torch.div(i, self.group, rounding_mode="floor")
                       == torch.div(j, self.group, rounding_mode="floor"))
        if self.period:
            r = torch.remainder(j, self.period)
            ok = ok & (r >= self.lo) & (r < self.hi)
        if self.stride:
            ok = ok & (torch.remainder(d, self.stride) == 0)
        return ok

    def allowed_np(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The same truth on numpy integer arrays (used by the planner's exact checks)."""
        d = i - j
        ok = d >= self.offset
        if self.window:
            ok &= d < self.window
        if self.group:
            ok &= (i // self.group) == (j // self.group)
        if self.period:
            r = j % self.period
            ok &= (r >= self.lo) & (r < self.hi)
        if self.stride:
            ok &= (d % self.stride) == 0
        return ok


def _expand(starts: np.ndarray, ends: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, ...]:
    """Expand inclusive ranges [starts, ends] into (owner, value) pairs; empty ranges vanish."""
    counts = np.maximum(ends - starts + 1, 0)
    total = int(counts.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    own = np.repeat(owners, counts)
    first = np.repeat(starts, counts)
    # position inside each range: global index minus the range's first global index
    base = np.repeat(np.cumsum(counts) - counts, counts)
    vals = first + (np.arange(total, dtype=np.int64) - base)
    return own, vals


def term_blocks(
    term: Term, n: int, q_block: int, k_block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query block a, key block b) that holds at least one allowed element of ``term``.

    Returns int64 arrays ``a``, ``b`` and a bool array ``full`` (every element of the tile is
    allowed), possibly with duplicate pairs. Exact by construction: each emitted tile contains an
    allowed element, and every tile that contains one is emitted. Work and memory are
    proportional to the number of tiles emitted, never to n x n.
    """
    nqa = -(-n // q_block)
    a = np.arange(nqa, dtype=np.int64)
    i0 = a * q_block
    i1 = np.minimum(i0 + q_block - 1, n - 1)
    s = term.offset
    kind = term.kind

    if kind in ("causal", "window"):
        b_hi = np.where(i1 - s >= 0, (i1 - s) // k_block, -1)
        if term.window:
            b_lo = np.maximum((i0 - term.window + 1) // k_block, 0)
        else:
            b_lo = np.zeros_like(a)
        aa, bb = _expand(b_lo, b_hi, a)
    elif kind == "group":
        g = term.group
        parts_a, parts_b = [], []
        k_first = i0 // g
        max_groups = int((i1 // g - k_first).max()) + 1 if nqa else 0
        for t in range(max_groups):
            k = k_first + t
            valid = k * g <= i1
            hi_i = np.minimum(i1, k * g + g - 1)
            j_lo, j_hi = k * g, hi_i - s
            ok = valid & (j_hi >= j_lo)
            pa, pb = _expand((j_lo // k_block)[ok], (j_hi // k_block)[ok], a[ok])
            parts_a.append(pa)
            parts_b.append(pb)
        aa = np.concatenate(parts_a) if parts_a else np.zeros(0, np.int64)
        bb = np.concatenate(parts_b) if parts_b else np.zeros(0, np.int64)
    elif kind == "summary":
        L, lo, hi = term.period, term.lo, term.hi
        last_j = i1 - s
        n_periods = np.where(last_j >= lo, (last_j - lo) // L + 1, 0)
        pa, p = _expand(np.zeros_like(a), n_periods - 1, a)
        j_lo = p * L + lo
        j_hi = np.minimum(p * L + hi - 1, last_j[pa])
        aa, bb = _expand(j_lo // k_block, j_hi // k_block, pa)
    elif kind == "stride":
        l = term.stride
        # distances D = m * l >= s; keys i - D for i in the query tile
        m_lo = -(-s // l)
        n_m = np.where(i1 - m_lo * l >= 0, (i1 // l) - m_lo + 1, 0)
        pa, m = _expand(np.zeros_like(a), n_m - 1, a)
        D = (m + m_lo) * l
        j_lo = np.maximum(i0[pa] - D, 0)
        j_hi = i1[pa] - D
        aa, bb = _expand(j_lo // k_block, j_hi // k_block, pa)
    else:  # pragma: no cover - kinds are closed
        raise AssertionError(kind)

    full = _tile_full(term, aa, bb, n, q_block, k_block)
    return aa, bb, full


def _tile_full(term: Term, a: np.ndarray, b: np.ndarray, n: int, qb: int, kb: int) -> np.ndarray:
    """Whether every element of tile (a, b) is allowed by ``term`` (tiles clipped at n)."""
    i0 = a * qb
    i1 = np.minimum(i0 + qb - 1, n - 1)
    j0 = b * kb
    j1 = np.minimum(j0 + kb - 1, n - 1)
    full = (i0 - j1) >= term.offset
    kind = term.kind
    if kind == "window":
        full &= (i1 - j0) < term.window
    elif kind == "group":
        g = term.group
        full &= (i0 // g == i1 // g) & (j0 // g == j1 // g) & (i0 // g == j0 // g)
    elif kind == "summary":
        L = term.period
        full &= (j0 // L == j1 // L) & (j0 % L >= term.lo) & (j1 % L < term.hi)
    elif kind == "stride":
        d = i0 - j1
        full &= ((i1 - j0) == d) & (d % term.stride == 0)
    return full
