"""Byte codecs and media writers shared by data preparation and sampling (a leaf module).

Every modality is a stream of bytes (paper 3). This module holds the two directions of that
mapping and the files a person looks at or listens to, so that ``sparse_transformer.data``
(which encodes) and ``sparse_transformer.sample`` (which decodes and writes) both import it and
never each other:

    mu_law_encode / mu_law_decode     float audio in [-1, 1] <-> 8-bit mu-law bytes
    to_mono                           [T] or [T, C] frames-first audio -> [T]
    flatten_images / unflatten_images uint8 [N, H, W, C] <-> [N, H*W*C] raster order
    image_grid / write_png_grid       images -> one mosaic -> a PNG
    write_completion_grid             originals beside their sampled completions
    write_wav / write_mu_law_wav      16-bit PCM WAV files
    loud_start                        where a clip with music in it starts (not silence)
    atomic_write                      a file written whole or not at all
    write_*_samples                   the registry's sample writers for "text"/"image"/"audio"
    sample_paths                      the files those writers would write
    check_new_files                   refuse to replace a file unless asked

Pillow and soundfile are imported only by the functions that need them. Files are written to a
temporary name and renamed, so an interrupted write leaves no half file.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = [
    "MU",
    "atomic_write",
    "check_new_files",
    "flatten_images",
    "image_grid",
    "loud_start",
    "mu_law_decode",
    "mu_law_encode",
    "sample_paths",
    "to_mono",
    "unflatten_images",
    "write_audio_samples",
    "write_completion_grid",
    "write_image_samples",
    "write_mu_law_wav",
    "write_png_grid",
    "write_text_samples",
    "write_wav",
]

MU = 255  # 8-bit mu-law (paper Table 4: 8-bit mu-law audio)


# ----------------------------------------------------------------------------- audio codec


def mu_law_encode(x: np.ndarray, mu: int = MU) -> np.ndarray:
    """float [-1, 1] [...] -> uint8 [...] (0..mu): F(x) = sign(x) ln(1 + mu|x|) / ln(1 + mu),
    then ``mu + 1`` uniform levels over [-1, 1]. Values outside [-1, 1] are clipped."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.rint((y + 1.0) * (mu / 2.0)).astype(np.uint8)


def mu_law_decode(q: np.ndarray, mu: int = MU) -> np.ndarray:
    """uint8 [...] -> float32 [...] in [-1, 1]; inverse of `mu_law_encode` up to its rounding
    (one level is 2/mu wide in the companded domain)."""
    y = np.asarray(q, dtype=np.float64) * (2.0 / mu) - 1.0
    x = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    return x.astype(np.float32)


def to_mono(x: np.ndarray, source: str = "audio") -> np.ndarray:
    """[T] or [T, C] float -> [T] by averaging the channels.

    A 2-D array must be frames-first, as soundfile returns it; a [C, T] array (channels-first,
    C <= 8 and T > C) is rejected instead of being averaged over time by mistake.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"{source}: audio must be [frames] or [frames, channels], got {x.shape}")
    if x.shape[0] <= 8 and x.shape[1] > x.shape[0]:
        raise ValueError(f"{source}: audio of shape {tuple(x.shape)} looks channels-first; "
                         "pass [frames, channels]")
    return x.mean(axis=1)


# ----------------------------------------------------------------------------- image layout


def flatten_images(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> uint8 [N, H*W*C] in raster order, channels of a pixel consecutive."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images [N, H, W, C], got shape {tuple(images.shape)}")
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 images (values 0-255), got {images.dtype}")
    return np.ascontiguousarray(images).reshape(images.shape[0], -1)


def unflatten_images(flat: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 [N, H*W*C] (or any array of whole records) -> [N, H, W, C]; the exact inverse."""
    h, w, c = (int(s) for s in shape)
    flat = np.asarray(flat)
    if flat.size % (h * w * c) != 0:
        raise ValueError(f"{flat.size} values are not a whole number of {h}x{w}x{c} images")
    return flat.reshape(-1, h, w, c)


# ----------------------------------------------------------------------------- safe writes


