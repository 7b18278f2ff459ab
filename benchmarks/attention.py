"""Benchmark: our Triton block-sparse attention vs dense SDPA (cuDNN, flash) vs FlexAttention.

A benchmark, not a test (run it on a GPU; ``benchmarks/device_attention.sh`` is the device call).
bf16, H = 8, D = 64; B * N = 65,536 with N in {4096, 16384, 65536}; single sequences of 262,144
and 1,048,576 with strided stride ~ sqrt(N). Patterns (paper 4.3): causal, local(128),
strided(128, split), fixed(128, 32, distinct=4). Median of ``triton.testing.do_bench``.

Sections (``--sections``, in priority order; a time budget stops the run cleanly and the JSON
holds what finished): ``check`` (float64 reference at a small size, SDPA at full size),
``tune`` (launch configs at N = 16,384), ``main`` (the table), ``profile`` (kernel stages),
``flex`` (Flex rows), ``long`` (262k / 1M strided).

TFLOP/s are computed from the USEFUL work of the pattern: allowed (i, j) entries only,
4 D FLOPs per entry forward and 3.5x that forward+backward (``Pattern.cost``).

    python benchmarks/attention.py --out results_dir [--sections check,tune,main] [--budget 420]
    python benchmarks/attention.py --plot benchmarks/results/attention-h200.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

import torch

from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer import attention  # noqa: E402
from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.kernels.reference import reference_attention  # noqa: E402

H, D = 8, 64
DTYPE = torch.bfloat16
DEV = "cuda"
SIZES = [(4096, 16), (16384, 4), (65536, 1)]
LONG = [(65536, 256), (262144, 512), (1048576, 1024)]  # (N, stride) for the growth check
TUNE_N, TUNE_B, CHECK_N = 16384, 4, 1000
START = time.time()
BUDGET = 420.0
LOG: list[str] = []


def log(msg: str) -> None:
    line = f"[{time.time() - START:7.1f}s] {msg}"
    print(line, flush=True)
    LOG.append(line)


def patterns() -> dict[str, P.Pattern]:
    return {
        "causal": P.causal(),
        "local(128)": P.local(128),
        "strided(128,split)": P.strided(128, "split"),
        "fixed(128,32,4)": P.fixed(128, 32, 4),
    }


def useful_entries(p: P.Pattern, n: int) -> int:
    return p.cost(n, block=128, n_heads=H).useful_entries


def bench(fn, grad_of=None, rep: int = 100) -> float:
    import triton.testing

    if DEV != "cuda":  # --smoke on the CPU: one timed call, to exercise the code paths
        fn()
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    return triton.testing.do_bench(fn, warmup=25, rep=rep, grad_to_none=grad_of,
                                   return_mode="median")


def inputs(b: int, n: int, grad: bool, seed: int = 0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q, k, v = (torch.randn(b, H, n, D, device=DEV, dtype=DTYPE, generator=g) for _ in range(3))
    do = torch.randn(b, H, n, D, device=DEV, dtype=DTYPE, generator=g)
    if grad:
        for x in (q, k, v):
            x.requires_grad_(True)
    return q, k, v, do


def time_impl(fwd, b: int, n: int, with_bwd: bool = True) -> tuple[float, float | None]:
    """(forward ms without autograd, forward+backward ms) of ``fwd(q, k, v) -> out``."""
    q, k, v, do = inputs(b, n, grad=False)
    with torch.no_grad():
        t_f = bench(lambda: fwd(q, k, v))
    t_fb = None
    if with_bwd:
        q, k, v, do = inputs(b, n, grad=True)

        def step():
            fwd(q, k, v).backward(do)

        try:
            t_fb = bench(step, grad_of=[q, k, v])
        except Exception as err:  # keep the forward number; report the backward failure
            log(f"backward failed: {type(err).__name__}: {str(err)[:300]}")
    return t_f, t_fb


# -- implementations --------------------------------------------------------------------------
def sdpa(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION,
               "flash": SDPBackend.FLASH_ATTENTION}[backend_name]

    def fn(q, k, v):
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return fn


def ours(p: P.Pattern, backend: str = "triton"):
    return lambda q, k, v: attention(q, k, v, p, backend=backend, check_finite=False)


_FLEX = None


def flex_natural(p: P.Pattern, n: int):
    """Compiled flex_attention with the pattern's natural-order BlockMask at 128 x 128 tiles."""
    global _FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if _FLEX is None:
        _FLEX = torch.compile(flex_attention, dynamic=False) if DEV == "cuda" else flex_attention
    bm = p.block_mask(n, H, 128, device=DEV)
    return lambda q, k, v: _FLEX(q, k, v, block_mask=bm)


