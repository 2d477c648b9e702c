"""The detector seam: one place chooses the detector, both implementations wrap hrtem_core.spots."""

from __future__ import annotations

import numpy as np
import pytest

from hrtem_core import detectors, spots
from hrtem_core.errors import AnalysisParameterError
from hrtem_core.windows import (
    band_geometry,
    crop_band,
    extract_windows,
    window_grid,
    window_spectra,
)
from tests.lattice_images import lattice_image
from tests.test_analysis import PARAMS, RUTILE_HKL, db, micrograph  # noqa: F401 - db fixture


def test_detector_for_chooses_in_one_place(monkeypatch) -> None:
    classical = detectors.detector_for("classical")
    assert isinstance(classical, detectors.ClassicalDetector)
    assert isinstance(classical, detectors.SpotDetector) and classical.name == "classical"
    model = object()
    unet = detectors.detector_for("unet", model=model)
    assert isinstance(unet, detectors.UNetDetector) and unet.model is model
    with pytest.raises(AnalysisParameterError, match="unknown spot detector 'fft'"):
        detectors.detector_for("fft")

    def broken(*args, **kwargs):
        raise OSError("no weights here")

    import hrtem_core.unet.load as unet_load

    monkeypatch.setattr(unet_load, "load_model", broken)
    with pytest.raises(AnalysisParameterError, match=r"cannot load the U-Net weights.*classical"):
        detectors.detector_for("unet")


def test_classical_detector_is_the_spots_functions(db) -> None:  # noqa: F811
    image, _ = lattice_image(
        db.phase("21-1276"), (0, 0, 1), RUTILE_HKL, rotation_deg=5.0, noise=0.1, seed=3
    )
    image = np.asarray(image, dtype=np.float32)
    grid = window_grid(image.shape, window_px=128, stride_px=64)
    det = detectors.detector_for("classical")
    got = det.pairs_in_image(
        image, grid, rows=(0, 2), pixel_size_nm=(0.02, 0.02), d_min_nm=0.1, workers=1
    )
    want = spots.detect_pairs_in_image(
        image, grid, rows=(0, 2), pixel_size_nm=(0.02, 0.02), detector="classical", d_min_nm=0.1,
        workers=1,
    )  # fmt: skip
    assert got == want and len(got) == 2 * grid.n_cols and any(got)
    spectra = window_spectra(extract_windows(image, grid, indices=np.array([0, 1])))
    geometry = band_geometry(128, (0.02, 0.02), d_min_nm=0.1)
    masks = det.window_masks(spectra, geometry, pixel_size_nm=(0.02, 0.02))
    ref = spots.classical_masks(crop_band(spectra, geometry), geometry, pixel_size_nm=(0.02, 0.02))
    ref = ref[0] if isinstance(ref, tuple) else ref
    assert masks.dtype == bool and masks.shape == ref.shape
    assert np.array_equal(masks, np.asarray(ref, dtype=bool)) and masks.any()


def test_window_detail_uses_the_analysis_detector(db) -> None:  # noqa: F811
    from hrtem_core import analysis
    from hrtem_core.analysis.window_detail import nearest_window, pairs_table, window_detail

    image, _ = lattice_image(
        db.phase("21-1276"), (0, 0, 1), RUTILE_HKL, rotation_deg=5.0, noise=0.1, seed=3
    )
    res = analysis.analyze_image(micrograph(image), params=PARAMS, cards=db)
    i = int(np.argmax([len(p) for p in res.pairs]))
    detail = window_detail(res, np.asarray(image, dtype=np.float32), i)
    assert detail.pairs == res.pairs[i] and detail.mask.any()
    assert (detail.row, detail.col) == tuple(int(v) for v in res.grid.row_col[i])
    table = pairs_table(detail)
    assert len(table) == len(detail.pairs)
    cy, cx = res.grid.centers[i]
    assert nearest_window(res.grid, cx, cy) == i
