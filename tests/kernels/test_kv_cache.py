"""What the pattern-aware cache (kernels/kv_cache.py) stores and reads, per term kind (issue 6).

Slots are counted per head; every group carries one extra "trash" slot (it absorbs writes a
term does not keep and is always masked). The dense baseline stores and reads n_ctx + 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparse_transformer.patterns import (causal, column, fixed, local, parse_pattern, per_head,
                                         strided, union)
from sparse_transformer.kernels.kv_cache import (GroupConsts, LayerCache, StepIndex, head_rule,
                                                 plan_layer, read_bias, read_layout)


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
    _assert_reads_exactly_the_pattern(parse_pattern(spec), 40, 4)


def _assert_reads_exactly_the_pattern(p, n: int, n_heads: int) -> None:
    truth = p.mask(n, n_heads)
    for g in plan_layer(p, n_heads, n):
        consts = GroupConsts(g, "cpu")
        for i in range(n):
            it = torch.tensor([i])
            _, pos = read_layout(g, consts, it)
            ok = read_bias(g, consts, it, pos) == 0
            for a, h in enumerate(g.heads):
                keys = sorted(pos[a][ok[a]].tolist())
                assert keys == torch.nonzero(truth[h, i]).flatten().tolist(), (p, h, i)


def test_per_head_non_contiguous_groups_are_put_back_in_head_order():
    p = per_head(local(3), column(4), local(3), column(4))
    groups = plan_layer(p, 4, 32)
    assert [g.heads for g in groups] == [(0, 2), (1, 3)]
    cache = LayerCache(p, 4, 32, 1, 2, 2)
    assert cache._unperm.tolist() == [0, 2, 1, 3]  # outputs [g0 heads, g1 heads] -> 0, 1, 2, 3
    with pytest.raises(ValueError):
        plan_layer(strided(4, "split"), 3, 32)  # split needs an even number of heads


def _random_pattern(draw, depth=0):
    from hypothesis import strategies as st

    kind = draw(st.sampled_from(["local", "column", "fixed", "causal", "union", "per_head"]
                                if depth == 0 else ["local", "column", "fixed"]))
    if kind == "local":
        return local(draw(st.integers(1, 9)))
    if kind == "column":
        return column(draw(st.integers(1, 9)))
    if kind == "causal":
        return causal()
    if kind == "fixed":
        l = draw(st.integers(2, 10))
        v = draw(st.sampled_from([1, 2]))
        return fixed(l, draw(st.integers(1, l // v)), v)
    parts = [_random_pattern(draw, 1) for _ in range(draw(st.integers(2, 3)))]
    if kind == "per_head":
        return per_head(*parts[:2])
    return union(*parts)


def test_masks_select_exactly_the_pattern_keys_random():
    # Property: for random compositions and context lengths, every query's unmasked slots hold
    # exactly the pattern's keys, each once.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(st.data(), st.integers(1, 37))
    def check(data, n):
        p = _random_pattern(data.draw)
        _assert_reads_exactly_the_pattern(p, n, 4 * p.head_multiple)

    check()


def test_valid_slots_hold_their_positions_after_prefill_and_steps_random():
    # Property: store each position's own index as its key and value; after a prompt of random
    # length and steps up to the end, every unmasked slot read for query i holds the position
    # the mask assigns it (ring buffers, trash slot and residue rows all line up).
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=30, deadline=None)
    @given(st.data(), st.integers(2, 33))
    def check(data, n):
        p = _random_pattern(data.draw)
        n_heads = 2 * p.head_multiple
        t0 = data.draw(st.integers(1, n))
        cache = LayerCache(p, n_heads, n, 1, 1, 1, dtype=torch.float64)
        ids = torch.arange(t0, dtype=torch.float64).view(1, 1, t0, 1).expand(1, n_heads, t0, 1)
        cache.prefill(ids, ids)
        for i in range(t0, n):
            idx = StepIndex(torch.tensor([i]), 1, cache.plans)
            new = torch.full((1, n_heads, 1, 1), float(i), dtype=torch.float64)
            cache.step(torch.zeros_like(new), new, new, idx, 1.0)
            it = torch.tensor([i])
            for g, c, kb in zip(cache.groups, cache._consts, cache.k):
                index, pos = read_layout(g, c, it)
                ok = read_bias(g, c, it, pos) == 0
                keys = kb if index is None else kb.index_select(2, index)
                for a in range(len(g.heads)):
                    assert torch.equal(keys[0, a, :, 0][ok[a]], pos[a][ok[a]].double()), (p, i)

    check()
