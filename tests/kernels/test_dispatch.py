"""attention()'s contract: backends, defaults and clear errors for bad input."""

import math

import pytest
import torch

from sparse_transformer import attention
from sparse_transformer import patterns as P
from sparse_transformer.kernels import reference_attention, resolve_backend


def _qkv(B=1, H=2, N=20, D=8):
    return [torch.randn(B, H, N, D) for _ in range(3)]


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v = _qkv()
    p = P.local(5)
    torch.testing.assert_close(attention(q, k, v, p), attention(q, k, v, p, scale=1 / math.sqrt(8)))
    assert not torch.allclose(attention(q, k, v, p), attention(q, k, v, p, scale=1.0))


def _float64_by_hand(q, k, v, pattern, scale):
    """Masked softmax attention written out here, in float64: an oracle that shares no code
    with any backend (the "reference" backend included)."""
    q, k, v = (x.double() for x in (q, k, v))
    n, h = q.shape[2], q.shape[1]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    mask = torch.stack([pattern.allowed(i, j, head, h) for head in range(h)])
    s = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


@pytest.mark.parametrize("backend", ["reference", "torch", "sdpa"])
def test_backends_agree_with_an_independent_oracle(backend):
    q, k, v = _qkv(N=45)
    p = P.fixed(8, 2, 2)
    got = attention(q, k, v, p, backend=backend)
    torch.testing.assert_close(got.double(), _float64_by_hand(q, k, v, p, 1 / math.sqrt(8)),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,pattern,want", [
    (64, P.causal(), "reference"),  # every causal tile: dense masked matmuls are as cheap
    (45, P.fixed(8, 2, 2), "reference"),  # summaries in every 32-tile: nothing to skip
    (1024, P.causal(), "reference"),
    (1024, P.strided(32, "split"), "torch"),  # 95 of 1,056 causal 32-tiles
    (2048, P.fixed(128, 32, 4), "torch"),
    (8192, P.causal(), "torch"),  # past 2,048 positions the CPU always goes block-sparse
])
def test_auto_resolves_on_cpu(n, pattern, want):
    q = torch.empty(1, pattern.head_multiple * 2, n, 8)
    assert resolve_backend("auto", q, pattern) == want


def test_auto_runs_the_backend_it_resolves_to(monkeypatch):
    from sparse_transformer.kernels import torch_blocksparse

    q, k, v = _qkv(H=2, N=1024)
    p = P.strided(32, "split")
    assert resolve_backend("auto", q, p) == "torch"  # so this is not the reference vs itself
    calls, run = [], torch_blocksparse.run_component
    monkeypatch.setattr(torch_blocksparse, "run_component",
                        lambda *a, **kw: calls.append(1) or run(*a, **kw))
    torch.testing.assert_close(attention(q, k, v, p), reference_attention(q, k, v, p),
                               atol=1e-5, rtol=1e-5)
    assert len(calls) == 2  # the window heads and the reordered column heads


@pytest.mark.parametrize("make,err,words", [
    (lambda q: (q[0], q, q, P.causal()), ValueError, "shape [B, H, N, D]"),
    (lambda q: (q, q[:, :, :5], q, P.causal()), ValueError, "agree on [B, H, N]"),
    (lambda q: (q, q[..., :3], q, P.causal()), ValueError, "head dims differ"),
    (lambda q: (q.long(), q.long(), q.long(), P.causal()), TypeError, "floating"),
    (lambda q: (q, q.double(), q, P.causal()), TypeError, "dtypes differ"),
    (lambda q: (q, q, q, "causal"), TypeError, "Pattern"),
    (lambda q: (q, q, q, P.schedule(P.local(2), P.column(2))), TypeError, "for_layer"),
    (lambda q: (q, q, q, P.fixed(8, 2, distinct=4)), ValueError, "multiple of 4"),
    (lambda q: (q.clone().index_fill_(2, torch.tensor([3]), float("nan")), q, q, P.causal()),
     ValueError, "NaN or inf"),
    (lambda q: (q, q, q.clone().fill_(float("inf")), P.causal()), ValueError, "NaN or inf"),
])
def test_bad_input_raises_naming_the_problem(make, err, words):
    q = torch.randn(1, 2, 10, 4)
    with pytest.raises(err, match=words.replace("[", r"\[").replace("]", r"\]")):
        attention(*make(q), check_finite=True)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -1.0])
def test_bad_scale_is_refused(scale):
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        attention(q, q, q, P.causal(), scale=scale)


def test_finite_check_is_opt_in():
    """Off by default (on CUDA it would cost a host sync per call); NaN then propagates."""
    q = torch.randn(1, 1, 8, 4)
    q[0, 0, 3] = float("nan")
    assert torch.isnan(attention(q, q, q, P.causal())).any()


def test_unknown_backend_is_named():
    q = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="unknown attention backend 'cudnn'"):
        attention(q, q, q, P.causal(), backend="cudnn")


def test_attention_compiles_through_torch_compile():
    """Regression: dynamo used to trace the host-side planner and fail on frozen dataclasses."""
    p = P.strided(4)
    q = torch.randn(1, 2, 40, 8, requires_grad=True)
    fn = torch.compile(lambda x: attention(x, x, x, p, backend="torch", check_finite=False),
                       backend="aot_eager")
    out = fn(q)
    out.sum().backward()
    torch.testing.assert_close(out, reference_attention(q.detach(), q.detach(), q.detach(), p),
                               atol=1e-5, rtol=1e-5)
    assert q.grad is not None and torch.isfinite(q.grad).all()


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), True])
def test_scale_must_be_a_finite_number(scale):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="scale must be a finite number"):
        attention(q, k, v, P.local(5), scale=scale)


def test_attention_keeps_a_bounded_lru_of_prepared_patterns(monkeypatch):
    """What attention() prepared is kept (dispatch.PREPARED), bounded in entries and in bytes:
    the dense masks of "reference" are H x N x N."""
    from sparse_transformer.kernels import dispatch

    lru = dispatch.PreparedLRU(size=3, max_bytes=2 * 40 * 40)
    monkeypatch.setattr(dispatch, "PREPARED", lru)
    q = torch.randn(1, 1, 40, 8)
    attention(q, q, q, P.local(5), backend="reference")  # a 1,600-byte mask
    first = next(iter(lru._items.values()))[0]
    attention(q, q, q, P.local(5), backend="reference")
    assert len(lru) == 1 and next(iter(lru._items.values()))[0] is first  # a hit
    attention(q, q, q, P.local(6), backend="reference")
    attention(q, q, q, P.local(7), backend="reference")  # 4,800 bytes > 3,200: oldest out
    assert len(lru) == 2 and lru._bytes == 2 * 1600
    lru = dispatch.PreparedLRU(size=3)
    monkeypatch.setattr(dispatch, "PREPARED", lru)
    for n in range(10, 15):
        attention(q[:, :, :n], q[:, :, :n], q[:, :, :n], P.local(3), backend="torch")
    assert len(lru) == 3  # the last three lengths
