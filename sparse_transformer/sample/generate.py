"""Autoregressive sampling, one byte at a time (paper 6: unmodified softmax, temperature 1.0).

``generate`` decodes through the pattern-aware key/value cache by default (``incremental.py``,
docs/sampling.md): one incremental step per byte. ``cache=False`` is straightforward decoding:
every step runs the model on the most recent window (at most n_ctx positions).
``next_token_logits`` is the one place that computes "the logits of the next byte given these
bytes" on that path; the cached path plugs in at the same seam (``next_logits``).

Shapes: B samples, T tokens so far, V = vocab_size.
"""

from __future__ import annotations

import operator
from typing import Callable

import torch

from sparse_transformer.model.tokens import Tokens, as_tokens, is_bytes_like, to_bytes
from sparse_transformer.model.transformer import SparseTransformer
from sparse_transformer.sample.filters import apply_filters, check_filters

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
def generate(model: SparseTransformer, prompt: Tokens, n_bytes: int, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, generator: torch.Generator | None = None,
             progress: bool = False, next_logits: NextLogits | None = None,
             cache: bool = True) -> bytes | torch.Tensor:
    """Sample ``n_bytes`` bytes after ``prompt`` and return the prompt followed by them.

    ``prompt`` is ``bytes`` or ``str`` (UTF-8 encoded; the result is ``bytes``), or an integer
    tensor [T] or [B, T] (the result is a long tensor [T + n_bytes] or [B, T + n_bytes] on the
    model's device). An empty prompt samples from the start vector (unconditional); a prompt
    may hold at most n_ctx - 1 bytes, all of which the first new byte sees. Past n_ctx, each
    new byte sees the n_ctx - 1 bytes before it.

    Each byte is drawn from softmax(logits / ``temperature``) restricted by ``top_k`` (the k
    most likely bytes) and ``top_p`` (the smallest set holding probability p). ``seed`` or a
    CPU ``generator`` makes sampling reproducible; draws happen on the CPU, so a seed gives the
    same bytes on any device when the logits agree. ``cache`` (default) decodes with the
    pattern-aware key/value cache, ``cache=False`` runs the whole window per byte; both give
    the same logits. ``next_logits`` overrides either. ``progress`` shows a tqdm bar.
    """
    n_bytes = _count(n_bytes)
    check_filters(temperature=temperature, top_k=top_k, top_p=top_p)
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(operator.index(seed))
    n_ctx = model.cfg.n_ctx
    tokens = as_tokens(prompt, model.cfg.vocab_size)
    if tokens.shape[1] > n_ctx - 1:
        raise ValueError(f"prompt of {tokens.shape[1]} bytes is too long: the model sees at most "
                         f"n_ctx - 1 = {n_ctx - 1} bytes; pass the last {n_ctx - 1}")
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    if next_logits is None:
        if cache:
            from sparse_transformer.sample.incremental import CachedNextLogits

            next_logits = CachedNextLogits(capacity=tokens.shape[1] + n_bytes)
        else:
            next_logits = next_token_logits
    was_training = model.training
    model.eval()
    steps = range(n_bytes)
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
    if is_bytes_like(prompt):
        return to_bytes(tokens[0])
    return tokens[0] if prompt.dim() == 1 else tokens


def _count(n: int) -> int:
    if isinstance(n, bool):
        raise TypeError("n_bytes must be an int, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n_bytes must be an int, got {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n}")
    return n
