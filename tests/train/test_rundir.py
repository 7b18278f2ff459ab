"""A run directory has one owner: the lock, what --force may remove, signals, and what a resume
finds after a kill (metrics rows, temporaries, the final checkpoint before a failing eval)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparse_transformer.train import loop
from sparse_transformer.train.checkpoint import load_checkpoint
from sparse_transformer.train.config import TrainConfig
from sparse_transformer.train.loop import train
from sparse_transformer.train.metrics import read_metrics
from sparse_transformer.train.rundir import RunDirBusy, RunLock
from sparse_transformer.train.signals import Aborted, StopFlag


@pytest.fixture(autouse=True)
def _no_loss_picture(monkeypatch):
    monkeypatch.setattr(loop, "plot_loss_curve", lambda *a, **kw: None)  # 0.2 s a run


def cfg_for(byte_file, out, **kw) -> TrainConfig:
    base = dict(data=str(byte_file), preset="wiki-tiny", out=str(out), steps=2, batch_size=2,
                warmup=1, eval_every=0, eval_bytes=256, eval_batch=4, log_every=1,
                save_every=0, progress=False)
    return TrainConfig(**{**base, **kw})


def test_a_locked_run_directory_is_refused(byte_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):  # another process holds it (flock conflicts across open files)
        with pytest.raises(RunDirBusy, match=rf"in use by another training process \(pid "
                                             rf"{os.getpid()}\)"):
            train(cfg_for(byte_file, out))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    # the lock file a dead (or finished) owner left behind is stale: taken over
    (out / ".lock").write_text("999999\n")
    assert train(cfg_for(byte_file, out))["step"] == 2
    with RunLock(out):  # released when train() returned
        pass
    info = json.loads((out / "run.json").read_text())  # no TensorBoard unless asked for
    assert info["tensorboard"] is False and not (out / "tensorboard").exists()
    assert "tensorboard" not in info["files"] and ".lock" in info["files"]


def test_force_removes_only_what_a_run_wrote(byte_file, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(byte_file, out, steps=2, save_every=1, keep_last=0))
    assert len(list((out / "checkpoints").glob("step-*"))) == 2
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "mine.txt").write_text("inside our folder: ours to remove")
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg_for(byte_file, out, steps=1))
    train(cfg_for(byte_file, out, steps=1, force=True))
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "latest",
                                                                      "step-00000001"]
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == ["1"]


def test_a_directory_that_is_not_a_run(byte_file, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no run"):
        train(cfg_for(byte_file, out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    train(cfg_for(byte_file, out, steps=1, force=True))  # our files beside the user's
    assert (out / "notes.txt").read_text() == "mine" and (out / "run.json").is_file()
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "metrics.csv").write_text("my,own\n")
    with pytest.raises(ValueError, match="metrics.csv was not written by sparse-transformer"):
        train(cfg_for(byte_file, clash, force=True))  # never replaced, even with --force
    assert (clash / "metrics.csv").read_text() == "my,own\n"


def test_a_run_that_fails_to_start_leaves_nothing(byte_file, tmp_path, monkeypatch):
    """Issue 20: a new run on a full disk left its claimed directory (and .lock) behind. What
    the claim and the start created goes again; a user's file stays."""
    def full_disk(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop, "MetricsLogger", full_disk)  # after run.json was written
    with pytest.raises(OSError, match="No space left"):
        train(cfg_for(byte_file, tmp_path / "new" / "run"))
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="No space left"):
        train(cfg_for(byte_file, mine, force=True))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_disk_without_room_for_one_checkpoint_is_refused_first(byte_file, tmp_path,
                                                                  monkeypatch, capsys):
    """Before any work: refused where one checkpoint cannot fit (the run's training would be
    lost at its first save), nothing created; a warning where the kept ones may not."""
    import shutil

    from sparse_transformer.train import start

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(start.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OSError, match=r"a checkpoint of this model takes ~499\.9 KiB, 1000 "
                                      "bytes free at .*; free some space or choose another "
                                      "--out"):
        train(cfg_for(byte_file, tmp_path / "new" / "run"))
    assert not (tmp_path / "new").exists()
    one = start.param_count(start.ModelConfig.from_preset("wiki-tiny")) * 12
    monkeypatch.setattr(start.shutil, "disk_usage", lambda p: usage._replace(free=2 * one))
    train(cfg_for(byte_file, tmp_path / "run", steps=1))
    assert "the checkpoints this run keeps may take" in capsys.readouterr().err


def test_resume_after_a_kill_repeats_no_rows_and_cleans_temporaries(byte_file, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(byte_file, out, steps=4, save_every=2, keep_last=0))
    # as if killed at step 4: rows 3 and 4 were logged, and the step-4 save was cut off half
    # way, so the latest checkpoint is step 2
    ckpts = out / "checkpoints"
    (ckpts / "step-00000004").rename(ckpts / ".step-00000004.tmp-4242")
    (ckpts / "latest").write_text("step-00000002\n")
    s = train(cfg_for(byte_file, out, steps=4, resume=True))
    assert s["step"] == 4 and s["session_steps"] == 2
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == ["1", "2", "3", "4"]
    assert not list(ckpts.glob(".step-*"))
    tps = s["tokens_per_s"] * s["session_s"]  # tokens of this session's steps only
    assert tps == pytest.approx(2 * 2 * 64)


