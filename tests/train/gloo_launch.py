"""Launch a test's worker on 2 CPU processes with one gloo group, as torchrun would."""

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # two processes on a 2-core machine
    # One group for all of the worker's train() calls (each would otherwise start its own);
    # train() uses a group it finds and leaves it to its maker.
    dist.init_process_group("gloo")
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(rank, *args)`` on ranks 0 and 1; an exception on either fails the caller."""
    mp.start_processes(_entry, args=(_free_port(), fn, args), nprocs=WORLD, join=True,
                       start_method="spawn")


def run_ranks(fn: Callable[..., None], tmp: Path) -> list[dict]:
    """``fn(rank, corpus, tmp)`` on both ranks over a small text corpus written in ``tmp``;
    each rank saves its results to ``tmp/rank{r}.pt``, which are returned in rank order."""
    data = tmp / "corpus.txt"
    data.write_bytes(b"the sparse transformer reads bytes of wikipedia text. " * 800)
    launch(fn, str(data), str(tmp))
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
