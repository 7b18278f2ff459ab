"""Plot: where a pattern's attention time goes, per kernel, before and after (issue 18).

Reads ``benchmarks/results/kernel-stages.json`` (``benchmarks/kernel_stages.py`` rows of one
device call) and draws, for each pattern (a row of panels) at each measured shape (a column),
one stacked bar per launch variant: forward, dQ, dK/dV and the rest (Delta and gradient
copies), in GPU ms.

    python benchmarks/kernel_stages_plot.py [--call 2026-12-05-s5/call2] [--out PNG]
    # the twelfth session's runs of full tiles, fixed and causal:
    python benchmarks/kernel_stages_plot.py --call 2026-12-06-s12/call2 --labels runs \
        --patterns "fixed(128,32,4)+causal" --out benchmarks/results/kernel-stages-runs-h100.png
    # the thirteenth session's owned key tiles, fixed:
    python benchmarks/kernel_stages_plot.py --call 2026-12-06-s13/call5 --labels owned \
        --out benchmarks/results/kernel-stages-owned-h100.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {  # --labels -> (variant -> what it is, in the picture)
    "groups": {  # the fifth session's dK/dV groups and grid order
        "old-tile-major": "before\n1 key tile per\ndK/dV program;\nhead by head",
        "tile-major": "dK/dV groups\nof 4 tiles;\nhead by head",
        "old": "1 key tile per\ndK/dV program;\nheaviest first",
        "default": "now\ndK/dV groups\nof 4 tiles;\nheaviest first",
    },
    "runs": {  # the twelfth session's runs of full tiles
        "no-runs": "before:\nevery tile loaded\nfrom its list",
        "default": "now: runs of\nfull tiles walked\nby arithmetic",
    },
    "owned": {  # the thirteenth session's owned key tiles
        "no-own": "before: every\nkey tile in a\ndK/dV program",
        "default": "now: one-reader\ntiles' dK/dV in\ntheir dQ program",
    },
}
STAGES = (("fwd_kernel", "forward", "#4c72b0"), ("dq_kernel", "dQ", "#55a868"),
          ("dkdv_kernel", "dK/dV", "#c44e52"), ("rest", "Delta + copies", "#999999"))


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=RESULTS / "kernel-stages.json")
    ap.add_argument("--call", default="2026-12-05-s5/call2")
    ap.add_argument("--out", type=Path, default=RESULTS / "kernel-stages-fixed-h100.png")
    ap.add_argument("--labels", choices=sorted(LABELS), default="groups",
                    help="which variants to draw, and their captions")
    ap.add_argument("--patterns", default="fixed(128,32,4)",
                    help="joined by +, as the JSON names them (their names hold commas)")
    args = ap.parse_args(argv)
    captions = LABELS[args.labels]
    patterns = args.patterns.split("+")
    data = json.loads(args.data.read_text())
    rows = [r for r in data["rows"] if r.get("call") == args.call
            and r.get("pattern") in patterns and r.get("variant") in captions]
    if not rows:
        raise SystemExit(f"no rows of {patterns} in call {args.call} with variants "
                         f"{sorted(captions)}")
    shapes = sorted({(r["n_ctx"], r["batch"]) for r in rows})
    fig, axes = plt.subplots(len(patterns), len(shapes),
                             figsize=(6 * len(shapes), 5.2 * len(patterns)), squeeze=False)
    panels = [(ax, pattern, shape) for pattern, line in zip(patterns, axes)
              for ax, shape in zip(line, shapes)]
    for ax, pattern, (n, b) in panels:
        here = {r["variant"]: r for r in rows
                if (r["n_ctx"], r["batch"], r["pattern"]) == (n, b, pattern)}
        names = [v for v in captions if v in here]
        bottom = [0.0] * len(names)
        for key, label, color in STAGES:
            vals = [here[v]["total"] - sum(here[v].get(k, 0) for k, *_ in STAGES[:3])
                    if key == "rest" else here[v].get(key, 0) for v in names]
            ax.bar(range(len(names)), vals, bottom=bottom, color=color, label=label)
            bottom = [x + y for x, y in zip(bottom, vals)]
        for i, v in enumerate(names):
            ax.text(i, bottom[i], f"{here[v]['total']:.3f} ms", ha="center", va="bottom",
                    fontsize=9)
        ax.set_xticks(range(len(names)), [captions[v] for v in names], fontsize=8)
        ax.set_xlabel("launch variant (one call, same inputs)")
        ax.set_ylabel("GPU time of one forward + backward (ms)")
        ax.set_ylim(0, max(bottom) * 1.12)
        ax.set_title(f"{pattern}, batch {b} x {n:,} positions, 8 heads", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(STAGES), fontsize=9)
    device = rows[0]["device"] if rows else "?"
    commit = rows[0]["commit"] if rows else "?"
    fig.suptitle(f"Per-kernel time, one call, {device} (commit {commit}; "
                 "benchmarks/kernel_stages.py)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 / len(patterns), 1, 1))
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
