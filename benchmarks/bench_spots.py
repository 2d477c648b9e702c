"""Speed and memory of spot detection on one large image: array -> spot pairs with the U-Net.

    python benchmarks/bench_spots.py                  # 2048 x 2048, w = 256, s = 64 (841 windows)
    python benchmarks/bench_spots.py --cores 2 --repeats 5 --detector classical

A synthetic 2048 x 2048 micrograph (round crystalline particles with one or two fringe sets on an
amorphous, Poisson-noisy background; fixed seed) is cut into ``w = 256`` windows with stride
``s = 64`` (841 windows) and run through :func:`hrtem_core.spots.detect_pairs_in_image` (Hann
apodization, band FFT with the row transforms shared by overlapping windows, log band, U-Net on
the 64 x 64 band -- in bfloat16 on a CPU with native bfloat16, see ``--precision`` -- connected
components, sub-pixel refinement, Friedel pairs, harmonics) -- from the float32 array to the spot
pairs of every window. The process is pinned to ``--cores`` CPU cores (``sched_setaffinity``),
torch uses that many threads and ``scipy.fft`` that many workers.

Baseline, measured in the same run and interleaved with the pipeline (so a busy machine slows
both alike): the *bare batched FFT* of the same 841 windows, ``scipy.fft.rfft2`` over the
(841, 256, 256) float32 stack of already extracted windows, without apodization or magnitude. The
report gives the best (minimum) of ``--repeats`` runs of each and their ratio (goal <= 5), the
medians too, and the absolute figure (target <= 1.5 s on 2 cores). The ratio is taken of the
best runs (as ``timeit`` advises): the bare FFT writes a fresh 0.2 GB result each time, and on
this shared machine its page faults alone made single runs vary from 0.063 to 0.27 s, which
would let a median ratio swing between 2 and 8 from noise.

Memory: the peak of Python/numpy allocations during one pipeline run (``tracemalloc``) and the
process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before and after
it; the pipeline runs before the baseline ever allocates its 0.4 GB of windows and spectra, so the
peak RSS after the pipeline is the pipeline's (plus the interpreter, numpy, scipy and torch).

Prints a Markdown summary and writes ``benchmarks/results/bench_spots.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _pin_cores(n: int) -> list[int]:
    """Restrict this process to ``n`` of its allowed CPU cores; returns the cores used."""
    allowed = sorted(os.sched_getaffinity(0))
    use = allowed[: max(1, min(n, len(allowed)))]
    os.sched_setaffinity(0, use)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(len(use))
    return use


def make_image(
    seed: int = 0, *, size: int = 2048, pixel_size_nm: float = 0.02, dose_e_per_px: float = 60.0
):
    """A synthetic micrograph: crystalline particles on amorphous carbon, Poisson noise.

    Parameters
    ----------
    seed : int
        Seed of the image.
    size : int, keyword-only
        Side of the square image [px].
    pixel_size_nm : float, keyword-only
        Pixel size [nm/px].
    dose_e_per_px : float, keyword-only
        Mean electrons per pixel.

    Returns
    -------
    image : ndarray, shape (size, size), float32
        Counts.
    n_particles : int
    """
    import numpy as np
    import scipy.ndimage as ndi

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    amorph = ndi.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 1.5)
    img = 1.0 + 0.08 * amorph / amorph.std()
    n_particles = 0
    for _ in range(int(rng.integers(8, 13))):
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(120, 320)
        inside = np.hypot(yy - cy, xx - cx) < radius
        if not inside.any():
            continue
        n_particles += 1
        for j in range(int(rng.integers(1, 3))):
            d_nm = rng.uniform(0.14, 0.45)
            ang = np.radians(rng.uniform(0, 180) + 60.0 * j)
            gy, gx = -np.sin(ang) / d_nm, np.cos(ang) / d_nm  # [1/nm], y down
            phase = 2 * np.pi * pixel_size_nm * (gy * yy + gx * xx) + rng.uniform(0, 2 * np.pi)
            img += np.where(inside, rng.uniform(0.04, 0.15) * np.cos(phase), 0.0).astype(np.float32)
    counts = rng.poisson(np.clip(img, 0.0, None) * dose_e_per_px).astype(np.float32)
    return counts, n_particles


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="image side [px]")
    ap.add_argument("--window", type=int, default=256, help="window side w [px]")
    ap.add_argument("--stride", type=int, default=64, help="stride s [px]")
    ap.add_argument("--pixel-size", type=float, default=0.02, help="pixel size [nm/px]")
    ap.add_argument("--cores", type=int, default=2, help="CPU cores to pin the process to")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--detector", default="unet", choices=("unet", "classical"))
    ap.add_argument("--weights", type=Path, default=None, help="U-Net weights (default shipped)")
    ap.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="U-Net arithmetic (auto: bfloat16 on a CPU with native bfloat16)",
    )
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)

    cores = _pin_cores(args.cores)

    import numpy as np
    import scipy
    import scipy.fft
    import torch

    from hrtem_core.spots import detect_pairs_in_image
    from hrtem_core.unet.load import load_model
    from hrtem_core.windows import extract_windows, window_grid

    torch.set_num_threads(len(cores))
    nthreads = len(cores)
    image, n_particles = make_image(0, size=args.size, pixel_size_nm=args.pixel_size)
    grid = window_grid(image.shape, window_px=args.window, stride_px=args.stride)
    p = (args.pixel_size, args.pixel_size)
    t0 = time.perf_counter()
    model = (
        load_model(args.weights, device="cpu", precision=args.precision)
        if args.detector == "unet"
        else None
    )
    t_load = time.perf_counter() - t0

    def pipeline():
        return detect_pairs_in_image(
            image, grid, pixel_size_nm=p, detector=args.detector, model=model, workers=nthreads
        )

    # Warm-up on a small image (imports, FFT plans, torch kernels), not on the full one.
    small = image[: args.window + args.stride, : args.window + args.stride]
    detect_pairs_in_image(
        small,
        window_grid(small.shape, window_px=args.window, stride_px=args.stride),
        pixel_size_nm=p,
        detector=args.detector,
        model=model,
        workers=nthreads,
    )

    # 1. One pipeline run under tracemalloc, before anything else allocates large arrays.
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tracemalloc.start()
    pairs = pipeline()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    # 2. Timings, pipeline and bare batched FFT interleaved.
    windows = extract_windows(image, grid)
    scipy.fft.rfft2(windows[:8], axes=(-2, -1), workers=nthreads)
    t_pipe, t_fft = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pipeline()
        t_pipe.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        spec = scipy.fft.rfft2(windows, axes=(-2, -1), workers=nthreads)
        t_fft.append(time.perf_counter() - t0)
        del spec

    n_pairs = sum(len(q) for q in pairs)
    med_pipe = float(np.median(t_pipe))
    med_fft = float(np.median(t_fft))
    best_pipe = float(np.min(t_pipe))
    best_fft = float(np.min(t_fft))
    res = {
        "image_px": [args.size, args.size],
        "window_px": args.window,
        "stride_px": args.stride,
        "windows": grid.n_windows,
        "pixel_size_nm": args.pixel_size,
        "particles": n_particles,
        "detector": args.detector,
        "windows_with_pairs": int(sum(1 for q in pairs if q)),
        "pairs": n_pairs,
        "cores": len(cores),
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "model_load_s": round(t_load, 3),
        "pipeline_s": [round(t, 3) for t in t_pipe],
        "bare_fft_s": [round(t, 3) for t in t_fft],
        "pipeline_best_s": round(best_pipe, 3),
        "bare_fft_best_s": round(best_fft, 3),
        "ratio_to_bare_fft": round(best_pipe / best_fft, 2),
        "pipeline_median_s": round(med_pipe, 3),
        "bare_fft_median_s": round(med_fft, 3),
        "ratio_of_medians": round(med_pipe / med_fft, 2),
        "windows_per_s": round(grid.n_windows / best_pipe, 1),
        "unet_precision": str(model.dtype).removeprefix("torch.") if model is not None else None,
        "tracemalloc_peak_mb": round(traced_peak / 2**20, 1),
        "maxrss_before_mb": round(rss_before_mb, 1),
        "maxrss_after_pipeline_mb": round(rss_after_mb, 1),
        "targets": {"pipeline_s": 1.5, "ratio_to_bare_fft": 5.0, "peak_memory_mb": 1536},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "torch": torch.__version__,
        },
        "cpu": platform.processor() or platform.machine(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    md = "\n".join(
        [
            f"## Spot detection speed ({res['date_utc']})",
            "",
            f"{args.size} x {args.size} image, w = {args.window}, s = {args.stride} "
            f"({grid.n_windows} windows), detector `{args.detector}`"
            + (f" in {res['unet_precision']}" if res["unet_precision"] else "")
            + f", {len(cores)} cores (load average {res['load_average'][0]} at the end), "
            f"{args.repeats} runs each, interleaved:",
            "",
            "| step | best [s] | median [s] | target |",
            "|---|---:|---:|---:|",
            f"| array -> spot pairs (whole pipeline) | {best_pipe:.3f} | {med_pipe:.3f} | <= 1.5 |",
            f"| bare batched FFT (`scipy.fft.rfft2`, same windows) | {best_fft:.3f} | "
            f"{med_fft:.3f} | |",
            f"| ratio pipeline / bare FFT | {best_pipe / best_fft:.2f} | "
            f"{med_pipe / med_fft:.2f} | <= 5 (best) |",
            "",
            f"Peak memory: {res['tracemalloc_peak_mb']} MB of numpy/Python allocations during "
            f"the pipeline (tracemalloc); process peak RSS {res['maxrss_after_pipeline_mb']} MB "
            f"after it ({res['maxrss_before_mb']} MB before: interpreter, numpy, scipy, torch, "
            f"model, image). {res['windows_with_pairs']} windows hold {n_pairs} spot pairs.",
            "",
        ]
    )
    print(md)
    print(json.dumps(res, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "bench_spots" if args.detector == "unet" else f"bench_spots_{args.detector}"
    if args.detector == "unet" and args.precision != "auto":
        stem += f"_{args.precision}"
    (args.results / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (args.results / f"{stem}.md").write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
