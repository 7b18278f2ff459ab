"""Token and factorized position embeddings (paper 5.3, Eq. 15).

    embed(X)_i = x_i W_e + sum_j o_i^(j) W_j

where o_i^(j) is the one-hot coordinate of position i along dimension j of the data:
- "text" (and audio): (row, column) = (i // l, i % l) of a matrix of width l (the stride);
- "image": (row, column, channel) of an (H, W, C) image stored in raster order with the
  channels of a pixel consecutive, so i = (row * W + col) * C + channel.

The token at position i of the *input* is the byte before it: inputs are shifted right by one
and a learned start vector takes position 0 (first-token handling is not in the paper; OpenAI's
later code does the same), so logits at position i predict byte i from bytes < i, and the
position embedding added at i is that of the byte being predicted. The model does the shift
(``SparseTransformer.forward``); this module embeds what each position reads.

Position coordinates are a pure function of (config, length); the model's forward state keeps
them on the device (``model/state.py``), so a call computes none.

Shapes: B batch, N positions, D = d_model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparse_transformer.model.config import ModelConfig


def position_coordinates(cfg: ModelConfig, n: int, device=None) -> list[torch.Tensor]:
    """Per embedding table, LongTensor[n] of each position's coordinate along that axis."""
    i = torch.arange(n, device=device)
    if cfg.embedding == "image":
        _, w, c = cfg.image_shape
        return [i // (w * c), (i // c) % w, i % c]
    l = cfg.embed_stride
    return [i // l, i % l]


def table_sizes(cfg: ModelConfig) -> list[int]:
    """Rows of each position table: (H, W, C) for images, (n_ctx / l, l) for text."""
    if cfg.embedding == "image":
        return list(cfg.image_shape)
    return [cfg.n_ctx // cfg.embed_stride, cfg.embed_stride]


class Embedding(nn.Module):
    """Bytes [B, N] -> embeddings [B, N, D]: shifted token embedding + summed position tables."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.start = nn.Parameter(torch.zeros(cfg.d_model))
        self.pos = nn.ModuleList(nn.Embedding(s, cfg.d_model) for s in table_sizes(cfg))

    def reset_parameters(self, init: str) -> None:
        # Paper 6: W_e ~ N(0, 0.125/sqrt(d)), position tables ~ N(0, 0.125/sqrt(d n_emb));
        # the second argument read per ``init`` (ModelConfig.init).
        d, n_emb = self.cfg.d_model, len(self.pos)
        nn.init.normal_(self.tok.weight, std=paper_std(d, init))
        nn.init.normal_(self.start, std=paper_std(d, init))
        for table in self.pos:
            nn.init.normal_(table.weight, std=paper_std(d * n_emb, init))

    def coordinates(self, n: int, device: torch.device | str | None = None
                    ) -> list[torch.Tensor]:
        """Per position table, the rows positions 0..n-1 read (``position_coordinates``)."""
        return position_coordinates(self.cfg, n, device)

    def forward(self, x: torch.Tensor, coords: list[torch.Tensor] | tuple[torch.Tensor, ...],
                start: bool) -> torch.Tensor:
        """Embeddings [B, N, D] of N positions: the start vector first if ``start`` (the
        position is 0), then one position per byte of ``x`` [B, N - start]; ``coords`` holds
        each table's rows for those N positions."""
        b = x.shape[0]
        h = self.tok(x)  # [B, N - start, D]
        if start:
            h = torch.cat([self.start.expand(b, 1, -1).to(h.dtype), h], dim=1)
        for table, coord in zip(self.pos, coords):
            h = h + table(coord)  # [N, D] broadcast over the batch
        return h


def paper_std(d_in: int, init: str) -> float:
    """Standard deviation for the paper's N(0, 0.125/sqrt(d_in)) under reading ``init``."""
    return 0.125 / math.sqrt(d_in) if init == "std" else math.sqrt(0.125 / d_in)
