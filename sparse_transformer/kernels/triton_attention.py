"""``backend="triton"``: our block-sparse attention kernel behind a PyTorch custom op.

The dispatcher (``dispatch.py``) plans the pattern at ``block_sizes(...)``, gathers each
component's heads in the component's position order and calls ``run_component``. Here the
component's tile lists and term parameters become device tensors (cached on the ComponentPlan)
and the kernels of ``triton_fwd`` / ``triton_bwd`` run over them. The forward and backward are
registered as custom ops (``sparse_transformer::blocksparse_fwd`` / ``_bwd``) with fake
(meta) implementations and an autograd formula, so ``torch.compile`` traces models that use
them without graph breaks.

Supported: float16, bfloat16 and float32 inputs (float32 products run in full IEEE precision,
not tf32), head dims up to 256 (padded internally to a power of two >= 16; q/k and v head dims
may differ), any batch and head count, per-head classes. The backward never uses atomics, so
it is deterministic (``DETERMINISTIC``). On a machine without CUDA the kernels run in Triton's
interpreter (slow; for tests).
"""

from __future__ import annotations

import torch
import triton.language as tl

from sparse_transformer.kernels import triton_bwd, triton_fwd
from sparse_transformer.kernels.triton_fwd import KIND_CODES, LOG2E, MAX_TERMS
from sparse_transformer.patterns import ComponentPlan

# Triton runs kernels on CPU tensors only through its interpreter, and only if it was imported
# with TRITON_INTERPRET=1 (its own library functions, such as tl.zeros, are defined then too).
INTERPRETED = all(type(f).__name__ == "InterpretedFunction"
                  for f in (triton_fwd.fwd_kernel, tl.zeros))
DETERMINISTIC = True  # no atomics anywhere: every gradient element is written by one program
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Launch settings, overridable for benchmarking: name -> dict(gather=, num_warps=, num_stages=).
CONFIG: dict[str, dict[str, int]] = {}


def block_sizes(head_dim: int, dtype: torch.dtype, device: torch.device) -> tuple[int, int]:
    """(q_block, k_block) to plan with.

    Key tiles of 32 positions make the fixed pattern's c = 32 summary columns exact (paper 4.3)
    and are gathered several at a time in the kernel. Query tiles of 128 rows match stride
    l = 128 and give wide matrix products; float32 or wide heads use 64 rows to fit shared
    memory. The interpreter (CPU) uses small tiles: same code paths, less Python work.
    """
    if device.type != "cuda":
        return 32, 16
    if dtype == torch.float32 or head_dim > 128:
        return 64, 32
    return 128, 32


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _launch(name: str, dp: int, dtype: torch.dtype, qb: int, kb: int = 32) -> dict[str, int]:
    """Launch settings; defaults from the H200 tuning runs (benchmarks/NOTES.md, run 1).

    Forward / dQ: 2 gathered key tiles, 4 warps, 3 stages was best on the fixed pattern and
    within 9% of the best on causal (which prefers 4 tiles in the forward). dK/dV: 32-wide key
    tiles want 4 warps and transposed accumulators; grouped 128-wide key blocks want 8 warps.
    """
    cfg = {"gather": 2, "num_warps": 4, "num_stages": 3}
    if dp > 64 or dtype == torch.float32:
        cfg.update(num_stages=2)
    if name == "dkdv":
        if kb >= 64:
            cfg.update(num_warps=8, num_stages=3 if dp <= 64 else 2, trans_acc=1)
        else:
            cfg.update(num_warps=4, num_stages=2, trans_acc=1)
    cfg.update(CONFIG.get(name, {}))
    return cfg


class _Device:
    """Device tensors of one component: query/key-side tile lists, term params, kinds."""

    def __init__(self, cp: ComponentPlan, device: torch.device) -> None:
        kinds = [t.kind for t in cp.terms[0]]
        if len(kinds) > MAX_TERMS:
            raise ValueError(f"triton backend: a head ORs {len(kinds)} terms; at most "
                             f"{MAX_TERMS} are supported (use backend='torch')")
        if any([t.kind for t in terms] != kinds for terms in cp.terms):
            raise ValueError("triton backend: classes of one component must share term kinds")
        self.kinds = [KIND_CODES[k] for k in kinds] + [0] * (MAX_TERMS - len(kinds))
        params = torch.tensor([[t.as_tuple() for t in terms] for terms in cp.terms],
                              dtype=torch.int32)
        kfc, kfi, kpc, kpi = _group_key_tiles(*cp.key_side())
        i32 = dict(device=device, dtype=torch.int32)
        self.tensors = [x.to(**i32).contiguous() for x in (
            cp.head_class, cp.full_count, cp.full_index, cp.partial_count, cp.partial_index,
            kfc, kfi, kpc, kpi, params)]


