"""Benchmark: each Triton kernel's GPU time per launch configuration, checked against float64.

A benchmark, not a test (GPU; issue 18 item 3). For every pattern and launch variant (a
``triton_attention.CONFIG`` set *before* the tables are built, since the dK/dV key groups are
part of the plan), it

* checks the call against the float64 reference at N = 2,048, B = 1 (output and dq, dk, dv;
  max error over the reference's largest value, bf16: must stay under 2e-2), and
* times one ``attention()`` forward + backward at each shape: the GPU time of every kernel
  (forward, Delta, dQ, dK/dV) summed by name from a ``torch.profiler`` trace of 10 calls, so
  each stage's change is seen alone; dense cuDNN causal at the same shapes for the ratios.

    COMMIT=<hash> python benchmarks/kernel_stages.py --out results_dir [--shapes 12288x2,16384x4]

Writes ``kernel-stages.json`` after every row (a lost machine keeps what finished).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():  # --smoke on the CPU: the kernels in Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEV = "cuda" if torch.cuda.is_available() else "cpu"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.kernels import dispatch  # noqa: E402
from sparse_transformer.kernels import triton_attention as T  # noqa: E402
from sparse_transformer.kernels.reference import masked_softmax_attention  # noqa: E402

H, D = 8, 64
PATTERNS = {  # short name -> (pattern, its name in benchmarks/results/attention.json)
    "fixed": (P.fixed(128, 32, 4), "fixed(128,32,4)"),
    "split": (P.strided(128, "split"), "strided(128,split)"),
    "merge": (P.strided(128, "merge"), "strided(128,merge)"),
    "local": (P.local(128), "local(128)"),
    "causal": (P.causal(), "causal"),
    # the 1M-position model's pattern: its 1,024-wide windows are long rows (runs by default)
    "split1024": (P.strided(1024, "split"), "strided(1024,split)"),
}
# label -> CONFIG. "old": dK/dV groups only where they add no work (tiles with the same
# lists): what every pattern ran before key groups (fixed: one 32-key tile per program).
VARIANTS = {
    "default": {},
    # the default kernels called on q, k, v views (the model's call before the packed op):
    # autograd then concatenates dq, dk, dv ("other" in the rows)
    "views": {},
    "old": {"dkdv": {"max_overhead": 1.0}},
    "g1": {"dkdv": {"key_tiles": 1}},
    "g2": {"dkdv": {"key_tiles": 2}},
    "g4-w8s2": {"dkdv": {"key_tiles": 4, "num_warps": 8, "num_stages": 2}},
    "dkdv-w8s2": {"dkdv": {"num_warps": 8, "num_stages": 2}},
    "g4-w4s3": {"dkdv": {"key_tiles": 4, "num_warps": 4, "num_stages": 3}},
    # the grid head-major (tiles on x): what every kernel ran before SLOTS_X
    "tile-major": {k: {"slots_x": 0} for k in ("fwd", "dq", "dkdv")},
    "old-tile-major": {"fwd": {"slots_x": 0}, "dq": {"slots_x": 0},
                       "dkdv": {"max_overhead": 1.0, "slots_x": 0}},
    # experimental: dK/dV adds dQ with atomics, no dQ kernel (not deterministic)
    # (dQ tiles added by TMA bulk reduces where the component allows: natural order, head dim
    # a power of two; since the sixteenth session), and with element atomics everywhere
    "atomic-dq": {"dkdv": {"atomic_dq": 1}},
    "atomic-dq-elem": {"dkdv": {"atomic_dq": 1, "dq_tma": 0}},
    "atomic-dq-s2": {"dkdv": {"atomic_dq": 1, "num_stages": 2}},
    "fwd-g4w8": {"fwd": {"gather": 4, "num_warps": 8, "num_stages": 3},
                 "dq": {"gather": 4, "num_warps": 8, "num_stages": 3}},
    # the forward and dQ loops before LEAN (every gather masked, the scale a multiply of its own)
    # everywhere, and the lean loops everywhere (the default picks per component: _long_rows)
    "old-loop": {"fwd": {"lean": 0}, "dq": {"lean": 0}},
    "lean-all": {"fwd": {"lean": 2}, "dq": {"lean": 2}},
    "fwd-g4w4": {"fwd": {"gather": 4, "num_warps": 4, "num_stages": 3}},
    "fwd-g1w4": {"fwd": {"gather": 1, "num_warps": 4, "num_stages": 3},
                 "dq": {"gather": 1, "num_warps": 4, "num_stages": 3}},
    # Delta in a launch of its own: the backward before the ninth session
    "delta-launch": {"dq": {"fused_delta": 0}},
    # 8 warps at the default gather of 2: ptxas (benchmarks/ptxas_usage.py) puts the 4-warp
    # forward and dQ at 255 registers with spills, the 8-warp ones without; on an H100 they
    # were 22-55% slower all the same (NOTES.md, ninth session)
    "g2w8": {"fwd": {"num_warps": 8}, "dq": {"num_warps": 8}},
    "dq-g2w8": {"dq": {"num_warps": 8}},
    # 64-row query tiles everywhere (ptxas: no spill in the forward, 40 bytes in dQ, against
    # 112 and 468 at 128 rows), dK/dV programs still over 4 key tiles: dK/dV much slower
    "q64": {"tiles": {"q_block": 64}, "dkdv": {"key_tiles": 4}},
    # short-row components' forward and dQ on 64-row tiles, dK/dV on 128
    # (triton_attention.short_row_q_block; off by default); q128 = 128 rows in every launch,
    # which is the default (at 30ac3c8 only, short64 was the default and q128 the old one)
    "short64": {"tiles": {"short_q_block": 64}},
    "q128": {"tiles": {"short_q_block": 128}},
    # the same tiles with the dK/dV groups the table picks, and with 4 key tiles gathered per
    # forward / dQ iteration (half the rows: twice the keys per step keeps the products wide)
    "q64-tiles": {"tiles": {"q_block": 64}},
    "q64-g4": {"tiles": {"q_block": 64}, "dkdv": {"key_tiles": 4},
               "fwd": {"gather": 4}, "dq": {"gather": 4}},
    # each row's run of full tiles walked by position arithmetic (triton_attention._runs; the
    # default in long-row components since the twelfth session): none, or in every component
    "no-runs": {"tiles": {"runs": 0}},
    "runs-all": {"tiles": {"runs": 2}},
    # launch settings again, now that runs free the loops of list loads (twelfth session)
    "fwd-s4": {"fwd": {"num_stages": 4}, "dq": {"num_stages": 4}},
    "dq-g4w4": {"dq": {"gather": 4, "num_warps": 4, "num_stages": 3}},
    "dkdv-s2": {"dkdv": {"num_stages": 2}},
    "dkdv-s4": {"dkdv": {"num_stages": 4}},
    # key tiles one query tile alone reads, their dK/dV written by its dQ program
    # (triton_attention._owned; the default where they are many, fixed, since the thirteenth
    # session): never, or wherever there are any (causal's and local's last tiles)
    "no-own": {"tiles": {"own": 0}},
    "own-all": {"tiles": {"own": 2}},
}
RUNS = ("fixed:default+delta-launch,split:default+delta-launch,"
        "local:default+delta-launch,causal:default+delta-launch")
KERNELS = ("fwd_kernel", "delta_kernel", "dq_kernel", "dkdv_kernel")


def _inputs(B: int, N: int, seed: int = 0):
    dtype = torch.bfloat16 if DEV == "cuda" else torch.float32  # the interpreter: float32
    g = torch.Generator(device=DEV).manual_seed(seed)
    base = torch.randn(B, N, 3 * H * D, device=DEV, dtype=dtype, generator=g)
    base.requires_grad_()
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in base.split(H * D, dim=-1))
    go = torch.randn(B, H, N, D, device=DEV, dtype=dtype, generator=g)
    return base, q, k, v, go


def _call(prepared, q, k, v, go, base, packed: bool = True):
    """One forward + backward as the model calls it: the packed op on the [B, N, 3HD] buffer
    (d(qkv) written whole), or (``packed=False``, the call before 7 Dec) ``run`` on q, k, v
    views, after which autograd concatenates dq, dk and dv."""
    if packed:
        out = dispatch.run_packed(prepared, base, H, H * D, D ** -0.5)
    else:
        out = dispatch.run(prepared, q, k, v, D ** -0.5)
    (grad,) = torch.autograd.grad(out, base, go)
    return out, grad


def check(pattern: P.Pattern, N: int = 2048, packed: bool = True) -> float:
    """Max error of output and d(qkv) against float64, over the reference's largest value."""
    base, q, k, v, go = _inputs(1, N, seed=1)
    prepared = dispatch.prepare(pattern, N, H, D, D, q.dtype, q.device, "triton")
    out, grad = _call(prepared, q, k, v, go, base, packed)
    b64 = base.detach().double().requires_grad_()
    q64, k64, v64 = (x.view(1, N, H, D).transpose(1, 2) for x in b64.split(H * D, dim=-1))
    ref = masked_softmax_attention(q64, k64, v64, pattern.mask(N, H).to(DEV), D ** -0.5)[0]
    (g64,) = torch.autograd.grad(ref, b64, go.double())
    return max(float((a.detach().double() - r.detach()).abs().max() / r.detach().abs().max())
               for a, r in ((out, ref), (grad, g64)))


