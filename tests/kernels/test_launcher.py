"""The direct-launch cache (kernels/launcher.py) on stand-in kernels: when it reuses a
compiled kernel and when it goes back to Triton, and when a whole call is recorded and
replayed (with exactly what launching kernel by kernel passes). The real launches and replays
are checked against float64 on a GPU
(tests/kernels/test_cuda.py::test_direct_launches_match_float64)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from sparse_transformer.kernels import launcher
from sparse_transformer.kernels.launcher import Launches


class FakeCompiled:
    function, packed_metadata = "fn", "meta"

    def __init__(self, log):
        self.log = log

    def run(self, *call):
        self.log.append(("direct", call))


class FakeKernel:
    """What Launches uses of a JITFunction: fn, arg_names, signature, kernel[grid](...)."""

    def __init__(self):
        def k(x_ptr, n, scale, BLOCK=16, FLAG=0):  # the last two stand for constexprs
            pass
        self.fn = k
        self.signature = inspect.signature(k)
        self.arg_names = list(self.signature.parameters)
        self.log = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append(("triton", grid, args, kwargs))
            return FakeCompiled(self.log)
        return launch


@pytest.fixture
def direct(monkeypatch):
    driver, knobs = launcher.stand_in_runtime(stream=1234)
    monkeypatch.setattr(launcher, "_driver", driver)
    monkeypatch.setattr(launcher, "_knobs", knobs)
    monkeypatch.setattr(launcher, "_VERSION", launcher.VERIFIED[0])
    return knobs


def test_second_launch_with_the_same_key_skips_triton_and_passes_every_parameter(direct):
    kern, launches = FakeKernel(), Launches()
    x = torch.zeros(64)
    launches(kern, (3, 2), (x, 100, 0.5), dict(BLOCK=32), num_warps=4)
    launches(kern, (5,), (x, 100, 0.5), dict(BLOCK=32), num_warps=4)
    assert [e[0] for e in kern.log] == ["triton", "direct"]
    assert (launches.misses, launches.hits) == (1, 1)
    grid_and_stream, params = kern.log[1][1][:4], kern.log[1][1][9:]
    assert grid_and_stream == (5, 1, 1, 1234)
    assert params[0] is x and params[1:] == (100, 0.5, 32, 0)  # constexprs and defaults


@pytest.mark.parametrize("change", ["int", "alignment", "dtype", "constexpr", "option"])
def test_what_triton_might_specialize_differently_goes_back_to_triton(direct, change):
    kern, launches = FakeKernel(), Launches()
    buf = torch.zeros(64)
    base = dict(args=(buf, 100, 0.5), constexprs=dict(BLOCK=32), options=dict(num_warps=4))
    other = {"int": dict(base, args=(buf, 101, 0.5)),
             "alignment": dict(base, args=(buf[1:], 100, 0.5)),  # 4 bytes off: not 16-aligned
             "dtype": dict(base, args=(buf.half(), 100, 0.5)),
             "constexpr": dict(base, constexprs=dict(BLOCK=64)),
             "option": dict(base, options=dict(num_warps=8))}[change]
    for call in (base, other):
        launches(kern, (1,), call["args"], call["constexprs"], **call["options"])
    assert [e[0] for e in kern.log] == ["triton", "triton"]


def test_empty_hook_chains_as_triton_3_6_keeps_them_do_not_count_as_hooks(direct):
    class Chain:  # triton.knobs.HookChain: a list of calls, empty unless a profiler adds one
        def __init__(self, calls):
            self.calls = calls

    x = torch.zeros(64)
    for calls, expected in (([], ["triton", "direct"]), ([print], ["triton", "triton"])):
        direct.runtime.launch_enter_hook = direct.runtime.launch_exit_hook = Chain(calls)
        kern, launches = FakeKernel(), Launches()
        for _ in range(2):
            launches(kern, (1,), (x, 1, 0.5), {})
        assert [e[0] for e in kern.log] == expected


def test_hooks_a_disabled_cache_and_unverified_tritons_use_tritons_path(direct, monkeypatch):
    x = torch.zeros(64)
    kern = FakeKernel()
    off = Launches(enabled=False)
    for _ in range(2):
        off(kern, (1,), (x, 1, 0.5), {})
    direct.runtime.launch_enter_hook = object()  # a profiler's hook: Triton must call it
    hooked = Launches()
    for _ in range(2):
        hooked(kern, (1,), (x, 1, 0.5), {})
    direct.runtime.launch_enter_hook = None
    monkeypatch.setattr(launcher, "_VERSION", (9, 9))
    newer = Launches()
    for _ in range(2):
        newer(kern, (1,), (x, 1, 0.5), {})
    assert [e[0] for e in kern.log] == ["triton"] * 6
    assert off.hits == hooked.hits == newer.hits == 0


def test_the_cache_is_bounded(direct):
    kern, launches = FakeKernel(), Launches(limit=2)
    x = torch.zeros(64)
    for n in (1, 2, 3, 3):
        launches(kern, (1,), (x, n, 0.5), {})
    assert len(launches._compiled) == 2 and launches.hits == 0  # n=3 was never kept


@pytest.fixture
def fake_kernels(monkeypatch):
    """Our four attention kernels replaced by stand-ins that log how each launch went."""
    from sparse_transformer.kernels import triton_bwd, triton_fwd

    log = []

    class Stand(FakeKernel):
        def __init__(self, real, name):
            self.fn, self.name = real.fn, name
            self.signature = inspect.signature(real.fn)
            self.arg_names = list(self.signature.parameters)
            self.log = log

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                log.append(("triton", self.name, args))
                compiled = FakeCompiled(log)
                compiled.run = lambda *call: log.append(("direct", self.name, call))
                return compiled
            return launch

    for mod, name in ((triton_fwd, "fwd_kernel"), (triton_bwd, "delta_kernel"),
                      (triton_bwd, "dq_kernel"), (triton_bwd, "dkdv_kernel")):
        monkeypatch.setattr(mod, name, Stand(getattr(mod, name), name))
    return log


def test_a_plans_launches_key_on_the_calls_own_tensors(direct, fake_kernels):
    # forward_launches/backward_launches key a plan's cache on the call's tensors
    # (triton_attention.call_key) instead of every argument: the same layout again launches
    # directly; a q that is not 16-byte aligned, another stride or another dtype goes back to
    # Triton (as it would with the key read off every argument).
    from sparse_transformer import patterns as P
    from sparse_transformer.kernels import triton_attention as ta

    tabs = ta.device_tables(P.strided(8, "split"), 64, 2, 32, 16, torch.device("cpu"))
    tabs.launches.enabled = True  # off under the interpreter; the stand-ins need no GPU
    n_comp = len(tabs.components)  # a forward, dQ (with Delta) and dK/dV launch each
    buf = torch.randn(1, 64, 3 * 2 * 16 + 4)

    def qkv(offset=0, dtype=torch.float32):
        x = buf[..., offset:offset + 96].to(dtype)
        return [t.view(1, 64, 2, 16).transpose(1, 2) for t in x.split(32, dim=-1)]

    def call(q, k, v):
        fake_kernels.clear()
        out, lse = ta.forward_launches(q, k, v, tabs, 0.25)
        ta.backward_launches(torch.ones_like(out), q, k, v, out, lse, tabs, 0.25)
        return [kind for kind, *_ in fake_kernels]

    first = call(*qkv())
    assert first == ["triton"] * (3 * n_comp) and ta.call_key(tabs, 0.25, buf) is not None
    assert call(*qkv()) == ["direct"] * (3 * n_comp)
    assert tabs.launches.replays == 2  # the forward and the backward, recorded by the first
    misaligned = call(*qkv(offset=1))  # 4 bytes off: not 16-aligned
    assert misaligned == ["triton"] * (3 * n_comp)
    strided = qkv()
    strided[0] = strided[0].contiguous()  # another stride for q
    assert "triton" in call(*strided)
    assert call(*qkv(dtype=torch.float16)) == ["triton"] * (3 * n_comp)
    # the custom ops' tables (shared cache) keep the key read off every argument
    shared = ta.PlanTables.unflatten(*tabs.flat)
    assert ta.call_key(shared, 0.25, buf) is None


def _plan_tables(replay_limit: int = 16):
    from sparse_transformer import patterns as P
    from sparse_transformer.kernels import triton_attention as ta

    tabs = ta.device_tables(P.strided(8, "split"), 64, 2, 32, 16, torch.device("cpu"))
    return dataclasses.replace(tabs, launches=Launches(replay_limit=replay_limit))


def _qkv(buf: torch.Tensor) -> list[torch.Tensor]:
    return [t.view(1, 64, 2, 16).transpose(1, 2) for t in buf.split(32, dim=-1)]


def test_a_replayed_call_passes_what_each_direct_launch_passes(direct, fake_kernels):
    # Calls replayed whole (Launches.replay) against the same calls launched one by one past
    # Triton (replay off): every launcher call must match, parameter for parameter, with each
    # tensor the same one in its role (the call's inputs and outputs, the plan's tables).
    from sparse_transformer.kernels import triton_attention as ta

    inputs = [(_qkv(torch.randn(1, 64, 96)), torch.randn(1, 2, 64, 16)) for _ in range(3)]

    def calls(tabs):
        tables = {id(t): f"table {i}" for i, t in enumerate(tabs.flat[0])}
        logs = []
        for (q, k, v), dout in inputs:
            fake_kernels.clear()
            out, lse = ta.forward_launches(q, k, v, tabs, 0.25)
            dq, dk, dv = ta.backward_launches(dout, q, k, v, out, lse, tabs, 0.25)
            roles = tables | {id(t): name for name, t in dict(
                q=q, k=k, v=v, dout=dout, out=out, lse=lse, dq=dq, dk=dk, dv=dv).items()}
            logs.append([(kind, name, tuple(
                roles.get(id(a), ("other", a.dtype, a.shape, a.stride()))
                if isinstance(a, torch.Tensor) else a for a in call))
                for kind, name, call in fake_kernels])
        return logs

    replayed_tabs, direct_tabs = _plan_tables(), _plan_tables(replay_limit=0)
    replayed, one_by_one = calls(replayed_tabs), calls(direct_tabs)
    assert (replayed_tabs.launches.replays, direct_tabs.launches.replays) == (4, 0)
    assert [kind for kind, *_ in replayed[1]] == ["direct"] * len(replayed[1])
    assert replayed[1:] == one_by_one[1:]
    flat = [a for _, _, call in replayed[2] for a in call]
    assert {"q", "k", "v", "dout", "out", "lse", "dq", "dk", "dv", "table 0"} <= set(flat)
    # Delta, the one tensor of a call that is not an input or output, is filled per call too
    assert ("other", torch.float32, (1, 2, 64), (128, 64, 1)) in flat


def test_a_call_is_not_replayed_under_hooks_or_kept_with_one_tensor_twice(direct, fake_kernels):
    from sparse_transformer.kernels import triton_attention as ta

    tabs = _plan_tables()
    buf = torch.randn(1, 64, 96)
    q, k, v = _qkv(buf)
    for _ in range(2):  # q as k too: the two slots could not be told apart in a later call
        ta.forward_launches(q, q, v, tabs, 0.25)
    assert tabs.launches.replays == 0
    ta.forward_launches(q, k, v, tabs, 0.25)  # now kept
    direct.runtime.launch_enter_hook = object()  # a profiler's hook: Triton must call it
    fake_kernels.clear()
    ta.forward_launches(q, k, v, tabs, 0.25)
    assert tabs.launches.replays == 0 and {e[0] for e in fake_kernels} == {"triton"}
    direct.runtime.launch_enter_hook = None
    ta.forward_launches(q, k, v, tabs, 0.25)
    assert tabs.launches.replays == 1


def test_a_call_passing_a_tensor_it_was_not_told_of_is_not_kept(direct):
    kern, launches = FakeKernel(), Launches()
    own, stray, kept = torch.zeros(8), torch.zeros(8), torch.zeros(8)
    with launches.recording(("a",), (own,), owned=[kept]):
        launches(kern, (1,), (stray, 1, 0.5), {})
    with launches.recording(("b",), (own,), owned=[kept]):
        launches(kern, (2,), (own, 1, 0.5), {})
        launches(kern, (3,), (kept, 1, 0.5), {})
    later = torch.ones(8)
    assert not launches.replay(("a",), (later,))
    kern.log.clear()
    assert launches.replay(("b",), (later,))
    (_, first), (_, second) = kern.log
    assert first[:4] == (2, 1, 1, 1234) and first[9] is later
    assert second[:4] == (3, 1, 1, 1234) and second[9] is kept


def test_a_tensor_descriptor_argument_is_keyed_by_block_and_never_replayed(direct):
    """The atomic-dQ backward passes a TMA descriptor of its dQ buffer (a call's own memory):
    launches with one are cached by its dtype and block shape (it is not hashable itself), and
    a call that passed one is not kept for replay, which would reuse the recorded buffer."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    kern, launches = FakeKernel(), Launches()
    x = torch.zeros(64)
    desc = TensorDescriptor.from_tensor(torch.zeros(4, 32), [2, 16])
    wider = TensorDescriptor.from_tensor(torch.zeros(4, 32), [2, 32])
    launches(kern, (1,), (desc, 100, 0.5), {})
    launches(kern, (1,), (TensorDescriptor.from_tensor(torch.zeros(4, 32), [2, 16]), 100, 0.5),
             {})
    launches(kern, (1,), (wider, 100, 0.5), {})
    assert [e[0] for e in kern.log] == ["triton", "direct", "triton"]
    key = ("call",)
    with launches.recording(key, (x,), ()):
        launches(kern, (1,), (x, 100, 0.5), {})
        launches(kern, (1,), (desc, 100, 0.5), {})
    assert not launches.replay(key, (x,))
