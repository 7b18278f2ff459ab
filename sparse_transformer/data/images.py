"""Images as byte sequences; image data sets (CIFAR-10, ImageNet 64x64, Fashion-MNIST, folders).

An image of shape (H, W, C) is modelled as H*W*C bytes (values 0-255, vocabulary 256) in raster
order with the channels of a pixel consecutive: byte i has row i // (W*C), column (i // C) % W
and channel i % C, the three coordinates whose learned tables are summed into its position
embedding (paper 5.3, Eq. 15). A prepared image data set stores whole
images back to back, so record k of a split is bytes [k*H*W*C, (k+1)*H*W*C) and training draws
whole records (n_ctx = record_size).

Splits (paper 7.1, 7.3):
- cifar10: train = first 48,000 images of data_batch_1..5, valid = last 2,000, test = test_batch
  (the paper's 48,000 / 2,000 split; best model reported on the test set).
- imagenet64: train = train_data_batch_*.npz less the last ``valid_size`` (10,000) images,
  valid = those, test = val_data.npz (the 50,000 images the paper's 3.44 bits/dim is measured on).
- fashion-mnist: train = first 55,000 of the 60,000 training images, valid = last 5,000,
  test = the 10,000 t10k images.
- image-folder: whole source files are shuffled (seed 0) and split 90/5/5, so patches of one
  photograph never straddle splits.

Shapes: N images, H rows, W columns, C channels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

# The byte layout lives in the leaf module shared with sampling; re-exported here.
from sparse_transformer.codecs import flatten_images, unflatten_images, write_image_samples
from sparse_transformer.data import formats
from sparse_transformer.data.atomic import prepared_writer
from sparse_transformer.data.progress import progress_enabled

__all__ = [
    "flatten_images",
    "image_coordinates",
    "prepare_cifar10",
    "prepare_fashion_mnist",
    "prepare_image_folder",
    "prepare_imagenet64",
    "unflatten_images",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


# ----------------------------------------------------------------------------- byte layout


def image_coordinates(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, channel) of each of the H*W*C byte positions, each int64 [H*W*C]."""
    h, w, c = (int(s) for s in shape)
    i = np.arange(h * w * c)
    return i // (w * c), (i // c) % w, i % c


def _image_meta(name: str, shape: tuple[int, int, int], counts: dict[str, int], source: str,
                license: str, **extra) -> dict:
    h, w, c = shape
    return {"name": name, "kind": "image", "record_size": h * w * c, "shape": [h, w, c],
            "encoding": "uint8", "source": source, "license": license, "counts": counts, **extra}


def _write_split(writer, split: str, images: np.ndarray, counts: dict[str, int]) -> None:
    writer.write(split, flatten_images(images))
    counts[split] = counts.get(split, 0) + len(images)


def _progress(items: list, desc: str, progress: bool) -> Iterable:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file")


# ----------------------------------------------------------------------------- CIFAR-10


def prepare_cifar10(out_dir: str | Path, *, path: str | Path | None = None, valid_size: int = 2000,
                    progress: bool = True) -> dict:
    """CIFAR-10 from its python batches in ``path`` (data_batch_1..5, test_batch) -> out_dir.

    Train/valid = first 50,000 - ``valid_size`` / last ``valid_size`` images of the training
    batches in order (paper: 48,000 / 2,000), test = test_batch. Returns the meta dict.
    """
    if path is None:
        raise ValueError("cifar10 needs --path DIR with data_batch_1..5 and test_batch "
                         "(the 'CIFAR-10 python version'); it cannot be downloaded here")
    path = Path(path)
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise ValueError(f"{path}: missing CIFAR-10 batch file(s) {', '.join(missing)}")
    # Read everything before writing anything: 150 MB fits in memory and a corrupt last batch
    # must not leave a half-prepared set.
    train = [formats.read_cifar_batch(path / n)[0]
             for n in _progress(names[:5], "cifar10", progress)]
    test = formats.read_cifar_batch(path / "test_batch")[0]
    train = np.concatenate(train)
    if not 0 < valid_size < len(train):
        raise ValueError(f"valid_size must be in 1..{len(train) - 1}, got {valid_size}")
    counts: dict[str, int] = {}
    with prepared_writer(out_dir) as w:
        _write_split(w, "train", train[: len(train) - valid_size], counts)
        _write_split(w, "valid", train[len(train) - valid_size :], counts)
        _write_split(w, "test", test, counts)
        w.meta = _image_meta("cifar10", (32, 32, 3), counts, f"CIFAR-10 python batches in {path}",
                             "see https://www.cs.toronto.edu/~kriz/cifar.html")
    return w.meta


# ----------------------------------------------------------------------------- ImageNet 64x64


def _batch_number(p: Path) -> int:
    m = re.search(r"(\d+)\.npz$", p.name)
    return int(m.group(1)) if m else 0


