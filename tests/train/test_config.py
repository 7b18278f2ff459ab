"""TrainConfig refuses at construction what the loop could only refuse later, without torch
for the defaults (tests/cli/test_help.py: `train --help` builds them and imports no torch)."""

from __future__ import annotations

import re

import pytest

from sparse_transformer.model.config import PRESETS
from sparse_transformer.train.config import TrainConfig
from sparse_transformer.train.recipes import RECIPES


def test_every_preset_has_a_recipe():
    """TrainConfig skips the model check (and the torch import) for a known preset without
    overrides by looking the name up in RECIPES: the two tables must name the same presets."""
    assert sorted(RECIPES) == sorted(PRESETS)


@pytest.mark.parametrize("kw,needle", [
    (dict(preset="huge"), "unknown preset 'huge'"),
    (dict(model={"n_layer": 10**9}), "1,000,000,000 layers"),
    (dict(model={"recompute": "no"}), "recompute must be true or false"),
    (dict(max_minutes=1e300), "--max-minutes must be a finite number in (0, 1000000]"),
])
def test_refused_when_built(kw, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        TrainConfig(**kw)


def test_a_resumed_config_leaves_the_model_to_the_checkpoint():
    """On resume the model is the checkpoint's: --set is compared with it in train.start."""
    TrainConfig(resume=True, model={"nope": 1})


def test_speed_options_take_the_recipe_on_one_gpu_only():
    # enwik8's recipe: compiled blocks replayed from CUDA graphs, the fastest step measured
    # (benchmarks/model_step.py); elsewhere (CPU, several processes, --shard) both stay off
    # unless a flag asks, and a flag beats the recipe.
    enwik8 = TrainConfig(preset="enwik8")
    assert enwik8.speed_options("cuda", 1) == (True, True)
    assert enwik8.speed_options("cpu", 1) == (False, False)
    assert enwik8.speed_options("cuda", 2) == (False, False)
    assert TrainConfig(preset="enwik8", shard=True).speed_options("cuda", 1) == (False, False)
    assert TrainConfig(preset="enwik8", compile=False).speed_options("cuda", 1) == (False, False)
    assert TrainConfig(preset="enwik8", cuda_graphs=False).speed_options("cuda", 1) \
        == (True, False)
    assert TrainConfig(preset="wiki-small").speed_options("cuda", 1) == (False, False)
    for gpu_preset in ("wiki-gpu", "text-gpu", "audio-gpu", "fashion-mnist-gpu", "cifar10",
                       "imagenet64", "audio-65k"):  # each measured fastest so on an H100
        assert TrainConfig(preset=gpu_preset).speed_options("cuda", 1) == (True, True)
    assert TrainConfig(preset="wiki-small", compile=True).speed_options("cpu", 1) \
        == (True, False)
    # asking for graphs asks for the compile they replay
    assert TrainConfig(preset="wiki-small", cuda_graphs=True).speed_options("cuda", 1) \
        == (True, True)


@pytest.mark.parametrize("kw,needle", [
    (dict(cuda_graphs=True, compile=False), "--cuda-graphs replays the compiled blocks"),
    (dict(cuda_graphs=True, device="cpu"), "--cuda-graphs runs on one CUDA device"),
    (dict(cuda_graphs=True, shard=True), "--cuda-graphs runs on one CUDA device"),
    (dict(compile="yes"), "--compile must be true or false"),
])
def test_speed_flags_refused_when_built(kw, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        TrainConfig(**kw)


def test_cuda_graphs_on_a_machine_without_cuda_is_refused_when_the_device_is_known():
    with pytest.raises(ValueError, match="--cuda-graphs needs a CUDA device"):
        TrainConfig(cuda_graphs=True).speed_options("cpu", 1)
