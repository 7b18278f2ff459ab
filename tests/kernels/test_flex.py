"""backend="flex": FlexAttention over our per-component BlockMasks vs the float64 reference.

On CUDA the backend runs ``torch.compile(flex_attention)``, whose kernels walk the BlockMask's
tile lists. On the CPU the backend runs eager Flex, which evaluates the mask_mod on every
element and ignores the tile lists: there ``test_flex_backend_matches_reference`` checks the
component assembly (gathers, reordering, log-sum-exp merges) and the mask_mod only, and
``test_compiled_flex_reads_our_block_masks`` compiles Flex on the CPU to check the tile lists
themselves. Eager Flex has no backward on the CPU, so gradients are checked only on CUDA and
the CPU path must refuse inputs that require grad with a clear NotImplementedError.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torch.nn.attention.flex_attention")

from sparse_transformer import attention  # noqa: E402
from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.kernels import flex  # noqa: E402
from sparse_transformer.kernels.reference import masked_softmax_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("pattern, n, H", [
    (P.causal(), 45, 1),
    (P.strided(8, "merge"), 70, 2),  # natural window + reordered column, merged by lse
    (P.strided(8, "split"), 64, 2),
    (P.fixed(16, 4, 2), 100, 2),
])
def test_flex_backend_matches_reference(pattern, n, H):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, H, n, 16, generator=g, dtype=torch.float64) for _ in range(3))
    ref, _ = masked_softmax_attention(q, k, v, pattern.mask(n, H), 0.25)
    with torch.no_grad():
        out = attention(*(x.float().to(DEVICE) for x in (q, k, v)), pattern, scale=0.25,
                        backend="flex")
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert float((out.cpu().double() - ref).abs().max()) < 2e-5


def test_flex_component_lse():
    from sparse_transformer.kernels import prepare

    p = P.column(8)  # reordered component with empty rows (lse = -inf)
    comp = prepare(p, 64, 1, 16, 16, torch.float32, DEVICE, "flex").components[0]
    cp = comp.plan.to("cpu")
    assert cp.order == 8
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, cp.n_ctx, 16, generator=g) for _ in range(3))
    i = torch.arange(cp.n_ctx)
    mask = cp.terms[0][0].allowed(i[:, None], i[None, :])
    ref_out, ref_lse = masked_softmax_attention(q.double(), k.double(), v.double(), mask, 0.5)
    with torch.no_grad():
        out, lse = flex.run_component(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), comp, 0.5)
    assert lse.dtype == torch.float32
    assert torch.equal(torch.isfinite(lse.cpu()), torch.isfinite(ref_lse))
    fin = torch.isfinite(ref_lse)
    assert float((lse.cpu().double() - ref_lse)[fin].abs().max()) < 1e-5
    assert float((out.cpu().double() - ref_out).abs().max()) < 1e-5


@pytest.mark.parametrize("pattern, n, H", [
    (P.strided(8, "merge"), 70, 2),  # a natural and a reordered component
    (P.fixed(16, 4, 2), 100, 2),
])
def test_compiled_flex_reads_our_block_masks(pattern, n, H):
    """``torch.compile(flex_attention)`` with each component's BlockMask, in the component's
    positions, against the float64 reference there. Compiled Flex computes only the listed
    tiles and applies the mask_mod only on partial ones, so this checks the tile lists and
    their full/partial split; dropping the partial tiles must change the result (the kernel
    really reads them). Compiles on the CPU too (Inductor's C++ Flex template, seconds)."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    from sparse_transformer.kernels import prepare

    compiled = torch.compile(flex_attention, dynamic=False, fullgraph=True)
    g = torch.Generator().manual_seed(0)
    for comp in prepare(pattern, n, H, 16, 16, torch.float32, DEVICE, "flex").components:
        cp = comp.plan.to("cpu")
        N, Hc = cp.n_ctx, len(cp.heads)
        q, k, v = (torch.randn(1, Hc, N, 16, generator=g, dtype=torch.float64) for _ in range(3))
        i = torch.arange(N)
        mask = torch.stack([torch.stack([t.allowed(i[:, None], i[None, :]) for t in terms]).any(0)
                            for terms in cp.head_terms()])
        ref, _ = masked_softmax_attention(q, k, v, mask, 0.25)
        args = [x.float().to(DEVICE) for x in (q, k, v)]
        bm = comp.tables
        with torch.no_grad():
            out = compiled(*args, block_mask=bm, scale=0.25)
            assert float((out.cpu().double() - ref).abs().max()) < 2e-5, cp.order
            no_partial = BlockMask.from_kv_blocks(
                torch.zeros_like(bm.kv_num_blocks), bm.kv_indices, bm.full_kv_num_blocks,
                bm.full_kv_indices, BLOCK_SIZE=bm.BLOCK_SIZE, mask_mod=bm.mask_mod,
                seq_lengths=bm.seq_lengths)
            wrong = compiled(*args, block_mask=no_partial, scale=0.25)
        assert float((wrong.cpu().double() - ref).abs().max()) > 1e-2, cp.order


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU-only restriction")
def test_flex_cpu_backward_refused():
    q = torch.randn(1, 1, 32, 16, requires_grad=True)
    with pytest.raises(NotImplementedError, match="no backward on the CPU"):
        attention(q, q, q, P.causal(), backend="flex")


@pytest.mark.cuda
@pytest.mark.skipif(DEVICE != "cuda", reason="FlexAttention backward needs CUDA")
def test_flex_gradients_cuda():  # pragma: no cover - CI has no GPU
    p = P.strided(8, "merge")
    g = torch.Generator().manual_seed(2)
    q, k, v, go = (torch.randn(1, 2, 96, 16, generator=g, dtype=torch.float64) for _ in range(4))
    ref = [x.clone().requires_grad_() for x in (q, k, v)]
    (masked_softmax_attention(*ref, p.mask(96, 2), 0.25)[0] * go).sum().backward()
    xs = [x.float().cuda().requires_grad_() for x in (q, k, v)]
    (attention(*xs, p, scale=0.25, backend="flex") * go.float().cuda()).sum().backward()
    for a, r in zip(xs, ref):
        assert float((a.grad.cpu().double() - r.grad).abs().max()) < math.sqrt(1e-6)
