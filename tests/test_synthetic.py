"""The synthetic training windows: reproducibility, exact labels, visibility, ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrtem_core.optics import wavelength_nm
from hrtem_core.synthetic import (
    GENERATOR_VERSION,
    SyntheticRanges,
    example_arrays,
    label_mask,
    make_dataset,
    spacing_of,
    spot_peaks,
    synthetic_example,
    synthetic_window,
)
from hrtem_core.windows import band_geometry, hann_2d, window_spectra

CLEAN = {
    "crystal": True,
    "n_lattices": 1,
    "full_cover": True,
    "amorphous_rms": 0.0,
    "dose_e_per_px": math.inf,
    "artefacts": False,
}


def test_seeded_reproducibility():
    a = synthetic_example(np.random.default_rng(11))
    b = synthetic_example(np.random.default_rng(11))
    c = synthetic_example(np.random.default_rng(12))
    np.testing.assert_array_equal(a.window, b.window)
    np.testing.assert_array_equal(a.k_offsets, b.k_offsets)
    np.testing.assert_array_equal(a.ignore_offsets, b.ignore_offsets)
    assert a.params == b.params
    assert a.window.shape != c.window.shape or not np.array_equal(a.window, c.window)


def test_synthetic_window_contract(rng):
    window, k = synthetic_window(rng, window_px=128, pixel_size_nm=(0.02, 0.02))
    assert window.shape == (128, 128) and window.dtype == np.float32
    assert k.ndim == 2 and k.shape[1] == 2


def test_label_positions_are_the_lattice_points():
    w, p, d, angle = 256, (0.02, 0.02), 0.25, 30.0
    ex = synthetic_example(
        np.random.default_rng(1),
        window_px=w,
        pixel_size_nm=p,
        spacing_nm=d,
        angle_deg=angle,
        one_dimensional=True,
        amplitude=0.1,
        **CLEAN,
    )
    # The fundamental: k = w p / d along the direction atan2(-ky, kx) = angle.
    t = math.radians(angle)
    k1 = w * p[0] / d * np.array([-math.sin(t), math.cos(t)])
    dist = np.hypot(*(ex.k_offsets - k1).T).min()
    assert dist < 1e-9
    assert np.hypot(*(ex.k_offsets + k1).T).min() < 1e-9  # Friedel mate
    # Every label is a multiple of the fundamental (1-D fringes) and lies in the band.
    ratio = ex.k_offsets @ k1 / (k1 @ k1)
    np.testing.assert_allclose(ratio, np.rint(ratio), atol=1e-9)
    g = band_geometry(w, p, d_min_nm=0.1)
    assert (np.abs(ex.k_offsets[:, 0]) <= g.radius_y).all()
    assert (np.abs(ex.k_offsets[:, 1]) <= g.radius_x).all()


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_clean_spectrum_peaks_at_labels(seed):
    rng = np.random.default_rng(seed)
    w, p = 256, (0.015, 0.0155)  # slightly non-square pixels
    ex = synthetic_example(rng, window_px=w, pixel_size_nm=p, amplitude=0.1, **CLEAN)
    assert len(ex.k_offsets) >= 2
    mag = window_spectra(ex.window[None])[0]
    c = w // 2
    for ky, kx in ex.k_offsets:
        y, x = round(c + ky), round(c + kx)
        patch = mag[y - 1 : y + 2, x - 1 : x + 2]
        # The labelled position holds a local maximum of |F| (within the sub-pixel offset).
        ly, lx = np.unravel_index(np.argmax(mag[y - 3 : y + 4, x - 3 : x + 4]), (7, 7))
        assert abs(y - 3 + ly - (c + ky)) <= 1.0 and abs(x - 3 + lx - (c + kx)) <= 1.0
        assert patch.max() > 20 * np.median(mag)
    # The strongest peaks of the clean spectrum (away from the DC) are all labelled.
    m = mag.copy()
    m[c - 2 : c + 3, c - 2 : c + 3] = 0
    top = np.argsort(m.ravel())[::-1][:4]
    ty, tx = np.unravel_index(top, m.shape)
    for y, x in zip(ty - c, tx - c, strict=True):
        assert np.hypot(ex.k_offsets[:, 0] - y, ex.k_offsets[:, 1] - x).min() <= 1.5


def test_no_crystal_has_no_labels():
    for seed in range(5):
        ex = synthetic_example(np.random.default_rng(seed), crystal=False)
        assert ex.k_offsets.shape == (0, 2)
        assert ex.ignore_offsets.shape == (0, 2)
        _, mask, ignore = example_arrays(ex)
        assert not mask.any() and not ignore.any()


def test_visibility_depends_on_dose_and_contrast():
    kw = {
        "window_px": 256,
        "pixel_size_nm": (0.02, 0.02),
        "spacing_nm": 0.3,
        "angle_deg": 10.0,
        "one_dimensional": True,
        "crystal": True,
        "n_lattices": 1,
        "full_cover": True,
        "amorphous_rms": 0.05,
        "artefacts": False,
    }
    strong = synthetic_example(np.random.default_rng(5), amplitude=0.1, dose_e_per_px=1000.0, **kw)
    faint = synthetic_example(np.random.default_rng(5), amplitude=0.002, dose_e_per_px=1.0, **kw)
    assert len(strong.k_offsets) >= 2
    assert (strong.spot_snr >= SyntheticRanges().snr_label).all()
    assert len(faint.k_offsets) == 0


def test_spacings_in_range():
    rs = SyntheticRanges()
    rng = np.random.default_rng(8)
    n_lab = 0
    for _ in range(40):
        ex = synthetic_example(rng)
        w = ex.window_px
        py, px = ex.pixel_size_nm
        assert rs.pixel_size_nm[0] <= py <= rs.pixel_size_nm[1]
        assert abs(px / py - 1) <= rs.max_anisotropy + 1e-12
        assert w in rs.window_px
        for lat in ex.params["lattices"]:
            for d in lat["basis_spacing_nm"]:
                assert rs.spacing_nm[0] - 1e-12 <= d <= rs.spacing_nm[1] + 1e-12
                assert d >= 2.2 * max(py, px) - 1e-12  # below Nyquist
        if len(ex.k_offsets):
            n_lab += 1
            # Labels lie inside the square band the U-Net sees: its edge is at d_min (0.1 nm)
            # along the axes, so its corners hold spacings down to d_min / sqrt(2).
            g = band_geometry(w, (py, px), d_min_nm=rs.d_min_nm)
            assert (np.abs(ex.k_offsets[:, 0]) <= g.radius_y).all()
            assert (np.abs(ex.k_offsets[:, 1]) <= g.radius_x).all()
            d = spacing_of(ex.k_offsets, window_px=w, pixel_size_nm=(py, px))
            assert (d >= rs.d_min_nm / np.sqrt(2) * 0.95).all()
            assert (np.hypot(*ex.k_offsets.T) >= rs.min_k_px).all()
    assert n_lab >= 5


def test_label_mask_disks():
    g = band_geometry(256, (0.02, 0.02))
    k = np.array([[0.0, 10.0], [0.0, -10.0]])
    m = label_mask(k, g, radius_px=1.5)
    assert m.shape == (64, 64) and m.dtype == bool
    r, c = g.to_band(k[:, 0], k[:, 1])
    yy, xx = np.mgrid[:64, :64]
    expected = np.zeros((64, 64), bool)
    for rr, cc in zip(r, c, strict=True):
        expected |= np.hypot(yy - rr, xx - cc) <= 1.5
    np.testing.assert_array_equal(m, expected)
    # Symmetric about the DC for a Friedel pair.
    np.testing.assert_array_equal(m, m[::-1, ::-1])
    # Tiny radius: still the nearest pixel; outside the band: nothing.
    tiny = label_mask(k[:1], g, radius_px=0.1)
    assert tiny.sum() == 1 and tiny[round(r[0]), round(c[0])]
    assert not label_mask(np.array([[500.0, 0.0]]), g).any()
    assert not label_mask(np.zeros((0, 2)), g).any()


def test_make_dataset_shapes_and_reproducible():
    a = make_dataset(12, seed=3, chunk_size=5)
    b = make_dataset(12, seed=3, chunk_size=5)
    assert a.bands.shape == (12, 64, 64) and a.bands.dtype == np.float32
    assert a.masks.dtype == bool and a.ignore.dtype == bool
    np.testing.assert_array_equal(a.bands, b.bands)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not (a.masks & a.ignore).any()
    assert (a.n_spots[a.masks.any(axis=(1, 2))] > 0).all()


def test_electron_wavelength():
    # the generator's CTF uses the project's one wavelength (hrtem_core.optics)
    assert wavelength_nm(300.0) == pytest.approx(0.0019687, rel=1e-3)
    assert wavelength_nm(200.0) == pytest.approx(0.0025079, rel=1e-3)


def test_spot_peaks_are_each_spots_own_fft_peak_without_its_neighbour():
    """Known answer: a spot's own peak is |F| of that fringe alone at its nearest FFT pixel."""
    w = 256
    geom = band_geometry(w, (0.02, 0.02))
    k = np.array([[-20.3, 31.6], [-24.1, 34.9]])  # FFT px; the second is the strong neighbour
    coef = np.array([0.8 * np.exp(0.3j), 24.0 * np.exp(-1.1j)])
    yy, xx = np.mgrid[0:w, 0:w]
    weight = hann_2d(w).astype(np.float64) * (1.0 + 0.2 * xx / w)  # apodization x illumination

    def fringe(j):
        return (coef[j] * np.exp(2j * np.pi * (k[j, 0] * yy + k[j, 1] * xx) / w)).real * weight

    def fft_at(img, kk):
        f = np.abs(np.fft.fft2(img))
        return f[int(np.rint(kk[0])) % w, int(np.rint(kk[1])) % w]

    peaks = spot_peaks(k, coef, weight, geom)
    for j in range(2):
        np.testing.assert_allclose(peaks[j], fft_at(fringe(j), k[j]), rtol=1e-4)
    # With the neighbour present |F| at the spot barely changes, but the largest |F| within
    # +-4 FFT px (one band pixel at 4 FFT px per band pixel: generator 1.0's 3 x 3 band maximum
    # reached that far) is the neighbour's, 30 times the spot's own peak.
    f = np.fft.fftshift(np.abs(np.fft.fft2(fringe(0) + fringe(1))))
    iy, ix = (np.rint(k[0]).astype(int) + w // 2).tolist()
    np.testing.assert_allclose(f[iy, ix], peaks[0], rtol=0.01)
    assert f[iy - 4 : iy + 5, ix - 4 : ix + 5].max() > 10 * peaks[0]
    outside = spot_peaks(np.array([[0.0, geom.radius_x + 3.0]]), coef[:1], weight, geom)
    assert outside[0] == 0.0


def test_pinned_examples():
    """Known outputs of two seeded draws: any change of the generator shows here (and then
    GENERATOR_VERSION must change too)."""
    ex = synthetic_example(
        np.random.default_rng(7),
        window_px=64,
        pixel_size_nm=(0.05, 0.05),
        dose_e_per_px=math.inf,
        amorphous_rms=0.0,
        artefacts=False,
        crystal=True,
        n_lattices=1,
    )
    assert GENERATOR_VERSION == "2.1"
    assert float(ex.window.astype(np.float64).sum()) == pytest.approx(4095.7766436338425, rel=1e-9)
    assert float(ex.window.std()) == pytest.approx(0.15251334011554718, rel=1e-6)
    assert ex.params["lattices"][0]["basis_spacing_nm"] == pytest.approx(
        [0.5126240193768586, 0.1995469816230818], rel=1e-12
    )
    assert len(ex.k_offsets) == 16
    np.testing.assert_allclose(
        ex.k_offsets[:2],
        [[-2.334833747641903, -15.865441395761179], [-1.7223642883417627, 20.609553545508692]],
        rtol=1e-12,
    )
    ex = synthetic_example(np.random.default_rng(11), window_px=128)
    expected = {
        "pixel_size_nm": (0.01259061847640549, 0.01259061847640549),
        "dose_e_per_px": 3.268563546467171,
        "amorphous_rms": 0.24699653815108535,
        "drift_px": (-0.24228694603630216, 0.7198680756567583),
        "defocus_nm": -152.4027505080836,
        "cs_mm": 0.7670850327048939,
        "q_env": 7.302743620134394,
    }
    for key, value in expected.items():
        assert ex.params[key] == pytest.approx(value, rel=1e-12), key
    assert ex.params["crystal"] is False and len(ex.k_offsets) == 0
    assert float(ex.window.sum()) == 57409.0
