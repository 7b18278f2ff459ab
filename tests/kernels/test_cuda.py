"""CUDA-only checks (``pytest -m cuda``; skipped without a GPU, run in every device session).

Every backend that claims CUDA against the float64 reference at realistic shapes (outputs and
all gradients, under the 2x-same-dtype rule of test_triton.py), plus what CPU tests cannot see:
no host sync in a default ``attention()`` call, FlexAttention across many shapes without
falling back to eager, and a compiled model step with no graph break.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparse_transformer import attention
from sparse_transformer import patterns as P
from sparse_transformer.kernels.reference import masked_softmax_attention

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
PATTERNS = [P.causal(), P.fixed(128, 32, 4), P.strided(128, "split"), P.strided(128, "merge"),
            P.local(128)]


def _err(a, ref):
    return float((a.double() - ref).abs().max())


def _grads(fn, base, go, cast, H, D, packed=False):
    """Output and d(qkv) of ``fn`` on q, k, v viewed out of one [B, N, 3 H D] leaf (the
    model's layout), or (``packed``) on the leaf itself."""
    B, N, _ = base.shape
    leaf = base.detach().to(cast).requires_grad_()
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in leaf.split(H * D, dim=-1))
    out = fn(leaf) if packed else fn(q, k, v)
    (out.double() * go).sum().backward()
    return [out.detach(), leaf.grad]


def _check_backend(pattern, backend, dtype, B=2, H=8, N=1000, D=64, packed=False):
    g = torch.Generator(device="cuda").manual_seed(0)
    base = torch.randn(B, N, 3 * H * D, device="cuda", dtype=torch.float64, generator=g)
    go = torch.randn(B, H, N, D, device="cuda", dtype=torch.float64, generator=g)
    mask = pattern.mask(N, H, device="cuda")
    dense = lambda a, b, c: masked_softmax_attention(a, b, c, mask, 1 / math.sqrt(D))[0]  # noqa
    ref = _grads(dense, base, go, torch.float64, H, D)
    same = _grads(dense, base, go, dtype, H, D)
    run = backend if callable(backend) else (
        lambda a, b, c: attention(a, b, c, pattern, backend=backend))
    ours = _grads(run, base, go, dtype, H, D, packed)
    for name, a, s, r in zip(("out", "dqkv"), ours, same, ref):
        bound = 2 * _err(s, r) + FLOOR[dtype] * max(1.0, float(r.abs().max()))
        err = _err(a, r)
        assert err <= bound, f"{pattern.name} {backend!r} {name}: {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_triton_vs_float64_bf16(pattern):
    _check_backend(pattern, "triton", torch.bfloat16)


def test_fixed_wide_key_groups_vs_float64():
    """From ~6k positions the fixed pattern's dK/dV programs take the summary tiles of 4
    blocks at once (``ComponentPlan.key_groups``), with empty slots among the short tiles,
    launched heaviest first across heads (``key_skewed``)."""
    from sparse_transformer.kernels import dispatch

    pattern = P.fixed(128, 32, 4)
    prepared = dispatch.prepare(pattern, 6144, 4, 64, 64, torch.bfloat16, "cuda", "triton")
    comp = prepared.tables.components[0]
    assert comp.key_tiles.shape[-1] == 4 and bool((comp.key_tiles == -1).any())
    assert comp.key_skewed
    _check_backend(pattern, "triton", torch.bfloat16, B=1, H=4, N=6144)


def _check_under_config(pattern, config, monkeypatch, N=1000, **shape):
    """``_check_backend`` (triton, bf16) with the launch CONFIG set to ``config``; the tables and
    launch caches are built under it and dropped afterwards."""
    from sparse_transformer.kernels import dispatch, triton_attention

    monkeypatch.setattr(triton_attention, "CONFIG", config)
    dispatch.PREPARED.clear()
    try:
        _check_backend(pattern, "triton", torch.bfloat16, N=N, **shape)
    finally:
        dispatch.PREPARED.clear()


@pytest.mark.parametrize("lean", [0, 2], ids=["plain", "lean"])
@pytest.mark.parametrize("pattern", [P.causal(), P.fixed(128, 32, 4), P.strided(128, "merge")],
                         ids=lambda p: p.name)
def test_lean_and_plain_loops_vs_float64(pattern, lean, monkeypatch):
    """Both forms of the forward and dQ loops (``CONFIG[...]["lean"]``; the default picks
    one per component by its row length) against float64, bf16."""
    _check_under_config(pattern, {"fwd": {"lean": lean}, "dq": {"lean": lean}}, monkeypatch)


