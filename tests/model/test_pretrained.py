"""save_pretrained / from_pretrained: the step-folder layout, run directories, refusals, damage."""

from __future__ import annotations

import json
import os

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
    assert _same_weights(SparseTransformer.from_pretrained(tmp_path / "m"), a)
    b.save_pretrained(tmp_path / "m", overwrite=True)
    assert _same_weights(SparseTransformer.from_pretrained(tmp_path / "m"), b)
    assert not (tmp_path / "m" / "notes.txt").exists()  # the whole folder was replaced
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


@pytest.mark.parametrize("name", ["../../outside", "/etc", "..", "sub/step", ""])
def test_latest_must_name_a_folder_inside_the_run(tmp_path, name):
    _model().save_pretrained(tmp_path / "outside")
    with pytest.raises(ValueError, match="must name a folder inside"):
        SparseTransformer.from_pretrained(_run_with_latest(tmp_path, name))


def test_latest_symlink_out_of_the_run_is_refused(tmp_path):
    _model().save_pretrained(tmp_path / "outside")
    run = _run_with_latest(tmp_path, "escape")
    os.symlink(tmp_path / "outside", run / "checkpoints" / "escape")
    with pytest.raises(ValueError, match="leads outside"):
        SparseTransformer.from_pretrained(run)


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
    with pytest.raises(ValueError, match="config.json is missing or not a model config"):
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
