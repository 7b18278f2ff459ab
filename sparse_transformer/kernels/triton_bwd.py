"""Triton backward kernels of block-sparse attention (FlashAttention-2 style, paper 5.2-5.5).

Two launches per component, none with atomics, so the backward is deterministic by
construction (every gradient element is written by one program per launch, summing in a fixed
order). One opt-in launch variant breaks that on purpose (``CONFIG["dkdv"]["atomic_dq"]``):
the dK/dV programs also add their share of dQ = scale * dS K into a float32 buffer, in
whatever order they run, and the dQ kernel is skipped, so QK^T and dO V^T are computed once
instead of twice. Natural-order components add each dQ tile with one TMA bulk reduce
(DQ_TMA, a tensor descriptor's ``atomic_add``), others element by element. On an H100 at
4 x 16,384 causal took 9.26 ms that way against 10.14 deterministic (cuDNN 8.73), fixed
3.42 against 3.31 (docs/kernels.md), so it is not the default.

* ``dq_kernel``: one program per (query tile, batch, head slot) of a component, walking the
  forward's query-side tile lists; first computes Delta_i = rowsum(dO_i * O_i) of its rows
  (it loads dO anyway) and stores it for the dK/dV launch, then recomputes P from the saved
  log-sum-exp and accumulates dQ = scale * dS K. Where the tables mark key tiles of its
  partial list as *owned* (read by this query tile alone: ``triton_attention._owned``, OWN),
  it also writes their dV = P^T dO and dK = scale * dS^T Q, and no dK/dV program has them;
* ``dkdv_kernel``: one program per (group of key tiles, batch, head slot), walking the
  *key-side* lists (``ComponentPlan.key_groups``: per group of key tiles, the query tiles
  that read them); accumulates dV = P^T dO and dK = scale * dS^T Q. Groups make the products
  wider than one 32-key tile: the fixed pattern's summary tiles of consecutive blocks, or
  causal's adjacent tiles, share one program and each query tile is read once for all;
* ``delta_kernel``: Delta alone, for the atomic-dQ variant (which runs no dQ kernel) and for
  benchmarks of the launch the dQ programs replaced (``CONFIG["dq"]["fused_delta"] = 0``).

dS = P * (dP - Delta). P is computed against the lse and O of the *whole* head, so a head
split over two components (strided "merge") needs nothing else: its attention is one softmax
over the union of two disjoint key sets, and each component's launch adds its keys' share. The
second component of such a head adds to the gradients the first one wrote (the slot's merge
flag); launches run in stream order, so this stays deterministic.

Addressing, head tables and the reordered positions of strided column heads are those of the
forward (``triton_fwd``): nothing is gathered or permuted outside the kernels.
"""

from __future__ import annotations

import triton
import triton.language as tl

from sparse_transformer.kernels.triton_fwd import (
    element_rule,
    gathered_keys,
    load_tile,
    memory_position,
    program_slot,
    program_tile,
    query_tile,
    read_run,
    walk_bounds,
)


@triton.jit
def delta_kernel(O, DO, DELTA, sob, soh, son, sdb, sdh, sdn, N, H, DV,
                 BLOCK: tl.constexpr, DVP: tl.constexpr):
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    pos = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    dv = tl.arange(0, DVP)
    mask = (pos[:, None] < N) & (dv[None, :] < DV)
    o = tl.load(O + b * sob + h * soh + pos[:, None] * son + dv[None, :], mask=mask, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + pos[:, None] * sdn + dv[None, :], mask=mask,
                 other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * N + pos, delta, mask=pos < N)


