"""One tiny training run shared by the CLI tests, on a registered data set prepared in a
temporary root (so eval and resume must find it through the path the run recorded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparse_transformer.cli import main
from sparse_transformer.data.registry import (
    prepare,
    register_dataset,
    split_by_position,
    write_splits,
)

CORPUS = (b"<page><title>Anarchism</title><text>Anarchism is a philosophy.</text></page>\n"
          * 300)
TRAIN = ["--preset", "wiki-tiny", "--steps", "4", "--batch-size", "2", "--eval-bytes", "512",
         "--eval-every", "0", "--no-progress", "--warmup", "1"]
DATA_SET = "cli-test-text"


def _prepare_corpus(out_dir, *, source=None, cache_dir=None):
    tr, va, te = split_by_position(len(CORPUS))
    write_splits(out_dir, name=DATA_SET, kind="text", train=CORPUS[tr], valid=CORPUS[va],
                 test=CORPUS[te], source="tests")


register_dataset(DATA_SET, _prepare_corpus, help="tests only")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "corpus.txt"
    f.write_bytes(CORPUS)
    return f


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    prepare(DATA_SET, root=root)
    return root


@pytest.fixture(scope="session")
def run_dir(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", DATA_SET, "--data-root", str(data_root), "--out", str(out),
                 *TRAIN]) == 0
    return out
