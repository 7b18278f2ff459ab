"""Peak training memory of a model shape without a GPU: one step on fake tensors (CPU).

A diagnostic for issue 18's million-position target: the 152M model at 1,048,576 positions
ran out of an 80 GB H100 (model_step.py --shapes 1m), and device time is scarce. This runs
one forward + backward of ``SparseTransformer`` under ``FakeTensorMode`` (shapes and dtypes,
no data, no compute) with ``torch.distributed._tools.mem_tracker.MemTracker`` counting every
tensor alive, under bf16 autocast, for several recompute settings. The attention call is
replaced by a stand-in that allocates and saves what our Triton op does (the model's packed
call: qkv, out [B, N, H, Dv] token-major, lse fp32; in the backward Delta fp32 and one
d(qkv)), since the kernels cannot run on fake tensors (1M positions, group 2 with bf16
checkpoints: 72.4 GiB before and after the packed call, 7 Dec 2026). Weights, gradients and AdamW's two moments are added as
16 bytes a parameter (the optimizer step itself is not run).

Fake CPU tensors stand in for CUDA ones: CPU autocast's op lists are PyTorch's, which may
differ from CUDA's in places, and the caching allocator's rounding and fragmentation are not
modelled, so a GPU peak comes out somewhat above this estimate. The enwik8 shape is measured
on the GPU (model-step.json) as a check of the method: run it with ``--shapes enwik8``.

    python benchmarks/memory_estimate.py [--shapes 1m,enwik8] [--out results_dir]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer.model import transformer  # noqa: E402
from sparse_transformer.model.config import ModelConfig  # noqa: E402
from sparse_transformer.model.size import param_count  # noqa: E402

GIB = 2 ** 30
# name -> (preset, overrides, batch, variants {label: overrides})
SHAPES = {
    "enwik8": ("enwik8", dict(dropout=0.0, embed_stride=128), 2, {
        "no recompute": dict(recompute=False),
        "recompute": dict(recompute=True),
    }),
    # the other GPU-sized paper presets at their recipes' batch: would they fit without recompute?
    "audio-65k": ("audio-65k", dict(dropout=0.0), 1, {
        "no recompute": dict(recompute=False),
        "recompute": dict(recompute=True),
    }),
    "imagenet64": ("imagenet64", dict(dropout=0.0), 2, {
        "no recompute": dict(recompute=False),
        "recompute": dict(recompute=True),
    }),
    "cifar10": ("cifar10", dict(dropout=0.0), 8, {
        "no recompute": dict(recompute=False),
        "recompute": dict(recompute=True),
    }),
    "1m": ("audio-65k", dict(dropout=0.0, n_ctx=1048576, embed_stride=1024,
                             attention="strided(stride=1024, mode='split')"), 1, {
        "group 2, fp32 checkpoints": dict(recompute=True, recompute_group=2),
        "group 2, bf16 checkpoints": dict(recompute=True, recompute_group=2,
                                          half_checkpoints=True),
        "group 1, bf16 checkpoints": dict(recompute=True, recompute_group=1,
                                          half_checkpoints=True),
        "group 3, bf16 checkpoints": dict(recompute=True, recompute_group=3,
                                          half_checkpoints=True),
    }),
}


class _StandInAttention(torch.autograd.Function):
    """The Triton op's memory: saves q, k, v, out, lse; the backward allocates Delta, dq, dk,
    dv in the same layouts (``kernels/triton_attention.py``)."""

    @staticmethod
    def forward(ctx, q, k, v):
        b, h, n, _ = q.shape
        out = q.new_empty(b, n, h, v.shape[-1]).transpose(1, 2)
        lse = q.new_empty(b, h, n, dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        b, h, n, d = q.shape
        delta = q.new_empty(b, h, n, dtype=torch.float32)  # noqa: F841  (alive during the kernels)
        dq = q.new_empty(b, n, h, d).transpose(1, 2)
        dk = k.new_empty(b, n, h, d).transpose(1, 2)
        dv = v.new_empty(b, n, h, v.shape[-1]).transpose(1, 2)
        return dq, dk, dv


class _StandInPackedAttention(torch.autograd.Function):
    """The packed Triton op's memory (what the model calls): saves qkv, out, lse; the backward
    allocates Delta and one d(qkv)."""

    @staticmethod
    def forward(ctx, qkv, n_heads, d_qk):
        b, n, width = qkv.shape
        out = qkv.new_empty(b, n, width - 2 * d_qk).view(b, n, n_heads, -1).transpose(1, 2)
        lse = qkv.new_empty(b, n_heads, n, dtype=torch.float32)
        ctx.save_for_backward(qkv, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        qkv, out, lse = ctx.saved_tensors
        delta = torch.empty_like(lse)  # noqa: F841  (alive during the kernels)
        return torch.empty_like(qkv), None, None


def estimate(cfg: ModelConfig, batch: int) -> dict[str, float]:
    """Peak GiB of one bf16-autocast training step of ``cfg`` on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from sparse_transformer.model import state

    real, real_packed, real_prepare = transformer.attend, transformer.attend_packed, state.prepare
    transformer.attend = lambda q, k, v, prepared, scale: _StandInAttention.apply(q, k, v)
    transformer.attend_packed = (lambda qkv, prepared, n_heads, d_qk, scale:
                                 _StandInPackedAttention.apply(qkv, n_heads, d_qk))
    state.prepare = lambda *args, **kwargs: "stand-in"  # no plan: the tables are not needed
    try:
        with FakeTensorMode():
            model = transformer.SparseTransformer(cfg.replace(backend="torch"))
            x = torch.randint(0, 256, (batch, cfg.n_ctx))
            tracker = MemTracker()
            tracker.track_external(model)
            with tracker:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = model(x)
                loss = transformer.loss_nats(logits, x)
                loss.backward()
            peak = tracker.get_tracker_snapshot("peak")
    finally:
        transformer.attend, transformer.attend_packed = real, real_packed
        state.prepare = real_prepare
    total = sum(v["Total"] for v in peak.values())
    params = param_count(cfg)
    # the tracker saw weights and gradients; AdamW's two fp32 moments come on top
    return {"peak_gib": (total + 8 * params) / GIB, "step_without_optimizer_gib": total / GIB,
            "params": params}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shapes", default="enwik8,1m,audio-65k,imagenet64,cifar10", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--out", type=Path, help="folder for memory-estimate.json")
    args = ap.parse_args(argv)
    rows = []
    for shape in args.shapes.split(","):
        preset, over, batch, variants = SHAPES[shape]
        for label, more in variants.items():
            cfg = ModelConfig.from_preset(preset, **{**over, **more})
            r = estimate(cfg, batch)
            rows.append({"shape": shape, "variant": label, "batch": batch, "n_ctx": cfg.n_ctx,
                         **r})
            print(f"{shape:7s} {label:28s} peak {r['peak_gib']:7.1f} GiB", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "memory-estimate.json").write_text(json.dumps(
            {"method": "FakeTensorMode + MemTracker on the CPU, bf16 autocast, attention "
                       "stand-in, + 8 bytes/parameter for AdamW (benchmarks/memory_estimate.py)",
             "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
