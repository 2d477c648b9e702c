"""``python -m hrtem_core calibrate IMAGE --card ID [options] [--json FILE]``: measure an image's
scan distortion on a crystal it is known to show.

Analyses the image with the card enabled, fits the symmetric stretch ``S`` (``x_true = S x_img``)
that puts every plane the card indexes on its card spacing, corrects the image with it and
repeats until ``S`` settles (:func:`hrtem_core.distortion.calibrate_distortion`). Prints one line
describing the distortion, then the option to pass to ``analyze``, ``series`` or ``batch``
(``--distortion SXX,SXY,SYY``) for images taken in the same conditions. ``S`` includes the
isotropic scale: it replaces a lattice calibration of the pixel size. ``--json`` also writes the
fit. Bad input: exit code 2 and one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hrtem_core.commands._options import (
    ProgressBar,
    add_analysis_options,
    cards_from_args,
    check_image_path,
    params_from_args,
    pixel_size_from_args,
)
from hrtem_core.errors import AnalysisParameterError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``calibrate`` sub-command."""
    parser = sub.add_parser(
        "calibrate",
        help="measure an image's scan distortion on a known crystal (for --distortion)",
        description=(
            "Measure the scan (or lens) distortion of an image of a known crystal: the "
            "symmetric stretch S, x_true = S x_image, that puts the planes the card indexes on "
            "their card spacings. Prints the value to pass as --distortion to analyze, series "
            "and batch."
        ),
    )
    parser.add_argument("image", help="the image file (dm3/dm4, ser, emd, mrc, tif, png, ...)")
    parser.add_argument(
        "--card", required=True, metavar="ID", help="card id of the crystal the image shows"
    )
    parser.add_argument(
        "--json", default=None, metavar="FILE", help="also write the fit as JSON to FILE"
    )
    add_analysis_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``calibrate``; return the exit code."""
    from hrtem_core.analysis.image import analyze_image, load_spot_model
    from hrtem_core.distortion import calibrate_distortion
    from hrtem_core.io import load_image

    if args.distortion is not None:
        raise AnalysisParameterError(
            "calibrate measures the distortion: leave --distortion out (it starts from the "
            "file's calibration, or --pixel-size-nm)"
        )
    path = check_image_path(args.image)
    params = params_from_args(args)
    cards = cards_from_args(args)
    card = cards.phase(args.card)  # an unknown id: one-line CardDatabaseError
    params = params.with_phase(card.card_id)
    micrograph = load_image(path, pixel_size_nm=pixel_size_from_args(args), frame=args.frame)
    for w in micrograph.warnings:
        sys.stderr.write(f"warning: {micrograph.name}: {w}\n")
    model = load_spot_model(None, params.detector)

    def analyze(m):
        return analyze_image(m, params=params, cards=cards, model=model)

    with ProgressBar(
        total=1.0, desc=micrograph.name, unit="fit", enabled=not args.no_progress
    ) as bar:
        fit = calibrate_distortion(micrograph, card.card_id, analyze=analyze, progress=bar)
    sys.stdout.write(f"{micrograph.name}: {fit.describe()}, {fit.n_iterations} rounds\n")
    sys.stdout.write(f"--distortion {fit.as_option()}\n")
    if args.json:
        payload = {
            "image": micrograph.name,
            "pixel_size_nm": list(micrograph.pixel_size_nm),
            "card_id": fit.card_id,
            "stretch_sxx_sxy_syy": list(fit.stretch),
            "scale": fit.scale,
            "principal_stretches": list(fit.principal[:2]),
            "principal_angle_deg": fit.principal[2],
            "n_planes": fit.n_planes,
            "n_windows": fit.n_windows,
            "n_directions": fit.n_directions,
            "rms_before_rel": fit.rms_before_rel,
            "rms_after_rel": fit.rms_after_rel,
            "n_iterations": fit.n_iterations,
            "option": f"--distortion {fit.as_option()}",
        }
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


__all__ = ["add_parser", "run"]
