"""Compressor baselines: PPMd with the train split as context, xz/bz2/zlib, PNG for images."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from sparse_transformer.baselines import baselines, png_bits, ppmd_bits, stream_bits
from sparse_transformer.cli import main


def _text(seed: int, n: int) -> bytes:
    words = [b"sparse", b"transformer", b"attention", b"stride", b"summary", b"the", b"of"]
    rng = np.random.default_rng(seed)
    return b" ".join(words[i] for i in rng.integers(0, len(words), n))


def test_ppmd_spends_fewer_bits_after_reading_the_train_split():
    train, test = _text(0, 20000), _text(1, 2000)
    alone, with_context = ppmd_bits(test), ppmd_bits(test, context=train)
    assert with_context < alone < 8.0
    # the context is not counted: the same bytes cost about what the difference of sizes says
    assert abs(with_context - (ppmd_bits(train + test) * len(train + test)
                               - ppmd_bits(train) * len(train)) / len(test)) < 0.05


def test_random_bytes_cost_about_8_bits_and_every_compressor_is_reported():
    noise = np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8)
    out = baselines(noise, context=noise[:1000])
    assert set(out) == {"ppmd", "xz", "bz2", "zlib"}
    assert all(7.9 < v < 8.3 for v in out.values()), out
    assert set(stream_bits(b"abc" * 100)) == {"xz", "bz2", "zlib"}


def test_png_bits_count_whole_files_per_image():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    total = 0
    for img in imgs:
        buf = io.BytesIO()
        Image.fromarray(img[:, :, 0]).save(buf, format="PNG", optimize=True)
        total += buf.tell()
    assert png_bits(imgs.reshape(-1), (8, 8, 1)) == pytest.approx(8 * total / imgs.size)
    with pytest.raises(ValueError, match="no whole"):
        png_bits(imgs.reshape(-1)[:10], (8, 8, 1))


def test_eval_prints_the_baselines_stored_at_prepare(tmp_path, capsys, monkeypatch):
    """A whole split: eval shows the baselines prepare stored (nothing recomputed)."""
    from sparse_transformer.data import registry
    from sparse_transformer.data.registry import DatasetEntry, prepare, write_splits
    from sparse_transformer.model import ModelConfig, SparseTransformer
    from sparse_transformer.train.checkpoint import save_checkpoint

    registry.load_builtin()
    monkeypatch.setitem(registry.DATASETS, "tiny-text", DatasetEntry(
        "tiny-text", lambda out, source, cache_dir: write_splits(
            out, name="tiny-text", kind="text", train=_text(0, 3000), valid=_text(1, 300),
            test=_text(2, 300)), ""))
    data_dir = prepare("tiny-text", tmp_path / "data" / "tiny-text")
    capsys.readouterr()
    meta = json.loads((data_dir / "meta.json").read_text())
    assert set(meta["baselines"]["test"]) == {"ppmd", "xz", "bz2", "zlib"}
    cfg = ModelConfig.from_preset("wiki-tiny")
    run = tmp_path / "run"
    save_checkpoint(run, model=SparseTransformer(cfg), model_config=cfg,
                    train={"step": 1, "data_path": str(data_dir.resolve())},
                    state={"step": 1})
    import sparse_transformer.baselines as B

    monkeypatch.setattr(B, "ppmd_bits", lambda *a, **k: pytest.fail("recomputed"))
    assert main(["eval", "-c", str(run), "--split", "test", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["baselines_bpb"] == meta["baselines"]["test"]
