"""Training metrics: a CSV file, TensorBoard when installed, and a loss-curve PNG."""

from __future__ import annotations

import csv
import math
from pathlib import Path

FIELDS = ("step", "tokens", "elapsed_s", "lr", "loss", "train_bpb", "tokens_per_s",
          "valid_bpb", "grad_norm", "loss_scale")


class MetricsLogger:
    """Appends rows to ``run_dir/metrics.csv`` (and TensorBoard events if available)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.csv"
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            self._csv.writeheader()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def log(self, row: dict) -> None:
        self._csv.writerow({k: _fmt(row.get(k)) for k in FIELDS})
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_loss_curve(csv_path: str | Path, png_path: str | Path) -> Path | None:
    """Train and validation bits per byte against step; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_metrics(csv_path)
    tr = [(int(r["step"]), float(r["train_bpb"])) for r in rows if r["train_bpb"]]
    va = [(int(r["step"]), float(r["valid_bpb"])) for r in rows if r["valid_bpb"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    if tr:
        ax.plot(*zip(*tr), label="train", lw=1)
    if va:
        ax.plot(*zip(*va), "o-", label="valid", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(png_path)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)
    return png
