"""pattern_cost against dense recounts on small n, and the issue's acceptance numbers."""

from __future__ import annotations

import json

import pytest

from sparse_transformer import patterns as P
from sparse_transformer.patterns.cost import PatternCost, pattern_cost

SMALL = [
    (P.causal(), 1, 100, 16),
    (P.local(20), 2, 97, 8),
    (P.strided(8, "merge"), 2, 100, 16),
    (P.strided(8, "split"), 4, 77, 16),
    (P.column(6), 1, 64, 8),
    (P.fixed(16, 4, 2), 4, 90, 16),
    (P.per_head(P.fixed(12, 3), P.strided(5, "merge")), 2, 61, 8),
]


@pytest.mark.parametrize("reorder", [True, False])
@pytest.mark.parametrize("p,H,n,block", SMALL, ids=[c[0].name for c in SMALL])
def test_cost_matches_dense_recount(p, H, n, block, reorder):
    c = pattern_cost(p, n, block, H, head_dim=32, reorder=reorder)
    mask = p.mask(n, H)
    assert c.useful_entries == int(mask.sum())  # exact, clipped to the real n_ctx
    assert c.causal_entries == int(P.causal().mask(n, H).sum())
    t = -(-n // block)
    assert c.tiles_causal == H * t * (t + 1) // 2
    plan = p.plan(n, H, block, block, reorder=reorder)
    assert c.tiles_computed == plan.tiles_computed() == sum(x.tiles for x in c.components)
    assert sorted(h for x in c.components for h in x.heads) == sorted(
        h for cp in plan.components for h in cp.heads)
    if not reorder:  # natural order: tiles equal the dense "any allowed" count at the padded n
        N = plan.n_pad
        m = p.mask(N, H).reshape(H, N // block, block, N // block, block)
        assert c.tiles_computed == int(m.any(-1).any(-2).sum())
    assert c.flops_forward == 4 * 32 * block * block * c.tiles_computed
    assert c.flops_forward_backward == 7 * c.flops_forward // 2
    assert c.work_fraction == pytest.approx(c.tiles_computed / c.tiles_causal)
    assert c.expected_speedup == pytest.approx(1 / c.work_fraction)
    assert 0 < c.density <= 1


def test_causal_costs_exactly_causal():
    c = P.causal().cost(1000, 64, 2)
    assert c.tiles_computed == c.tiles_causal and c.expected_speedup == 1.0
    assert c.useful_entries == 2 * 1000 * 1001 // 2


def test_fixed_acceptance_quarter_of_causal():
    """Issue 2: fixed(128, 32, V=4), n = 16,384, 32-wide tiles, 8 heads: about a quarter."""
    c = P.fixed(128, 32, 4).cost(16384, block=32, n_heads=8)
    assert 0.2 < c.work_fraction < 0.3
    # the own block is 10 tiles of a 4x4 lower triangle, the summary one tile per earlier
    # block: per head and block row r of 128: 4 * r + 10 tiles -> 128 rows
    T = 16384 // 128
    assert c.tiles_computed == 8 * sum(4 * r + 10 for r in range(T))
    assert c.density > 0.95  # the summary columns align with the 32-wide tiles


def test_strided_split_reordered_is_a_few_percent():
    p = P.strided(128, "split")
    fast = p.cost(16384, block=32, n_heads=8)
    slow = p.cost(16384, block=32, n_heads=8, reorder=False)
    assert fast.work_fraction < 0.03
    assert slow.tiles_computed > 5 * fast.tiles_computed
    assert fast.useful_entries == slow.useful_entries  # same pattern, different tiling
    assert [c.order for c in fast.components] == [0, 128]
    # a stride that is not a multiple of the tile: in natural order each distance touches
    # two of every ~3 key tiles (32-wide query tiles at distances 100 m)
    q = P.column(100)
    assert q.cost(4000, 32, reorder=False).work_fraction > 0.5
    assert q.cost(4000, 32).work_fraction < 0.1


def test_report_text_and_json():
    c = P.strided(64, "split").cost(4096, 32, 4, 64)
    assert isinstance(c, PatternCost)
    text = str(c)
    assert "strided(stride=64, mode='split')" in text and "work vs causal" in text
    assert "l=64" in text and "natural" in text
    # the speed-up is named for what it is: a bound from tile counts, not a measurement
    assert "expected speed-up" not in text
    assert (f"tile-count bound           {c.expected_speedup:.2f}x (upper bound on speed-up; "
            "measured speed-ups\n" + " " * 27 + "are lower, see docs/kernels.md)") in text
    d = json.loads(c.to_json())
    assert d["tiles_computed"] == c.tiles_computed
    assert d["work_fraction"] == pytest.approx(c.work_fraction)
    with pytest.raises(Exception):
        c.n_ctx = 3  # frozen


def test_bad_arguments():
    with pytest.raises(ValueError, match="block"):
        pattern_cost(P.causal(), 64, 0)
    with pytest.raises(TypeError, match="head_dim"):
        pattern_cost(P.causal(), 64, 16, 1, head_dim=1.5)
    with pytest.raises(ValueError, match="multiple of 4"):
        P.fixed(16, 4, 4).cost(64, 16, n_heads=6)
    with pytest.raises(TypeError, match="Pattern"):
        pattern_cost("causal()", 64)
