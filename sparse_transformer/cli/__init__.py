"""The `sparse-transformer` command line: one console script, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Errors a user can fix (bad arguments, missing files, corrupt checkpoints) are raised as
``ValueError``/``OSError`` in the library and turned here into one line on stderr and exit
code 2; set ``SPARSE_TRANSFORMER_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand name -> module under sparse_transformer.cli. A module that fails to import for a
# missing optional dependency still lets the other subcommands work.
SUBCOMMANDS = {
    "patterns": "patterns",
    "prepare": "prepare",
    "train": "train",
    "eval": "evaluate",
    "sample": "sample",
}


class CLIError(Exception):
    """An error meant for the user: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparse-transformer",
        description="Sparse Transformers (Child et al. 2019): patterns, attention, "
        "training, evaluation and sampling on bytes, images and audio.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f"sparse_transformer.cli.{module}")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("sparse_transformer.cli."):
                continue  # subcommand not written yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, RuntimeError) as err:
        if os.environ.get("SPARSE_TRANSFORMER_DEBUG"):
            raise
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"sparse-transformer {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
