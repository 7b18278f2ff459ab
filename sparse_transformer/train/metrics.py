"""Training metrics: a CSV file, TensorBoard events when asked for, and a loss-curve PNG.

metrics.csv's ``train_bpb`` and ``valid_bpb`` are bits per token: bits per byte for text and
audio, bits per dim (sub-pixel) for images. The column names stay (every reader of the file
knows them); the ``unit`` column says which it is on every row.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

FIELDS = ("step", "tokens", "elapsed_s", "lr", "loss", "train_bpb", "tokens_per_s",
          "valid_bpb", "grad_norm", "loss_scale", "unit")


def unit_name(model_config: Any) -> str:
    """What one token's loss is counted in: a byte of an image is one sub-pixel dimension."""
    return "bits per dim" if model_config.embedding == "image" else "bits per byte"


def unit_abbreviation(unit: str) -> str:
    """"bits per dim" -> "bpd", "bits per byte" -> "bpb" (the progress bar's figures)."""
    return "bpd" if unit == "bits per dim" else "bpb"


class MetricsLogger:
    """Appends rows to ``run_dir/metrics.csv`` and, with ``tensorboard``, writes events to
    ``run_dir/tensorboard`` (an ImportError if tensorboard is missing: it was asked for).

    ``purge_step`` (a resumed run: the checkpoint's step + 1) hides TensorBoard events a killed
    session wrote after its last checkpoint, as ``truncate_metrics`` does for the CSV. ``unit``
    goes into every row; a file written before the ``unit`` column is given it (resume).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = False,
                 purge_step: int | None = None, unit: str = "bits per byte"):
        self.path = Path(run_dir) / "metrics.csv"
        self.unit = unit
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new and _header(self.path) != list(FIELDS):
            _rewrite(self.path, [{**r, "unit": r.get("unit") or unit}
                                 for r in read_metrics(self.path)])
        self._tb = None
        self._tb_dir = Path(run_dir) / "tensorboard"
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self._tb_dir), purge_step=purge_step)
        self._file = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            self._csv.writeheader()
            self._file.flush()

    @property
    def tensorboard_written(self) -> bool:
        """Whether TensorBoard events are on disk (what run.json records, not what was asked)."""
        return self._tb is not None and any(self._tb_dir.glob("events.out.tfevents.*"))

    def log(self, row: dict) -> None:
        self._csv.writerow({k: _fmt(row.get(k)) for k in FIELDS} | {"unit": self.unit})
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


def _header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _rewrite(path: Path, rows: list[dict]) -> None:
    """Replace ``path`` with ``rows`` under the current header, atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep only the rows of ``path`` up to ``step`` (a resumed run's checkpoint); returns the
    number of rows dropped. The rows of a killed session after its last checkpoint would
    otherwise appear twice once the resumed run logs those steps again."""
    path = Path(path)
    if not path.is_file():
        return 0
    rows = read_metrics(path)
    keep = [r for r in rows if _step(r) is not None and _step(r) <= step]
    if len(keep) == len(rows):
        return 0
    _rewrite(path, keep)
    return len(rows) - len(keep)


def record_validation(path: str | Path, step: int, valid_bpb: float, unit: str) -> None:
    """Put a final validation into the row of ``step`` (appended if there is none): a resumed
    run whose final evaluation was stopped logs it beside that step's training figures rather
    than as a second row of the same step."""
    path = Path(path)
    rows = read_metrics(path) if path.is_file() else []
    for row in rows:
        if _step(row) == step:
            row["valid_bpb"] = _fmt(float(valid_bpb))
            break
    else:
        rows.append({"step": step, "valid_bpb": _fmt(float(valid_bpb)), "unit": unit})
    _rewrite(path, rows)


def _step(row: dict) -> int | None:
    try:
        return int(row.get("step") or "")
    except ValueError:
        return None


def plot_loss_curve(csv_path: str | Path, png_path: str | Path,
                    unit: str = "bits per byte", title: str | None = None,
                    references: dict[str, float] | None = None) -> Path | None:
    """Train and validation loss in ``unit`` against step; None if matplotlib is missing.

    ``title`` names the run; ``references`` draws horizontal lines, e.g. what lzma, bz2 and
    zlib achieve on the validation bytes, so a reader sees whether the model beats them.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_metrics(csv_path)
    tr = [(int(r["step"]), float(r["train_bpb"])) for r in rows if r.get("train_bpb")]
    va = [(int(r["step"]), float(r["valid_bpb"])) for r in rows if r.get("valid_bpb")]
    fig, ax = plt.subplots(figsize=(6, 4))
    if tr:
        ax.plot(*zip(*tr), label="train", lw=1)
    if va:
        ax.plot(*zip(*va), "o-", label="valid", lw=1.5)
    for i, (name, value) in enumerate(sorted((references or {}).items(), key=lambda t: t[1])):
        ax.axhline(value, color="grey", ls=":", lw=0.8)
        side = i % 2  # alternate right and left ends: close values do not overprint
        ax.annotate(f"{name} {value:.2f}", (1.0 - side, value),
                    xycoords=("axes fraction", "data"), ha=("right", "left")[side],
                    va="bottom", fontsize=7, color="dimgrey")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    return png
