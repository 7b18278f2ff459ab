"""The training loop: learning, exact resume, schedules, and refusing to clobber a run."""

import math

import numpy as np
import pytest
import torch

from sparse_transformer.train.checkpoint import load_checkpoint
from sparse_transformer.train.loop import TrainConfig, train
from sparse_transformer.data.bytes import byte_log_frequencies
from sparse_transformer.train.schedule import (
    lr_at,
    lr_at_time,
    make_optimizer,
    param_groups,
    set_lr,
)
from sparse_transformer.model import ModelConfig, SparseTransformer


def cfg_for(byte_file, out, **kw) -> TrainConfig:
    base = dict(data=str(byte_file), preset="wiki-tiny", out=str(out), steps=6, batch_size=4,
                lr=3e-3, warmup=2, eval_every=0, eval_bytes=1024, eval_batch=4, log_every=2,
                save_every=0, progress=False, tensorboard=False, model={"dropout": 0.1})
    return TrainConfig(**{**base, **kw})


def test_interrupted_then_resumed_equals_uninterrupted(byte_file, tmp_path):
    """Same losses step for step and the same final weights (CPU, fixed seed, dropout on)."""
    full = train(cfg_for(byte_file, tmp_path / "full"))

    def stop_at_3(row):
        if row["step"] == 3:
            row["stop"] = True

    first = train(cfg_for(byte_file, tmp_path / "cut"), callback=stop_at_3)
    assert first["step"] == 3 and load_checkpoint(tmp_path / "cut").step == 3
    second = train(cfg_for(byte_file, tmp_path / "cut", resume=True))
    assert second["step"] == 6
    assert first["losses"] + second["losses"] == full["losses"]
    a = load_checkpoint(tmp_path / "full").weights
    b = load_checkpoint(tmp_path / "cut").weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "3", "4", "6"]  # appended, not lost


def test_training_lowers_the_loss_and_writes_the_run(byte_file, tmp_path):
    out = tmp_path / "run"
    s = train(cfg_for(byte_file, out, steps=40, eval_every=20, model={}))
    assert s["losses"][-1] < s["losses"][0] - 1.0  # from log(256) = 5.5 nats
    assert s["valid_bpb"] < 7.0
    for name in ("metrics.csv", "loss.png", "run.json", "summary.json", "checkpoints/latest"):
        assert (out / name).exists(), name


def test_grad_accumulation_matches_a_bigger_batch(byte_file, tmp_path):
    """Two micro-batches of 2 give the update of one batch of 4 holding the same windows."""
    a = train(cfg_for(byte_file, tmp_path / "a", steps=2, batch_size=4, model={}))
    b = train(cfg_for(byte_file, tmp_path / "b", steps=2, batch_size=2, grad_accum=2, model={}))
    for (k, p), q in zip(a["model"].state_dict().items(), b["model"].state_dict().values()):
        assert torch.allclose(p, q, atol=1e-5), k


def test_existing_run_is_not_overwritten(byte_file, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(byte_file, out, steps=1))
    before = (out / "metrics.csv").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg_for(byte_file, out, steps=1))
    assert (out / "metrics.csv").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        train(cfg_for(byte_file, tmp_path / "new", resume=True))


def test_bf16_and_fp16_precisions_train(byte_file, tmp_path):
    for prec in ("bf16", "fp16"):
        s = train(cfg_for(byte_file, tmp_path / prec, steps=3, precision=prec, model={}))
        assert all(math.isfinite(x) for x in s["losses"])


def test_time_budget_stops_the_run(byte_file, tmp_path):
    s = train(cfg_for(byte_file, tmp_path / "t", steps=None, max_minutes=0.05, model={}))
    assert s["step"] >= 1 and s["total"] is None and s["valid_bpb"] is not None


