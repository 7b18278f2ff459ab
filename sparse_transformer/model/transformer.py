"""The Sparse Transformer (Child et al. 2019): a pre-norm decoder over byte tokens.

    H_0 = embed(X)                                          (5.3, Eq. 15; embeddings.py)
    H_k = H_{k-1} + drop(attn(LN H_{k-1}))                  (5.2, Eqs. 12-14)
    H_k = H_k + drop(ff(LN H_k))
    logits = LN(H_N) W_out,  W_out untied and zero at init  (5.2, 6)

attn is multi-head attention restricted, per layer and head, to the configured pattern and
computed by ``sparse_transformer.attention``; ff(x) = W_2 gelu(W_1 x + b_1) + b_2 with
gelu(x) = x * sigmoid(1.702 x). Dropout only at the end of each residual branch (5.4).

Initialisation (paper 6; the notation is ambiguous, see ``ModelConfig.init``): biases 0,
weights N(0, s(d_in)) with s the chosen reading of 0.125/sqrt(d_in); W_2 and W_p (the attention
output projection) scaled by a further 1/sqrt(2 N) on the standard deviation (5.2), N = n_layer.

Shape legend: B batch, N positions, D d_model, H heads, Dqk per-head q/k width, Dv = D / H.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sparse_transformer.kernels import attention
from sparse_transformer.model.config import ModelConfig
from sparse_transformer.model import pretrained
from sparse_transformer.model.embeddings import Embedding, paper_std
from sparse_transformer.model.tokens import Tokens, as_tokens
from sparse_transformer.patterns import Pattern

def attend(q, k, v, pattern: Pattern, scale: float, backend: str) -> torch.Tensor:
    """``sparse_transformer.attention`` with autocast off, so logits and softmax stay fp32.

    Under autocast a matmul of fp32 tensors is silently downcast to bf16/fp16; the backends
    upcast q, k, v themselves (the paper keeps q.k in fp32 because it can overflow fp16, 5.6),
    so autocast is switched off around the call and the result keeps the inputs' dtype.
    """
    with torch.autocast(q.device.type, enabled=False):
        return attention(q, k, v, pattern, scale=scale, backend=backend, check_finite=False)


class Attention(nn.Module):
    """Projections and reshapes around the pattern-restricted attention (paper 5.1, Eq. 8)."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.n_head, self.d_qk, self.backend = cfg.n_head, cfg.d_qk, cfg.backend
        self.pattern = cfg.layer_pattern(layer)
        # One fused matrix for q, k (each d_qk wide, half of d for "half-size" q/k) and v (d).
        self.qkv = nn.Linear(cfg.d_model, 2 * cfg.d_qk + cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)  # W_p of Eq. 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).split([self.d_qk, self.d_qk, d], dim=-1)
        # [B, N, H*Dh] -> [B, H, N, Dh]
        q = q.view(b, n, self.n_head, -1).transpose(1, 2)
        k = k.view(b, n, self.n_head, -1).transpose(1, 2)
        v = v.view(b, n, self.n_head, -1).transpose(1, 2)
        scale = 1.0 / math.sqrt(self.d_qk // self.n_head)  # per-head q/k width (paper 4.2)
        y = attend(q, k, v, self.pattern, scale, self.backend)  # [B, H, N, Dv]
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


def gelu_approx(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x): the GELU approximation the paper uses (5.2)."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.ff(self.ln2(x)))


def _run_blocks(blocks: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        h = block(h)
    return h


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
        self.reset_parameters()

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected tokens [B, N], got shape {tuple(x.shape)}")
        h = self.embed(x)  # [B, N, D]
        if self.cfg.recompute and self.training and torch.is_grad_enabled():
            # Keep only the residual stream (once per group of blocks); re-run the blocks in
            # the backward with the same RNG state so dropout masks replay (paper 5.4, Fig. 4).
            g = self.cfg.recompute_group
            for start in range(0, len(self.blocks), g):
                group = self.blocks[start:start + g]
                h = checkpoint(_run_blocks, group, h, use_reentrant=False,
                               preserve_rng_state=True)
        else:
            for block in self.blocks:
                h = block(h)
        return self.head(self.ln_f(h))  # [B, N, vocab]

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

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- using a model: thin entry points over model/pretrained.py, model/tokens.py, sample/ --
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

    def generate(self, prompt: Tokens, n_bytes: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 **options: Any) -> bytes | torch.Tensor:
        """Sample ``n_bytes`` after ``prompt`` with the pattern-aware cache: bytes (prompt + new)
        for a bytes or str prompt, a tensor for a tensor prompt.

        See ``sparse_transformer.generate`` for every option (``progress``, ``cache``, ...).
        """
        # Sampling builds on the model (sample imports model), so the model reaches it at call
        # time: importing it at module level would make the two packages import each other.
        from sparse_transformer.sample.generate import generate

        return generate(self, prompt, n_bytes, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=seed, **options)


def loss_nats(logits: torch.Tensor, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in nats of the bytes ``x`` [B, N] under ``logits`` [B, N, V], in fp32."""
    out = F.cross_entropy(logits.float().flatten(0, 1), x.flatten(), reduction=reduction)
    return out if reduction == "mean" else out.view_as(x)
