"""The package's public names, a light `import sparse_transformer`, and ``model.loss``."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import sparse_transformer as st
from sparse_transformer import ModelConfig, SparseTransformer


def test_public_names_import_and_are_listed():
    from sparse_transformer import (ModelConfig, SparseTransformer, attention, causal, fixed,
                                    generate, local, patterns, strided)
    from sparse_transformer.kernels import attention as attention_impl
    from sparse_transformer.sample.generate import generate as generate_impl

    assert generate is generate_impl and attention is attention_impl
    assert SparseTransformer.__name__ == "SparseTransformer" and ModelConfig.__name__
    assert (causal, fixed, local, strided) == (patterns.causal, patterns.fixed, patterns.local,
                                               patterns.strided)
    public = {"SparseTransformer", "ModelConfig", "generate", "attention", "patterns",
              "causal", "fixed", "local", "strided"}
    assert public <= set(dir(st)) and public <= set(st.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Transformer'"):
        st.Transformer  # noqa: B018


def test_import_is_light():
    """`import sparse_transformer` loads neither the model nor torch._dynamo (seconds)."""
    code = ("import sys, sparse_transformer; "
            "print(sorted(m for m in ('sparse_transformer.model', 'sparse_transformer.kernels', "
            "'sparse_transformer.sample', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _model() -> SparseTransformer:
    torch.manual_seed(0)
    model = SparseTransformer(ModelConfig.from_preset("wiki-tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def test_loss_is_unshifted_cross_entropy_over_every_byte():
    model = _model()
    x = torch.randint(0, 256, (2, 64))
    logits = model(x)
    ours = F.cross_entropy(logits.flatten(0, 1), x.flatten())  # logits[:, i] <-> x[:, i]
    torch.testing.assert_close(model.loss(x), ours)
    hf_style = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    assert not torch.allclose(model.loss(x), hf_style)  # the shift convention differs
    text = "sparse transformers read bytes"
    row = torch.tensor(list(text.encode()))
    assert model.loss(text).item() == pytest.approx(model.loss(row).item(), rel=1e-6)
    assert model.loss(text.encode()).item() == pytest.approx(model.loss(row[None]).item(),
                                                             rel=1e-6)
    model.loss(x).backward()  # it trains: gradients reach the weights
    assert model.head.weight.grad is not None


def test_loss_of_a_fresh_model_is_uniform():
    model = SparseTransformer(ModelConfig.from_preset("wiki-tiny"))  # zero output matrix
    assert model.loss(b"abc").item() == pytest.approx(math.log(256), rel=1e-6)


@pytest.mark.parametrize("x,err,words", [
    (b"", ValueError, "at least 1"),
    (torch.zeros(0, 5, dtype=torch.long), ValueError, "batch is empty"),
    (torch.zeros(65, dtype=torch.long), ValueError, "65 tokens, more than the 64"),
    (torch.zeros(4), TypeError, "integer tensor"),
    (torch.tensor([1, 256]), ValueError, "0..255, got values from 1 to 256"),
    (torch.tensor([-1, 2]), ValueError, "0..255"),
    (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, r"\[T\] or \[B, T\]"),
    ([1, 2, 3], TypeError, "bytes, str or an integer tensor, got list"),
])
def test_loss_rejects_bad_input(x, err, words):
    with pytest.raises(err, match=words):
        _model().loss(x)
