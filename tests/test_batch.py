"""Batch analysis on a Dask cluster: discovery, tables, errors, resume, CLI.

One LocalCluster (2 worker processes, 1 thread each) is started for the whole module and shared by
every test through its ``tcp://`` address (which also exercises ``--scheduler tcp://...``).
Images are small (256x256 px, window 128 px, classical detector) so the module runs in well under
a minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from hrtem_core import batch
from hrtem_core.errors import HRTEMError

PIXEL_NM = 0.02
SHAPE = (256, 256)
#: (spacing_nm, defocus_nm, crystalline columns [px]) of the good test images.
GOOD = ((0.235, -10.0, 256), (0.204, 0.0, 128), (0.235, 12.0, 192), (0.252, -24.0, 256))


def lattice(
    rng: np.random.Generator, spacing_nm: float, *, crystal_cols: int = 256, angle_deg: float = 30.0
) -> np.ndarray:
    """Two crossed fringe sets of ``spacing_nm`` (60 deg apart) in the first ``crystal_cols``
    columns, Gaussian noise everywhere: (256, 256) float32."""
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]] * PIXEL_NM
    img = np.zeros(SHAPE)
    for phi in np.deg2rad([angle_deg, angle_deg + 60.0]):
        img += np.cos(2 * np.pi * (np.cos(phi) * x - np.sin(phi) * y) / spacing_nm)
    img[:, crystal_cols:] = 0.0
    img += rng.normal(0.0, 0.3, SHAPE)
    return img.astype(np.float32)


def fake_analyze(path: str, settings: batch.BatchSettings):
    """A stand-in for analyze_image: per-window mean and std of the raw image (known answer)."""
    from hrtem_core.io import load_image
    from hrtem_core.windows import extract_windows, window_grid

    if "explode" in Path(path).name:
        raise RuntimeError("simulated worker failure")
    m = load_image(path, pixel_size_nm=settings.pixel_size_nm)
    w = settings.params.window_px
    grid = window_grid(m.shape, window_px=w, stride_px=settings.params.stride_px)
    win = extract_windows(m.data, grid).reshape(grid.n_windows, -1)
    frame = pd.DataFrame(
        {
            "window": np.arange(grid.n_windows),
            "row": grid.row_col[:, 0],
            "col": grid.row_col[:, 1],
            "mean": win.mean(axis=1),
            "std": win.std(axis=1),
        }
    )
    summary = {"name": m.name, "mean": float(m.data.mean()), "pixel_x_nm": m.pixel_size_nm[1]}
    return frame, summary, m.defocus_nm


@dataclasses.dataclass(frozen=True)
class FakeParams:
    window_px: int = 128
    stride_px: int | None = None
    detector: str = "classical"


@pytest.fixture(scope="module")
def cluster_address():
    """One LocalCluster of 2 processes for the module (its tcp:// address)."""
    cluster = batch.local_cluster(2)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Four lattice TIFFs (defocus in their names), a corrupt TIFF, a text file, a sub-folder."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    (root / "sub").mkdir()
    for i, (d, df, cols) in enumerate(GOOD):
        folder = root / "sub" if i == 3 else root
        tifffile.imwrite(folder / f"np{i}_df{df:+.0f}nm.tif", lattice(rng, d, crystal_cols=cols))
    (root / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    (root / "notes.txt").write_text("not an image")
    return root


def good_paths(image_dir: Path) -> list[Path]:
    return sorted(p for p in image_dir.rglob("np*.tif"))


# --------------------------------------------------------------------------------------------
# Discovery, names, hashes (no cluster)
# --------------------------------------------------------------------------------------------


def test_discover_folders_recursively_with_supported_extensions(image_dir: Path) -> None:
    files = batch.discover_files([image_dir])
    names = sorted(p.name for p in files)
    assert names == sorted(["broken.tif", *(p.name for p in good_paths(image_dir))])
    assert all(p.is_absolute() for p in files)
    assert any(p.parent.name == "sub" for p in files)  # recursive


def test_discover_files_globs_and_duplicates(image_dir: Path) -> None:
    one = image_dir / "np0_df-10nm.tif"
    files = batch.discover_files([one, str(image_dir / "**" / "np*.tif"), one])
    assert [p.name for p in files].count(one.name) == 1
    assert len(files) == len(GOOD)
    only = batch.discover_files([image_dir], glob="*df+*.tif")
    assert sorted(p.name for p in only) == ["np1_df+0nm.tif", "np2_df+12nm.tif"]
    # an explicit file is taken whatever its extension
    assert batch.discover_files([image_dir / "notes.txt"])[0].name == "notes.txt"


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (["/nonexistent/folder"], "neither a file nor a folder"),
        (["/nonexistent/*.tif"], "matches no file"),
    ],
)
def test_discover_errors_are_one_line(inputs, match) -> None:
    with pytest.raises(HRTEMError, match=match):
        batch.discover_files(inputs)


