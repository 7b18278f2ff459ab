"""Byte data: prepared directories, raw files split 90/5/5, windows, the eval cover, wiki prep."""

import bz2
import zipfile

import numpy as np
import pytest
import torch

from sparse_transformer.data import text as T
from sparse_transformer.data.bytes import (
    eval_windows,
    open_prepared,
    random_batch,
    resolve_data,
)
from sparse_transformer.data.registry import get_writer, split_by_position, write_splits


def test_raw_file_is_split_90_5_5_by_position(tmp_path):
    blob = bytes(range(256)) * 40  # 10,240 bytes
    f = tmp_path / "any.bin"
    f.write_bytes(blob)
    d = resolve_data(str(f))
    n = len(blob)
    assert d.split("train").size == int(0.9 * n)
    assert d.split("valid").size == int(0.05 * n)
    joined = np.concatenate([d.split(s) for s in ("train", "valid", "test")])
    assert joined.tobytes() == blob


def test_prepared_directory_round_trip(tmp_path):
    meta = write_splits(tmp_path / "ds", name="ds", kind="text", train=b"a" * 300,
                        valid=b"b" * 200, test=b"c" * 100, source="unit test")
    assert meta["sizes"] == {"train": 300, "valid": 200, "test": 100}
    d = open_prepared(tmp_path / "ds")
    assert d.kind == "text" and bytes(d.split("valid")[:3]) == b"bbb"


@pytest.mark.parametrize("content,needle", [(None, "is neither a file"), (b"", "is empty")])
def test_missing_or_empty_file(tmp_path, content, needle):
    f = tmp_path / "x.bin"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises((FileNotFoundError, ValueError), match=needle):
        resolve_data(str(f))


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="wiki"):
        resolve_data("no-such-set", root=tmp_path)


def test_random_windows_come_from_the_data_and_are_seeded():
    data = np.arange(1000, dtype=np.int64).astype(np.uint8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = random_batch(data, 32, 5, g1), random_batch(data, 32, 5, g2)
    assert torch.equal(a, b) and a.shape == (5, 32) and a.dtype == torch.long
    for row in a:  # consecutive bytes of the stream (mod 256)
        assert torch.equal((row[1:] - row[:-1]) % 256, torch.ones(31, dtype=torch.long))


def test_image_windows_start_on_records():
    data = np.repeat(np.arange(50, dtype=np.uint8), 12)  # 50 records of 12 bytes
    x = random_batch(data, 12, 20, torch.Generator().manual_seed(0), record_size=12)
    assert (x == x[:, :1]).all()  # every window is exactly one record


@pytest.mark.parametrize("n,n_ctx,m", [(100, 10, 0), (100, 10, 7), (95, 10, 3), (10, 10, 0)])
def test_eval_windows_score_every_byte_once_with_min_context(n, n_ctx, m):
    seen = np.zeros(n, dtype=int)
    for i, (start, first) in enumerate(eval_windows(n, n_ctx, m)):
        assert 0 <= start and start + n_ctx <= n
        if i:
            assert first >= m  # every later scored byte sees at least m earlier bytes
        seen[start + first:start + n_ctx] += 1
    assert (seen == 1).all()


def test_split_by_position():
    assert split_by_position(1000) == (slice(0, 900), slice(900, 950), slice(950, 1000))


def _fake_wheel(tmp_path, payload: bytes):
    wheel = tmp_path / "gensim-4.4.0-cp311-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(T.WIKI_MEMBER, bz2.compress(payload))
    return wheel


def test_wiki_rejects_a_wrong_file_with_a_clear_error(tmp_path):
    wheel = _fake_wheel(tmp_path, b"<mediawiki>not the excerpt</mediawiki>")
    with pytest.raises(ValueError, match="sha256"):
        T.prepare_wiki(tmp_path / "wiki", source=str(wheel), cache_dir=tmp_path)
    assert not (tmp_path / "wiki" / "meta.json").exists()


def test_wiki_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found\n"

    from sparse_transformer.data import pypi

    monkeypatch.setattr(pypi.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(RuntimeError, match="could not download the gensim 4.4.0 wheel"):
        T.prepare_wiki(tmp_path / "wiki", cache_dir=tmp_path / "cache")


def test_enwik8_needs_the_real_size(tmp_path):
    f = tmp_path / "enwik8"
    f.write_bytes(b"x" * 1000)
    with pytest.raises(ValueError, match="100,000,000"):
        T.prepare_enwik8(tmp_path / "out", source=str(f), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="--path"):
        T.prepare_enwik8(tmp_path / "out", source=None, cache_dir=tmp_path)


def test_text_writer(tmp_path, capsysbinary):
    write = get_writer("text")
    samples = np.frombuffer(b"hello", dtype=np.uint8)[None]
    assert write(samples, None, {}) == []
    assert capsysbinary.readouterr().out == b"hello\n"
    out = tmp_path / "s.txt"
    assert write(samples, str(out), {}) == [str(out)]
    assert out.read_bytes() == b"hello\n"
    with pytest.raises(FileExistsError, match="pass --force"):  # a file is never replaced ...
        write(samples[:, :2], str(out), {})
    assert out.read_bytes() == b"hello\n"
    assert write(samples[:, :2], str(out), {}, force=True) == [str(out)]  # ... unless asked
    assert out.read_bytes() == b"he\n"
