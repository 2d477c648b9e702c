"""The Streamlit dashboard under streamlit.testing (AppTest): every page, bad uploads, card edits.

The pages run in this process against the bundled example (data/examples) and a temporary copy of
the card database (HRTEM_CARDS_PATH); the shipped data/pdf_cards.xlsx is never written.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from hrtem_core.errors import ReadError
from ui import common

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
TIMEOUT = 120
SHIPPED_CARDS = REPO / "data" / "pdf_cards.xlsx"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cards_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary copy of the card database, made the app's database via HRTEM_CARDS_PATH."""
    dest = tmp_path / "pdf_cards.xlsx"
    shutil.copyfile(SHIPPED_CARDS, dest)
    monkeypatch.setenv(common.CARDS_ENV, str(dest))
    return dest


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _plotly_charts(at: AppTest) -> list:
    return list(at.get("plotly_chart"))


def _tif(array: np.ndarray, *, unit: str = "nm", pixel_nm: float = 0.02) -> bytes:
    import tifffile

    buf = io.BytesIO()
    res = 1.0 / pixel_nm
    tifffile.imwrite(buf, array, imagej=True, resolution=(res, res), metadata={"unit": unit})
    return buf.getvalue()


def _submit(at: AppTest, prefix: str, **values: object) -> AppTest:
    """Set sidebar-form parameters (``window``, ``stride``, ``detector``, ...) and press Analyze."""
    for name, value in values.items():
        key = f"{prefix}_{name}"
        widget = next(w for w in at.sidebar if getattr(w, "key", None) == key)
        widget.set_value(value)
    button = next(b for b in at.sidebar.button if b.label == "Analyze")
    return button.click().run()


# ------------------------------------------------------------------------------ unit level
def test_make_upload_refuses_unknown_type_and_empty_files():
    with pytest.raises(ReadError, match="unsupported file type"):
        common.make_upload("notes.txt", b"hello")
    with pytest.raises(ReadError, match="empty"):
        common.make_upload("image.dm3", b"")
    up = common.make_upload("a.tif", b"123")
    assert up.digest == common.make_upload("b.tif", b"123").digest
    assert up.digest != common.make_upload("a.tif", b"124").digest


def test_upload_limit_matches_the_server_config_and_is_enforced(monkeypatch):
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["maxUploadSize"] == common.MAX_UPLOAD_MB == 500
    assert config["theme"]["primaryColor"] and config["theme"]["base"] == "light"
    monkeypatch.setattr(common, "MAX_UPLOAD_MB", 1)
    with pytest.raises(ReadError, match=r"2 MB is over the 1 MB limit"):
        common.make_upload("big.tif", bytes(2 * 2**20))


def test_group_uploads_pairs_ser_with_its_emi():
    files = [("scan_1.ser", b"s"), ("scan.emi", b"e"), ("lonely.emi", b"x"), ("img.png", b"p")]
    uploads, problems = common.group_uploads(files)
    assert [u.name for u in uploads] == ["scan_1.ser", "img.png"]
    assert uploads[0].companion == ("scan.emi", b"e")
    assert uploads[1].companion is None
    assert len(problems) == 1 and "lonely.emi" in problems[0]


def test_uploads_go_only_into_a_private_temporary_folder_that_is_deleted(monkeypatch, tmp_path):
    # A .ser + .emi upload is the one case the app writes files itself (io.load_image needs the
    # .emi beside the .ser): under our own sanitised names, in a fresh private folder, deleted
    # after reading. (Single files go to io.load_image as bytes.) User names with path parts
    # never leave that folder.
    import hrtem_core.io as hio

    seen: list[Path] = []

    def fake_load_image(source, **kwargs):
        path = Path(source)
        seen.append(path)
        assert sorted(p.name for p in path.parent.iterdir()) == ["evil.emi", "evil_1.ser"]
        assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
        return "micrograph"

    monkeypatch.setattr(hio, "load_image", fake_load_image)
    monkeypatch.setattr(common.tempfile, "tempdir", str(tmp_path))
    up = common.make_upload("../../etc/evil_1.ser", b"ser", ("../../../evil.emi", b"emi"))
    assert up.name == "evil_1.ser"
    assert common._load_upload(up, None, None) == "micrograph"
    (path,) = seen
    assert path.parent.parent == tmp_path and path.name == "evil_1.ser"
    assert not path.parent.exists()
    assert list(tmp_path.iterdir()) == []
    assert common._safe_name("..", "fallback") == "fallback"
    assert common._safe_name("a b/../c;d.ser", "x") == "c_d.ser"


