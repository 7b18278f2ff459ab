"""How fast can a plain Triton causal *backward* be on this GPU? The other half of issue 18's
ceiling probes (``attention_ceiling.py`` has the forward).

With runs of full tiles (twelfth session) our causal forward matches a plain Triton forward
and comes within 2% of cuDNN's, but our backward is 3.1x our forward where cuDNN's is ~2.5x
its own. This file holds the plainest FlashAttention-2 backward we can write in Triton --
contiguous blocks, no lists, no rules, no masks but on the diagonal -- as two kernels:

* ``causal_dkdv``: one program per block of BN keys, walking every query block at or after it
  BM rows a step (dV += P^T dO, dK += dS^T Q, accumulators [BN, D]);
* ``causal_dq``: one program per block of BM queries, walking every key block up to it BN keys
  a step (dQ += dS K);

and times them (plus Delta = rowsum(dO * O) in torch) beside our backward launches
(``triton_attention.backward_launches``) and cuDNN's backward (SDPA, autograd), on the model's
[B, N, 3HD] projection layout, head dim 64, bf16. O and the log-sum-exp come from our forward.
Each probe is checked against our backward (which the CUDA tests check against float64) before
it is timed. If the plain backward is much faster than ours, our loop is again the gap; if
not, the rest is Triton's backward (or tiles and warps this probe does not try).

    python benchmarks/backward_ceiling.py --out DIR     # on a GPU (JSON rows in DIR)
    python benchmarks/backward_ceiling.py --smoke       # the interpreter, tiny shapes
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():  # the interpreter runs these kernels on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from attention_ceiling import (  # noqa: E402  (this folder)
    LOG2E,
    _guarded,
    _median_ms,
    probe_arguments,
)


@triton.jit
def _dkdv_step(dk, dv, k, v, Qb, DOb, LSEb, DELTAb, s_tok, s_otok, start, cols, d,
               scale_log2, BM: tl.constexpr, MASK: tl.constexpr):
    """One block of BM query rows of a key block's dK, dV."""
    rows = start + tl.arange(0, BM)
    q = tl.load(Qb + rows[:, None] * s_tok + d[None, :])
    do = tl.load(DOb + rows[:, None] * s_otok + d[None, :])
    lse2 = tl.load(LSEb + rows) * 1.4426950408889634
    delta = tl.load(DELTAb + rows)
    p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse2[:, None])
    if MASK:
        p = tl.where(rows[:, None] >= cols[None, :], p, 0.0)
    dv += tl.dot(tl.trans(p.to(do.dtype)), do)
    ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
    dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    return dk, dv


@triton.jit
def causal_dkdv(QKV, DO, LSE, DELTA, DK, DV, s_tok, s_otok, N, H, scale_log2, scale,
                D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """QKV [B * N, 3HD], DO / DK / DV [B * N, HD], LSE / DELTA [B * H, N]; N % BN == 0."""
    n = tl.program_id(0)  # the first key blocks have the most query blocks: they start first
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    base = QKV + (b * N).to(tl.int64) * s_tok
    Qb = base + h * D
    DOb = DO + (b * N).to(tl.int64) * s_otok + h * D
    LSEb = LSE + bh.to(tl.int64) * N
    DELTAb = DELTA + bh.to(tl.int64) * N
    cols = n * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    k = tl.load(base + H * D + h * D + cols[:, None] * s_tok + d[None, :])
    v = tl.load(base + 2 * H * D + h * D + cols[:, None] * s_tok + d[None, :])
    dk = tl.zeros([BN, D], tl.float32)
    dv = tl.zeros([BN, D], tl.float32)
    for start in range(n * BN, (n + 1) * BN, BM):  # the diagonal: causal mask
        dk, dv = _dkdv_step(dk, dv, k, v, Qb, DOb, LSEb, DELTAb, s_tok, s_otok, start, cols,
                            d, scale_log2, BM, True)
    for start in range((n + 1) * BN, N, BM):  # every later query block: no mask
        dk, dv = _dkdv_step(dk, dv, k, v, Qb, DOb, LSEb, DELTAb, s_tok, s_otok, start, cols,
                            d, scale_log2, BM, False)
    out = (b * N).to(tl.int64) * s_otok + h * D + cols[:, None] * s_otok + d[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty))
    tl.store(DV + out, dv.to(DV.dtype.element_ty))


