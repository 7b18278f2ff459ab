"""Pattern-aware key/value caches for incremental decoding (issue 6; paper 4.2-4.3, 5.1, 5.6).

Decoding one token at position i needs, in every layer and head, the keys and values of the
positions that head's pattern lets i see. A dense cache stores all of them and reads all of
them. Here each head's rule -- an OR of ``Term`` s (``patterns/terms.py``) -- decides what is
stored and read, term by term, so every pattern (and union, per-head split or schedule of
patterns) is covered without looking at pattern class names. What each term kind stores and
reads is in the kind table (``patterns/kinds.py``: ``region``, ``slot``, ``key``):

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

The model owns its caches: ``model.decode_state(...)`` builds one ``LayerCache`` per layer,
sharing the group plans (and so the per-step index work) of layers with equal patterns, and
``Attention.forward`` calls ``prefill`` and ``step`` (``model/transformer.py``).

Shapes: B batch, H heads, Hg heads of one group, S slots, Dk/Dv per-head key/value width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparse_transformer.patterns import Pattern, Term
from sparse_transformer.patterns.kinds import Region


def _shape(t: Term) -> tuple:
    """What fixes a term's store size: its kind and window/group/period+width/stride."""
    return (t.rules.code, t.window, t.group, t.period, t.hi - t.lo, t.stride)


def head_rule(pattern: Pattern, h: int, n_heads: int) -> tuple[Term, ...]:
    """Head h's terms in canonical order; a causal offset-0 term subsumes every other term."""
    terms = pattern.head_terms(h, n_heads)
    if any(t.kind == "causal" and t.offset == 0 for t in terms):
        return (Term(),)
    return tuple(sorted(set(terms), key=lambda t: (_shape(t), t.lo, t.offset)))


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


def plan_layer(pattern: Pattern, n_heads: int, n_ctx: int, dense: bool = False
               ) -> tuple[GroupPlan, ...]:
    """Group a layer's heads by rule shape and lay out each group's regions.

    Direct regions (read whole) come first, then the trash slot, then stride regions (read one
    residue row each), so a group without a stride term reads its buffer as one view.
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
            if not t.rules.gathered:
                regions[k] = t.rules.region(t, start, n_ctx)
                start += regions[k].size
        trash = Region("trash", start, 1)  # right after the direct regions
        start += 1
        for k, t in enumerate(proto):
            if t.rules.gathered:
                regions[k] = t.rules.region(t, start, n_ctx)
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
        self.rules = proto.rules
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
        self.lo = [torch.tensor([g.summary_lo[a][k] for a in range(n_h)], device=device)[:, None]
                   if r.kind == "summary" else 0 for k, r in enumerate(g.term_regions)]
        # All heads of a (non-dense) group have one term per region with the same shape, so a
        # region's accept/exclude terms vectorise over heads; the dense baseline loops instead.
        self.vector = all(len(acc) == 1 and _shape(acc[0]) == _shape(g.accept[0][k][0])
                          for row in g.accept for k, acc in enumerate(row))
        self.terms = ([_HeadTerm([g.accept[a][k][0] for a in range(n_h)], device)
                       for k in range(len(g.term_regions))] if self.vector else None)
        direct, strided = [], []
        for k, r in enumerate(g.regions):
            who = -1 if r.kind == "trash" else k
            gathered = r.kind != "trash" and r.rules.gathered
            (strided if gathered else direct).extend([who] * r.read_size)
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
        off, keep = r.rules.slot(r, pos, last, c.lo[k])
        s = r.start + off
        if keep is not None:
            s = torch.where(keep, s, trash)
        rows.append(s.expand(len(g.heads), -1))  # [P] or per head [Hg, P] -> [Hg, P]
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
        if r.kind == "trash":
            direct_pos.append((i + 1)[None].expand(n_h, -1))  # j > i: never a valid key
            continue
        j = r.rules.key(r, i, s, c.lo[k]).expand(n_h, -1)
        if r.rules.gathered:  # a residue row (stride): gathered from the region
            stride_idx.append(r.rules.gather(r, i, s))
            stride_pos.append(j)
        else:
            direct_pos.append(j)
    pos = torch.cat(direct_pos + stride_pos, dim=1)
    if not stride_idx:
        return None, pos
    n_direct = sum(r.size for r in g.regions if r.kind == "trash" or not r.rules.gathered)
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
            if g.regions[k].rules.negative_keys:  # slots that stand for j < 0
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


class CachePlans:
    """The group plans of one decoding run's layers, each distinct one once, numbered.

    Layers with equal patterns get the same numbers, so a ``StepIndex`` computes their slots
    and masks once per token: a 30-layer model with one pattern does it once, not 30 times.
    Owned by whoever builds the caches (``model.decode_state``); ``LayerCache`` makes its own
    when used alone.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.groups: list[tuple[GroupPlan, GroupConsts]] = []
        self._layers: dict[tuple, tuple[int, ...]] = {}

    def layer(self, pattern: Pattern, n_heads: int, n_ctx: int, dense: bool = False
              ) -> tuple[int, ...]:
        """The numbers of the group plans of a layer with this pattern (planned on first use)."""
        key = (pattern, n_heads, n_ctx, dense)
        if key not in self._layers:
            first = len(self.groups)
            self.groups += [(g, GroupConsts(g, self.device))
                            for g in plan_layer(pattern, n_heads, n_ctx, dense)]
            self._layers[key] = tuple(range(first, len(self.groups)))
        return self._layers[key]


