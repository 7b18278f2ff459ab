"""Triton forward kernel of block-sparse attention over a plan's tile lists (paper 5.2-5.5).

One launch runs one *component* of a plan (``patterns/plan.py``): the heads of one position
order. One program computes one query tile of QB positions for one (batch, head slot):

* heads come from a head table (slot -> global head, per-head class, merge flag), so a
  component reads its heads straight out of the caller's q, k, v: no gather, no copy;
* q, k, v and the output are addressed through their strides, so the model's [B, N, H, D]
  projections are read as they are (a transposed view costs nothing);
* strided column heads run in the paper's reordered positions (5.5): component position r is
  memory position (r mod g) * l + r // g with g = n / l, computed in the index arithmetic
  (no permutation gathers, no inverse);
* positions at or past the caller's length N (the plan pads n up to its tile multiple) are
  masked in every load and store, so the caller pads nothing;
* a head computed by two components (strided "merge": window + column over disjoint keys) is
  merged by the second launch in its epilogue, exactly through the log-sum-exps:
  o = (e^{lse_1} o_1 + e^{lse_2} o_2) / (e^{lse_1} + e^{lse_2}).

The tile row is walked in up to three parts: its *run* of equally spaced full key tiles where
the component has one (RUN: positions from the loop counter, no list to load, and no load
masked where nothing is padded: EXACT), the rest of its *full* key tiles (every element
allowed: no element rule), then the *partial* ones (the rule is evaluated from the class's term
parameters; no mask is stored). Key tiles are small (KB = 16 or 32 positions, so the fixed pattern's c = 32 summary
columns are exact) and GATHER of them are loaded per iteration into one [GATHER * KB, D] tile,
so every product is at least QB x 64 x D and the tensor cores stay busy. Softmax is the online
(FlashAttention-2) form in base 2 with float32 accumulation; the program writes its output
rows and their natural-log log-sum-exp, which the backward needs.

At head dim 64 the per-score work beside the two products (scale, mask, max, exponent, sum)
costs as much as they do, so long rows take a *lean* loop (constexpr LEAN, chosen per
component by the host): the row maximum is taken over raw scores and the scale applied inside
the exponent (one fused multiply-add per score), and empty slots of a gather are masked only
in the last one. Short rows keep the single plain loop, whose few gathers pipeline better.

Term kinds (constexpr, ``KIND_*``) and the layout of their parameters (int32 [C, T, P],
``_P_*``: offset, window, group, period, lo, hi, stride) come from the kind table,
``patterns/kinds.py``; ``_term_ok`` is that table's ``holds`` in Triton.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # pragma: no cover - depends on the machine
    # Without CUDA, Triton can only run kernels through its interpreter, which it selects when
    # kernels are defined; set it before any @triton.jit below so the CPU tests can run them.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from sparse_transformer.patterns.kinds import KIND_NONE, KINDS, PARAMS  # noqa: E402

# Kernels read globals only as constexprs: the kind codes and the parameter layout, from the
# kind table.
KIND_WINDOW = tl.constexpr(KINDS["window"].code)
KIND_GROUP = tl.constexpr(KINDS["group"].code)
KIND_SUMMARY = tl.constexpr(KINDS["summary"].code)
KIND_STRIDE = tl.constexpr(KINDS["stride"].code)
_NO_TERM = tl.constexpr(KIND_NONE)
_N_PARAMS = tl.constexpr(len(PARAMS))
_P_OFFSET, _P_WINDOW, _P_GROUP, _P_PERIOD, _P_LO, _P_HI, _P_STRIDE = (
    tl.constexpr(PARAMS.index(name))
    for name in ("offset", "window", "group", "period", "lo", "hi", "stride"))
MAX_TERMS = 4
LOG2E = 1.4426950408889634


def _interpreter_numpy_shim() -> None:
    """Let Triton 3.6's interpreter use run-time loop bounds under numpy >= 2.4.

    The interpreter holds scalars as 1-element arrays and turns them into loop bounds with
    ``int(array)``, which numpy 2.4 refuses for arrays of ndim > 0 ("only 0-dimensional arrays
    can be converted"). This re-patches that one conversion; compiled (GPU) kernels are
    untouched.
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_numpy_shim", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._numpy_shim = True
    interpreter._patch_lang_tensor = patched


def _interpreter_descriptor_reduce_shim() -> None:
    """Give Triton's interpreter the tensor-descriptor reduce-add it lacks (3.6 and 3.9), so the
    CPU tests run the atomic-dQ backward's TMA path (``triton_bwd``, DQ_TMA) as the GPU does:
    the block's in-bounds elements are added with the interpreter's own float atomics
    (programs run one after another there, so the order is the only difference)."""
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if hasattr(builder, "create_descriptor_reduce"):
        return

    def create_descriptor_reduce(self, kind, desc, value, indices):
        if kind != ir.DESCRIPTOR_REDUCE_KIND.ADD:
            raise NotImplementedError(f"descriptor reduce {kind} in the interpreter")
        ptrs, mask = desc.materialize_pointers(indices)
        return self.create_atomic_rmw(ir.ATOMIC_OP.FADD, ptrs, value, mask,
                                      ir.MEM_SEMANTIC.RELAXED, None)

    builder.create_descriptor_reduce = create_descriptor_reduce


if os.environ.get("TRITON_INTERPRET") == "1":
    _interpreter_numpy_shim()
    _interpreter_descriptor_reduce_shim()


@triton.jit
def _term_ok(i, j, prm, T: tl.constexpr, KIND: tl.constexpr):
    """Element truth of term T of a class: i [R, 1] query positions, j [1, S] key positions."""
    d = i - j
    t = prm + T * _N_PARAMS
    ok = d >= tl.load(t + _P_OFFSET)
    if KIND == KIND_WINDOW:  # i - j < W
        ok = ok & (d < tl.load(t + _P_WINDOW))
    if KIND == KIND_GROUP:  # same block of G positions
        g = tl.load(t + _P_GROUP)
        ok = ok & ((i // g) == (j // g))
    if KIND == KIND_SUMMARY:  # lo <= j mod P < hi
        r = j % tl.load(t + _P_PERIOD)
        ok = ok & (r >= tl.load(t + _P_LO)) & (r < tl.load(t + _P_HI))
    if KIND == KIND_STRIDE:  # (i - j) mod S == 0 (d >= 0 wherever it matters: C-style % is fine)
        ok = ok & ((d % tl.load(t + _P_STRIDE)) == 0)
    return ok


@triton.jit
def element_rule(i, j, prm, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
                 K3: tl.constexpr):
    """OR of up to four terms (kinds K0..K3, KIND_NONE = absent)."""
    ok = _term_ok(i, j, prm, 0, K0)
    if K1 != _NO_TERM:
        ok = ok | _term_ok(i, j, prm, 1, K1)
    if K2 != _NO_TERM:
        ok = ok | _term_ok(i, j, prm, 2, K2)
    if K3 != _NO_TERM:
        ok = ok | _term_ok(i, j, prm, 3, K3)
    return ok


@triton.jit
def memory_position(r, stride, groups, REORDER: tl.constexpr):
    """Where component position r lives in memory: r, or (r mod g) * l + r // g (paper 5.5)."""
    if REORDER:
        return (r % groups) * stride + r // groups
    return r


@triton.jit
def gathered_columns(idx_ptr, first, step, start, count, KB: tl.constexpr,
                     GATHER: tl.constexpr, RUN: tl.constexpr):
    """Key positions of GATHER consecutive entries of a tile row, and which are real: entries
    start, start + 1, ... of the list at idx_ptr, or (RUN) of the run of tiles first,
    first + step, first + 2 * step, ..., which costs no load (``_runs`` in triton_attention)."""
    lane = tl.arange(0, GATHER * KB)
    slot = start + lane // KB
    valid = slot < count
    if RUN:
        tile = first + slot * step
    else:
        tile = tl.load(idx_ptr + slot, mask=valid, other=0)
    return tile * KB + lane % KB, valid


@triton.jit
def load_tile(ptrs, mask, EXACT: tl.constexpr):
    """A tile load; EXACT: every element is known to be in bounds, so none is masked."""
    if EXACT:
        return tl.load(ptrs)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def gathered_keys(Kb, skn, idx_ptr, first, step, start, count, dk, D, N, stride, groups,
                  KB: tl.constexpr, GATHER: tl.constexpr, REORDER: tl.constexpr,
                  RUN: tl.constexpr, EXACT: tl.constexpr):
    """The keys of GATHER consecutive entries of a query tile's list (or run), as a
    [D, GATHER * KB] tile (K transposed, zero where a slot is empty or past N), with their
    component positions, their memory positions, which slots are real and which are live (real
    and before N). EXACT (a run, no padded position, D a power of two): loads unmasked."""
    cols, valid = gathered_columns(idx_ptr, first, step, start, count, KB, GATHER, RUN)
    pcol = memory_position(cols, stride, groups, REORDER)
    live = valid & (pcol < N)
    kt = load_tile(Kb + pcol[None, :] * skn + dk[:, None], (dk[:, None] < D) & live[None, :],
                   EXACT)
    return kt, cols, pcol, valid, live


@triton.jit
def program_tile(SLOTS_X: tl.constexpr):
    """This program's tile (query tile, or key group) index along its grid axis.

    SLOTS_X: the grid is (batch x head slots, tiles), so the GPU starts the programs tile by
    tile across every head, the heaviest tile (0 here) of every head first; otherwise
    (tiles, batch x head slots), head by head, where the last head's heaviest program starts
    late and runs alone at the end (fixed: a few long summary programs per head)."""
    if SLOTS_X:
        return tl.program_id(1)
    return tl.program_id(0)


@triton.jit
def program_slot(SLOT_HEAD, SLOT_CLASS, SLOT_MERGE, PRM, Hc, prm_stride, SLOTS_X: tl.constexpr):
    """This program's (batch, global head, class params pointer, class, merge flag)."""
    if SLOTS_X:
        bh = tl.program_id(0)
    else:
        bh = tl.program_id(1)
    b = bh // Hc
    slot = bh % Hc
    h = tl.load(SLOT_HEAD + slot)
    c = tl.load(SLOT_CLASS + slot)
    merge = tl.load(SLOT_MERGE + slot)
    return b.to(tl.int64), h.to(tl.int64), PRM + c * prm_stride, c, merge


@triton.jit
def query_tile(Q, sqb, sqh, sqn, SLOT_HEAD, SLOT_CLASS, SLOT_MERGE, PRM, N, Hc, D, n_qt,
               prm_stride, stride, groups, QB: tl.constexpr, DP: tl.constexpr,
               DVP: tl.constexpr, REORDER: tl.constexpr, SLOTS_X: tl.constexpr):
    """Prologue of the forward and dQ programs: this program's query tile and its q rows.

    Returns (batch, head, class params, merge flag, row of the tile lists, component
    positions, their memory positions, which are real, head-dim ranges, the q tile). The
    heaviest (last) query tiles run first: causal-like rows grow with the tile index.
    """
    qt = n_qt - 1 - program_tile(SLOTS_X)
    b, h, prm, c, merge = program_slot(SLOT_HEAD, SLOT_CLASS, SLOT_MERGE, PRM, Hc, prm_stride,
                                       SLOTS_X)
    rows = qt * QB + tl.arange(0, QB)
    prow = memory_position(rows, stride, groups, REORDER)
    real = prow < N
    dk = tl.arange(0, DP)
    dv = tl.arange(0, DVP)
    q = tl.load(Q + b * sqb + h * sqh + prow[:, None] * sqn + dk[None, :],
                mask=real[:, None] & (dk[None, :] < D), other=0.0)
    return b, h, prm, merge, c * n_qt + qt, rows, prow, real, dk, dv, q


@triton.jit
def _fwd_step(acc, m_i, l_i, q, Kb, Vb, skn, svn, idx_ptr, first, step, start, count, rows, prm,
              scale_log2, N, D, DV, dk, dv, stride, groups,
              KB: tl.constexpr, GATHER: tl.constexpr, TAIL: tl.constexpr, MASKED: tl.constexpr,
              K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
              PREC: tl.constexpr, REORDER: tl.constexpr, LEAN: tl.constexpr,
              RUN: tl.constexpr, EXACT: tl.constexpr):
    """One gathered key tile of the online softmax. TAIL: fewer than GATHER entries are left,
    so the missing slots are masked; elsewhere every slot is real and nothing is selected
    unless the element rule applies (MASKED). RUN, EXACT: see ``gathered_keys``."""
    kt, cols, pcol, valid, live = gathered_keys(Kb, skn, idx_ptr, first, step, start, count,
                                                dk, D, N, stride, groups, KB, GATHER, REORDER,
                                                RUN, EXACT)
    s = tl.dot(q, kt, input_precision=PREC)
    if not LEAN:
        s = s * scale_log2
    if TAIL or MASKED or not LEAN:
        ok = valid[None, :]
        if MASKED:
            ok = ok & element_rule(rows[:, None], cols[None, :], prm, K0, K1, K2, K3)
        s = tl.where(ok, s, float("-inf"))
    if LEAN:
        # The scale is applied to the row maximum (scale > 0), and to the scores inside the
        # exponent, s * scale - m: one fused multiply-add per score instead of a multiply
        # and a subtraction.
        m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2)
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1))
    # Rows with nothing allowed yet keep m = -inf; use 0 there so no inf - inf appears.
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_use)
    if LEAN:
        p = tl.exp2(s * scale_log2 - m_use[:, None])
    else:
        p = tl.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = load_tile(Vb + pcol[:, None] * svn + dv[None, :], (dv[None, :] < DV) & live[:, None],
                  EXACT)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
    return acc, m_new, l_i


