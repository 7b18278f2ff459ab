"""How fast can a plain Triton causal forward be on this GPU? A ceiling probe for issue 18.

Issue 18 asks our causal kernels for <= 1.10x cuDNN. Ours walk a plan's tile lists (gathered
32-key tiles, an index load per gather, the element rule on partial tiles); this file holds
the simplest causal FlashAttention-2 forward we can write in Triton instead -- contiguous key
blocks, no lists, no rules -- and times it beside our kernel's forward and cuDNN's, on the
same [B, N, 3HD] projection layout the model uses (q, k, v strided views, head dim 64, bf16).

If the plain kernel is no faster than ours, the tile lists are not what stands between us and
cuDNN, and the gap is the Triton forward itself; if it is much faster, a contiguous-run path
inside our kernels would pay. Each variant is checked against SDPA before it is timed:

* ``ptr``: pointer loads (Triton pipelines them with cp.async), BN keys a step;
* ``desc``: tensor descriptors (TMA on Hopper) for q, k, v and the output;
* ``desc-ws``: the same with ``tl.range(..., warp_specialize=True)`` (a variant the installed
  Triton refuses is reported, not hidden).

    python benchmarks/causal_ceiling.py --out DIR            # on a GPU
    python benchmarks/causal_ceiling.py --smoke              # the interpreter, tiny shapes

Forward only: the backward's products are twice as many and its own story (kernel_stages.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():  # the interpreter runs these kernels on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

LOG2E = 1.4426950408889634


@triton.jit
def _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, MASK: tl.constexpr):
    """One key block of the online softmax (base 2, the scale inside the exponent)."""
    s = tl.dot(q, tl.trans(k))
    if MASK:
        s = tl.where(rows[:, None] >= cols[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s * scale_log2 - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def causal_fwd_ptr(QKV, O, s_tok, s_otok, N, H, scale_log2,
                   D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """QKV: [B * N, 3 * H * D] (q | k | v, heads inside), O: [B * N, H * D]; N % BM == 0."""
    m = tl.num_programs(0) - 1 - tl.program_id(0)  # the longest rows first
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    base = QKV + (b * N).to(tl.int64) * s_tok
    rows = m * BM + tl.arange(0, BM)
    d = tl.arange(0, D)
    q = tl.load(base + rows[:, None] * s_tok + h * D + d[None, :])
    kb = base + H * D + h * D
    vb = base + 2 * H * D + h * D
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    for start in range(0, m * BM, BN):  # whole blocks below the diagonal: no mask
        cols = start + tl.arange(0, BN)
        k = tl.load(kb + cols[:, None] * s_tok + d[None, :])
        v = tl.load(vb + cols[:, None] * s_tok + d[None, :])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, False)
    for start in range(m * BM, (m + 1) * BM, BN):  # the diagonal block
        cols = start + tl.arange(0, BN)
        k = tl.load(kb + cols[:, None] * s_tok + d[None, :])
        v = tl.load(vb + cols[:, None] * s_tok + d[None, :])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, True)
    out = acc / l_i[:, None]
    tl.store(O + (b * N).to(tl.int64) * s_otok + rows[:, None] * s_otok + h * D + d[None, :],
             out.to(O.dtype.element_ty))


@triton.jit
def causal_fwd_desc(q_desc, k_desc, v_desc, o_desc, N, H, scale_log2,
                    D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, WS: tl.constexpr):
    """The same with tensor descriptors over the [B * N, 3HD] and [B * N, HD] views."""
    m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    row0 = b * N + m * BM
    rows = m * BM + tl.arange(0, BM)
    q = q_desc.load([row0, h * D])
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    for start in tl.range(0, m * BM, BN, warp_specialize=WS):
        cols = start + tl.arange(0, BN)
        k = k_desc.load([b * N + start, H * D + h * D])
        v = v_desc.load([b * N + start, 2 * H * D + h * D])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, False)
    for start in range(m * BM, (m + 1) * BM, BN):
        cols = start + tl.arange(0, BN)
        k = k_desc.load([b * N + start, H * D + h * D])
        v = v_desc.load([b * N + start, 2 * H * D + h * D])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, True)
    o_desc.store([row0, h * D], (acc / l_i[:, None]).to(o_desc.dtype))


def run_probe(qkv: torch.Tensor, H: int, variant: str, BM: int, BN: int, warps: int,
              stages: int) -> torch.Tensor:
    """[B, N, H, D] output of one probe variant on qkv [B, N, 3HD]."""
    B, N, W = qkv.shape
    D = W // (3 * H)
    if N % BM or BM % BN:
        raise ValueError(f"N={N} must be a multiple of BM={BM}, BM of BN={BN}")
    flat = qkv.view(B * N, W)
    out = torch.empty(B * N, H * D, device=qkv.device, dtype=qkv.dtype)
    grid = (N // BM, B * H)
    scale_log2 = LOG2E / math.sqrt(D)
    if variant == "ptr":
        causal_fwd_ptr[grid](flat, out, flat.stride(0), out.stride(0), N, H, scale_log2,
                             D=D, BM=BM, BN=BN, num_warps=warps, num_stages=stages)
    else:
        from triton.tools.tensor_descriptor import TensorDescriptor

        descs = (TensorDescriptor.from_tensor(flat, [BM, D]),
                 TensorDescriptor.from_tensor(flat, [BN, D]),
                 TensorDescriptor.from_tensor(flat, [BN, D]),
                 TensorDescriptor.from_tensor(out, [BM, D]))
        causal_fwd_desc[grid](*descs, N, H, scale_log2, D=D, BM=BM, BN=BN,
                              WS=variant == "desc-ws", num_warps=warps, num_stages=stages)
    return out.view(B, N, H, D)


def reference(qkv: torch.Tensor, H: int) -> torch.Tensor:
    """[B, N, H, D] causal attention through SDPA (float32 on the CPU)."""
    B, N, W = qkv.shape
    D = W // (3 * H)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in qkv.split(H * D, dim=-1))
    dtype = torch.float32 if qkv.device.type == "cpu" else qkv.dtype
    out = torch.nn.functional.scaled_dot_product_attention(
        q.to(dtype), k.to(dtype), v.to(dtype), is_causal=True)
    return out.transpose(1, 2).to(qkv.dtype)


def _median_ms(fn, reps: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


VARIANTS = [  # (name, load mode, BM, BN, warps, stages)
    ("ptr-128x64-w4", "ptr", 128, 64, 4, 3),
    ("ptr-128x128-w8", "ptr", 128, 128, 8, 3),
    ("desc-128x64-w4", "desc", 128, 64, 4, 3),
    ("desc-128x128-w8", "desc", 128, 128, 8, 3),
    ("desc-ws-128x128-w4", "desc-ws", 128, 128, 4, 3),
    ("desc-ws-128x64-w4", "desc-ws", 128, 64, 4, 3),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shapes", default="12288x2,16384x4", help="N x batch, comma-separated")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--out", type=Path, help="folder for causal-ceiling.json")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes in the interpreter")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    if args.smoke and torch.cuda.is_available():
        ap.error("--smoke is for machines without CUDA (the interpreter)")
    H, D = args.heads, 64
    rows: list[dict] = []
    shapes = [(64, 1)] if args.smoke else [tuple(map(int, s.split("x")))
                                           for s in args.shapes.split(",")]
    variants = ([("ptr-32x16-w4", "ptr", 32, 16, 4, 1)] if args.smoke else VARIANTS)
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    for N, B in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        qkv = torch.randn(B, N, 3 * H * D, device=device, dtype=dtype, generator=g)
        ref = reference(qkv, H)
        base = {"n_ctx": N, "batch": B, "heads": H, "head_dim": D,
                "device": torch.cuda.get_device_name() if cuda else "cpu (interpreter)",
                "commit": os.environ.get("COMMIT", "unknown")}
        for name, mode, BM, BN, warps, stages in variants:
            row = {**base, "impl": "probe", "variant": name}
            try:
                got = run_probe(qkv, H, mode, BM, BN, warps, stages)
                row["max_err"] = float((got.float() - ref.float()).abs().max())
                if row["max_err"] > (2e-2 if cuda else 1e-4):
                    raise AssertionError(f"max error {row['max_err']:.3g} against SDPA")
                if cuda:
                    row["fwd_ms"] = _median_ms(lambda: run_probe(qkv, H, mode, BM, BN, warps,
                                                                 stages))
            except Exception as err:  # a variant this Triton refuses: say so, go on
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        if cuda:
            rows += _baselines(qkv, H, base)
            for row in rows[-3:]:
                print(json.dumps(row), flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "causal-ceiling.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def _baselines(qkv: torch.Tensor, H: int, base: dict) -> list[dict]:
    """Forward ms of cuDNN's and FlashAttention's SDPA and of our Triton kernel, causal."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sparse_transformer import patterns as P
    from sparse_transformer.kernels import dispatch

    B, N, W = qkv.shape
    D = W // (3 * H)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in qkv.split(H * D, dim=-1))
    out = []
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("flash", SDPBackend.FLASH_ATTENTION)):
        row = {**base, "impl": name}
        try:
            with sdpa_kernel(backend):
                row["fwd_ms"] = _median_ms(lambda: torch.nn.functional.
                                           scaled_dot_product_attention(q, k, v, is_causal=True))
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        out.append(row)
    prepared = dispatch.prepare(P.causal(), N, H, D, D, q.dtype, q.device, "triton")
    with torch.no_grad():
        out.append({**base, "impl": "ours (triton, tile lists)",
                    "fwd_ms": _median_ms(lambda: dispatch.run(prepared, q, k, v, D ** -0.5))})
    return out


if __name__ == "__main__":
    sys.exit(main())
