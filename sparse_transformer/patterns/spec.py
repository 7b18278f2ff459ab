"""Patterns as text: ``parse_pattern("fixed(stride=128, summary=32, distinct=4)")``.

Every pattern's ``name`` is its canonical spec, so configs and checkpoints store patterns as
plain strings and ``parse_pattern(p.name) == p``. The grammar is a Python call expression over
the factories below with int and string literals; it is parsed with ``ast`` and never evaluated.
"""

from __future__ import annotations

import ast

from sparse_transformer.patterns.base import Pattern
from sparse_transformer.patterns.causal import causal
from sparse_transformer.patterns.compose import Schedule, per_head, schedule, union
from sparse_transformer.patterns.fixed import fixed
from sparse_transformer.patterns.local import local
from sparse_transformer.patterns.strided import column, strided

FACTORIES = {
    "causal": causal,
    "local": local,
    "strided": strided,
    "column": column,
    "fixed": fixed,
    "union": union,
    "per_head": per_head,
    "schedule": schedule,
}


def parse_pattern(text: str) -> Pattern | Schedule:
    """Parse a pattern spec such as ``"strided(stride=128, mode='split')"``.

    Raises ValueError naming the problem for anything that is not a call of a known factory
    with literal arguments.
    """
    if not isinstance(text, str):
        raise TypeError(f"pattern spec must be a str, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"cannot parse pattern spec {text!r}: {err.msg}") from None
    return _build(tree.body, text)


def _build(node: ast.AST, text: str):
    if isinstance(node, ast.Name) and node.id in FACTORIES:
        node = ast.Call(func=node, args=[], keywords=[])  # "causal" == "causal()"
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"pattern spec {text!r}: expected a call like fixed(stride=128, summary=32)")
    name = node.func.id
    if name not in FACTORIES:
        raise ValueError(
            f"pattern spec {text!r}: unknown pattern {name!r}; known: {', '.join(FACTORIES)}"
        )
    args = [_value(a, text) for a in node.args]
    kwargs = {kw.arg: _value(kw.value, text) for kw in node.keywords}
    try:
        return FACTORIES[name](*args, **kwargs)
    except TypeError as err:
        raise ValueError(f"pattern spec {text!r}: {err}") from None


def _value(node: ast.AST, text: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)) and not isinstance(
        node.value, bool
    ):
        return node.value
    if isinstance(node, (ast.Call, ast.Name)):
        return _build(node, text)
    raise ValueError(f"pattern spec {text!r}: arguments must be ints, strings or patterns")
