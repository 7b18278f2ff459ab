"""Bits per byte of a model on a byte stream, beside standard compressors (paper 7, Table 3).

``evaluate_bpb`` scores every byte of a split exactly once. With ``min_context = m`` it uses
the paper's minimum-context evaluation: windows of n_ctx bytes slide by n_ctx - m and only
their last n_ctx - m positions are scored, so each scored byte (after the first window) sees at
least m earlier bytes (Table 3: 12,160 of 12,288 -> 128 scored per window). Images are scored
one record (image) at a time, so bits per byte = bits per dimension.

What classical compressors achieve on the same bytes (PPMd with the train split as context,
xz, bz2, zlib; PNG for images) is in ``sparse_transformer.baselines``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sparse_transformer.checks import check_int
from sparse_transformer.data.bytes import eval_windows
from sparse_transformer.model.transformer import SparseTransformer, loss_nats
from sparse_transformer.precision import autocast

LN2 = math.log(2.0)


@dataclass(frozen=True)
class EvalResult:
    bits_per_byte: float
    n_scored: int
    n_windows: int
    min_context: int


@torch.no_grad()
def evaluate_bpb(model: SparseTransformer, data: np.ndarray, *, batch_size: int = 8,
                 min_context: int = 0, max_bytes: int | None = None,
                 record_size: int | None = None, precision: str = "fp32",
                 device: torch.device | str = "cpu", progress: bool = False) -> EvalResult:
    """Mean bits per scored byte of ``data`` (uint8 [L]) under ``model`` (paper 7)."""
    check_int("batch_size", batch_size, 1)
    if max_bytes is not None:
        check_int("max_bytes", max_bytes, 0)
    n_ctx = model.cfg.n_ctx
    data = data[:max_bytes] if max_bytes else data
    if record_size:
        if min_context:
            raise ValueError("min_context applies to streams, not to image records")
        n_rec = data.size // n_ctx
        if n_rec == 0:
            raise ValueError(f"{data.size} bytes hold no whole record of n_ctx={n_ctx}")
        windows = [(r * n_ctx, 0) for r in range(n_rec)]
    else:
        windows = eval_windows(int(data.size), n_ctx, min_context)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_nats, total_n = 0.0, 0
    batches = range(0, len(windows), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", leave=False)
    try:
        for b0 in batches:
            chunk = windows[b0:b0 + batch_size]
            x = torch.from_numpy(np.stack([np.asarray(data[s:s + n_ctx]) for s, _ in chunk])
                                 .astype(np.int64)).to(device)
            with autocast(precision, device):
                torch.compiler.cudagraph_mark_step_begin()  # blocks replayed from CUDA graphs
                logits = model(x)
            nats = loss_nats(logits, x, reduction="none")  # [b, N] in fp32
            for row, (_, first) in enumerate(chunk):
                total_nats += float(nats[row, first:].double().sum())
                total_n += n_ctx - first
    finally:
        model.train(was_training)
    return EvalResult(total_nats / total_n / LN2, total_n, len(windows), min_context)
