"""Autoregressive sampling, one byte at a time (paper 6: unmodified softmax, temperature 1.0).

``generate`` decodes through the pattern-aware key/value cache by default (``incremental.py``,
docs/sampling.md): one incremental step per byte. ``cache=False`` is straightforward decoding:
every step runs the model on the most recent window (at most n_ctx positions).
``next_token_logits`` is the one place that computes "the logits of the next byte given these
bytes" on that path; the cached path plugs in at the same seam (``next_logits``).

Shapes: B samples, T tokens so far, V = vocab_size.
"""

from __future__ import annotations

from typing import Callable

import torch

from sparse_transformer.model.transformer import SparseTransformer
from sparse_transformer.sample.filters import apply_filters

NextLogits = Callable[[SparseTransformer, torch.Tensor], torch.Tensor]


@torch.no_grad()
def next_token_logits(model: SparseTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [B, V] of the byte after ``tokens`` [B, T] (T may be 0), from the last window.

    The model predicts position i from positions < i (inputs are shifted inside the model),
    so we append a placeholder byte that nothing sees and read the logits at its position.
    With more than n_ctx - 1 tokens, only the last n_ctx - 1 are used.
    """
    n_ctx = model.cfg.n_ctx
    window = tokens[:, -(n_ctx - 1):] if n_ctx > 1 else tokens[:, :0]
    x = torch.cat([window, window.new_zeros(window.shape[0], 1)], dim=1)
    # q.k in fp32 while sampling (paper 5.6): the attention backends compute logits in fp32
    return model(x)[:, -1].float()


@torch.no_grad()
def generate(model: SparseTransformer, prompt_tokens: torch.Tensor, n_new: int, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, progress: bool = False,
             next_logits: NextLogits | None = None, cache: bool = True) -> torch.Tensor:
    """Sample ``n_new`` bytes after ``prompt_tokens`` ([B, T] or [T] long; T may be 0).

    Returns [B, T + n_new] (or [T + n_new] for a 1-D prompt). ``generator`` makes sampling
    reproducible; ``progress`` shows a tqdm bar. ``cache`` (default) decodes with the
    pattern-aware key/value cache, ``cache=False`` runs the whole window per byte; both give
    the same logits. ``next_logits`` overrides either.
    """
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    squeeze = prompt_tokens.dim() == 1
    tokens = prompt_tokens[None] if squeeze else prompt_tokens
    if tokens.dim() != 2:
        raise ValueError(f"prompt_tokens must be [T] or [B, T], got {tuple(prompt_tokens.shape)}")
    device = next(model.parameters()).device
    tokens = tokens.to(device=device, dtype=torch.long)
    if next_logits is None:
        if cache:
            from sparse_transformer.sample.incremental import CachedNextLogits

            next_logits = CachedNextLogits(capacity=tokens.shape[1] + n_new)
        else:
            next_logits = next_token_logits
    was_training = model.training
    model.eval()
    steps = range(n_new)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="sample", unit="byte", leave=False)
    try:
        for _ in steps:
            logits = apply_filters(next_logits(model, tokens), temperature=temperature,
                                   top_k=top_k, top_p=top_p)
            probs = logits.softmax(dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)  # [B, 1]
            tokens = torch.cat([tokens, nxt], dim=1)
    finally:
        model.train(was_training)
    return tokens[0] if squeeze else tokens
