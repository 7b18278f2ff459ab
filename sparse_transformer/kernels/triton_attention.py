"""``backend="triton"``: the whole pattern as one PyTorch custom op over our Triton kernels.

``sparse_attention(q, k, v, prepared, scale)`` runs every component of the plan of the
pattern ``prepare`` was given (``patterns/plan.py``) and returns [B, H, N, Dv]. The launches (``forward_launches``,
``backward_launches``) are registered as two custom ops, ``sparse_transformer::
sparse_attention_fwd`` and ``_bwd``, with fake (meta) kernels and an autograd formula, so
``torch.compile`` traces a model through them with no graph break; an eager call runs the same
launches through a plain ``autograd.Function``, which skips the custom ops' Python dispatch
(hundreds of microseconds a call on an H200's host, benchmarks/host_cost.py). What makes one
call cheap on the host:

* inputs are read through their strides, so q, k, v sliced out of the model's fused qkv
  projection ([B, N, H, D] memory, viewed as [B, H, N, D]) are never copied; the output is
  written in [B, N, H, Dv] memory (returned as a [B, H, N, Dv] view), so the model's output
  projection reads it without a copy either; the packed ops (``sparse_attention_packed``,
  which the model calls) take that projection whole and write d(qkv) as one tensor, so
  nothing concatenates dq, dk and dv after the backward either;
* heads are taken through per-component head tables and strided column heads are reordered
  inside the kernels, so there are no gathers, permutations, restacks or merge ops around them;
* the plan and its device tables are built once, by ``prepare`` (which the model's forward
  state calls per layer pattern, ``model/state.py``), and handed to every call: the custom ops
  take them as tensor arguments, so nothing is looked up, parsed or planned per call and
  nothing waits on the device.

Each tile row's longest run of equally spaced full tiles is taken out of its list when the
tables are built (``_runs``), in components with long rows: the kernels walk it by position
arithmetic, as a plain FlashAttention loop would (fixed -15%, causal -14% per forward +
backward at 4 x 16,384 on an H100; docs/kernels.md). Key tiles that one query tile alone reads
(fixed's non-summary tiles) get their dK/dV from that tile's dQ program and leave the dK/dV
launch (``_owned``; fixed -4.6% at 4 x 16,384).

Per call: one forward launch per component (1 for fixed, 2 for strided), and in the backward
a dQ launch (which also computes Delta = rowsum(dO * O) of its rows) and a dK/dV launch per
component. A head computed by two components (strided "merge") is merged by the second
forward launch in its epilogue.

Supported: float16, bfloat16 and float32 inputs (float32 products in full IEEE precision, not
tf32), head dims up to 256 (padded inside the kernels to a power of two >= 16; q/k and v head
dims may differ), any batch, head count and length (the plan's padding is masked in the
kernels). The backward never uses atomics, so it is deterministic (``DETERMINISTIC``). On a
machine without CUDA the kernels run in Triton's interpreter (slow; for tests).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import triton.language as tl

try:  # tensor descriptors (TMA on Hopper): the atomic-dQ backward's bulk reduce
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - depends on the Triton version
    TensorDescriptor = None

from sparse_transformer.kernels import triton_bwd, triton_fwd
from sparse_transformer.kernels.dispatch import Prepared, unpack_qkv
from sparse_transformer.kernels.launcher import Launches
from sparse_transformer.kernels.triton_fwd import LOG2E, MAX_TERMS
from sparse_transformer.patterns import ComponentPlan, Pattern
from sparse_transformer.patterns.kinds import KIND_NONE

# Triton runs kernels on CPU tensors only through its interpreter, and only if it was imported
# with TRITON_INTERPRET=1 (its own library functions, such as tl.zeros, are defined then too).
INTERPRETED = all(type(f).__name__ == "InterpretedFunction"
                  for f in (triton_fwd.fwd_kernel, tl.zeros))
DETERMINISTIC = True  # no atomics anywhere: every gradient element is written in a fixed order
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Launch settings, overridable for benchmarking: name -> dict(gather=, num_warps=, num_stages=).
CONFIG: dict[str, dict[str, int]] = {}


def block_sizes(head_dim: int, dtype: torch.dtype, device: torch.device) -> tuple[int, int]:
    """(q_block, k_block) to plan with.

    Key tiles of 32 positions make the fixed pattern's c = 32 summary columns exact (paper 4.3)
    and are gathered several at a time in the kernel. Query tiles of 128 rows match stride
    l = 128 and give wide matrix products; float32 or wide heads use 64 rows to fit shared
    memory. The interpreter (CPU) uses small tiles: same code paths, less Python work.
    ``CONFIG["tiles"]`` (``q_block``, ``k_block``; powers of two >= 16) overrides them for
    benchmarks: at 128-row query tiles the 4-warp forward and dQ spill registers
    (``benchmarks/ptxas_usage.py``), which 64-row tiles would not; read when tables are built.
    """
    if device.type != "cuda":
        sizes = (32, 16)
    elif dtype == torch.float32 or head_dim > 128:
        sizes = (64, 32)
    else:
        sizes = (128, 32)
    tiles = CONFIG.get("tiles", {})
    return tiles.get("q_block", sizes[0]), tiles.get("k_block", sizes[1])


def short_row_q_block(q_block: int) -> int:
    """Query-tile rows of the forward and dQ launches of components whose rows are short
    (``_long_rows``: local and strided, not fixed or causal), under dK/dV lists that keep
    ``q_block``-row tiles. Off by default (``q_block``); ``CONFIG["tiles"]["short_q_block"]``
    (e.g. 64) turns it on, for benchmarks.

    Short rows give a 128-row program few key tiles to walk, so half-height tiles double the
    programs at the same work per row. On an H100 at 2 x 12,288, one forward + backward:
    strided split 0.443 -> 0.418 ms, local 0.428 -> 0.382, strided merge 0.849 -> 0.797; in
    the enwik8 step's profile the attention kernels went 11.73 -> 11.05 ms of device time.
    But the step itself (compile + CUDA graphs) did not get faster: four processes in turn,
    off / on / off / on, ran strided split at 58.7, 60.1, 59.5 and 59.5 ms (benchmarks/NOTES.md,
    6 Dec, eleventh session), so the default stays one tile height.
    Query tiles of 64 rows in every launch (``CONFIG["tiles"]["q_block"]``) made every dK/dV
    and fixed's and causal's every kernel slower, hence the height per launch and component.
    """
    return int(CONFIG.get("tiles", {}).get("short_q_block", q_block))


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _launch(name: str, dp: int, dtype: torch.dtype, kb: int = 32, skewed: bool = False
            ) -> dict[str, int]:
    """Launch settings; defaults from the H200 tuning runs (benchmarks/NOTES.md, run 1) and the
    H100 runs of ``benchmarks/kernel_stages.py`` (NOTES.md, 5 Dec, fifth session).

    Forward / dQ: 2 gathered key tiles, 4 warps, 3 stages was best on the fixed pattern and
    within 9% of the best on causal (which prefers 4 tiles in the forward). dK/dV: 32-wide key
    tiles want 4 warps and transposed accumulators; grouped 128-wide key blocks want 8 warps.

    Lean loops (``lean``; ``_lean``): 0 never, 1 where a component's rows are long (the
    default), 2 always. ``fused_delta`` (dQ): 1 (the default) the dQ programs compute Delta,
    0 a launch of its own does, as before the ninth session (on an H100 the fused form was
    0-2.4% faster per forward + backward, benchmarks/NOTES.md).

    Grid order (``slots_x``, see ``_grid``): forward and dQ start the heaviest query tile of
    every head first (fixed -10%, causal -12% at 2 x 12,288 on an H100, the rest unchanged).
    dK/dV does so only where its work is ``skewed`` (a few long programs per head, as fixed's
    summary groups: with them 0.653 -> 0.558 ms); for causal's even spread it cost up to 10%,
    as every program then streams another head's q and dO through L2.
    """
    cfg = {"gather": 2, "num_warps": 4, "num_stages": 3, "slots_x": 1, "lean": 1,
           "fused_delta": 1}
    if dp > 64 or dtype == torch.float32:
        cfg.update(num_stages=2)
    if name == "dkdv":
        cfg["slots_x"] = int(skewed)
        if kb >= 64:
            cfg.update(num_warps=8, num_stages=3 if dp <= 64 else 2, trans_acc=1)
        else:
            cfg.update(num_warps=4, num_stages=2, trans_acc=1)
    cfg.update(CONFIG.get(name, {}))
    return cfg


def _grid(tiles: int, slots: int, cfg: dict[str, int]) -> tuple[tuple[int, int], bool]:
    """The launch grid of ``program_tile`` / ``program_slot`` (triton_fwd) and its SLOTS_X.

    Heads on x and tiles on y where CUDA's y limit (65,535) allows it."""
    slots_x = bool(cfg["slots_x"]) and tiles <= 65535
    return ((slots, tiles) if slots_x else (tiles, slots)), slots_x


