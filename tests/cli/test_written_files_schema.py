"""What a real training run writes passes schema.py's validators (issue 20): the readers
that call them (data/bytes.py now; train/checkpoint.py and train/rundir.py in phase 2) refuse
damage, never our own files."""

from __future__ import annotations

import json

import torch

from sparse_transformer.schema import (
    check_data_meta,
    check_run_info,
    check_state,
    check_train_meta,
    read_object,
)


def test_what_training_writes_passes(run_dir):
    """The files of the shared run (tests/cli/conftest.py) pass every validator."""
    step = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    meta = check_train_meta(read_object(step / "train.json"), "train.json")
    check_run_info(read_object(run_dir / "run.json"), "run.json")
    check_state(torch.load(step / "state.pt", weights_only=True), step=meta["step"])
    check_data_meta(json.loads((step / "train.json").read_text())["data"])
