"""--help answers without importing torch; every flag has help and shows its default; --version."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import sparse_transformer
from sparse_transformer.cli import SUBCOMMANDS, build_parser, main

HELPS = [[], *[[c] for c in SUBCOMMANDS], ["patterns", "show"], ["patterns", "cost"],
         ["patterns", "list"]]

# Runs every --help in one fresh interpreter, then reports which heavy modules got imported.
_PROBE = """
import runpy, sys
for argv in {helps!r}:
    sys.argv = ["sparse-transformer", *argv, "--help"]
    try:
        runpy.run_module("sparse_transformer", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
print(sorted(m for m in ("torch", "numpy", "matplotlib", "PIL") if m in sys.modules))
"""


def test_help_imports_no_torch():
    r = subprocess.run([sys.executable, "-c", _PROBE.format(helps=HELPS)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert r.stdout.count("usage: sparse-transformer") == len(HELPS)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparse-transformer {sparse_transformer.__version__}"


def _parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_flag_has_help_and_its_default_is_shown():
    for path, parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        assert "``" not in text, path  # plain text, no RST markup
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (path, action.option_strings)
            shown = action.default not in (None, False, [], argparse.SUPPRESS)
            if shown and action.option_strings and action.default is not True:
                assert f"(default: {action.default})" in text, (path, action.option_strings)


def test_one_naming_scheme():
    for path, parser in _parsers(build_parser()):
        flags = {s for a in parser._actions for s in a.option_strings
                 if a.help != argparse.SUPPRESS}
        assert "--overwrite" not in flags and "--progress" not in flags, path
        if "--precision" in flags:
            action = next(a for a in parser._actions if "--precision" in a.option_strings)
            assert tuple(action.choices) == ("fp32", "bf16", "fp16"), path


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--steps", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == ("sparse-transformer train: error: argument --steps: invalid int value: "
                   "'many' (see sparse-transformer train --help)\n")