def prepare_imagenet64(out_dir: str | Path, *, path: str | Path | None = None,
                       valid_size: int = 10000, size: int = 64, progress: bool = True) -> dict:
    """Downsampled ImageNet from ``path`` (train_data_batch_*.npz, val_data.npz) -> out_dir.

    Batches are converted from channel-planar to HWC raster order and streamed to disk one at
    a time (the full training set is 15.7 GB). The last ``valid_size`` training images form
    the validation split; val_data.npz is the test split (the paper's reported set).
    """
    if path is None:
        raise ValueError("imagenet64 needs --path DIR with train_data_batch_*.npz and val_data.npz "
                         "(downsampled ImageNet, npz format); it cannot be downloaded here")
    path = Path(path)
    train_files = sorted(path.glob("train_data_batch_*.npz"), key=_batch_number)
    val_file = path / "val_data.npz"
    if not train_files or not val_file.is_file():
        raise ValueError(f"{path}: need train_data_batch_*.npz and val_data.npz")
    last = formats.read_imagenet64_batch(train_files[-1], size)  # validated before any write
    if not 0 < valid_size < len(last):
        raise ValueError(f"valid_size must be in 1..{len(last) - 1} (the last batch has "
                         f"{len(last)} images), got {valid_size}")
    counts: dict[str, int] = {}
    with prepared_writer(out_dir) as w:
        for f in _progress(train_files[:-1], "imagenet64", progress):
            _write_split(w, "train", formats.read_imagenet64_batch(f, size), counts)
        _write_split(w, "train", last[: len(last) - valid_size], counts)
        _write_split(w, "valid", last[len(last) - valid_size :], counts)
        _write_split(w, "test", formats.read_imagenet64_batch(val_file, size), counts)
        w.meta = _image_meta("imagenet64", (size, size, 3), counts,
                             f"downsampled ImageNet npz batches in {path}",
                             "ImageNet terms of access (non-commercial research)")
    return w.meta


# ----------------------------------------------------------------------------- Fashion-MNIST


def prepare_fashion_mnist(out_dir: str | Path, *, path: str | Path | None = None,
                          valid_size: int = 5000, cache_dir: str | Path | None = None,
                          progress: bool = True) -> dict:
    """Fashion-MNIST (28x28x1) from the IDX files of Debian ``dataset-fashion-mnist`` -> out_dir.

    ``path`` defaults to the package's directory, fetched by `sparse_transformer.data.debian`
    when the package is not installed. Train = first 60,000 - ``valid_size``, valid = last
    ``valid_size`` (5,000) of the training file, test = the 10,000 t10k images.
    """
    if path is None:
        from sparse_transformer.data.debian import debian_files

        path = debian_files("dataset-fashion-mnist", FASHION_MNIST_DIR, cache_dir=cache_dir,
                            verbose=progress)
    path = Path(path)

    def find(stem: str) -> Path:
        for cand in (path / f"{stem}.gz", path / stem):
            if cand.is_file():
                return cand
        raise ValueError(f"{path}: missing Fashion-MNIST file {stem}.gz")

    train = formats.read_idx(find("train-images-idx3-ubyte"))
    test = formats.read_idx(find("t10k-images-idx3-ubyte"))
    for arr, f in ((train, "train-images"), (test, "t10k-images")):
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != (28, 28):
            raise ValueError(f"{path}: {f} must be uint8 [n, 28, 28], got {arr.dtype} {arr.shape}")
    if not 0 < valid_size < len(train):
        raise ValueError(f"valid_size must be in 1..{len(train) - 1}, got {valid_size}")
    train, test = train[..., None], test[..., None]  # [N, 28, 28, 1]
    counts: dict[str, int] = {}
    with prepared_writer(out_dir) as w:
        _write_split(w, "train", train[: len(train) - valid_size], counts)
        _write_split(w, "valid", train[len(train) - valid_size :], counts)
        _write_split(w, "test", test, counts)
        w.meta = _image_meta("fashion-mnist", (28, 28, 1), counts,
                             f"Fashion-MNIST IDX files in {path} (Debian dataset-fashion-mnist)",
                             "MIT (Zalando SE)")
    return w.meta


# ----------------------------------------------------------------------------- image folders


