"""Image completions (paper 6; the blog's ImageNet completions from half images).

    complete_images(model, images, ...)      top half given, bottom half sampled

The PNG/WAV writers live in ``sparse_transformer.codecs`` (shared with data preparation), and
the media report that evaluates a run and writes its pictures and sounds is the
``sparse-transformer report`` command (``sparse_transformer.cli.report``).
"""

from __future__ import annotations

import numpy as np

from sparse_transformer.codecs import flatten_images, unflatten_images

__all__ = ["complete_images"]


def complete_images(model, images: np.ndarray, *, n_samples: int = 1, given_rows: int | None = None,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    generator=None, progress: bool = False) -> np.ndarray:
    """Sample the bottom of each image given its top ``given_rows`` rows (default H // 2).

    images: uint8 [N, H, W, C] real images. Returns uint8 [N, n_samples, H, W, C] whose first
    ``given_rows`` rows equal the originals'.
    """
    import torch

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
                   top_p=top_p, generator=generator, progress=progress)
    out = np.asarray(out.cpu(), dtype=np.uint8)
    return unflatten_images(out, (h, w, c)).reshape(n, n_samples, h, w, c)


if __name__ == "__main__":  # pragma: no cover - the old entry point of the media report
    import sys

    from sparse_transformer.cli import main

    print("python -m sparse_transformer.sample.media is now 'sparse-transformer report'",
          file=sys.stderr)
    sys.exit(main(["report", *sys.argv[1:]]))