def _group_key_tiles(fc, fi, pc, pi, max_group: int = 4):
    """Merge runs of consecutive key tiles whose key-side lists are identical (dK/dV only).

    Small key tiles make the dK/dV products skinny (M = k_block). Where every key tile of a
    group of g consecutive tiles is read by exactly the same query tiles with the same
    full/partial flags (causal, local and reordered-column plans with q_block = g * k_block),
    one program can take the g tiles at once with no extra work. The kernel infers the key
    block from the number of rows (N // rows). Groups are tried from ``max_group`` down.
    """
    C, n = fc.shape
    g = max_group
    while g > 1:
        if n % g == 0:
            same = True
            for x in (fc, fi, pc, pi):
                y = x.reshape(C, n // g, g, *x.shape[2:])
                same = same and bool((y == y[:, :, :1]).all())
            if same:
                return tuple(x.reshape(C, n // g, g, *x.shape[2:])[:, :, 0].contiguous()
                             for x in (fc, fi, pc, pi))
        g //= 2
    return fc, fi, pc, pi


def _device_plan(cp: ComponentPlan, device: torch.device) -> _Device:
    cache = cp.__dict__.setdefault("_triton_device", {})
    if device not in cache:
        cache[device] = _Device(cp, device)
    return cache[device]


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


@torch.library.custom_op("sparse_transformer::blocksparse_fwd", mutates_args=())
def blocksparse_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_class: torch.Tensor,
    fc: torch.Tensor, fi: torch.Tensor, pc: torch.Tensor, pi: torch.Tensor,
    kfc: torch.Tensor, kfi: torch.Tensor, kpc: torch.Tensor, kpi: torch.Tensor,
    params: torch.Tensor, kinds: list[int], q_block: int, k_block: int, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [B, Hc, N, Dv] (q's dtype), lse [B, Hc, N] float32; key-side lists are for backward."""
    B, Hc, N, D = q.shape
    DV = v.shape[-1]
    out = torch.empty(B, Hc, N, DV, device=q.device, dtype=q.dtype)
    lse = torch.empty(B, Hc, N, device=q.device, dtype=torch.float32)
    cfg = _launch("fwd", _pow2(max(D, DV)), q.dtype, q_block)
    n_qt = N // q_block
    triton_fwd.fwd_kernel[(n_qt, B * Hc)](
        q, k, v, out, lse, head_class, fc, fi, pc, pi, params,
        scale * LOG2E, N, Hc, D, DV, n_qt, fi.shape[-1], pi.shape[-1], params[0].numel(),
        QB=q_block, KB=k_block, GATHER=cfg["gather"], DP=_pow2(D), DVP=_pow2(DV),
        K0=kinds[0], K1=kinds[1], K2=kinds[2], K3=kinds[3], PREC=_prec(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out, lse


@blocksparse_fwd.register_fake
def _(q, k, v, head_class, fc, fi, pc, pi, kfc, kfi, kpc, kpi, params, kinds, q_block,
      k_block, scale):
    B, Hc, N, _ = q.shape
    return q.new_empty(B, Hc, N, v.shape[-1]), q.new_empty(B, Hc, N, dtype=torch.float32)


@torch.library.custom_op("sparse_transformer::blocksparse_bwd", mutates_args=())
def blocksparse_bwd(
    dout: torch.Tensor, dlse: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    out: torch.Tensor, lse: torch.Tensor, head_class: torch.Tensor,
    fc: torch.Tensor, fi: torch.Tensor, pc: torch.Tensor, pi: torch.Tensor,
    kfc: torch.Tensor, kfi: torch.Tensor, kpc: torch.Tensor, kpi: torch.Tensor,
    params: torch.Tensor, kinds: list[int], q_block: int, k_block: int, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) in the inputs' dtype, given d out and d lse."""
    dout = dout.contiguous()
    # Delta_i = rowsum(dO_i * O_i) - dLSE_i (the lse gradient enters here only).
    delta = ((dout.float() * out.float()).sum(-1) - dlse.float()).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    launch_dq(q, k, v, dout, lse, delta, dq, head_class, fc, fi, pc, pi, params, kinds,
              q_block, k_block, scale)
    launch_dkdv(q, k, v, dout, lse, delta, dk, dv, head_class, kfc, kfi, kpc, kpi, params, kinds,
                q_block, k_block, scale)
    return dq, dk, dv


def launch_dq(q, k, v, dout, lse, delta, dq, head_class, fc, fi, pc, pi, params, kinds,
              q_block, k_block, scale) -> None:
    """dQ over the query-side lists (one program per query tile and batch*head)."""
    B, Hc, N, D = q.shape
    DV = v.shape[-1]
    dp, dvp = _pow2(D), _pow2(DV)
    cfg = _launch("dq", max(dp, dvp), q.dtype, q_block)
    n_qt = N // q_block
    triton_bwd.dq_kernel[(n_qt, B * Hc)](
        q, k, v, dout, lse, delta, dq, head_class, fc, fi, pc, pi, params,
        scale * LOG2E, scale, N, Hc, D, DV, n_qt, fi.shape[-1], pi.shape[-1], params[0].numel(),
        QB=q_block, KB=k_block, GATHER=cfg["gather"], DP=dp, DVP=dvp,
        K0=kinds[0], K1=kinds[1], K2=kinds[2], K3=kinds[3], PREC=_prec(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )


def launch_dkdv(q, k, v, dout, lse, delta, dk, dv, head_class, kfc, kfi, kpc, kpi, params,
                kinds, q_block, k_block, scale) -> None:
    """dK, dV over the key-side lists (one program per key tile and batch*head)."""
    B, Hc, N, D = q.shape
    DV = v.shape[-1]
    dp, dvp = _pow2(D), _pow2(DV)
    cfg = _launch("dkdv", max(dp, dvp), q.dtype, q_block, N // kfc.shape[1])
    n_kt = kfc.shape[1]  # key tiles may be grouped (_group_key_tiles): block = N // rows
    triton_bwd.dkdv_kernel[(n_kt, B * Hc)](
        q, k, v, dout, lse, delta, dk, dv, head_class, kfc, kfi, kpc, kpi, params,
        scale * LOG2E, scale, N, Hc, D, DV, n_kt, kfi.shape[-1], kpi.shape[-1],
        params[0].numel(), QB=q_block, KB=N // n_kt, DP=dp, DVP=dvp,
        K0=kinds[0], K1=kinds[1], K2=kinds[2], K3=kinds[3], PREC=_prec(q.dtype),
        TRANS_ACC=bool(cfg["trans_acc"]),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )


@blocksparse_bwd.register_fake
def _(dout, dlse, q, k, v, out, lse, *rest):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, *plan = inputs[:13]
    ctx.kinds, ctx.q_block, ctx.k_block, ctx.scale = inputs[13:]
    ctx.save_for_backward(q, k, v, output[0], output[1], *plan)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, *plan = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    if dlse is None:
        dlse = torch.zeros_like(lse)
    dq, dk, dv = blocksparse_bwd(dout, dlse, q, k, v, out, lse, *plan, ctx.kinds,
                                 ctx.q_block, ctx.k_block, ctx.scale)
    return (dq, dk, dv) + (None,) * 14


blocksparse_fwd.register_autograd(_backward, setup_context=_setup_context)


def run_component(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cp: ComponentPlan, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one component (heads gathered, positions in ``cp``'s order).

    q, k: [B, Hc, N, D]; v: [B, Hc, N, Dv], N = cp.n_ctx (padded), same dtype (float16,
    bfloat16 or float32). Returns out [B, Hc, N, Dv] in that dtype and the natural-log
    log-sum-exp lse [B, Hc, N] in float32 (-inf for rows with no allowed key); both are
    differentiable.
    """
    if q.dtype not in _DTYPES:
        raise TypeError(f"triton backend: dtype {q.dtype} not supported; use float16, "
                        "bfloat16 or float32 (or backend='torch')")
    if q.shape[-1] > 256 or v.shape[-1] > 256:
        raise ValueError(f"triton backend: head dims up to 256, got {q.shape[-1]}/{v.shape[-1]}")
    if q.shape[2] != cp.n_ctx or q.shape[1] != len(cp.heads):
        raise ValueError(f"triton backend: got [B, Hc, N] = {tuple(q.shape[:3])}, the component "
                         f"expects Hc = {len(cp.heads)}, N = {cp.n_ctx}")
    if q.device.type != "cuda" and not INTERPRETED:
        raise ValueError("triton backend: CPU tensors need Triton's interpreter; set "
                         "TRITON_INTERPRET=1 before triton is first imported (or use CUDA)")
    dev = _device_plan(cp, q.device)
    if INTERPRETED and q.dtype == torch.bfloat16:
        # Triton 3.6's interpreter computes tl.dot wrongly on bfloat16 operands (numpy has no
        # bfloat16); run the same kernels on float32 copies and round the results back.
        out, lse = run_component(q.float(), k.float(), v.float(), cp, scale)
        return out.to(torch.bfloat16), lse
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return blocksparse_fwd(q, k, v, *dev.tensors, dev.kinds, cp.q_block, cp.k_block,
                           float(scale))


__all__ = ["block_sizes", "run_component", "blocksparse_fwd", "blocksparse_bwd",
           "DETERMINISTIC", "CONFIG"]
