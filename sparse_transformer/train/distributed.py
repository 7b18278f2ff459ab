"""Several processes under ``torchrun``: the process group, DDP and the collectives the loop
needs.

``torchrun --nproc_per_node 2 -m sparse_transformer train ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; we join the process group with NCCL on CUDA and gloo
on the CPU (or use the group a caller already made, and then leave it to them). Every rank
builds the model from the same seed; each rank draws its own batches (data seed + rank);
gradients are averaged by DDP (or reduce-scattered by FSDP2, ``train/sharding.py``); only
rank 0 logs and writes. (The paper trains on 8-64 V100s and all-reduces fp16 gradients, 5.6.)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # setup() made the process group, so teardown() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def setup(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun (or use the caller's), else one process."""
    initialized = dist.is_initialized()
    world = dist.get_world_size() if initialized else int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return DistInfo(device=dev)
    rank = dist.get_rank() if initialized else int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not initialized:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev, owns_group=not initialized)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel (the same module with one process)."""
    if not info.enabled:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def grad_sync(module: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's all-reduce on all but the last micro-batch of an update (``sync=False``).

    Only DDP has ``no_sync``: an FSDP2 model reduce-scatters every micro-batch's gradients,
    which keeps them sharded (holding them unsharded until the last micro-batch would cost
    the memory sharding is for).
    """
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return module.no_sync()


def all_agree(info: DistInfo, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (e.g. "stop now")."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def rank0_flag(info: DistInfo, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (decisions that start collectives must agree)."""
    return broadcast_float(info, 1.0 if flag else 0.0) > 0


def gather_objects(info: DistInfo, obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, None elsewhere (small things such as
    RNG states: they travel pickled; the receiver is our own process group)."""
    if not info.enabled:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_float(info: DistInfo, value: float) -> float:
    """Rank 0's ``value`` on every rank (so time-driven schedules agree)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.broadcast(t, 0)
    return float(t.item())
