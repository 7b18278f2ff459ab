"""The first updates of one training run, per attention path: does a kernel path learn as
another does from the same start?

Trains ``--preset`` (default text-gpu) on ``--data`` for ``--steps`` updates, with one seed, one
attention pattern and one set of kernel launch settings (``triton_attention.CONFIG``, JSON,
read before any table is built), and prints the training loss (bits per byte, mean of every 50
updates) and the gradient norm. Run it once per variant, each in its own process, and compare
the curves: the same seed gives the same initial weights and batches, so kernel paths that
compute the same attention give curves that agree to bf16 rounding early and stay alike.

    python benchmarks/learning_ab.py --label default --out ab.json
    python benchmarks/learning_ab.py --label old-paths --out ab.json \\
        --config '{"tiles": {"runs": 0, "own": 0}, "fwd": {"lean": 0}, "dq": {"lean": 0}}'
    python benchmarks/learning_ab.py --label flex --backend flex --out ab.json

Rows are appended to ``--out`` (a JSON list): label, steps, seed, attention, backend, config,
compile/graphs, seconds, the 50-update means, the final loss. ``--plot PNG`` draws the rows of
``--out`` (one curve per label) instead of training:

    python benchmarks/learning_ab.py --out benchmarks/results/learning-ab.json \
        --plot benchmarks/results/learning-ab-h100.png

Used in the fourteenth session to ask whether graphed fixed runs stayed on a plateau because
of a kernel path (benchmarks/NOTES.md).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from sparse_transformer.kernels import triton_attention
from sparse_transformer.train.loop import TrainConfig, train

FIXED = "fixed(stride=128, summary=32, distinct=4)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--label", help="the variant's name in the rows (required to train)")
    ap.add_argument("--preset", default="text-gpu")
    ap.add_argument("--data", default="text100m")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--attention", default=FIXED)
    ap.add_argument("--backend", default="auto", help="auto, triton, flex, sdpa, torch")
    ap.add_argument("--config", type=json.loads, default={},
                    help="JSON launch settings (triton_attention.CONFIG)")
    ap.add_argument("--eager", action="store_true", help="no compile, no CUDA graphs")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--every", type=int, default=50, help="updates per mean")
    ap.add_argument("--runs", default="runs/learning-ab")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plot", type=Path, help="draw --out's rows into this PNG; no training")
    args = ap.parse_args(argv)
    if args.plot:
        if not args.out.exists():
            ap.error(f"--plot draws the rows of --out, and {args.out} does not exist")
        plot(json.loads(args.out.read_text()), args.plot)
        return 0
    if not args.label:
        ap.error("--label is required to train (or give --plot)")
    triton_attention.CONFIG.update(args.config)
    speed = dict(compile=False, cuda_graphs=False) if args.eager else {}
    cfg = TrainConfig(data=args.data, data_root=args.data_root, preset=args.preset,
                      model={"attention": args.attention, "backend": args.backend},
                      out=f"{args.runs}/{args.label}", steps=args.steps, eval_every=0,
                      eval_bytes=0, save_every=0, keep_last=1, progress=False, force=True,
                      seed=args.seed, **speed)
    t0 = time.time()
    summary = train(cfg)
    seconds = time.time() - t0
    bits = [x / math.log(2) for x in summary["losses"]]
    means = [round(sum(bits[i:i + args.every]) / len(bits[i:i + args.every]), 4)
             for i in range(0, len(bits), args.every)]
    row = {"label": args.label, "steps": args.steps, "updates": len(bits), "seed": args.seed,
           "attention": args.attention, "backend": args.backend, "config": args.config,
           "eager": args.eager, "seconds": round(seconds, 1), "train_bpb_means": means,
           "every": args.every, "final_bpb": round(bits[-1], 4),
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    print(f"{args.label}: {len(bits)} updates in {seconds:.0f} s; train bits/byte per "
          f"{args.every}: {means}", flush=True)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows + [row], indent=1))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    """One curve per row: mean training bits/byte of every ``every`` updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        x = [r["every"] * (i + 1) for i in range(len(r["train_bpb_means"]))]
        how = "eager" if r["eager"] else "compiled + CUDA graphs"
        ax.plot(x, r["train_bpb_means"], marker="o", ms=3,
                label=f"{r['label']} ({r['backend']}, {how})")
    r0 = rows[0]
    ax.set_xlabel(f"update (mean of the {r0['every']} before)")
    ax.set_ylabel("training loss (bits per byte)")
    ax.set_title(f"{r0['attention']}, seed {r0['seed']}: same start, per attention path\n"
                 f"{r0['device']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
