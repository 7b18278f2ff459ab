"""Block plans: which key tiles each query tile must compute, built in closed form.

A plan cuts a (padded) sequence into query tiles of ``q_block`` positions and key tiles of
``k_block`` positions and lists, per head and query tile, the key tiles holding at least one
allowed element, split into *full* tiles (every element allowed: no mask needed) and *partial*
tiles (the kernel evaluates the element rule). Plans are built from the pattern's terms
(``terms.term_blocks``) in time and memory proportional to the number of active tiles, so a plan
for n_ctx = 1,048,576 takes seconds.

Strided column parts are not planned in natural order, where they touch almost every tile.
Their heads get a second *component* that runs in the paper's reordered positions
(i -> (i mod l) * (n / l) + i // l, paper 5.5), where the column is a causal group of n / l
consecutive positions. A head with parts in two components is computed twice over disjoint key
sets and the two results are merged exactly through their log-sum-exps. Disjointness is kept by
starting the reordered column past the local window: a column key at distance i - j = m * l is
left to the column part only when the window does not already cover it.

Padding: n_ctx is padded at the end up to a multiple of the tile sizes and of every reordering
stride. Padded keys come after every real query, so causality hides them; outputs of padded
queries are dropped by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from sparse_transformer.patterns.base import Pattern, _check_positive_int
from sparse_transformer.patterns.terms import Term, term_blocks

_EXACT_CHUNK = 1 << 22  # elements evaluated at once when settling full/partial exactly


def strided_permutation(n: int, stride: int, device: torch.device | str | None = None
                        ) -> torch.Tensor:
    """``perm`` with ``x_reordered = x[..., perm, :]``: position i moves to (i mod l)(n/l) + i//l.

    In the reordered sequence, positions with the same residue mod l are contiguous, in their
    original order, so the strided column becomes a causal window of n / l positions.
    """
    if n % stride:
        raise ValueError(f"reordering needs n ({n}) to be a multiple of the stride ({stride})")
    g = n // stride
    r = torch.arange(n, device=device)
    return (r % g) * stride + r // g


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


@dataclass
class ComponentPlan:
    """The tiles of one group of heads that run in one position order.

    Index tensors are int32 and shaped [n_classes, n_query_tiles, max_tiles]; a head's row of
    them is ``head_class[k]`` for the k-th head of ``heads``. Only the first ``*_count`` entries
    of each row are meaningful (the rest are 0).
    """

    heads: tuple[int, ...]  # global head indices computed by this component
    order: int  # 0: natural positions; l > 0: reordered by stride l
    terms: tuple[tuple[Term, ...], ...]  # per class: OR of terms, in this component's positions
    head_class: torch.Tensor  # int32 [len(heads)]
    full_count: torch.Tensor  # int32 [C, n_qt]
    full_index: torch.Tensor  # int32 [C, n_qt, max_full]
    partial_count: torch.Tensor
    partial_index: torch.Tensor
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(repr=False)  # per class a,b,full
    n_ctx: int = 0  # padded length
    q_block: int = 0
    k_block: int = 0

    @property
    def n_query_tiles(self) -> int:
        return self.n_ctx // self.q_block

    @property
    def n_key_tiles(self) -> int:
        return self.n_ctx // self.k_block

    def head_terms(self) -> list[tuple[Term, ...]]:
        return [self.terms[int(c)] for c in self.head_class]

    def tiles_per_head(self) -> torch.Tensor:
        """Number of computed tiles for each head of the component (int64 [len(heads)])."""
        per_class = (self.full_count.sum(-1) + self.partial_count.sum(-1)).long()
        return per_class[self.head_class.long()]

    def key_side(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The transpose, for dK/dV: per key tile the query tiles that read it.

        Returns (full_count, full_index, partial_count, partial_index) shaped like the query-side
        tensors but indexed by key tile, listing query tiles.
        """
        full, part = [], []
        for a, b, f in self.pairs:
            full.append((b[f], a[f]))
            part.append((b[~f], a[~f]))
        fc, fi = _csr(full, self.n_key_tiles)
        pc, pi = _csr(part, self.n_key_tiles)
        return fc, fi, pc, pi

    def key_groups(self, max_group: int, max_overhead: float, skip: np.ndarray | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                              torch.Tensor]:
        """Key tiles taken ``g`` at a time by one dK/dV program, and the query tiles it walks.

        A dK/dV program over one k_block-wide key tile does skinny products (M = k_block); one
        over g tiles does them g times wider and reads each query tile once for all g. Tiles
        are grouped where that adds little work: in each class they are sorted by how many
        query tiles read them (most first, so the longest programs start first), and a tile
        joins the open group when the query tiles that read it are a subset of those that read
        the group's first tile. So the fixed pattern's summary tiles of g consecutive blocks
        share a program (their lists differ by the few diagonal tiles), as do causal's and
        local's consecutive tiles; tiles of unrelated lists are never mixed. A query tile is
        *full* for the group only where it is full for every member; elsewhere the kernel
        evaluates the element rule, which masks members that tile does not read. ``g`` is the
        largest power of two <= ``max_group`` whose grouping costs at most ``max_overhead``
        times the ungrouped tile products (padding slots included).

        ``skip`` (bool [C, n_key_tiles]) leaves key tiles out of every group: tiles whose
        gradients another launch writes (the dQ programs' own diagonal tiles,
        ``kernels/triton_attention._owned``).

        Returns (key_tiles int32 [C, G, g] with -1 for empty slots, then full_count,
        full_index, partial_count, partial_index over the G groups, like ``key_side``).
        """
        fc, fi, pc, pi = (x.numpy() for x in self.key_side())
        C, n_kt = fc.shape
        lists = [[(fi[c, k, :fc[c, k]], pi[c, k, :pc[c, k]]) for k in range(n_kt)]
                 for c in range(C)]
        keep = np.ones((C, n_kt), dtype=bool) if skip is None else ~np.asarray(skip, dtype=bool)
        ungrouped = max(1, int((fc + pc)[keep].sum()))
        g = max(1, max_group)
        while True:
            groups = [_group_tiles(per_tile, g, np.flatnonzero(keep[c]))
                      for c, per_tile in enumerate(lists)]
            cost = g * sum(len(full) + len(part) for cls in groups for _, full, part in cls)
            if g == 1 or cost <= max_overhead * ungrouped:
                break
            g //= 2
        n_groups = max(1, max(len(cls) for cls in groups))  # one empty group if all skipped
        tiles = np.full((C, n_groups, g), -1, dtype=np.int32)
        full_rows, part_rows = [], []
        for c, cls in enumerate(groups):
            fr, pr = ([], []), ([], [])
            for i, (members, full, part) in enumerate(cls):
                tiles[c, i, :len(members)] = members
                fr[0].append(np.full(len(full), i)), fr[1].append(full)
                pr[0].append(np.full(len(part), i)), pr[1].append(part)
            full_rows.append(tuple(np.concatenate(x or [np.zeros(0, np.int64)]).astype(np.int64)
                                   for x in fr))
            part_rows.append(tuple(np.concatenate(x or [np.zeros(0, np.int64)]).astype(np.int64)
                                   for x in pr))
        gfc, gfi = _csr(full_rows, n_groups)
        gpc, gpi = _csr(part_rows, n_groups)
        return torch.from_numpy(tiles), gfc, gfi, gpc, gpi

    def to(self, device: torch.device | str) -> "ComponentPlan":
        """A copy with the index tensors on ``device`` (backends cache theirs: kernels/)."""
        return ComponentPlan(
            heads=self.heads, order=self.order, terms=self.terms,
            head_class=self.head_class.to(device),
            full_count=self.full_count.to(device), full_index=self.full_index.to(device),
            partial_count=self.partial_count.to(device),
            partial_index=self.partial_index.to(device),
            pairs=self.pairs, n_ctx=self.n_ctx, q_block=self.q_block, k_block=self.k_block,
        )


