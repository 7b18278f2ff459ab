"""The Python API with bad values (issue 20): ModelConfig, TrainConfig, attention(), generate()
and from_pretrained refuse each with a ValueError or TypeError whose message names the field
and its valid range, at once (no allocation first, no OverflowError from deep inside, nothing
silently accepted).

Each row is (call, exception, needle). Rows marked ``owner`` are refused badly today in code
another engineer is reworking; they are strict xfails, so the fix flips them.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer, attention
from sparse_transformer import patterns as P
from sparse_transformer.sample.generate import generate
from sparse_transformer.train.config import TrainConfig

I64 = 2**70  # an integer beyond 64 bits
HUGE = 10**400  # an integer beyond the float range: math.isfinite raises on it


def _q(n: int = 16) -> torch.Tensor:
    return torch.randn(1, 2, n, 8)


def _tiny() -> SparseTransformer:
    return SparseTransformer(ModelConfig.from_preset("wiki-tiny")).eval()


CASES = [
    # -- ModelConfig: each field's type and range, then the size against memory ----------------
    (lambda: ModelConfig(recompute="no"), ValueError,
     "ModelConfig.recompute must be true or false, got 'no'"),
    (lambda: ModelConfig(recompute=1), ValueError, "recompute must be true or false, got 1"),
    (lambda: ModelConfig(output_bias="yes"), ValueError, "output_bias must be true or false"),
    (lambda: ModelConfig(ln_eps=math.nan), ValueError,
     "ModelConfig.ln_eps must be a finite number in (0, 1], got nan"),
    (lambda: ModelConfig(ln_eps=0.0), ValueError, "ln_eps must be a finite number in (0, 1]"),
    (lambda: ModelConfig(ln_eps=math.inf), ValueError, "ln_eps must be a finite number"),
    (lambda: ModelConfig(embed_stride=-16), ValueError,
     "ModelConfig.embed_stride must be an integer in [1, 256], got -16"),
    (lambda: ModelConfig(embed_stride=0), ValueError, "embed_stride must be an integer in [1, "),
    (lambda: ModelConfig(embed_stride=16.0), ValueError, "embed_stride must be an integer"),
    (lambda: ModelConfig(embed_stride=512), ValueError, "embed_stride must be an integer in "
                                                        "[1, 256], got 512"),
    (lambda: ModelConfig(backend="bogus"), ValueError,
     "ModelConfig.backend must be one of auto, reference, sdpa, torch, triton, flex"),
    (lambda: ModelConfig(ff_mult=math.inf), ValueError,
     "ModelConfig.ff_mult must be a finite number in (0, 1024], got inf"),
    (lambda: ModelConfig(ff_mult=HUGE), ValueError, "ff_mult must be a finite number"),
    (lambda: ModelConfig(ff_mult=math.nan), ValueError, "ff_mult must be a finite number"),
    (lambda: ModelConfig(ff_mult="4"), ValueError, "ff_mult must be a finite number"),
    (lambda: ModelConfig(qk_ratio=math.inf), ValueError, "qk_ratio must be a finite number"),
    (lambda: ModelConfig(dropout="0.1"), ValueError, "dropout must be a finite number in [0, 1)"),
    (lambda: ModelConfig(n_layer=10**9), ValueError,
     "ModelConfig: 1,000,000,000 layers of width 128"),
    (lambda: ModelConfig(n_layer=I64), ValueError,
     "ModelConfig.n_layer must be an integer in [1, 2**63 - 1]"),
    (lambda: ModelConfig(d_model=2**30, n_head=2), ValueError, "of memory, more than the"),
    (lambda: ModelConfig(vocab_size=10**11), ValueError, "of memory, more than the"),
    (lambda: ModelConfig(recompute_group=I64), ValueError,
     "recompute_group must be an integer in [1, 2**63 - 1]"),
    (lambda: ModelConfig(attention=f"fixed(stride={I64}, summary=4)"), ValueError,
     "stride must be at most 2**63 - 1"),
    (lambda: ModelConfig(image_shape=(8, 8, 1)), ValueError,
     "ModelConfig.image_shape is for embedding='image'"),
    (lambda: ModelConfig(embedding="image", n_ctx=64, attention="causal",
                         image_shape=(-8, -8, 1)), ValueError,
     "image_shape H must be an integer in [1, 64], got -8"),
    (lambda: ModelConfig(embedding="image", n_ctx=56, attention="causal",
                         image_shape=(8.5, 7.53, 1)), ValueError,
     "image_shape H must be an integer"),
    (lambda: ModelConfig.from_dict(json.loads('{"ff_mult": Infinity}')), ValueError,
     "ff_mult must be a finite number"),
    # -- TrainConfig: integers are 64-bit, numbers finite ---------------------------------------
    (lambda: TrainConfig(steps=I64), ValueError, "--steps must be an integer in [1, 2**63 - 1]"),
    (lambda: TrainConfig(warmup=I64), ValueError, "--warmup must be an integer in [0, 2**63 - 1]"),
    (lambda: TrainConfig(grad_accum=I64), ValueError, "--grad-accum must be an integer in [1, "),
    (lambda: TrainConfig(eval_bytes=I64), ValueError, "--eval-bytes must be an integer in [0, "),
    (lambda: TrainConfig(save_every=2**64), ValueError, "--save-every must be an integer in [0, "),
    (lambda: TrainConfig(lr=HUGE), ValueError, "--lr must be a finite number > 0"),
    (lambda: TrainConfig(clip=HUGE), ValueError, "--clip must be a finite number > 0"),
    # refused when the config is built, not when train() builds the model (issue 20, phase 2)
    (lambda: TrainConfig(preset="huge"), ValueError, "unknown preset 'huge'; known: "),
    (lambda: TrainConfig(model={"nope": 1}), ValueError, "unknown field(s) nope"),
    (lambda: TrainConfig(model={"n_layer": 0}), ValueError, "n_layer must be an integer >= 1"),
    (lambda: TrainConfig(model={"ff_mult": math.inf}), ValueError, "ff_mult must be a finite"),
    (lambda: TrainConfig(max_minutes=1e300), ValueError,
     "--max-minutes must be a finite number in (0, 1000000], got 1e+300"),
    # -- attention: a pattern whose sizes do not fit in 64 bits ----------------------------------
    (lambda: attention(_q(), _q(), _q(), P.local(I64)), ValueError,
     "window must be at most 2**63 - 1"),
    (lambda: P.fixed(stride=2**64, summary=4), ValueError, "stride must be at most 2**63 - 1"),
    (lambda: P.strided(I64, "split"), ValueError, "stride must be at most 2**63 - 1"),
    # -- from_pretrained: a config.json that lies -----------------------------------------------
    (lambda: _pretrained_with({"ff_mult": "Infinity"}), ValueError,
     "config.json is missing or corrupt (ModelConfig.ff_mult must be a finite"),
    (lambda: _pretrained_with({"recompute": '"no"'}), ValueError,
     "ModelConfig.recompute must be true or false"),
    (lambda: _pretrained_with({"n_layer": "1000000000"}), ValueError, "of memory, more than"),
    (lambda: _pretrained_with({"backend": '"bogus"'}), ValueError, "ModelConfig.backend must be"),
]

OWNED = [
    # top_k=0 stays accepted: it means "off" (apply_filters, as in Hugging Face's generate)
    pytest.param(lambda: generate(_tiny(), b"a", 2, seed=-1), ValueError, "seed", id="seed=-1"),
    pytest.param(lambda: generate(_tiny(), b"a", 2, seed=I64), ValueError, "seed must be",
                 id="seed=2**70"),
    pytest.param(lambda: generate(_tiny(), b"a", 2**60), ValueError, "of memory, more than",
                 id="n_bytes=2**60"),
]

_PRETRAINED: dict[str, object] = {}


def _pretrained_with(fields: dict[str, str]):
    """from_pretrained of a saved tiny model whose config.json has ``fields`` (raw JSON)."""
    tmp = _PRETRAINED["tmp"]
    folder = tmp / f"m{len(list(tmp.iterdir()))}"
    _tiny().save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    text = json.dumps({**cfg, **{k: f"@{k}@" for k in fields}})
    for key, raw in fields.items():
        text = text.replace(f'"@{key}@"', raw)
    (folder / "config.json").write_text(text)
    return SparseTransformer.from_pretrained(folder)


@pytest.fixture(autouse=True)
def _pretrained_dir(tmp_path):
    _PRETRAINED["tmp"] = tmp_path


@pytest.mark.parametrize("call,exc,needle",
                         [pytest.param(*c, id=f"{k}-{c[2][:50]}") for k, c in enumerate(CASES)]
                         + OWNED)
def test_bad_value_refused_with_a_clear_message(call, exc, needle):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message.strip(), message
