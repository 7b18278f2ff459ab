"""Text data sets: "wiki" (real English Wikipedia XML, offline) and "enwik8" (a local file).

"wiki" is the 6,089,746-byte excerpt of an April 2016 English Wikipedia dump that the gensim
4.4.0 wheel ships as test data: the same MediaWiki export format as Enwik8 (paper 7.2), but
6 MB instead of 100 MB, so it is split 90/5/5 % by position (5.48/0.30/0.30 MB). It is fetched
with ``pip download`` (package registries are the only network many machines have).

"enwik8" is the paper's data set from a local copy of the 100,000,000-byte file; split as the
paper and OpenAI's code do: first 90M bytes train, then 5M valid, 5M test.
"""

from __future__ import annotations

import bz2
import hashlib
from pathlib import Path

import numpy as np

from sparse_transformer.codecs import write_text_samples
from sparse_transformer.data.pypi import cached_wheel, read_wheel_member
from sparse_transformer.data.registry import (
    register_dataset,
    register_writer,
    split_by_position,
    write_splits,
)

WIKI_MEMBER = ("gensim/test/test_data/"
               "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
WIKI_SIZE = 6_089_746
WIKI_BZ2_SHA256 = ("a53f4648", "bea2d")  # prefix and suffix of the .bz2's sha256 (data.md T1)
ENWIK8_SIZE = 100_000_000


def wiki_excerpt(source: str | Path | None, cache_dir: str | Path) -> bytes:
    """The 6,089,746 checked bytes of the Wikipedia excerpt, from ``source`` (a gensim 4.4.0
    wheel or the extracted .bz2) or from the wheel fetched into ``cache_dir``."""
    src = Path(source) if source else cached_wheel("gensim", "4.4.0", cache_dir)
    if not src.is_file():
        raise FileNotFoundError(f"wiki source {src} does not exist")
    packed = read_wheel_member(src, WIKI_MEMBER) if src.suffix == ".whl" else src.read_bytes()
    digest = hashlib.sha256(packed).hexdigest()
    if not (digest.startswith(WIKI_BZ2_SHA256[0]) and digest.endswith(WIKI_BZ2_SHA256[1])):
        raise ValueError(f"{src}: the Wikipedia excerpt's sha256 is {digest}, expected "
                         f"{WIKI_BZ2_SHA256[0]}...{WIKI_BZ2_SHA256[1]}")
    data = bz2.decompress(packed)
    if len(data) != WIKI_SIZE:
        raise ValueError(f"{src}: decompressed excerpt has {len(data)} bytes, expected {WIKI_SIZE}")
    return data


def prepare_wiki(out_dir: Path, *, source: str | None = None, cache_dir: Path) -> None:
    """Fetch, check and split the Wikipedia excerpt (data.md T1)."""
    data = wiki_excerpt(source, cache_dir)
    tr, va, te = split_by_position(len(data))
    write_splits(
        out_dir, name="wiki", kind="text", train=data[tr], valid=data[va], test=data[te],
        source="gensim 4.4.0 wheel (PyPI), " + WIKI_MEMBER,
        license="Wikipedia text CC BY-SA 3.0; gensim LGPL-2.1",
        sha256=hashlib.sha256(data).hexdigest(),
    )


def prepare_enwik8(out_dir: Path, *, source: str | None = None, cache_dir: Path) -> None:
    """Split a local enwik8 file 90M/5M/5M (paper 7.2). Nothing is downloaded."""
    if not source:
        raise ValueError("enwik8 is not downloadable here; pass --path to your local enwik8 file")
    src = Path(source)
    if not src.is_file():
        raise FileNotFoundError(f"enwik8 file {src} does not exist")
    size = src.stat().st_size
    if size != ENWIK8_SIZE:
        raise ValueError(f"{src} has {size} bytes; enwik8 has exactly {ENWIK8_SIZE:,}")
    data = np.memmap(src, dtype=np.uint8, mode="r")
    n_tr, n_va = 90_000_000, 5_000_000
    write_splits(out_dir, name="enwik8", kind="text", train=data[:n_tr],
                 valid=data[n_tr:n_tr + n_va], test=data[n_tr + n_va:],
                 source=str(src.resolve()), license="Wikipedia text CC BY-SA")


register_dataset("wiki", prepare_wiki,
                 help="6.1 MB of real English Wikipedia XML from the gensim 4.4.0 wheel "
                      "(default; fetched with pip download)")
register_dataset("enwik8", prepare_enwik8,
                 help="the paper's Enwik8 from a local 100,000,000-byte file (--path enwik8)")
register_writer("text", write_text_samples)