@triton.jit
def _dq_step(dq, q, do, lse2, delta, Kb, Vb, skn, svn, idx_ptr, first, step, start, count,
             rows, prm, scale_log2, N, D, DV, dk, dv, stride, groups, own_bits, DKb, DVb, sgkn,
             sgvn, scale,
             KB: tl.constexpr, GATHER: tl.constexpr, TAIL: tl.constexpr, MASKED: tl.constexpr,
             K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
             PREC: tl.constexpr, REORDER: tl.constexpr, LEAN: tl.constexpr,
             RUN: tl.constexpr, EXACT: tl.constexpr, OWN: tl.constexpr):
    """One gathered key tile of dQ; TAIL, MASKED, RUN and EXACT as in the forward's
    ``_fwd_step``. OWN: the slots whose bit is set in ``own_bits`` (entries of the partial
    list, ``triton_attention._owned``) are key tiles only this query tile reads: their dK and
    dV are complete here, so they are computed and stored here, and no dK/dV program has them."""
    kt, cols, pcol, valid, live = gathered_keys(Kb, skn, idx_ptr, first, step, start, count,
                                                dk, D, N, stride, groups, KB, GATHER, REORDER,
                                                RUN, EXACT)
    # s * scale - lse: one fused multiply-add per score
    p = tl.exp2(tl.dot(q, kt, input_precision=PREC) * scale_log2 - lse2[:, None])
    if TAIL or MASKED or not LEAN:
        ok = valid[None, :]
        if MASKED:
            ok = ok & element_rule(rows[:, None], cols[None, :], prm, K0, K1, K2, K3)
        p = tl.where(ok, p, 0.0)
    if OWN:
        slot = start + tl.arange(0, GATHER * KB) // KB
        own = live & (((own_bits >> slot) & 1) != 0)
        owns_any = ((own_bits >> start) & ((1 << GATHER) - 1)) != 0
        # dV = P^T dO first, stored before dP is formed: fewer live registers
        if owns_any:
            gdv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PREC)
            tl.store(DVb + pcol[:, None] * sgvn + dv[None, :], gdv.to(DVb.dtype.element_ty),
                     mask=own[:, None] & (dv[None, :] < DV))
    vt = load_tile(Vb + pcol[None, :] * svn + dv[:, None], (dv[:, None] < DV) & live[None, :],
                   EXACT)
    dp = tl.dot(do, vt, input_precision=PREC)
    ds = (p * (dp - delta[:, None])).to(kt.dtype)
    dq += tl.dot(ds, tl.trans(kt), input_precision=PREC)
    if OWN:
        if owns_any:  # dK = scale * dS^T Q
            gdk = tl.dot(tl.trans(ds), q, input_precision=PREC) * scale
            tl.store(DKb + pcol[:, None] * sgkn + dk[None, :], gdk.to(DKb.dtype.element_ty),
                     mask=own[:, None] & (dk[None, :] < D))
    return dq


@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, Kb, Vb, skn, svn, idx_ptr, count, rows, prm, scale_log2,
              N, D, DV, dk, dv, stride, groups, own_bits, DKb, DVb, sgkn, sgvn, scale,
              KB: tl.constexpr, GATHER: tl.constexpr, MASKED: tl.constexpr,
              K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
              PREC: tl.constexpr, REORDER: tl.constexpr, LEAN: tl.constexpr,
              RUN: tl.constexpr = False, EXACT: tl.constexpr = False, OWN: tl.constexpr = False):
    # The walk of the forward's ``_fwd_tiles``: a run (RUN), or whole gathers of a list and
    # then its remainder. OWN (the partial list only): see ``_dq_step``.
    first, step, count, whole = walk_bounds(idx_ptr, count, GATHER, LEAN, RUN)
    for start in range(0, whole, GATHER):
        dq = _dq_step(dq, q, do, lse2, delta, Kb, Vb, skn, svn, idx_ptr, first, step, start,
                      count, rows, prm, scale_log2, N, D, DV, dk, dv, stride, groups, own_bits,
                      DKb, DVb, sgkn, sgvn, scale, KB, GATHER, False, MASKED, K0, K1, K2, K3,
                      PREC, REORDER, LEAN, RUN, EXACT, OWN)
    if not RUN:
        if whole < count:
            dq = _dq_step(dq, q, do, lse2, delta, Kb, Vb, skn, svn, idx_ptr, 0, 0, whole, count,
                          rows, prm, scale_log2, N, D, DV, dk, dv, stride, groups, own_bits,
                          DKb, DVb, sgkn, sgvn, scale, KB, GATHER, True, MASKED, K0, K1, K2,
                          K3, PREC, REORDER, LEAN, False, False, OWN)
    return dq


