"""Every CLI command on tiny data, in process and through the console script (bad input:
test_bad_inputs.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from sparse_transformer.cli import main
from sparse_transformer.data.registry import register_dataset, write_splits

DATA_SET = "cli-test-text"  # conftest.py

def test_train_writes_a_run(run_dir):
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 4
    assert (run_dir / "checkpoints" / "latest").is_file()


def test_train_resume_continues(corpus, run_dir, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(run_dir, out)
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--no-progress",
                 "--set", "n_layer=2", "--preset", "wiki-tiny"]) == 0  # same model: accepted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6 and summary["session_steps"] == 2
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["preset"] == "wiki-tiny" and run["train"]["batch_size"] == 2  # saved


def test_eval_prints_model_and_compressors(run_dir, capsys):
    assert main(["eval", "-c", str(run_dir), "--split", "test", "--json",
                 "--min-context", "32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and out["min_context"] == 32
    assert 0 < out["model_bpb"] < 9
    assert {"ppmd", "xz", "bz2", "zlib"} <= set(out["baselines_bpb"])


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


def test_eval_elsewhere_reads_the_recorded_data_and_creates_nothing(run_dir, tmp_path, capsys,
                                                                   monkeypatch):
    # the run trained on a named data set under another root; from an empty directory eval
    # finds it through the absolute path the run recorded, and prepares nothing here
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "-c", str(run_dir), "--json", "--no-compressors"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == DATA_SET
    assert list(tmp_path.iterdir()) == []


def test_console_script_in_a_subprocess(corpus, run_dir):
    exe = Path(sys.executable).with_name("sparse-transformer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sparse_transformer"]
    env = {**os.environ, "SPARSE_TRANSFORMER_DEBUG": ""}
    ok = subprocess.run(cmd + ["eval", "-c", str(run_dir), "--max-bytes", "2000",
                               "--no-progress"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "sparse transformer" in ok.stdout and "ppmd" in ok.stdout
    bad = subprocess.run(cmd + ["train", "--data", str(corpus), "--preset", "nope"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("sparse-transformer train: error: unknown preset 'nope'; "
                                  "known: " + ", ".join(__import__(
                                      "sparse_transformer.model.config",
                                      fromlist=["PRESETS"]).PRESETS))
