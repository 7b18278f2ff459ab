"""One decoding step of one head group's pattern-aware cache in one Triton launch (issue 19).

``LayerCache.step`` in torch is, per head group, about eight kernels: two scatters (the new key
and value into their slots), two gathers (the strided slots a query reads), q.k, softmax, a
cast and p.v. At batch 1 each is a few microseconds of GPU time on a few kilobytes, and a
12-layer step is ~400 such kernels (benchmarks/sampling.py --profile). This kernel does a
group's whole step in one program per (sample, head):

1. store the new key and value in the head's write slots (one per term region; positions a
   region does not keep go to the trash slot, as in ``kv_cache.write_slots``);
2. walk the slots the query reads (through the gather index for strided regions), q.k in
   fp32 plus the additive mask (0 or -inf, ``kv_cache.read_bias``), an online softmax, and p.v
   accumulated in fp32 (paper 5.6); a slot being written this step is read from the
   registers, not memory, so no ordering between the store and the loads is needed;
3. write the head's output where the model's head order puts it, so no concatenation or
   un-permutation follows.

A head reads a few hundred slots in strided patterns (~2 sqrt(n)) and thousands in fixed ones
(the block and every summary); reads longer than ``CHUNK`` are split over several programs
(flash-decoding) and a second launch combines them. The dense baseline cache, which reads every
position, keeps the torch path (cuBLAS), so benchmarks/sampling.py compares against the dense
cache at its best.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # pragma: no cover - depends on the machine
    os.environ.setdefault("TRITON_INTERPRET", "1")  # (see triton_fwd.py)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from sparse_transformer.kernels import triton_fwd  # noqa: E402,F401  (the interpreter shim)

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BLOCK_S = 64  # slots per loop iteration of a program
CHUNK = 512  # at most this many slots per program: longer reads are split (``cache_step``)


def pick_chunk(slots: int, programs: int, sms: int) -> int:
    """Slots per program for a read of ``slots`` per head by ``programs`` (sample, head) pairs
    on a GPU of ``sms`` multiprocessors: split until the launch fills the GPU, in whole
    ``BLOCK_S`` steps, never past ``CHUNK``. At batch 1 a strided head reads ~500 slots and a
    head group has 4-8 heads: unsplit, 4-8 programs walk 8 steps each while 130 SMs idle
    (17 us a launch on an H100); split 8 ways, each program takes one step."""
    splits = max(1, -(-sms // max(1, programs)))
    chunk = -(-slots // splits)
    chunk = -(-chunk // BLOCK_S) * BLOCK_S
    return min(CHUNK, max(BLOCK_S, chunk))


@triton.jit
def _cache_step_kernel(q_ptr, kn_ptr, vn_ptr, kb_ptr, vb_ptr, heads_ptr, slots_ptr, index_ptr,
                       bias_ptr, out_ptr, part_ptr, scale, S, R, CHUNK,
                       sqb, sqh, sqd, sknb, sknh, sknd, svnb, svnh, svnd,
                       skbb, skbh, skbs, skbd, svbb, svbh, svbs, svbd, sob, soh, sod,
                       HG: tl.constexpr, SPLITS: tl.constexpr, DK: tl.constexpr,
                       DV: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, GATHER: tl.constexpr):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // HG
    a = pid % HG  # the head's place in its group (its cache buffers' head index)
    h = tl.load(heads_ptr + a)  # the head's number in the model
    dk = tl.arange(0, BLOCK_DK)
    dv = tl.arange(0, BLOCK_DV)
    dk_ok = dk < DK
    dv_ok = dv < DV
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    slot = tl.load(slots_ptr + a * R + r, mask=r_ok, other=-1)
    k_new = tl.load(kn_ptr + b * sknb + h * sknh + dk * sknd, mask=dk_ok, other=0.0)
    v_new = tl.load(vn_ptr + b * svnb + h * svnh + dv * svnd, mask=dv_ok, other=0.0)
    kb = kb_ptr + b * skbb + a * skbh
    vb = vb_ptr + b * svbb + a * svbh
    if split == 0:  # the new key and value into every write slot of this head, once
        tl.store(kb + slot[:, None] * skbs + dk[None, :] * skbd,
                 (tl.zeros([BLOCK_R, BLOCK_DK], tl.float32) + k_new[None, :].to(tl.float32)
                  ).to(kb_ptr.dtype.element_ty), mask=r_ok[:, None] & dk_ok[None, :])
        tl.store(vb + slot[:, None] * svbs + dv[None, :] * svbd,
                 (tl.zeros([BLOCK_R, BLOCK_DV], tl.float32) + v_new[None, :].to(tl.float32)
                  ).to(vb_ptr.dtype.element_ty), mask=r_ok[:, None] & dv_ok[None, :])
    # Programs may read those slots before the stores land (other splits; no barrier orders
    # global memory across programs): a slot being written is taken from the registers.
    k_now = k_new.to(kb_ptr.dtype.element_ty).to(tl.float32)  # as stored: rounded
    v_now = v_new.to(vb_ptr.dtype.element_ty).to(tl.float32)

    q = tl.load(q_ptr + b * sqb + h * sqh + dk * sqd, mask=dk_ok, other=0.0).to(tl.float32)
    q = q * scale
    m_i = tl.max(tl.full([BLOCK_S], float("-inf"), tl.float32), axis=0)
    l_i = tl.sum(tl.zeros([BLOCK_S], tl.float32), axis=0)
    acc = tl.zeros([BLOCK_DV], tl.float32)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, S)
    for s0 in range(lo, hi, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        s_ok = s < hi
        if GATHER:
            j = tl.load(index_ptr + s, mask=s_ok, other=0)
        else:
            j = s
        fresh = tl.max((j[:, None] == slot[None, :]).to(tl.int32), axis=1) > 0  # [BLOCK_S]
        keys = tl.load(kb + j[:, None] * skbs + dk[None, :] * skbd,
                       mask=s_ok[:, None] & dk_ok[None, :], other=0.0).to(tl.float32)
        keys = tl.where(fresh[:, None], k_now[None, :], keys)
        bias = tl.load(bias_ptr + a * S + s, mask=s_ok, other=float("-inf"))
        scores = tl.sum(keys * q[None, :], axis=1) + bias
        m_new = tl.maximum(m_i, tl.max(scores, axis=0))
        # every slot so far masked: keep the sums at 0 rather than exp(-inf - -inf) = nan
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(scores - m_safe)
        vals = tl.load(vb + j[:, None] * svbs + dv[None, :] * svbd,
                       mask=s_ok[:, None] & dv_ok[None, :], other=0.0).to(tl.float32)
        vals = tl.where(fresh[:, None], v_now[None, :], vals)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * vals, axis=0)
        m_i = m_new
    if SPLITS == 1:
        out = acc / l_i  # the query always reads itself, so l_i > 0
        tl.store(out_ptr + b * sob + h * soh + dv * sod, out.to(out_ptr.dtype.element_ty),
                 mask=dv_ok)
    else:  # partial sums [m, l, acc...] for _combine_kernel
        part = part_ptr + (pid * SPLITS + split) * (BLOCK_DV + 2)
        tl.store(part, m_i)
        tl.store(part + 1, l_i)
        tl.store(part + 2 + dv, acc)


@triton.jit
def _combine_kernel(part_ptr, heads_ptr, out_ptr, sob, soh, sod, HG: tl.constexpr,
                    SPLITS: tl.constexpr, BLOCK_SPLITS: tl.constexpr, DV: tl.constexpr,
                    BLOCK_DV: tl.constexpr):
    """Softmax-weighted sum of the splits' partial results of one (sample, head)."""
    pid = tl.program_id(0)
    b = pid // HG
    h = tl.load(heads_ptr + pid % HG)
    sp = tl.arange(0, BLOCK_SPLITS)
    sp_ok = sp < SPLITS
    dv = tl.arange(0, BLOCK_DV)
    part = part_ptr + (pid * SPLITS + sp) * (BLOCK_DV + 2)
    m = tl.load(part, mask=sp_ok, other=float("-inf"))
    l = tl.load(part + 1, mask=sp_ok, other=0.0)
    acc = tl.load(part[:, None] + 2 + dv[None, :], mask=sp_ok[:, None], other=0.0)
    m_all = tl.max(m, axis=0)  # finite: some split reads the query's own slot
    w = tl.exp(m - m_all)  # 0 for a split whose slots were all masked
    out = tl.sum(w[:, None] * acc, axis=0) / tl.sum(w * l, axis=0)
    tl.store(out_ptr + b * sob + h * soh + dv * sod, out.to(out_ptr.dtype.element_ty),
             mask=dv < DV)


