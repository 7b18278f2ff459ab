"""What classical compressors achieve on the same bytes: the baselines beside every model score.

A model's bits per byte mean little alone. The baselines, all on exactly the bytes the model
is scored on:

- ``ppmd``: PPMd variant H (the ``pyppmd`` package, the PPMd of 7-Zip), order 16, given the
  whole train split as context first: the bits it spends on the scored bytes after having
  seen the train bytes. This is the strongest classical compressor we have, and it has seen
  the same bytes the model learned from (1.795 bits per byte on wiki test).
- ``xz`` (lzma preset 9e), ``bz2`` (level 9), ``zlib`` (level 9): the scored bytes alone.
- ``png`` (images only): every image written as its own PNG file (Pillow, optimize), the whole
  file counted, headers included, as a user's disk would hold it.

Bits per byte; for images one byte is one sub-pixel, so these are bits per dimension.
``prepare`` stores the baselines of the whole valid and test splits in ``meta.json``
(``baselines``), because PPMd reads ~90 MB of context for text100m; ``eval`` uses them when it
scores a whole split and computes them otherwise.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from typing import Callable

import numpy as np

PPMD_ORDER = 16
PPMD_MEMORY = 2 << 30  # bytes of model memory: 1 GiB fills up on 90 MB of context (restarts)


def _raw(data: bytes | np.ndarray) -> bytes:
    return data if isinstance(data, bytes) else np.ascontiguousarray(data, np.uint8).tobytes()


def ppmd_bits(data: bytes | np.ndarray, context: bytes | np.ndarray | None = None, *,
              order: int = PPMD_ORDER, memory: int = PPMD_MEMORY) -> float:
    """Bits per byte PPMd spends on ``data`` after it has compressed ``context``."""
    import pyppmd  # a small C extension, imported only where a baseline is asked for

    raw = _raw(data)
    if not raw:
        raise ValueError("no bytes to compress")
    enc = pyppmd.Ppmd7Encoder(order, memory)
    if context is not None and len(context):
        enc.encode(_raw(context))  # what it writes for the context is not counted
    n = len(enc.encode(raw)) + len(enc.flush())
    return 8.0 * n / len(raw)


def stream_bits(data: bytes | np.ndarray) -> dict[str, float]:
    """Bits per byte of xz (lzma 9e), bz2 (9) and zlib (9) on ``data`` alone."""
    raw = _raw(data)
    if not raw:
        raise ValueError("no bytes to compress")
    sizes = {"xz": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
             "bz2": len(bz2.compress(raw, 9)),
             "zlib": len(zlib.compress(raw, 9))}
    return {k: 8.0 * v / len(raw) for k, v in sizes.items()}


def png_bits(data: bytes | np.ndarray, shape: tuple[int, int, int]) -> float:
    """Bits per dimension of ``data`` (whole images of ``shape`` (H, W, C), raster order,
    channels last) written one PNG file per image."""
    from PIL import Image

    h, w, c = shape
    flat = np.frombuffer(_raw(data), np.uint8)
    n = flat.size // (h * w * c)
    if n == 0:
        raise ValueError(f"{flat.size} bytes hold no whole {h}x{w}x{c} image")
    images = flat[:n * h * w * c].reshape(n, h, w, c)
    total = 0
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[:, :, 0] if c == 1 else img).save(buf, format="PNG", optimize=True)
        total += buf.tell()
    return 8.0 * total / images.size


def baselines(data: bytes | np.ndarray, *, context: bytes | np.ndarray | None = None,
              image_shape: tuple[int, int, int] | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Every baseline on ``data``: ppmd (with ``context``, the train split), xz, bz2, zlib, and
    png for images. PPMd is left out, with a note to ``log``, if pyppmd is not installed."""
    out: dict[str, float] = {}
    try:
        out["ppmd"] = ppmd_bits(data, context)
    except ImportError:
        if log:
            log("ppmd baseline skipped: pip install pyppmd")
    out.update(stream_bits(data))
    if image_shape is not None:
        out["png"] = png_bits(data, image_shape)
    return out


def describe(name: str) -> str:
    """How a baseline was computed, for a label beside its figure."""
    return {"ppmd": f"PPMd order {PPMD_ORDER}, train split as context",
            "xz": "xz -9e, these bytes alone", "bz2": "bz2 -9, these bytes alone",
            "zlib": "zlib -9, these bytes alone",
            "png": "one PNG file per image"}.get(name, name)
