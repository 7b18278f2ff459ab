"""Imports flow one way: patterns -> kernels -> model -> data/train/sample -> cli (README).

Read from the source with ``ast``, not by importing: a module-level import of a higher layer,
or any import cycle among module-level imports, fails here with the modules named. The model
never imports sampling, not even inside a function (``model.generate`` is attached by
``sample/generate.py``, which the package root loads with the model).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sparse_transformer"
# Rank of each layer: a module may import its own layer and lower ranks at module level.
# Top-level helper modules that import nothing of the package rank with the lowest layer.
RANKS = {"checks": 0, "codecs": 0, "precision": 0, "baselines": 0, "schema": 0,
         "patterns": 1, "kernels": 2, "model": 3, "data": 4, "train": 4, "sample": 4,
         "evaluate": 4, "cli": 5, "__main__": 6, "": 6}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _targets(node: ast.AST, package: str, modules) -> list[str]:
    """Modules an import statement loads: ``from pkg import sub`` loads pkg.sub (pkg itself is
    a parent, imported first anyway), ``from mod import name`` loads mod."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            up = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join(up + ([base] if base else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                for a in node.names]
    return []


def _module_level(body: list[ast.stmt]):
    """Import statements that run on import: not under TYPE_CHECKING, functions or __main__."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test and "__main__" not in test:
                yield from _module_level(node.body)
                yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(part)


def _graph(module_level: bool) -> dict[str, set[str]]:
    modules = {_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        nodes = _module_level(tree.body) if module_level else ast.walk(tree)
        graph[name] = {t for node in nodes for t in _targets(node, package, modules)
                       if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def test_module_level_imports_go_down_the_layers():
    graph = _graph(True)
    unknown = sorted({_layer(m) for m in graph} - set(RANKS))
    assert not unknown, f"give these layers a rank in RANKS: {unknown}"
    bad = [f"{m} imports {t}" for m, targets in graph.items() for t in targets
           if RANKS[_layer(t)] > RANKS[_layer(m)]]
    assert not bad, bad


def test_no_module_level_import_cycle():
    graph = _graph(True)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_model_never_imports_sample_even_lazily():
    graph = _graph(False)
    bad = [f"{m} imports {t}" for m, targets in graph.items() if _layer(m) == "model"
           for t in targets if _layer(t) == "sample"]
    assert not bad, bad
    code = ("import sys, sparse_transformer.model; "
            "print([m for m in sys.modules if m.startswith('sparse_transformer.sample')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
