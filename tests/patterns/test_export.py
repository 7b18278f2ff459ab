"""Export to FlexAttention (mask_mod, BlockMask) and SDPA against torch's own builders and a
float64 masked softmax."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from sparse_transformer import patterns as P
from sparse_transformer.patterns.export import component_block_mask, to_block_mask, to_mask_mod
from sparse_transformer.patterns.plan import inverse_permutation, strided_permutation

CASES = [  # (pattern, heads)
    (P.causal(), 1),
    (P.local(9), 2),
    (P.strided(7, "merge"), 2),
    (P.strided(8, "split"), 4),
    (P.column(50), 1),
    (P.fixed(16, 4), 2),
    (P.fixed(16, 4, distinct=2), 4),
    (P.union(P.local(5), P.fixed(12, 3)), 1),
    (P.per_head(P.causal(), P.strided(6, "merge"), P.fixed(10, 2, 2)), 6),
]
SIZES = [(128, 16), (100, 32), (77, 16), (5, 16)]  # (n_ctx, block), awkward lengths included


def _ids(case):
    return f"{case[0].name}-H{case[1]}"


def _dense_mask_mod(mod, n_heads: int, n: int) -> torch.Tensor:
    h = torch.arange(n_heads)[:, None, None]
    i = torch.arange(n)[None, :, None]
    j = torch.arange(n)[None, None, :]
    return mod(torch.zeros(()), h, i, j).expand(n_heads, n, n)


def _full_dense(bm) -> torch.Tensor:
    """Dense bool [B, H, n_q_tiles, n_kv_tiles] of the full (unmasked) tiles of a BlockMask."""
    cnt, idx = bm.full_kv_num_blocks, bm.full_kv_indices.long()
    width = torch.arange(idx.shape[-1])
    n_kv = bm.kv_indices.shape[-1]
    out = torch.zeros(idx.shape[:-1] + (n_kv + 1,), dtype=torch.bool)
    # unused slots go to a spare last column, dropped below
    out.scatter_(-1, torch.where(width < cnt[..., None], idx, n_kv), True)
    return out[..., :n_kv]


def _masked_softmax(q, k, v, mask):
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_mask_mod_equals_mask(case):
    p, H = case
    mod = to_mask_mod(p, H)
    assert mod.__name__.startswith("mask_") and "(" not in mod.__name__
    n = 67
    assert torch.equal(_dense_mask_mod(mod, H, n), p.mask(n, H))


@pytest.mark.parametrize("n,block", SIZES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_block_mask_equals_create_block_mask(case, n, block):
    p, H = case
    ref = create_block_mask(p.mask_mod(H), 1, H, n, n, device="cpu", BLOCK_SIZE=block)
    ours = to_block_mask(p, n, H, block)
    assert ours.shape == ref.shape == (1, H, n, n)
    assert torch.equal(ours.to_dense(), ref.to_dense())
    # same split into full tiles (no mask_mod) and partial tiles, tile for tile
    for name in ("kv_num_blocks", "full_kv_num_blocks"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    # with equal counts and equal active sets, the partial sets are equal iff the full ones are
    assert torch.equal(_full_dense(ours), _full_dense(ref))


def test_block_mask_skips_tiles():
    """The BlockMask really is sparse: fixed(64, 4) at 256 with 16-tiles skips most tiles."""
    bm = to_block_mask(P.fixed(64, 4), 256, 1, 16)
    active = int(bm.to_dense().sum())
    # own 64-block: 4 lower-triangular 4x4 tile groups (40) + one summary tile column per
    # earlier 64-block below the diagonal groups (4 rows x (0+1+2+3) = 24)
    assert active == 40 + 24


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_sdpa_mask_matches_masked_softmax(case):
    p, H = case
    n, d = 45, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, H, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    mask = p.sdpa_mask(n, H)
    assert mask.shape == (1, H, n, n) and mask.dtype == torch.bool
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref = _masked_softmax(q, k, v, p.mask(n, H))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # the mask matters: plain causal attention gives a different answer unless p is causal
    if p != P.causal():
        causal = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert (causal - out).abs().max() > 1e-3


@pytest.mark.parametrize("n,block", [(128, 16), (77, 16)])
@pytest.mark.parametrize("case", CASES[2:7], ids=_ids)
def test_flex_attention_eager_matches_float64(case, n, block):
    """flex_attention runs eagerly on CPU (unfused, but it honours the BlockMask tiles)."""
    p, H = case
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, H, n, 16, generator=g, dtype=torch.float64) for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "called without torch.compile"
        out = flex_attention(q, k, v, block_mask=to_block_mask(p, n, H, block))
    torch.testing.assert_close(out, _masked_softmax(q, k, v, p.mask(n, H)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("q_block,k_block", [(16, 16), (8, 32)])
@pytest.mark.parametrize("case", [(P.strided(8, "split"), 2), (P.strided(6, "merge"), 2),
                                  (P.fixed(16, 4, 2), 2), (P.column(5), 1)], ids=_ids)
def test_component_block_masks_cover_the_pattern(case, q_block, k_block):
    """Each component's BlockMask, in its own (possibly reordered) positions, is exact, and the
    components of a head together give the head's mask once mapped back to natural order."""
    p, H = case
    n = 90
    plan = p.plan(n, H, q_block, k_block)
    N = plan.n_pad
    union = torch.zeros(H, N, N, dtype=torch.bool)
    for cp in plan.components:
        bm = component_block_mask(cp)
        assert bm.shape == (1, len(cp.heads), N, N)
        assert bm.BLOCK_SIZE == (q_block, k_block)
        m = _dense_mask_mod(bm.mask_mod, len(cp.heads), N)  # component coordinates
        # the tiles listed are exactly those holding an allowed element
        tiles = m.reshape(len(cp.heads), N // q_block, q_block, N // k_block, k_block)
        assert torch.equal(bm.to_dense()[0], tiles.any(-1).any(-2))
        assert torch.equal(_full_dense(bm)[0], tiles.all(-1).all(-2))
        if cp.order:
            inv = inverse_permutation(strided_permutation(N, cp.order))
            m = m[:, inv][:, :, inv]  # back to natural positions
        for k, h in enumerate(cp.heads):
            assert not (union[h] & m[k]).any(), "components overlap"
            union[h] |= m[k]
    assert torch.equal(union, p.mask(N, H))


def test_bad_input():
    with pytest.raises(ValueError, match="multiple of 2"):
        to_mask_mod(P.strided(4, "split"), 3)
    with pytest.raises(TypeError, match="Pattern"):
        to_mask_mod("causal()", 1)
    with pytest.raises(ValueError, match="block"):
        to_block_mask(P.causal(), 64, 1, block=0)
    with pytest.raises(TypeError, match="n_ctx"):
        to_block_mask(P.causal(), 64.0, 1)
