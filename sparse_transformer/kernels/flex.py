"""``backend="flex"``: the same plan run through PyTorch's FlexAttention (the peer we compare to).

Each component becomes a ``BlockMask`` built from our closed-form tile lists
(``patterns.export.component_block_mask``: partial tiles evaluate the pattern's terms in a
``mask_mod``, full tiles skip it) in the component's own positions, so strided column heads run
in the paper's reordered positions (5.5) where Flex can skip tiles. On CUDA the call goes
through ``torch.compile(flex_attention)`` (Flex's fused Triton kernels); on the CPU torch runs
Flex forward only, so this backend refuses inputs that require grad there.

Flex's kernels want 128 x 128 tiles (its default; smaller tiles failed to compile on an H200
with torch 2.11, see docs/kernels.md), so the fixed pattern's c = 32 summary columns cost whole
128-wide tiles here, which is the gap our Triton kernel closes.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch._dynamo import exc as _dynamo_exc

from sparse_transformer.patterns import ComponentPlan
from sparse_transformer.patterns.export import component_block_mask

try:
    from torch.nn.attention import flex_attention as _flex_module
except ImportError as err:  # pragma: no cover - torch >= 2.5 has FlexAttention
    raise ImportError("backend 'flex' needs torch >= 2.5 (flex_attention)") from err

_HAS_AUX = hasattr(_flex_module, "AuxRequest")  # torch >= 2.9: return_aux replaces return_lse
BLOCK = 128  # Flex's native tile; overridable for experiments (block_sizes reads it)


def block_sizes(head_dim: int, dtype: torch.dtype, device: torch.device) -> tuple[int, int]:
    """(q_block, k_block): Flex's 128 x 128 tiles on CUDA; 32 x 32 on the CPU (small tests)."""
    return (BLOCK, BLOCK) if device.type == "cuda" else (32, 32)


# One compiled Flex kernel per distinct call shape (batch, heads of a component, length, head
# dims, dtype, scale, grad mode): a model meets a handful (split patterns run two components,
# evaluation another batch). Dynamo's default limit of 8 recompiles per function would be hit in
# a long benchmark and then fall back to *eager* Flex, which builds the whole score matrix (32-128
# GiB at N = 16,384-65,536). So the limit is raised for these calls and hitting it is an error.
RECOMPILE_LIMIT = 64


# What dynamo raises when the limit is hit with fail_on_recompile_limit_hit set (the exception's
# older name in torch < 2.7: FailOnCacheLimitHit).
_LIMIT_HIT = tuple(getattr(_dynamo_exc, n) for n in
                   ("FailOnRecompileLimitHit", "FailOnCacheLimitHit")
                   if hasattr(_dynamo_exc, n))


@functools.cache
def _compiled():
    return torch.compile(_flex_module.flex_attention, dynamic=False, fullgraph=True)


def _recompile_budget():
    import torch._dynamo.config as dc

    names = {n for n in ("recompile_limit", "cache_size_limit") if hasattr(dc, n)}
    patch = {n: max(RECOMPILE_LIMIT, getattr(dc, n)) for n in names}
    for n in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(dc, n):
            patch[n] = True
            break
    return dc.patch(**patch)


def component_tables(cp: ComponentPlan, device: torch.device):
    """The component's ``BlockMask`` on ``device``, built once by ``dispatch.prepare``."""
    return component_block_mask(cp, device)


def run_component(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, comp, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexAttention over one component (heads gathered, positions in the component's order).

    q, k: [B, Hc, N, D]; v: [B, Hc, N, Dv], N = comp.plan.n_ctx; ``comp`` is a
    ``dispatch.Component`` whose tables are its ``BlockMask``. Returns out [B, Hc, N, Dv] in
    q's dtype and the natural-log lse [B, Hc, N] in float32 (-inf where no key is allowed).
    """
    cp = comp.plan
    if q.shape[2] != cp.n_ctx or q.shape[1] != len(cp.heads):
        raise ValueError(f"flex backend: got [B, Hc, N] = {tuple(q.shape[:3])}, the component "
                         f"expects Hc = {len(cp.heads)}, N = {cp.n_ctx}")
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(
            x.requires_grad for x in (q, k, v)):
        raise NotImplementedError("flex backend: FlexAttention has no backward on the CPU in "
                                  "torch; use backend='torch' or 'triton' to train on the CPU")
    if q.dtype == torch.float64 and q.device.type == "cuda":
        raise TypeError("flex backend: float64 is not supported on CUDA; use float32/16 or bf16")
    bm = comp.tables
    fn = _compiled() if q.device.type == "cuda" else _flex_module.flex_attention
    quiet = _recompile_budget() if q.device.type == "cuda" else warnings.catch_warnings()
    with quiet:
        if q.device.type != "cuda":  # eager CPU Flex is the documented dense fallback: no nag
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        try:
            return _call(fn, q, k, v, bm, scale)
        except _LIMIT_HIT as err:
            raise RuntimeError(
                f"flex backend: this process has compiled FlexAttention for "
                f"{RECOMPILE_LIMIT} distinct call shapes (batch, heads, length, head dims, "
                f"dtype, grad mode), the most it allows; running eager Flex instead would build "
                f"the whole score matrix. Set sparse_transformer.kernels.flex.RECOMPILE_LIMIT "
                f"higher, or use backend='triton'") from err


def _call(fn, q, k, v, bm, scale):
    if _HAS_AUX:
        out, aux = fn(q, k, v, block_mask=bm, scale=scale,
                      return_aux=_flex_module.AuxRequest(lse=True))
        lse = aux.lse
    else:  # pragma: no cover - torch < 2.9
        out, lse = fn(q, k, v, block_mask=bm, scale=scale, return_lse=True)
    return out, lse.float()
