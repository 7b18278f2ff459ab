"""Sampling benchmark: pattern-aware cache vs a dense key/value cache (issue 6).

What it measures (one process, in this order):
1. exactness on the device: incremental logits (CUDA-graph step) vs a full forward pass of the
   same tokens, fp32, small model, for strided split and fixed, both caches;
2. per-token latency and tokens/s at contexts 4,096 / 16,384 / 65,536 for our cache and the
   dense baseline, strided (stride ~ sqrt(n), split heads) and fixed (stride ~ sqrt(n),
   c = 16, 4 distinct sub-blocks), batch 1 and batch 64 (the dense cache's batch is halved
   until its buffers fit ``--mem-budget-gb``; the JSON records the batch used). The caches
   are positioned ``--steps`` + 8 tokens before the end of the context (their contents do
   not change the work), and each timed step is one CUDA-graph replay plus a sync;
3. a full 12,288-byte sample from the "enwik8" preset (random weights, bf16, batch 1) through
   ``generate`` with the cache, wall time including prefill and graph capture.
Model for 2: 12 layers, d 512, 8 heads, bf16 weights and caches, q.k/softmax/p.v in fp32
(paper 5.6). Writes ``sampling.json`` (+ ``sampling.png``) under ``--out``.

    python benchmarks/sampling.py --out benchmarks/results            # on the H200
    python benchmarks/sampling.py --quick --out /tmp/bench             # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_transformer.model import ModelConfig, SparseTransformer  # noqa: E402
from sparse_transformer.sample.decode import Decoder  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _randomise(model: SparseTransformer, scale: float = 0.2) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))


def patterns_for(n: int) -> dict[str, str]:
    l = 1 << round(math.log2(math.sqrt(n)))
    c = min(16, l // 4)  # 16 from n = 4,096 on; smaller only for the tiny exactness model
    return {"strided": f"strided(stride={l}, mode='split')",
            "fixed": f"fixed(stride={l}, summary={c}, distinct=4)"}


def exactness(dev: torch.device) -> list[dict]:
    """Max |incremental - full| logits, fp32, 64 decoded tokens after a 40-token prompt."""
    out = []
    for name, att in patterns_for(256).items():
        cfg = ModelConfig(n_layer=3, d_model=64, n_head=8, n_ctx=256, attention=att,
                          backend="reference")
        with torch.device(dev):
            model = SparseTransformer(cfg).eval()
        _randomise(model)
        x = torch.randint(0, 256, (4, 105), device=dev)
        with torch.no_grad():
            full = model(x)[:, 40:]
        combos = [(False, False), (True, False)]  # (dense?, fused?)
        if dev.type == "cuda":
            combos.append((False, True))
        for dense, fused in combos:
            dec = Decoder(model, 4, dense=dense, fused=fused)
            got = [dec.prefill(x[:, :40]).clone()]
            for t in range(40, 104):
                got.append(dec.step(x[:, t]).clone())  # clone: a graph's output is reused
            err = (torch.stack(got, 1) - full).abs().max().item()
            out.append(dict(pattern=att, cache="dense" if dense else "pattern", max_abs_err=err,
                            cuda_graph=dec.graph, fused=fused))
            print(f"exact  {att:45s} {'dense' if dense else 'pattern':8s} err {err:.2e} "
                  f"graph={dec.graph} fused={fused}", flush=True)
        if dev.type == "cuda":
            # bf16 weights and caches: how far incremental decoding is from the fp32 logits,
            # next to how far the bf16 full forward pass itself is (precision, not a bug).
            low = SparseTransformer(cfg).to(dev).eval()
            low.load_state_dict(model.state_dict())
            low = low.to(torch.bfloat16)
            with torch.no_grad():
                fwd = low(x)[:, 40:].float()
            dec = Decoder(low, 4)
            got = [dec.prefill(x[:, :40]).clone()]
            for t in range(40, 104):
                got.append(dec.step(x[:, t]).clone())
            inc = torch.stack(got, 1).float()
            row = dict(pattern=att, cache="pattern", dtype="bf16",
                       inc_vs_fp32=(inc - full).abs().max().item(),
                       fwd_vs_fp32=(fwd - full).abs().max().item(),
                       logit_scale=full.abs().max().item(),
                       lowp_gemm=dec.state.caches[0]._lowp)
            out.append(row)
            print(f"bf16   {att:45s} incremental {row['inc_vs_fp32']:.2e}, full forward "
                  f"{row['fwd_vs_fp32']:.2e} (|logits| <= {row['logit_scale']:.1f}), "
                  f"gemm={row['lowp_gemm']}", flush=True)
    return out


def time_decoder(model, batch: int, dense: bool, steps: int, dev: torch.device,
                 graph: bool | str = "auto", fused: bool = False) -> dict:
    n = model.cfg.n_ctx
    t0 = time.perf_counter()
    dec = Decoder(model, batch, dense=dense, cuda_graph=graph, fused=fused)
    start = n - steps - 8
    dec.state.length = start  # positions < start count as cached (zeros: same work as real keys)
    dec.state.pos.fill_(start)
    tok = torch.zeros(batch, dtype=torch.long, device=dev)
    for _ in range(3):  # capture + warm-up
        dec.step(tok)
    _sync(dev)
    setup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        dec.step(tok)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    lat = statistics.median(times)
    res = dict(batch=batch, cache_bytes=dec.nbytes, cache_bytes_per_sample=dec.nbytes // batch,
               slots_read_per_token=dec.slots_read_per_token(), latency_ms=lat * 1e3,
               latency_ms_mean=statistics.fmean(times) * 1e3, tokens_per_s=batch / lat,
               cuda_graph=dec.graph, fused=fused, setup_s=setup_s, position=start + 3)
    del dec
    return res


def bytes_per_sample(model, dense: bool) -> int:
    dec = Decoder(model, 1, dense=dense, cuda_graph=False)
    b = dec.nbytes
    del dec
    return b


def bench_model(n: int, att: str, layers: int, dev: torch.device) -> SparseTransformer:
    """The timed model: ``layers`` x d 512, 8 heads, random weights; bf16 on CUDA."""
    l = int(att.split("stride=")[1].split(",")[0])
    cfg = ModelConfig(n_layer=layers, d_model=512, n_head=8, n_ctx=n, attention=att,
                      embed_stride=l)
    with torch.device(dev):
        model = SparseTransformer(cfg).eval()
    _randomise(model)
    return model.to(torch.bfloat16) if dev.type == "cuda" else model


def timings(dev, contexts, batches, steps, layers, budget, on_row=None, fused=False
            ) -> list[dict]:
    rows = []
    for n in contexts:
        for pname, att in patterns_for(n).items():
            model = bench_model(n, att, layers, dev)
            if dev.type == "cuda" and n == contexts[len(contexts) // 2]:
                # what the CUDA graph buys: the same step without it
                r = time_decoder(model, 1, False, steps, dev, graph=False)
                r.update(context=n, pattern=pname, spec=att, cache="pattern-eager",
                         batch_asked=1)
                rows.append(r)
                print(f"time   n={n:6d} {pname:8s} eager    B=  1 {r['latency_ms']:8.3f} "
                      f"ms/token (no CUDA graph)", flush=True)
            for cache in ("pattern", "dense") + (("pattern-fused",) if fused else ()):
                per = bytes_per_sample(model, cache == "dense")
                for want in batches:
                    b = want
                    while b > 1 and per * b > budget:
                        b //= 2
                    try:
                        r = time_decoder(model, b, cache == "dense", steps, dev,
                                         fused=cache == "pattern-fused")
                    except Exception as err:  # e.g. out of memory: record it, keep going
                        print(f"FAILED n={n} {pname} {cache} B={b}: {err}", flush=True)
                        rows.append(dict(context=n, pattern=pname, spec=att, cache=cache,
                                         batch=b, batch_asked=want, error=str(err)[:300]))
                        continue
                    r.update(context=n, pattern=pname, spec=att, cache=cache, batch_asked=want)
                    rows.append(r)
                    if on_row is not None:
                        on_row(rows)
                    print(f"time   n={n:6d} {pname:8s} {cache:8s} B={b:3d} "
                          f"{r['latency_ms']:8.3f} ms/token {r['tokens_per_s']:10.0f} tok/s "
                          f"cache {r['cache_bytes'] / 2**30:7.3f} GiB "
                          f"read {r['slots_read_per_token']}", flush=True)
                    gc.collect()
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
            del model
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def enwik8_sample(dev, n_bytes: int, preset: str, time_limit: float = 120.0) -> dict:
    import warnings

    from sparse_transformer.sample.generate import generate

    # The prefill of an empty prompt is a 1-token forward; "reference" keeps it independent
    # of the Triton kernel's state. Random weights: timing only.
    cfg = ModelConfig.from_preset(preset, backend="reference", dropout=0.0)
    with torch.device(dev):
        model = SparseTransformer(cfg).eval()
    _randomise(model, 0.02)
    if dev.type == "cuda":
        model = model.to(torch.bfloat16)
    n_bytes = min(n_bytes, cfg.n_ctx)
    gen = torch.Generator().manual_seed(0)
    _sync(dev)
    t0 = time.perf_counter()
    # max_time: a slow device must not eat the benchmark's time budget; the bytes done by then
    # are reported
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = int(generate(model, torch.zeros(1, 0, dtype=torch.long), n_bytes, generator=gen,
                            max_time=time_limit).shape[1])
    stopped = done < n_bytes
    _sync(dev)
    wall = time.perf_counter() - t0
    graph = dev.type == "cuda" and not any("CUDA graph" in str(w.message) for w in caught)
    cache_bytes = Decoder(model, 1, capacity=n_bytes, cuda_graph=False).nbytes  # generate's
    step = time_decoder(model, 1, False, 20, dev)  # the decode step alone, near the end
    res = dict(preset=preset, n_bytes=done, decode_step_ms=step["latency_ms"],
               n_bytes_asked=n_bytes, stopped_at_limit=stopped,
               batch=1, wall_s=wall, bytes_per_s=done / wall, cache_bytes=cache_bytes,
               dense_cache_bytes=bytes_per_sample(model, True), cuda_graph=graph,
               params=model.num_params())
    print(f"sample {preset}: decode step alone {step['latency_ms']:.3f} ms at position "
          f"{step['position']}", flush=True)
    print(f"sample {preset}: {res['n_bytes']} bytes in {wall:.1f} s "
          f"({res['bytes_per_s']:.0f} bytes/s), cache {cache_bytes / 2**20:.1f} MiB "
          f"vs dense {res['dense_cache_bytes'] / 2**20:.1f} MiB, graph={res['cuda_graph']}",
          flush=True)
    return res


def kernel_profile(dev: torch.device, n: int, layers: int, steps: int = 5, fused: bool = False
                   ) -> list[dict]:
    """The CUDA kernels one eager decoding step launches (batch 1, context ``n``), per cache:
    how many per step and the most expensive by GPU time. A CUDA-graph replay runs the same
    kernels without the launch cost, so at batch 1 their count and GPU time are what a step
    costs (5 Dec, H100: ~400 kernels, 0.93 ms of GPU time per 12-layer strided step)."""
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    rows = []
    for pname, att in patterns_for(n).items():
        model = bench_model(n, att, layers, dev)
        for cache in ("pattern", "dense") + (("pattern-fused",) if fused else ()):
            dec = Decoder(model, 1, dense=cache == "dense", cuda_graph=False,
                          fused=cache == "pattern-fused")
            start = n - steps - 16
            dec.state.length = start
            dec.state.pos.fill_(start)
            tok = torch.zeros(1, dtype=torch.long, device=dev)
            for _ in range(3):
                dec.step(tok)
            _sync(dev)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(steps):
                    dec.step(tok)
                _sync(dev)
            count, total = defaultdict(int), defaultdict(float)
            for e in prof.events():
                if e.device_type == torch.autograd.DeviceType.CUDA:
                    count[e.name] += 1
                    total[e.name] += e.device_time_total
            top = sorted(total, key=total.get, reverse=True)[:25]
            row = dict(context=n, pattern=pname, cache=cache,
                       kernels_per_step=sum(count.values()) / steps,
                       gpu_us_per_step=sum(total.values()) / steps,
                       top=[dict(name=k[:120], per_step=count[k] / steps,
                                 us_per_step=total[k] / steps) for k in top])
            rows.append(row)
            print(f"profile n={n} {pname:8s} {cache:8s} {row['kernels_per_step']:.0f} kernels, "
                  f"{row['gpu_us_per_step']:.0f} us GPU per step", flush=True)
            for t in row["top"][:12]:
                print(f"    {t['per_step']:6.1f} x {t['us_per_step']:8.1f} us  {t['name'][:90]}")
            del dec
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for pname, marker in (("strided", "o"), ("fixed", "s")):
        # colour: the cache and its step; marker: the pattern
        for cache, fused, style, color in (("pattern", False, "-", "C0"),
                                           ("dense", False, "--", "C3"),
                                           ("pattern-fused", True, ":", "C2")):
            for want in sorted({r["batch_asked"] for r in rows}):
                sel = [r for r in rows if r["pattern"] == pname and r["cache"] == cache
                       and r["batch_asked"] == want and bool(r.get("fused")) == fused]
                if not sel:
                    continue
                xs = [r["context"] for r in sel]
                lab = f"{pname} {cache} B={want}"
                axes[0 if want == 1 else 1].plot(xs, [r["latency_ms"] for r in sel], style,
                                                 marker=marker, color=color, label=lab)
                if want == 1 and not fused:  # the fused step keeps the same cache
                    axes[2].plot(xs, [r["cache_bytes_per_sample"] / 2**20 for r in sel], style,
                                 marker=marker, color=color, label=f"{pname} {cache}")
    for ax, title, ylabel in zip(
            axes, ("per-token latency, batch 1",
                   "per-step latency, batch 64 (dense: reduced batch, see JSON)",
                   "cache memory per sample"),
            ("ms per token (median)", "ms per step (median)", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--mem-budget-gb", type=float, default=80.0)
    ap.add_argument("--sample-bytes", type=int, default=12288)
    ap.add_argument("--sample-limit-s", type=float, default=120.0)
    ap.add_argument("--contexts", default="4096,16384,65536", help="comma-separated")
    ap.add_argument("--batches", default="1,64", help="comma-separated")
    ap.add_argument("--fused", action="store_true",
                    help="also time the pattern cache with the fused Triton step (every row)")
    ap.add_argument("--profile", action="store_true",
                    help="also list the CUDA kernels of one eager step at the largest context")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    contexts = [int(x) for x in args.contexts.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    preset, sample_bytes, layers = "enwik8", args.sample_bytes, args.layers
    if args.quick:
        contexts, batches, layers, sample_bytes, preset = [256, 1024], [1, 4], 2, 64, "wiki-small"
    t_all = time.perf_counter()
    cuda = dev.type == "cuda"
    result = dict(device=torch.cuda.get_device_name() if cuda else platform.processor(),
                  torch=torch.__version__,
                  model=dict(n_layer=layers, d_model=512, n_head=8,
                             dtype="bf16" if cuda else "fp32"),
                  steps=args.steps, mem_budget_gb=args.mem_budget_gb)
    result["exactness"] = exactness(dev)
    save = lambda: (out / "sampling.json").write_text(json.dumps(result, indent=1))
    save()

    def on_row(rows):
        result["timings"] = rows
        save()

    result["timings"] = timings(dev, contexts, batches, args.steps, layers,
                                args.mem_budget_gb * 2**30, on_row, args.fused)
    save()
    if args.profile and cuda:
        result["profile"] = kernel_profile(dev, contexts[-1], layers, fused=args.fused)
        save()
    result["sample"] = enwik8_sample(dev, sample_bytes, preset, args.sample_limit_s)
    result["total_wall_s"] = time.perf_counter() - t_all
    (out / "sampling.json").write_text(json.dumps(result, indent=1))
    try:
        plot(result["timings"], out / "sampling.png")
    except Exception as err:  # the numbers matter more than the picture
        print(f"plot failed: {err}")
    print("\ncontext pattern  cache    B   ms/token   tok/s     cache MiB/sample")
    for r in result["timings"]:
        if "error" in r:
            print(f"{r['context']:7d} {r['pattern']:8s} {r['cache']:8s} {r['batch']:3d} FAILED")
            continue
        print(f"{r['context']:7d} {r['pattern']:8s} {r['cache']:8s} {r['batch']:3d} "
              f"{r['latency_ms']:9.3f} {r['tokens_per_s']:9.0f} "
              f"{r['cache_bytes_per_sample'] / 2**20:10.1f}")
    smp = result["sample"]
    print(f"sample {smp['preset']}: {smp['n_bytes']} bytes in {smp['wall_s']:.1f} s")
    print(f"total {result['total_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
