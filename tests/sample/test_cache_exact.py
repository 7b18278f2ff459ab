"""Incremental decoding with pattern-aware caches gives the logits of a full forward pass.

For every pattern family and mode (issue 6): decode a random sequence token by token after a
prompt and compare each step's logits with ``model(tokens)`` at that position, fp32 on CPU at
1e-5, and float64 at 1e-10 for every pattern (which shows the key sets are identical, not just
close). The dense baseline cache is checked the same way, and so is decoding past n_ctx: each
slid window's prefill and steps against the full forward pass over that window.
"""

from __future__ import annotations

import pytest
import torch

from sparse_transformer.model import ModelConfig, SparseTransformer
from sparse_transformer.sample.decode import Decoder
from sparse_transformer.sample.generate import generate

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
    dec = Decoder(model, x.shape[0], dense=dense, cuda_graph=False)
    out = [dec.prefill(x[:, :prompt])]
    for t in range(prompt, x.shape[1] - 1):
        out.append(dec.step(x[:, t]))
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


@pytest.mark.parametrize("attention", PATTERNS)
def test_float64_identical_key_sets(attention):
    model = _model(attention, dtype=torch.float64)
    x = torch.randint(0, 256, (1, N_CTX))
    torch.testing.assert_close(_decode_all(model, x, prompt=1), model(x)[:, 1:],
                               atol=1e-10, rtol=1e-10)


def _windows(n_ctx: int, prompt: int, total: int, slide: int) -> list[tuple[int, int, bool]]:
    """(window start, byte t, whether the window is new) for bytes prompt..total-1: the rule
    of ``sample/generate.py`` written out once more, independently."""
    out, start = [], 0
    for t in range(prompt, total):
        new = t == prompt
        if t - start == n_ctx:  # byte t would be position n_ctx of its window
            start, new = start + slide, True
        out.append((start, t, new))
    return out


@pytest.mark.parametrize("attention", PATTERNS)
@pytest.mark.parametrize("slide", [1, 5, N_CTX - 1])
def test_past_n_ctx_each_window_equals_its_full_forward(attention, slide):
    """Past n_ctx (``sample/generate.py``): when byte t would be the n_ctx-th position of its
    window, the window drops its first ``slide`` bytes and starts again at position 0 with the
    start vector, so byte t sees the last n_ctx - slide bytes; each later byte one more, up to
    n_ctx - 1. The cached path re-prefills each new window and steps through it; every byte's
    logits must equal the full forward pass over exactly the bytes it sees (the uncached
    path, ``next_token_logits``, here without its cast to float32), in float64."""
    model = _model(attention, dtype=torch.float64)
    total = 3 * N_CTX + 7
    x = torch.randint(0, 256, (2, total))
    dec = Decoder(model, 2, cuda_graph=False)
    for start, t, new in _windows(N_CTX, 9, total, slide):
        assert N_CTX - slide <= t - start <= N_CTX - 1 or start == 0
        got = dec.prefill(x[:, start:t]) if new else dec.step(x[:, t - 1])
        window = x[:, start:t]
        want = model(torch.cat([window, window[:, :1]], dim=1))[:, -1]  # the last byte unseen
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10, msg=f"byte {t}")


@pytest.mark.parametrize("slide", [1, 7])
def test_generate_past_n_ctx_follows_these_windows(slide, monkeypatch):
    """``generate`` moves its windows by that rule, on the cached path (prefill at each new
    window, steps in between) and the uncached one (the whole window per byte): both draw the
    same bytes far past n_ctx."""
    from sparse_transformer.sample import decode

    model = _model("fixed(stride=8, summary=2, distinct=2)", n_layer=1)
    prompt = torch.randint(0, 256, (2, 5))
    prefills = []
    real = decode.Decoder.prefill
    monkeypatch.setattr(decode.Decoder, "prefill",
                        lambda self, tokens: prefills.append(tokens.shape[1]) or real(self,
                                                                                     tokens))
    cached = generate(model, prompt, 3 * N_CTX, seed=4, slide=slide)
    assert prefills == [n - s for s, n, new in _windows(N_CTX, 5, 5 + 3 * N_CTX, slide) if new]
    assert torch.equal(cached, generate(model, prompt, 3 * N_CTX, seed=4, slide=slide,
                                        cache=False))


