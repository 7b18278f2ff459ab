"""ModelConfig: every architectural choice of a Sparse Transformer, as one JSON-able dataclass.

Presets follow the paper (sections 6-7) plus small
models that train in minutes on a laptop CPU. ``ModelConfig.from_preset("enwik8")`` gives the
95M-parameter Enwik8 model, ``ModelConfig.from_preset("wiki-small")`` the CPU demo model.

Choices the paper leaves open, and what we picked (each also noted beside its preset):
- fixed pattern heads read *distinct* summary sub-blocks (paper 4.3 says this was preferable):
  Enwik8 uses V = 4 sub-blocks of c = 32 in blocks of l = 128, as OpenAI's code does;
- CIFAR-10's stride is 96 (= one 32-pixel row of 3 channels) and ImageNet 64's is 128; both
  split the heads (Eq. 8): half the heads attend to the row (local window), half to the
  column (every l-th earlier position). The paper does not say which integration it used.
- initialisation: the paper's N(0, 0.125/sqrt(d_in)) is read as OpenAI's later code reads
  it, std = sqrt(0.125/d_in); the literal standard-deviation reading is ``init="std"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from sparse_transformer.checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_memory,
)
from sparse_transformer.kernels.dispatch import BACKENDS
from sparse_transformer.model.size import param_count
from sparse_transformer.patterns import Pattern, parse_pattern
from sparse_transformer.patterns.compose import PerHead, Schedule, Union

EMBEDDINGS = ("text", "image")
INITS = ("openai", "std")
MAX_RATIO = 1024  # ff_mult and qk_ratio: far beyond any useful width, finite times any d_model


def pattern_stride(p: Pattern | Schedule) -> int | None:
    """The stride l of a pattern: ``stride`` of a strided/fixed/column part, or a local window."""
    if isinstance(p, (Union, PerHead, Schedule)):
        found = [s for s in (pattern_stride(q) for q in p.parts) if s is not None]
        return max(found) if found else None
    for attr in ("stride", "window"):
        if hasattr(p, attr):
            return int(getattr(p, attr))
    return None


@dataclass
class ModelConfig:
    """Architecture of a Sparse Transformer over byte tokens (paper sections 5-6).

    All sizes are totals over heads: the per-head q/k width is ``qk_ratio * d_model / n_head``.
    """

    n_layer: int = 4
    """Number of residual blocks N (each has one attention and one feed-forward branch)."""
    d_model: int = 128
    """Width d of the residual stream and of every embedding (paper 6: 256, 512 or 1024)."""
    n_head: int = 4
    """Attention heads per layer (paper 5.1, Eq. 8)."""
    n_ctx: int = 256
    """Context length n in tokens (bytes)."""
    attention: str = "fixed(stride=16, summary=4, distinct=2)"
    """Pattern spec (``sparse_transformer.patterns.parse_pattern``); a ``schedule(...)``
    assigns layer r the pattern ``r mod len`` (paper 5.1, Eq. 6)."""
    vocab_size: int = 256
    """Token values: 256 for bytes, sub-pixels and 8-bit mu-law audio (paper 3)."""
    ff_mult: float = 4.0
    """Feed-forward width as a multiple of d: 4.0, or 2.0 for the paper's "half-size" (5.2)."""
    qk_ratio: float = 1.0
    """Query/key width as a fraction of d: 1.0, or 0.5 for half-size q/k (paper 6)."""
    dropout: float = 0.0
    """Dropout at the end of each residual branch only; none inside attention (paper 5.4)."""
    embedding: str = "text"
    """Position embedding (paper 5.3): "text" = (row, column) of the position in a matrix of
    width ``embed_stride``; "image" = (row, column, channel) of ``image_shape``."""
    embed_stride: int | None = None
    """Width of the text position matrix; default: the stride l of the attention pattern."""
    image_shape: tuple[int, int, int] | None = None
    """(H, W, C) for ``embedding="image"``; bytes in raster order, channels consecutive."""
    recompute: bool = False
    """Recompute each residual block in the backward pass (paper 5.4, torch.utils.checkpoint)."""
    recompute_group: int = 1
    """Blocks per recompute checkpoint: the residual stream is kept once per group of this many
    blocks, so the kept activations shrink by this factor at no extra compute (each block is
    still re-run once); the backward then holds one group's activations at a time. For very
    long sequences (1M tokens: 2 GiB of fp32 residual per block at d 512)."""
    half_checkpoints: bool = False
    """Under bf16/fp16 autocast, keep the residual stream at each recompute checkpoint in that
    half-precision dtype instead of fp32 (paper 5.6: activations stored in half precision);
    the blocks still add to an fp32 stream inside a group. Halves what recompute keeps: the
    152M model at 1,048,576 positions keeps 24 GiB instead of 48 (benchmarks/model_step.py
    --shapes 1m). Without autocast or recompute it changes nothing."""
    backend: str = "auto"
    """Attention backend passed to ``sparse_transformer.attention``."""
    init: str = "openai"
    """How to read the paper's N(0, 0.125/sqrt(d_in)) (section 6), which does not define its
    notation: "openai" (default) follows OpenAI's later code (distribution_augmentation),
    std = sqrt(0.125/d_in); "std" reads the second argument literally as the standard
    deviation, std = 0.125/sqrt(d_in), 2.8x smaller at d = 128, which learned clearly slower
    in our small CPU runs (docs/training.md). Either way W_2 and
    W_p get a further 1/sqrt(2 n_layer) on the standard deviation (5.2)."""
    ln_eps: float = 1e-5
    """LayerNorm epsilon (not given in the paper; OpenAI's code uses 1e-5)."""
    output_bias: bool = False
    """A bias on the logits beside the zero-initialised output matrix (not in the paper). It
    starts at zero; ``train`` sets it to the train bytes' log unigram frequencies before the
    first update, so the model starts as the unigram model and W_out learns only what the
    context adds (docs/training.md: why the zero-started output needs help)."""

    def __post_init__(self) -> None:
        # Every field's type and range first: a config comes from JSON files and --set as much
        # as from code, and a wrong type fails far away (ff_mult=Infinity as an OverflowError
        # inside the model) or silently does the opposite (recompute="no" is truthy).
        for name in ("n_layer", "d_model", "n_head", "n_ctx", "vocab_size", "recompute_group"):
            check_int(f"ModelConfig.{name}", getattr(self, name), 1)
        # ratios bounded so that ratio * d_model stays a finite float for any 64-bit d_model
        check_float("ModelConfig.ff_mult", self.ff_mult, 0, MAX_RATIO, lo_open=True)
        check_float("ModelConfig.qk_ratio", self.qk_ratio, 0, MAX_RATIO, lo_open=True)
        check_float("ModelConfig.dropout", self.dropout, 0, 1, hi_open=True)
        check_float("ModelConfig.ln_eps", self.ln_eps, 0, 1, lo_open=True)
        for name in ("recompute", "output_bias", "half_checkpoints"):
            check_bool(f"ModelConfig.{name}", getattr(self, name))
        check_choice("ModelConfig.init", self.init, INITS)
        check_choice("ModelConfig.embedding", self.embedding, EMBEDDINGS)
        # the name only: whether a backend runs here depends on the device of each call
        check_choice("ModelConfig.backend", self.backend, BACKENDS)
        if self.embed_stride is not None:
            check_int("ModelConfig.embed_stride", self.embed_stride, 1, self.n_ctx)
        if self.d_model % self.n_head:
            raise ValueError(
                f"ModelConfig: d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        if int(self.ff_mult * self.d_model) != self.ff_mult * self.d_model:
            raise ValueError(f"ModelConfig.ff_mult must make ff_mult * d_model a positive int, "
                             f"got {self.ff_mult}")
        qk = self.qk_ratio * self.d_model
        if qk != int(qk) or int(qk) % self.n_head or int(qk) == 0:
            raise ValueError(f"ModelConfig.qk_ratio ({self.qk_ratio}) * d_model must be a "
                             f"positive multiple of n_head ({self.n_head})")
        pat = self.pattern  # parses and raises ValueError naming a bad spec
        pat.check_heads(self.n_head)
        if self.embedding == "image":
            shape = self.image_shape
            if not isinstance(shape, (tuple, list)) or len(shape) != 3:
                raise ValueError(f"ModelConfig: embedding='image' needs image_shape=(H, W, C), "
                                 f"got {shape!r}")
            for axis, size in zip("HWC", shape):
                check_int(f"ModelConfig.image_shape {axis}", size, 1, self.n_ctx)
            self.image_shape = tuple(shape)
            if math.prod(self.image_shape) != self.n_ctx:
                raise ValueError(
                    f"ModelConfig: n_ctx ({self.n_ctx}) must equal H*W*C of image_shape "
                    f"{self.image_shape} = {math.prod(self.image_shape)}"
                )
        else:
            if self.image_shape is not None:
                raise ValueError(f"ModelConfig.image_shape is for embedding='image'; this "
                                 f"config's embedding is {self.embedding!r}")
            stride = self.embed_stride or pattern_stride(pat)
            if stride is None:
                raise ValueError(
                    f"ModelConfig: pattern {self.attention!r} has no stride; set embed_stride"
                )
            if self.n_ctx % stride:
                raise ValueError(
                    f"ModelConfig: n_ctx ({self.n_ctx}) must be divisible by the stride "
                    f"({stride}) of the text position embedding"
                )
            self.embed_stride = int(stride)
        # Last, the size: a model that cannot be built in this machine's memory is refused
        # here in one line, instead of allocating for minutes and dying (n_layer=10**9).
        # Every model is built on the CPU first (training, loading), so RAM bounds it.
        check_memory(f"ModelConfig: {self.n_layer:,} layers of width {self.d_model:,} "
                     f"({param_count(self):,} parameters)", 4 * param_count(self),
                     hint="use a smaller n_layer, d_model, n_ctx or vocab_size")

    # -- derived ---------------------------------------------------------------------------
    @property
    def pattern(self) -> Pattern | Schedule:
        """The parsed attention pattern (or schedule)."""
        return parse_pattern(self.attention)

    def layer_pattern(self, layer: int) -> Pattern:
        """The pattern residual block ``layer`` attends with (paper 5.1)."""
        p = self.pattern
        return p.for_layer(layer) if isinstance(p, Schedule) else p

    @property
    def d_ff(self) -> int:
        return int(self.ff_mult * self.d_model)

    @property
    def d_qk(self) -> int:
        return int(self.qk_ratio * self.d_model)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["image_shape"] is not None:
            d["image_shape"] = list(d["image_shape"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named configuration from ``PRESETS``, with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


# Paper models (sections 6-7). Parameter counts are checked against the paper in the tests.
# Every preset carries ``output_bias=True``: with the paper's zero-started output matrix, the
# logits start at the train bytes' unigram model (docs/training.md, "Why the paper-sized
# models stalled"); not in the paper, 256 parameters.
PRESETS: dict[str, dict[str, Any]] = {
    # Enwik8 (7.2): 30 layers, d 512, 8 heads, fixed l=128 c=32, merged heads, dropout 0.4; 95M.
    # Distinct summary sub-blocks per head (V=4), OpenAI code's num_verts=4 with c=32.
    # No recompute (the paper's 5.4 is for memory): at the recipe's batch 2 a step peaks at
    # 17 GiB without it and runs 1.7x faster (190k vs 112k tokens/s, H100, 5 Dec;
    # benchmarks/model_step.py --shapes enwik8). --set recompute=true turns it back on. The
    # recipe adds compile and CUDA graphs (train/recipes.py).
    "enwik8": dict(n_layer=30, d_model=512, n_head=8, n_ctx=12288, dropout=0.4,
                   attention="fixed(stride=128, summary=32, distinct=4)", output_bias=True),
    # CIFAR-10 (7.1): 128 layers, d 256, 2 heads, half-size ff and q/k, dropout 0.25; 59M.
    # Stride 96 = one image row of 32 px x 3 channels; one head per strided part (Eq. 8).
    # No recompute: at the recipe's batch 8 a step peaks at 20.5 GiB without it; with the
    # recipe's CUDA graphs it runs 4.5x faster than it did eager with recompute (H100, 5 Dec;
    # benchmarks/model_step.py --shapes cifar10). --set recompute=true for a larger batch.
    "cifar10": dict(n_layer=128, d_model=256, n_head=2, n_ctx=3072, ff_mult=2.0, qk_ratio=0.5,
                    dropout=0.25, attention="strided(stride=96, mode='split')",
                    embedding="image", image_shape=(32, 32, 3), output_bias=True),
    # ImageNet 64x64 (7.3): 48 layers, d 512, 16 heads, strided l=128, dropout 0.01; 152M.
    # No recompute: 22.6 GiB at batch 2, 2.0x faster with the recipe's CUDA graphs than eager
    # with recompute (same benchmark, --shapes imagenet64).
    "imagenet64": dict(n_layer=48, d_model=512, n_head=16, n_ctx=12288, dropout=0.01,
                       attention="strided(stride=128, mode='split')", embedding="image",
                       image_shape=(64, 64, 3), output_bias=True),
    # Classical music, Table 4 first row: 65,536 mu-law samples, 152M parameters (the
    # ImageNet-sized network), strided with l = 256 = sqrt(n); text-style (row, column)
    # position embedding, as the blog says the audio model only changes the embeddings.
    # No recompute: at batch 1 a step peaks at 57.0 GiB without it (an 80 GB card) and runs
    # 1.25x faster (158k vs 126k tokens/s, H100, 5 Dec; benchmarks/model_step.py --shapes
    # audio-65k). A million positions need it back: --set recompute=true --set
    # recompute_group=2 --set half_checkpoints=true (72.5 GiB at 1,048,576, eager, same
    # benchmark, --shapes 1m; docs/training.md has the whole command).
    "audio-65k": dict(n_layer=48, d_model=512, n_head=16, n_ctx=65536, dropout=0.01,
                      attention="strided(stride=256, mode='split')", output_bias=True),
    # --- one GPU, the default data ---------------------------------------------------------
    # The default data (wiki, 5.5 MB of train bytes) in 10 minutes on one H200: the Enwik8
    # pattern and width at 12 layers and a 2,048-byte context; dropout because 10 minutes are
    # dozens of epochs of these bytes. Its training recipe is in train/recipes.py.
    "wiki-gpu": dict(n_layer=12, d_model=512, n_head=8, n_ctx=2048, dropout=0.25,
                     attention="fixed(stride=128, summary=32, distinct=4)", output_bias=True),
    # --- one GPU, minutes, the paper's three modalities (docs/results.md) ------------------
    # Text: 10^8 bytes of text100m at a 16,384-byte context, the width and depth of wiki-gpu;
    # strided l = 128 = sqrt(n) with split heads, the best of the three patterns at 8,192 on
    # an H100 in 144 s (2.084 bits/byte vs fixed 2.236, dense 2.593). No dropout: 9 minutes
    # are about two passes over the train split.
    "text-gpu": dict(n_layer=12, d_model=512, n_head=8, n_ctx=16384, dropout=0.0,
                     attention="strided(stride=128, mode='split')", output_bias=True),
    # Images: the CIFAR-10 architecture (half-size feed-forward and q/k, 2 heads, strided over
    # one image row) shrunk to 24 layers for whole 28x28 Fashion-MNIST images in minutes.
    "fashion-mnist-gpu": dict(n_layer=24, d_model=256, n_head=2, n_ctx=784, ff_mult=2.0,
                              qk_ratio=0.5, dropout=0.1,
                              attention="strided(stride=28, mode='split')", embedding="image",
                              image_shape=(28, 28, 1), output_bias=True),
    # Audio: 65,536 mu-law samples (5.5 s at 12 kHz), strided l = 256 = sqrt(n) as the
    # paper's audio-65k, with the text model's width and depth so minutes give many updates.
    "audio-gpu": dict(n_layer=12, d_model=512, n_head=8, n_ctx=65536, dropout=0.0,
                      attention="strided(stride=256, mode='split')", output_bias=True),
    # --- small models for CPUs (minutes on 2 cores) ---------------------------------------
    # Unit-test size.
    "wiki-tiny": dict(n_layer=2, d_model=32, n_head=2, n_ctx=64,
                      attention="fixed(stride=8, summary=2, distinct=2)", output_bias=True),
    # The README's demo model: Enwik8's fixed pattern scaled down to a 256-byte context.
    "wiki-small": dict(n_layer=4, d_model=128, n_head=4, n_ctx=256, dropout=0.0,
                       attention="fixed(stride=16, summary=4, distinct=2)", output_bias=True),
    # Fashion-MNIST, whole 28x28 grayscale images; stride 28 = one image row.
    "fashion-mnist-small": dict(n_layer=4, d_model=128, n_head=2, n_ctx=784,
                                attention="strided(stride=28, mode='split')",
                                embedding="image", image_shape=(28, 28, 1), output_bias=True),
    # Short mu-law audio clips (1,024 samples), strided l = 32 = sqrt(n).
    "audio-small": dict(n_layer=4, d_model=128, n_head=4, n_ctx=1024,
                        attention="strided(stride=32, mode='split')", output_bias=True),
}