# -- sections ----------------------------------------------------------------------------------
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(results: dict) -> None:
    """Float64 reference at N = 1000 (awkward), every pattern, bf16/fp16/fp32, all gradients."""
    out = []
    extra = {"strided(64,merge)": P.strided(64, "merge"), "fixed(64,16,1)": P.fixed(64, 16, 1),
             "union": P.union(P.local(32), P.fixed(64, 16))}
    for name, p in {**patterns(), **extra}.items():
        dtypes = (torch.bfloat16,)
        if name in ("fixed(128,32,4)", "strided(64,merge)"):
            dtypes = (torch.bfloat16, torch.float16, torch.float32)
        for dtype in dtypes:
            g = torch.Generator(device=DEV).manual_seed(1)
            n = CHECK_N
            q, k, v = (torch.randn(2, H, n, D, device=DEV, dtype=torch.float64, generator=g)
                       for _ in range(3))
            do = torch.randn_like(q)
            ref = [x.clone().requires_grad_() for x in (q, k, v)]
            r = reference_attention(*ref, p)
            r.backward(do)
            same = [x.to(dtype).requires_grad_() for x in (q, k, v)]
            rs = reference_attention(*same, p, upcast=False)
            rs.backward(do.to(dtype))
            xs = [x.to(dtype).requires_grad_() for x in (q, k, v)]
            o = attention(*xs, p, backend="triton")
            o.backward(do.to(dtype))
            row = {"pattern": name, "dtype": str(dtype).replace("torch.", "")}
            for key, a, s, b in zip(("out", "dq", "dk", "dv"), [o] + [x.grad for x in xs],
                                    [rs] + [x.grad for x in same], [r] + [x.grad for x in ref]):
                row[key] = rel_err(a, b)
                row[key + "_torch_same_dtype"] = rel_err(s, b)
            row["ok"] = all(row[k] <= 2 * row[k + "_torch_same_dtype"] + 1e-3
                            for k in ("out", "dq", "dk", "dv"))
            out.append(row)
            log(f"check {name:20s} {row['dtype']:9s} out {row['out']:.2e} dq {row['dq']:.2e} "
                f"dk {row['dk']:.2e} dv {row['dv']:.2e} ok={row['ok']}")
    # Full size: causal through our kernel vs cuDNN SDPA (bf16, same inputs).
    if DEV == "cuda":
        q, k, v, do = inputs(4, 16384, grad=False)
        with torch.no_grad():
            e = rel_err(ours(P.causal())(q, k, v), sdpa("cudnn")(q, k, v))
        log(f"check causal N=16384 B=4 vs cuDNN SDPA: rel err {e:.2e}")
        out.append({"pattern": "causal", "n_ctx": 16384, "vs": "sdpa_cudnn", "out": e,
                    "ok": e < 2e-2})
    results["checks"] = out


def _cfg(gather: int, num_warps: int, num_stages: int) -> dict[str, int]:
    return dict(gather=gather, num_warps=num_warps, num_stages=num_stages)


