"""Collect this repository's H200 learning results into one JSON and one picture.

Reads the raw device outputs under ``benchmarks/results/raw/`` (what the device calls wrote to
$OUT, copied as they came back) and writes ``benchmarks/results/learning-h200.json`` (rows
{name, preset, attention, minutes, updates, tokens, split, bits_per_byte, tokens_per_s}) and
``learning-h200.png`` (the 10-minute run's curves; the ablation curves beside them).

    python benchmarks/learning_report.py

The device calls that produced the raw files (one H200, torch 2.11, bf16):
  learning ablations:  benchmarks/learning.py --study gpu-cause|gpu-fix --preset wiki-gpu
                       --set dropout=0 --steps 300 --batch 16 --lr 1e-3 --warmup 100
                       --precision bf16 --eval-every 50 --eval-bytes 131072
                       benchmarks/learning.py --study gpu-enwik8|gpu-enwik8-fix --preset enwik8
                       --set dropout=0 --set recompute=false --steps 300 --batch 2 --lr 5e-4
                       --warmup 100 --precision bf16 --eval-every 50 --eval-bytes 131072
  the wiki-gpu run:    sparse-transformer train --preset wiki-gpu --data wiki
                       sparse-transformer eval -c runs/wiki-gpu --split test [--min-context 1024]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

RAW = Path(__file__).parent / "results" / "raw"
OUT = Path(__file__).parent / "results"
ABLATIONS = [("wiki-gpu (12 layers, d 512, n_ctx 2048, dropout 0)", "wiki-gpu",
              ["learning-gpu-cause.json", "call2/learning-gpu-fix.json"]),
             ("enwik8 preset (30 layers, n_ctx 12,288, dropout 0)", "enwik8",
              ["learning-gpu-enwik8.json", "call2/learning-gpu-enwik8-fix.json"])]
RUN = RAW / "call3"


def _metrics(path: Path) -> list[dict]:
    rows, seen = [], set()
    with open(path) as fh:
        for r in csv.DictReader(fh):
            if r["step"] in seen:
                continue
            seen.add(r["step"])
            rows.append(r)
    return rows


def collect() -> dict:
    rows = []
    for title, preset, files in ABLATIONS:
        for f in files:
            res = json.loads((RAW / f).read_text())
            for r in res["rows"]:
                rows.append({
                    "name": r["name"], "study": title, "preset": preset,
                    "attention": ("reference GPT: dense causal SDPA, learned absolute positions"
                                  if r["model"] == "ref" else "fixed(128, 32, 4), triton"),
                    "settings": r["settings"], "minutes": round(r["train_s"] / 60, 3),
                    "updates": r["updates"], "tokens": r["tokens"], "split": "valid",
                    "eval_bytes": res["eval_bytes"], "bits_per_byte": r["final_valid_bpb"],
                    "tokens_per_s": round(r["tokens_per_s"]),
                    "curve": [(c["step"], c["valid_bpb"]) for c in r["curve"]]})
    summary = json.loads((RUN / "summary.json").read_text())
    metrics = _metrics(RUN / "metrics.csv")
    common = {"study": "the 10-minute run (sparse-transformer train --preset wiki-gpu "
                       "--data wiki)", "preset": "wiki-gpu",
              "attention": "fixed(128, 32, 4), triton",
              "minutes": round(summary["elapsed_s"] / 60, 3), "updates": summary["step"],
              "tokens": int(metrics[-1]["tokens"]), "tokens_per_s": round(summary["tokens_per_s"])}
    for name, f in (("wiki-gpu, test", "eval-test.json"),
                    ("wiki-gpu, test, min context 1024", "eval-test-mc1024.json"),
                    ("wiki-gpu, valid", "eval-valid.json")):
        ev = json.loads((RUN / f).read_text())
        rows.append({"name": name, **common, "split": ev["split"], "eval_bytes": ev["scored"],
                     "min_context": ev["min_context"], "bits_per_byte": ev["model_bpb"],
                     "compressors_bpb": ev.get("compressors_bpb")})
    valid = [(int(r["step"]), float(r["valid_bpb"])) for r in metrics if r["valid_bpb"]]
    best = min(valid, key=lambda t: t[1])
    rows.append({"name": "wiki-gpu, best validation during training", **common,
                 "updates": best[0], "split": "valid", "eval_bytes": 131072,
                 "bits_per_byte": best[1],
                 "minutes": round(float(next(r["elapsed_s"] for r in metrics
                                             if int(r["step"]) == best[0])) / 60, 3),
                 "note": "first 131,072 validation bytes, scored during training"})
    test = json.loads((RUN / "eval-test.json").read_text())
    return {"machine": "one NVIDIA H200 (device tool kind nvidia-h200), torch 2.11.0+cu130, "
                       "Triton 3.6.0, bf16 autocast",
            "rows": rows,
            "run_curve": {"step": [int(r["step"]) for r in metrics],
                          "train_bpb": [float(r["train_bpb"]) for r in metrics],
                          "valid": valid},
            "compressors_test": test["compressors_bpb"],
            "lzma_with_train_as_context_test": 2.14}


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    c = res["run_curve"]
    ax.plot(c["step"], c["train_bpb"], lw=0.8, label="train (dropout 0.25 on)")
    ax.plot(*zip(*c["valid"]), "o-", label="valid (131,072 bytes)")
    for name, v in res["compressors_test"].items():
        ax.axhline(v, color="grey", ls=":", lw=0.8)
        ax.text(c["step"][-1], v, f"{name} {v:.2f}", ha="right", va="bottom", fontsize=7)
    test = next(r for r in res["rows"] if r["name"] == "wiki-gpu, test")
    ax.axhline(test["bits_per_byte"], color="C3", lw=0.8)
    ax.text(0, test["bits_per_byte"], f" test {test['bits_per_byte']:.3f} (final)",
            va="bottom", fontsize=7, color="C3")
    ax.set_ylim(0.5, 4.0)
    ax.set_xlabel("updates (64k bytes each)")
    ax.set_ylabel("bits per byte")
    ax.set_title("wiki-gpu on one H200, 8 minutes: overfits after ~2,000 updates", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for ax, (title, preset, _) in zip(axes[1:], ABLATIONS):
        for r in res["rows"]:
            if r.get("study") != title:
                continue
            xs, ys = zip(*r["curve"][1:])
            style = "--" if r["attention"].startswith("reference GPT") else "-"
            ax.plot(xs, ys, style, label=f"{r['name']} ({r['bits_per_byte']:.2f})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("updates (same batches for every curve)")
        ax.set_ylabel("validation bits per byte")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    res = collect()
    (OUT / "learning-h200.json").write_text(json.dumps(res, indent=1))
    plot(res, OUT / "learning-h200.png")
    for r in res["rows"]:
        print(f"{r['preset']:9s} {r['name']:45s} {r['split']:5s} {r['bits_per_byte']:.3f} "
              f"{r['updates']:5d} upd {r['minutes']:5.2f} min {r['tokens_per_s']:>8,} tok/s")


if __name__ == "__main__":
    main()
