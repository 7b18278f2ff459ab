"""``attention(q, k, v, pattern)``: one entry point, several backends.

The dispatcher owns everything backends share, so each backend only computes attention for one
*component* of a plan (a group of heads in one position order, see ``patterns/plan.py``):

1. validate inputs and the pattern's head count;
2. plan the pattern at the backend's tile sizes (plans are cached) and pad N at the end;
3. per component: gather its heads, reorder positions for strided column heads
   (i -> (i mod l)(n/l) + i//l, paper 5.5), run the backend, undo the order;
4. merge heads computed in two components (strided "merge": window + column, disjoint key
   sets) exactly through their log-sum-exps, and drop the padding.

Backends: "reference" (dense masked, the oracle), "torch" (block-sparse PyTorch, any device),
"triton" (our kernel, CUDA), "flex" (FlexAttention with our block plan). "auto" picks Triton on
CUDA when it is importable, else the PyTorch block-sparse path, except when the pattern keeps so
much of the causal work that dense masked attention is as cheap (small CPU problems).
"""

from __future__ import annotations

import functools
import importlib
import math
from types import ModuleType

import torch

from sparse_transformer.kernels.reference import reference_attention
from sparse_transformer.patterns import Pattern, Schedule, inverse_permutation, strided_permutation

BACKENDS = ("auto", "reference", "torch", "triton", "flex")
_MODULES = {
    "torch": "sparse_transformer.kernels.torch_blocksparse",
    "triton": "sparse_transformer.kernels.triton_attention",
    "flex": "sparse_transformer.kernels.flex",
}
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern, *,
    scale: float | None = None, backend: str = "auto", check_finite: bool = True,
) -> torch.Tensor:
    """Softmax attention restricted to ``pattern.mask(N, H)``.

    Args:
        q, k: [B, H, N, D] queries and keys.
        v: [B, H, N, Dv] values (Dv may differ from D, e.g. the paper's half-size q/k, 6).
        pattern: a ``sparse_transformer.patterns.Pattern`` (for a per-layer ``schedule``, pass
            ``schedule.for_layer(r)``).
        scale: softmax scale, default 1 / sqrt(D).
        backend: "auto", "reference", "torch", "triton" or "flex".
        check_finite: refuse NaN/inf inputs with a ValueError (one reduction per input).

    Returns:
        [B, H, N, Dv] in q's dtype. Logits, softmax and accumulation run in float32 (float64
        for float64 inputs) in every backend.
    """
    _validate(q, k, v, pattern, backend, check_finite, scale)
    B, H, N, D = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    name = resolve_backend(backend, q, pattern)
    if name == "reference":
        return reference_attention(q, k, v, pattern, scale)
    return blocksparse_attention(q, k, v, pattern, scale, load_backend(name))


