"""`sparse-transformer ... | head`: when the reader of our output goes away, every command stops
quietly (exit 141 = 128 + SIGPIPE, nothing on stderr), as cat does (issue 20; on main each
printed "error: [Errno 32] Broken pipe" and exited 2)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from sparse_transformer.cli import main


class _ClosedPipe(io.TextIOWrapper):
    """stdout whose reader has gone: every write fails as a pipe's would."""

    def __init__(self):
        super().__init__(io.BytesIO())

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):  # no descriptor to point at /dev/null: main() must cope
        raise io.UnsupportedOperation("fileno")


@pytest.mark.parametrize("argv", [["patterns", "list"], ["prepare", "--list"],
                                  ["patterns", "show", "causal", "--n-ctx", "16"],
                                  ["patterns", "cost", "causal", "--json"]],
                         ids=" ".join)
def test_every_command_stops_quietly(monkeypatch, capsys, argv):
    # (--help needs nothing: argparse ignores a failed write of the help text itself)
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(argv) == 141
    assert capsys.readouterr().err == ""


def _closed_pipe_run(argv: list[str]) -> subprocess.CompletedProcess:
    """The console entry point with stdout on a pipe whose read end is already closed."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "sparse_transformer", *argv], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)


def test_a_real_closed_pipe_text_sample(run_dir):
    """A real pipe: Python must not report the error again when it flushes at exit."""
    res = _closed_pipe_run(["sample", "-c", str(run_dir), "--n-bytes", "8", "--no-progress"])
    assert res.returncode == 141 and res.stderr == "", res.stderr


def test_a_real_closed_pipe_pattern_mask():
    res = _closed_pipe_run(["patterns", "show", "causal", "--n-ctx", "32"])
    assert res.returncode == 141 and res.stderr == "", res.stderr
