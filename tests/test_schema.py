"""schema.py: strict JSON and the validators of every JSON file the library reads (issue 20).

The readers of train.json, run.json and state.pt call these in phase 2 (train/checkpoint.py,
train/rundir.py); the tests here pin what they refuse, so that phase only wires them in.
"""

from __future__ import annotations


import pytest

from sparse_transformer.checks import INT64_MAX, check_float, check_int, check_memory
from sparse_transformer.schema import (
    check_data_meta,
    check_run_info,
    check_state,
    check_train_meta,
    loads,
    read_object,
)


@pytest.mark.parametrize("text,needle", [
    ('{"a": NaN}', "NaN is not a number JSON allows here"),
    ('{"a": Infinity}', "Infinity is not a number JSON allows here"),
    ('{"a": -Infinity}', "-Infinity is not a number"),
    ('{"a": 1e999}', "1e999 is out of the range of a float"),
    ('{"a": -1e999}', "-1e999 is out of the range of a float"),
    (f'{{"a": {2**63}}}', "is beyond 64 bits (at most 2**63 - 1)"),
    (f'{{"a": {-2**63 - 1}}}', "is beyond 64 bits"),
    ('{"a": ' + "9" * 5000 + "}", "is beyond 64 bits"),  # Python's own limit is 4,300 digits
    ('{"a": ', "is not valid JSON"),
    ("[" * 100_000, "nested too deeply"),
])
def test_loads_refuses_what_json_accepts_and_we_cannot_use(text, needle):
    with pytest.raises(ValueError, match="^x.json") as info:
        loads(text, "x.json")
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_loads_keeps_ordinary_numbers():
    assert loads(f'{{"a": {INT64_MAX}, "b": -{2**63}, "c": 1.5e308, "d": 0.1}}') == {
        "a": INT64_MAX, "b": -2**63, "c": 1.5e308, "d": 0.1}


def test_read_object(tmp_path):
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="must hold a JSON object, not a list"):
        read_object(tmp_path / "list.json")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_object(tmp_path / "latin.json")
    with pytest.raises(FileNotFoundError):
        read_object(tmp_path / "missing.json")


def test_checks_bound_integers_to_64_bits_and_say_so():
    with pytest.raises(ValueError, match=r"--steps must be an integer in \[1, 2\*\*63 - 1\], "
                                         r"got 1180591620717411303424"):
        check_int("--steps", 2**70, 1)
    with pytest.raises(ValueError, match=r"x must be an integer in \[-2\*\*63, 2\*\*63 - 1\]"):
        check_int("x", -2**70)
    with pytest.raises(ValueError, match=r"characters\)"):  # a 400-digit int is not printed
        check_int("x", 10**400, 0)
    with pytest.raises(ValueError, match="x must be a finite number > 0"):
        check_float("x", 10**400, 0, lo_open=True)  # math.isfinite would raise OverflowError
    assert check_int("x", INT64_MAX, 0) == INT64_MAX


def test_check_memory_names_both_sizes():
    with pytest.raises(ValueError, match=r"^a model needs at least 2.0 GiB of memory, more than "
                                         r"the 1.0 GiB of this machine; use less$"):
        check_memory("a model", 2 << 30, 1 << 30, hint="use less")
    check_memory("a model", 1 << 30, 1 << 30)


GOOD_META = {"name": "x", "kind": "image", "record_size": 16, "shape": [4, 4, 1],
             "sizes": {"train": 160, "valid": 16, "test": 16},
             "files": ["train.bin", "valid.bin", "test.bin", "meta.json"]}


@pytest.mark.parametrize("change,needle", [
    ({"kind": "bogus"}, "kind must be one of text, image, audio, got 'bogus'"),
    ({"kind": 5}, "kind must be one of"),
    ({"name": [1]}, "name must be a string"),
    ({"sizes": [1]}, "sizes must be a JSON object"),
    ({"sizes": {"train": -1}}, "sizes.train must be an integer >= 0, got -1"),
    ({"sizes": {"train": 1.5}}, "sizes.train must be an integer"),
    ({"files": ["../../etc/passwd"]}, "files must hold plain file names"),
    ({"files": "train.bin"}, "files must be a list of file names"),
    ({"record_size": "abc"}, "record_size must be an integer in [1, 2147483647], got 'abc'"),
    ({"record_size": 0}, "record_size must be an integer in [1, "),
    ({"record_size": None}, "record_size must be an integer in [1, "),  # images need one
    ({"shape": [4, 4]}, "shape must be [height, width, channels]"),
    ({"shape": [4, -4, 1]}, "shape width must be an integer in [1, "),
    ({"shape": [4, 4, 2]}, "shape [4, 4, 2] holds 32 bytes, record_size says 16"),
    ({"kind": "audio", "record_size": None, "shape": None, "sample_rate": 0},
     "sample_rate must be an integer in [1, 10000000], got 0"),
    ({"kind": "audio", "record_size": None, "shape": None, "sample_rate": "fast"},
     "sample_rate must be an integer"),
    ({"mu": 0}, "mu must be an integer in [1, 65536]"),
])
def test_data_meta_fields(change, needle):
    meta = {k: v for k, v in {**GOOD_META, **change}.items() if v is not None}
    with pytest.raises(ValueError) as info:
        check_data_meta(meta, "meta.json")
    assert str(info.value).startswith("meta.json") and needle in str(info.value)


