"""Dense causal attention, S_i = {j : j <= i} (paper 4.2): the baseline every pattern is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transformer.patterns.base import Pattern
from sparse_transformer.patterns.terms import Term


@dataclass(frozen=True, repr=False)
class Causal(Pattern):
    """j <= i in every head."""

    @property
    def name(self) -> str:
        return "causal()"

    def head_terms(self, h: int, n_heads: int) -> tuple[Term, ...]:
        return (Term(),)


def causal() -> Causal:
    """Dense causal attention: query i sees every key j <= i."""
    return Causal()
