"""``attention(q, k, v, pattern)`` and ``prepare``: one entry point, several backends.

Backends:

* "triton": our kernels, the whole pattern in one custom op (``triton_attention``): heads
  through head tables, strided column heads reordered in the kernels' index arithmetic, no
  host sync; CUDA (or Triton's interpreter on the CPU, for tests);
* "sdpa": ``torch.nn.functional.scaled_dot_product_attention`` (cuDNN / FlashAttention on
  CUDA): ``is_causal`` for patterns that are causal attention, a dense boolean mask otherwise
  (n x n per head: small n only);
* "torch": block-sparse PyTorch, any device, autograd (the portable CPU training path);
* "flex": FlexAttention driven by our plan (the peer we compare to);
* "reference": dense masked attention in float32/float64, the oracle.

"auto" picks, on CUDA, "sdpa" for patterns that are exactly causal at this length (dense
kernels are best where nothing can be skipped) and "triton" otherwise; on the CPU, "torch",
except dense "reference" for small problems whose plan keeps most of the causal tiles.

Two ways in. ``prepare(pattern, n, n_heads, ...)`` resolves the backend once and builds all
that it needs for that pattern at that length on that device -- the plan, its device tables,
masks -- as a ``Prepared`` value; ``run(prepared, q, k, v, scale)`` then only computes. The
model prepares each layer's pattern once per (length, device, dtype) in its forward state
(``model/state.py``), so a training step neither re-chooses a backend nor re-reads a pattern.
The public ``attention(...)`` checks its inputs and takes its ``Prepared`` from ``PREPARED``,
a bounded LRU (32 entries and 512 MiB of tables and masks, keyed by pattern, length, heads,
head dims, dtype, device and backend): a hit costs the checks and one dict lookup; a miss
plans the pattern (numpy on the host: a millisecond at n = 1,024, about a second at n = 1M).

For the tile backends other than Triton ("torch", "flex") ``run`` goes over each *component*
of the plan (a group of heads in one position order, ``patterns/plan.py``): it gathers the
component's heads, reorders positions for strided column heads (i -> (i mod l)(n/l) + i//l,
paper 5.5), runs the backend, undoes the order and merges heads computed in two components
exactly through their log-sum-exps.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from sparse_transformer.kernels.reference import masked_softmax_attention
from sparse_transformer.patterns import (
    ComponentPlan,
    Pattern,
    Schedule,
    inverse_permutation,
    strided_permutation,
)

BACKENDS = ("auto", "reference", "sdpa", "torch", "triton", "flex")
_MODULES = {
    "torch": "sparse_transformer.kernels.torch_blocksparse",
    "triton": "sparse_transformer.kernels.triton_attention",
    "flex": "sparse_transformer.kernels.flex",
}
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# -- prepared attention ----------------------------------------------------------------------
@dataclass(eq=False)
class Prepared:
    """A pattern ready to run at one length, head count, head dims, dtype and device.

    ``backend`` is the resolved backend (never "auto"). Subclasses hold what it needs on the
    device; everything here is built once by ``prepare`` and only read by ``run``.
    """

    backend: str
    pattern: Pattern
    n: int
    n_heads: int


@dataclass(eq=False)
class Dense(Prepared):
    """"reference" and "sdpa": the dense [H, N, N] mask (None for SDPA's ``is_causal``)."""

    mask: torch.Tensor | None = None
    empty_rows: bool = False  # some query has no key: SDPA gives NaN there, we give 0


@dataclass(eq=False)
class Component:
    """One plan component prepared for a tile backend on one device."""

    plan: ComponentPlan  # index tensors on the device
    heads: torch.Tensor | None  # its heads' indices; None when it holds every head in order
    perm: torch.Tensor | None  # its position order (paper 5.5); None in natural order
    inverse: torch.Tensor | None
    tables: Any  # what the backend derived from the plan (tile lists and masks, a BlockMask)


@dataclass(eq=False)
class Components(Prepared):
    """"torch" and "flex": every component of the plan (``_MODULES[backend]`` runs them)."""

    n_pad: int = 0
    components: tuple[Component, ...] = ()


def prepare(pattern: Pattern, n: int, n_heads: int, head_dim: int, v_dim: int,
            dtype: torch.dtype, device: torch.device | str, backend: str = "auto") -> Prepared:
    """Resolve ``backend`` for this problem and build what it needs (see the module docstring).

    Raises ValueError/TypeError naming the problem when the backend cannot take it (unknown
    name, not importable here, unsupported dtype or head dim).
    """
    device = torch.device(device)
    name = resolve(backend, device.type, pattern, n, n_heads)
    if name == "reference":
        return Dense(name, pattern, n, n_heads, mask=pattern.mask(n, n_heads, device=device))
    if name == "sdpa":
        if is_causal_at(pattern, n, n_heads):
            return Dense(name, pattern, n, n_heads)
        return Dense(name, pattern, n, n_heads, mask=pattern.sdpa_mask(n, n_heads, device),
                     empty_rows=not _every_row_has_a_key(pattern, n, n_heads))
    module = load_backend(name)
    if name == "triton":
        return module.prepare(pattern, n, n_heads, head_dim, v_dim, dtype, device)
    q_block, k_block = module.block_sizes(head_dim, dtype, device)
    plan = pattern.plan(n, n_heads, q_block, k_block)
    comps = []
    for cp in plan.components:
        cp = cp.to(device)
        every = cp.heads == tuple(range(n_heads))
        perm = strided_permutation(plan.n_pad, cp.order, device) if cp.order else None
        comps.append(Component(
            cp, None if every else torch.tensor(cp.heads, device=device), perm,
            None if perm is None else inverse_permutation(perm),
            module.component_tables(cp, device)))
    return Components(name, pattern, n, n_heads, n_pad=plan.n_pad, components=tuple(comps))


def run(p: Prepared, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
        ) -> torch.Tensor:
    """Attention of q, k [B, H, N, D], v [B, H, N, Dv] through ``p`` -> [B, H, N, Dv].

    No checks: ``p`` was prepared for these shapes (``attention`` checks for its callers).
    A plain function rather than a method, so ``torch.compile`` traces it for a ``Prepared``
    that ``attention`` looked up as well as for one the model passes in.
    """
    if p.backend == "triton":
        return _module(p.backend).sparse_attention(q, k, v, p, scale)
    if p.backend == "reference":
        work = q.dtype if q.dtype == torch.float64 else torch.float32
        out, _ = masked_softmax_attention(q.to(work), k.to(work), v.to(work), p.mask, scale)
        return out.to(q.dtype)
    if p.backend == "sdpa":
        if p.mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=p.mask, scale=scale)
        return torch.nan_to_num(out, nan=0.0) if p.empty_rows else out
    return _run_components(p, q, k, v, scale)


