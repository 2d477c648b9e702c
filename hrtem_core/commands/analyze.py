"""``python -m hrtem_core analyze IMAGE [options] [--out DIR]``: analyse one micrograph.

Writes into DIR (default ``<image stem>_analysis`` in the current folder):

* ``windows.csv`` -- one row per window (:data:`hrtem_core.analysis.WINDOW_COLUMNS`);
* ``summary.json`` -- crystallinity, crystalline area fraction, phases, parameters, timing;
* ``results.xlsx`` -- sheets windows, phases, families, summary, parameters (with the version);
* ``plane_map.html`` (interactive, plotly) and ``plane_map.png`` (static);
* ``particles.csv`` -- one row per particle (:data:`hrtem_core.particles.PARTICLE_COLUMNS`),
  also a ``particles`` sheet in ``results.xlsx`` and a ``particles`` list in ``summary.json``,
  with ``defocus_estimate_nm`` and its uncertainty from the Thon rings.

Prints one line on stdout: the crystallinity and the output folder. Progress bar on stderr.
Bad input: exit code 2 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrtem_core._files import safe_name
from hrtem_core.commands._options import (
    ProgressBar,
    add_analysis_options,
    calibrated,
    cards_from_args,
    check_image_path,
    params_from_args,
    pixel_size_from_args,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``analyze`` sub-command."""
    parser = sub.add_parser(
        "analyze",
        help="analyse one image: crystallinity, phases, plane map",
        description=(
            "Analyse one HRTEM image with moving windows: Bragg-spot pairs in each window's FFT, "
            "lattice spacings and interplanar angles indexed against PDF cards (phase, hkl, zone "
            "axis), crystallinity and the plane-distribution map. Writes windows.csv, "
            "summary.json, results.xlsx, plane_map.html and plane_map.png into --out."
        ),
    )
    parser.add_argument("image", help="the image file (dm3/dm4, ser, emd, mrc, tif, png, ...)")
    add_analysis_options(parser)
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: <image stem>_analysis in the current folder)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``analyze``; return the exit code."""
    from hrtem_core.analysis.image import analyze_image, load_spot_model
    from hrtem_core.export import export_analysis
    from hrtem_core.io import load_image

    path = check_image_path(args.image)
    params = params_from_args(args)
    cards = cards_from_args(args)
    pixel = pixel_size_from_args(args)
    micrograph = calibrated(load_image(path, pixel_size_nm=pixel, frame=args.frame), args)
    for w in micrograph.warnings:
        sys.stderr.write(f"warning: {micrograph.name}: {w}\n")
    model = load_spot_model(None, params.detector)
    out = (
        Path(args.out)
        if args.out
        else Path.cwd() / f"{safe_name(Path(micrograph.name).stem, fallback='image')}_analysis"
    )
    with ProgressBar(
        total=1.0, desc=micrograph.name, unit="image", enabled=not args.no_progress
    ) as bar:
        result = analyze_image(micrograph, params=params, cards=cards, model=model, progress=bar)
    from hrtem_core.particles import image_particles  # issue 22: particles + defocus estimate

    extras = image_particles(
        result, micrograph.data, metadata=micrograph.metadata, cards=cards, model=model
    )
    for w in filter(None, [extras.disagreement]):
        sys.stderr.write(f"warning: {micrograph.name}: {w}\n")
    export_analysis(result, out, image=micrograph.data, particles=extras)
    s = result.summary
    sys.stdout.write(
        f"{micrograph.name}: crystallinity {s['crystallinity']:.3f} "
        f"({s['n_crystalline']}/{s['n_windows']} windows), area fraction "
        f"{s['crystalline_area_fraction']:.3f}, {s['elapsed_s']:.2f} s -> {out}\n"
    )
    return 0


__all__ = ["add_parser", "run"]
