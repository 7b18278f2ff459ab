"""``attention(q, k, v, pattern)``: one entry point, several backends.

Backends:

* "triton": our kernels, the whole pattern in one custom op (``triton_attention``): heads
  through head tables, strided column heads reordered in the kernels' index arithmetic, plans
  and device tables cached, no host sync; CUDA (or Triton's interpreter on the CPU, for tests);
* "sdpa": ``torch.nn.functional.scaled_dot_product_attention`` (cuDNN / FlashAttention on
  CUDA): ``is_causal`` for patterns that are causal attention, a dense boolean mask otherwise
  (n x n per head: small n only);
* "torch": block-sparse PyTorch, any device, autograd (the portable CPU training path);
* "flex": FlexAttention driven by our plan (the peer we compare to);
* "reference": dense masked attention in float32/float64, the oracle.

"auto" picks, on CUDA, "sdpa" for patterns that are exactly causal at this length (dense
kernels are best where nothing can be skipped) and "triton" otherwise; on the CPU, "torch",
except dense "reference" for small problems whose plan keeps most of the causal tiles.

For the tile backends other than Triton ("torch", "flex") the dispatcher runs each *component*
of the plan (a group of heads in one position order, ``patterns/plan.py``): it gathers the
component's heads, reorders positions for strided column heads (i -> (i mod l)(n/l) + i//l,
paper 5.5), runs the backend, undoes the order and merges heads computed in two components
exactly through their log-sum-exps.
"""

from __future__ import annotations

import functools
import importlib
import math
from types import ModuleType

import torch
import torch.nn.functional as F

from sparse_transformer.kernels.device_cache import on_device
from sparse_transformer.kernels.reference import reference_attention
from sparse_transformer.patterns import (
    Pattern,
    Schedule,
    inverse_permutation,
    parse_pattern,
    strided_permutation,
)

BACKENDS = ("auto", "reference", "sdpa", "torch", "triton", "flex")
_MODULES = {
    "torch": "sparse_transformer.kernels.torch_blocksparse",
    "triton": "sparse_transformer.kernels.triton_attention",
    "flex": "sparse_transformer.kernels.flex",
}
_LOADED: dict[str, ModuleType] = {}  # backend modules imported so far (read inside traces)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern, *,
    scale: float | None = None, backend: str = "auto", check_finite: bool = False,
) -> torch.Tensor:
    """Softmax attention restricted to ``pattern.mask(N, H)``.

    Args:
        q, k: [B, H, N, D] queries and keys (any strides with a contiguous last dim; the
            "triton" backend reads them in place).
        v: [B, H, N, Dv] values (Dv may differ from D, e.g. the paper's half-size q/k, 6).
        pattern: a ``sparse_transformer.patterns.Pattern`` (for a per-layer ``schedule``, pass
            ``schedule.for_layer(r)``).
        scale: softmax scale, default 1 / sqrt(D).
        backend: "auto", "triton", "sdpa", "torch", "flex" or "reference" (module docstring).
        check_finite: refuse NaN/inf inputs with a ValueError. Off by default: the check is a
            reduction per input and, on CUDA, a host sync.

    Returns:
        [B, H, N, Dv] in q's dtype. Logits, softmax and accumulation run in float32 (float64
        for float64 inputs) in every backend.
    """
    _validate(q, k, v, pattern, backend, scale, check_finite)
    B, H, N, D = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    name = _choose(backend, q.device.type, pattern.name, N, H)
    if name == "reference":
        return reference_attention(q, k, v, pattern, scale)
    if name == "sdpa":
        return sdpa_attention(q, k, v, pattern, scale)
    if name == "triton":
        return _LOADED["triton"].sparse_attention(q, k, v, pattern, scale)
    return blocksparse_attention(q, k, v, pattern, scale, _LOADED[name])


