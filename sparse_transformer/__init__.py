"""sparse-transformer: Sparse Transformers (Child, Gray, Radford, Sutskever 2019) in PyTorch.

    patterns   which keys each query may see (strided, fixed, local, causal, unions, schedules)
    kernels    attention restricted to a pattern: reference, block-sparse PyTorch, Triton, Flex
    model      the pre-norm decoder over bytes, images and audio
"""

from sparse_transformer import patterns
from sparse_transformer.patterns import causal, fixed, local, strided

__version__ = "0.1.0"

__all__ = ["patterns", "causal", "fixed", "local", "strided", "attention", "__version__"]


def __getattr__(name: str):
    # Heavier parts load on first use, so `import sparse_transformer` stays light.
    if name == "attention":
        from sparse_transformer.kernels import attention

        return attention
    raise AttributeError(f"module 'sparse_transformer' has no attribute {name!r}")
