"""Launching our Triton kernels past Triton's per-call Python (issue 18: host cost).

``kernel[grid](*args, **constexprs)`` binds and specializes every argument, hashes a cache
key, re-checks the kernel's global values and builds launch metadata, on every call. For our
attention kernels (~45 arguments) that is the largest part of a call's host time: on an H100
host a strided fwd + bwd call (7 launches) costs 1.25 ms of host time for 0.41 ms of GPU work,
where one launch of a one-argument kernel costs 18 us (``benchmarks/host_cost.py``).

``Launches`` keeps, per prepared attention, the ``CompiledKernel`` that Triton returned the
first time it launched a kernel with a given key, and calls its launcher directly afterwards
with the same arguments Triton would pass. The key holds every non-tensor argument by value and
each tensor's dtype and 16-byte alignment, plus the constexprs and launch options: stricter
than Triton's own specialization (which looks at ints only for ==1 and divisibility by 16), so
a cached kernel is only reused where Triton would have chosen the same one.

A caller that knows what its arguments follow from can pass a ``call_key`` instead, built once
per call (``triton_attention.call_key``: a plan's launches follow from the call's q, k, v and
dout), which spares reading ~45 arguments per launch.

Such a caller can go further: ``recording`` keeps every launch of one call (compiled kernel,
grid, arguments) under the call's key, and ``replay`` runs them again for a later call with the
same key, with that call's own tensors put where the recorded call's were. The rest of each
launch (grid, ints, table tensors, constexprs) follows from the key, so a replayed call builds
none of it: on our CPU that was most of a strided call's ~270 us of own host time
(benchmarks/NOTES.md, seventh and eighth sessions).

Triton's path is kept where the direct one cannot be trusted: the interpreter, a Triton whose
``CompiledKernel`` lacks the launcher attributes this relies on (checked on first use), launch
hooks set (profilers such as Proton), and once ``limit`` keys are cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch

import triton

# The launcher's calling convention is Triton's internal API: the direct path is taken only on
# the versions it was written against and checked on a GPU (tests/kernels/test_cuda.py).
# Elsewhere (newer Triton chains its launch hooks and may pass other arguments) Triton's own
# path runs, as before.
VERIFIED = ((3, 6),)
_VERSION = tuple(int(x) for x in triton.__version__.split(".")[:2])
try:
    from triton import knobs as _knobs
    from triton.runtime import driver as _driver
except ImportError:  # pragma: no cover - depends on the Triton version
    _knobs = _driver = None


def _hooks_set() -> bool:
    """Whether a launch hook is registered (Triton 3.6 keeps them in chains, empty by
    default; a bare callable in others)."""
    rt = _knobs.runtime
    return any(h is not None and bool(getattr(h, "calls", True))
               for h in (rt.launch_enter_hook, rt.launch_exit_hook))


# Calls kept per prepared attention for ``replay`` (a plan meets a few layouts: training,
# evaluation, sampling); 0 turns replay off (benchmarks/attention_call.py --no-replay).
REPLAY_LIMIT = 16

# One replayed launch: the compiled kernel's launcher, its grid (x, y, z), every parameter after
# the stream (None where a call's own tensor goes) and the (position, call tensor) pairs.
_Step = tuple[Any, tuple[int, int, int], list, tuple[tuple[int, int], ...]]


class Launches:
    """The compiled kernels one prepared attention launches, by key (see the module doc).

    ``hits`` and ``misses`` count direct and Triton launches, ``replays`` the calls replayed
    whole (tests, benchmarks). ``replay_limit`` bounds the calls kept (0: none; default
    ``REPLAY_LIMIT``).
    """

    def __init__(self, limit: int = 64, enabled: bool = True, replay_limit: int | None = None):
        self.enabled = (enabled and _VERSION in VERIFIED and _knobs is not None
                        and _driver is not None)
        self.limit = limit
        self.replay_limit = REPLAY_LIMIT if replay_limit is None else replay_limit
        self._compiled: dict[tuple, tuple[Any, tuple]] = {}
        self._calls: dict[tuple, list[_Step]] = {}
        self._steps: list | None = None  # the launches of the call being recorded
        self._complete = False  # whether every launch of that call could be kept
        self.hits = 0
        self.misses = 0
        self.replays = 0

    def __call__(self, kernel, grid: tuple[int, ...], args: tuple, constexprs: dict[str, Any],
                 call_key: tuple | None = None, **options: int) -> None:
        """``kernel[grid](*args, **constexprs, **options)``, directly where it can be.

        ``args`` are the kernel's leading parameters in order, ``constexprs`` the rest by name.
        ``call_key``: a key the caller built in place of the one read off ``args`` (a
        microsecond instead of ~15 for ~45 arguments on our CPU); it must fix every argument
        Triton specializes on, as ``triton_attention.call_key`` does for one plan's launches.
        """
        if not self.enabled or _hooks_set():
            self.misses += 1
            self._complete = False
            kernel[grid](*args, **constexprs, **options)
            return
        if call_key is not None:
            key = (kernel.fn, call_key)
        else:
            key = (kernel.fn, tuple(_arg_key(a) for a in args),
                   tuple(constexprs.items()), tuple(options.items()))
        entry = self._compiled.get(key)
        if entry is None:
            self.misses += 1
            compiled = kernel[grid](*args, **constexprs, **options)
            if hasattr(compiled, "result"):  # an asynchronous compile's future
                compiled = compiled.result()
            if len(self._compiled) < self.limit and self._usable(compiled):
                names = kernel.arg_names[len(args):]
                params = kernel.signature.parameters
                tail = tuple(constexprs[n] if n in constexprs else params[n].default
                             for n in names)
                self._compiled[key] = (compiled, tail)
                self._record(compiled, grid, args, tail)
            else:
                self._complete = False
            return
        compiled, tail = entry
        self.hits += 1
        self._record(compiled, grid, args, tail)
        device = _driver.active.get_current_device()
        stream = _driver.active.get_current_stream(device)
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        # What Triton's JITFunction.run passes (triton/runtime/jit.py): the launch metadata is
        # None without hooks, and every parameter goes in order (the launcher skips constexprs).
        compiled.run(grid[0], g1, g2, stream, compiled.function, compiled.packed_metadata,
                     None, None, None, *args, *tail)

    # -- whole calls -------------------------------------------------------------------------
    @contextmanager
    def recording(self, key: tuple | None, tensors: tuple[torch.Tensor, ...],
                  owned: Iterable[torch.Tensor]) -> Iterator[None]:
        """Keep the launches made inside as the call ``key``, for ``replay``.

        ``tensors`` are the call's own tensors, in the order ``replay`` will be given them;
        ``owned`` the tensors that every call with this key passes alike (the plan's tables,
        alive as long as this cache). A call is kept only if every launch in it was direct or
        cached, and every tensor it passed is one of those: what ``replay`` cannot fill in
        itself must not be frozen into it.
        """
        if (key is None or not self.enabled or self._steps is not None or key in self._calls
                or len(self._calls) >= self.replay_limit):
            yield
            return
        self._steps, self._complete = [], True
        try:
            yield
            if self._complete:
                steps = _steps_of(self._steps, tensors, owned)
                if steps is not None:
                    self._calls[key] = steps
        finally:
            self._steps = None

    def replay(self, key: tuple | None, tensors: tuple[torch.Tensor, ...]) -> bool:
        """Launch what the call ``key`` launched when it was recorded, with ``tensors`` in
        place of that call's own; False (nothing launched) where no call is kept under
        ``key`` or Triton's path must run (hooks set since)."""
        steps = self._calls.get(key) if key is not None else None
        if steps is None or not self.enabled or _hooks_set():
            return False
        stream = _driver.active.get_current_stream(_driver.active.get_current_device())
        for run, (gx, gy, gz), params, slots in steps:
            if slots:
                params = params.copy()
                for position, index in slots:
                    params[position] = tensors[index]
            run(gx, gy, gz, stream, *params)
        self.hits += len(steps)
        self.replays += 1
        return True

    def _record(self, compiled, grid: tuple[int, ...], args: tuple, tail: tuple) -> None:
        if self._steps is not None:
            self._steps.append((compiled, grid, args, tail))

    def _usable(self, compiled) -> bool:
        ok = all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata"))
        if not ok:  # another Triton's CompiledKernel: stay on Triton's path from now on
            self.enabled = False
        return ok