def check_support(dtype: torch.dtype, device: torch.device) -> None:
    """Refuse, when a cache is built, what the kernel cannot run."""
    if dtype not in DTYPES:
        raise TypeError(f"fused decoding: dtype {dtype} not supported; use float16, bfloat16 "
                        "or float32 (or fused=False)")
    interpreted = type(_cache_step_kernel).__name__ == "InterpretedFunction"
    if device.type != "cuda" and not interpreted:
        raise ValueError("fused decoding: CPU tensors need Triton's interpreter "
                         "(TRITON_INTERPRET=1 before triton is first imported) or CUDA")


def cache_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kb: torch.Tensor,
               vb: torch.Tensor, heads: torch.Tensor, slots: torch.Tensor,
               index: torch.Tensor | None, bias: torch.Tensor, scale: float,
               out: torch.Tensor, chunk: int | None = None) -> None:
    """One head group's step, in place: write k, v [B, H, 1, D] (all the model's heads; the
    group's are ``heads``, long [Hg]) into ``kb``/``vb`` [B, Hg, slots, D] at ``slots`` long
    [Hg, R], then attend q [B, H, 1, Dk] over the slots ``index`` [S] (None: slots 0..S-1)
    masked by ``bias`` float32 [Hg, S], writing ``out`` [B, H, 1, Dv] at the group's heads.

    Reads longer than ``chunk`` (default ``CHUNK``; ``pick_chunk`` sizes it to the GPU) slots
    are split over several programs per head (flash-decoding) and combined by a second launch:
    a head reads a few hundred slots in strided patterns but thousands in fixed ones (every
    summary), too many for one program at batch 1.
    """
    b, n_h = kb.shape[0], kb.shape[1]
    s = bias.shape[1]
    r = slots.shape[1]
    d_k, d_v = kb.shape[-1], vb.shape[-1]
    gather = index is not None
    chunk = CHUNK if chunk is None else chunk
    splits = triton.cdiv(s, chunk)
    block_dv = triton.next_power_of_2(d_v)
    part = (torch.empty(b * n_h * splits * (block_dv + 2), dtype=torch.float32,
                        device=q.device) if splits > 1 else out)
    _cache_step_kernel[(b * n_h, splits)](
        q, k, v, kb, vb, heads, slots, index if gather else slots, bias, out, part, scale, s, r,
        chunk, q.stride(0), q.stride(1), q.stride(3), k.stride(0), k.stride(1), k.stride(3),
        v.stride(0), v.stride(1), v.stride(3),
        kb.stride(0), kb.stride(1), kb.stride(2), kb.stride(3),
        vb.stride(0), vb.stride(1), vb.stride(2), vb.stride(3),
        out.stride(0), out.stride(1), out.stride(3),
        HG=n_h, SPLITS=splits, DK=d_k, DV=d_v, BLOCK_DK=triton.next_power_of_2(d_k),
        BLOCK_DV=block_dv, BLOCK_R=max(2, triton.next_power_of_2(r)), BLOCK_S=BLOCK_S,
        GATHER=gather, num_warps=4)
    if splits > 1:
        _combine_kernel[(b * n_h,)](part, heads, out, out.stride(0), out.stride(1),
                                    out.stride(3), HG=n_h, SPLITS=splits,
                                    BLOCK_SPLITS=max(2, triton.next_power_of_2(splits)),
                                    DV=d_v, BLOCK_DV=block_dv, num_warps=1)


__all__ = ["cache_step", "check_support", "pick_chunk", "DTYPES"]
