"""The Sparse Transformer (Child et al. 2019): a pre-norm decoder over byte tokens.

    H_0 = embed(X)                                          (5.3, Eq. 15; embeddings.py)
    H_k = H_{k-1} + drop(attn(LN H_{k-1}))                  (5.2, Eqs. 12-14)
    H_k = H_k + drop(ff(LN H_k))
    logits = LN(H_N) W_out,  W_out untied and zero at init  (5.2, 6)

attn is multi-head attention restricted, per layer and head, to the configured pattern and
computed by the attention backends (``kernels``); ff(x) = W_2 gelu(W_1 x + b_1) + b_2 with
gelu(x) = x * sigmoid(1.702 x). Dropout only at the end of each residual branch (5.4).

Every forward pass takes an explicit state (``model/state.py``): each layer's attention
prepared for the length (backend, plan, device tables), built once and kept by the model, or,
when decoding, the run's key/value caches and position. Training, evaluation, the prompt of a
sample and each decoding step run these same modules; only the state differs.

Initialisation (paper 6; the notation is ambiguous, see ``ModelConfig.init``): biases 0,
weights N(0, s(d_in)) with s the chosen reading of 0.125/sqrt(d_in); W_2 and W_p (the attention
output projection) scaled by a further 1/sqrt(2 N) on the standard deviation (5.2), N = n_layer.

Shape legend: B batch, N positions, D d_model, H heads, Dqk per-head q/k width, Dv = D / H.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sparse_transformer.kernels import Prepared, run, run_packed, unpack_qkv
from sparse_transformer.model import pretrained
from sparse_transformer.model.config import ModelConfig
from sparse_transformer.model.embeddings import Embedding, paper_std
from sparse_transformer.model.state import (
    STATES,
    DecodeState,
    ForwardState,
    LayerState,
    build_decode_state,
    build_forward_state,
)
from sparse_transformer.model.tokens import Tokens, as_tokens


def attend(q, k, v, prepared: Prepared, scale: float) -> torch.Tensor:
    """The prepared attention (``kernels.run``) with autocast off, so logits stay fp32.

    Under autocast a matmul of fp32 tensors is silently downcast to bf16/fp16; the backends
    upcast q, k, v themselves (the paper keeps q.k in fp32 because it can overflow fp16, 5.6),
    so autocast is switched off around the call and the result keeps the inputs' dtype.
    """
    with torch.autocast(q.device.type, enabled=False):
        return run(prepared, q, k, v, scale)


def attend_packed(qkv: torch.Tensor, prepared: Prepared, n_heads: int, d_qk: int,
                  scale: float) -> torch.Tensor:
    """``attend`` on the heads of the fused projection ``qkv`` (``kernels.run_packed``: our
    Triton kernels take it whole and return d(qkv) as one tensor)."""
    with torch.autocast(qkv.device.type, enabled=False):
        return run_packed(prepared, qkv, n_heads, d_qk, scale)


class Attention(nn.Module):
    """Projections and reshapes around the pattern-restricted attention (paper 5.1, Eq. 8)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.n_head, self.d_qk = cfg.n_head, cfg.d_qk
        self.pattern = cfg.layer_pattern(layer)
        self.scale = 1.0 / math.sqrt(cfg.d_qk // cfg.n_head)  # per-head q/k width (paper 4.2)
        # One fused matrix for q, k (each d_qk wide, half of d for "half-size" q/k) and v (d).
        self.qkv = nn.Linear(cfg.d_model, 2 * cfg.d_qk + cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)  # W_p of Eq. 5

    def forward(self, x: torch.Tensor, layer: LayerState) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x)
        if layer.cache is None:  # training and evaluation: the heads straight from qkv
            y = attend_packed(qkv, layer.attend, self.n_head, self.d_qk, self.scale)
        else:
            q, k, v = unpack_qkv(qkv, self.n_head, self.d_qk)  # [B, H, N, Dh] views
            if layer.attend is None:
                # One decoding step: store this position's key/value where the pattern will
                # read it, and attend to the pattern's cached keys only (kernels/kv_cache.py).
                y = layer.cache.step(q, k, v, layer.index, self.scale)  # [B, H, 1, Dv]
            else:  # a decoding run's prompt: attend, and keep its keys and values
                y = attend(q, k, v, layer.attend, self.scale)  # [B, H, N, Dv]
                layer.cache.prefill(k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class _GeluApprox(torch.autograd.Function):
    """x * sigmoid(1.702 x) keeping only x for the backward, which holds at most two
    [tokens, 4d] temporaries and launches as many kernels as autograd of the plain expression
    (five). Autograd of the plain expression keeps x and the sigmoid, a second [tokens, 4d]
    tensor per block: at 1,048,576 positions that is 4 GiB a block in bf16, and with two
    blocks per recompute checkpoint the step no longer fits an 80 GB card
    (benchmarks/memory_estimate.py: 80.4 GiB with the plain expression, 72.4 with this)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(1.702 * x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # d/dx [x s(1.702 x)] = s + 1.702 x s (1 - s): g s + 1.702 x (g s (1 - s))
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(1.702 * x)
        d = torch.ops.aten.sigmoid_backward(grad, s)  # g s (1 - s), one kernel
        return s.mul_(grad).addcmul_(x, d, value=1.702)


def gelu_approx(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the GELU approximation the paper uses (5.2)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GeluApprox.apply(x)
    return x * torch.sigmoid(1.702 * x)


class FeedForward(nn.Module):
    """W_2 f(W_1 x + b_1) + b_2 with width ``ff_mult * d`` (4d, or 2d "half-size")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(gelu_approx(self.w1(x)))


class Block(nn.Module):
    """One pre-activation residual block: an attention branch then a feed-forward branch."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.attn = Attention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.ff = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)  # end of each branch only (paper 5.4)

    def forward(self, x: torch.Tensor, layer: LayerState) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), layer))
        return x + self.drop(self.ff(self.ln2(x)))


def _run_blocks(blocks: nn.ModuleList, h: torch.Tensor, layers: tuple[LayerState, ...]
                ) -> torch.Tensor:
    for block, layer in zip(blocks, layers):
        h = block(h, layer)
    return h


def _run_blocks_from(blocks: nn.ModuleList, h: torch.Tensor, layers: tuple[LayerState, ...],
                     dtype: torch.dtype) -> torch.Tensor:
    """``_run_blocks`` from a stream kept in half precision (``half_checkpoints``)."""
    return _run_blocks(blocks, h.to(dtype), layers)


class SparseTransformer(nn.Module):
    """Bytes [B, N] (N <= n_ctx) -> logits [B, N, vocab]; logits[:, i] predict x[:, i] from x[:, :i].

    The shift is inside the model: position i reads byte i - 1 and a learned start vector sits
    at position 0 (``embeddings.py``), so the loss compares ``logits[:, i]`` with ``x[:, i]``
    itself at every position, ``i = 0`` included. This differs from Hugging Face and nanoGPT,
    where logits[:, i] predict x[:, i + 1]: shifting the targets here as well would train the
    model to predict two bytes ahead. ``model.loss(x)`` computes the loss the right way.

    >>> model = SparseTransformer(ModelConfig.from_preset("wiki-tiny"))
    >>> model(torch.zeros(2, 64, dtype=torch.long)).shape
    torch.Size([2, 64, 256])
    >>> round(model.loss(b"any bytes").item(), 3)  # output matrix zero at init: ln 256 nats
    5.545
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg, r) for r in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.output_bias)  # W_out, untied
        # The forward states this model ran with last, by (length, device, dtype, backend):
        # a bounded cache owned here (not in the state dict; rebuilt after a reload).
        self._states: OrderedDict[tuple, ForwardState] = OrderedDict()
        self.reset_parameters()

    @property
    def config(self) -> ModelConfig:
        """The model's ``ModelConfig`` (Hugging Face's name for it; ``cfg`` is the same)."""
        return self.cfg

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.cfg
        self.embed.reset_parameters(cfg.init)
        depth = 1.0 / math.sqrt(2 * cfg.n_layer)  # paper 5.2: W_2 and W_p scaled by 1/sqrt(2N)
        for block in self.blocks:
            for lin, extra in ((block.attn.qkv, 1.0), (block.attn.proj, depth),
                               (block.ff.w1, 1.0), (block.ff.w2, depth)):
                nn.init.normal_(lin.weight, std=paper_std(lin.in_features, cfg.init) * extra)
                nn.init.zeros_(lin.bias)
            for ln in (block.ln1, block.ln2):
                nn.init.ones_(ln.weight)
                nn.init.zeros_(ln.bias)
        nn.init.ones_(self.ln_f.weight)
        nn.init.zeros_(self.ln_f.bias)
        nn.init.zeros_(self.head.weight)  # the output logits matrix starts at 0 (paper 6)
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)

    @torch.no_grad()
    def init_output_bias(self, log_frequencies: torch.Tensor) -> None:
        """Start the logits at the unigram model: output bias = log frequency of each byte.

        Needs ``output_bias=True``. ``train`` calls it for a new run with the train split's
        frequencies (``data.bytes.byte_log_frequencies``).
        """
        if self.head.bias is None:
            raise ValueError("init_output_bias: this model has no output bias "
                             "(ModelConfig.output_bias=False)")
        freq = torch.as_tensor(log_frequencies, dtype=self.head.bias.dtype)
        if freq.shape != self.head.bias.shape or not bool(torch.isfinite(freq).all()):
            raise ValueError(f"init_output_bias: expected {tuple(self.head.bias.shape)} finite "
                             f"log frequencies, got shape {tuple(freq.shape)}")
        self.head.bias.copy_(freq.to(self.head.bias.device))

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: ForwardState | DecodeState | None = None
                ) -> torch.Tensor:
        """Logits for bytes ``x`` [B, N].

        Without a state, or with ``forward_state(N)``: positions 0..N-1, logits[:, i]
        predicting x[:, i] from x[:, :i] (the class docstring). With a ``decode_state``,
        decoding: the first call runs the prompt x (positions 0..N: the start vector, then
        one position per byte) and returns logits [B, N + 1, V], the last predicting the byte
        after the prompt; each later call takes one byte x [B, 1] -- the byte just chosen --
        and returns logits [B, 1, V] for the byte after it, through the caches.
        """
        if x.dim() != 2:
            raise ValueError(f"expected tokens [B, N], got shape {tuple(x.shape)}")
        if isinstance(state, DecodeState):
            return self._decode(x, state)
        if state is None:
            state = self.forward_state(x.shape[1], x.device)
        elif state.n != x.shape[1]:
            raise ValueError(f"the state was built for {state.n} positions, got {x.shape[1]}")
        h = self.embed(x[:, :-1], state.coords, start=True)  # [B, N, D]: byte i-1 at i
        return self._blocks_and_head(h, state.layers)

    def _blocks_and_head(self, h: torch.Tensor, layers: tuple[LayerState, ...]) -> torch.Tensor:
        if self.cfg.recompute and self.training and torch.is_grad_enabled():
            # Keep only the residual stream (once per group of blocks); re-run the blocks in
            # the backward with the same RNG state so dropout masks replay (paper 5.4, Fig. 4).
            g = self.cfg.recompute_group
            dev = h.device.type
            keep = (torch.get_autocast_dtype(dev) if self.cfg.half_checkpoints
                    and torch.is_autocast_enabled(dev) else None)
            for start in range(0, len(self.blocks), g):
                if keep is None:
                    h = checkpoint(_run_blocks, self.blocks[start:start + g], h,
                                   layers[start:start + g], use_reentrant=False,
                                   preserve_rng_state=True)
                else:  # the checkpoint saves its input: a half-precision copy of the stream
                    h = checkpoint(_run_blocks_from, self.blocks[start:start + g], h.to(keep),
                                   layers[start:start + g], h.dtype, use_reentrant=False,
                                   preserve_rng_state=True)
        else:
            h = _run_blocks(self.blocks, h, layers)
        return self.head(self.ln_f(h))  # [B, N, vocab]

    def _decode(self, x: torch.Tensor, state: DecodeState) -> torch.Tensor:
        if self.training:  # a step has no dropout; the prompt's pass must not either
            raise ValueError("decoding needs the model in eval mode (model.eval())")
        if x.shape[0] != state.batch:
            raise ValueError(f"the decode state holds {state.batch} sequences, got a batch of "
                             f"{x.shape[0]}")
        if state.length == 0:  # the prompt: start vector + x, one ordinary forward pass
            n = x.shape[1] + 1
            if n > state.capacity:
                raise ValueError(f"prompt of {n - 1} tokens leaves no room in the cache's "
                                 f"{state.capacity} positions (n_ctx {self.cfg.n_ctx})")
            fs = self.forward_state(n, x.device)
            layers = tuple(LayerState(f.attend, cache=c) for f, c in zip(fs.layers, state.caches))
            logits = self._blocks_and_head(self.embed(x, fs.coords, start=True), layers)
            state.pos.fill_(n)
            state.length = n
            return logits
        if x.shape[1] != 1:
            raise ValueError(f"a decoding step takes one byte per sequence, got {x.shape[1]}; "
                             "state.reset() to run a new prompt")
        if state.length >= state.capacity:
            raise ValueError(f"the cache is full: {state.capacity} positions decoded")
        logits = self.decode_step(x, state)
        state.length += 1
        return logits

    def decode_step(self, x: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """One cached decoding step, bytes x [B, 1] -> logits [B, 1, V], with no host-side
        checks or counters: what ``sample/decode.py`` captures in a CUDA graph.
        Advances ``state.pos`` (on the device), not ``state.length``; ``model(x, state)`` is
        the checked call."""
        # Position pos reads the byte x (at pos - 1); its coordinates come from the device
        # position, so a CUDA graph of this step replays at any position.
        state.index.clear()
        h = self.embed(x, [c.index_select(0, state.pos) for c in state.coords], start=False)
        logits = self._blocks_and_head(h, state.step_layers)
        state.pos.add_(1)  # after the blocks: the step index reads pos lazily
        return logits

    # -- states ----------------------------------------------------------------------------
    @torch.compiler.disable
    def forward_state(self, n: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> ForwardState:
        """The state of a forward pass over ``n`` positions on ``device`` (default: the
        model's) with attention inputs of ``dtype`` (default: autocast's when it is on, else
        the weights'): built once, then kept with the last few (``state.STATES``).

        Outside torch.compile's trace (planning is host-side numpy): a compiled ``forward``
        breaks the graph once here, and ``compile_blocks`` traces none of it.
        """
        if not 1 <= n <= self.cfg.n_ctx:
            raise ValueError(f"sequence length {n} exceeds n_ctx {self.cfg.n_ctx}"
                             if n > 0 else f"sequence length must be >= 1, got {n}")
        device = self.head.weight.device if device is None else torch.device(device)
        if dtype is None:
            dtype = (torch.get_autocast_dtype(device.type)
                     if torch.is_autocast_enabled(device.type) else self.head.weight.dtype)
        key = (n, device, dtype, self.cfg.backend)
        state = self._states.get(key)
        if state is None:
            # ordinary tensors even when called under inference mode (sampling): the model keeps
            # the state, and a training step may take it up later
            with torch.inference_mode(False):
                state = self._states[key] = build_forward_state(self, n, device, dtype)
            if len(self._states) > STATES:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        return state

    def decode_state(self, batch: int, capacity: int | None = None, *, dense: bool = False,
                     fused: bool = False) -> DecodeState:
        """Caches for decoding ``batch`` sequences of up to ``capacity`` positions (default
        and at most n_ctx) on the model's device: pass it to ``forward`` (see there), or let
        ``sparse_transformer.generate`` do it. ``dense`` builds the baseline that stores and
        reads every position (benchmarks). ``fused`` runs each layer's cached step as one
        Triton launch per head group (``kernels/triton_decode.py``)."""
        return build_decode_state(self, batch, capacity, dense, fused)

    def compile_blocks(self, **options) -> "SparseTransformer":
        """``torch.compile`` each residual block in place; returns the model.

        Per block rather than the whole model: every block has the same code, so one graph
        serves all of them (compile time does not grow with depth), and recompute
        (``torch.utils.checkpoint`` around each block) re-runs the compiled block. Our attention
        op is a custom op, so the graph has no break: layer norms, gelu, residual adds and the
        projections around it are fused by Inductor. ``options`` go to ``torch.compile``.
        """
        for block in self.blocks:
            block.compile(**options)
        return self

    def eager_blocks(self) -> "SparseTransformer":
        """Undo ``compile_blocks``: every block runs its plain forward again (the weights are
        the same tensors); returns the model. What ``train`` hands back, since decoding
        captures its own CUDA graph around the blocks (``sample/decode.py``), which a block
        replayed from Inductor's CUDA graphs cannot join."""
        for block in self.blocks:
            block._compiled_call_impl = None  # what nn.Module.compile set (no public undo)
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- using a model: thin entry points over model/pretrained.py and model/tokens.py ------
    # (``model.generate(prompt, ...)`` is ``sparse_transformer.generate(model, prompt, ...)``,
    # wired by the package: sampling builds on the model, sparse_transformer/__init__.py)
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        map_location: str | torch.device = "cpu") -> "SparseTransformer":
        """The model saved in ``path``: a step folder (config.json + model.safetensors) or a run
        directory (its ``checkpoints/latest``). Reads only JSON and safetensors. In eval mode,
        on ``device`` (default: ``map_location``, where the weights are read to)."""
        return pretrained.load_pretrained(cls, path, device=device, map_location=map_location)

    def save_pretrained(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``path/config.json`` + ``path/model.safetensors`` atomically; ``overwrite``
        replaces an existing non-empty folder (refused otherwise)."""
        return pretrained.save_pretrained(self, self.cfg, path, overwrite=overwrite)

    def loss(self, x: Tokens) -> torch.Tensor:
        """Mean cross-entropy in nats per byte of ``x`` (bytes, str as UTF-8, or token ids [N]
        or [B, N], 1 <= N <= n_ctx): each byte predicted from the bytes before it, the first
        from the start vector. Pass the bytes themselves, unshifted. Bits per byte = nats /
        ln 2."""
        tokens = as_tokens(x, self.cfg.vocab_size, name="loss", min_len=1, max_len=self.cfg.n_ctx)
        tokens = tokens.to(self.head.weight.device)
        return loss_nats(self(tokens), tokens)


def loss_nats(logits: torch.Tensor, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in nats of the bytes ``x`` [B, N] under ``logits`` [B, N, V], in fp32."""
    out = F.cross_entropy(logits.float().flatten(0, 1), x.flatten(), reduction=reduction)
    return out if reduction == "mean" else out.view_as(x)
