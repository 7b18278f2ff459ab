"""The forward state (issue 19): built once per (model, length, device, dtype), owned by the
model, bounded; the backend is resolved and the pattern planned once, not per call or layer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer
from sparse_transformer.model import state as state_module


def _model(**kw) -> SparseTransformer:
    torch.manual_seed(0)
    model = SparseTransformer(ModelConfig.from_preset("wiki-tiny", **kw))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def test_prepared_once_per_length_and_shared_by_equal_layers(monkeypatch):
    from sparse_transformer.kernels import dispatch

    prepared, resolved = [], []
    real_prepare, real_resolve = state_module.prepare, dispatch.resolve
    monkeypatch.setattr(state_module, "prepare",
                        lambda *a, **kw: prepared.append(a[:2]) or real_prepare(*a, **kw))
    monkeypatch.setattr(dispatch, "resolve",
                        lambda *a, **kw: resolved.append(a) or real_resolve(*a, **kw))
    model = _model(n_layer=3, attention="schedule(local(window=8), column(stride=8))",
                   embed_stride=8, backend="torch")
    x = torch.randint(0, 256, (2, 64))
    for _ in range(3):
        model(x)
    # two distinct layer patterns at one length: two preparations, each resolved once
    assert [n for _, n in prepared] == [64, 64] and len(resolved) == 2
    st = model.forward_state(64)
    assert st.layers[0] is st.layers[2] and st.layers[0] is not st.layers[1]
    assert st.layers[0].attend.backend == "torch"
    model(x[:, :40])
    assert [n for _, n in prepared] == [64, 64, 40, 40]


def test_an_explicit_state_is_the_same_forward():
    model = _model()
    x = torch.randint(0, 256, (2, 64))
    state = model.forward_state(64)
    assert state is model.forward_state(64)  # kept, not rebuilt
    torch.testing.assert_close(model(x, state), model(x))
    with pytest.raises(ValueError, match="built for 64 positions, got 32"):
        model(x[:, :32], state)
    with pytest.raises(ValueError, match="exceeds n_ctx 64"):
        model.forward_state(65)


def test_the_model_keeps_a_bounded_number_of_states():
    model = _model()
    for n in range(1, 3 * state_module.STATES):
        model.forward_state(n)
    assert len(model._states) == state_module.STATES
    assert model.config is model.cfg  # Hugging Face's name


def test_autocast_prepares_for_the_autocast_dtype():
    model = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        st = model.forward_state(64)
    assert st.dtype == torch.bfloat16
    assert model.forward_state(64).dtype == torch.float32


def test_no_module_level_caches_or_id_keys():
    """Caches belong to a model, a decoding run or an explicit bounded object (dispatch's
    PREPARED), never to a module, and nothing is keyed by id(). The one exception: flex.py's
    compiled FlexAttention function, a single value that dynamo bounds (RECOMPILE_LIMIT)."""
    root = Path(__file__).resolve().parents[2] / "sparse_transformer"
    found = []
    for layer in ("patterns", "kernels", "model", "sample"):
        for path in (root / layer).glob("*.py"):
            for line in path.read_text().splitlines():
                if re.search(r"lru_cache|functools\.cache\b|\bid\(", line):
                    found.append(f"{path.relative_to(root)}: {line.strip()}")
    assert found == ["kernels/flex.py: @functools.cache"], found


def test_a_state_built_while_sampling_serves_training():
    """Regression: sampling runs under inference mode, whose tensors autograd refuses; the
    states the model keeps must be built as ordinary tensors there."""
    model = _model(backend="torch")
    model.generate(b"ab", 100, seed=0, cache=False)  # the 64-position state, built sampling
    x = torch.randint(0, 256, (2, 64))
    model.train()
    model.loss(x).backward()  # raised "Inference tensors cannot be saved for backward"
    assert model.head.weight.grad is not None
