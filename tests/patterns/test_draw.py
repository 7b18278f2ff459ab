"""Pattern pictures: the pixels are the mask, the shading is the plan's tiles."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from sparse_transformer import patterns as P
from sparse_transformer.patterns import draw as D


def test_png_written_with_parents(tmp_path):
    out = D.draw_pattern(P.fixed(16, 4, 2), 128, 2, 16, tmp_path / "a" / "b" / "fixed.png")
    assert out.exists() and 5_000 < out.stat().st_size < 200_000
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200


def test_panels_show_mask_and_tiles():
    """One panel per head plus one per reordered column; panel pixels follow the mask."""
    p, H, n, block = P.strided(8, "split"), 2, 64, 8
    fig = D.draw_pattern(p, n, H, block)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3  # head 0, head 1 natural, head 1 reordered
    rgb = axes[0].images[0].get_array()
    mask = p.mask(n, H)[0].numpy()
    dark = np.all(np.isclose(rgb, D._ALLOWED), axis=-1)
    assert np.array_equal(dark, mask)
    shaded = np.all(np.isclose(rgb, D._COMPUTED), axis=-1)
    tiles = p.plan(n, H, block).block_mask(0).numpy()
    in_tile = np.repeat(np.repeat(tiles, block, 0), block, 1)
    assert np.array_equal(shaded | dark, in_tile)  # computed = allowed or shaded, nothing else
    assert "head 1" in axes[1].get_title() and "reordered" in axes[2].get_title()
    # the reordered panel is a causal band: every allowed cell sits in a shaded tile
    rgb2 = axes[2].images[0].get_array()
    dark2 = np.all(np.isclose(rgb2, D._ALLOWED), axis=-1)
    assert dark2.sum() == p.mask(n, H)[1].sum() and np.array_equal(dark2, np.tril(dark2))


def test_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="n_ctx <= 4096"):
        D.draw_pattern(P.causal(), 5000)
    with pytest.raises(ValueError, match="multiple of 2"):
        D.draw_pattern(P.strided(4, "split"), 32, 3)
    for mod in ("matplotlib", "matplotlib.figure"):  # as if matplotlib were not installed
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r"sparse-transformer\[pictures\]"):
        D.draw_pattern(P.causal(), 32, path=tmp_path / "x.png")
