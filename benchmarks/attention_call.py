"""Benchmark: one ``attention()`` call (forward + backward) vs the GPU work it launches.

A benchmark, not a test (GPU). For each pattern, q, k, v are strided views of one [B, N, 3 H D]
bf16 buffer (the model's layout) and one call is ``torch.autograd.grad(attention(...), (q, k,
v), dO)``. "call" is the wall time per call of back-to-back calls, as a training step runs
them (synchronized before and after; median of 5 runs of 20 calls); "gpu" is the time of the
kernels one call launches, summed from a ``torch.profiler`` trace of 10 calls. Their ratio is
the host overhead of the library (issue 10: <= 1.15x): above 1, the GPU waits on the host.
Also dense cuDNN causal through ``scaled_dot_product_attention`` at the same shape, and
FlexAttention driven by our plans. The same for a forward alone (grad on, as in training).

Replaying the call from a CUDA graph, as this benchmark first did, does not work for a
backward pass here: with torch 2.11 on an H200 every capture of an autograd backward was
invalidated (cudaErrorStreamCaptureImplicit), SDPA's as well as ours, while our forward op
captures and replays exactly (``benchmarks/capture_probe.py``).

    COMMIT=<hash> python benchmarks/attention_call.py --out results_dir [--n 16384 --batch 4]
    ... --no-replay    # eager calls launch kernel by kernel, no call replayed (the A/B of
                       # kernels/launcher.py's replay; rows' impl "triton_no_replay")

``attention-call.json`` has the raw rows and ``table_rows`` in the form of
``benchmarks/results/attention.json`` (impl triton / triton_kernels / cudnn / cudnn_kernels /
flex / flex_kernels).
"""

from __future__ import annotations

import argparse
import json
import os
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
    "fixed(128,32,4) (flex)": (P.fixed(128, 32, 4), "flex"),
    "strided(128,split) (flex)": (P.strided(128, "split"), "flex"),
}
# backend -> (impl of a call's wall time, impl of its kernels' GPU time) in attention.json
IMPLS = {"triton": ("triton", "triton_kernels"), "sdpa": ("cudnn", "cudnn_kernels"),
         "flex": ("flex", "flex_kernels")}


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

    def forward():  # as in training: grad on, the graph built (and dropped)
        return attention(q, k, v, pattern, backend=backend)

    def call():
        return torch.autograd.grad(forward(), (q, k, v), go)

    for _ in range(3):
        call()
    eager, gpu = wall_ms(call), gpu_ms(call)
    fwd, fwd_gpu = wall_ms(forward), gpu_ms(forward)
    return {"call_ms": eager, "gpu_ms": gpu, "overhead": eager / gpu,
            "fwd_call_ms": fwd, "fwd_gpu_ms": fwd_gpu, "fwd_overhead": fwd / fwd_gpu}


def measure_graphed(pattern, B, H, N, D) -> dict:
    """The same call compiled with CUDA graphs (Inductor's "reduce-overhead"), as the training
    step of the GPU presets runs it: the prepared op traced, replayed without the host."""
    from sparse_transformer.kernels import dispatch

    q, k, v, go = _inputs(B, H, N, D)
    prepared = dispatch.prepare(pattern, N, H, D, D, torch.bfloat16, q.device, "triton")
    fn = torch.compile(lambda a, b, c: dispatch.run(prepared, a, b, c, D ** -0.5),
                       mode="reduce-overhead", fullgraph=True)

    def call():
        torch.compiler.cudagraph_mark_step_begin()
        return torch.autograd.grad(fn(q, k, v), (q, k, v), go)

    for _ in range(5):
        call()
    eager, gpu = wall_ms(call), gpu_ms(call)
    return {"call_ms": eager, "gpu_ms": gpu, "overhead": eager / gpu}


def table_rows(r: dict, device: str, commit: str) -> list[dict]:
    """``r`` as benchmarks/results/attention.json rows: one for the call, one for its kernels."""
    if "call_ms" not in r:
        return []
    call, kernels = IMPLS[r["backend"]]
    if r.get("replay") is False:
        call, kernels = call + "_no_replay", kernels + "_no_replay"
    base = {"n_ctx": r["n"], "batch": r["batch"], "heads": r["heads"],
            "head_dim": r["head_dim"], "pattern": r["pattern"].split(" (")[0],
            "device": device, "commit": commit}
    rows = [{**base, "impl": call, "fwd_ms": r["fwd_call_ms"], "fwd_bwd_ms": r["call_ms"]},
            {**base, "impl": kernels, "fwd_ms": r["fwd_gpu_ms"], "fwd_bwd_ms": r["gpu_ms"]}]
    g = r.get("graphed", {})
    if "call_ms" in g:  # forward alone not measured under graphs
        rows.append({**base, "impl": "triton_graphed", "fwd_ms": None, "fwd_bwd_ms": g["call_ms"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated backends (default: all)")
    ap.add_argument("--graphed", action="store_true",
                    help="also fixed and strided split compiled with CUDA graphs")
    ap.add_argument("--no-replay", action="store_true",
                    help="launch each kernel of an eager call on its own: no call replayed "
                         "(kernels/launcher.py)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.no_replay:
        from sparse_transformer.kernels import launcher

        launcher.REPLAY_LIMIT = 0  # before any pattern is prepared
    rows = []
    for name, (pattern, backend) in PATTERNS.items():
        if args.only and backend not in args.only.split(","):
            continue
        try:
            r = measure(pattern, backend, args.batch, args.heads, args.n, args.head_dim)
        except Exception as err:  # one failing pattern must not lose the rest
            r = {"error": f"{type(err).__name__}: {err}"}
        r.update(pattern=name, backend=backend, replay=not args.no_replay, n=args.n, batch=args.batch, heads=args.heads,
                 head_dim=args.head_dim)
        rows.append(r)
        if args.graphed and name in ("fixed(128,32,4)", "strided(128,split)"):
            try:
                g = measure_graphed(pattern, args.batch, args.heads, args.n, args.head_dim)
            except Exception as err:
                g = {"error": f"{type(err).__name__}: {err}"}
            r["graphed"] = g
            print(f"{name + ' graphed':26s} " + (
                f"fwd+bwd call {g['call_ms']:7.3f} ms  gpu {g['gpu_ms']:7.3f} ms  "
                f"x{g['overhead']:.3f}" if "call_ms" in g else g["error"]), flush=True)
        print(f"{name:26s} " + (
            f"fwd+bwd call {r['call_ms']:7.3f} ms  gpu {r['gpu_ms']:7.3f} ms  "
            f"x{r['overhead']:.3f} | fwd call {r['fwd_call_ms']:7.3f}  gpu "
            f"{r['fwd_gpu_ms']:7.3f}  x{r['fwd_overhead']:.3f}"
            if "call_ms" in r else r["error"]), flush=True)
        if args.out:  # after every row: a lost machine keeps what was measured
            device = torch.cuda.get_device_name()
            commit = os.environ.get("COMMIT", "unknown")
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "attention-call.json").write_text(json.dumps(
                {"gpu": device, "torch": torch.__version__, "commit": commit,
                 "setup": "bf16, q/k/v strided views of [B, N, 3HD]; fwd+bwd via "
                          "autograd.grad, fwd with grad on; call: wall ms per call, median of "
                          "5 x 20 back-to-back calls; gpu: device ms per call summed from a "
                          "torch.profiler trace of 10 calls",
                 "rows": rows,
                 "table_rows": [t for x in rows for t in table_rows(x, device, commit)]},
                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
