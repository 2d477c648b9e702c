"""PixelSize: the (y, x) pixel size in nm with its source, from the reader to the analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrtem_core.errors import CalibrationError
from hrtem_core.io import Micrograph, PixelSize


def test_pixel_size_is_validated_and_unpacks_as_y_x() -> None:
    p = PixelSize.of((0.02, 0.03), "metadata")
    py, px = p
    assert (py, px) == p.yx_nm == (0.02, 0.03) and p.source == "metadata"
    assert p.mean_nm == pytest.approx(0.025) and not p.is_square
    square = PixelSize.of(0.05)
    assert square.yx_nm == (0.05, 0.05) and square.is_square and square.source == "user"
    assert PixelSize.of(p) is p
    for bad in (0, -0.1, math.nan, math.inf, "x", True):
        with pytest.raises(CalibrationError, match=r"pixel size must be a finite number > 0 nm/px"):
            PixelSize(bad, 0.02)
    with pytest.raises(CalibrationError, match="one value or two"):
        PixelSize.of((0.1, 0.2, 0.3))


def test_micrograph_and_analysis_carry_the_pixel_size(tmp_path) -> None:
    from hrtem_core import analysis
    from tests.test_analysis import PARAMS

    rng = np.random.default_rng(0)
    m = Micrograph(
        data=rng.normal(size=(256, 256)).astype(np.float32),
        pixel_size_nm=(0.02, 0.025),
        reader="test",
        metadata={},
        warnings=(),
        name="noise.tif",
        pixel_size_source="user",
    )
    assert m.pixel_size == PixelSize(0.02, 0.025, "user")
    res = analysis.analyze_image(m, params=PARAMS)
    assert res.pixel_size_nm == (0.02, 0.025)
    assert res.pixel_size == PixelSize(0.02, 0.025, "user")
    bad = Micrograph(
        data=m.data, pixel_size_nm=(0.0, 0.02), reader="t", metadata={}, warnings=(), name="b.tif"
    )
    with pytest.raises(CalibrationError, match="pixel size must be"):
        analysis.analyze_image(bad, params=PARAMS)
