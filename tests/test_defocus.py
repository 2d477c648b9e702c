"""Known-answer tests of the Thon-ring defocus estimate (:mod:`hrtem_core.defocus`)."""

from __future__ import annotations

import numpy as np
import pytest

from hrtem_core import defocus as D
from hrtem_core.errors import AnalysisParameterError
from hrtem_core.simulate import simulate_particles, simulate_series


def _amorphous(df_nm: float, *, seed: int = 5, cs_mm: float = 1.2, voltage_kv: float = 300.0):
    """A weak-phase amorphous-carbon image made directly with the project's CTF (no particle)."""
    rng = np.random.default_rng(seed)
    n, p = 512, 0.04
    phi = rng.normal(size=(n, n))
    f = np.fft.fftfreq(n, d=p)
    k = np.hypot(f[:, None], f[None, :])
    spec = np.fft.fft2(phi) * np.exp(-0.5 * (k / 5.0) ** 2)
    img = 1.0 + 0.2 * np.real(
        np.fft.ifft2(2 * spec * D.ctf(k, defocus_nm=df_nm, voltage_kv=voltage_kv, cs_mm=cs_mm))
    )
    return img, p


@pytest.mark.parametrize("df_nm", [-55.0, 35.0])
def test_known_defocus_both_signs_from_ctf_image(df_nm: float) -> None:
    img, p = _amorphous(df_nm)
    est = D.estimate_defocus(img, p)
    assert abs(est.defocus_nm - df_nm) < 1.0
    assert np.sign(est.defocus_nm) == np.sign(df_nm)
    assert est.sign_margin > 0.05
    assert est.score > 0.5
    assert 0 < est.uncertainty_nm < 2.0
    assert est.source == "estimated"


def test_voltage_and_cs_come_from_metadata() -> None:
    img, p = _amorphous(-40.0, cs_mm=0.5, voltage_kv=200.0)
    est = D.estimate_defocus(img, p, metadata={"voltage_kv": 200.0, "cs_mm": 0.5})
    assert (est.voltage_kv, est.cs_mm) == (200.0, 0.5)
    assert abs(est.defocus_nm + 40.0) < 1.0
    assert D.optics_from_metadata({}) == (300.0, 1.2)
    assert D.optics_from_metadata({"voltage_kv": "bad"}, cs_mm=2.0) == (300.0, 2.0)


def test_simulated_series_follows_steps_and_sign() -> None:
    from hrtem_core.cards import load_cards

    mag = load_cards().phase("39-1346")
    dfs = [-60.0, -40.0, 30.0]
    sims = simulate_series(
        mag,
        dfs,
        diameter_nm=5.0,
        pixel_size_nm=0.04,
        shape=(512, 512),
        support_thickness_nm=3.0,
        seed=3,
    )
    est = np.array([D.estimate_defocus(s.image, s.pixel_size_nm).defocus_nm for s in sims])
    resid = est - np.asarray(dfs)
    # A constant offset is allowed (the support is not at the particle's mid-plane).
    assert np.std(resid) < 1.0
    assert abs(np.mean(resid)) < 5.0
    assert np.all(np.sign(est) == np.sign(dfs))


def test_crystalline_tiles_are_excluded() -> None:
    from hrtem_core.cards import load_cards
    from hrtem_core.simulate import Particle

    mag = load_cards().phase("39-1346")
    sim = simulate_particles(
        [Particle(mag, (1, 1, 0), 8.0, 0.0, (128.0, 128.0))],
        pixel_size_nm=0.04,
        shape=(512, 512),
        defocus_nm=-50.0,
        support_thickness_nm=3.0,
        seed=1,
    )[0]
    excl = np.zeros(sim.image.shape, dtype=bool)
    excl[:256, :256] = True
    spectra, used_all = D.tile_power_spectra(sim.image, tile_px=128, exclude=excl)
    assert not used_all
    assert len(spectra) == 7 * 7 - 4 * 4  # half-overlapping 128-px tiles not touching the corner
    _, used_all = D.tile_power_spectra(sim.image, tile_px=128, exclude=np.ones_like(excl))
    assert used_all
    est = D.estimate_defocus(sim.image, 0.04, exclude=excl)
    assert abs(est.defocus_nm + 50.0) < 6.0


