"""Known-answer tests for the orchestration: windows table, crystallinity, areas, series, progress.

Images are synthetic lattices of a known phase in a known zone inside a known crystal region
(:mod:`tests.lattice_images`), and one particle from the project's simulator; the classical
detector keeps the tests fast (one U-Net test runs when ``models/unet_spots.pt`` exists).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hrtem_core import analysis
from hrtem_core.cards import load_cards
from hrtem_core.crystallography import zone_reflections
from hrtem_core.errors import AnalysisParameterError, CardDatabaseError
from hrtem_core.io import Micrograph
from hrtem_core.windows import window_grid
from tests.lattice_images import lattice_image
from tests.test_indexing import EXTRA_PHASES, add_phases

REPO = Path(__file__).resolve().parents[1]
W, S = 128, 64
PARAMS = analysis.AnalysisParams(window_px=W, stride_px=S, detector="classical")
RUTILE_HKL = [(1, 1, 0), (1, -1, 0), (2, 0, 0), (0, 2, 0)]


@pytest.fixture(scope="module")
def db():
    return add_phases(load_cards(), EXTRA_PHASES)


def micrograph(image, *, pixel=(0.02, 0.02), name="synthetic.tif", defocus=None) -> Micrograph:
    return Micrograph(
        data=np.asarray(image, dtype=np.float32),
        pixel_size_nm=pixel,
        reader="test",
        metadata={},
        warnings=(),
        name=name,
        defocus_nm=defocus,
    )


def window_coverage(region: np.ndarray, grid) -> np.ndarray:
    """Fraction of each window covered by the crystal region, shape (n_windows,)."""
    w = grid.window_px
    return np.array([region[r : r + w, c : c + w].mean() for r, c in grid.origins])


def region_iou(crystalline: np.ndarray, coverage: np.ndarray) -> float:
    """IoU of crystalline windows with the truth (windows more than half covered by crystal).

    Windows covered by at most half (0 < c <= 0.5) may or may not show spots: they are ignored.
    """
    truth = coverage > 0.5
    keep = truth | (coverage == 0)
    inter = (crystalline & truth & keep).sum()
    union = ((crystalline | truth) & keep).sum()
    return float(inter) / max(float(union), 1.0)


@pytest.fixture(scope="module")
def rutile_result(db):
    """Rutile [001], rotated 23 deg, crystal in the left half of a 512 x 512 image."""
    image, region = lattice_image(
        db.phase("21-1276"), (0, 0, 1), RUTILE_HKL, rotation_deg=23.0, noise=0.1, seed=1
    )
    res = analysis.analyze_image(micrograph(image, defocus=-8.0), params=PARAMS, cards=db)
    return res, region


def test_windows_table_columns_and_geometry(rutile_result) -> None:
    res, _ = rutile_result
    grid = window_grid((512, 512), window_px=W, stride_px=S)
    assert res.grid == grid
    assert list(res.windows.columns) == list(analysis.WINDOW_COLUMNS)
    assert len(res.windows) == grid.n_windows == 49
    assert (res.windows["row"] * grid.n_cols + res.windows["col"] == res.windows["window"]).all()
    np.testing.assert_allclose(res.windows[["y_px", "x_px"]].to_numpy(), grid.centers)
    assert len(res.pairs) == len(res.index) == 49
    assert (res.windows["n_pairs"].to_numpy() == [len(p) for p in res.pairs]).all()
    assert res.defocus_nm == -8.0 and res.summary["defocus_nm"] == -8.0


def test_rutile_phase_zone_and_region(db, rutile_result) -> None:
    res, region = rutile_result
    cov = window_coverage(region, res.grid)
    cryst = res.windows["crystalline"].to_numpy(dtype=bool)
    iou = region_iou(cryst, cov)
    assert iou >= 0.9, iou
    assert cryst[cov >= 0.99].all() and not cryst[cov == 0].any()
    w = res.windows[cryst]
    assert (w["phase_card"] == "21-1276").mean() >= 0.95
    assert (w["zone_axis"] == "0 0 1").mean() >= 0.95
    fams = {f for s in w["families"] for f in s.split(";")}
    assert {"1 1 0", "2 0 0"} <= fams
    # Measured spacings within 1 % of d(110) = 0.3248 nm and d(200) = 0.2297 nm.
    rut = db.phase("21-1276")
    d = [float(x) for s in w["spacings_nm"] for x in s.split(";")]
    refs = np.array([rut.cell.d_spacing_nm(h) for h in [(1, 1, 0), (2, 0, 0)]])
    assert all(np.min(np.abs(refs - x) / refs) < 0.01 for x in d)
    # Angles between planes: 45 and 90 degrees.
    angles = [float(x) for s in w["angles_deg"] for x in s.split(";")]
    assert all(min(abs(a - 45), abs(a - 90)) < 1.0 for a in angles)


def test_crystallinity_and_area_definitions(rutile_result) -> None:
    res, _ = rutile_result
    s = res.summary
    cryst = res.windows["crystalline"].to_numpy(dtype=bool)
    assert s["n_windows"] == 49 and s["n_crystalline"] == int(cryst.sum())
    assert s["crystallinity"] == pytest.approx(cryst.sum() / 49)
    # Area of the union of crystalline windows, painted pixel by pixel.
    paint = np.zeros((512, 512), dtype=bool)
    for (r, c), on in zip(res.grid.origins, cryst, strict=True):
        if on:
            paint[r : r + W, c : c + W] = True
    assert s["crystalline_area_fraction"] == pytest.approx(paint.mean())
    rut = next(p for p in s["phases"] if p["card_id"] == "21-1276")
    assert rut["n_windows"] == int((res.windows["phase_card"] == "21-1276").sum())
    assert rut["fraction"] == pytest.approx(rut["n_windows"] / 49)
    assert rut["area_fraction"] <= s["crystalline_area_fraction"] + 1e-12
    fam = res.families[(res.families["card_id"] == "21-1276") & (res.families["family"] == "1 1 0")]
    assert len(fam) == 1 and fam["d_ref_nm"].iloc[0] == pytest.approx(0.32480, abs=1e-4)
    assert sum(p["fraction"] for p in s["phases"]) <= s["crystallinity"] + 1e-12
    for key in ("file", "pixel_size_nm", "window_px", "stride_px", "elapsed_s", "version"):
        assert key in s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_footprint_area_fraction_matches_painting(seed) -> None:
    rng = np.random.default_rng(seed)
    for w, s, shape in [(64, 32, (300, 257)), (64, 48, (256, 256)), (50, 70, (260, 300))]:
        grid = window_grid(shape, window_px=w, stride_px=s)
        sel = rng.random(grid.n_windows) < 0.4
        paint = np.zeros(shape, dtype=bool)
        for (r, c), on in zip(grid.origins, sel, strict=True):
            if on:
                paint[r : r + w, c : c + w] = True
        assert analysis.footprint_area_fraction(grid, sel) == pytest.approx(paint.mean())
    assert analysis.footprint_area_fraction(grid, np.zeros(grid.n_windows, bool)) == 0.0


def test_non_square_pixels_are_passed_through(db) -> None:
    """Pixels 0.02 x 0.025 nm: spacings and angles come back right only if both axes are used."""
    p = (0.02, 0.025)
    image, region = lattice_image(
        db.phase("21-1276"), (0, 0, 1), RUTILE_HKL, rotation_deg=10.0, noise=0.1, seed=3,
        pixel_size_nm=p,
    )  # fmt: skip
    res = analysis.analyze_image(micrograph(image, pixel=p), params=PARAMS, cards=db)
    assert res.summary["pixel_size_nm"] == [0.02, 0.025]
    cov = window_coverage(region, res.grid)
    w = res.windows[cov >= 0.99]
    assert (w["phase_card"] == "21-1276").all()
    assert (w["zone_axis"] == "0 0 1").all()


def test_progress_is_called_per_block_of_window_rows(db, rutile_result) -> None:
    _res, _ = rutile_result
    calls: list[tuple[float, str]] = []
    image = np.zeros((512, 512), np.float32) + np.random.default_rng(0).normal(size=(512, 512))
    # 7 x 7 windows, at most 2 rows (15 windows) per block: 4 blocks as even as possible.
    params = dataclasses.replace(PARAMS, batch_size=15)
    analysis.analyze_image(
        micrograph(image), params=params, cards=db, progress=lambda f, m: calls.append((f, m))
    )
    fractions = [f for f, _ in calls]
    assert len(calls) == 1 + math.ceil(7 / 2)
    assert fractions == [0.0, 7 / 49, 21 / 49, 35 / 49, 1.0]
    assert all(isinstance(m, str) and m for _, m in calls)
    assert calls[1][1].endswith("7/49 windows")


def rutile_image(db) -> np.ndarray:
    image, _ = lattice_image(
        db.phase("21-1276"),
        (0, 0, 1),
        RUTILE_HKL,
        rotation_deg=23.0,
        noise=0.1,
        seed=1,
    )
    return image


@pytest.mark.parametrize("batch_size", [1, 15, 49, 10_000])
def test_row_blocks_give_the_windows_of_the_copying_path(db, rutile_result, batch_size) -> None:
    """Any block size: the same pairs and table; the copying path agrees to float32 rounding."""
    from hrtem_core.spots import detect_pairs, detect_pairs_in_image
    from hrtem_core.windows import extract_windows

    res, _ = rutile_result
    image = rutile_image(db)
    params = dataclasses.replace(PARAMS, batch_size=batch_size)
    again = analysis.analyze_image(micrograph(image, defocus=-8.0), params=params, cards=db)
    pd.testing.assert_frame_equal(again.windows, res.windows, check_exact=True)
    whole = detect_pairs_in_image(image, res.grid, pixel_size_nm=(0.02, 0.02), detector="classical")
    assert again.pairs == tuple(tuple(p) for p in whole)
    copied = detect_pairs(
        extract_windows(image, res.grid), pixel_size_nm=(0.02, 0.02), detector="classical"
    )
    assert [len(p) for p in again.pairs] == [len(p) for p in copied]
    for got, ref in zip(again.pairs, copied, strict=True):
        for a, b in zip(got, ref, strict=True):
            assert a.spacing_nm == pytest.approx(b.spacing_nm, rel=1e-5)
            assert a.angle_deg == pytest.approx(b.angle_deg, abs=1e-3)
    assert sum(map(len, again.pairs)) > 20  # the crystal half has pairs


def test_large_image_windows_are_never_materialised(db, monkeypatch) -> None:
    """8192 x 8192, w = 256, s = 64 (15 625 windows, 4 GB if copied out): blocks of 2 rows."""
    import tracemalloc

    from hrtem_core import spots

    data = np.zeros((8192, 8192), np.float32)  # pages untouched: the fake detector reads none
    seen: list[tuple] = []

    def fake_detect_pairs_in_image(image, grid, *, rows, **kwargs):
        seen.append((rows, np.may_share_memory(image, data), kwargs["workers"]))
        return [()] * ((rows[1] - rows[0]) * grid.n_cols)

    monkeypatch.setattr(spots, "detect_pairs_in_image", fake_detect_pairs_in_image)
    params = analysis.AnalysisParams(window_px=256, stride_px=64, detector="classical")
    calls: list[float] = []
    tracemalloc.start()
    try:
        res = analysis.analyze_image(
            micrograph(data), params=params, cards=db, progress=lambda f, m: calls.append(f)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.grid.n_windows == 125 * 125 and len(res.windows) == 125 * 125
    assert len(seen) == math.ceil(125 / 2) and len(calls) == 1 + len(seen)
    assert all(v and workers == -1 for _, v, workers in seen)  # the image itself, no copy
    blocks = [rows for rows, _, _ in seen]  # whole rows, at most 2, covering the grid in order
    assert blocks[0][0] == 0 and blocks[-1][1] == 125
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    assert {r1 - r0 for r0, r1 in blocks} == {1, 2}
    assert calls == sorted(calls) and calls[-1] == 1.0 and calls[1] == blocks[0][1] * 125 / 15625
    assert peak < 200e6  # all windows: 4.1e9 bytes


def test_detector_threads_are_passed_through(db, monkeypatch) -> None:
    from hrtem_core import spots

    real = spots.detect_pairs_in_image
    seen: list[int] = []

    def spy(image, grid, **kwargs):
        seen.append(kwargs["workers"])
        return real(image, grid, **kwargs)

    monkeypatch.setattr(spots, "detect_pairs_in_image", spy)
    image = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    analysis.analyze_image(micrograph(image), params=PARAMS, cards=db, detector_workers=1)
    analysis.analyze_image(micrograph(image), params=PARAMS, cards=db)
    assert seen == [1, -1]
    with pytest.raises(AnalysisParameterError, match="detector_workers"):
        analysis.analyze_image(micrograph(image), params=PARAMS, cards=db, detector_workers="2")


def test_noise_only_image_has_no_crystalline_window(db) -> None:
    image = np.random.default_rng(5).normal(10.0, 1.0, (384, 384)).astype(np.float32)
    res = analysis.analyze_image(micrograph(image), params=PARAMS, cards=db)
    assert res.summary["crystallinity"] == 0.0
    assert res.summary["crystalline_area_fraction"] == 0.0
    assert set(res.windows["status"]) == {"no-spots"}


def test_parameter_errors(db) -> None:
    small = micrograph(np.zeros((100, 100), np.float32))
    with pytest.raises(AnalysisParameterError, match="smaller than one"):
        analysis.analyze_image(small, params=PARAMS, cards=db)
    img = micrograph(np.zeros((256, 256), np.float32))
    bad = [
        (dict(spacing_tol=0.0), "spacing tolerance"),
        (dict(angle_tol_deg=float("nan")), "angle tolerance"),
        (dict(detector="magic"), "detector"),
        (dict(window_px=0), "window_px"),
        (dict(stride_px=-3), "stride"),
        (dict(phases=()), "phases"),
    ]
    for change, match in bad:
        with pytest.raises(AnalysisParameterError, match=match):
            analysis.analyze_image(img, params=dataclasses.replace(PARAMS, **change), cards=db)
    with pytest.raises(CardDatabaseError, match="99-9999"):
        analysis.analyze_image(
            img, params=dataclasses.replace(PARAMS, phases=("99-9999",)), cards=db
        )


def test_phases_restrict_the_search(db, rutile_result) -> None:
    res, _ = rutile_result
    only = analysis.analyze_image(
        micrograph(np.zeros((256, 256), np.float32)),
        params=dataclasses.replace(PARAMS, phases=("21-1276", "35-0734")),
        cards=db,
    )
    assert [p["card_id"] for p in only.summary["phases"]] == ["21-1276", "35-0734"]
    assert len(res.summary["phases"]) == len(db.enabled_phases())


def _series_images(db):
    """Three images whose crystal region grows: 1/4, 1/2 and 3/4 of the width."""
    out = []
    for frac, df in [(0.25, -16.0), (0.75, 4.0), (0.5, -4.0)]:
        region = np.zeros((384, 384), bool)
        region[:, : int(384 * frac)] = True
        image, _ = lattice_image(
            db.phase("21-1276"), (0, 0, 1), RUTILE_HKL, rotation_deg=5.0, noise=0.1,
            shape=(384, 384), region=region, seed=int(frac * 8),
        )  # fmt: skip
        out.append(micrograph(image, name=f"img_{df:+g}nm.tif", defocus=None))
    return out


def test_series_profile_and_best_focus(db) -> None:
    imgs = _series_images(db)
    calls: list[float] = []
    series = analysis.analyze_series(
        imgs, params=PARAMS, cards=db, progress=lambda f, m: calls.append(f)
    )  # defocus from the file names
    prof = series.profile
    assert list(prof["defocus_nm"]) == [-16.0, -4.0, 4.0]
    assert list(prof["file"]) == ["img_-16nm.tif", "img_-4nm.tif", "img_+4nm.tif"]
    by_name = dict(zip(prof["file"], prof["crystallinity"], strict=True))
    assert by_name["img_-16nm.tif"] < by_name["img_-4nm.tif"] < by_name["img_+4nm.tif"]
    assert series.best_focus_nm == 4.0
    assert "fraction_21-1276" in prof.columns
    np.testing.assert_allclose(prof["fraction_21-1276"], prof["crystallinity"], atol=0.03)
    assert [r.defocus_nm for r in series.results] == [-16.0, -4.0, 4.0]
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0)
    # The batch path (tables -> profile) gives the same numbers.
    files = pd.DataFrame(
        {
            "file": [r.name for r in series.results],
            "defocus_nm": [r.defocus_nm for r in series.results],
            "crystalline_area_fraction": [
                r.summary["crystalline_area_fraction"] for r in series.results
            ],
        }
    )
    windows = pd.concat([r.windows.assign(file=r.name) for r in series.results])
    again = analysis.series_profile(files, windows, phases=list(series.phases))
    pd.testing.assert_frame_equal(again, prof)
    # Two worker processes: the same profile and windows, image by image. Each process runs
    # the detector on its share of the cores (the spy is inherited by the forked workers).
    import os

    from hrtem_core import spots

    share = max(1, len(os.sched_getaffinity(0)) // 2)
    real = spots.detect_pairs_in_image

    def spy(image, grid, **kwargs):
        if kwargs.get("workers") != share:
            raise AssertionError(f"detector workers {kwargs.get('workers')}, expected {share}")
        return real(image, grid, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spots, "detect_pairs_in_image", spy)
        par = analysis.analyze_series(imgs, params=PARAMS, cards=db, workers=2)
    pd.testing.assert_frame_equal(par.profile, prof)
    for a, b in zip(par.results, series.results, strict=True):
        pd.testing.assert_frame_equal(a.windows, b.windows)
    with pytest.raises(AnalysisParameterError, match="workers"):
        analysis.analyze_series(imgs, params=PARAMS, cards=db, workers=0)


def test_series_defocus_rules(db) -> None:
    imgs = _series_images(db)
    explicit = analysis.analyze_series(imgs, defocus_nm=[1.0, 2.0, 3.0], params=PARAMS, cards=db)
    assert list(explicit.profile["defocus_nm"]) == [1.0, 2.0, 3.0]
    with pytest.raises(AnalysisParameterError, match="one per image"):
        analysis.analyze_series(imgs, defocus_nm=[1.0], params=PARAMS, cards=db)
    unknown = dataclasses.replace(imgs[0], name="nodefocus.tif")
    with pytest.raises(AnalysisParameterError, match=r"nodefocus\.tif.*defocus is unknown"):
        analysis.analyze_series([unknown], params=PARAMS, cards=db)


def test_best_focus_ties() -> None:
    prof = pd.DataFrame(
        {
            "file": list("abcd"),
            "defocus_nm": [-10.0, -4.0, 4.0, 8.0],
            "crystallinity": [0.5, 0.8, 0.8, 0.2],
            "crystalline_area_fraction": [0.5, 0.7, 0.7, 0.2],
        }
    )
    assert analysis.best_focus_nm(prof) == -4.0  # tie: the smaller |defocus| ... equal: first
    prof.loc[2, "crystalline_area_fraction"] = 0.9
    assert analysis.best_focus_nm(prof) == 4.0


def _fingerprint(phase, uvw) -> tuple:
    refl = zone_reflections(phase.cell, phase.space_group, uvw, d_min_nm=0.1)
    return tuple(round(d, 6) for _, d in refl)


def test_simulated_magnetite_particle(db) -> None:
    """The project's simulator: a 14 nm magnetite particle in [110] at -16 nm defocus.

    Crystalline windows agree with the particle (IoU >= 0.9, partly covered windows ignored); in
    every angle-confirmed window the true phase is the best match or listed (near-twin maghemite),
    with a [110]-type zone axis; and >= 95 % of all crystalline windows list it.
    """
    from hrtem_core.simulate import simulate_particle

    mag = db.phase("19-0629")
    sim = simulate_particle(
        mag, zone_axis=(1, 1, 0), diameter_nm=14.0, shape=(1024, 1024), pixel_size_nm=0.02,
        rotation_deg=20.0, defocus_nm=-16.0, seed=1,
    )  # fmt: skip
    params = analysis.AnalysisParams(window_px=256, stride_px=128, detector="classical")
    res = analysis.analyze_image(
        micrograph(sim.image, defocus=-16.0), params=params, cards=load_cards()
    )
    cov = window_coverage(sim.truth.mask, res.grid)
    cryst = res.windows["crystalline"].to_numpy(dtype=bool)
    assert region_iou(cryst, cov) >= 0.9
    w = res.windows[cryst]
    listed = (w["phase_card"] == "19-0629") | w["alternatives"].str.contains("19-0629")
    assert listed.mean() >= 0.95
    conf = w[w["status"].isin(["indexed", "ambiguous"])]
    assert len(conf) >= 10
    conf_listed = (conf["phase_card"] == "19-0629") | conf["alternatives"].str.contains("19-0629")
    assert conf_listed.all()
    true_top = conf[conf["phase_card"] == "19-0629"]
    ref = _fingerprint(mag, (1, 1, 0))
    zones = [tuple(int(v) for v in z.split()) for z in true_top["zone_axis"]]
    assert np.mean([_fingerprint(mag, z) == ref for z in zones]) >= 0.95
    # Twins: wherever maghemite wins, magnetite is listed and the window says "ambiguous".
    twin = conf[conf["phase_card"] == "39-1346"]
    assert (twin["status"] == "ambiguous").all()


@pytest.mark.skipif(
    not (REPO / "models" / "unet_spots.pt").is_file(), reason="models/unet_spots.pt not trained yet"
)
def test_unet_detector_on_rutile(db) -> None:
    image, region = lattice_image(
        db.phase("21-1276"), (0, 0, 1), RUTILE_HKL, rotation_deg=23.0, noise=0.1, seed=1,
        shape=(512, 512), pixel_size_nm=(0.02, 0.02),
    )  # fmt: skip
    params = analysis.AnalysisParams(window_px=256, stride_px=128, detector="unet")
    res = analysis.analyze_image(micrograph(image), params=params, cards=db)
    cov = window_coverage(region, res.grid)
    cryst = res.windows["crystalline"].to_numpy(dtype=bool)
    assert region_iou(cryst, cov) >= 0.9
    w = res.windows[cryst & (cov >= 0.99)]
    assert (w["phase_card"] == "21-1276").mean() >= 0.95


EXAMPLES = REPO / "data" / "examples" / "focal_series"


@pytest.mark.skipif(not (EXAMPLES / "truth.json").is_file(), reason="bundled example series absent")
def test_bundled_example_series_against_its_truth() -> None:
    """The bundled maghemite series (data/examples/focal_series, truth.json), one defocus.

    Truth: the particles' discs (centre, radius) and each particle's zone axis. Crystalline
    windows agree with the particles (IoU >= 0.9, partly covered windows ignored); in >= 95 % of
    the angle-confirmed windows maghemite is the best match or listed in an "ambiguous" window
    (the series uses a cation-disordered spinel model, so magnetite is a true near-twin); where
    maghemite is best, the zone axis is the one of the particle that covers the window most
    (>= 90 %) and every (hkl) lies in that zone.
    """
    import json

    from hrtem_core.crystallography import family_members
    from hrtem_core.io import load_image

    truth = json.loads((EXAMPLES / "truth.json").read_text(encoding="utf-8"))
    fname = min(truth["files"], key=lambda f: abs(truth["files"][f]["defocus_nm"] - 6.0))
    info = truth["files"][fname]
    particles = truth.get("particles") or info["particles"]
    card = truth["card_id"]
    db = load_cards()
    m = load_image(EXAMPLES / fname)
    assert m.defocus_nm == info["defocus_nm"]
    params = analysis.AnalysisParams(window_px=256, stride_px=128, detector="classical")
    res = analysis.analyze_image(m, params=params, cards=db)
    yy, xx = np.mgrid[0 : m.data.shape[0], 0 : m.data.shape[1]]
    cov = np.stack(
        [
            window_coverage(
                (yy - p["center_px"][0]) ** 2 + (xx - p["center_px"][1]) ** 2
                <= p["radius_px"] ** 2,
                res.grid,
            )
            for p in particles
        ],
        axis=1,
    )
    cryst = res.windows["crystalline"].to_numpy(dtype=bool)
    assert region_iou(cryst, np.clip(cov.sum(axis=1), 0.0, 1.0)) >= 0.9
    w = res.windows.assign(dominant=cov.argmax(axis=1))
    conf = w[w["status"].isin(["indexed", "ambiguous"])]
    assert len(conf) >= 10
    top = conf["phase_card"] == card
    listed = top | ((conf["status"] == "ambiguous") & conf["alternatives"].str.contains(card))
    assert listed.mean() >= 0.95, listed.mean()
    phase = db.phase(card)
    ok = []
    for row in conf[top].itertuples(index=False):
        z = tuple(int(v) for v in row.zone_axis.split())
        zt = tuple(particles[row.dominant]["zone_axis"])
        ok.append(z in {tuple(v) for v in family_members(phase.space_group, zt)})
        for h in row.hkl.split(";"):
            if h != "-":
                assert sum(int(a) * b for a, b in zip(h.split(), z, strict=True)) == 0
    assert np.mean(ok) >= 0.9, np.mean(ok)


# --------------------------------------------------------------------------------------------
# The series engine (issue 20: one engine for the CLI, the dashboard and batch)
# --------------------------------------------------------------------------------------------


def test_series_engine_resolves_defocus_and_keeps_going(db) -> None:
    from hrtem_core.analysis.series import SOURCE_GIVEN, SOURCE_NAME, run_series

    imgs = _series_images(db)  # names -16, +4, -4 nm; no metadata defocus
    nodf = dataclasses.replace(imgs[0], name="nodefocus.tif")

    def load(item):
        if item == "missing.tif":
            raise OSError("missing.tif: no such file")
        return item

    calls: list[float] = []
    seen: list[str] = []
    run = run_series(
        [*imgs, nodf, "missing.tif"],
        defocus_nm=[None, -1.5, None, None, None],
        load=load,
        params=PARAMS,
        cards=db,
        progress=lambda f, m: calls.append(f),
        on_image=lambda m, img: seen.append(m.name),
    )
    # nodefocus.tif: no defocus and no Thon rings (a lattice without CTF): listed, not raised.
    failed = dict(run.failures)
    assert set(failed) == {"nodefocus.tif", "missing.tif"}
    assert "defocus is unknown" in failed["nodefocus.tif"]
    assert "Thon rings" in failed["nodefocus.tif"]
    assert failed["missing.tif"] == "OSError: missing.tif: no such file"
    assert seen == ["img_-16nm.tif", "img_+4nm.tif", "img_-4nm.tif"]
    table = run.defocus_table()
    assert list(table["file"]) == seen
    assert list(table["defocus_nm"]) == [-16.0, -1.5, -4.0]
    assert list(table["defocus_source"]) == [SOURCE_NAME, SOURCE_GIVEN, SOURCE_NAME]
    assert list(run.series.profile["defocus_nm"]) == [-16.0, -4.0, -1.5]
    assert run.series.best_focus_nm == -1.5  # the largest crystal region, now at -1.5 nm
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0)
    assert run.particles is not None and set(run.particles["file"]) <= set(seen)
    # The same images through analyze_series (strict): the same profile.
    strict = analysis.analyze_series(imgs, defocus_nm=[-16.0, -1.5, -4.0], params=PARAMS, cards=db)
    pd.testing.assert_frame_equal(strict.profile, run.series.profile)
    with pytest.raises(AnalysisParameterError, match=r"nodefocus\.tif.*Thon rings"):
        run_series([nodf], params=PARAMS, cards=db, keep_going=False)


def test_series_engine_labels_an_estimate_and_warns_on_disagreement(db) -> None:
    from types import SimpleNamespace

    from hrtem_core.analysis.series import SOURCE_ESTIMATED, SOURCE_GIVEN, run_series
    from hrtem_core.particles import image_particles

    img = dataclasses.replace(_series_images(db)[1], name="plain.tif")
    est = SimpleNamespace(defocus_nm=-12.0, uncertainty_nm=1.0, score=0.9, reliable=True)

    def with_estimate(result, m):
        # The real particles, and a reliable Thon-ring estimate of -12 +- 1 nm.
        from hrtem_core.defocus import compare_defocus

        real = image_particles(result, m.data)
        given = result.defocus_nm
        warn = compare_defocus(given, est) if given is not None else None
        return dataclasses.replace(
            real,
            defocus=est,
            defocus_given_nm=given,
            defocus_source="given" if given is not None else "estimated",
            disagreement=warn,
        )

    run = run_series([img], params=PARAMS, cards=db, find_particles=with_estimate)
    (one,) = run.images
    assert one.defocus_source == SOURCE_ESTIMATED
    assert one.result.defocus_nm == -12.0
    assert one.result.summary["defocus_source"] == "estimated"
    assert run.series.best_focus_nm == -12.0 and not run.warnings
    # A given value 20 nm away from the estimate (uncertainty 1 nm): a warning, the given
    # value is kept.
    run = run_series([img], defocus_nm=[8.0], params=PARAMS, cards=db, find_particles=with_estimate)
    (one,) = run.images
    assert one.defocus_source == SOURCE_GIVEN and one.result.defocus_nm == 8.0
    assert len(run.warnings) == 1 and run.warnings[0][0] == "plain.tif"


def test_series_engine_cancels_before_the_next_image(db) -> None:
    from hrtem_core.analysis.series import SeriesCancelled, run_series

    analysed: list[str] = []

    def analyze(m, progress):
        analysed.append(m.name)
        return analysis.analyze_image(m, params=PARAMS, cards=db)

    imgs = _series_images(db)
    with pytest.raises(SeriesCancelled):
        run_series(imgs, params=PARAMS, cards=db, analyze=analyze, cancelled=lambda: bool(analysed))
    assert analysed == ["img_-16nm.tif"]


def test_params_with_phase_adds_a_card_only_where_it_is_left_out() -> None:
    """The card a distortion calibration is measured with must be among the phases indexed."""
    every = analysis.AnalysisParams()
    assert every.with_phase("39-1346") is every  # None: every enabled phase
    some = analysis.AnalysisParams(phases=("33-0664",))
    assert some.with_phase("33-0664") is some
    added = some.with_phase("39-1346")
    assert added.phases == ("33-0664", "39-1346") and some.phases == ("33-0664",)
    assert dataclasses.replace(added, phases=some.phases) == some  # nothing else changed
