"""Probe (GPU): does the atomic-dQ dK/dV kernel launch at head dim 128 in bf16 without the
``_atomic_dq_fits`` guard? Prints the outcome of one causal forward + backward with the guard
bypassed, then with it. Expected on an H100 (Triton 3.6): out of shared memory without the
guard (the kernel needs 328,788 bytes, compiled offline), a normal call with it.

    python3 benchmarks/atomic_dq_fits_probe.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer import attention, patterns as P  # noqa: E402
from sparse_transformer.kernels import dispatch, triton_attention as T  # noqa: E402


def once(label: str) -> None:
    dispatch.PREPARED.clear()
    q, k, v = (torch.randn(1, 2, 1024, 128, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for _ in range(3))
    try:
        attention(q, k, v, P.causal(), backend="triton").sum().backward()
        torch.cuda.synchronize()
        print(f"{label}: launched, dq finite {bool(torch.isfinite(q.grad).all())}", flush=True)
    except Exception as err:  # noqa: BLE001 - the outcome is what the probe reports
        print(f"{label}: {type(err).__name__}: {str(err).splitlines()[0][:200]}", flush=True)


def main() -> int:
    T.CONFIG.clear()
    T.CONFIG.update({"dkdv": {"atomic_dq": 1}})
    guard = T._atomic_dq_fits
    T._atomic_dq_fits = lambda *a: True
    once("atomic dQ, guard bypassed")
    T._atomic_dq_fits = guard
    once("atomic dQ, with the guard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
