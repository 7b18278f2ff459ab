"""Images as bytes (raster order, channels consecutive) and the image data-set preparers."""

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sparse_transformer.data import images as im


def planar(x):
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1).copy()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6), c=st.sampled_from([1, 3, 4]),
       seed=st.integers(0, 2**16))
def test_flatten_roundtrip_and_order(n, h, w, c, seed):
    x = np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)
    flat = im.flatten_images(x)
    assert flat.shape == (n, h * w * c)
    np.testing.assert_array_equal(im.unflatten_images(flat, (h, w, c)), x)
    rows, cols, chans = im.image_coordinates((h, w, c))
    # byte i of an image is the sub-pixel at its (row, column, channel)
    np.testing.assert_array_equal(flat[0], x[0, rows, cols, chans])
    # channels of one pixel are consecutive: bytes 0..c-1 are pixel (0, 0)
    np.testing.assert_array_equal(flat[0, :c], x[0, 0, 0, :])


def test_coordinates_match_model_embedding():
    torch = pytest.importorskip("torch")
    from sparse_transformer.model.config import ModelConfig
    from sparse_transformer.model.embeddings import position_coordinates

    cfg = ModelConfig.from_preset("cifar10")
    ours = im.image_coordinates((32, 32, 3))
    theirs = position_coordinates(cfg, 3072)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b.numpy())
    assert isinstance(theirs[0], torch.Tensor)


