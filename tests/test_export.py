"""Exporters and figures: every file is written, read back and compared with the result."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hrtem_core import __version__, analysis, export, figures
from hrtem_core.cards import load_cards
from tests.lattice_images import lattice_image
from tests.test_analysis import PARAMS, RUTILE_HKL, _series_images, micrograph
from tests.test_indexing import EXTRA_PHASES, add_phases


@pytest.fixture(scope="module")
def db():
    return add_phases(load_cards(), EXTRA_PHASES)


@pytest.fixture(scope="module")
def result_and_image(db):
    image, _ = lattice_image(
        db.phase("21-1276"), (0, 0, 1), RUTILE_HKL, rotation_deg=23.0, noise=0.1, seed=1
    )
    return analysis.analyze_image(micrograph(image, defocus=-8.0), params=PARAMS, cards=db), image


@pytest.fixture(scope="module")
def series(db):
    return analysis.analyze_series(_series_images(db), params=PARAMS, cards=db)


def test_export_analysis_round_trip(tmp_path, result_and_image) -> None:
    res, image = result_and_image
    paths = export.export_analysis(res, tmp_path, image=image)
    names = {p.name for p in paths.values()}
    assert names == {
        "windows.csv",
        "summary.json",
        "results.xlsx",
        "plane_map.html",
        "plane_map.png",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files left

    csv = pd.read_csv(tmp_path / "windows.csv", keep_default_na=False)
    assert list(csv.columns) == list(analysis.WINDOW_COLUMNS)
    assert len(csv) == len(res.windows)
    for col in ("window", "row", "col", "crystalline", "n_pairs", "n_explained"):
        assert (csv[col].to_numpy() == res.windows[col].to_numpy()).all()
    np.testing.assert_allclose(csv["score"], res.windows["score"])
    np.testing.assert_allclose(csv[["y_px", "x_px"]], res.windows[["y_px", "x_px"]])
    for col in ("spacings_nm", "angles_deg", "hkl", "zone_axis", "phase_card", "status"):
        assert (csv[col].astype(str) == res.windows[col].astype(str)).all(), col
    row = csv[csv["crystalline"] == 1].iloc[0]
    spacings = [float(v) for v in row["spacings_nm"].split(";")]
    assert spacings == sorted(spacings, reverse=True)
    assert len(row["angles_deg"].split(";")) == math.comb(len(spacings), 2)
    assert len(row["hkl"].split(";")) == len(spacings)

    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary == json.loads(json.dumps(export.jsonable(res.summary)))
    assert summary["version"] == __version__
    assert summary["n_crystalline"] == int(res.windows["crystalline"].sum())

    book = pd.read_excel(tmp_path / "results.xlsx", sheet_name=None, keep_default_na=False)
    assert list(book) == ["windows", "phases", "families", "summary", "parameters"]
    assert len(book["windows"]) == len(res.windows)
    assert (book["windows"]["hkl"].astype(str) == res.windows["hkl"]).all()
    assert list(book["phases"]["card_id"].astype(str)) == list(res.phases["card_id"])
    params = dict(zip(book["parameters"]["key"], book["parameters"]["value"], strict=True))
    assert params["version"] == __version__
    assert params["param.window_px"] == 128 and params["param.detector"] == "classical"
    kv = dict(zip(book["summary"]["key"], book["summary"]["value"], strict=True))
    assert float(kv["crystallinity"]) == pytest.approx(res.summary["crystallinity"])

    html = (tmp_path / "plane_map.html").read_text(encoding="utf-8")
    assert "plotly" in html.lower()
    assert "rutile {1 1 0}" in html or "rutile {2 0 0}" in html
    assert "zone axis: [0 0 1]" in html
    with Image.open(tmp_path / "plane_map.png") as png:
        assert png.format == "PNG" and png.size[0] >= 600 and png.size[1] >= 500


def test_plane_map_figure_content(result_and_image) -> None:
    res, image = result_and_image
    fig = figures.plane_map_figure(res, image)
    codes, labels, _colors = figures.plane_map_categories(res)
    assert codes.shape == (res.grid.n_rows, res.grid.n_cols)
    cryst = res.crystalline_grid
    assert np.isfinite(codes[cryst]).all() and np.isnan(codes[~cryst]).all()
    assert all(lab.startswith("rutile {") for lab in labels)
    legend = [t.name for t in fig.data if getattr(t, "showlegend", None)]
    # The categories, then the windows without spots in their own legend group (neutral grey).
    empty = [t.name for t in fig.data if getattr(t, "legendgroup", None) == "empty"]
    assert legend == labels + empty and set(empty) <= {"no-spots", "non-crystalline"}
    overlay = next(t for t in fig.data if t.name == "windows")
    assert overlay.dx == res.grid.stride_px
    hover = overlay.text[0][0]
    for key in ("spacings [nm]", "angles [deg]", "hkl", "phase: rutile", "zone axis", "score"):
        assert key in hover
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # y down, as the image


def test_display_image_downsampling() -> None:
    img = np.arange(3000 * 2000, dtype=np.float32).reshape(3000, 2000)
    small, f = figures.display_image(img, max_display_px=1024)
    assert f == 3 and small.shape == (1000, 666)
    assert small[0, 0] == pytest.approx(img[:3, :3].mean())
    same, f1 = figures.display_image(img[:100, :100])
    assert f1 == 1 and same.shape == (100, 100)


def test_export_series_round_trip(tmp_path, series) -> None:
    paths = export.export_series(series, tmp_path, failures={"bad.tif": "cannot read"})
    assert {p.name for p in paths.values()} == {
        "profile.csv",
        "series.json",
        "series.xlsx",
        "profile.html",
        "profile.png",
        "phase_fractions.html",
    }
    prof = pd.read_csv(tmp_path / "profile.csv")
    pd.testing.assert_frame_equal(prof, series.profile, check_dtype=False)
    for col in ("file", "defocus_nm", "crystallinity", "n_windows", "n_crystalline"):
        assert col in prof.columns
    assert "fraction_21-1276" in prof.columns
    info = json.loads((tmp_path / "series.json").read_text(encoding="utf-8"))
    assert info["best_focus_nm"] == series.best_focus_nm == 4.0
    assert info["failures"] == [{"file": "bad.tif", "error": "cannot read"}]
    assert [f["defocus_nm"] for f in info["files"]] == [-16.0, -4.0, 4.0]
    book = pd.read_excel(tmp_path / "series.xlsx", sheet_name=None)
    assert set(book) == {"profile", "summary", "parameters"}
    html = (tmp_path / "profile.html").read_text(encoding="utf-8")
    assert "best focus 4 nm" in html
    with Image.open(tmp_path / "profile.png") as png:
        assert png.format == "PNG"


def test_profile_figures(series) -> None:
    fig = figures.profile_figure(series)
    line = fig.data[0]
    assert line.mode == "lines+markers"
    assert list(line.x) == [-16.0, -4.0, 4.0]
    np.testing.assert_allclose(line.y, series.profile["crystallinity"])
    assert any(s.x0 == 4.0 for s in fig.layout.shapes)  # best focus marked
    star = next(t for t in fig.data if t.name == "maximum crystallinity")
    assert list(star.x) == [4.0]
    pf = figures.phase_fraction_figure(series)
    names = [t.name for t in pf.data]
    assert any("rutile" in n for n in names)


def test_jsonable_is_strict() -> None:
    data = {
        "a": np.float32(1.5),
        "b": float("nan"),
        "c": (np.int64(2), np.bool_(True)),
        "d": np.inf,
    }
    out = export.jsonable(data)
    assert out == {"a": 1.5, "b": None, "c": [2, True], "d": None}
    json.dumps(out, allow_nan=False)