def resolve_backend(backend: str, q: torch.Tensor, pattern: Pattern) -> str:
    """The backend "auto" stands for on this device, or ``backend`` checked for availability."""
    if backend != "auto":
        if backend != "reference" and backend != "torch":
            load_backend(backend)  # raises a clear error if unavailable
        return backend
    if q.device.type == "cuda" and _available("triton"):
        return "triton"
    N, H = q.shape[2], q.shape[1]
    if q.device.type != "cuda" and N <= 2048:
        # Small CPU problems: dense masked matmuls beat gathering tiles once the pattern keeps
        # a large share of the causal work.
        plan = pattern.plan(N, H, 32, 32)
        causal_tiles = H * (plan.n_pad // 32) * (plan.n_pad // 32 + 1) // 2
        if plan.tiles_computed() > 0.6 * causal_tiles:
            return "reference"
    return "torch"


@functools.cache
def _available(name: str) -> bool:
    try:
        load_backend(name)
    except (ImportError, RuntimeError, ValueError):
        return False
    return True


def load_backend(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as err:
        raise ValueError(f"attention backend {name!r} is not available here: {err}") from None


@torch.compiler.disable
def _plan(pattern: Pattern, n: int, n_heads: int, q_block: int, k_block: int):
    # Planning is host-side numpy over frozen dataclasses: keep it out of dynamo's trace so a
    # compiled model breaks the graph here instead of failing to reconstruct the pattern.
    return pattern.plan(n, n_heads, q_block, k_block)


def blocksparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern, scale: float,
    backend: ModuleType, **backend_kwargs,
) -> torch.Tensor:
    """Run a tile backend over every component of the pattern's plan and assemble heads."""
    B, H, N, D = q.shape
    q_block, k_block = backend.block_sizes(D, q.dtype, q.device)
    plan = _plan(pattern, N, H, q_block, k_block)
    pad = plan.n_pad - N
    if pad:
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    only = plan.components[0] if len(plan.components) == 1 else None
    if only is not None and only.order == 0 and only.heads == tuple(range(H)):
        # One natural-order component with every head: no gather, permutation or restack.
        out, _ = backend.run_component(q.contiguous(), k.contiguous(), v.contiguous(),
                                       only.to(q.device), scale, **backend_kwargs)
        return out[:, :, :N] if pad else out
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(H)]
    for cp in plan.components:
        cp = cp.to(q.device)
        if cp.heads == tuple(range(H)):  # one component holds every head: no gather copy
            qc, kc, vc = q, k, v
        else:  # cached on the device: a fresh host->device copy would sync every call
            heads = _heads_index(cp.heads, q.device)
            qc, kc, vc = (x.index_select(1, heads) for x in (q, k, v))
        if cp.order:
            perm = _permutation(plan.n_pad, cp.order, q.device)
            qc, kc, vc = (x[:, :, perm] for x in (qc, kc, vc))
        out, lse = backend.run_component(
            qc.contiguous(), kc.contiguous(), vc.contiguous(), cp, scale, **backend_kwargs
        )
        if cp.order:
            inv = _inverse(plan.n_pad, cp.order, q.device)
            out, lse = out[:, :, inv], lse[:, :, inv]
        for idx, h in enumerate(cp.heads):
            parts[h].append((out[:, idx], lse[:, idx]))
    heads_out = [_merge(p) for p in parts]
    out = torch.stack(heads_out, dim=1)
    return out[:, :, :N] if pad else out


def _merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine attention over disjoint key sets: o = sum_c exp(lse_c - lse) o_c."""
    if len(parts) == 1:
        return parts[0][0]
    lses = torch.stack([lse for _, lse in parts])  # [C, B, N]
    total = torch.logsumexp(lses, dim=0)
    out = 0
    for o, lse in parts:
        w = torch.exp(lse - total).unsqueeze(-1)
        out = out + w * o.to(w.dtype)
    return out.to(parts[0][0].dtype)


@functools.lru_cache(maxsize=64)
def _heads_index(heads: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(heads, device=device)


@functools.lru_cache(maxsize=32)
def _permutation(n: int, stride: int, device: torch.device) -> torch.Tensor:
    return strided_permutation(n, stride, device=device)


@functools.lru_cache(maxsize=32)
def _inverse(n: int, stride: int, device: torch.device) -> torch.Tensor:
    return inverse_permutation(_permutation(n, stride, device))


def _validate(q, k, v, pattern, backend: str, check_finite: bool, scale=None) -> None:
    if scale is not None:  # a NaN or inf scale would turn every output into NaN
        try:
            finite = not isinstance(scale, bool) and math.isfinite(float(scale))
        except (TypeError, ValueError):
            finite = False
        if not finite:
            raise ValueError(f"attention: scale must be a finite number, got {scale!r}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"attention: {name} must have shape [B, H, N, D], got {tuple(x.shape)}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"attention: {name} must be a floating tensor, got {x.dtype}")
    if isinstance(pattern, Schedule):
        raise TypeError("attention: got a schedule; pass schedule.for_layer(layer_index)")
    if not isinstance(pattern, Pattern):
        raise TypeError(f"attention: pattern must be a Pattern, got {type(pattern).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if q.shape[:3] != k.shape[:3] or q.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"attention: q, k, v must agree on [B, H, N]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: q and k head dims differ ({q.shape[-1]} vs {k.shape[-1]})")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if q.device != k.device or q.device != v.device:
        raise ValueError("attention: q, k, v are on different devices")
    if min(q.shape) == 0 or v.shape[-1] == 0:
        raise ValueError(f"attention: empty input {tuple(q.shape)}")
    pattern.check_heads(q.shape[1])
    if check_finite:
        for name, x in (("q", q), ("k", k), ("v", v)):
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"attention: {name} contains NaN or inf")
