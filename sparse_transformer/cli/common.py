"""What several commands share: finding the data a run trained on, without preparing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_data(train_meta: dict[str, Any], data: str | None, data_root: str | None):
    """The ByteData for a checkpoint: ``data`` if given, else the absolute path the run
    recorded. Nothing is downloaded or prepared (a checkpoint is not trusted to say what to
    fetch); a missing data set names the command that prepares it."""
    from sparse_transformer.data.bytes import resolve_data
    from sparse_transformer.data.registry import datasets

    if data:
        return resolve_data(data, data_root or "data", prepare_missing=False)
    opts = train_meta.get("options") if isinstance(train_meta.get("options"), dict) else {}
    spec = opts.get("data")
    recorded = train_meta.get("data_path")
    if isinstance(recorded, str) and recorded:
        path = Path(recorded)
        if path.exists():
            return resolve_data(str(path), prepare_missing=False)
        if spec in datasets():
            raise FileNotFoundError(f"the run's data set {spec!r} is not prepared in {path}; "
                                    f"prepare it with: sparse-transformer prepare {spec} "
                                    f"--out {path}")
        raise FileNotFoundError(f"the run's data {path} does not exist; pass --data")
    if not isinstance(spec, str) or not spec:
        raise ValueError("the checkpoint does not say which data it trained on; pass --data")
    # a checkpoint from before runs recorded their data path: relative to here, as then
    return resolve_data(spec, data_root or opts.get("data_root") or "data",
                        prepare_missing=False)