def tune(results: dict) -> None:
    """Try launch configs per kernel at N = 16,384, B = 4; keep the best per pattern."""
    from sparse_transformer.kernels import triton_attention as T

    fwd_cfgs = [_cfg(4, 8, 3), _cfg(4, 4, 3), _cfg(2, 4, 3), _cfg(8, 8, 2), _cfg(4, 8, 4)]
    dkdv_cfgs = [dict(num_warps=4, num_stages=3, trans_acc=1),
                 dict(num_warps=4, num_stages=3, trans_acc=0),
                 dict(num_warps=4, num_stages=2, trans_acc=1),
                 dict(num_warps=8, num_stages=3, trans_acc=1),
                 dict(num_warps=8, num_stages=3, trans_acc=0)]
    best = {}
    for name, p in patterns().items():
        if name not in ("fixed(128,32,4)", "causal"):
            continue
        best[name] = {}
        for kernel, cfgs in (("fwd", fwd_cfgs), ("dq", fwd_cfgs), ("dkdv", dkdv_cfgs)):
            times = []
            for cfg in cfgs:
                T.CONFIG.clear()
                T.CONFIG.update(best[name])
                T.CONFIG[kernel] = cfg
                try:
                    ms = stage_times(p, TUNE_N, TUNE_B, only=kernel)[kernel]
                except Exception as err:  # a config that does not compile (shared memory)
                    log(f"tune {name} {kernel} {cfg}: failed {type(err).__name__}: "
                        f"{str(err)[:120]}")
                    continue
                times.append((ms, cfg))
                log(f"tune {name:20s} {kernel:5s} {cfg} {ms:.3f} ms")
            if times:
                best[name][kernel] = min(times, key=lambda t: t[0])[1]
    T.CONFIG.clear()
    for name in patterns():  # the sparse patterns share the fixed pattern's tuned launches
        best.setdefault(name, best.get("fixed(128,32,4)", {}))
    results["tuned"] = best


def stage_times(p: P.Pattern, n: int, b: int, only: str | None = None) -> dict[str, float]:
    """GPU times (ms) of the op's forward and backward alone, replayed from a CUDA graph.

    "fwd" is ``sparse_attention_fwd`` (every component's forward launch), "bwd" is
    ``sparse_attention_bwd`` (each component's dQ and dK/dV launches);
    q, k, v are strided views of one [B, N, 3 H D] buffer, as in the model. ``only`` ("fwd",
    "dq" or "dkdv") times just the half that holds that kernel (used when tuning).
    """
    from sparse_transformer.kernels import triton_attention as T

    g = torch.Generator(device=DEV).manual_seed(0)
    base = torch.randn(b, n, 3 * H * D, device=DEV, dtype=DTYPE, generator=g)
    q, k, v = (x.view(b, n, H, D).transpose(1, 2) for x in base.split(H * D, dim=-1))
    do = torch.randn(b, H, n, D, device=DEV, dtype=DTYPE, generator=g)
    scale = 1 / math.sqrt(D)
    o, lse = T.sparse_attention_fwd(q, k, v, p.name, scale)
    tot = {}
    if only in (None, "fwd"):
        tot["fwd"] = bench_graph(lambda: T.sparse_attention_fwd(q, k, v, p.name, scale))
    if only in (None, "dq", "dkdv"):
        tot["bwd"] = bench_graph(lambda: T.sparse_attention_bwd(do, q, k, v, o, lse, p.name,
                                                                scale))
        if only:
            tot[only] = tot["bwd"]
    if only is None:
        tot["kernels_fwd_bwd"] = tot["fwd"] + tot["bwd"]
    return tot


def bench_graph(fn) -> float:
    """Median ms of ``fn`` replayed from a CUDA graph: the GPU work without host overhead."""
    if DEV != "cuda":
        return bench(fn)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay)


def row(results, pattern, n, b, impl, t_f, t_fb, entries, **extra) -> None:
    fl = 4 * D * entries * b
    r = {"pattern": pattern, "n_ctx": n, "batch": b, "heads": H, "head_dim": D, "dtype": "bf16",
         "impl": impl, "fwd_ms": t_f, "fwd_bwd_ms": t_fb,
         "tflops": (3.5 * fl / t_fb / 1e9) if t_fb else None,
         "fwd_tflops": fl / t_f / 1e9 if t_f else None, **extra}
    results["rows"].append(r)
    log(f"{pattern:22s} N={n:>8d} B={b:>2d} {impl:16s} fwd {t_f:8.3f} ms  fwd+bwd "
        f"{(t_fb or float('nan')):8.3f} ms  {r['tflops'] or float('nan'):6.1f} TFLOP/s")


def run_rows(results, name, p, n, b, impls, with_bwd=True) -> None:
    entries = useful_entries(p, n)
    for impl, fn in impls:
        if time.time() - START > BUDGET:
            log(f"{name} N={n} {impl}: skipped (time budget)")
            results.setdefault("skipped", []).append(f"{name} N={n} {impl}")
            continue
        try:
            t_f, t_fb = time_impl(fn, b, n, with_bwd)
            row(results, name, n, b, impl, t_f, t_fb, entries)
        except Exception as err:
            log(f"{name} N={n} {impl}: FAILED {type(err).__name__}: {str(err)[:300]}")
            results["failures"].append({"pattern": name, "n_ctx": n, "impl": impl,
                                        "error": f"{type(err).__name__}: {str(err)[:500]}"})
        torch.cuda.empty_cache()


