"""``model.generate`` / ``sparse_transformer.generate``: bytes, str and tensors in, clear errors.

The last test runs the "Use a trained model in Python" example of docs/sampling.md verbatim on a
briefly trained tiny model saved as a run directory.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

import sparse_transformer as st
from sparse_transformer import ModelConfig, SparseTransformer

DOC = Path(__file__).resolve().parents[2] / "docs" / "sampling.md"


def _model() -> SparseTransformer:
    torch.manual_seed(0)
    model = SparseTransformer(ModelConfig.from_preset("wiki-tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_bytes_and_str_prompts_give_bytes():
    model = _model()
    out = model.generate(b"<page>", 20, seed=0)
    assert isinstance(out, bytes) and len(out) == 26 and out.startswith(b"<page>")
    assert model.generate("<page>", 20, seed=0) == out  # str is its UTF-8 bytes
    assert model.generate(bytearray(b"<page>"), 20, seed=0) == out
    assert model.generate("é", 3, seed=0)[:2] == "é".encode()
    assert st.generate(model, b"<page>", 20, seed=0) == out  # the same function
    assert model.generate(b"<page>", 20, seed=1) != out  # the seed matters
    assert model.generate(b"", 5, seed=0)[:0] == b"" and len(model.generate(b"", 5)) == 5


def test_tensor_prompts_give_tensors_with_the_same_bytes():
    model = _model()
    row = torch.tensor(list(b"<page>"), dtype=torch.uint8)  # any integer dtype
    one = model.generate(row, 20, seed=0)
    assert one.shape == (26,) and one.dtype == torch.long
    assert bytes(one.tolist()) == model.generate(b"<page>", 20, seed=0)
    batch = model.generate(row.repeat(3, 1), 10, top_k=40, top_p=0.9, temperature=0.8, seed=2)
    assert batch.shape == (3, 16) and torch.equal(batch[:, :6], row.long().repeat(3, 1))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(model.generate(row, 20, generator=gen), one)  # seed == its generator


def test_training_mode_is_restored_and_no_grad():
    model = _model().train()
    model.generate(b"ab", 3, seed=0)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("prompt,kw,err,words", [
    ([60, 112], {}, TypeError, "bytes, str or an integer tensor, got list"),
    (60, {}, TypeError, "got int"),
    (torch.tensor([1.0, 2.0]), {}, TypeError, "integer tensor of token ids, got torch.float32"),
    (torch.tensor([True]), {}, TypeError, "torch.bool"),
    (torch.tensor([3, 300]), {}, ValueError, r"0\.\.255, got values from 3 to 300"),
    (torch.zeros(0, 4, dtype=torch.long), {}, ValueError, "batch is empty"),
    (torch.zeros(2, 2, 2, dtype=torch.long), {}, ValueError, r"\[T\] or \[B, T\]"),
    (b"x" * 64, {}, ValueError, "64 bytes is too long: .* n_ctx - 1 = 63"),
    (b"x", {"n_bytes": -1}, ValueError, "n_bytes must be >= 0"),
    (b"x", {"n_bytes": 2.5}, TypeError, "n_bytes must be an int, got float"),
    (b"x", {"n_bytes": True}, TypeError, "got bool"),
    (b"x", {"temperature": 0}, ValueError, "temperature must be > 0"),
    (b"x", {"top_k": -3}, ValueError, "top_k must be >= 1"),
    (b"x", {"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
    (b"x", {"seed": 1, "generator": torch.Generator()}, ValueError, "seed or generator"),
])
def test_bad_arguments_fail_before_sampling(prompt, kw, err, words):
    kw = {"n_bytes": 5, **kw}
    with pytest.raises(err, match=words):
        _model().generate(prompt, **kw)


def test_hugging_face_conventions():
    """``max_new_tokens`` for n_bytes, a prompt longer than the context cropped on request
    (the result still holds all of it), ``max_time`` stopping early, ``model.config``."""
    model = _model()
    out = model.generate(b"<page>", max_new_tokens=20, seed=0)
    assert out == model.generate(b"<page>", 20, seed=0)
    assert st.generate(model, b"<page>", max_new_tokens=20, seed=0) == out
    with pytest.raises(ValueError, match="not both"):
        model.generate(b"<page>", 20, max_new_tokens=21)
    with pytest.raises(TypeError, match="give n_bytes"):
        model.generate(b"<page>")
    long = bytes(range(32, 127)) * 2  # 190 bytes; wiki-tiny sees n_ctx - 1 = 63
    with pytest.raises(ValueError, match="crop=True"):
        model.generate(long, 5)
    cropped = model.generate(long, 5, seed=0, crop=True)
    assert len(cropped) == 195 and cropped[:190] == long
    assert cropped[190:] == model.generate(long[-63:], 5, seed=0)[63:]
    assert len(model.generate(b"x", 5000, max_time=0.05)) < 5001
    assert model.config is model.cfg


@pytest.mark.parametrize("slide", [0, 64, 2.0, True])
def test_bad_slide_is_refused(slide):
    with pytest.raises(ValueError, match=r"slide must be an int in 1\.\.n_ctx - 1 = 63"):
        _model().generate(b"x", 5, slide=slide)


def _readme_example() -> str:
    text = DOC.read_text()
    section = text.split("## Use a trained model in Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_documented_example_runs_on_a_trained_run(tmp_path, monkeypatch):
    code = _readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) == 5  # as README says
    # A run directory as `sparse-transformer train` leaves it: checkpoints/<step>/ + latest.
    cfg = ModelConfig.from_preset("wiki-small", n_layer=1, d_model=32, n_head=2)
    torch.manual_seed(0)
    model = SparseTransformer(cfg)
    data = torch.tensor(list(b"<page>\n  <title>Anarchism</title>\n  <text>" * 6))[:cfg.n_ctx]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(data).item()
    for _ in range(8):  # a handful of steps: enough to move the loss off ln 256
        loss = model.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.3
    model.save_pretrained(tmp_path / "runs/demo/checkpoints/step-00000008")
    (tmp_path / "runs/demo/checkpoints/latest").write_text("step-00000008\n")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(DOC), "exec"), {})
    sample, loss_line = printed.getvalue().rsplit("\n", 2)[:2]
    assert sample.startswith("<page>\n  <title>") and len(sample) > 50
    nats = float(loss_line.split()[0])
    assert loss_line.endswith("nats per byte") and 0 < nats < first
