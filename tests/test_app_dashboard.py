"""The dashboard defects of issue 21, one test each (streamlit.testing AppTest + unit level).

Stale results, the lingering calibration error, the series page, the compact hover, the map's
colours, the FFT panel, the card-row message, progress/ETA/cancel, the tests' own outputs, one
source for the detector figures, names and messages, the README set-up.
"""

from __future__ import annotations

import colorsys
import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from hrtem_core import figures
from ui import common, run_state

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=180)


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _spec(chart) -> dict:
    return json.loads(chart.proto.spec)


def _chart(at: AppTest, key_part: str):
    return next(c for c in at.get("plotly_chart") if key_part in (c.proto.id or ""))


def _charts_by_title(at: AppTest) -> dict[str, dict]:
    out = {}
    for c in at.get("plotly_chart"):
        spec = _spec(c)
        title = spec.get("layout", {}).get("title", {})
        text = title.get("text", "") if isinstance(title, dict) else str(title)
        out[text] = spec
    return out


def _set(at: AppTest, key: str, value) -> None:
    next(w for w in at.sidebar if getattr(w, "key", None) == key).set_value(value)


def _analyze(at: AppTest, prefix: str = "analyze") -> AppTest:
    return at.button(key=f"{prefix}_run").click().run()


@pytest.fixture(scope="module")
def first_view() -> AppTest:
    """The Analyze page as it opens (the bundled example, analysed)."""
    at = _app().run()
    assert not at.exception, at.exception
    return at


# ----------------------------------------------------------------------------- 1. stale
def test_1_changed_settings_mark_the_results_stale_until_analyze_is_pressed():
    at = _app().run()
    assert not at.exception and not _errors(at)
    assert not at.warning
    windows = {m.label: m.value for m in at.metric}["Windows"]
    _set(at, "analyze_stride", 256)
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    banner = [w.value for w in at.warning if "previous settings" in w.value]
    assert banner and "stride 128 → 256 px" in banner[0], [w.value for w in at.warning]
    # The old result stays on screen, its downloads marked.
    assert {m.label: m.value for m in at.metric}["Windows"] == windows
    labels = [b.label for b in at.get("download_button")]
    assert "Windows (CSV) (stale)" in labels and "Map (PNG) (stale)" in labels
    # Analyze: the new settings are computed, no banner, plain downloads.
    _analyze(at)
    assert not at.exception and not _errors(at), _errors(at)
    assert not [w for w in at.warning if "previous settings" in w.value]
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("16 ")  # 4 x 4
    assert "Windows (CSV)" in [b.label for b in at.get("download_button")]


def test_1_stale_changes_are_described():
    from hrtem_core.analysis import AnalysisParams

    old = AnalysisParams(window_px=256, stride_px=128, detector="unet", spacing_tol=0.03)
    new = AnalysisParams(
        window_px=128, stride_px=128, detector="classical", spacing_tol=0.05, phases=("a",)
    )
    text = run_state.changes(old, new)
    assert text == [
        "window 256 → 128 px",
        "detector unet → classical",
        "spacing tolerance 3 → 5 %",
        "phases all enabled → 1 chosen",
    ]


# -------------------------------------------------------------------- 2. lingering error
def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_2_missing_pixel_size_error_goes_once_it_is_typed():
    rng = np.random.default_rng(4)
    img = (rng.random((256, 256)) * 255).astype(np.uint8)
    at = _app().run()
    _set(at, "analyze_detector", "Classical")
    at.radio(key="analyze_source").set_value("Upload").run()
    at.file_uploader(key="analyze_upload").set_value(("photo.png", _png(img), "image/png"))
    at.run()
    assert not at.exception
    assert any("no pixel size" in e for e in _errors(at)), _errors(at)
    px = next(n for n in at.number_input if n.label == "Pixel size (nm/px)")
    px.set_value(0.05).run()
    assert not at.exception
    assert not _errors(at), _errors(at)
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("1 ")
    assert any("typed by hand" in c.value for c in at.caption)


# ------------------------------------------------------------------------- 3. the series
# The page-level checks (shared stride default, two profile panels, the ties note) run in
# tests/test_app.py::test_series_page_produces_the_profile, on the same series analysis.


