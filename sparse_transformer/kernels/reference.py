"""Dense masked attention: the oracle every backend is checked against.

It builds the pattern's element mask (``Pattern.mask``, n x n per head), so it is for tests and
small n only. Scores, softmax and the weighted sum run in float32 (float64 for float64 inputs),
as the paper does for q.k when sampling (5.6); ``upcast=False`` keeps the input dtype throughout
and serves as the "same-dtype PyTorch" error baseline of the kernel tests.
"""

from __future__ import annotations

import math

import torch

from sparse_transformer.patterns import Pattern


def masked_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scale * q k^T restricted to ``mask``) v in q's dtype; returns (out, lse).

    q, k: [..., N, D]; v: [..., N, Dv]; mask: bool broadcastable to [..., N, N]. Rows with no
    allowed key give out = 0 and lse = -inf (never NaN).
    """
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    # Subtract the row max (detached: the result does not depend on it) for stability.
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    z = e.sum(dim=-1, keepdim=True)
    p = e / z.clamp_min(torch.finfo(z.dtype).tiny)
    out = torch.matmul(p, v)
    lse = (m + torch.log(z)).squeeze(-1)
    return out, lse


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
    scale: float | None = None, *, upcast: bool = True, return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of q, k, v ([B, H, N, D], v [B, H, N, Dv]) restricted to ``pattern.mask(N, H)``.

    Returns out [B, H, N, Dv] in q's dtype (and the float32/float64 lse [B, H, N] if asked).
    """
    B, H, N, D = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    mask = pattern.mask(N, H, device=q.device)  # [H, N, N]
    work = q.dtype
    if upcast and q.dtype != torch.float64:
        work = torch.float32
    out, lse = masked_softmax_attention(q.to(work), k.to(work), v.to(work), mask, scale)
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out
