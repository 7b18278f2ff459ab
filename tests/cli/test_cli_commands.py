"""Every CLI command on tiny data, in process and through the console script; bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparse_transformer.cli import main
from sparse_transformer.data.registry import register_dataset, write_splits

TRAIN = ["--preset", "wiki-tiny", "--steps", "4", "--batch-size", "2", "--eval-bytes", "512",
         "--eval-every", "0", "--no-progress", "--warmup", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "corpus.txt"
    f.write_bytes(b"<page><title>Anarchism</title><text>Anarchism is a philosophy.</text>"
                  b"</page>\n" * 300)
    return f


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(corpus), "--out", str(out), *TRAIN]) == 0
    return out


def test_train_writes_a_run(run_dir):
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 4
    assert (run_dir / "checkpoints" / "latest").is_file()


def test_train_resume_continues(corpus, run_dir, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(run_dir, out)
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["step"] == 6


def test_eval_prints_model_and_compressors(run_dir, capsys):
    assert main(["eval", "-c", str(run_dir), "--split", "test", "--json",
                 "--min-context", "32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and out["min_context"] == 32
    assert 0 < out["model_bpb"] < 9
    assert set(out["compressors_bpb"]) == {"lzma", "bz2", "zlib"}


def test_sample_to_stdout_and_file(run_dir, capsysbinary, tmp_path):
    args = ["sample", "-c", str(run_dir), "--prompt", "<page>", "--n-bytes", "20", "--seed", "1"]
    assert main(args) == 0
    first = capsysbinary.readouterr().out
    assert first.startswith(b"<page>") and len(first) == 6 + 20 + 1
    assert main(args) == 0
    assert capsysbinary.readouterr().out == first  # --seed makes it reproducible
    out = tmp_path / "s.txt"
    assert main(args + ["--out", str(out), "--top-k", "5", "--top-p", "0.9",
                        "--temperature", "0.8"]) == 0
    assert out.read_bytes().startswith(b"<page>")


def test_prepare_a_registered_data_set(tmp_path, capsys):
    def prep(out_dir, *, source=None, cache_dir=None):
        write_splits(out_dir, name="unit", kind="text", train=b"a" * 900, valid=b"b" * 50,
                     test=b"c" * 50, source="test")

    register_dataset("unit-test-set", prep, help="test only")
    assert main(["prepare", "unit-test-set", "--root", str(tmp_path)]) == 0
    assert "prepared" in capsys.readouterr().out
    assert (tmp_path / "unit-test-set" / "train.bin").stat().st_size == 900
    assert main(["prepare", "unit-test-set", "--root", str(tmp_path)]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert main(["prepare", "--list"]) == 0
    assert "wiki" in capsys.readouterr().out


def _fails(argv, capsys, needle):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


def test_bad_input_is_one_line_errors(corpus, run_dir, tmp_path, capsys):
    out = str(tmp_path / "r")
    _fails(["train", "--data", str(tmp_path / "missing.txt"), "--out", out, *TRAIN], capsys,
           "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    _fails(["train", "--data", str(empty), "--out", out, *TRAIN], capsys, "is empty")
    _fails(["train", "--data", str(corpus), "--out", out, *TRAIN, "--set", "n_ctx=60"], capsys,
           "divisible by the stride")
    _fails(["train", "--data", str(corpus), "--out", out, *TRAIN, "--preset", "huge"], capsys,
           "unknown preset 'huge'")
    assert not Path(out).exists()  # nothing was created by the failed runs
    # an existing run is neither overwritten nor appended to
    before = (run_dir / "metrics.csv").read_bytes()
    _fails(["train", "--data", str(corpus), "--out", str(run_dir), *TRAIN], capsys,
           "already holds a run")
    assert (run_dir / "metrics.csv").read_bytes() == before
    _fails(["eval", "-c", str(tmp_path / "nothing")], capsys, "does not exist")
    target = tmp_path / "keep.txt"
    target.write_text("mine")
    _fails(["sample", "-c", str(run_dir), "--out", str(target)], capsys, "exists")
    assert target.read_text() == "mine"


def test_corrupt_checkpoint(run_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    step = next((bad / "checkpoints").glob("step-*"))
    (step / "model.safetensors").write_bytes(b"\x00garbage")
    _fails(["eval", "-c", str(bad)], capsys, "model.safetensors is missing or corrupt")
    _fails(["sample", "-c", str(bad)], capsys, "corrupt")


def test_console_script_in_a_subprocess(corpus, run_dir):
    exe = Path(sys.executable).with_name("sparse-transformer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sparse_transformer"]
    env = {**os.environ, "SPARSE_TRANSFORMER_DEBUG": ""}
    ok = subprocess.run(cmd + ["eval", "-c", str(run_dir), "--max-bytes", "2000",
                               "--no-progress"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "sparse transformer" in ok.stdout and "lzma" in ok.stdout
    bad = subprocess.run(cmd + ["train", "--data", str(corpus), "--preset", "nope"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("sparse-transformer train: error: unknown preset 'nope'; "
                                  "known: " + ", ".join(__import__(
                                      "sparse_transformer.model.config",
                                      fromlist=["PRESETS"]).PRESETS))
