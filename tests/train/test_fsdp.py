"""``train --shard`` (FSDP2) with 2 CPU processes on gloo: each rank holds only its shard, the
losses are DDP's, the checkpoint is a from_pretrained model, and a resume is exact."""

import pytest
import torch
from gloo_launch import run_ranks  # tests/train/gloo_launch.py

from sparse_transformer.cli import main
from sparse_transformer.model import SparseTransformer
from sparse_transformer.train.checkpoint import load_checkpoint
from sparse_transformer.train.loop import TrainConfig, train

STEPS, CUT = 4, 2
# fp32: the same arithmetic as DDP except the order of reductions (reduce-scatter of each
# block's gradients and a gradient-norm clip summed from shards, against DDP's bucketed
# all-reduce), so the results agree to float32 rounding; AdamW's division by sqrt(v) turns a
# rounding difference in a near-zero gradient into a larger one in the weights. Seen on this
# machine: losses equal to the last printed digit, weights within 6e-6.
LOSS_TOL, WEIGHT_TOL = 1e-4, 1e-4
# bf16: the sharded blocks gather bf16 parameters and carry a bf16 residual stream, DDP fp32
# weights under autocast and an fp32 stream. Seen: losses within 8e-4 nats after 4 updates.
BF16_LOSS_TOL = 1e-2


def cfg_for(data: str, out: str, **kw) -> TrainConfig:
    # recompute, dropout and two micro-batches on; an evaluation in the middle of the run
    base = dict(data=data, preset="wiki-tiny", out=out, steps=STEPS, batch_size=2,
                grad_accum=2, lr=3e-3, warmup=1, eval_every=2, eval_bytes=512, eval_batch=4,
                save_every=0, progress=False, tensorboard=False, device="cpu",
                model={"dropout": 0.1, "recompute": True})
    return TrainConfig(**{**base, **kw})


def _worker(rank: int, data: str, tmp: str) -> None:
    out: dict = {}
    out["ddp"] = train(cfg_for(data, f"{tmp}/ddp"))["losses"]
    full = train(cfg_for(data, f"{tmp}/full", shard=True))
    out["full"], out["valid_bpb"] = full["losses"], full["valid_bpb"]
    # what this rank holds of each parameter: its shard of a DTensor
    out["local"] = {k: (p.to_local().numel(), p.numel(), str(p.placements))
                    for k, p in full["model"].named_parameters()}

    def stop_at_cut(row):
        if row["step"] == CUT:
            row["stop"] = True

    out["cut"] = train(cfg_for(data, f"{tmp}/cut", shard=True), callback=stop_at_cut)["losses"]
    out["resumed"] = train(cfg_for(data, f"{tmp}/cut", shard=True, resume=True))["losses"]
    try:
        train(cfg_for(data, f"{tmp}/cut", resume=True, steps=STEPS + 1))
    except ValueError as err:
        out["unsharded_resume"] = str(err)
    out["ddp_bf16"] = train(cfg_for(data, f"{tmp}/ddp16", precision="bf16"))["losses"]
    out["bf16"] = train(cfg_for(data, f"{tmp}/fsdp16", precision="bf16", shard=True))["losses"]
    torch.save(out, f"{tmp}/rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    return tmp, run_ranks(_worker, tmp)


def test_each_rank_holds_only_its_shard(runs):
    _, (r0, r1) = runs
    assert r0["local"].keys() == r1["local"].keys()
    for name, (local0, numel, placements) in r0["local"].items():
        local1 = r1["local"][name][0]
        assert placements == "(Shard(dim=0),)", name
        assert local0 + local1 == numel, name  # the two shards make the whole parameter
    assert r0["local"]["blocks.0.attn.qkv.weight"] == (1536, 3072, "(Shard(dim=0),)")


def test_sharded_losses_are_ddp_losses(runs):
    tmp, ranks = runs
    for rank, r in enumerate(ranks):
        assert r["full"] == pytest.approx(r["ddp"], abs=LOSS_TOL, rel=0), rank
        assert r["bf16"] == pytest.approx(r["ddp_bf16"], abs=BF16_LOSS_TOL, rel=0), rank
    assert ranks[0]["full"] != ranks[1]["full"]  # each rank its own batches
    # every rank ran the evaluation (a sharded forward needs all of them), on the same windows
    assert ranks[0]["valid_bpb"] == ranks[1]["valid_bpb"] is not None
    ddp, full = load_checkpoint(tmp / "ddp").weights, load_checkpoint(tmp / "full").weights
    for k in ddp:
        assert torch.allclose(full[k], ddp[k], atol=WEIGHT_TOL, rtol=0), k


def test_the_checkpoint_is_a_pretrained_model(runs):
    tmp, _ = runs
    ckpt = load_checkpoint(tmp / "full")
    model = SparseTransformer.from_pretrained(tmp / "full")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt.weights[k]), k
    assert 0 < model.loss(b"the sparse transformer").item() < 5.0
    # the optimizer state is whole and keyed by parameter name (so a resume can reshard it)
    assert ckpt.state["shard"] is True and len(ckpt.state["rng"]) == 2
    moments = ckpt.state["optimizer"]["state"]["blocks.0.attn.qkv.weight"]
    assert moments["exp_avg"].shape == (96, 32)


def test_sharded_resume_is_exact(runs):
    tmp, ranks = runs
    for rank, r in enumerate(ranks):
        assert r["cut"] + r["resumed"] == r["full"], rank
    full, cut = load_checkpoint(tmp / "full").weights, load_checkpoint(tmp / "cut").weights
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    for r in ranks:
        assert r["unsharded_resume"].endswith("was trained with --shard; resume it with --shard")


def test_shard_is_refused_where_it_cannot_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="not fp16"):
        TrainConfig(shard=True, precision="fp16")
    data = tmp_path / "corpus.txt"
    data.write_bytes(b"some bytes of text " * 400)
    with pytest.raises(ValueError, match="--shard needs several processes"):
        train(cfg_for(str(data), str(tmp_path / "one"), shard=True))
    assert not (tmp_path / "one").exists()
    code = main(["train", "--data", str(data), "--preset", "wiki-tiny", "--steps", "1",
                 "--out", str(tmp_path / "cli"), "--shard", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--shard needs several processes" in err[0]