def fit_image(img: np.ndarray, size: int, mode: str, source: str = "image") -> np.ndarray:
    """One [H, W, C] image -> [K, size, size, C] according to ``mode``.

    "resize": centre-crop to a square, then resize (Lanczos) to size x size (K = 1);
    "crop": cut non-overlapping size x size tiles in raster order (K = (H//size)*(W//size));
    "exact": the image must already be size x size (K = 1).
    """
    h, w, c = img.shape
    if mode == "exact":
        if (h, w) != (size, size):
            raise ValueError(f"{source}: image is {w}x{h}, expected exactly {size}x{size} "
                             "(use --mode resize or crop)")
        return img[None]
    if h < size or w < size:
        raise ValueError(f"{source}: image is {w}x{h}, smaller than {size}x{size}")
    if mode == "crop":
        nh, nw = h // size, w // size
        tiles = img[: nh * size, : nw * size].reshape(nh, size, nw, size, c)
        return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3, 4).reshape(-1, size, size, c))
    if mode == "resize":
        from PIL import Image

        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        sq = img[top : top + s, left : left + s]
        pil = Image.fromarray(sq[..., 0] if c == 1 else sq)
        out = np.asarray(pil.resize((size, size), Image.LANCZOS), dtype=np.uint8)
        return out.reshape(1, size, size, c)
    raise ValueError(f"mode must be 'resize', 'crop' or 'exact', got {mode!r}")


def split_indices(n: int, fractions=(0.9, 0.05, 0.05), seed: int = 0) -> dict[str, np.ndarray]:
    """Shuffle range(n) with ``seed`` and cut it by ``fractions``; valid and test get >= 1 each."""
    if n < 3:
        raise ValueError(f"need at least 3 source files to make train/valid/test splits, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, round(n * fractions[1]))
    n_test = max(1, round(n * fractions[2]))
    n_train = n - n_valid - n_test
    return {"train": np.sort(order[:n_train]), "valid": np.sort(order[n_train : n_train + n_valid]),
            "test": np.sort(order[n_train + n_valid :])}


def prepare_image_folder(out_dir: str | Path, *, path: str | Path | None = None, size: int = 32,
                         channels: int = 3, mode: str = "resize", seed: int = 0,
                         progress: bool = True) -> dict:
    """Every PNG/JPEG under ``path`` -> size x size x channels records, split 90/5/5 by file."""
    if path is None:
        raise ValueError("image-folder needs --path DIR (a folder of PNG/JPEG images)")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    files = formats.list_image_files(path)
    if not files:
        raise ValueError(f"{path}: no .png/.jpg/.jpeg images found")
    splits = split_indices(len(files), seed=seed)
    which = {int(i): s for s, idx in splits.items() for i in idx}
    # Decode and check every file before writing, so a bad image leaves nothing behind.
    parts: dict[str, list[np.ndarray]] = {s: [] for s in splits}
    for k, f in enumerate(_progress(files, "images", progress)):
        img = formats.read_image_file(f, channels)
        parts[which[k]].append(fit_image(img, size, mode, str(f)))
    counts: dict[str, int] = {}
    with prepared_writer(out_dir) as w:
        for s, arrs in parts.items():
            _write_split(w, s, np.concatenate(arrs), counts)
        w.meta = _image_meta(Path(out_dir).name, (size, size, channels), counts,
                             f"image folder {path} ({len(files)} files, mode {mode})",
                             "as the source images", files={s: len(v) for s, v in splits.items()})
    return w.meta


# ----------------------------------------------------------------------------- registry hooks
# `sparse-transformer prepare NAME` calls prepare_fn(out_dir, source=--path, cache_dir=...).


# ``progress_enabled()`` is off under ``prepare --no-progress`` (data/progress.py).


def _cifar10(out_dir: Path, *, source: str | None = None, cache_dir: Path | None = None) -> None:
    prepare_cifar10(out_dir, path=source, progress=progress_enabled())


def _imagenet64(out_dir: Path, *, source: str | None = None, cache_dir: Path | None = None) -> None:
    prepare_imagenet64(out_dir, path=source, progress=progress_enabled())


def _fashion_mnist(out_dir: Path, *, source: str | None = None,
                   cache_dir: Path | None = None) -> None:
    prepare_fashion_mnist(out_dir, path=source, cache_dir=cache_dir, progress=progress_enabled())


def _image_folder(out_dir: Path, *, source: str | None = None, cache_dir: Path | None = None,
                  size: int = 32, channels: int = 3, mode: str = "resize") -> None:
    prepare_image_folder(out_dir, path=source, size=size, channels=channels, mode=mode,
                         progress=progress_enabled())


def _register() -> None:
    from sparse_transformer.data.registry import register_dataset, register_writer

    register_dataset("fashion-mnist", _fashion_mnist,
                     help="Fashion-MNIST 28x28x1 from Debian dataset-fashion-mnist "
                          "(55,000/5,000/10,000 images; fetched with apt-get download)")
    register_dataset("cifar10", _cifar10,
                     help="CIFAR-10 from --path DIR of python batches (48,000/2,000/10,000)")
    register_dataset("imagenet64", _imagenet64,
                     help="downsampled ImageNet 64x64 from --path DIR of npz batches")
    register_dataset("image-folder", _image_folder,
                     help="every PNG/JPEG under --path DIR, resized to 32x32x3, split by file")
    register_writer("image", write_image_samples)


_register()
