"""The Triton op (``backend="triton"``) vs the float64 dense reference (CPU: Triton's interpreter).

Acceptance rule (issue 3): for the output and every gradient, our max error against float64 is
at most 2x the error of the same computation done by PyTorch in the input dtype, plus a small
floor. Inputs come in the model's layout (q, k, v strided views of one [B, N, 3 H D] buffer)
and as contiguous [B, H, N, D] tensors; the op reads both in place. Shapes are tiny because the
interpreter runs each program in Python; on a CUDA machine the same tests run on the GPU.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

pytest.importorskip("triton")

from sparse_transformer import attention  # noqa: E402
from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.kernels import dispatch  # noqa: E402
from sparse_transformer.kernels import triton_attention as T  # noqa: E402
from sparse_transformer.kernels.reference import masked_softmax_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _fresh_prepared(monkeypatch):
    """Each test prepares its own tables: several set launch CONFIG that the tables depend on
    (the dK/dV key groups), which a table cached by an earlier test would hide."""
    from sparse_transformer.kernels import dispatch

    monkeypatch.setattr(dispatch, "PREPARED", dispatch.PreparedLRU())


def _max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    fin = torch.isfinite(ref)
    assert torch.equal(fin, torch.isfinite(a)), "non-finite entries differ from the reference"
    return float((a.double() - ref)[fin].abs().max()) if fin.any() else 0.0


def _assert_close(name: str, ours: torch.Tensor, same: torch.Tensor, ref: torch.Tensor, dtype):
    e_ours, e_same = _max_err(ours, ref), _max_err(same, ref)
    scale = max(1.0, float(ref[torch.isfinite(ref)].abs().max()))
    bound = 2 * e_same + FLOOR[dtype] * scale
    assert e_ours <= bound, f"{name}: error {e_ours:.3g} > 2 x {e_same:.3g} + floor ({bound:.3g})"


def _inputs(B, H, N, D, Dv, layout, dtype, g):
    """Leaf tensor(s) and the q, k, v views the op gets, in the requested memory layout."""
    if layout in ("model", "packed"):  # [B, N, (2 D + Dv) H], split and viewed like the model
        base = torch.randn(B, N, H * (2 * D + Dv), generator=g, dtype=torch.float64)

        def views(cast):
            leaf = base.to(cast).to(DEVICE).detach().requires_grad_()
            q, k, v = leaf.split([H * D, H * D, H * Dv], dim=-1)
            return [leaf], [x.view(B, N, H, -1).transpose(1, 2) for x in (q, k, v)]
    else:
        xs = [torch.randn(B, H, N, d, generator=g, dtype=torch.float64) for d in (D, D, Dv)]

        def views(cast):
            leaves = [x.to(cast).to(DEVICE).detach().requires_grad_() for x in xs]
            return leaves, leaves
    return views


def _check(pattern, n, H, dtype, B=2, D=16, Dv=None, layout="model", seed=0):
    Dv = Dv or D
    g = torch.Generator().manual_seed(seed)
    views = _inputs(B, H, n, D, Dv, layout, dtype, g)
    go = torch.randn(B, H, n, Dv, generator=g, dtype=torch.float64)
    mask = pattern.mask(n, H)
    scale = 1 / math.sqrt(D)

    def run(fn, cast, packed=False):
        leaves, (q, k, v) = views(cast)
        out = fn(leaves[0]) if packed else fn(q, k, v)
        (out.double() * go.to(out.device)).sum().backward()
        return [out.detach().cpu()] + [x.grad.cpu() for x in leaves]

    dense = lambda q, k, v: masked_softmax_attention(q, k, v, mask.to(q.device), scale)[0]  # noqa
    ref = run(dense, torch.float64)
    same = run(dense, dtype)
    if layout == "packed":  # the model's call: the projection whole, d(qkv) one tensor
        prepared = dispatch.prepare(pattern, n, H, D, Dv, dtype, DEVICE, "triton")
        ours = run(lambda qkv: dispatch.run_packed(prepared, qkv, H, H * D, scale), dtype,
                   packed=True)
    else:
        ours = run(lambda q, k, v: attention(q, k, v, pattern, backend="triton"), dtype)
    assert ours[0].dtype == dtype and ours[0].shape == (B, H, n, Dv)
    names = ["out"] + (["dqkv"] if layout != "contiguous" else ["dq", "dk", "dv"])
    for name, a, s, r in zip(names, ours, same, ref):
        _assert_close(f"{pattern.name} {layout} {name}", a, s, r, dtype)


@pytest.mark.parametrize("pattern, n, H, D, Dv", [
    (P.causal(), 70, 2, 16, 16),
    (P.local(20), 90, 1, 24, 24),
    (P.strided(8, "merge"), 77, 2, 24, 40),  # two components, merged in the epilogue
    (P.strided(8, "split"), 100, 2, 16, 16),  # natural + reordered heads side by side
    (P.strided(8, "local"), 64, 1, 16, 16),
    (P.column(8), 64, 1, 16, 16),  # reordered only; n = 64 needs no padding
    (P.fixed(16, 4, 1), 100, 1, 24, 24),
    (P.fixed(32, 16, 2), 130, 2, 16, 16),
    (P.fixed(16, 4, 4), 100, 4, 16, 16),
    (P.union(P.local(10), P.fixed(16, 4)), 77, 1, 16, 16),
    (P.per_head(P.local(12), P.causal()), 50, 2, 16, 16),
    (P.per_head(P.strided(8, "merge"), P.column(8)), 72, 2, 16, 16),  # mixed merge flags
    (P.local(16), 40, 1, 100, 100),  # head dim 100, padded to 128 inside the kernel
])
def test_fp32_model_layout(pattern, n, H, D, Dv):
    _check(pattern, n, H, torch.float32, D=D, Dv=Dv, layout="model")


@pytest.mark.parametrize("pattern, n, H, D, Dv", [
    (P.causal(), 70, 2, 16, 16),
    (P.strided(8, "merge"), 77, 2, 24, 40),  # q/k and v widths differ, merged heads
    (P.strided(8, "split"), 100, 2, 16, 16),  # reordered column heads
    (P.fixed(16, 4, 4), 100, 4, 16, 16),  # owned key tiles (dK/dV written by dQ programs)
])
def test_packed_op_writes_one_qkv_gradient(pattern, n, H, D, Dv):
    """``run_packed`` (what the model calls): the same function, its gradient one tensor."""
    _check(pattern, n, H, torch.float32, D=D, Dv=Dv, layout="packed")


def test_packed_op_returns_its_gradient_without_a_concatenation():
    """The eager packed call's backward hands autograd d(qkv) itself: no SplitBackward, so no
    cat of dq, dk, dv after the kernels."""
    p = P.fixed(16, 4, 2)
    qkv = torch.randn(1, 48, 3 * 2 * 16, device=DEVICE, requires_grad=True)
    prepared = dispatch.prepare(p, 48, 2, 16, 16, torch.float32, torch.device(DEVICE), "triton")
    out = dispatch.run_packed(prepared, qkv, 2, 32, 0.25)
    assert type(out.grad_fn).__name__ == "_EagerPackedAttentionBackward"
    assert not any("Split" in type(f).__name__ for f, _ in out.grad_fn.next_functions if f)


@pytest.mark.parametrize("pattern, n", [(P.strided(8, "merge"), 64), (P.fixed(16, 4, 2), 50)])
def test_fp32_contiguous_layout(pattern, n):
    _check(pattern, n, 2, torch.float32, layout="contiguous")


@pytest.mark.parametrize("dtype", [
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        DEVICE == "cpu", reason="Triton's interpreter cannot run bf16 tl.dot (numpy has no "
        "bfloat16), so the op runs float32 copies there (test_bf16_in_the_interpreter_runs_"
        "float32_copies); the bf16 kernels run on CUDA (here and in test_cuda.py)")),
])
@pytest.mark.parametrize("pattern", [P.fixed(16, 8, 2), P.strided(8, "merge")])
def test_half(pattern, dtype):
    _check(pattern, 64, 2, dtype, B=2, D=64, Dv=32)


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's fallback only")
def test_bf16_in_the_interpreter_runs_float32_copies():
    """What a bf16 call does in Triton's interpreter: the float32 kernels on upcast copies,
    rounded back to bf16 -- named for what it runs, unlike a bf16 test would be."""
    p = P.fixed(16, 8, 2)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    prepared = T.prepare(p, 64, 2, 16, 16, torch.bfloat16, torch.device("cpu"))
    assert prepared.upcast
    out = attention(q, k, v, p, backend="triton")
    assert out.dtype == torch.bfloat16
    expect = attention(q.float(), k.float(), v.float(), p, backend="triton")
    assert torch.equal(out, expect.to(torch.bfloat16))


def test_output_is_token_major():
    """The output's memory is [B, N, H, Dv]: the model's reshape to [B, N, H * Dv] is a view."""
    q = torch.randn(1, 2, 40, 16, device=DEVICE)
    out = attention(q, q, q, P.fixed(16, 4, 2), backend="triton")
    assert out.transpose(1, 2).is_contiguous()


def test_merge_flags():
    """The second component of a merged head accumulates; split heads never do."""
    merge = T.device_tables(P.strided(8, "merge"), 64, 2, 16, 16, torch.device("cpu"))
    assert [c.slot_merge.tolist() for c in merge.components] == [[0, 0], [1, 1]]
    split = T.device_tables(P.strided(8, "split"), 64, 2, 16, 16, torch.device("cpu"))
    assert [c.slot_merge.tolist() for c in split.components] == [[0], [0]]
    assert [c.stride for c in split.components] == [0, 8]


def test_tables_are_built_once(monkeypatch):
    """attention() keeps what it prepared (dispatch.PREPARED, bounded); the model keeps its
    own in its forward state (tests/model/test_state.py)."""
    from sparse_transformer.kernels import dispatch

    built, real = [], T.device_tables
    monkeypatch.setattr(T, "device_tables", lambda *a: built.append(a) or real(*a))
    monkeypatch.setattr(dispatch, "PREPARED", dispatch.PreparedLRU(2))
    p = P.fixed(16, 4, 2)
    q = torch.randn(1, 2, 48, 16, device=DEVICE)
    for _ in range(3):
        attention(q, q, q, p, backend="triton")
    assert len(built) == 1
    for n in (32, 40, 48):  # the LRU holds two: 48 was pushed out by 32 and 40
        attention(q[:, :, :n], q[:, :, :n], q[:, :, :n], p, backend="triton")
    assert len(built) == 4 and len(dispatch.PREPARED) == 2


def test_backward_is_deterministic():
    p = P.strided(8, "merge")
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


def test_custom_ops_and_compile():
    """opcheck on both custom ops; torch.compile traces attention() through them, no break."""
    p = P.strided(8, "merge")
    q, k, v = (torch.randn(1, 2, 32, 16, device=DEVICE, requires_grad=True) for _ in range(3))
    tables, ints = T.prepare(p, 32, 2, 16, 16, torch.float32, torch.device(DEVICE)).flat
    torch.library.opcheck(T.sparse_attention_fwd, (q, k, v, tables, ints, 0.25),
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_static"))
    out, lse = T.sparse_attention_fwd(q, k, v, tables, ints, 0.25)
    go = torch.randn_like(out)
    torch.library.opcheck(T.sparse_attention_bwd, (go, q, k, v, out, lse, tables, ints, 0.25),
                          test_utils=("test_schema", "test_faketensor"))

    def fn(a, b, c):
        return attention(a, b, c, p, scale=0.25, backend="triton").float().sum()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)  # fullgraph: no break
    got = compiled(q, k, v)
    got.backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    expect = fn(*xs)
    expect.backward()
    torch.testing.assert_close(got, expect)
    for a, b in zip(grads, (x.grad for x in xs)):
        torch.testing.assert_close(a, b)


def test_packed_custom_ops_and_compile():
    """opcheck on both packed ops; torch.compile traces run_packed through them (no break) and
    gives the eager packed call's output and d(qkv)."""
    p = P.strided(8, "merge")
    H, D, Dv = 2, 16, 8
    prepared = dispatch.prepare(p, 32, H, D, Dv, torch.float32, torch.device(DEVICE), "triton")
    tables, ints = prepared.flat
    qkv = torch.randn(1, 32, H * (2 * D + Dv), device=DEVICE, requires_grad=True)
    args = (qkv, tables, ints, 0.25, H, H * D)
    torch.library.opcheck(T.sparse_attention_packed_fwd, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_static"))
    out, lse = T.sparse_attention_packed_fwd(*args)
    go = torch.randn_like(out)
    torch.library.opcheck(T.sparse_attention_packed_bwd,
                          (go, qkv, out, lse, tables, ints, 0.25, H, H * D),
                          test_utils=("test_schema", "test_faketensor"))

    def fn(x):
        return dispatch.run_packed(prepared, x, H, H * D, 0.25).float().sum()

    got = torch.compile(fn, backend="aot_eager", fullgraph=True)(qkv)
    got.backward()
    x = qkv.detach().clone().requires_grad_()
    expect = fn(x)
    expect.backward()
    torch.testing.assert_close(got, expect)
    torch.testing.assert_close(qkv.grad, x.grad)


@pytest.mark.parametrize("config", [
    {"dkdv": {"trans_acc": 0, "num_warps": 4, "num_stages": 2, "slots_x": 0},
     "fwd": {"gather": 4, "slots_x": 0}, "dq": {"slots_x": 0}},  # tiles on the grid's x
    {"dkdv": {"trans_acc": 1, "num_warps": 4, "num_stages": 2}, "dq": {"gather": 1}},
    {"fwd": {"lean": 0, "gather": 4}, "dq": {"lean": 0}},  # every gather masked (no tail split)
    {"fwd": {"lean": 2, "gather": 4}, "dq": {"lean": 2}},  # lean loops at any row length
    {"dq": {"fused_delta": 0}},  # Delta in a launch of its own (before the ninth session)
    {"tiles": {"q_block": 16}},  # query tiles as narrow as the key tiles (block_sizes)
])
def test_launch_variants(config, monkeypatch):
    """Both dK/dV accumulator layouts, other gather widths, both grid orders, both forms of
    the forward and dQ loops, Delta in its own launch and narrower query tiles compute the
    same function (at these sizes the default takes the plain loops: rows are short)."""
    monkeypatch.setattr(T, "CONFIG", config)
    _check(P.fixed(16, 4, 2), 64, 2, torch.float32)  # 16-wide key tiles
    _check(P.causal(), 64, 1, torch.float32)  # key tiles grouped by 2


@pytest.mark.parametrize("pattern", [P.causal(), P.fixed(16, 4, 2), P.strided(8, "merge"),
                                     P.union(P.local(10), P.fixed(16, 4))],
                         ids=lambda p: p.name)
def test_lean_loops(pattern, monkeypatch):
    """The lean forward and dQ loops (the scale inside the exponent, empty gather slots
    masked in the last gather only) with rows of odd and even length, fp32 and bf16."""
    monkeypatch.setattr(T, "CONFIG", {"fwd": {"lean": 2}, "dq": {"lean": 2}})
    _check(pattern, 90, 2, torch.float32)
    _check(pattern, 64, 2, torch.bfloat16, layout="contiguous")


def test_lean_loops_where_rows_are_long():
    """The default takes the lean loops for components whose query tiles read 16 key tiles
    or more on average: at the enwik8 shape fixed and causal, not local or strided."""
    for pattern, long in ((P.fixed(128, 32, 4), True), (P.causal(), True),
                          (P.local(128), False), (P.strided(128, "split"), False),
                          (P.strided(128, "merge"), False)):
        tables = T.device_tables(pattern, 12288, 8, 128, 32, torch.device("cpu"))
        assert [bool(c.long_rows) for c in tables.components] == \
            [long] * len(tables.components), pattern.name


def test_short_rows_take_half_height_query_tiles():
    """At the enwik8 shape on CUDA's tiles, the forward and dQ of local and strided take 64-row
    query tiles while their dK/dV lists keep 128-row ones; fixed and causal keep 128 rows
    throughout. Where the narrower plan would pad differently, every launch keeps 128."""
    cpu = torch.device("cpu")
    for pattern, rows in ((P.fixed(128, 32, 4), 128), (P.causal(), 128), (P.local(128), 64),
                          (P.strided(128, "split"), 64), (P.strided(128, "merge"), 64)):
        tables = T.device_tables(pattern, 12288, 8, 128, 32, cpu, short_q_block=64)
        assert tables.q_block == 128, pattern.name
        for c in tables.components:
            assert c.q_block == rows and c.n_query_tiles == 12288 // rows, pattern.name
            assert c.query_side[0].shape[1] == 12288 // rows, pattern.name
            listed = torch.cat([c.key_side[1].flatten(), c.key_side[3].flatten()])
            assert int(listed.max()) < 12288 // 128, pattern.name  # dK/dV: 128-row tiles
    uneven = T.device_tables(P.local(128), 12288 + 64, 8, 128, 32, cpu, short_q_block=64)
    assert [c.q_block for c in uneven.components] == [128]


@pytest.mark.parametrize("short", [True, False], ids=["half-height", "one-height"])
def test_short_row_tiles_vs_float64(short, monkeypatch):
    """With CONFIG["tiles"]["short_q_block"] (off by default), short-row components run their
    forward and dQ on half-height query tiles (here the interpreter's 16 rows against dK/dV's
    32). Both forms compute the same function."""
    if short:
        monkeypatch.setattr(T, "CONFIG", {"tiles": {"short_q_block": 16}})
    for pattern, n, H in ((P.local(20), 90, 1), (P.strided(8, "split"), 96, 2),
                          (P.strided(8, "merge"), 64, 2)):
        prepared = T.prepare(pattern, n, H, 16, 16, torch.float32, torch.device("cpu"))
        expect = [16 if short else 32] * len(prepared.tables.components)
        assert [c.q_block for c in prepared.tables.components] == expect, pattern.name
        _check(pattern, n, H, torch.float32)
    _check(P.local(20), 64, 2, torch.bfloat16, layout="contiguous")


class _NotLaunched:
    def __init__(self, what: str):
        self.what = what

    def __getitem__(self, grid):
        raise AssertionError(f"the {self.what} kernel ran")


@pytest.mark.parametrize("pattern", [P.fixed(16, 4, 2), P.strided(8, "merge")],
                         ids=lambda p: p.name)
def test_delta_is_computed_by_the_dq_programs(pattern, monkeypatch):
    """By default the dQ programs compute Delta = rowsum(dO * O) of their rows and store it for
    the dK/dV launch: no Delta launch. A merged head's second component computes it again
    (the same values); both components' gradients stay exact."""
    monkeypatch.setattr(T.triton_bwd, "delta_kernel", _NotLaunched("Delta"))
    _check(pattern, 64, 2, torch.float32)
    _check(pattern, 64, 2, torch.bfloat16, layout="contiguous")


@pytest.mark.parametrize("pattern", [P.fixed(16, 4, 2), P.strided(8, "merge")],
                         ids=lambda p: p.name)
def test_atomic_dq_variant(pattern, monkeypatch):
    """The experimental backward whose dK/dV programs add dQ with atomics (no dQ kernel; both
    components of a merged head add into one float32 buffer) computes the same function."""
    monkeypatch.setattr(T, "CONFIG", {"dkdv": {"atomic_dq": 1}})
    monkeypatch.setattr(T.triton_bwd, "dq_kernel", _NotLaunched("dQ"))
    _check(pattern, 64, 2, torch.float32)
    _check(pattern, 64, 2, torch.bfloat16)
    _check(pattern, 64, 2, torch.float32, layout="packed")  # dQ copied into d(qkv) after


@pytest.mark.parametrize("bulk", [1, 0], ids=["tma-reduce", "element-atomics"])
def test_atomic_dq_adds_whole_tiles_through_a_descriptor(bulk, monkeypatch):
    """Under the atomic-dQ backward, natural-order components add each [q_block, D] dQ tile
    with one tensor-descriptor reduce (TMA's bulk reduce-add on Hopper; the interpreter's shim
    here), reordered ones (strided split's column heads) element by element; ``dq_tma`` 0
    takes the element path everywhere. Both are checked against float64, at a length that
    pads the last query tile (its rows past N must be clipped, not added elsewhere)."""
    from triton.runtime import interpreter

    if DEVICE != "cpu":
        pytest.skip("counts the interpreter's descriptor reduces (GPU: tests/kernels/test_cuda.py)")
    calls = []
    reduce = interpreter.InterpreterBuilder.create_descriptor_reduce
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_descriptor_reduce",
                        lambda self, *a: calls.append(1) or reduce(self, *a))
    monkeypatch.setattr(T, "CONFIG", {"dkdv": {"atomic_dq": 1, "dq_tma": bulk}})
    monkeypatch.setattr(T.triton_bwd, "dq_kernel", _NotLaunched("dQ"))
    _check(P.strided(8, "split"), 70, 2, torch.float32)
    assert bool(calls) == bool(bulk), len(calls)
    calls.clear()
    _check(P.causal(), 70, 2, torch.float32, D=24)  # not a power of two: element atomics
    assert not calls


