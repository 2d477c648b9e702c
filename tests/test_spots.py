"""Bragg spots in every window (hrtem_core.spots): known-answer, mask-driven and property tests.

Synthetic windows have exactly known spatial frequencies: a sum of cosines
``cos(2 pi (gy y + gx x) + phase)`` with ``y = row * p_y``, ``x = col * p_x`` [nm], or a 2-D lattice
of Gaussian atoms with a known reciprocal basis. A lattice plane of spacing d in direction
``angle_deg`` (counter-clockwise from +x on screen, y down) has ``g = (-sin(a) / d, cos(a) / d)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from hrtem_core.errors import AnalysisParameterError, CalibrationError
from hrtem_core.spots import (
    SpotPair,
    acute_angle_deg,
    classical_masks,
    detect_pairs,
    detect_pairs_in_image,
    draw_disks,
    pair_angles_deg,
    pairs_from_mask,
    pairs_from_masks,
    split_at_peaks,
)
from hrtem_core.windows import (
    band_geometry,
    band_spectra,
    extract_windows,
    log_band,
    window_grid,
    window_spectra,
)

# --- synthetic windows ---------------------------------------------------------------------------


def g_vec(d_nm: float, angle_deg: float) -> tuple[float, float]:
    """(gy, gx) [1/nm] of planes of spacing d whose normal points at angle_deg (screen, y down)."""
    a = math.radians(angle_deg)
    return (-math.sin(a) / d_nm, math.cos(a) / d_nm)


def cosine_window(
    w: int,
    pixel_nm: tuple[float, float],
    gs: list[tuple[float, float]],
    *,
    rng: np.random.Generator,
    amps: list[float] | None = None,
    noise: float = 0.0,
) -> np.ndarray:
    """Sum of cosines of spatial frequencies gs [1/nm] (random phases) plus white noise."""
    y = np.arange(w)[:, None] * pixel_nm[0]
    x = np.arange(w)[None, :] * pixel_nm[1]
    img = np.zeros((w, w))
    for i, (gy, gx) in enumerate(gs):
        a = 1.0 if amps is None else amps[i]
        img += a * np.cos(2 * np.pi * (gy * y + gx * x) + rng.uniform(0, 2 * np.pi))
    img += noise * rng.standard_normal((w, w))
    return img.astype(np.float32)


def atom_lattice_window(
    w: int,
    pixel_nm: float,
    a1: np.ndarray,
    a2: np.ndarray,
    *,
    sigma_nm: float,
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Gaussian atoms on the lattice n1 a1 + n2 a2 ((y, x) vectors in nm), plus white noise."""
    yy, xx = np.mgrid[0:w, 0:w] * pixel_nm
    r = np.stack([yy.ravel(), xx.ravel()])  # (2, P) nm
    basis = np.stack([a1, a2], axis=1)  # columns a1, a2
    frac = np.linalg.solve(basis, r)
    base = np.floor(frac)
    img = np.zeros(r.shape[1])
    for d1 in (-1, 0, 1, 2):
        for d2 in (-1, 0, 1, 2):
            site = basis @ (base + np.array([[d1], [d2]]))
            img += np.exp(-((r - site) ** 2).sum(axis=0) / (2 * sigma_nm**2))
    img = img.reshape(w, w)
    img += noise * rng.standard_normal((w, w))
    return img.astype(np.float32)


def amorphous_window(
    w: int,
    pixel_nm: float,
    *,
    defocus_nm: float,
    rng: np.random.Generator,
    astig_nm: float = 0.0,
    noise: float = 0.1,
) -> np.ndarray:
    """White-noise object imaged through a phase CTF (300 kV, Cs 1.2 mm): Thon rings, no lattice."""
    lam = 0.00197  # nm at 300 kV
    q_y = np.fft.fftfreq(w, pixel_nm)[:, None]
    q_x = np.fft.fftfreq(w, pixel_nm)[None, :]
    q2 = q_y**2 + q_x**2
    df = defocus_nm + 0.5 * astig_nm * np.cos(2 * np.arctan2(q_y, q_x))
    chi = -np.pi * lam * df * q2 + 0.5 * np.pi * 1.2e6 * lam**3 * q2**2
    envelope = np.exp(-q2 * 0.01)
    obj = rng.standard_normal((w, w))
    img = np.real(np.fft.ifft2(np.fft.fft2(obj) * np.sin(chi) * envelope))
    img /= img.std()
    return (img + noise * rng.standard_normal((w, w))).astype(np.float32)


def closest(pairs: tuple[SpotPair, ...], g: tuple[float, float]) -> tuple[SpotPair, float]:
    """The pair whose g (up to sign) is closest to g; and that distance [1/nm]."""
    best, dist = None, np.inf
    for p in pairs:
        d = min(
            math.hypot(p.gy_nm_inv - g[0], p.gx_nm_inv - g[1]),
            math.hypot(p.gy_nm_inv + g[0], p.gx_nm_inv + g[1]),
        )
        if d < dist:
            best, dist = p, d
    assert best is not None, "no pairs found"
    return best, dist


