"""PNG grids and WAV files open with standard readers (PIL, soundfile) at the right sizes;
sample writers never replace an existing file unless asked."""

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from sparse_transformer.data.audio import mu_law_decode, mu_law_encode
from sparse_transformer.data.registry import get_writer
from sparse_transformer import codecs


def test_image_grid_layout():
    imgs = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    g = codecs.image_grid(imgs, ncols=3, pad=1, pad_value=255)
    assert g.shape == (2 * (2 + 1) + 1, 3 * (3 + 1) + 1, 3)
    np.testing.assert_array_equal(g[1:3, 1:4], imgs[0])
    np.testing.assert_array_equal(g[4:6, 5:8], imgs[4])  # row 1, column 1
    assert (g[4:6, 9:12] == 255).all()  # the empty sixth cell
    with pytest.raises(ValueError, match="uint8"):
        codecs.image_grid(imgs.astype(np.float32))


@pytest.mark.parametrize("c,mode", [(1, "L"), (3, "RGB")])
def test_png_grid_opens_with_pil(tmp_path, c, mode):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28, c), dtype=np.uint8)
    p = codecs.write_png_grid(imgs, tmp_path / "g.png", ncols=3, scale=1)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.mode == mode
        assert im.size == (3 * 30 + 2, 2 * 30 + 2)
        arr = np.asarray(im).reshape(im.size[1], im.size[0], c)
    np.testing.assert_array_equal(arr[2:30, 32:60], imgs[1])
    big = codecs.write_png_grid(imgs, tmp_path / "big.png", ncols=3)  # default scale: 64 // 28 = 2
    with Image.open(big) as im:
        assert im.size == (2 * (3 * 30 + 2), 2 * (2 * 30 + 2))


def test_completion_grid(tmp_path):
    rng = np.random.default_rng(1)
    orig = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    comp = rng.integers(0, 256, (2, 3, 4, 4, 3), dtype=np.uint8)
    p = codecs.write_completion_grid(orig, comp, tmp_path / "c.png", scale=1)
    with Image.open(p) as im:
        assert im.size == (4 * 6 + 2, 2 * 6 + 2)
        arr = np.asarray(im)
    np.testing.assert_array_equal(arr[2:6, 2:6], orig[0])
    np.testing.assert_array_equal(arr[8:12, 8:12], comp[1, 0])
    with pytest.raises(ValueError, match="do not match"):
        codecs.write_completion_grid(orig, comp[:1], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_wav_opens_with_soundfile(tmp_path):
    t = np.arange(12000) / 12000
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    p = codecs.write_wav(tmp_path / "a.wav", x, 12000)
    y, rate = sf.read(p)
    assert rate == 12000 and y.shape == (12000,)
    assert sf.info(p).subtype == "PCM_16"
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-9)
    stereo = codecs.write_wav(tmp_path / "s.wav", np.stack([x, -x], axis=1), 12000)
    assert sf.info(stereo).channels == 2


def test_mu_law_wav_round_trip(tmp_path):
    q = mu_law_encode(0.5 * np.sin(np.linspace(0, 300, 6000)))
    p = codecs.write_mu_law_wav(tmp_path / "m.wav", q, 12000)
    y, rate = sf.read(p, dtype="float32")
    assert rate == 12000 and y.shape == (6000,)
    np.testing.assert_array_equal(mu_law_encode(y), q)  # 16-bit PCM keeps every mu-law level
    np.testing.assert_allclose(y, mu_law_decode(q), atol=1 / 32768)


def test_wav_bad_input_writes_nothing(tmp_path):
    x = np.zeros((2, 5000), np.float32)  # channels-first by mistake
    with pytest.raises(ValueError, match="channels-first"):
        codecs.write_wav(tmp_path / "x.wav", x, 12000)
    with pytest.raises(ValueError, match="no audio samples"):
        codecs.write_wav(tmp_path / "x.wav", np.zeros(0), 12000)
    with pytest.raises(ValueError, match="one mu-law stream"):
        codecs.write_mu_law_wav(tmp_path / "x.wav", np.zeros((2, 10), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_registry_writers(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (4, 8 * 8 * 3), dtype=np.uint8)
    (png,) = get_writer("image")(imgs, str(tmp_path / "s"), {"shape": [8, 8, 3]})
    assert png.endswith("s.png")
    with Image.open(png) as im:
        assert im.size == (8 * (2 * 10 + 2), 8 * (2 * 10 + 2))  # 2x2 grid, scale 64 // 8
    wavs = get_writer("audio")(rng.integers(0, 256, (2, 300), dtype=np.uint8),
                               str(tmp_path / "a.wav"), {"sample_rate": 12000})
    assert [p[-8:] for p in wavs] == ["/a-0.wav", "/a-1.wav"]
    assert all(sf.info(p).frames == 300 and sf.info(p).samplerate == 12000 for p in wavs)


def test_sample_writers_refuse_existing_files(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (1, 4 * 4 * 1), dtype=np.uint8)
    mine = tmp_path / "s.png"
    mine.write_bytes(b"my picture")
    with pytest.raises(FileExistsError, match="s.png exists; pass --force"):
        get_writer("image")(imgs, str(tmp_path / "s"), {"shape": [4, 4, 1]})
    assert mine.read_bytes() == b"my picture"
    get_writer("image")(imgs, str(tmp_path / "s"), {"shape": [4, 4, 1]}, force=True)
    with Image.open(mine) as im:
        assert im.format == "PNG"
    # several WAVs: the second name exists, so not even the first is written
    (tmp_path / "a-1.wav").write_bytes(b"my recording")
    audio = rng.integers(0, 256, (2, 50), dtype=np.uint8)
    with pytest.raises(FileExistsError, match="a-1.wav exists"):
        get_writer("audio")(audio, str(tmp_path / "a.wav"), {"sample_rate": 12000})
    assert not (tmp_path / "a-0.wav").exists()
    assert (tmp_path / "a-1.wav").read_bytes() == b"my recording"