def test_schedules():
    assert lr_at(0, lr=1.0, warmup=10, total=100) == pytest.approx(0.1)
    assert lr_at(9, lr=1.0, warmup=10, total=100) == pytest.approx(1.0)
    assert lr_at(55, lr=1.0, warmup=10, total=100) == pytest.approx(0.5)
    assert lr_at(100, lr=1.0, warmup=10, total=100) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(100, lr=1.0, warmup=10, total=100, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_at_time(0, 0.0, lr=1.0, warmup=4) == pytest.approx(0.25)
    assert lr_at_time(50, 0.5, lr=1.0, warmup=4) == pytest.approx(0.5)


def test_weight_decay_only_on_matrices_and_the_output_rate():
    model = SparseTransformer(ModelConfig.from_preset("wiki-tiny"))
    decay, no_decay, output = param_groups(model, 0.01, output_lr_mult=30.0)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert output["params"] == [model.head.weight] and output["weight_decay"] == 0.01
    assert output["lr_mult"] == 30.0 and decay["lr_mult"] == no_decay["lr_mult"] == 1.0
    n = len(decay["params"]) + len(no_decay["params"]) + len(output["params"])
    assert n == len(list(model.parameters()))
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.01, output_lr_mult=30.0)
    set_lr(opt, 2e-3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-3, 2e-3, 6e-2])


def test_output_bias_starts_at_the_unigram_model():
    cfg = ModelConfig.from_preset("wiki-tiny", output_bias=True)
    model = SparseTransformer(cfg)
    data = np.frombuffer(b"aab" * 100_000, dtype=np.uint8)
    model.init_output_bias(byte_log_frequencies(data))
    with torch.no_grad():
        probs = model(torch.zeros(1, 8, dtype=torch.long)).softmax(-1)[0, 0]
    assert probs[ord("a")] == pytest.approx(2 / 3, rel=1e-2)
    assert probs[ord("b")] == pytest.approx(1 / 3, rel=1e-2)
    with pytest.raises(ValueError, match="no output bias"):
        plain = ModelConfig.from_preset("wiki-tiny", output_bias=False)
        SparseTransformer(plain).init_output_bias(probs.log())


def test_resume_refuses_an_optimizer_state_of_another_group_layout(byte_file, tmp_path):
    """Runs saved before the output matrix had a parameter group of its own hold two groups;
    --resume says so, before any work, instead of torch's bare 'different number of parameter
    groups' from deep inside the loop."""
    run = tmp_path / "run"
    train(cfg_for(byte_file, run, steps=2))
    state_file = sorted(run.glob("checkpoints/step-*/state.pt"))[-1]
    state = torch.load(state_file, weights_only=True)
    decay, no_decay, output = state["optimizer"]["param_groups"]
    decay["params"] = sorted(decay["params"] + output["params"])  # the older layout
    state["optimizer"]["param_groups"] = [decay, no_decay]
    torch.save(state, state_file)
    before = (run / "metrics.csv").read_bytes()
    with pytest.raises(ValueError, match=r"parameter groups of sizes \[\d+, \d+\].*"
                                         r"from_pretrained"):
        train(cfg_for(byte_file, run, steps=4, resume=True))
    assert (run / "metrics.csv").read_bytes() == before  # nothing touched


def test_the_best_validation_checkpoint_is_kept_through_pruning_and_resume(byte_file, tmp_path,
                                                                          monkeypatch):
    """A run that starts to overfit loses nothing: checkpoints/best names the step of the
    lowest validation, pruning (keep_last=1) spares it, a resumed run keeps comparing with it,
    and eval/from_pretrained read it through the pointer."""
    from sparse_transformer import SparseTransformer
    from sparse_transformer.evaluate import EvalResult
    from sparse_transformer.train import loop
    from sparse_transformer.train.checkpoint import find_checkpoint

    scores = iter([3.0, 2.0, 2.5, 2.6, 2.7, 1.9])  # evaluations at steps 2, 4, 6, 8(final)...
    monkeypatch.setattr(loop, "evaluate_bpb",
                        lambda *a, **k: EvalResult(next(scores), 1, 1, 0))
    out = tmp_path / "run"
    s = train(cfg_for(byte_file, out, steps=8, eval_every=2, keep_last=1))
    assert (s["best_step"], s["best_valid_bpb"], s["valid_bpb"]) == (4, 2.0, 2.6)
    ckpts = out / "checkpoints"
    assert (ckpts / "best").read_text().strip() == "step-00000004"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-00000004", "step-00000008"]
    assert find_checkpoint(ckpts / "best") == ckpts / "step-00000004"
    best = SparseTransformer.from_pretrained(ckpts / "best")
    w4 = load_checkpoint(ckpts / "step-00000004").weights
    assert all(torch.equal(best.state_dict()[k], w4[k]) for k in w4)

    s = train(cfg_for(byte_file, out, steps=12, eval_every=2, keep_last=1, resume=True))
    assert s["best_step"] == 12 and s["best_valid_bpb"] == 1.9  # 2.7 at 10 did not beat 2.0
    assert (ckpts / "best").read_text().strip() == "step-00000012"
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-00000012"]


