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
Triton kernel, the FlexAttention ``mask_mod`` and the decoding caches; what each kind means
for every one of them is written once, in ``kinds.py``. Nothing sized by n x n is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparse_transformer.patterns.kinds import KINDS, PARAMS, Kind


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
        # The kind, looked up once: not a field, so equality and hashing ignore it.
        kind = next((k for k in KINDS.values() if k.field and getattr(self, k.field)),
                    KINDS["causal"])
        object.__setattr__(self, "_rules", kind)

    @property
    def rules(self) -> type[Kind]:
        """Everything this term's kind implies (``kinds.py``)."""
        return self._rules

    @property
    def kind(self) -> str:
        return self.rules.name

    def as_tuple(self) -> tuple[int, ...]:
        """Integer parameters in kernel order (``kinds.PARAMS``)."""
        return tuple(getattr(self, name) for name in PARAMS)

    # -- element truth ---------------------------------------------------------------------
    def allowed(self, i, j):
        """Bool tensor (or numpy array), broadcasting i (queries) against j (keys); works
        inside FlexAttention's mask_mod and on numpy integer arrays alike."""
        d = i - j
        return (d >= self.offset) & self.rules.holds(self, i, j, d)

    def allowed_np(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The same truth on numpy integer arrays (used by the planner's exact checks)."""
        return np.asarray(self.allowed(i, j), dtype=bool)


def term_blocks(
    term: Term, n: int, q_block: int, k_block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query block a, key block b) that holds at least one allowed element of ``term``.

    Returns int64 arrays ``a``, ``b`` and a bool array ``full`` (every element of the tile is
    allowed), possibly with duplicate pairs. Exact by construction: each emitted tile contains an
    allowed element, and every tile that contains one is emitted. Work and memory are
    proportional to the number of tiles emitted, never to n x n.
    """
    a = np.arange(-(-n // q_block), dtype=np.int64)
    i0 = a * q_block
    i1 = np.minimum(i0 + q_block - 1, n - 1)
    aa, bb = term.rules.blocks(term, a, i0, i1, k_block)
    return aa, bb, _tile_full(term, aa, bb, n, q_block, k_block)


def _tile_full(term: Term, a: np.ndarray, b: np.ndarray, n: int, qb: int, kb: int) -> np.ndarray:
    """Whether every element of tile (a, b) is allowed by ``term`` (tiles clipped at n)."""
    i0 = a * qb
    i1 = np.minimum(i0 + qb - 1, n - 1)
    j0 = b * kb
    j1 = np.minimum(j0 + kb - 1, n - 1)
    return ((i0 - j1) >= term.offset) & term.rules.full(term, i0, i1, j0, j1)
