"""Pattern pictures: the pixels are the mask, the shading is the plan's tiles, the text fits."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from sparse_transformer import patterns as P
from sparse_transformer.patterns import draw as D
from sparse_transformer.patterns.plan import strided_permutation


def _images(fig):
    return [ax for ax in fig.axes if ax.images]


def _dark(ax) -> np.ndarray:
    return np.all(np.isclose(ax.images[0].get_array(), D._ALLOWED), axis=-1)


def _shaded(ax) -> np.ndarray:
    return np.all(np.isclose(ax.images[0].get_array(), D._COMPUTED), axis=-1)


def test_png_written_with_parents(tmp_path):
    out = D.draw_pattern(P.fixed(16, 4, 2), 128, 2, 16, tmp_path / "a" / "b" / "fixed.png")
    assert out.exists() and 5_000 < out.stat().st_size < 300_000
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200


def test_natural_panels_show_mask_and_computed_tiles():
    p, H, n, block = P.fixed(16, 4, 2), 2, 64, 8
    axes = _images(D.draw_pattern(p, n, H, block))
    assert len(axes) == 2
    for h, ax in enumerate(axes):
        assert np.array_equal(_dark(ax), p.mask(n, H)[h].numpy())
        tiles = p.plan(n, H, block).block_mask(h).numpy()
        in_tile = np.repeat(np.repeat(tiles, block, 0), block, 1)
        assert np.array_equal(_shaded(ax) | _dark(ax), in_tile)  # computed = allowed | shaded
        assert ax.get_title() == f"head {h}"
        assert ax.get_xlabel() == "key position" and ax.get_ylabel() == "query position"
        assert list(ax.get_xticks()) == list(ax.get_yticks()) == [0, 16, 32, 48, 64]


def test_split_column_head_is_drawn_in_reordered_positions():
    """Head 1 of strided split runs reordered: its one panel shows the reordered mask."""
    p, H, n, block = P.strided(8, "split"), 2, 64, 8
    axes = _images(D.draw_pattern(p, n, H, block))
    assert len(axes) == 2  # one panel per head: no natural-order twin of the column head
    col = axes[1]
    assert "reordered" in col.get_title() and "(reordered)" in col.get_xlabel()
    assert "(reordered)" in col.get_ylabel()
    perm = strided_permutation(n, 8).numpy()  # slot s holds position perm[s]
    want = p.mask(n, H)[1].numpy()[np.ix_(perm, perm)]
    assert np.array_equal(_dark(col), want)
    # and there it is block diagonal: causal runs of n / l = 8 slots, each inside one tile
    run = np.arange(n) // 8
    assert not (_dark(col) & (run[:, None] != run[None, :])).any() and _dark(col).any()
    assert np.array_equal(_shaded(col) | _dark(col), np.kron(np.eye(8, dtype=bool),
                                                              np.ones((8, 8), dtype=bool)))
    natural = _images(D.draw_pattern(p, n, H, block, reorder=False))[1]  # the same head
    assert np.array_equal(_dark(natural), p.mask(n, H)[1].numpy())
    assert "reordered" not in natural.get_title() + natural.get_xlabel()


def test_merged_head_gets_one_panel_per_part():
    p, n, block = P.strided(8, "merge"), 64, 8
    axes = _images(D.draw_pattern(p, n, 1, block))
    assert [("window" in a.get_title(), "reordered" in a.get_title()) for a in axes] == [
        (True, False), (False, True)]
    perm = strided_permutation(n, 8).numpy()
    column = np.zeros((n, n), dtype=bool)
    column[np.ix_(perm, perm)] = _dark(axes[1])  # back to natural positions
    assert not (_dark(axes[0]) & column).any()  # the parts are disjoint ...
    assert np.array_equal(_dark(axes[0]) | column, p.mask(n, 1)[0].numpy())  # ... and whole


@pytest.mark.parametrize("pattern,n,heads,block", [
    (P.fixed(16, 4), 256, 1, 16),  # one narrow panel: the old title was clipped here
    (P.parse_pattern("union(local(window=3), fixed(stride=8, summary=3, distinct=2))"), 64, 2,
     8),
    (P.strided(16, "merge"), 250, 1, 15),  # padding in the legend
])
def test_every_text_fits_inside_the_figure(pattern, n, heads, block):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = D.draw_pattern(pattern, n, heads, block)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [fig._suptitle] + [t for leg in fig.legends for t in leg.get_texts()]
    for ax in _images(fig):
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        texts += ax.get_xticklabels() + ax.get_yticklabels()
    W, H = fig.bbox.width, fig.bbox.height
    for t in texts:
        if not t.get_text():
            continue
        box = t.get_window_extent(renderer)
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= W + 1 and box.y1 <= H + 1, (
            f"{t.get_text()!r} leaves the figure: {box}")
    assert "causal tiles computed" in fig._suptitle.get_text()


def test_title_counts_the_tiles_the_plan_computes():
    p, n, block = P.fixed(128, 32, 4), 1024, 32
    fig = D.draw_pattern(p, n, 4, block)
    assert "768 of 2,112 causal tiles computed (36%)" in fig._suptitle.get_text()
    assert p.plan(n, 4, block, block).tiles_computed() == 768


def test_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="n_ctx <= 4096"):
        D.draw_pattern(P.causal(), 5000)
    with pytest.raises(ValueError, match="multiple of 2"):
        D.draw_pattern(P.strided(4, "split"), 32, 3)
    for mod in ("matplotlib", "matplotlib.figure"):  # as if matplotlib were not installed
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r"sparse-transformer\[pictures\]"):
        D.draw_pattern(P.causal(), 32, path=tmp_path / "x.png")


# -- issue 20: pictures a paper can use ---------------------------------------------------------
@pytest.mark.parametrize("pattern,title", [
    (P.causal(), "Dense causal attention"),
    (P.local(64), "Local attention, window 64"),
    (P.column(16), "Column attention, stride 16"),
    (P.fixed(128, 32, 4), "Fixed attention, l = 128, c = 32, 4 distinct summary blocks per "
                          "head group"),
    (P.fixed(16, 4), "Fixed attention, l = 16, c = 4"),
    (P.strided(16, "split"), "Strided attention, l = 16, heads split between the row and the "
                             "column part"),
    (P.strided(16, "merge"), "Strided attention, l = 16, row and column parts in every head"),
    (P.parse_pattern("union(local(window=3), column(stride=8))"),
     "Union of Local attention, window 3; Column attention, stride 8"),
])
def test_titles_name_the_pattern_in_words(pattern, title):
    """The figure's title is words a caption can use, not the spec string."""
    assert D.describe(pattern) == title
    fig = D.draw_pattern(pattern, 32, pattern.head_multiple, 8)
    text = " ".join(fig._suptitle.get_text().split())
    assert text.startswith(title) and "n = 32" in text and "n_ctx" not in text
    assert pattern.name not in text


