"""Mixed precision (paper 5.6): fp32 weights, bf16 or fp16 activations, fp32 attention logits.

"fp16" follows the paper: fp16 activations and gradients with dynamic loss scaling. We use
``torch.amp.GradScaler`` configured as the scheme of OpenAI's code (blocksparse's enwik8
example): start at 2^16, halve and skip the update when a gradient is inf/NaN, double after 1,000 consecutive
finite steps. "bf16" needs no loss scaling. Attention logits and softmax always run in fp32
(``model.transformer.attend`` switches autocast off around the kernels, which upcast).

Training and evaluation both use these helpers, so they sit beside the model rather than in
``train``. torch is imported inside the functions: the CLI reads ``PRECISIONS`` for its
``--precision`` choices, and ``--help`` must not pay for importing torch.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def autocast(precision: str, device: "torch.device"):
    """Context manager for the forward pass under ``precision``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: "torch.device") -> "torch.amp.GradScaler":
    """Dynamic loss scaler; a disabled no-op unless precision is fp16."""
    import torch

    return torch.amp.GradScaler(device.type, init_scale=2.0**16, growth_factor=2.0,
                                backoff_factor=0.5, growth_interval=1000,
                                enabled=precision == "fp16")
