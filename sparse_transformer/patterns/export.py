"""Export patterns to torch's FlexAttention and SDPA, for users who serve elsewhere (issue 2).

    to_mask_mod(p, n_heads)          mask_mod(b, h, q_idx, kv_idx) -> BoolTensor, for
                                     ``flex_attention`` / ``create_block_mask``
    to_block_mask(p, n_ctx, H, 128)  ``BlockMask`` [1, H, ...] over every head in natural order,
                                     built from our closed-form plan (no n x n tensor)
    component_block_mask(cp)         ``BlockMask`` of one ``ComponentPlan`` in its own positions
                                     (reordered when ``cp.order > 0``, paper 5.5)
    p.sdpa_mask(n_ctx, H)            dense bool [1, H, N, N] for ``scaled_dot_product_attention``

The element rule inside every mask_mod is the pattern's own ``Term.allowed`` (paper 4.2-4.3),
selected per head with ``torch.where`` on the head index so no Python branch depends on tensor
values: the callables work under vmap (``create_block_mask``) and ``torch.compile``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.plan import ComponentPlan, _csr
from sparse_transformer.patterns.terms import Term

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_CHUNK = 1 << 22  # tile elements evaluated at once when clipping boundary tiles


def _terms_allowed(terms: Sequence[Term], i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    ok = terms[0].allowed(i, j)
    for t in terms[1:]:
        ok = ok | t.allowed(i, j)
    return ok


def _head_switch(per_head: Sequence[tuple[Term, ...]], name: str) -> MaskMod:
    """mask_mod picking ``per_head[h]`` for the (tensor) head index h.

    Heads with equal terms share one evaluation; the last class is the default branch, so a
    pattern with one class (most of them) costs no ``where`` at all.
    """
    classes: list[tuple[Term, ...]] = []
    members: list[list[int]] = []
    for h, terms in enumerate(per_head):
        if terms not in classes:
            classes.append(terms)
            members.append([])
        members[classes.index(terms)].append(h)

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
                 ) -> torch.Tensor:
        out = _terms_allowed(classes[-1], q_idx, kv_idx)
        for terms, heads in zip(classes[:-1], members[:-1]):
            sel = h == heads[0]
            for k in heads[1:]:
                sel = sel | (h == k)
            out = torch.where(sel, _terms_allowed(terms, q_idx, kv_idx), out)
        return out

    mask_mod.__name__ = name
    mask_mod.__qualname__ = name
    return mask_mod


def _mod_name(text: str) -> str:
    """Identifier from a pattern name: "fixed(stride=128, ...)" -> "mask_fixed_stride128..."."""
    keep = "".join(c if c.isalnum() else "_" for c in text.replace("=", ""))
    return "mask_" + "_".join(part for part in keep.split("_") if part)


def to_mask_mod(pattern: Pattern, n_heads: int) -> MaskMod:
    """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` with the pattern's exact semantics.

    ``h`` indexes the ``n_heads`` heads the pattern is laid out over (split and distinct heads
    depend on it). Natural positions, 0-based; the result broadcasts over its arguments.
    """
    if not isinstance(pattern, Pattern):
        raise TypeError(f"to_mask_mod takes a Pattern, got {type(pattern).__name__}")
    pattern.check_heads(n_heads)
    per_head = [pattern.head_terms(h, n_heads) for h in range(n_heads)]
    return _head_switch(per_head, _mod_name(f"{pattern.name}_H{n_heads}"))


def _widen(index: torch.Tensor, n_kv_tiles: int) -> torch.Tensor:
    """Pad the last dim of a CSR index to ``n_kv_tiles``: torch reads the number of key tiles
    of a BlockMask from ``kv_indices.shape[-1]``, while our plans store only the widest row."""
    extra = n_kv_tiles - index.shape[-1]
    return torch.nn.functional.pad(index, (0, extra)) if extra > 0 else index


def _block_mask_cls():
    try:
        from torch.nn.attention.flex_attention import BlockMask
    except ImportError as err:  # pragma: no cover - torch >= 2.5 has it
        raise ImportError("FlexAttention export needs torch >= 2.5 "
                          "(torch.nn.attention.flex_attention)") from err
    return BlockMask


def component_block_mask(cp: ComponentPlan, device: torch.device | str = "cpu"):
    """``BlockMask`` of one component in its own coordinates, shape [1, len(cp.heads), N, N].

    H runs over ``cp.heads`` in order; N is the component's padded length ``cp.n_ctx``; tiles are
    ``cp.q_block`` x ``cp.k_block``. When ``cp.order = l > 0`` the positions are the reordered
    ones (``x[..., strided_permutation(N, l), :]``), and the caller undoes the order on the
    output. Partial tiles go to ``kv_*`` (mask_mod evaluated), full tiles to ``full_kv_*``.
    """
    BlockMask = _block_mask_cls()
    cls = cp.head_class.long()
    name = _mod_name(f"component_order{cp.order}_heads_" + "_".join(map(str, cp.heads)))
    nk = cp.n_key_tiles
    return BlockMask.from_kv_blocks(
        cp.partial_count[cls][None].to(device), _widen(cp.partial_index[cls], nk)[None].to(device),
        cp.full_count[cls][None].to(device), _widen(cp.full_index[cls], nk)[None].to(device),
        BLOCK_SIZE=(cp.q_block, cp.k_block),
        mask_mod=_head_switch(cp.head_terms(), name),
        seq_lengths=(cp.n_ctx, cp.n_ctx),
    )


def clip_tiles(terms: Sequence[Term], a: np.ndarray, b: np.ndarray, full: np.ndarray,
               n_ctx: int, q_block: int, k_block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Restrict natural-order tiles to the first ``n_ctx`` positions.

    Tiles reaching past ``n_ctx`` (the last query row and key column of tiles) are settled
    element by element over their real positions: dropped when nothing real is allowed, never
    full (this matches ``create_block_mask``, which pads the mask with False). Work is
    O(boundary tiles x tile area), i.e. O(n x block), never n x n.
    """
    edge = ((a + 1) * q_block > n_ctx) | ((b + 1) * k_block > n_ctx)
    if not edge.any():
        return a, b, full
    idx = np.nonzero(edge)[0]
    keep = np.ones(a.size, dtype=bool)
    ii = np.arange(q_block)[:, None]
    jj = np.arange(k_block)[None, :]
    step = max(1, _CHUNK // (q_block * k_block))
    for s in range(0, idx.size, step):
        sub = idx[s:s + step]
        i = (a[sub] * q_block)[:, None, None] + ii
        j = (b[sub] * k_block)[:, None, None] + jj
        ok = np.zeros((sub.size, q_block, k_block), dtype=bool)
        for t in terms:
            ok |= t.allowed_np(i, j)
        ok &= (i < n_ctx) & (j < n_ctx)
        keep[sub] = ok.any(axis=(1, 2))
    full = full.copy()
    full[idx] = False
    return a[keep], b[keep], full[keep]


def to_block_mask(pattern: Pattern, n_ctx: int, n_heads: int, block: int = 128,
                  device: torch.device | str = "cpu"):
    """FlexAttention ``BlockMask`` [1, n_heads, n_ctx, n_ctx] in natural order, from our plan.

    Equal to ``create_block_mask(pattern.mask_mod(H), 1, H, n_ctx, n_ctx, BLOCK_SIZE=block)``
    (same active, full and partial tiles) but built in closed form: no n x n tensor, so it
    works at n_ctx = 1M. ``n_ctx`` need not be a multiple of ``block``. Strided columns are
    planned in natural order here (FlexAttention does not reorder); for the fast reordered
    layout use ``component_block_mask`` on ``pattern.plan(...)`` components.
    """
    _check_positive_int("n_ctx", n_ctx)
    _check_positive_int("block", block)
    BlockMask = _block_mask_cls()
    plan = pattern.plan(n_ctx, n_heads, block, block, reorder=False)
    n_rows = plan.n_pad // block
    full_rows, part_rows = [None] * n_heads, [None] * n_heads
    for cp in plan.components:
        for k, h in enumerate(cp.heads):
            c = int(cp.head_class[k])
            a, b, f = clip_tiles(cp.terms[c], *cp.pairs[c], n_ctx, block, block)
            full_rows[h] = (a[f], b[f])
            part_rows[h] = (a[~f], b[~f])
    fc, fi = _csr(full_rows, n_rows)
    pc, pi = _csr(part_rows, n_rows)
    return BlockMask.from_kv_blocks(
        pc[None].to(device), _widen(pi, n_rows)[None].to(device),
        fc[None].to(device), _widen(fi, n_rows)[None].to(device),
        BLOCK_SIZE=(block, block),
        mask_mod=to_mask_mod(pattern, n_heads),
        seq_lengths=(n_ctx, n_ctx),
    )
