"""Benchmark: one ``attention()`` call (forward + backward) vs the GPU work it launches.

A benchmark, not a test (GPU). For each pattern, q, k, v are strided views of one [B, N, 3 H D]
bf16 buffer (the model's layout) and one call is ``torch.autograd.grad(attention(...), (q, k,
v), dO)``. "call" is the wall time per call of back-to-back calls, as a training step runs
them (synchronized before and after; median of 5 runs of 20 calls); "gpu" is the time of the
kernels one call launches, summed from a ``torch.profiler`` trace of 10 calls. Their ratio is
the host overhead of the library (issue 10: <= 1.15x): above 1, the GPU waits on the host.
Also dense cuDNN causal through ``scaled_dot_product_attention`` at the same shape.

Replaying the call from a CUDA graph, as this benchmark first did, does not work for a
backward pass here: with torch 2.11 on an H200 every capture of an autograd backward was
invalidated (cudaErrorStreamCaptureImplicit), SDPA's as well as ours, while our forward op
captures and replays exactly (``benchmarks/capture_probe.py``).

    python benchmarks/attention_call.py --out results_dir [--n 16384 --batch 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import statistics
import time

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer import attention  # noqa: E402
from sparse_transformer import patterns as P  # noqa: E402

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


def wall_ms(call, calls: int = 20, repeats: int = 5) -> float:
    """Median over ``repeats`` of the wall time per call of ``calls`` back-to-back calls."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        sync()
        times.append((time.perf_counter() - t0) * 1e3 / calls)
    return statistics.median(times)


def gpu_ms(call, calls: int = 10) -> float:
    """Device time per call: every kernel, copy and fill of ``calls`` calls, from a profile."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
             for e in prof.key_averages())
    return us / 1e3 / calls


def measure(pattern, backend, B, H, N, D) -> dict:
    q, k, v, go = _inputs(B, H, N, D)

    def call():
        out = attention(q, k, v, pattern, backend=backend)
        return torch.autograd.grad(out, (q, k, v), go)

    for _ in range(3):
        call()
    eager, gpu = wall_ms(call), gpu_ms(call)
    return {"call_ms": eager, "gpu_ms": gpu, "overhead": eager / gpu}


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
        print(f"{name:22s} " + (f"call {r['call_ms']:7.3f} ms  gpu {r['gpu_ms']:7.3f} ms"
                                f"  x{r['overhead']:.3f}" if "call_ms" in r else r["error"]),
              flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "attention-call.json").write_text(json.dumps(
            {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
             "setup": "bf16, q/k/v strided views of [B, N, 3HD], fwd+bwd via autograd.grad; "
                      "call: wall ms per call, median of 5 x 20 back-to-back calls; gpu: "
                      "device ms per call summed from a torch.profiler trace of 10 calls",
             "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
