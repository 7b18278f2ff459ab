"""Plot of ``benchmarks/results/attention-h200.json`` (written by ``benchmarks/attention.py``).

    python benchmarks/attention_plot.py benchmarks/results/attention-h200.json
"""

from __future__ import annotations

import json
import os
import sys


def plot(path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        results = json.load(f)
    rows = [r for r in results["rows"] if r["fwd_bwd_ms"] and r["batch"] * r["n_ctx"] == 65536
            and r["n_ctx"] in (4096, 16384, 65536)]
    pats = ["causal", "local(128)", "strided(128,split)", "fixed(128,32,4)"]
    fig, axes = plt.subplots(1, len(pats), figsize=(16, 4), sharey=False)
    colors = {"triton": "C3", "triton_kernels": "C1", "flex_natural": "C0",
              "flex_reordered": "C9", "sdpa_cudnn": "C7", "sdpa_flash": "C2"}
    for ax, pat in zip(axes, pats):
        impls = sorted({r["impl"] for r in rows if r["pattern"] == pat})
        if pat != "causal":  # dense causal cuDNN as the bar to beat
            impls.append("sdpa_cudnn")
        for impl in impls:
            src = "causal" if impl.startswith("sdpa") else pat
            pts = sorted((r["n_ctx"], r["fwd_bwd_ms"]) for r in rows
                         if r["pattern"] == src and r["impl"] == impl)
            style = "--" if src != pat else "-"
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, marker="o",
                    color=colors.get(impl), label=impl + (" (dense causal)" if src != pat else ""))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(pat)
        ax.set_xlabel("N (B = 65536 / N)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("forward+backward ms (bf16, H=8, D=64)")
    fig.suptitle(f"{results['meta'].get('device', '')}: block-sparse attention, lower is better")
    fig.tight_layout()
    out = os.path.splitext(path)[0] + ".png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    plot(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/attention-h200.json")
