"""Logit filters for sampling: temperature, top-k and top-p (nucleus). Shapes: logits [B, V]."""

from __future__ import annotations

import numbers

import torch


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf."""
    if k <= 0:
        raise ValueError(f"top_k must be >= 1, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches p (always at least one)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(dim=-1)
    # drop a token when the mass before it already reaches p
    drop = probs.cumsum(dim=-1) - probs >= p
    drop[..., 0] = False
    mask = torch.zeros_like(drop).scatter(-1, idx, drop)
    return logits.masked_fill(mask, float("-inf"))


def check_filters(*, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> None:
    """Raise a one-line ValueError/TypeError for settings ``apply_filters`` cannot use."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"top_k must be an int or None, got {type(top_k).__name__}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 1 (0 or None: off), got {top_k}")
    if top_p is not None and not (isinstance(top_p, numbers.Real) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


def apply_filters(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature (paper 6 samples use 1.0), then top-k, then top-p, in fp32.

    ``top_k`` 0 or None and ``top_p`` None (or 1.0) leave the distribution whole.
    """
    check_filters(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = logits.float() / temperature
    if top_k:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


FILTERS = {"top_k": top_k_filter, "top_p": top_p_filter}
