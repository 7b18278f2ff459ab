"""Training recipes: the options each model preset trains well with (torch-free).

``sparse-transformer train --preset NAME`` with no other flag uses the recipe of NAME; a flag
given on the command line (or a ``TrainConfig`` field set in Python) overrides it, and a field
no recipe sets takes ``BASE``. Beside each recipe: what it was measured with, or that it was
not (docs/training.md has the runs and curves).

Why there is an ``output_lr_mult``: the output matrix W_out starts at zero (paper 6), and
Adam moves each weight by about one learning rate per update, so with the body's learning rate
W_out needs hundreds of updates to grow, while the body below it gets gradients through W_out
only. The model then sits at unigram/bigram entropy for the first several hundred updates
(5.13 bits/byte after 300 updates of the enwik8 preset on an H200; a plain GPT: 4.02). A larger
rate for W_out alone removes that plateau and keeps the paper's zero start.
"""

from __future__ import annotations

from typing import Any

# Fields a recipe may set, with the values used where no recipe sets them.
BASE: dict[str, Any] = {
    "batch_size": 16,
    "lr": 1e-3,
    "warmup": 100,
    "weight_decay": 0.01,
    "min_lr_ratio": 0.0,
    "output_lr_mult": 1.0,
    "precision": "fp32",
    "eval_every": 250,
    "eval_bytes": 131_072,
    "max_minutes": None,
    # How a step runs on one CUDA device (TrainConfig.speed_options: on the CPU, under
    # --shard or several processes they stay off unless asked for by flag).
    "compile": False,
    "cuda_graphs": False,
}
# Fields that take the recipe's value only where a GPU runs the step (see BASE).
GPU_ONLY = ("compile", "cuda_graphs")

# Every GPU preset trains with its blocks compiled and replayed from CUDA graphs: the fastest
# step measured for each, against what it ran before (eager; recompute where the preset had
# it), one H100, 5 Dec 2026, tokens/s (benchmarks/model_step.py --modes default,graphed-
# norecompute; benchmarks/results/model-step.json):
#   enwik8 (fixed) 194,746 -> 272,816; imagenet64 110,513 -> 218,944; cifar10 44,096 ->
#   196,940; audio-65k 126,286 -> 239,536; text-gpu 720,472 -> 1,160,583; audio-gpu 700,799
#   -> 1,108,861; wiki-gpu 661,500 -> 1,003,851; fashion-mnist-gpu 948,837 -> 1,640,611.
# --no-cuda-graphs / --no-compile turn them off (TrainConfig.speed_options: on one GPU only).
GPU_STEP: dict[str, Any] = {"compile": True, "cuda_graphs": True}

RECIPES: dict[str, dict[str, Any]] = {
    # The CPU demo (make demo). lr/warm-up/batch: the earlier demo's; output rate x10 and the
    # output bias: the CPU ablation (benchmarks/learning.py --study cpu-ablation, 400 updates:
    # 3.560 bits/byte vs 4.478 without, reference GPT 3.975) and tests/train/test_learning.py.
    "wiki-small": dict(batch_size=8, lr=2e-3, warmup=50, output_lr_mult=10.0,
                       eval_every=100, eval_bytes=32_768, max_minutes=7.5),
    "wiki-tiny": dict(batch_size=8, lr=2e-3, warmup=20, output_lr_mult=10.0,
                      eval_every=50, eval_bytes=4096),
    # One H200, the default data: the 8-minute run of docs/training.md (test 1.911 bits/byte;
    # it overfits after ~2,000 updates: dropout and decay here are a first guess).
    "wiki-gpu": dict(batch_size=32, lr=1e-3, warmup=200, output_lr_mult=10.0,
                     weight_decay=0.1, precision="bf16", eval_every=500, eval_bytes=131_072,
                     max_minutes=8.0, **GPU_STEP),
    # The paper's Enwik8 model: the 300-update H200 comparison (4.04 bits/byte vs the
    # reference GPT's 4.02; benchmarks/learning.py --study gpu-enwik8-fix). The paper warms up
    # for 5,000 updates in runs of days; this recipe was only measured for 300.
    "enwik8": dict(batch_size=2, lr=5e-4, warmup=100, output_lr_mult=30.0, precision="bf16",
                   eval_every=1000, eval_bytes=1 << 20, **GPU_STEP),
    # Not trained in this repository: learning rates from OpenAI's code (distribution_
    # augmentation's hyperparameters), the output rate of the enwik8 preset.
    "cifar10": dict(batch_size=8, lr=3.5e-4, warmup=2000, output_lr_mult=30.0,
                    precision="bf16", eval_every=1000, eval_bytes=3072 * 200, **GPU_STEP),
    "imagenet64": dict(batch_size=2, lr=1.5e-4, warmup=2000, output_lr_mult=30.0,
                       precision="bf16", eval_every=1000, eval_bytes=12288 * 50, **GPU_STEP),
    "audio-65k": dict(batch_size=1, lr=1.5e-4, warmup=2000, output_lr_mult=30.0,
                      precision="bf16", eval_every=1000, eval_bytes=65536 * 8, **GPU_STEP),
    # One GPU, the paper's three modalities in minutes (benchmarks/paper_gpu.py and
    # docs/results.md have what each gave on an H200/H100). 65,536 tokens per update for text
    # and audio, 100,352 (128 images) for Fashion-MNIST, whose 24 short layers leave the step
    # bound by the host's launches (more images per step cost little); a first guess at the
    # rates, the output rate x10 of wiki-gpu; bf16.
    "text-gpu": dict(batch_size=4, lr=1e-3, warmup=200, output_lr_mult=10.0,
                     precision="bf16", eval_every=250, eval_bytes=1 << 20, max_minutes=9.0, **GPU_STEP),
    "fashion-mnist-gpu": dict(batch_size=128, lr=1e-3, warmup=200, output_lr_mult=10.0,
                              precision="bf16", eval_every=500, eval_bytes=784 * 1000,
                              max_minutes=9.0, **GPU_STEP),
    "audio-gpu": dict(batch_size=1, lr=1e-3, warmup=200, output_lr_mult=10.0,
                      precision="bf16", eval_every=250, eval_bytes=65536 * 16,
                      max_minutes=9.0, **GPU_STEP),
    # CPU image and audio presets: the earlier CPU runs' rates (docs/images-audio.md) with the
    # output rate x10 (measured on fashion-mnist-small in the Table 2 study of
    # docs/training.md; not on audio-small).
    "fashion-mnist-small": dict(batch_size=8, lr=2e-3, warmup=50, output_lr_mult=10.0,
                                eval_every=100, eval_bytes=784 * 64),
    "audio-small": dict(batch_size=8, lr=2e-3, warmup=50, output_lr_mult=10.0,
                        eval_every=100, eval_bytes=1024 * 32),
}


def recipe(preset: str) -> dict[str, Any]:
    """The full option set of ``preset``'s recipe (``BASE`` where the recipe is silent)."""
    return {**BASE, **RECIPES.get(preset, {})}
