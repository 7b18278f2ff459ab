"""Triton block-sparse attention vs the float64 dense reference (CPU: Triton's interpreter).

Acceptance rule (issue 3): for the output, the lse and every gradient, our max error against
float64 is at most 2x the error of the same computation done by PyTorch in the input dtype,
plus a small floor. Shapes are tiny because the interpreter runs each program in Python.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

pytest.importorskip("triton")

from sparse_transformer import attention  # noqa: E402
from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.kernels import triton_attention as T  # noqa: E402
from sparse_transformer.kernels.reference import masked_softmax_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _component_mask(cp, n: int) -> torch.Tensor:
    """Bool [Hc, n, n] of each head's element rule in the component's own positions."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    masks = []
    for terms in cp.head_terms():
        ok = terms[0].allowed(i, j)
        for t in terms[1:]:
            ok = ok | t.allowed(i, j)
        masks.append(ok)
    return torch.stack(masks)


def _max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    fin = torch.isfinite(ref)
    assert torch.equal(fin, torch.isfinite(a)), "non-finite entries differ from the reference"
    return float((a.double() - ref)[fin].abs().max()) if fin.any() else 0.0


def _assert_close(name: str, ours: torch.Tensor, same: torch.Tensor, ref: torch.Tensor, dtype):
    e_ours, e_same = _max_err(ours, ref), _max_err(same, ref)
    scale = max(1.0, float(ref[torch.isfinite(ref)].abs().max()))
    bound = 2 * e_same + FLOOR[dtype] * scale
    assert e_ours <= bound, f"{name}: error {e_ours:.3g} > 2 x {e_same:.3g} + floor ({bound:.3g})"


def _run_components(pattern, n, H, q_block, k_block, dtype, B=1, D=16, Dv=None, seed=0):
    """Drive run_component directly on every component; check out, lse and all gradients."""
    Dv = Dv or D
    plan = pattern.plan(n, H, q_block, k_block)
    N = plan.n_pad
    g = torch.Generator().manual_seed(seed)
    for cp in plan.components:
        hc = len(cp.heads)
        q, k = (torch.randn(B, hc, N, D, generator=g, dtype=torch.float64) for _ in range(2))
        v = torch.randn(B, hc, N, Dv, generator=g, dtype=torch.float64)
        mask = _component_mask(cp, N)
        scale = 1 / math.sqrt(D)
        go = torch.randn(B, hc, N, Dv, generator=g, dtype=torch.float64)
        gl = torch.randn(B, hc, N, generator=g, dtype=torch.float64)

        def grads(fn, cast):
            xs = [x.detach().to(cast).requires_grad_() for x in (q, k, v)]
            out, lse = fn(*xs)
            fin = torch.isfinite(lse)
            loss = (out.double() * go).sum() + (torch.where(fin, lse.double(), 0) * gl).sum()
            loss.backward()
            return [out.detach(), lse.detach()] + [x.grad for x in xs]

        ref = grads(lambda a, b, c: masked_softmax_attention(a, b, c, mask, scale), torch.float64)
        same = grads(lambda a, b, c: masked_softmax_attention(a, b, c, mask, scale), dtype)
        ours = grads(lambda a, b, c: T.run_component(a.to(DEVICE), b.to(DEVICE), c.to(DEVICE),
                                                     cp, scale), dtype)
        assert ours[0].dtype == dtype and ours[1].dtype == torch.float32
        assert ours[0].shape == (B, hc, N, Dv) and ours[1].shape == (B, hc, N)
        for name, a, s, r in zip(("out", "lse", "dq", "dk", "dv"), ours, same, ref):
            _assert_close(f"{pattern.name} order={cp.order} {name}", a.cpu(), s, r, dtype)


@pytest.mark.parametrize("pattern, n, H, blocks, D", [
    (P.causal(), 70, 2, (32, 16), 16),
    (P.local(20), 90, 1, (32, 16), 24),
    (P.strided(8, "merge"), 64, 2, (16, 16), 16),
    (P.strided(8, "split"), 100, 2, (32, 16), 16),
    (P.column(8), 64, 1, (16, 16), 16),
    (P.fixed(16, 4, 1), 100, 1, (32, 16), 24),
    (P.fixed(32, 16, 2), 130, 2, (32, 16), 16),
    (P.union(P.local(10), P.fixed(16, 4)), 77, 1, (16, 16), 16),
    (P.fixed(128, 32, 4), 130, 4, (128, 32), 16),  # the GPU tile sizes, 4 key tiles gathered
    (P.local(16), 40, 1, (32, 16), 100),  # head dim 100, padded to 128 inside the kernel
])
def test_components_fp32(pattern, n, H, blocks, D):
    _run_components(pattern, n, H, *blocks, torch.float32, D=D)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pattern", [P.fixed(16, 8, 2), P.strided(8, "merge")])
def test_components_half(pattern, dtype):
    _run_components(pattern, 64, 2, 32, 16, dtype, B=2, D=64, Dv=32)