@pytest.mark.parametrize("n", [1000, 1024], ids=["padded", "exact"])
@pytest.mark.parametrize("runs", [0, 1, 2], ids=["no-runs", "default", "runs-everywhere"])
@pytest.mark.parametrize("pattern", [P.causal(), P.fixed(128, 32, 4), P.strided(128, "split")],
                         ids=lambda p: p.name)
def test_runs_vs_float64(pattern, runs, n, monkeypatch):
    """Runs of full tiles (``CONFIG["tiles"]["runs"]``: none, long-row components (the
    default), every component) against float64, bf16, at a padded length (masked run loads)
    and at a multiple of the tiles (EXACT: unmasked run loads)."""
    _check_under_config(pattern, {"tiles": {"runs": runs}}, monkeypatch, N=n)


@pytest.mark.parametrize("n", [1000, 1024], ids=["padded", "exact"])
@pytest.mark.parametrize("own", [0, 1, 2], ids=["no-own", "default", "own-everywhere"])
@pytest.mark.parametrize("pattern", [P.causal(), P.fixed(128, 32, 4), P.strided(128, "merge"),
                                     P.strided(128, "split")], ids=lambda p: p.name)
def test_owned_tiles_vs_float64(pattern, own, n, monkeypatch):
    """Key tiles only one query tile reads, their dK and dV written by that tile's dQ program
    (``CONFIG["tiles"]["own"]``: never, where they are many (fixed, the default), wherever
    there are any: causal's last tiles, the first component of a merged head, strided split's
    reordered column) against float64,
    bf16, at a padded length and a multiple of the tiles."""
    _check_under_config(pattern, {"tiles": {"own": own}}, monkeypatch, N=n)


@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "merge")],
                         ids=lambda p: p.name)
def test_delta_launch_vs_float64(pattern, monkeypatch):
    """Delta in a launch of its own (``CONFIG["dq"]["fused_delta"] = 0``, the backward before
    the dQ programs computed it; kept for benchmarks) against float64, bf16. The default, Delta
    in the dQ programs, is ``test_triton_vs_float64_bf16``."""
    _check_under_config(pattern, {"dq": {"fused_delta": 0}}, monkeypatch)


@pytest.mark.parametrize("short", [64, 128], ids=["half-height", "one-height"])
@pytest.mark.parametrize("pattern", [P.local(128), P.strided(128, "split")],
                         ids=lambda p: p.name)
def test_short_row_query_tiles_vs_float64(pattern, short, monkeypatch):
    """Short-row components' forward and dQ on 64-row query tiles under 128-row dK/dV lists
    (``CONFIG["tiles"]["short_q_block"] = 64``, ``short_row_q_block``) and on 128 rows
    throughout (the default) against float64, bf16."""
    from sparse_transformer.kernels import dispatch, triton_attention

    config = {"tiles": {"short_q_block": 64}} if short == 64 else {}
    monkeypatch.setattr(triton_attention, "CONFIG", config)
    dispatch.PREPARED.clear()
    try:
        prepared = dispatch.prepare(pattern, 1000, 8, 64, 64, torch.bfloat16, "cuda", "triton")
        assert prepared.tables.q_block == 128
        assert {c.q_block for c in prepared.tables.components} == {short}
        _check_backend(pattern, "triton", torch.bfloat16)
    finally:
        dispatch.PREPARED.clear()


@pytest.mark.parametrize("bulk", [1, 0], ids=["tma-reduce", "element-atomics"])
@pytest.mark.parametrize("n", [1000, 1024], ids=["padded", "exact"])
@pytest.mark.parametrize("pattern", [P.causal(), P.fixed(128, 32, 4), P.strided(128, "merge")],
                         ids=lambda p: p.name)
def test_atomic_dq_variant_vs_float64(pattern, n, bulk, monkeypatch):
    """The experimental backward (``CONFIG["dkdv"]["atomic_dq"]``: dQ added by the dK/dV
    programs into float32, no dQ kernel) against float64, bf16: with one TMA bulk reduce per
    dQ tile where the component is in natural order (Hopper; the default of the variant), and
    with element atomics (``dq_tma`` 0), at a padded length and a multiple of the tiles."""
    _check_under_config(pattern, {"dkdv": {"atomic_dq": 1, "dq_tma": bulk}}, monkeypatch, N=n)


