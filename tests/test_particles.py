"""Known-answer tests of the particle grouping (:mod:`hrtem_core.particles`).

Scenes from the project's multislice simulator (512 x 512 px at 0.04 nm/px, classical detector,
w = 64, s = 32) with 1, 2 and 5 particles of set sizes and phases, and a twinned particle made of
two lattice halves (:mod:`tests.lattice_images`) whose orientations differ by 35 degrees.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrtem_core import analysis
from hrtem_core.cards import load_cards
from hrtem_core.errors import AnalysisParameterError
from hrtem_core.io import Micrograph
from hrtem_core.particles import (
    PARTICLE_COLUMNS,
    STATUS_POLY,
    ParticleParams,
    corrected_radius_nm,
    delocalisation_nm,
    particle_series,
    particles_for_result,
    particles_summary,
)
from hrtem_core.simulate import Particle, simulate_particles

PX = 0.04
PARAMS = analysis.AnalysisParams(window_px=64, stride_px=32, detector="classical")


@pytest.fixture(scope="module")
def cards():
    return load_cards()


def _analyse(image, cards, defocus_nm=None, name="scene.tif"):
    m = Micrograph(
        data=np.asarray(image, dtype=np.float32),
        pixel_size_nm=(PX, PX),
        reader="simulated",
        metadata={},
        warnings=(),
        name=name,
        defocus_nm=defocus_nm,
    )
    res = analysis.analyze_image(m, params=PARAMS, cards=cards)
    return res, particles_for_result(res, image)


def _scene(cards, specs, *, seed, df=-50.0):
    parts = [Particle(cards.phase(c), z, d, rot, ctr) for c, z, d, rot, ctr in specs]
    sim = simulate_particles(
        parts,
        pixel_size_nm=PX,
        shape=(512, 512),
        defocus_nm=df,
        seed=seed,
        support_thickness_nm=3.0,
    )[0]
    res, pr = _analyse(sim.image, cards, defocus_nm=df)
    return sim, res, pr


def _match(table, truth):
    """For each true particle: (centre error nm, diameter ratio - 1) of the nearest particle."""
    out = []
    for p in truth:
        d = np.hypot(table.x_px - p.center_px[1], table.y_px - p.center_px[0]) * PX
        j = int(np.argmin(d))
        out.append((float(d.iloc[j]), table.equivalent_diameter_nm.iloc[j] / p.diameter_nm - 1, j))
    return out


def test_one_particle(cards) -> None:
    sim, _res, pr = _scene(cards, [("33-0664", (0, 0, 1), 8.0, 20.0, (256.0, 256.0))], seed=1)
    t = pr.table
    assert list(t.columns) == list(PARTICLE_COLUMNS)
    assert len(t) == 1
    ((err, size, _),) = _match(t, sim.truth.particles)
    assert err < 0.5
    assert abs(size) < 0.35
    assert t.n_windows.iloc[0] >= 10
    # The delocalisation at -50 nm is a few tenths of a nm and shrinks the raw size.
    assert 0.1 < t.delocalisation_nm.iloc[0] < 1.0
    assert t.equivalent_diameter_nm.iloc[0] < t.equivalent_diameter_raw_nm.iloc[0]
    # Window and pixel maps agree with the table.
    assert (pr.window_particle > 0).sum() == t.n_windows.iloc[0]
    assert set(np.unique(pr.labels)) == {0, 1}
    assert len(pr.outlines()[1]) >= 1


def test_two_particles_of_different_phases(cards) -> None:
    sim, _res, pr = _scene(
        cards,
        [
            ("19-0629", (1, 0, 0), 8.0, 20.0, (300.0, 150.0)),
            ("33-0664", (0, 0, 1), 6.0, 5.0, (150.0, 360.0)),
        ],
        seed=1,
    )
    t = pr.table
    assert len(t) == 2
    m = _match(t, sim.truth.particles)
    assert {j for _, _, j in m} == {0, 1}
    for err, size, _ in m:
        assert err < 1.0
        assert abs(size) < 0.35


def test_five_particles(cards) -> None:
    h, g = "33-0664", "19-0629"
    specs = [
        (h, (0, 0, 1), 5.0, 0.0, (100.0, 100.0)),
        (h, (0, 0, 1), 5.0, 30.0, (100.0, 400.0)),
        (g, (1, 0, 0), 5.0, 10.0, (256.0, 256.0)),
        (h, (0, 0, 1), 5.0, 15.0, (410.0, 110.0)),
        (g, (1, 0, 0), 5.0, 40.0, (410.0, 400.0)),
    ]
    sim, _res, pr = _scene(cards, specs, seed=4)
    t = pr.table
    assert len(t) == 5
    m = _match(t, sim.truth.particles)
    assert len({j for _, _, j in m}) == 5
    for err, size, _ in m:
        assert err < 1.0
        assert abs(size) < 0.35
    assert (t.status == "single-crystal").all()


def test_twinned_particle(cards) -> None:
    from tests.lattice_images import lattice_image

    mag = cards.phase("39-1346")
    n = 512
    yy, xx = np.mgrid[:n, :n]
    disc = (yy - 256) ** 2 + (xx - 256) ** 2 < 110**2
    hkls = [(1, -1, 1), (-1, 1, 1), (0, 0, 4)]
    a, _ = lattice_image(
        mag,
        (1, 1, 0),
        hkls,
        shape=(n, n),
        pixel_size_nm=(PX, PX),
        region=disc & (xx < 256),
        seed=1,
    )
    b, _ = lattice_image(
        mag,
        (1, 1, 0),
        hkls,
        shape=(n, n),
        pixel_size_nm=(PX, PX),
        region=disc & (xx >= 256),
        rotation_deg=35.0,
        seed=2,
    )
    res, pr = _analyse(a + b, cards)
    t = pr.table
    assert len(t) == 1
    assert t.n_grains.iloc[0] == 2
    assert t.status.iloc[0] == STATUS_POLY
    assert math.hypot(t.x_px.iloc[0] - 256, t.y_px.iloc[0] - 256) * PX < 0.5
    assert abs(t.equivalent_diameter_nm.iloc[0] / (220 * PX) - 1) < 0.2
    # The two grains are the two halves: left windows in one grain, right in the other.
    grains = pr.window_grain
    cols = res.windows["x_px"].to_numpy()
    left = set(grains[(grains > 0) & (cols < 230)])
    right = set(grains[(grains > 0) & (cols > 282)])
    assert len(left) == 1 and len(right) == 1 and left != right
    orients = [float(v) for v in t.grain_orientations_deg.iloc[0].split(";")]
    d = abs(orients[0] - orients[1]) % 180
    assert min(d, 180 - d) > 10


def test_halo_correction_formulas() -> None:
    # A disc of r = 3 nm swept by +-R = 0.5 nm: area pi r^2 + 4 r R.
    area = math.pi * 9 + 4 * 3 * 0.5
    assert corrected_radius_nm(area, 0.5) == pytest.approx(3.0)
    assert corrected_radius_nm(math.pi * 4, 0.0) == pytest.approx(2.0)
    # R = |lambda df g + Cs lambda^3 g^3|: at Scherzer-like defocus the two terms nearly cancel.
    lam = 0.0019687
    assert delocalisation_nm(4.0, defocus_nm=-50.0) == pytest.approx(
        abs(lam * -50 * 4 + 1.2e6 * lam**3 * 64), rel=1e-3
    )
    assert delocalisation_nm(4.0, defocus_nm=0.0, cs_mm=0.0) == 0.0


def test_series_and_summary(cards) -> None:
    sims = simulate_particles(
        [Particle(cards.phase("33-0664"), (0, 0, 1), 7.0, 20.0, (256.0, 256.0))],
        pixel_size_nm=PX,
        shape=(512, 512),
        defocus_nm=[-50.0, 0.0],
        seed=2,
        support_thickness_nm=3.0,
    )
    res, prs = [], []
    for i, s in enumerate(sims):
        r, p = _analyse(s.image, cards, defocus_nm=s.defocus_nm, name=f"s{i}.tif")
        res.append(r)
        prs.append(p)
    tab = particle_series(res, prs)
    assert list(tab.columns) == [
        "particle_id",
        "x_px",
        "y_px",
        "file",
        "defocus_nm",
        "n_windows",
        "crystallinity",
    ]
    assert set(tab.file) == {"s0.tif", "s1.tif"}
    assert len(tab) == 2 * tab.particle_id.nunique()
    # Independent check: windows whose centre lies on the pooled particle masks.
    pooled = (prs[0].labels > 0) | (prs[1].labels > 0)
    for j, r in enumerate(res):
        c = np.rint(r.grid.centers).astype(int)
        on = pooled[c[:, 0], c[:, 1]]
        cry = r.windows["crystalline"].to_numpy(dtype=bool)
        got = tab[tab.file == f"s{j}.tif"]
        assert got.n_windows.sum() == on.sum()
        want = cry[on].mean()
        if tab.particle_id.nunique() == 1:
            assert got.crystallinity.iloc[0] == pytest.approx(want, abs=1e-4)
        assert 0.0 < got.crystallinity.max() <= 1.0
    rows = particles_summary(prs[0])
    assert rows and rows[0]["particle_id"] == 1


def test_bad_parameters() -> None:
    with pytest.raises(AnalysisParameterError):
        ParticleParams(min_windows=0).validate()
    with pytest.raises(AnalysisParameterError):
        ParticleParams(edge_level=1.5).validate()


def test_dashboard_figures(cards) -> None:
    from hrtem_core.particles import image_particles
    from ui.particles_ui import outline_figure, size_histogram

    sim, res, _ = _scene(
        cards,
        [
            ("19-0629", (1, 0, 0), 8.0, 20.0, (300.0, 150.0)),
            ("33-0664", (0, 0, 1), 6.0, 5.0, (150.0, 360.0)),
        ],
        seed=1,
    )
    extras = image_particles(res, sim.image)
    assert extras.defocus_source == "given" and extras.defocus is not None
    assert extras.defocus.reliable and abs(extras.defocus.defocus_nm + 50.0) < 6.0
    summary = extras.summary()
    assert summary["n_particles"] == len(extras.table) == 2
    assert summary["defocus_estimate_uncertainty_nm"] > 0
    fig = outline_figure(extras, sim.image)
    outlines = [t for t in fig.data if t.type == "scatter" and t.mode == "lines"]
    assert len(outlines) >= 2
    # Every outline point lies on or next to its particle's mask.
    lab = extras.particles.labels
    for t in outlines:
        y = np.clip(np.rint(np.asarray(t.y)).astype(int), 0, 511)
        x = np.clip(np.rint(np.asarray(t.x)).astype(int), 0, 511)
        pid = int(t.name.split()[0][1:])
        near = ndi_dilate(lab == pid)
        assert near[y, x].all()
    hist = size_histogram(extras.table)
    assert sum(len(h.x) for h in hist.data) == 2
    assert hist.layout.barmode == "stack"


def ndi_dilate(mask: np.ndarray) -> np.ndarray:
    import scipy.ndimage as ndi

    return ndi.binary_dilation(mask, iterations=2)


def test_summary_and_export_files(cards, tmp_path) -> None:
    import json

    import pandas as pd

    from hrtem_core.export import export_analysis
    from hrtem_core.particles import image_particles

    sim, res, _ = _scene(cards, [("33-0664", (0, 0, 1), 8.0, 20.0, (256.0, 256.0))], seed=1)
    # Without a given defocus the reliable estimate is used for the halo and labelled.
    res0 = __import__("dataclasses").replace(res, defocus_nm=None)
    extras = image_particles(res0, sim.image)
    assert extras.defocus_source == "estimated"
    assert extras.defocus_nm == pytest.approx(extras.defocus.defocus_nm)
    relabelled = extras.with_estimated_defocus(res0)
    assert relabelled.summary["defocus_source"] == "estimated"
    assert relabelled.defocus_nm == pytest.approx(extras.defocus.defocus_nm)
    paths = export_analysis(res0, tmp_path, image=sim.image, figures=False, particles=extras)
    back = pd.read_csv(paths["particles_csv"], keep_default_na=False)
    assert list(back.columns) == list(PARTICLE_COLUMNS) and len(back) == 1
    summ = json.loads(paths["summary_json"].read_text(encoding="utf-8"))
    assert summ["n_particles"] == 1 and summ["particles"][0]["particle_id"] == 1
    assert summ["defocus_estimate_nm"] == pytest.approx(extras.defocus.defocus_nm, abs=0.01)
    book = pd.read_excel(paths["results_xlsx"], sheet_name=None)
    assert len(book["particles"]) == 1
    assert "defocus_estimate_nm" in set(book["summary"]["key"])


def test_bragg_amplitude_demodulation_matches_the_direct_filter() -> None:
    from hrtem_core.particles import bragg_amplitude

    rng = np.random.default_rng(0)
    n, p = 256, 0.04
    yy, xx = np.mgrid[:n, :n]
    env = np.exp(-((yy - 128) ** 2 + (xx - 100) ** 2) / (2 * 30**2))
    img = env * np.cos(2 * np.pi * (2.5 * xx * p + 1.0 * yy * p)) + 0.1 * rng.normal(size=(n, n))
    spec = np.fft.fft2(img - img.mean())
    got = bragg_amplitude(spec, [(1.0, 2.5)], (p, p), sigma_nm_inv=0.45)
    f = np.fft.fftfreq(n, d=p)
    gauss = np.exp(-((f[:, None] - 1.0) ** 2 + (f[None, :] - 2.5) ** 2) / (2 * 0.45**2))
    want = np.abs(np.fft.ifft2(spec * gauss))
    assert np.abs(got - want).max() < 0.01 * want.max()
    # The envelope peaks on the lattice patch, at half its amplitude (one of two cosine terms).
    assert np.unravel_index(got.argmax(), got.shape) == (128, 100)
    assert got.max() == pytest.approx(0.5, abs=0.05)
