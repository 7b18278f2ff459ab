"""Incremental decoding: one new token per step through the model, with per-layer caches.

    prefill(tokens [B, T])  ->  logits [B, V] for position T     (one full forward pass)
    step(token [B])         ->  logits [B, V] for the next position

The step reuses the model's own modules and weights (embedding tables, LayerNorms, the fused
q/k/v and output projections, the feed-forward) and replaces only the attention over the whole
sequence by ``LayerCache.step``: the new key/value is stored where the pattern will still read
it, and the query attends to the pattern's keys only (``cache.py``). q.k, softmax and p.v run in
fp32, as the paper does when sampling (5.6). The prefill is the model's ordinary forward pass,
with a hook on each layer's q/k/v projection that hands the prompt's keys and values to the
caches, so a long prompt (image completion, text continuation) costs one parallel pass.

On CUDA the step is captured once in a CUDA graph: inputs live in static buffers, and the
position advances through a device tensor inside the graph, so a token costs one graph launch.
If capture fails the step runs eagerly (with a warning). Logits match a full forward pass over
the same tokens (tests/sample/test_cache_exact.py).

``CachedNextLogits`` adapts this to ``generate``'s ``next_logits(model, tokens)`` seam.

Shapes: B batch, T prompt length, D d_model, H heads, V vocabulary.
"""

from __future__ import annotations

import math
import warnings

import torch

from sparse_transformer.model.embeddings import position_coordinates
from sparse_transformer.model.transformer import SparseTransformer
from sparse_transformer.sample.cache import LayerCache, StepIndex


def _heads(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, N, D] -> q, k [B, H, N, Dqk/H], v [B, H, N, D/H]: ``Attention.forward``'s split."""
    b, n, d = x.shape
    q, k, v = attn.qkv(x).split([attn.d_qk, attn.d_qk, d], dim=-1)
    return tuple(t.view(b, n, attn.n_head, -1).transpose(1, 2) for t in (q, k, v))


