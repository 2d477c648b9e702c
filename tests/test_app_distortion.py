"""The "Scan distortion" expander of the Analyze and Series pages (AppTest).

A two-grain goethite lattice distorted by a known stretch is uploaded; "Measure" with the
goethite card must fill in that stretch, the image is then resampled (a warning says so), and
a value that is not a stretch is one error line with the page still usable.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from hrtem_core.cards import load_cards
from hrtem_core.distortion import parse_stretch
from tests.lattice_images import lattice_image
from tests.test_distortion import GOETHITE, S_TRUE

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _distorted_tif() -> bytes:
    import tifffile

    card, zone, hkls = GOETHITE
    phase = load_cards().phase(card)
    left = np.zeros((384, 384), bool)
    left[:, :192] = True
    grains = [
        lattice_image(phase, zone, hkls, rotation_deg=rot, noise=0.1, shape=(384, 384),
                      region=region, seed=k, stretch=S_TRUE)[0]
        for k, (rot, region) in enumerate(((12.0, left), (50.0, ~left)))
    ]  # fmt: skip
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        (grains[0] + grains[1] - 10.0).astype(np.float32),
        imagej=True,
        resolution=(50.0, 50.0),  # 0.02 nm/px
        metadata={"unit": "nm"},
    )
    return buf.getvalue()


def _open_with_upload() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    for key, value in (("analyze_detector", "Classical"), ("analyze_window", 128),
                       ("analyze_stride", 64)):  # fmt: skip
        next(w for w in at.sidebar if getattr(w, "key", None) == key).set_value(value)
    at = next(b for b in at.sidebar.button if b.label == "Analyze").click().run()
    at.radio(key="analyze_source").set_value("Upload").run()
    at.file_uploader(key="analyze_upload").set_value(
        ("goethite_stem.tif", _distorted_tif(), "image/tiff")
    )
    return at.run()


def _stretch_field(at: AppTest):
    return next(t for t in at.text_input if t.label.startswith("Stretch SXX,SXY,SYY"))


def test_measure_fills_the_stretch_and_the_image_is_resampled() -> None:
    at = _open_with_upload()
    assert not at.exception and not at.error, [e.value for e in at.error]
    card = next(s for s in at.selectbox if s.label == "Crystal this image shows")
    card.set_value(GOETHITE[0]).run()
    next(b for b in at.button if b.label == "Measure").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    got = parse_stretch(_stretch_field(at).value)
    np.testing.assert_allclose(got, S_TRUE, atol=3e-3)
    assert any(s.value.startswith("Measured: ") for s in at.success)
    assert any("resampled to remove a scan distortion" in w.value for w in at.warning)
    # Edited by hand, the field no longer holds what was measured: the note goes.
    _stretch_field(at).set_value("1.0,0.0,1.0").run()
    assert not at.exception and not at.error
    assert not any(s.value.startswith("Measured: ") for s in at.success)


@pytest.mark.parametrize("bad", ["1,2", "1.3,0,1.3", "1.08,0,1.0"])
def test_a_bad_stretch_is_one_error_and_the_page_stays_usable(bad: str) -> None:
    at = _open_with_upload()
    _stretch_field(at).set_value(bad).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and ("SXX,SXY,SYY" in errors[0]), errors
    _stretch_field(at).set_value("").run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_series_page_takes_one_stretch_for_every_image() -> None:
    """The Series page's field: a bad value is one error (nothing analysed, no exception); a
    stretch resamples every image, and the series is analysed as it."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/series.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    before = {m.label: m.value for m in at.metric}
    _stretch_field(at).set_value("1,0").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "SXX,SXY,SYY" in errors[0], errors
    _stretch_field(at).set_value("1.01,0.005,0.995").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    after = {m.label: m.value for m in at.metric}
    assert after["Images"] == before["Images"] and after["Best focus"].endswith(" nm")
    table = next(d.value for d in at.dataframe if "crystallinity" in d.value.columns)
    assert len(table) == int(after["Images"])
