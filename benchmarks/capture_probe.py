"""Probe: can one ``attention()`` call be captured in a CUDA graph? (GPU; a diagnostic.)

``benchmarks/attention_call.py`` failed to capture our op on 2 Dec ("operation failed due to a
previous error during capture"). Each variant below runs in its own process (a failed capture
poisons the process's CUDA state) and prints ok or the first error lines, so the failing step
can be named: forward only or forward + backward, the backward's initial gradient made outside
or inside the capture, our op or SDPA.

    python benchmarks/capture_probe.py
"""

from __future__ import annotations

import subprocess
import sys

VARIANTS = {
    "sdpa causal, grad passed in (control)": ("sdpa", "causal", "grad", "global"),
    "triton fixed, forward only": ("triton", "fixed", "fwd", "global"),
    "triton fixed, grad passed in": ("triton", "fixed", "grad", "global"),
    "sdpa causal, (out * go).sum() backward": ("sdpa", "causal", "sum", "global"),
    "triton fixed, (out * go).sum() backward": ("triton", "fixed", "sum", "global"),
    "triton strided split, (out * go).sum()": ("triton", "split", "sum", "global"),
    "no attention: a matmul, .sum() backward": ("none", "causal", "matmul", "global"),
    "no attention: a matmul, relaxed mode": ("none", "causal", "matmul", "relaxed"),
}


def child(backend: str, pattern: str, what: str, mode: str) -> None:
    import torch

    from sparse_transformer import attention
    from sparse_transformer import patterns as P

    p = {"causal": P.causal(), "fixed": P.fixed(128, 32, 4),
         "split": P.strided(128, "split")}[pattern]
    B, H, N, D = 2, 8, 4096, 64
    base = torch.randn(B, N, 3 * H * D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in base.split(H * D, dim=-1))
    go = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)

    w = torch.randn(D, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def call():
        if what == "matmul":  # the control without attention: leaf w, q a view of a leaf
            return torch.autograd.grad((q @ w).float().sum(), (q, w))
        out = attention(q, k, v, p, backend=backend)
        if what == "grad":  # an initial gradient made outside the capture
            return torch.autograd.grad(out, (q, k, v), go)
        if what == "sum":  # the initial gradient (a one) is made inside the capture
            return torch.autograd.grad((out * go).sum(), (q, k, v))
        return out

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            want = call()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode=mode):
        got = call()
    graph.replay()
    torch.cuda.synchronize()
    first = want[0] if isinstance(want, tuple) else want
    again = got[0] if isinstance(got, tuple) else got
    err = (first.float() - again.float()).abs().max().item()
    print(f"ok (replay vs eager max |diff| {err:.3g})")


def main() -> int:
    if len(sys.argv) > 1:
        child(*sys.argv[1:5])
        return 0
    for name, args in VARIANTS.items():
        r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                           timeout=300)
        lines = (r.stdout + r.stderr).strip().splitlines()
        errors = [ln for ln in lines if "Error" in ln or "error" in ln]
        print(f"{name:42s} " + (lines[-1] if r.returncode == 0 and lines else
                                 " | ".join(errors[-2:]) or f"exit {r.returncode}"),
              flush=True)
        if r.returncode:
            print("\n".join("    " + ln for ln in lines[-25:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