def check_new_files(paths: Iterable[str | Path], force: bool = False) -> None:
    """Refuse (FileExistsError) to replace any existing path unless ``force``.

    Called with every path a command will write, before it writes (or computes) anything, so
    a refusal leaves the disk as it was.
    """
    for p in paths:
        p = Path(p)
        if p.is_dir():
            raise IsADirectoryError(f"{p} is a directory; give a file name")
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists; pass --force to replace it")


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary sibling of ``path``, then rename it into place: a reader
    never sees half a file, and a failed write (a full disk, Ctrl-C) removes the temporary
    file and leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- PNG


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2,
               pad_value: int = 255) -> np.ndarray:
    """uint8 [N, H, W, C] -> [rows*(H+pad)+pad, ncols*(W+pad)+pad, C] mosaic, reading order."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("no images to put in a grid")
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, np.uint8)
    for k in range(n):
        r, col = divmod(k, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[k]
    return grid


def write_png_grid(images: np.ndarray, path: str | Path, ncols: int | None = None,
                   scale: int | None = None) -> Path:
    """Write ``images`` [N, H, W, C] as one PNG grid; ``scale`` (default: enough to make each
    image at least 64 px tall) enlarges pixels without smoothing them."""
    from PIL import Image

    images = np.asarray(images)
    grid = image_grid(images, ncols)
    scale = scale or max(1, 64 // images.shape[1])
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    image = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))


def write_completion_grid(originals: np.ndarray, completions: np.ndarray, path: str | Path,
                          scale: int | None = None) -> Path:
    """PNG with one row per image: the original, then each completion [N, S, H, W, C]."""
    originals = np.asarray(originals)
    completions = np.asarray(completions)
    if completions.ndim != 5 or completions.shape[0] != originals.shape[0] or \
            completions.shape[2:] != originals.shape[1:]:
        raise ValueError(f"completions {completions.shape} do not match "
                         f"originals {originals.shape}")
    n, s = completions.shape[:2]
    rows = np.concatenate([originals[:, None], completions], axis=1)  # [N, 1+S, H, W, C]
    return write_png_grid(rows.reshape(n * (1 + s), *originals.shape[1:]), path, ncols=1 + s,
                          scale=scale)


# ----------------------------------------------------------------------------- WAV


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int) -> Path:
    """float audio [T] (mono) or [T, C] (frames first) in [-1, 1] -> 16-bit PCM WAV."""
    import soundfile as sf

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        to_mono(x, str(path))  # rejects a channels-first [C, T] array with a clear error
    elif x.ndim != 1:
        raise ValueError(f"{path}: audio must be [frames] or [frames, channels], got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{path}: no audio samples to write")
    return atomic_write(path, lambda tmp: sf.write(str(tmp), np.clip(x, -1.0, 1.0),
                                                   int(sample_rate), subtype="PCM_16",
                                                   format="WAV"))


def loud_start(q: np.ndarray, length: int, max_windows: int = 4096) -> int:
    """Where in the mu-law stream ``q`` a clip of ``length`` samples with music in it starts:
    the first window (of the first ``max_windows``, a hop of ``length // 2`` apart) whose RMS
    reaches half the median RMS of the windows that are not silent. Tracks start and end in
    digital silence, which makes a poor prompt for a continuation; 0 if all is silence."""
    q = np.asarray(q)
    length = max(1, min(int(length), q.size))
    hop = max(1, length // 2)
    starts = np.arange(0, q.size - length + 1, hop)[:max_windows]
    if starts.size == 0:
        return 0
    x = mu_law_decode(q[: int(starts[-1]) + length])
    rms = np.array([np.sqrt(np.mean(np.square(x[s : s + length]))) for s in starts])
    audible = rms[rms > 1.0 / 32768]  # below one 16-bit step: silence
    if audible.size == 0:
        return 0
    return int(starts[np.argmax(rms >= 0.5 * np.median(audible))])


def write_mu_law_wav(path: str | Path, q: np.ndarray, sample_rate: int = 12000) -> Path:
    """8-bit mu-law bytes [T] (as the model samples them) -> 16-bit PCM WAV at ``sample_rate``."""
    q = np.asarray(q)
    if q.ndim != 1:
        raise ValueError(f"expected one mu-law stream [T], got shape {q.shape}")
    return write_wav(path, mu_law_decode(q), sample_rate)


# ----------------------------------------------------------------------------- sample writers
# writer(samples uint8 [S, N], path | None, meta, *, force) -> list of files written.
# Each computes every path it will write and checks them before writing anything.


def _paths(path: str | None, default: str, count: int, suffix: str) -> list[Path]:
    base = Path(path) if path else Path(default)
    if base.suffix.lower() != suffix:
        base = base.with_suffix(suffix)
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{k}{suffix}") for k in range(count)]


def write_text_samples(samples: np.ndarray, path: str | None, meta: dict, *,
                       force: bool = False) -> list[str]:
    """Byte samples [S, N] to stdout (path None) or a file, separated by blank lines."""
    chunks = [bytes(np.asarray(s, dtype=np.uint8)) for s in samples]
    blob = b"\n\n".join(chunks) + b"\n"
    if path is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
        return []
    out = Path(path)
    check_new_files([out], force)
    return [str(atomic_write(out, lambda tmp: tmp.write_bytes(blob)))]


def write_image_samples(samples: np.ndarray, path: str | None, meta: dict, *,
                        force: bool = False) -> list[str]:
    """Whole images uint8 [S, H*W*C] -> one PNG grid (``path`` or ./samples.png)."""
    images = unflatten_images(np.asarray(samples, dtype=np.uint8), tuple(meta["shape"]))
    (out,) = _paths(path, "samples.png", 1, ".png")
    check_new_files([out], force)
    return [str(write_png_grid(images, out))]


def write_audio_samples(samples: np.ndarray, path: str | None, meta: dict, *,
                        force: bool = False) -> list[str]:
    """mu-law uint8 [S, N] -> one WAV per sample (``path``, or ``path-K.wav`` for several)."""
    samples = np.asarray(samples, dtype=np.uint8).reshape(len(samples), -1)
    rate = int(meta.get("sample_rate", 12000))
    outs = _paths(path, "samples.wav", len(samples), ".wav")
    check_new_files(outs, force)
    return [str(write_mu_law_wav(p, s, rate)) for p, s in zip(outs, samples)]


def sample_paths(kind: str, path: str | None, count: int) -> list[Path]:
    """The files ``write_<kind>_samples`` would write for ``count`` samples (none for stdout)."""
    if kind == "image":
        return _paths(path, "samples.png", 1, ".png")
    if kind == "audio":
        return _paths(path, "samples.wav", count, ".wav")
    return [Path(path)] if path else []
