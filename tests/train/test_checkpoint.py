"""Checkpoints: round trip of weights, config and weights_only state; RNG replay; damage."""

import random

import numpy as np
import pytest
import torch

from sparse_transformer.model import ModelConfig, SparseTransformer
from sparse_transformer.train.checkpoint import (
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sparse_transformer.train.schedule import make_optimizer


def _save(tmp_path, step=3):
    cfg = ModelConfig.from_preset("wiki-tiny")
    model = SparseTransformer(cfg)
    with torch.no_grad():
        model.head.weight.normal_()
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    x = torch.randint(0, 256, (2, 64))
    model(x).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(9)
    state = {"optimizer": opt.state_dict(), "step": step, "rng": rng_state(gen)}
    path = save_checkpoint(tmp_path / "run", model=model, model_config=cfg,
                           train={"step": step, "options": {"data": "x"}}, state=state)
    return path, model, opt, gen


def test_round_trip(tmp_path):
    path, model, opt, _ = _save(tmp_path)
    assert path.name == "step-00000003"
    ckpt = load_checkpoint(tmp_path / "run")  # the run directory resolves to the latest
    assert ckpt.path == path and ckpt.step == 3
    assert ckpt.model_config == model.cfg
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.weights[k], v)
    # state.pt loads with weights_only=True: only tensors and plain values inside
    state = torch.load(path / "state.pt", weights_only=True)
    opt2 = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    opt2.load_state_dict(state["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"],
                       opt.state_dict()["state"][0]["exp_avg"])
    loaded, _ = load_model(path)
    x = torch.randint(0, 256, (1, 64))
    assert torch.equal(loaded(x), model.eval()(x))


def test_rng_state_replays_every_generator(tmp_path):
    gen = torch.Generator().manual_seed(4)
    saved = rng_state(gen)
    first = (random.random(), np.random.rand(), torch.rand(1).item(),
             torch.rand(1, generator=gen).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0), gen.manual_seed(0)
    set_rng_state(saved, gen)
    again = (random.random(), np.random.rand(), torch.rand(1).item(),
             torch.rand(1, generator=gen).item())
    assert first == again


def test_keep_last_and_latest(tmp_path):
    cfg = ModelConfig.from_preset("wiki-tiny")
    model = SparseTransformer(cfg)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model=model, model_config=cfg, train={"step": step},
                        state={"step": step}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-00000002", "step-00000003"]  # no temporary leftovers
    assert load_checkpoint(tmp_path, with_state=False).step == 3


@pytest.mark.parametrize("victim,needle", [("model.safetensors", "model.safetensors"),
                                           ("state.pt", "state.pt"),
                                           ("config.json", "config.json")])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, victim, needle):
    path, _, _, _ = _save(tmp_path)
    data = (path / victim).read_bytes()
    (path / victim).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{needle} is missing or corrupt"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        load_checkpoint(tmp_path / "empty")


@pytest.mark.parametrize("latest", ["../../etc", "/etc", "step-1", "step-00000003/../..", ""])
def test_latest_resolves_only_to_a_step_folder_beside_it(tmp_path, latest):
    _save(tmp_path)
    (tmp_path / "run" / "checkpoints" / "latest").write_text(latest + "\n")
    with pytest.raises(ValueError, match="not a step-XXXXXXXX folder"):
        load_checkpoint(tmp_path / "run")


def test_latest_may_not_be_a_link_out_of_the_run(tmp_path):
    path, _, _, _ = _save(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    path.rename(elsewhere)
    path.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="step-00000003 is a symlink .*a run cannot point "
                                         "outside itself"):
        load_checkpoint(tmp_path / "run")


def test_json_that_is_not_an_object_and_weights_that_are_not_finite(tmp_path):
    from safetensors.torch import load_file, save_file

    path, _, _, _ = _save(tmp_path)
    (path / "train.json").write_text("[]")
    with pytest.raises(ValueError, match="train.json is missing or corrupt .train.json must "
                                         "hold a JSON object, not a list"):
        load_checkpoint(path)
    (path / "train.json").write_text('{"step": 3}')
    weights = load_file(str(path / "model.safetensors"))
    weights["head.weight"][0, 0] = float("inf")
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"weights are not finite \(NaN or inf in head.weight\)"):
        load_checkpoint(path)


def test_clean_temporaries_removes_only_what_a_killed_save_left(tmp_path):
    from sparse_transformer.train.checkpoint import clean_temporaries

    _save(tmp_path)
    root = tmp_path / "run" / "checkpoints"
    (root / ".step-00000009.tmp-123").mkdir()
    (root / ".step-00000003.old-123").mkdir()
    (root / ".latest.tmp-123").write_text("step-00000009\n")
    (root / "notes.txt").write_text("kept")
    assert clean_temporaries(tmp_path / "run") == [".latest.tmp-123", ".step-00000003.old-123",
                                                   ".step-00000009.tmp-123"]
    assert sorted(p.name for p in root.iterdir()) == ["latest", "notes.txt", "step-00000003"]
