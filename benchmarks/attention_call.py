"""Benchmark: one ``attention()`` call (forward + backward) vs the same work without host cost.

A benchmark, not a test (GPU). For each pattern, q, k, v are strided views of one [B, N, 3 H D]
bf16 buffer (the model's layout) and one call is ``torch.autograd.grad((attention(...) *
dO).sum(), (q, k, v))``. "call" times it eagerly, as a training step runs it; "kernels"
replays the same call captured in a CUDA graph, which removes every host-side cost (Python,
dispatch, launches) and leaves the GPU work. Their ratio is the host overhead of the library (issue 10: <= 1.15x).
Also dense cuDNN causal through ``scaled_dot_product_attention`` at the same shape.

    python benchmarks/attention_call.py --out results_dir [--n 16384 --batch 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from attention import bench, bench_graph  # benchmarks/attention.py: the same timing rules

from sparse_transformer import attention
from sparse_transformer import patterns as P

PATTERNS = {
    "fixed(128,32,4)": (P.fixed(128, 32, 4), "triton"),
    "strided(128,split)": (P.strided(128, "split"), "triton"),
    "strided(128,merge)": (P.strided(128, "merge"), "triton"),
    "local(128)": (P.local(128), "triton"),
    "causal (triton)": (P.causal(), "triton"),
    "causal (sdpa/cuDNN)": (P.causal(), "sdpa"),
}


def _inputs(B, H, N, D):
    base = torch.randn(B, N, 3 * H * D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in base.split(H * D, dim=-1))
    go = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
    return q, k, v, go


def measure(pattern, backend, B, H, N, D) -> dict:
    q, k, v, go = _inputs(B, H, N, D)

    def call():
        out = attention(q, k, v, pattern, backend=backend)
        # The initial gradient is made inside the call: one passed in from outside a CUDA-graph
        # capture makes the backward wait on the legacy stream, which invalidates the capture
        # (cudaErrorStreamCaptureImplicit, for SDPA as well: benchmarks/capture_probe.py).
        return torch.autograd.grad((out * go).sum(), (q, k, v))

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    eager = bench(call)
    kernels = bench_graph(call)  # the same call replayed from a CUDA graph
    return {"call_ms": eager, "kernels_ms": kernels, "overhead": eager / kernels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for name, (pattern, backend) in PATTERNS.items():
        try:
            r = measure(pattern, backend, args.batch, args.heads, args.n, args.head_dim)
        except Exception as err:  # one failing pattern must not lose the rest
            r = {"error": f"{type(err).__name__}: {err}"}
        r.update(pattern=name, backend=backend, n=args.n, batch=args.batch, heads=args.heads,
                 head_dim=args.head_dim)
        rows.append(r)
        print(f"{name:22s} " + (f"call {r['call_ms']:7.3f} ms  kernels {r['kernels_ms']:7.3f} ms"
                                f"  x{r['overhead']:.3f}" if "call_ms" in r else r["error"]),
              flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "attention-call.json").write_text(json.dumps(
            {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
             "setup": "bf16, q/k/v strided views of [B, N, 3HD], fwd+bwd via autograd.grad of (out * dO).sum(), "
                      "median of triton.testing.do_bench", "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
