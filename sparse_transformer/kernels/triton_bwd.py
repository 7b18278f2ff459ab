"""Triton backward kernels of block-sparse attention (FlashAttention-2 style, paper 5.2-5.4).

Two kernels, neither uses atomics, so the backward is deterministic by construction (every
output element is written once by one program, summing in a fixed order):

* ``dq_kernel``: one program per (query tile, batch*head), walking the same query-side tile
  lists as the forward (GATHER small key tiles per iteration); recomputes P from the saved
  log-sum-exp and accumulates dQ = scale * dS K.
* ``dkdv_kernel``: one program per (key tile, batch*head), walking the *key-side* lists
  (``ComponentPlan.key_side``: per key tile, the query tiles that read it); accumulates
  dV = P^T dO and dK = scale * dS^T Q.

With dS = P * (dP - Delta) and Delta_i = rowsum(dO_i * O_i) - dLSE_i: the dLSE term carries the
gradient of the log-sum-exp output, which the dispatcher uses to merge two components of one
head exactly (d lse_i / d s_ij = P_ij).
"""

from __future__ import annotations

import triton
import triton.language as tl

from sparse_transformer.kernels.triton_fwd import element_rule, gathered_columns, query_tile


@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, Kb, Vb, idx_ptr, count, rows, prm, scale_log2,
              D, DV, dk, dv,
              KB: tl.constexpr, GATHER: tl.constexpr, MASKED: tl.constexpr,
              K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
              PREC: tl.constexpr):
    for start in range(0, count, GATHER):
        cols, valid = gathered_columns(idx_ptr, start, count, KB, GATHER)
        kt = tl.load(Kb + cols[None, :] * D + dk[:, None], mask=dk[:, None] < D, other=0.0)
        s = tl.dot(q, kt, input_precision=PREC) * scale_log2
        ok = valid[None, :]
        if MASKED:
            ok = ok & element_rule(rows[:, None], cols[None, :], prm, K0, K1, K2, K3)
        p = tl.where(ok, tl.exp2(s - lse2[:, None]), 0.0)
        vt = tl.load(Vb + cols[None, :] * DV + dv[:, None], mask=dv[:, None] < DV, other=0.0)
        dp = tl.dot(do, vt, input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PREC)
    return dq


@triton.jit
def dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, HCLS, FC, FI, PC, PI, PRM,
              scale_log2, scale, N, Hc, D, DV, n_qt, fi_w, pi_w, prm_stride,
              QB: tl.constexpr, KB: tl.constexpr, GATHER: tl.constexpr,
              DP: tl.constexpr, DVP: tl.constexpr,
              K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
              PREC: tl.constexpr):
    _, row, prm, rows, dk, dv, base, q = query_tile(Q, HCLS, PRM, N, Hc, D, n_qt, prm_stride,
                                                     QB, DP, DVP)
    do = tl.load(DO + (base + rows[:, None]) * DV + dv[None, :], mask=dv[None, :] < DV,
                 other=0.0)
    lse = tl.load(LSE + base + rows)
    # Rows with no allowed key (lse = -inf) get P = 0 from the mask; keep their lse finite.
    lse2 = tl.where(lse == float("-inf"), 0.0, lse * 1.4426950408889634)
    delta = tl.load(DELTA + base + rows)
    dq = tl.zeros([QB, DP], tl.float32)
    dq = _dq_tiles(dq, q, do, lse2, delta, K + base * D, V + base * DV, FI + row * fi_w,
                   tl.load(FC + row), rows, prm, scale_log2, D, DV, dk, dv, KB, GATHER, False,
                   K0, K1, K2, K3, PREC)
    dq = _dq_tiles(dq, q, do, lse2, delta, K + base * D, V + base * DV, PI + row * pi_w,
                   tl.load(PC + row), rows, prm, scale_log2, D, DV, dk, dv, KB, GATHER, True,
                   K0, K1, K2, K3, PREC)
    tl.store(DQ + (base + rows[:, None]) * D + dk[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=dk[None, :] < D)


@triton.jit
def _dkdv_tiles(dk_acc, dv_acc, k, v, Qb, DOb, LSEb, DELTAb, idx_ptr, count, cols, prm,
                scale_log2, D, DV, dk, dv,
                QB: tl.constexpr, MASKED: tl.constexpr,
                K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
                PREC: tl.constexpr, TRANS_ACC: tl.constexpr):
    for t in range(0, count):
        rows = tl.load(idx_ptr + t) * QB + tl.arange(0, QB)
        q = tl.load(Qb + rows[:, None] * D + dk[None, :], mask=dk[None, :] < D, other=0.0)
        do = tl.load(DOb + rows[:, None] * DV + dv[None, :], mask=dv[None, :] < DV, other=0.0)
        lse = tl.load(LSEb + rows)
        lse2 = tl.where(lse == float("-inf"), 0.0, lse * 1.4426950408889634)
        delta = tl.load(DELTAb + rows)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale_log2  # [QB, KB]
        p = tl.exp2(s - lse2[:, None])
        if MASKED:
            p = tl.where(element_rule(rows[:, None], cols[None, :], prm, K0, K1, K2, K3), p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        if TRANS_ACC:  # dV^T += dO^T P, dK^T += Q^T dS: M = head dim (>= 64 fills wgmma)
            dv_acc += tl.dot(tl.trans(do), p.to(do.dtype), input_precision=PREC)
            dk_acc += tl.dot(tl.trans(q), ds.to(q.dtype), input_precision=PREC)
        else:  # dV += P^T dO, dK += dS^T Q: M = KB (small key tiles)
            dv_acc += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PREC)
            dk_acc += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC)
    return dk_acc, dv_acc


