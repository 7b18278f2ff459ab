"""sparse-transformer: Sparse Transformers (Child, Gray, Radford, Sutskever 2019) in PyTorch.

    patterns   which keys each query may see (strided, fixed, local, causal, unions, schedules)
    kernels    attention restricted to a pattern: reference, block-sparse PyTorch, Triton, Flex
    model      the pre-norm decoder over bytes, images and audio
    sample     generation through a pattern-aware key/value cache

    from sparse_transformer import SparseTransformer, ModelConfig, generate, attention
    from sparse_transformer import patterns, causal, fixed, local, strided
"""

import importlib as _importlib
import typing as _typing

from sparse_transformer import patterns
from sparse_transformer.patterns import causal, fixed, local, strided

__version__ = "0.1.0"

# Loaded on first use: the model and kernels import torch._dynamo (2-3 s on a busy
# 2-core machine, on top of torch itself), which `import sparse_transformer` should not pay.
_LAZY = {
    "attention": "sparse_transformer.kernels",
    "ModelConfig": "sparse_transformer.model",
    "SparseTransformer": "sparse_transformer.model",
    "generate": "sparse_transformer.sample",
}

__all__ = ["patterns", "causal", "fixed", "local", "strided", *_LAZY, "__version__"]

if _typing.TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    from sparse_transformer.kernels import attention
    from sparse_transformer.model import ModelConfig, SparseTransformer
    from sparse_transformer.sample import generate


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'sparse_transformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