def _end_to_end(pattern, n, H, dtype, B=1, D=16, Dv=None, seed=0):
    Dv = Dv or D
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, n, D, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, n, Dv, generator=g, dtype=torch.float64)
    go = torch.randn(B, H, n, Dv, generator=g, dtype=torch.float64)
    mask = pattern.mask(n, H)
    scale = 1 / math.sqrt(D)

    def grads(fn, cast):
        xs = [x.detach().to(cast).requires_grad_() for x in (q, k, v)]
        out = fn(*xs)
        (out.double() * go).sum().backward()
        return [out.detach()] + [x.grad for x in xs]

    ref = grads(lambda a, b, c: masked_softmax_attention(a, b, c, mask, scale)[0], torch.float64)
    same = grads(lambda a, b, c: masked_softmax_attention(a, b, c, mask, scale)[0], dtype)
    ours = grads(lambda a, b, c: attention(a.to(DEVICE), b.to(DEVICE), c.to(DEVICE), pattern,
                                           backend="triton"), dtype)
    for name, a, s, r in zip(("out", "dq", "dk", "dv"), ours, same, ref):
        _assert_close(f"{pattern.name} {name}", a.cpu(), s, r, dtype)


@pytest.mark.parametrize("pattern, n, H, dtype, D, Dv", [
    (P.strided(8, "merge"), 77, 2, torch.float32, 24, 40),
    (P.strided(8, "split"), 33, 2, torch.bfloat16, 16, 16),
    (P.fixed(16, 4, 4), 100, 4, torch.float32, 16, 16),
    (P.per_head(P.local(12), P.causal()), 50, 2, torch.float16, 16, 16),
])
def test_attention_end_to_end(pattern, n, H, dtype, D, Dv):
    _end_to_end(pattern, n, H, dtype, B=2, D=D, Dv=Dv)


def test_backward_is_deterministic():
    p = P.fixed(16, 8, 2)
    g = torch.Generator().manual_seed(3)
    q, k, v, go = (torch.randn(2, 2, 64, 16, generator=g).to(DEVICE) for _ in range(4))
    runs = []
    for _ in range(2):
        xs = [x.clone().requires_grad_() for x in (q, k, v)]
        attention(*xs, p, backend="triton").backward(go)
        runs.append([x.grad for x in xs])
    assert T.DETERMINISTIC
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_errors():
    p = P.causal()
    q = torch.randn(1, 1, 32, 16, dtype=torch.float64, device=DEVICE)
    with pytest.raises(TypeError, match="float64"):
        attention(q, q, q, p, backend="triton")
    big = torch.randn(1, 1, 32, 300, device=DEVICE)
    with pytest.raises(ValueError, match="head dims"):
        attention(big, big, big, p, backend="triton")
    cp = p.plan(32, 1, 16, 16).components[0]
    with pytest.raises(ValueError, match="expects"):
        T.run_component(q.float()[:, :, :16], q.float()[:, :, :16], q.float()[:, :, :16], cp, 1.0)


def test_fake_registration_and_compile():
    """The custom op has fake kernels (opcheck) and torch.compile traces a call through it."""
    p = P.fixed(16, 8, 2)
    cp = p.plan(32, 2, 16, 16).components[0]
    dev = T._device_plan(cp, torch.device(DEVICE))
    q, k, v = (torch.randn(1, 2, 32, 16, device=DEVICE, requires_grad=True) for _ in range(3))
    args = (q, k, v, *dev.tensors, dev.kinds, 16, 16, 0.25)
    torch.library.opcheck(T.blocksparse_fwd, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))

    def fn(a, b, c):
        out, lse = T.run_component(a, b, c, cp, 0.25)
        return out.float().sum() + lse.sum()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    out = compiled(q, k, v)
    out.backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    expect = fn(*xs)
    expect.backward()
    torch.testing.assert_close(out, expect)
    for a, b in zip(grads, (x.grad for x in xs)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("config", [
    {"dkdv": {"trans_acc": 0, "num_warps": 4, "num_stages": 2}, "fwd": {"gather": 4}},
    {"dkdv": {"trans_acc": 1, "num_warps": 4, "num_stages": 2}, "dq": {"gather": 1}},
])
def test_launch_variants(config, monkeypatch):
    """Both dK/dV accumulator layouts and other gather widths compute the same function."""
    monkeypatch.setattr(T, "CONFIG", config)
    _run_components(P.fixed(16, 4, 2), 64, 2, 32, 16, torch.float32)  # 16-wide key tiles
    _run_components(P.causal(), 64, 1, 32, 16, torch.float32)  # key tiles grouped by 2


def test_key_tile_grouping():
    """Causal key-side lists coincide within a query tile (grouped); fixed's do not."""
    causal = P.causal().plan(256, 1, 128, 32).components[0]
    fc, fi, pc, pi = T._group_key_tiles(*causal.key_side())
    assert fc.shape[1] == 2  # 8 key tiles of 32 -> 2 blocks of 128
    fixed = P.fixed(128, 32).plan(256, 1, 128, 32).components[0]
    assert T._group_key_tiles(*fixed.key_side())[0].shape[1] == 8
