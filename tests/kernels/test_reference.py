"""The oracle itself: analytic cases and agreement with torch's SDPA."""

import torch
import torch.nn.functional as F

from sparse_transformer import patterns as P
from sparse_transformer.kernels import reference_attention


def test_all_ones_queries_and_keys_give_mean_of_visible_values():
    # Equal scores -> uniform weights over exactly the allowed keys.
    p = P.fixed(stride=4, summary=1)
    N, D = 13, 3
    q = torch.ones(1, 1, N, D, dtype=torch.float64)
    v = torch.randn(1, 1, N, 5, dtype=torch.float64)
    out = reference_attention(q, q, v, p)
    mask = p.mask(N, 1)[0].to(torch.float64)
    expected = (mask @ v[0, 0]) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(out[0, 0], expected)


def test_causal_matches_sdpa_is_causal():
    q, k, v = (torch.randn(2, 3, 37, 16, dtype=torch.float64) for _ in range(3))
    ours = reference_attention(q, k, v, P.causal())
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, theirs)


def test_sdpa_mask_export_matches_reference():
    p = P.strided(stride=5, mode="split")
    q, k, v = (torch.randn(1, 2, 41, 8, dtype=torch.float64) for _ in range(3))
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=p.sdpa_mask(41, 2))
    torch.testing.assert_close(reference_attention(q, k, v, p), theirs)


def test_same_dtype_reference_stays_in_dtype_and_upcast_is_more_accurate():
    p = P.local(window=16)
    q, k, v = (torch.randn(1, 2, 64, 32, dtype=torch.float64) for _ in range(3))
    exact = reference_attention(q, k, v, p)
    low = [x.to(torch.bfloat16) for x in (q, k, v)]
    up = reference_attention(*low, p)
    same = reference_attention(*low, p, upcast=False)
    assert up.dtype == same.dtype == torch.bfloat16
    assert (up.double() - exact).abs().max() <= (same.double() - exact).abs().max()
