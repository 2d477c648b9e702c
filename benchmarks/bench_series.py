"""Benchmark of a defocus series: N images of S x S pixels at w = 256, s = 128 (issue 6 target).

    python benchmarks/bench_series.py                        # 19 images 2048x2048, 1 and 2 workers
    python benchmarks/bench_series.py --workers 1            # one process only
    python benchmarks/bench_series.py --detector classical   # force the classical detector
    python benchmarks/bench_series.py --n-images 5 --size 1024   # a quick run
    python benchmarks/bench_series.py --accuracy --detector unet # indexing accuracy, bundled series

Target (issue 6): 19 images of 2048 x 2048 at w = 256, s = 128 in <= 20 s on 2 CPU cores.

Images: a maghemite [110] particle (from ``data/pdf_cards.xlsx``) filling about half of the field,
made of every in-zone reflection with d >= 0.18 nm; each reflection's contrast follows the
weak-phase transfer ``sin(chi(g, defocus)) E_t(g)`` of a 300 kV, Cs = 1.2 mm microscope at the
image's defocus (-18 ... +18 nm in 2 nm steps for 19 images), on an amorphous background with shot
noise (fixed seed). Generating them is not timed.

Timed, all in this process unless ``--workers`` > 1:

* ``baseline``: the bare batched FFT of every window of every image (extraction, mean
  subtraction, Hann apodization, ``scipy.fft.rfft2`` magnitude; :func:`hrtem_core.windows.window_spectra`)
  -- the least any window-based analysis must do;
* ``series``: :func:`hrtem_core.analysis.analyze_series` (spots, indexing against the enabled
  phases, tables, profile), with the card tables built once (included) and the U-Net loaded
  once (included when the detector is the U-Net).

The report gives absolute seconds and the ratio ``series / baseline`` of the same run (a busy
machine slows both). The detector is the U-Net when ``models/unet_spots.pt`` exists, else the
classical one. Results: ``benchmarks/results/series.json`` and ``series.md`` for the U-Net,
``series.classical.json`` and ``series.classical.md`` for the classical detector.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hrtem_core import __version__  # noqa: E402
from hrtem_core.analysis import AnalysisParams, analyze_series  # noqa: E402
from hrtem_core.cards import load_cards  # noqa: E402
from hrtem_core.crystallography import zone_reflections  # noqa: E402
from hrtem_core.io import Micrograph  # noqa: E402
from hrtem_core.windows import iter_window_batches, window_grid, window_spectra  # noqa: E402

PIXEL_SIZE_NM = 0.02
WAVELENGTH_NM = 0.0019687  # 300 kV
CS_NM = 1.2e6  # 1.2 mm
FOCAL_SPREAD_NM = 3.0


def zone_g_vectors(card_id: str, uvw: tuple[int, int, int], d_min_nm: float) -> np.ndarray:
    """In-plane g vectors (gy, gx) [1/nm] of every in-zone reflection of a card, shape (m, 2)."""
    phase = load_cards().phase(card_id)
    refl = zone_reflections(phase.cell, phase.space_group, uvw, d_min_nm=d_min_nm)
    hkl = np.array([h for h, _ in refl], dtype=float)
    g3 = np.asarray(phase.cell.reciprocal_cartesian(hkl), dtype=float)
    zone = np.asarray(phase.cell.direct_cartesian(np.asarray(uvw, dtype=float)), dtype=float)
    zone /= np.linalg.norm(zone)
    e1 = g3[0] - (g3[0] @ zone) * zone
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(zone, e1)
    return np.stack([g3 @ e2, g3 @ e1], axis=1)


def series_image(
    g: np.ndarray, defocus_nm: float, *, size: int, rng: np.random.Generator
) -> np.ndarray:
    """One image of the series (see the module docstring), shape (size, size) float32."""
    axis = np.arange(size, dtype=np.float64) * PIXEL_SIZE_NM
    rot = math.radians(20.0)
    c, s = math.cos(rot), math.sin(rot)
    gr = np.stack([c * g[:, 0] - s * g[:, 1], s * g[:, 0] + c * g[:, 1]], axis=1)
    q = np.hypot(gr[:, 0], gr[:, 1])
    chi = np.pi * WAVELENGTH_NM * defocus_nm * q**2 + 0.5 * np.pi * CS_NM * WAVELENGTH_NM**3 * q**4
    env = np.exp(-0.5 * (np.pi * WAVELENGTH_NM * FOCAL_SPREAD_NM * q**2) ** 2)
    amp = np.sin(chi) * env / np.maximum(q, 1.0)
    # sum_g a_g cos(2 pi (gy y + gx x)) = Cy diag(a) Cx^T - Sy diag(a) Sx^T (two matrix products)
    py = 2 * np.pi * np.outer(axis, gr[:, 0])
    px = 2 * np.pi * np.outer(axis, gr[:, 1])
    lattice = ((np.cos(py) * amp) @ np.cos(px).T - (np.sin(py) * amp) @ np.sin(px).T).astype(
        np.float32
    )
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    r = np.hypot(yy - size * PIXEL_SIZE_NM / 2, xx - size * PIXEL_SIZE_NM / 2)
    particle = (r <= 0.35 * size * PIXEL_SIZE_NM).astype(np.float32)
    amorphous = rng.normal(size=(size, size)).astype(np.float32)
    from scipy.ndimage import gaussian_filter

    amorphous = gaussian_filter(amorphous, 1.5)
    amorphous *= np.float32(0.3 / amorphous.std())
    lattice *= np.float32(1.0 / max(float(lattice.std()), 1e-12))
    # Fringe contrast 0.5 (the defocus changes which reflections carry it), amorphous 0.3, and
    # 500 counts per pixel of shot noise.
    counts = 500.0 * (1.0 + 0.5 * particle * lattice + amorphous)
    return rng.poisson(np.clip(counts, 0, None)).astype(np.float32)


def baseline_fft(images: list[np.ndarray], *, window_px: int, stride_px: int) -> float:
    """Seconds for the bare batched FFT magnitude of every window of every image."""
    t0 = time.perf_counter()
    for img in images:
        grid = window_grid(img.shape, window_px=window_px, stride_px=stride_px)
        for _idx, wins in iter_window_batches(img, grid, batch_size=256):
            window_spectra(wins)
    return time.perf_counter() - t0


def accuracy_on_bundled_series(
    detector: str, *, window_px: int = 256, stride_px: int = 128
) -> dict:
    """Indexing accuracy on the bundled series ``data/examples/focal_series`` against truth.json.

    Every image of the series (8 maghemite particles in [110], [100], [211], [111]) is analysed
    against the enabled phases. A window's particle is the one covering most of it; the
    counts are over the whole series:

    * ``angle_confirmed``: windows ``indexed`` or ``ambiguous``;
    * ``true_first``: of those, the share whose best match is the true card;
    * ``first_or_listed``: ... best match, or listed in an ``ambiguous`` window's alternatives;
    * ``zone_right``: of the windows headed by the true card, the share whose zone axis is a
      member of the particle's zone-axis family;
    * ``iou``: crystalline windows vs windows more than half covered by a particle (windows
      covered by 0-50 % ignored), pooled over the series;
    * ``crystalline``, ``spacing_only``, ``true_first_all``, ``first_or_listed_all``: the same
      over every crystalline window (``spacing-only`` ones list candidates, so "listed" there
      means the true card is among the alternatives).
    """
    from hrtem_core.crystallography import family_members
    from hrtem_core.io import load_image

    folder = REPO / "data" / "examples" / "focal_series"
    truth = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    card = truth["card_id"]
    cards = load_cards()
    phase = cards.phase(card)
    params = AnalysisParams(window_px=window_px, stride_px=stride_px, detector=detector)
    model = None
    if detector == "unet":
        from hrtem_core.unet.load import load_model

        model = load_model()
    tot = dict.fromkeys(
        ["angle_confirmed", "top", "listed", "zone_ok", "inter", "union", "crystalline",
         "spacing_only", "top_all", "listed_all"],
        0,
    )  # fmt: skip
    t0 = time.perf_counter()
    for fname in sorted(truth["files"], key=lambda f: truth["files"][f]["defocus_nm"]):
        info = truth["files"][fname]
        particles = truth.get("particles") or info["particles"]
        m = load_image(folder / fname)
        res = analyze_series([m], params=params, cards=cards, model=model).results[0]
        grid = res.grid
        yy, xx = np.mgrid[0 : m.data.shape[0], 0 : m.data.shape[1]]
        w = grid.window_px
        cov = np.stack(
            [
                np.array([disc[r : r + w, c : c + w].mean() for r, c in grid.origins])
                for disc in (
                    (yy - p["center_px"][0]) ** 2 + (xx - p["center_px"][1]) ** 2
                    <= p["radius_px"] ** 2
                    for p in particles
                )
            ],
            axis=1,
        )
        covered = np.clip(cov.sum(axis=1), 0.0, 1.0)
        cryst = res.windows["crystalline"].to_numpy(dtype=bool)
        truth_w = covered > 0.5
        keep = truth_w | (covered == 0)
        tot["inter"] += int((cryst & truth_w & keep).sum())
        tot["union"] += int(((cryst | truth_w) & keep).sum())
        win = res.windows.assign(dominant=cov.argmax(axis=1))
        alts = win["alternatives"].fillna("").astype(str)
        top_all = win["phase_card"] == card
        listed_all = top_all | (
            win["status"].isin(["ambiguous", "spacing-only"]) & alts.str.contains(card)
        )
        c = win["crystalline"].astype(bool)
        tot["crystalline"] += int(c.sum())
        tot["spacing_only"] += int((win["status"] == "spacing-only").sum())
        tot["top_all"] += int((top_all & c).sum())
        tot["listed_all"] += int((listed_all & c).sum())
        conf = win["status"].isin(["indexed", "ambiguous"])
        tot["angle_confirmed"] += int(conf.sum())
        tot["top"] += int((top_all & conf).sum())
        tot["listed"] += int((listed_all & conf).sum())
        for row in win[top_all & conf].itertuples(index=False):
            z = tuple(int(v) for v in row.zone_axis.split())
            zt = tuple(particles[row.dominant]["zone_axis"])
            tot["zone_ok"] += int(z in {tuple(v) for v in family_members(phase.space_group, zt)})
    n = max(tot["angle_confirmed"], 1)
    return {
        "detector": detector,
        "n_images": len(truth["files"]),
        "window_px": window_px,
        "stride_px": stride_px,
        "angle_confirmed": tot["angle_confirmed"],
        "true_first": tot["top"] / n,
        "first_or_listed": tot["listed"] / n,
        "zone_right": tot["zone_ok"] / max(tot["top"], 1),
        "iou": tot["inter"] / max(tot["union"], 1),
        "crystalline": tot["crystalline"],
        "spacing_only": tot["spacing_only"],
        "true_first_all": tot["top_all"] / max(tot["crystalline"], 1),
        "first_or_listed_all": tot["listed_all"] / max(tot["crystalline"], 1),
        "elapsed_s": round(time.perf_counter() - t0, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-images", type=int, default=19)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--detector", choices=("auto", "unet", "classical"), default="auto")
    ap.add_argument("--repeat", type=int, default=1, help="timed repetitions (the best is kept)")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument(
        "--accuracy",
        action="store_true",
        help="instead of timing: indexing accuracy on the bundled series against its truth",
    )
    args = ap.parse_args(argv)

    detector = args.detector
    if detector == "auto":
        detector = "unet" if (REPO / "models" / "unet_spots.pt").is_file() else "classical"
    if args.accuracy:
        acc = accuracy_on_bundled_series(detector)
        out = Path(args.results)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"series.accuracy.{detector}.json"
        path.write_text(json.dumps(acc, indent=1), encoding="utf-8")
        print(json.dumps(acc, indent=1))
        return 0
    defoci = [-18.0 + 36.0 * i / max(args.n_images - 1, 1) for i in range(args.n_images)]
    rng = np.random.default_rng(0)
    g = zone_g_vectors("39-1346", (1, 1, 0), 0.18)
    t0 = time.perf_counter()
    images = [series_image(g, df, size=args.size, rng=rng) for df in defoci]
    print(
        f"generated {len(images)} images {args.size}x{args.size} in {time.perf_counter() - t0:.1f} s"
    )
    mics = [
        Micrograph(
            data=img,
            pixel_size_nm=(PIXEL_SIZE_NM, PIXEL_SIZE_NM),
            reader="bench",
            metadata={},
            warnings=(),
            name=f"bench_df{df:+.0f}nm.tif",
            defocus_nm=df,
        )
        for img, df in zip(images, defoci, strict=True)
    ]
    params = AnalysisParams(window_px=args.window, stride_px=args.stride, detector=detector)
    cards = load_cards()
    n_windows = window_grid(images[0].shape, window_px=args.window, stride_px=args.stride).n_windows

    rows = []
    for workers in args.workers:
        base = min(
            baseline_fft(images, window_px=args.window, stride_px=args.stride)
            for _ in range(args.repeat)
        )
        best = math.inf
        series = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            series = analyze_series(mics, params=params, cards=cards, workers=workers)
            best = min(best, time.perf_counter() - t0)
        prof = series.profile
        rows.append(
            {
                "workers": workers,
                "series_s": round(best, 3),
                "baseline_fft_s": round(base, 3),
                "ratio": round(best / base, 2),
                "ms_per_window": round(1e3 * best / (n_windows * len(images)), 3),
                "best_focus_nm": series.best_focus_nm,
                "mean_crystallinity": round(float(prof["crystallinity"].mean()), 4),
            }
        )
        r = rows[-1]
        print(
            f"workers={workers}: series {r['series_s']:.2f} s, bare FFT {r['baseline_fft_s']:.2f} s, "
            f"ratio {r['ratio']:.1f}, {r['ms_per_window']:.2f} ms/window, best focus "
            f"{r['best_focus_nm']} nm",
            flush=True,
        )

    info = {
        "benchmark": "bench_series",
        "version": __version__,
        "n_images": len(images),
        "size_px": args.size,
        "window_px": args.window,
        "stride_px": args.stride,
        "windows_per_image": n_windows,
        "detector": detector,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "target_s": 20.0,
        "runs": rows,
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = "series" if detector == "unet" else f"series.{detector}"
    (out / f"{stem}.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    md = [
        f"{len(images)} images {args.size}x{args.size}, w = {args.window}, s = {args.stride} "
        f"({n_windows} windows each), detector {detector}, {os.cpu_count()} CPUs, load average "
        f"{info['load_average'][0] if info['load_average'] else 'n/a'}",
        "",
        "| workers | series [s] | bare batched FFT [s] | ratio | ms / window |",
        "|---:|---:|---:|---:|---:|",
        *[
            f"| {r['workers']} | {r['series_s']:.2f} | {r['baseline_fft_s']:.2f} | "
            f"{r['ratio']:.1f} | {r['ms_per_window']:.2f} |"
            for r in rows
        ],
    ]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