def angle_diff_deg(a: float, b: float) -> float:
    """Difference of two directions modulo 180 degrees, in [0, 90]."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


# --- known answers ---------------------------------------------------------------------------------


def _accuracy_cases(rng: np.random.Generator):
    """(w, (p, p), [g1, g2]) over spacings 0.15-0.8 nm, pixels 0.01-0.05 nm, windows 128-512 px.

    Only spots at 10 <= l <= w / 2 - 4 FFT px (the targets are stated for l >= 10).
    """
    cases = []
    for w, pixels in ((128, (0.035, 0.05)), (256, (0.01, 0.02, 0.035, 0.05)), (512, (0.01,))):
        for p in pixels:
            for d in (0.15, 0.2, 0.25, 0.35, 0.5, 0.8):
                l1 = w * p / d
                if not 10 <= l1 <= w / 2 - 4:
                    continue
                ang = rng.uniform(0, 180)
                d2 = d * rng.uniform(0.8, 0.95)
                if w * p / d2 > w / 2 - 4:
                    d2 = d * 1.1
                gs = [g_vec(d, ang), g_vec(d2, ang + rng.uniform(40, 80))]
                cases.append((w, (p, p), gs))
    return cases


def test_spacing_accuracy_meets_targets(rng) -> None:
    """Median relative spacing error <= 0.3 %, 95th percentile <= 1 % (spots at l >= 10 px)."""
    errors = []
    for w, p, gs in _accuracy_cases(rng):
        win = cosine_window(w, p, gs, rng=rng, noise=1.5)
        pairs = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
        assert len(pairs) == 2, (w, p, gs, pairs)
        for g in gs:
            pair, _ = closest(pairs, g)
            d_true = 1.0 / math.hypot(*g)
            errors.append(abs(pair.spacing_nm - d_true) / d_true)
            assert angle_diff_deg(pair.angle_deg, math.degrees(math.atan2(-g[0], g[1]))) < 0.5
    errors = np.asarray(errors)
    assert errors.size >= 30
    assert np.median(errors) <= 0.003
    assert np.percentile(errors, 95) <= 0.01


def test_crossing_fringes_angle_within_half_degree(rng) -> None:
    p = (0.02, 0.02)
    for true_angle in (35.0, 54.74, 60.0, 70.53, 90.0):
        base = rng.uniform(0, 180)
        gs = [g_vec(0.235, base), g_vec(0.2035, base + true_angle)]
        win = cosine_window(256, p, gs, rng=rng, noise=1.0)
        pairs = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
        assert len(pairs) == 2
        measured = acute_angle_deg(pairs[0], pairs[1])
        expected = min(true_angle, 180 - true_angle)
        assert abs(measured - expected) < 0.5, (true_angle, measured)
        np.testing.assert_allclose(pair_angles_deg(pairs)[0, 1], measured)


def test_non_square_pixels_use_each_axis_pixel_size(rng) -> None:
    p = (0.0204, 0.02)  # p_y = 1.02 p_x
    gs = [g_vec(0.235, 30.0), g_vec(0.2035, 100.0), g_vec(0.31, 160.0)]
    win = cosine_window(256, p, gs, rng=rng, noise=1.0)
    pairs = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
    assert len(pairs) == 3
    for g in gs:
        pair, _ = closest(pairs, g)
        d_true = 1.0 / math.hypot(*g)
        assert abs(pair.spacing_nm - d_true) / d_true < 0.005
        assert angle_diff_deg(pair.angle_deg, math.degrees(math.atan2(-g[0], g[1]))) < 0.3
        # FFT offsets follow the per-axis pixel sizes: k = g w p
        assert abs(abs(pair.ky) - abs(g[0]) * 256 * p[0]) < 0.1
        assert abs(abs(pair.kx) - abs(g[1]) * 256 * p[1]) < 0.1
    # Treating the pixels as square would bias the spacings of the steep planes.
    wrong = detect_pairs(win[None], pixel_size_nm=0.02, detector="classical")[0]
    pair, _ = closest(wrong, gs[1])
    assert abs(pair.spacing_nm - 0.2035) / 0.2035 > 0.01


def test_gaussian_atom_lattice_recovers_reciprocal_basis(rng) -> None:
    p = 0.02
    # oblique 2-D lattice, (y, x) vectors in nm
    a1 = np.array([0.0, 0.3])
    a2 = np.array([0.26, 0.12])
    win = atom_lattice_window(256, p, a1, a2, sigma_nm=0.035, noise=0.3, rng=rng)
    pairs = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
    recip = np.linalg.inv(np.stack([a1, a2], axis=1)).T  # columns b1, b2: a_i . b_j = delta_ij
    b1, b2 = recip[:, 0], recip[:, 1]
    for g in (b1, b2, b1 + b2, b1 - b2):
        pair, _ = closest(pairs, (g[0], g[1]))
        d_true = 1.0 / np.linalg.norm(g)
        assert abs(pair.spacing_nm - d_true) / d_true < 0.005
    # second orders of the strongest reflections are evidence, not extra planes
    spacings = sorted(round(q.spacing_nm, 3) for q in pairs)
    assert len(spacings) == len(set(spacings))
    strongest = pairs[0]
    assert 2 in strongest.harmonic_orders
    assert all(
        abs(q.spacing_nm - strongest.spacing_nm / 2) / (strongest.spacing_nm / 2) > 0.02
        or angle_diff_deg(q.angle_deg, strongest.angle_deg) > 2
        for q in pairs[1:]
    )


def test_harmonics_are_flagged_not_double_counted(rng) -> None:
    p = (0.02, 0.02)
    g = g_vec(0.40, 25.0)
    g2 = (2 * g[0], 2 * g[1])
    g3 = (3 * g[0], 3 * g[1])
    other = g_vec(0.30, 110.0)
    win = cosine_window(256, p, [g, g2, g3, other], amps=[1.0, 0.5, 0.35, 0.8], rng=rng, noise=0.5)
    pairs = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
    assert len(pairs) == 2
    fundamental, _ = closest(pairs, g)
    assert fundamental.harmonic_orders == (2, 3)
    assert abs(fundamental.spacing_nm - 0.40) / 0.40 < 0.003
    assert closest(pairs, other)[0].harmonic_orders == ()


def test_stronger_second_order_is_its_own_plane(rng) -> None:
    p = (0.02, 0.02)
    g = g_vec(0.40, 25.0)
    win = cosine_window(256, p, [g, (2 * g[0], 2 * g[1])], amps=[0.3, 1.0], rng=rng, noise=0.3)
    pairs = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
    assert sorted(round(q.spacing_nm, 2) for q in pairs) == [0.2, 0.4]
    assert all(q.harmonic_orders == () for q in pairs)


def test_amorphous_and_noise_windows_give_no_spots(rng) -> None:
    wins = []
    for p, df, astig in ((0.02, -60, 0), (0.0168, -40, 5), (0.03, -100, 20), (0.05, -150, 10)):
        for _ in range(6):
            wins.append((p, amorphous_window(256, p, defocus_nm=df, astig_nm=astig, rng=rng)))
    for p, win in wins:
        assert detect_pairs(win[None], pixel_size_nm=p, detector="classical") == [()]
    for w, p in ((128, 0.05), (256, 0.02), (512, 0.01)):
        noise = rng.standard_normal((40 if w < 512 else 10, w, w)).astype(np.float32)
        found = detect_pairs(noise, pixel_size_nm=p, detector="classical")
        assert sum(len(f) for f in found) == 0


def test_lattice_on_amorphous_background_found(rng) -> None:
    p = 0.0168
    amorph = amorphous_window(256, p, defocus_nm=-60, rng=rng)
    lattice = cosine_window(256, (p, p), [g_vec(0.235, 40.0)], rng=rng)
    pairs = detect_pairs((amorph + 0.6 * lattice)[None], pixel_size_nm=p, detector="classical")[0]
    assert len(pairs) == 1
    assert abs(pairs[0].spacing_nm - 0.235) / 0.235 < 0.005


# --- definitions: canonical orientation, angles, DC ----------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 15.0, 45.0, 89.0, 90.0, 91.0, 135.0, 179.0])
def test_canonical_orientation_and_angle_convention(rng, angle) -> None:
    p = (0.02, 0.02)
    g = g_vec(0.25, angle)
    win = cosine_window(256, p, [g], rng=rng, noise=0.3)
    (pair,) = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
    assert pair.ky < 0 or (pair.ky == 0 and pair.kx > 0)
    assert 0.0 <= pair.angle_deg < 180.0
    assert angle_diff_deg(pair.angle_deg, angle) < 0.2
    assert pair.angle_deg == pytest.approx(
        math.degrees(math.atan2(-pair.gy_nm_inv, pair.gx_nm_inv)) % 180.0
    )
    assert pair.l_px == pytest.approx(math.hypot(pair.ky, pair.kx))
    assert pair.gy_nm_inv == pytest.approx(pair.ky / (256 * 0.02))
    assert pair.spacing_nm == pytest.approx(1.0 / pair.frequency_nm_inv)
    assert pair.frequency_nm_inv == pytest.approx(math.hypot(pair.gy_nm_inv, pair.gx_nm_inv))
    assert pair.intensity > 0 and pair.snr > 10


def _pair(gy: float, gx: float) -> SpotPair:
    f = math.hypot(gy, gx)
    return SpotPair(
        ky=gy,
        kx=gx,
        l_px=f,
        gy_nm_inv=gy,
        gx_nm_inv=gx,
        frequency_nm_inv=f,
        spacing_nm=1 / f,
        angle_deg=math.degrees(math.atan2(-gy, gx)) % 180,
        intensity=1.0,
        snr=1.0,
    )


def test_acute_angle_between_pairs() -> None:
    a = _pair(-1.0, 0.0)  # 90 deg
    b = _pair(0.0, 2.0)  # 0 deg
    c = _pair(-1.0, -1.0)  # 135 deg
    assert acute_angle_deg(a, b) == pytest.approx(90.0)
    assert acute_angle_deg(b, c) == pytest.approx(45.0)
    assert acute_angle_deg(a, c) == pytest.approx(45.0)
    assert acute_angle_deg(a, a) == pytest.approx(0.0)
    m = pair_angles_deg([a, b, c])
    np.testing.assert_allclose(m, [[0, 90, 45], [90, 0, 45], [45, 45, 0]], atol=1e-9)
    assert pair_angles_deg([]).shape == (0, 0)


def test_dc_component_is_ignored(rng) -> None:
    p = (0.02, 0.02)
    win = cosine_window(256, p, [g_vec(0.25, 30.0)], rng=rng, noise=0.5)
    win += np.linspace(0, 50, 256, dtype=np.float32)[None, :]  # strong low-frequency ramp
    spec = window_spectra(win[None])[0]
    geom = band_geometry(256, p)
    mask = np.zeros((64, 64), dtype=bool)
    draw_disks(mask[None], [0], *geom.to_band(np.array([0.0]), np.array([0.0])), radius_px=1.5)
    assert pairs_from_mask(mask, spec, geom, pixel_size_nm=p) == ()
    found = detect_pairs(win[None], pixel_size_nm=p, detector="classical")[0]
    assert len(found) == 1 and found[0].l_px > 10


# --- mask-driven extraction ------------------------------------------------------------------------


def _mask_at(geom, ks: list[tuple[float, float]], *, both: bool = True) -> np.ndarray:
    mask = np.zeros((1, geom.size, geom.size), dtype=bool)
    ky = np.array([k[0] for k in ks] + ([-k[0] for k in ks] if both else []))
    kx = np.array([k[1] for k in ks] + ([-k[1] for k in ks] if both else []))
    draw_disks(mask, np.zeros(ky.size, dtype=int), *geom.to_band(ky, kx), radius_px=1.5)
    return mask[0]


def test_neighbour_skirt_is_not_taken_for_a_weaker_spot(rng) -> None:
    """A weak spot 7 FFT px from a 30x stronger one (separate mask components) keeps its peak.

    Regression: the search once covered a square box around the component, whose corner reached
    the strong spot: the weak component took the strong peak and the weak spot was lost.
    """
    w, p = 512, (0.009, 0.009)
    geom = band_geometry(w, p)
    strong, weak = (-17.23, -25.86), (-22.23, -20.86)  # FFT px, 7.1 px apart
    gs = [(ky / (w * p[0]), kx / (w * p[1])) for ky, kx in (strong, weak)]
    win = cosine_window(w, p, gs, rng=rng, noise=0.5, amps=[30.0, 1.0])
    band = band_spectra(win[None], geom)[0]
    pairs = pairs_from_mask(_mask_at(geom, [strong, weak]), band, geom, pixel_size_nm=p)
    found = sorted((round(q.ky), round(q.kx)) for q in pairs)
    assert found == sorted((round(k[0]), round(k[1])) for k in (strong, weak))


@pytest.mark.parametrize("refine", ["parabolic", "dft"])
def test_mask_driven_refined_positions(rng, refine) -> None:
    w, p = 256, (0.02, 0.02)
    geom = band_geometry(w, p)
    true_k = [(-12.37, 20.81), (-30.55, -9.18), (0.0, 17.42)]  # FFT px, canonical
    gs = [(ky / (w * p[0]), kx / (w * p[1])) for ky, kx in true_k]
    win = cosine_window(w, p, gs, rng=rng, noise=0.5)
    spec = window_spectra(win[None])[0]
    mask = _mask_at(geom, true_k)
    pairs = pairs_from_mask(
        mask, spec, geom, pixel_size_nm=p, window=win if refine == "dft" else None
    )
    assert len(pairs) == 3
    for ky, kx in true_k:  # up to the Friedel sign (a pair on the ky = 0 axis may flip)
        dist = [
            min(math.hypot(q.ky - ky, q.kx - kx), math.hypot(q.ky + ky, q.kx + kx)) for q in pairs
        ]
        assert min(dist) < 0.05
    # the band-only magnitude gives the same pairs as the full spectrum
    band = band_spectra(win[None], geom)
    from_band = pairs_from_masks(mask[None], band, geom, pixel_size_nm=p)[0]
    if refine == "parabolic":
        assert len(from_band) == 3
        for a, b in zip(
            sorted(pairs, key=lambda q: q.l_px),
            sorted(from_band, key=lambda q: q.l_px),
            strict=True,
        ):
            assert a.ky == pytest.approx(b.ky, abs=1e-6) and a.kx == pytest.approx(b.kx, abs=1e-6)


def test_one_sided_mask_pairs_and_asymmetric_magnitude_rejected(rng) -> None:
    w, p = 256, (0.02, 0.02)
    geom = band_geometry(w, p)
    k = (-14.3, 22.6)
    win = cosine_window(w, p, [(k[0] / (w * p[0]), k[1] / (w * p[1]))], rng=rng, noise=0.5)
    spec = window_spectra(win[None])[0]
    both = pairs_from_mask(_mask_at(geom, [k]), spec, geom, pixel_size_nm=p)
    upper = pairs_from_mask(_mask_at(geom, [k], both=False), spec, geom, pixel_size_nm=p)
    lower = pairs_from_mask(
        _mask_at(geom, [(-k[0], -k[1])], both=False), spec, geom, pixel_size_nm=p
    )
    assert len(both) == len(upper) == len(lower) == 1
    assert both[0] == upper[0] == lower[0]
    # A magnitude that is not centrosymmetric (no peak at -k) and a one-sided mask: no pair.
    broken = spec.copy()
    c = w // 2
    cy, cx = c - round(k[0]), c - round(k[1])
    broken[cy - 3 : cy + 4, cx - 3 : cx + 4] = np.median(spec)
    assert pairs_from_mask(_mask_at(geom, [k], both=False), broken, geom, pixel_size_nm=p) == ()


def test_empty_mask_and_input_validation(rng) -> None:
    w, p = 128, (0.02, 0.02)
    geom = band_geometry(w, p)
    spec = window_spectra(rng.standard_normal((1, w, w)).astype(np.float32))[0]
    assert pairs_from_mask(np.zeros((64, 64), bool), spec, geom, pixel_size_nm=p) == ()
    with pytest.raises(AnalysisParameterError, match="band grid"):
        pairs_from_mask(np.zeros((32, 32), bool), spec, geom, pixel_size_nm=p)
    with pytest.raises(AnalysisParameterError, match="match neither"):
        pairs_from_mask(np.zeros((64, 64), bool), spec[:100, :100], geom, pixel_size_nm=p)
    with pytest.raises(CalibrationError, match="pixel size"):
        pairs_from_mask(np.zeros((64, 64), bool), spec, geom, pixel_size_nm=(0.0, 0.02))
    with pytest.raises(AnalysisParameterError, match="2-D"):
        pairs_from_mask(np.zeros((1, 64, 64), bool), spec, geom, pixel_size_nm=p)


def test_detect_pairs_options_and_validation(rng) -> None:
    p = (0.02, 0.02)
    wins = np.stack(
        [cosine_window(256, p, [g_vec(0.25, a)], rng=rng, noise=0.5) for a in (10.0, 70.0)]
    )
    with pytest.raises(AnalysisParameterError, match="unknown spot detector"):
        detect_pairs(wins, pixel_size_nm=p, detector="hough")
    with pytest.raises(AnalysisParameterError, match="refinement"):
        detect_pairs(wins, pixel_size_nm=p, detector="classical", refine="gauss")
    with pytest.raises(CalibrationError):
        detect_pairs(wins, pixel_size_nm=-0.02, detector="classical")
    with pytest.raises(AnalysisParameterError, match="do not match"):
        detect_pairs(wins, pixel_size_nm=p, detector="classical", spectra=wins[:1])
    fast = detect_pairs(wins, pixel_size_nm=p, detector="classical", batch_size=1)
    full = detect_pairs(wins, pixel_size_nm=p, detector="classical", spectra=window_spectra(wins))
    dft = detect_pairs(wins, pixel_size_nm=p, detector="classical", refine="dft")
    for a, b, c in zip(fast, full, dft, strict=True):
        assert len(a) == len(b) == len(c) == 1
        assert a[0].spacing_nm == pytest.approx(b[0].spacing_nm, rel=1e-5)
        assert a[0].spacing_nm == pytest.approx(0.25, rel=0.003)
        assert c[0].spacing_nm == pytest.approx(0.25, rel=0.003)


def test_detect_pairs_in_image_equals_extracted_windows(rng) -> None:
    p = 0.02
    img = cosine_window(512, (p, p), [g_vec(0.235, 33.0), g_vec(0.2035, 88.0)], rng=rng, noise=1.0)
    grid = window_grid(img.shape, window_px=128, stride_px=96)
    a = detect_pairs_in_image(img, grid, pixel_size_nm=p, detector="classical")
    b = detect_pairs(extract_windows(img, grid), pixel_size_nm=p, detector="classical")
    assert len(a) == len(b) == grid.n_windows
    assert all(len(x) == len(y) == 2 for x, y in zip(a, b, strict=True))
    for x, y in zip(a, b, strict=True):
        for pa, pb in zip(x, y, strict=True):  # the shared row transforms: float32 rounding only
            assert pa.spacing_nm == pytest.approx(pb.spacing_nm, rel=1e-6)
            assert pa.angle_deg == pytest.approx(pb.angle_deg, abs=1e-4)
            assert pa.snr == pytest.approx(pb.snr, rel=1e-4)
    # Rows of the grid: the same windows as the whole grid, bit for bit.
    part = detect_pairs_in_image(img, grid, pixel_size_nm=p, detector="classical", rows=(1, 3))
    assert part == a[grid.n_cols : 3 * grid.n_cols]
    with pytest.raises(AnalysisParameterError, match="outside"):
        detect_pairs_in_image(img, grid, pixel_size_nm=p, detector="classical", rows=(2, 2))
    with pytest.raises(AnalysisParameterError, match="does not match"):
        detect_pairs_in_image(img[:-1], grid, pixel_size_nm=p, detector="classical")


def test_unet_detector_goes_through_predict_logits(rng, monkeypatch) -> None:
    """detector="unet": load_model() when no model is given, predict_logits on the log band."""
    import sys
    import types

    p = (0.02, 0.02)
    win = cosine_window(256, p, [g_vec(0.25, 40.0)], rng=rng, noise=0.5)
    geom = band_geometry(256, p)
    calls = {}

    def fake_load_model(*args, **kwargs):
        calls["load"] = True
        return "model"

    def fake_predict(model, bands, **kwargs):
        calls["predict"] = (model, bands.shape, bands.dtype)
        np.testing.assert_allclose(bands, log_band(window_spectra(win[None]), geom), atol=1e-4)
        mask = classical_masks(band_spectra(win[None], geom), geom)
        return np.where(mask, 3.0, -3.0).astype(np.float32)  # logits

    fake = types.ModuleType("hrtem_core.unet.load")
    fake.load_model = fake_load_model
    fake.predict_logits = fake_predict
    monkeypatch.setitem(sys.modules, "hrtem_core.unet.load", fake)
    (pairs,) = detect_pairs(win[None], pixel_size_nm=p, detector="unet")
    assert calls == {"load": True, "predict": ("model", (1, 64, 64), np.float32)}
    assert len(pairs) == 1 and pairs[0].spacing_nm == pytest.approx(0.25, rel=0.003)
    calls.clear()
    detect_pairs(win[None], pixel_size_nm=p, detector="unet", model="given")
    assert calls["predict"][0] == "given" and "load" not in calls


def test_classical_masks_mark_both_friedel_mates(rng) -> None:
    w, p = 256, (0.02, 0.02)
    geom = band_geometry(w, p)
    k = (-17.0, 9.0)
    win = cosine_window(w, p, [(k[0] / (w * p[0]), k[1] / (w * p[1]))], rng=rng, noise=0.5)
    masks, peaks = classical_masks(
        window_spectra(win[None]), geom, pixel_size_nm=p, return_peaks=True
    )
    assert masks.shape == (1, 64, 64) and masks.dtype == bool
    assert sorted(map(tuple, peaks[:, 1:].tolist())) == [(-17, 9), (17, -9)]
    r, c = geom.to_band(np.array([k[0], -k[0]]), np.array([k[1], -k[1]]))
    assert masks[0, round(r[0]), round(c[0])] and masks[0, round(r[1]), round(c[1])]
    assert masks.sum() < 40
    with pytest.raises(AnalysisParameterError, match="threshold"):
        classical_masks(window_spectra(win[None]), geom, threshold=0.0)


def test_split_at_peaks_separates_touching_spots_and_keeps_single_ones() -> None:
    """Two logit peaks 3 px apart in one component -> two labels split between them; a
    component with one peak (or peaks closer than min_distance) is left as it is."""
    score = np.full((1, 16, 16), -5.0, dtype=np.float32)
    yy, xx = np.mgrid[0:16, 0:16]
    for cy, cx, top in ((5, 5, 4.0), (5, 8, 3.5), (12, 12, 4.0)):
        score[0] = np.maximum(score[0], top - np.hypot(yy - cy, xx - cx) * 1.5)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, n = ndi.label(score > 0, structure=structure)
    assert n == 2  # the first two touch
    out = split_at_peaks(labels, score)
    assert len(np.unique(out[out > 0])) == 3
    assert out[0, 5, 5] != out[0, 5, 8] and out[0, 5, 5] > 0 and out[0, 5, 8] > 0
    assert ((out > 0) == (labels > 0)).all()
    np.testing.assert_array_equal(split_at_peaks(labels, score, min_distance_px=3) > 0, labels > 0)
    assert len(np.unique(split_at_peaks(labels, score, min_distance_px=3)[out > 0])) == 2
    empty = np.zeros((2, 8, 8), dtype=np.int32)
    np.testing.assert_array_equal(split_at_peaks(empty, np.zeros((2, 8, 8))), empty)


def test_logits_split_two_touching_spots_into_two_pairs(rng) -> None:
    """Spots 3.3 band px apart whose mask disks touch: one pair without logits, two with them."""
    w, p = 256, (0.045, 0.045)  # 3.7 FFT px per band px
    geom = band_geometry(w, p)
    ks = [(-19.05, 48.51), (-30.66, 47.63)]  # 11.6 FFT px apart
    gs = [(ky / (w * p[0]), kx / (w * p[1])) for ky, kx in ks]
    win = cosine_window(w, p, gs, rng=rng, noise=0.5)
    band = band_spectra(win[None], geom)
    mask = _mask_at(geom, ks)[None]
    r, c = geom.to_band(
        np.array([k[0] for k in ks] + [-k[0] for k in ks]),
        np.array([k[1] for k in ks] + [-k[1] for k in ks]),
    )
    yy, xx = np.mgrid[0 : geom.size, 0 : geom.size]
    logits = np.max(
        [4.0 - 2.0 * np.hypot(yy - a, xx - b) for a, b in zip(r, c, strict=True)], axis=0
    )
    assert len(pairs_from_masks(mask, band, geom, pixel_size_nm=p)[0]) == 1
    pairs = pairs_from_masks(mask, band, geom, pixel_size_nm=p, logits=logits[None])[0]
    assert sorted((round(q.ky), round(q.kx)) for q in pairs) == sorted(
        (round(a), round(b)) for a, b in ks
    )
    with pytest.raises(AnalysisParameterError, match="logits"):
        pairs_from_masks(mask, band, geom, pixel_size_nm=p, logits=logits)


# --- properties --------------------------------------------------------------------------------

_RNG = np.random.default_rng(7)
_P = (0.02, 0.02)
_GEOM = band_geometry(256, _P)
_GS = [
    [g_vec(d, a), g_vec(d * 0.85, a + 57.0)]
    for d, a in ((0.25, 10.0), (0.3, 100.0), (0.22, 160.0), (0.4, 45.0), (0.18, 75.0))
]
_WINS = np.stack([cosine_window(256, _P, gs, rng=_RNG, noise=1.0) for gs in _GS])
_BANDS = band_spectra(_WINS, _GEOM)
# Masks as the U-Net is trained to draw them: disks at the true spots.
_MASKS = np.stack(
    [_mask_at(_GEOM, [(gy * 256 * _P[0], gx * 256 * _P[1]) for gy, gx in gs]) for gs in _GS]
)
_PAIRS = pairs_from_masks(_MASKS, _BANDS, _GEOM, pixel_size_nm=_P)


@settings(max_examples=20, deadline=None)
@given(st.permutations(range(5)))
def test_property_batch_order_does_not_change_pairs(perm) -> None:
    perm = np.asarray(perm)
    got = pairs_from_masks(_MASKS[perm], _BANDS[perm], _GEOM, pixel_size_nm=_P)
    assert got == [_PAIRS[i] for i in perm]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 4), st.lists(st.booleans(), min_size=4, max_size=4))
def test_property_component_sides_and_order_do_not_change_pairs(i, keep_side) -> None:
    """Any mix of a spot, its mate or both in the mask (and their order) gives the same pairs."""
    pairs = _PAIRS[i]
    assert len(pairs) == 2
    ks = []
    for j, q in enumerate(pairs):
        if keep_side[2 * j]:
            ks.append((q.ky, q.kx))
        if keep_side[2 * j + 1] or not keep_side[2 * j]:
            ks.append((-q.ky, -q.kx))
    ks = ks[::-1] if keep_side[0] else ks
    mask = _mask_at(_GEOM, ks, both=False)
    assert pairs_from_mask(mask, _BANDS[i], _GEOM, pixel_size_nm=_P) == pairs
    mirrored = pairs_from_mask(_MASKS[i][::-1, ::-1], _BANDS[i], _GEOM, pixel_size_nm=_P)
    assert mirrored == pairs


@settings(max_examples=12, deadline=None)
@given(st.floats(0.0, 180.0), st.floats(0.18, 0.45), st.integers(0, 2**31 - 1))
def test_property_rotating_the_lattice_rotates_the_angles(rotation, d, seed) -> None:
    rng = np.random.default_rng(seed)
    base = [(d, 20.0), (d * 0.8, 80.0)]
    found = []
    for rot in (0.0, rotation):
        gs = [g_vec(dd, a + rot) for dd, a in base]
        win = cosine_window(256, _P, gs, rng=rng, noise=1.0)
        found.append(detect_pairs(win[None], pixel_size_nm=_P, detector="classical")[0])
    a, b = found
    assert len(a) == len(b) == 2
    for dd, ang in base:
        pa, _ = closest(a, g_vec(dd, ang))
        pb, _ = closest(b, g_vec(dd, ang + rotation))
        assert pa.spacing_nm == pytest.approx(pb.spacing_nm, rel=0.005)
        assert angle_diff_deg(pb.angle_deg, pa.angle_deg + rotation) < 0.3
    assert acute_angle_deg(*a) == pytest.approx(acute_angle_deg(*b), abs=0.4)


@settings(max_examples=12, deadline=None)
@given(
    st.integers(1, 3),
    st.booleans(),
    st.floats(0.16, 0.45),
    st.floats(0.0, 180.0),
    st.integers(0, 2**31 - 1),
)
def test_property_rotating_the_image_by_90_degrees(k, transpose, d, angle, seed) -> None:
    """np.rot90 / transpose of a window: same spacings, angles turned by 90 k (or mirrored)."""
    rng = np.random.default_rng(seed)
    gs = [g_vec(d, angle), g_vec(d * 0.8, angle + 65.0)]
    win = cosine_window(256, _P, gs, rng=rng, noise=1.0)
    turned = np.rot90(win.T if transpose else win, k)
    a = detect_pairs(win[None], pixel_size_nm=_P, detector="classical")[0]
    b = detect_pairs(np.ascontiguousarray(turned)[None], pixel_size_nm=_P, detector="classical")[0]
    assert len(a) == len(b) == 2
    for pa in a:
        # Transposing mirrors the screen about the diagonal: angle -> 270 - angle (mod 180);
        # np.rot90 (rows to columns) turns it counter-clockwise on screen by 90 degrees per step.
        ang = (270.0 - pa.angle_deg if transpose else pa.angle_deg) + 90.0 * k
        pb, _ = closest(b, g_vec(pa.spacing_nm, ang))
        assert pb.spacing_nm == pytest.approx(pa.spacing_nm, rel=0.003)
        assert angle_diff_deg(pb.angle_deg, ang) < 0.2
        assert pb.ky < 0 or (pb.ky == 0 and pb.kx > 0)
    assert acute_angle_deg(*a) == pytest.approx(acute_angle_deg(*b), abs=0.3)


def test_spots_beyond_the_band_edge_are_not_reported(rng) -> None:
    """The band reaches d_min (radius ceil(w p / d_min) + 1 FFT px); finer fringes are not spots."""
    p = (0.02, 0.02)
    geom = band_geometry(256, p, d_min_nm=0.1)
    assert geom.radius_y == 53
    inside = cosine_window(256, p, [(-51.5 / 5.12, 3.0 / 5.12)], rng=rng, noise=0.5)
    (pair,) = detect_pairs(inside[None], pixel_size_nm=p, detector="classical")[0]
    assert pair.ky == pytest.approx(-51.5, abs=0.05)
    for l_px in (53.6, 54.5):  # the peak (or its flank) on the band's outermost row
        outside = cosine_window(256, p, [(-l_px / 5.12, 3.0 / 5.12)], rng=rng, noise=0.5)
        assert detect_pairs(outside[None], pixel_size_nm=p, detector="classical") == [()]


def test_chunks_and_threads_do_not_change_the_pairs(rng) -> None:
    """detect_pairs spreads chunks of windows over threads: the result never depends on them."""
    p = (0.02, 0.02)
    wins = np.stack(
        [
            cosine_window(256, p, [g_vec(0.2 + 0.02 * i, 17.0 * i)], rng=rng, noise=1.0)
            for i in range(9)
        ]
    )
    ref = detect_pairs(wins, pixel_size_nm=p, detector="classical", workers=1, batch_size=64)
    assert all(len(q) == 1 for q in ref)
    for workers, batch in ((2, 1), (3, 4), (-1, 2)):
        got = detect_pairs(
            wins, pixel_size_nm=p, detector="classical", workers=workers, batch_size=batch
        )
        assert got == ref


# ---------------------------------------------------------------------------------------------
# Honest crystallinity: a stated significance test (issue: never call noise a crystal)
# ---------------------------------------------------------------------------------------------


def test_significance_threshold_known_answer() -> None:
    """t = ln(n / alpha): the Bonferroni bound n exp(-t) on noise-only windows equals alpha."""
    from hrtem_core.spots import FALSE_ALARM_PER_WINDOW, significance_threshold

    assert significance_threshold(4000) == pytest.approx(math.log(4000 / FALSE_ALARM_PER_WINDOW))
    assert significance_threshold(4000, false_alarm=0.01) == pytest.approx(math.log(4e5))
    with pytest.raises(AnalysisParameterError, match="false-alarm"):
        significance_threshold(10, false_alarm=1.5)


def _film(rng: np.random.Generator, n: int, w: int) -> np.ndarray:
    """Amorphous-film-like windows: Gaussian noise band-passed to a ring (its Thon-ring-free
    structure factor), plus shot noise."""
    k = np.fft.fftfreq(w)
    kk = np.hypot(k[:, None], k[None, :])
    ring = np.exp(-0.5 * ((kk - 0.18) / 0.05) ** 2) + 0.2
    f = np.fft.fft2(rng.normal(size=(n, w, w))) * ring
    return (np.fft.ifft2(f).real * 40 + 500 + rng.normal(size=(n, w, w)) * 5).astype(np.float32)


def test_false_alarm_rate_on_10000_noise_windows() -> None:
    """10,000 noise-only windows (white, Poisson, amorphous film): at most 1 % hold a spot pair,
    with either detector (the threshold is set for 0.2 %)."""
    from hrtem_core.spots import detect_pairs

    rng = np.random.default_rng(2026)
    w, n = 128, 10_000
    kinds = {
        "white": lambda m: rng.normal(1000.0, 37.0, size=(m, w, w)).astype(np.float32),
        "poisson": lambda m: rng.poisson(3.0, size=(m, w, w)).astype(np.float32),
        "film": lambda m: _film(rng, m, w),
    }
    sizes = {"white": 4000, "poisson": 3000, "film": 3000}
    assert sum(sizes.values()) == n
    for det in ("unet", "classical"):
        alarms = 0
        for kind, make in kinds.items():
            for start in range(0, sizes[kind], 1000):
                m = min(1000, sizes[kind] - start)
                found = detect_pairs(make(m), pixel_size_nm=0.02, detector=det)
                alarms += sum(1 for f in found if f)
        assert alarms / n <= 0.01, (det, alarms)


def test_flat_constant_noise_and_film_images_have_no_crystalline_window() -> None:
    """Zeros, a constant, white noise, a film and zeros with one noise patch: 0 crystalline."""
    from hrtem_core.spots import detect_pairs_in_image
    from hrtem_core.windows import window_grid

    rng = np.random.default_rng(5)
    patch = np.zeros((512, 512), np.float32)
    patch[200:300, 200:300] = rng.normal(size=(100, 100))
    images = {
        "zeros": np.zeros((512, 512), np.float32),
        "constant": np.full((512, 512), 1234.5, np.float32),
        "white": rng.normal(100.0, 3.0, (512, 512)).astype(np.float32),
        "film": _film(rng, 1, 512)[0],
        "zeros+patch": patch,
    }
    for name, img in images.items():
        grid = window_grid(img.shape, window_px=128, stride_px=64)
        for det in ("unet", "classical"):
            found = detect_pairs_in_image(img, grid, pixel_size_nm=0.02, detector=det)
            assert sum(1 for f in found if f) == 0, (name, det)


def test_flat_windows_inside_a_lattice_image() -> None:
    """A lattice with a zero-filled half: the flat windows hold nothing, the lattice ones do."""
    from hrtem_core.spots import detect_pairs_in_image
    from hrtem_core.windows import flat_windows, window_grid

    img = cosine_window(
        512,
        (0.02, 0.02),
        [g_vec(0.3, 20.0), g_vec(0.25, 80.0)],
        rng=np.random.default_rng(1),
        noise=0.3,
    )
    img[:, 256:] = 0.0
    grid = window_grid(img.shape, window_px=128, stride_px=128)
    flat = flat_windows(img, grid)
    assert flat.reshape(grid.n_rows, grid.n_cols)[:, 2:].all()
    assert not flat.reshape(grid.n_rows, grid.n_cols)[:, :2].any()
    found = detect_pairs_in_image(img, grid, pixel_size_nm=0.02, detector="classical")
    has = np.array([bool(f) for f in found]).reshape(grid.n_rows, grid.n_cols)
    assert has[:, :2].all() and not has[:, 2:].any()


def test_spots_do_not_change_with_image_offset_or_scale(rng) -> None:
    """a * image + b: the same pairs, significance and uncertainty (scale- and offset-free)."""
    from hrtem_core.spots import detect_pairs_in_image
    from hrtem_core.windows import window_grid

    base = cosine_window(512, (0.02, 0.02), [g_vec(0.3, 20.0), g_vec(0.21, 75.0)], rng=rng)
    img = (base + rng.normal(0.0, 1.5, base.shape)).astype(np.float64)
    grid = window_grid(img.shape, window_px=256, stride_px=128)

    def run(x):
        return detect_pairs_in_image(
            x.astype(np.float32), grid, pixel_size_nm=0.02, detector="classical"
        )

    ref = run(img)
    assert sum(len(f) for f in ref) > 0
    for a, b in ((7.5, 0.0), (1.0, 3000.0), (0.01, -40.0)):
        got = run(a * img + b)
        for f0, f1 in zip(ref, got, strict=True):
            assert len(f0) == len(f1)
            for p0, p1 in zip(f0, f1, strict=True):
                assert p1.spacing_nm == pytest.approx(p0.spacing_nm, rel=1e-3)
                assert p1.significance == pytest.approx(p0.significance, rel=0.02)
                assert p1.sigma_l_px == pytest.approx(p0.sigma_l_px, rel=0.02)