def test_3_focus_note_names_the_ties_and_the_rule():
    from hrtem_core.analysis import best_focus_nm
    from ui.series_ui import focus_note

    prof = pd.DataFrame(
        {
            "defocus_nm": [-8.0, -4.0, 0.0, 4.0],
            "crystallinity": [0.9, 0.9, 0.9, 0.2],
            "crystalline_area_fraction": [0.5, 0.6, 0.6, 0.1],
        }
    )
    series = SimpleNamespace(profile=prof, best_focus_nm=best_focus_nm(prof))
    note = focus_note(series)
    assert series.best_focus_nm == 0.0
    assert "3 images tie" in note and "-8, -4, +0 nm" in note
    assert "largest crystalline area fraction" in note and "-8 to +0 nm" in note
    single = SimpleNamespace(
        profile=prof.assign(crystallinity=[0.1, 0.9, 0.2, 0.2]), best_focus_nm=-4.0
    )
    assert focus_note(single) is None


# ---------------------------------------------------------- 4, 5 and 6: map and spectrum
def test_4_5_map_hover_is_compact_and_colours_follow_the_card_ids(first_view):
    at = first_view
    spec = _spec(_chart(at, "analyze_map"))
    heat = next(t for t in spec["data"] if t.get("name") == "windows")
    texts = [t for row in heat["text"] for t in row if t]
    assert texts and max(t.count("<br>") for t in texts) <= 3
    indexed = [t for t in texts if "score" in t]
    assert indexed and all("(hkl)" in t and " nm" in t for t in indexed)
    assert not any("alternatives" in t or "zone axis" in t for t in texts)
    legend = [t for t in spec["data"] if t.get("showlegend")]
    db = common.load_card_db()
    ids = [p.card_id for p in db.phases]
    for t in legend:
        group = t["legendgroup"]
        if group in ids:
            # A shade of the phase's own hue, which comes from the card ids of the database.
            c = t["marker"]["color"].lstrip("#")
            rgb = [int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)]
            hue = colorsys.rgb_to_hls(*rgb)[0] * 360
            want = figures.phase_hue_deg(group, among=ids)
            assert abs((hue - want + 180) % 360 - 180) < 2.0, (t["name"], hue, want)
        else:
            assert group in ("not indexed", "empty")
            assert t["marker"]["color"] == figures.STATUS_COLORS[t["name"]]
    titled = [t["legendgrouptitle"]["text"] for t in legend if t.get("legendgrouptitle")]
    assert len(titled) == len({t["legendgroup"] for t in legend})  # one title per group
    assert len(legend) < 21


def test_6_fft_panel_is_large_with_axes_in_inverse_nm_rings_and_pattern(first_view):
    at = first_view
    spec = _spec(_chart(at, "analyze_fft"))
    layout = spec["layout"]
    assert layout["height"] >= 600
    assert "1/nm" in layout["xaxis"]["title"]["text"] and "1/nm" in layout["yaxis"]["title"]["text"]
    names = {t.get("name") for t in spec["data"]}
    assert {"spectrum", "pick", "detected spots"} <= names
    # The default window is indexed with a zone axis: rings of its phase and the card pattern.
    assert at.selectbox(key="analyze_ring_phase").value
    assert any(s["type"] == "circle" for s in layout.get("shapes", []))
    assert "card pattern" in names
    # The measuring panel: two detected spots give d, angle and the nearest card planes.
    at.selectbox(key="analyze_ring_phase").set_value("").run()  # nearest planes of all phases
    assert not at.exception
    pick = next(m for m in at.multiselect if m.key.startswith("analyze_measure_spots"))
    pick.set_value(list(pick.options[:2]) if len(pick.options) >= 2 else pick.options).run()
    assert not at.exception and not _errors(at), _errors(at)
    table = next(d.value for d in at.dataframe if "nearest card planes" in d.value.columns)
    assert table["d (nm)"].between(0.05, 2.0).all()
    names = "|".join(p.name for p in common.load_card_db().enabled_phases())
    assert table["nearest card planes"].str.contains(rf"(?:{names}) \{{.*\}} \d\.\d{{4}} nm").all()


