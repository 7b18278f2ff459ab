"""Block-sparse attention in plain PyTorch: computes only the tiles a plan lists.

Runs on any device with autograd and needs no compiler: the portable fallback and the
CPU training path. For each query tile it gathers the planned key tiles into one contiguous
[M * k_block] key range, scores them in float32, applies the element rule of the pattern's
terms (a mask over the gathered ranges, built once when the pattern is prepared:
``component_tables``), and takes a masked softmax.
Time and memory are O(N x active keys per query), not O(N^2) (paper 4.2: O(n sqrt n) for the
factorized patterns).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparse_transformer.kernels.reference import masked_softmax_attention
from sparse_transformer.patterns import ComponentPlan


def block_sizes(head_dim: int, dtype: torch.dtype, device: torch.device) -> tuple[int, int]:
    """Tile sizes (q_block, k_block).

    Small key tiles waste little on sparse rows (fixed summaries, window edges); wide query
    tiles amortise the gather of each key tile over more rows (measured on 2 CPU cores: 128 x 32
    beat 32 x 32 and 64 x 32 on fixed and strided patterns at N = 1024-2048).
    """
    return (128, 32)


@dataclass(eq=False)
class ClassTables:
    """One class of a component: its heads (slots), key tile lists and element mask."""

    heads: torch.Tensor  # long [Hk]: the component slots of the class's heads
    index: torch.Tensor  # long [n_qt, M]: key tiles gathered per query tile
    allowed: torch.Tensor  # bool [n_qt, q_block, M * k_block]: the element rule over them


def component_tables(cp: ComponentPlan, device: torch.device) -> tuple[ClassTables, ...]:
    """Per class of ``cp`` (on ``device``), in class order: what ``run_component`` reads.

    The element mask depends only on the plan, so it is built here once, by whoever prepares
    the pattern (``dispatch.prepare``), and shared by every call; its size is N x active
    keys per query.
    """
    head_class = cp.head_class.tolist()
    order = sorted(range(len(head_class)), key=lambda k_: head_class[k_])
    out = []
    for c in sorted(set(head_class)):
        heads = torch.tensor([h for h in order if head_class[h] == c], device=device)
        index, valid = _tile_lists(cp, c, device)
        out.append(ClassTables(heads, index, _element_mask(cp, c, index, valid)))
    return tuple(out)


def run_component(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, comp, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention for one component (heads and positions already gathered/permuted).

    q, k: [B, Hc, N, D]; v: [B, Hc, N, Dv] with N = comp.plan.n_ctx; ``comp`` is a
    ``dispatch.Component`` whose tables came from ``component_tables``. Returns out
    [B, Hc, N, Dv] in q's dtype and lse [B, Hc, N] in float32 (float64 for float64 inputs).
    """
    B, Hc, N, D = q.shape
    Dv = v.shape[-1]
    cp = comp.plan
    qb, kb = cp.q_block, cp.k_block
    nqt, nkt = N // qb, N // kb
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = q.new_empty(B, Hc, N, Dv, dtype=work)
    lse = q.new_empty(B, Hc, N, dtype=work)
    outs, lses = [], []
    for t in comp.tables:
        hidx, index, n_h = t.heads, t.index, t.heads.shape[0]
        M = index.shape[1]
        qt = q[:, hidx].to(work).reshape(B, n_h, nqt, qb, D)
        kt = k[:, hidx].to(work).reshape(B, n_h, nkt, kb, D)[:, :, index]
        vt = v[:, hidx].to(work).reshape(B, n_h, nkt, kb, Dv)[:, :, index]
        kt = kt.reshape(B, n_h, nqt, M * kb, D)
        vt = vt.reshape(B, n_h, nqt, M * kb, Dv)
        o, l = masked_softmax_attention(qt, kt, vt, t.allowed, scale)
        outs.append((hidx, o.reshape(B, n_h, N, Dv)))
        lses.append((hidx, l.reshape(B, n_h, N)))
    if len(outs) == 1:
        out, lse = outs[0][1], lses[0][1]
    else:  # put class groups back in head order (index_copy keeps autograd)
        out = out.index_copy(1, torch.cat([h for h, _ in outs]), torch.cat([o for _, o in outs], 1))
        lse = lse.index_copy(1, torch.cat([h for h, _ in lses]), torch.cat([l for _, l in lses], 1))
    return out.to(q.dtype), lse


def _element_mask(cp: ComponentPlan, c: int, index: torch.Tensor, valid: torch.Tensor
                  ) -> torch.Tensor:
    """Bool [n_qt, q_block, M * k_block]: the element rule over the gathered key ranges."""
    device = index.device
    nqt, M = index.shape
    qb, kb = cp.q_block, cp.k_block
    i = (torch.arange(nqt, device=device)[:, None] * qb
         + torch.arange(qb, device=device))[:, :, None]  # [nqt, qb, 1]
    j = (index[:, :, None] * kb + torch.arange(kb, device=device)).reshape(nqt, 1, M * kb)
    allowed = torch.zeros(nqt, qb, M * kb, dtype=torch.bool, device=device)
    for term in cp.terms[c]:
        allowed |= term.allowed(i, j)
    return allowed & valid.repeat_interleave(kb, dim=1)[:, None, :]


def _tile_lists(cp: ComponentPlan, c: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Full and partial key tiles of class c merged into one padded [n_qt, M] list + validity."""
    # everything on the target device: the plan's tensors may live on any device, so nothing
    # here may assume the CPU
    fc, fi = cp.full_count[c].to(device).long(), cp.full_index[c].to(device).long()
    pc, pi = cp.partial_count[c].to(device).long(), cp.partial_index[c].to(device).long()
    index = torch.cat([fi, pi], dim=1)
    col = torch.arange(index.shape[1], device=device)
    valid = torch.where(col < fi.shape[1], col[None] < fc[:, None],
                        (col - fi.shape[1])[None] < pc[:, None])
    # move each row's valid entries to the front, so M is the longest row rather than the
    # sum of the full and partial widths
    front = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    index, valid = index.gather(1, front), valid.gather(1, front)
    width = max(int(valid.sum(1).max()), 1)
    index, valid = index[:, :width], valid[:, :width]
    # invalid entries point at tile 0 (any real tile) and are masked out
    return torch.where(valid, index, torch.zeros_like(index)), valid
