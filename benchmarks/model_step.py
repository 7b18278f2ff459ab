"""Model-step benchmark: tokens per second of one training step, sparse vs dense, same model.

A benchmark, not a test: run it on a GPU (``benchmarks/device_model_step.sh`` is the device
call). It times whole training steps of ``SparseTransformer`` (forward, backward, fused AdamW
step; bf16 autocast; dropout 0) at the paper's shapes, for each attention variant, with
recompute on and off, eager and compiled (each residual block through ``torch.compile``):

* "dense": the same model with causal attention, which ``backend="auto"`` sends to
  ``scaled_dot_product_attention`` (cuDNN / FlashAttention) on CUDA;
* "fixed", "strided split", "strided merge": our Triton op (``backend="triton"``);
* "flex": the fixed pattern through FlexAttention driven by our plan.

Rows: {shape, attention, backend, compiled, recompute, tokens_per_s, step_s, peak_gib,
speedup_vs_dense}; ``speedup_vs_dense`` divides by the dense row of the same shape, recompute
and compile setting, measured in the same run. Step time is the median over the timed steps.

    python benchmarks/model_step.py --out results_dir [--shapes enwik8,audio-65k,1m] [--budget 420]
    python benchmarks/model_step.py --smoke        # tiny shapes on the CPU: checks the script

Mode "default" is what ``train --preset`` runs with no flags. Rows carry ``device`` and
``commit`` (the COMMIT environment variable: the device's copy of the tree has no history).

``--isolate`` times every row in a process of its own (this script again, one ``--only`` a
call) and merges the rows. Models timed one after another in one process are not independent:
on an H100 the enwik8 step of strided split ran at 64.3 ms timed third in its process (after
dense and fixed) and at 58.7-60.1 ms timed second after dense (benchmarks/NOTES.md, 6 Dec,
eleventh session). Isolated rows cost a start and a compile each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer.model.config import ModelConfig  # noqa: E402
from sparse_transformer.model.transformer import SparseTransformer, loss_nats  # noqa: E402
from sparse_transformer.train.config import TrainConfig  # noqa: E402

# shape name -> (preset, overrides, batch, attention variants {name: (pattern, backend)})
SHAPES = {
    "enwik8": ("enwik8", dict(dropout=0.0, embed_stride=128), 2, {
        "dense": ("causal", "auto"),
        "fixed": ("fixed(stride=128, summary=32, distinct=4)", "triton"),
        "strided split": ("strided(stride=128, mode='split')", "triton"),
        "strided merge": ("strided(stride=128, mode='merge')", "triton"),
        "flex fixed": ("fixed(stride=128, summary=32, distinct=4)", "flex"),
    }),
    "audio-65k": ("audio-65k", dict(dropout=0.0, embed_stride=256), 1, {
        "dense": ("causal", "auto"),
        "strided split": ("strided(stride=256, mode='split')", "triton"),
        "strided merge": ("strided(stride=256, mode='merge')", "triton"),
    }),
    # The 152M model on a 1,048,576-token sequence (issue 18: <= 78 GiB, an 80 GB card).
    # Two blocks per recompute checkpoint, each kept in bf16 (half_checkpoints): 48 x 2 GiB
    # of fp32 residual stream would not fit; 24 x 1 GiB does.
    "1m": ("audio-65k", dict(dropout=0.0, n_ctx=1048576, embed_stride=1024, recompute_group=2,
                             half_checkpoints=True),
           1, {
        "strided split": ("strided(stride=1024, mode='split')", "triton"),
    }),
    # The other GPU presets as `train --preset NAME` builds them (their own pattern, dropout
    # and recipe batch): which step configuration is fastest for each (issue 18, default 1).
    **{name: (name, {}, batch, {"preset": (None, "auto")}) for name, batch in (
        ("imagenet64", 2), ("cifar10", 8), ("text-gpu", 4), ("audio-gpu", 1),
        ("wiki-gpu", 32), ("fashion-mnist-gpu", 128))},
    # CPU smoke test of this script.
    "smoke": ("wiki-small", dict(n_ctx=128, embed_stride=16), 2, {
        "dense": ("causal", "auto"),
        "fixed": ("fixed(stride=16, summary=4, distinct=2)", "auto"),
    }),
}
START = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - START:7.1f}s] {msg}", flush=True)


def _default_speed(shape: str) -> tuple[bool, bool]:
    """(compile, cuda_graphs) that ``train --preset`` picks with no flags on one GPU."""
    return TrainConfig(preset=SHAPES[shape][0]).speed_options("cuda", 1)


def mode_settings(shape: str, mode: str) -> tuple[bool, bool]:
    """(compiled, recompute) of a mode; "default" is what ``train --preset`` runs with no
    flags on one GPU: the preset's recompute and its recipe's compile."""
    if mode == "default":
        preset, over = SHAPES[shape][:2]
        cfg = ModelConfig.from_preset(preset, **over)
        return _default_speed(shape)[0], cfg.recompute
    return mode.startswith(("compiled", "graphed")), mode.endswith("-recompute")


def compile_options(shape: str, mode: str) -> dict:
    """``torch.compile`` options of a mode: "graphed" (and a default whose recipe has CUDA
    graphs) also replays each compiled block from CUDA graphs (Inductor's "reduce-overhead"),
    which takes the host out of the step."""
    graphed = _default_speed(shape)[1] if mode == "default" else mode.startswith("graphed")
    return {"mode": "reduce-overhead"} if graphed else {}


def build(shape: str, pattern: str, backend: str, recompute: bool, compiled: bool,
          device: torch.device, options: dict | None = None
          ) -> tuple[SparseTransformer, int, int]:
    preset, over, batch, _ = SHAPES[shape]
    fields = {"backend": backend, "recompute": recompute}
    if pattern is not None:  # None: the preset's own pattern
        fields["attention"] = pattern
    cfg = ModelConfig.from_preset(preset, **{**over, **fields})
    torch.manual_seed(0)
    model = SparseTransformer(cfg).to(device)
    if compiled:
        model.compile_blocks(**(options or {}))
    return model, batch, cfg.n_ctx


def time_steps(model: SparseTransformer, batch: int, n_ctx: int, device: torch.device,
               warmup: int, steps: int, profile: Path | None = None
               ) -> tuple[list[float], float]:
    """Seconds of each timed training step, and the peak memory (GiB) over all steps.

    ``profile``: one more step under ``torch.profiler``, its busiest ops by host time appended
    to that file (where a step's host time goes, when it outlasts the GPU's).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    xs = [torch.randint(0, 256, (batch, n_ctx), generator=g).to(device) for _ in range(2)]
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []

    def step(x: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()  # "graphed": a new step, buffers free again
        with amp:
            logits = model(x)
        loss = loss_nats(logits, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step(xs[i % 2])
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss {float(loss)}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    if profile is not None:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profiler(activities=acts) as prof:
            step(xs[0])
            if device.type == "cuda":
                torch.cuda.synchronize()
        profile.parent.mkdir(parents=True, exist_ok=True)
        with open(profile, "a") as f:
            compiled = model.blocks[0]._compiled_call_impl is not None
            f.write(f"\n##### {model.cfg.attention} compiled={compiled} "
                    f"recompute={model.cfg.recompute}\n")
            f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
            if device.type == "cuda":  # and by device time: which kernels the step waits on
                f.write(f"\n##### {model.cfg.attention}: by device time\n")
                f.write(prof.key_averages().table(sort_by="self_device_time_total",
                                                  row_limit=25))
    return times, peak


def _add_speedups(rows: list[dict]) -> None:
    """speedup_vs_dense of every timed row with a timed dense row of its shape and mode."""
    for row in rows:
        dense = next((r for r in rows if r["shape"] == row["shape"] and r["mode"] == row["mode"]
                      and r["attention"] == "dense" and "step_s" in r), None)
        if dense and "step_s" in row:
            row["speedup_vs_dense"] = dense["step_s"] / row["step_s"]


def _isolated_rows(args: argparse.Namespace, shape: str, mode: str, name: str) -> list[dict]:
    """The rows of one (shape, mode, attention), timed by this script in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--shapes", shape, "--modes", mode, "--only", name,
               "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--budget", str(max(1.0, args.budget - (time.time() - START))), "--out", tmp]
        cmd += ["--smoke"] if args.smoke else []
        cmd += ["--config", json.dumps(args.config)] if args.config else []
        cmd += ["--qkv-views"] if args.qkv_views else []
        log(f"{shape} {mode} {name}: a process of its own")
        code = subprocess.run(cmd).returncode
        path = Path(tmp) / "model-step.json"
        found = json.loads(path.read_text())["rows"] if path.exists() else []
    if not found:
        found = [{"shape": shape, "mode": mode, "attention": name,
                  "error": f"the child process exited {code} without a row"}]
    for row in found:
        row["isolated"] = True
    return found


def _call_on_views() -> None:
    """Every block's attention on q, k, v views of its projection, through ``attend`` (the
    model's call before ``attend_packed``), for ``--qkv-views``."""
    from sparse_transformer.kernels import unpack_qkv
    from sparse_transformer.model import transformer

    def on_views(qkv, prepared, n_heads, d_qk, scale):
        return transformer.attend(*unpack_qkv(qkv, n_heads, d_qk), prepared, scale)

    transformer.attend_packed = on_views


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # no argparse default for these two (the help says what is used): --smoke changes them
    ap.add_argument("--shapes", default=argparse.SUPPRESS, help="comma-separated: " + ", ".join(SHAPES)
                    + " (default: enwik8,audio-65k,1m; smoke with --smoke)")
    ap.add_argument("--modes", default=argparse.SUPPRESS,
                    help="comma-separated {eager,compiled,graphed}-{recompute,norecompute}, "
                         "or default (what train --preset runs with no flags); default: "
                         "eager-recompute,eager-norecompute,compiled-recompute (with --smoke: "
                         "eager-recompute,compiled-norecompute)")
    ap.add_argument("--only", default=argparse.SUPPRESS,
                    help="comma-separated attention names to run (default: every one)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--budget", type=float, default=480.0, help="seconds; stop cleanly after")
    ap.add_argument("--profile", action="store_true",
                    help="append each row's one-step profile to OUT/profiles.txt")
    ap.add_argument("--out", type=Path, help="folder for model-step.json")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--isolate", action="store_true",
                    help="time each row in a process of its own (see the module's doc)")
    ap.add_argument("--config", type=json.loads, default={},
                    help="JSON launch settings for the Triton kernels (triton_attention.CONFIG, "
                         "e.g. '{\"tiles\": {\"short_q_block\": 128}}'), kept in each row")
    ap.add_argument("--qkv-views", action="store_true",
                    help="call the attention on q, k, v views of the projection, as the model "
                         "did before the packed op (autograd then concatenates dq, dk, dv): "
                         "the A/B of that change")
    args = ap.parse_args(argv)
    if args.config:
        from sparse_transformer.kernels import triton_attention
        triton_attention.CONFIG.update(args.config)
    if args.qkv_views:
        _call_on_views()
    if args.isolate and args.profile:
        ap.error("--profile is per process: run it without --isolate")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    shapes = (getattr(args, "shapes", None) or ("smoke" if args.smoke else "enwik8,audio-65k,1m")).split(",")
    modes = (getattr(args, "modes", None) or ("eager-recompute,compiled-norecompute" if args.smoke else
                            "eager-recompute,eager-norecompute,compiled-recompute")).split(",")
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        ap.error(f"unknown shape(s) {', '.join(bad)}; known: {', '.join(SHAPES)}")
    if args.smoke and shapes != ["smoke"]:
        ap.error("--smoke runs the smoke shape only (on the CPU)")
    rows: list[dict] = []
    result = {"machine": {"device": str(device), "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
              "setup": "bf16 autocast, fused AdamW, dropout 0, median step of "
                       f"{args.steps} after {args.warmup} warm-up steps", "rows": rows}

    def save() -> None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "model-step.json").write_text(json.dumps(result, indent=1))

    for shape in shapes:
        variants = SHAPES[shape][3]
        for mode in modes:
            compiled, recompute = mode_settings(shape, mode)
            if shape == "1m" and (compiled or not recompute):
                continue
            for name, (pattern, backend) in variants.items():
                only = getattr(args, "only", "")
                if only and name not in only.split(","):
                    continue
                if name.startswith("flex") and compiled:
                    continue  # flex compiles its own kernel; the block compile adds nothing
                if time.time() - START > args.budget:
                    log(f"budget reached; skipping {shape} {mode} {name}")
                    continue
                if args.isolate:
                    rows += _isolated_rows(args, shape, mode, name)
                    _add_speedups(rows)
                    save()
                    continue
                row = {"shape": shape, "mode": mode, "attention": name, "pattern": pattern,
                       "device": result["machine"]["gpu"] or "cpu",
                       "commit": os.environ.get("COMMIT", "unknown"),
                       "backend": backend, "compiled": compiled, "recompute": recompute}
                if args.config:
                    row["config"] = args.config
                if args.qkv_views:
                    row["qkv"] = "views"
                try:
                    model, batch, n_ctx = build(shape, pattern, backend, recompute, compiled,
                                                device, compile_options(shape, mode))
                    row["pattern"] = model.cfg.attention
                    steps = 2 if shape == "1m" else args.steps
                    prof = (args.out / "profiles.txt") if args.profile and args.out else None
                    times, peak = time_steps(model, batch, n_ctx, device,
                                             1 if shape == "1m" else args.warmup, steps, prof)
                    step_s = statistics.median(times)
                    row.update(step_s=step_s, tokens_per_s=batch * n_ctx / step_s,
                               peak_gib=peak, batch=batch, n_ctx=n_ctx,
                               step_times=times)
                except Exception as err:  # keep going: one failing row must not lose the rest
                    row["error"] = f"{type(err).__name__}: {err}"
                    traceback.print_exc()
                finally:
                    model = None
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                _add_speedups(rows)
                log(f"{shape:9s} {mode:20s} {name:14s} " + (
                    f"{row['tokens_per_s']:10,.0f} tok/s  {row['step_s'] * 1e3:8.1f} ms  "
                    f"{row['peak_gib']:6.1f} GiB  x{row.get('speedup_vs_dense', float('nan')):.2f}"
                    if "step_s" in row else row["error"]))
                save()
    print("\nshape      mode                 attention       tokens/s   step ms  peak GiB  "
          "vs dense")
    for r in rows:
        if "step_s" in r:
            print(f"{r['shape']:10s} {r['mode']:20s} {r['attention']:14s} {r['tokens_per_s']:10,.0f} "
                  f"{r['step_s'] * 1e3:9.1f} {r['peak_gib']:9.1f} "
                  f"{r.get('speedup_vs_dense', float('nan')):8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
