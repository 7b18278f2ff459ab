"""Preparing a data set never deletes or replaces a file it did not write."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sparse_transformer.cli import main
from sparse_transformer.data.bytes import open_prepared
from sparse_transformer.data.images import prepare_image_folder
from sparse_transformer.data.registry import write_splits

PREP = ["prepare", "image-folder", "--path"]


@pytest.fixture
def imgs(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{k}.png")
    return d


def test_user_files_survive_every_preparation(imgs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "photo.png").write_bytes(b"my photo")
    assert main([*PREP, str(imgs), "--out", str(out)]) == 2  # not ours: refused ...
    assert "holds no prepared data set" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    assert main([*PREP, str(imgs), "--out", str(out), "--force"]) == 0  # ... unless forced
    meta = json.loads((out / "meta.json").read_text())
    assert meta["files"] == ["train.bin", "valid.bin", "test.bin", "meta.json"]
    assert main([*PREP, str(imgs), "--out", str(out)]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert main([*PREP, str(imgs), "--out", str(out), "--force"]) == 0  # ours: replaced
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "sub" / "photo.png").read_bytes() == b"my photo"
    assert open_prepared(out).split("train").size == meta["sizes"]["train"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_user_file_with_our_name_is_never_replaced(imgs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "valid.bin").write_bytes(b"my bytes")
    assert main([*PREP, str(imgs), "--out", str(out), "--force"]) == 2
    assert "valid.bin was not written by sparse-transformer" in capsys.readouterr().err
    assert (out / "valid.bin").read_bytes() == b"my bytes"
    with pytest.raises(ValueError, match="holds no prepared data set"):  # the Python API too
        prepare_image_folder(out, path=imgs, size=8, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["valid.bin"]


def test_replacing_a_data_set_of_ours(tmp_path):
    out = tmp_path / "ds"
    write_splits(out, name="ds", kind="text", train=b"a" * 300, valid=b"b" * 200, test=b"c" * 100)
    # an older version of ours listed one more file; an older copy had no manifest at all
    meta = json.loads((out / "meta.json").read_text())
    (out / "index.bin").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    meta["files"].append("index.bin")
    (out / "meta.json").write_text(json.dumps(meta))
    write_splits(out, name="ds", kind="text", train=b"x" * 30, valid=b"y" * 20, test=b"z" * 10)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "notes.txt", "test.bin",
                                                     "train.bin", "valid.bin"]
    del meta["files"]
    (out / "meta.json").write_text(json.dumps({**meta, "sizes": {"train": 30, "valid": 20,
                                                                 "test": 10}}))
    write_splits(out, name="ds", kind="text", train=b"q" * 40, valid=b"r" * 20, test=b"s" * 10)
    assert bytes(open_prepared(out).split("train")[:2]) == b"qq"
    assert (out / "notes.txt").read_text() == "mine"


def test_a_copy_whose_sizes_disagree_is_refused(tmp_path):
    out = tmp_path / "ds"
    write_splits(out, name="ds", kind="text", train=b"a" * 300, valid=b"b" * 200, test=b"c" * 100)
    (out / "train.bin").write_bytes(b"a" * 299)  # e.g. a preparation killed while committing
    with pytest.raises(ValueError, match="train.bin has 299 bytes, meta.json says 300"):
        open_prepared(out)


def test_a_failed_preparation_leaves_the_old_copy_and_no_folders(imgs, tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["prepare", "image-folder", "--root", str(root)]) == 2  # no --path
    assert "needs --path" in capsys.readouterr().err
    assert not root.exists()  # not even an empty data root
    out = tmp_path / "ds"
    assert main([*PREP, str(imgs), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (imgs / "broken.png").write_bytes(b"not a png")
    assert main([*PREP, str(imgs), "--out", str(out), "--force"]) == 2
    assert "cannot decode image" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
