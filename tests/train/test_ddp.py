"""DistributedDataParallel with 2 CPU processes on gloo (as torchrun would launch them)."""

import socket

import torch
import torch.multiprocessing as mp

from sparse_transformer.train.loop import TrainConfig, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, result_dir: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = TrainConfig(data=data, preset="wiki-tiny", out=out, steps=3, batch_size=2, lr=3e-3,
                      warmup=1, eval_every=0, eval_bytes=512, save_every=0, progress=False,
                      tensorboard=False, device="cpu")
    s = train(cfg)
    torch.save({"state": s["model"].state_dict(), "losses": s["losses"]},
               f"{result_dir}/rank{rank}.pt")


def test_two_processes_stay_in_sync(byte_file, tmp_path):
    out = tmp_path / "run"
    mp.start_processes(_worker, args=(2, _free_port(), str(byte_file), str(out), str(tmp_path)),
                       nprocs=2, join=True, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # same initial weights and averaged gradients: identical weights after every step
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # each rank drew its own batches (data seed + rank)
    assert r0["losses"] != r1["losses"]
    # the model did move, and only rank 0 wrote the run
    assert torch.count_nonzero(r0["state"]["head.weight"]) > 0
    assert (out / "checkpoints" / "latest").exists() and (out / "metrics.csv").exists()
