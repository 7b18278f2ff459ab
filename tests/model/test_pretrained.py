"""save_pretrained / from_pretrained: the step-folder layout, run directories, refusals, damage."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer


def _model(seed: int = 0) -> SparseTransformer:
    torch.manual_seed(seed)
    model = SparseTransformer(ModelConfig.from_preset("wiki-tiny"))
    with torch.no_grad():  # the zero output matrix would make every model predict alike
        model.head.weight.normal_()
    return model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_writes_only_json_and_safetensors(tmp_path):
    model = _model()
    out = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text()) == model.cfg.to_dict()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    loaded = SparseTransformer.from_pretrained(out)
    assert not loaded.training and loaded.cfg == model.cfg and _same_weights(loaded, model)
    x = torch.randint(0, 256, (1, 64))
    assert torch.equal(loaded(x), model.eval()(x))


def test_reads_a_run_that_training_wrote(tmp_path):
    """The trainer's checkpoints (train.checkpoint) load by run dir, checkpoints dir or step."""
    from sparse_transformer.train.checkpoint import save_checkpoint

    model = _model()
    for step in (1, 2):
        with torch.no_grad():
            model.head.weight.add_(1.0)
        step_dir = save_checkpoint(tmp_path / "run", model=model, model_config=model.cfg,
                                   train={"step": step}, state={"step": step})
    for path in (tmp_path / "run", tmp_path / "run" / "checkpoints", step_dir):
        assert _same_weights(SparseTransformer.from_pretrained(path), model)
    first = SparseTransformer.from_pretrained(tmp_path / "run" / "checkpoints" / "step-00000001")
    assert not _same_weights(first, model)  # "latest" was followed, not the first folder


def test_refuses_to_overwrite_a_non_empty_folder_unless_asked(tmp_path):
    a, b = _model(0), _model(1)
    a.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("keep me?")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        b.save_pretrained(tmp_path / "m")
    # overwrite replaces a saved model's folder, never a file of the user's (issue 20)
    with pytest.raises(FileExistsError, match="holds notes.txt, which save_pretrained did "
                                              "not write"):
        b.save_pretrained(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "notes.txt").read_text() == "keep me?"
    (tmp_path / "m" / "notes.txt").unlink()
    (tmp_path / "m" / "state.pt").write_bytes(b"a training step folder's")
    b.save_pretrained(tmp_path / "m", overwrite=True)
    assert _same_weights(SparseTransformer.from_pretrained(tmp_path / "m"), b)
    assert not (tmp_path / "m" / "state.pt").exists()  # the whole folder was replaced
    (tmp_path / "empty").mkdir()
    a.save_pretrained(tmp_path / "empty")  # an empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        a.save_pretrained(tmp_path / "file", overwrite=True)


def _run_with_latest(tmp_path, name: str):
    run = tmp_path / "run"
    _model().save_pretrained(run / "checkpoints" / "step-00000001")
    (run / "checkpoints" / "latest").write_text(name + "\n")
    return run


@pytest.mark.parametrize("name", ["../../outside", "/etc", "..", "sub/step", "", "escape"])
def test_latest_must_name_a_step_folder_beside_it(tmp_path, name):
    _model().save_pretrained(tmp_path / "outside")
    with pytest.raises(ValueError, match="not a step-XXXXXXXX folder of"):
        SparseTransformer.from_pretrained(_run_with_latest(tmp_path, name))


@pytest.mark.parametrize("link", ["checkpoints", "step folder", "model.safetensors",
                                  "config.json", "latest"])
def test_no_symlink_below_the_path_given_is_followed(tmp_path, link):
    """A run cannot point the loader at another model (training and from_pretrained share
    these rules: model/checkpoint_io.py)."""
    outside = _model(1).save_pretrained(tmp_path / "outside")
    run = _run_with_latest(tmp_path, "step-00000001")
    ckpts = run / "checkpoints"
    step = ckpts / "step-00000001"
    if link == "checkpoints":
        os.rename(ckpts, tmp_path / "moved")
        os.symlink(tmp_path / "moved", ckpts)
    elif link == "step folder":
        shutil.rmtree(step)
        os.symlink(outside, step)
    elif link == "latest":
        (tmp_path / "pointer").write_text("step-00000001\n")
        (ckpts / "latest").unlink()
        os.symlink(tmp_path / "pointer", ckpts / "latest")
    else:
        (step / link).unlink()
        os.symlink(outside / link, step / link)
    with pytest.raises(ValueError, match="is a symlink .*a run cannot point outside itself"):
        SparseTransformer.from_pretrained(run)
    # the path given may itself be a link: that is the caller's choice
    os.symlink(tmp_path / "outside", tmp_path / "mine")
    assert _same_weights(SparseTransformer.from_pretrained(tmp_path / "mine"), _model(1))


def test_missing_and_damaged_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SparseTransformer.from_pretrained(tmp_path / "nope")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a step folder"):
        SparseTransformer.from_pretrained(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SparseTransformer.from_pretrained(_run_with_latest(tmp_path, "step-00000009"))
    good = _model().save_pretrained(tmp_path / "m")
    (good / "model.safetensors").write_bytes(b"\x80\x04 not safetensors")
    with pytest.raises(ValueError, match="model.safetensors is missing or corrupt"):
        SparseTransformer.from_pretrained(good)
    (good / "config.json").write_text('{"n_layer": 2, "colour": "red"}')
    with pytest.raises(ValueError, match="config.json is missing or corrupt"):
        SparseTransformer.from_pretrained(good)
    other = SparseTransformer(ModelConfig.from_preset("wiki-tiny", n_layer=1))
    other.save_pretrained(tmp_path / "o")
    (tmp_path / "o" / "config.json").write_text(_model().cfg.to_json())  # 2 layers, 1 saved
    with pytest.raises(ValueError, match="does not fit the model"):
        SparseTransformer.from_pretrained(tmp_path / "o")


def test_device_and_map_location(tmp_path):
    path = _model().save_pretrained(tmp_path / "m")
    model = SparseTransformer.from_pretrained(path, device="cpu", map_location="cpu")
    assert next(model.parameters()).device.type == "cpu"
    model = SparseTransformer.from_pretrained(path, map_location=torch.device("cpu"))
    assert next(model.parameters()).device.type == "cpu"