def test_atomic_dq_yields_to_torch_deterministic_mode(monkeypatch):
    """Under ``torch.use_deterministic_algorithms(True)`` the atomic-dQ setting is ignored: the
    deterministic dQ kernel runs (it reads tables built for the atomic mode, which leave it no
    owned tiles), and the delta launch does not."""
    monkeypatch.setattr(T, "CONFIG", {"dkdv": {"atomic_dq": 1}})
    monkeypatch.setattr(T.triton_bwd, "delta_kernel", _NotLaunched("Delta"))
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        _check(P.fixed(16, 4, 2), 64, 2, torch.float32)
    finally:
        torch.use_deterministic_algorithms(was)


def test_atomic_dq_is_skipped_where_its_kernel_would_not_fit(monkeypatch):
    """In 16-bit dtypes with a head dim over 64 the atomic dK/dV kernel needs more shared
    memory than an H100 has (``_atomic_dq_fits``): the deterministic kernels run instead, so
    turning the mode on never makes a launch fail."""
    assert T._atomic_dq_fits(torch.bfloat16, 64, 64)
    assert not T._atomic_dq_fits(torch.bfloat16, 64, 128)
    assert T._atomic_dq_fits(torch.float32, 128, 128)
    monkeypatch.setattr(T, "CONFIG", {"dkdv": {"atomic_dq": 1}})
    monkeypatch.setattr(T.triton_bwd, "delta_kernel", _NotLaunched("Delta"))
    _check(P.causal(), 40, 1, torch.float16, B=1, D=80, layout="contiguous")