def test_a_time_budget_warms_up_within_five_percent_of_it():
    """Issue 20: warm-up counted in updates and the cosine in time, so a short budget on a
    slow machine never reached the recipe's rate. Warm-up now ends after ``warmup`` updates
    or at 5% of the budget, whichever comes first."""
    cos = lambda f: 0.5 * (1 + math.cos(math.pi * f))  # noqa: E731
    # 3 of 1,000 warm-up updates done, but 5% of the budget gone: the peak (times the cosine)
    assert lr_at_time(2, 0.05, lr=1.0, warmup=1000) == pytest.approx(cos(0.05))
    assert lr_at_time(2, 0.025, lr=1.0, warmup=1000) == pytest.approx(0.5 * cos(0.025))
    # a fast machine finishes the updates first: as before
    assert lr_at_time(9, 0.001, lr=1.0, warmup=10) == pytest.approx(cos(0.001))
    assert lr_at_time(4, 0.001, lr=1.0, warmup=10) == pytest.approx(0.5 * cos(0.001))
    assert lr_at_time(0, 0.5, lr=1.0, warmup=0, min_lr_ratio=0.1) == pytest.approx(
        0.1 + 0.9 * cos(0.5))


def test_setup_updates_do_not_count_toward_the_warm_up_cap():
    """The first updates of a session compile the step and capture its CUDA graphs (seconds
    each). Counted toward the warm-up's 5% of the budget, they ended a graphed 4-minute run's
    warm-up after ~60 of its 200 updates, and update 10 trained at 0.63x the peak rate (an
    H100, fourteenth session). ``warm_fraction`` leaves them out."""
    from sparse_transformer.train.loop import TrainState

    # a 240 s budget; 10 updates done in 7.7 s, 6.5 of them in the first three (the H100 run)
    st = TrainState(step=10, total=None, elapsed=7.7, start_step=0, start_elapsed=0.0,
                    left=240.0, schedule_start=0.0)
    assert st.fraction() == pytest.approx(7.7 / 240)
    assert st.warm_fraction() == 0.0  # setup not yet measured: none of it counts
    st.setup_s = 6.5
    assert st.warm_fraction() == pytest.approx(1.2 / 240)
    old = lr_at_time(10, st.fraction(), lr=1.0, warmup=200)
    new = lr_at_time(10, st.fraction(), lr=1.0, warmup=200, warm_fraction=st.warm_fraction())
    assert old > 0.6 and new == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 7.7 / 240)))
    # updates counted, not time: warm_fraction is fraction
    st_steps = TrainState(step=10, total=100, elapsed=7.7, start_step=0, start_elapsed=0.0,
                          left=math.inf, schedule_start=0.0)
    assert st_steps.warm_fraction() == st_steps.fraction()


