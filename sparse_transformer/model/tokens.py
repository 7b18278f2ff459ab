"""Bytes, text and token tensors as model input, with one-line errors for anything else.

The model reads token ids ``0 .. vocab_size - 1`` (bytes, sub-pixels or mu-law samples: 256).
``as_tokens`` accepts

    bytes / bytearray      one sequence of byte values
    str                    one sequence: its UTF-8 encoding
    integer tensor         [T] (one sequence) or [B, T] (a batch)

and returns a long tensor [B, T]. ``to_bytes`` turns a token row back into ``bytes``.
"""

from __future__ import annotations

from typing import Union

import torch

Tokens = Union[bytes, bytearray, str, torch.Tensor]
"""What ``SparseTransformer.loss`` and ``generate`` accept as bytes."""


def is_bytes_like(x: object) -> bool:
    """True for the inputs that stand for one byte string (bytes, bytearray, str)."""
    return isinstance(x, (bytes, bytearray, str))


def as_tokens(x: Tokens, vocab_size: int, *, name: str = "prompt", min_len: int = 0,
              max_len: int | None = None) -> torch.Tensor:
    """``x`` as a long tensor [B, T] of token ids, checked against the model's vocabulary.

    Raises TypeError for other types and non-integer tensors, ValueError for a tensor that is
    not [T] or [B, T], an empty batch, values outside ``0 .. vocab_size - 1``, or a length
    outside ``min_len .. max_len``.
    """
    if is_bytes_like(x):
        if vocab_size > 256:
            raise ValueError(f"{name}: bytes in and out need a model of at most 256 tokens, "
                             f"this one has vocab_size {vocab_size}; pass a tensor")
        data = x.encode("utf-8") if isinstance(x, str) else bytes(x)
        tokens = torch.tensor(list(data), dtype=torch.long).view(1, -1)
    elif isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name}: expected an integer tensor of token ids, got {x.dtype}")
        if x.dim() not in (1, 2):
            raise ValueError(f"{name}: expected a tensor [T] or [B, T], got shape "
                             f"{tuple(x.shape)}")
        tokens = (x[None] if x.dim() == 1 else x).long()
        if tokens.shape[0] == 0:
            raise ValueError(f"{name}: the batch is empty (shape {tuple(x.shape)})")
    else:
        raise TypeError(f"{name}: expected bytes, str or an integer tensor, got "
                        f"{type(x).__name__}")
    n = tokens.shape[1]
    if n < min_len:
        raise ValueError(f"{name}: needs at least {min_len} token(s), got {n}")
    if max_len is not None and n > max_len:
        raise ValueError(f"{name}: {n} tokens, more than the {max_len} allowed")
    if tokens.numel():
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name}: token ids must be in 0..{vocab_size - 1}, got values "
                             f"from {lo} to {hi}")
    return tokens


def to_bytes(row: torch.Tensor) -> bytes:
    """One row of token ids [T] (each 0..255) as ``bytes``."""
    return row.to(device="cpu", dtype=torch.uint8).numpy().tobytes()