# -- device tables ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentTables:
    """One component's launch: head table, tile lists and term parameters on one device."""

    slot_head: torch.Tensor  # int32 [Hc]: global head of each slot
    slot_class: torch.Tensor  # int32 [Hc]: class (row of the tile lists) of each slot
    slot_merge: torch.Tensor  # int32 [Hc]: 1 where an earlier component wrote this head
    query_side: tuple[torch.Tensor, ...]  # full count/index, partial count/index [C, n_qt, .]
    key_tiles: torch.Tensor  # int32 [C, n_key_groups, g]: key tiles of each dK/dV program
    key_side: tuple[torch.Tensor, ...]  # the same as query_side per key group, listing query tiles
    params: torch.Tensor  # int32 [C, T, len(kinds.PARAMS)]
    # int32 [C, n_qt, 3] and [C, n_key_groups, 3]: each row's run of full tiles (first, count,
    # step), taken out of its full list (``_runs``); all zero where ``runs`` is 0
    query_runs: torch.Tensor
    key_runs: torch.Tensor
    # int32 [C, n_qt]: bit s set where entry s of the row's partial list is a key tile that
    # only this query tile reads, so its dQ program writes that tile's dK, dV (``_owned``)
    query_owned: torch.Tensor
    kinds: tuple[int, int, int, int]
    n_slots: int
    n_query_tiles: int
    n_key_groups: int  # dK/dV programs per head (each takes g = key_tiles.shape[-1] tiles)
    key_skewed: int  # 1: a few dK/dV programs per head hold most of the work (_skewed)
    long_rows: int  # 1: query tiles walk long lists: forward and dQ take the lean loop (_lean)
    stride: int  # 0: natural order; l: reordered by stride l
    groups: int  # n_pad // l (1 in natural order)
    q_block: int  # rows of query_side's tiles (forward, dQ); key_side's: PlanTables.q_block
    runs: int  # 1: the kernels walk query_runs / key_runs before the lists (RUN constexpr)
    owns: int  # 1: query_owned has bits; dK/dV groups leave those tiles out (OWN constexpr)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.slot_head, self.slot_class, self.slot_merge, *self.query_side,
                self.key_tiles, *self.key_side, self.params, self.query_runs, self.key_runs,
                self.query_owned)

    def ints(self) -> tuple[int, ...]:
        return (*self.kinds, self.n_slots, self.n_query_tiles, self.n_key_groups,
                self.key_skewed, self.long_rows, self.stride, self.groups, self.q_block,
                self.runs, self.owns)


_TENSORS, _INTS = 16, 14  # per component, in the order of ``tensors()`` and ``ints()``
# The compiled path (the custom ops below, which torch.compile calls) rebuilds its tables from
# their flat form on every call, so it cannot keep a per-plan cache: it launches through this
# one. Sharing is safe because a launch key holds every argument Triton specializes on by value
# (kernels/launcher.py), not the plan it came from; the limit covers a few dozen plans.
SHARED_LAUNCHES = Launches(limit=512, enabled=not INTERPRETED)


