"""Host cost of one ``attention()`` call: where the CPU time of a call goes (GPU; diagnostic).

At a tiny shape the GPU work of a call is a few microseconds, so the wall time per call of
back-to-back calls is the host's time: Python, PyTorch's dispatcher and autograd, Triton's
launcher. Rows: our op (forward without grad, forward with grad, forward + backward) for a
one-component pattern (local) and a two-component one (strided split), SDPA's forward +
backward as the baseline of PyTorch's own autograd path, one bare Triton launch of a trivial
kernel, and a cProfile of our forward + backward (the top entries by own time).

    python benchmarks/host_cost.py [--out results_dir]
    python benchmarks/host_cost.py --python-share     # CPU: the library's own share of a call
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():  # --python-share on the CPU: the interpreter's kernels
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from attention_call import wall_ms  # noqa: E402  # benchmarks/attention_call.py: the same timing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer import attention  # noqa: E402
from sparse_transformer import patterns as P  # noqa: E402


@triton.jit
def _touch(x_ptr):
    tl.store(x_ptr, tl.load(x_ptr) + 1)


def per_call_us(fn, calls: int = 200) -> float:
    for _ in range(10):
        fn()
    return 1e3 * wall_ms(fn, calls=calls)


def python_share(calls: int = 50) -> dict[str, float]:
    """Our own host time per call, with the four kernels replaced by no-ops (runs on the CPU).

    What is left is the library's Python and PyTorch's autograd around the launches: the
    dispatch, the op, the argument preparation of each launch. Subtracted from a GPU call's
    host time it leaves Triton's launcher (issue 18's host-cost item). The "launch cache" rows
    also go through each plan's ``Launches`` (kernels/launcher.py) as on a GPU, up to a
    stand-in compiled kernel whose launcher does nothing: the cache's own cost per call.
    """
    import inspect

    from sparse_transformer.kernels import launcher, triton_attention, triton_bwd, triton_fwd

    assert triton_attention.INTERPRETED or torch.cuda.is_available()

    class Compiled:  # what Launches calls on a hit
        function = packed_metadata = None

        def run(self, *call):
            pass

    class NoLaunch:
        def __init__(self, real):  # what Launches reads of a JITFunction
            self.fn = real.fn
            self.signature = inspect.signature(real.fn)
            self.arg_names = list(self.signature.parameters)

        def __getitem__(self, grid):
            return lambda *args, **kwargs: Compiled()

    for mod, name in ((triton_fwd, "fwd_kernel"), (triton_bwd, "delta_kernel"),
                      (triton_bwd, "dq_kernel"), (triton_bwd, "dkdv_kernel")):
        setattr(mod, name, NoLaunch(getattr(mod, name)))
    launcher._driver, launcher._knobs = launcher.stand_in_runtime()
    launcher._VERSION = launcher.VERIFIED[0]
    B, H, N, D = 1, 8, 512, 64
    base = torch.randn(B, N, 3 * H * D, requires_grad=True)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in base.split(H * D, dim=-1))
    go = torch.randn(B, H, N, D)
    rows = {}
    for name, p in (("local(128)", P.local(128)), ("strided(128, split)", P.strided(128, "split")),
                    ("fixed(128, 32, 4)", P.fixed(128, 32, 4))):
        with torch.no_grad():
            rows[f"{name} forward, no grad"] = per_call_us(
                lambda: attention(q, k, v, p, backend="triton"), calls)
        rows[f"{name} forward + backward"] = per_call_us(
            lambda: torch.autograd.grad(attention(q, k, v, p, backend="triton"), (q, k, v), go),
            calls)
        from sparse_transformer.kernels import dispatch

        tables = dispatch._lookup(p, N, H, D, D, q.dtype, q.device, "triton").tables
        tables.launches.enabled = True  # off under the interpreter; the stand-ins need no GPU
        rows[f"{name} forward + backward, launch cache"] = per_call_us(
            lambda: torch.autograd.grad(attention(q, k, v, p, backend="triton"), (q, k, v), go),
            calls)
        tables.launches.enabled = False
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--python-share", action="store_true",
                    help="CPU: our own host time per call, kernels replaced by no-ops")
    args = ap.parse_args(argv)
    if args.python_share:
        for k_, v_ in python_share().items():
            print(f"{k_:42s} {v_:8.1f} us (kernels not launched)", flush=True)
        return 0
    B, H, N, D = 1, 8, 512, 64
    base = torch.randn(B, N, 3 * H * D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in base.split(H * D, dim=-1))
    go = torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16)
    rows = {}

    def ours(p, grad: bool):
        def fn():
            out = attention(q, k, v, p, backend="triton")
            return torch.autograd.grad(out, (q, k, v), go) if grad else out
        return fn

    for name, p in (("local(128)", P.local(128)), ("strided(128, split)", P.strided(128, "split"))):
        with torch.no_grad():
            rows[f"{name} forward, no grad"] = per_call_us(ours(p, False))
        rows[f"{name} forward, grad on"] = per_call_us(ours(p, False))
        rows[f"{name} forward + backward"] = per_call_us(ours(p, True))
    rows["sdpa causal forward + backward"] = per_call_us(
        lambda: torch.autograd.grad(attention(q, k, v, P.causal(), backend="sdpa"), (q, k, v), go))
    x = torch.zeros(1, device="cuda")
    rows["one bare Triton launch"] = per_call_us(lambda: _touch[(1,)](x))
    for k_, v_ in rows.items():
        print(f"{k_:42s} {v_:8.1f} us", flush=True)

    fn = ours(P.strided(128, "split"), True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    print(text.getvalue())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "host-cost.json").write_text(json.dumps(
            {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
             "triton": triton.__version__, "shape": [B, H, N, D],
             "us_per_call": rows}, indent=1))
        (args.out / "host-cost-profile.txt").write_text(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
