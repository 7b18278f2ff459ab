"""Suite-wide hygiene: seeded RNGs, no TF32, default dtype restored, CPU-friendly threads."""

import os
import random

import numpy as np
import pytest
import torch

# Triton kernels run through the interpreter when there is no GPU. The variable must be set
# before any kernel module is imported, so it is set here, at collection time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _hygiene():
    seed = 1234
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dtype = torch.get_default_dtype()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_default_dtype(dtype)


def assert_plans_skip_tiles(model, n: int, backend: str | None = None) -> None:
    """Every layer's plan at the tile sizes of the model's backend (or ``backend``) on the
    model's device computes fewer tiles than causal, so a test on it cannot pass on a dense
    path."""
    from sparse_transformer import patterns as P
    from sparse_transformer.kernels.dispatch import load_backend

    cfg = model.cfg
    weight = next(model.parameters())
    qb, kb = load_backend(backend or cfg.backend).block_sizes(cfg.d_qk // cfg.n_head,
                                                              weight.dtype, weight.device)
    causal = P.causal().plan(n, cfg.n_head, qb, kb).tiles_computed()
    for r in range(cfg.n_layer):
        tiles = cfg.layer_pattern(r).plan(n, cfg.n_head, qb, kb).tiles_computed()
        assert tiles < causal, f"layer {r}: {tiles} of {causal} causal tiles: nothing skipped"


@pytest.fixture(name="assert_plans_skip_tiles")
def _assert_plans_skip_tiles_fixture():
    return assert_plans_skip_tiles


# The functions each attention backend's work goes through: per plan component for "torch",
# the whole pattern in one op for "triton" (on separate q, k, v, or on the model's packed qkv).
BACKEND_ENTRY = {"torch": ("run_component",),
                 "triton": ("sparse_attention", "sparse_attention_packed")}


@pytest.fixture
def count_backend_calls(monkeypatch):
    """count_backend_calls(backend) -> a list that grows by one per call of the backend's entry.

    Lets a test assert that a block-sparse backend really ran, not a dense fallback.
    """
    def install(backend: str) -> list:
        from sparse_transformer.kernels.dispatch import load_backend

        module, calls = load_backend(backend), []

        def counting(run):
            def counted(*args, **kwargs):
                calls.append(1)
                return run(*args, **kwargs)
            return counted

        for entry in BACKEND_ENTRY[backend]:
            monkeypatch.setattr(module, entry, counting(getattr(module, entry)))
        return calls
    return install
