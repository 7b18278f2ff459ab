"""ModelConfig: presets' parameter counts against the paper, validation, JSON round trip."""

import json

import pytest
import torch

from sparse_transformer.model import PRESETS, ModelConfig, SparseTransformer
from sparse_transformer.patterns import parse_pattern


def meta_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):  # no memory for the 95M-152M parameter models
        return SparseTransformer(cfg).num_params()


@pytest.mark.parametrize("name,paper", [("enwik8", 95e6), ("cifar10", 59e6),
                                        ("imagenet64", 152e6), ("audio-65k", 152e6)])
def test_paper_preset_parameter_counts(name, paper):
    """Paper Tables 1 and 4: 95M (Enwik8), 59M (CIFAR-10), 152M (ImageNet 64, audio)."""
    n = meta_params(ModelConfig.from_preset(name))
    assert abs(n - paper) / paper < 0.02, f"{name}: {n:,} parameters vs paper {paper:,.0f}"


def test_paper_preset_shapes():
    e = ModelConfig.from_preset("enwik8")
    assert (e.n_layer, e.d_model, e.n_head, e.n_ctx, e.dropout) == (30, 512, 8, 12288, 0.4)
    p = e.pattern
    assert (p.stride, p.summary) == (128, 32) and e.embed_stride == 128
    c = ModelConfig.from_preset("cifar10")
    assert (c.n_layer, c.d_model, c.n_head, c.d_ff, c.d_qk) == (128, 256, 2, 512, 128)
    assert c.image_shape == (32, 32, 3)
    i = ModelConfig.from_preset("imagenet64")
    assert (i.n_layer, i.d_model, i.n_head, i.n_ctx, i.image_shape) == (48, 512, 16, 12288,
                                                                         (64, 64, 3))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_round_trips(name):
    cfg = ModelConfig.from_preset(name)
    again = ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert parse_pattern(cfg.attention).name == cfg.attention


@pytest.mark.parametrize("kwargs,needle", [
    (dict(n_ctx=100, attention="fixed(stride=16, summary=4)"), "divisible by the stride"),
    (dict(d_model=130, n_head=4), "divisible by n_head"),
    (dict(attention="bogus(3)"), "unknown pattern"),
    (dict(attention="fixed(stride=16, summary=4, distinct=3)", n_head=4), "multiple of 3"),
    (dict(dropout=1.5), "dropout"),
    (dict(embedding="image", image_shape=(8, 8, 3), n_ctx=256,
          attention="strided(stride=16)"), "H*W*C"),
    (dict(embedding="audio"), "embedding"),
    (dict(qk_ratio=0.3), "qk_ratio"),
    (dict(init="xavier"), "init"),
])
def test_bad_configs_say_what_is_wrong(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ModelConfig(**kwargs)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        ModelConfig.from_preset("nope")
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_preset("wiki-tiny", n_layers=3)


def test_schedule_assigns_patterns_by_layer():
    cfg = ModelConfig(n_layer=4, attention="schedule(local(window=16), column(stride=16))")
    assert [cfg.layer_pattern(r).name for r in range(4)] == [
        "local(window=16)", "column(stride=16)"] * 2
    assert cfg.embed_stride == 16


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_param_count_in_closed_form_matches_the_model(name):
    """model/size.py counts parameters from the config alone (the memory bound uses it): it
    must agree with the model's layers."""
    from sparse_transformer.model.size import param_count

    cfg = ModelConfig.from_preset(name)
    assert param_count(cfg) == meta_params(cfg)
    for change in (dict(ff_mult=2.0, qk_ratio=0.5), dict(output_bias=False)):
        if cfg.embedding == "text":
            small = cfg.replace(n_layer=1, **change)
            assert param_count(small) == meta_params(small)


def test_memory_bound_refuses_what_this_machine_cannot_hold(monkeypatch):
    """issue 20: n_layer=10**9 allocated for a minute before a MemoryError; now one line,
    from the parameter count against this machine's memory."""
    import sparse_transformer.checks as checks

    monkeypatch.setattr(checks, "memory_bytes", lambda: 3 << 20)  # a 3 MiB machine
    with pytest.raises(ValueError, match=r"^ModelConfig: 4 layers of width 128 \(863,360 "
                                         r"parameters\) needs at least 3.3 MiB of memory, more "
                                         r"than the 3.0 MiB of this machine; use a smaller"):
        ModelConfig.from_preset("wiki-small")
    assert ModelConfig.from_preset("wiki-tiny")  # 171 kB: fits
