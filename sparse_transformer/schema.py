"""Typed, validated reading of every JSON file the library reads (a leaf module: no torch).

A JSON file on disk is input like a command-line flag: a user may have edited it, a copy may be
damaged, a run directory may come from someone else. Python's ``json`` accepts what the rest of
the library cannot use: ``NaN`` and ``Infinity``, ``1e999`` (read as inf), integers of any size,
a string where a number belongs. The readers here return the object with every field the
library uses of the type and in the range it assumes, or raise a ``ValueError`` of one line
that names the file, the field and its valid range ("meta.json: record_size must be an integer
in [1, 2147483647], got 'abc'"). Fields we do not use pass through unchecked, so a newer
version's extra metadata does not make a file unreadable.

    loads(text, what)               strict JSON: no NaN/Infinity, no float overflow, no integer
                                    beyond 64 bits
    read_object(path)               a JSON object from a file, strictly
    check_data_meta(meta, what)     a prepared data set's meta.json (and its copy in train.json)
    check_train_meta(meta, what)    a checkpoint's train.json
    check_run_info(info, what)      a run directory's run.json
    check_state(state, what)        a checkpoint's state.pt, after ``torch.load``
    check_model_dict(d, what)       a config.json's object shape (ModelConfig checks the values)

The model's own fields are checked by ``ModelConfig.__post_init__`` (types, finite numbers,
ranges, and a size bound from this machine's memory); the training options by
``TrainConfig.__post_init__``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sparse_transformer.checks import INT64_MAX, check_bool, check_float, check_int

__all__ = ["DATA_KINDS", "MAX_RECORD", "MAX_SAMPLE_RATE", "RUN_NAMES", "SPLITS",
           "check_data_meta", "check_model_dict", "check_run_info", "check_state",
           "check_train_meta", "loads", "read_object"]

SPLITS = ("train", "valid", "test")
DATA_KINDS = ("text", "image", "audio")
MAX_RECORD = 2**31 - 1  # bytes per example (one image): int32 index arithmetic in the loaders
MAX_SAMPLE_RATE = 10_000_000  # samples per second of audio: far above any real recording
# The names run.json's manifest may list: what a run writes and nothing else (rundir.RUN_FILES),
# so a tampered manifest cannot make --force delete a user's file.
RUN_NAMES = ("checkpoints", "metrics.csv", "loss.png", "run.json", "summary.json", "tensorboard",
             ".lock")


class _Refused(ValueError):
    """A value json would accept and we do not; carries the message."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows here (numbers must be finite)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf
        raise _Refused(f"{text[:40]} is out of the range of a float")
    return value


def _int(text: str) -> int:
    # the digit count first: int() of a 100,000-digit string is slow and Python refuses it
    if len(text.lstrip("-")) > 19 or not -INT64_MAX - 1 <= int(text) <= INT64_MAX:
        raise _Refused(f"{text[:24]}{'...' if len(text) > 24 else ''} is beyond 64 bits "
                       f"(at most 2**63 - 1)")
    return int(text)


def loads(text: str, what: str = "JSON") -> Any:
    """``json.loads`` refusing NaN, Infinity, float overflow and integers beyond 64 bits, with
    a one-line ValueError that starts with ``what``."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_float, parse_int=_int)
    except _Refused as err:
        raise ValueError(f"{what}: {err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be ours") from None


def read_object(path: str | Path, what: str | None = None) -> dict[str, Any]:
    """A JSON object from ``path``, read strictly (``loads``); ValueError if it is anything else.
    A missing file is a FileNotFoundError, as from ``open``."""
    path = Path(path)
    what = what or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None
    obj = loads(text, what)
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must hold a JSON object, not a {type(obj).__name__}")
    return obj


# -- helpers: one field of an object ------------------------------------------------------------
def _optional_int(obj: dict, key: str, what: str, lo: int, hi: int | None = None) -> None:
    if obj.get(key) is not None:
        check_int(f"{what}: {key}", obj[key], lo, hi)


def _optional_str(obj: dict, key: str, what: str) -> None:
    if obj.get(key) is not None and not isinstance(obj[key], str):
        raise ValueError(f"{what}: {key} must be a string, got {obj[key]!r:.60}")


def _dict(obj: dict, key: str, what: str, required: bool = False) -> dict | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{what}: {key} must be a JSON object, got {value!r:.60}")
    return value


def _names(value: Any, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    """A list of plain file names (no folder, no '..'), optionally from ``allowed`` only."""
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of file names, got {value!r:.60}")
    for name in value:
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name \
                or "\\" in name or "\0" in name:
            raise ValueError(f"{what} must hold plain file names, got {name!r:.60}")
        if allowed is not None and name not in allowed:
            raise ValueError(f"{what} names {name!r:.60}, which is not a file this library "
                             f"writes ({', '.join(allowed)})")
    return value


# -- the files ----------------------------------------------------------------------------------
def check_data_meta(meta: Any, what: str = "meta.json") -> dict[str, Any]:
    """A prepared data set's metadata (``data/registry.py`` lists the fields); returns it.

    Checked: ``kind`` one of text/image/audio; ``name`` and ``source`` strings; ``sizes`` an
    object of non-negative 64-bit byte counts per split; for images ``record_size`` in
    [1, 2**31 - 1] and ``shape`` three positive ints whose product is ``record_size``; for audio
    ``sample_rate`` in [1, 10**7]; ``files`` plain names.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"{what} must hold a JSON object, not a {type(meta).__name__}")
    kind = meta.get("kind", "text")
    if kind not in DATA_KINDS:
        raise ValueError(f"{what}: kind must be one of {', '.join(DATA_KINDS)}, got {kind!r:.60}")
    for key in ("name", "source", "license"):
        _optional_str(meta, key, what)
    sizes = _dict(meta, "sizes", what)
    if sizes is not None:
        for split, n in sizes.items():
            check_int(f"{what}: sizes.{split}", n, 0)
    if meta.get("files") is not None:
        _names(meta["files"], f"{what}: files")
    record = meta.get("record_size")
    if record is not None or kind == "image":
        record = check_int(f"{what}: record_size", record, 1, MAX_RECORD)
    shape = meta.get("shape")
    if shape is not None or kind == "image":
        if not isinstance(shape, list) or len(shape) != 3:
            raise ValueError(f"{what}: shape must be [height, width, channels], got "
                             f"{shape!r:.60}")
        for axis, s in zip(("height", "width", "channels"), shape):
            check_int(f"{what}: shape {axis}", s, 1, MAX_RECORD)
        if record is not None and math.prod(shape) != record:
            raise ValueError(f"{what}: shape {shape} holds {math.prod(shape)} bytes, "
                             f"record_size says {record}")
    # audio prepared before the field existed is 12 kHz (codecs' default), so it may be absent
    _optional_int(meta, "sample_rate", what, 1, MAX_SAMPLE_RATE)
    _optional_int(meta, "mu", what, 1, 2**16)
    return meta