def test_custom_title(tmp_path):
    fig = D.draw_pattern(P.causal(), 32, title="Figure 3 (a)")
    assert fig._suptitle.get_text().startswith("Figure 3 (a)\n")


def test_dpi_and_vector_formats_by_suffix(tmp_path):
    p = P.fixed(16, 4, 2)
    low = D.draw_pattern(p, 64, 2, 8, tmp_path / "low.png", dpi=100)
    high = D.draw_pattern(p, 64, 2, 8, tmp_path / "high.png")  # default 200 dpi
    with Image.open(low) as a, Image.open(high) as b:
        assert b.width == pytest.approx(2 * a.width, abs=2)
        assert b.info["dpi"][0] == pytest.approx(200, abs=1)
    svg = D.draw_pattern(p, 64, 2, 8, tmp_path / "fig.svg")
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()[:2000]
    pdf = D.draw_pattern(p, 64, 2, 8, tmp_path / "fig.PDF")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["fig.PDF", "fig.svg", "high.png",
                                                          "low.png"]  # no temporary left


def test_unknown_suffix_and_bad_dpi_refused_before_drawing(tmp_path):
    with pytest.raises(ValueError, match=r"is \.png, \.svg, \.pdf \(by its suffix\)"):
        D.draw_pattern(P.causal(), 32, path=tmp_path / "x.txt")
    with pytest.raises(ValueError, match=r"dpi must be an integer in \[1, 1200\]"):
        D.draw_pattern(P.causal(), 32, path=tmp_path / "x.png", dpi=0)
    assert not any(tmp_path.iterdir())