@triton.jit
def read_run(run_ptr):
    """A row's run of full tiles: (first, count, step), int32 at run_ptr (``_runs``)."""
    return tl.load(run_ptr), tl.load(run_ptr + 1), tl.load(run_ptr + 2)


@triton.jit
def walk_bounds(idx_ptr, count, GATHER: tl.constexpr, LEAN: tl.constexpr, RUN: tl.constexpr):
    """(first, step, count, whole) of the forward's and dQ's walk over a tile row: a run at
    idx_ptr (RUN; its count a multiple of GATHER), or count tiles listed at idx_ptr, whole
    gathers of them first where LEAN (the remainder is one masked step after)."""
    first = 0
    step = 0
    if RUN:
        first, count, step = read_run(idx_ptr)
    whole = count
    if LEAN and not RUN:
        whole = count - count % GATHER
    return first, step, count, whole


@triton.jit
def _fwd_tiles(acc, m_i, l_i, q, Kb, Vb, skn, svn, idx_ptr, count, rows, prm, scale_log2,
               N, D, DV, dk, dv, stride, groups,
               KB: tl.constexpr, GATHER: tl.constexpr, MASKED: tl.constexpr,
               K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
               PREC: tl.constexpr, REORDER: tl.constexpr, LEAN: tl.constexpr,
               RUN: tl.constexpr = False, EXACT: tl.constexpr = False):
    # RUN: idx_ptr is the row's run of full tiles (first, count, step; count a multiple of
    # GATHER, so no gather is ragged): key positions come from the loop counter, so no load
    # waits on a list entry and Triton pipelines the loop as a plain FlashAttention loop.
    # Otherwise idx_ptr is a list of count tiles. LEAN: whole gathers first, then the
    # remainder (if any) with its empty slots masked; otherwise one loop masks the empty slots
    # of every gather (the kernels before LEAN).
    first, step, count, whole = walk_bounds(idx_ptr, count, GATHER, LEAN, RUN)
    for start in range(0, whole, GATHER):
        acc, m_i, l_i = _fwd_step(acc, m_i, l_i, q, Kb, Vb, skn, svn, idx_ptr, first, step,
                                  start, count, rows, prm, scale_log2, N, D, DV, dk, dv,
                                  stride, groups, KB, GATHER, False, MASKED, K0, K1, K2, K3,
                                  PREC, REORDER, LEAN, RUN, EXACT)
    if not RUN:
        if whole < count:
            acc, m_i, l_i = _fwd_step(acc, m_i, l_i, q, Kb, Vb, skn, svn, idx_ptr, 0, 0, whole,
                                      count, rows, prm, scale_log2, N, D, DV, dk, dv, stride,
                                      groups, KB, GATHER, True, MASKED, K0, K1, K2, K3, PREC,
                                      REORDER, LEAN, False, False)
    return acc, m_i, l_i


