"""Option checks with one-line messages that name the option and its valid range (a leaf module).

Every command validates all of its options in one place, the ``__post_init__`` of its options
dataclass, before it reads data or writes a file; these helpers keep those checks short and
their messages uniform: "--clip must be a finite number > 0, got -1.0".

Integers are bounded to 64 bits even where no upper bound is given: torch, numpy and the
kernels store sizes, steps and seeds as int64, and a larger Python int reaches them as an
OverflowError deep inside (a traceback) instead of a message here. Sizes that allocate are
also bounded by memory: ``memory_bytes`` is what this machine has, ``check_memory`` refuses a
request that cannot fit with one line.
"""

from __future__ import annotations

import functools
import math
import os
import re
from typing import Any, Iterable

__all__ = ["INT64_MAX", "check_bool", "check_choice", "check_device", "check_float",
           "check_int", "check_memory", "check_text", "format_bytes", "memory_bytes",
           "printable"]

INT64_MAX = 2**63 - 1  # the largest size, step or seed torch and numpy can hold
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _bounds(lo: object, hi: object, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi] (either bound optional; an int is never wider than 64
    bits: ``hi`` defaults to ``INT64_MAX``), else ValueError."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi) \
            and -INT64_MAX - 1 <= value <= INT64_MAX:
        return value
    if ok and not -INT64_MAX - 1 <= value <= INT64_MAX:  # name the 64-bit bound when it bites
        rng = (f"in [{lo if lo is not None else '-2**63'}, "
               f"{min(hi, INT64_MAX) if hi is not None else '2**63 - 1'}]")
    else:
        rng = _bounds(lo, hi, False, False)
    raise ValueError(f"{name} must be an integer{' ' + rng if rng else ''}, got {_short(value)}")


def _short(value: Any) -> str:
    """repr of a value for a one-line message: a 400-digit integer is cut to its length."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float in the given range (ints accepted), else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        try:  # an int beyond the float range (10**400) is not finite either
            ok = math.isfinite(value)
        except OverflowError:
            ok = False
    if ok:
        v = float(value)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            ok = False
        if hi is not None and (v > hi or (hi_open and v == hi)):
            ok = False
    if ok:
        return float(value)
    rng = _bounds(lo, hi, lo_open, hi_open)
    raise ValueError(f"{name} must be a finite number{' ' + rng if rng else ''}, "
                     f"got {_short(value)}")


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_text(name: str, value: Any) -> str:
    """A non-empty string (a path, a name)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_device(name: str, value: Any) -> str:
    """auto, cpu, mps, cuda or cuda:N (whether CUDA exists is checked when the device is used)."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def printable(text: str) -> str:
    """``text`` as it can be printed or drawn: a path on Linux may hold bytes that are not
    UTF-8, which Python keeps as lone surrogates and a strict stream refuses; shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- memory -------------------------------------------------------------------------------------
def format_bytes(n: float) -> str:
    """1536 -> "1.5 KiB": sizes in messages a person reads."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover - the loop returns


@functools.cache
def memory_bytes() -> int:
    """This machine's memory for one process: physical RAM, or a container's (cgroup) limit
    when that is smaller. A bound for refusing requests that cannot fit, not a promise that
    what is below it fits (other processes share it)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit).read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_memory(what: str, need: int, have: int | None = None, where: str = "this machine",
                 hint: str = "") -> None:
    """Refuse ``need`` bytes when more than ``have`` (default: ``memory_bytes()``), in one
    line that names both sizes and what to change."""
    have = memory_bytes() if have is None else have
    if need > have:
        raise ValueError(f"{what} needs at least {format_bytes(need)} of memory, more than the "
                         f"{format_bytes(have)} of {where}" + (f"; {hint}" if hint else ""))
