"""Benchmark of ``hrtem_core.batch``: the same image set with 1, 2, ... local Dask workers.

    python benchmarks/bench_batch.py                     # 64 images 1024x1024, 1 and 2 workers
    python benchmarks/bench_batch.py --workers 1 2 4 8   # more worker counts
    python benchmarks/bench_batch.py --scheduler tcp://HOST:8786 --data /shared/bench

Generates ``--n-images`` synthetic lattice images (two crossed fringe sets in a round particle on
an amorphous, noisy background; fixed seed) into a temporary folder (or ``--data``), then for
each worker count starts a LocalCluster (processes, one thread each), imports the analysis on
every worker (timed as start-up), and runs :func:`hrtem_core.batch.run_batch` into a fresh
output folder (timed as the batch). Prints a Markdown table and writes JSON to ``--json``.
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

import numpy as np

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


def _warm_up() -> None:
    import hrtem_core.analysis  # noqa: F401


def bench_local(data: Path, settings, workers: int, work: Path) -> dict:
    """One timed run on a fresh LocalCluster with ``workers`` processes."""
    from distributed import Client

    load_before = _load_average()
    t0 = time.perf_counter()
    cluster = local_cluster(workers)
    client = Client(cluster)
    client.run(_warm_up)  # imports on every worker: start-up cost, not batch time
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
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": _load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--size", type=int, default=1024, help="image side [px]")
    ap.add_argument("--window", type=int, default=256, help="window side [px]")
    ap.add_argument("--detector", default="classical", choices=("classical", "unet"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--scheduler", default=None, help="tcp://HOST:PORT of a running cluster")
    ap.add_argument("--data", type=Path, default=None, help="image folder (default: temporary)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)

    from hrtem_core.analysis import AnalysisParams

    params = AnalysisParams(window_px=args.window, detector=args.detector)
    settings = make_settings(params, pixel_size_nm=PIXEL_SIZE_NM)
    with tempfile.TemporaryDirectory(prefix="hrtem_bench_") as tmp:
        work = Path(tmp)
        data = args.data or work / "images"
        t0 = time.perf_counter()
        make_images(data, args.n_images, size=args.size)
        gen_s = time.perf_counter() - t0
        print(
            f"{args.n_images} images {args.size}x{args.size} px in {data} "
            f"({gen_s:.1f} s to generate); window {args.window} px, {args.detector} detector",
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
            for n in args.workers:
                runs.append(bench_local(data, settings, n, work))
                print(json.dumps(runs[-1]), file=sys.stderr)
    base = runs[0]["batch_s"] * runs[0]["workers"]
    for r in runs:
        r["speedup_vs_first"] = round(runs[0]["batch_s"] / r["batch_s"], 2)
        r["efficiency"] = round(base / (r["batch_s"] * r["workers"]), 2)
    report = {
        "machine": {
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "n_images": args.n_images,
        "size_px": args.size,
        "window_px": args.window,
        "detector": args.detector,
        "runs": runs,
    }
    print("| workers | start-up [s] | batch [s] | files/s | speed-up | efficiency |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['workers']} | {r.get('startup_s', '-')} | {r['batch_s']} | "
            f"{r['files_per_s']} | {r['speedup_vs_first']} | {r['efficiency']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
