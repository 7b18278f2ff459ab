"""Learning-rate schedule and optimizer set-up (paper 6).

The paper: Adam, linear warm-up (5,000 iterations), cosine decay "as in Radford et al. 2018",
weight decay 0.01, gradient clipping at 1.0. It leaves open Adam's betas (we use 0.9/0.999,
the defaults of OpenAI's blocksparse optimizer), the decay's end point (we decay to
``min_lr_ratio * lr``, default 0 as OpenAI's later code does) and how weight decay is applied
(we use decoupled AdamW decay on matrices only, i.e. parameters with ndim >= 2: linear weights
and embedding tables; biases, LayerNorm gains and the start vector are not decayed).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_at(step: int, *, lr: float, warmup: int, total: int, min_lr_ratio: float = 0.0) -> float:
    """Learning rate for update ``step`` (0-based): linear warm-up, then cosine to min_lr."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = step_fraction(step, warmup=warmup, total=total)
    floor = lr * min_lr_ratio
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# A time budget's warm-up ends by this fraction of the budget at the latest. Warm-up is counted
# in updates, the cosine in time, so on a slow or busy machine a short budget could end before
# its warm-up did and never train at the recipe's rate: at the 287 updates in 7.5 minutes
# issue 20 saw on a busy 2-core machine, wiki-small's 50 warm-up updates take 78 s.
WARMUP_BUDGET = 0.05


# The first updates of a session compile the step (torch.compile) and capture its CUDA graphs:
# seconds each, where later updates take milliseconds. Their time is not counted toward the
# warm-up's share of the budget: on an H100 a graphed 4-minute text run spent ~7 s in its first
# 10 updates, so warm-up's 12 s (5% of 4 minutes) ran out after ~60 of the recipe's 200 and
# update 10 already trained at 0.63x the peak rate (an eager run: 0.11x; fourteenth session,
# benchmarks/NOTES.md).
SETUP_UPDATES = 3


def lr_at_time(step: int, fraction: float, *, lr: float, warmup: int,
               min_lr_ratio: float = 0.0, warm_fraction: float | None = None) -> float:
    """Time-budget schedule for update ``step`` at ``fraction`` of the budget: linear warm-up
    that ends after ``warmup`` updates or at ``WARMUP_BUDGET`` of the budget, whichever comes
    first, times a cosine over the fraction. ``warm_fraction`` (default: ``fraction``) is the
    budget's share the warm-up's cap counts: the loop leaves out its sessions' setup updates
    (``SETUP_UPDATES``)."""
    f = min(1.0, max(0.0, fraction))
    wf = f if warm_fraction is None else min(1.0, max(0.0, warm_fraction))
    warm = min(1.0, max((step + 1) / warmup, wf / WARMUP_BUDGET)) if warmup > 0 else 1.0
    floor = lr * min_lr_ratio
    return warm * (floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * f)))


def resumed_fraction(start: float, spent: float, left: float) -> float:
    """The cosine's progress in a (resumed) budget: it stood at ``start`` when this session
    began, and ``spent`` of the ``left`` that remain have passed. The rest of the curve is
    spread over what remains, so a resumed run continues where it stopped and its rate never
    climbs back (a new run: ``start`` 0, ``left`` the whole budget)."""
    return min(1.0, start + (1.0 - start) * spent / max(1e-9, left))


def step_fraction(step: int, *, warmup: int, total: int) -> float:
    """How far ``lr_at``'s cosine has gone at update ``step`` (0 during warm-up, 1 at the end)."""
    return min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))


OUTPUT = "head.weight"  # the output matrix W_out of SparseTransformer


def param_groups(model: nn.Module, weight_decay: float, output_lr_mult: float = 1.0
                 ) -> list[dict]:
    """AdamW groups: matrices (decayed), vectors (not decayed), and the output matrix.

    Each group carries ``lr_mult``: the learning rate of a group is the schedule's rate times
    it. The output matrix starts at zero (paper 6) and gets ``output_lr_mult`` (see
    ``train/recipes.py`` for why); it is decayed like the other matrices.
    """
    decay, no_decay, output = [], [], []
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            if name == OUTPUT:
                output.append(p)
            else:
                (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr_mult": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0}]
    if output:
        groups.append({"params": output, "weight_decay": weight_decay,
                       "lr_mult": float(output_lr_mult)})
    return groups


def make_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                   output_lr_mult: float = 1.0, fused: bool | None = None
                   ) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; ``fused`` defaults to on for CUDA parameters."""
    if fused is None:
        fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay, output_lr_mult), lr=lr,
                             betas=betas, eps=eps, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to ``lr`` times its ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
