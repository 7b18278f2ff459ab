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


@pytest.mark.parametrize("backend", ["auto", "reference", "torch"])
def test_backends_agree(backend):
    q, k, v = _qkv(N=45)
    p = P.fixed(8, 2, 2)
    torch.testing.assert_close(attention(q, k, v, p, backend=backend),
                               reference_attention(q, k, v, p), atol=1e-5, rtol=1e-5)


def test_auto_on_cpu_is_a_cpu_backend():
    q = torch.randn(1, 2, 64, 8)
    assert resolve_backend("auto", q, P.causal()) in ("reference", "torch")
    q = torch.randn(1, 2, 8192, 8)
    assert resolve_backend("auto", q, P.strided(64, "split")) == "torch"


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
        attention(*make(q))


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