def test_discover_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(HRTEMError, match="no image file"):
        batch.discover_files([tmp_path])


def test_safe_names_unique_and_stable(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "x y.tif", tmp_path / "b" / "x y.tif", tmp_path / "c" / "z#1.dm4"]
    names = batch.safe_names(paths)
    assert names[2] == "z_1.dm4"
    assert names[0] != names[1] and all(n.startswith("x_y-") for n in names[:2])
    assert names[0].endswith(".tif")
    # the same path gets the same name whatever the order
    assert batch.safe_names(paths[::-1])[::-1] == names


def test_stage_file_one_path_per_content(image_dir: Path, tmp_path: Path) -> None:
    data = (image_dir / "np0_df-10nm.tif").read_bytes()
    a = batch.stage_file("np0 df-10nm.tif", data, tmp_path / "stage")
    b = batch.stage_file("np0 df-10nm.tif", data, tmp_path / "stage")
    c = batch.stage_file("other.ser", b"x", tmp_path / "stage", companions=[("other.emi", b"y")])
    assert a == b and a.read_bytes() == data and a.name == "np0_df-10nm.tif"
    assert c.parent != a.parent and (c.parent / "other.emi").read_bytes() == b"y"
    assert batch.safe_names([a, c]) == ["np0_df-10nm.tif", "other.ser"]
    # the staging folder is an ordinary batch input
    assert set(batch.discover_files([tmp_path / "stage"])) == {a, c}


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    data = np.random.default_rng(0).bytes(3 << 20)
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert batch.sha256_file(p, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()


def test_params_digest_covers_every_setting() -> None:
    base = batch.BatchSettings(params=FakeParams(), pixel_size_nm=0.02)
    same = batch.BatchSettings(params=FakeParams(), pixel_size_nm=(0.02, 0.02))
    assert base.digest == same.digest
    others = [
        dataclasses.replace(base, params=FakeParams(window_px=64)),
        dataclasses.replace(base, pixel_size_nm=0.021),
        dataclasses.replace(base, frame="sum"),
        dataclasses.replace(base, cards_digest="abc"),
        dataclasses.replace(base, weights_digest="def"),
        dataclasses.replace(base, distortion=(1.01, 0.0, 0.99)),
    ]
    assert len({base.digest, *(o.digest for o in others)}) == 1 + len(others)


def test_default_workers_is_the_usable_cpu_count() -> None:
    import os

    from dask.system import CPU_COUNT

    n = batch.default_workers()
    assert n == CPU_COUNT and 1 <= n <= (os.cpu_count() or 1)


def test_one_batch_at_a_time_per_folder(image_dir: Path, tmp_path: Path) -> None:
    settings = batch.BatchSettings(params=FakeParams(), pixel_size_nm=PIXEL_NM)
    with batch.folder_lock(tmp_path):
        with pytest.raises(HRTEMError, match="another batch is writing"):
            batch.run_batch(
                good_paths(image_dir), settings=settings, out_dir=tmp_path, scheduler="nowhere"
            )
    with batch.folder_lock(tmp_path):  # released
        pass


def test_scheduler_errors() -> None:
    with pytest.raises(HRTEMError, match="unknown scheduler"):
        with batch.dask_client("threads-please"):
            pass
    with pytest.raises(HRTEMError, match="positive integer"):
        with batch.dask_client("local", workers=0):
            pass


# --------------------------------------------------------------------------------------------
# The batch with an injected analysis (plumbing, resume, failures)
# --------------------------------------------------------------------------------------------


def test_fake_batch_tables_resume_and_retry(cluster_address, image_dir, tmp_path) -> None:
    data = tmp_path / "data"
    shutil.copytree(image_dir, data)
    (data / "explode.tif").write_bytes((data / "np0_df-10nm.tif").read_bytes())
    settings = batch.BatchSettings(params=FakeParams(), pixel_size_nm=PIXEL_NM)
    out = tmp_path / "out"
    seen: list[tuple[float, str]] = []
    r1 = batch.run_batch(
        [data],
        settings=settings,
        out_dir=out,
        scheduler=cluster_address,
        analyze_fn=fake_analyze,
        progress=lambda f, m: seen.append((f, m)),
    )
    assert r1.n_files == 6 and r1.n_analysed == 4 and r1.n_failed == 2 and r1.n_workers == 2
    assert [f for f, _ in seen] == pytest.approx([i / 6 for i in range(1, 7)])
    files = pd.read_csv(out / "files.csv")
    by = files.set_index("file")
    assert by.loc["explode.tif", "error"] == "RuntimeError: simulated worker failure"
    assert "broken.tif" in by.loc["broken.tif", "error"]
    assert by.loc["np2_df+12nm.tif", "defocus_nm"] == 12.0
    assert by.loc["np0_df-10nm.tif", "n_windows"] == 9  # 3x3 windows of 128 px, stride 64
    # windows: known answer (mean of each window of the raw image)
    win = batch.read_windows(out)
    assert sorted(win["file"].unique()) == sorted(p.name for p in good_paths(data))
    img = tifffile.imread(data / "np1_df+0nm.tif")
    w1 = win[win["file"] == "np1_df+0nm.tif"].set_index("window")
    np.testing.assert_allclose(w1.loc[4, "mean"], img[64:192, 64:192].mean(), rtol=1e-5)
    # files.csv summary fields come after the fixed columns
    assert list(files.columns[: len(batch.FILE_COLUMNS)]) == list(batch.FILE_COLUMNS)
    assert {"name", "mean"} <= set(files.columns)

    mtimes = {p: p.stat().st_mtime_ns for p in (out / "windows.parquet").rglob("*.parquet")}
    manifest_lines = (out / "_done.jsonl").read_text().splitlines()
    assert len(manifest_lines) == 6
    r2 = batch.run_batch(
        [data],
        settings=settings,
        out_dir=out,
        scheduler=cluster_address,
        analyze_fn=fake_analyze,
    )
    # only the non-deterministic failure (RuntimeError) is retried; the corrupt file is not
    assert r2.n_analysed == 0 and r2.n_skipped == 5 and r2.n_failed == 2
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    lines2 = (out / "_done.jsonl").read_text().splitlines()
    assert len(lines2) == 7 and json.loads(lines2[-1])["file"] == "explode.tif"
    assert r2.files.set_index("file")["reused"].sum() == 5

    # a changed file is analysed again, the others are kept
    tifffile.imwrite(data / "np1_df+0nm.tif", np.ones(SHAPE, np.float32))
    (data / "explode.tif").unlink()
    r3 = batch.run_batch(
        [data], settings=settings, out_dir=out, scheduler=cluster_address, analyze_fn=fake_analyze
    )
    assert r3.n_analysed == 1 and r3.n_skipped == 4 and r3.n_files == 5
    w1 = batch.read_windows(out, files=["np1_df+0nm.tif"])
    np.testing.assert_allclose(w1["mean"], 1.0)
    # new parameters: everything is analysed again
    r4 = batch.run_batch(
        [data],
        settings=dataclasses.replace(settings, params=FakeParams(window_px=64)),
        out_dir=out,
        scheduler=cluster_address,
        analyze_fn=fake_analyze,
    )
    assert r4.n_analysed == 4 and r4.n_skipped == 0
    assert set(r4.files["n_windows"].dropna()) == {49}


def test_interrupted_batch_keeps_finished_parts(cluster_address, image_dir, tmp_path) -> None:
    settings = batch.BatchSettings(params=FakeParams(), pixel_size_nm=PIXEL_NM)
    out = tmp_path / "out"
    calls = []

    def stop_after_two(fraction: float, message: str) -> None:
        calls.append(message)
        if len(calls) == 2:
            raise KeyboardInterrupt

    paths = good_paths(image_dir)
    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(
            paths,
            settings=settings,
            out_dir=out,
            scheduler=cluster_address,
            analyze_fn=fake_analyze,
            progress=stop_after_two,
        )
    files = pd.read_csv(out / "files.csv")
    assert (files["status"] == "ok").sum() == 2 and (files["status"] == "pending").sum() == 2
    assert len(list((out / "windows.parquet").rglob("part-0.parquet"))) == 2
    r = batch.run_batch(
        paths, settings=settings, out_dir=out, scheduler=cluster_address, analyze_fn=fake_analyze
    )
    assert r.n_skipped == 2 and r.n_analysed == 2 and (r.files["status"] == "ok").all()


def test_per_file_pixel_size_and_defocus(cluster_address, image_dir, tmp_path) -> None:
    settings = batch.BatchSettings(params=FakeParams(), pixel_size_nm=PIXEL_NM)
    out = tmp_path / "out"
    paths = good_paths(image_dir)
    kw = dict(settings=settings, out_dir=out, scheduler=cluster_address, analyze_fn=fake_analyze)
    first = batch.run_batch(paths, **kw)
    assert first.n_analysed == 4
    assert set(first.files["defocus_source"]) == {"file"}
    # a given defocus replaces the file's in the table, without recomputing anything
    r = batch.run_batch(paths, defocus_nm={paths[0]: -55.5}, **kw)
    by = r.files.set_index("file")
    assert r.n_analysed == 0 and r.n_skipped == 4
    assert by.loc[paths[0].name, "defocus_nm"] == -55.5
    assert by.loc[paths[0].name, "defocus_source"] == "given"
    assert by.loc[paths[1].name, "defocus_source"] == "file"
    # a per-file pixel size is a parameter of that file only: it alone is analysed again
    r = batch.run_batch(paths, pixel_sizes_nm={str(paths[1]): 0.05}, **kw)
    by = r.files.set_index("file")
    assert r.n_analysed == 1 and r.n_skipped == 3
    assert by.loc[paths[1].name, "pixel_x_nm"] == 0.05
    assert by.loc[paths[0].name, "pixel_x_nm"] == PIXEL_NM
    assert by.loc[paths[1].name, "params_digest"] != by.loc[paths[0].name, "params_digest"]
    with pytest.raises(HRTEMError, match="not among the batch's inputs"):
        batch.run_batch(paths[:1], defocus_nm={paths[2]: 1.0}, **kw)
    with pytest.raises(HRTEMError, match="positive numbers of nm/px"):
        batch.run_batch(paths, pixel_sizes_nm={paths[0]: -1.0}, **kw)
    with pytest.raises(HRTEMError, match="finite number of nm"):
        batch.run_batch(paths, defocus_nm={paths[0]: float("nan")}, **kw)


def test_task_reads_the_file_and_returns_a_small_result(image_dir) -> None:
    """What travels back from a worker is the windows table and the summary, not the image."""
    import pickle

    from hrtem_core.analysis import AnalysisParams

    path = good_paths(image_dir)[0]
    settings = batch.make_settings(
        AnalysisParams(window_px=128, detector="classical"), pixel_size_nm=PIXEL_NM
    )
    res = batch.run_file_task(str(path), settings)
    assert res.status == "ok" and res.sha256 == batch.sha256_file(path)
    size = len(pickle.dumps(res))
    assert size < 20_000 and size < path.stat().st_size / 10  # the image is 256 kB
    skipped = batch.run_file_task(str(path), settings, res.sha256)
    assert skipped.status == "skipped" and skipped.windows is None


def test_task_removes_the_scan_distortion(image_dir) -> None:
    """``make_settings(distortion=...)`` is checked on the client and applied on the worker:
    the image is resampled before the analysis (fewer windows of a slightly smaller image, at
    the stretched pixel size)."""
    from hrtem_core.analysis import AnalysisParams
    from hrtem_core.errors import CalibrationError

    path = str(good_paths(image_dir)[0])
    params = AnalysisParams(window_px=64, stride_px=64, detector="classical")
    with pytest.raises(CalibrationError, match="right card"):
        batch.make_settings(params, pixel_size_nm=PIXEL_NM, distortion=(1.1, 0.0, 1.0))
    plain = batch.make_settings(params, pixel_size_nm=PIXEL_NM)
    bent = batch.make_settings(params, pixel_size_nm=PIXEL_NM, distortion=(1.02, 0.01, 1.0))
    a, b = batch.run_file_task(path, plain), batch.run_file_task(path, bent)
    assert a.status == b.status == "ok"
    assert len(b.windows) < len(a.windows)  # 256 px -> 252 px: a row and a column of windows less
    assert b.summary["pixel_size_nm"][0] == pytest.approx(PIXEL_NM * (1.02 - 0.01**2) ** 0.5)


def test_worker_runs_the_detector_on_one_thread(image_dir, monkeypatch) -> None:
    """A worker process is one of one-per-core: the spot detector must not start more threads."""
    from hrtem_core import spots
    from hrtem_core.analysis import AnalysisParams

    real = spots.detect_pairs_in_image
    seen: list[int] = []

    def spy(image, grid, **kwargs):
        seen.append(kwargs["workers"])
        return real(image, grid, **kwargs)

    monkeypatch.setattr(spots, "detect_pairs_in_image", spy)
    settings = batch.make_settings(
        AnalysisParams(window_px=128, detector="classical"), pixel_size_nm=PIXEL_NM
    )
    windows, summary, _ = batch.analyze_file(str(good_paths(image_dir)[0]), settings)
    assert seen and set(seen) == {1} == {batch.WORKER_DETECTOR_THREADS}
    assert len(windows) == summary["n_windows"] > 0


# --------------------------------------------------------------------------------------------
# The real analysis (classical detector) on the cluster
# --------------------------------------------------------------------------------------------


def real_params():
    from hrtem_core.analysis import AnalysisParams

    return AnalysisParams(window_px=128, detector="classical")


@pytest.fixture(scope="module")
def real_run(cluster_address, image_dir, tmp_path_factory):
    """The batch over ``image_dir`` (4 good files, 1 corrupt) with analyze_image."""
    out = tmp_path_factory.mktemp("real") / "out"
    result = batch.run_batch(
        [image_dir],
        params=real_params(),
        out_dir=out,
        scheduler=cluster_address,
        pixel_size_nm=PIXEL_NM,
    )
    return result, out


def single_file_results(image_dir: Path) -> dict:
    from hrtem_core.analysis import analyze_image
    from hrtem_core.io import load_image

    return {
        p.name: analyze_image(load_image(p, pixel_size_nm=PIXEL_NM), params=real_params())
        for p in good_paths(image_dir)
    }


@pytest.fixture(scope="module")
def singles(image_dir) -> dict:
    return single_file_results(image_dir)


def test_windows_match_single_file_analysis(real_run, image_dir, singles) -> None:
    result, out = real_run
    assert result.n_analysed == 4 and result.n_failed == 1 and result.n_workers == 2
    table = batch.read_windows(out)
    assert len(table) == sum(len(r.windows) for r in singles.values()) == 4 * 9
    for name, single in singles.items():
        got = table[table["file"] == name].drop(columns="file").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, single.windows, check_dtype=False)
    # the generic readers see the same table with the partition column
    via_pandas = pd.read_parquet(out / "windows.parquet")
    assert len(via_pandas) == len(table) and set(via_pandas["file"].astype(str)) == set(singles)


