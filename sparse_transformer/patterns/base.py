"""The Pattern base class: parameters only, element truth from terms, and what users call.

A pattern is length-agnostic: it stores parameters (stride, window, summary width ...) and
answers, for a head h of n_heads, which terms (``terms.Term``) make up that head's rule. Every
other view derives from that one answer:

    p.mask(n_ctx, n_heads)          dense bool [H, N, N], the element-level truth (small n)
    p.plan(n_ctx, n_heads, ...)     block plan: active key tiles per query tile, full/partial
    p.cost(n_ctx, block, ...)       tiles computed, density, FLOPs, speed-up over dense causal
    p.mask_mod(n_heads)             FlexAttention mask_mod; p.block_mask(...) its BlockMask
    p.sdpa_mask(n_ctx, n_heads)     dense mask for torch's scaled_dot_product_attention
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from sparse_transformer.checks import INT64_MAX
from sparse_transformer.patterns.terms import Term

if TYPE_CHECKING:  # imported lazily below to keep import order patterns -> plan one way
    from sparse_transformer.patterns.cost import PatternCost
    from sparse_transformer.patterns.plan import AttentionPlan


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if value > INT64_MAX:  # plans and masks compute positions in int64 tensors
        raise ValueError(f"{name} must be at most 2**63 - 1, got an integer of "
                         f"{value.bit_length()} bits")
    return value


class Pattern:
    """Base class. Subclasses implement ``head_terms`` and, if heads matter, ``head_multiple``."""

    #: short label used in logs, plots and benchmark tables, e.g. "fixed(l=128,c=32,V=4)"
    name: str = "pattern"

    # -- what subclasses define -------------------------------------------------------------
    def head_terms(self, h: int, n_heads: int) -> tuple[Term, ...]:
        """The OR of terms that head ``h`` of ``n_heads`` may attend through (natural order)."""
        raise NotImplementedError

    @property
    def head_multiple(self) -> int:
        """``n_heads`` must be a multiple of this (2 for split heads, V for distinct summaries)."""
        return 1

    # -- validation --------------------------------------------------------------------------
    def check_heads(self, n_heads: int) -> None:
        _check_positive_int("n_heads", n_heads)
        m = self.head_multiple
        if n_heads % m:
            raise ValueError(
                f"{self.name} needs the number of heads to be a multiple of {m}, got {n_heads}"
            )

    # -- element truth -----------------------------------------------------------------------
    def allowed(self, i: torch.Tensor, j: torch.Tensor, h: int, n_heads: int) -> torch.Tensor:
        """Bool tensor: may query i attend to key j in head h (broadcasting i against j)?"""
        ok = None
        for term in self.head_terms(h, n_heads):
            t = term.allowed(i, j)
            ok = t if ok is None else ok | t
        assert ok is not None, "every head has at least one term"
        return ok

    def mask(self, n_ctx: int, n_heads: int = 1, device: torch.device | str | None = None
             ) -> torch.Tensor:
        """The element-level truth as a dense ``BoolTensor[n_heads, n_ctx, n_ctx]``.

        Meant for tests, pictures and small n: it is n x n per head.
        """
        _check_positive_int("n_ctx", n_ctx)
        self.check_heads(n_heads)
        pos = torch.arange(n_ctx, device=device)
        i, j = pos[:, None], pos[None, :]
        return torch.stack([self.allowed(i, j, h, n_heads) for h in range(n_heads)])

    # -- derived views (implemented in their own modules) -----------------------------------
    def plan(self, n_ctx: int, n_heads: int = 1, q_block: int = 64, k_block: int | None = None,
             reorder: bool = True) -> "AttentionPlan":
        """Block plan: per query tile the active key tiles, split into full and partial.

        Strided column heads are planned in the paper's reordered positions when
        ``reorder`` is true (see ``plan.py``). Built without any n x n tensor.
        """
        from sparse_transformer.patterns.plan import build_plan

        return build_plan(self, n_ctx, n_heads, q_block, k_block or q_block, reorder)

    def cost(self, n_ctx: int, block: int = 64, n_heads: int | None = None, head_dim: int = 64,
             reorder: bool = True) -> "PatternCost":
        """Static cost report: tiles computed, useful-entry density, FLOPs, speed-up vs causal."""
        from sparse_transformer.patterns.cost import pattern_cost

        heads = self.head_multiple if n_heads is None else n_heads
        return pattern_cost(self, n_ctx, block, heads, head_dim, reorder)

    def mask_mod(self, n_heads: int) -> Callable:
        """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` with this pattern's semantics."""
        from sparse_transformer.patterns.export import to_mask_mod

        return to_mask_mod(self, n_heads)

    def block_mask(self, n_ctx: int, n_heads: int, block: int = 128,
                   device: torch.device | str = "cpu"):
        """FlexAttention ``BlockMask`` built from our plan (natural order), no n x n tensor."""
        from sparse_transformer.patterns.export import to_block_mask

        return to_block_mask(self, n_ctx, n_heads, block, device)

    def sdpa_mask(self, n_ctx: int, n_heads: int, device: torch.device | str | None = None
                  ) -> torch.Tensor:
        """Bool ``[1, H, N, N]`` mask for ``torch.nn.functional.scaled_dot_product_attention``."""
        return self.mask(n_ctx, n_heads, device=device)[None]

    def draw(self, n_ctx: int, n_heads: int | None = None, block: int | None = None, path=None):
        """Picture of each head's mask with its block grid (paper Figure 3)."""
        from sparse_transformer.patterns.draw import draw_pattern

        return draw_pattern(self, n_ctx, self.head_multiple if n_heads is None else n_heads, block, path)

    # -- value semantics ---------------------------------------------------------------------
    def __repr__(self) -> str:
        return self.name

    def __or__(self, other: "Pattern") -> "Pattern":
        from sparse_transformer.patterns.compose import union

        return union(self, other)
