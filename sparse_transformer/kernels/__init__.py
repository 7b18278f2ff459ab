"""Attention restricted to a pattern, with interchangeable backends (see ``dispatch``)."""

from sparse_transformer.kernels.dispatch import BACKENDS, attention, resolve_backend
from sparse_transformer.kernels.reference import masked_softmax_attention, reference_attention

__all__ = ["attention", "reference_attention", "masked_softmax_attention", "resolve_backend",
           "BACKENDS"]
