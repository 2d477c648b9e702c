"""Benchmark of ``hrtem_core.batch``: the same image set with 1, 2, ... local Dask workers.

    python benchmarks/bench_batch.py                     # 64 images 1024x1024, 1 and 2 workers
    python benchmarks/bench_batch.py --serial            # also a plain loop without Dask
    python benchmarks/bench_batch.py --workers 1 2 4 8   # more worker counts
    python benchmarks/bench_batch.py --scheduler tcp://HOST:8786 --data /shared/bench

Generates ``--n-images`` synthetic lattice images (two crossed fringe sets in a round particle on
an amorphous, noisy background; fixed seed) into a temporary folder (or ``--data``), then for
each worker count starts a LocalCluster (processes, one thread each), imports the analysis on
every worker and loads the card tables and the model there (timed as start-up), and runs :func:`hrtem_core.batch.run_batch` into a fresh
output folder (timed as the batch). The detector is the U-Net when ``models/unet_spots.pt``
exists, else the classical one (``--detector``); the report names the one used and the weights'
sha256. Prints a Markdown table and writes ``benchmarks/results/batch.json`` and ``batch.md``
(``--results``). The speed-up is against the 1-worker run of the same invocation, so a busy
machine slows both; absolute times are printed too.
With ``--scheduler tcp://...`` it runs once on that cluster instead (the data folder must be on a
filesystem every worker sees).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# One BLAS/OpenMP thread in this process too, as distributed gives each worker process: the
# serial reference then compares like with like (several threads per process on a busy 2-core
# machine made it 4x slower).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hrtem_core.batch import local_cluster, make_settings, run_batch  # noqa: E402

PIXEL_SIZE_NM = 0.02


def lattice_image(
    rng: np.random.Generator,
    *,
    shape: tuple[int, int] = (1024, 1024),
    pixel_size_nm: float = PIXEL_SIZE_NM,
    spacings_nm: tuple[float, float] = (0.235, 0.204),
    angle_between_deg: float = 54.7,
    noise: float = 0.6,
) -> np.ndarray:
    """A round crystalline particle (two fringe sets) on a noisy amorphous background.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : (ny, nx), keyword-only
    pixel_size_nm : float, keyword-only
        [nm/px].
    spacings_nm : (float, float), keyword-only
        Lattice spacings of the two fringe sets [nm].
    angle_between_deg : float, keyword-only
        Angle between the two sets' g vectors [deg].
    noise : float, keyword-only
        Standard deviation of the additive Gaussian noise (fringe amplitude 1).

    Returns
    -------
    numpy.ndarray
        (ny, nx) float32.
    """
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32) * np.float32(pixel_size_nm)
    theta = np.deg2rad(rng.uniform(0.0, 180.0))
    img = np.zeros(shape, np.float32)
    for k, d in enumerate(spacings_nm):
        phi = theta + k * np.deg2rad(angle_between_deg)
        gx, gy = np.cos(phi) / d, -np.sin(phi) / d
        img += np.cos(2 * np.pi * (gx * x + gy * y) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7, 2) * np.array(shape)
    radius = rng.uniform(0.25, 0.4) * min(shape)
    rr = np.hypot(np.arange(ny)[:, None] - cy, np.arange(nx)[None, :] - cx)
    img *= (rr < radius).astype(np.float32)
    img += rng.normal(0.0, noise, shape).astype(np.float32)
    return img


def make_images(folder: Path, n: int, *, size: int, seed: int = 0) -> list[Path]:
    """Write ``n`` float32 TIFF lattice images with the defocus in their names."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        defocus = -40 + 2 * (i % 41)
        path = folder / f"lattice_{i:03d}_df{defocus:+d}nm.tif"
        if not path.exists():
            tifffile.imwrite(path, lattice_image(rng, shape=(size, size)))
        paths.append(path)
    return paths


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _warm_up(settings) -> None:
    """On a worker: import the analysis, load the card tables and the model into the caches."""
    import hrtem_core.analysis  # noqa: F401
    from hrtem_core import batch

    batch._cached_tables(settings.cards_path, settings.cards_digest, settings.params)
    if settings.params.detector == "unet":
        batch._cached_model(settings.weights_path, settings.weights_digest)


