"""A new user's first hour (issue 20): what `train`, `prepare`, `sample` and `report` say and
write by default. Each test names what failed on main."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sparse_transformer.cli import main
from sparse_transformer.codecs import loud_start, mu_law_encode
from sparse_transformer.data.registry import write_splits

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "n_layer=1", "--set", "d_model=16", "--set", "n_head=2"]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A two-update run of a tiny image model on random 4x4 images, trained through the CLI."""
    w = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (80, 16), dtype=np.uint8)
    write_splits(w / "data", name="tiny-images", kind="image", train=imgs[:60],
                 valid=imgs[60:70], test=imgs[70:], record_size=16, shape=[4, 4, 1])
    return w


def test_train_says_what_it_trains_and_logs_plainly(image_run, capsys, monkeypatch):
    """main: nothing until the end under --no-progress, no parameter count, and an image run
    ended in "bits per byte"."""
    from sparse_transformer.cli import train as cli_train

    monkeypatch.setattr(cli_train.TrainLog, "EVERY_S", 0.0)  # every --log-every update
    assert main(["train", "--preset", "fashion-mnist-small", "--data",
                 str(image_run / "data"), "--out", str(image_run / "run"), "--steps", "3",
                 "--batch-size", "2", "--log-every", "1", "--eval-every", "2",
                 "--eval-bytes", "0", "--no-progress", *TINY, "--set", "n_ctx=16",
                 "--set", "image_shape=[4, 4, 1]", "--set",
                 "attention=strided(stride=4, mode='split')"]) == 0
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines[0].startswith("train fashion-mnist-small: 1 layers, d_model 16, 2 heads, "
                               "n_ctx 16, strided(stride=4, mode='split'), ")
    assert "parameters; data " in lines[0] and "3 updates of batch 2 x 16 bytes" in lines[0]
    steps = [line for line in lines if line.startswith("step ")]
    assert [s.split(":")[0] for s in steps] == ["step 1/3", "step 2/3", "step 3/3"]
    assert "bits per dim" in steps[0] and "validation" in steps[1]
    assert "bits per byte" not in err + out
    assert out.startswith("step 3: validation ") and "bits per dim" in out
    from sparse_transformer.train.metrics import read_metrics

    assert {r["unit"] for r in read_metrics(image_run / "run" / "metrics.csv")} == {
        "bits per dim"}


def test_prepare_no_progress(tmp_path, capsys):
    """main: `prepare --no-progress` was refused as an unknown argument."""
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / f"{k}.png")
    assert main(["prepare", "image-folder", "--path", str(src), "--out",
                 str(tmp_path / "quiet"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "prepared in" in out
    assert main(["prepare", "image-folder", "--path", str(src), "--out",
                 str(tmp_path / "loud")]) == 0
    assert "images" in capsys.readouterr().err  # the bar, by default


def test_loud_start_skips_digital_silence():
    """main: the report's continuation began with the test split's first samples, 43 ms of
    digital silence at the start of a track."""
    rate = 12000
    t = np.arange(rate) / rate
    audio = np.concatenate([np.zeros(3000), 0.01 * np.ones(500), 0.5 * np.sin(880 * t)])
    q = mu_law_encode(audio)
    start = loud_start(q, 512)
    assert 3000 <= start <= 3500 + 256
    assert loud_start(mu_law_encode(np.zeros(5000)), 512) == 0  # all silence: the start
    assert loud_start(q[:100], 512) == 0  # shorter than a clip


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory) -> Path:
    """A one-update run of a tiny audio model on a track that starts with 0.25 s of silence."""
    w = tmp_path_factory.mktemp("audio")
    rate = 12000
    t = np.arange(2 * rate) / rate
    track = mu_law_encode(np.concatenate([np.zeros(rate // 4), 0.5 * np.sin(2 * np.pi * 440 * t)]))
    write_splits(w / "data", name="tiny-audio", kind="audio", train=track, valid=track[:4000],
                 test=track[:6000], sample_rate=rate)
    assert main(["train", "--preset", "audio-small", "--data", str(w / "data"), "--out",
                 str(w / "run"), "--steps", "1", "--batch-size", "1", "--eval-bytes", "0",
                 "--no-progress", *TINY, "--set", "n_ctx=64",
                 "--set", "attention=strided(stride=8, mode='split')"]) == 0
    return w


def test_report_prints_as_it_goes_and_continues_music(audio_run, capsys):
    """main: the report printed nothing until the end (15+ minutes on a CPU), scored whole
    splits, and continued from silence."""
    assert main(["report", "-c", str(audio_run / "run"), "--out", str(audio_run / "rep"),
                 "--seconds", "0.002", "--eval-bytes", "256", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("valid: ") and "bits/byte (the first 256 of 4,000 bytes" in lines[0]
    assert lines[1].startswith("test: ")
    assert any(line.startswith("wrote ") and "unconditional.wav" in line for line in lines)
    metrics = json.loads((audio_run / "rep" / "metrics.json").read_text())
    assert metrics["valid_scored"] == 256 and metrics["continuation_start"] >= 3000 - 32
    x, _ = sf.read(str(audio_run / "rep" / "continuation.wav"))
    assert np.abs(x[:32]).max() > 0.05  # the prompt is music, not silence


def test_sample_audio_defaults_to_seconds(audio_run, monkeypatch, tmp_path):
    """main: `sample` wrote the rest of one window, 64 samples here (85 ms for audio-small)."""
    import importlib

    import torch

    gen = importlib.import_module("sparse_transformer.sample.generate")

    asked = []

    def fake(model, prompt, n_bytes, **kwargs):  # the length, without minutes of sampling
        asked.append(n_bytes)
        return torch.zeros(prompt.shape[0], prompt.shape[1] + n_bytes, dtype=torch.long) + 128

    monkeypatch.setattr(gen, "generate", fake)
    assert main(["sample", "-c", str(audio_run / "run"), "--out", str(tmp_path / "a.wav"),
                 "--no-progress"]) == 0
    assert main(["sample", "-c", str(audio_run / "run"), "--out", str(tmp_path / "b.wav"),
                 "--seconds", "0.5", "--no-progress"]) == 0
    assert asked == [12000, 6000]
    assert sf.info(str(tmp_path / "a.wav")).duration == pytest.approx(1.0)


def test_demo_script_says_how_to_reach_the_cli_and_trains_fixed_updates():
    """main: after `make demo` nothing said how to run `sparse-transformer` (it is in .venv),
    and the demo trained for 7.5 minutes of wall clock: 287 updates on a busy machine."""
    text = (ROOT / "scripts" / "demo.sh").read_text()
    assert "source .venv/bin/activate" in text and ".venv/bin/sparse-transformer" in text
    assert '--steps "$STEPS"' in text and "STEPS=${DEMO_STEPS:-2500}" in text
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "demo.sh")]).returncode == 0
    readme = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in readme
    assert "[hint:" not in (ROOT / "docs" / "sampling.md").read_text()
