"""The ``analyze`` and ``series`` commands: every file they write is read back; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from hrtem_core import __version__
from hrtem_core.cards import load_cards
from hrtem_core.cli import main
from tests.lattice_images import lattice_image

REPO = Path(__file__).resolve().parents[1]
OPTS = ["--pixel-size-nm", "0.02", "--window", "128", "--stride", "64", "--detector", "classical"]
WINDOW_FIELDS = [
    "row", "col", "y_px", "x_px", "crystalline", "n_pairs", "spacings_nm", "angles_deg",
    "phase_card", "phase_name", "hkl", "zone_axis", "score", "alternatives", "status",
]  # fmt: skip
SUMMARY_FIELDS = [
    "file", "pixel_size_nm", "window_px", "stride_px", "n_windows", "n_crystalline",
    "crystallinity", "crystalline_area_fraction", "phases", "defocus_nm", "elapsed_s", "version",
]  # fmt: skip
# Goethite (orthorhombic, a card of the default database) seen down [001].
GOETHITE = ("29-0713", (0, 0, 1), [(0, 2, 0), (1, 1, 0), (1, -1, 0), (2, 0, 0)])


def write_tif(path: Path, *, crystal_fraction: float = 0.5, seed: int = 0) -> Path:
    card, zone, hkls = GOETHITE
    region = np.zeros((384, 384), bool)
    region[:, : int(384 * crystal_fraction)] = True
    image, _ = lattice_image(
        load_cards().phase(card), zone, hkls, rotation_deg=12.0, noise=0.1, shape=(384, 384),
        region=region, seed=seed,
    )  # fmt: skip
    tifffile.imwrite(path, image)
    return path


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_analyze_writes_every_file(tmp_path, capsys) -> None:
    img = write_tif(tmp_path / "goethite_-8nm.tif")
    out = tmp_path / "out"
    assert (
        main(["analyze", str(img), *OPTS, "--out", str(out), "--phases", "29-0713", "33-0664"]) == 0
    )
    captured = capsys.readouterr()
    assert "goethite_-8nm.tif: crystallinity" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [
        "particles.csv", "plane_map.html", "plane_map.png", "results.xlsx", "summary.json",
        "windows.csv",
    ]  # fmt: skip

    win = pd.read_csv(out / "windows.csv", keep_default_na=False)
    assert set(WINDOW_FIELDS) <= set(win.columns)
    assert len(win) == 25  # (384 - 128) // 64 + 1 = 5 per axis
    assert set(win["crystalline"]) <= {0, 1}
    inside = win[win["x_px"] + 64 <= 192]  # windows entirely in the crystal (left half)
    assert (inside["crystalline"] == 1).all() and (inside["phase_card"] == "29-0713").all()
    assert (inside["zone_axis"] == "0 0 1").all()
    outside = win[win["x_px"] - 63.5 >= 192]
    assert (outside["crystalline"] == 0).all() and (outside["status"] == "no-spots").all()
    row = inside.iloc[0]
    spacings = [float(v) for v in row["spacings_nm"].split(";")]
    assert spacings == sorted(spacings, reverse=True) and len(spacings) == row["n_pairs"]
    assert len(row["hkl"].split(";")) == len(spacings)
    assert all(len(h.split()) == 3 for h in row["hkl"].split(";"))

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["file"] == "goethite_-8nm.tif"
    assert summary["pixel_size_nm"] == [0.02, 0.02]
    assert summary["window_px"] == 128 and summary["stride_px"] == 64
    assert summary["n_windows"] == 25 and summary["n_crystalline"] == int(win["crystalline"].sum())
    assert summary["crystallinity"] == pytest.approx(win["crystalline"].mean())
    assert summary["defocus_nm"] == -8.0  # from the file name
    assert summary["version"] == __version__ and summary["elapsed_s"] > 0
    assert [p["card_id"] for p in summary["phases"]] == ["29-0713", "33-0664"]
    goe = summary["phases"][0]
    assert goe["name"] == "goethite" and goe["n_windows"] == int(
        (win["phase_card"] == "29-0713").sum()
    )
    assert goe["fraction"] == pytest.approx(goe["n_windows"] / 25)

    book = pd.read_excel(out / "results.xlsx", sheet_name=None)
    assert {"windows", "phases", "families", "summary", "parameters"} <= set(book)
    assert len(book["windows"]) == 25
    params = dict(zip(book["parameters"]["key"], book["parameters"]["value"], strict=True))
    assert params["version"] == __version__ and params["param.spacing_tol"] == 0.03
    html = (out / "plane_map.html").read_text(encoding="utf-8")
    assert "goethite {" in html and "zone axis: [0 0 1]" in html
    # One particle (the crystal half), its diffractogram indexed with the chosen cards.
    parts = pd.read_csv(out / "particles.csv", keep_default_na=False)
    assert len(parts) == 1
    p = parts.iloc[0]
    assert (p["phase_name"], p["phase_status"], p["zone_axis"]) == ("goethite", "indexed", "0 0 1")
    assert (p["pattern_px"], p["pattern_status"]) == (256, "indexed")
    assert p["pattern_phase"].startswith("goethite (29-0713) [0 0 1] K")
    with Image.open(out / "plane_map.png") as png:
        assert png.format == "PNG"


def test_analyze_tolerances_reach_the_analysis(tmp_path, capsys) -> None:
    img = write_tif(tmp_path / "g.tif")
    out = tmp_path / "o"
    args = ["analyze", str(img), *OPTS, "--spacing-tol", "0.05", "--angle-tol-deg", "1.5"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["parameters"]["spacing_tol"] == 0.05
    assert summary["parameters"]["angle_tol_deg"] == 1.5
    assert summary["defocus_nm"] is None


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--window", "1024"], "smaller than one"),
        (["--phases", "00-0000"], "00-0000"),
        (["--spacing-tol", "0"], "--spacing-tol"),
        (["--angle-tol-deg", "abc"], "--angle-tol-deg"),
        (["--detector", "magic"], "invalid choice"),
        (["--pixel-size-nm", "-0.02"], "pixel"),
        (["--cards", "/nonexistent/cards.xlsx"], "cards.xlsx"),
    ],
)
def test_analyze_bad_input_is_one_line(tmp_path, capsys, extra, match) -> None:
    img = write_tif(tmp_path / "g.tif")
    with pytest.raises(SystemExit) as exc:
        code = main(["analyze", str(img), *OPTS, *extra, "--out", str(tmp_path / "o")])
        raise SystemExit(code)
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert match in line


def test_analyze_missing_file(tmp_path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "nope.tif"), *OPTS]) == 2
    assert "nope.tif" in one_error_line(capsys.readouterr().err)


def test_series_writes_profile_and_folders(tmp_path, capsys) -> None:
    names = {"s_-8nm.tif": 0.25, "s_+4nm.tif": 0.75, "s_-2nm.tif": 0.5}
    paths = [
        write_tif(tmp_path / n, crystal_fraction=f, seed=i)
        for i, (n, f) in enumerate(names.items())
    ]
    out = tmp_path / "series"
    code = main(["series", *map(str, paths), *OPTS, "--phases", "29-0713", "--out", str(out)])
    assert code == 0
    assert "best focus 4 nm" in capsys.readouterr().out
    prof = pd.read_csv(out / "profile.csv")
    assert list(prof.columns[:6]) == [
        "file", "defocus_nm", "crystallinity", "crystalline_area_fraction", "n_windows",
        "n_crystalline",
    ]  # fmt: skip
    assert "fraction_29-0713" in prof.columns
    assert list(prof["defocus_nm"]) == [-8.0, -2.0, 4.0]
    assert prof["crystallinity"].is_monotonic_increasing
    assert (prof["n_windows"] == 25).all()
    for stem in ("s_-8nm", "s_+4nm", "s_-2nm"):
        sub = out / stem
        assert sorted(p.name for p in sub.iterdir()) == [
            "particles.csv", "plane_map.html", "plane_map.png", "results.xlsx", "summary.json",
            "windows.csv",
        ]  # fmt: skip
        summ = json.loads((sub / "summary.json").read_text(encoding="utf-8"))
        assert summ["defocus_nm"] == float(stem[2:-2])
        row = prof[prof["file"] == f"{stem}.tif"].iloc[0]
        assert row["crystallinity"] == pytest.approx(summ["crystallinity"])
    info = json.loads((out / "series.json").read_text(encoding="utf-8"))
    assert info["best_focus_nm"] == 4.0 and info["failures"] == []
    assert "best focus 4 nm" in (out / "profile.html").read_text(encoding="utf-8")
    with Image.open(out / "profile.png") as png:
        assert png.format == "PNG"
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "particles_series.csv", "phase_fractions.html", "profile.csv", "profile.html",
        "profile.png", "series.json", "series.xlsx",
    ]  # fmt: skip
    assert "goethite" in (out / "phase_fractions.html").read_text(encoding="utf-8")
    book = pd.read_excel(out / "series.xlsx", sheet_name=None)
    assert set(book) == {"profile", "summary", "parameters"}
    pd.testing.assert_frame_equal(book["profile"], prof, check_dtype=False)
    params = dict(zip(book["parameters"]["key"], book["parameters"]["value"], strict=True))
    assert params["version"] == __version__ and params["param.window_px"] == 128
    assert info["version"] == __version__ and len(info["files"]) == 3
    for stem in ("s_-8nm", "s_+4nm", "s_-2nm"):  # every per-image file reads back
        sub = out / stem
        win = pd.read_csv(sub / "windows.csv", keep_default_na=False)
        assert len(win) == 25 and set(WINDOW_FIELDS) <= set(win.columns)
        sheets = pd.read_excel(sub / "results.xlsx", sheet_name=None)
        assert len(sheets["windows"]) == 25
        assert "goethite" in (sub / "plane_map.html").read_text(encoding="utf-8")
        with Image.open(sub / "plane_map.png") as png:
            assert png.format == "PNG"


def test_series_explicit_defocus_and_failures(tmp_path, capsys) -> None:
    good = write_tif(tmp_path / "a.tif", seed=1)
    nodf = write_tif(tmp_path / "b.tif", seed=2)
    out = tmp_path / "s"
    # Defocus given: both work.
    assert (
        main(["series", str(good), str(nodf), *OPTS, "--defocus-nm", "-6,6", "--out", str(out)])
        == 0
    )
    assert list(pd.read_csv(out / "profile.csv")["defocus_nm"]) == [-6.0, 6.0]
    capsys.readouterr()
    # No defocus for b.tif, and a missing file: a.tif is still written, exit code 2.
    named = write_tif(tmp_path / "c_-3nm.tif", seed=3)
    out2 = tmp_path / "s2"
    code = main(
        ["series", str(named), str(nodf), str(tmp_path / "gone.tif"), *OPTS, "--out", str(out2)]
    )
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "2 of 3 images failed" in line and "b.tif" in line and "defocus is unknown" in line
    assert "gone.tif" in line
    assert (out2 / "c_-3nm" / "windows.csv").is_file()
    prof = pd.read_csv(out2 / "profile.csv")
    assert list(prof["file"]) == ["c_-3nm.tif"]
    info = json.loads((out2 / "series.json").read_text(encoding="utf-8"))
    assert {Path(f["file"]).name for f in info["failures"]} == {"b.tif", "gone.tif"}


def test_series_defocus_count_mismatch(tmp_path, capsys) -> None:
    a = write_tif(tmp_path / "a.tif")
    assert (
        main(["series", str(a), *OPTS, "--defocus-nm", "1", "2", "--out", str(tmp_path / "o")]) == 2
    )
    assert "one per image" in one_error_line(capsys.readouterr().err)


def test_module_entry_point_subprocess(tmp_path) -> None:
    """``python -m hrtem_core analyze`` in a fresh interpreter: exit codes and stderr."""
    img = write_tif(tmp_path / "g.tif")
    ok = subprocess.run(
        [sys.executable, "-m", "hrtem_core", "analyze", str(img), *OPTS, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "windows.csv").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "hrtem_core", "analyze", str(img), *OPTS, "--window", "4096"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    one_error_line(bad.stderr)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--defocus-nm", "-6,6"], [-6.0, 6.0]),
        (["--defocus-nm=-6,6"], [-6.0, 6.0]),
        (["--defocus-nm", "-6", "6"], [-6.0, 6.0]),
        (["--defocus-nm", "-6.5", "+1e1"], [-6.5, 10.0]),
        (["--defocus-nm", "-18,-14"], [-18.0, -14.0]),
    ],
)
def test_series_negative_defocus_forms(argv, expected) -> None:
    """Negative defocus values are values, not options, in every documented spelling."""
    from hrtem_core.cli import build_parser
    from hrtem_core.commands.series import _defocus_values

    args = build_parser().parse_args(["series", "a.tif", "b.tif", *argv, "--out", "o"])
    assert args.images == ["a.tif", "b.tif"]
    assert _defocus_values(args.defocus_nm) == expected


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--stride", "0"], "--stride must be at least 1"),
        (["--stride", "-5"], "--stride must be at least 1"),
        (["--window", "0"], "--window must be at least 1"),
        (["--window", "12.5"], "--window must be a whole number"),
        (["--window", "512"], "smaller than one"),  # 384 x 384 image, window larger than it
    ],
)
def test_bad_window_and_stride(tmp_path, capsys, extra, match) -> None:
    """Issue 9 rows: stride 0 or negative, window 0 or not an integer, window larger than image."""
    img = write_tif(tmp_path / "g.tif")
    with pytest.raises(SystemExit) as exc:  # usage errors exit from argparse, others return 2
        raise SystemExit(main(["analyze", str(img), *OPTS, *extra, "--out", str(tmp_path / "o")]))
    assert exc.value.code == 2
    assert match in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o" / "windows.csv").exists()


def test_image_smaller_than_the_window(tmp_path, capsys) -> None:
    """A 100 x 100 image with the default 256-px window: one line naming both sizes."""
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.random.default_rng(0).normal(size=(100, 100)).astype(np.float32))
    assert main(["analyze", str(small), "--pixel-size-nm", "0.02", "--detector", "classical"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "100" in line and "256" in line


def test_window_not_a_power_of_two_is_allowed(tmp_path, capsys) -> None:
    """Windows need not be powers of two (slower FFTs): a 96-px window runs and is recorded."""
    img = write_tif(tmp_path / "g.tif")
    out = tmp_path / "o"
    opts = [
        "--pixel-size-nm",
        "0.02",
        "--window",
        "96",
        "--stride",
        "96",
        "--detector",
        "classical",
    ]
    assert main(["analyze", str(img), *opts, "--phases", "29-0713", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["window_px"] == 96 and summary["n_windows"] == 16
    win = pd.read_csv(out / "windows.csv", keep_default_na=False)
    inside = win[win["x_px"] + 48 <= 192]
    assert (inside["crystalline"] == 1).all()
    # Most 96-px windows hold one plane, (200): a spacing alone names no phase (spacing-only),
    # but goethite is its candidate; named windows name goethite.
    named = inside["status"].isin(["indexed", "ambiguous"])
    assert (inside.loc[named, "phase_card"] == "29-0713").all()
    assert (inside.loc[~named, "status"] == "spacing-only").all()
    assert inside.loc[~named, "alternatives"].str.contains("29-0713").all()
    assert (inside.loc[~named, "phase_card"] == "").all()


def test_progress_bar_on_stderr_of_a_terminal(tmp_path, monkeypatch) -> None:
    """The bar goes to stderr when stderr is a terminal, and stays off stdout; off otherwise."""
    import io

    from hrtem_core.commands._options import ProgressBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err, out = Tty(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    img = write_tif(tmp_path / "g.tif")
    assert main(["analyze", str(img), *OPTS, "--out", str(tmp_path / "o")]) == 0
    assert "%|" in err.getvalue() and "g.tif" in err.getvalue()  # tqdm bar (refreshed per 0.1 s)
    assert "%|" not in out.getvalue() and "crystallinity" in out.getvalue()
    err2 = Tty()
    monkeypatch.setattr(sys, "stderr", err2)
    assert main(["analyze", str(img), *OPTS, "--no-progress", "--out", str(tmp_path / "p")]) == 0
    assert "%|" not in err2.getvalue()
    plain = io.StringIO()  # not a terminal: no bar
    monkeypatch.setattr(sys, "stderr", plain)
    with ProgressBar(total=1.0, desc="x", unit="image") as bar:
        bar(1.0, "done")
    assert plain.getvalue() == ""
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with ProgressBar(total=1.0, desc="x", unit="image") as bar:
        bar(1.0, "done")
    assert "%|" in tty.getvalue()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-zone-index", "0", "--max-zone-index must be at least 1"),
        ("--max-chance", "2", "max chance must be in (0, 1)"),
    ],
)
def test_decision_options_are_checked(tmp_path, capsys, option, value, message) -> None:
    img = write_tif(tmp_path / "g.tif")
    args = ["analyze", str(img), *OPTS, option, value, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:  # usage errors exit from argparse, others return 2
        raise SystemExit(main(args))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_max_zone_index_is_applied(tmp_path) -> None:
    """Goethite [001] needs index 1: named with --max-zone-index 1 and recorded in summary.json."""
    img = write_tif(tmp_path / "g.tif")
    out = tmp_path / "o"
    assert main(["analyze", str(img), *OPTS, "--max-zone-index", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["parameters"]["max_zone_index"] == 1
    win = pd.read_csv(out / "windows.csv", keep_default_na=False)
    zones = [z for z in win["zone_axis"] if z]
    assert zones and all(max(abs(int(v)) for v in z.split()) <= 1 for z in zones)
