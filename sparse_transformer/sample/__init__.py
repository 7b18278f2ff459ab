"""Sampling (paper 6): ``generate``, the ``Decoder`` it drives, and logit filters."""

from sparse_transformer.sample.decode import Decoder
from sparse_transformer.sample.filters import FILTERS, apply_filters
from sparse_transformer.sample.generate import generate, next_token_logits

__all__ = ["generate", "next_token_logits", "Decoder", "apply_filters", "FILTERS"]
