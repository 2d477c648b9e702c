"""Known-answer tests of the focal-series simulator (hrtem_core.simulate)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from hrtem_core import simulate as S
from hrtem_core.cards import Phase
from hrtem_core.crystallography import Reflection, UnitCell, family_members
from hrtem_core.errors import AnalysisParameterError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "data" / "examples"


def _phase(card_id, name, formula, sg, sg_no, system, cell, rows) -> Phase:
    refl = tuple(
        Reflection(
            hkl=h,
            d_nm=float(cell.d_spacing_nm(h)),
            multiplicity=len(family_members(sg, h)),
            intensity_rel=None if i is None else float(i),
            forbidden=False,
            source="card",
        )
        for h, i in rows
    )
    return Phase(
        card_id=card_id,
        name=name,
        formula=formula,
        crystal_system=system,
        space_group=sg,
        space_group_number=sg_no,
        cell=cell,
        source="test",
        notes="",
        enabled=True,
        reflections=refl,
    )


@pytest.fixture(scope="module")
def maghemite() -> Phase:
    """Maghemite (PDF 39-1346-like rows: the strong lines and their relative intensities)."""
    cell = UnitCell.from_angstrom(8.3515, 8.3515, 8.3515)
    rows = [
        ((1, 1, 0), 5), ((1, 1, 1), 5), ((2, 1, 0), 5), ((2, 1, 1), 5), ((2, 2, 0), 35),
        ((3, 1, 0), 5), ((3, 1, 1), 100), ((2, 2, 2), 2), ((3, 2, 1), 6), ((4, 0, 0), 24),
        ((4, 2, 2), 12), ((5, 1, 1), 33), ((4, 4, 0), 53),
    ]  # fmt: skip
    return _phase("39-1346", "maghemite", "Fe2O3", "P4_332", 212, "cubic", cell, rows)


@pytest.fixture(scope="module")
def hematite() -> Phase:
    """Hematite, hexagonal axes, no intensities (smooth fall-off model)."""
    cell = UnitCell.from_angstrom(5.0356, 5.0356, 13.7489, 90, 90, 120)
    rows = [((0, 1, 2), None), ((1, 0, 4), None), ((1, 1, 0), None), ((1, 1, 3), None),
            ((0, 2, 4), None), ((1, 1, 6), None), ((3, 0, 0), None)]  # fmt: skip
    return _phase("33-0664", "hematite", "Fe2O3", "R-3c", 167, "trigonal", cell, rows)


def _spot_offset(image: np.ndarray, k_pred: tuple[float, float]) -> tuple[float, float]:
    """Sub-pixel position (ky, kx) [FFT px from DC] of the |FFT| maximum near ``k_pred``."""
    n = image.shape[0]
    mag = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean())))
    c = n // 2
    iy, ix = round(c + k_pred[0]), round(c + k_pred[1])
    sub = mag[iy - 2 : iy + 3, ix - 2 : ix + 3]
    dy, dx = np.unravel_index(np.argmax(sub), sub.shape)
    py, px = iy - 2 + dy, ix - 2 + dx

    def vertex(a, b, cc):  # log-parabola through three samples
        la, lb, lc = np.log(a), np.log(b), np.log(cc)
        return 0.5 * (la - lc) / (la - 2 * lb + lc)

    oy = vertex(mag[py - 1, px], mag[py, px], mag[py + 1, px])
    ox = vertex(mag[py, px - 1], mag[py, px], mag[py, px + 1])
    return py + oy - c, px + ox - c


def _dft_at(image: np.ndarray, g: tuple[float, float], p: float) -> complex:
    """Exact DFT of ``image`` at the off-grid frequency g = (gy, gx) [1/nm]."""
    ny, nx = image.shape
    ey = np.exp(-2j * np.pi * g[0] * np.arange(ny) * p)
    ex = np.exp(-2j * np.pi * g[1] * np.arange(nx) * p)
    return complex(ey @ (image - image.mean()) @ ex)


# ------------------------------------------------------------------------------------ optics


def test_wavelength_and_interaction_constant_known_values():
    assert S.wavelength_nm(300.0) == pytest.approx(0.0019687, rel=1e-4)
    assert S.wavelength_nm(200.0) == pytest.approx(0.0025079, rel=1e-4)
    assert S.wavelength_nm(100.0) == pytest.approx(0.0037014, rel=1e-4)
    # sigma [rad/(V nm)]: 0.00653 at 300 kV, 0.00729 at 200 kV (Kirkland: 0.000653 rad/(V A)).
    assert S.interaction_constant(300.0) == pytest.approx(0.006526, rel=1e-3)
    assert S.interaction_constant(200.0) == pytest.approx(0.007288, rel=1e-3)
    with pytest.raises(AnalysisParameterError):
        S.wavelength_nm(0.0)


def test_ctf_zeros_sit_at_the_analytic_frequencies():
    df, cs_mm, kv = -30.0, 1.2, 300.0
    lam = 0.0019687489
    cs = cs_mm * 1e6
    # chi = n pi  <=>  (Cs lam^3 / 2) u^2 + lam df u - n = 0 with u = k^2.
    a, b = 0.5 * cs * lam**3, lam * df
    zeros = []
    for n in range(-1, 6):
        disc = b * b + 4 * a * n
        if disc < 0:
            continue
        for sgn in (1, -1):
            u = (-b + sgn * math.sqrt(disc)) / (2 * a)
            if u > 0:
                zeros.append(math.sqrt(u))
    zeros = sorted(set(round(z, 9) for z in zeros))
    assert len(zeros) >= 6
    for k in zeros:
        assert abs(float(S.ctf(k, defocus_nm=df, cs_mm=cs_mm, voltage_kv=kv))) < 1e-6
        # A true sign change on either side of each zero.
        lo = float(S.ctf(k * 0.995, defocus_nm=df, cs_mm=cs_mm, voltage_kv=kv))
        hi = float(S.ctf(k * 1.005, defocus_nm=df, cs_mm=cs_mm, voltage_kv=kv))
        assert lo * hi < 0
    # Envelopes only scale: same zeros.
    k0 = zeros[2]
    assert abs(float(S.ctf(k0, defocus_nm=df, focal_spread_nm=3.0, convergence_mrad=0.3))) < 1e-6


def test_defocus_sign_convention_is_pinned():
    lam = S.wavelength_nm(300.0)
    # Scherzer defocus is negative (underfocus) for Cs > 0: -1.2 sqrt(Cs lambda).
    df_s = S.scherzer_defocus_nm(cs_mm=1.2, voltage_kv=300.0)
    assert df_s == pytest.approx(-1.2 * math.sqrt(1.2e6 * lam))
    assert df_s < 0
    # Over the Scherzer passband sin(chi) is negative and flat: first zero at
    # k0 = sqrt(2.4) (Cs lambda^3)^(-1/4); |sin chi| >= 0.6 over the middle of the band.
    k0 = math.sqrt(2.4) * (1.2e6 * lam**3) ** -0.25
    k = np.linspace(0.02, 0.99, 200) * k0
    s = S.ctf(k, defocus_nm=df_s, cs_mm=1.2)
    assert np.all(s < 0)
    mid = (k > 0.45 * k0) & (k < 0.9 * k0)
    assert np.all(s[mid] < -0.6)
    # The sign of chi with negative defocus and no Cs: negative; positive for overfocus.
    assert float(S.chi_rad(2.0, defocus_nm=-10.0, cs_mm=0.0)) < 0
    assert float(S.chi_rad(2.0, defocus_nm=+10.0, cs_mm=0.0)) > 0
    # The file name writes the sign.
    assert S.defocus_tag(-16) == "df-16nm"
    assert S.defocus_tag(4.0) == "df+4nm"
    assert S.defocus_tag(0.0) == "df+0nm"
    assert S.defocus_tag(-2.5) == "df-2.5nm"


def test_strong_phase_grating_not_the_weak_phase_approximation(maghemite):
    # A 10 nm particle shifts the phase by sigma t (V_0 + sum V_g) ~ 1.5 rad at its centre: the
    # exit wave is exp(i sigma V), unit modulus, and the phase is that value (mod 2 pi).
    p, n, dia, v0 = 0.03, 512, 10.0, 18.0
    kw = dict(
        pixel_size_nm=p, shape=(n, n), voltage_kv=300.0, support_thickness_nm=0.0,
        mean_inner_potential_v=v0, lattice_potential_v=S.DEFAULT_LATTICE_POTENTIAL_V,
        absorption=0.0, include_forbidden=False, intensity_model="powder", d_min_nm=0.1, seed=0,
    )  # fmt: skip
    part = S.Particle(phase=maghemite, diameter_nm=dia, center_px=(256.0, 256.0))
    spec = S._build_specimen([part], slice_nm=None, **kw)
    assert np.allclose(np.abs(spec.wave), 1.0, atol=1e-12)
    refls = [r for r in spec.projections[0]]
    expected = S.interaction_constant(300.0) * dia * (v0 + sum(r.potential_v for r in refls))
    assert expected > 1.0  # radians: far outside the weak-phase regime
    got = np.angle(spec.wave[256, 256])
    assert abs(np.angle(np.exp(1j * (got - expected)))) < 0.02
    # So with no aberration, no envelope and no absorption the particle is invisible (|psi|^2 = 1
    # everywhere; the weak-phase 1 + i sigma V would give 1 + (sigma V)^2, up to 3x brighter).
    img = S.simulate_particle(
        maghemite, diameter_nm=dia, pixel_size_nm=p, shape=(n, n), defocus_nm=0.0, cs_mm=0.0,
        focal_spread_nm=0.0, convergence_mrad=0.0, dose_e_per_A2=None, support_thickness_nm=0.0,
        absorption=0.0, slice_nm=None,
    ).image  # fmt: skip
    assert np.allclose(img, 1.0, atol=1e-5)


def test_multislice_reduces_to_the_phase_grating_for_a_thin_particle(maghemite):
    # 2 nm particle, low-order reflections: propagation inside it is negligible, so 0.5 nm slices
    # (propagated back to the mid-plane) and one phase grating give the same image (2.5 % rms of
    # the contrast); in a 20 nm particle the dynamical propagation changes the image (55 %).
    def rel_rms(dia):
        kw = dict(
            diameter_nm=dia, pixel_size_nm=0.03, shape=(256, 256) if dia < 10 else (768, 768),
            defocus_nm=-8.0, cs_mm=0.01, dose_e_per_A2=None, support_thickness_nm=0.0, seed=4,
            d_min_nm=0.2,
        )  # fmt: skip
        a = S.simulate_particle(maghemite, slice_nm=0.5, **kw)
        b = S.simulate_particle(maghemite, slice_nm=None, **kw)
        m = b.truth.mask
        return float(np.sqrt(np.mean((a.image - b.image)[m] ** 2)) / np.std(b.image[m]))

    assert rel_rms(2.0) < 0.05
    assert rel_rms(20.0) > 0.3


def test_underfocus_renders_a_small_positive_potential_dark(maghemite):
    # End-to-end sign check: an atom-sized particle (0.6 nm, a weak positive phase bump) without
    # lattice, imaged at Scherzer underfocus through an aperture at the point resolution, is
    # darker than the vacuum; at the opposite (over)focus it is brighter.
    kw = dict(
        diameter_nm=0.6, pixel_size_nm=0.02, shape=(128, 128), dose_e_per_A2=None,
        support_thickness_nm=0.0, lattice_potential_v=0.0, absorption=0.0,
        focal_spread_nm=0.0, convergence_mrad=0.0, objective_aperture_nm_inv=4.5,
    )  # fmt: skip
    df_s = S.scherzer_defocus_nm(cs_mm=1.2)
    under = S.simulate_particle(maghemite, defocus_nm=df_s, **kw).image
    over = S.simulate_particle(maghemite, defocus_nm=-df_s, **kw).image
    assert under[62:66, 62:66].mean() / under[:20, :20].mean() < 0.97
    assert over[62:66, 62:66].mean() / over[:20, :20].mean() > 1.03


# ------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("rotation_deg", [0.0, 17.0])
def test_fft_spots_sit_exactly_at_the_truth_g_vectors(maghemite, rotation_deg):
    p, n = 0.025, 256
    sim = S.simulate_particle(
        maghemite, diameter_nm=5.5, rotation_deg=rotation_deg, pixel_size_nm=p, shape=(n, n),
        defocus_nm=-20.0, cs_mm=0.02, dose_e_per_A2=None, support_thickness_nm=0.0, seed=3,
    )  # fmt: skip
    # A small Cs keeps the delocalization (grad chi / 2 pi < 0.3 nm) well below the particle size,
    # so the CTF is smooth across each spot and cannot pull its maximum.
    refl = sim.truth.reflections
    assert {tuple(abs(v) for v in r.hkl) for r in refl} >= {
        (1, 1, 1),
        (2, 2, 0),
        (1, 1, 3),
        (0, 0, 4),
    }
    checked = 0
    errs: list[float] = []
    for r in refl:
        gy, gx = r.g_nm_inv
        assert math.hypot(gy, gx) == pytest.approx(1.0 / r.d_nm, rel=1e-9)
        if abs(r.transfer) < 0.3 or r.potential_v < 1.0:
            continue  # a weak spot on the tails of the particle's disc cannot be located to 0.5 px
        k_pred = (gy * n * p, gx * n * p)
        ky, kx = _spot_offset(sim.image, k_pred)
        assert abs(ky - k_pred[0]) < 0.5 and abs(kx - k_pred[1]) < 0.5, (r.hkl, (ky, kx), k_pred)
        errs.append(math.hypot(ky - k_pred[0], kx - k_pred[1]))
        checked += 1
    assert checked >= 8
    assert float(np.median(errs)) < 0.25
    # Angles between the truth g vectors are the crystal's interplanar angles.
    a, b = refl[0], refl[-1]
    ang = math.degrees(
        math.acos(
            np.dot(a.g_nm_inv, b.g_nm_inv)
            / (np.linalg.norm(a.g_nm_inv) * np.linalg.norm(b.g_nm_inv))
        )
    )
    assert ang == pytest.approx(maghemite.cell.angle_deg(a.hkl, b.hkl), abs=1e-6)


def test_in_plane_rotation_turns_every_g_counter_clockwise_on_screen(maghemite):
    r0 = S.zone_projection(maghemite, zone_axis=(1, 1, 0), rotation_deg=0.0)
    r1 = S.zone_projection(maghemite, zone_axis=(1, 1, 0), rotation_deg=30.0)
    by_hkl = {r.hkl: r for r in r1}
    for r in r0:
        a0 = math.degrees(math.atan2(-r.g_nm_inv[0], r.g_nm_inv[1]))
        a1 = math.degrees(math.atan2(-by_hkl[r.hkl].g_nm_inv[0], by_hkl[r.hkl].g_nm_inv[1]))
        assert (a1 - a0) % 360 == pytest.approx(30.0, abs=1e-9)


def test_non_cubic_zone_projection(hematite):
    # Hematite [001]: only {110} (0.2518 nm) and {300} (0.1454 nm) survive R-3c, 60 deg apart.
    refl = S.zone_projection(hematite, zone_axis=(0, 0, 1), d_min_nm=0.13)
    d = sorted({round(r.d_nm, 4) for r in refl})
    assert d == [0.1454, 0.2518]
    first = [r for r in refl if round(r.d_nm, 4) == 0.2518]
    assert len(first) == 6
    angles = sorted(
        {round(math.degrees(math.atan2(-r.g_nm_inv[0], r.g_nm_inv[1])) % 180, 6) for r in first}
    )
    assert np.allclose(np.diff(angles), 60.0, atol=1e-6)
    # Smooth model: V_g falls with |g|, the lowest order carries lattice_potential_v.
    v110 = first[0].potential_v
    v300 = next(r.potential_v for r in refl if round(r.d_nm, 4) == 0.1454)
    assert v110 > v300 > 0


def test_card_amplitudes_follow_the_powder_intensities(maghemite):
    refl = {tuple(abs(v) for v in r.hkl): r.potential_v for r in S.zone_projection(maghemite)}
    # The card's strongest line (311, I = 100) carries lattice_potential_v.
    assert refl[(1, 1, 3)] == pytest.approx(S.DEFAULT_LATTICE_POTENTIAL_V)

    # |F| ~ sqrt(I / (m Lp)): 220 (I 35, m 12) and 400 (I 24, m 6), Cu K-alpha1.
    def lp(d):
        th = math.asin(0.15406 / (2 * d))
        return (1 + math.cos(2 * th) ** 2) / (math.sin(th) ** 2 * math.cos(th))

    d = lambda h: float(maghemite.cell.d_spacing_nm(h))  # noqa: E731
    f311 = math.sqrt(100 / (24 * lp(d((3, 1, 1)))))
    assert refl[(2, 2, 0)] / refl[(1, 1, 3)] == pytest.approx(
        math.sqrt(35 / (12 * lp(d((2, 2, 0))))) / f311
    )
    assert refl[(0, 0, 4)] / refl[(1, 1, 3)] == pytest.approx(
        math.sqrt(24 / (6 * lp(d((4, 0, 0))))) / f311
    )
    sq = {
        tuple(abs(v) for v in r.hkl): r.potential_v
        for r in S.zone_projection(maghemite, intensity_model="sqrt")
    }
    assert sq[(2, 2, 0)] / sq[(1, 1, 3)] == pytest.approx(math.sqrt(0.35))


# ------------------------------------------------------------------------------- contrast


def test_reflection_contrast_against_defocus_follows_the_ctf(maghemite):
    # A weak, thin crystal (weak-phase regime): each spot's magnitude ~ |sin chi(g)| E(g).
    p, n = 0.025, 256
    defoci = np.arange(-90.0, 41.0, 10.0)
    kw = dict(focal_spread_nm=3.0, convergence_mrad=0.3, cs_mm=1.2)
    series = S.simulate_series(
        maghemite, defoci, diameter_nm=5.0, pixel_size_nm=p, shape=(n, n), dose_e_per_A2=None,
        support_thickness_nm=0.0, mean_inner_potential_v=0.0, lattice_potential_v=0.2, **kw,
    )  # fmt: skip
    for fam in [(2, 2, 0), (1, 1, 3), (0, 0, 4)]:
        r = next(r for r in series[0].truth.reflections if tuple(abs(v) for v in r.hkl) == fam)
        k = 1.0 / r.d_nm
        meas = np.array([abs(_dft_at(s.image, r.g_nm_inv, p)) for s in series])
        pred = np.abs([float(S.ctf(k, defocus_nm=df, **kw)) for df in defoci])
        corr = np.corrcoef(meas, pred)[0, 1]
        assert corr > 0.9, (fam, corr)
        # The truth's transfer is the same CTF value (sign included).
        assert [
            s.truth.reflections[series[0].truth.reflections.index(r)].transfer for s in series
        ] == (pytest.approx([float(S.ctf(k, defocus_nm=df, **kw)) for df in defoci]))


def test_lattice_visibility_weights_the_ctf_by_the_amplitudes(maghemite):
    dfs = np.linspace(-60, 60, 25)
    vis = S.lattice_visibility(maghemite, dfs, zone_axis=(1, 1, 0))
    assert vis.shape == dfs.shape
    assert np.all((vis >= 0) & (vis <= 1))
    assert vis.max() - vis.min() > 0.1  # it does vary with defocus
    refl = S.zone_projection(maghemite, zone_axis=(1, 1, 0))
    k = np.array([1 / r.d_nm for r in refl])
    w = np.array([r.potential_v for r in refl])
    manual = (
        np.sum(w * np.abs(S.ctf(k, defocus_nm=-16.0, focal_spread_nm=3.0, convergence_mrad=0.2)))
        / w.sum()
    )
    assert S.lattice_visibility(maghemite, -16.0) == pytest.approx(manual)
    # A coarse pixel drops reflections beyond Nyquist.
    assert S.lattice_visibility(maghemite, -16.0, pixel_size_nm=0.1) != pytest.approx(manual)


# ------------------------------------------------------------------------- truth and noise


def test_seeded_reproducibility_and_series_share_the_specimen(maghemite):
    kw = dict(diameter_nm=4.0, pixel_size_nm=0.03, shape=(128, 128), dose_e_per_A2=500.0)
    a = S.simulate_particle(maghemite, seed=7, defocus_nm=-10.0, **kw)
    b = S.simulate_particle(maghemite, seed=7, defocus_nm=-10.0, **kw)
    c = S.simulate_particle(maghemite, seed=8, defocus_nm=-10.0, **kw)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    series = S.simulate_series(maghemite, [-10.0, -10.0, 5.0], seed=7, **kw)
    assert np.array_equal(series[0].image, a.image)
    # Same optics, same specimen, independent noise.
    assert not np.array_equal(series[0].image, series[1].image)
    # Noise-free: series images equal single simulations of the same specimen at each defocus.
    nf = dict(kw, dose_e_per_A2=None)
    s_nf = S.simulate_series(maghemite, [-10.0, 5.0], seed=7, **nf)
    one = S.simulate_particle(maghemite, seed=7, defocus_nm=5.0, **nf)
    assert np.array_equal(s_nf[1].image, one.image)
    assert [s.defocus_nm for s in series] == [-10.0, -10.0, 5.0]
    assert series[2].truth.params["defocus_nm"] == 5.0


@pytest.mark.parametrize("dose", [200.0, 3000.0])
def test_dose_gives_the_mean_counts(maghemite, dose):
    p = 0.03
    sim = S.simulate_particle(
        maghemite, diameter_nm=3.0, pixel_size_nm=p, shape=(256, 256), dose_e_per_A2=dose,
        absorption=0.0, support_thickness_nm=0.0, seed=1,
    )  # fmt: skip
    expected = dose * (10 * p) ** 2  # e/A^2 * A^2/px
    # Electrons are conserved (no absorption, no aperture): mean = dose per pixel.
    assert sim.image.mean() == pytest.approx(expected, rel=0.01)
    assert np.all(sim.image == np.round(sim.image))  # Poisson counts
    # Vacuum corner: variance = mean (shot noise).
    corner = sim.image[:40, :40]
    assert corner.mean() == pytest.approx(expected, rel=0.05)
    assert corner.var() == pytest.approx(corner.mean(), rel=0.15)


def test_absorption_darkens_the_particle(maghemite):
    sim = S.simulate_particle(
        maghemite, diameter_nm=5.0, pixel_size_nm=0.03, shape=(192, 192), dose_e_per_A2=None,
        absorption=0.1, support_thickness_nm=0.0,
    )  # fmt: skip
    assert sim.image.mean() < 1.0
    assert sim.image[sim.truth.mask].mean() < sim.image[~sim.truth.mask].mean()


def test_mask_matches_the_particle_diameter(maghemite):
    p, dia = 0.03, 6.0
    sim = S.simulate_particle(
        maghemite, diameter_nm=dia, pixel_size_nm=p, shape=(256, 256), center_px=(100.0, 140.0),
        dose_e_per_A2=None,
    )  # fmt: skip
    mask = sim.truth.mask
    assert mask.sum() == pytest.approx(math.pi * (dia / 2 / p) ** 2, rel=0.02)
    yy, xx = np.nonzero(mask)
    assert yy.mean() == pytest.approx(100.0, abs=0.2)
    assert xx.mean() == pytest.approx(140.0, abs=0.2)
    (part,) = sim.truth.particles
    assert part.radius_px == pytest.approx(dia / 2 / p, abs=1.0)
    assert part.max_thickness_nm == pytest.approx(dia, rel=0.01)
    assert part.center_px == (100.0, 140.0)


def test_faceted_particle_lies_within_its_bounds(maghemite):
    p, dia = 0.03, 6.0
    sim = S.simulate_particle(
        maghemite, diameter_nm=dia, pixel_size_nm=p, shape=(256, 256), dose_e_per_A2=None,
        particle_shape="faceted",
    )  # fmt: skip
    (part,) = sim.truth.particles
    area = sim.truth.mask.sum()
    # Between the inscribed and the circumscribed circles; not a circle.
    assert math.pi * (dia / 2 / p) ** 2 * 0.9 < area < math.pi * (1.5 * dia / 2 / p) ** 2
    assert part.radius_px > dia / 2 / p


def test_visible_reflections_respect_nyquist_and_the_information_limit(maghemite):
    p = 0.03
    sim = S.simulate_particle(
        maghemite, pixel_size_nm=p, shape=(128, 128), diameter_nm=3.0, focal_spread_nm=6.0
    )
    k_info = S.information_limit_nm_inv(focal_spread_nm=6.0)
    assert k_info == pytest.approx(math.sqrt(2 / (math.pi * S.wavelength_nm(300) * 6.0)))
    ks = [math.hypot(*r.g_nm_inv) for r in sim.truth.reflections]
    assert ks and max(ks) <= k_info
    assert all(max(abs(v) for v in r.g_nm_inv) < 0.5 / p for r in sim.truth.reflections)
    # Both Friedel mates are listed.
    gs = {(round(r.g_nm_inv[0], 9), round(r.g_nm_inv[1], 9)) for r in sim.truth.reflections}
    assert all((-a + 0.0, -b + 0.0) in gs or (-a, -b) in gs for a, b in gs)
    # A finer focal spread admits more reflections.
    sim2 = S.simulate_particle(
        maghemite, pixel_size_nm=0.02, shape=(128, 128), diameter_nm=2.0, focal_spread_nm=2.0
    )
    assert len(sim2.truth.reflections) > len(sim.truth.reflections)
    json.dumps(sim.truth.to_dict())  # serializable


def test_invalid_parameters_raise_clear_errors(maghemite):
    with pytest.raises(AnalysisParameterError, match="pixel size"):
        S.simulate_particle(maghemite, pixel_size_nm=0.0, shape=(64, 64))
    with pytest.raises(AnalysisParameterError, match="zone axis"):
        S.simulate_particle(maghemite, zone_axis=(0, 0, 0), shape=(64, 64))
    with pytest.raises(AnalysisParameterError, match="dose"):
        S.simulate_particle(maghemite, dose_e_per_A2=-5.0, shape=(64, 64), diameter_nm=1.0)
    with pytest.raises(AnalysisParameterError, match="shape"):
        S.simulate_particle(maghemite, particle_shape="cube", shape=(64, 64), diameter_nm=1.0)
    with pytest.raises(AnalysisParameterError, match="outside"):
        S.simulate_particle(maghemite, shape=(64, 64), diameter_nm=1.0, center_px=(500.0, 500.0))


def test_tiff_round_trip_with_calibration_and_defocus(maghemite, tmp_path):
    io = pytest.importorskip("hrtem_core.io")
    sim = S.simulate_particle(
        maghemite, diameter_nm=3.0, pixel_size_nm=0.03, shape=(96, 96), defocus_nm=-16.0
    )
    path = S.write_tiff(tmp_path / f"maghemite_110_{S.defocus_tag(sim.defocus_nm)}.tif", sim)
    mg = io.load_image(path)
    assert mg.pixel_size_nm == pytest.approx((0.03, 0.03), rel=1e-6)
    assert mg.defocus_nm == -16.0
    assert np.array_equal(mg.data, np.rint(sim.image).astype(np.float32))
    for df in (-18.0, -2.0, 0.0, 6.0, -2.5):
        assert io.defocus_from_name(f"maghemite_110_{S.defocus_tag(df)}.tif") == df


def test_uint8_tiff_stores_exact_counts_and_refuses_overflow(maghemite, tmp_path):
    io = pytest.importorskip("hrtem_core.io")
    kw = dict(diameter_nm=3.0, pixel_size_nm=0.03, shape=(96, 96), defocus_nm=+6.0)
    low = S.simulate_particle(maghemite, dose_e_per_A2=150.0, **kw)  # ~13.5 counts/px
    path = S.write_tiff(tmp_path / "low_df+6nm.tif", low, dtype="uint8")
    mg = io.load_image(path)
    assert np.array_equal(mg.data, low.image)
    assert mg.pixel_size_nm == pytest.approx((0.03, 0.03), rel=1e-6)
    assert mg.defocus_nm == 6.0
    high = S.simulate_particle(maghemite, dose_e_per_A2=5000.0, **kw)  # ~450 counts/px
    with pytest.raises(AnalysisParameterError, match="uint8"):
        S.write_tiff(tmp_path / "high.tif", high, dtype="uint8")


def test_predicted_visibility_has_the_shape_of_the_ctf(maghemite):
    dfs = np.arange(-18.0, 18.5, 0.5)
    # Cs = 0, no envelopes: chi is odd in df, so |sin chi| and the visibility are even, and
    # exactly zero at Gaussian focus (a pure phase object shows no lattice).
    flat = dict(cs_mm=0.0, focal_spread_nm=0.0, convergence_mrad=0.0)
    vis0 = S.lattice_visibility(maghemite, dfs, structure=S.MAGHEMITE_SPINEL, **flat)
    assert np.allclose(vis0, vis0[::-1], atol=1e-12)
    assert S.lattice_visibility(maghemite, 0.0, **flat) == pytest.approx(0.0, abs=1e-12)
    # The bundled series' optics (Cs 10 um, 2.5 nm focal spread, 0.1 mrad): one deep minimum
    # within 3 nm of Gaussian focus, where the strong low-order fringes vanish, and visibility
    # at least 2.5 times higher at |df| >= 14 nm.
    bundled = dict(cs_mm=0.01, focal_spread_nm=2.5, convergence_mrad=0.1)
    vis = S.lattice_visibility(
        maghemite, dfs, structure=S.MAGHEMITE_SPINEL, pixel_size_nm=0.03, **bundled
    )
    i_min = int(np.argmin(vis))
    assert abs(dfs[i_min]) <= 3.0
    assert vis[np.abs(dfs) >= 14].min() > 2.5 * vis[i_min]
    # With an uncorrected lens (Cs 1.2 mm) the low-order reflections are already transferred at
    # Gaussian focus: no deep minimum there.
    vis_cs = S.lattice_visibility(
        maghemite, dfs, structure=S.MAGHEMITE_SPINEL, pixel_size_nm=0.03, cs_mm=1.2,
        focal_spread_nm=2.5, convergence_mrad=0.1,
    )  # fmt: skip
    assert vis_cs[dfs == 0.0][0] > 2.0 * vis[dfs == 0.0][0]


# ---------------------------------------------------------------------------- bundled data


def _series_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_example_series", REPO / "scripts" / "make_example_series.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundled_focal_series_reads_back():
    io = pytest.importorskip("hrtem_core.io")
    folder = EXAMPLES / "focal_series"
    truth = json.loads((folder / "truth.json").read_text())
    files = sorted(folder.glob("*.tif"))
    assert 9 <= len(files) <= 19
    assert {f.name for f in files} == set(truth["files"])
    assert all(re.fullmatch(r"maghemite_110_df[+-]\d+nm\.tif", f.name) for f in files)
    total = sum(f.stat().st_size for f in files) + (folder / "truth.json").stat().st_size
    assert total < 8e6  # "a few MB"
    n_refl = len(truth["reflections"])
    assert n_refl > 100
    assert {tuple(p["zone_axis"]) for p in truth["particles"]} >= {(1, 1, 0)}
    defoci = []
    for f in files:
        entry = truth["files"][f.name]
        mg = io.load_image(f)
        assert mg.data.shape == (1024, 1024)
        assert mg.pixel_size_nm == pytest.approx((entry["pixel_size_nm"],) * 2, rel=1e-6)
        assert mg.defocus_nm == pytest.approx(entry["defocus_nm"])
        assert np.all(mg.data == np.round(mg.data)) and mg.data.min() >= 0  # electron counts
        defoci.append(mg.defocus_nm)
        assert len(entry["transfer"]) == n_refl
        assert sum(t is not None for t in entry["transfer"]) > 100
    assert min(defoci) == -18.0 and max(defoci) == 18.0
    assert truth["card_id"] == "39-1346"
    assert truth["params"]["voltage_kv"] == 300.0
    example = io.load_image(EXAMPLES / "maghemite_particle.tif")
    assert example.data.ndim == 2 and example.pixel_size_nm[0] > 0


def test_bundled_lattice_sits_at_the_truth_g_vectors():
    # On the bundled file itself: over the largest particle, the Fourier amplitude at each of its
    # strong truth g vectors towers over the amplitude at the same |g| turned by 10 degrees.
    io = pytest.importorskip("hrtem_core.io")
    folder = EXAMPLES / "focal_series"
    truth = json.loads((folder / "truth.json").read_text())
    name = "maghemite_110_df-18nm.tif"
    img = io.load_image(folder / name).data.astype(float)
    p = truth["files"][name]["pixel_size_nm"]
    part = truth["particles"][0]
    (cy, cx), r = part["center_px"], 0.8 * part["radius_px"]
    y0, x0 = int(cy - r), int(cx - r)
    crop = img[y0 : int(cy + r), x0 : int(cx + r)]
    transfer = truth["files"][name]["transfer"]
    ratios = []
    for refl, t in zip(truth["reflections"], transfer, strict=True):
        if refl["particle"] != 0 or t is None or abs(t) < 0.5 or refl["potential_v"] < 2.0:
            continue
        g = np.array(refl["g_nm_inv"])
        c, s_ = math.cos(math.radians(10)), math.sin(math.radians(10))
        g_off = np.array([c * g[0] - s_ * g[1], s_ * g[0] + c * g[1]])
        ratios.append(abs(_dft_at(crop, tuple(g), p)) / abs(_dft_at(crop, tuple(g_off), p)))
    assert len(ratios) >= 6
    assert float(np.median(ratios)) > 5.0


def test_script_reproduces_the_bundled_series(tmp_path):
    # The bundled files are exactly what scripts/make_example_series.py writes (seeded).
    io = pytest.importorskip("hrtem_core.io")
    mod = _series_script()
    written = mod.make_series(tmp_path)
    assert [f.name for f in written] == [
        f"maghemite_110_{S.defocus_tag(df)}.tif" for df in mod.SERIES_DEFOCI_NM
    ]
    for f in (written[0], written[4]):
        new = io.load_image(f).data
        old = io.load_image(EXAMPLES / "focal_series" / f.name).data
        assert np.array_equal(new, old), f.name
    a = json.loads((tmp_path / "focal_series" / "truth.json").read_text())
    b = json.loads((EXAMPLES / "focal_series" / "truth.json").read_text())
    assert a == b


def test_vacancy_ordered_maghemite_model() -> None:
    """The built-in maghemite (card 39-1346, P4_132) is the spinel with its octahedral vacancies
    ordered on 4b: 21 1/3 Fe per 32 O; on the spinel's own reflections it equals the disordered
    average (same |F|); it adds the superstructure reflections the card lists, weak, with |F|
    relative to (311) of 0.19 (110), 0.21 (210), 0.14 (211), 0.12 (310), and (221) = 0."""
    ordered, spinel = S.MAGHEMITE_ORDERED, S.MAGHEMITE_SPINEL
    assert S.known_structure("39-1346") is ordered
    atoms = {el: 0.0 for el in ("Fe", "O")}
    n_pos = 0
    for el, pos, occ, _b in ordered.atoms():
        atoms[el] += float(np.sum(occ))
        n_pos += len(pos)
    assert n_pos == 8 + 4 + 12 + 32
    assert atoms["Fe"] == pytest.approx(64.0 / 3.0) and atoms["O"] == pytest.approx(32.0)
    cell = UnitCell.from_angstrom(8.3515, 8.3515, 8.3515)
    fundamental = [
        (1, 1, 1),
        (2, 2, 0),
        (3, 1, 1),
        (2, 2, 2),
        (4, 0, 0),
        (4, 2, 2),
        (5, 1, 1),
        (4, 4, 0),
    ]
    f_o = np.abs(ordered.structure_factor_nm(np.array(fundamental, float), cell))
    f_s = np.abs(spinel.structure_factor_nm(np.array(fundamental, float), cell))
    np.testing.assert_allclose(f_o, f_s, rtol=1e-9)
    sup = [(1, 1, 0), (2, 1, 0), (2, 1, 1), (3, 1, 0), (2, 2, 1)]
    rel = np.abs(ordered.structure_factor_nm(np.array(sup, float), cell)) / f_o[2]
    np.testing.assert_allclose(rel, [0.185, 0.209, 0.139, 0.115, 0.0], atol=0.003)
    assert np.all(np.abs(spinel.structure_factor_nm(np.array(sup, float), cell)) < 1e-9)
    # The screw axis 4_1: h00 with h != 4n is extinct in the ordered model too.
    h00 = np.abs(
        ordered.structure_factor_nm(np.array([(1, 0, 0), (2, 0, 0), (3, 0, 0)], float), cell)
    )
    assert np.all(h00 < 1e-9)
