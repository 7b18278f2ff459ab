"""TrainConfig refuses at construction what the loop could only refuse later, without torch."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sparse_transformer.model.config import PRESETS
from sparse_transformer.train.config import TrainConfig
from sparse_transformer.train.recipes import RECIPES


def test_every_preset_has_a_recipe():
    """TrainConfig skips the model check (and the torch import) for a known preset without
    overrides by looking the name up in RECIPES: the two tables must name the same presets."""
    assert sorted(RECIPES) == sorted(PRESETS)


def test_the_defaults_build_without_torch():
    code = ("import sys; from sparse_transformer.train.config import TrainConfig; "
            "TrainConfig(); TrainConfig(preset='enwik8', resume=True, model={'x': 1}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


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
