"""An independent numpy statement of the element rules of issue 2 (paper 4.2-4.3, 5.1).

Written from the issue text, not from ``terms.py``: each rule is a function
``rule(h, n_heads, i, j) -> bool array`` on broadcast integer arrays, 0-based, i = query,
j = key. Hypothesis strategies draw (pattern, rule) pairs with random parameters.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from sparse_transformer import patterns as P


def causal_rule(h, H, i, j):
    return j <= i


def local_rule(window):
    return lambda h, H, i, j: (i - j >= 0) & (i - j < window)


def column_rule(stride):
    return lambda h, H, i, j: (j <= i) & ((i - j) % stride == 0)


def strided_rule(stride, mode):
    loc, col = local_rule(stride), column_rule(stride)
    if mode == "merge":
        return lambda h, H, i, j: loc(h, H, i, j) | col(h, H, i, j)
    if mode == "split":  # first half of the heads local, second half column
        return lambda h, H, i, j: loc(h, H, i, j) if h < H // 2 else col(h, H, i, j)
    return loc if mode == "local" else col


def fixed_rule(l, c, V):
    def rule(h, H, i, j):
        v = h % V
        r = j % l
        return (j <= i) & ((j // l == i // l) | ((l - (v + 1) * c <= r) & (r < l - v * c)))
    return rule


def union_rule(*rules):
    def rule(h, H, i, j):
        out = rules[0](h, H, i, j)
        for r in rules[1:]:
            out = out | r(h, H, i, j)
        return out
    return rule


def per_head_rule(*rules):
    """Heads cut into len(rules) contiguous equal groups; group k uses rule k, local head ids."""
    def rule(h, H, i, j):
        size = H // len(rules)
        return rules[h // size](h % size, size, i, j)
    return rule


def dense(rule, n: int, H: int) -> np.ndarray:
    """Bool [H, n, n] of a rule."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return np.stack([np.broadcast_to(rule(h, H, i, j), (n, n)) for h in range(H)])


# -- strategies: (pattern, rule, head multiple) ------------------------------------------------
small = st.integers(1, 12)


@st.composite
def leaf(draw):
    kind = draw(st.sampled_from(["causal", "local", "strided", "column", "fixed"]))
    if kind == "causal":
        return P.causal(), causal_rule, 1
    if kind == "local":
        w = draw(small)
        return P.local(w), local_rule(w), 1
    if kind == "column":
        s = draw(small)
        return P.column(s), column_rule(s), 1
    if kind == "strided":
        s = draw(small)
        mode = draw(st.sampled_from(P.STRIDED_MODES))
        return P.strided(s, mode), strided_rule(s, mode), 2 if mode == "split" else 1
    V = draw(st.sampled_from([1, 2, 4]))
    c = draw(st.integers(1, 4))
    l = draw(st.integers(c * V, c * V + 8))
    return P.fixed(l, c, V), fixed_rule(l, c, V), V


@st.composite
def pattern_with_rule(draw):
    """A leaf, a union of two leaves, or a per-head split of two leaves."""
    shape = draw(st.sampled_from(["leaf", "leaf", "union", "per_head"]))
    a = draw(leaf())
    if shape == "leaf":
        return a
    b = draw(leaf())
    if shape == "union":
        return P.union(a[0], b[0]), union_rule(a[1], b[1]), math.lcm(a[2], b[2])
    return P.per_head(a[0], b[0]), per_head_rule(a[1], b[1]), 2 * math.lcm(a[2], b[2])
