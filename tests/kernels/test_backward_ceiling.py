"""benchmarks/backward_ceiling.py's plain backward kernels compute causal attention's gradients
(the interpreter on the CPU; the GPU run checks them against our backward before timing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
ceiling = pytest.importorskip("backward_ceiling")


@pytest.mark.parametrize("dkdv, dq", [
    (("dkdv", 16, 32, 4, 1), ("dq", 32, 16, 4, 1)),  # several steps per diagonal block
    (("dkdv", 32, 32, 4, 1), ("dq", 32, 32, 4, 1)),  # one step per diagonal block
])
def test_plain_backward_matches_float64(dkdv, dq):
    if torch.cuda.is_available():
        pytest.skip("the GPU run checks the probe itself (benchmarks/backward_ceiling.py)")
    pb = ceiling.Problem(2, 64, 2, 16, "cpu", torch.float32)  # two sequences: batch offsets
    got = pb.probe(dkdv, dq)
    q, k, v = (x.detach().double().requires_grad_() for x in (pb.q, pb.k, pb.v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    want = torch.autograd.grad(out, (q, k, v), pb.dout.double())
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        torch.testing.assert_close(a.double(), b, atol=1e-4, rtol=1e-4, msg=name)


def test_smoke_run_records_no_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("--smoke is for the interpreter")
    assert ceiling.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = __import__("json").loads((tmp_path / "backward-ceiling.json").read_text())
    assert {r["kernel"] for r in rows} == {"dkdv", "dq"}
    assert all("error" not in r and r["max_rel_err"] < 1e-4 for r in rows)
