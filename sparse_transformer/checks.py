"""Option checks with one-line messages that name the option and its valid range (a leaf module).

Every command validates all of its options in one place, the ``__post_init__`` of its options
dataclass, before it reads data or writes a file; these helpers keep those checks short and
their messages uniform: "--clip must be a finite number > 0, got -1.0".
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

__all__ = ["check_bool", "check_choice", "check_device", "check_float", "check_int",
           "check_text"]

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi] (either bound optional), else ValueError."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value
    rng = _bounds(lo, hi, False, False)
    raise ValueError(f"{name} must be an integer{' ' + rng if rng else ''}, got {value!r}")


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float in the given range (ints accepted), else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            ok = False
        if hi is not None and (v > hi or (hi_open and v == hi)):
            ok = False
    if ok:
        return float(value)
    rng = _bounds(lo, hi, lo_open, hi_open)
    raise ValueError(f"{name} must be a finite number{' ' + rng if rng else ''}, got {value!r}")


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
