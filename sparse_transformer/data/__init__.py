"""Byte data: prepared data sets (registry), text sources, memory-mapped windows (paper 3, 7)."""

from sparse_transformer.data.bytes import ByteData, eval_windows, random_batch, resolve_data
from sparse_transformer.data.registry import (
    get_writer,
    prepare,
    register_dataset,
    register_writer,
    write_splits,
)

__all__ = ["ByteData", "eval_windows", "random_batch", "resolve_data", "get_writer", "prepare",
           "register_dataset", "register_writer", "write_splits"]