def unpack_qkv(qkv: torch.Tensor, n_heads: int, d_qk: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views q, k [B, H, N, d_qk / H] and v [B, H, N, Dv] of a packed projection ``qkv``
    [B, N, 2 d_qk + H Dv]: q, k and v side by side on the last dim, heads inside each (the
    model's one fused matrix, paper 5.1). No copy."""
    b, n, width = qkv.shape
    q, k, v = qkv.split([d_qk, d_qk, width - 2 * d_qk], dim=-1)
    return tuple(x.view(b, n, n_heads, -1).transpose(1, 2) for x in (q, k, v))


def run_packed(p: Prepared, qkv: torch.Tensor, n_heads: int, d_qk: int, scale: float
               ) -> torch.Tensor:
    """``run`` on the views ``unpack_qkv`` gives -> [B, H, N, Dv]; differentiable in ``qkv``.

    The "triton" backend takes the packed tensor whole and writes d(qkv) as one tensor in its
    backward, so autograd does not concatenate dq, dk and dv after it (a copy of three
    [B, N, H, D] gradients per layer: 0.13 ms of 3.3 at fixed's 4 x 16,384, issue 18). Every
    other backend runs on the views, and autograd concatenates as before.
    """
    if p.backend == "triton":
        return _module(p.backend).sparse_attention_packed(qkv, p, n_heads, d_qk, scale)
    return run(p, *unpack_qkv(qkv, n_heads, d_qk), scale)


# -- the public function ---------------------------------------------------------------------
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

    Each call checks its inputs and finds the pattern's ``Prepared`` in ``PREPARED`` (module
    docstring); a model prepares its layers once instead and calls ``run``.
    """
    _validate(q, k, v, pattern, backend, scale, check_finite)
    B, H, N, D = q.shape
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    p = _lookup(pattern, N, H, D, v.shape[-1], q.dtype, q.device, backend)
    return run(p, q, k, v, scale)


class PreparedLRU:
    """The ``Prepared`` values of the last distinct ``attention`` calls: at most ``size`` of
    them, holding at most ``max_bytes`` of device tensors (a dense mask is H x N x N bytes)."""

    def __init__(self, size: int = 32, max_bytes: int = 512 << 20):
        self.size, self.max_bytes = size, max_bytes
        self._items: OrderedDict[tuple, tuple[Prepared, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> Prepared:
        """The entry for ``key`` = ``prepare``'s arguments, built on a miss."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item[0]
        prepared = prepare(*key)
        size = _tensor_bytes(prepared)
        self._items[key] = (prepared, size)
        self._bytes += size
        while len(self._items) > 1 and (len(self._items) > self.size
                                        or self._bytes > self.max_bytes):
            _, (_, gone) = self._items.popitem(last=False)
            self._bytes -= gone
        return prepared

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


def _tensor_bytes(x: Any) -> int:
    """Bytes of the tensors in ``x``, a Prepared value (dataclasses, tuples, lists)."""
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (tuple, list)):
        return sum(_tensor_bytes(y) for y in x)
    if hasattr(x, "__dataclass_fields__"):
        return sum(_tensor_bytes(getattr(x, f)) for f in x.__dataclass_fields__)
    return 0


