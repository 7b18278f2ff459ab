"""Local (sliding-window) attention: the first half of the paper's strided pattern (4.3, Fig. 3b).

The paper writes A_i = {t, ..., i} with t = max(0, i - l), which is l + 1 keys; OpenAI's code
uses exactly l keys including the query itself. We follow the code: 0 <= i - j < l.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.terms import Term


@dataclass(frozen=True, repr=False)
class Local(Pattern):
    """0 <= i - j < window in every head."""

    window: int

    def __post_init__(self) -> None:
        _check_positive_int("window", self.window)

    @property
    def name(self) -> str:
        return f"local(window={self.window})"

    def head_terms(self, h: int, n_heads: int) -> tuple[Term, ...]:
        return (Term(window=self.window),)


def local(window: int) -> Local:
    """Each query sees the ``window`` most recent positions, itself included."""
    return Local(window)
