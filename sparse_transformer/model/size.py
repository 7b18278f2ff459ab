"""What a ModelConfig costs before anything is built: its parameters and a lower bound on the
memory training it takes. Closed forms over the config's fields (no torch), so a config can be
refused in microseconds instead of after minutes of allocation (``n_layer=10**9``).

``param_count`` must equal ``SparseTransformer(cfg).num_params()``; tests/model check it for
every preset, so a change to the model's layers that this file misses fails there.
"""

from __future__ import annotations

from typing import Any

PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def param_count(cfg: Any) -> int:
    """Parameters of ``SparseTransformer(cfg)``: embeddings, blocks, final norm and head."""
    d, v = cfg.d_model, cfg.vocab_size
    d_qk, d_ff = int(cfg.qk_ratio * d), int(cfg.ff_mult * d)
    if cfg.embedding == "image":
        tables = sum(cfg.image_shape)
    else:  # (row, column) of a matrix of width l = embed_stride (or the pattern's stride)
        stride = cfg.embed_stride or 1
        tables = cfg.n_ctx // stride + stride
    embed = v * d + d + tables * d  # tokens, start vector, position tables
    attn = d * (2 * d_qk + d) + (2 * d_qk + d) + d * d + d  # qkv and the output projection
    ff = d * d_ff + d_ff + d_ff * d + d
    block = 2 * d + attn + 2 * d + ff  # two layer norms
    head = d * v + (v if cfg.output_bias else 0)
    return embed + cfg.n_layer * block + 2 * d + head


def training_bytes(cfg: Any, batch_size: int, precision: str = "fp32", shards: int = 1) -> int:
    """A lower bound on the memory one training process needs: fp32 weights, gradients and
    AdamW's two moments (16 bytes a parameter, split over ``shards`` processes with FSDP),
    the residual stream kept for the backward (once per block, or once per recompute group)
    and the logits with their gradient. The true figure is several times larger, so what this
    refuses can never fit; what it lets through may still not."""
    width = PRECISION_BYTES.get(precision, 4)
    tokens = batch_size * cfg.n_ctx
    kept = -(-cfg.n_layer // cfg.recompute_group) if cfg.recompute else cfg.n_layer
    activations = tokens * cfg.d_model * width * kept
    logits = 2 * tokens * cfg.vocab_size * 4  # the loss upcasts the logits to fp32
    return 16 * param_count(cfg) // max(1, shards) + activations + logits


def forward_bytes(cfg: Any, batch_size: int, precision: str = "fp32") -> int:
    """A lower bound on one forward pass without gradients (evaluation): the weights, one
    residual stream and the fp32 logits."""
    width = PRECISION_BYTES.get(precision, 4)
    tokens = batch_size * cfg.n_ctx
    return 4 * param_count(cfg) + tokens * cfg.d_model * width + tokens * cfg.vocab_size * 4