class IncrementalDecoder:
    """Decode ``batch`` sequences of ``model`` one token per step with pattern-aware caches.

    Args:
        model: a ``SparseTransformer`` in eval mode (``generate`` sees to that).
        batch: number of sequences decoded together.
        dense: use the dense baseline cache (every position stored and read).
        cuda_graph: "auto" (capture on CUDA), True (require capture), False (eager).
        capacity: positions the caches hold (default and maximum n_ctx); a short sample from a
            long-context model needs only prompt + new bytes, and the causal, summary and
            column stores (and their reads) shrink with it.
    """

    def __init__(self, model: SparseTransformer, batch: int, *, dense: bool = False,
                 cuda_graph: bool | str = "auto", capacity: int | None = None):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        cfg = model.cfg
        self.capacity = cfg.n_ctx if capacity is None else min(int(capacity), cfg.n_ctx)
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        p = next(model.parameters())
        self.model, self.cfg, self.batch, self.dense = model, cfg, batch, dense
        self.device, self.dtype = p.device, p.dtype
        d_v = cfg.d_model // cfg.n_head
        d_k = cfg.d_qk // cfg.n_head
        self.scale = 1.0 / math.sqrt(d_k)  # as Attention.forward (paper 4.2)
        self.caches = [LayerCache(blk.attn.pattern, cfg.n_head, self.capacity, batch, d_k, d_v,
                                  dtype=self.dtype, device=self.device, dense=dense)
                       for blk in model.blocks]
        self._coords = position_coordinates(cfg, cfg.n_ctx, self.device)
        # Static inputs/outputs of the step (CUDA-graph friendly): the position of the query
        # and the byte before it (the model's input at that position, embeddings.py).
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.prev = torch.zeros(batch, dtype=torch.long, device=self.device)
        out_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        self.logits = torch.zeros(batch, cfg.vocab_size, dtype=out_dtype, device=self.device)
        self.length = 0  # positions 0 .. length-1 are in the caches
        want = cuda_graph if cuda_graph != "auto" else self.device.type == "cuda"
        self._want_graph = bool(want)
        self._graph: torch.cuda.CUDAGraph | None = None

    # -- accounting ----------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of all layers' key/value buffers."""
        return sum(c.nbytes for c in self.caches)

    def slots_read_per_token(self) -> int:
        """Key slots read per decoded token, summed over layers and heads (per sample)."""
        return sum(c.slots_read() for c in self.caches)

    # -- prefill -------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the prompt ``tokens`` [B, T] (T may be 0); return logits [B, V] for position T."""
        if tokens.dim() != 2 or tokens.shape[0] != self.batch:
            raise ValueError(f"prefill expects tokens [{self.batch}, T], got {tuple(tokens.shape)}")
        if self.model.training:  # the step has no dropout; the prefill pass must not either
            raise ValueError("incremental decoding needs the model in eval mode (model.eval())")
        t = tokens.shape[1]
        if t + 1 > self.capacity:
            raise ValueError(f"prompt of {t} tokens leaves no room in the cache's "
                             f"{self.capacity} positions (n_ctx {self.cfg.n_ctx})")
        x = torch.cat([tokens, tokens.new_zeros(self.batch, 1)], dim=1).to(self.device)
        hooks = []
        for blk, cache in zip(self.model.blocks, self.caches):
            hooks.append(blk.attn.qkv.register_forward_hook(self._capture(blk.attn, cache)))
        try:
            logits = self.model(x)[:, -1].to(self.logits.dtype)
        finally:
            for h in hooks:
                h.remove()
        self.length = t + 1
        self.pos.fill_(t + 1)
        return logits

    @staticmethod
    def _capture(attn, cache: LayerCache):
        def hook(module, inputs, out):
            b, n, d = inputs[0].shape
            _, k, v = (z.view(b, n, attn.n_head, -1).transpose(1, 2)
                       for z in out.split([attn.d_qk, attn.d_qk, d], dim=-1))
            cache.prefill(k, v)
        return hook

    # -- the step --------------------------------------------------------------------------------
    def _embed(self) -> torch.Tensor:
        """The model's input at position ``pos``: byte pos-1 (start vector at 0) + positions."""
        emb = self.model.embed
        h = emb.tok(self.prev)  # [B, D]
        h = torch.where(self.pos == 0, emb.start.to(h.dtype), h)
        for table, coord in zip(emb.pos, self._coords):
            h = h + table(coord.index_select(0, self.pos))  # same order of sums as Embedding
        return h[:, None]  # [B, 1, D]

    def _step(self) -> None:
        """One token: embeddings, blocks with cached attention, final LN, logits; pos += 1."""
        idx = StepIndex(self.pos, self.batch)
        h = self._embed()
        for blk, cache in zip(self.model.blocks, self.caches):
            # Block.forward with its attention over the whole sequence replaced by the cache
            # (dropout is the identity in eval mode).
            q, k, v = _heads(blk.attn, blk.ln1(h))
            y = cache.step(q, k, v, idx, self.scale)  # [B, H, 1, Dv]
            h = h + blk.attn.proj(y.transpose(1, 2).reshape(self.batch, 1, -1))
            h = h + blk.ff(blk.ln2(h))
        self.logits.copy_(self.model.head(self.model.ln_f(h))[:, 0])
        self.pos.add_(1)

    def _capture_graph(self) -> None:
        """Record ``_step`` in a CUDA graph (a few eager warm-up steps first, pos restored)."""
        saved = self.pos.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.pos.copy_(saved)
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.pos.copy_(saved)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        self.pos.copy_(saved)
        self._graph = graph

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Append ``token`` [B] (the byte at position length-1); return logits [B, V] after it."""
        if self.length == 0:
            raise RuntimeError("call prefill (possibly with an empty prompt) before step")
        if self.length >= self.capacity:
            raise ValueError(f"the cache is full: {self.capacity} positions decoded")
        self.prev.copy_(token.reshape(self.batch))
        if self._want_graph and self._graph is None:
            try:
                self._capture_graph()
            except Exception as err:  # e.g. an op without capture support on this build
                warnings.warn(f"CUDA graph capture failed ({err}); decoding eagerly",
                              stacklevel=2)
                self._want_graph = False
        if self._graph is not None:
            self._graph.replay()
        else:
            self._step()
        self.length += 1
        return self.logits


class CachedNextLogits:
    """``generate``'s ``next_logits(model, tokens)`` seam backed by an ``IncrementalDecoder``.

    Each call normally passes the previous call's tokens with one more column; then only that
    column is decoded. Any other call (new prompt, other batch size) prefills afresh. Past
    n_ctx positions the pattern's position embedding has no rows left, so those calls fall back
    to the straightforward window (``generate.next_token_logits``). ``capacity`` sizes the
    caches (``generate`` passes prompt + new bytes); a longer sequence gets n_ctx-sized ones.
    """

    def __init__(self, dense: bool = False, cuda_graph: bool | str = "auto",
                 capacity: int | None = None):
        self.dense, self.cuda_graph, self.capacity = dense, cuda_graph, capacity
        self.decoder: IncrementalDecoder | None = None
        self._seen: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, model: SparseTransformer, tokens: torch.Tensor) -> torch.Tensor:
        from sparse_transformer.sample.generate import next_token_logits

        b, t = tokens.shape
        if t + 1 > model.cfg.n_ctx:
            return next_token_logits(model, tokens)
        dec = self.decoder
        appended = (dec is not None and dec.model is model and dec.batch == b
                    and self._seen is not None and t == self._seen.shape[1] + 1
                    and dec.length == t and dec.length < dec.capacity
                    and torch.equal(tokens[:, :-1], self._seen))
        if appended:
            logits = dec.step(tokens[:, -1])
        else:
            if (dec is None or dec.model is not model or dec.batch != b
                    or t + 1 > dec.capacity):
                fits = self.capacity is not None and t + 1 <= self.capacity
                cap = self.capacity if fits else None  # else n_ctx-sized caches
                dec = self.decoder = IncrementalDecoder(model, b, dense=self.dense,
                                                        cuda_graph=self.cuda_graph, capacity=cap)
            logits = dec.prefill(tokens)
        self._seen = tokens
        return logits.clone()