def main_table(results, tuned) -> None:
    from sparse_transformer.kernels import triton_attention as T

    for n, b in SIZES:
        ce = useful_entries(P.causal(), n)
        for impl in ("cudnn", "flash"):
            try:
                t_f, t_fb = time_impl(sdpa(impl), b, n)
                row(results, "causal", n, b, f"sdpa_{impl}", t_f, t_fb, ce)
            except Exception as err:
                log(f"sdpa {impl} N={n}: FAILED {err}")
        for name, p in patterns().items():
            T.CONFIG.clear()
            T.CONFIG.update(tuned.get(name, {}))
            run_rows(results, name, p, n, b, [("triton", ours(p))])
            # The kernels alone: forward and backward replayed from a CUDA graph (no host cost).
            try:
                st = stage_times(p, n, b)
                row(results, name, n, b, "triton_kernels", st["fwd"], st["kernels_fwd_bwd"],
                    useful_entries(p, n), stages={k: st[k] for k in ("fwd", "bwd")})
            except Exception as err:
                log(f"{name} N={n} triton_kernels: FAILED {type(err).__name__}: {err}")
    T.CONFIG.clear()


def flex_rows(results, sizes=None, long=True) -> None:
    for n, stride in LONG[:2] if long else []:  # reordered strided at long N
        p = P.strided(stride, "split")
        run_rows(results, f"strided({stride},split)", p, n, 1,
                 [("flex_reordered", ours(p, "flex"))])
    for n, b in sizes or SIZES:
        for name, p in patterns().items():
            impls = [("flex_natural", flex_natural(p, n))]
            if any(cp.order for cp in p.plan(n, H, 128, 128).components):
                impls.append(("flex_reordered", ours(p, "flex")))
            run_rows(results, name, p, n, b, impls)


def tune_sparse(results) -> None:
    """Short loops (local, strided): fewer pipeline stages / more programs per SM?"""
    from sparse_transformer.kernels import triton_attention as T

    cfgs = {"fwd": [_cfg(2, 4, 1), _cfg(2, 4, 2), _cfg(4, 4, 2), _cfg(2, 8, 2)],
            "dq": [_cfg(2, 4, 1), _cfg(4, 4, 2)],
            "dkdv": [dict(num_warps=8, num_stages=1, trans_acc=1),
                     dict(num_warps=8, num_stages=2, trans_acc=1),
                     dict(num_warps=4, num_stages=2, trans_acc=0)]}
    out = []
    p = P.local(128)
    for kernel, cs in cfgs.items():
        for cfg in cs:
            T.CONFIG.clear()
            T.CONFIG[kernel] = cfg
            try:
                ms = stage_times(p, TUNE_N, TUNE_B, only=kernel)[kernel]
            except Exception as err:
                log(f"tune local {kernel} {cfg}: failed {type(err).__name__}")
                continue
            out.append({"pattern": "local(128)", "kernel": kernel, "config": cfg, "ms": ms})
            log(f"tune local(128) {kernel:5s} {cfg} {ms:.3f} ms")
    T.CONFIG.clear()
    results["tune_sparse"] = out


def long_rows(results, tuned) -> None:
    from sparse_transformer.kernels import triton_attention as T

    for n, stride in LONG:
        p = P.strided(stride, "split")
        name = f"strided({stride},split)"
        T.CONFIG.clear()
        T.CONFIG.update(tuned.get("strided(128,split)", {}))
        run_rows(results, name, p, n, 1, [("triton", ours(p))])
        if n == 262144:
            ce = useful_entries(P.causal(), n)
            t_f, t_fb = time_impl(sdpa("cudnn"), 1, n)
            row(results, "causal", n, 1, "sdpa_cudnn", t_f, t_fb, ce)
    T.CONFIG.clear()