def stage_ms(fn, calls: int = 10) -> dict[str, float]:
    """GPU ms per call of each kernel name (and their total), from a profiler trace."""
    from torch.profiler import ProfilerActivity, profile

    if DEV != "cuda":  # --smoke: run the code path once, time nothing
        fn()
        return {"total": 0.0}
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    out: dict[str, float] = {"total": 0.0}
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        if not us:
            continue
        name = next((k for k in KERNELS if k in e.key), "other")
        out[name] = out.get(name, 0.0) + us / 1e3 / calls
        out["total"] += us / 1e3 / calls
    return out


def cudnn_ms(B: int, N: int) -> float:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    base, q, k, v, go = _inputs(B, N)

    def fn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(out, base, go)

    return stage_ms(fn)["total"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shapes", default="12288x2,16384x4", help="N x batch, comma-separated")
    ap.add_argument("--runs", default=RUNS,
                    help="pattern:variant+variant,... (patterns: " + ", ".join(PATTERNS)
                    + "; variants: " + ", ".join(VARIANTS) + ")")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes, no cuDNN, no timing: the code paths on the CPU")
    args = ap.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    check_n = 2048
    if args.smoke:
        shapes, check_n = [(256, 1)], 256
    rows: list[dict] = []
    meta = {"gpu": torch.cuda.get_device_name() if DEV == "cuda" else "cpu (smoke)",
            "torch": torch.__version__,
            "commit": os.environ.get("COMMIT", "unknown"), "heads": H, "head_dim": D,
            "dtype": "bf16", "setup": "run_packed (variant views: run) fwd + autograd.grad of "
            "the [B, N, 3HD] buffer; per-kernel GPU ms summed from a torch.profiler trace of 10 calls"}

    def save():
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "kernel-stages.json").write_text(json.dumps({**meta, "rows": rows},
                                                                     indent=1))

    for N, B in shapes if DEV == "cuda" else ():
        t = cudnn_ms(B, N)
        rows.append({"pattern": "causal", "impl": "cudnn", "n_ctx": N, "batch": B, "total": t})
        print(f"cudnn causal N={N} B={B}: {t:.3f} ms", flush=True)
        save()
    for run in args.runs.split(","):
        name, labels = run.split(":")
        pattern, long_name = PATTERNS[name]
        for label in labels.split("+"):
            T.CONFIG.clear()
            T.CONFIG.update(VARIANTS[label])
            t0 = time.time()
            packed = label != "views"
            try:
                err = check(pattern, check_n, packed)
                for N, B in shapes:
                    base, q, k, v, go = _inputs(B, N)
                    prepared = dispatch.prepare(pattern, N, H, D, D, q.dtype, q.device,
                                                "triton")
                    groups = [c.key_tiles.shape[-1] for c in prepared.tables.components]
                    ms = stage_ms(lambda: _call(prepared, q, k, v, go, base, packed))
                    rows.append({"pattern": long_name, "impl": "triton", "variant": label,
                                 "config": VARIANTS[label], "key_tiles": groups,
                                 "qkv": "packed" if packed else "views", "n_ctx": N,
                                 "batch": B, "check_err": err, **ms})
                    print(f"{name:20s} {label:9s} N={N} B={B} groups={groups} err={err:.1e} "
                          + " ".join(f"{k.split('_')[0]} {ms.get(k, 0):.3f}"
                                     for k in (*KERNELS, "total")), flush=True)
                    save()
            except Exception as e:  # one variant that fails to compile must not lose the rest
                rows.append({"pattern": name, "variant": label, "error": f"{type(e).__name__}: "
                             f"{str(e)[:300]}"})
                print(f"{name} {label}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                save()
            print(f"  ({time.time() - t0:.1f} s)", flush=True)
    T.CONFIG.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