@triton.jit
def _dq_step(dq, q, do, lse2, delta, Kb, Vb, s_tok, start, rows, d, scale_log2,
             BN: tl.constexpr, MASK: tl.constexpr):
    """One block of BN keys of a query block's dQ."""
    cols = start + tl.arange(0, BN)
    k = tl.load(Kb + cols[:, None] * s_tok + d[None, :])
    v = tl.load(Vb + cols[:, None] * s_tok + d[None, :])
    p = tl.exp2(tl.dot(q, tl.trans(k)) * scale_log2 - lse2[:, None])
    if MASK:
        p = tl.where(rows[:, None] >= cols[None, :], p, 0.0)
    ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
    return dq + tl.dot(ds.to(k.dtype), k)


@triton.jit
def causal_dq(QKV, DO, LSE, DELTA, DQ, s_tok, s_otok, N, H, scale_log2, scale,
              D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    """The same layout; N % BM == 0, BM % BN == 0."""
    m = tl.num_programs(0) - 1 - tl.program_id(0)  # the longest rows first
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    base = QKV + (b * N).to(tl.int64) * s_tok
    rows = m * BM + tl.arange(0, BM)
    d = tl.arange(0, D)
    q = tl.load(base + h * D + rows[:, None] * s_tok + d[None, :])
    orow = (b * N).to(tl.int64) * s_otok + h * D + rows[:, None] * s_otok + d[None, :]
    do = tl.load(DO + orow)
    lse2 = tl.load(LSE + bh.to(tl.int64) * N + rows) * 1.4426950408889634
    delta = tl.load(DELTA + bh.to(tl.int64) * N + rows)
    Kb = base + H * D + h * D
    Vb = base + 2 * H * D + h * D
    dq = tl.zeros([BM, D], tl.float32)
    for start in range(0, m * BM, BN):  # key blocks before the diagonal: no mask
        dq = _dq_step(dq, q, do, lse2, delta, Kb, Vb, s_tok, start, rows, d, scale_log2, BN,
                      False)
    for start in range(m * BM, (m + 1) * BM, BN):
        dq = _dq_step(dq, q, do, lse2, delta, Kb, Vb, s_tok, start, rows, d, scale_log2, BN,
                      True)
    tl.store(DQ + orow, (dq * scale).to(DQ.dtype.element_ty))


DKDV_VARIANTS = [  # (name, BM query rows a step, BN keys a program, warps, stages)
    ("dkdv-32x128-w4", 32, 128, 4, 3),
    ("dkdv-64x128-w8", 64, 128, 8, 3),
    ("dkdv-64x64-w4", 64, 64, 4, 3),
    ("dkdv-128x128-w8", 128, 128, 8, 2),
]
DQ_VARIANTS = [  # (name, BM query rows a program, BN keys a step, warps, stages)
    ("dq-128x32-w4", 128, 32, 4, 3),
    ("dq-128x64-w4", 128, 64, 4, 3),
    ("dq-64x64-w4", 64, 64, 4, 3),
    ("dq-128x64-w8", 128, 64, 8, 3),
]


class Problem:
    """One causal attention problem in the model's layout, with our forward's O and lse."""

    def __init__(self, B: int, N: int, H: int, D: int, device: str, dtype: torch.dtype):
        from sparse_transformer import patterns as P
        from sparse_transformer.kernels import dispatch
        from sparse_transformer.kernels import triton_attention as T

        g = torch.Generator(device=device).manual_seed(0)
        self.B, self.N, self.H, self.D = B, N, H, D
        self.qkv = torch.randn(B, N, 3 * H * D, device=device, dtype=dtype, generator=g)
        self.q, self.k, self.v = (x.view(B, N, H, D).transpose(1, 2)
                                  for x in self.qkv.split(H * D, dim=-1))
        self.dout = torch.randn(B, N, H, D, device=device, dtype=dtype,
                                generator=g).transpose(1, 2)
        self.scale = 1 / math.sqrt(D)
        self.tables = dispatch.prepare(P.causal(), N, H, D, D, dtype, self.qkv.device,
                                       "triton").tables
        self.out, self.lse = T.forward_launches(self.q, self.k, self.v, self.tables,
                                                self.scale)

    def ours(self) -> tuple[torch.Tensor, ...]:
        """Our backward launches: (dq, dk, dv), [B, H, N, D] views."""
        from sparse_transformer.kernels import triton_attention as T

        return T.backward_launches(self.dout, self.q, self.k, self.v, self.out, self.lse,
                                   self.tables, self.scale)

    def delta(self) -> torch.Tensor:
        return (self.out.float() * self.dout.float()).sum(-1).contiguous()  # [B, H, N]

    def probe(self, dkdv: tuple, dq: tuple, delta: torch.Tensor | None = None,
              parts: str = "dkdv,dq") -> tuple[torch.Tensor, ...]:
        """(dq, dk, dv) [B, H, N, D] through the plain kernels (``parts`` of them run)."""
        B, N, H, D = self.B, self.N, self.H, self.D
        delta = self.delta() if delta is None else delta
        flat = self.qkv.view(B * N, 3 * H * D)
        do = self.dout.transpose(1, 2).view(B * N, H * D)  # [B, N, H, D] memory: no copy
        lse = self.lse
        grads = [torch.empty(B * N, H * D, device=flat.device, dtype=flat.dtype)
                 for _ in range(3)]
        common = (flat.stride(0), do.stride(0), N, H, LOG2E * self.scale, self.scale)
        if "dkdv" in parts:
            _, BM, BN, warps, stages = dkdv
            causal_dkdv[(N // BN, B * H)](flat, do, lse, delta, grads[1], grads[2], *common,
                                          D=D, BM=BM, BN=BN, num_warps=warps,
                                          num_stages=stages)
        if "dq" in parts:
            _, BM, BN, warps, stages = dq
            causal_dq[(N // BM, B * H)](flat, do, lse, delta, grads[0], *common, D=D, BM=BM,
                                        BN=BN, num_warps=warps, num_stages=stages)
        return tuple(x.view(B, N, H, D).transpose(1, 2) for x in grads)

    def cudnn_backward_ms(self) -> float:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q, k, v = (x.detach().requires_grad_() for x in (self.q, self.k, self.v))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return _median_ms(lambda: torch.autograd.grad(out, (q, k, v), self.dout,
                                                      retain_graph=True))


def _max_rel_err(got: tuple, want: tuple) -> float:
    return max(float((a.float() - b.float()).abs().max()) / max(1e-6, float(b.float().abs().max()))
               for a, b in zip(got, want))


def main(argv: list[str] | None = None) -> int:
    args, cuda = probe_arguments(__doc__, "backward-ceiling.json", argv)
    if args.smoke:
        shapes, H, D, dtype, device = [(128, 2)], 2, 16, torch.float32, "cpu"
        dkdv_variants, dq_variants = [("dkdv-16x32-w4", 16, 32, 4, 1)], [
            ("dq-32x16-w4", 32, 16, 4, 1)]
        bound = 1e-4
    else:
        shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
        H, D, dtype, device = args.heads, 64, torch.bfloat16, "cuda"
        dkdv_variants, dq_variants, bound = DKDV_VARIANTS, DQ_VARIANTS, 2e-2
    rows: list[dict] = []

    def save():
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "backward-ceiling.json").write_text(json.dumps(rows, indent=1) + "\n")

    for N, B in shapes:
        pb = Problem(B, N, H, D, device, dtype)
        base = {"n_ctx": N, "batch": B, "heads": H, "head_dim": D, "pattern": "causal",
                "device": torch.cuda.get_device_name() if cuda else "cpu (interpreter)",
                "commit": os.environ.get("COMMIT", "unknown")}
        want = pb.ours()
        delta = pb.delta()
        if cuda:
            rows.append(_guarded({**base, "impl": "ours (triton, runs)"},
                                 lambda row: row.update(bwd_ms=_median_ms(pb.ours))))
            rows.append(_guarded({**base, "impl": "cudnn (autograd backward)"},
                                 lambda row: row.update(bwd_ms=pb.cudnn_backward_ms())))
            rows.append(_guarded({**base, "impl": "delta (torch)"},
                                 lambda row: row.update(bwd_ms=_median_ms(pb.delta))))
            save()
        # each half is checked and timed with the other half's first variant beside it
        for kind, variants in (("dkdv", dkdv_variants), ("dq", dq_variants)):
            for variant in variants:
                def probe(row, variant=variant, kind=kind):
                    dkdv = variant if kind == "dkdv" else dkdv_variants[0]
                    dq = variant if kind == "dq" else dq_variants[0]
                    got = pb.probe(dkdv, dq, delta)
                    pick = (1, 2) if kind == "dkdv" else (0,)
                    row["max_rel_err"] = _max_rel_err([got[i] for i in pick],
                                                      [want[i] for i in pick])
                    if row["max_rel_err"] > bound:
                        raise AssertionError(f"error {row['max_rel_err']:.3g} against ours")
                    if cuda:
                        row["bwd_ms"] = _median_ms(lambda: pb.probe(dkdv, dq, delta, kind))
                rows.append(_guarded({**base, "impl": "probe", "kernel": kind,
                                      "variant": variant[0]}, probe))
                save()  # a machine lost mid-run keeps what finished
    return 0


if __name__ == "__main__":
    sys.exit(main())
