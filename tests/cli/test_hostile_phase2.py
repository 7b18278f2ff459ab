"""Issue 20, phase 2: what the second hostile-input campaign found in the training loop, the
checkpoint I/O, the run directory and from_pretrained (train/loop.py, train/start.py,
model/checkpoint_io.py, train/rundir.py, model/pretrained.py).

Each test states the behaviour we want; its docstring (or the comment beside its case) says
what the campaign found on main at 2638159. The validators the readers call are in
sparse_transformer/schema.py (tests/test_schema.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from sparse_transformer import SparseTransformer
from sparse_transformer.cli import main

def _step(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


@pytest.fixture
def run(run_dir, tmp_path) -> Path:
    """A private copy of the shared 4-step run (tests/cli/conftest.py)."""
    return Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))


@pytest.fixture
def other(run_dir, tmp_path) -> Path:
    """A second run: the target of the symlinks below (its weights differ from ``run``'s)."""
    out = Path(shutil.copytree(run_dir, tmp_path / "other"))
    step = _step(out)
    from safetensors.torch import load_file, save_file

    w = load_file(str(step / "model.safetensors"))
    w["head.weight"] = w["head.weight"] + 1.0
    save_file(w, str(step / "model.safetensors"), metadata={"format": "pt"})
    return out


def _refused(capsys, code) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


# -- data lost ------------------------------------------------------------------------------
def test_resume_of_a_finished_run_is_refused_or_a_no_op(run, capsys):
    """Issue 20, second campaign: `train --out RUN --resume` on a finished run rewrites
    summary.json with null figures."""
    before = _snapshot(run)
    code = main(["train", "--out", str(run), "--resume", "--no-progress"])
    capsys.readouterr()
    assert code in (0, 2) and _snapshot(run) == before


def test_resume_to_an_earlier_step_changes_nothing(run, capsys):
    """Issue 20, second campaign: a resume asking for fewer steps than the run has rewrites the
    run's files (summary.json, loss.png) and exits 0."""
    before = _snapshot(run)
    code = main(["train", "--out", str(run), "--resume", "--steps", "3", "--no-progress"])
    capsys.readouterr()
    assert code in (0, 2) and _snapshot(run) == before


def test_stop_during_the_final_evaluation(corpus, tmp_path, capsys, monkeypatch):
    """Issue 20, second campaign: Ctrl-C or SIGTERM during the final evaluation loses the final
    metrics row, summary.json and loss.png, and a later resume crashes."""
    import sparse_transformer.train.loop as loop

    real = loop.evaluate_bpb

    def interrupted(*args, **kwargs):  # Ctrl-C while the final evaluation runs
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "evaluate_bpb", interrupted)
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--data", str(corpus), "--preset", "wiki-tiny",
            "--steps", "2", "--batch-size", "2", "--eval-every", "0", "--eval-bytes", "256",
            "--no-progress"]
    assert main(args) == 130
    monkeypatch.setattr(loop, "evaluate_bpb", real)
    assert (out / "summary.json").is_file()
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["valid_bpb"] is not None


def test_pruning_keeps_a_users_folder(run, capsys):
    """Issue 20, second campaign: checkpoint pruning deletes a user's
    checkpoints/step-00000001.bak folder (it globs step-*)."""
    mine = run / "checkpoints" / "step-00000001.bak"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--keep-last", "1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert (mine / "notes.txt").read_text() == "mine"


def test_save_pretrained_does_not_replace_a_run(run):
    """Issue 20, second campaign: save_pretrained(RUN, overwrite=True) on a run directory
    deletes its checkpoints."""
    model = SparseTransformer.from_pretrained(run)
    with pytest.raises((ValueError, FileExistsError)):
        model.save_pretrained(run, overwrite=True)
    assert (run / "checkpoints" / "latest").is_file()


def test_force_deletes_only_names_a_run_writes(run, corpus, capsys):
    """Issue 20, second campaign: run.json's file list is obeyed by --force: a tampered manifest
    deletes a user's file (schema.check_run_info refuses it)."""
    info = json.loads((run / "run.json").read_text())
    info["files"] = info["files"] + ["notes.txt"]
    (run / "run.json").write_text(json.dumps(info))
    (run / "notes.txt").write_text("mine")
    main(["train", "--out", str(run), "--force", "--data", str(corpus), "--preset",
          "wiki-tiny", "--steps", "1", "--batch-size", "2", "--eval-bytes", "0",
          "--no-progress"])
    capsys.readouterr()
    assert (run / "notes.txt").read_text() == "mine"


