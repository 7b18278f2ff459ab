"""Term kinds: everything that depends on what a term constrains, in one table.

A term (``terms.Term``) is causality with an offset, ``j <= i - offset``, AND at most one
extra constraint; its *kind* names that constraint. Each kind is one class below, holding all
that the library derives from it, so adding or changing a kind touches this file only:

    code, field         its code in the Triton kernels (``triton_fwd.KIND_*``) and the Term
                        field holding its parameter (``PARAMS`` is the kernels' layout)
    holds(t, i, j, d)   the constraint on query i, key j, d = i - j (torch or numpy integers)
    blocks              the key tiles a query tile touches, in closed form (``terms.py``)
    full                whether every element of a tile satisfies the constraint
    row_tiles           a bound on the key tiles one query tile touches (the CLI's size guard)
    region, slot, key   what a decoding cache keeps for the term and reads for a query
                        (``kernels/kv_cache.py``, docs/sampling.md)

    kind     constraint             paper
    causal   (none)                 4.2: dense causal attention
    window   i - j < W              4.3: A^(1) of "strided" (the row, a local band)
    group    i // G == j // G       4.3: A^(1) of "fixed" (own block); a "strided" column, reordered
    summary  lo <= j mod L < hi     4.3: A^(2) of "fixed" (summary columns)
    stride   (i - j) mod l == 0     4.3: A^(2) of "strided" (the column)

Coordinates are 0-based. ``blocks`` and ``full`` work on numpy int64 arrays of query tiles
``a`` with first/last rows ``i0``/``i1`` (and key tiles with first/last columns ``j0``/``j1``);
the cache methods on torch tensors of positions. Their work is proportional to the tiles or
slots involved, never to n x n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sparse_transformer.patterns.terms import Term

# The integer parameters of a term, in the order the Triton kernels read them ([C, T, 7] int32).
PARAMS = ("offset", "window", "group", "period", "lo", "hi", "stride")
KIND_NONE = 0  # the kernels' code for "no term" (a class with fewer terms than MAX_TERMS)


def expand(starts: np.ndarray, ends: np.ndarray, owners: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass(frozen=True)
class Region:
    """A term's store in a decoding cache: slots [start, start + size) of a head group's buffer.

    ``span`` is the term's parameter (W, G, L, l; n_ctx for causal), ``width`` the summary
    columns c = hi - lo, ``rows`` the slots of one residue (stride). ``kind`` is "trash" for
    the one slot per head that absorbs writes no term keeps (always masked when read).
    """

    kind: str
    start: int
    size: int
    span: int = 0
    width: int = 0
    rows: int = 0

    @property
    def rules(self) -> type["Kind"]:
        return KINDS[self.kind]

    @property
    def read_size(self) -> int:
        """Slots read per decoding step (a stride term reads one residue row)."""
        return self.rows if self.kind == "stride" else self.size


class Kind:
    """The base: causality with an offset and nothing else. Subclasses add one constraint."""

    name = "causal"
    code = 1
    field: str | None = None  # the Term field that holds the constraint's parameter
    label = "causal"  # what a picture calls this part of a head (patterns/draw.py)
    gathered = False  # a cache reads a gathered subset of the region (not all of it)
    negative_keys = False  # a cache's read slot may stand for a position j < 0 (early queries)

    # -- element truth ---------------------------------------------------------------------
    @staticmethod
    def holds(t: "Term", i: Any, j: Any, d: Any) -> Any:
        return True

    # -- tiles (numpy) -----------------------------------------------------------------------
    @staticmethod
    def blocks(t: "Term", a: np.ndarray, i0: np.ndarray, i1: np.ndarray, kb: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """(query tile, key tile) pairs of the causal band ``j <= i - offset``."""
        b_hi = np.where(i1 - t.offset >= 0, (i1 - t.offset) // kb, -1)
        return expand(np.zeros_like(a), b_hi, a)

    @staticmethod
    def full(t: "Term", i0, i1, j0, j1) -> np.ndarray | bool:
        return True

    @staticmethod
    def row_tiles(t: "Term", n: int, b: int, reordered: bool) -> int:
        return n // b

    @staticmethod
    def covers_causal(t: "Term", n: int) -> bool:
        """Whether the term alone is causal attention over n positions."""
        return t.offset == 0

    # -- decoding cache (torch) ----------------------------------------------------------------
    @staticmethod
    def region(t: "Term", start: int, n: int) -> Region:
        return Region("causal", start, n, span=n)

    @staticmethod
    def slot(r: Region, pos, last, lo):
        """(slot offset in the region of positions ``pos``, which are kept or None = all).

        ``last`` is the newest position being written; ``lo`` the head's summary start.
        """
        return pos, None

    @staticmethod
    def key(r: Region, i, s, lo):
        """Key position that read slot ``s`` holds for query ``i`` (anything if it holds none)."""
        return s


class Window(Kind):
    name, code, field, label = "window", 2, "window", "window"
    negative_keys = True  # the ring's slots for i - W < j < 0

    @staticmethod
    def holds(t, i, j, d):
        return d < t.window

    @staticmethod
    def blocks(t, a, i0, i1, kb):
        b_hi = np.where(i1 - t.offset >= 0, (i1 - t.offset) // kb, -1)
        b_lo = np.maximum((i0 - t.window + 1) // kb, 0)
        return expand(b_lo, b_hi, a)

    @staticmethod
    def full(t, i0, i1, j0, j1):
        return (i1 - j0) < t.window

    @staticmethod
    def row_tiles(t, n, b, reordered):
        return t.window // b + 2

    @staticmethod
    def covers_causal(t, n):
        return t.offset == 0 and t.window >= n

    # A ring buffer of W slots: position j in slot j mod W, while it is among the last W.
    @staticmethod
    def region(t, start, n):
        return Region("window", start, min(t.window, n), span=t.window)

    @staticmethod
    def slot(r, pos, last, lo):
        return pos % r.size, pos > last - r.size

    @staticmethod
    def key(r, i, s, lo):
        return i - (i - s) % r.size


class Group(Kind):
    name, code, field, label = "group", 3, "group", "own block"

    @staticmethod
    def holds(t, i, j, d):
        return (i // t.group) == (j // t.group)

    @staticmethod
    def blocks(t, a, i0, i1, kb):
        g = t.group
        parts_a, parts_b = [], []
        k_first = i0 // g
        max_groups = int((i1 // g - k_first).max()) + 1 if a.size else 0
        for step in range(max_groups):
            k = k_first + step
            valid = k * g <= i1
            hi_i = np.minimum(i1, k * g + g - 1)
            j_lo, j_hi = k * g, hi_i - t.offset
            ok = valid & (j_hi >= j_lo)
            pa, pb = expand((j_lo // kb)[ok], (j_hi // kb)[ok], a[ok])
            parts_a.append(pa)
            parts_b.append(pb)
        aa = np.concatenate(parts_a) if parts_a else np.zeros(0, np.int64)
        bb = np.concatenate(parts_b) if parts_b else np.zeros(0, np.int64)
        return aa, bb

    @staticmethod
    def full(t, i0, i1, j0, j1):
        g = t.group
        return (i0 // g == i1 // g) & (j0 // g == j1 // g) & (i0 // g == j0 // g)

    @staticmethod
    def row_tiles(t, n, b, reordered):
        return _group_tiles(t.group, b)

    @staticmethod
    def covers_causal(t, n):
        return False

    # The current group only: G slots, position j in slot j mod G.
    @staticmethod
    def region(t, start, n):
        return Region("group", start, min(t.group, n), span=t.group)

    @staticmethod
    def slot(r, pos, last, lo):
        return pos % r.span, pos // r.span == last // r.span

    @staticmethod
    def key(r, i, s, lo):
        return (i // r.span) * r.span + s


class Summary(Kind):
    name, code, field, label = "summary", 4, "period", "summary columns"

    @staticmethod
    def holds(t, i, j, d):
        r = j % t.period
        return (r >= t.lo) & (r < t.hi)

    @staticmethod
    def blocks(t, a, i0, i1, kb):
        L, lo, hi = t.period, t.lo, t.hi
        last_j = i1 - t.offset
        n_periods = np.where(last_j >= lo, (last_j - lo) // L + 1, 0)
        pa, p = expand(np.zeros_like(a), n_periods - 1, a)
        j_lo = p * L + lo
        j_hi = np.minimum(p * L + hi - 1, last_j[pa])
        return expand(j_lo // kb, j_hi // kb, pa)

    @staticmethod
    def full(t, i0, i1, j0, j1):
        L = t.period
        return (j0 // L == j1 // L) & (j0 % L >= t.lo) & (j1 % L < t.hi)

    @staticmethod
    def row_tiles(t, n, b, reordered):
        return (n // t.period + 1) * ((t.hi - t.lo) // b + 2)

    @staticmethod
    def covers_causal(t, n):
        return False

    # The summary positions only: c = hi - lo slots per period, ceil(n / L) periods. Heads of
    # one buffer may read different columns (``distinct``): ``lo`` is per head.
    @staticmethod
    def region(t, start, n):
        c = t.hi - t.lo
        return Region("summary", start, -(-n // t.period) * c, span=t.period, width=c)

    @staticmethod
    def slot(r, pos, last, lo):
        off = pos % r.span - lo
        return (pos // r.span) * r.width + off, (off >= 0) & (off < r.width)

    @staticmethod
    def key(r, i, s, lo):
        return (s // r.width) * r.span + lo + s % r.width


class Stride(Kind):
    name, code, field, label = "stride", 5, "stride", "column"
    gathered = True

    @staticmethod
    def holds(t, i, j, d):
        return (d % t.stride) == 0

    @staticmethod
    def blocks(t, a, i0, i1, kb):
        l = t.stride
        # distances D = m * l >= offset; keys i - D for i in the query tile
        m_lo = -(-t.offset // l)
        n_m = np.where(i1 - m_lo * l >= 0, (i1 // l) - m_lo + 1, 0)
        pa, m = expand(np.zeros_like(a), n_m - 1, a)
        D = (m + m_lo) * l
        j_lo = np.maximum(i0[pa] - D, 0)
        j_hi = i1[pa] - D
        return expand(j_lo // kb, j_hi // kb, pa)

    @staticmethod
    def full(t, i0, i1, j0, j1):
        d = i0 - j1
        return ((i1 - j0) == d) & (d % t.stride == 0)

    @staticmethod
    def row_tiles(t, n, b, reordered):
        # reordered (paper 5.5), a column is a causal group of n / l positions
        return _group_tiles(max(1, n // t.stride), b) if reordered else (n // t.stride + 1) * 2

    @staticmethod
    def covers_causal(t, n):
        return False

    # Every position, residue-major: slot (j mod l) * ceil(n / l) + j // l; query i reads the
    # row of its residue i mod l (the keys i mod l, i mod l + l, ...), ceil(n / l) slots.
    @staticmethod
    def region(t, start, n):
        rows = -(-n // t.stride)
        return Region("stride", start, t.stride * rows, span=t.stride, rows=rows)

    @staticmethod
    def slot(r, pos, last, lo):
        return (pos % r.span) * r.rows + pos // r.span, None

    @staticmethod
    def key(r, i, s, lo):
        return i % r.span + r.span * s

    @staticmethod
    def gather(r: Region, i, s):
        """Buffer slots of the residue row query ``i`` reads."""
        return r.start + (i % r.span) * r.rows + s


def _group_tiles(g: int, b: int) -> int:
    """Key tiles a query tile of b rows meets through groups of g: <= b/g + 2 groups of
    <= g/b + 2 tiles."""
    return (b // g + 2) * (g // b + 2)


KINDS: dict[str, type[Kind]] = {k.name: k for k in (Kind, Window, Group, Summary, Stride)}
"""Every kind by name, in code order (which is also the order a cache lays terms out in)."""
