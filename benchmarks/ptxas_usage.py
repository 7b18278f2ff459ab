"""Registers and spills of our Triton kernels on an H100, from ptxas, on a machine with no GPU.

Compiles the forward, dQ and dK/dV kernels for sm_90 at the enwik8 shape's launch settings
(bf16, head dim 64, 128-row query tiles, 32-key tiles, the fixed pattern's term kinds) with
Triton's own compiler and target description, then asks ptxas (the one in Triton's wheel)
for each kernel's registers and spill bytes. Spills show where a launch setting runs out of
registers before any device time is spent (``kernel_stages.py`` then times the candidates).

The CPU's Triton may be newer than the device's (3.9 here, 3.6 there), so the figures are a
guide to where the pressure is, not the device's exact counts.

    python benchmarks/ptxas_usage.py                       # the defaults and 8-warp variants
    python benchmarks/ptxas_usage.py --out usage.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Compile, do not interpret: set before triton_fwd is imported (it picks the interpreter on
# machines without CUDA otherwise).
os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sparse_transformer import patterns as P  # noqa: E402
from sparse_transformer.kernels import triton_attention as T  # noqa: E402
from sparse_transformer.kernels import triton_bwd, triton_fwd  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
BF16, F32, I32 = "*bf16", "*fp32", "*i32"
TABLES = ("SLOT_HEAD", "SLOT_CLASS", "SLOT_MERGE", "FC", "FI", "PC", "PI", "KT", "PRM", "RUNS",
          "OWNED")
POINTERS = {**{n: BF16 for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DVo", "DQA")},
            **{n: F32 for n in ("LSE", "DELTA")}, **{n: I32 for n in TABLES}}
# (kernel, label, constexprs beyond the common ones, num_warps, num_stages)
VARIANTS = [
    ("fwd", "default (4 warps)", {"GATHER": 2, "LEAN": True}, 4, 3),
    ("fwd", "8 warps", {"GATHER": 2, "LEAN": True}, 8, 3),
    ("dq", "Delta launch (before)", {"GATHER": 2, "LEAN": True}, 4, 3),
    ("dq", "default: Delta in the dQ programs", {"GATHER": 2, "LEAN": True,
                                                "FUSED_DELTA": True}, 4, 3),
    ("dq", "default, 8 warps", {"GATHER": 2, "LEAN": True, "FUSED_DELTA": True}, 8, 3),
    ("dkdv", "default (8 warps, 128 keys)", {"KEY_TILES": 4, "TRANS_ACC": True,
                                            "ATOMIC_DQ": False}, 8, 3),
    # with runs (fixed's and causal's default since the twelfth session): a run loop first
    ("fwd", "runs, exact", {"GATHER": 2, "LEAN": True, "RUN": True, "EXACT": True}, 4, 3),
    ("dq", "runs, exact", {"GATHER": 2, "LEAN": True, "FUSED_DELTA": True, "RUN": True,
                           "EXACT": True}, 4, 3),
    ("dkdv", "runs, exact", {"KEY_TILES": 4, "TRANS_ACC": True, "ATOMIC_DQ": False,
                             "RUN": True, "EXACT": True}, 8, 3),
    # fixed's default since the thirteenth session: dK/dV of the tiles only this row reads
    ("dq", "runs, exact, owned tiles", {"GATHER": 2, "LEAN": True, "FUSED_DELTA": True,
                                        "RUN": True, "EXACT": True, "OWN": True}, 4, 3),
    # the atomic-dQ backward (no dQ kernel): dQ tiles added element by element, or in one TMA
    # bulk reduce each through a tensor descriptor (DQD; sixteenth session)
    ("dkdv", "atomic dQ, element atomics", {"KEY_TILES": 4, "TRANS_ACC": True,
                                            "ATOMIC_DQ": True, "RUN": True, "EXACT": True}, 8, 3),
    ("dkdv", "atomic dQ, TMA reduce", {"KEY_TILES": 4, "TRANS_ACC": True, "ATOMIC_DQ": True,
                                       "DQ_TMA": True, "RUN": True, "EXACT": True}, 8, 3),
]
# Arguments that are not plain pointers or ints: the dQ descriptor where DQ_TMA, else None.
DQ_DESCRIPTOR = "tensordesc<fp32[1,128,64]>"
KERNELS = {"fwd": triton_fwd.fwd_kernel, "dq": triton_bwd.dq_kernel,
           "dkdv": triton_bwd.dkdv_kernel}


def _ptxas() -> str:
    """Triton's bundled ptxas that reads the PTX version its compiler writes."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (bin_dir / name).exists():
            return str(bin_dir / name)
    raise SystemExit(f"no ptxas under {bin_dir}")


