"""What a forward pass needs besides the weights, built once and passed in (issue 19).

    ForwardState   per (model, length, device, dtype): each layer's attention prepared for that
                   length (the resolved backend, the pattern's plan and device tables:
                   ``kernels.prepare``) and the positions' embedding coordinates. Layers with
                   equal patterns share one. ``SparseTransformer.forward_state`` builds them and
                   keeps the last few (``STATES``), so ``model(x)`` with no state pays one
                   dict lookup per call, not a backend choice and a plan per layer.
    DecodeState    per decoding run (``SparseTransformer.decode_state``): every layer's
                   pattern-aware key/value cache (``kernels/kv_cache.py``), the position as a
                   device tensor (a CUDA graph advances it), and the coordinates of every
                   position. ``model(x, state)`` runs the prompt (the prefill) on the first
                   call and one cached step per call after it: the same modules as training.

A ``LayerState`` is what one block's attention reads from either: ``Attention.forward`` runs
the prepared attention over the whole sequence (and, when decoding, stores the keys and values
in its cache), or, for one decoding step, attends through the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from sparse_transformer.kernels import Prepared, prepare
from sparse_transformer.kernels.kv_cache import CachePlans, LayerCache, StepIndex, lowp_gemm

if TYPE_CHECKING:
    from sparse_transformer.model.transformer import SparseTransformer

STATES = 8  # forward states a model keeps (lengths x devices x dtypes it ran at lately)


@dataclass(eq=False)
class LayerState:
    """What one block's attention reads besides its weights."""

    attend: Prepared | None  # attention over the whole sequence; None: one cached step
    cache: LayerCache | None = None  # decoding: this layer's keys and values
    index: StepIndex | None = None  # a cached step: the query's slots and masks


@dataclass(eq=False)
class ForwardState:
    """Everything a forward pass over ``n`` positions from position 0 needs (module docstring)."""

    n: int
    device: torch.device
    dtype: torch.dtype  # the attention inputs' dtype the backends were prepared for
    layers: tuple[LayerState, ...]
    coords: tuple[torch.Tensor, ...]  # per position table: the rows positions 0..n-1 read


def build_forward_state(model: "SparseTransformer", n: int, device: torch.device,
                        dtype: torch.dtype) -> ForwardState:
    cfg = model.cfg
    d_k, d_v = cfg.d_qk // cfg.n_head, cfg.d_model // cfg.n_head
    shared: dict = {}  # pattern -> its LayerState: built once for all layers that use it
    for block in model.blocks:
        p = block.attn.pattern
        if p not in shared:
            shared[p] = LayerState(prepare(p, n, cfg.n_head, d_k, d_v, dtype, device,
                                           cfg.backend))
    return ForwardState(n, device, dtype, tuple(shared[b.attn.pattern] for b in model.blocks),
                        tuple(model.embed.coordinates(n, device)))


@dataclass(eq=False)
class DecodeState:
    """One decoding run's caches and position (module docstring).

    ``length`` counts the positions in the caches (host side); ``pos`` is the same number on
    the device, where a step reads it. A replayed CUDA graph advances ``pos`` but runs no
    Python, so its caller advances ``length`` (``sample/decode.py``).
    """

    batch: int
    capacity: int  # positions the caches hold: at most n_ctx
    caches: tuple[LayerCache, ...]
    plans: CachePlans  # the layers' distinct group plans (shared per-step index work)
    pos: torch.Tensor  # long [1]: the position the next step computes
    coords: tuple[torch.Tensor, ...]  # per position table: the rows of positions 0..capacity-1
    length: int = 0
    index: StepIndex = field(init=False)  # every step's: a step clears it, its layers fill it
    step_layers: tuple[LayerState, ...] = field(init=False)  # what a step's blocks read

    def __post_init__(self) -> None:
        self.index = StepIndex(self.pos, self.batch, self.plans)
        self.step_layers = tuple(LayerState(None, cache=c, index=self.index)
                                 for c in self.caches)

    def reset(self) -> None:
        """Forget the sequence: the next call prefills from position 0 (the buffers stay)."""
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes of all layers' key/value buffers."""
        return sum(c.nbytes for c in self.caches)

    def slots_read_per_token(self) -> int:
        """Key slots read per decoded token, summed over layers and heads (per sample)."""
        return sum(c.slots_read() for c in self.caches)


def build_decode_state(model: "SparseTransformer", batch: int, capacity: int | None,
                       dense: bool, fused: bool = False) -> DecodeState:
    cfg = model.cfg
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    capacity = cfg.n_ctx if capacity is None else min(int(capacity), cfg.n_ctx)
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    weight = model.head.weight
    device, dtype = weight.device, weight.dtype
    d_k, d_v = cfg.d_qk // cfg.n_head, cfg.d_model // cfg.n_head
    plans = CachePlans(device)
    lowp = lowp_gemm(device, dtype)  # probed once per run, before any CUDA-graph capture
    caches = tuple(LayerCache(b.attn.pattern, cfg.n_head, capacity, batch, d_k, d_v,
                              dtype=dtype, device=device, dense=dense, plans=plans, lowp=lowp,
                              fused=fused)
                   for b in model.blocks)
    return DecodeState(batch, capacity, caches, plans,
                       torch.zeros(1, dtype=torch.long, device=device),
                       tuple(model.embed.coordinates(capacity, device)))
