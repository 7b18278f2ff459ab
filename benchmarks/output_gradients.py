"""Diagnostic: how much gradient reaches the body through a zero-started output matrix?

Trains the wiki-small model (CPU, batch 8 x 256, AdamW lr 2e-3, warm-up 50, clip 1.0) twice on
the same batches: W_out started at zero (the paper) and drawn N(0, 0.02). Every 10 updates it
prints the training loss, the gradient norm of W_out and of everything below it, the mean
|W_out| and the spread of the logits. docs/training.md quotes update 100.

    python benchmarks/output_gradients.py [--steps 120]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import learning as L  # noqa: E402

from sparse_transformer.data.bytes import resolve_data  # noqa: E402


def run(name: str, settings: dict, train: np.ndarray, steps: int) -> None:
    v = L.Variant(name, "ours", settings)
    model, n_ctx = L.build(v, "wiki-small", {"output_bias": False}, torch.device("cpu"))
    opt = L.optimizer(model, 2e-3, 0.01, 0.999, False)
    gen = torch.Generator().manual_seed(0)
    print(name)
    for step in range(steps + 1):
        starts = torch.randint(0, train.size - n_ctx, (8,), generator=gen)
        x = torch.from_numpy(np.stack([train[i:i + n_ctx] for i in starts.tolist()])
                             .astype(np.int64))
        for g in opt.param_groups:
            g["lr"] = L.lr_at(step, 2e-3, 50, 400, 0) * g["lr_mult"]
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), x.flatten())
        loss.backward()
        body = [p.grad for n, p in model.named_parameters()
                if not n.startswith("head.") and p.grad is not None]
        if step % 10 == 0:
            print(f"  update {step:4d}  loss {loss.item() / math.log(2):.3f} bits/byte  "
                  f"|grad W_out| {float(model.head.weight.grad.norm()):.3f}  "
                  f"|grad below| {float(torch.sqrt(sum((g ** 2).sum() for g in body))):.3f}  "
                  f"mean |W_out| {float(model.head.weight.abs().mean()):.4f}  "
                  f"logit std {float(logits.std()):.3f}")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--data-root", default="data")
    args = ap.parse_args(argv)
    train = np.asarray(resolve_data("wiki", args.data_root, prepare_missing=False).split("train"))
    counts = np.bincount(train[: 1 << 24], minlength=256).astype(np.float64) + 0.5
    L.UNIGRAM["log_freq"] = torch.from_numpy(np.log(counts / counts.sum())).float()
    torch.set_num_threads(1)
    run("W_out = 0 (the paper)", {}, train, args.steps)
    run("W_out ~ N(0, 0.02)", {"head_std": "0.02"}, train, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
