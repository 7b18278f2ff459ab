"""Decoding a model that runs on a block-sparse backend, against the dense reference.

The prompt's prefill is the model's forward pass, so it runs on the model's backend; the steps
after it read the keys and values that pass stored. For backend="torch" (float64, tolerance
1e-12) and backend="triton" (Triton's interpreter on the CPU, float32, tolerance 2e-5), each
prefill length is one where the plan skips tiles at the backend's tile sizes, the backend's
``run_component`` is seen to run, and every step's logits equal the reference model's forward
pass over the same bytes; sampling from the same seed draws the same bytes.
"""

from __future__ import annotations

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer
from sparse_transformer.sample.decode import Decoder

# backend -> (n_ctx, prompt length, attention schedule, dtype, tolerance)
CASES = {
    "torch": (512, 300, "schedule(strided(stride=16, mode='split'), "
                        "fixed(stride=64, summary=16, distinct=2))", torch.float64, 1e-12),
    "triton": (128, 100, "schedule(strided(stride=16, mode='split'), "
                         "fixed(stride=32, summary=8, distinct=2))", torch.float32, 2e-5),
}


def _models(backend: str) -> tuple[SparseTransformer, SparseTransformer]:
    if backend == "triton":
        pytest.importorskip("triton")
    n_ctx, _, attention, dtype, _ = CASES[backend]
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=2, n_ctx=n_ctx, attention=attention,
                      backend=backend)
    torch.manual_seed(0)
    model = SparseTransformer(cfg).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    ref = SparseTransformer(cfg.replace(backend="reference")).to(dtype).eval()
    ref.load_state_dict(model.state_dict())
    return model, ref


@pytest.mark.parametrize("backend", list(CASES))
def test_prefill_on_the_backend_then_steps_match_the_reference(backend, count_backend_calls,
        assert_plans_skip_tiles):
    model, ref = _models(backend)
    n_ctx, prompt, _, _, tol = CASES[backend]
    assert_plans_skip_tiles(model, prompt + 1)  # the prefill runs prompt + 1 positions
    x = torch.randint(0, 256, (2, n_ctx))
    calls = count_backend_calls(backend)
    dec = Decoder(model, 2, cuda_graph=False)
    got = [dec.prefill(x[:, :prompt])]
    assert len(calls) >= model.cfg.n_layer
    for t in range(prompt, prompt + 24):
        got.append(dec.step(x[:, t]))
    want = ref(x[:, :prompt + 25])[:, prompt:]
    torch.testing.assert_close(torch.stack(got, dim=1), want.to(got[0].dtype), atol=tol,
                               rtol=tol)


@pytest.mark.parametrize("backend", list(CASES))
def test_sampling_draws_the_reference_bytes(backend, count_backend_calls):
    model, ref = _models(backend)
    _, prompt, _, _, _ = CASES[backend]
    text = bytes(range(32, 127)) * 4  # printable ASCII, long enough for either prompt
    calls = count_backend_calls(backend)
    out = model.generate(text[:prompt], 12, seed=3)  # the prefill runs on the backend
    assert len(calls) >= model.cfg.n_layer
    assert out == ref.generate(text[:prompt], 12, seed=3)
    assert len(out) == prompt + 12 and out[:prompt] == text[:prompt]
