"""The Sparse Transformer model over bytes (paper sections 5-6): config, embeddings, network,
and the state its forward pass takes (``state.py``)."""

from sparse_transformer.model.config import PRESETS, ModelConfig
from sparse_transformer.model.transformer import SparseTransformer, loss_nats

__all__ = ["ModelConfig", "PRESETS", "SparseTransformer", "loss_nats"]
