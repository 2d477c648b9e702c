"""Known answers for hrtem_core.measure: Bragg filter, line profile, fringe period, FFT points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrtem_core.errors import AnalysisParameterError
from hrtem_core.measure import (
    bragg_filter,
    direction_deg,
    fft_point_measure,
    fringe_period_nm,
    line_profile,
    nearest_planes,
    scale_bar_nm,
)

P = 0.02  # nm/px


def _fringes(shape, d_nm, angle_deg, *, pixel_nm=P):
    """cos(2 pi g.r) with |g| = 1/d along angle_deg (CCW from +x on screen, y down)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float) * pixel_nm
    a = math.radians(angle_deg)
    gx, gy = math.cos(a) / d_nm, -math.sin(a) / d_nm
    return np.cos(2 * np.pi * (gx * xx + gy * yy)), (gy, gx)


def test_bragg_filter_keeps_one_lattice_and_removes_the_other(rng):
    a, ga = _fringes((256, 256), 0.25, 30.0)
    b, _gb = _fringes((256, 256), 0.40, 100.0)
    img = a + b + 0.5 * rng.standard_normal((256, 256))
    out = bragg_filter(img, [ga], pixel_size_nm=P, radius_nm_inv=0.4)
    assert out.dtype == np.float64 and out.shape == img.shape
    corr_a = np.corrcoef(out.ravel(), a.ravel())[0, 1]
    corr_b = np.corrcoef(out.ravel(), b.ravel())[0, 1]
    assert corr_a > 0.9 and abs(corr_b) < 0.05
    # One side only: complex, and its modulus is the (uniform) fringe amplitude 1/2 (fringes
    # periodic in the image: 20 periods of 0.256 nm over 5.12 nm).
    c, gc = _fringes((256, 256), 0.256, 0.0)
    amp = np.abs(bragg_filter(c, [gc], pixel_size_nm=P, radius_nm_inv=0.4, friedel=False))
    assert np.median(amp[32:-32, 32:-32]) == pytest.approx(0.5, rel=0.01)


def test_bragg_filter_shows_where_a_lattice_lives():
    a, ga = _fringes((256, 256), 0.3, 0.0)
    img = a.copy()
    img[:, 128:] = 0.0  # fringes only in the left half
    amp = np.abs(bragg_filter(img, [ga], pixel_size_nm=P, radius_nm_inv=1.0, friedel=False))
    assert amp[:, 20:90].mean() > 10 * amp[:, 180:236].mean()


def test_bragg_filter_refuses_bad_arguments():
    with pytest.raises(AnalysisParameterError, match="at least one spot"):
        bragg_filter(np.zeros((8, 8)), np.zeros((0, 2)), pixel_size_nm=P, radius_nm_inv=1)
    with pytest.raises(AnalysisParameterError, match="radius"):
        bragg_filter(np.zeros((8, 8)), [(1, 1)], pixel_size_nm=P, radius_nm_inv=0)
    with pytest.raises(AnalysisParameterError, match="pixel size"):
        bragg_filter(np.zeros((8, 8)), [(1, 1)], pixel_size_nm=-1, radius_nm_inv=1)


@pytest.mark.parametrize("d_nm, angle", [(0.25, 0.0), (0.4831, 37.0), (0.1476, 120.0)])
def test_fringe_period_of_a_synthetic_lattice_within_one_percent(rng, d_nm, angle):
    img, _ = _fringes((256, 256), d_nm, angle)
    img = img + 0.3 * rng.standard_normal(img.shape)
    # A line along g through the centre: the fringes' period is d.
    a = math.radians(angle)
    c = np.array([128.0, 128.0])
    u = np.array([-math.sin(a), math.cos(a)])  # (y, x) along g on screen
    dist, values = line_profile(img, c - 100 * u, c + 100 * u, width_px=5, step_px=0.5)
    assert dist[-1] == pytest.approx(200.0)
    period = fringe_period_nm(values, step_nm=0.5 * P)
    assert period == pytest.approx(d_nm, rel=0.01)


def test_line_profile_is_exact_on_a_ramp():
    img = np.add.outer(np.zeros(10), np.arange(10.0))  # value = x
    dist, values = line_profile(img, (4.0, 1.0), (4.0, 7.0), step_px=0.5)
    assert np.allclose(values, 1.0 + dist)
    with pytest.raises(AnalysisParameterError, match="2 px"):
        line_profile(img, (1, 1), (1, 2))


def test_flat_profile_has_no_period():
    with pytest.raises(AnalysisParameterError, match="flat"):
        fringe_period_nm(np.ones(64), step_nm=0.01)