@pytest.mark.parametrize("prompt", [0, 1, 8, N_CTX - 1])
def test_prompt_lengths(prompt):
    # Empty prompt (the start vector at position 0), one token, a block boundary, a full window.
    model = _model("fixed(stride=8, summary=2, distinct=2)", n_layer=1)
    x = torch.randint(0, 256, (2, N_CTX))
    torch.testing.assert_close(_decode_all(model, x, prompt=prompt), model(x)[:, prompt:],
                               atol=1e-5, rtol=1e-5)


def test_a_decode_from_the_start_vector_alone():
    """An empty prompt is one position (the start vector); every later byte is a step."""
    model = _model("strided(stride=4, mode='split')", n_layer=1)
    x = torch.randint(0, 256, (2, N_CTX))
    dec = Decoder(model, 2, cuda_graph=False)
    torch.testing.assert_close(dec.prefill(x[:, :0]), model(x)[:, 0], atol=1e-5, rtol=1e-5)
    assert dec.length == 1
    torch.testing.assert_close(dec.step(x[:, 0]), model(x)[:, 1], atol=1e-5, rtol=1e-5)


def test_model_forward_with_a_decode_state():
    """The model's own decoding contract, without the Decoder: the prompt's call returns one
    row per position (the start vector, then one per byte), a step's call one row; the same
    modules as training."""
    model = _model("fixed(stride=8, summary=2, distinct=2)")
    x = torch.randint(0, 256, (2, 20))
    full = model(x)
    state = model.decode_state(2)
    with torch.no_grad():
        first = model(x[:, :10], state)
        assert first.shape == (2, 11, 256) and state.length == 11
        torch.testing.assert_close(first[:, :10], full[:, :10], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x[:, 10:11], state)[:, 0], full[:, 11],
                                   atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="one byte per sequence"):
            model(x[:, :2], state)
        with pytest.raises(ValueError, match="batch of 3"):
            model(x[:1].repeat(3, 1)[:, :1], state)
        state.reset()
        torch.testing.assert_close(model(x[:, :4], state)[:, -1], full[:, 4],
                                   atol=1e-5, rtol=1e-5)


def test_errors():
    model = _model("local(window=5)", n_layer=1)
    dec = Decoder(model, 2, cuda_graph=False)
    with pytest.raises(RuntimeError, match="prefill"):
        dec.step(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="prefill expects"):
        dec.prefill(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no room"):
        dec.prefill(torch.zeros(2, N_CTX, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        Decoder(model, 0)
    dec.prefill(torch.zeros(2, N_CTX - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="full"):
        dec.step(torch.zeros(2, dtype=torch.long))
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        dec.prefill(torch.zeros(2, 3, dtype=torch.long))


def test_capacity_smaller_than_n_ctx():
    # Caches sized for prompt + new bytes give the same logits and hold fewer slots.
    model = _model("fixed(stride=8, summary=2, distinct=2)", n_layer=1)
    x = torch.randint(0, 256, (2, N_CTX))
    small = Decoder(model, 2, capacity=20, cuda_graph=False)
    full = Decoder(model, 2, cuda_graph=False)
    assert small.nbytes < full.nbytes
    torch.testing.assert_close(small.prefill(x[:, :4]), model(x)[:, 4], atol=1e-5, rtol=1e-5)
    for t in range(4, 19):
        torch.testing.assert_close(small.step(x[:, t]), model(x[:, :t + 2])[:, -1],
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="full"):
        small.step(x[:, 19])
