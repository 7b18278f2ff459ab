"""Whether data preparation shows progress (bars, "fetching ..." notes): ``prepare
--no-progress`` turns it off.

The registry calls a preparer as ``prepare_fn(out_dir, *, source, cache_dir)``, a signature
shared by every registered data set, so the switch travels beside the call rather than through
it: ``with show_progress(False): prepare(...)``, and each registry hook passes
``progress_enabled()`` on to its preparer. A context variable, so concurrent callers (threads,
tests) do not see each other's setting.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_SHOW: contextvars.ContextVar[bool] = contextvars.ContextVar("sparse_transformer_progress",
                                                             default=True)


def progress_enabled() -> bool:
    """True unless a caller turned progress off with ``show_progress(False)``."""
    return _SHOW.get()


@contextlib.contextmanager
def show_progress(on: bool) -> Iterator[None]:
    """Within the block, preparers show progress only if ``on``."""
    token = _SHOW.set(bool(on))
    try:
        yield
    finally:
        _SHOW.reset(token)
