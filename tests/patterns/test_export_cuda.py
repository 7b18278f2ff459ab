"""Compiled FlexAttention on a GPU with our BlockMasks, natural and reordered, against float64.

Skipped without CUDA. Also runnable as a script on a GPU machine without pytest:
``PYTHONPATH=. python tests/patterns/test_export_cuda.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparse_transformer import patterns as P
from sparse_transformer.patterns.export import component_block_mask
from sparse_transformer.patterns.plan import inverse_permutation, strided_permutation

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CASES = [  # (pattern, heads, n_ctx): awkward lengths on purpose
    (P.fixed(128, 32, 4), 8, 2000),
    (P.strided(64, "split"), 4, 4096),
    (P.strided(64, "merge"), 2, 1000),
    (P.local(100), 2, 777),
    (P.column(100), 1, 1500),
]


def _reference(q, k, v, mask):
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v.double()


def _by_components(flex, p, q, k, v, block=128):
    """Run each plan component in its own positions and merge a head's parts by log-sum-exp."""
    _, H, n, _ = q.shape
    plan = p.plan(n, H, block, block)
    N = plan.n_pad
    qp, kp, vp = (torch.nn.functional.pad(x, (0, 0, 0, N - n)) for x in (q, k, v))
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(H)]
    for cp in plan.components:
        idx = torch.tensor(cp.heads, device=q.device)
        qc, kc, vc = qp[:, idx], kp[:, idx], vp[:, idx]
        if cp.order:
            perm = strided_permutation(N, cp.order, device=q.device)
            qc, kc, vc = qc[:, :, perm], kc[:, :, perm], vc[:, :, perm]
        o, lse = flex(qc, kc, vc, block_mask=component_block_mask(cp, q.device), return_lse=True)
        if cp.order:
            inv = inverse_permutation(perm)
            o, lse = o[:, :, inv], lse[:, :, inv]
        for t, h in enumerate(cp.heads):
            parts[h].append((o[:, t].double(), lse[:, t].double()))
    heads = []
    for h in range(H):
        w = torch.softmax(torch.stack([lse for _, lse in parts[h]]), 0)
        heads.append(sum(w[c][..., None] * o for c, (o, _) in enumerate(parts[h])))
    return torch.stack(heads, 1)[:, :, :n], [cp.order for cp in plan.components]


@pytest.mark.parametrize("p,H,n", CASES, ids=[f"{c[0].name}-{c[2]}" for c in CASES])
def test_compiled_flex_matches_float64(p, H, n):
    errs = _check(p, H, n)
    assert errs["natural"] < 2e-3 and errs["components"] < 2e-3, errs


_FLEX = None


def _check(p, H, n) -> dict:
    global _FLEX
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if _FLEX is None:
        # every pattern (and component) has its own mask_mod constants, hence its own graph
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _FLEX = torch.compile(flex_attention)
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(1, H, n, 64, device=dev, generator=g) for _ in range(3))
    ref = _reference(q, k, v, p.mask(n, H, device=dev))
    bm = p.block_mask(n, H, 128, device=dev)
    tb = create_block_mask(p.mask_mod(H), 1, H, n, n, device=dev, BLOCK_SIZE=128)
    assert torch.equal(bm.to_dense(), tb.to_dense())
    assert torch.equal(bm.full_kv_num_blocks, tb.full_kv_num_blocks)
    natural = (_FLEX(q, k, v, block_mask=bm).double() - ref).abs().max().item()
    out, orders = _by_components(_FLEX, p, q, k, v)
    return {"natural": natural, "components": (out - ref).abs().max().item(), "orders": orders}


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name())
    for p, H, n in CASES:
        print(f"{p.name:45s} H={H} n={n}", _check(p, H, n))
