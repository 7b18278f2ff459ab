"""benchmarks/causal_ceiling.py's probe kernels compute causal attention (the interpreter on
the CPU; the GPU run checks them again against SDPA before timing them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
ceiling = pytest.importorskip("causal_ceiling")


@pytest.mark.parametrize("mode", ["ptr", "desc", "desc-ws"])
def test_probe_matches_sdpa(mode):
    if torch.cuda.is_available():
        pytest.skip("the GPU run checks the probe itself (benchmarks/causal_ceiling.py)")
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 64, 3 * 2 * 16, generator=g)  # two sequences: the batch offsets
    got = ceiling.run_probe(qkv, 2, mode, BM=32, BN=16, warps=4, stages=1)
    torch.testing.assert_close(got, ceiling.reference(qkv, 2), atol=1e-5, rtol=1e-5)


def test_probe_refuses_a_length_off_its_blocks():
    with pytest.raises(ValueError, match="multiple of BM"):
        ceiling.run_probe(torch.zeros(1, 40, 96), 2, "ptr", BM=32, BN=16, warps=4, stages=1)
