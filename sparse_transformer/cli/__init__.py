"""The ``sparse-transformer`` command line: one console script, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Each builds an options dataclass from the namespace first, whose ``__post_init__`` checks every
option, so a bad value is refused before any work. Subcommand modules import torch (and the
rest of the library) inside ``func`` only: ``--help`` must answer at once.

Exit codes: 0 success; 2 an error the user can fix (bad option, missing file, corrupt
checkpoint, missing package), printed as one line on stderr (``SPARSE_TRANSFORMER_DEBUG=1``
shows the traceback instead); 128 + N when signal N stopped the command (130 for Ctrl-C, 143
for SIGTERM; ``train`` saves a checkpoint first).
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

# Optional packages -> the extra of pyproject.toml that installs them.
EXTRAS = {"matplotlib": "pictures", "PIL": "pictures", "soundfile": "audio",
          "tensorboard": "tensorboard"}


class CLIError(Exception):
    """An error meant for the user: printed as one line, exit code 2."""


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
        hint = f"pip install 'sparse-transformer[{extra}]'" if extra else f"pip install {name}"
        print(f"{prog}: error: this needs the Python package {name} ({hint})", file=sys.stderr)
        return 2
    except (CLIError, ValueError, TypeError, OSError, RuntimeError) as err:
        if os.environ.get("SPARSE_TRANSFORMER_DEBUG"):
            raise
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
