"""``train --shard``: FSDP2 (``torch.distributed.fsdp.fully_shard``) over the torchrun processes.

Each residual block is one FSDP unit and the rest of the model (embedding, final layer norm,
W_out) the root unit. A unit's parameters, gradients and AdamW moments live split across the
ranks (dim-0 shards, as DTensors); its full parameters are all-gathered just before it runs
and freed after, in the forward and again in the backward, and its gradients are
reduce-scattered. Recompute (``torch.utils.checkpoint`` around each block, inside the block's
unit) composes with this: FSDP2 keeps the gathered parameters for the re-run forward.

The model is built and initialised on the CPU, identically on every rank (same seed), then
sharded block by block: ``fully_shard`` moves one unit at a time to the device and keeps only
its shard, so no GPU ever holds the whole model.

bf16: each block's parameters are all-gathered in bf16 (half the traffic and memory of the
gathered copy), the block computes on bf16 inputs, and its gradients are reduced in fp32 into
the fp32 shards; the root unit keeps fp32 parameters (so W_out's logits and the loss follow
autocast as under DDP). The loop's autocast still runs layer norm and softmax in fp32 on CUDA,
and our attention op, which switches autocast off around itself, gets bf16 q, k, v as under
DDP. What differs from DDP: the residual stream between blocks is bf16 rather than fp32
(torchtitan's choice too; the paper kept activations in half precision, 5.6).

Checkpoints hold full, unsharded tensors (gathered to rank 0 on the CPU): model.safetensors
reads with ``SparseTransformer.from_pretrained``, and the optimizer state is keyed by
parameter name, so a resume (same number of processes, ``--shard`` again) reshards it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from sparse_transformer.model.transformer import SparseTransformer

# Whole tensors, on the CPU of rank 0 only (the other ranks get empty dicts).
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def block_policy(precision: str) -> MixedPrecisionPolicy:
    """The residual blocks' mixed precision: bf16 all-gathers and fp32 gradient reduction
    under bf16, all fp32 otherwise (fp16 is refused by TrainConfig)."""
    if precision != "bf16":
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_model(model: SparseTransformer, device: torch.device,
                precision: str) -> SparseTransformer:
    """Shard ``model`` (built on the CPU) in place over every rank; returns it, on ``device``."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = block_policy(precision)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, optimizer state) of a sharded model, whole, on rank 0's CPU; empty dicts on
    the other ranks. A collective: every rank calls it."""
    weights = get_model_state_dict(model, options=_FULL)
    optim = get_optimizer_state_dict(model, optimizer, options=_FULL)
    return weights, optim


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """Load a ``full_state_dicts`` optimizer state (every rank read it) into this rank's
    shards. A collective: every rank calls it."""
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))