# -- trust boundary: symlinks out of the run -------------------------------------------------
def _link_checkpoints(run: Path, other: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(other / "checkpoints")


def _link_weights(run: Path, other: Path) -> None:
    (_step(run) / "model.safetensors").unlink()
    (_step(run) / "model.safetensors").symlink_to(_step(other) / "model.safetensors")


LINKS = {"checkpoints": _link_checkpoints, "model.safetensors": _link_weights}


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("command", [
    pytest.param(["eval", "--no-compressors", "--no-progress", "-c"], id="eval"),
    pytest.param(["sample", "--n-bytes", "4", "--no-progress", "-c"], id="sample"),
    pytest.param(["train", "--resume", "--steps", "5", "--no-progress", "--out"], id="resume"),
])
def test_a_symlink_out_of_the_run_is_refused(run, other, capsys, command, link):
    """Issue 20, second campaign: model.safetensors or checkpoints/ as a symlink to another run
    was loaded by eval (which printed one step and scored another), sample and resume, though
    pretrained.py said a run cannot point outside itself."""
    LINKS[link](run, other)
    err = _refused(capsys, main([*command, str(run)]))
    assert "symlink" in err or "outside" in err


@pytest.mark.parametrize("link", list(LINKS))
def test_from_pretrained_refuses_a_symlink_out_of_the_run(run, other, link):
    """Issue 20, second campaign: model.safetensors or checkpoints/ as a symlink to another run
    is loaded, though pretrained.py says a run cannot point outside itself."""
    LINKS[link](run, other)
    with pytest.raises(ValueError, match="outside|symlink"):
        SparseTransformer.from_pretrained(run)


# -- tampered training state and train.json ----------------------------------------------------
def _edit_state(run: Path, edit) -> None:
    path = _step(run) / "state.pt"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda s: s.pop("rng"), id="no-rng"),  # was a KeyError traceback
    pytest.param(lambda s: s.update(step=-5), id="step=-5"),  # silently accepted
    pytest.param(lambda s: s.update(step=10**6), id="step=10**6"),  # silently accepted
    pytest.param(lambda s: s.update(elapsed_s=float("nan")), id="elapsed=nan"),  # accepted
])
def test_tampered_state_is_refused_on_resume(run, capsys, edit):
    """Issue 20, second campaign: state.pt was not checked on resume (schema.check_state)."""
    _edit_state(run, edit)
    before = _snapshot(run)
    _refused(capsys, main(["train", "--out", str(run), "--resume", "--steps", "6",
                           "--no-progress"]))
    assert _snapshot(run) == before


COMMANDS = {"eval": ["eval", "--no-compressors", "--no-progress", "-c"],
            "resume": ["train", "--resume", "--no-progress", "--out"]}


@pytest.mark.parametrize("raw,command", [
    ("1e999", "eval"),  # an OverflowError traceback
    ("Infinity", "eval"),  # an OverflowError traceback
    (str(2**70), "eval"),  # printed as the step
    ('"4"', "eval"),  # a string accepted
    ("1e999", "resume"),  # an OverflowError traceback
    ("Infinity", "resume"),  # an OverflowError traceback
    (str(2**70), "resume"),  # not refused in one line
    ('"4"', "resume"),  # a string accepted
], ids=lambda v: str(v))
def test_train_json_step_is_checked(run, capsys, raw, command):
    """Issue 20, second campaign: train.json's step was not checked by eval or resume
    (schema.check_train_meta)."""
    meta = (_step(run) / "train.json")
    meta.write_text(meta.read_text().replace('"step": 4', f'"step": {raw}'))
    _refused(capsys, main([*COMMANDS[command], str(run)]))


# -- the first hour: time-budgeted runs ------------------------------------------------------
def test_resume_of_a_time_budgeted_run_continues_its_schedule(corpus, tmp_path, capsys):
    """Issue 20, second campaign: a run trained by --max-minutes cannot be resumed (int() of
    None: the demo's own run), and a resumed time budget restarts the learning rate at its
    peak."""
    out = tmp_path / "timed"
    args = ["--data", str(corpus), "--preset", "wiki-tiny", "--batch-size", "2",
            "--eval-bytes", "0", "--eval-every", "0", "--warmup", "1", "--log-every", "1",
            "--no-progress"]
    assert main(["train", "--out", str(out), "--max-minutes", "0.05", *args]) == 0
    assert main(["train", "--out", str(out), "--resume", "--max-minutes", "0.1",
                 "--no-progress"]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    lrs = [float(r["lr"]) for r in rows if r.get("lr")]
    # the first session's cosine ran out (its rate fell to the floor); the larger budget is
    # re-planned: the rate rises once, to where a 0.1-minute cosine stands after the minutes
    # already trained (about half-way: well below the peak, so no restart), then falls
    rises = [i + 1 for i, (a, b) in enumerate(zip(lrs, lrs[1:])) if b > a * (1 + 1e-6)]
    assert len(rises) <= 1, lrs
    after = lrs[rises[0]:] if rises else lrs
    assert max(after) < 0.8 * max(lrs), lrs
    assert all(b <= a * (1 + 1e-6) for a, b in zip(after, after[1:])), lrs


def test_a_run_name_that_is_not_utf8(corpus, tmp_path, capsys):
    """Issue 20, second campaign: a run directory name that is not UTF-8 trains, then fails
    writing the plot (files changed before the refusal)."""
    out = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    code = main(["train", "--out", str(out), "--data", str(corpus), "--preset", "wiki-tiny",
                 "--steps", "1", "--batch-size", "2", "--eval-bytes", "0", "--no-progress"])
    capsys.readouterr()
    assert (code == 0 and (out / "loss.png").is_file()) or (code == 2 and not out.exists())
