"""Bad parameters raise ValueError/TypeError naming the problem (issue 2 item 5)."""

from __future__ import annotations

import pytest

from sparse_transformer import patterns as P


@pytest.mark.parametrize("make,exc,needle", [
    (lambda: P.strided(0), ValueError, "stride must be > 0"),
    (lambda: P.strided(-3, "split"), ValueError, "stride must be > 0"),
    (lambda: P.column(0), ValueError, "stride must be > 0"),
    (lambda: P.local(0), ValueError, "window must be > 0"),
    (lambda: P.fixed(0, 1), ValueError, "stride must be > 0"),
    (lambda: P.fixed(8, 0), ValueError, "summary must be > 0"),
    (lambda: P.fixed(8, 9), ValueError, "summary (9) must be <= stride (8)"),
    (lambda: P.fixed(8, 3, 3), ValueError, "summary * distinct (3 * 3) must be <= stride (8)"),
    (lambda: P.fixed(8, 2, 0), ValueError, "distinct must be > 0"),
    (lambda: P.strided(8.0), TypeError, "stride must be an int, got float"),
    (lambda: P.local("4"), TypeError, "window must be an int, got str"),
    (lambda: P.fixed(8, True), TypeError, "summary must be an int, got bool"),
    (lambda: P.strided(8, "diagonal"), ValueError, "mode must be one of merge, split, local"),
    (lambda: P.union(), ValueError, "union needs at least one pattern"),
    (lambda: P.per_head(P.causal(), "local"), TypeError, "per_head takes Pattern objects"),
    (lambda: P.schedule(), ValueError, "schedule needs at least one pattern"),
])
def test_bad_parameters(make, exc, needle):
    with pytest.raises(exc) as e:
        make()
    assert needle in str(e.value)


@pytest.mark.parametrize("use", [
    lambda p, H: p.mask(16, H),
    lambda p, H: p.plan(16, H, 4),
    lambda p, H: p.check_heads(H),
    lambda p, H: p.cost(16, 4, H),
    lambda p, H: p.mask_mod(H),
])
@pytest.mark.parametrize("p,H,m", [
    (P.fixed(8, 2, 4), 6, 4),
    (P.strided(8, "split"), 3, 2),
    (P.per_head(P.causal(), P.fixed(8, 2, 2)), 2, 4),
    (P.union(P.fixed(12, 2, 3), P.strided(4, "split")), 4, 6),
])
def test_heads_not_divisible(use, p, H, m):
    with pytest.raises(ValueError, match=f"multiple of {m}, got {H}"):
        use(p, H)


@pytest.mark.parametrize("call,exc,needle", [
    (lambda: P.causal().mask(0), ValueError, "n_ctx must be > 0"),
    (lambda: P.causal().mask(16, 0), ValueError, "n_heads must be > 0"),
    (lambda: P.causal().mask(16.5), TypeError, "n_ctx must be an int"),
    (lambda: P.causal().plan(16, 1, 0), ValueError, "q_block must be > 0"),
    (lambda: P.causal().plan(16, 1, 4, -4), ValueError, "k_block must be > 0"),
])
def test_bad_sizes(call, exc, needle):
    with pytest.raises(exc, match=needle):
        call()


@pytest.mark.parametrize("text,needle", [
    ("", "cannot parse"),
    ("fixed(stride=8", "cannot parse"),
    ("import os", "cannot parse"),
    ("dense()", "unknown pattern 'dense'"),
    ("__import__('os')", "unknown pattern"),
    ("fixed(stride=8, summary=2.5)", "ints, strings or patterns"),
    ("fixed(stride=8, width=2)", "unexpected keyword"),
    ("strided(8, mode='zig')", "mode must be one of"),
    ("fixed(8, 9)", "must be <= stride"),
    ("1 + 2", "expected a call"),
    ("causal().mask(4)", "expected a call"),
])
def test_parse_pattern_garbage(text, needle):
    with pytest.raises(ValueError) as e:
        P.parse_pattern(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_parse_pattern_not_a_string():
    with pytest.raises(TypeError, match="must be a str"):
        P.parse_pattern(42)
