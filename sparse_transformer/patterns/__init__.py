"""Attention patterns of the Sparse Transformer (Child et al. 2019, sections 4.2-4.3, 5.1).

Patterns are small, hashable, length-agnostic values. Build them with the factories below,
combine them with ``union``, ``per_head`` and ``schedule``, and ask them for their dense mask,
block plan, cost, or a FlexAttention / SDPA export (see ``Pattern``).

    >>> from sparse_transformer import patterns as P
    >>> p = P.fixed(stride=128, summary=32, distinct=4)
    >>> p.cost(16384, block=32, n_heads=8).work_fraction      # about a quarter of causal
"""

from sparse_transformer.patterns.base import Pattern
from sparse_transformer.patterns.causal import Causal, causal
from sparse_transformer.patterns.compose import PerHead, Schedule, Union, per_head, schedule, union
from sparse_transformer.patterns.fixed import Fixed, fixed
from sparse_transformer.patterns.local import Local, local
from sparse_transformer.patterns.plan import (
    AttentionPlan,
    ComponentPlan,
    build_plan,
    inverse_permutation,
    strided_permutation,
)
from sparse_transformer.patterns.strided import MODES as STRIDED_MODES
from sparse_transformer.patterns.strided import Column, column, strided
from sparse_transformer.patterns.spec import parse_pattern
from sparse_transformer.patterns.terms import Term

__all__ = [
    "Pattern", "Term", "AttentionPlan", "ComponentPlan", "build_plan",
    "causal", "local", "strided", "column", "fixed", "union", "per_head", "schedule",
    "parse_pattern", "Causal", "Local", "Column", "Fixed", "Union", "PerHead", "Schedule",
    "STRIDED_MODES", "strided_permutation", "inverse_permutation",
]
