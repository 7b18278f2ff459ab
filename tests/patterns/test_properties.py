"""Property tests of the pattern library against an independent statement of the rules
(tests/patterns/reference.py), issue 2 item 5 and paper 4.2-4.3, 5.1."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_transformer import patterns as P
from sparse_transformer.patterns.plan import strided_permutation

from .reference import dense, pattern_with_rule

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(case=pattern_with_rule(), n=st.integers(1, 70), mult=st.integers(1, 2))
def test_mask_equals_independent_rule(case, n, mult):
    p, rule, m = case
    H = m * mult
    mask = p.mask(n, H).numpy()
    assert np.array_equal(mask, dense(rule, n, H))
    assert not (mask & ~np.tri(n, dtype=bool)).any(), "a future key is visible"
    assert mask.any(-1).all(), "a row sees no key"
    # single-element truth agrees with the dense mask
    i, j, h = n - 1, (n - 1) // 2, H - 1
    assert bool(p.allowed(torch.tensor(i), torch.tensor(j), h, H)) == mask[h, i, j]


def _component_elements(cp) -> np.ndarray:
    """Bool [len(heads), N, N]: each head's element rule inside the component's positions."""
    pos = np.arange(cp.n_ctx)
    out = []
    for terms in cp.head_terms():
        m = np.zeros((cp.n_ctx, cp.n_ctx), dtype=bool)
        for t in terms:
            m |= t.allowed_np(pos[:, None], pos[None, :])
        out.append(m)
    return np.stack(out)


@settings(max_examples=50, deadline=None)
@given(case=pattern_with_rule(), n=st.integers(1, 90), mult=st.integers(1, 2),
       q_block=st.sampled_from([1, 3, 4, 8, 16]), k_block=st.sampled_from([1, 2, 4, 5, 8, 16]),
       reorder=st.booleans())
def test_plan_is_exact(case, n, mult, q_block, k_block, reorder):
    """Tiles = "some element allowed", full = "all allowed", per component; the components of
    a head cover its (independently computed) mask exactly once."""
    p, rule, m = case
    H = m * mult
    plan = p.plan(n, H, q_block, k_block, reorder=reorder)
    N = plan.n_pad
    assert N >= n and N % q_block == 0 and N % k_block == 0
    truth = dense(rule, N, H)
    cover = np.zeros((H, N, N), dtype=np.int64)
    for cp in plan.components:
        assert cp.n_ctx == N and (reorder or cp.order == 0)
        el = _component_elements(cp)
        tiles = el.reshape(len(cp.heads), N // q_block, q_block, N // k_block, k_block)
        any_, all_ = tiles.any(axis=(2, 4)), tiles.all(axis=(2, 4))
        for k, h in enumerate(cp.heads):
            c = int(cp.head_class[k])
            got = np.zeros_like(any_[k])
            full = np.zeros_like(any_[k])
            for a in range(N // q_block):
                fc, pc = int(cp.full_count[c, a]), int(cp.partial_count[c, a])
                fi = cp.full_index[c, a, :fc].numpy()
                pi = cp.partial_index[c, a, :pc].numpy()
                assert len(set(fi) | set(pi)) == fc + pc, "a tile listed twice"
                got[a, fi] = got[a, pi] = True
                full[a, fi] = True
            assert np.array_equal(got, any_[k]), f"tiles of head {h}, order {cp.order}"
            assert np.array_equal(full, all_[k]), f"full tiles of head {h}, order {cp.order}"
            # the key side (for dK/dV) is the transpose of the query side
            kfc, kfi, kpc, kpi = cp.key_side()
            kt = np.zeros_like(got.T)
            for b in range(N // k_block):
                kt[b, kfi[c, b, :int(kfc[c, b])].numpy()] = True
                kt[b, kpi[c, b, :int(kpc[c, b])].numpy()] = True
            assert np.array_equal(kt, got.T)
            e = el[k]
            if cp.order:
                perm = strided_permutation(N, cp.order).numpy()
                inv = np.argsort(perm)
                if len(plan.head_components(h)) == 1:  # the whole head runs reordered
                    assert np.array_equal(e, truth[h][perm][:, perm])
                e = e[inv][:, inv]
            cover[h] += e
    assert cover.max() <= 1, "components overlap"
    assert np.array_equal(cover.astype(bool), truth), "components miss part of the mask"


@settings(max_examples=40, deadline=None)
@given(case=pattern_with_rule(), n=st.integers(1, 300), mult=st.integers(1, 2),
       k_block=st.sampled_from([1, 4, 8]), group=st.sampled_from([1, 2, 4]),
       overhead=st.sampled_from([1.0, 1.1, 4.0]))
def test_key_groups_cover_the_key_side(case, n, mult, k_block, group, overhead):
    """dK/dV groups (``key_groups``): every key tile in exactly one group of one class; a
    group's lists hold every query tile reading any member, each once; full only where full
    for every member."""
    p = case[0]
    plan = p.plan(n, p.head_multiple * mult, 4 * k_block, k_block)
    for cp in plan.components:
        kfc, kfi, kpc, kpi = (x.numpy() for x in cp.key_side())
        tiles, fc, fi, pc, pi = (x.numpy() for x in cp.key_groups(group, overhead))
        assert tiles.shape[-1] <= group
        for c in range(tiles.shape[0]):
            members = tiles[c][tiles[c] >= 0]
            assert sorted(members.tolist()) == list(range(cp.n_key_tiles))
            for gi, row in enumerate(tiles[c]):
                full = set(fi[c, gi, :fc[c, gi]].tolist())
                part = set(pi[c, gi, :pc[c, gi]].tolist())
                assert not full & part
                for k in row[row >= 0]:
                    k_full = set(kfi[c, k, :kfc[c, k]].tolist())
                    k_part = set(kpi[c, k, :kpc[c, k]].tolist())
                    assert k_full | k_part <= full | part
                    assert full <= k_full


def _reach(first: np.ndarray, second: np.ndarray, residual: bool) -> np.ndarray:
    """Positions j that reach i through a layer with mask `first`, then one with `second`."""
    a, b = first.astype(np.int64), second.astype(np.int64)
    if residual:  # the residual stream lets a hop stay put
        eye = np.eye(a.shape[0], dtype=np.int64)
        a, b = a + eye, b + eye
    return (b @ a) > 0


@settings(max_examples=40, deadline=None)
@given(l=st.integers(1, 12), n=st.integers(1, 80))
def test_strided_two_hops(l, n):
    """local(l) then column(l) (paper Eq. 6, p = 2): every j <= i in exactly two hops."""
    loc, col = P.local(l).mask(n)[0].numpy(), P.column(l).mask(n)[0].numpy()
    tri = np.tri(n, dtype=bool)
    assert np.array_equal(_reach(loc, col, residual=False), tri)
    assert np.array_equal(_reach(col, loc, residual=False), tri)  # either order


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 4), V=st.sampled_from([1, 2, 4]), extra=st.integers(0, 6),
       n=st.integers(1, 80))
def test_fixed_two_hops(c, V, extra, n):
    """Own block (A1) then summary columns (A2): every j <= i within two hops (a hop may stay
    put through the residual). With V > 1 a head v > 0 misses the columns past its sub-block,
    so the property holds for the union of the layer's V heads, which includes v = 0."""
    l = c * V + extra
    H = V
    tri = np.tri(n, dtype=bool)
    block = np.stack([dense(lambda h, H_, i, j: (j <= i) & (j // l == i // l), n, 1)[0]] * H)
    summ = P.fixed(l, c, V).mask(n, H).numpy() & ~block  # A2 alone: the summary columns
    heads_union = summ.any(0)
    assert np.array_equal(_reach(block[0], heads_union, residual=True), tri)
    if V == 1:
        assert np.array_equal(_reach(block[0], summ[0], residual=True), tri)
    if V > 1 and n > l:
        # query l (block 1) through head 1: its summary columns [l - 2c, l - c) of block 0
        # all lie before key l - 1, and its own block starts at l, so key l - 1 is out of reach
        assert not _reach(block[0], summ[1], residual=True)[l, l - 1]


def test_million_position_plan():
    """Issue 2: a 1M-position plan builds in closed form, and is O(n sqrt n)-ish."""
    n, H, b = 1 << 20, 8, 64
    plan = P.strided(1024, "split").plan(n, H, b)
    causal_tiles = (n // b) * (n // b + 1) // 2
    per_head = torch.cat([cp.tiles_per_head() for cp in plan.components])
    assert per_head.numel() == H
    assert int(per_head.max()) < 0.05 * causal_tiles
    # local head: ~ (window / b + 1) tiles per query tile; column head: causal groups of n / l
    assert int(per_head.max()) <= (n // b) * (1024 // b + 1)


@SETTINGS
@given(case=pattern_with_rule())
def test_name_round_trip(case):
    p = case[0]
    q = P.parse_pattern(p.name)
    assert q == p and q.name == p.name and hash(q) == hash(p)


def test_schedule_cycles():
    a, b, c = P.local(4), P.column(4), P.fixed(8, 2)
    s = P.schedule(a, b, c)
    assert [s.for_layer(r) for r in range(7)] == [a, b, c, a, b, c, a]
    assert len(s) == 3
    assert P.parse_pattern(s.name) == s
