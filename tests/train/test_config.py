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
