"""How fast can a plain Triton forward be on this GPU? Ceiling probes for issue 18.

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

The same question for the fixed pattern (paper 4.3), whose target is 2.9 ms forward +
backward at 4 x 16,384: ``fixed-compact`` copies each head's summary keys and values (c = 32
columns of every l = 128 block, the head's own sub-block) into one contiguous run per head,
then a plain kernel attends each query block to the first c * m of them (blocks before its
own: no mask) and to its own block (the causal mask). Its time is given with and without the
copy, beside our fixed kernel's forward; it is checked against our float reference at 2,048
positions (the dense reference of 16,384 would not fit).

    python benchmarks/attention_ceiling.py --out DIR            # on a GPU (JSON rows in DIR)
    python benchmarks/attention_ceiling.py --smoke              # the interpreter, tiny shapes

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
def _query_block(QKV, s_tok, N, H, D: tl.constexpr, BM: tl.constexpr):
    """This program's query block (the longest rows first), its sequence's base pointer in
    QKV [B * N, 3HD], its q tile and an empty online-softmax state."""
    m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    base = QKV + (b * N).to(tl.int64) * s_tok
    rows = m * BM + tl.arange(0, BM)
    d = tl.arange(0, D)
    q = tl.load(base + rows[:, None] * s_tok + h * D + d[None, :])
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    return m, bh, b, h, base, rows, d, q, acc, m_i, l_i


@triton.jit
def _own_block_then_store(acc, m_i, l_i, q, base, O, s_tok, s_otok, b, h, m, N, H, rows, d,
                          scale_log2, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """The query block's own key block under the causal mask, then the output rows."""
    kb = base + H * D + h * D
    vb = base + 2 * H * D + h * D
    for start in range(m * BM, (m + 1) * BM, BN):
        cols = start + tl.arange(0, BN)
        k = tl.load(kb + cols[:, None] * s_tok + d[None, :])
        v = tl.load(vb + cols[:, None] * s_tok + d[None, :])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, True)
    out = acc / l_i[:, None]
    tl.store(O + (b * N).to(tl.int64) * s_otok + rows[:, None] * s_otok + h * D + d[None, :],
             out.to(O.dtype.element_ty))


@triton.jit
def causal_fwd_ptr(QKV, O, s_tok, s_otok, N, H, scale_log2,
                   D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """QKV: [B * N, 3 * H * D] (q | k | v, heads inside), O: [B * N, H * D]; N % BM == 0."""
    m, bh, b, h, base, rows, d, q, acc, m_i, l_i = _query_block(QKV, s_tok, N, H, D, BM)
    kb = base + H * D + h * D
    vb = base + 2 * H * D + h * D
    for start in range(0, m * BM, BN):  # whole blocks below the diagonal: no mask
        cols = start + tl.arange(0, BN)
        k = tl.load(kb + cols[:, None] * s_tok + d[None, :])
        v = tl.load(vb + cols[:, None] * s_tok + d[None, :])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, False)
    _own_block_then_store(acc, m_i, l_i, q, base, O, s_tok, s_otok, b, h, m, N, H, rows, d,
                          scale_log2, D, BM, BN)


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


@triton.jit
def fixed_fwd_compact(QKV, KC, VC, O, s_tok, s_otok, s_ch, N, NC, H, scale_log2,
                      D: tl.constexpr, L: tl.constexpr, C: tl.constexpr, BN: tl.constexpr):
    """Fixed(L, C, V) forward. KC, VC: [B, H, NC, D] contiguous, NC = C * N / L: head h's
    summary keys of every block in order, so block m's queries read KC[:C * m] whole, then
    their own block of QKV's keys under the causal mask (query block = key block = L rows)."""
    m, bh, b, h, base, rows, d, q, acc, m_i, l_i = _query_block(QKV, s_tok, N, H, D, L)
    kcb = KC + bh.to(tl.int64) * s_ch
    vcb = VC + bh.to(tl.int64) * s_ch
    n_sum = C * m
    for start in range(0, n_sum - n_sum % BN, BN):  # whole steps of summary keys
        cols = start + tl.arange(0, BN)
        k = tl.load(kcb + cols[:, None] * D + d[None, :])
        v = tl.load(vcb + cols[:, None] * D + d[None, :])
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, cols, scale_log2, False)
    if n_sum % BN != 0:  # the last, partial step: keys past n_sum masked (as "in the future")
        cols = n_sum - n_sum % BN + tl.arange(0, BN)
        live = cols < n_sum
        k = tl.load(kcb + cols[:, None] * D + d[None, :], mask=live[:, None], other=0.0)
        v = tl.load(vcb + cols[:, None] * D + d[None, :], mask=live[:, None], other=0.0)
        fake = tl.where(live, 0, (m + 1) * L)  # a column after every row: masked out
        acc, m_i, l_i = _online_step(acc, m_i, l_i, q, k, v, rows, fake, scale_log2, True)
    _own_block_then_store(acc, m_i, l_i, q, base, O, s_tok, s_otok, b, h, m, N, H, rows, d,
                          scale_log2, D, L, BN)


