"""Readers of the real on-disk formats, on small files written here in those formats."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from sparse_transformer.data import formats


def planar(images_hwc):
    """[N, H, W, C] -> the channel-planar rows CIFAR-10 / downsampled ImageNet store."""
    n = images_hwc.shape[0]
    return images_hwc.transpose(0, 3, 1, 2).reshape(n, -1).copy()


def test_chw_to_hwc_matches_elementwise_definition():
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 256, (2, 3 * 4 * 5), dtype=np.uint8)
    out = formats.chw_to_hwc(flat, 4, 5, 3)
    for n in range(2):
        for r in range(4):
            for c in range(5):
                for ch in range(3):
                    assert out[n, r, c, ch] == flat[n, ch * 20 + r * 5 + c]


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_batch(tmp_path, protocol):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    labels = list(rng.integers(0, 10, 7))
    d = {b"batch_label": b"training batch 1 of 5", b"labels": [int(x) for x in labels],
         b"data": planar(imgs), b"filenames": [b"x.png"] * 7}
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps(d, protocol=protocol))
    got, got_labels = formats.read_cifar_batch(p)
    assert got.shape == (7, 32, 32, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, imgs)
    np.testing.assert_array_equal(got_labels, labels)


def test_cifar_batch_errors(tmp_path):
    p = tmp_path / "data_batch_1"
    rng = np.random.default_rng(0)
    for _ in range(200):  # random garbage: pickle raises many kinds of errors on it
        p.write_bytes(rng.integers(0, 256, 100, dtype=np.uint8).tobytes())
        with pytest.raises(ValueError, match="data_batch_1"):
            formats.read_cifar_batch(p)
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    p.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match="not a CIFAR-10"):
        formats.read_cifar_batch(p)
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 1000), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"\[n, 3072\]"):
        formats.read_cifar_batch(p)


def test_cifar_reader_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    p = tmp_path / "test_batch"
    p.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing"):
        formats.read_cifar_batch(p)
    assert not marker.exists()


def test_imagenet64_batch(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    p = tmp_path / "train_data_batch_1.npz"
    np.savez(p, data=planar(imgs), labels=np.array([1, 2, 3]), mean=np.zeros(12288))
    np.testing.assert_array_equal(formats.read_imagenet64_batch(p), imgs)
    np.savez(p, data=planar(imgs)[:, :1000], labels=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="12288"):
        formats.read_imagenet64_batch(p)
    p.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match="train_data_batch_1.npz"):
        formats.read_imagenet64_batch(p)


def write_idx(path, arr, compress=True):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [True, False])
def test_idx(tmp_path, compress):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(p, arr, compress)
    np.testing.assert_array_equal(formats.read_idx(p), arr)


def test_idx_errors(tmp_path):
    p = tmp_path / "x.gz"
    arr = np.zeros((5, 28, 28), np.uint8)
    write_idx(p, arr)
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match="need 3920 bytes"):
        formats.read_idx(p)
    p.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="cannot read IDX"):
        formats.read_idx(p)
    p.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(ValueError, match="bad magic"):
        formats.read_idx(p)


def test_image_files(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    (tmp_path / "sub").mkdir()
    Image.fromarray(rgb).save(tmp_path / "sub" / "a.png")
    Image.fromarray(rgb).save(tmp_path / "b.JPG", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    files = formats.list_image_files(tmp_path)
    assert [f.name for f in files] == ["b.JPG", "a.png"]
    np.testing.assert_array_equal(formats.read_image_file(files[1]), rgb)  # PNG is lossless
    gray = formats.read_image_file(files[1], channels=1)
    assert gray.shape == (10, 12, 1)
    assert formats.read_image_file(files[0]).shape == (10, 12, 3)
    (tmp_path / "c.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="c.png"):
        formats.read_image_file(tmp_path / "c.png")
