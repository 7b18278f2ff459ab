"""Pattern-aware key/value caches for incremental decoding (issue 6; paper 4.2-4.3, 5.1, 5.6).

Decoding one token at position i needs, in every layer and head, the keys and values of the
positions that head's pattern lets i see. A dense cache stores all of them and reads all of
them. Here each head's rule -- an OR of ``Term`` s (``patterns/terms.py``) -- decides what is
stored and read, term by term, so every pattern (and union, per-head split or schedule of
patterns) is covered without looking at pattern class names:

    term          stored per head                        read per step (query i)
    causal        all n_ctx positions                    all n_ctx slots (masked j <= i)
    window W      ring buffer of W slots, slot j mod W   the W slots
    group G       the current group: G slots, j mod G    the G slots (masked j <= i)
    summary L,c   the summary positions only:            all ceil(n/L) * c slots (masked)
                  ceil(n/L) * c slots, c = hi - lo
    stride l      all positions, residue-major:          one residue row: ceil(n/l) slots
                  slot (j mod l) * ceil(n/l) + j // l     j = i mod l, i mod l + l, ...

A stride (column) term needs every past position eventually (query i' reads residue i' mod l,
and each residue comes up again), so its *memory* is inherently all positions; its *read* per
token is n / l keys. Everything else is bounded by the pattern. One more slot per head
("trash") absorbs writes a term does not keep (a non-summary position of a summary term), so
that a step is a fixed sequence of tensor ops with no host decisions -- what a CUDA graph
needs.

Heads whose rules have the same *shape* (term kinds and sizes, e.g. all heads of "fixed" with
distinct summary sub-blocks, which differ only in [lo, hi)) share one buffer of shape
[B, Hg, S, D]; per-head differences live in the slot positions and masks. A position kept by
two terms of one head (the query itself is in both the window and the column) is counted once:
a slot of term k is masked out where an earlier term of the same head also allows that key, so
the softmax runs over exactly the pattern's key set, as in a full forward pass.

``dense=True`` builds the baseline the benchmark compares against: one causal region holding
every position, read in full each step and masked with the same pattern (same logits).

Shapes: B batch, H heads, Hg heads of one group, S slots, Dk/Dv per-head key/value width.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from sparse_transformer.patterns import Pattern, Term

_KIND_ORDER = {"causal": 0, "window": 1, "group": 2, "summary": 3, "stride": 4}


@dataclass(frozen=True)
class Region:
    """One term's store inside a head group's buffer: slots [start, start + size)."""

    kind: str  # causal | window | group | summary | stride | trash
    start: int
    size: int
    span: int = 0  # W (window), G (group), L (summary period), l (stride), n_ctx (causal)
    width: int = 0  # c = hi - lo (summary)
    rows: int = 0  # ceil(n_ctx / l): slots per residue (stride), also the slots read per step

    @property
    def read_size(self) -> int:
        return self.rows if self.kind == "stride" else self.size


def _shape(t: Term) -> tuple:
    """What fixes a term's store size: its kind and window/group/period+width/stride."""
    return (_KIND_ORDER[t.kind], t.window, t.group, t.period, t.hi - t.lo, t.stride)


def head_rule(pattern: Pattern, h: int, n_heads: int) -> tuple[Term, ...]:
    """Head h's terms in canonical order; a causal offset-0 term subsumes every other term."""
    terms = pattern.head_terms(h, n_heads)
    if any(t.kind == "causal" and t.offset == 0 for t in terms):
        return (Term(),)
    return tuple(sorted(set(terms), key=lambda t: (_shape(t), t.lo, t.offset)))