@triton.jit
def dq_kernel(Q, K, V, O, DO, LSE, DELTA, DQ, DK, DVo, SLOT_HEAD, SLOT_CLASS, SLOT_MERGE,
              FC, FI, PC, PI, PRM, RUNS, OWNED,
              sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn, sob, soh, son,
              sgb, sgh, sgn, sgkb, sgkh, sgkn, sgvb, sgvh, sgvn,
              scale_log2, scale, N, H, Hc, D, DV, n_qt, fi_w, pi_w, prm_stride, stride, groups,
              QB: tl.constexpr, KB: tl.constexpr, GATHER: tl.constexpr,
              DP: tl.constexpr, DVP: tl.constexpr,
              K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
              PREC: tl.constexpr, REORDER: tl.constexpr, SLOTS_X: tl.constexpr,
              LEAN: tl.constexpr = True, FUSED_DELTA: tl.constexpr = False,
              RUN: tl.constexpr = False, EXACT: tl.constexpr = False,
              OWN: tl.constexpr = False):
    b, h, prm, merge, row, rows, prow, real, dk, dv, q = query_tile(
        Q, sqb, sqh, sqn, SLOT_HEAD, SLOT_CLASS, SLOT_MERGE, PRM, N, Hc, D, n_qt, prm_stride,
        stride, groups, QB, DP, DVP, REORDER, SLOTS_X)
    do = tl.load(DO + b * sdb + h * sdh + prow[:, None] * sdn + dv[None, :],
                 mask=real[:, None] & (dv[None, :] < DV), other=0.0)
    stat = (b * H + h) * N + prow
    lse = tl.load(LSE + stat, mask=real, other=0.0)
    # Rows with no allowed key (lse = -inf) get P = 0 from the mask; keep their lse finite.
    # Padded rows load dO = 0 and Delta = 0, so they contribute nothing anywhere.
    lse2 = tl.where(lse == float("-inf"), 0.0, lse * 1.4426950408889634)
    if FUSED_DELTA:
        # Delta = rowsum(dO * O) of these rows, here instead of a launch of its own, stored for
        # the dK/dV launch that follows. Every row of every head of this component has one dQ
        # program; a merged head's second component writes the same values again.
        o = tl.load(O + b * sob + h * soh + prow[:, None] * son + dv[None, :],
                    mask=real[:, None] & (dv[None, :] < DV), other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(DELTA + stat, delta, mask=real)
    else:
        delta = tl.load(DELTA + stat, mask=real, other=0.0)
    Kb = K + b * skb + h * skh
    Vb = V + b * svb + h * svh
    # where this program writes the dK, dV of the key tiles it alone reads (OWN)
    DKb = DK + b * sgkb + h * sgkh
    DVb = DVo + b * sgvb + h * sgvh
    own_bits = 0
    if OWN:
        own_bits = tl.load(OWNED + row)
    dq = tl.zeros([QB, DP], tl.float32)
    if RUN:  # the row's run of full key tiles (fwd_kernel's RUNS)
        dq = _dq_tiles(dq, q, do, lse2, delta, Kb, Vb, skn, svn, RUNS + row * 3, 0, rows, prm,
                       scale_log2, N, D, DV, dk, dv, stride, groups, own_bits, DKb, DVb, sgkn,
                       sgvn, scale, KB, GATHER, False, K0, K1, K2, K3, PREC, REORDER, LEAN, True,
                       EXACT)
    dq = _dq_tiles(dq, q, do, lse2, delta, Kb, Vb, skn, svn, FI + row * fi_w, tl.load(FC + row),
                   rows, prm, scale_log2, N, D, DV, dk, dv, stride, groups, own_bits, DKb, DVb,
                   sgkn, sgvn, scale, KB, GATHER, False, K0, K1, K2, K3, PREC, REORDER, LEAN)
    dq = _dq_tiles(dq, q, do, lse2, delta, Kb, Vb, skn, svn, PI + row * pi_w, tl.load(PC + row),
                   rows, prm, scale_log2, N, D, DV, dk, dv, stride, groups, own_bits, DKb, DVb,
                   sgkn, sgvn, scale, KB, GATHER, True, K0, K1, K2, K3, PREC, REORDER, LEAN,
                   False, False, OWN)
    dq = dq * scale
    g_ptr = DQ + b * sgb + h * sgh + prow[:, None] * sgn + dk[None, :]
    g_mask = real[:, None] & (dk[None, :] < D)
    if merge != 0:  # an earlier component of this head wrote its share
        dq += tl.load(g_ptr, mask=g_mask, other=0.0).to(tl.float32)
    tl.store(g_ptr, dq.to(DQ.dtype.element_ty), mask=g_mask)


@triton.jit
def _dkdv_tiles(dk_acc, dv_acc, k, v, Qb, DOb, STATb, DELTAb, DQAb, DQD, b, h, sqn, sdn, san,
                idx_ptr, first, step, count, cols, prm, scale_log2, scale, N, D, DV, dk, dv,
                stride, groups, QB: tl.constexpr, DP: tl.constexpr, MASKED: tl.constexpr,
                K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
                PREC: tl.constexpr, TRANS_ACC: tl.constexpr, REORDER: tl.constexpr,
                ATOMIC_DQ: tl.constexpr, DQ_TMA: tl.constexpr, RUN: tl.constexpr,
                EXACT: tl.constexpr):
    # The query tiles of the list at idx_ptr, or (RUN) the run first, first + step, ...: then
    # no load waits on a list entry; EXACT: no padded row, head dims powers of two, no masks.
    for t in range(0, count):
        if RUN:
            first_row = (first + t * step) * QB
        else:
            first_row = tl.load(idx_ptr + t) * QB
        rows = first_row + tl.arange(0, QB)
        prow = memory_position(rows, stride, groups, REORDER)
        real = prow < N
        q = load_tile(Qb + prow[:, None] * sqn + dk[None, :], real[:, None] & (dk[None, :] < D),
                      EXACT)
        do = load_tile(DOb + prow[:, None] * sdn + dv[None, :],
                       real[:, None] & (dv[None, :] < DV), EXACT)
        lse = load_tile(STATb + prow, real, EXACT)
        lse2 = tl.where(lse == float("-inf"), 0.0, lse * 1.4426950408889634)
        delta = load_tile(DELTAb + prow, real, EXACT)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale_log2  # [QB, KB]
        p = tl.exp2(s - lse2[:, None])
        if MASKED:
            p = tl.where(element_rule(rows[:, None], cols[None, :], prm, K0, K1, K2, K3), p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        if ATOMIC_DQ:  # this group's share of dQ = scale * dS K, added in float32 (any order)
            dq = tl.dot(ds.to(k.dtype), k, input_precision=PREC) * scale
            if DQ_TMA:
                # One bulk reduce-add of the whole [QB, D] tile by the TMA unit (Hopper's
                # cp.reduce.async.bulk), as FlashAttention-3 accumulates dQ: no per-element
                # atomic instructions; DQD is [B, N, H * D] float32, rows past N are clipped.
                DQD.atomic_add([b.to(tl.int32), first_row, h.to(tl.int32) * DP],
                               tl.reshape(dq, [1, QB, DP]))
            else:
                tl.atomic_add(DQAb + prow[:, None] * san + dk[None, :], dq,
                              mask=real[:, None] & (dk[None, :] < D), sem="relaxed")
        if TRANS_ACC:  # dV^T += dO^T P, dK^T += Q^T dS: M = head dim (>= 64 fills wgmma)
            dv_acc += tl.dot(tl.trans(do), p.to(do.dtype), input_precision=PREC)
            dk_acc += tl.dot(tl.trans(q), ds.to(q.dtype), input_precision=PREC)
        else:  # dV += P^T dO, dK += dS^T Q: M = KB (small key tiles)
            dv_acc += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PREC)
            dk_acc += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC)
    return dk_acc, dv_acc


