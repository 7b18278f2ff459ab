"""backend="flex": FlexAttention over our per-component BlockMasks vs the float64 reference.

On the CPU torch runs FlexAttention forward only (eager), so gradients are checked only on CUDA
and the CPU path must refuse inputs that require grad with a clear NotImplementedError.
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
def test_flex_forward_matches_reference(pattern, n, H):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, H, n, 16, generator=g, dtype=torch.float64) for _ in range(3))
    ref, _ = masked_softmax_attention(q, k, v, pattern.mask(n, H), 0.25)
    with torch.no_grad():
        out = attention(*(x.float().to(DEVICE) for x in (q, k, v)), pattern, scale=0.25,
                        backend="flex")
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert float((out.cpu().double() - ref).abs().max()) < 2e-5


def test_flex_component_lse():
    p = P.column(8)  # reordered component with empty rows (lse = -inf)
    cp = p.plan(64, 1, *flex.block_sizes(16, torch.float32, torch.device(DEVICE))).components[0]
    assert cp.order == 8
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, cp.n_ctx, 16, generator=g) for _ in range(3))
    i = torch.arange(cp.n_ctx)
    mask = cp.terms[0][0].allowed(i[:, None], i[None, :])
    ref_out, ref_lse = masked_softmax_attention(q.double(), k.double(), v.double(), mask, 0.5)
    with torch.no_grad():
        out, lse = flex.run_component(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), cp, 0.5)
    assert lse.dtype == torch.float32
    assert torch.equal(torch.isfinite(lse.cpu()), torch.isfinite(ref_lse))
    fin = torch.isfinite(ref_lse)
    assert float((lse.cpu().double() - ref_lse)[fin].abs().max()) < 1e-5
    assert float((out.cpu().double() - ref_out).abs().max()) < 1e-5


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
