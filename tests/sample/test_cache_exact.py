"""Incremental decoding with pattern-aware caches gives the logits of a full forward pass.

For every pattern family and mode (issue 6): decode a random sequence token by token after a
prompt and compare each step's logits with ``model(tokens)`` at that position, fp32 on CPU at
1e-5 (and fp64 at 1e-10 for a few patterns, which shows the key sets are identical, not just
close). The dense baseline cache is checked the same way.
"""

from __future__ import annotations

import pytest
import torch

from sparse_transformer.model import ModelConfig, SparseTransformer
from sparse_transformer.sample.incremental import CachedNextLogits, IncrementalDecoder

N_CTX = 48


def _model(attention: str, *, n_head: int = 4, embedding: str = "text",
           dtype: torch.dtype = torch.float32, n_layer: int = 2, **kw) -> SparseTransformer:
    extra = dict(embedding="image", image_shape=(4, 4, 3)) if embedding == "image" else dict(
        embed_stride=8)
    cfg = ModelConfig(n_layer=n_layer, d_model=32, n_head=n_head, n_ctx=N_CTX,
                      attention=attention, **extra, **kw)
    model = SparseTransformer(cfg).eval()
    with torch.no_grad():  # leave the paper's init (zero logits matrix, zero biases) behind
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.to(dtype)


def _decode_all(model: SparseTransformer, x: torch.Tensor, prompt: int, dense: bool = False
                ) -> torch.Tensor:
    """Logits [B, N - prompt, V] for positions prompt..N-1, decoded one token at a time."""
    dec = IncrementalDecoder(model, x.shape[0], dense=dense, cuda_graph=False)
    out = [dec.prefill(x[:, :prompt]).clone()]
    for t in range(prompt, x.shape[1] - 1):
        out.append(dec.step(x[:, t]).clone())
    return torch.stack(out, dim=1)


PATTERNS = [
    "causal()",
    "local(window=5)",
    "strided(stride=4, mode='merge')",
    "strided(stride=4, mode='split')",
    "strided(stride=6, mode='local')",
    "strided(stride=6, mode='column')",
    "fixed(stride=8, summary=2, distinct=1)",
    "fixed(stride=8, summary=2, distinct=4)",
    "union(local(window=3), fixed(stride=8, summary=3, distinct=2))",
    "union(column(stride=4), column(stride=6), local(window=2))",
    "per_head(local(window=4), column(stride=4))",
    "per_head(local(window=3), column(stride=4), local(window=3), column(stride=4))",
    "per_head(fixed(stride=8, summary=1, distinct=2), strided(stride=4, mode='merge'))",
    "union(causal(), local(window=3))",
]


@pytest.mark.parametrize("attention", PATTERNS)
def test_incremental_matches_full_forward(attention):
    model = _model(attention)
    x = torch.randint(0, 256, (2, N_CTX))
    full = model(x)
    got = _decode_all(model, x, prompt=7)
    torch.testing.assert_close(got, full[:, 7:], atol=1e-5, rtol=1e-5)


def test_schedule_interleaved_layers_and_image_embedding():
    # Interleaved layers (paper Eq. 6) with the (row, column, channel) image embedding.
    model = _model("schedule(strided(stride=12, mode='local'), strided(stride=12, "
                   "mode='column'), fixed(stride=12, summary=3, distinct=2))",
                   embedding="image", n_layer=3)
    x = torch.randint(0, 256, (3, N_CTX))
    torch.testing.assert_close(_decode_all(model, x, prompt=10), model(x)[:, 10:],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["strided(stride=4, mode='split')",
                                       "fixed(stride=8, summary=2, distinct=4)"])
def test_dense_baseline_cache_matches_full_forward(attention):
    model = _model(attention)
    x = torch.randint(0, 256, (2, N_CTX))
    torch.testing.assert_close(_decode_all(model, x, prompt=3, dense=True), model(x)[:, 3:],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["strided(stride=4, mode='merge')",
                                       "fixed(stride=8, summary=2, distinct=2)"])
