"""benchmarks/attention_ceiling.py's probe kernels compute what they stand for: causal attention,
and the fixed pattern from its compacted summary keys (the interpreter on the CPU; the GPU run
checks them again before timing them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
ceiling = pytest.importorskip("attention_ceiling")


@pytest.mark.parametrize("mode", ["ptr", "desc", "desc-ws"])
def test_probe_matches_sdpa(mode):
    if torch.cuda.is_available():
        pytest.skip("the GPU run checks the probe itself (benchmarks/attention_ceiling.py)")
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 64, 3 * 2 * 16, generator=g)  # two sequences: the batch offsets
    got = ceiling.run_probe(qkv, 2, mode, BM=32, BN=16, warps=4, stages=1)
    torch.testing.assert_close(got, ceiling.reference(qkv, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride, summary, distinct, block", [
    (32, 8, 2, 16),  # odd query blocks end their summary keys in a partial step
    (32, 8, 2, 8),  # every step whole
    (16, 4, 4, 8),  # four distinct summary sub-blocks, one per head
])
def test_fixed_probe_matches_the_float_reference(stride, summary, distinct, block):
    if torch.cuda.is_available():
        pytest.skip("the GPU run checks the probe itself (benchmarks/attention_ceiling.py)")
    from sparse_transformer import patterns as P

    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 128, 3 * 4 * 16, generator=g)
    got = ceiling.run_fixed_probe(qkv, 4, stride, summary, distinct, block, warps=4, stages=1)
    expect = ceiling.fixed_reference(qkv, 4, P.fixed(stride, summary, distinct))
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)


def test_probe_refuses_a_length_off_its_blocks():
    with pytest.raises(ValueError, match="multiple of BM"):
        ceiling.run_probe(torch.zeros(1, 40, 96), 2, "ptr", BM=32, BN=16, warps=4, stages=1)
