"""The model on each block-sparse backend equals the dense reference, at sizes that skip tiles.

backend="torch" runs in float64 (tolerance 1e-12: only the summation order differs);
backend="triton" runs its kernels through Triton's interpreter on the CPU in float32, as the
kernels take no float64 (tolerance 2e-5 absolute and relative; the differences measured are
below 1e-6). Each case asserts, first, that every layer's plan at the
backend's own tile sizes computes fewer tiles than causal attention (so the test cannot pass on
a dense path), and, then, that the backend's ``run_component`` really ran.
"""

from __future__ import annotations

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer

# backend -> (n_ctx, attention schedule: one pattern per layer, dtype, tolerance)
CASES = {
    "torch": (256, "schedule(strided(stride=16, mode='split'), "
                   "fixed(stride=64, summary=16, distinct=2))", torch.float64, 1e-12),
    "triton": (128, "schedule(strided(stride=16, mode='split'), "
                    "fixed(stride=32, summary=8, distinct=2))", torch.float32, 2e-5),
}


def _models(backend: str) -> tuple[SparseTransformer, SparseTransformer]:
    """(model on ``backend``, the same weights on "reference"), random non-zero weights."""
    if backend == "triton":
        pytest.importorskip("triton")
    n_ctx, attention, dtype, _ = CASES[backend]
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=2, n_ctx=n_ctx, attention=attention,
                      backend=backend)
    torch.manual_seed(0)
    model = SparseTransformer(cfg).to(dtype)
    with torch.no_grad():  # leave the zero output matrix and zero biases behind
        for p in model.parameters():
            p.normal_(0, 0.3)
    ref = SparseTransformer(cfg.replace(backend="reference")).to(dtype)
    ref.load_state_dict(model.state_dict())
    return model, ref


@pytest.mark.parametrize("backend", list(CASES))
def test_logits_and_gradients_match_the_reference(backend, count_backend_calls,
        assert_plans_skip_tiles):
    model, ref = _models(backend)
    n_ctx, _, _, tol = CASES[backend]
    assert_plans_skip_tiles(model, n_ctx)
    x = torch.randint(0, 256, (2, n_ctx))
    calls = count_backend_calls(backend)
    loss = model.loss(x)
    loss.backward()
    assert len(calls) >= model.cfg.n_layer  # the block-sparse backend computed every layer
    ref_loss = ref.loss(x)
    ref_loss.backward()
    torch.testing.assert_close(model(x), ref(x), atol=tol, rtol=tol)
    torch.testing.assert_close(loss, ref_loss, atol=tol, rtol=tol)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=tol, rtol=tol, msg=name)