def test_6_hexagonal_rings_use_four_indices(first_view):
    at = first_view
    at.selectbox(key="analyze_ring_phase").set_value("33-0664").run()  # hematite, R-3c (hex)
    assert not at.exception and not _errors(at)
    spec = _spec(_chart(at, "analyze_fft"))
    rings = [t["name"] for t in spec["data"] if t.get("name", "").startswith("ring ")]
    listed = next(c.value for c in at.caption if c.value.startswith("Rings of hematite"))
    four = re.findall(r"\{(-?\d+) (-?\d+) (-?\d+) (-?\d+)\}", listed)
    assert four and len(four) == len(rings), (listed, rings)
    for h, k, i, _l in four:
        assert int(i) == -(int(h) + int(k))


def test_features_bragg_filter_line_profile_and_exports(first_view):
    at = first_view
    titles = _charts_by_title(at)
    assert any(t.startswith("Bragg-filtered") for t in titles)
    assert "Local fringe amplitude" in titles
    assert any(t.startswith("Fringe period") for t in titles)
    period = next(m for m in at.metric if m.label == "Fringe period")
    assert 0.1 < float(period.value.split()[0]) < 1.0
    labels = {b.label for b in at.get("download_button")}
    assert {"PNG", "SVG", "Map (PNG)", "Map (SVG)"} <= labels
    assert any(lab.startswith("Filtered image (32-bit TIFF") for lab in labels)
    # Every image has an nm scale bar.
    for title in ("Local fringe amplitude",):
        texts = [a.get("text", "") for a in titles[title]["layout"].get("annotations", [])]
        assert any(t.endswith(" nm</b>") for t in texts)
    map_texts = [
        a.get("text", "") for a in _spec(_chart(at, "analyze_map"))["layout"].get("annotations", [])
    ]
    assert any(t.endswith(" nm</b>") for t in map_texts)


def test_4_click_events_are_read_from_the_charts():
    from ui.results_ui import _selected_from_event, fft_points_from_event

    result = SimpleNamespace(grid=SimpleNamespace(n_windows=49))
    event = SimpleNamespace(selection=SimpleNamespace(points=[{"customdata": [7], "x": 1, "y": 2}]))
    assert _selected_from_event(event, result) == 7
    two = [{"x": 1.5, "y": -2.0}, {"x": 1.6, "y": -2.1}]  # one click on two overlapping traces
    event = SimpleNamespace(selection=SimpleNamespace(points=two))
    assert fft_points_from_event(event) == [(-2.0, 1.5)]
    assert fft_points_from_event(None) == []