def test_atomic_dq_at_head_dim_128_still_launches(monkeypatch):
    """At head dim 128 in bf16 the atomic-dQ dK/dV kernel would not fit an H100's shared memory
    (Triton's OutOfResources at launch); with the mode set, ``_atomic_dq_fits`` sends the call
    through the deterministic kernels, which must launch and be exact."""
    from sparse_transformer.kernels import triton_attention

    assert not triton_attention._atomic_dq_fits(torch.bfloat16, 128, 128)
    _check_under_config(P.causal(), {"dkdv": {"atomic_dq": 1}}, monkeypatch, H=2, D=128)


@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "split")],
                         ids=lambda p: p.name)
def test_direct_launches_match_float64(pattern):
    # The first call compiles through Triton and is recorded; the second replays the forward's
    # and the backward's launches whole, past Triton's binder (kernels/launcher.py), from the
    # same prepared tables: both against float64.
    from sparse_transformer.kernels import dispatch, launcher

    if launcher._VERSION not in launcher.VERIFIED:
        pytest.skip(f"Triton {launcher._VERSION}: the direct path is off on this version")
    _check_backend(pattern, "triton", torch.bfloat16)
    prepared = dispatch._lookup(pattern, 1000, 8, 64, 64, torch.bfloat16,
                                torch.device("cuda", torch.cuda.current_device()), "triton")
    launches = prepared.tables.launches
    hits, replays = launches.hits, launches.replays
    _check_backend(pattern, "triton", torch.bfloat16)
    n_launch = 3 * len(prepared.tables.components)  # forward, dQ (with Delta), dK/dV
    assert launches.hits - hits == n_launch, (launches.hits, hits, launches.misses)
    assert launches.replays - replays == 2  # the forward and the backward


@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "split")],
                         ids=lambda p: p.name)
def test_compiled_calls_launch_directly_and_match_float64(pattern):
    # Under torch.compile the custom ops run the launches from unflattened tables, through the
    # shared cache (triton_attention.SHARED_LAUNCHES): after the first call every launch of a
    # second call must be direct, and both calls must agree with float64.
    from sparse_transformer.kernels import dispatch, launcher, triton_attention

    if launcher._VERSION not in launcher.VERIFIED:
        pytest.skip(f"Triton {launcher._VERSION}: the direct path is off on this version")
    prepared = dispatch.prepare(pattern, 1000, 8, 64, 64, torch.bfloat16, "cuda", "triton")
    fn = torch.compile(lambda a, b, c: dispatch.run(prepared, a, b, c, 1 / math.sqrt(64)),
                       fullgraph=True)
    shared = triton_attention.SHARED_LAUNCHES
    _check_backend(pattern, fn, torch.bfloat16)
    hits = shared.hits
    _check_backend(pattern, fn, torch.bfloat16)
    n_launch = 3 * len(prepared.tables.components)  # forward, dQ (with Delta), dK/dV
    assert shared.hits - hits == n_launch, (shared.hits, hits, shared.misses)


def _packed(pattern, N=1000, H=8, D=64):
    """run_packed on the leaf (the model's call), through tables prepared for it."""
    from sparse_transformer.kernels import dispatch

    prepared = dispatch.prepare(pattern, N, H, D, D, torch.bfloat16, "cuda", "triton")
    return prepared, lambda qkv: dispatch.run_packed(prepared, qkv, H, H * D, 1 / math.sqrt(D))


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_packed_call_vs_float64(pattern):
    # The model's call: q, k, v read out of the projection whole, d(qkv) written as one tensor
    # (no concatenation after the kernels). Twice: the second call replays the launches
    # recorded by the first, with the gradient views' layout in their key.
    prepared, fn = _packed(pattern)
    _check_backend(pattern, fn, torch.bfloat16, packed=True)
    launches = prepared.tables.launches
    replays = launches.replays if launches is not None else 0
    _check_backend(pattern, fn, torch.bfloat16, packed=True)
    if launches is not None and launches.enabled:
        assert launches.replays - replays == 2  # the forward and the backward


@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "split")],
                         ids=lambda p: p.name)
def test_compiled_packed_calls_match_float64(pattern):
    prepared, fn = _packed(pattern)
    _check_backend(pattern, torch.compile(fn, fullgraph=True), torch.bfloat16, packed=True)


@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "merge")],
                         ids=lambda p: p.name)