def test_radial_median_ignores_a_lattice_spot() -> None:
    spec = np.ones((64, 64))
    spec[0, 10] = 1e6  # one bright spot on ring 10
    k, pw = D.radial_profile(spec, 0.1)
    assert pw[10] == 1.0
    assert k[10] == pytest.approx(10 / 6.4)


def test_compare_and_figures() -> None:
    img, p = _amorphous(-50.0)
    est = D.estimate_defocus(img, p)
    assert D.compare_defocus(None, est) is None
    assert D.compare_defocus(est.defocus_nm + 0.5 * est.uncertainty_nm, est) is None
    msg = D.compare_defocus(est.defocus_nm + 30.0, est)
    assert msg is not None and "disagree" in msg
    d = est.to_dict()
    assert d["defocus_estimate_nm"] == pytest.approx(est.defocus_nm, abs=0.01)
    assert len(D.ring_fit_figure(est).data) == 3
    assert len(D.fit_quality_figure(est).data) == 1


def test_bad_input() -> None:
    with pytest.raises(AnalysisParameterError):
        D.estimate_defocus(np.zeros((20, 20)), 0.04)
    with pytest.raises(AnalysisParameterError):
        D.estimate_defocus(np.zeros((128, 128)), -1.0)
    with pytest.raises(AnalysisParameterError):
        D.estimate_defocus(np.zeros((128, 128)), 0.04, defocus_range_nm=(10.0, -10.0))


def test_series_cli_estimates_a_missing_defocus(tmp_path) -> None:
    """A focal series with no defocus anywhere: every image gets the Thon-ring estimate."""
    import json

    import pandas as pd
    import tifffile

    from hrtem_core.cards import load_cards
    from hrtem_core.cli import main

    dfs = [-60.0, -35.0]
    sims = simulate_series(
        load_cards().phase("33-0664"),
        dfs,
        zone_axis=(0, 0, 1),
        diameter_nm=6.0,
        pixel_size_nm=0.04,
        shape=(512, 512),
        support_thickness_nm=3.0,
        seed=11,
    )
    paths = []
    for i, s in enumerate(sims):
        p = tmp_path / f"image_{'ab'[i]}.tif"
        tifffile.imwrite(p, s.image)
        paths.append(str(p))
    out = tmp_path / "series"
    opts = ["--pixel-size-nm", "0.04", "--window", "64", "--stride", "32"]
    code = main(
        ["series", *paths, *opts, "--detector", "classical", "--no-progress", "--out", str(out)]
    )
    assert code == 0
    prof = pd.read_csv(out / "profile.csv")
    got = prof.sort_values("file")["defocus_nm"].to_numpy()
    assert np.all(np.abs(got - np.asarray(dfs) + 3.0) < 3.0)  # support 3 nm below mid-plane
    assert abs((got[1] - got[0]) - 25.0) < 1.0
    for stem in ("image_a", "image_b"):
        summ = json.loads((out / stem / "summary.json").read_text(encoding="utf-8"))
        assert summ["defocus_source"] == "estimated"
        assert summ["defocus_estimate_reliable"] is True
        assert summ["defocus_estimate_uncertainty_nm"] > 0
        assert (out / stem / "particles.csv").is_file()
    assert (out / "particles_series.csv").is_file()


def test_pinned_estimate() -> None:
    """Known outputs of one seeded image (a refactoring of the estimate must not move them)."""
    img, p = _amorphous(-55.0)
    est = D.estimate_defocus(img, p)
    assert est.defocus_nm == pytest.approx(-55.027019799062586, rel=1e-6)
    assert est.uncertainty_nm == pytest.approx(0.3527338830273704, rel=1e-6)  # the floor
    assert est.score == pytest.approx(0.9478197734348452, rel=1e-6)
    assert est.sign_margin == pytest.approx(0.492728461905443, rel=1e-6)
    assert est.prominence == pytest.approx(22.754475029474293, rel=1e-6)
    assert est.n_tiles == 9 and est.warnings == ()
    # one jackknife group: no spread to measure, 10 x the floor
    one = D.estimate_defocus(img, p, n_groups=1, tile_px=128)
    assert one.defocus_nm == pytest.approx(-54.8250720143441, rel=1e-6)
    assert one.uncertainty_nm == pytest.approx(10 * est.uncertainty_nm, rel=1e-12)
    assert one.n_tiles == 49