@triton.jit
def dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DVo, HCLS, FC, FI, PC, PI, PRM,
                scale_log2, scale, N, Hc, D, DV, n_kt, fi_w, pi_w, prm_stride,
                QB: tl.constexpr, KB: tl.constexpr, DP: tl.constexpr, DVP: tl.constexpr,
                K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
                PREC: tl.constexpr, TRANS_ACC: tl.constexpr):
    kt = tl.program_id(0)  # early key tiles are read by the most query tiles: first
    bh = tl.program_id(1)
    c = tl.load(HCLS + bh % Hc)
    prm = PRM + c * prm_stride
    cols = kt * KB + tl.arange(0, KB)
    dk = tl.arange(0, DP)
    dv = tl.arange(0, DVP)
    base = bh.to(tl.int64) * N
    k = tl.load(K + (base + cols[:, None]) * D + dk[None, :], mask=dk[None, :] < D, other=0.0)
    v = tl.load(V + (base + cols[:, None]) * DV + dv[None, :], mask=dv[None, :] < DV, other=0.0)
    if TRANS_ACC:
        dk_acc = tl.zeros([DP, KB], tl.float32)
        dv_acc = tl.zeros([DVP, KB], tl.float32)
    else:
        dk_acc = tl.zeros([KB, DP], tl.float32)
        dv_acc = tl.zeros([KB, DVP], tl.float32)
    row = c * n_kt + kt
    Qb, DOb, LSEb, DELTAb = Q + base * D, DO + base * DV, LSE + base, DELTA + base
    dk_acc, dv_acc = _dkdv_tiles(dk_acc, dv_acc, k, v, Qb, DOb, LSEb, DELTAb, FI + row * fi_w,
                                 tl.load(FC + row), cols, prm, scale_log2, D, DV, dk, dv, QB,
                                 False, K0, K1, K2, K3, PREC, TRANS_ACC)
    dk_acc, dv_acc = _dkdv_tiles(dk_acc, dv_acc, k, v, Qb, DOb, LSEb, DELTAb, PI + row * pi_w,
                                 tl.load(PC + row), cols, prm, scale_log2, D, DV, dk, dv, QB,
                                 True, K0, K1, K2, K3, PREC, TRANS_ACC)
    if TRANS_ACC:
        tl.store(DK + (base + cols[None, :]) * D + dk[:, None],
                 (dk_acc * scale).to(DK.dtype.element_ty), mask=dk[:, None] < D)
        tl.store(DVo + (base + cols[None, :]) * DV + dv[:, None],
                 dv_acc.to(DVo.dtype.element_ty), mask=dv[:, None] < DV)
    else:
        tl.store(DK + (base + cols[:, None]) * D + dk[None, :],
                 (dk_acc * scale).to(DK.dtype.element_ty), mask=dk[None, :] < D)
        tl.store(DVo + (base + cols[:, None]) * DV + dv[None, :],
                 dv_acc.to(DVo.dtype.element_ty), mask=dv[None, :] < DV)
