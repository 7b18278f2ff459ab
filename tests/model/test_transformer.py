"""The network: causality per pattern, init (zero output, depth-scaled std), recompute, overfit."""

import math

import pytest
import torch

from sparse_transformer.model import ModelConfig, SparseTransformer, loss_nats
from sparse_transformer.model.embeddings import position_coordinates
from sparse_transformer.model.transformer import gelu_approx


def tiny(**kw) -> ModelConfig:
    base = dict(n_layer=2, d_model=32, n_head=2, n_ctx=64,
                attention="fixed(stride=8, summary=2, distinct=2)")
    return ModelConfig(**{**base, **kw})


def randomize(model: SparseTransformer) -> None:
    """Give every parameter (even the zero output matrix) random values, to expose leaks."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("attention,extra", [
    ("fixed(stride=8, summary=2, distinct=2)", {}),
    ("strided(stride=8, mode='merge')", {}),
    ("strided(stride=8, mode='split')", {}),
    ("schedule(local(window=8), column(stride=8))", {}),
    ("causal", {"embed_stride": 8}),
    ("strided(stride=4, mode='split')", {"embedding": "image", "image_shape": (4, 4, 4)}),
])
def test_changing_token_t_changes_no_earlier_logit(attention, extra):
    """Logits at positions <= t predict bytes <= t from bytes < them, so never see byte t."""
    torch.manual_seed(0)
    model = SparseTransformer(tiny(attention=attention, **extra)).double()
    randomize(model)
    model.eval()
    x = torch.randint(0, 256, (2, 64))
    base = model(x)
    for t in (0, 9, 31, 63):
        y = x.clone()
        y[:, t] = (y[:, t] + 1 + torch.randint(0, 254, (2,))) % 256
        out = model(y)
        assert torch.equal(out[:, : t + 1], base[:, : t + 1]), f"logit <= {t} saw byte {t}"
        if t < 63:  # and the next position does see it (the test can fail)
            assert not torch.allclose(out[:, t + 1], base[:, t + 1])


def test_output_matrix_starts_at_zero_so_first_loss_is_uniform():
    model = SparseTransformer(tiny())
    assert torch.count_nonzero(model.head.weight) == 0
    x = torch.randint(0, 256, (2, 64))
    assert math.isclose(loss_nats(model(x), x).item(), math.log(256), rel_tol=1e-6)


@pytest.mark.parametrize("init,std", [("std", lambda d: 0.125 / math.sqrt(d)),
                                      ("openai", lambda d: math.sqrt(0.125 / d))])
def test_init_scales(init, std):
    """Paper 6 / 5.2: N(0, s(d_in)); W_2 and W_p a further 1/sqrt(2 N) smaller; biases 0."""
    cfg = tiny(n_layer=8, d_model=256, n_head=4, init=init)
    model = SparseTransformer(cfg)
    depth = 1 / math.sqrt(2 * cfg.n_layer)
    w1 = torch.cat([b.ff.w1.weight.flatten() for b in model.blocks])
    w2 = torch.cat([b.ff.w2.weight.flatten() for b in model.blocks])
    proj = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks])
    qkv = torch.cat([b.attn.qkv.weight.flatten() for b in model.blocks])
    assert w1.std().item() == pytest.approx(std(256), rel=0.02)
    assert qkv.std().item() == pytest.approx(std(256), rel=0.02)
    assert w2.std().item() == pytest.approx(std(1024) * depth, rel=0.02)
    assert proj.std().item() == pytest.approx(std(256) * depth, rel=0.02)
    assert model.embed.tok.weight.std().item() == pytest.approx(std(256), rel=0.05)
    assert model.embed.pos[0].weight.std().item() == pytest.approx(std(512), rel=0.2)
    assert all(torch.count_nonzero(b.ff.w1.bias) == 0 for b in model.blocks)


def test_half_size_widths():
    model = SparseTransformer(tiny(ff_mult=2.0, qk_ratio=0.5))
    attn = model.blocks[0].attn
    assert attn.qkv.out_features == 16 + 16 + 32 and model.blocks[0].ff.w1.out_features == 64


def test_gelu_approximation():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    assert torch.allclose(gelu_approx(x), x / (1 + torch.exp(-1.702 * x)))


def test_gelu_backward_matches_float64_gradcheck_and_keeps_only_its_input():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gelu_approx, (x,))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        gelu_approx(x)
    assert len(saved) == 1 and saved[0] is x


def test_positions_text_and_image():
    r, c = position_coordinates(tiny(), 64)
    assert r[17].item() == 2 and c[17].item() == 1  # 17 = 2 * 8 + 1
    cfg = tiny(attention="strided(stride=4, mode='split')", embedding="image",
               image_shape=(4, 4, 4))
    row, col, ch = position_coordinates(cfg, 64)
    i = (2 * 4 + 3) * 4 + 1  # row 2, column 3, channel 1 in raster order, channels last
    assert (row[i].item(), col[i].item(), ch[i].item()) == (2, 3, 1)


def test_recompute_gives_the_same_gradients_with_dropout():
    """Paper 5.4: blocks re-run in the backward replay the same dropout masks."""
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = SparseTransformer(tiny(dropout=0.3, recompute=recompute))
        randomize(model)
        x = torch.randint(0, 256, (2, 64))
        torch.manual_seed(5)
        loss_nats(model(x), x).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    # and dropout is really on: a different dropout seed changes the gradient
    torch.manual_seed(0)
    model = SparseTransformer(tiny(dropout=0.3, recompute=True))
    randomize(model)
    x = torch.randint(0, 256, (2, 64))
    torch.manual_seed(6)
    loss_nats(model(x), x).backward()
    assert not torch.allclose(model.head.weight.grad, grads[1][-1])


def test_bf16_autocast_keeps_finite_logits():
    model = SparseTransformer(tiny())
    randomize(model)
    x = torch.randint(0, 256, (2, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    ref = model(x)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = SparseTransformer(tiny())
    x = torch.randint(0, 256, (2, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = loss_nats(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # random bytes: log(256) = 5.55 nats unless the batch is memorised
    assert loss.item() < 0.5