def check_model_dict(d: Any, what: str = "config.json") -> dict[str, Any]:
    """The shape of a saved ModelConfig (an object with string keys); ``ModelConfig.from_dict``
    then checks every field's type and range."""
    if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
        raise ValueError(f"{what} must hold a JSON object of ModelConfig fields, got "
                         f"{type(d).__name__}")
    return d


def check_train_meta(meta: Any, what: str = "train.json") -> dict[str, Any]:
    """A checkpoint's train.json: ``step`` in [0, 2**63 - 1], ``total`` null or >= 1,
    ``options`` an object (TrainConfig checks its values), ``data`` a data set's metadata,
    ``data_path`` and ``reason`` strings."""
    if not isinstance(meta, dict):
        raise ValueError(f"{what} must hold a JSON object, not a {type(meta).__name__}")
    check_int(f"{what}: step", meta.get("step"), 0)
    _optional_int(meta, "total", what, 1)
    _dict(meta, "options", what)
    if meta.get("data") is not None:
        check_data_meta(meta["data"], f"{what}: data")
    for key in ("data_path", "reason"):
        _optional_str(meta, key, what)
    return meta


def check_run_info(info: Any, what: str = "run.json") -> dict[str, Any]:
    """A run directory's run.json: ``train`` and ``model`` objects, ``files`` only names a run
    writes (so ``--force`` can never be told to delete anything else), ``world_size`` and
    ``params`` positive, ``tensorboard`` a bool, ``data`` a data set's metadata."""
    if not isinstance(info, dict):
        raise ValueError(f"{what} must hold a JSON object, not a {type(info).__name__}")
    _dict(info, "train", what, required=True)
    check_model_dict(_dict(info, "model", what, required=True), f"{what}: model")
    if info.get("files") is not None:
        _names(info["files"], f"{what}: files", RUN_NAMES)
    _optional_int(info, "world_size", what, 1, 2**20)
    _optional_int(info, "params", what, 0)
    if info.get("tensorboard") is not None:
        check_bool(f"{what}: tensorboard", info["tensorboard"])
    if info.get("data") is not None:
        check_data_meta(info["data"], f"{what}: data")
    _optional_str(info, "data_path", what)
    return info


def check_state(state: Any, what: str = "state.pt", step: int | None = None) -> dict[str, Any]:
    """A checkpoint's training state after ``torch.load(weights_only=True)``: ``step`` in
    [0, 2**63 - 1] (equal to train.json's ``step`` when given), ``total`` null or >= 1,
    ``elapsed_s`` finite and >= 0, ``optimizer`` an object, ``rng`` one state per rank (an
    object, or a non-empty list of objects), ``shard`` a bool, ``best_step`` an integer >= 0
    with a finite ``best_valid_bpb``, ``schedule_fraction`` (the cosine's position) in
    [0, 1]."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} must hold a dict, not a {type(state).__name__}")
    check_int(f"{what}: step", state.get("step"), 0)
    if step is not None and state["step"] != step:
        raise ValueError(f"{what}: step {state['step']} disagrees with train.json's {step}")
    _optional_int(state, "total", what, 1)
    check_float(f"{what}: elapsed_s", state.get("elapsed_s", 0.0), 0)
    _dict(state, "optimizer", what, required=True)
    rng = state.get("rng")
    ranks = [rng] if isinstance(rng, dict) else rng
    if not isinstance(ranks, list) or not ranks or not all(isinstance(r, dict) for r in ranks):
        raise ValueError(f"{what}: rng must be one RNG state per process (an object or a "
                         f"non-empty list of objects), got {type(rng).__name__}")
    for r in ranks:
        missing = [k for k in ("python", "numpy", "torch") if k not in r]
        if missing:
            raise ValueError(f"{what}: rng lacks the {', '.join(missing)} state")
    if state.get("shard") is not None:
        check_bool(f"{what}: shard", state["shard"])
    if state.get("scaler") is not None and not isinstance(state["scaler"], dict):
        raise ValueError(f"{what}: scaler must be a dict, got {type(state['scaler']).__name__}")
    _optional_int(state, "best_step", what, 0)
    if state.get("best_step") is not None:
        check_float(f"{what}: best_valid_bpb", state.get("best_valid_bpb"), 0)
    if state.get("schedule_fraction") is not None:
        check_float(f"{what}: schedule_fraction", state["schedule_fraction"], 0, 1)
    return state