def test_key_tile_grouping():
    """dK/dV programs take a query tile's width of keys where the lists allow: causal's adjacent
    tiles, fixed's summary tiles of consecutive blocks; the plan's tables carry the groups."""
    causal = P.causal().plan(256, 1, 128, 32).components[0]
    tiles, fc, fi, pc, pi = causal.key_groups(4, T.MAX_GROUP_OVERHEAD)
    assert tiles[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # 8 key tiles of 32 -> 2 of 128
    fixed = P.fixed(128, 32).plan(2048, 1, 128, 32).components[0]
    tiles = fixed.key_groups(4, 1.25)[0][0].tolist()
    assert tiles[0] == [3, 7, 11, 15]  # the summary tiles of 4 consecutive blocks, together
    assert sorted(t for g in tiles for t in g if t >= 0) == list(range(64))
    short = P.fixed(128, 32).plan(512, 1, 128, 32).components[0]
    assert short.key_groups(4, 1.25)[0].shape[-1] == 1  # 4 blocks: grouping would add 45%
    tabs = T.device_tables(P.fixed(128, 32), 6144, 1, 128, 32, torch.device("cpu"))
    comp = tabs.components[0]
    assert comp.key_tiles.shape == (1, comp.n_key_groups, 4)  # 5% padding: under the limit
    assert comp.key_skewed  # 12 long summary programs among 60: heaviest first across heads
    causal = T.device_tables(P.causal(), 6144, 1, 128, 32, torch.device("cpu")).components[0]
    assert causal.key_tiles.shape[-1] == 4 and not causal.key_skewed


def test_grouped_key_tiles_with_empty_slots():
    """dK/dV programs over summary tiles of two blocks, and groups with an empty (-1) slot."""
    pattern, n = P.fixed(64, 16, 2), 1024
    qb, kb = T.block_sizes(16, torch.float32, torch.device(DEVICE))
    tables = T.device_tables(pattern, n, 2, qb, kb, torch.device(DEVICE))
    tiles = tables.components[0].key_tiles
    if DEVICE == "cpu":  # the interpreter's 32 x 16 tiles
        assert tiles.shape[-1] == 2 and bool((tiles == -1).any())
    _check(pattern, n, 2, torch.float32, B=1)


@pytest.mark.parametrize("key_tiles", [1, 2])
def test_narrower_key_groups(key_tiles, monkeypatch):
    """The dK/dV programs compute the same function at every group width (1: one tile each)."""
    from sparse_transformer.kernels import dispatch

    monkeypatch.setattr(T, "CONFIG", {"dkdv": {"key_tiles": key_tiles}})
    pattern, n = P.fixed(64, 16, 2), 1024
    _check(pattern, n, 2, torch.float32, B=1)
    qb, kb = T.block_sizes(16, torch.float32, torch.device(DEVICE))
    prepared = dispatch._lookup(pattern, n, 2, 16, 16, torch.float32, torch.device(DEVICE),
                                "triton")
    assert prepared.tables.components[0].key_tiles.shape[-1] == min(key_tiles, qb // kb)


def test_an_eager_call_skips_the_custom_op_machinery():
    """Eager calls run the launches through a plain autograd.Function (its Python dispatch is
    cheaper than the custom op's); under torch.compile the custom op is traced instead (see
    test_custom_ops_and_compile, which compares the two)."""
    p = P.strided(8, "split")
    q = torch.randn(1, 2, 40, 16, device=DEVICE, requires_grad=True)
    out = attention(q, q, q, p, backend="triton")
    assert type(out.grad_fn).__name__ == "_EagerAttentionBackward"
    with torch.no_grad():
        torch.testing.assert_close(attention(q, q, q, p, backend="triton"), out.detach())


@pytest.mark.parametrize("mode", [2, 0], ids=["runs-everywhere", "no-runs"])
def test_runs_partition_the_full_lists(mode, monkeypatch):
    """The tables' runs (``CONFIG["tiles"]["runs"]``) and what is left of the full lists hold
    exactly the plan's full tiles, each once; a run's length is a multiple of the kernels'
    gather (query side) and its tiles are equally spaced. On CUDA's tiles causal's rows are
    one run each, and fixed's summary tiles are runs of step l / k_block = 4. (Owned tiles are
    off, so the key side holds every tile: ``test_owned_tiles_leave_the_dkdv_groups``.)"""
    monkeypatch.setattr(T, "CONFIG", {"tiles": {"runs": mode, "own": 0}})
    cpu = torch.device("cpu")
    for pattern in (P.causal(), P.fixed(128, 32, 4), P.local(256), P.strided(128, "split"),
                    P.strided(128, "merge")):
        plan = pattern.plan(2048, 8, 128, 32)
        tables = T.device_tables(pattern, 2048, 8, 128, 32, cpu)
        for cp, c in zip(plan.components, tables.components):
            assert c.runs == (mode == 2), pattern.name
            sides = ((cp.full_count, cp.full_index, c.query_side, c.query_runs, 2),
                     (*cp.key_groups(T.key_group_limit(128, 32), T.MAX_GROUP_OVERHEAD)[1:3],
                      c.key_side, c.key_runs, 1))
            for count, index, side, runs, unit in sides:
                for cls in range(count.shape[0]):
                    for r in range(count.shape[1]):
                        first, n, step = runs[cls, r].tolist()
                        if mode == 0:
                            assert n == 0
                        assert n % unit == 0 and (n == 0 or step > 0)
                        ran = [first + t * step for t in range(n)]
                        left = side[1][cls, r, :side[0][cls, r]].tolist()
                        want = index[cls, r, :count[cls, r]].tolist()
                        assert sorted(ran + left) == want, (pattern.name, cls, r)
    tables = T.device_tables(P.causal(), 2048, 8, 128, 32, cpu)
    if mode:
        runs = tables.components[0].query_runs[0]
        assert int(tables.components[0].query_side[0].sum()) <= 16  # odd counts' last tile
        assert runs[:, 1].max() == 2048 // 32 - 4 - (2048 // 32 - 4) % 2
        fixed = T.device_tables(P.fixed(128, 32, 4), 2048, 8, 128, 32, cpu).components[0]
        assert set(fixed.query_runs[..., 2][fixed.query_runs[..., 1] > 0].tolist()) == {4}


@pytest.mark.parametrize("mode", [2, 0], ids=["runs-everywhere", "no-runs"])
def test_runs_vs_float64(mode, monkeypatch):
    """Every kernel computes the same function whether it walks runs (positions from the loop
    counter; EXACT: unmasked loads where nothing is padded) or only lists: patterns with and
    without reordered components, lengths with and without padding."""
    monkeypatch.setattr(T, "CONFIG", {"tiles": {"runs": mode}})
    for pattern, n, H in ((P.causal(), 96, 1), (P.fixed(16, 4, 2), 64, 2),
                          (P.strided(8, "split"), 96, 2), (P.strided(8, "merge"), 64, 2),
                          (P.local(20), 90, 1)):
        prepared = T.prepare(pattern, n, H, 16, 16, torch.float32, torch.device("cpu"))
        assert all(c.runs == (mode == 2) for c in prepared.tables.components), pattern.name
        _check(pattern, n, H, torch.float32)
    _check(P.causal(), 64, 2, torch.bfloat16, layout="contiguous")


def test_runs_of_hand_made_lists():
    """``_runs`` takes each row's longest equally spaced stretch, cut to a multiple of the unit,
    and leaves the rest of the row (in order) in the list; rows too short keep their lists."""
    rows = [[0, 1, 2, 3, 7, 8], [0, 4, 8, 12, 13], [5], [2, 3, 4, 5, 6], [9, 11]]
    count = torch.tensor([[len(r) for r in rows]], dtype=torch.int32)
    index = torch.zeros(1, len(rows), 6, dtype=torch.int32)
    for i, r in enumerate(rows):
        index[0, i, :len(r)] = torch.tensor(r)
    runs, left_count, left_index = T._runs(count, index, unit=2)
    assert runs[0].tolist() == [[0, 4, 1], [0, 4, 4], [0, 0, 0], [2, 4, 1], [9, 2, 2]]
    left = [left_index[0, i, :left_count[0, i]].tolist() for i in range(len(rows))]
    assert left == [[7, 8], [13], [5], [6], []]
    runs4, *_ = T._runs(count, index, unit=4)
    assert runs4[0, 3].tolist() == [2, 4, 1] and runs4[0, 4].tolist() == [0, 0, 0]


@pytest.mark.parametrize("own", [0, 1, 2])
def test_owned_tiles_leave_the_dkdv_groups(own, monkeypatch):
    """``CONFIG["tiles"]["own"]``: a key tile read by one query tile, partially, is written by
    that tile's dQ program (a bit of its row in ``query_owned``) and is in no dK/dV group; every
    other tile is in exactly one group. The default takes them where they are many (fixed: 3 of
    a block's 4 tiles), not causal's or local's last tiles, nor strided's reordered column (not
    timed with them), and never in a component that adds to a head an earlier one wrote
    (strided merge's second)."""
    monkeypatch.setattr(T, "CONFIG", {"tiles": {"own": own}})
    cpu = torch.device("cpu")
    expect = {"fixed": own > 0, "causal": own == 2, "local": own == 2}  # both: the last tiles
    for pattern in (P.fixed(128, 32, 4), P.causal(), P.local(256)):
        plan = pattern.plan(2048, 8, 128, 32)
        tabs = T.device_tables(pattern, 2048, 8, 128, 32, cpu)
        for cp, c in zip(plan.components, tabs.components):
            kind = pattern.name.split("(")[0]
            assert c.owns == int(expect[kind]), (pattern.name, own)
            fc, _, pc, pi = (x.numpy() for x in cp.key_side())
            owned = np.zeros_like(fc, dtype=bool)
            qc, qi = cp.partial_count.numpy(), cp.partial_index.numpy()
            bits = c.query_owned.numpy()
            for cls in range(qc.shape[0]):
                for r in range(qc.shape[1]):
                    for s_, tile in enumerate(qi[cls, r, :qc[cls, r]]):
                        if bits[cls, r] >> s_ & 1:
                            assert not owned[cls, tile] and fc[cls, tile] == 0
                            assert pc[cls, tile] == 1 and pi[cls, tile, 0] == r
                            owned[cls, tile] = True
            grouped = np.zeros_like(owned, dtype=int)
            for cls, row in enumerate(c.key_tiles.numpy()):
                for tile in row.ravel():
                    if tile >= 0:
                        grouped[cls, tile] += 1
            assert ((grouped == 1) ^ owned).all() and grouped.max() <= 1, pattern.name
            if pattern.name.startswith("fixed") and own:
                assert owned.sum() == 4 * (3 * 15 + 4)  # 3 of each block's 4; the last all 4
    merge = T.device_tables(P.strided(8, "merge"), 64, 2, 32, 16, cpu, None)
    assert [c.owns for c in merge.components][1] == 0
    # strided split's reordered column: many owned tiles, taken only when asked for (own 2)
    split = T.device_tables(P.strided(128, "split"), 2048, 8, 128, 32, cpu)
    assert split.components[1].stride and split.components[1].owns == int(own == 2)


@pytest.mark.parametrize("own", [0, 1, 2])
@pytest.mark.parametrize("pattern, n", [(P.fixed(32, 16, 2), 100), (P.fixed(64, 16, 2), 128),
                                        (P.causal(), 96), (P.strided(8, "merge"), 64),
                                        (P.strided(16, "split"), 96)],
                         ids=lambda x: getattr(x, "name", str(x)))
def test_owned_tiles_vs_float64(pattern, n, own, monkeypatch):
    """The dQ programs' dK, dV of the key tiles they alone read (``_owned``), against float64:
    off, the default (fixed's blocks of two 16-key tiles own their non-summary tile) and
    everywhere (causal's last tiles; strided merge's first component, not its second;
    strided split's reordered column, whose dK/dV rows are stored at memory positions)."""
    monkeypatch.setattr(T, "CONFIG", {"tiles": {"own": own, "q_block": 32, "k_block": 16}})
    prepared = T.prepare(pattern, n, 2, 16, 16, torch.float32, torch.device(DEVICE))
    owns = [c.owns for c in prepared.tables.components]
    if own == 0:
        assert not any(owns)
    elif own == 2 or pattern.name.startswith("fixed"):  # (the default's share rule: above)
        assert any(owns)
    _check(pattern, n, 2, torch.float32)


def test_atomic_dq_refuses_tables_with_owned_tiles(monkeypatch):
    """Tables whose dQ programs write owned tiles cannot run the atomic-dQ backward (which runs
    no dQ kernel): a clear error, not missing gradients."""
    monkeypatch.setattr(T, "CONFIG", {"tiles": {"q_block": 32, "k_block": 16}})
    pattern = P.fixed(32, 16, 2)
    prepared = T.prepare(pattern, 64, 2, 16, 16, torch.float32, torch.device(DEVICE))
    assert prepared.tables.components[0].owns
    monkeypatch.setattr(T, "CONFIG", {"dkdv": {"atomic_dq": 1}})
    q = torch.randn(1, 2, 64, 16, device=DEVICE, requires_grad=True)
    out = T.sparse_attention(q, q, q, prepared, 0.25)
    with pytest.raises(ValueError, match="atomic dQ"):
        out.sum().backward()
