"""A tiny image model and a tiny audio model train a few steps on prepared data, are evaluated
in bits/dim or bits/byte, and write samples that PIL / soundfile open at the right sizes."""

import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sparse_transformer.data.audio import prepare_audio_folder
from sparse_transformer.data.images import prepare_image_folder
from sparse_transformer.cli.report import media_report
from sparse_transformer.train.loop import TrainConfig, train

TINY = dict(n_layer=1, d_model=16, n_head=2, n_ctx=64, attention="strided(stride=8, mode='split')")


def _train(data_dir, out, preset, model):
    cfg = TrainConfig(data=str(data_dir), preset=preset, model=model, out=str(out), steps=3,
                      batch_size=2, warmup=1, eval_every=0, eval_bytes=256, eval_batch=4,
                      log_every=1, save_every=3, progress=False, tensorboard=False)
    summary = train(cfg)
    assert summary["step"] == 3 and np.isfinite(summary["valid_bpb"])
    return summary


def test_tiny_image_model(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "imgs"
    src.mkdir()
    for k in range(8):  # 16x16 grayscale photos cut into four 8x8 tiles each
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(src / f"{k}.png")
    prepare_image_folder(tmp_path / "data", path=src, size=8, channels=1, mode="crop",
                         progress=False)
    model = dict(TINY, embedding="image", image_shape=[8, 8, 1])
    _train(tmp_path / "data", tmp_path / "run", "fashion-mnist-small", model)
    res = media_report(tmp_path / "run", str(tmp_path / "data"), tmp_path / "media",
                       n_unconditional=3, n_complete=2, samples_per_image=2, progress=False)
    assert res["unit"] == "bits/dim" and 0 < res["valid"] < 16 and 0 < res["test"] < 16
    scale = 64 // 8
    with Image.open(tmp_path / "media" / "samples.png") as im:  # 2x2 grid of 8x8, 2 px gaps
        assert im.mode == "L" and im.size == (scale * (2 * 10 + 2),) * 2
    with Image.open(tmp_path / "media" / "completions.png") as im:  # 2 rows: original + 2
        assert im.size == (scale * (3 * 10 + 2), scale * (2 * 10 + 2))
        grid = np.asarray(im)[::scale, ::scale]
    # top half of each completion equals the original's top half
    test = np.fromfile(tmp_path / "data" / "test.bin", np.uint8).reshape(-1, 8, 8)
    for row in range(2):
        y = 2 + row * 10
        for col in range(3):
            x = 2 + col * 10
            np.testing.assert_array_equal(grid[y : y + 4, x : x + 8], test[row, :4])
    assert (tmp_path / "media" / "curve.png").is_file()
    assert json.loads((tmp_path / "media" / "metrics.json").read_text())["unit"] == "bits/dim"


def test_tiny_audio_model(tmp_path):
    src = tmp_path / "wavs"
    src.mkdir()
    rng = np.random.default_rng(1)
    for k in range(4):
        sf.write(str(src / f"{k}.wav"), 0.3 * rng.standard_normal((3000, 2)), 24000)
    prepare_audio_folder(tmp_path / "data", path=src, workers=1, progress=False)
    _train(tmp_path / "data", tmp_path / "run", "audio-small", TINY)
    res = media_report(tmp_path / "run", str(tmp_path / "data"), tmp_path / "media",
                       audio_seconds=0.005, progress=False)
    assert res["unit"] == "bits/byte" and 0 < res["valid"] < 16
    info = sf.info(str(tmp_path / "media" / "unconditional.wav"))
    assert info.samplerate == 12000 and info.frames == 60 and info.channels == 1
    cont = sf.info(str(tmp_path / "media" / "continuation.wav"))
    assert cont.frames == 32 + 60  # n_ctx / 2 real samples, then the sampled ones


def test_report_rejects_text_data(tmp_path):
    d = tmp_path / "text"
    d.mkdir()
    (d / "t.txt").write_bytes(b"hello world " * 100)
    with pytest.raises(ValueError, match="image or audio data, not 'text'"):
        media_report(tmp_path / "missing-run", str(d / "t.txt"), tmp_path / "m", progress=False)