@dataclass
class AttentionPlan:
    """All components of a pattern at one (n_ctx, n_heads, q_block, k_block)."""

    pattern: Pattern
    n_ctx: int  # the caller's length
    n_pad: int  # padded length every component works at
    n_heads: int
    q_block: int
    k_block: int
    components: list[ComponentPlan]

    def tiles_computed(self) -> int:
        return int(sum(int(cp.tiles_per_head().sum()) for cp in self.components))

    def head_components(self, h: int) -> list[ComponentPlan]:
        return [cp for cp in self.components if h in cp.heads]

    def to(self, device: torch.device | str) -> "AttentionPlan":
        return AttentionPlan(self.pattern, self.n_ctx, self.n_pad, self.n_heads, self.q_block,
                             self.k_block, [cp.to(device) for cp in self.components])

    def block_mask(self, h: int) -> torch.Tensor:
        """Dense bool [n_qt, n_kt] of active tiles for head h in natural order (tests, pictures).

        Only meaningful for heads planned entirely in natural order.
        """
        nq, nk = self.n_pad // self.q_block, self.n_pad // self.k_block
        out = torch.zeros(nq, nk, dtype=torch.bool)
        for cp in self.head_components(h):
            if cp.order:
                raise ValueError("block_mask: head has a reordered component; plan with reorder=False")
            a, b, _ = cp.pairs[int(cp.head_class[cp.heads.index(h)])]
            out[torch.from_numpy(a), torch.from_numpy(b)] = True
        return out