def resolve_detector(detector: str, weights: Path | None) -> tuple[str, Path | None]:
    """``auto`` -> ``unet`` when the weights file exists, else ``classical``."""
    from hrtem_core.unet.load import DEFAULT_WEIGHTS

    path = Path(weights) if weights is not None else Path(DEFAULT_WEIGHTS)
    if detector == "auto":
        detector = "unet" if path.is_file() else "classical"
    return detector, (path if detector == "unet" else None)


def bench_serial(files: list[Path], settings) -> dict:
    """The same files analysed one after the other in this process (no Dask): the reference."""
    from hrtem_core.batch import analyze_file

    load_before = _load_average()
    _warm_up(settings)  # as on the workers: loading is start-up, not batch time
    t0 = time.perf_counter()
    n_windows = 0
    for f in files:
        windows, _summary, _df = analyze_file(str(f), settings)
        n_windows += len(windows)
    batch_s = time.perf_counter() - t0
    return {
        "workers": "serial",
        "startup_s": None,
        "batch_s": round(batch_s, 2),
        "files_per_s": round(len(files) / batch_s, 3),
        "n_files": len(files),
        "n_analysed": len(files),
        "n_failed": 0,
        "n_windows": n_windows,
        "load_avg_1min_before": _round(load_before),
        "load_avg_1min_after": _round(_load_average()),
    }


def bench_local(data: Path, settings, workers: int, work: Path) -> dict:
    """One timed run on a fresh LocalCluster with ``workers`` processes."""
    from distributed import Client

    load_before = _load_average()
    t0 = time.perf_counter()
    cluster = local_cluster(workers)
    client = Client(cluster)
    client.run(_warm_up, settings)  # imports, cards, model on every worker: start-up time
    startup_s = time.perf_counter() - t0
    out = work / f"out_{workers}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        t1 = time.perf_counter()
        result = run_batch([data], settings=settings, out_dir=out, scheduler=client)
        batch_s = time.perf_counter() - t1
    finally:
        client.close()
        cluster.close()
    return {
        "workers": workers,
        "startup_s": round(startup_s, 2),
        "batch_s": round(batch_s, 2),
        "files_per_s": round(result.n_files / batch_s, 3),
        "n_files": result.n_files,
        "n_analysed": result.n_analysed,
        "n_failed": result.n_failed,
        "n_windows": int(result.files["n_windows"].fillna(0).sum()),
        "load_avg_1min_before": _round(load_before),
        "load_avg_1min_after": _round(_load_average()),
    }