def test_packed_call_with_atomic_dq_vs_float64(pattern, monkeypatch):
    # the atomic mode adds dQ into float32 of its own, copied into d(qkv) after
    from sparse_transformer.kernels import dispatch, triton_attention

    monkeypatch.setattr(triton_attention, "CONFIG", {"dkdv": {"atomic_dq": 1}})
    try:
        _check_backend(pattern, _packed(pattern)[1], torch.bfloat16, packed=True)
    finally:
        dispatch.PREPARED.clear()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "merge")],
                         ids=lambda p: p.name)
def test_triton_vs_float64_other_dtypes(pattern, dtype):
    _check_backend(pattern, "triton", dtype, N=700, D=48)  # odd length, padded head dim


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_sdpa_vs_float64(pattern):
    _check_backend(pattern, "sdpa", torch.bfloat16, N=512)


@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "split")],
                         ids=lambda p: p.name)
def test_torch_backend_vs_float64(pattern):
    _check_backend(pattern, "torch", torch.float32, N=512)


@pytest.mark.parametrize("pattern", [P.fixed(128, 32, 4), P.strided(128, "merge")],
                         ids=lambda p: p.name)
def test_flex_vs_float64(pattern):
    _check_backend(pattern, "flex", torch.bfloat16, N=1024)


def test_auto_picks_sdpa_for_causal_and_triton_for_sparse():
    from sparse_transformer.kernels import resolve_backend

    q = torch.randn(1, 8, 4096, 64, device="cuda")
    assert resolve_backend("auto", q, P.causal()) == "sdpa"
    assert resolve_backend("auto", q, P.local(8192)) == "sdpa"  # a window wider than n
    assert resolve_backend("auto", q, P.fixed(128, 32, 4)) == "triton"


@pytest.mark.parametrize("backend", ["triton", "sdpa"])
def test_default_call_has_no_host_sync(backend):
    pattern = P.causal() if backend == "sdpa" else P.strided(128, "merge")
    q, k, v = (torch.randn(2, 8, 2048, 64, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    attention(q, k, v, pattern, backend=backend).sum().backward()  # tables built, kernels JIT
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = attention(q, k, v, pattern, backend=backend)
        out.backward(torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def _flex_calls(lengths):
    p = P.fixed(64, 16, 2)  # one plan component: one compiled graph per call shape
    for n in lengths:
        q = torch.randn(1, 4, n, 32, device="cuda", dtype=torch.bfloat16)
        attention(q, q, q, p, backend="flex")


def test_flex_compiles_every_shape_past_dynamos_limit():
    """Each distinct shape gets its own compiled Flex kernel, also past dynamo's recompile
    limit, with no eager fallback. The limit is lowered to 1 here to stand for its default of 8
    (each compile takes seconds): the backend must raise it for its calls."""
    import torch._dynamo.config as dc
    from torch._dynamo.utils import counters

    lengths = (384, 512, 640, 768)
    counters.clear()
    with dc.patch(recompile_limit=1):
        _flex_calls(lengths)
    assert counters["stats"]["unique_graphs"] == len(lengths), dict(counters["stats"])
    assert not any("recompile" in k.lower() for k in counters["unimplemented"]), \
        dict(counters["unimplemented"])


def test_flex_refuses_to_run_eager_past_its_own_limit(monkeypatch):
    """Past RECOMPILE_LIMIT a clear error, never the eager fallback that builds the whole score
    matrix."""
    import torch._dynamo.config as dc

    from sparse_transformer.kernels import flex

    monkeypatch.setattr(flex, "RECOMPILE_LIMIT", 1)
    with dc.patch(recompile_limit=1), pytest.raises(RuntimeError, match="RECOMPILE_LIMIT"):
        _flex_calls((896, 1024))  # lengths no other test compiles: the second must be refused


def test_compiled_model_step_has_no_graph_break():
    from torch._dynamo.utils import counters

    from sparse_transformer.model.config import ModelConfig
    from sparse_transformer.model.transformer import SparseTransformer, loss_nats

    cfg = ModelConfig.from_preset("wiki-small", n_ctx=1024, embed_stride=128, recompute=True,
                                  attention="fixed(stride=128, summary=32, distinct=4)",
                                  backend="triton")
    model = SparseTransformer(cfg).cuda().compile_blocks()
    x = torch.randint(0, 256, (2, 1024), device="cuda")
    counters.clear()
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_nats(model(x), x)
        loss.backward()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert torch.isfinite(loss)
