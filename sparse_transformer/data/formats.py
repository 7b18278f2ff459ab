"""Readers for the standard on-disk formats of image data sets, returning uint8 [N, H, W, C].

Every reader returns images in HWC layout (row, column, channel), the order in which
`sparse_transformer.data.images` flattens them into byte sequences (paper 5.3,
"Embeddings": row, column and channel of each byte). Readers raise a one-line ``ValueError``
naming the file when it is not in the expected format.

    read_cifar_batch(path)        CIFAR-10 python pickle batch   -> [10000, 32, 32, 3], labels
    read_imagenet64_batch(path)   downsampled ImageNet .npz batch -> [n, 64, 64, 3]
    read_idx(path)                IDX (MNIST / Fashion-MNIST), raw or .gz -> ndarray
    read_image_file(path, ...)    one PNG/JPEG as [H, W, C]
    list_image_files(folder)      sorted PNG/JPEG files under a folder
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "chw_to_hwc",
    "list_image_files",
    "read_cifar_batch",
    "read_idx",
    "read_image_file",
    "read_imagenet64_batch",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def chw_to_hwc(flat: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Planar rows [N, C*H*W] (all of channel 0, then channel 1, ...) -> [N, H, W, C] uint8.

    CIFAR-10 and downsampled ImageNet store each image channel-planar; the model reads the
    channels of one pixel consecutively, so the planes are interleaved here.
    """
    flat = np.asarray(flat)
    if flat.ndim != 2 or flat.shape[1] != channels * height * width:
        raise ValueError(
            f"expected rows of {channels}*{height}*{width}={channels * height * width} values, "
            f"got array of shape {tuple(flat.shape)}"
        )
    return np.ascontiguousarray(flat.reshape(-1, channels, height, width).transpose(0, 2, 3, 1))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers and nothing else.

    CIFAR-10 batches are pickles; unpickling an arbitrary file can run arbitrary code, so
    only the few globals that numpy arrays need are allowed.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``data_batch_1`` .. ``_5``, ``test_batch``).

    The file is a pickled dict with ``data`` uint8 [n, 3072] (1024 red, 1024 green, 1024 blue
    values, each plane in row-major order) and ``labels`` (n ints). Returns
    (images uint8 [n, 32, 32, 3], labels int64 [n]).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - garbage can raise anything (OverflowError,
        # MemoryError, struct.error...); the restricted unpickler runs no code, so any error
        # here only means "not a batch file".
        raise ValueError(f"{path}: not a CIFAR-10 python batch file ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch file (no dict inside)")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise ValueError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels' (keys: {sorted(obj)})")
    data = np.asarray(obj["data"])
    labels = np.asarray(obj["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"{path}: CIFAR-10 'data' must be uint8 [n, 3072], got {data.dtype} {tuple(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    return chw_to_hwc(data, 32, 32, 3), labels


def read_imagenet64_batch(path: str | Path, size: int = 64) -> np.ndarray:
    """Read one downsampled-ImageNet batch (``train_data_batch_K.npz`` or ``val_data.npz``).

    The archive holds ``data`` uint8 [n, 3*size*size] channel-planar (as written by the
    downsampled-ImageNet release of Chrabaszcz et al. 2017, used by Oord et al. 2016's
    benchmark) and ``labels``. Returns uint8 [n, size, size, 3].
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "data" not in npz.files:
                raise ValueError(f"{path}: npz lacks a 'data' array (arrays: {npz.files})")
            data = npz["data"]
    except ValueError:
        raise
    except Exception as err:  # zipfile.BadZipFile, OSError, EOFError from a truncated file
        raise ValueError(f"{path}: not a readable .npz archive "
                         f"({type(err).__name__}: {err})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * size * size:
        raise ValueError(
            f"{path}: 'data' must be uint8 [n, {3 * size * size}] for {size}x{size} RGB, "
            f"got {data.dtype} {tuple(data.shape)}"
        )
    return chw_to_hwc(data, size, size, 3)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzip-compressed or raw.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each
    dimension as a big-endian uint32; the values follow in C order. Returns the array
    (Fashion-MNIST images: uint8 [n, 28, 28]; labels: uint8 [n]).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX dims {dims} need {expected} bytes of data, file has {len(raw) - header}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def list_image_files(folder: str | Path) -> list[Path]:
    """All PNG/JPEG files under ``folder`` (recursively), sorted by path for reproducibility."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_file(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode one PNG/JPEG to uint8 [H, W, channels] (channels 1 = grayscale, 3 = RGB)."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from None
    return arr.reshape(arr.shape[0], arr.shape[1], channels)
