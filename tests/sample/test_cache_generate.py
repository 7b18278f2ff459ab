"""``generate`` and ``sparse-transformer sample`` decode through the cache by default.

Cached and straightforward decoding draw the same bytes from the same seed (their logits agree
to ~1e-6), with a prompt, a batch, top-k / top-p and a temperature, and past n_ctx (where both
slide their window the same way: the cached path prefills each new window).
"""

from __future__ import annotations

import pytest
import torch

from sparse_transformer.model import ModelConfig, SparseTransformer
from sparse_transformer.sample.generate import generate


def _model() -> SparseTransformer:
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=4, n_ctx=64,
                      attention="strided(stride=8, mode='split')")
    model = SparseTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.8, top_k=20, top_p=0.9)])
def test_cached_and_straightforward_draw_the_same_bytes(kw):
    model = _model()
    prompt = torch.randint(0, 256, (3, 11))
    runs = []
    for cache in (True, False):
        gen = torch.Generator().manual_seed(7)
        runs.append(generate(model, prompt, 40, generator=gen, cache=cache, **kw))
    assert runs[0].shape == (3, 51)
    assert torch.equal(runs[0][:, :11], prompt)
    assert torch.equal(runs[0], runs[1])


def test_beyond_n_ctx_and_empty_prompt():
    model = _model()
    runs = []
    for cache in (True, False):
        gen = torch.Generator().manual_seed(3)
        runs.append(generate(model, torch.zeros(0, dtype=torch.long), 70, generator=gen,
                             cache=cache))
    assert runs[0].shape == (70,)
    assert torch.equal(runs[0], runs[1])


def test_cli_sample_has_no_cache_and_crop_prompt_flags():
    from sparse_transformer.cli import build_parser

    args = build_parser().parse_args(["sample", "-c", "run", "--no-cache", "--crop-prompt"])
    assert args.no_cache is True and args.crop_prompt is True
    args = build_parser().parse_args(["sample", "-c", "run"])
    assert args.no_cache is False and args.crop_prompt is False