class StepIndex:
    """One step's index tensors for query position ``i`` [1] (a device tensor), computed per
    distinct group plan of ``plans`` on first use and shared by all layers.

    ``batch`` fixes the bias layout [B * Hg, 1, S] that ``baddbmm`` wants.
    """

    def __init__(self, i: torch.Tensor, batch: int, plans: CachePlans):
        self.i, self.batch, self.plans = i, batch, plans
        self._memo: dict = {}  # by group plan number (and ("bmm", number))

    def clear(self) -> None:
        """Forget the last step's tensors (the next ``get`` computes them for ``i`` as it is)."""
        self._memo.clear()

    def get_flat(self, number: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(write slots long [Hg, R], gather index [S] or None, bias float32 [Hg, S]) of group
        plan ``number``: what the fused step (``triton_decode``) reads."""
        if number not in self._memo:
            g, c = self.plans.groups[number]
            slots = write_slots(g, c, self.i, self.i)[..., 0]  # one position: [Hg, R]
            index, pos = read_layout(g, c, self.i)
            self._memo[number] = (slots, index, read_bias(g, c, self.i, pos))
        return self._memo[number]

    def get(self, number: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(write slots [Hg, R, 1], gather index or None, bias [B * Hg, 1, S]) of group plan
        ``number``: the layout of the torch step's scatter and ``baddbmm``."""
        key = ("bmm", number)
        if key not in self._memo:
            slots, index, bias = self.get_flat(number)
            n_h, s = bias.shape
            bias = bias[None].expand(self.batch, n_h, s).reshape(self.batch * n_h, 1, s)
            self._memo[key] = (slots[..., None], index, bias)
        return self._memo[key]


def lowp_gemm(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """How to get fp32 q.k from bf16/fp16 q and k on this device without upcasting them.

    "baddbmm" / "bmm" when ``out_dtype=torch.float32`` GEMMs exist and agree with the
    upcast product; None means upcast. A probe that runs a few tiny GEMMs: call it once per
    decoding run, outside any CUDA-graph capture (``model.decode_state`` does).
    """
    device = torch.device(device)
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
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
            return name
    return None


class LayerCache:
    """The keys and values one layer keeps, per head group, and the attention of one query.

    Args:
        pattern: the layer's pattern (``cfg.layer_pattern(r)``).
        n_heads, n_ctx, batch: model heads, context length, samples decoded together.
        d_k, d_v: per-head query/key and value widths.
        dtype, device: storage (the model's parameter dtype); q.k runs in fp32 (paper 5.6).
        dense: build the dense baseline (every position stored and read).
        plans: the decoding run's ``CachePlans`` (shared by its layers); its own by default.
        lowp: ``lowp_gemm(device, dtype)``, probed once per run by the caller; None upcasts.
        fused: one Triton launch per head group and step (``triton_decode``) instead of the
            torch ops; CUDA, or Triton's interpreter on the CPU; fp32/bf16/fp16.
    """

    def __init__(self, pattern: Pattern, n_heads: int, n_ctx: int, batch: int, d_k: int,
                 d_v: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", dense: bool = False,
                 plans: CachePlans | None = None, lowp: str | None = None,
                 fused: bool = False):
        self.plans = CachePlans(device) if plans is None else plans
        self.numbers = self.plans.layer(pattern, n_heads, n_ctx, dense)
        self.groups = tuple(self.plans.groups[k][0] for k in self.numbers)
        self.n_heads, self.n_ctx, self.batch = n_heads, n_ctx, batch
        # Zero-filled, never empty: masked slots still enter q.k and p.v, and 0 * NaN = NaN.
        self.k = [torch.zeros(batch, len(g.heads), g.size, d_k, dtype=dtype, device=device)
                  for g in self.groups]
        self.v = [torch.zeros(batch, len(g.heads), g.size, d_v, dtype=dtype, device=device)
                  for g in self.groups]
        order = [h for g in self.groups for h in g.heads]
        self._natural = order == list(range(n_heads))
        self._sel = [self._selector(g.heads, device) for g in self.groups]
        self._consts = [self.plans.groups[k][1] for k in self.numbers]
        self._lowp = lowp
        self._unperm = (None if self._natural else
                        torch.tensor(order, device=device).argsort())
        self.fused = bool(fused)
        if self.fused:
            from sparse_transformer.kernels import triton_decode

            triton_decode.check_support(dtype, torch.device(device))
            self._heads = [torch.tensor(g.heads, dtype=torch.long, device=device)
                           for g in self.groups]
            dev = torch.device(device)
            sms = (torch.cuda.get_device_properties(dev).multi_processor_count
                   if dev.type == "cuda" else 4)  # (the interpreter: any small count)
            self._chunks = [triton_decode.pick_chunk(g.read_size, batch * len(g.heads), sms)
                            for g in self.groups]

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
        except for bf16/fp16 caches on CUDA (see ``lowp_gemm``). The result comes back in q's
        dtype. ``idx`` is this step's index over the same ``plans``.
        """
        if self.fused:
            return self._fused_step(q, k, v, idx, scale)
        b = q.shape[0]
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        outs = []
        for number, sel, kb, vb in zip(self.numbers, self._sel, self.k, self.v):
            slots, index, bias = idx.get(number)
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

    def _fused_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: StepIndex,
                    scale: float) -> torch.Tensor:
        """``step`` as one Triton launch per head group; each writes its heads of the output
        in place, so there is nothing to concatenate or un-permute."""
        from sparse_transformer.kernels import triton_decode

        out = torch.empty(q.shape[0], self.n_heads, 1, self.v[0].shape[-1], dtype=q.dtype,
                          device=q.device)
        for number, heads, kb, vb, chunk in zip(self.numbers, self._heads, self.k, self.v,
                                                self._chunks):
            slots, index, bias = idx.get_flat(number)
            triton_decode.cache_step(q, k, v, kb, vb, heads, slots, index, bias, scale, out,
                                     chunk)
        return out


__all__ = ["LayerCache", "CachePlans", "StepIndex", "GroupPlan", "GroupConsts", "Region",
           "plan_layer", "lowp_gemm", "head_rule", "write_slots", "read_layout", "read_bias"]