def test_a_slow_first_update_leaves_the_warm_up_to_the_update_count(byte_file, tmp_path,
                                                                     monkeypatch):
    """End to end on the CPU: a 30 s budget (its warm-up cap: 1.5 s) whose first update takes
    2 s longer, as a compiled step's does. The warm-up still rises update by update."""
    import time as _time

    from sparse_transformer.train import loop

    real = loop.random_batch
    calls = []

    def slow_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            _time.sleep(2.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "random_batch", slow_first)
    rates = []

    def stop_at_8(row):
        rates.append(row["lr"])
        if row["step"] == 8:
            row["stop"] = True

    train(cfg_for(byte_file, tmp_path / "run", steps=None, max_minutes=0.5, warmup=40,
                  lr=1e-3, log_every=1, model={"dropout": 0.0}), callback=stop_at_8)
    assert len(rates) == 8
    # update k of 40 trains at k/40 of the peak (times a cosine ~1): not at the peak, which the
    # 2 s of the first update alone would have given (2 s > 5% of 30 s)
    for k, r in enumerate(rates, start=1):
        assert r == pytest.approx(1e-3 * k / 40, rel=0.05), rates


def test_a_resumed_budget_continues_the_cosine_and_never_climbs():
    """Issue 20: a resumed time budget restarted the learning rate at its peak. The rest of the
    curve is spread over the time left: a run stopped at 40% and resumed with the same budget
    follows the curve it would have; a finished run given more time stays at its floor."""
    from sparse_transformer.train.loop import TrainState
    from sparse_transformer.train.schedule import resumed_fraction

    assert resumed_fraction(0.0, 30.0, 60.0) == 0.5  # a new run: time over the budget
    st = TrainState(step=40, total=None, elapsed=100.0, start_step=40, start_elapsed=40.0,
                    left=60.0, schedule_start=0.4)  # 40 s of 100 trained, resumed
    st.elapsed = 70.0
    assert st.fraction() == pytest.approx(0.7)  # 70 s of the whole 100
    finished = [resumed_fraction(1.0, t, 30.0) for t in (0.0, 10.0, 40.0)]
    assert finished == [1.0, 1.0, 1.0]
    fractions = [resumed_fraction(0.3, t, 10.0) for t in range(12)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_an_older_time_budgeted_checkpoint_resumes_where_its_clock_stood():
    """Checkpoints written before the schedule's position was saved (the demo's run of
    4 Dec): its time's share of its budget; a run of updates: its updates' share."""
    from types import SimpleNamespace

    from sparse_transformer.train.loop import _saved_fraction

    cfg = SimpleNamespace(warmup=10)
    timed = SimpleNamespace(state={"total": None, "elapsed_s": 90.0}, step=300,
                            train={"options": {"max_minutes": 2.0}})
    assert _saved_fraction(timed, cfg) == pytest.approx(0.75)
    stepped = SimpleNamespace(state={"total": 110, "elapsed_s": 9.0}, step=60, train={})
    assert _saved_fraction(stepped, cfg) == pytest.approx(0.5)
    saved = SimpleNamespace(state={"schedule_fraction": 0.25, "total": None}, step=1, train={})
    assert _saved_fraction(saved, cfg) == 0.25


def test_units_are_named_per_modality(tmp_path):
    """Issue 20: image runs said "bpb". metrics.csv keeps its columns (every reader knows
    them) and names the unit on every row; a file from before the column gets it on resume;
    the progress bar says bpd for images."""
    from types import SimpleNamespace

    from sparse_transformer.train.loop import Trainer
    from sparse_transformer.train.metrics import FIELDS, MetricsLogger, read_metrics

    old = ",".join(f for f in FIELDS if f != "unit")
    (tmp_path / "metrics.csv").write_text(old + "\n1,64,0.1,0.001,5.0,7.2,,,,\n")
    logger = MetricsLogger(tmp_path, unit="bits per dim")
    logger.log({"step": 2, "loss": 4.0, "train_bpb": 5.8})
    logger.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["step"], r["train_bpb"], r["unit"]) for r in rows] == [
        ("1", "7.2", "bits per dim"), ("2", "5.8", "bits per dim")]
    bar = SimpleNamespace(unit="bits per dim", state=SimpleNamespace(total=3, valid_bpb=3.5))
    assert Trainer._postfix(bar, {"step": 2, "loss": 4.0, "train_bpb": 5.8}) == {
        "loss": "4.000", "bpd": "5.800", "val_bpd": "3.500"}
