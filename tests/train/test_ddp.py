"""DistributedDataParallel with 2 CPU processes on gloo (as torchrun would launch them): the
ranks stay in sync, and a run stopped and resumed equals the run that never stopped."""

import pytest
import torch
from gloo_launch import run_ranks  # tests/train/gloo_launch.py

from sparse_transformer.train.checkpoint import load_checkpoint
from sparse_transformer.train.loop import TrainConfig, train

STEPS, CUT = 4, 2


def cfg_for(data: str, out: str, **kw) -> TrainConfig:
    # dropout on and two micro-batches: every rank's RNG and DDP's no_sync matter
    base = dict(data=data, preset="wiki-tiny", out=out, steps=STEPS, batch_size=2,
                grad_accum=2, lr=3e-3, warmup=1, eval_every=0, eval_bytes=512, eval_batch=4,
                save_every=0, progress=False, tensorboard=False, device="cpu",
                model={"dropout": 0.1})
    return TrainConfig(**{**base, **kw})


def _worker(rank: int, data: str, tmp: str) -> None:
    full = train(cfg_for(data, f"{tmp}/full"))

    def stop_on_rank1(row):  # a stop asked on one rank stops every rank
        if rank == 1 and row["step"] == CUT:
            row["stop"] = True

    first = train(cfg_for(data, f"{tmp}/cut"), callback=stop_on_rank1)
    second = train(cfg_for(data, f"{tmp}/cut", resume=True))
    torch.save({"full": full["losses"], "cut": first["losses"], "resumed": second["losses"],
                "steps": [first["step"], second["step"]],
                "state": full["model"].state_dict()}, f"{tmp}/rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Two ranks: a run of STEPS updates, and the same run stopped at CUT and resumed."""
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, run_ranks(_worker, tmp)


def test_two_processes_stay_in_sync(ddp_runs):
    tmp, (r0, r1) = ddp_runs
    # same initial weights and averaged gradients: identical weights after every step
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["full"] != r1["full"]  # each rank drew its own batches (data seed + rank)
    assert torch.count_nonzero(r0["state"]["head.weight"]) > 0  # the model did move
    # only rank 0 wrote the run
    assert (tmp / "full" / "checkpoints" / "latest").exists()
    assert (tmp / "full" / "metrics.csv").exists()


def test_resume_with_two_processes_is_exact(ddp_runs):
    tmp, ranks = ddp_runs
    for rank, r in enumerate(ranks):
        assert r["steps"] == [CUT, STEPS], rank
        # every rank's batches and dropout masks continue where they stopped
        assert r["cut"] + r["resumed"] == r["full"], rank
    full = load_checkpoint(tmp / "full")
    cut = load_checkpoint(tmp / "cut")
    assert full.weights.keys() == cut.weights.keys()
    for k in full.weights:
        assert torch.equal(full.weights[k], cut.weights[k]), k
    # each rank's RNG and data-generator states, in rank order, read with weights_only=True
    rng = cut.state["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["data"], rng[1]["data"])


def test_resume_with_another_number_of_processes_is_refused(ddp_runs):
    tmp, _ = ddp_runs
    data = str(tmp / "corpus.txt")
    before = (tmp / "cut" / "metrics.csv").read_bytes()
    with pytest.raises(ValueError, match=r"trained by 2 processes, this is 1; resume it "
                                         r"with torchrun --nproc_per_node 2"):
        train(cfg_for(data, str(tmp / "cut"), resume=True, steps=STEPS + 1))
    assert (tmp / "cut" / "metrics.csv").read_bytes() == before  # refused before any work