PREPARED = PreparedLRU()


@torch.compiler.assume_constant_result
def _lookup(pattern: Pattern, n: int, n_heads: int, head_dim: int, v_dim: int,
            dtype: torch.dtype, device: torch.device, backend: str) -> Prepared:
    # torch.compile runs this once while tracing and keeps the result as a constant, so a
    # compiled caller has no graph break here (``run`` only reads the result's fields).
    return PREPARED.get((pattern, n, n_heads, head_dim, v_dim, dtype, device, backend))


# -- choosing a backend ----------------------------------------------------------------------
def resolve_backend(backend: str, q: torch.Tensor, pattern: Pattern) -> str:
    """The backend ``attention`` runs for ``backend`` on q's device, shape and ``pattern``."""
    return resolve(backend, q.device.type, pattern, q.shape[2], q.shape[1])


def auto_backend(pattern: Pattern, n_ctx: int, n_heads: int, device_type: str = "cuda") -> str:
    """What "auto" picks for ``pattern`` at ``n_ctx`` on a device type (for cost reports)."""
    return resolve("auto", device_type, pattern, n_ctx, n_heads)


def resolve(backend: str, device_type: str, pattern: Pattern, n: int, n_heads: int) -> str:
    """The backend to run: ``backend`` itself (checked to be usable here) or what "auto"
    picks for ``pattern`` at length ``n`` with ``n_heads`` heads on ``device_type``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    if backend != "auto":
        if backend in _MODULES:
            load_backend(backend)  # raises a clear error if unavailable
        return backend
    if device_type == "cuda":
        if is_causal_at(pattern, n, n_heads):
            return "sdpa"
        return "triton" if _available("triton") else "torch"
    if n <= 2048:
        # Small CPU problems: dense masked matmuls beat gathering tiles once the pattern keeps
        # a large share of the causal work.
        plan = pattern.plan(n, n_heads, 32, 32)
        causal_tiles = n_heads * (plan.n_pad // 32) * (plan.n_pad // 32 + 1) // 2
        if plan.tiles_computed() > 0.6 * causal_tiles:
            return "reference"
    return "torch"


def is_causal_at(pattern: Pattern, n_ctx: int, n_heads: int) -> bool:
    """Whether every head of ``pattern`` is plain causal attention at length ``n_ctx``.

    Every term is a subset of causal attention, so a head is causal exactly when one of its
    terms is (``kinds.Kind.covers_causal``: causal at offset 0, or a window at offset 0 at
    least n_ctx wide).
    """
    return all(any(t.rules.covers_causal(t, n_ctx) for t in pattern.head_terms(h, n_heads))
               for h in range(n_heads))


def _every_row_has_a_key(pattern: Pattern, n: int, n_heads: int) -> bool:
    return all(any(t.offset == 0 for t in pattern.head_terms(h, n_heads))
               for h in range(n_heads))


def _available(name: str) -> bool:
    try:
        load_backend(name)
    except (ImportError, RuntimeError, ValueError):
        return False
    return True


def _module(name: str) -> ModuleType:
    # The backend module ``prepare`` imported. Read from Python's module table rather than
    # kept on the Prepared value: torch.compile can then guard the function it calls.
    return sys.modules[_MODULES[name]]


def load_backend(name: str) -> ModuleType:
    """Import a backend module, raising a clear error if it cannot be used here."""
    if name not in _MODULES:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(_MODULES[name])  # Python keeps it after the first time
    except ImportError as err:
        raise ValueError(f"attention backend {name!r} is not available here: {err}") from None


# -- the component path of the "torch" and "flex" backends -----------------------------------
def _run_components(p: Components, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Run a tile backend over every component of the plan and assemble heads."""
    B, H, N, D = q.shape
    pad = p.n_pad - N
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    run_component = _module(p.backend).run_component  # looked up per call: tests count calls
    if len(p.components) == 1 and p.components[0].perm is None \
            and p.components[0].heads is None:
        # One natural-order component with every head: no gather, permutation or restack.
        out, _ = run_component(q.contiguous(), k.contiguous(), v.contiguous(),
                               p.components[0], scale)
        return out[:, :, :N] if pad else out
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(H)]
    for comp in p.components:
        if comp.heads is None:  # one component holds every head: no gather copy
            qc, kc, vc = q, k, v
        else:
            qc, kc, vc = (x.index_select(1, comp.heads) for x in (q, k, v))
        if comp.perm is not None:
            qc, kc, vc = (x[:, :, comp.perm] for x in (qc, kc, vc))
        out, lse = run_component(qc.contiguous(), kc.contiguous(), vc.contiguous(), comp, scale)
        if comp.inverse is not None:
            out, lse = out[:, :, comp.inverse], lse[:, :, comp.inverse]
        for idx, h in enumerate(comp.plan.heads):
            parts[h].append((out[:, idx], lse[:, idx]))
    out = torch.stack([_merge(part) for part in parts], dim=1)
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
