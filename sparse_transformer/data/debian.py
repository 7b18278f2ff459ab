"""Fetch the files of a Debian data package without needing it installed.

The default real data sets (Fashion-MNIST, the Wesnoth soundtrack; ../shared/data.md I1, A1)
ship as Debian packages. Order of preference:

1. the package is installed: use its files under ``/`` as they are;
2. it was extracted before into the cache: <cache_dir>/debian/<package>/ (the CLI passes
   ``data/.cache``; default ``$SPARSE_TRANSFORMER_CACHE`` or ``~/.cache/sparse-transformer``);
3. ``apt-get download`` the .deb (no root needed, changes nothing system-wide) and
   ``dpkg-deb -x`` it into the cache. If apt cannot find the package and we are root, run
   ``apt-get update`` once and retry (a fresh container often has no package lists).

We prefer download-and-extract to ``apt-get install`` because it works without root and leaves
the system untouched; both were tested on the project's Debian 12 machines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["debian_files", "default_cache_dir"]


def default_cache_dir() -> Path:
    """Cache when none is given: ``$SPARSE_TRANSFORMER_CACHE`` or ~/.cache/sparse-transformer."""
    env = os.environ.get("SPARSE_TRANSFORMER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sparse-transformer"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def debian_files(package: str, subdir: str, *, cache_dir: str | Path | None = None,
                 verbose: bool = True) -> Path:
    """Directory holding ``subdir`` (an absolute path inside the package, e.g.
    ``/usr/share/datasets/fashion-mnist``) of Debian ``package``, fetching it if needed."""
    system = Path(subdir)
    if system.is_dir() and any(system.iterdir()):
        return system
    root = (Path(cache_dir or default_cache_dir()) / "debian" / package).resolve()
    cached = root / subdir.lstrip("/")
    if cached.is_dir() and any(cached.iterdir()):
        return cached
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise OSError(f"{package} is not installed and {tool} is not available to fetch it; "
                          f"install the Debian package {package} or use --path")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{package}-", dir=root.parent) as tmp:
        tmp = Path(tmp)
        if verbose:
            print(f"fetching Debian package {package} (apt-get download) ...", flush=True)
        res = _run(["apt-get", "download", package], tmp)
        if res.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
            _run(["apt-get", "update"], tmp)
            res = _run(["apt-get", "download", package], tmp)
        debs = sorted(tmp.glob(f"{package}_*.deb"))
        if res.returncode != 0 or not debs:
            last = (res.stderr or res.stdout).strip().splitlines()
            raise OSError(f"apt-get download {package} failed: {last[-1] if last else 'no .deb'}")
        extract = tmp / "root"
        res = _run(["dpkg-deb", "-x", str(debs[0]), str(extract)], tmp)
        if res.returncode != 0:
            raise OSError(f"dpkg-deb -x {debs[0].name} failed: {res.stderr.strip()}")
        if not (extract / subdir.lstrip("/")).is_dir():
            raise OSError(f"package {package} has no {subdir}")
        if root.exists():
            shutil.rmtree(root)
        os.rename(extract, root)  # atomic: a half-extracted package is never seen as cached
    return cached
