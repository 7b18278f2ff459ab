"""The ``sparse-transformer`` command line: one console script, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Each builds an options dataclass from the namespace first, whose ``__post_init__`` checks every
option, so a bad value is refused before any work. Subcommand modules import torch (and the
rest of the library) inside ``func`` only: ``--help`` must answer at once.

Exit codes: 0 success; 2 an error the user can fix (bad option, missing file, corrupt
checkpoint, missing package, not enough memory), printed as one line on stderr
(``SPARSE_TRANSFORMER_DEBUG=1`` shows the traceback instead); 128 + N when signal N stopped the
command (130 for Ctrl-C, 143 for SIGTERM; ``train`` saves a checkpoint first), and 141 (SIGPIPE)
without a word when the reader of our output went away (``sparse-transformer ... | head``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# Subcommand name -> module under sparse_transformer.cli.
SUBCOMMANDS = {
    "patterns": "patterns",
    "prepare": "prepare",
    "train": "train",
    "eval": "evaluate",
    "sample": "sample",
    "report": "report",
}

# Optional packages -> the extra of pyproject.toml that installs them, and the names pip knows
# them by where those differ from the module's.
EXTRAS = {"matplotlib": "pictures", "PIL": "pictures", "soundfile": "audio",
          "tensorboard": "tensorboard"}
PIP_NAMES = {"PIL": "Pillow"}


class CLIError(Exception):
    """An error meant for the user: printed as one line, exit code 2."""


class MissingPackage(ModuleNotFoundError):
    """An optional package a command needs for what it was asked to do."""

    def __init__(self, name: str, purpose: str):
        super().__init__(f"{purpose} needs the Python package {name}", name=name)
        self.purpose = purpose


def require(purpose: str, *modules: str) -> None:
    """Import each optional package now, before any work, so that a missing one is named at
    once (with the extra that installs it) rather than after a download or an hour of
    sampling. ``purpose`` says what needs it: "prepare wesnoth-music"."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingPackage(name, purpose) from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; every option's default, except switches and options whose
    absence means something their help text says."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # identity, not ==: a default of 0 or 0.0 is a value to show, unlike False
        positional_with_default = action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        if "%(default)" in text or default is None or default is False or default == [] \
                or default is argparse.SUPPRESS \
                or not (action.option_strings or positional_with_default):
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from sparse_transformer import __version__

    parser = Parser(
        prog="sparse-transformer",
        description="Sparse Transformers (Child et al. 2019): patterns, attention, "
        "training, evaluation and sampling on bytes, images and audio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(f"sparse_transformer.cli.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader of our output went away (`patterns show ... | head`): stop quietly, as
        # cat does. Python would report the error again when it flushes stdout at exit, so
        # stdout now points at /dev/null.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
            pass
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    # --help, --version and usage errors end in argparse's SystemExit (0 or 2), as usual
    args = build_parser().parse_args(argv)
    prog = f"sparse-transformer {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"{prog}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except ModuleNotFoundError as err:
        if os.environ.get("SPARSE_TRANSFORMER_DEBUG"):
            raise
        name = (err.name or "?").split(".")[0]
        extra = EXTRAS.get(name)
        # this interpreter's pip: a clone's .venv is often not the `pip` on PATH, and
        # sparse-transformer itself is installed from the clone, not from a package index
        hint = f"{sys.executable} -m pip install {PIP_NAMES.get(name, name)}"
        if extra:
            hint += f" (the [{extra}] extra)"
        purpose = getattr(err, "purpose", "this")
        print(f"{prog}: error: {purpose} needs the Python package {name}: {hint}",
              file=sys.stderr)
        return 2
    except MemoryError:
        if os.environ.get("SPARSE_TRANSFORMER_DEBUG"):
            raise
        # sizes are checked against memory before any work; this is what those bounds miss
        print(f"{prog}: error: out of memory; use smaller sizes (model, --batch-size, "
              f"--num-samples) or a machine with more memory", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # main() ends quietly; not an error to report
    except (CLIError, ValueError, TypeError, OSError, RuntimeError) as err:
        if os.environ.get("SPARSE_TRANSFORMER_DEBUG"):
            raise
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
