"""Samples a person can look at or hear: PNG image grids, image completions, WAV audio.

Paper.md section 6: unconditional samples at temperature 1.0 (Fig. 1, Fig. 5) and, in the
blog, ImageNet completions from half images. Here:

    image_grid(images)                       [N, H, W, C] -> one [GH, GW, C] mosaic
    write_png_grid(images, path)             the mosaic as a PNG (nearest-neighbour upscaled)
    complete_images(model, images, ...)      top half given, bottom half sampled
    write_completion_grid(orig, compl, path) each row: original, then its completions
    write_wav(path, x, rate)                 float [T] or [T, C] -> 16-bit PCM WAV
    write_mu_law_wav(path, q, rate)          8-bit mu-law bytes -> WAV
    write_image_samples / write_audio_samples  the registry's sample writers for "image"/"audio"
    media_report(checkpoint, data, out)      bits/dim (or /byte) on valid+test, samples, curve

``python -m sparse_transformer.sample.media --checkpoint RUN --data NAME --out DIR`` runs
``media_report``.

Files are written to a temporary name and renamed, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

__all__ = [
    "complete_images",
    "image_grid",
    "write_audio_samples",
    "write_completion_grid",
    "write_image_samples",
    "write_mu_law_wav",
    "write_png_grid",
    "write_wav",
]


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(tmp, format="PNG",
                                                                       optimize=True)
    os.replace(tmp, path)
    return path


def _cached_decoding() -> dict:
    """``generate`` keyword for the pattern-aware incremental decoder when it is available: a
    step then costs one token through each layer instead of a forward pass over the window."""
    try:
        from sparse_transformer.sample.incremental import CachedNextLogits
    except ImportError:  # older checkouts: straightforward decoding
        return {}
    return {"next_logits": CachedNextLogits()}


def complete_images(model, images: np.ndarray, *, n_samples: int = 1, given_rows: int | None = None,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    generator=None, progress: bool = False) -> np.ndarray:
    """Sample the bottom of each image given its top ``given_rows`` rows (default H // 2).

    images: uint8 [N, H, W, C] real images. Returns uint8 [N, n_samples, H, W, C] whose first
    ``given_rows`` rows equal the originals'.
    """
    import torch

    from sparse_transformer.data.images import flatten_images, unflatten_images
    from sparse_transformer.sample.generate import generate

    images = np.asarray(images)
    n, h, w, c = images.shape
    given_rows = h // 2 if given_rows is None else given_rows
    if not 0 < given_rows < h:
        raise ValueError(f"given_rows must be in 1..{h - 1}, got {given_rows}")
    keep = given_rows * w * c
    prompt = torch.from_numpy(flatten_images(images)[:, :keep].astype(np.int64))
    prompt = prompt.repeat_interleave(n_samples, dim=0)  # [N*S, keep]
    out = generate(model, prompt, h * w * c - keep, temperature=temperature, top_k=top_k,
                   top_p=top_p, generator=generator, progress=progress, **_cached_decoding())
    out = np.asarray(out.cpu(), dtype=np.uint8)
    return unflatten_images(out, (h, w, c)).reshape(n, n_samples, h, w, c)


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


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int) -> Path:
    """float audio [T] (mono) or [T, C] (frames first) in [-1, 1] -> 16-bit PCM WAV."""
    import soundfile as sf

    from sparse_transformer.data.audio import to_mono

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        to_mono(x, str(path))  # rejects a channels-first [C, T] array with a clear error
    elif x.ndim != 1:
        raise ValueError(f"{path}: audio must be [frames] or [frames, channels], got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{path}: no audio samples to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    sf.write(str(tmp), np.clip(x, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return path


def write_mu_law_wav(path: str | Path, q: np.ndarray, sample_rate: int = 12000) -> Path:
    """8-bit mu-law bytes [T] (as the model samples them) -> 16-bit PCM WAV at ``sample_rate``."""
    from sparse_transformer.data.audio import mu_law_decode

    q = np.asarray(q)
    if q.ndim != 1:
        raise ValueError(f"expected one mu-law stream [T], got shape {q.shape}")
    return write_wav(path, mu_law_decode(q), sample_rate)


def _paths(path: str | None, default: str, count: int, suffix: str) -> list[Path]:
    base = Path(path) if path else Path(default)
    if base.suffix.lower() != suffix:
        base = base.with_suffix(suffix)
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{k}{suffix}") for k in range(count)]


def write_image_samples(samples: np.ndarray, path: str | None, meta: dict) -> list[str]:
    """Registry writer for kind "image": uint8 [S, N] whole images -> one PNG grid."""
    from sparse_transformer.data.images import unflatten_images

    images = unflatten_images(np.asarray(samples, dtype=np.uint8), tuple(meta["shape"]))
    (out,) = _paths(path, "samples.png", 1, ".png")
    return [str(write_png_grid(images, out))]


def write_audio_samples(samples: np.ndarray, path: str | None, meta: dict) -> list[str]:
    """Registry writer for kind "audio": uint8 [S, N] mu-law -> one WAV per sample
    (``path``, or ``path-K.wav`` when there are several)."""
    samples = np.asarray(samples, dtype=np.uint8).reshape(len(samples), -1)
    rate = int(meta.get("sample_rate", 12000))
    outs = _paths(path, "samples.wav", len(samples), ".wav")
    return [str(write_mu_law_wav(p, s, rate)) for p, s in zip(outs, samples)]


# ----------------------------------------------------------------------------- report


def unit_for(meta: dict) -> str:
    """"bits/dim" for image data (one byte = one sub-pixel dimension), else "bits/byte"."""
    return "bits/dim" if meta.get("kind") == "image" else "bits/byte"


def plot_bits_curve(csv_path: str | Path, png_path: str | Path, unit: str) -> Path | None:
    """Train/valid curve from a run's metrics.csv, labelled in ``unit`` (bits/dim for images)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from sparse_transformer.train.metrics import read_metrics

    rows = read_metrics(csv_path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for col, label, style in (("train_bpb", "train", "-"), ("valid_bpb", "valid", "o-")):
        pts = [(int(r["step"]), float(r[col])) for r in rows if r.get(col)]
        if pts:
            ax.plot(*zip(*pts), style, label=label, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(png)
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png)
    return png


def media_report(checkpoint: str | Path, data: str, out_dir: str | Path, *, data_root: str = "data",
                 n_unconditional: int = 16, n_complete: int = 6, samples_per_image: int = 3,
                 audio_seconds: float = 1.0, eval_bytes: int | None = None, seed: int = 0,
                 temperature: float = 1.0, device: str = "cpu", progress: bool = True) -> dict:
    """Evaluate a trained image or audio model and write what a person can look at or hear.

    Writes into ``out_dir``: metrics.json ({unit, valid, test}), curve.png (from the run's
    metrics.csv) and, for images, samples.png (unconditional, temperature 1.0) and
    completions.png (original | samples given its top half, from the test split); for audio,
    unconditional.wav and continuation.wav (a real test clip of n_ctx/2 samples, then sampled).
    """
    import torch

    from sparse_transformer.data.bytes import resolve_data
    from sparse_transformer.data.images import unflatten_images
    from sparse_transformer.evaluate import evaluate_bpb
    from sparse_transformer.sample.generate import generate
    from sparse_transformer.train.checkpoint import find_checkpoint, load_model

    ds = resolve_data(data, data_root, prepare_missing=False)
    kind, unit = ds.kind, unit_for(ds.meta)
    if kind not in ("image", "audio"):
        raise ValueError(f"{data}: media reports are for image or audio data, not {kind!r}")
    model, _ = load_model(checkpoint, device)
    n_ctx = model.cfg.n_ctx
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = ds.record_size if kind == "image" else None
    res = {"unit": unit, "data": ds.name}
    for split in ("valid", "test"):
        r = evaluate_bpb(model, ds.split(split), max_bytes=eval_bytes, record_size=record,
                         batch_size=64 if device != "cpu" else 8, device=device,
                         progress=progress)
        res[split] = round(r.bits_per_byte, 4)
        res[f"{split}_scored"] = r.n_scored
    gen = torch.Generator().manual_seed(seed)
    if kind == "image":
        shape = tuple(ds.meta["shape"])
        empty = torch.zeros(n_unconditional, 0, dtype=torch.long)
        imgs = generate(model, empty, n_ctx, temperature=temperature, generator=gen,
                        progress=progress, **_cached_decoding())
        write_png_grid(unflatten_images(imgs.cpu().numpy().astype(np.uint8), shape),
                       out / "samples.png")
        test = unflatten_images(np.asarray(ds.split("test")[: n_complete * n_ctx]), shape)
        comp = complete_images(model, test, n_samples=samples_per_image, temperature=temperature,
                               generator=gen, progress=progress)
        write_completion_grid(test, comp, out / "completions.png")
    else:
        rate = int(ds.meta.get("sample_rate", 12000))
        n_new = int(audio_seconds * rate)
        empty = torch.zeros(1, 0, dtype=torch.long)
        q = generate(model, empty, n_new, temperature=temperature, generator=gen, progress=progress,
                     **_cached_decoding())
        write_mu_law_wav(out / "unconditional.wav", q[0].cpu().numpy().astype(np.uint8), rate)
        prompt = torch.from_numpy(np.asarray(ds.split("test")[: n_ctx // 2]).astype(np.int64))
        q = generate(model, prompt, n_new, temperature=temperature, generator=gen,
                     progress=progress, **_cached_decoding())
        write_mu_law_wav(out / "continuation.wav", q.cpu().numpy().astype(np.uint8), rate)
    step_dir = find_checkpoint(checkpoint)  # RUN/checkpoints/step-N
    for cand in (step_dir.parent.parent / "metrics.csv", Path(checkpoint) / "metrics.csv"):
        if cand.is_file():
            plot_bits_curve(cand, out / "curve.png", unit)
            break
    with open(out / "metrics.json", "w") as fh:
        json.dump(res, fh, indent=2)
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m sparse_transformer.sample.media --checkpoint RUN --data NAME --out DIR``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m sparse_transformer.sample.media",
                                description=media_report.__doc__.splitlines()[0])
    p.add_argument("--checkpoint", "-c", required=True, help="run directory or step folder")
    p.add_argument("--data", required=True, help="data set name or prepared directory")
    p.add_argument("--data-root", default="data")
    p.add_argument("--out", required=True, help="directory for PNG/WAV/JSON outputs")
    p.add_argument("--num", type=int, default=16, help="unconditional images")
    p.add_argument("--complete", type=int, default=6, help="test images to complete")
    p.add_argument("--per-image", type=int, default=3, help="completions per image")
    p.add_argument("--seconds", type=float, default=1.0, help="audio to sample, seconds")
    p.add_argument("--eval-bytes", type=int, default=None, help="bytes per split scored (all)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    a = p.parse_args(argv)
    res = media_report(a.checkpoint, a.data, a.out, data_root=a.data_root, n_unconditional=a.num,
                       n_complete=a.complete, samples_per_image=a.per_image,
                       audio_seconds=a.seconds, eval_bytes=a.eval_bytes, seed=a.seed,
                       temperature=a.temperature, device=a.device)
    print(f"{res['data']}: valid {res['valid']:.4f} {res['unit']}, test {res['test']:.4f} "
          f"{res['unit']}; outputs in {a.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
