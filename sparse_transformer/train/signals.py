"""Ctrl-C and SIGTERM during training: stop at a safe point, save, and say so.

The first SIGINT (Ctrl-C) or SIGTERM (schedulers, ``timeout``, Kubernetes) only sets a flag:
the loop finishes its update, saves a checkpoint and writes the run's summary, and ``train``
exits with 128 + the signal. A second one aborts at once (``Aborted``, a KeyboardInterrupt).
The final evaluation comes after the final checkpoint is saved, so there the first signal may
cut it short (``interrupting``): the summary still gets written, and ``--resume`` evaluates.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class Aborted(KeyboardInterrupt):
    """A stop signal that must not wait: abort at once (exit status 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopFlag:
    """Catches SIGINT and SIGTERM for the life of a ``with`` block (main thread only: only it
    can install handlers). ``signum`` is the first signal, None until one comes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._interrupt = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None or self._interrupt:
            raise Aborted(signum)
        self.signum = signum

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """Inside: the first signal raises ``Aborted`` at once (work that is safe to cut
        short, such as the final evaluation after the final checkpoint)."""
        self._interrupt = True
        try:
            yield
        finally:
            self._interrupt = False

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