@triton.jit
def fwd_kernel(Q, K, V, O, LSE, SLOT_HEAD, SLOT_CLASS, SLOT_MERGE, FC, FI, PC, PI, PRM, RUNS,
               sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
               scale_log2, N, H, Hc, D, DV, n_qt, fi_w, pi_w, prm_stride, stride, groups,
               QB: tl.constexpr, KB: tl.constexpr, GATHER: tl.constexpr,
               DP: tl.constexpr, DVP: tl.constexpr,
               K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr,
               PREC: tl.constexpr, REORDER: tl.constexpr, SLOTS_X: tl.constexpr,
               LEAN: tl.constexpr = True, RUN: tl.constexpr = False,
               EXACT: tl.constexpr = False):
    b, h, prm, merge, row, rows, prow, real, dk, dv, q = query_tile(
        Q, sqb, sqh, sqn, SLOT_HEAD, SLOT_CLASS, SLOT_MERGE, PRM, N, Hc, D, n_qt, prm_stride,
        stride, groups, QB, DP, DVP, REORDER, SLOTS_X)
    Kb = K + b * skb + h * skh
    Vb = V + b * svb + h * svh
    m_i = tl.full([QB], float("-inf"), tl.float32)
    l_i = tl.zeros([QB], tl.float32)
    acc = tl.zeros([QB, DVP], tl.float32)
    if RUN:  # RUNS: int32 [rows, 3], each row's run of full tiles (the list holds the rest)
        acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, Kb, Vb, skn, svn, RUNS + row * 3, 0, rows,
                                   prm, scale_log2, N, D, DV, dk, dv, stride, groups, KB,
                                   GATHER, False, K0, K1, K2, K3, PREC, REORDER, LEAN, True,
                                   EXACT)
    acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, Kb, Vb, skn, svn, FI + row * fi_w,
                               tl.load(FC + row), rows, prm, scale_log2, N, D, DV, dk, dv,
                               stride, groups, KB, GATHER, False, K0, K1, K2, K3, PREC, REORDER,
                               LEAN)
    acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, Kb, Vb, skn, svn, PI + row * pi_w,
                               tl.load(PC + row), rows, prm, scale_log2, N, D, DV, dk, dv,
                               stride, groups, KB, GATHER, True, K0, K1, K2, K3, PREC, REORDER,
                               LEAN)
    empty = l_i == 0.0  # rows with no allowed key: output 0, lse -inf
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse2 = m_i + tl.log2(tl.where(empty, 1.0, l_i))  # base-2 lse; natural = lse2 / log2(e)
    lse = tl.where(empty, float("-inf"), lse2 / 1.4426950408889634)
    o_ptr = O + b * sob + h * soh + prow[:, None] * son + dv[None, :]
    o_mask = real[:, None] & (dv[None, :] < DV)
    lse_ptr = LSE + (b * H + h) * N + prow
    if merge != 0:  # a previous launch wrote this head over a disjoint key set: combine
        lse_old = tl.load(lse_ptr, mask=real, other=float("-inf"))
        o_old = tl.load(o_ptr, mask=o_mask, other=0.0).to(tl.float32)
        top = tl.maximum(lse_old, lse)
        top = tl.where(top == float("-inf"), 0.0, top)
        w_old = tl.exp(lse_old - top)
        w_new = tl.exp(lse - top)
        total = w_old + w_new
        none = total == 0.0
        out = (o_old * w_old[:, None] + out * w_new[:, None]) / tl.where(none, 1.0, total)[:, None]
        lse = tl.where(none, float("-inf"), top + tl.log(tl.where(none, 1.0, total)))
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=o_mask)
    tl.store(lse_ptr, lse, mask=real)
