"""The paper's "strided" pattern (4.3, Fig. 3b): a local window plus every l-th earlier position.

Parts, for stride l:
    local   0 <= i - j < l
    column  j <= i and (i - j) mod l == 0

Modes (paper 5.1): "merge" puts the union of both parts in every head (Eq. 7); "split" gives the
first half of the heads the local part and the second half the column part (Eq. 8); "local" and
"column" keep one part, for models that interleave the parts across layers (Eq. 6, see
``compose.schedule``).

In natural order the column part touches about every tile at tile sizes >= 16. The planner
therefore runs it in the paper's reordered positions, i -> (i mod l) * (n / l) + i // l
(5.5: "attention with a stride of k can be computed by transposing the matrix and computing a
local window"), where it is block diagonal and causal.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.compose import per_head, union
from sparse_transformer.patterns.local import local
from sparse_transformer.patterns.terms import Term

MODES = ("merge", "split", "local", "column")


@dataclass(frozen=True, repr=False)
class Column(Pattern):
    """j <= i and (i - j) mod stride == 0 in every head."""

    stride: int

    def __post_init__(self) -> None:
        _check_positive_int("stride", self.stride)

    @property
    def name(self) -> str:
        return f"column(stride={self.stride})"

    def head_terms(self, h: int, n_heads: int) -> tuple[Term, ...]:
        return (Term(stride=self.stride),)


def column(stride: int) -> Column:
    """Every ``stride``-th earlier position, the query itself included."""
    return Column(stride)


def strided(stride: int, mode: str = "merge") -> Pattern:
    """Strided pattern with stride l (choose l close to sqrt(n), paper 4.3)."""
    _check_positive_int("stride", stride)
    if mode not in MODES:
        raise ValueError(f"strided: mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "local":
        return local(stride)
    if mode == "column":
        return column(stride)
    if mode == "merge":
        return union(local(stride), column(stride), name=f"strided(stride={stride}, mode='merge')")
    return per_head(local(stride), column(stride), name=f"strided(stride={stride}, mode='split')")
