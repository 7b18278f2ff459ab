"""Combining patterns: unions, per-head assignment, and the per-layer schedule (paper 5.1).

- ``union(a, b)``: a key is visible if any part allows it (merged heads, Eq. 7).
- ``per_head(a, b, ...)``: the heads are cut into len(parts) contiguous, equal groups; group k
  uses part k with head indices local to its group (multi-head, Eq. 8; "split" strided heads).
- ``schedule(a, b, ...)``: layer r uses part r mod len (interleaved layers, Eq. 6). A schedule is
  not itself a pattern: a model asks it for each layer's pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sparse_transformer.patterns.base import Pattern
from sparse_transformer.patterns.terms import Term


def _require_patterns(kind: str, parts: tuple) -> None:
    if not parts:
        raise ValueError(f"{kind} needs at least one pattern")
    for p in parts:
        if not isinstance(p, Pattern):
            raise TypeError(f"{kind} takes Pattern objects, got {type(p).__name__}")


@dataclass(frozen=True, repr=False)
class Union(Pattern):
    parts: tuple[Pattern, ...]
    label: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _require_patterns("union", self.parts)

    @property
    def name(self) -> str:
        return self.label or "union(" + ", ".join(p.name for p in self.parts) + ")"

    @property
    def head_multiple(self) -> int:
        return math.lcm(*(p.head_multiple for p in self.parts))

    def head_terms(self, h: int, n_heads: int) -> tuple[Term, ...]:
        out: list[Term] = []
        for p in self.parts:
            for t in p.head_terms(h, n_heads):
                if t not in out:
                    out.append(t)
        return tuple(out)


@dataclass(frozen=True, repr=False)
class PerHead(Pattern):
    parts: tuple[Pattern, ...]
    label: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _require_patterns("per_head", self.parts)

    @property
    def name(self) -> str:
        return self.label or "per_head(" + ", ".join(p.name for p in self.parts) + ")"

    @property
    def head_multiple(self) -> int:
        return len(self.parts) * math.lcm(*(p.head_multiple for p in self.parts))

    def part_of(self, h: int, n_heads: int) -> tuple[Pattern, int, int]:
        """(pattern, head index inside its group, group size) for global head h."""
        size = n_heads // len(self.parts)
        return self.parts[h // size], h % size, size

    def head_terms(self, h: int, n_heads: int) -> tuple[Term, ...]:
        part, local_h, size = self.part_of(h, n_heads)
        return part.head_terms(local_h, size)


def union(*parts: Pattern, name: str | None = None) -> Union:
    """Every head may attend where any of ``parts`` allows (merged heads, paper Eq. 7)."""
    return Union(tuple(parts), name)


def per_head(*parts: Pattern, name: str | None = None) -> PerHead:
    """Cut the heads into ``len(parts)`` equal contiguous groups; group k uses ``parts[k]``."""
    return PerHead(tuple(parts), name)


@dataclass(frozen=True)
class Schedule:
    """Per-layer patterns: layer r uses ``parts[r % len(parts)]`` (paper Eq. 6)."""

    parts: tuple[Pattern, ...]

    def __post_init__(self) -> None:
        _require_patterns("schedule", self.parts)

    def for_layer(self, layer: int) -> Pattern:
        return self.parts[layer % len(self.parts)]

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def name(self) -> str:
        return "schedule(" + ", ".join(p.name for p in self.parts) + ")"

    def check_heads(self, n_heads: int) -> None:
        for p in self.parts:
            p.check_heads(n_heads)


def schedule(*parts: Pattern) -> Schedule:
    """Interleave patterns over depth: layer r attends with ``parts[r % len(parts)]``."""
    return Schedule(tuple(parts))
