"""text100m: four sources split 90/5/5 each, concatenated, cut to 10^8 bytes, wiki recoverable.

The real sources are ~100 MB of downloads, so the sources are replaced by small fakes here; the
real data set is prepared by `sparse-transformer prepare text100m` (docs/results.md)."""

import numpy as np
import pytest

from sparse_transformer.data import text100m as T
from sparse_transformer.data.bytes import open_prepared
from sparse_transformer.data.registry import prepare, split_by_position


@pytest.fixture
def fake_sources(monkeypatch):
    rng = np.random.default_rng(0)
    blobs = {name: rng.integers(32, 127, size, dtype=np.uint8).tobytes()
             for name, size in (("wiki", 6000), ("wiki-leads", 5000), ("gcide", 9000),
                                ("python-docs", 20000))}
    monkeypatch.setattr(T, "TOTAL", 30000)  # the last source is cut to make the total
    monkeypatch.setattr(T, "wiki_excerpt", lambda source, cache: blobs["wiki"])
    monkeypatch.setattr(T, "wiki_leads", lambda cache: blobs["wiki-leads"])
    monkeypatch.setattr(T, "gcide", lambda cache: blobs["gcide"])
    monkeypatch.setattr(T, "python_docs", lambda cache: blobs["python-docs"])
    return blobs


def test_each_source_is_split_by_position_and_the_wiki_part_is_wiki(fake_sources, tmp_path):
    out = prepare("text100m", tmp_path / "t", cache_dir=tmp_path / "cache")
    data = open_prepared(out)
    sizes = {s: data.split(s).size for s in ("train", "valid", "test")}
    assert sum(sizes.values()) == 30000
    parts = {p["name"]: p for p in data.meta["parts"]}
    assert list(parts) == ["wiki", "wiki-leads", "gcide", "python-docs"]
    assert parts["python-docs"]["bytes"] == 30000 - 6000 - 5000 - 9000  # cut to the total
    for name, blob in fake_sources.items():
        blob = blob[:parts[name]["bytes"]]
        for split, cut in zip(("train", "valid", "test"), split_by_position(len(blob))):
            assert T.part(data, name, split).tobytes() == blob[cut]
    # wiki's own split rule, so text100m's wiki test part is the `wiki` data set's test split
    wiki = fake_sources["wiki"]
    assert data.split("test")[:len(wiki[split_by_position(len(wiki))[2]])].tobytes() == \
        wiki[split_by_position(len(wiki))[2]]
    assert set(data.meta["baselines"]) == {"valid", "test"}  # stored at prepare (PPMd, ...)
    with pytest.raises(ValueError, match="no part 'enwik8'"):
        T.part(data, "enwik8", "test")


def test_text100m_refuses_a_path(tmp_path):
    with pytest.raises(ValueError, match="fetches its four sources itself"):
        T.prepare_text100m(tmp_path / "t", source="x", cache_dir=tmp_path)
