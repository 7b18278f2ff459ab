"""Device tables that backends derive from plan components, built once and owned here.

A plan (``patterns/plan.py``) is a host-side value, cached by ``build_plan``. What a backend
makes of one of its components on a device (tile lists moved to the GPU, element masks, a
FlexAttention ``BlockMask``) is kept in this one table, keyed by the component's identity,
the table's name and the device, rather than on the plan object. An entry holds the component
itself, so the identity it is keyed by cannot be reused while the entry lives.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch

from sparse_transformer.patterns import ComponentPlan

T = TypeVar("T")
_TABLES: dict[tuple[int, str, Any, torch.device], tuple[ComponentPlan, Any]] = {}


def component_table(cp: ComponentPlan, name: str, device: torch.device,
                    build: Callable[[], T], key: Any = None) -> T:
    """``build()`` for (component, name, key, device), computed once and then looked up."""
    k = (id(cp), name, key, torch.device(device))
    entry = _TABLES.get(k)
    if entry is None or entry[0] is not cp:
        entry = (cp, build())
        _TABLES[k] = entry
    return entry[1]


def clear() -> None:
    """Drop every table (tests; or to free device memory after a change of lengths)."""
    _TABLES.clear()


def on_device(cp: ComponentPlan, device: torch.device) -> ComponentPlan:
    """The component with its index tensors on ``device`` (one copy per device)."""
    return component_table(cp, "tensors", device, lambda: cp.to(device))
