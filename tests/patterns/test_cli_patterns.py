"""`sparse-transformer patterns ...`: in-process through cli.main, plus one real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sparse_transformer import patterns as P
from sparse_transformer.cli import main

SCRIPT = Path(sys.executable).with_name("sparse-transformer")


def test_show_fixed_png_console_script(tmp_path):
    """The exact command of issue 2, through the installed console script."""
    out = tmp_path / "pics" / "out.png"
    r = subprocess.run([str(SCRIPT), "patterns", "show", "fixed", "--stride", "16", "--summary",
                        "4", "--n-ctx", "256", "--png", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.exists() and 5_000 < out.stat().st_size < 200_000
    with Image.open(out) as im:
        assert im.format == "PNG" and min(im.size) > 200
    assert "fixed(stride=16, summary=4, distinct=1)" in r.stdout


@pytest.mark.parametrize("argv,name", [
    (["causal"], "causal()"),
    (["local", "--window", "8"], "local(window=8)"),
    (["strided", "--stride", "8", "--mode", "split", "--heads", "2"],
     "strided(stride=8, mode='split')"),
    (["column", "--stride", "8"], "column(stride=8)"),
    (["fixed", "--stride", "16", "--summary", "4", "--distinct", "2", "--heads", "4"],
     "fixed(stride=16, summary=4, distinct=2)"),
    (["union(local(window=4), column(stride=8))"], "union(local(window=4), column(stride=8))"),
])
def test_show_every_family(tmp_path, capsys, argv, name):
    png = tmp_path / "p.png"
    assert main(["patterns", "show", *argv, "--n-ctx", "64", "--png", str(png)]) == 0
    assert png.stat().st_size > 2_000
    assert name in capsys.readouterr().out


def test_show_text_mask(capsys):
    assert main(["patterns", "show", "strided", "--stride", "4", "--n-ctx", "8"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if set(line) <= {"#", "."} and line]
    mask = P.strided(4).mask(8)[0]
    assert rows == ["".join("#" if x else "." for x in r) for r in mask.tolist()]


def test_cost_table_and_json(capsys):
    args = ["patterns", "cost", "fixed", "--stride", "128", "--summary", "32", "--distinct", "4",
            "--n-ctx", "16384", "--block", "32", "--heads", "8"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "work vs causal" in table and "25.73%" in table
    assert main(args + ["--json", "--head-dim", "32"]) == 0
    d = json.loads(capsys.readouterr().out)
    ref = P.fixed(128, 32, 4).cost(16384, 32, 8, 32)
    assert d["tiles_computed"] == ref.tiles_computed and d["head_dim"] == 32
    assert main(["patterns", "cost", "strided", "--stride", "64", "--mode", "split",
                 "--n-ctx", "4096", "--heads", "2", "--no-reorder", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reorder"] is False


def test_list(capsys):
    assert main(["patterns", "list"]) == 0
    out = capsys.readouterr().out
    for fam in ("causal", "local", "strided", "column", "fixed"):
        assert any(line.startswith(fam) and "paper" in line for line in out.splitlines())


@pytest.mark.parametrize("argv,needle", [
    (["show", "fixed", "--stride", "0", "--summary", "4"], "--stride must be an integer >= 1"),
    (["show", "fixed", "--stride", "4", "--summary", "8"], "summary (8) must be <= stride (4)"),
    (["show", "nonsense"], "unknown pattern 'nonsense'"),
    (["show", "fixed", "--stride", "4"], "needs --summary"),
    (["show", "causal", "--stride", "4"], "causal takes no --stride"),
    (["cost", "fixed(stride=4", "--n-ctx", "64"], "cannot parse"),
    (["show", "strided", "--stride", "4", "--mode", "split", "--heads", "3"], "multiple of 2"),
    (["show", "causal", "--n-ctx", "5000", "--png", "x.png"], "n_ctx <= 4096"),
])
def test_bad_input_one_line_exit_2(capsys, argv, needle):
    assert main(["patterns", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_bad_input_console_script():
    r = subprocess.run([str(SCRIPT), "patterns", "show", "fixed", "--stride", "16", "--summary",
                        "32"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "summary (32) must be <= stride (16)" in r.stderr


def test_help_everywhere(capsys):
    for argv in (["patterns"], ["patterns", "show"], ["patterns", "cost"], ["patterns", "list"]):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--help"])
        assert e.value.code == 0
        assert "usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # argparse's own errors also exit 2
        main(["patterns", "show", "causal", "--n-ctx", "0"])
    assert e.value.code == 2


def test_show_out_svg_pdf_dpi_title(tmp_path, capsys):
    """issue 20: --out picks the format by suffix; --png still works; --dpi and --title."""
    for name in ("f.svg", "f.pdf"):
        assert main(["patterns", "show", "fixed", "--stride", "8", "--summary", "2", "--n-ctx",
                     "64", "--out", str(tmp_path / name), "--title", "Figure 3 (c)"]) == 0
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    assert "Figure 3 (c)" in (tmp_path / "f.svg").read_text()
    assert main(["patterns", "show", "causal", "--n-ctx", "64", "--png",
                 str(tmp_path / "f.png"), "--dpi", "72"]) == 0
    from PIL import Image

    with Image.open(tmp_path / "f.png") as im:
        assert im.info["dpi"][0] == pytest.approx(72, abs=1)
    assert "wrote" in capsys.readouterr().out