def markdown(report: dict) -> str:
    """The results as a Markdown table with a one-paragraph header."""
    m = report["machine"]
    lines = [
        f"Batch benchmark, {report['date_utc']}: {report['n_images']} images "
        f"{report['size_px']}x{report['size_px']} px, window {report['window_px']} px "
        f"({report['n_windows_per_image']} windows each), detector **{report['detector']}**"
        + (f" (weights sha256 {report['weights_sha256'][:12]})" if report["weights_sha256"] else "")
        + f"; {m['cpu']}, {m['cpu_count']} CPUs, load average {m['load_avg_1min_start']} at the "
        "start.",
        "",
        "| workers | start-up [s] | batch [s] | files/s | speed-up vs 1 worker | efficiency |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        startup = "-" if r.get("startup_s") is None else r["startup_s"]
        who = "plain loop, no Dask" if r["workers"] == "serial" else r["workers"]
        lines.append(
            f"| {who} | {startup} | {r['batch_s']} | {r['files_per_s']} | "
            f"{r.get('speedup', '-')} | {r.get('efficiency', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--size", type=int, default=1024, help="image side [px]")
    ap.add_argument("--window", type=int, default=256, help="window side [px]")
    ap.add_argument(
        "--detector",
        default="auto",
        choices=("auto", "classical", "unet"),
        help="auto (default): the U-Net when models/unet_spots.pt exists, else classical",
    )
    ap.add_argument("--weights", type=Path, default=None, help="U-Net weights (default models/)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--serial", action="store_true", help="also time a plain loop in this process (no Dask)"
    )
    ap.add_argument("--scheduler", default=None, help="tcp://HOST:PORT of a running cluster")
    ap.add_argument("--data", type=Path, default=None, help="image folder (default: temporary)")
    ap.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "results",
        help="folder for NAME.json and NAME.md (default benchmarks/results)",
    )
    ap.add_argument("--name", default="batch", help="base name of the result files (default batch)")
    ap.add_argument("--no-write", action="store_true", help="print only, write no result files")
    args = ap.parse_args(argv)

    from hrtem_core.analysis import AnalysisParams
    from hrtem_core.batch import sha256_file
    from hrtem_core.windows import window_grid

    detector, weights = resolve_detector(args.detector, args.weights)
    params = AnalysisParams(window_px=args.window, detector=detector)
    settings = make_settings(params, pixel_size_nm=PIXEL_SIZE_NM, weights_path=weights)
    load_start = _load_average()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="hrtem_bench_") as tmp:
        work = Path(tmp)
        data = args.data or work / "images"
        t0 = time.perf_counter()
        files = make_images(data, args.n_images, size=args.size)
        gen_s = time.perf_counter() - t0
        print(
            f"{args.n_images} images {args.size}x{args.size} px in {data} "
            f"({gen_s:.1f} s to generate); window {args.window} px, {detector} detector",
            file=sys.stderr,
        )
        runs = []
        if args.scheduler:
            t1 = time.perf_counter()
            result = run_batch(
                [data], settings=settings, out_dir=work / "out_remote", scheduler=args.scheduler
            )
            batch_s = time.perf_counter() - t1
            runs.append(
                {
                    "workers": result.n_workers,
                    "scheduler": args.scheduler,
                    "batch_s": round(batch_s, 2),
                    "files_per_s": round(result.n_files / batch_s, 3),
                    "n_files": result.n_files,
                    "n_failed": result.n_failed,
                }
            )
        else:
            if args.serial:
                runs.append(bench_serial(files, settings))
                print(json.dumps(runs[-1]), file=sys.stderr)
            for n in args.workers:
                runs.append(bench_local(data, settings, n, work))
                print(json.dumps(runs[-1]), file=sys.stderr)
    # speed-up and efficiency against the first Dask run (1 worker by default)
    dask_runs = [r for r in runs if r["workers"] != "serial"]
    base = dask_runs[0]
    for r in dask_runs:
        r["speedup"] = round(base["batch_s"] / r["batch_s"], 2)
        r["efficiency"] = round(r["speedup"] * base["workers"] / r["workers"], 2)
    grid = window_grid((args.size, args.size), window_px=args.window)
    report = {
        "date_utc": date,
        "machine": {
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1min_start": None if load_start is None else round(load_start, 2),
        },
        "n_images": args.n_images,
        "size_px": args.size,
        "window_px": args.window,
        "n_windows_per_image": int(grid.n_windows),
        "detector": detector,
        "weights": None if weights is None else str(weights),
        "weights_sha256": None if weights is None else sha256_file(weights),
        "runs": runs,
    }
    text = markdown(report)
    print(text)
    if not args.no_write:
        args.results.mkdir(parents=True, exist_ok=True)
        targets = (args.results / f"{args.name}.json", args.results / f"{args.name}.md")
        targets[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        targets[1].write_text(text, encoding="utf-8")
        print(f"written: {targets[0]}, {targets[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
