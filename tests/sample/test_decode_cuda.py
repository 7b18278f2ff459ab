"""Cached decoding on CUDA (``pytest -m cuda``; skipped without a GPU, run in every device
session): the step captured in a CUDA graph gives the logits of a full forward pass, and
``model.generate`` on the GPU goes through that graph. The CPU tests never capture a graph."""

from __future__ import annotations

import warnings

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer
from sparse_transformer.sample.incremental import CachedNextLogits, IncrementalDecoder

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

PATTERNS = ["fixed(stride=16, summary=4, distinct=2)", "strided(stride=16, mode='split')"]


def _model(attention: str, dtype: torch.dtype) -> SparseTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=64, n_head=4, n_ctx=256, embed_stride=16,
                      attention=attention, backend="reference")
    model = SparseTransformer(cfg).eval()
    with torch.no_grad():  # leave the zero-initialised output matrix and biases behind
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.to("cuda", dtype)


@pytest.mark.parametrize("attention", PATTERNS)
def test_graph_step_matches_full_forward_float64(attention):
    # float64 on both sides: the cached key sets must be the pattern's exactly, not nearly.
    model = _model(attention, torch.float64)
    x = torch.randint(0, 256, (2, 256), device="cuda")
    with torch.no_grad():
        full = model(x)
    dec = IncrementalDecoder(model, 2, cuda_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns and decodes eagerly
        got = [dec.prefill(x[:, :40]).clone()]
        for t in range(40, 255):
            got.append(dec.step(x[:, t]).clone())
    assert dec._graph is not None, "the step was not captured"
    torch.testing.assert_close(torch.stack(got, 1), full[:, 40:], atol=1e-9, rtol=1e-9)


def test_generate_on_cuda_uses_the_graph_and_matches_eager_steps():
    model = _model(PATTERNS[0], torch.float32)
    prompt = torch.randint(0, 256, (3, 20), device="cuda")
    logits = {}
    for graph in (True, False):
        seen = CachedNextLogits(cuda_graph=graph)
        tokens = prompt
        steps = [seen(model, tokens)]
        for t in range(30):
            tokens = torch.cat([tokens, steps[-1].argmax(-1, keepdim=True)], 1)
            steps.append(seen(model, tokens))
        assert (seen.decoder._graph is not None) == graph
        logits[graph] = torch.stack(steps, 1)
    torch.testing.assert_close(logits[True], logits[False], atol=1e-5, rtol=1e-5)
    out = model.generate(bytes(range(65, 85)), n_bytes=40, top_k=8, seed=0)
    assert isinstance(out, bytes) and len(out) == 60
