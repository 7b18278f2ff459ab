"""torch.compile works on the model for every backend "auto" can pick on the CPU, and for the
Triton op (through the interpreter); CUDA's compiled step is in tests/kernels/test_cuda.py.

``backend="aot_eager"`` traces through dynamo and AOTAutograd (where graph breaks and custom-op
registrations fail) without needing a C++ compiler, so the tests stay fast.
"""

from __future__ import annotations

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer
from sparse_transformer.kernels import resolve_backend
from sparse_transformer.model.transformer import loss_nats


def _check_compiled_matches_eager(cfg: ModelConfig, n: int) -> None:
    torch.manual_seed(0)
    model = SparseTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():  # non-zero output matrix: gradients reach every layer
            p.normal_(0, 0.2)
    x = torch.randint(0, 256, (2, n))
    compiled = torch.compile(model, backend="aot_eager")
    got = loss_nats(compiled(x), x)
    got.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expect = loss_nats(model(x), x)
    expect.backward()
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    for a, p in zip(grads, model.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-5)


def test_default_model_compiles():
    """The default CPU model (wiki-tiny, backend "auto"), the case issue 12 saw fail."""
    cfg = ModelConfig.from_preset("wiki-tiny")
    q = torch.empty(1, cfg.n_head, cfg.n_ctx, 16)
    assert resolve_backend("auto", q, cfg.layer_pattern(0)) == "reference"
    _check_compiled_matches_eager(cfg, cfg.n_ctx)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_block_sparse_backends_compile(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    cfg = ModelConfig.from_preset("wiki-tiny", n_ctx=128, backend=backend,
                                  attention="fixed(stride=32, summary=8, distinct=2)")
    _check_compiled_matches_eager(cfg, 128)


def test_compile_blocks_matches_eager():
    """train --compile's path: each block compiled, recompute re-running the compiled block."""
    cfg = ModelConfig.from_preset("wiki-tiny", recompute=True)
    torch.manual_seed(0)
    model = SparseTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    ref = SparseTransformer(cfg)
    ref.load_state_dict(model.state_dict())
    model.compile_blocks(backend="aot_eager")
    x = torch.randint(0, 256, (2, cfg.n_ctx))
    for m in (model, ref):
        m.train()
        loss_nats(m(x), x).backward()
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5, msg=name)
    # what train hands back: the blocks' plain forward again, no compiled call left to run
    model.eager_blocks()
    assert all(block._compiled_call_impl is None for block in model.blocks)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


@pytest.mark.parametrize("group", [1, 2, 3])
def test_recompute_groups_give_the_same_gradients(group):
    """Recompute per group of blocks changes what is kept, not what is computed."""
    cfg = ModelConfig.from_preset("wiki-tiny", n_layer=4, dropout=0.1)
    torch.manual_seed(0)
    plain = SparseTransformer(cfg)
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0, 0.2)
    grouped = SparseTransformer(cfg.replace(recompute=True, recompute_group=group))
    grouped.load_state_dict(plain.state_dict())
    x = torch.randint(0, 256, (2, cfg.n_ctx))
    for m in (plain, grouped):
        torch.manual_seed(7)  # the same dropout masks in both (replayed by the recompute)
        loss_nats(m(x), x).backward()
    for (name, a), b in zip(plain.named_parameters(), grouped.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-6, msg=name)


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_compile_blocks_traces_the_state_without_a_graph_break(backend):
    """Each block takes its layer's state (prepared attention) as an argument: dynamo reads it
    and traces the backend through, one graph for every block, no break (the CUDA version with
    autocast is tests/kernels/test_cuda.py)."""
    if backend == "triton":
        pytest.importorskip("triton")
    from torch._dynamo.utils import counters

    cfg = ModelConfig.from_preset("wiki-tiny", n_ctx=128, backend=backend, recompute=True,
                                  attention="fixed(stride=32, summary=8, distinct=2)")
    model = SparseTransformer(cfg).compile_blocks(backend="aot_eager")
    x = torch.randint(0, 256, (2, 128))
    counters.clear()
    for _ in range(2):
        loss_nats(model(x), x).backward()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_half_checkpoints_keep_the_stream_in_bf16_and_train_like_fp32_checkpoints():
    """half_checkpoints (paper 5.6): what each recompute checkpoint keeps of the residual
    stream is the autocast dtype, and the gradients stay within bf16 rounding of the fp32
    checkpoints'."""
    cfg = ModelConfig.from_preset("wiki-tiny", n_layer=4, dropout=0.0, recompute=True,
                                  recompute_group=2)
    torch.manual_seed(0)
    fp32 = SparseTransformer(cfg)
    with torch.no_grad():
        for p in fp32.parameters():
            p.normal_(0, 0.2)
    half = SparseTransformer(cfg.replace(half_checkpoints=True))
    half.load_state_dict(fp32.state_dict())
    x = torch.randint(0, 256, (2, cfg.n_ctx))
    stream = (2, cfg.n_ctx, cfg.d_model)
    kept, grads = {}, {}
    for name, m in (("fp32", fp32), ("half", half)):
        dtypes = []

        def pack(t, dtypes=dtypes):
            if tuple(t.shape) == stream:
                dtypes.append(t.dtype)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_nats(m(x), x)
        loss.backward()
        kept[name] = dtypes
        grads[name] = torch.cat([p.grad.flatten() for p in m.parameters()])
    # stream-shaped tensors saved in the forward: the two checkpoints' inputs, then the final
    # LayerNorm's input (fp32 either way)
    assert kept["fp32"] == [torch.float32] * 3
    assert kept["half"] == [torch.bfloat16] * 2 + [torch.float32]
    rel = float((grads["half"] - grads["fp32"]).norm() / grads["fp32"].norm())
    assert 0 < rel < 0.02, rel