def test_float64_identical_key_sets(attention):
    model = _model(attention, dtype=torch.float64)
    x = torch.randint(0, 256, (1, N_CTX))
    torch.testing.assert_close(_decode_all(model, x, prompt=1), model(x)[:, 1:],
                               atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("prompt", [0, 1, 8, N_CTX - 1])
def test_prompt_lengths(prompt):
    # Empty prompt (the start vector at position 0), one token, a block boundary, a full window.
    model = _model("fixed(stride=8, summary=2, distinct=2)", n_layer=1)
    x = torch.randint(0, 256, (2, N_CTX))
    torch.testing.assert_close(_decode_all(model, x, prompt=prompt), model(x)[:, prompt:],
                               atol=1e-5, rtol=1e-5)


def test_step_from_position_zero_without_prompt_pass():
    # The step's own embedding at position 0 (start vector) matches the model's.
    model = _model("strided(stride=4, mode='split')", n_layer=1)
    x = torch.randint(0, 256, (2, N_CTX))
    dec = IncrementalDecoder(model, 2, cuda_graph=False)
    dec.prefill(x[:, :0])
    dec.pos.fill_(0)  # redo position 0 through the step path
    dec.length = 0 + 1
    dec.prev.zero_()
    dec._step()
    torch.testing.assert_close(dec.logits, model(x)[:, 0], atol=1e-5, rtol=1e-5)


def test_cached_seam_matches_window_path_and_falls_back_past_n_ctx():
    from sparse_transformer.sample.generate import next_token_logits

    model = _model("strided(stride=4, mode='split')", n_layer=1)
    seam = CachedNextLogits(cuda_graph=False)
    x = torch.randint(0, 256, (2, N_CTX + 4))
    for t in list(range(5, N_CTX + 3)):
        torch.testing.assert_close(seam(model, x[:, :t]), next_token_logits(model, x[:, :t]),
                                   atol=1e-5, rtol=1e-5)
    # a different prompt (not an append) re-prefills instead of decoding a stale cache
    y = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(seam(model, y), next_token_logits(model, y), atol=1e-5, rtol=1e-5)


def test_errors():
    model = _model("local(window=5)", n_layer=1)
    dec = IncrementalDecoder(model, 2, cuda_graph=False)
    with pytest.raises(RuntimeError, match="prefill"):
        dec.step(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="prefill expects"):
        dec.prefill(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no room"):
        dec.prefill(torch.zeros(2, N_CTX, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        IncrementalDecoder(model, 0)
    dec.prefill(torch.zeros(2, N_CTX - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="full"):
        dec.step(torch.zeros(2, dtype=torch.long))
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        dec.prefill(torch.zeros(2, 3, dtype=torch.long))


def test_capacity_smaller_than_n_ctx():
    # Caches sized for prompt + new bytes give the same logits and hold fewer slots; the seam
    # moves to n_ctx-sized caches when a sequence outgrows them.
    from sparse_transformer.sample.generate import next_token_logits

    model = _model("fixed(stride=8, summary=2, distinct=2)", n_layer=1)
    x = torch.randint(0, 256, (2, N_CTX))
    small = IncrementalDecoder(model, 2, capacity=20, cuda_graph=False)
    full = IncrementalDecoder(model, 2, cuda_graph=False)
    assert small.nbytes < full.nbytes
    torch.testing.assert_close(small.prefill(x[:, :4]), model(x)[:, 4], atol=1e-5, rtol=1e-5)
    for t in range(4, 19):
        torch.testing.assert_close(small.step(x[:, t]), model(x[:, :t + 2])[:, -1],
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="full"):
        small.step(x[:, 19])
    seam = CachedNextLogits(cuda_graph=False, capacity=10)
    for t in range(5, 30):
        torch.testing.assert_close(seam(model, x[:, :t]), next_token_logits(model, x[:, :t]),
                                   atol=1e-5, rtol=1e-5)
    assert seam.decoder.capacity == N_CTX
