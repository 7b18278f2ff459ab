"""mu-law coding, decoding WAV/FLAC/OGG to 12 kHz mono, and audio data-set preparation."""

import json

import numpy as np
import pytest
import soundfile as sf

from sparse_transformer.data import audio as au


def companded(x, mu=255):
    return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def test_mu_law_round_trip_within_one_step():
    x = np.concatenate([np.linspace(-1, 1, 20001), np.random.default_rng(0).uniform(-1, 1, 5000)])
    q = au.mu_law_encode(x)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    back = au.mu_law_decode(q).astype(np.float64)
    # one level is 2/255 wide in the companded domain; rounding errs by at most half of it
    assert np.abs(companded(x) - companded(back)).max() <= 1 / 255 + 1e-6
    # and decoding then encoding every code gives the code back
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(au.mu_law_encode(au.mu_law_decode(codes)), codes)
    assert np.all(np.diff(au.mu_law_decode(codes)) > 0)  # monotonic
    assert au.mu_law_encode(np.array([-1.0, 1.0, 3.0])).tolist() == [0, 255, 255]  # clipped


def test_mu_law_fine_near_zero():
    # mu-law spends its levels near zero: a quiet signal keeps much more detail than 8-bit linear
    x = 0.01 * np.sin(np.linspace(0, 20, 1000))
    err = np.abs(au.mu_law_decode(au.mu_law_encode(x)) - x).max()
    assert err < 0.0005  # linear 8-bit would err by up to 1/255 = 0.0039


def test_to_mono():
    x = np.stack([np.ones(100), -np.ones(100) * 0.5], axis=1)
    np.testing.assert_allclose(au.to_mono(x), 0.25)
    with pytest.raises(ValueError, match="channels-first"):
        au.to_mono(x.T, "clip")


def write_tone(path, rate, channels, seconds=0.5, freq=440.0, **kw):
    t = np.arange(int(rate * seconds)) / rate
    sig = 0.5 * np.sin(2 * np.pi * freq * t)
    data = np.stack([sig] * channels, axis=1) if channels > 1 else sig
    sf.write(str(path), data, rate, **kw)
    return sig


@pytest.mark.parametrize("suffix,rate,channels", [(".wav", 44100, 2), (".flac", 48000, 1),
                                                  (".ogg", 22050, 2), (".wav", 8000, 1)])
def test_decode_file_formats(tmp_path, suffix, rate, channels):
    p = tmp_path / f"tone{suffix}"
    write_tone(p, rate, channels)
    y = au.decode_file(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == -(-int(rate * 0.5) * 12000 // rate)
    want = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(len(y)) / 12000)
    tol = 0.02 if suffix == ".ogg" else 2e-3  # Vorbis is lossy
    assert np.abs(y - want)[200:-200].max() < tol


def test_decode_file_bad_input(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros((1000, 2)), 44100)
    with pytest.raises(ValueError, match="silent"):
        au.decode_file(silent)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1)), 44100)
    with pytest.raises(ValueError, match="no samples"):
        au.decode_file(empty)
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + bytes(100))
    with pytest.raises(ValueError, match="cannot decode"):
        au.decode_file(bad)


def make_folder(d):
    d.mkdir()
    write_tone(d / "a.wav", 44100, 2, freq=300)
    write_tone(d / "b.flac", 48000, 1, freq=500)
    (d / "sub").mkdir()
    write_tone(d / "sub" / "c.ogg", 22050, 2, freq=700)
    write_tone(d / "d.wav", 16000, 1, freq=900, seconds=0.25)
    (d / "readme.txt").write_text("ignored")


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_audio_folder(tmp_path, workers):
    src = tmp_path / "music"
    make_folder(src)
    out = tmp_path / "out"
    meta = au.prepare_audio_folder(out, path=src, workers=workers, progress=False)
    assert meta["kind"] == "audio" and meta["sample_rate"] == 12000
    assert meta["encoding"] == "mu-law-8"
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["counts"] == on_disk["sizes"] == meta["counts"]
    files = sorted(t["file"] for t in meta["tracks"])
    assert files == ["a.wav", "b.flac", "d.wav", "sub/c.ogg"]
    # every split holds whole tracks, bytes equal to encoding each file on its own
    for split in ("train", "valid", "test"):
        data = np.fromfile(out / f"{split}.bin", np.uint8)
        tracks = [t for t in meta["tracks"] if t["split"] == split]
        assert tracks and data.size == sum(t["samples"] for t in tracks)
        for t in tracks:
            want = au.mu_law_encode(au.decode_file(src / t["file"]))
            np.testing.assert_array_equal(data[t["offset"] : t["offset"] + t["samples"]], want)


def test_prepare_audio_folder_bad_file_writes_nothing(tmp_path):
    src = tmp_path / "music"
    make_folder(src)
    sf.write(str(src / "quiet.wav"), np.zeros(4000), 12000)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="quiet.wav.*silent"):
        au.prepare_audio_folder(out, path=src, workers=1, progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .wav"):
        au.prepare_audio_folder(out, path=empty, workers=1, progress=False)