def _common() -> dict:
    """Constexprs every kernel takes at the enwik8 shape, with the fixed pattern's terms."""
    tables = T.device_tables(P.fixed(128, 32, 4), 12288, 8, 128, 32, torch.device("cpu"))
    kinds = tables.components[0].kinds
    return dict(QB=128, KB=32, DP=64, DVP=64, K0=kinds[0], K1=kinds[1], K2=kinds[2],
                K3=kinds[3], PREC="tf32", REORDER=False, SLOTS_X=True)


def _divisible(fn, signature: dict) -> dict:
    """The divisibility a launch at the enwik8 shape specializes on: Triton marks every
    pointer, and every integer argument whose value is a multiple of 16, ``tt.divisibility``
    16. Here: the pointers, the strides (multiples of the head dim), N, D and DV. Without it the
    masks along the head dim (``dk < D``) keep loads to one element each, which a launch on the
    device does not have."""
    ints = {"N", "D", "DV"}
    return {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
            if signature[name].startswith("*") or name in ints
            or (signature[name] == "i32" and re.fullmatch(r"s[a-z]{2,3}", name))}


def usage(kernel: str, constexprs: dict, num_warps: int, num_stages: int) -> dict:
    fn = KERNELS[kernel]
    # constexprs left out take their defaults (as a launch does)
    constexprs = {**{prm.name: prm.default for prm in fn.params
                     if prm.is_constexpr and prm.has_default}, **constexprs}
    if "DQD" in fn.arg_names and not constexprs.get("DQ_TMA"):
        constexprs["DQD"] = None  # what a launch passes without the descriptor
    signature = {name: "constexpr" if name in constexprs else POINTERS.get(
        name, "fp32" if name.startswith("scale") else "i32") for name in fn.arg_names}
    if "DQD" in signature and signature["DQD"] != "constexpr":
        signature["DQD"] = DQ_DESCRIPTOR
    compiled = triton.compile(ASTSource(fn, signature, constexprs=constexprs,
                                        attrs=_divisible(fn, signature)),
                              target=TARGET, options=dict(num_warps=num_warps,
                                                          num_stages=num_stages))
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "k.ptx"
        ptx.write_text(compiled.asm["ptx"])
        res = subprocess.run([_ptxas(), "-v", "--gpu-name", "sm_90a", str(ptx), "-o",
                              str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr.strip().splitlines()[-1])
    text = res.stderr
    num = lambda pattern: int(re.search(pattern, text).group(1))  # noqa: E731
    return {"registers": num(r"Used (\d+) registers"),
            "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"),
            # ptxas serializes the asynchronous matrix products where registers run short
            "wgmma_serialized": "wgmma.mma_async instructions are serialized" in text}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    common = _common()
    rows = []
    for kernel, label, extra, warps, stages in VARIANTS:
        row = {"kernel": kernel, "variant": label, "num_warps": warps, "num_stages": stages,
               **usage(kernel, {**common, **extra}, warps, stages)}
        rows.append(row)
        print(f"{kernel:5s} {label:38s} {warps} warps, {stages} stages: {row['registers']} "
              f"registers, spills {row['spill_stores']} B stored / {row['spill_loads']} B loaded"
              + (", wgmma serialized" if row["wgmma_serialized"] else ""), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"triton": triton.__version__, "target": "sm_90a",
                                        "shape": "enwik8: bf16, head dim 64, fixed(128, 32, 4)",
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