def resolve_backend(backend: str, q: torch.Tensor, pattern: Pattern) -> str:
    """The backend ``attention`` runs for ``backend`` on q's device, shape and ``pattern``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    return _choose(backend, q.device.type, pattern.name, q.shape[2], q.shape[1])


def auto_backend(pattern: Pattern, n_ctx: int, n_heads: int, device_type: str = "cuda") -> str:
    """What "auto" picks for ``pattern`` at ``n_ctx`` on a device type (for cost reports)."""
    return _choose("auto", device_type, pattern.name, n_ctx, n_heads)


def is_causal_at(pattern: Pattern, n_ctx: int, n_heads: int) -> bool:
    """Whether every head of ``pattern`` is plain causal attention at length ``n_ctx``.

    Every term is a subset of causal attention, so a head is causal exactly when one of its
    terms is: causal with offset 0, or a window at offset 0 at least n_ctx wide.
    """
    def causal_term(t) -> bool:
        return t.offset == 0 and (t.kind == "causal" or (t.kind == "window"
                                                         and t.window >= n_ctx))
    return all(any(causal_term(t) for t in pattern.head_terms(h, n_heads))
               for h in range(n_heads))


@torch.compiler.assume_constant_result
def _choose(backend: str, device_type: str, spec: str, n: int, n_heads: int) -> str:
    # Plain values in, a string out: torch.compile runs this once while tracing and keeps the
    # answer as a constant, so a compiled model has no graph break here.
    return _choose_cached(backend, device_type, spec, n, n_heads)


@functools.lru_cache(maxsize=1024)
def _choose_cached(backend: str, device_type: str, spec: str, n: int, n_heads: int) -> str:
    name = _pick(backend, device_type, spec, n, n_heads)
    if name in _MODULES:
        load_backend(name)  # imported here, outside any trace; attention() reads _LOADED
    return name


def _pick(backend: str, device_type: str, spec: str, n: int, n_heads: int) -> str:
    if backend != "auto":
        if backend in _MODULES:
            load_backend(backend)  # raises a clear error if unavailable
        return backend
    pattern = parse_pattern(spec)
    if device_type == "cuda":
        if is_causal_at(pattern, n, n_heads):
            return "sdpa"
        if _available("triton"):
            return "triton"
        return "torch"
    if n <= 2048:
        # Small CPU problems: dense masked matmuls beat gathering tiles once the pattern keeps
        # a large share of the causal work.
        plan = pattern.plan(n, n_heads, 32, 32)
        causal_tiles = n_heads * (plan.n_pad // 32) * (plan.n_pad // 32 + 1) // 2
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
    """Import a backend module (once), raising a clear error if it cannot be used here."""
    if name not in _MODULES:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name not in _LOADED:
        try:
            _LOADED[name] = importlib.import_module(_MODULES[name])
        except ImportError as err:
            raise ValueError(f"attention backend {name!r} is not available here: {err}") from None
    return _LOADED[name]


# -- sdpa ------------------------------------------------------------------------------------
def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
                   scale: float) -> torch.Tensor:
    """``scaled_dot_product_attention``: is_causal where the pattern is causal, else a mask."""
    B, H, N, D = q.shape
    if is_causal_at(pattern, N, H):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    mask = _dense_mask(pattern, N, H, q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    # SDPA gives NaN for a row with no allowed key; every backend here returns 0 there.
    return out if _every_row_has_a_key(pattern, N, H) else torch.nan_to_num(out, nan=0.0)


@functools.lru_cache(maxsize=8)
def _dense_mask(pattern: Pattern, n: int, n_heads: int, device: torch.device) -> torch.Tensor:
    return pattern.sdpa_mask(n, n_heads, device=device)


@functools.lru_cache(maxsize=64)
def _every_row_has_a_key(pattern: Pattern, n: int, n_heads: int) -> bool:
    return all(any(t.offset == 0 for t in pattern.head_terms(h, n_heads))
               for h in range(n_heads))


# -- the component path of the "torch" and "flex" backends -----------------------------------
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
                                       on_device(only, q.device), scale, **backend_kwargs)
        return out[:, :, :N] if pad else out
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(H)]
    for cp in plan.components:
        cp = on_device(cp, q.device)
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


def _validate(q, k, v, pattern, backend: str, scale, check_finite: bool) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"attention: {name} must have shape [B, H, N, D], "
                             f"got {tuple(x.shape)}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"attention: {name} must be a floating tensor, got {x.dtype}")
    if isinstance(pattern, Schedule):
        raise TypeError("attention: got a schedule; pass schedule.for_layer(layer_index)")
    if not isinstance(pattern, Pattern):
        raise TypeError(f"attention: pattern must be a Pattern, got {type(pattern).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise ValueError(f"attention: scale must be a finite number > 0, got {scale!r}")
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
