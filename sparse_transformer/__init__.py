"""sparse-transformer: Sparse Transformers (Child, Gray, Radford, Sutskever 2019) in PyTorch.

    patterns   which keys each query may see (strided, fixed, local, causal, unions, schedules)
    kernels    attention restricted to a pattern: reference, block-sparse PyTorch, Triton, Flex
    model      the pre-norm decoder over bytes, images and audio
"""

import importlib

__version__ = "0.1.0"

# Every export loads on first use (PEP 562), so `import sparse_transformer` (and with it the
# command line's --help) does not import torch.
_EXPORTS = {
    "patterns": ("sparse_transformer.patterns", None),
    "causal": ("sparse_transformer.patterns", "causal"),
    "fixed": ("sparse_transformer.patterns", "fixed"),
    "local": ("sparse_transformer.patterns", "local"),
    "strided": ("sparse_transformer.patterns", "strided"),
    "attention": ("sparse_transformer.kernels", "attention"),
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        mod = importlib.import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'sparse_transformer' has no attribute {name!r}")
