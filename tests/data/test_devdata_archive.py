"""benchmarks/devdata.sh: a prepared data set packed for the device tool, train cut on request."""

import json
import lzma
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sparse_transformer.data.bytes import open_prepared

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "devdata.sh"
pytestmark = pytest.mark.skipif(shutil.which("xz") is None, reason="needs the xz command")


def _prepared(root: Path) -> Path:
    """A tiny prepared data set at root/data/toy, as `prepare` leaves one."""
    folder = root / "data" / "toy"
    folder.mkdir(parents=True)
    sizes = {"train": 1000, "valid": 100, "test": 120}
    for split, n in sizes.items():
        (folder / f"{split}.bin").write_bytes(bytes(range(256)) * (n // 256) + bytes(n % 256))
    meta = {"name": "toy", "kind": "text", "sizes": sizes, "counts": dict(sizes),
            "baselines": {"test": {"ppmd": 1.5}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=root, capture_output=True, text=True)


def _unpack(root: Path) -> Path:
    out = root / "unpacked"
    with lzma.open(root / ".devdata" / "toy.tar.xz") as xz, tarfile.open(fileobj=xz) as tar:
        tar.extractall(out, filter="data")
    return out / "toy"


def test_cut_train_split_loads_with_its_new_size(tmp_path):
    source = _prepared(tmp_path)
    done = _run(tmp_path, "toy", "600")
    assert done.returncode == 0, done.stderr
    toy = _unpack(tmp_path)
    data = open_prepared(toy)  # meta.json agrees with the cut file, or this raises
    assert len(data.split("train")) == 600
    assert (toy / "train.bin").read_bytes() == (source / "train.bin").read_bytes()[:600]
    assert len(data.split("test")) == 120 and data.meta["baselines"] == {"test": {"ppmd": 1.5}}
    # the prepared folder itself is untouched
    assert (source / "train.bin").stat().st_size == 1000
    assert json.loads((source / "meta.json").read_text())["sizes"]["train"] == 1000


def test_whole_copy_without_train_bytes(tmp_path):
    source = _prepared(tmp_path)
    assert _run(tmp_path, "toy").returncode == 0
    toy = _unpack(tmp_path)
    assert (toy / "train.bin").read_bytes() == (source / "train.bin").read_bytes()
    assert len(open_prepared(toy).split("train")) == 1000


def test_bad_requests_fail_and_keep_the_last_archive(tmp_path):
    _prepared(tmp_path)
    assert _run(tmp_path, "toy", "600").returncode == 0
    before = (tmp_path / ".devdata" / "toy.tar.xz").read_bytes()
    bad = (("toy", "5000"), ("toy", "0"), ("toy", "1e3"), ("toy", "-5"), ("missing",),
           ("../toy",))
    for args in bad:
        done = _run(tmp_path, *args)
        assert done.returncode != 0
        assert done.stderr.strip().startswith("devdata:"), done.stderr
    assert (tmp_path / ".devdata" / "toy.tar.xz").read_bytes() == before
