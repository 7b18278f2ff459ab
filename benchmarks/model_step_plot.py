"""Plot benchmarks/results/model-step.json: what the GPU presets' default step gained, and
sparse against dense at the enwik8 shape in each step mode (issue 18).

    python benchmarks/model_step_plot.py [--json benchmarks/results/model-step.json]
                                         [--out benchmarks/results/model-step-h100.png]

Left: tokens/s of each preset's step before (eager; recompute where the preset had it) and
after (compiled blocks replayed from CUDA graphs, no recompute: today's default), one H100.
Right: enwik8 shape, tokens/s of fixed and strided split over dense in the same call, for
eager, compiled and graphed steps, with the issue's targets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (label, shape, attention, (commit, mode) before, (commit, mode) after): the rows compared
PRESETS = [
    ("enwik8 (fixed)", "enwik8", "fixed", ("314930d", "default"), ("c868843", "default")),
    ("audio-65k", "audio-65k", "strided split", ("43e5d7e", "default"), ("c868843", "default")),
    *[(name, name, "preset", ("c6add99", "default"), ("c6add99", "graphed-norecompute"))
      for name in ("imagenet64", "cifar10", "text-gpu", "audio-gpu", "wiki-gpu",
                   "fashion-mnist-gpu")],
]
# the final commit's eager, compiled and default (graphed) rows, all from one call
MODES = [("eager", "c868843", "eager-norecompute"), ("compiled", "c868843", "compiled-norecompute"),
         ("graphed", "c868843", "default")]
TARGETS = {"fixed": 1.7, "strided split": 1.9}


def _row(rows: list[dict], shape: str, attention: str, commit: str, mode: str) -> dict:
    for r in rows:
        if (r["shape"], r["attention"], r.get("commit"), r["mode"]) == (shape, attention,
                                                                        commit, mode):
            if "tokens_per_s" in r:
                return r
    raise KeyError(f"no row {shape} {attention} {commit} {mode}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=HERE / "results" / "model-step.json")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "model-step-h100.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(args.json.read_text())["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.8),
                                      gridspec_kw={"width_ratios": [1.5, 1]})
    labels, before, after = [], [], []
    for label, shape, attention, b, a in PRESETS:
        labels.append(label)
        before.append(_row(rows, shape, attention, *b)["tokens_per_s"] / 1e3)
        after.append(_row(rows, shape, attention, *a)["tokens_per_s"] / 1e3)
    y = range(len(labels))
    left.barh([i + 0.2 for i in y], before, height=0.4, color="#999999",
              label="before: eager (+ recompute where the preset had it)")
    left.barh([i - 0.2 for i in y], after, height=0.4, color="#1f77b4",
              label="now: compiled blocks from CUDA graphs, no recompute")
    for i, (b, a) in enumerate(zip(before, after)):
        left.text(a * 1.03, i - 0.2, f"{a:,.0f}k  ({a / b:.2f}x)", va="center", fontsize=8)
    left.set_yticks(list(y), labels)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlim(30, 6000)
    left.set_xlabel("training tokens per second (thousands, log scale)")
    left.set_title("Each GPU preset's default step, one H100 (model_step.py)")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)

    width = 0.35
    for k, attention in enumerate(("fixed", "strided split")):
        ratios = []
        for _, commit, mode in MODES:
            dense = _row(rows, "enwik8", "dense", commit, mode)["step_s"]
            ratios.append(dense / _row(rows, "enwik8", attention, commit, mode)["step_s"])
        xs = [i + (k - 0.5) * width for i in range(len(MODES))]
        bars = right.bar(xs, ratios, width=width, label=attention,
                         color=("#ff7f0e", "#2ca02c")[k])
        for bar, r in zip(bars, ratios):
            right.text(bar.get_x() + bar.get_width() / 2, r + 0.03, f"{r:.2f}x",
                       ha="center", fontsize=8)
        right.axhline(TARGETS[attention], color=("#ff7f0e", "#2ca02c")[k], ls="--", lw=1,
                      label=f"target {attention} {TARGETS[attention]}x")
    right.axhline(1.0, color="black", lw=0.8)
    right.set_xticks(range(len(MODES)), [m[0] for m in MODES])
    right.set_xlabel("step mode (no recompute)")
    right.set_ylabel("tokens/s over dense cuDNN, same mode, same call")
    right.set_ylim(0, 2.5)
    right.set_title("enwik8 shape, 2 x 12,288: sparse over dense")
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