def test_files_table_known_answers(real_run, singles) -> None:
    _, out = real_run
    files = pd.read_csv(out / "files.csv").set_index("file")
    assert list(files.loc[list(singles), "status"]) == ["ok"] * 4
    # the summary fields of analyze, the defocus from the file name, the content hash
    for i, (d, df, cols) in enumerate(GOOD):
        name = next(n for n in singles if n.startswith(f"np{i}_"))
        row = files.loc[name]
        assert row["defocus_nm"] == df
        assert row["crystallinity"] == pytest.approx(singles[name].summary["crystallinity"])
        assert row["n_windows"] == 9 and row["window_px"] == 128
        path = Path(row["path"])
        assert row["sha256"] == batch.sha256_file(path)
        # known answer: the fringe spacing within 1 %; crystalline windows where the crystal is
        win = batch.read_windows(out, files=[name])
        first = win.loc[win["crystalline"] == 1, "spacings_nm"].str.split(";").str[0]
        assert np.median(first.astype(float)) == pytest.approx(d, rel=0.01)
        crystalline_cols = set(win.loc[win["crystalline"] == 1, "col"])
        full = {c for c in range(3) if 64 * c + 128 <= cols}  # window inside the crystal
        touching = {c for c in range(3) if 64 * c < cols}  # window overlapping it at all
        assert full <= crystalline_cols <= touching
    broken = files.loc["broken.tif"]
    assert broken["status"] == "error" and "broken.tif" in broken["error"]
    assert "\n" not in broken["error"] and pd.isna(broken["n_windows"])


