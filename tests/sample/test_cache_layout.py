"""What the pattern-aware cache stores and reads, per term kind (issue 6; docs/sampling.md).

Slots are counted per head; every group carries one extra "trash" slot (it absorbs writes a
term does not keep and is always masked). The dense baseline stores and reads n_ctx + 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparse_transformer.patterns import (causal, column, fixed, local, parse_pattern, per_head,
                                         strided, union)
from sparse_transformer.sample.cache import LayerCache, plan_layer, read_bias, read_layout
from sparse_transformer.sample.cache import GroupConsts, head_rule


def _per_head(p, n_heads, n_ctx):
    """{head: (stored, read)} from the plan."""
    out = {}
    for g in plan_layer(p, n_heads, n_ctx):
        for h in g.heads:
            out[h] = (g.size, g.read_size)
    return out


@pytest.mark.parametrize("n", [1024, 4096, 65536])
def test_strided_split_reads_window_plus_one_residue_row(n):
    l = math.isqrt(n)
    got = _per_head(strided(l, "split"), 4, n)
    # local heads: a ring of l slots; column heads: all n positions, one row of n / l read
    assert got[0] == got[1] == (l + 1, l + 1)
    assert got[2] == got[3] == (n + 1, n // l + 1)


def test_strided_merge_has_both_regions_in_every_head():
    n, l = 4096, 64
    assert set(_per_head(strided(l, "merge"), 2, n).values()) == {(l + n + 1, l + n // l + 1)}


@pytest.mark.parametrize("n", [4096, 12288, 65536])
def test_fixed_stores_own_block_and_summaries_only(n):
    l, c = 128, 32
    got = _per_head(fixed(l, c, 4), 8, n)
    want = l + (n // l) * c + 1
    assert set(got.values()) == {(want, want)}


def test_causal_and_local_and_ring_larger_than_context():
    assert set(_per_head(causal(), 2, 100).values()) == {(101, 101)}
    assert set(_per_head(local(7), 2, 100).values()) == {(8, 8)}
    assert set(_per_head(local(500), 2, 100).values()) == {(101, 101)}  # ring capped at n_ctx


def test_causal_term_subsumes_the_others():
    assert head_rule(union(causal(), local(3), column(4)), 0, 1) == (causal().head_terms(0, 1))


def test_heads_grouped_by_rule_shape():
    # fixed with distinct sub-blocks: one buffer, heads differ only in summary columns
    assert [g.heads for g in plan_layer(fixed(16, 4, 4), 8, 256)] == [tuple(range(8))]
    # split strided: two groups, contiguous halves
    assert [g.heads for g in plan_layer(strided(16, "split"), 4, 256)] == [(0, 1), (2, 3)]


def test_read_per_token_bounded_by_pattern_not_length():
    # stride ~ sqrt(n): reading n = 4,096 or 65,536 keys costs the same order (l + n / l)
    reads = []
    for n in (4096, 16384, 65536):
        l = math.isqrt(n)
        c = LayerCache(strided(l, "split"), 8, n, 1, 8, 8, dense=False)
        reads.append(c.slots_read())
        dense = LayerCache(strided(l, "split"), 8, n, 1, 8, 8, dense=True)
        assert dense.slots_read() == 8 * (n + 1)
    assert reads == [4 * (64 + 1) + 4 * (64 + 1), 4 * (128 + 1) * 2, 4 * (256 + 1) * 2]


@pytest.mark.parametrize("spec", [
    "strided(stride=5, mode='merge')", "fixed(stride=8, summary=3, distinct=2)",
    "union(local(window=3), column(stride=4), fixed(stride=6, summary=2))",
    "per_head(local(window=4), causal())"])
def test_masks_select_exactly_the_pattern_keys(spec):
    # For every query i, the valid read slots hold exactly the positions the pattern allows,
    # each once (overlapping terms deduplicated), and nothing else.
    p, n, n_heads = parse_pattern(spec), 40, 4
    truth = p.mask(n, n_heads)
    for g in plan_layer(p, n_heads, n):
        consts = GroupConsts(g, "cpu")
        for i in range(n):
            it = torch.tensor([i])
            _, pos = read_layout(g, consts, it)
            ok = read_bias(g, consts, it, pos) == 0
            for a, h in enumerate(g.heads):
                keys = sorted(pos[a][ok[a]].tolist())
                assert keys == torch.nonzero(truth[h, i]).flatten().tolist(), (spec, h, i)


def test_per_head_non_contiguous_groups_are_put_back_in_head_order():
    p = per_head(local(3), column(4), local(3), column(4))
    groups = plan_layer(p, 4, 32)
    assert [g.heads for g in groups] == [(0, 2), (1, 3)]
    cache = LayerCache(p, 4, 32, 1, 2, 2)
    assert cache._unperm.tolist() == [0, 2, 1, 3]  # outputs [g0 heads, g1 heads] -> 0, 1, 2, 3
    with pytest.raises(ValueError):
        plan_layer(strided(4, "split"), 3, 32)  # split needs an even number of heads