def test_data_meta_accepts_what_we_write_and_unknown_fields():
    assert check_data_meta({**GOOD_META, "license": "CC0", "tracks": [{}], "new_field": 1})
    assert check_data_meta({"kind": "audio", "sizes": {"train": 1}})  # no sample_rate: 12 kHz
    assert check_data_meta({}) == {}  # a raw file's meta: text


def _train_meta(**change):
    return {"step": 6, "total": 10, "options": {"lr": 0.1}, "data": {"kind": "text"},
            "data_path": "/d", "reason": "final", **change}


@pytest.mark.parametrize("change,needle", [
    ({"step": -5}, "train.json: step must be an integer >= 0, got -5"),
    ({"step": None}, "step must be an integer >= 0, got None"),
    ({"step": "6"}, "step must be an integer"),
    ({"step": 2**63}, "step must be an integer in [0, 2**63 - 1]"),
    ({"total": 0}, "total must be an integer >= 1"),
    ({"options": [1]}, "options must be a JSON object"),
    ({"data": {"kind": "bogus"}}, "train.json: data: kind must be one of"),
    ({"data_path": 5}, "data_path must be a string"),
])
def test_train_meta_fields(change, needle):
    with pytest.raises(ValueError, match="^train.json") as info:
        check_train_meta(_train_meta(**change))
    assert needle in str(info.value)


def test_train_meta_accepts_a_time_budget_run():
    assert check_train_meta(_train_meta(total=None))["total"] is None


def _run_info(**change):
    return {"train": {}, "model": {"n_layer": 2}, "data": {"kind": "text"}, "data_path": "/d",
            "world_size": 1, "params": 10, "tensorboard": False,
            "files": ["checkpoints", "metrics.csv", "run.json"], **change}


@pytest.mark.parametrize("change,needle", [
    ({"files": ["notes.txt"]}, "names 'notes.txt', which is not a file this library writes"),
    ({"files": ["../other-run"]}, "files must hold plain file names"),
    ({"files": ["checkpoints/../.."]}, "files must hold plain file names"),
    ({"model": [1]}, "model must be a JSON object"),
    ({"train": None}, "train must be a JSON object"),
    ({"world_size": 0}, "world_size must be an integer in [1, 1048576]"),
    ({"tensorboard": "yes"}, "tensorboard must be true or false"),
])
def test_run_info_fields(change, needle):
    """run.json's manifest is what ``train --force`` deletes: only names a run writes."""
    with pytest.raises(ValueError, match="^run.json") as info:
        check_run_info(_run_info(**change))
    assert needle in str(info.value)


def _state(**change):
    rng = {"python": {}, "numpy": {}, "torch": None}
    return {"optimizer": {"state": {}}, "scaler": {}, "step": 6, "total": 10, "elapsed_s": 1.5,
            "rng": [rng], "shard": False, **change}


@pytest.mark.parametrize("change,needle", [
    ({"step": -5}, "state.pt: step must be an integer >= 0, got -5"),
    ({"step": 10**6}, "state.pt: step 1000000 disagrees with train.json's 6"),
    ({"rng": None}, "rng must be one RNG state per process"),
    ({"rng": []}, "rng must be one RNG state per process"),
    ({"rng": [{"python": {}}]}, "rng lacks the numpy, torch state"),
    ({"elapsed_s": float("nan")}, "elapsed_s must be a finite number >= 0"),
    ({"optimizer": None}, "optimizer must be a JSON object"),
    ({"shard": "no"}, "shard must be true or false"),
    ({"total": -1}, "total must be an integer >= 1"),
])
def test_state_fields(change, needle):
    with pytest.raises(ValueError, match="^state.pt") as info:
        check_state(_state(**change), step=6)
    assert needle in str(info.value)


def test_state_accepts_a_single_rank_dict():
    assert check_state(_state(rng={"python": 1, "numpy": 2, "torch": 3}), step=6)