def test_model_card_reads_the_training_json():
    # The layout hrtem_core.train writes into models/unet_spots.json.
    info = {
        "architecture": {"input_px": 64, "parameters": 123456},
        "training": {"n_train": 24000, "n_val": 2000, "epochs": 15, "seed": 0},
        "timing": {"training_s": 1800.0},
        "validation": {
            "all": {"tp": 90, "fp": 5, "fn": 10, "precision": 0.947, "recall": 0.9, "f1": 0.923},
            "dose_low": {"tp": 9, "fp": 1, "fn": 3, "precision": 0.9, "recall": 0.75, "f1": 0.818},
            "pixel_f1": 0.8,
        },
        "command": "python -m hrtem_core.train --seed 0",
    }
    text = common.model_summary(info)
    assert (
        "123,456 parameters" in text and "24,000 training" in text and "30 min of training" in text
    )
    assert "python -m hrtem_core.train --seed 0" in text
    table = common.validation_table(info["validation"])
    assert list(table["data"]) == ["all windows", "low dose"]
    assert table["recall"].tolist() == [0.9, 0.75] and table["spots"].tolist() == [100, 12]
    assert common.validation_table(None) is None


def test_the_first_window_shown_is_the_most_convincing_one():
    from types import SimpleNamespace

    import pandas as pd

    from ui.results_ui import default_window

    windows = pd.DataFrame(
        {
            "score": [1.0, 0.88, 0.89, 0.89, 0.0],  # a perfect but single-plane match first
            "zone_axis": ["", "1 -1 0", "1 -1 0", "0 1 -1", ""],
            "n_explained": [1, 5, 6, 6, 0],
            "crystalline": [1, 1, 1, 1, 0],
        }
    )
    assert default_window(SimpleNamespace(windows=windows)) == 2  # zone, most planes, first
    none = windows.assign(score=0.0, zone_axis="", n_explained=0, crystalline=[0, 0, 1, 1, 0])
    assert default_window(SimpleNamespace(windows=none)) == 2  # first crystalline


def test_image_store_is_bounded():
    # Decoded images: a small LRU (the same Micrograph object on every rerun, no copy).
    lru = common._LRU(3)
    for i in range(5):
        lru.put(i, str(i))
    assert len(lru) == 3
    assert lru.get(0) is None and lru.get(4) == "4"
    lru.get(2)  # used: now the most recent, so 3 goes first
    lru.put(5, "5")
    assert lru.get(3) is None and lru.get(2) == "2"
    assert common._image_store().max_entries == common.MAX_IMAGES


