"""Scan-distortion calibration (hrtem_core.distortion): known-answer tests.

A stretch ``S`` (``x_true = S x_img``) is applied to exact planes or to rendered lattice images;
the fit must return it, :func:`undistort` must give back the undistorted lattice, and the guards
(directions, anisotropy, coverage of the card) must refuse what is not a distortion.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from hrtem_core.cards import load_cards
from hrtem_core.cli import main
from hrtem_core.distortion import (
    MAX_ANISOTROPY,
    calibrate_distortion,
    fit_stretch,
    measure_distortion,
    parse_stretch,
    stretch_matrix,
    undistort,
)
from hrtem_core.errors import CalibrationError
from hrtem_core.io import Micrograph
from tests.lattice_images import lattice_image

#: A STEM-like distortion: 2.6 % anisotropy with a shear, scale 0.995.
S_TRUE = (1.012, 0.011, 0.985)
#: SrTiO3-like square net: (100), (010), (110), (1-10) of a = 0.3905 nm.
A_NM = 0.3905
SQUARE = [(1, 0), (0, 1), (1, 1), (1, -1)]


def distorted_planes(stretch, rotations_deg, *, noise_rel=0.0, seed=0):
    """Measured (spacing, angle) and card spacing of the square net in grains at the given
    rotations, seen through ``x_img = S^-1 x_true`` (so ``g_img = S g_true``)."""
    rng = np.random.default_rng(seed)
    s = stretch_matrix(stretch)
    d, a, ref = [], [], []
    for rot in rotations_deg:
        c, si = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        for h, k in SQUARE:
            g_true = np.array([[c, -si], [si, c]]) @ (np.array([h, -k]) / A_NM)  # (x, y down)
            g_img = s @ g_true
            g_img *= 1.0 + noise_rel * rng.standard_normal()
            d.append(1.0 / np.linalg.norm(g_img))
            a.append(math.degrees(math.atan2(-g_img[1], g_img[0])) % 180.0)
            ref.append(A_NM / math.hypot(h, k))
    return np.array(d), np.array(a), np.array(ref)


def test_fit_returns_the_stretch_exactly() -> None:
    d, a, ref = distorted_planes(S_TRUE, [0.0, 17.0, 40.0])
    s, keep = fit_stretch(d, a, ref)
    assert keep.all()
    np.testing.assert_allclose(s, stretch_matrix(S_TRUE), atol=1e-9)


def test_fit_with_noise_and_a_misassigned_plane() -> None:
    d, a, ref = distorted_planes(S_TRUE, np.linspace(0, 80, 9), noise_rel=0.002, seed=3)
    d[5] *= 1.06  # a plane assigned to the wrong family: dropped as an outlier
    s, keep = fit_stretch(d, a, ref)
    assert not keep[5] and keep.sum() == len(d) - 1
    np.testing.assert_allclose(s, stretch_matrix(S_TRUE), atol=1.5e-3)


def test_fit_needs_three_directions() -> None:
    d, a, ref = distorted_planes(S_TRUE, [0.0])
    two = np.isin(np.arange(len(d)), [0, 1])  # (100) and (010) only
    with pytest.raises(CalibrationError, match="2 direction"):
        fit_stretch(d[two], a[two], ref[two])


def test_stretch_checks() -> None:
    assert stretch_matrix((1.0, 0.0, 1.0)).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(CalibrationError, match="within 20 %"):
        stretch_matrix((1.3, 0.0, 1.3))
    with pytest.raises(CalibrationError, match="right card"):
        stretch_matrix((1.0 + MAX_ANISOTROPY + 0.01, 0.0, 1.0))
    with pytest.raises(CalibrationError, match="three finite numbers"):
        stretch_matrix((1.0, float("nan"), 1.0))
    assert parse_stretch(" 1.01, -0.004 ,0.99") == (1.01, -0.004, 0.99)
    for bad in ("1,2", "a,b,c", "1,0,1,1", ""):
        with pytest.raises(CalibrationError, match="SXX,SXY,SYY"):
            parse_stretch(bad)


def _micrograph(data, p=0.01):
    return Micrograph(
        data=np.asarray(data, dtype=np.float32),
        pixel_size_nm=(p, p),
        reader="test",
        metadata={},
        warnings=(),
        name="t.tif",
    )


def _render(shape, p, stretch, g_true_xy, *, phase0=0.3):
    """``sum cos(2 pi g_img . x_img)`` about the image centre, ``g_img = S g_true``."""
    s = stretch_matrix(stretch)
    ny, nx = shape
    x = (np.arange(nx) - (nx - 1) / 2.0)[None, :] * p
    y = (np.arange(ny) - (ny - 1) / 2.0)[:, None] * p
    out = np.zeros(shape)
    for g in g_true_xy:
        gi = s @ np.asarray(g)
        out += np.cos(2 * np.pi * (gi[0] * x + gi[1] * y) + phase0)
    return out


def test_undistort_gives_back_the_true_lattice() -> None:
    p = 0.01
    g_true = [np.array([1.0, 0.0]) / A_NM, np.array([0.0, 1.0]) / A_NM]
    m = _micrograph(_render((300, 320), p, S_TRUE, g_true), p)
    out = undistort(m, S_TRUE)
    p_out = out.pixel_size_nm[0]
    s = stretch_matrix(S_TRUE)
    assert out.pixel_size_nm[0] == out.pixel_size_nm[1]
    assert p_out == pytest.approx(p * math.sqrt(np.linalg.det(s)), rel=1e-12)
    assert out.pixel_size_source == "user"
    assert out.metadata["distortion"]["stretch_sxx_sxy_syy"] == pytest.approx(list(S_TRUE))
    assert "scan distortion" in out.warnings[-1]
    ny, nx = out.shape
    assert 0.9 * 300 < ny <= 300 and 0.9 * 320 < nx <= 320  # cropped inside the field of view
    expected = _render((ny, nx), p_out, (1.0, 0.0, 1.0), g_true)
    inner = (slice(4, -4), slice(4, -4))
    err = np.abs(out.data[inner] - expected[inner])
    assert float(err.max()) < 0.02  # cubic-spline interpolation of a 0.39 nm lattice at 0.01 nm/px
    # And without the correction the two differ completely (the test can fail).
    assert float(np.abs(m.data[:ny, :nx][inner] - expected[inner]).max()) > 0.5


def test_resampled_noise_stays_non_crystalline() -> None:
    """Cubic-spline resampling correlates the noise of neighbouring pixels; the crystallinity
    test must still find no crystal in white or Poisson noise (0 windows, as without it)."""
    from hrtem_core.analysis import AnalysisParams, analyze_image

    rng = np.random.default_rng(11)
    params = AnalysisParams(window_px=128, stride_px=64, detector="unet")
    for data in (rng.normal(100.0, 10.0, (512, 512)), rng.poisson(50.0, (512, 512))):
        m = undistort(_micrograph(data, 0.02), (1.02, 0.012, 0.985))
        res = analyze_image(m, params=params, cards=load_cards())
        assert res.summary["n_windows"] >= 30 and res.summary["n_crystalline"] == 0


def _fake_result(planes_per_window, card_id="c1", *, extra_windows=0):
    """An AnalysisResult-like object: each window's planes with the card's spacing per plane."""
    index = []
    for planes in planes_per_window:
        mp = tuple(SimpleNamespace(spacing_nm=d, angle_deg=a) for d, a, _ in planes)
        match = SimpleNamespace(
            card_id=card_id, angle_confirmed=True, d_ref_nm=tuple(r for *_, r in planes)
        )
        index.append(SimpleNamespace(planes=mp, best=match, alternatives=()))
    for _ in range(extra_windows):  # windows the card does not explain
        mp = (SimpleNamespace(spacing_nm=0.3, angle_deg=0.0),) * 2
        index.append(SimpleNamespace(planes=mp, best=None, alternatives=()))
    return SimpleNamespace(index=index)


def _windows_seen_through(applied, *, tol=0.03, n=12, noise_rel=0.0):
    """Planes of ``n`` windows of a crystal with distortion S_TRUE, analysed after the
    correction ``applied`` (``x1 = applied x0``): residual ``R = S_TRUE applied^-1``, planes more
    than ``tol`` off the card unassigned (as the indexing's spacing tolerance does). ``R = Q U``
    with ``Q`` a rotation: the planes are those of a rotated crystal seen through ``U``."""
    r = stretch_matrix(S_TRUE) @ np.linalg.inv(applied)
    w, v = np.linalg.eigh(r.T @ r)
    r = (v * np.sqrt(w)) @ v.T
    out = []
    for w in range(n):
        d, a, ref = distorted_planes(
            (r[0, 0], r[0, 1], r[1, 1]), [7.0 * w], noise_rel=noise_rel, seed=w
        )
        out.append(
            [
                (di, ai, ri if abs(di / ri - 1) <= tol else None)
                for di, ai, ri in zip(d, a, ref, strict=True)
            ]
        )
    return out


def test_measure_distortion_from_windows() -> None:
    res = _fake_result(_windows_seen_through(np.eye(2), tol=1.0), extra_windows=3)
    fit = measure_distortion(res, "c1")
    np.testing.assert_allclose(fit.matrix, stretch_matrix(S_TRUE), atol=1e-9)
    assert fit.n_planes == 48 and fit.n_windows == 12 and fit.n_windows_with_planes == 15
    assert fit.rms_after_rel < 1e-9 < fit.rms_before_rel
    assert "c1" in fit.describe() and fit.as_option().count(",") == 2
    with pytest.raises(CalibrationError, match="no window"):
        measure_distortion(res, "other")


def test_calibration_iterates_past_the_spacing_tolerance() -> None:
    """With a 1.5 % tolerance the first round assigns only the planes that the distortion and
    the noise happen to leave near the card, a biased sample; correcting and re-analysing brings
    the others in, and the stretch converges on the truth."""

    def analyze(m):
        applied = m.metadata.get("distortion", {}).get("stretch_sxx_sxy_syy", (1.0, 0.0, 1.0))
        planes = _windows_seen_through(stretch_matrix(applied), tol=0.015, n=40, noise_rel=0.004)
        return _fake_result(planes)

    m = _micrograph(np.zeros((64, 64)))
    one = measure_distortion(analyze(m), "c1")
    fit = calibrate_distortion(m, "c1", analyze=analyze)
    err_one = np.max(np.abs(one.matrix - stretch_matrix(S_TRUE)))
    err = np.max(np.abs(fit.matrix - stretch_matrix(S_TRUE)))
    assert fit.n_iterations >= 2
    assert err < 1.5e-3 and err < err_one / 2, (err, err_one)
    assert fit.coverage == 1.0 and fit.rms_after_rel < fit.rms_before_rel


def test_calibration_refuses_a_card_that_explains_few_windows() -> None:
    def analyze(m):
        applied = m.metadata.get("distortion", {}).get("stretch_sxx_sxy_syy", (1.0, 0.0, 1.0))
        planes = _windows_seen_through(stretch_matrix(applied), tol=1.0, n=3)
        return _fake_result(planes, extra_windows=10)

    with pytest.raises(CalibrationError, match="only 3 of the 13"):
        calibrate_distortion(_micrograph(np.zeros((64, 64))), "c1", analyze=analyze)


# Goethite (orthorhombic, a shipped card) down [001]: (020), (110), (1-10), (200).
GOETHITE = ("29-0713", (0, 0, 1), [(0, 2, 0), (1, 1, 0), (1, -1, 0), (2, 0, 0)])


def test_cli_calibrate_then_analyze(tmp_path, capsys) -> None:
    """End to end: two goethite grains distorted by S_TRUE; ``calibrate`` measures S within
    0.3 % per entry; ``analyze --distortion`` then names more windows than without it (16
    against 10: the grain whose planes the distortion moves most is left unnamed)."""
    card, zone, hkls = GOETHITE
    phase = load_cards().phase(card)
    p = 0.02
    left = np.zeros((384, 384), bool)
    left[:, :192] = True
    grains = [  # two grains: the card's planes along four directions
        lattice_image(phase, zone, hkls, rotation_deg=rot, noise=0.1, shape=(384, 384),
                      region=region, seed=k, stretch=S_TRUE)[0]
        for k, (rot, region) in enumerate(((12.0, left), (50.0, ~left)))
    ]  # fmt: skip
    img = grains[0] + grains[1] - 10.0  # each has a background level of 10
    path = tmp_path / "goethite.tif"
    tifffile.imwrite(path, img.astype(np.float32))
    opts = ["--pixel-size-nm", str(p), "--window", "128", "--stride", "64", "--no-progress"]
    opts += ["--detector", "classical"]
    assert (
        main(["calibrate", str(path), "--card", card, *opts, "--json", str(tmp_path / "f.json")])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("--distortion ")
    got = parse_stretch(out[-1].split()[1])
    np.testing.assert_allclose(got, S_TRUE, atol=3e-3)
    import json

    saved = json.loads((tmp_path / "f.json").read_text())
    assert saved["card_id"] == card and saved["option"] == out[-1]

    import pandas as pd

    named = {}
    for tag, extra in (("plain", []), ("corrected", ["--distortion", out[-1].split()[1]])):
        dest = tmp_path / tag
        assert main(["analyze", str(path), *opts, "--out", str(dest), *extra]) == 0
        w = pd.read_csv(dest / "windows.csv")
        named[tag] = int((w.phase_card.astype(str) == card).sum())
        summary = json.loads((dest / "summary.json").read_text())
        if tag == "plain":
            assert summary["distortion"] is None
        else:  # provenance: what was removed, from which calibration
            assert summary["distortion"]["stretch_sxx_sxy_syy"] == pytest.approx(list(got))
            assert summary["distortion"]["pixel_size_nm_before"] == [p, p]
            assert summary["pixel_size_nm"][0] == pytest.approx(p * saved["scale"], rel=1e-6)
    capsys.readouterr()
    assert named["corrected"] > named["plain"]


def test_cli_distortion_errors_are_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.float32))
    assert main(["calibrate", str(path), "--card", "29-0713", "--pixel-size-nm", "0.02",
                 "--distortion", "1,0,1"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: calibrate measures the distortion")
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(path), "--distortion", "1,2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SXX,SXY,SYY" in err[0]


def test_real_stem_image_calibrates_and_is_then_named(validation_dir) -> None:
    """The SrTiO3 STEM image of ../shared/validation (16_STOimage_1.ser, its README: metadata
    pixel size about 3.6 % larger than the lattice implies; scan-distorted). Calibrated on an
    SrTiO3 card from the file's own calibration: scale 0.966 (the README's 1/1.036 = 0.965), a
    2-3.5 % anisotropy; then at least 80 % of its windows are named SrTiO3 [001], and the
    iron-oxide cards alone still name none of them."""
    from hrtem_core.analysis import AnalysisParams, analyze_image
    from hrtem_core.io import load_image
    from hrtem_core.unet.load import load_model
    from tests.cards50 import EXTRA_PHASES, extra_phase

    sto = extra_phase(next(r for r in EXTRA_PHASES if r[0] == "fx-SrTiO3"))
    shipped = load_cards()
    cards = shipped.with_phase(sto)
    params = AnalysisParams(window_px=256, stride_px=64, detector="unet")
    model = load_model()
    m = load_image(validation_dir / "16_STOimage_1.ser")

    def analyze(mg, db=cards):
        return analyze_image(mg, params=params, cards=db, model=model)

    fit = calibrate_distortion(m, sto.card_id, analyze=analyze)
    s1, s2, _ = fit.principal
    assert fit.scale == pytest.approx(1 / 1.036, abs=0.005)
    assert 0.02 <= s1 / s2 - 1 <= 0.035
    assert fit.rms_after_rel < 0.5 * fit.rms_before_rel
    corrected = undistort(m, fit.stretch)
    res = analyze(corrected)
    crystalline = [w for w in res.index if w.planes]
    right = [w for w in crystalline if w.named and w.best.card_id == sto.card_id]
    assert len(right) >= 0.8 * len(crystalline)
    assert all(tuple(abs(v) for v in w.best.zone_axis) == (0, 0, 1) for w in right)
    assert not any(w.named for w in analyze(corrected, shipped).index)
