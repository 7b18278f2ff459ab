"""Autoregressive sampling, one byte at a time (paper 6: unmodified softmax, temperature 1.0).

``generate`` owns decoding: it prefills the prompt through the model's pattern-aware key/value
caches and then takes one cached step per byte (``decode.py``), writing the bytes into one
preallocated buffer. Per byte, the only wait on the device is the sampled byte itself (drawn
on the CPU, so a seed gives the same bytes on every device). ``cache=False`` is straightforward
decoding instead: every byte runs the model on its whole window (``next_token_logits``).

The window: the model sees at most n_ctx positions, the start vector and n_ctx - 1 bytes. Up
to there every byte sees all bytes before it. Past it the window slides by ``slide`` bytes at
a time: when a byte would be the n_ctx-th position, the window drops its first ``slide``
bytes and starts again at position 0 with the start vector, so that byte sees the last
n_ctx - slide bytes, the next one n_ctx - slide + 1, ..., up to n_ctx - 1 before the next
slide. Both paths use these windows (and give the same logits); the cached path prefills each
new window in one parallel pass and steps through the rest, so bytes past the context cost
about what bytes within it cost. ``slide=1`` gives every byte past the context the last
n_ctx - 1 bytes (a prefill per byte: the cost of ``cache=False``).

Shapes: B samples, T prompt bytes, V = vocab_size.
"""

from __future__ import annotations

import contextlib
import numbers
import operator
import time
from collections.abc import Iterator

import torch

from sparse_transformer.checks import INT64_MAX, check_int, check_memory
from sparse_transformer.model.tokens import Tokens, as_tokens, is_bytes_like, to_bytes
from sparse_transformer.model.transformer import SparseTransformer
from sparse_transformer.sample.decode import Decoder
from sparse_transformer.sample.filters import apply_filters, check_filters


@torch.inference_mode()
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


@torch.inference_mode()  # no autograd bookkeeping at all: decoding is hundreds of tiny ops
def generate(model: SparseTransformer, prompt: Tokens, n_bytes: int | None = None, *,
             max_new_tokens: int | None = None, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             generator: torch.Generator | None = None, progress: bool = False,
             cache: bool = True, slide: int | None = None, crop: bool = False,
             max_time: float | None = None) -> bytes | torch.Tensor:
    """Sample ``n_bytes`` bytes after ``prompt`` and return the prompt followed by them.

    ``prompt`` is ``bytes`` or ``str`` (UTF-8 encoded; the result is ``bytes``), or an integer
    tensor [T] or [B, T] (the result is a long tensor [T + n_bytes] or [B, T + n_bytes] on the
    model's device). An empty prompt samples from the start vector (unconditional). A prompt
    may hold at most n_ctx - 1 bytes, all of which the first new byte sees; ``crop=True``
    takes a longer one and starts from its last n_ctx - 1 bytes (the result still holds it
    all). Past n_ctx the window slides by ``slide`` bytes (default n_ctx // 4; module
    docstring). ``max_new_tokens`` is ``n_bytes`` by its Hugging Face name.

    Each byte is drawn from softmax(logits / ``temperature``) restricted by ``top_k`` (the k
    most likely bytes) and ``top_p`` (the smallest set holding probability p). ``seed`` or a
    CPU ``generator`` makes sampling reproducible; draws happen on the CPU, so a seed gives the
    same bytes on any device when the logits agree. ``cache`` (default) decodes with the
    pattern-aware key/value cache, ``cache=False`` runs the whole window per byte; both give
    the same logits. ``max_time`` (seconds) stops early and returns what was sampled by then.
    ``progress`` shows a tqdm bar. On the CPU, decoding runs with one intra-op thread (the
    setting is restored afterwards; ``_one_intra_op_thread`` says why).
    """
    n_bytes = _count(n_bytes, max_new_tokens)
    check_filters(temperature=temperature, top_k=top_k, top_p=top_p)
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    if seed is not None:  # torch seeds are 64-bit: say so rather than "Overflow ..."
        generator = torch.Generator().manual_seed(check_int("seed", seed, 0, INT64_MAX))
    if max_time is not None and not (isinstance(max_time, numbers.Real) and max_time > 0):
        raise ValueError(f"max_time must be a number of seconds > 0, got {max_time!r}")
    n_ctx = model.cfg.n_ctx
    slide = _slide(slide, n_ctx)
    tokens = as_tokens(prompt, model.cfg.vocab_size)
    b, t0 = tokens.shape
    if t0 > n_ctx - 1 and not crop:
        raise ValueError(f"prompt of {t0} bytes is too long: the model sees at most "
                         f"n_ctx - 1 = {n_ctx - 1} bytes; pass the last {n_ctx - 1}, or "
                         f"crop=True (sample: --crop-prompt)")
    device = model.head.weight.device
    # the output buffer is allocated whole: refuse one that cannot fit before trying
    check_memory(f"generate: {b} x {t0 + n_bytes:,} tokens", 8 * b * (t0 + n_bytes),
                 hint="ask for fewer bytes")
    out = torch.empty(b, t0 + n_bytes, dtype=torch.long, device=device)
    out[:, :t0] = tokens
    start = max(0, t0 - (n_ctx - 1))  # the current window is out[:, start:t]
    decoder = None
    if cache and n_bytes:
        decoder = Decoder(model, b, capacity=min(n_ctx, t0 - start + n_bytes))
    was_training = model.training
    model.eval()
    try:
        with _one_intra_op_thread(device):
            done = _sample(model, out, t0, start, slide, decoder, generator, progress, max_time,
                           dict(temperature=temperature, top_k=top_k, top_p=top_p))
    finally:
        model.train(was_training)
    out = out[:, :done]
    if is_bytes_like(prompt):
        return to_bytes(out[0])
    return out[0] if prompt.dim() == 1 else out