def profile(results, tuned) -> None:
    """Where the time goes at N = 16,384, B = 4: forward and backward alone, tiles computed."""
    from sparse_transformer.kernels import triton_attention as T

    out = {}
    for name, p in patterns().items():
        T.CONFIG.clear()
        T.CONFIG.update(tuned.get(name, {}))
        st = stage_times(p, TUNE_N, TUNE_B)
        plan = p.plan(TUNE_N, H, *T.block_sizes(D, DTYPE, torch.device(DEV)))
        st["tiles"] = plan.tiles_computed()
        st["tiles_partial"] = sum(
            int(cp.partial_count.sum(-1).long()[cp.head_class.long()].sum())
            for cp in plan.components)
        out[name] = st
        log(f"profile {name:20s} " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else
                                             f"{k}={v}" for k, v in st.items()))
    T.CONFIG.clear()
    results["profile_n16384_b4"] = out


def env_info() -> dict:
    import triton

    if DEV != "cuda":
        return {"device": "cpu (smoke)", "torch": torch.__version__, "triton": triton.__version__}
    props = torch.cuda.get_device_properties(0)
    return {"device": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def run(args) -> None:
    torch._dynamo.config.cache_size_limit = 256
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 256
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "attention-h200.json")
    results = {"meta": {**env_info(), "heads": H, "head_dim": D, "dtype": "bf16",
                        "timing": "median of triton.testing.do_bench (warmup 25 ms, rep 100 ms); "
                                  "fwd without autograd, fwd_bwd = forward + backward(dO)",
                        "tflops": "USEFUL work only: 4*D FLOPs per allowed (i,j) entry forward, "
                                  "x3.5 forward+backward; 'tflops' is forward+backward, "
                                  "'fwd_tflops' forward",
                        "ours": "impl 'triton' is the library call sparse_transformer.attention("
                                "..., backend='triton', check_finite=False), dispatcher included"},
               "rows": [], "failures": []}
    if args.tuned:
        with open(args.tuned) as f:
            results["tuned"] = json.load(f)
    global BUDGET
    BUDGET = args.budget
    sections = args.sections.split(",")
    log(f"env {results['meta']}")
    for sec in sections:
        if time.time() - START > args.budget:
            log(f"budget reached, skipping {sec}")
            results.setdefault("skipped", []).append(sec)
            continue
        try:
            if sec == "check":
                check(results)
            elif sec == "tune":
                tune(results)
            elif sec == "main":
                main_table(results, results.get("tuned", {}))
            elif sec == "profile":
                profile(results, results.get("tuned", {}))
            elif sec == "flex":
                flex_rows(results)
            elif sec == "flex16k":
                flex_rows(results, [(16384, 4)], long=False)
            elif sec == "tune_sparse":
                tune_sparse(results)
            elif sec == "long":
                long_rows(results, results.get("tuned", {}))
            else:
                raise ValueError(f"unknown section {sec}")
        except Exception:
            log(f"section {sec} crashed:\n{traceback.format_exc()}")
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "log.txt"), "w") as f:
        f.write("\n".join(LOG))
    summary(results)


def summary(results) -> None:
    print("\npattern                 N        B  impl              fwd ms  fwd+bwd ms  TFLOP/s")
    for r in results["rows"]:
        print(f"{r['pattern']:22s} {r['n_ctx']:>8d} {r['batch']:>2d}  {r['impl']:16s} "
              f"{r['fwd_ms']:8.3f} {r['fwd_bwd_ms'] or float('nan'):10.3f} "
              f"{r['tflops'] or float('nan'):8.1f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--sections", default="check,tune,main,profile,long,flex")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; later sections skip")
    ap.add_argument("--tuned", help="JSON of tuned launch configs from an earlier run")
    ap.add_argument("--plot", help="draw the PNG next to this results JSON and exit")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on the CPU through Triton's interpreter (checks the script)")
    args = ap.parse_args(argv)
    if args.plot:
        from attention_plot import plot  # benchmarks/attention_plot.py, next to this script

        plot(args.plot)
        return
    if args.smoke:
        global DEV, SIZES, LONG, TUNE_N, TUNE_B, CHECK_N, DTYPE, D
        DEV, SIZES, LONG, TUNE_N, TUNE_B, CHECK_N = "cpu", [(256, 1)], [(256, 16)], 256, 1, 130
        D = 16
        DTYPE = torch.float32
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/attention.py needs a CUDA GPU")
    run(args)


if __name__ == "__main__":
    main()
