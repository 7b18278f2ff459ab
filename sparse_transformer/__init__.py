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

__version__ = "0.1.0"

# Every export loads on first use (PEP 562): `import sparse_transformer` (and with it the command
# line's --help) imports no torch, and the model and kernels, which pull in torch._dynamo (2-3 s
# on a busy 2-core machine), load only when asked for. SparseTransformer comes with sampling
# loaded: sample/ attaches ``generate`` to it as a method (the model never imports sample/).
_EXPORTS = {
    "patterns": ("sparse_transformer.patterns", None),
    "causal": ("sparse_transformer.patterns", "causal"),
    "fixed": ("sparse_transformer.patterns", "fixed"),
    "local": ("sparse_transformer.patterns", "local"),
    "strided": ("sparse_transformer.patterns", "strided"),
    "attention": ("sparse_transformer.kernels", "attention"),
    "ModelConfig": ("sparse_transformer.model", "ModelConfig"),
    "SparseTransformer": ("sparse_transformer.model", "SparseTransformer"),
    "generate": ("sparse_transformer.sample", "generate"),
}
_LOADS_TOO = {"SparseTransformer": "sparse_transformer.sample"}

__all__ = [*_EXPORTS, "__version__"]

if _typing.TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    from sparse_transformer import patterns
    from sparse_transformer.kernels import attention
    from sparse_transformer.model import ModelConfig, SparseTransformer
    from sparse_transformer.patterns import causal, fixed, local, strided
    from sparse_transformer.sample import generate


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        if name in _LOADS_TOO:
            _importlib.import_module(_LOADS_TOO[name])
        mod = _importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'sparse_transformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