def _csr(rows: list[tuple[np.ndarray, np.ndarray]], n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class (row ids, column ids), sorted by row -> int32 counts [C, R] and index [C, R, M]."""
    counts = [np.bincount(r, minlength=n_rows) for r, _ in rows]
    width = max([int(c.max()) if c.size else 0 for c in counts] + [1])
    index = np.zeros((len(rows), n_rows, width), dtype=np.int32)
    for k, ((r, c), cnt) in enumerate(zip(rows, counts)):
        if r.size == 0:
            continue
        order = np.lexsort((c, r))
        r, c = r[order], c[order]
        start = np.cumsum(cnt) - cnt
        index[k, r, np.arange(r.size) - start[r]] = c
    return torch.from_numpy(np.stack(counts).astype(np.int32)), torch.from_numpy(index)


def _group_tiles(per_tile: list[tuple[np.ndarray, np.ndarray]], g: int, tiles: np.ndarray
                 ) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """One class's key ``tiles`` in groups of up to g (``ComponentPlan.key_groups``).

    ``per_tile[k]`` = (query tiles reading key tile k fully, partially), each sorted. Returns
    per group (member tiles, query tiles full for every member, the other query tiles).
    """
    reads = [np.union1d(f, p) for f, p in per_tile]
    order = sorted((int(k) for k in tiles),
                   key=lambda k: (-reads[k].size, reads[k][0] if reads[k].size else 0, k))
    groups: list[list[int]] = []
    for k in order:
        if groups and len(groups[-1]) < g and _subset(reads[k], reads[groups[-1][0]]):
            groups[-1].append(k)
        else:
            groups.append([k])
    out = []
    for members in groups:
        union = reads[members[0]]
        full = per_tile[members[0]][0]
        for k in members[1:]:
            full = np.intersect1d(full, per_tile[k][0], assume_unique=True)
        out.append((members, full, np.setdiff1d(union, full, assume_unique=True)))
    return out


def _subset(a: np.ndarray, b: np.ndarray) -> bool:
    """Sorted unique a within sorted unique b (b is usually a run of consecutive tiles)."""
    if a.size == 0:
        return True
    if a.size > b.size or a[0] < b[0] or a[-1] > b[-1]:
        return False
    if b[-1] - b[0] + 1 == b.size:  # b is a range: the bounds settle it
        return True
    return bool(np.isin(a, b, assume_unique=True).all())


def _class_pairs(terms: tuple[Term, ...], n: int, qb: int, kb: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique active tiles of an OR of terms, with an exact full flag."""
    nkb = n // kb
    parts = [term_blocks(t, n, qb, kb) for t in terms]
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    f = np.concatenate([p[2] for p in parts])
    key = a * nkb + b
    uniq, inverse, hits = np.unique(key, return_inverse=True, return_counts=True)
    full = np.zeros(uniq.size, dtype=bool)
    np.logical_or.at(full, inverse, f)
    # A tile no single term fills may still be filled by their union (e.g. a fixed head's own
    # block next to its summary columns): settle those few tiles element by element.
    unsure = np.nonzero(~full & (hits > 1))[0]
    if unsure.size:
        per = qb * kb
        step = max(1, _EXACT_CHUNK // per)
        ii = np.arange(qb)[:, None]
        jj = np.arange(kb)[None, :]
        for s in range(0, unsure.size, step):
            idx = unsure[s:s + step]
            ta, tb = uniq[idx] // nkb, uniq[idx] % nkb
            i = (ta * qb)[:, None, None] + ii
            j = (tb * kb)[:, None, None] + jj
            ok = np.zeros((idx.size, qb, kb), dtype=bool)
            for t in terms:
                ok |= t.allowed_np(i, j)
            full[idx] = ok.all(axis=(1, 2))
    return uniq // nkb, uniq % nkb, full


def split_head(terms: tuple[Term, ...], reorder: bool = True
               ) -> tuple[tuple[Term, ...], tuple[int, int] | None]:
    """Natural-order terms and, if the column part can run reordered, (stride, min distance).

    The reordered column must not repeat keys the natural terms already cover, so that the two
    results can be merged by log-sum-exp. With natural terms that are causal the column adds
    nothing; with local windows starting at distance 0 it starts past the widest window; any
    other mix stays in natural order (correct, just not accelerated).
    """
    columns = [t for t in terms if t.kind == "stride"]
    others = tuple(t for t in terms if t.kind != "stride")
    if not reorder or len(columns) != 1:
        return terms, None
    col = columns[0]
    if any(t.kind == "causal" and t.offset == 0 for t in others):
        return others, None  # the column is inside causal attention already
    if any(t.kind != "window" or t.offset != 0 for t in others):
        return terms, None
    reach = max([t.window for t in others] + [col.offset])  # distances already covered
    return others, (col.stride, -(-reach // col.stride))


def padded_length(n_ctx: int, q_block: int, k_block: int, strides=()) -> int:
    """The length a plan works at: n_ctx rounded up to a multiple of both tile sizes and of
    every stride it reorders by (so each reordered residue class has n / l positions)."""
    multiple = math.lcm(q_block, k_block, *strides)
    return -(-n_ctx // multiple) * multiple


def build_plan(pattern: Pattern, n_ctx: int, n_heads: int, q_block: int, k_block: int,
               reorder: bool = True) -> AttentionPlan:
    """Plan ``pattern`` for ``n_ctx`` positions and ``n_heads`` heads.

    Not memoised: whoever runs a plan keeps it (``kernels.prepare`` builds one per layer
    pattern and length, owned by the model's forward state), so the planner holds nothing.
    """
    _check_positive_int("n_ctx", n_ctx)
    _check_positive_int("q_block", q_block)
    _check_positive_int("k_block", k_block)
    pattern.check_heads(n_heads)

    natural: dict[tuple[str, ...], list[tuple[int, tuple[Term, ...]]]] = {}
    columns: dict[int, list[tuple[int, int]]] = {}
    for h in range(n_heads):
        nat, col = split_head(pattern.head_terms(h, n_heads), reorder)
        if nat:
            natural.setdefault(tuple(t.kind for t in nat), []).append((h, nat))
        if col:
            columns.setdefault(col[0], []).append((h, col[1]))

    n_pad = padded_length(n_ctx, q_block, k_block, columns.keys())

    components: list[ComponentPlan] = []
    for members in natural.values():
        components.append(_component(members, 0, n_pad, q_block, k_block))
    for stride, members in sorted(columns.items()):
        group = n_pad // stride
        # In reordered positions a column is a causal group of n/l positions; a minimum distance
        # of m strides becomes a minimum distance of m positions.
        reordered = [(h, (Term(group=group, offset=m),)) for h, m in members]
        components.append(_component(reordered, stride, n_pad, q_block, k_block))
    return AttentionPlan(pattern, n_ctx, n_pad, n_heads, q_block, k_block, components)


def _component(members: list[tuple[int, tuple[Term, ...]]], order: int, n: int, qb: int, kb: int
               ) -> ComponentPlan:
    classes: list[tuple[Term, ...]] = []
    head_class = []
    for _, terms in members:
        if terms not in classes:
            classes.append(terms)
        head_class.append(classes.index(terms))
    pairs = [_class_pairs(terms, n, qb, kb) for terms in classes]
    fc, fi = _csr([(a[f], b[f]) for a, b, f in pairs], n // qb)
    pc, pi = _csr([(a[~f], b[~f]) for a, b, f in pairs], n // qb)
    return ComponentPlan(
        heads=tuple(h for h, _ in members), order=order, terms=tuple(classes),
        head_class=torch.tensor(head_class, dtype=torch.int32),
        full_count=fc, full_index=fi, partial_count=pc, partial_index=pi,
        pairs=pairs, n_ctx=n, q_block=qb, k_block=kb,
    )