def _sample(model: SparseTransformer, out: torch.Tensor, t0: int, start: int, slide: int,
            decoder: Decoder | None, generator: torch.Generator | None, progress: bool,
            max_time: float | None, filters: dict) -> int:
    """Fill ``out[:, t0:]`` byte by byte (the first window starts at ``start``); returns the
    bytes filled by then (all of them unless ``max_time`` ran out)."""
    n_ctx = model.cfg.n_ctx
    steps = range(t0, out.shape[1])
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="sample", unit="byte", leave=False)
    deadline = None if max_time is None else time.perf_counter() + max_time
    for t in steps:
        fresh = t == t0
        if t - start > n_ctx - 1:  # the window is full: slide it
            start, fresh = t - (n_ctx - slide), True
        if decoder is None:
            logits = next_token_logits(model, out[:, start:t])
        elif fresh:
            logits = decoder.prefill(out[:, start:t])
        else:
            logits = decoder.step(out[:, t - 1])
        probs = apply_filters(logits, **filters).softmax(dim=-1)
        # the one wait on the device per byte: the draw, on the CPU
        out[:, t] = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0]
        if deadline is not None and time.perf_counter() > deadline:
            return t + 1
    return out.shape[1]


@contextlib.contextmanager
def _one_intra_op_thread(device: torch.device) -> Iterator[None]:
    """On the CPU, decode with one intra-op thread (restored afterwards). A step is hundreds
    of operations on a few hundred numbers each, which a second thread cannot speed up; on a
    busy 2-core machine each of them waited for it instead (docs/sampling.md: 47 vs 516
    bytes/s for wiki-small)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _count(n: int | None, max_new_tokens: int | None) -> int:
    if n is None and max_new_tokens is None:
        raise TypeError("generate: give n_bytes (or max_new_tokens)")
    if n is not None and max_new_tokens is not None and n != max_new_tokens:
        raise ValueError(f"give n_bytes or max_new_tokens, not both ({n} vs {max_new_tokens})")
    n = max_new_tokens if n is None else n
    if isinstance(n, bool):
        raise TypeError("n_bytes must be an int, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n_bytes must be an int, got {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n}")
    return n


def _slide(slide: int | None, n_ctx: int) -> int:
    if slide is None:
        return max(1, n_ctx // 4)
    most = max(1, n_ctx - 1)
    if isinstance(slide, bool) or not isinstance(slide, numbers.Integral) \
            or not 1 <= slide <= most:
        raise ValueError(f"slide must be an int in 1..n_ctx - 1 = {most}, got {slide!r}")
    return int(slide)


# ``model.generate(prompt, ...)``, Hugging Face style, is this function as a method. Sampling
# builds on the model (this module imports it; model/ never imports sample/), so the method is
# attached here, and ``from sparse_transformer import SparseTransformer`` loads this module
# together with the model (sparse_transformer/__init__.py).
SparseTransformer.generate = generate
