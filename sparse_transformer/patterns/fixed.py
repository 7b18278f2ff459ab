"""The paper's "fixed" pattern (4.3, Fig. 3c): own block plus summary columns of every block.

    j <= i and ( j // l == i // l  or  l - (v+1) c <= j mod l < l - v c ),   v = h mod V

With V = 1 every head reads the last c positions of each block (the paper's t = l - c). With
V > 1, head h reads its own sub-block of c columns; the paper reports distinct sub-blocks per
head work better, and OpenAI's code assigns v = h mod V (``num_verts``), which we follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.terms import Term


@dataclass(frozen=True, repr=False)
class Fixed(Pattern):
    stride: int
    summary: int
    distinct: int = 1

    def __post_init__(self) -> None:
        _check_positive_int("stride", self.stride)
        _check_positive_int("summary", self.summary)
        _check_positive_int("distinct", self.distinct)
        if self.summary > self.stride:
            raise ValueError(
                f"fixed: summary ({self.summary}) must be <= stride ({self.stride})"
            )
        if self.summary * self.distinct > self.stride:
            raise ValueError(
                f"fixed: summary * distinct ({self.summary} * {self.distinct}) must be <= "
                f"stride ({self.stride}) so that the distinct summary sub-blocks fit in a block"
            )

    @property
    def name(self) -> str:
        return f"fixed(stride={self.stride}, summary={self.summary}, distinct={self.distinct})"

    @property
    def head_multiple(self) -> int:
        return self.distinct

    def summary_columns(self, h: int) -> tuple[int, int]:
        """[lo, hi) of ``j mod stride`` read by head h."""
        v = h % self.distinct
        return self.stride - (v + 1) * self.summary, self.stride - v * self.summary

    def head_terms(self, h: int, n_heads: int) -> tuple[Term, ...]:
        lo, hi = self.summary_columns(h)
        return (Term(group=self.stride), Term(period=self.stride, lo=lo, hi=hi))


def fixed(stride: int, summary: int, distinct: int = 1) -> Fixed:
    """Fixed pattern with block ``stride`` = l, ``summary`` = c columns and V = ``distinct``."""
    return Fixed(stride, summary, distinct)