def test_two_points_on_the_spectrum_give_d_and_angle():
    # g1 = 4 1/nm along +x, g2 = 5 1/nm at 60 deg (screen, y up): gy = -5 sin 60.
    g1 = (0.0, 4.0)
    g2 = (-5 * math.sin(math.radians(60)), 5 * math.cos(math.radians(60)))
    m = fft_point_measure([g1, g2])
    assert m.spacings_nm == pytest.approx((0.25, 0.2))
    assert m.directions_deg == pytest.approx((0.0, 60.0))
    assert m.angle_deg == pytest.approx(60.0) and m.acute_angle_deg == pytest.approx(60.0)
    # A point and the Friedel mate of the other: 120 deg between the vectors, 60 between planes.
    m = fft_point_measure([g1, (-g2[0], -g2[1])])
    assert m.angle_deg == pytest.approx(120.0) and m.acute_angle_deg == pytest.approx(60.0)
    one = fft_point_measure([(-2.0, 0.0)])
    assert one.spacings_nm == (0.5,) and one.directions_deg == pytest.approx((90.0,))
    assert one.angle_deg is None
    assert direction_deg(0.0, -1.0) == pytest.approx(0.0)  # mod 180
    with pytest.raises(AnalysisParameterError, match="centre"):
        fft_point_measure([(0.0, 0.0)])


def test_nearest_planes_are_sorted_by_relative_difference():
    planes = [("(2 2 0)", 0.2953), ("(3 1 1)", 0.2518), ("(4 0 0)", 0.2088), ("(1 1 1)", 0.482)]
    near = nearest_planes(0.25, planes, n=2)
    assert [r[0] for r in near] == ["(3 1 1)", "(2 2 0)"]
    assert near[0][2] == pytest.approx((0.25 - 0.2518) / 0.2518)


@pytest.mark.parametrize(
    "field, expected", [(52.0, 10.0), (20.48, 2.0), (100.0, 20.0), (3.0, 0.5), (1000, 200)]
)
def test_scale_bar_is_a_round_fifth_of_the_field(field, expected):
    assert scale_bar_nm(field) == pytest.approx(expected)
    with pytest.raises(AnalysisParameterError):
        scale_bar_nm(0.0)


def test_zone_pattern_of_a_cubic_cell_is_oriented_like_the_window():
    from hrtem_core.crystallography import UnitCell
    from hrtem_core.measure import zone_pattern

    cell = UnitCell(0.4, 0.4, 0.4, 90.0, 90.0, 90.0)
    # (1 0 0) measured at 30 deg, (0 1 0) at 120 deg: zone [0 0 1], primitive cubic.
    pat = zone_pattern(
        cell,
        "P m -3 m",
        (0, 0, 1),
        ref_hkl=(1, 0, 0),
        ref_direction_deg=30.0,
        second=((0, 1, 0), 120.0),
        d_min_nm=0.19,
    )
    spots = {hkl: (gy, gx) for hkl, gy, gx in pat}
    assert set(spots) == {
        (1, 0, 0),
        (-1, 0, 0),
        (0, 1, 0),
        (0, -1, 0),
        (1, 1, 0),
        (-1, -1, 0),
        (1, -1, 0),
        (-1, 1, 0),
        (2, 0, 0),
        (-2, 0, 0),
        (0, 2, 0),
        (0, -2, 0),
    }
    gy, gx = spots[(1, 0, 0)]
    assert math.hypot(gy, gx) == pytest.approx(2.5) and direction_deg(gy, gx) == pytest.approx(30)
    assert direction_deg(*spots[(0, 1, 0)]) == pytest.approx(120.0)
    gy, gx = spots[(1, 1, 0)]
    assert math.hypot(gy, gx) == pytest.approx(2.5 * math.sqrt(2))
    assert direction_deg(gy, gx) == pytest.approx(75.0)
    # The other hand: (1 1 0) measured at 165 deg = 30 - 45 (mod 180) mirrors the pattern.
    flipped = zone_pattern(
        cell,
        "P m -3 m",
        (0, 0, 1),
        ref_hkl=(1, 0, 0),
        ref_direction_deg=30.0,
        second=((1, 1, 0), 165.0),
        d_min_nm=0.19,
    )
    spots_f = {hkl: (gy, gx) for hkl, gy, gx in flipped}
    assert direction_deg(*spots_f[(1, 1, 0)]) == pytest.approx(165.0)
    assert spots_f[(0, 1, 0)] == pytest.approx(tuple(-v for v in spots[(0, 1, 0)]))
    assert spots_f[(1, 0, 0)] == pytest.approx(spots[(1, 0, 0)])
    with pytest.raises(AnalysisParameterError, match="not in the zone"):
        zone_pattern(cell, "P m -3 m", (0, 0, 1), ref_hkl=(0, 0, 1), ref_direction_deg=0.0)