def test_flatten_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        im.flatten_images(np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        im.flatten_images(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="whole number"):
        im.unflatten_images(np.zeros(13, np.uint8), (2, 2, 3))


def read_split(d, split, shape):
    return im.unflatten_images(np.fromfile(Path(d) / f"{split}.bin", np.uint8), shape)


def make_cifar(d, n_per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir()
    batches = []
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
        batches.append(x)
        obj = {b"data": planar(x), b"labels": list(range(n_per_batch)), b"batch_label": b"b"}
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    return batches


def test_prepare_cifar10(tmp_path):
    batches = make_cifar(tmp_path / "cifar-10-batches-py")
    out = tmp_path / "out"
    meta = im.prepare_cifar10(out, path=tmp_path, valid_size=4, progress=False)
    train = np.concatenate(batches[:5])
    assert meta["counts"] == {"train": 26, "valid": 4, "test": 6}
    assert meta["record_size"] == 3072 and meta["shape"] == [32, 32, 3] and meta["kind"] == "image"
    assert json.loads((out / "meta.json").read_text())["sizes"]["train"] == 26 * 3072
    np.testing.assert_array_equal(read_split(out, "train", (32, 32, 3)), train[:26])
    np.testing.assert_array_equal(read_split(out, "valid", (32, 32, 3)), train[26:])
    np.testing.assert_array_equal(read_split(out, "test", (32, 32, 3)), batches[5])


def test_prepare_cifar10_corrupt_batch_writes_nothing(tmp_path):
    make_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("older prepared copy")
    with pytest.raises(ValueError, match="data_batch_3"):
        im.prepare_cifar10(out, path=tmp_path / "c", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="missing CIFAR-10 batch file"):
        im.prepare_cifar10(tmp_path / "o2", path=tmp_path / "c", progress=False)
    assert not (tmp_path / "o2").exists()


def test_prepare_imagenet64(tmp_path):
    rng = np.random.default_rng(5)
    train = [rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8) for _ in range(3)]
    val = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    # numbering 1, 2, 10: order must be numeric, not lexicographic
    for k, x in zip((1, 2, 10), train):
        np.savez(tmp_path / f"train_data_batch_{k}.npz", data=planar(x), labels=np.ones(4))
    np.savez(tmp_path / "val_data.npz", data=planar(val), labels=np.ones(3))
    out = tmp_path / "out"
    meta = im.prepare_imagenet64(out, path=tmp_path, valid_size=3, progress=False)
    assert meta["counts"] == {"train": 9, "valid": 3, "test": 3}
    allt = np.concatenate(train)
    np.testing.assert_array_equal(read_split(out, "train", (64, 64, 3)), allt[:9])
    np.testing.assert_array_equal(read_split(out, "valid", (64, 64, 3)), allt[9:])
    np.testing.assert_array_equal(read_split(out, "test", (64, 64, 3)), val)


def write_idx_gz(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


def test_prepare_fashion_mnist_from_idx(tmp_path):
    rng = np.random.default_rng(6)
    tr = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    write_idx_gz(tmp_path / "train-images-idx3-ubyte.gz", tr)
    write_idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", te)
    out = tmp_path / "fm"
    meta = im.prepare_fashion_mnist(out, path=tmp_path, valid_size=2, progress=False)
    assert meta["counts"] == {"train": 7, "valid": 2, "test": 4}
    assert meta["record_size"] == 784 and meta["shape"] == [28, 28, 1]
    np.testing.assert_array_equal(read_split(out, "valid", (28, 28, 1))[..., 0], tr[7:])
    np.testing.assert_array_equal(read_split(out, "test", (28, 28, 1))[..., 0], te)
    write_idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", te[:, :20])  # wrong size
    with pytest.raises(ValueError, match=r"\[n, 28, 28\]"):
        im.prepare_fashion_mnist(tmp_path / "fm2", path=tmp_path, progress=False)
    assert not (tmp_path / "fm2").exists()


def _installed_fashion_mnist():
    from sparse_transformer.data.debian import default_cache_dir

    rel = im.FASHION_MNIST_DIR.lstrip("/")
    for d in (Path(im.FASHION_MNIST_DIR),
              default_cache_dir() / "debian/dataset-fashion-mnist" / rel,
              Path("data/.cache/debian/dataset-fashion-mnist") / rel):
        if (d / "train-images-idx3-ubyte.gz").is_file():
            return d
    return None


def test_real_fashion_mnist_counts(tmp_path):
    src = _installed_fashion_mnist()
    if src is None:
        pytest.skip("Debian dataset-fashion-mnist is neither installed nor fetched into a cache "
                    "(run `sparse-transformer prepare fashion-mnist` once)")
    meta = im.prepare_fashion_mnist(tmp_path / "fm", path=src, progress=False)
    assert meta["counts"] == {"train": 55000, "valid": 5000, "test": 10000}
    train = np.fromfile(tmp_path / "fm" / "train.bin", np.uint8)
    valid = np.fromfile(tmp_path / "fm" / "valid.bin", np.uint8)
    # the known Fashion-MNIST training mean, 0.2860 * 255 (data.md I1)
    assert abs(np.concatenate([train, valid]).mean() - 72.94) < 0.01


def test_fit_image_modes():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    tiles = im.fit_image(img, 32, "crop")
    assert tiles.shape == (2 * 3, 32, 32, 3)
    np.testing.assert_array_equal(tiles[4], img[32:64, 32:64])  # row 1, column 1 of the tiling
    assert im.fit_image(img, 32, "resize").shape == (1, 32, 32, 3)
    flat = np.full((50, 80, 1), 17, np.uint8)
    np.testing.assert_array_equal(im.fit_image(flat, 16, "resize"), np.full((1, 16, 16, 1), 17))
    with pytest.raises(ValueError, match="expected exactly 32x32"):
        im.fit_image(img, 32, "exact", "a.png")
    with pytest.raises(ValueError, match="smaller than 128x128"):
        im.fit_image(img, 128, "crop")


def test_prepare_image_folder(tmp_path):
    rng = np.random.default_rng(8)
    src = tmp_path / "src"
    src.mkdir()
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(src / f"{k}.png")
    meta = im.prepare_image_folder(tmp_path / "o", path=src, size=20, channels=3, mode="exact",
                                   progress=False)
    assert sum(meta["counts"].values()) == 6 and min(meta["counts"].values()) >= 1
    assert meta["shape"] == [20, 20, 3]
    # every record is one of the source images, exactly
    sources = {np.asarray(Image.open(src / f"{k}.png")).tobytes() for k in range(6)}
    for split in ("train", "valid", "test"):
        for rec in read_split(tmp_path / "o", split, (20, 20, 3)):
            assert rec.tobytes() in sources
    gray = im.prepare_image_folder(tmp_path / "g", path=src, size=8, channels=1, mode="crop",
                                   progress=False)
    assert sum(gray["counts"].values()) == 6 * 4 and gray["record_size"] == 64


def test_prepare_image_folder_wrong_size_writes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(4):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / f"{k}.png")
    Image.fromarray(np.zeros((16, 15, 3), np.uint8)).save(src / "odd.png")
    with pytest.raises(ValueError, match="odd.png.*15x16"):
        im.prepare_image_folder(tmp_path / "o", path=src, size=16, mode="exact", progress=False)
    assert not (tmp_path / "o").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .png"):
        im.prepare_image_folder(tmp_path / "o", path=empty, progress=False)


def test_split_indices():
    s = im.split_indices(41)
    assert (len(s["train"]), len(s["valid"]), len(s["test"])) == (37, 2, 2)
    allidx = np.concatenate(list(s.values()))
    assert sorted(allidx.tolist()) == list(range(41))
    np.testing.assert_array_equal(im.split_indices(41)["test"], s["test"])  # deterministic
    with pytest.raises(ValueError, match="at least 3"):
        im.split_indices(2)


@pytest.mark.parametrize("preset,shape", [("cifar10", (32, 32, 3)), ("imagenet64", (64, 64, 3)),
                                          ("fashion-mnist-small", (28, 28, 1))])
def test_image_presets_fit_the_prepared_records(preset, shape):
    from sparse_transformer.model.config import ModelConfig

    cfg = ModelConfig.from_preset(preset)
    meta = im._image_meta(preset, shape, {}, "", "")
    assert cfg.embedding == "image" and tuple(cfg.image_shape) == tuple(meta["shape"])
    assert cfg.n_ctx == meta["record_size"]  # one whole image per training window