def test_profile_matches_series_code(real_run, singles) -> None:
    from hrtem_core.analysis import series_from_results

    result, out = real_run
    profile = pd.read_csv(out / "profile.csv")
    assert list(profile["defocus_nm"]) == sorted(df for _, df, _ in GOOD)
    series = series_from_results(list(singles.values()))
    pd.testing.assert_frame_equal(profile, series.profile, check_dtype=False)
    assert result.profile_path == out / "profile.csv"
    # crystallinity 1 at -24 and -10 nm (crystal over all columns): the smaller |defocus| wins
    assert result.best_focus_nm == series.best_focus_nm == -10.0
    # the same SeriesResult fields, so the dashboard's figures draw a batch as they draw a series
    from hrtem_core import figures

    as_series = result.series()
    assert as_series.phases == series.phases and as_series.results == ()
    pd.testing.assert_frame_equal(as_series.profile, series.profile, check_dtype=False)
    figures.profile_figure(as_series)
    figures.phase_fraction_figure(as_series)


def test_second_run_resumes_without_recomputing(real_run, cluster_address, image_dir) -> None:
    first, out = real_run
    parts = sorted((out / "windows.parquet").rglob("part-0.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in parts]
    lines = (out / "_done.jsonl").read_text().splitlines()
    again = batch.run_batch(
        [image_dir],
        params=real_params(),
        out_dir=out,
        scheduler=cluster_address,
        pixel_size_nm=PIXEL_NM,
    )
    assert again.n_analysed == 0 and again.n_skipped == 5 and again.n_failed == 1
    assert [p.stat().st_mtime_ns for p in parts] == mtimes
    assert (out / "_done.jsonl").read_text().splitlines() == lines
    cols = ["file", "status", "sha256", "crystallinity"]
    pd.testing.assert_frame_equal(again.files[cols], first.files[cols])
    assert again.files.set_index("file")["reused"].all()


def test_cli_batch_reads_back(cluster_address, image_dir, tmp_path, capsys) -> None:
    from hrtem_core.cli import main

    out = tmp_path / "cli"
    rc = main(
        [
            "batch",
            str(image_dir / "np*.tif"),
            str(image_dir / "sub"),
            "--out",
            str(out),
            "--scheduler",
            cluster_address,
            "--window",
            "128",
            "--detector",
            "classical",
            "--pixel-size-nm",
            "0.02",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["n_files"] == 4 and report["n_analysed"] == 4 and report["n_failed"] == 0
    files = pd.read_csv(out / "files.csv")
    assert sorted(files["file"]) == sorted(p.name for p in good_paths(image_dir))
    windows = pd.read_parquet(out / "windows.parquet")
    assert len(windows) == 36 and windows.groupby("file", observed=True).size().eq(9).all()
    assert (out / "profile.csv").is_file()


def test_cli_batch_errors(tmp_path, capsys) -> None:
    from hrtem_core.cli import main

    assert main(["batch", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "neither a file nor a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(tmp_path), "--workers", "0", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers must be at least 1, got 0" in err
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(tmp_path), "--workers", "two", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "--workers must be a whole number of processes, got 'two'" in capsys.readouterr().err


def _worker_cache_state() -> dict:
    """Runs on each worker: how often the per-process caches loaded, and torch's threads."""
    import os

    import torch

    return {
        "env": {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")},
        "model": batch._cached_model.cache_info()._asdict(),
        "cards": batch._cached_cards.cache_info()._asdict(),
        "torch_threads": torch.get_num_threads(),
    }


def test_unet_loaded_once_per_worker(cluster_address, image_dir, tmp_path) -> None:
    import torch
    from distributed import Client

    from hrtem_core.analysis import AnalysisParams, analyze_image
    from hrtem_core.io import load_image
    from hrtem_core.unet.load import load_model
    from hrtem_core.unet.model import UNet

    # A tiny untrained U-Net: the numbers are meaningless, the plumbing is what is tested.
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(UNet(base_channels=4, depth=2).state_dict(), weights)
    arch = {"architecture": {"in_channels": 1, "base_channels": 4, "depth": 2, "input_px": 64}}
    weights.with_suffix(".json").write_text(json.dumps(arch))
    params = AnalysisParams(window_px=128, detector="unet")
    paths = good_paths(image_dir)
    out = tmp_path / "out"
    r = batch.run_batch(
        paths,
        params=params,
        weights_path=weights,
        out_dir=out,
        scheduler=cluster_address,
        pixel_size_nm=PIXEL_NM,
    )
    assert r.n_analysed == 4, r.warnings
    with Client(cluster_address) as client:
        state = client.run(_worker_cache_state)
    assert len(state) == 2
    model_calls = [s["model"]["hits"] + s["model"]["misses"] for s in state.values()]
    assert sum(model_calls) == 4  # one lookup per file ...
    assert all(s["model"]["misses"] <= 1 for s in state.values())  # ... one load per process
    assert all(s["cards"]["misses"] <= 1 for s in state.values())
    assert all(s["torch_threads"] == 1 for s in state.values())
    assert all(s["env"] == batch.WORKER_MALLOC_ENV for s in state.values())
    single = analyze_image(
        load_image(paths[0], pixel_size_nm=PIXEL_NM),
        params=params,
        model=load_model(weights, device="cpu"),
    )
    got = batch.read_windows(out, files=[paths[0].name]).drop(columns="file")
    pd.testing.assert_frame_equal(got, single.windows, check_dtype=False)
    # other weights are other parameters: nothing is reused
    torch.save(UNet(base_channels=4, depth=2).state_dict(), weights)
    r2 = batch.run_batch(
        paths[:1],
        params=params,
        weights_path=weights,
        out_dir=out,
        scheduler=cluster_address,
        pixel_size_nm=PIXEL_NM,
    )
    assert r2.n_analysed == 1 and r2.n_skipped == 0


def test_local_scheduler_starts_and_stops_its_own_cluster(image_dir, tmp_path) -> None:
    r = batch.run_batch(
        [image_dir / "np0_df-10nm.tif"],
        params=real_params(),
        out_dir=tmp_path / "o",
        scheduler="processes",
        workers=1,
        pixel_size_nm=PIXEL_NM,
    )
    assert r.n_workers == 1 and r.n_analysed == 1
    assert r.scheduler == "LocalCluster(1 processes x 1 thread)"


def slow_analyze(path: str, settings: batch.BatchSettings):
    """fake_analyze, but a file named ``slow*`` hangs far past any timeout."""
    import time

    if Path(path).name.startswith("slow"):
        time.sleep(60)
    return fake_analyze(path, settings)


def test_file_timeout_is_recorded_and_the_rest_go_on(cluster_address, image_dir, tmp_path) -> None:
    import time

    data = tmp_path / "data"
    data.mkdir()
    first, second = good_paths(image_dir)[:2]
    shutil.copy(first, data / first.name)
    shutil.copy(first, data / "slow_df-5nm.tif")
    shutil.copy(second, data / "-evil=cmd.tif")  # a formula-like name
    (data / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    settings = batch.BatchSettings(params=FakeParams(), pixel_size_nm=PIXEL_NM)
    t0 = time.monotonic()
    r = batch.run_batch(
        [data],
        settings=settings,
        out_dir=tmp_path / "out",
        scheduler=cluster_address,
        analyze_fn=slow_analyze,
        file_timeout_s=3.0,
    )
    assert time.monotonic() - t0 < 40  # not the 60 s the slow file would take
    by = r.files.set_index("file")
    assert by.loc["slow_df-5nm.tif", "status"] == "error"
    assert by.loc["slow_df-5nm.tif", "error"] == (
        "slow_df-5nm.tif: timed out after 3 s (analysis abandoned)"
    )
    assert (
        by.loc["broken.tif", "status"] == "error" and "broken.tif" in by.loc["broken.tif", "error"]
    )
    assert by.loc[first.name, "status"] == "ok" and by.loc["-evil_cmd.tif", "status"] == "ok"
    assert (r.n_files, r.n_analysed, r.n_failed, r.n_skipped) == (4, 2, 2, 0)
    assert r.n_analysed + r.n_failed + r.n_skipped == r.n_files
    assert any("timed out after 3 s" in w for w in r.warnings)
    on_disk = pd.read_csv(r.files_path, keep_default_na=False).set_index("file")
    assert "'-evil_cmd.tif" in on_disk.index  # escaped in the CSV, plain in memory
    assert on_disk.loc["slow_df-5nm.tif", "status"] == "error"


def test_hdf5_files_are_read_on_daemonic_workers(cluster_address, tmp_path) -> None:
    """Dask workers are daemonic processes, which may not start the isolated HDF5 reader."""
    from tests.test_io import write_berkeley_emd

    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    data.mkdir()
    image = lattice(rng, 0.235)
    write_berkeley_emd(data / "a_df-4nm.emd", image, steps=(0.02, 0.02), units=("nm", "nm"))
    settings = batch.BatchSettings(params=FakeParams(), pixel_size_nm=None)
    r = batch.run_batch(
        [data],
        settings=settings,
        out_dir=tmp_path / "out",
        scheduler=cluster_address,
        analyze_fn=fake_analyze,
    )
    by = r.files.set_index("file")
    assert by.loc["a_df-4nm.emd", "status"] == "ok", by.loc["a_df-4nm.emd", "error"]
    assert by.loc["a_df-4nm.emd", "n_windows"] == 9 and r.n_failed == 0