@dataclass(frozen=True)
class PlanTables:
    """Every component of one plan, in launch order, on one device.

    ``q_block`` is the rows of the query tiles the dK/dV launches list (``key_side``); a
    component's forward and dQ launches may take narrower tiles (``ComponentTables.q_block``,
    ``short_row_q_block``).

    ``flat`` is the same as the custom ops take it: (tensors, ints), since a custom op's
    arguments are tensors, numbers and lists of them; ``unflatten`` undoes it.
    """

    n_pad: int
    q_block: int
    k_block: int
    components: tuple[ComponentTables, ...]
    # The compiled kernels these tables were launched with, called past Triton's per-call
    # Python (kernels/launcher.py): the plan's own, or SHARED_LAUNCHES for the custom ops'
    # unflattened copies; None: Triton's path.
    launches: Launches | None = field(default=None, compare=False, repr=False)

    @property
    def flat(self) -> tuple[list[torch.Tensor], list[int]]:
        tensors = [t for c in self.components for t in c.tensors()]
        ints = [self.n_pad, self.q_block, self.k_block]
        ints += [i for c in self.components for i in c.ints()]
        return tensors, ints

    @classmethod
    def unflatten(cls, tensors: list[torch.Tensor], ints: list[int]) -> "PlanTables":
        """The tables the custom ops were handed, launching through ``SHARED_LAUNCHES``."""
        comps = []
        for k in range(len(tensors) // _TENSORS):
            t = tensors[k * _TENSORS:(k + 1) * _TENSORS]
            i = ints[3 + k * _INTS:3 + (k + 1) * _INTS]
            comps.append(ComponentTables(t[0], t[1], t[2], tuple(t[3:7]), t[7], tuple(t[8:12]),
                                         t[12], t[13], t[14], t[15], tuple(i[:4]), *i[4:]))
        return cls(ints[0], ints[1], ints[2], tuple(comps), launches=SHARED_LAUNCHES)


@dataclass(eq=False)
class TritonAttention(Prepared):
    """``backend="triton"`` prepared: the plan's device tables (and the ops' flat form)."""

    tables: PlanTables | None = None
    flat: tuple[list[torch.Tensor], list[int]] = ((), ())
    upcast: bool = False  # bfloat16 in Triton's interpreter: run float32 copies (see below)


# Grouping unlike key tiles pays where it adds little padding: fixed's summary groups (5%
# more tile products) took dK/dV from 0.600 to 0.558 ms at 2 x 12,288 on an H100 (heaviest
# tiles first), while the strided column's pairs (20% more) cost 16%
# (benchmarks/kernel_stages.py, NOTES.md).
MAX_GROUP_OVERHEAD = 1.1


def key_group_limit(q_block: int, k_block: int) -> int:
    """Most key tiles one dK/dV program takes (``ComponentPlan.key_groups``): a query tile's
    width of keys (128 = 4 x 32 on CUDA at head dims <= 128; CONFIG["dkdv"]["key_tiles"])."""
    return int(CONFIG.get("dkdv", {}).get("key_tiles", max(1, q_block // k_block)))


def _key_groups(cp: ComponentPlan, skip: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
    """The component's dK/dV groups, without the ``skip`` tiles; CONFIG["dkdv"]["max_overhead"]
    = 1.0 groups only tiles that add no work (what the kernels did before groups of unlike
    tiles, for benchmarks)."""
    overhead = CONFIG.get("dkdv", {}).get("max_overhead", MAX_GROUP_OVERHEAD)
    return cp.key_groups(key_group_limit(cp.q_block, cp.k_block), overhead, skip)


def _skewed(key_side: list[torch.Tensor], ratio: float = 4.0) -> bool:
    """Whether the longest dK/dV program of a head walks over ``ratio`` times the mean list:
    fixed's summary groups (~9x at 12,288 positions), not causal's (2x) or local's (1x)."""
    lengths = (key_side[0] + key_side[2]).float()
    lengths = lengths[lengths > 0]
    return bool(lengths.numel()) and float(lengths.max()) > ratio * float(lengths.mean())


# Query tiles of at least this many key tiles on average take the lean forward and dQ loops
# (``triton_fwd._fwd_tiles``): on an H100 they cut fixed's kernels 3% and causal's 5%, but
# cost strided split's short rows 4% (benchmarks/kernel_stages.py, NOTES.md, 5 Dec, seventh
# session), whose few gathers lose more to the split loop than the leaner scores save.
LEAN_MIN_TILES = 16


def _long_rows(cp: ComponentPlan) -> bool:
    """Whether the component's query tiles read ``LEAN_MIN_TILES`` key tiles or more, on
    average over those that read any: fixed (~50 at 12,288 positions) and causal (~190) do,
    local and strided (~5) do not."""
    lengths = (cp.full_count + cp.partial_count).float()
    lengths = lengths[lengths > 0]
    return bool(lengths.numel()) and float(lengths.mean()) >= LEAN_MIN_TILES


def _lean(cfg: dict[str, int], c: "ComponentTables") -> bool:
    """The LEAN constexpr of a forward or dQ launch: CONFIG's "lean" 0 never, 2 always,
    1 (the default) where the component's rows are long."""
    return cfg["lean"] == 2 or (cfg["lean"] == 1 and bool(c.long_rows))


def runs_mode() -> int:
    """``CONFIG["tiles"]["runs"]``: 0 no runs, 1 (the default) runs in long-row components
    (``_long_rows``: fixed, causal), 2 in every component. Read when tables are built."""
    return int(CONFIG.get("tiles", {}).get("runs", 1))


def _runs(count: torch.Tensor, index: torch.Tensor, unit: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Take each row's longest run of equally spaced tiles out of its full list.

    ``count`` int32 [C, R] and ``index`` [C, R, M] are sorted tile lists (``ComponentPlan``).
    A run -- tiles first, first + step, ..., count of them, cut to a multiple of ``unit`` (the
    kernels' gather) -- lets a kernel compute its tiles' positions from the loop counter instead
    of loading each from the list, which is what kept our causal forward 35% behind a plain
    Triton one (benchmarks/attention_ceiling.py; NOTES.md, twelfth session). Causal's and
    local's rows are one run of step 1; fixed's summary tiles one of step l / k_block.

    Returns (runs int32 [C, R, 3] of (first, count, step), zero where a row has none; the
    remaining count and index, narrowed to the longest remaining row).
    """
    cnt, idx = count.numpy(), index.numpy()
    C, R = cnt.shape
    runs = np.zeros((C, R, 3), dtype=np.int32)
    rest = [[idx[c, r, :cnt[c, r]] for r in range(R)] for c in range(C)]
    for c in range(C):
        for r in range(R):
            tiles = rest[c][r]
            if tiles.size < max(unit, 2):
                continue
            step = np.diff(tiles)
            # maximal segments of equal steps: entries [lo, hi] of each
            cut = np.flatnonzero(step[1:] != step[:-1]) + 1
            lo = np.concatenate(([0], cut))
            hi = np.concatenate((cut, [step.size]))  # segment of steps lo..hi-1: entries lo..hi
            best = int(np.argmax(hi - lo))
            n = (int(hi[best] - lo[best]) + 1) // unit * unit
            if n < max(unit, 2):
                continue
            start = int(lo[best])
            runs[c, r] = (tiles[start], n, step[start])
            rest[c][r] = np.concatenate((tiles[:start], tiles[start + n:]))
    new_count = np.array([[t.size for t in row] for row in rest], dtype=np.int32).reshape(C, R)
    new_index = np.zeros((C, R, max(1, int(new_count.max(initial=0)))), dtype=np.int32)
    for c in range(C):
        for r in range(R):
            new_index[c, r, :new_count[c, r]] = rest[c][r]
    return torch.from_numpy(runs), torch.from_numpy(new_count), torch.from_numpy(new_index)


def _run_unit() -> int:
    """The multiple a query-side run's length is cut to: the forward's and dQ's gathers (powers
    of two), so the run loops never take a partial gather."""
    return max(_launch(name, 64, torch.bfloat16)["gather"] for name in ("fwd", "dq"))


# Components where the dQ programs' own tiles are at least this share of the key tiles take
# them (``own_mode`` 1): fixed's three non-summary tiles of every block (3/4).
OWN_MIN_SHARE = 0.25


def own_mode() -> int:
    """``CONFIG["tiles"]["own"]``: 0 never; 1 (the default) in natural-order components where
    owned tiles are at least ``OWN_MIN_SHARE`` of the key tiles (fixed); 2 wherever there are
    any. Strided's reordered column components have many (each residue class is a short causal
    block) but have not been timed with them, so the default leaves them out; the ninth
    session's form of this change gained on strided split at 4 x 16,384 and lost at 65,536 x 1.
    Always 0 under ``CONFIG["dkdv"]["atomic_dq"]``, which runs no dQ kernel. Read when tables
    are built."""
    if CONFIG.get("dkdv", {}).get("atomic_dq"):
        return 0
    return int(CONFIG.get("tiles", {}).get("own", 1))


def _owned(cp: ComponentPlan, merge: list[int], same_rows: bool
           ) -> tuple[np.ndarray, torch.Tensor] | None:
    """The key tiles whose dK and dV the dQ programs write, or None.

    A key tile read by a single query tile, and partially (a diagonal tile), has one program
    in the whole backward that sees all of its scores: that query tile's dQ program, which
    computes P and dS over it anyway. Two more products there (dV = P^T dO, dK = dS^T Q) and
    one store replace a dK/dV program of one query tile, whose prologue and epilogue cost more
    than its single step: fixed's three non-summary tiles of every block, 128 of its 160 dK/dV
    programs per head at 16,384 positions.

    Only where the dQ launch walks the dK/dV lists' query tiles (``same_rows``), no slot adds to
    a head an earlier component wrote (merge), and every partial list fits an int32 bitmask.

    Returns (owned bool [C, n_key_tiles], bits int32 [C, n_qt]: bit s of a row set where entry
    s of its partial list is owned).
    """
    mode = own_mode()
    if mode == 0 or not same_rows or any(merge) or int(cp.partial_count.numpy().max(initial=0)) > 31:
        return None
    fc, _, pc, pi = (x.numpy() for x in cp.key_side())
    owned = (fc == 0) & (pc == 1)
    if not owned.any() or (mode == 1 and (cp.order or owned.mean() < OWN_MIN_SHARE)):
        return None
    qc, qi = cp.partial_count.numpy(), cp.partial_index.numpy()
    C, R = qc.shape
    bits = np.zeros((C, R), dtype=np.int64)
    for c in range(C):
        for r in range(R):
            for s_, tile in enumerate(qi[c, r, :qc[c, r]]):
                if owned[c, tile]:
                    assert pi[c, tile, 0] == r  # the one query tile that reads it
                    bits[c, r] |= 1 << s_
    return owned, torch.from_numpy(bits.astype(np.int32))


def _component_tables(cp: ComponentPlan, merge: list[int], device: torch.device,
                      query_cp: ComponentPlan | None = None) -> ComponentTables:
    """``cp``'s tables; the forward and dQ launches' (query side) from ``query_cp``, the same
    component planned with narrower query tiles, where given."""
    query_cp = query_cp or cp
    kinds = [t.rules for t in cp.terms[0]]
    if len(kinds) > MAX_TERMS:
        raise ValueError(f"triton backend: a head ORs {len(kinds)} terms; at most "
                         f"{MAX_TERMS} are supported (use backend='torch')")
    if any([t.rules for t in terms] != kinds for terms in cp.terms):
        raise ValueError("triton backend: classes of one component must share term kinds")
    codes = tuple([k.code for k in kinds] + [KIND_NONE] * (MAX_TERMS - len(kinds)))
    params = torch.tensor([[t.as_tuple() for t in terms] for terms in cp.terms],
                          dtype=torch.int32)
    own = _owned(cp, merge, query_cp is cp)
    key_tiles, *key_side = _key_groups(cp, own and own[0])
    query_side = [query_cp.full_count, query_cp.full_index, query_cp.partial_count,
                  query_cp.partial_index]
    # skew as before the owned tiles left (fixed's one-step programs kept it skewed): the grid
    # order measured with them (NOTES.md, fifth session)
    long_rows = _long_rows(query_cp)
    skewed = _skewed(list(cp.key_side()) if own else key_side)
    query_owned = own[1] if own else torch.zeros(cp.partial_count.shape, dtype=torch.int32)
    mode = runs_mode()
    runs = mode == 2 or (mode == 1 and long_rows)
    if runs:
        query_runs, *query_side[:2] = _runs(query_side[0], query_side[1], _run_unit())
        key_runs, *key_side[:2] = _runs(key_side[0], key_side[1], 1)
    else:
        query_runs = torch.zeros(*query_side[0].shape, 3, dtype=torch.int32)
        key_runs = torch.zeros(*key_side[0].shape, 3, dtype=torch.int32)
    i32 = dict(device=device, dtype=torch.int32)
    move = lambda xs: tuple(x.to(**i32).contiguous() for x in xs)  # noqa: E731
    return ComponentTables(
        slot_head=torch.tensor(cp.heads, **i32), slot_class=cp.head_class.to(**i32),
        slot_merge=torch.tensor(merge, **i32),
        query_side=move(query_side),
        key_tiles=key_tiles.to(**i32), key_side=move(key_side), params=params.to(**i32),
        query_runs=query_runs.to(**i32).contiguous(), key_runs=key_runs.to(**i32).contiguous(),
        query_owned=query_owned.to(**i32).contiguous(), kinds=codes,
        n_slots=len(cp.heads), n_query_tiles=query_cp.n_query_tiles,
        n_key_groups=int(key_side[0].shape[1]), key_skewed=int(skewed),
        long_rows=int(long_rows),
        stride=cp.order,
        groups=cp.n_ctx // cp.order if cp.order else 1,
        q_block=query_cp.q_block, runs=int(runs), owns=int(own is not None))


def device_tables(pattern: Pattern, n: int, n_heads: int, q_block: int, k_block: int,
                  device: torch.device, short_q_block: int | None = None) -> PlanTables:
    """The plan of ``pattern`` at (n, heads, tiles) as device tables; with ``short_q_block``
    (< ``q_block``), the forward and dQ launches of its short-row components take query tiles
    of that many rows (``short_row_q_block``), where the narrower plan pads alike."""
    plan = pattern.plan(n, n_heads, q_block, k_block)
    narrow = None
    if short_q_block and short_q_block < q_block and not all(map(_long_rows, plan.components)):
        narrow = pattern.plan(n, n_heads, short_q_block, k_block)
        if narrow.n_pad != plan.n_pad or [(c.heads, c.order) for c in narrow.components] != \
                [(c.heads, c.order) for c in plan.components]:
            narrow = None  # n not a multiple of q_block: the two plans pad differently
    seen: set[int] = set()
    comps = []
    for i, cp in enumerate(plan.components):
        query_cp = narrow.components[i] if narrow and not _long_rows(cp) else None
        comps.append(_component_tables(cp, [int(h in seen) for h in cp.heads], device,
                                       query_cp))
        seen.update(cp.heads)
    return PlanTables(plan.n_pad, q_block, k_block, tuple(comps),
                      launches=Launches(enabled=not INTERPRETED))


def prepare(pattern: Pattern, n: int, n_heads: int, head_dim: int, v_dim: int,
            dtype: torch.dtype, device: torch.device) -> TritonAttention:
    """Check that the kernels can take this problem and build its device tables (once)."""
    check_support(dtype, head_dim, v_dim, device)
    qb, kb = block_sizes(max(head_dim, v_dim), dtype, device)
    tables = device_tables(pattern, n, n_heads, qb, kb, device, short_row_q_block(qb))
    return TritonAttention("triton", pattern, n, n_heads, tables=tables, flat=tables.flat,
                           upcast=INTERPRETED and dtype == torch.bfloat16)


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, position) strides of a [B, H, N, D] tensor whose last dim is contiguous."""
    return x.stride()[:3]


def _tile_ints(c: ComponentTables, side: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    """The launch's ints after the heads and dims: tile-list widths (full, partial) of the
    query or key side, terms per class, the reordering stride and its groups."""
    return side[1].shape[-1], side[3].shape[-1], c.params[0].numel(), c.stride, c.groups


def _term_constexprs(c: ComponentTables, dtype: torch.dtype) -> dict[str, Any]:
    """The constexprs every kernel of a component takes alike: its term kinds, the product
    precision and whether it runs in strided (reordered) order."""
    return dict(K0=c.kinds[0], K1=c.kinds[1], K2=c.kinds[2], K3=c.kinds[3], PREC=_prec(dtype),
                REORDER=c.stride > 0)


def _run_constexprs(c: ComponentTables, tabs: PlanTables, q: torch.Tensor, v: torch.Tensor
                    ) -> dict[str, bool]:
    """RUN: the component's kernels walk its runs first. EXACT: the runs' loads need no mask,
    as no position is padding (N is the plan's padded length) and the head dims are powers of
    two >= 16 (the kernels' padded widths)."""
    D, DV = q.shape[-1], v.shape[-1]
    exact = q.shape[2] == tabs.n_pad and D == _pow2(D) and DV == _pow2(DV)
    return dict(RUN=bool(c.runs), EXACT=bool(c.runs) and exact)


def _token_major(B: int, H: int, N: int, D: int, like: torch.Tensor,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """A [B, H, N, D] view of fresh [B, N, H, D] memory (the model's layout)."""
    return like.new_empty(B, N, H, D, dtype=dtype or like.dtype).transpose(1, 2)


# -- the launches ------------------------------------------------------------------------------
def _triton_launch(kernel, grid, args, constexprs, call_key=None, **options) -> None:
    """Triton's own launch path (tables without ``Launches``)."""
    kernel[grid](*args, **constexprs, **options)


def _recording(tabs: PlanTables, key: tuple | None, tensors: tuple[torch.Tensor, ...]):
    """Where ``key`` is a call key of the plan's own cache, keep the call's launches for
    ``Launches.replay``; every other tensor they pass is one of the plan's tables."""
    if key is None:
        return contextlib.nullcontext()
    return tabs.launches.recording(key, tensors, tabs.flat[0])


def call_key(tabs: PlanTables, scale: float, *tensors: torch.Tensor) -> tuple | None:
    """The launch-cache key of one call through ``tabs``'s own cache (``Launches``), or None
    (the shared cache of the custom ops, which keys on every argument instead).

    Within one plan every argument a launch passes follows from the call's own tensors (q, k,
    v; dout in the backward) and the scale: the plan's tables are fixed, our outputs take
    their dtype and layout from q and v, every int is a shape, a stride or a table size, and
    the constexprs and launch options follow from the dims and dtype. So the dtype, shape,
    strides and 16-byte alignment of those tensors, with the component and the kernel, fix
    everything Triton specializes on; built once per call instead of per launch.
    """
    launches = tabs.launches
    if launches is None or launches is SHARED_LAUNCHES or not launches.enabled:
        return None
    return (scale,) + tuple((t.dtype, t.shape, t.stride(), t.data_ptr() % 16 == 0)
                            for t in tensors)


def forward_launches(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tabs: PlanTables,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """out [B, H, N, Dv] (q's dtype, token-major memory) and lse [B, H, N] (float32)."""
    B, H, N, D = q.shape
    DV = v.shape[-1]
    out = _token_major(B, H, N, DV, q)
    lse = torch.empty(B, H, N, device=q.device, dtype=torch.float32)
    key = call_key(tabs, scale, q, k, v)
    if key is not None:  # the same call as one recorded: replay its launches (issue 18)
        key = ("fwd",) + key
        if tabs.launches.replay(key, (q, k, v, out, lse)):
            return out, lse
    with _recording(tabs, key, (q, k, v, out, lse)):
        _forward_launches(q, k, v, out, lse, tabs, scale, key)
    return out, lse


def _forward_launches(q, k, v, out, lse, tabs: PlanTables, scale: float, key: tuple | None
                      ) -> None:
    B, H, N, D = q.shape
    DV = v.shape[-1]
    dp, dvp = _pow2(D), _pow2(DV)
    cfg = _launch("fwd", max(dp, dvp), q.dtype)
    launch = tabs.launches or _triton_launch
    # what every component's launch passes alike, read once per call (host time, issue 18)
    strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(out))
    for i, c in enumerate(tabs.components):
        grid, slots_x = _grid(c.n_query_tiles, B * c.n_slots, cfg)
        launch(triton_fwd.fwd_kernel, grid, (
            q, k, v, out, lse, c.slot_head, c.slot_class, c.slot_merge, *c.query_side, c.params,
            c.query_runs, *strides, scale * LOG2E, N, H, c.n_slots, D, DV, c.n_query_tiles,
            *_tile_ints(c, c.query_side)),
            dict(QB=c.q_block, KB=tabs.k_block, GATHER=cfg["gather"], DP=dp, DVP=dvp,
                 SLOTS_X=slots_x, LEAN=_lean(cfg, c), **_run_constexprs(c, tabs, q, v),
                 **_term_constexprs(c, q.dtype)),
            call_key=key and (i,) + key, num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"])


def backward_launches(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      out: torch.Tensor, lse: torch.Tensor, tabs: PlanTables, scale: float,
                      grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) in the inputs' dtype (token-major memory), given d out. ``grads``: three
    views shaped like q, k, v (last dim contiguous) to write them into instead of fresh
    memory (the packed op's one d(qkv) tensor); returned."""
    B, H, N, D = q.shape
    DV = v.shape[-1]
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    delta = torch.empty(B, H, N, device=q.device, dtype=torch.float32)
    # Opt-in, not deterministic: the dK/dV programs add dQ into float32 with atomics and no
    # dQ kernel runs (triton_bwd's doc); dq is what they add to. The deterministic kernels run
    # instead under torch.use_deterministic_algorithms(True), and where the atomic dK/dV
    # kernel would not fit an SM's shared memory (_atomic_dq_fits).
    atomic_dq = (bool(CONFIG.get("dkdv", {}).get("atomic_dq"))
                 and not torch.are_deterministic_algorithms_enabled()
                 and _atomic_dq_fits(q.dtype, D, DV))
    if atomic_dq and any(c.owns for c in tabs.components):
        raise ValueError("atomic dQ runs no dQ kernel, but these tables leave the dQ programs "
                         "key tiles to write (own_mode): build them with atomic_dq set")
    if grads is None:
        dq = _token_major(B, H, N, D, q, torch.float32 if atomic_dq else None)
        dk, dv = _token_major(B, H, N, D, k), _token_major(B, H, N, DV, v)
    else:  # atomic dQ adds into float32 of its own, copied into grads[0] after
        dq = _token_major(B, H, N, D, q, torch.float32) if atomic_dq else grads[0]
        dk, dv = grads[1:]
    if atomic_dq:
        dq.zero_()
    # where the caller passes the gradients, their layout is its own: part of the key
    key = call_key(tabs, scale, q, k, v, dout, *(grads or ()))
    tensors = (q, k, v, dout, out, lse, delta, dq, dk, dv)
    if key is not None:  # the same call as one recorded: replay its launches (issue 18)
        key = ("bwd", atomic_dq) + key
    if key is None or not tabs.launches.replay(key, tensors):
        with _recording(tabs, key, tensors):
            _backward_launches(*tensors, tabs, scale, key, atomic_dq)
    if not atomic_dq:
        return dq, dk, dv
    if grads is None:
        return dq.to(q.dtype), dk, dv
    return grads[0].copy_(dq), dk, dv


def _backward_launches(q, k, v, dout, out, lse, delta, dq, dk, dv, tabs: PlanTables,
                       scale: float, key: tuple | None, atomic_dq: bool) -> None:
    B, H, N, D = q.shape
    DV = v.shape[-1]
    dp, dvp = _pow2(D), _pow2(DV)
    launch = tabs.launches or _triton_launch
    cfg_dq = _launch("dq", max(dp, dvp), q.dtype)
    # Delta = rowsum(dO * O) in the dQ programs, which load dO anyway (one launch less a
    # call); a launch of its own only where no dQ kernel runs, or for benchmarks.
    fused_delta = not atomic_dq and bool(cfg_dq["fused_delta"])
    if not fused_delta:
        block = 64
        launch(triton_bwd.delta_kernel, (-(-N // block), B * H),
               (out, dout, delta, *_strides(out), *_strides(dout), N, H, DV),
               dict(BLOCK=block, DVP=dvp), call_key=key)
    # what every component's launches pass alike, read once per call (host time, issue 18)
    inputs = (*_strides(q), *_strides(k), *_strides(v), *_strides(dout))
    dq_strides = inputs + _strides(out) + _strides(dq) + _strides(dk) + _strides(dv)
    dkdv_strides = inputs + _strides(dk) + _strides(dv) + _strides(dq)
    for i, c in enumerate(tabs.components):
        if not atomic_dq:
            grid, slots_x = _grid(c.n_query_tiles, B * c.n_slots, cfg_dq)
            launch(triton_bwd.dq_kernel, grid, (
                q, k, v, out, dout, lse, delta, dq, dk, dv, c.slot_head, c.slot_class,
                c.slot_merge, *c.query_side, c.params, c.query_runs, c.query_owned,
                *dq_strides, scale * LOG2E, scale, N, H, c.n_slots, D, DV, c.n_query_tiles,
                *_tile_ints(c, c.query_side)),
                dict(QB=c.q_block, KB=tabs.k_block, GATHER=cfg_dq["gather"], DP=dp, DVP=dvp,
                     SLOTS_X=slots_x, LEAN=_lean(cfg_dq, c), FUSED_DELTA=fused_delta,
                     OWN=bool(c.owns),
                     **_run_constexprs(c, tabs, q, v), **_term_constexprs(c, q.dtype)),
                call_key=key and (i,) + key, num_warps=cfg_dq["num_warps"],
                num_stages=cfg_dq["num_stages"])
        key_tiles = c.key_tiles.shape[-1]
        cfg = _launch("dkdv", max(dp, dvp), q.dtype, key_tiles * tabs.k_block,
                      bool(c.key_skewed))
        grid, slots_x = _grid(c.n_key_groups, B * c.n_slots, cfg)
        dq_desc = _dq_descriptor(dq, c, tabs, cfg) if atomic_dq else None
        launch(triton_bwd.dkdv_kernel, grid, (
            q, k, v, dout, lse, delta, dk, dv, dq, dq_desc, c.slot_head, c.slot_class,
            c.slot_merge,
            c.key_tiles, *c.key_side, c.params, c.key_runs,
            *dkdv_strides, scale * LOG2E, scale, N, H, c.n_slots, D, DV, c.n_key_groups,
            *_tile_ints(c, c.key_side)),
            dict(QB=tabs.q_block, KB=tabs.k_block, KEY_TILES=key_tiles, DP=dp, DVP=dvp,
                 TRANS_ACC=bool(cfg["trans_acc"]), SLOTS_X=slots_x, ATOMIC_DQ=atomic_dq,
                 DQ_TMA=dq_desc is not None, **_run_constexprs(c, tabs, q, v), **_term_constexprs(c, q.dtype)),
            call_key=key and (i,) + key, num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"])


def _atomic_dq_fits(dtype: torch.dtype, d: int, dv: int) -> bool:
    """Whether the atomic-dQ dK/dV kernel fits in an H100's shared memory per block (232,448
    bytes). In 16-bit dtypes a head dim over 64 takes 128-row query tiles and 128-key groups
    at 128 wide, which the deterministic kernel fits (230,400 bytes, Triton 3.6, sm_90) but
    the atomic one does not (its dQ tile's staging and the k operand it keeps: 296,020 bytes
    with element atomics, 328,788 with the bulk reduce at head dims 128; 246,868 with v dims
    of 128 and q/k dims of 64, CIFAR-10's). Compiled offline (benchmarks/ptxas_usage.py's
    way); float32 takes 64-row tiles and fits (197,204 at 128)."""
    return dtype == torch.float32 or max(_pow2(d), _pow2(dv)) <= 64


def _dq_descriptor(dq: torch.Tensor, c: ComponentTables, tabs: PlanTables,
                   cfg: dict[str, int]) -> Any | None:
    """Under the atomic-dQ backward, a TMA descriptor of the float32 dQ buffer as [B, N, H * D]
    with [1, q_block, D] blocks (the dK/dV lists' query tiles), through which the dK/dV programs add their dQ tiles in one
    bulk reduce each (``triton_bwd._dkdv_tiles``, DQ_TMA); None where they add element by
    element instead: ``CONFIG["dkdv"]["dq_tma"]`` 0, a Triton or GPU without tensor
    descriptors (CUDA before Hopper), reordered components (a query tile's rows are not
    contiguous in memory), or a head dim that is not a power of two (the tile would overrun
    the head). The interpreter runs it through ``triton_fwd``'s reduce shim."""
    B, H, N, D = dq.shape
    if not cfg.get("dq_tma", 1) or c.stride or D != _pow2(D) or TensorDescriptor is None:
        return None
    if dq.is_cuda and torch.cuda.get_device_capability(dq.device)[0] < 9:
        return None
    flat = dq.transpose(1, 2).reshape(B, N, H * D)  # token-major memory: a view, no copy
    return TensorDescriptor.from_tensor(flat, [1, tabs.q_block, D])


# -- the custom ops: what torch.compile traces ---------------------------------------------------
# The plan's device tables travel as arguments (``PlanTables.flat``): a compiled model passes
# the ones its forward state holds, so the ops look nothing up.
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: list[torch.Tensor],
            ints: list[int], scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return forward_launches(q, k, v, PlanTables.unflatten(tables, ints), scale)


def _bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            out: torch.Tensor, lse: torch.Tensor, tables: list[torch.Tensor], ints: list[int],
            scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return backward_launches(dout, q, k, v, out, lse, PlanTables.unflatten(tables, ints), scale)


def _custom_op(name: str, fn):
    """``fn`` as the custom op sparse_transformer::name (it writes no input)."""
    return torch.library.custom_op(f"sparse_transformer::{name}", fn, mutates_args=())


sparse_attention_fwd = _custom_op("sparse_attention_fwd", _fwd_op)
sparse_attention_bwd = _custom_op("sparse_attention_bwd", _bwd_op)


@sparse_attention_fwd.register_fake
def _(q, k, v, tables, ints, scale):
    B, H, N, _ = q.shape
    return _token_major(B, H, N, v.shape[-1], q), q.new_empty(B, H, N, dtype=torch.float32)


@sparse_attention_bwd.register_fake
def _(dout, q, k, v, out, lse, tables, ints, scale):
    B, H, N, D = q.shape
    return (_token_major(B, H, N, D, q), _token_major(B, H, N, D, k),
            _token_major(B, H, N, v.shape[-1], v))


def _setup_context(ctx, inputs, output):
    q, k, v, tables, ints, scale = inputs
    ctx.ints, ctx.scale, ctx.n_tables = ints, scale, len(tables)
    ctx.save_for_backward(q, k, v, output[0], output[1], *tables)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse, *tables = ctx.saved_tensors
    dq, dk, dv = sparse_attention_bwd(dout, q, k, v, out, lse, tables, ctx.ints, ctx.scale)
    return dq, dk, dv, [None] * ctx.n_tables, None, None


sparse_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


# The packed ops: the same launches on the views of one projection qkv [B, N, 2 d_qk + H Dv]
# (``dispatch.unpack_qkv``), whose backward writes d(qkv) as one tensor, so nothing
# concatenates dq, dk and dv after it (``dispatch.run_packed``).
def _packed_fwd_op(qkv: torch.Tensor, tables: list[torch.Tensor], ints: list[int], scale: float,
                   n_heads: int, d_qk: int) -> tuple[torch.Tensor, torch.Tensor]:
    return forward_launches(*unpack_qkv(qkv, n_heads, d_qk), PlanTables.unflatten(tables, ints),
                            scale)


def _packed_backward(dout: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor,
                     lse: torch.Tensor, tabs: PlanTables, scale: float, n_heads: int,
                     d_qk: int) -> torch.Tensor:
    dqkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    backward_launches(dout, *unpack_qkv(qkv, n_heads, d_qk), out, lse, tabs, scale,
                      grads=unpack_qkv(dqkv, n_heads, d_qk))
    return dqkv


def _packed_bwd_op(dout: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   tables: list[torch.Tensor], ints: list[int], scale: float, n_heads: int,
                   d_qk: int) -> torch.Tensor:
    return _packed_backward(dout, qkv, out, lse, PlanTables.unflatten(tables, ints), scale,
                            n_heads, d_qk)


sparse_attention_packed_fwd = _custom_op("sparse_attention_packed_fwd", _packed_fwd_op)
sparse_attention_packed_bwd = _custom_op("sparse_attention_packed_bwd", _packed_bwd_op)


@sparse_attention_packed_fwd.register_fake
def _(qkv, tables, ints, scale, n_heads, d_qk):
    q, _, v = unpack_qkv(qkv, n_heads, d_qk)
    B, H, N, _ = q.shape
    return _token_major(B, H, N, v.shape[-1], qkv), qkv.new_empty(B, H, N, dtype=torch.float32)


@sparse_attention_packed_bwd.register_fake
def _(dout, qkv, out, lse, tables, ints, scale, n_heads, d_qk):
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


def _packed_setup_context(ctx, inputs, output):
    qkv, tables, ints, scale, n_heads, d_qk = inputs
    ctx.ints, ctx.scale, ctx.n_tables, ctx.heads = ints, scale, len(tables), (n_heads, d_qk)
    ctx.save_for_backward(qkv, output[0], output[1], *tables)
    ctx.mark_non_differentiable(output[1])


def _packed_autograd_backward(ctx, dout, _dlse):
    qkv, out, lse, *tables = ctx.saved_tensors
    dqkv = sparse_attention_packed_bwd(dout, qkv, out, lse, tables, ctx.ints, ctx.scale,
                                       *ctx.heads)
    return dqkv, [None] * ctx.n_tables, None, None, None, None


sparse_attention_packed_fwd.register_autograd(_packed_autograd_backward,
                                              setup_context=_packed_setup_context)


# -- the eager path: the same launches without the custom-op machinery -------------------------
class _EagerAttention(torch.autograd.Function):
    """What an eager call runs. Measured on an H200 host (benchmarks/host_cost.py): the custom
    op's Python dispatch and its autograd wrapper cost several hundred microseconds a call,
    most of it in the backward, which at the model's shapes is more than the strided kernels'
    GPU time. Only ``out`` is an output here, so no zero gradient is made for lse either."""

    @staticmethod
    def forward(ctx, q, k, v, tables: PlanTables, scale: float):
        out, lse = forward_launches(q, k, v, tables, scale)
        ctx.tables, ctx.scale = tables, scale
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = backward_launches(dout, q, k, v, out, lse, ctx.tables, ctx.scale)
        return dq, dk, dv, None, None


class _EagerPackedAttention(torch.autograd.Function):
    """The eager path of the packed ops (see ``_EagerAttention``)."""

    @staticmethod
    def forward(ctx, qkv, tables: PlanTables, scale: float, n_heads: int, d_qk: int):
        out, lse = forward_launches(*unpack_qkv(qkv, n_heads, d_qk), tables, scale)
        ctx.tables, ctx.scale, ctx.heads = tables, scale, (n_heads, d_qk)
        ctx.save_for_backward(qkv, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        qkv, out, lse = ctx.saved_tensors
        dqkv = _packed_backward(dout, qkv, out, lse, ctx.tables, ctx.scale, *ctx.heads)
        return dqkv, None, None, None, None


def check_support(dtype: torch.dtype, head_dim: int, v_dim: int, device: torch.device) -> None:
    """Refuse what the kernels cannot take (once, when a pattern is prepared)."""
    if dtype not in _DTYPES:
        raise TypeError(f"triton backend: dtype {dtype} not supported; use float16, "
                        "bfloat16 or float32 (or backend='torch')")
    if head_dim > 256 or v_dim > 256:
        raise ValueError(f"triton backend: head dims up to 256, got {head_dim}/{v_dim}")
    if device.type != "cuda" and not INTERPRETED:
        raise ValueError("triton backend: CPU tensors need Triton's interpreter; set "
                         "TRITON_INTERPRET=1 before triton is first imported (or use CUDA)")


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: TritonAttention,
                     scale: float) -> torch.Tensor:
    """Attention of every head of ``p``'s pattern in one op: q, k [B, H, N, D], v [B, H, N, Dv].

    Returns [B, H, N, Dv] in q's dtype (a view of [B, N, H, Dv] memory); differentiable.
    Inputs may be any strided views whose last dim is contiguous; ``p`` comes from
    ``prepare`` for these shapes and this dtype.
    """
    if p.upcast:
        # Triton's interpreter computes tl.dot wrongly on bfloat16 operands (numpy has no
        # bfloat16); run the same kernels on float32 copies and round the result back. Only
        # on the CPU (tests): on CUDA bfloat16 runs as it is.
        return _launch_op(q.float(), k.float(), v.float(), p, scale).to(torch.bfloat16)
    return _launch_op(q, k, v, p, scale)


def sparse_attention_packed(qkv: torch.Tensor, p: TritonAttention, n_heads: int, d_qk: int,
                            scale: float) -> torch.Tensor:
    """``sparse_attention`` on the views ``dispatch.unpack_qkv(qkv, n_heads, d_qk)`` of one
    projection qkv [B, N, 2 d_qk + H Dv]; differentiable in ``qkv``, whose gradient the
    backward writes as one tensor (no concatenation of dq, dk, dv after it)."""
    if p.upcast:  # the interpreter's bfloat16 (see sparse_attention)
        return _launch_packed(qkv.float(), p, n_heads, d_qk, scale).to(torch.bfloat16)
    return _launch_packed(qkv, p, n_heads, d_qk, scale)


def _launch_packed(qkv, p: TritonAttention, n_heads: int, d_qk: int, scale: float
                   ) -> torch.Tensor:
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    if torch.compiler.is_compiling():
        tensors, ints = p.flat
        return sparse_attention_packed_fwd(qkv, list(tensors), list(ints), float(scale),
                                           n_heads, d_qk)[0]
    return _EagerPackedAttention.apply(qkv, p.tables, float(scale), n_heads, d_qk)


def _launch_op(q, k, v, p: TritonAttention, scale: float) -> torch.Tensor:
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if torch.compiler.is_compiling():  # traced: the custom op, which compiles with no break
        tensors, ints = p.flat
        return sparse_attention_fwd(q, k, v, list(tensors), list(ints), float(scale))[0]
    return _EagerAttention.apply(q, k, v, p.tables, float(scale))


__all__ = ["block_sizes", "prepare", "sparse_attention", "sparse_attention_fwd",
           "sparse_attention_bwd", "sparse_attention_packed", "sparse_attention_packed_fwd",
           "sparse_attention_packed_bwd", "forward_launches", "backward_launches", "device_tables",
           "short_row_q_block",
           "PlanTables", "TritonAttention", "DETERMINISTIC", "CONFIG"]