def test_analysis_results_are_cached_by_key_and_bounded(monkeypatch):
    # st.cache_data with max_entries: an identical second run is a cache hit (analyze_image is
    # not called again); other parameters, another card database or another image recompute;
    # past MAX_RESULTS entries the oldest is evicted and computes again.
    from dataclasses import replace
    from types import SimpleNamespace

    import hrtem_core.analysis as analysis

    calls: list[tuple] = []
    reported: list[float] = []

    def fake_analyze_image(micrograph, *, params, cards, model, progress):
        calls.append((micrograph, params.window_px, cards.digest))
        progress(0.5, "half")  # drives the bar created inside the cached function
        reported.append(0.5)
        return {"image": micrograph, "window_px": params.window_px, "cards": cards.digest}

    monkeypatch.setattr(analysis, "analyze_image", fake_analyze_image)
    assert common._analysis._info.max_entries == common.MAX_RESULTS == 32
    params = analysis.AnalysisParams(detector="classical")  # no model needed
    cards = SimpleNamespace(digest="cards-1")

    def key(i: int) -> tuple:
        return (f"digest-{i}", f"image{i}.tif", (0.02, 0.02), (64, 64), "None")

    common.clear_result_cache()
    try:
        first = common.analyze_cached("a", key(0), params, cards=cards)
        assert first == {"image": "a", "window_px": 256, "cards": "cards-1"}
        assert common.analyze_cached("a", key(0), params, cards=cards) == first
        assert len(calls) == 1 and reported == [0.5]  # the second run was a cache hit
        common.analyze_cached("a", key(0), replace(params, window_px=128), cards=cards)
        common.analyze_cached("a", key(0), params, cards=SimpleNamespace(digest="cards-2"))
        common.analyze_cached("b", key(1), params, cards=cards)
        assert [c[1:] for c in calls] == [
            (256, "cards-1"),
            (128, "cards-1"),
            (256, "cards-2"),
            (256, "cards-1"),
        ]
        # Only the key counts (the micrograph argument is not hashed): same key, same result.
        assert common.analyze_cached("other object", key(0), params, cards=cards) == first
        assert len(calls) == 4
        for i in range(2, 2 + common.MAX_RESULTS):
            common.analyze_cached(str(i), key(i), params, cards=cards)
        assert len(calls) == 4 + common.MAX_RESULTS
        newest = key(1 + common.MAX_RESULTS)
        common.analyze_cached("x", newest, params, cards=cards)  # still cached
        assert len(calls) == 4 + common.MAX_RESULTS
        common.analyze_cached("a", key(0), params, cards=cards)  # evicted: computes again
        assert len(calls) == 5 + common.MAX_RESULTS and calls[-1][0] == "a"
    finally:
        common.clear_result_cache()


# ------------------------------------------------------------------------------- pages
def test_analyze_opens_on_the_bundled_example_with_map_and_table():
    at = _app().run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert [t.value for t in at.title] == ["Analyze an image"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Windows"].startswith("49 ")  # 1024 px, w=256, s=128: 7 x 7 windows
    assert float(metrics["Crystallinity"].rstrip(" %")) > 0.0
    # The plane map, the window's FFT and mask; the windows table with one row per window.
    assert len(_plotly_charts(at)) >= 3
    tables = [d.value for d in at.dataframe]
    assert any(len(t) == 49 and "spacings_nm" in t.columns for t in tables)
    # Downloads are offered.
    labels = {b.label for b in at.get("download_button")}
    assert {
        "Windows (CSV)",
        "All tables (XLSX)",
        "Summary (JSON)",
        "Map (HTML)",
        "Map (PNG)",
    } <= labels
    # The first load used the U-Net when a trained model is installed (once in this file).
    from ui.analyze_ui import model_available

    expected = "unet" if model_available() else "classical"
    assert at.radio(key="analyze_detector").value == (
        "U-Net" if expected == "unet" else "Classical"
    )
    assert metrics["Time"] and f"detector: {expected}" in next(
        m.proto.help for m in at.metric if m.label == "Time"
    )


def test_analyze_window_selection_and_parameters():
    at = _app().run()
    at = _submit(at, "analyze", detector="Classical", window=128, stride=128)
    assert not at.exception and not _errors(at), _errors(at)
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("64 ")  # 8 x 8
    # The particles of this new analysis: each particle's diffractogram was indexed with the
    # page's cards (ui.common.pattern_inputs).
    parts = next(d.value for d in at.dataframe if "pattern_status" in d.value.columns)
    assert len(parts) >= 1 and (parts["pattern_px"] >= 128).all()
    assert parts["pattern_phase"].str.contains("hematite").any()
    sel = at.selectbox(key="analyze_selected_window")
    sel.set_value(5).run()
    assert not at.exception and not _errors(at)
    assert at.selectbox(key="analyze_selected_window").value == 5


def test_analyze_window_larger_than_image_is_an_error_not_an_exception():
    at = _app().run()
    at = _submit(at, "analyze", detector="Classical", window=2048)
    assert not at.exception
    assert any("smaller than one" in e for e in _errors(at)), _errors(at)
    # The page stays usable: a valid window analyses again.
    at = _submit(at, "analyze", window=256)
    assert not at.exception and not _errors(at)


_NOISE = np.random.default_rng(2).random((256, 256)).astype(np.float32)


def _complex_tif() -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, (_NOISE[:64, :64] + 1j).astype(np.complex64))
    return buf.getvalue()