def _arg_key(a: Any) -> Any:
    """What a launch argument contributes to the key: a tensor its dtype and 16-byte alignment,
    a tensor descriptor (the atomic-dQ backward's, triton_attention._dq_descriptor) its base's
    dtype and alignment and its block shape (what Triton specializes it on; its shape and
    strides go to the kernel at launch), anything else itself."""
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    if hasattr(a, "block_shape") and isinstance(getattr(a, "base", None), torch.Tensor):
        return ("descriptor", *_arg_key(a.base), tuple(a.block_shape))
    return a


def _steps_of(launches: list, tensors: tuple[torch.Tensor, ...],
              owned: Iterable[torch.Tensor]) -> list[_Step] | None:
    """The recorded ``launches`` as replay steps: each parameter after the stream as
    ``Launches.__call__`` passes it, with the call's own ``tensors`` left as slots; None if a
    launch passed a tensor that is neither the call's nor ``owned``, or the call passed one
    tensor as two of its own (as q and k: a later call's two may differ)."""
    # By identity (``is``), once per recorded call: a few hundred comparisons.
    if any(_index(t, tensors[:i]) is not None for i, t in enumerate(tensors)):
        return None  # one tensor in two places: a later call's two may differ
    owned = list(owned)
    steps = []
    for compiled, grid, args, tail in launches:
        params = [compiled.function, compiled.packed_metadata, None, None, None]
        slots = []
        for a in args:
            if isinstance(a, torch.Tensor):
                index = _index(a, tensors)
                if index is not None:
                    slots.append((len(params), index))
                    a = None  # a slot: the recorded call's tensor is not kept alive
                elif _index(a, owned) is None:
                    return None
            elif not isinstance(a, (int, float, type(None))):
                return None  # e.g. a tensor descriptor: it holds the recorded call's memory
            params.append(a)
        params.extend(tail)
        full = (*grid, 1, 1)[:3]
        steps.append((compiled.run, full, params, tuple(slots)))
    return steps


def _index(x: torch.Tensor, tensors) -> int | None:
    return next((i for i, t in enumerate(tensors) if t is x), None)


def stand_in_runtime(stream: int = 0) -> tuple[SimpleNamespace, SimpleNamespace]:
    """(driver, knobs) standing in for Triton's, with what ``Launches`` reads of them: current
    device 0, current stream ``stream``, no launch hooks.

    For running the direct path without a GPU (tests/kernels/test_launcher.py,
    ``benchmarks/host_cost.py --python-share``): set them as this module's ``_driver`` and
    ``_knobs``, and ``_VERSION`` to one of ``VERIFIED``. Kept here, beside the code that reads
    them, so a change in what ``Launches`` asks of Triton changes its stand-in too.
    """
    active = SimpleNamespace(get_current_device=lambda: 0,
                             get_current_stream=lambda device: stream)
    runtime = SimpleNamespace(launch_enter_hook=None, launch_exit_hook=None)
    return SimpleNamespace(active=active), SimpleNamespace(runtime=runtime)


__all__ = ["Launches", "REPLAY_LIMIT", "stand_in_runtime"]