def compact_summaries(qkv: torch.Tensor, H: int, stride: int, summary: int, distinct: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, N * summary / stride, D] keys and values of each head's summary columns (the
    fixed pattern's, ``patterns/fixed.py``), in position order, contiguous."""
    B, N, W = qkv.shape
    D = W // (3 * H)
    k = qkv[..., H * D:2 * H * D].view(B, N, H, D)
    v = qkv[..., 2 * H * D:].view(B, N, H, D)
    starts = torch.arange(0, N, stride, device=qkv.device)[:, None]
    index = torch.stack([(starts + stride - (h % distinct + 1) * summary
                          + torch.arange(summary, device=qkv.device)).flatten()
                         for h in range(H)])  # [H, NC]
    heads = torch.arange(H, device=qkv.device)[:, None]
    return (k[:, index, heads].contiguous(), v[:, index, heads].contiguous())  # [B, H, NC, D]


def run_fixed_probe(qkv: torch.Tensor, H: int, stride: int, summary: int, distinct: int,
                    BN: int, warps: int, stages: int, compacted=None) -> torch.Tensor:
    """[B, N, H, D] fixed-pattern output through ``fixed_fwd_compact`` (compacting first unless
    ``compacted`` = (kc, vc) is given)."""
    B, N, W = qkv.shape
    D = W // (3 * H)
    if N % stride or stride % BN:
        raise ValueError(f"N={N} must be a multiple of the stride {stride}, it of BN={BN}")
    kc, vc = compacted or compact_summaries(qkv, H, stride, summary, distinct)
    flat = qkv.view(B * N, W)
    out = torch.empty(B * N, H * D, device=qkv.device, dtype=qkv.dtype)
    fixed_fwd_compact[(N // stride, B * H)](
        flat, kc, vc, out, flat.stride(0), out.stride(0), kc.stride(1), N, kc.shape[2], H,
        LOG2E / math.sqrt(D), D=D, L=stride, C=summary, BN=BN, num_warps=warps,
        num_stages=stages)
    return out.view(B, N, H, D)


def fixed_reference(qkv: torch.Tensor, H: int, pattern) -> torch.Tensor:
    """[B, N, H, D] through our float reference (``kernels/reference.py``), in float32."""
    from sparse_transformer.kernels.reference import masked_softmax_attention

    B, N, W = qkv.shape
    D = W // (3 * H)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2).float() for x in qkv.split(H * D, dim=-1))
    out = masked_softmax_attention(q, k, v, pattern.mask(N, H, device=qkv.device),
                                   D ** -0.5)[0]
    return out.transpose(1, 2).to(qkv.dtype)


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


FIXED = (128, 32, 4)  # the enwik8 preset's fixed(stride, summary, distinct)
FIXED_VARIANTS = [  # (name, BN, warps, stages)
    ("fixed-compact-64-w4", 64, 4, 3),
    ("fixed-compact-128-w8", 128, 8, 3),
    ("fixed-compact-32-w4", 32, 4, 3),
]


def _guarded(row: dict, work) -> dict:
    """Run ``work(row)``; a variant this Triton refuses (or that fails its check) is recorded
    in the row, not hidden, and the rest go on."""
    try:
        work(row)
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    print(json.dumps(row), flush=True)
    return row


def _check(row: dict, got: torch.Tensor, ref: torch.Tensor, bound: float) -> None:
    row["max_err"] = float((got.float() - ref.float()).abs().max())
    if row["max_err"] > bound:
        raise AssertionError(f"max error {row['max_err']:.3g} against the reference")


def probe_arguments(doc: str, out_file: str, argv: list[str] | None
                    ) -> tuple[argparse.Namespace, bool]:
    """The command line of a ceiling probe (this file's, backward_ceiling.py's), and whether it
    runs on CUDA (else --smoke: the interpreter)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shapes", default="12288x2,16384x4", help="N x batch, comma-separated")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--out", type=Path, help=f"folder for {out_file}")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes in the interpreter")
    args = ap.parse_args(argv)
    if args.smoke and torch.cuda.is_available():
        ap.error("--smoke is for machines without CUDA (the interpreter)")
    return args, torch.cuda.is_available() and not args.smoke


def main(argv: list[str] | None = None) -> int:
    args, cuda = probe_arguments(__doc__, "attention-ceiling.json", argv)
    from sparse_transformer import patterns as P

    H, D = args.heads, (64 if cuda else 16)
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    bound = 2e-2 if cuda else 1e-4
    if args.smoke:
        shapes, variants = [(128, 2)], [("ptr-32x16-w4", "ptr", 32, 16, 4, 1)]
        fixed, fixed_variants = (32, 8, 2), [("fixed-compact-16-w4", 16, 4, 1)]
    else:
        shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
        variants, fixed, fixed_variants = VARIANTS, FIXED, FIXED_VARIANTS
    pattern = P.fixed(*fixed)
    # The fixed probes are checked at a length whose dense reference fits in memory.
    g = torch.Generator(device=device).manual_seed(1)
    small = torch.randn(1, 2048 if cuda else 128, 3 * H * D, device=device, dtype=dtype,
                        generator=g)
    small_ref = fixed_reference(small, H, pattern)
    rows: list[dict] = []
    for N, B in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        qkv = torch.randn(B, N, 3 * H * D, device=device, dtype=dtype, generator=g)
        ref = reference(qkv, H)
        base = {"n_ctx": N, "batch": B, "heads": H, "head_dim": D,
                "device": torch.cuda.get_device_name() if cuda else "cpu (interpreter)",
                "commit": os.environ.get("COMMIT", "unknown")}

        for name, mode, BM, BN, warps, stages in variants:
            def causal(row, mode=mode, BM=BM, BN=BN, warps=warps, stages=stages):
                _check(row, run_probe(qkv, H, mode, BM, BN, warps, stages), ref, bound)
                if cuda:
                    row["fwd_ms"] = _median_ms(lambda: run_probe(qkv, H, mode, BM, BN, warps,
                                                                 stages))
            rows.append(_guarded({**base, "pattern": "causal", "impl": "probe",
                                  "variant": name}, causal))
        if cuda:
            for row in _baselines(qkv, H, base):
                rows.append(row)
                print(json.dumps(row), flush=True)

        for name, BN, warps, stages in fixed_variants:
            def fixed_probe(row, BN=BN, warps=warps, stages=stages):
                _check(row, run_fixed_probe(small, H, *fixed, BN, warps, stages), small_ref,
                       bound)
                if cuda:
                    packed = compact_summaries(qkv, H, *fixed)
                    row["compact_ms"] = _median_ms(lambda: compact_summaries(qkv, H, *fixed))
                    row["fwd_ms"] = _median_ms(lambda: run_fixed_probe(
                        qkv, H, *fixed, BN, warps, stages, compacted=packed))
                    row["fwd_with_compact_ms"] = row["fwd_ms"] + row["compact_ms"]
            rows.append(_guarded({**base, "pattern": pattern.name, "impl": "probe",
                                  "variant": name}, fixed_probe))
        if cuda:
            rows.append(_guarded({**base, "pattern": pattern.name,
                                  "impl": "ours (triton, tile lists)"},
                                 lambda row: row.update(fwd_ms=_ours_ms(qkv, H, pattern))))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "attention-ceiling.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def _ours_ms(qkv: torch.Tensor, H: int, pattern) -> float:
    """Forward ms of our Triton kernels on ``pattern`` (no autograd)."""
    from sparse_transformer.kernels import dispatch

    B, N, W = qkv.shape
    D = W // (3 * H)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in qkv.split(H * D, dim=-1))
    prepared = dispatch.prepare(pattern, N, H, D, D, q.dtype, q.device, "triton")
    with torch.no_grad():
        return _median_ms(lambda: dispatch.run(prepared, q, k, v, D ** -0.5))


def _baselines(qkv: torch.Tensor, H: int, base: dict) -> list[dict]:
    """Forward ms of cuDNN's and FlashAttention's SDPA and of our Triton kernel, causal."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sparse_transformer import patterns as P

    B, N, W = qkv.shape
    D = W // (3 * H)
    q, k, v = (x.view(B, N, H, D).transpose(1, 2) for x in qkv.split(H * D, dim=-1))
    out = []
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("flash", SDPBackend.FLASH_ATTENTION)):
        row = {**base, "pattern": "causal", "impl": name}
        try:
            with sdpa_kernel(backend):
                row["fwd_ms"] = _median_ms(lambda: torch.nn.functional.
                                           scaled_dot_product_attention(q, k, v, is_causal=True))
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        out.append(row)
    out.append({**base, "pattern": "causal", "impl": "ours (triton, tile lists)",
                "fwd_ms": _ours_ms(qkv, H, P.causal())})
    return out


if __name__ == "__main__":
    sys.exit(main())