def _region_for(t: Term, start: int, n_ctx: int) -> Region:
    kind = t.kind
    if kind == "causal":
        return Region("causal", start, n_ctx, span=n_ctx)
    if kind == "window":
        return Region("window", start, min(t.window, n_ctx), span=t.window)
    if kind == "group":
        return Region("group", start, min(t.group, n_ctx), span=t.group)
    if kind == "summary":
        c = t.hi - t.lo
        return Region("summary", start, -(-n_ctx // t.period) * c, span=t.period, width=c)
    rows = -(-n_ctx // t.stride)
    return Region("stride", start, t.stride * rows, span=t.stride, rows=rows)


@dataclass(frozen=True)
class GroupPlan:
    """Heads sharing one buffer: their regions and, per head and region, accept/exclude terms.

    A slot of region k is a valid key for head h iff some term in ``accept[h][k]`` allows it
    and no term in ``exclude[h][k]`` does (the dedupe of overlapping terms).
    """

    heads: tuple[int, ...]
    regions: tuple[Region, ...]  # term regions in rule order, then "trash"
    accept: tuple[tuple[tuple[Term, ...], ...], ...]  # [head][term region]
    exclude: tuple[tuple[tuple[Term, ...], ...], ...]
    summary_lo: tuple[tuple[int, ...], ...]  # [head][term region]: lo of a summary term else 0

    @property
    def term_regions(self) -> tuple[Region, ...]:
        return self.regions[:-1]

    @property
    def size(self) -> int:
        """Slots stored per head (including the trash slot)."""
        return sum(r.size for r in self.regions)

    @property
    def read_size(self) -> int:
        """Slots read per head per step."""
        return sum(r.read_size for r in self.regions)


@functools.lru_cache(maxsize=256)
def plan_layer(pattern: Pattern, n_heads: int, n_ctx: int, dense: bool = False
               ) -> tuple[GroupPlan, ...]:
    """Group a layer's heads by rule shape and lay out each group's regions.

    Direct regions (read whole) come first, then the trash slot, then stride regions (read one
    residue row each), so a group without a stride term reads its buffer as one view.
    Memoised: layers with equal patterns share the same plan objects (and per-step indices).
    """
    pattern.check_heads(n_heads)
    rules = [head_rule(pattern, h, n_heads) for h in range(n_heads)]
    if dense:
        # Baseline: every position stored and read; the mask is the head's whole rule.
        region = Region("causal", 0, n_ctx, span=n_ctx)
        trash = Region("trash", n_ctx, 1)
        return (GroupPlan(tuple(range(n_heads)), (region, trash),
                          accept=tuple((rule,) for rule in rules),
                          exclude=tuple(((),) for _ in rules),
                          summary_lo=tuple((0,) for _ in rules)),)
    by_shape: dict[tuple, list[int]] = {}
    for h, rule in enumerate(rules):
        by_shape.setdefault(tuple(_shape(t) for t in rule), []).append(h)
    groups = []
    for heads in by_shape.values():
        proto = rules[heads[0]]
        regions: list[Region | None] = [None] * len(proto)
        start = 0
        for k, t in enumerate(proto):  # direct regions first, in rule order
            if t.kind != "stride":
                regions[k] = _region_for(t, start, n_ctx)
                start += regions[k].size
        trash = Region("trash", start, 1)  # right after the direct regions
        start += 1
        for k, t in enumerate(proto):
            if t.kind == "stride":
                regions[k] = _region_for(t, start, n_ctx)
                start += regions[k].size
        accept = tuple(tuple((rules[h][k],) for k in range(len(proto))) for h in heads)
        exclude = tuple(tuple(rules[h][:k] for k in range(len(proto))) for h in heads)
        lo = tuple(tuple(t.lo if t.kind == "summary" else 0 for t in rules[h]) for h in heads)
        groups.append(GroupPlan(tuple(heads), tuple(regions) + (trash,), accept, exclude, lo))
    return tuple(groups)


# -- per-step index arithmetic (pure functions of the query position tensor) ------------------
class _HeadTerm:
    """One term position of a group, all heads at once: per-head offset/lo/hi as [Hg, 1] tensors.

    ``Term.allowed`` only reads these attributes, so it evaluates all heads in one go.
    """

    def __init__(self, terms: list[Term], device):
        proto = terms[0]
        self.window, self.group = proto.window, proto.group
        self.period, self.stride = proto.period, proto.stride
        col = lambda name: torch.tensor([getattr(t, name) for t in terms], device=device)[:, None]
        self.offset, self.lo, self.hi = col("offset"), col("lo"), col("hi")

    def allowed(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return Term.allowed(self, i, j)  # type: ignore[arg-type]


class GroupConsts:
    """Device constants of a group plan, built once outside the step (a CUDA graph cannot copy
    host data while capturing): summary ``lo`` per head, vectorised terms, read-slot runs."""

    def __init__(self, g: GroupPlan, device):
        n_h = len(g.heads)
        self.lo = {k: torch.tensor([g.summary_lo[a][k] for a in range(n_h)], device=device)[:, None]
                   for k, r in enumerate(g.term_regions) if r.kind == "summary"}
        # All heads of a (non-dense) group have one term per region with the same shape, so a
        # region's accept/exclude terms vectorise over heads; the dense baseline loops instead.
        self.vector = all(len(acc) == 1 and _shape(acc[0]) == _shape(g.accept[0][k][0])
                          for row in g.accept for k, acc in enumerate(row))
        self.terms = ([_HeadTerm([g.accept[a][k][0] for a in range(n_h)], device)
                       for k in range(len(g.term_regions))] if self.vector else None)
        direct, strided = [], []
        for k, r in enumerate(g.regions):
            who = -1 if r.kind == "trash" else k
            (strided if r.kind == "stride" else direct).extend([who] * r.read_size)
        owner = direct + strided
        self.runs: list[tuple[int, int, int]] = []  # (region, first slot, end slot) in read order
        for s, k in enumerate(owner):
            if self.runs and self.runs[-1][0] == k:
                self.runs[-1] = (k, self.runs[-1][1], s + 1)
            else:
                self.runs.append((k, s, s + 1))


def write_slots(g: GroupPlan, c: GroupConsts, pos: torch.Tensor, last: torch.Tensor | int
                ) -> torch.Tensor:
    """Slots that positions ``pos`` [P] go to, per head and term region: long [Hg, R, P].

    ``last`` is the newest position being written (the query of this step, or the last prompt
    position when prefilling): ring and group slots only keep positions that survive to it,
    the rest (and non-summary positions of a summary term) go to the trash slot.
    """
    trash = g.regions[-1].start
    rows = []
    for k, r in enumerate(g.term_regions):
        if r.kind == "causal":
            s = pos + r.start
        elif r.kind == "window":
            s = torch.where(pos > last - r.size, r.start + pos % r.size, trash)
        elif r.kind == "group":
            s = torch.where(pos // r.span == last // r.span, r.start + pos % r.span, trash)
        elif r.kind == "stride":
            s = r.start + (pos % r.span) * r.rows + pos // r.span
        else:  # summary: per head, only lo <= j mod L < lo + c is kept
            off = pos % r.span - c.lo[k]  # [Hg, P]
            keep = (off >= 0) & (off < r.width)
            rows.append(torch.where(keep, r.start + (pos // r.span) * r.width + off, trash))
            continue
        rows.append(s[None].expand(len(g.heads), -1))
    return torch.stack(rows, dim=1)


def read_layout(g: GroupPlan, c: GroupConsts, i: torch.Tensor
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """For query position ``i`` [1]: (gather index [S] or None, key positions [Hg, S]).

    None means "read the whole buffer in slot order". Positions of slots holding nothing
    valid may be anything; ``read_bias`` masks them.
    """
    n_h = len(g.heads)
    dev = i.device
    direct_pos, stride_pos, stride_idx = [], [], []
    for k, r in enumerate(g.regions):
        s = torch.arange(r.read_size, device=dev)
        if r.kind == "causal":
            j = s[None].expand(n_h, -1)
        elif r.kind == "window":
            j = (i - (i - s) % r.size)[None].expand(n_h, -1)
        elif r.kind == "group":
            j = ((i // r.span) * r.span + s)[None].expand(n_h, -1)
        elif r.kind == "summary":
            j = (s // r.width) * r.span + c.lo[k] + s % r.width
        elif r.kind == "trash":
            j = (i + 1)[None].expand(n_h, -1)  # j > i: never a valid key
        else:  # stride: residue row i mod l
            res = i % r.span
            stride_idx.append(r.start + res * r.rows + s)
            stride_pos.append((res + r.span * s)[None].expand(n_h, -1))
            continue
        direct_pos.append(j)
    pos = torch.cat(direct_pos + stride_pos, dim=1)
    if not stride_idx:
        return None, pos
    n_direct = sum(r.size for r in g.regions if r.kind != "stride")
    index = torch.cat([torch.arange(n_direct, device=dev)] + stride_idx)
    return index, pos


def read_bias(g: GroupPlan, c: GroupConsts, i: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Additive mask float32 [Hg, S]: 0 where the slot is a key of query i, else -inf.

    A slot of region k is a key iff j >= 0, k's term allows (i, j), and no earlier term of
    the same head does (so a key two terms share enters the softmax once).
    """
    if c.vector:
        parts = []
        for k, s0, s1 in c.runs:
            j = pos[:, s0:s1]
            if k < 0:
                parts.append(torch.zeros_like(j, dtype=torch.bool))
                continue
            ok = c.terms[k].allowed(i, j)
            if g.regions[k].kind == "window":  # the only region whose slots map to j < 0
                ok = ok & (j >= 0)
            for t in range(k):
                ok = ok & ~c.terms[t].allowed(i, j)
            parts.append(ok)
        ok = torch.cat(parts, dim=1)
    else:
        rows = []
        for a in range(len(g.heads)):
            parts = []
            for k, s0, s1 in c.runs:
                j = pos[a, s0:s1]
                if k < 0:
                    parts.append(torch.zeros_like(j, dtype=torch.bool))
                    continue
                acc = j >= 0
                hit = None
                for t in g.accept[a][k]:
                    hit = t.allowed(i, j) if hit is None else hit | t.allowed(i, j)
                ok = acc & hit
                for t in g.exclude[a][k]:
                    ok = ok & ~t.allowed(i, j)
                parts.append(ok)
            rows.append(torch.cat(parts))
        ok = torch.stack(rows)
    zero = torch.zeros((), dtype=torch.float32, device=i.device)
    return torch.where(ok, zero, torch.full_like(zero, float("-inf")))


class StepIndex:
    """Per-step index tensors, computed once per distinct group plan and shared by all layers.

    A 30-layer model with one pattern computes its slots and masks once per token, not 30
    times. ``batch`` fixes the bias layout [B * Hg, 1, S] that ``baddbmm`` wants.
    """

    def __init__(self, i: torch.Tensor, batch: int):
        self.i, self.batch = i, batch
        self._memo: dict[int, tuple] = {}  # by id: plans are interned by plan_layer

    def get(self, g: GroupPlan, c: GroupConsts
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(write slots [Hg, R, 1], gather index or None, bias [B * Hg, 1, S])."""
        key = id(g)
        if key not in self._memo:
            slots = write_slots(g, c, self.i, self.i)
            index, pos = read_layout(g, c, self.i)
            bias = read_bias(g, c, self.i, pos)
            n_h, s = bias.shape
            bias = bias[None].expand(self.batch, n_h, s).reshape(self.batch * n_h, 1, s)
            self._memo[key] = (slots, index, bias)
        return self._memo[key]


_LOWP: dict[tuple[str, torch.dtype], str | None] = {}


def _lowp_gemm(device: torch.device, dtype: torch.dtype) -> str | None:
    """How to get fp32 q.k from bf16/fp16 q and k on this device without upcasting them.

    "baddbmm" / "bmm" when ``out_dtype=torch.float32`` GEMMs exist and agree with the
    upcast product (probed once, outside any CUDA-graph capture); None means upcast.
    """
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    key = (str(device), dtype)
    if key not in _LOWP:
        _LOWP[key] = None
        a = torch.randn(3, 1, 16, device=device).to(dtype)
        b = torch.randn(3, 16, 7, device=device).to(dtype)
        bias = torch.zeros(3, 1, 7, device=device)
        bias[0, 0, 0] = float("-inf")
        ref = torch.baddbmm(bias, a.float(), b.float(), alpha=0.25)
        tries = (("baddbmm", lambda: torch.baddbmm(bias, a, b, alpha=0.25,
                                                   out_dtype=torch.float32)),
                 ("bmm", lambda: torch.add(bias, torch.bmm(a, b, out_dtype=torch.float32),
                                           alpha=0.25)))
        for name, fn in tries:
            try:
                got = fn()
            except (RuntimeError, TypeError):
                continue
            if got.dtype == torch.float32 and torch.allclose(got, ref, rtol=1e-5, atol=1e-5):
                _LOWP[key] = name
                break
    return _LOWP[key]


class LayerCache:
    """The keys and values one layer keeps, per head group, and the attention of one query.

    Args:
        pattern: the layer's pattern (``cfg.layer_pattern(r)``).
        n_heads, n_ctx, batch: model heads, context length, samples decoded together.
        d_k, d_v: per-head query/key and value widths.
        dtype, device: storage (the model's parameter dtype); q.k runs in fp32 (paper 5.6).
        dense: build the dense baseline (every position stored and read).
    """

    def __init__(self, pattern: Pattern, n_heads: int, n_ctx: int, batch: int, d_k: int,
                 d_v: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", dense: bool = False):
        self.groups = plan_layer(pattern, n_heads, n_ctx, dense)
        self.n_heads, self.n_ctx, self.batch = n_heads, n_ctx, batch
        # Zero-filled, never empty: masked slots still enter q.k and p.v, and 0 * NaN = NaN.
        self.k = [torch.zeros(batch, len(g.heads), g.size, d_k, dtype=dtype, device=device)
                  for g in self.groups]
        self.v = [torch.zeros(batch, len(g.heads), g.size, d_v, dtype=dtype, device=device)
                  for g in self.groups]
        order = [h for g in self.groups for h in g.heads]
        self._natural = order == list(range(n_heads))
        self._sel = [self._selector(g.heads, device) for g in self.groups]
        self._consts = [GroupConsts(g, device) for g in self.groups]
        self._lowp = _lowp_gemm(torch.device(device), dtype)
        self._unperm = (None if self._natural else
                        torch.tensor(order, device=device).argsort())

    @staticmethod
    def _selector(heads: tuple[int, ...], device) -> slice | torch.Tensor:
        if list(heads) == list(range(heads[0], heads[0] + len(heads))):
            return slice(heads[0], heads[0] + len(heads))
        return torch.tensor(heads, device=device)

    @staticmethod
    def _take(x: torch.Tensor, sel: slice | torch.Tensor) -> torch.Tensor:
        return x[:, sel] if isinstance(sel, slice) else x.index_select(1, sel)

    # -- accounting ------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held by this layer's key and value buffers."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def slots_stored(self) -> int:
        """Key slots stored, summed over heads (each slot holds one key and one value)."""
        return sum(len(g.heads) * g.size for g in self.groups)

    def slots_read(self) -> int:
        """Key slots read per decoded token, summed over heads."""
        return sum(len(g.heads) * g.read_size for g in self.groups)

    # -- writes ------------------------------------------------------------------------------
    def prefill(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store a prompt's keys [B, H, P, Dk] and values [B, H, P, Dv] for positions 0..P-1."""
        p = k.shape[2]
        pos = torch.arange(p, device=k.device)
        for g, c, sel, kb, vb in zip(self.groups, self._consts, self._sel, self.k, self.v):
            slots = write_slots(g, c, pos, p - 1)  # [Hg, R, P]
            kg, vg = self._take(k, sel).to(kb.dtype), self._take(v, sel).to(vb.dtype)
            for r in range(slots.shape[1]):  # one scatter per term region keeps memory at P
                idx = slots[None, :, r, :, None]
                kb.scatter_(2, idx.expand(*kg.shape), kg)
                vb.scatter_(2, idx.expand(*vg.shape), vg)

    # -- one decoding step ---------------------------------------------------------------------
    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: StepIndex,
             scale: float) -> torch.Tensor:
        """Store the new key/value and attend: q, k [B, H, 1, Dk], v [B, H, 1, Dv] -> [B, H, 1, Dv].

        Scores and softmax run in fp32 (paper 5.6; fp64 for an fp64 model); p.v in fp32 too,
        except for bf16/fp16 caches on CUDA (see ``_lowp``). The result comes back in q's dtype.
        """
        b = q.shape[0]
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        outs = []
        for g, c, sel, kb, vb in zip(self.groups, self._consts, self._sel, self.k, self.v):
            slots, index, bias = idx.get(g, c)
            n_h, n_r = slots.shape[0], slots.shape[1]
            kg, vg = self._take(k, sel), self._take(v, sel)
            where = slots.reshape(1, n_h, n_r, 1)
            kb.scatter_(2, where.expand(b, n_h, n_r, kb.shape[-1]),
                        kg.to(kb.dtype).expand(b, n_h, n_r, kb.shape[-1]))
            vb.scatter_(2, where.expand(b, n_h, n_r, vb.shape[-1]),
                        vg.to(vb.dtype).expand(b, n_h, n_r, vb.shape[-1]))
            keys = kb if index is None else kb.index_select(2, index)  # [B, Hg, S, Dk]
            vals = vb if index is None else vb.index_select(2, index)
            s = keys.shape[2]
            if self._lowp is not None:
                # bf16/fp16 on CUDA: q.k products of low-precision inputs are exact in fp32,
                # so a GEMM that accumulates and writes fp32 is the paper's fp32 q.k (5.6)
                # without upcasting the keys; p.v as the Triton kernel does it (p rounded to
                # the value dtype, fp32 accumulation). Three fewer kernels per layer.
                qg = self._take(q, sel).reshape(b * n_h, 1, -1)
                kt = keys.reshape(b * n_h, s, -1).transpose(1, 2)
                if self._lowp == "baddbmm":
                    scores = torch.baddbmm(bias, qg, kt, alpha=scale, out_dtype=torch.float32)
                else:
                    scores = torch.add(bias, torch.bmm(qg, kt, out_dtype=torch.float32),
                                       alpha=scale)
                p = torch.softmax(scores, dim=-1)
                out = torch.bmm(p.to(vals.dtype), vals.reshape(b * n_h, s, -1))
            else:
                qg = self._take(q, sel).to(work).reshape(b * n_h, 1, -1)
                kt = keys.to(work).reshape(b * n_h, s, -1).transpose(1, 2)
                scores = torch.baddbmm(bias.to(work), qg, kt, alpha=scale)  # [B*Hg, 1, S]
                p = torch.softmax(scores, dim=-1)
                out = torch.bmm(p, vals.to(work).reshape(b * n_h, s, -1))
            outs.append(out.view(b, n_h, 1, -1))
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        if self._unperm is not None:
            y = y.index_select(1, self._unperm)
        return y.to(q.dtype)


__all__ = ["LayerCache", "StepIndex", "GroupPlan", "GroupConsts", "Region", "plan_layer",
           "head_rule", "write_slots", "read_layout", "read_bias"]
