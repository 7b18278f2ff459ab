"""Attention restricted to a pattern, with interchangeable backends (see ``dispatch``).

``attention(q, k, v, pattern)`` for one call; ``prepare`` + ``run`` for callers that run the
same pattern many times (the model: ``model/state.py``); ``kv_cache`` for decoding one query
at a time.
"""

from sparse_transformer.kernels.dispatch import (
    BACKENDS,
    Prepared,
    attention,
    prepare,
    resolve_backend,
    run,
    run_packed,
    unpack_qkv,
)
from sparse_transformer.kernels.reference import masked_softmax_attention, reference_attention

__all__ = ["attention", "prepare", "run", "run_packed", "unpack_qkv", "Prepared", "reference_attention",
           "masked_softmax_attention", "resolve_backend", "BACKENDS"]