def test_final_checkpoint_is_saved_before_the_final_evaluation(byte_file, tmp_path,
                                                               monkeypatch):
    def broken(*a, **kw):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(loop, "evaluate_bpb", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train(cfg_for(byte_file, tmp_path / "run", steps=3))
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 3 and ckpt.train["reason"] == "final"


def test_a_signal_during_the_final_evaluation_cuts_it_short(byte_file, tmp_path, monkeypatch):
    """Issue 20: SIGTERM during the final evaluation lost the final metrics row, summary.json
    and loss.png, and a later resume crashed. Now the evaluation is cut short inside the
    signal-safe region, the rest is written, and --resume only runs the evaluation."""
    from sparse_transformer.evaluate import EvalResult

    def killed(*a, **kw):
        signal.raise_signal(signal.SIGTERM)  # the real handler, as the scheduler would
        raise AssertionError("the evaluation went on after the signal")

    monkeypatch.setattr(loop, "evaluate_bpb", killed)
    out = tmp_path / "run"
    s = train(cfg_for(byte_file, out, steps=2))
    assert s["stopped_by"] == signal.SIGTERM and s["valid_bpb"] is None
    assert json.loads((out / "summary.json").read_text())["stopped_by"] == signal.SIGTERM
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == ["1", "2"]
    monkeypatch.setattr(loop, "evaluate_bpb", lambda *a, **kw: EvalResult(2.5, 1, 1, 0))
    s = train(cfg_for(byte_file, out, steps=2, resume=True))
    assert (s["session_steps"], s["valid_bpb"], s["stopped_by"]) == (0, 2.5, None)
    rows = read_metrics(out / "metrics.csv")  # the validation joins step 2's row
    assert [(r["step"], r["valid_bpb"]) for r in rows] == [("1", ""), ("2", "2.5")]
    assert (out / "checkpoints" / "best").read_text().strip() == "step-00000002"
    with pytest.raises(ValueError, match="is finished .step 2, validation 2.5000"):
        train(cfg_for(byte_file, out, steps=2, resume=True))


def test_resume_refuses_a_checkpoint_replaced_while_it_was_checked(byte_file, tmp_path,
                                                                   monkeypatch):
    """RunLock review (issue 20): --resume read the checkpoint before taking the lock, so a
    training process that saved and released the lock in between was resumed from its stale
    checkpoint. The checkpoint is compared again under the lock."""
    out = tmp_path / "run"
    train(cfg_for(byte_file, out, steps=2))
    real = loop.claim_run_dir

    def another_process_saves_first(cfg, info, start):
        monkeypatch.setattr(loop, "claim_run_dir", real)
        train(cfg_for(byte_file, out, steps=3, resume=True))  # checked, then step 3 saved
        return real(cfg, info, start)

    monkeypatch.setattr(loop, "claim_run_dir", another_process_saves_first)
    with pytest.raises(RuntimeError, match="changed while it was being checked"):
        train(cfg_for(byte_file, out, steps=4, resume=True))
    assert load_checkpoint(out).step == 3
    with RunLock(out):  # and the lock was let go
        pass


def test_tensorboard_is_recorded_as_written(byte_file, tmp_path, monkeypatch):
    # a stand-in tensorboard that writes an event file, as the real one does on creation
    import importlib.machinery
    import types

    class SummaryWriter:
        def __init__(self, log_dir, purge_step=None):
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "events.out.tfevents.test").write_bytes(b"")
            self.scalars = []

        def add_scalar(self, *a):
            self.scalars.append(a)

        def close(self):
            pass

    fake = types.ModuleType("tensorboard")
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorboard", None)
    writer = types.ModuleType("torch.utils.tensorboard")
    writer.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "tensorboard", fake)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", writer)
    out = tmp_path / "tb"
    train(cfg_for(byte_file, out, steps=1, tensorboard=True))
    info = json.loads((out / "run.json").read_text())
    assert info["tensorboard"] is True and "tensorboard" in info["files"]


def test_a_second_signal_aborts():
    with StopFlag() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # the first: noted, training goes on
        with pytest.raises(Aborted) as err:
            signal.raise_signal(signal.SIGINT)
        assert err.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_sigterm_saves_a_checkpoint_and_resume_continues(byte_file, tmp_path):
    """The real thing: `sparse-transformer train` in a subprocess, stopped with SIGTERM."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "sparse_transformer", "train", "--data", str(byte_file),
           "--preset", "wiki-tiny", "--out", str(out), "--steps", "100000", "--batch-size", "2",
           "--eval-every", "0", "--save-every", "0", "--log-every", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            metrics = out / "metrics.csv"
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    step = load_checkpoint(out).step
    assert step >= 2 and f"stopped at step {step} by SIGTERM: checkpoint saved" in err
    s = train(TrainConfig(data=str(byte_file), preset="wiki-tiny", out=str(out), batch_size=2,
                          steps=step + 2, eval_every=0, eval_bytes=256, log_every=1,
                          save_every=0, progress=False, resume=True))
    assert s["step"] == step + 2 and s["session_steps"] == 2
    steps = [int(r["step"]) for r in read_metrics(out / "metrics.csv")]
    assert steps == list(range(1, step + 3))