# ------------------------------------------------------------------------- 7. card rows
def test_7_card_message_names_the_edited_row_and_sits_at_its_table(tmp_path, monkeypatch):
    cards = tmp_path / "pdf_cards.xlsx"
    shutil.copyfile(REPO / "data" / "pdf_cards.xlsx", cards)
    monkeypatch.setenv(common.CARDS_ENV, str(cards))
    at = _app()
    at.switch_page("pages/cards.py").run()
    key = at.data_editor[1].key  # the reflections editor
    at.session_state[key] = {
        "edited_rows": {3: {"d_A": -1.0}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.run()
    assert not at.exception
    errors = _errors(at)
    assert any(
        e.startswith("Not valid: Row 4 of the reflections table (card ") and "'d_A'" in e
        for e in errors
    ), errors
    # In page order: the message comes after the reflections editor, before the Save button.
    order = []
    for n in at.main:
        if getattr(n, "key", None) == key:
            order.append(("editor", key))
        elif type(n).__name__ == "Error":
            order.append(("error", n.value))
        elif getattr(n, "key", None) == "cards_save":
            order.append(("button", "cards_save"))
    i_editor = order.index(("editor", key))
    i_error = next(i for i, o in enumerate(order) if o[0] == "error")
    i_save = order.index(("button", "cards_save"))
    assert i_editor < i_error < i_save


def test_7_row_numbers_count_from_the_first_editor_row():
    from ui.cards_ui import locate_error, row_error_text

    err = locate_error("sheet 'phases', row 2, column 'a': expected a value > 0 Angstrom, got -8")
    assert (err.table, err.row, err.column) == ("phases", 1, "a")
    frame = pd.DataFrame({"card_id": ["39-1346", "19-0629"]})
    assert row_error_text(err, frame) == (
        "Row 1 of the phases table (card 39-1346), column 'a': expected a value > 0 Angstrom, "
        "got -8"
    )
    assert locate_error("the file is not a workbook") is None


# ----------------------------------------------------------------- 8. progress, cancel
def test_8_progress_shows_windows_done_and_time_left():
    assert common.progress_text(0.5, total=962, elapsed_s=10.0, label="big.tif") == (
        "big.tif: 481 / 962 windows · 10 s elapsed · about 10 s left"
    )
    assert "left" not in common.progress_text(0.0, total=10, elapsed_s=0.0)
    ticks = iter([0.0, 4.0, 8.0])
    seen = []
    bar = SimpleNamespace(progress=lambda f, text=None: seen.append((f, text)))
    report = common.progress_reporter(bar, total=100, clock=lambda: next(ticks))
    report(0.25, "x")
    report(0.5, "x")
    assert seen == [
        (0.25, "25 / 100 windows · 4 s elapsed · about 12 s left"),
        (0.5, "50 / 100 windows · 8 s elapsed · about 8 s left"),
    ]
    stop = common.progress_reporter(bar, total=100, cancelled=lambda: True)
    with pytest.raises(run_state.AnalysisCancelled):
        stop(0.1, "x")


def test_8_a_large_image_reports_progress_in_small_blocks():
    from hrtem_core.analysis import AnalysisParams

    p = common.fine_blocks(AnalysisParams(window_px=256, stride_px=128), (4096, 4096))
    assert 31 <= p.batch_size <= 961 // common.PROGRESS_STEPS + 1  # >= 25 updates, >= one row
    small = AnalysisParams(window_px=256, stride_px=128)
    assert common.fine_blocks(small, (1024, 1024)) == small  # 49 windows: one block is fine


def test_8_cancel_leaves_the_page_usable():
    rng = np.random.default_rng(6)
    img = (1000 + 100 * rng.standard_normal((256, 256))).astype(np.float32)
    from tests.test_app import _tif

    at = _app().run()
    _set(at, "analyze_detector", "Classical")
    at.radio(key="analyze_source").set_value("Upload").run()
    # The Cancel button's callback sets this flag; the next progress update stops the run.
    at.session_state[run_state.cancel_key("analyze")] = True
    at.file_uploader(key="analyze_upload").set_value(("noise.tif", _tif(img), "image/tiff"))
    at.run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    assert any("cancelled" in i.value for i in at.info)
    assert not at.metric  # nothing analysed, nothing stale shown for this new image
    at.run()  # a rerun does not start the cancelled analysis again
    assert any("cancelled" in i.value for i in at.info) and not at.metric
    _analyze(at)
    assert not at.exception and not _errors(at), _errors(at)
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("1 ")
    # Cancelled after new settings on the same image: the previous result stays, marked stale.
    _set(at, "analyze_window", 128)
    at.session_state[run_state.cancel_key("analyze")] = True  # as the Cancel callback does
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    assert any("cancelled" in i.value for i in at.info)
    assert any("window 256 → 128 px" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Windows"].startswith("1 ")


# ------------------------------------------------------------- 10. one source of figures
def test_10_about_and_readme_take_the_detector_figures_from_the_eval_json():
    data = json.loads(common.DETECTOR_EVAL.read_text(encoding="utf-8"))
    table = common.detector_eval_table(data)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for r in table.itertuples(index=False):
        if r.detector != "U-Net":
            continue
        assert f"| {r.precision:.3f} | {r.recall:.3f} | **{r.F1:.3f}** |" in readme, r
    alarms = common.detector_false_alarms(data)
    assert (
        f"U-Net {100 * alarms['U-Net']:.1f} %, classical {100 * alarms['classical']:.1f} %"
        in readme
    )
    at = _app()
    at.switch_page("pages/about.py").run()
    assert not at.exception, at.exception
    shown = next(d.value for d in at.dataframe if "Δd/d p95 (%)" in d.value.columns)
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), table)
    assert any(f"U-Net {100 * alarms['U-Net']:.1f} %" in c.value for c in at.caption)


# ------------------------------------------------------------- 11. names and messages
def test_11_phase_names_in_full_stride_zero_and_translated_reader_errors():
    at = _app().run()
    db = common.load_card_db()
    boxes = {c.key: c.label for c in at.sidebar.checkbox}
    for p in db.enabled_phases():
        assert boxes[f"analyze_phase_{p.card_id}"] == common.phase_label(p)
    _set(at, "analyze_stride", 0)
    at.run()
    assert not at.exception
    assert any("Stride must be at least 1 px" in e.value for e in at.sidebar.error)
    assert any("analysis parameters" in i.value for i in at.info)
    raw = (
        "random.emd: cannot be read as an EMD (HDF5) file (corrupt, truncated or not this "
        "format): OSError: Unable to synchronously open file (file signature not found)"
    )
    assert common.friendly_message(raw) == (
        "random.emd: cannot be read as an EMD (HDF5) file (corrupt, truncated or not this "
        "format): it is not an HDF5 file (EMD files are HDF5)."
    )
    png = "x.png: cannot be read as a PNG/JPEG image (corrupt, truncated or not this format): "
    assert common.friendly_message(png + "OSError: Could not find a backend to open").endswith(
        "no known image format (PNG/JPEG) was recognised in it."
    )
    assert common.friendly_message("plain message") == "plain message"


# --------------------------------------------------------------------- 9, 12. the repo
def test_9_no_test_writes_the_tracked_screenshots():
    browser = (REPO / "tests" / "test_browser.py").read_text(encoding="utf-8")
    assert 'docs" / "img' not in browser and "tmp_path" in browser
    script = REPO / "scripts" / "take_screenshots.py"
    assert script.is_file() and "--no-sandbox" in script.read_text(encoding="utf-8")


def test_12_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    top = readme.split("## Contents")[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", top, flags=re.S)
    assert len(blocks) == 2 and all("\n" not in b for b in blocks)
    run_app, run_tests = blocks
    assert "venv" in run_app and run_app.endswith("streamlit run app.py")
    assert "venv" in run_tests and run_tests.endswith("python -m pytest")
    assert "CPU" in top and "../shared" in top
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert run_tests in ci


# ------------------------------------------------------- issue 18.6: precomputed first view
def _example_inputs(params):
    from hrtem_core.cards import load_cards
    from hrtem_core.io import load_image
    from ui import example_cache

    upload = common.upload_from_path(example_cache.EXAMPLE_IMAGE)
    micrograph = load_image(upload.data, name=upload.name)
    cards = load_cards(example_cache.CARDS_XLSX)
    key = common.image_key(upload, micrograph)
    return micrograph, cards, key, example_cache.result_inputs(key, params, cards.digest)


@pytest.fixture(scope="module")
def stored_example():
    import pickle
    import zlib

    from ui import example_cache

    if not example_cache.RESULT_FILE.is_file():
        pytest.fail("data/example_cache is missing: run scripts/build_example_cache.py")
    return pickle.loads(zlib.decompress(example_cache.RESULT_FILE.read_bytes()))


def _skip_on_other_arithmetic() -> None:
    """The stored example holds the U-Net masks of one arithmetic (bfloat16 or float32, from the
    CPU flags): on a machine that computes in the other, the app analyses the example instead
    (tested by test_example_cache_answers_only_its_exact_inputs), and a comparison of results
    would compare two arithmetics."""
    from ui import example_cache

    built = example_cache.stored_keys()["result"]["inputs"].get("unet_arithmetic")
    here = example_cache.unet_arithmetic()
    if built != here:
        pytest.skip(f"example cache built for {built}, this machine runs the U-Net in {here}")


def test_example_cache_is_current(stored_example):
    """The stored key is that of today's inputs (image, params, U-Net, cards, code, versions).

    Every input but the machine's U-Net arithmetic must match on any machine; the whole key
    where the arithmetic is the one the cache was built with.
    """
    from ui import example_cache

    keys = example_cache.stored_keys()
    _m, _c, _k, inputs = _example_inputs(stored_example["result"].params)
    stale = sorted(k for k, v in inputs.items() if keys["result"]["inputs"].get(k) != v)
    assert set(stale) <= {"unet_arithmetic"}, (
        f"the precomputed example is stale ({', '.join(stale)} changed): "
        "run scripts/build_example_cache.py"
    )
    _skip_on_other_arithmetic()
    assert example_cache.key_of(inputs) == keys["result"]["key"] == stored_example["key"], (
        f"the precomputed example is stale ({', '.join(stale)} changed): "
        "run scripts/build_example_cache.py"
    )
    data = example_cache.CARDS_XLSX.read_bytes()
    assert (
        example_cache.key_of(example_cache.cards_inputs(data, "pdf_cards.xlsx"))
        == (keys["cards"]["key"])
    ), "the stored card database is stale: run scripts/build_example_cache.py"


def test_example_cache_equals_a_fresh_analysis(stored_example):
    """Analysed again now, the example gives exactly the stored result, particles and masks."""
    from hrtem_core.analysis import analyze_image
    from hrtem_core.particles import image_particles
    from hrtem_core.unet.load import load_model
    from ui import window_view

    _skip_on_other_arithmetic()
    stored = stored_example["result"]
    micrograph, cards, _k, _i = _example_inputs(stored.params)
    model = load_model()
    fresh = analyze_image(micrograph, params=stored.params, cards=cards, model=model)
    hint = "differs from a fresh analysis: run scripts/build_example_cache.py"
    pd.testing.assert_frame_equal(fresh.windows, stored.windows, obj=f"windows table {hint}")
    pd.testing.assert_frame_equal(fresh.phases, stored.phases, obj="phases")
    pd.testing.assert_frame_equal(fresh.families, stored.families, obj="families")
    assert fresh.pairs == stored.pairs, hint
    assert fresh.index == stored.index, hint
    assert (fresh.grid, fresh.pixel_size_nm, fresh.defocus_nm) == (
        stored.grid,
        stored.pixel_size_nm,
        stored.defocus_nm,
    )
    skip = {"elapsed_s", "cards_path"}
    assert {k: v for k, v in fresh.summary.items() if k not in skip} == {
        k: v for k, v in stored.summary.items() if k not in skip
    }
    shape = stored_example["masks_shape"]
    masks = np.unpackbits(stored_example["masks_packed"], count=int(np.prod(shape)))
    masks = masks.reshape(shape).astype(bool)
    for i in range(fresh.grid.n_windows):
        detail = window_view.window_detail(fresh, micrograph.data, i, model=model)
        assert np.array_equal(detail.mask, masks[i]), f"U-Net mask of window {i} {hint}"
    # As the dashboard does (ui.common.pattern_inputs): the cards and the U-Net index each
    # particle's diffractogram.
    extras = image_particles(
        fresh, micrograph.data, metadata=micrograph.metadata, cards=cards, model=model
    )
    kept = stored_example["particles"]
    pd.testing.assert_frame_equal(extras.table, kept.table, obj=f"particle table {hint}")
    assert np.array_equal(extras.particles.labels, kept.particles.labels)
    assert extras.defocus.defocus_nm == kept.defocus.defocus_nm
    assert np.array_equal(extras.defocus.profile, kept.defocus.profile)
    assert (extras.warnings, extras.disagreement, extras.defocus_source) == (
        kept.warnings,
        kept.disagreement,
        kept.defocus_source,
    )


def test_example_cache_answers_only_its_exact_inputs(stored_example, monkeypatch):
    from dataclasses import replace

    from ui import example_cache

    params = stored_example["result"].params
    _m, cards, key, _i = _example_inputs(params)
    hit = example_cache.precomputed_result(key, params, cards.digest, cards_path="x.xlsx")
    assert hit is not None and hit.result.summary["cards_path"] == "x.xlsx"
    assert example_cache.precomputed_for(hit.result) is hit
    assert example_cache.precomputed_for(replace(hit.result)) is None  # identity, not equality
    # Any other input: no stored result.
    assert (
        example_cache.precomputed_result(key, replace(params, stride_px=64), cards.digest) is None
    )
    assert example_cache.precomputed_result(key, params, "other-cards") is None
    other_image = ("0" * 64, *key[1:])
    assert example_cache.precomputed_result(other_image, params, cards.digest) is None
    monkeypatch.setattr(example_cache, "unet_arithmetic", lambda: "cpu-float16")
    assert example_cache.precomputed_result(key, params, cards.digest) is None
    monkeypatch.undo()
    monkeypatch.setattr(example_cache, "library_versions", lambda: {"numpy": "0"})
    assert example_cache.precomputed_result(key, params, cards.digest) is None
    monkeypatch.undo()
    monkeypatch.setenv(example_cache.DISABLE_ENV, "0")
    assert example_cache.precomputed_result(key, params, cards.digest) is None


def test_example_cache_code_fingerprint_follows_the_analysis_sources(tmp_path):
    from ui import example_cache

    root = tmp_path / "hrtem_core"
    (root / "commands").mkdir(parents=True)
    (root / "indexing.py").write_text("A = 1\n")
    (root / "figures.py").write_text("B = 1\n")
    (root / "commands" / "x.py").write_text("C = 1\n")
    first = example_cache.code_fingerprint(root)
    (root / "figures.py").write_text("B = 2\n")  # presentation only: same key
    (root / "commands" / "x.py").write_text("C = 2\n")
    assert example_cache.code_fingerprint(root) == first
    (root / "indexing.py").write_text("A = 2\n")
    assert example_cache.code_fingerprint(root) != first
    (root / "indexing.py").write_text("A = 1\n")
    (root / "new_module.py").write_text("")
    assert example_cache.code_fingerprint(root) != first


def test_stored_cards_equal_the_workbook_and_only_for_its_bytes(tmp_path):
    from hrtem_core.cards import load_cards
    from ui import example_cache

    fresh = load_cards(example_cache.CARDS_XLSX)
    stored = example_cache.cached_cards(example_cache.CARDS_XLSX)
    assert stored is not None, "the stored card database is stale: run the build script"
    assert stored == fresh and stored.warnings == fresh.warnings
    assert (stored.path, stored.digest) == (fresh.path, fresh.digest)
    copy = tmp_path / "pdf_cards.xlsx"
    copy.write_bytes(example_cache.CARDS_XLSX.read_bytes() + b"\0")  # other bytes
    assert example_cache.cached_cards(copy) is None
    assert example_cache.cached_cards(tmp_path / "missing.xlsx") is None


def test_weights_path_and_arithmetic_agree_with_the_unet_module():
    from hrtem_core.unet import load as unet_load
    from ui import example_cache

    assert common.MODEL_WEIGHTS == unet_load.DEFAULT_WEIGHTS == example_cache.UNET_WEIGHTS
    expected = "cpu-bfloat16" if unet_load.cpu_has_native_bfloat16() else "cpu-float32"
    if example_cache.unet_arithmetic() != "unknown":
        assert example_cache.unet_arithmetic() == expected


def test_first_view_is_precomputed_without_torch_or_the_workbook_parse():
    """A fresh process: the first view shows the stored result, labelled, importing no torch."""
    _skip_on_other_arithmetic()
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=180).run()\n"
        "print(json.dumps({'exc': [str(e.value) for e in at.exception],"
        " 'errors': [e.value for e in at.error],"
        " 'captions': [c.value for c in at.caption],"
        " 'buttons': [b.label for b in at.button],"
        " 'modules': [m for m in ('torch', 'openpyxl') if m in sys.modules]}))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "HRTEM_CARDS_PATH"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not got["exc"] and not got["errors"], got
    assert any(c.startswith("Precomputed for the bundled example") for c in got["captions"]), (
        "the first view was computed: the stored example is stale, "
        "run scripts/build_example_cache.py"
    )
    assert "Re-run" in got["buttons"]
    assert got["modules"] == [], f"imported on the first view: {got['modules']}"


def test_rerun_analyses_the_example_again_with_the_same_tables():
    from ui import example_cache

    _skip_on_other_arithmetic()
    at = _app().run()
    assert not at.exception
    shown = at.session_state["analyze_last"]["result"]
    assert example_cache.precomputed_for(shown) is not None
    at.button(key="analyze_rerun").click().run()
    assert not at.exception and not _errors(at)
    again = at.session_state["analyze_last"]["result"]
    assert again is not shown and example_cache.precomputed_for(again) is None
    assert not any(c.value.startswith("Precomputed") for c in at.caption)
    pd.testing.assert_frame_equal(again.windows, shown.windows)
    # The session keeps computing from now on, even for the same inputs.
    _set(at, "analyze_stride", 256)
    _analyze(at)
    _set(at, "analyze_stride", 128)
    _analyze(at)
    assert example_cache.precomputed_for(at.session_state["analyze_last"]["result"]) is None