@triton.jit
def dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DVo, DQA, DQD, SLOT_HEAD, SLOT_CLASS, SLOT_MERGE,
                KT, FC, FI, PC, PI, PRM, RUNS,
                sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdb, sdh, sdn,
                sgkb, sgkh, sgkn, sgvb, sgvh, sgvn, sab, sah, san,
                scale_log2, scale, N, H, Hc, D, DV, n_kg, fi_w, pi_w, prm_stride, stride, groups,
                QB: tl.constexpr, KB: tl.constexpr, KEY_TILES: tl.constexpr,
                DP: tl.constexpr, DVP: tl.constexpr,
                K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
                PREC: tl.constexpr, TRANS_ACC: tl.constexpr, REORDER: tl.constexpr,
                SLOTS_X: tl.constexpr, ATOMIC_DQ: tl.constexpr, DQ_TMA: tl.constexpr = False,
                RUN: tl.constexpr = False, EXACT: tl.constexpr = False):
    # One program per group of KEY_TILES key tiles of KB positions (ComponentPlan.key_groups:
    # not necessarily adjacent; -1 marks an empty slot). Groups are sorted longest list first.
    kg = program_tile(SLOTS_X)
    b, h, prm, c, merge = program_slot(SLOT_HEAD, SLOT_CLASS, SLOT_MERGE, PRM, Hc, prm_stride,
                                       SLOTS_X)
    row = c * n_kg + kg
    lane = tl.arange(0, KEY_TILES * KB)
    tile = tl.load(KT + row * KEY_TILES + lane // KB)
    cols = tile * KB + lane % KB
    pcol = memory_position(tl.maximum(cols, 0), stride, groups, REORDER)
    live = (tile >= 0) & (pcol < N)
    dk = tl.arange(0, DP)
    dv = tl.arange(0, DVP)
    k = tl.load(K + b * skb + h * skh + pcol[:, None] * skn + dk[None, :],
                mask=live[:, None] & (dk[None, :] < D), other=0.0)
    v = tl.load(V + b * svb + h * svh + pcol[:, None] * svn + dv[None, :],
                mask=live[:, None] & (dv[None, :] < DV), other=0.0)
    if TRANS_ACC:
        dk_acc = tl.zeros([DP, KEY_TILES * KB], tl.float32)
        dv_acc = tl.zeros([DVP, KEY_TILES * KB], tl.float32)
    else:
        dk_acc = tl.zeros([KEY_TILES * KB, DP], tl.float32)
        dv_acc = tl.zeros([KEY_TILES * KB, DVP], tl.float32)
    Qb = Q + b * sqb + h * sqh
    DOb = DO + b * sdb + h * sdh
    stat = (b * H + h) * N
    DQAb = DQA + b * sab + h * sah
    if RUN:  # the group's run of full query tiles (RUNS: int32 [groups, 3])
        first, count, step = read_run(RUNS + row * 3)
        dk_acc, dv_acc = _dkdv_tiles(dk_acc, dv_acc, k, v, Qb, DOb, LSE + stat, DELTA + stat,
                                     DQAb, DQD, b, h, sqn, sdn, san, RUNS, first, step, count,
                                     cols, prm, scale_log2, scale, N, D, DV, dk, dv, stride,
                                     groups, QB, DP, False, K0, K1, K2, K3, PREC, TRANS_ACC,
                                     REORDER, ATOMIC_DQ, DQ_TMA, True, EXACT)
    dk_acc, dv_acc = _dkdv_tiles(dk_acc, dv_acc, k, v, Qb, DOb, LSE + stat, DELTA + stat, DQAb,
                                 DQD, b, h, sqn, sdn, san, FI + row * fi_w, 0, 0,
                                 tl.load(FC + row), cols, prm, scale_log2, scale, N, D, DV, dk,
                                 dv, stride, groups, QB, DP, False, K0, K1, K2, K3, PREC,
                                 TRANS_ACC, REORDER, ATOMIC_DQ, DQ_TMA, False, False)
    dk_acc, dv_acc = _dkdv_tiles(dk_acc, dv_acc, k, v, Qb, DOb, LSE + stat, DELTA + stat, DQAb,
                                 DQD, b, h, sqn, sdn, san, PI + row * pi_w, 0, 0,
                                 tl.load(PC + row), cols, prm, scale_log2, scale, N, D, DV, dk,
                                 dv, stride, groups, QB, DP, True, K0, K1, K2, K3, PREC,
                                 TRANS_ACC, REORDER, ATOMIC_DQ, DQ_TMA, False, False)
    dk_acc = dk_acc * scale
    if TRANS_ACC:
        gk_ptr = DK + b * sgkb + h * sgkh + pcol[None, :] * sgkn + dk[:, None]
        gv_ptr = DVo + b * sgvb + h * sgvh + pcol[None, :] * sgvn + dv[:, None]
        gk_mask = live[None, :] & (dk[:, None] < D)
        gv_mask = live[None, :] & (dv[:, None] < DV)
    else:
        gk_ptr = DK + b * sgkb + h * sgkh + pcol[:, None] * sgkn + dk[None, :]
        gv_ptr = DVo + b * sgvb + h * sgvh + pcol[:, None] * sgvn + dv[None, :]
        gk_mask = live[:, None] & (dk[None, :] < D)
        gv_mask = live[:, None] & (dv[None, :] < DV)
    if merge != 0:  # an earlier component of this head wrote its share
        dk_acc += tl.load(gk_ptr, mask=gk_mask, other=0.0).to(tl.float32)
        dv_acc += tl.load(gv_ptr, mask=gv_mask, other=0.0).to(tl.float32)
    tl.store(gk_ptr, dk_acc.to(DK.dtype.element_ty), mask=gk_mask)
    tl.store(gv_ptr, dv_acc.to(DVo.dtype.element_ty), mask=gv_mask)
