"""The training-step benchmarks' own logic, on the CPU (their figures come from a GPU).

benchmarks/memory_estimate.py: a step on fake tensors sees what the memory options change.
The estimate itself was checked against the GPU (enwik8 shape: 14.4 GiB without recompute and
3.3 GiB with it, estimated and measured on an H100); here, on a small shape, that it counts
the options the million-position run depends on in the right direction and by about the size
the accounting in docs/kernels.md says. benchmarks/model_step.py: its "default" mode is what
``train --preset`` runs with no flags.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sparse_transformer.model.config import ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
memory_estimate = pytest.importorskip("memory_estimate")


def test_recompute_and_half_checkpoints_move_the_peak_as_accounted():
    base = ModelConfig.from_preset("wiki-small", n_layer=4, n_ctx=4096, embed_stride=64,
                                   dropout=0.0, recompute=True)
    gib = {name: memory_estimate.estimate(cfg, 2)["peak_gib"] for name, cfg in (
        ("plain", base.replace(recompute=False)), ("fp32", base),
        ("bf16", base.replace(half_checkpoints=True)))}
    assert gib["fp32"] < gib["plain"]
    # each checkpoint's fp32 residual stream ([2, 4096, d]) halves with a bf16 copy; at the
    # peak (in the backward) some of the 4 checkpoints are still alive: between 1 and 4 halves
    half_stream = 2 * 4096 * base.d_model * 2 / 2**30
    saved = gib["fp32"] - gib["bf16"]
    assert half_stream * 0.99 <= saved <= 4 * half_stream * 1.01, (saved, half_stream)


def test_model_step_default_mode_is_what_train_runs_with_no_flags():
    # benchmarks/model_step.py's "default" rows: the preset's recompute, the recipe's compile
    model_step = pytest.importorskip("model_step")
    from sparse_transformer.train.config import TrainConfig

    for shape in ("enwik8", "audio-65k"):
        preset, over = model_step.SHAPES[shape][:2]
        compiled, recompute = model_step.mode_settings(shape, "default")
        assert recompute == ModelConfig.from_preset(preset, **over).recompute
        compile_, graphs = TrainConfig(preset=preset).speed_options("cuda", 1)
        assert compiled == compile_
        assert (model_step.compile_options(shape, "default") == {"mode": "reduce-overhead"}) \
            == graphs
    # enwik8: compiled blocks replayed from CUDA graphs, no recompute (the fastest measured)
    assert model_step.mode_settings("enwik8", "default") == (True, False)
    assert model_step.compile_options("enwik8", "default") == {"mode": "reduce-overhead"}
    assert model_step.mode_settings("enwik8", "compiled-recompute") == (True, True)
    assert model_step.compile_options("enwik8", "compiled-norecompute") == {}


def test_model_step_isolate_times_each_row_in_its_own_process(tmp_path, monkeypatch):
    # Rows timed one after another in one process are not independent on a GPU (NOTES.md,
    # eleventh session), so --isolate runs this script once per row and merges the rows.
    model_step = pytest.importorskip("model_step")
    children = []
    real_run = model_step.subprocess.run

    def run(cmd, *a, **kw):
        children.append(cmd[cmd.index("--only") + 1])
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(model_step.subprocess, "run", run)
    assert model_step.main(["--smoke", "--isolate", "--modes", "eager-recompute", "--warmup", "1",
                            "--steps", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "model-step.json").read_text())["rows"]
    assert children == ["dense", "fixed"]  # one process per row
    assert [r["attention"] for r in rows] == ["dense", "fixed"]
    assert all(r["isolated"] and r["step_s"] > 0 for r in rows)
    dense, fixed = rows
    assert dense["speedup_vs_dense"] == 1.0
    assert fixed["speedup_vs_dense"] == pytest.approx(dense["step_s"] / fixed["step_s"])


def test_model_step_refuses_a_per_process_profile_across_processes(capsys):
    model_step = pytest.importorskip("model_step")
    with pytest.raises(SystemExit) as err:
        model_step.main(["--smoke", "--isolate", "--profile"])
    assert err.value.code == 2
    assert "--profile is per process" in capsys.readouterr().err


def test_paper_gpu_render_keeps_other_commits_rows():
    """``paper_gpu.render`` merges new rows into results/paper-gpu.json: a rerun at the same
    commit (or a baseline, which has no commit) replaces its row; another commit's row of the
    same measurement stays, since the docs cite runs of earlier code."""
    from paper_gpu import _merge

    def row(commit, bits, **extra):
        return {"modality": "text", "data": "text100m", "attention": "fixed", "split": "test",
                "min_context": 0, "minutes": 4.0, "commit": commit, "bits": bits, **extra}

    ppmd = {"modality": "text", "data": "text100m", "baseline": "ppmd", "split": "test",
            "bits": 1.06}
    merged = _merge([row("29d0af7", 1.866), row("2b2b91c", 3.4), ppmd],
                    [row("2b2b91c", 3.328), {**ppmd, "bits": 1.0601}])
    assert sorted((r.get("commit", ""), r["bits"]) for r in merged) == [
        ("", 1.0601), ("29d0af7", 1.866), ("2b2b91c", 3.328)]