BAD_UPLOADS = {
    "empty file": ("empty.dm3", b"", "empty"),
    "random bytes .dm3": ("random.dm3", np.random.default_rng(0).bytes(4096), "DigitalMicrograph"),
    "text file": ("notes.txt", b"just some text\n", "unsupported file type"),
    "text renamed .tif": ("notes.tif", b"just some text\n", "notes.tif"),
    "reciprocal units": (
        "fft.tif",
        _tif(np.random.default_rng(1).random((64, 64)).astype(np.float32), unit="1/nm"),
        "reciprocal",
    ),
    "2x2 image": ("tiny.tif", _tif(np.ones((2, 2), np.float32)), "smaller than one"),
    "1x1 image": ("dot.tif", _tif(np.ones((1, 1), np.float32)), "not an image"),
    **{
        f"random bytes .{ext}": (f"random.{ext}", np.random.default_rng(5).bytes(4096), what)
        for ext, what in (
            ("dm4", "DigitalMicrograph"),
            ("ser", "SER"),
            ("emd", "EMD"),
            ("tif", "TIFF"),
            ("png", "PNG"),
        )
    },
    "truncated tif": ("cut.tif", _tif(_NOISE)[: len(_tif(_NOISE)) // 2], "truncated"),
    "all pixels NaN": ("nan.tif", _tif(np.full((64, 64), np.nan, np.float32)), "NaN"),
    "1-D spectrum": ("line.tif", _tif(_NOISE[:1]), "one-dimensional"),
    "complex data": ("fft.tif", _complex_tif(), "complex"),
}

#: Inputs that are usable with a warning: the page analyses them and shows the warning.
WARNED_UPLOADS = {
    "some NaN pixels": ("holes.tif", _tif(np.where(_NOISE > 0.95, np.nan, _NOISE)), "NaN"),
    "constant image": ("flat.tif", _tif(np.ones((256, 256), np.float32)), "same value"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_shows_an_error_and_the_page_stays_usable(case):
    name, data, expected = BAD_UPLOADS[case]
    at = _app().run()
    at = _submit(at, "analyze", detector="Classical")
    at.radio(key="analyze_source").set_value("Upload").run()
    at.file_uploader(key="analyze_upload").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception, at.exception
    errors = _errors(at)
    assert errors and any(expected.lower() in e.lower() for e in errors), errors
    assert all("Traceback" not in e for e in errors)
    # No raw reader exception text (h5py, Pillow, tifffile ...): translated or dropped.
    assert not any(re.search(r"\b[A-Z]\w*(Error|Exception): ", e) for e in errors), errors
    # Still usable: back to the example, which analyses.
    at.radio(key="analyze_source").set_value("Bundled example").run()
    assert not at.exception and not _errors(at)
    assert len(_plotly_charts(at)) >= 1


@pytest.mark.parametrize("case", list(WARNED_UPLOADS))
def test_questionable_upload_is_analysed_with_a_warning(case):
    name, data, expected = WARNED_UPLOADS[case]
    at = _app().run()
    at = _submit(at, "analyze", detector="Classical")
    at.radio(key="analyze_source").set_value("Upload").run()
    at.file_uploader(key="analyze_upload").set_value((name, data, "image/tiff"))
    at.run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert any(expected in w.value for w in at.warning), [w.value for w in at.warning]
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("1 ")  # 256 px, w=256


def test_upload_of_a_calibrated_image_and_pixel_size_override():
    rng = np.random.default_rng(3)
    xx = np.mgrid[0:256, 0:256][1]
    fringes = np.cos(2 * np.pi * xx * 0.02 / 0.25) + 0.3 * rng.standard_normal((256, 256))
    at = _app().run()
    at = _submit(at, "analyze", detector="Classical", window=128, stride=64)
    at.radio(key="analyze_source").set_value("Upload").run()
    at.file_uploader(key="analyze_upload").set_value(
        ("fringes.tif", _tif((1000 + 100 * fringes).astype(np.float32)), "image/tiff")
    )
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    px = next(n for n in at.number_input if n.label == "Pixel size (nm/px)")
    assert px.value == pytest.approx(0.02)
    # 0.25 nm fringes: the table's spacings say so with the file's calibration ...
    table = next(d.value for d in at.dataframe if "spacings_nm" in d.value.columns)
    first = [float(s.split(";")[0]) for s in table["spacings_nm"] if s]
    assert first and np.median(first) == pytest.approx(0.25, rel=0.02)
    # ... and twice that with a pixel size twice as large (user override, passed to io).
    px.set_value(0.04).run()
    assert not at.exception and not _errors(at), _errors(at)
    table = next(d.value for d in at.dataframe if "spacings_nm" in d.value.columns)
    first = [float(s.split(";")[0]) for s in table["spacings_nm"] if s]
    assert np.median(first) == pytest.approx(0.5, rel=0.02)
    assert any("differs from the file" in w.value for w in at.warning)


def test_series_page_produces_the_profile():
    import json

    at = _app()
    at.switch_page("pages/series.py").run()  # the bundled series, the default parameters
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    metrics = {m.label: m.value for m in at.metric}
    n_images = int(metrics["Images"])
    assert n_images >= 3
    assert metrics["Best focus"].endswith(" nm")
    # Issue 21.3: one stride default for both pages; both profile curves visible (one panel
    # each); tied maxima reported with the rule that chose the best focus.
    from hrtem_core.figures import focus_ties
    from ui.analyze_ui import DEFAULT_STRIDE_PX

    assert at.number_input(key="series_stride").value == DEFAULT_STRIDE_PX == 128
    profile_spec = json.loads(_plotly_charts(at)[0].proto.spec)
    panels = {t.get("yaxis", "y") for t in profile_spec["data"] if t.get("x") != [None]}
    assert {"y", "y2"} <= panels
    table = next(d.value for d in at.dataframe if "crystallinity" in d.value.columns)
    # Issue 22 / 20: the particle counts come from the series engine's run, one row per image.
    counts = next(d.value for d in at.dataframe if list(d.value.columns)[-1] == "particles")
    assert len(counts) == n_images and (counts["particles"] >= 1).all()
    ties = focus_ties(table)
    notes = [i.value for i in at.info if "tie at the maximum" in i.value]
    assert bool(notes) == (len(ties) > 1), (ties, notes)
    if notes:
        assert f"{len(ties)} images tie" in notes[0] and "smallest |defocus|" in notes[0]
    # Profile + phase fractions + one small map per image.
    charts = _plotly_charts(at)
    assert len(charts) == 2 + n_images
    # Side by side, a phase {family} has one colour in every image (heatmap and legend entry),
    # and its phase the same hue as on the Analyze page (the card ids decide it, not the order).
    from hrtem_core import figures

    seen: dict[str, str] = {}
    for chart in charts[2:]:
        spec = json.loads(chart.proto.spec)
        heat = next(t for t in spec["data"] if t.get("name") == "windows")
        scale_colors = [c for _, c in heat["colorscale"]][::2]
        legend = [
            t for t in spec["data"] if t.get("showlegend") and t.get("legendgroup") != "empty"
        ]
        colours = [t["marker"]["color"] for t in legend]
        assert [figures._rgba(c, figures.TILE_ALPHA) for c in colours] == scale_colors
        for t in legend:
            assert seen.setdefault(t["name"], t["marker"]["color"]) == t["marker"]["color"]
    assert len(set(seen.values())) == len(seen)  # and distinct categories, distinct colours
    analyze = _app().run()
    spec = json.loads(
        next(c for c in _plotly_charts(analyze) if "analyze_map" in c.proto.id).proto.spec
    )
    import colorsys

    def hue(color: str) -> float:
        c = color.lstrip("#")
        return colorsys.rgb_to_hls(*(int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)))[0] * 360

    compared = 0
    for t in spec["data"]:
        if t.get("showlegend") and t["name"] in seen and t.get("legendgroup") != "not indexed":
            # The phase's hue is the same on both pages (a family's shade may step aside on
            # the series page when another family shown there would otherwise share it).
            diff = (hue(t["marker"]["color"]) - hue(seen[t["name"]]) + 180) % 360 - 180
            assert abs(diff) < 2.0, t["name"]
            compared += 1
    assert compared >= 1
    profile = next(d.value for d in at.dataframe if "crystallinity" in d.value.columns)
    assert len(profile) == n_images
    assert profile["defocus_nm"].is_monotonic_increasing
    assert profile["crystallinity"].between(0, 1).all()
    # Editing a defocus re-labels the profile (results are cached per image: no re-analysis).
    editor = at.data_editor[0]
    at.session_state[editor.key] = {
        "edited_rows": {0: {"defocus_nm": -99.0}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.exception and not _errors(at)
    original = profile
    profile = next(d.value for d in at.dataframe if "crystallinity" in d.value.columns)
    assert profile["defocus_nm"].iloc[0] == -99.0
    # An emptied defocus is the file's own again (its name here), as in the CLI without
    # --defocus-nm (issue 20: the series engine resolves it: metadata, name, else estimate).
    at.session_state[editor.key] = {
        "edited_rows": {0: {"defocus_nm": None}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    profile = next(d.value for d in at.dataframe if "crystallinity" in d.value.columns)
    assert list(profile["defocus_nm"]) == list(original["defocus_nm"])
    sources = next(d.value for d in at.dataframe if "defocus_source" in d.value.columns)
    assert set(sources["defocus_source"]) <= {"file name", "metadata"}, sources


def test_cards_edit_is_validated_and_saved_to_the_copy(cards_copy: Path):
    shipped = _sha(SHIPPED_CARDS)
    before = _sha(cards_copy)
    at = _app()
    at.switch_page("pages/cards.py").run()
    assert not at.exception and not _errors(at), _errors(at)
    assert str(cards_copy) in at.caption[0].value
    key = at.data_editor[0].key
    # An invalid edit: a negative cell length -> inline error naming sheet, row and column.
    at.session_state[key] = {"edited_rows": {0: {"a": -8.0}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception
    # (Row 1: the first row of the editor, as the user counts; the sheet's row 2.)
    assert any("Row 1 of the phases table (card " in e and "'a'" in e for e in _errors(at)), (
        _errors(at)
    )
    assert at.button(key="cards_save").disabled
    # A valid edit -> saved to the copy (with a backup), the shipped file untouched.
    at.session_state[key] = {
        "edited_rows": {0: {"notes": "edited by test_app"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    assert not at.button(key="cards_save").disabled
    at.button(key="cards_save").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert _sha(cards_copy) != before
    assert cards_copy.with_name(cards_copy.name + ".bak").is_file()
    assert _sha(SHIPPED_CARDS) == shipped
    from hrtem_core.cards import load_cards

    assert load_cards(cards_copy).phases[0].notes == "edited by test_app"
    assert any("Saved" in s.value for s in at.success)


def test_cards_concurrent_edit_asks_to_reload(cards_copy: Path):
    from hrtem_core.cards import load_cards, save_cards

    at = _app()
    at.switch_page("pages/cards.py").run()
    key = at.data_editor[0].key
    # Another session saves meanwhile.
    other = load_cards(cards_copy)
    save_cards(other.without_phase(other.phases[-1].card_id), cards_copy)
    at.session_state[key] = {
        "edited_rows": {0: {"notes": "mine"}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.exception
    assert any("changed on disk" in e for e in _errors(at)), _errors(at)
    assert at.button(key="cards_save").disabled
    at.button(key="cards_reload").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert len(at.data_editor[0].value) == len(other.phases) - 1


def test_cards_import_validates_the_uploaded_workbook(cards_copy: Path):
    at = _app()
    at.switch_page("pages/cards.py").run()
    at.file_uploader(key="cards_upload").set_value(("broken.xlsx", b"not a workbook", "x"))
    at.run()
    assert not at.exception
    assert any("broken.xlsx" in e or "xlsx" in e for e in _errors(at)), _errors(at)
    # A valid workbook (the copy itself, one phase fewer) replaces the database on request.
    from hrtem_core.cards import load_cards, save_cards

    db = load_cards(cards_copy)
    smaller = cards_copy.with_name("smaller.xlsx")
    save_cards(db.without_phase(db.phases[-1].card_id), smaller)
    at.file_uploader(key="cards_upload").set_value(("smaller.xlsx", smaller.read_bytes(), "x"))
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    at.button(key="cards_replace").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert len(load_cards(cards_copy).phases) == len(db.phases) - 1


def test_cards_calculator_and_computed_reflections(cards_copy: Path):
    at = _app()
    at.switch_page("pages/cards.py").run()
    assert not at.exception
    calc = next(d.value for d in at.dataframe if "quantity" in d.value.columns)
    # Maghemite (cubic, a = 8.3515 A): d(111) = a / sqrt(3), angle (111)^(220) = 35.26 deg.
    d111 = float(calc["value"].iloc[0].split()[0])
    assert d111 == pytest.approx(0.83515 / np.sqrt(3), rel=1e-4)
    assert calc["value"].iloc[2].startswith("35.26")
    computed = next(d.value for d in at.dataframe if "multiplicity" in d.value.columns)
    assert computed["d (nm)"].is_monotonic_decreasing
    assert not computed["forbidden"].any()
    at.button(key="cards_use_computed").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert any("Unsaved changes" in s.value for s in at.success)


def test_about_page_loads():
    at = _app()
    at.switch_page("pages/about.py").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["About this tool"]
    text = " ".join(m.value for m in at.markdown)
    assert "negative = underfocus" in text and "Friedel pair" in text
    if common.MODEL_SETTINGS.is_file():  # a trained model: its scores are shown
        assert any("F1" in d.value.columns for d in at.dataframe)
        assert "How well it does" in text
    else:
        assert any("No trained model" in i.value for i in at.info)


def test_about_page_shows_the_model_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import json

    settings = tmp_path / "unet_spots.json"
    scores = {"tp": 97, "fp": 3, "fn": 3, "precision": 0.97, "recall": 0.97, "f1": 0.97}
    settings.write_text(
        json.dumps({"architecture": {"input_px": 64}, "validation": {"all": scores}}), "utf-8"
    )
    monkeypatch.setattr(common, "MODEL_SETTINGS", settings)
    at = _app()
    at.switch_page("pages/about.py").run()
    assert not at.exception, at.exception
    # The training-time scores (beside the held-out table read from eval_detectors.json).
    table = next(d.value for d in at.dataframe if "spots" in d.value.columns)
    assert table["F1"].tolist() == [0.97] and table["spots"].tolist() == [100]


def test_a_page_opened_first_goes_through_the_navigation_of_app_py():
    # The pages live in pages/ beside app.py. Streamlit then starts in its older automatic
    # multipage mode (each run of a fresh AppTest does too, like a fresh server) and would run a
    # requested page's script alone; ui.common.page_guard sends that run through app.py's
    # st.navigation, which switches the old mode off for the process.
    from streamlit.runtime.pages_manager import PagesManager

    for name in ("analyze", "series", "cards", "about"):
        assert (REPO / "pages" / f"{name}.py").is_file()
    assert not (REPO / "app_pages").exists()
    at = _app()
    at.switch_page("pages/about.py").run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["About this tool"]  # once: not run twice
    assert PagesManager.uses_pages_directory is False


@pytest.mark.shared
def test_ser_and_its_emi_in_one_upload_form_one_image(fixtures_dir: Path):
    names = ("128x128-TEM_search_1.ser", "128x128-TEM_search.emi")
    files = [(n, (fixtures_dir / n).read_bytes()) for n in names]
    uploads, problems = common.group_uploads(files)
    assert not problems and [u.name for u in uploads] == [names[0]]
    m = common.micrograph_from_upload(uploads[0])
    assert m.pixel_size_nm == pytest.approx((5.2612, 5.2612), rel=1e-4)
    assert m.metadata["emi"] is True
    # The .ser alone still reads (its calibration is in the .ser), without the microscope data.
    alone = common.micrograph_from_upload(common.make_upload(*files[0]))
    assert alone.metadata["emi"] is False
    assert any(".emi" in w for w in alone.warnings)


@pytest.mark.shared
def test_stack_upload_offers_a_frame_choice(fixtures_dir: Path):
    at = _app().run()
    at = _submit(at, "analyze", detector="Classical", window=64, stride=64)
    at.radio(key="analyze_source").set_value("Upload").run()
    data = (fixtures_dir / "temp.mrc").read_bytes()
    at.file_uploader(key="analyze_upload").set_value(("temp.mrc", data, "application/octet-stream"))
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    frame = next(s for s in at.selectbox if s.label.startswith("Frame"))
    assert frame.options[:2] == ["sum of all frames", "frame 0"] and len(frame.options) == 4
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("4 ")
    frame.set_value("sum").run()
    assert not at.exception and not _errors(at), _errors(at)
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("4 ")
