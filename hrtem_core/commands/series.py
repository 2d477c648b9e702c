"""``python -m hrtem_core series IMAGE... [--defocus-nm D ...] [options] --out DIR``.

Analyses a defocus series: every image like ``analyze`` (its outputs in ``DIR/<image stem>/``),
then the profile over defocus:

* ``profile.csv`` -- file, defocus_nm, crystallinity, crystalline_area_fraction, n_windows,
  n_crystalline and ``fraction_<card_id>`` per phase, sorted by defocus;
* ``profile.html`` / ``profile.png`` -- crystallinity vs defocus, best focus marked;
* ``phase_fractions.html`` -- per-phase fractions vs defocus;
* ``series.json`` / ``series.xlsx`` -- best focus, per-file values, failures, parameters.

Defocus of each image: ``--defocus-nm`` (one value per image, in order, negative = underfocus;
separate values ``--defocus-nm -6 6``, comma-separated ``--defocus-nm -6,6`` or
``--defocus-nm=-6,6``; put the flag after the images), else the file's metadata, else its name
(e.g. ``..._-16nm.dm3``), else the estimate from its Thon rings (``defocus_source: estimated``
in its ``summary.json``; a warning when a given value and the estimate disagree by more than
the estimate's uncertainty). ``particles_series.csv``: per-particle crystallinity across defocus.
An image that cannot be read or analysed (or whose defocus is neither given nor estimable) is
listed as failed; the
others are still written, and the exit code is 2 when any image failed.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from hrtem_core._files import safe_name
from hrtem_core.commands._options import (
    ProgressBar,
    add_analysis_options,
    calibrated,
    cards_from_args,
    params_from_args,
    pixel_size_from_args,
    with_flag,
)
from hrtem_core.errors import AnalysisParameterError

_NUM = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
#: What this command reads as a (list of) negative number(s) rather than an option: ``-6``,
#: ``-6.5``, ``-1e1``, and comma-separated lists that start with one, ``-6,6`` or ``-18,-14,0``.
NEGATIVE_VALUES = re.compile(rf"^-{_NUM}(?:,\s*[-+]?{_NUM})*,?$")


def _defocus_values(values: list[str] | None) -> list[float] | None:
    if not values:
        return None
    out = []
    for item in values:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                v = float(part)
            except ValueError:
                raise AnalysisParameterError(
                    f"--defocus-nm takes numbers in nm (negative = underfocus), got {part!r}"
                ) from None
            if not math.isfinite(v):
                raise AnalysisParameterError(f"--defocus-nm must be finite, got {part!r}")
            out.append(v)
    return out


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``series`` sub-command."""
    parser = sub.add_parser(
        "series",
        help="analyse a defocus series: crystallinity profile and best focus",
        description=(
            "Analyse every image of a defocus series like 'analyze' (outputs in DIR/<image>/), "
            "then write the crystallinity profile over defocus (profile.csv, profile.html, "
            "profile.png), the phase fractions and the defocus of maximum crystallinity."
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="the images of the series")
    parser.add_argument(
        "--defocus-nm",
        nargs="+",
        action="extend",
        default=None,
        metavar="D",
        help=(
            "defocus of each image in nm, in the order of the images (negative = underfocus), "
            "as separate values or comma-separated: --defocus-nm -6 6, --defocus-nm -6,6 or "
            "--defocus-nm=-6,6; default: from the metadata, else from the file name"
        ),
    )
    # argparse reads "-6,6" as an unknown option (its own rule only accepts "-6" and "-6.5"):
    # widen the rule of this parser so that negative defocus lists are values. The command has
    # no option that looks like a number, so nothing is shadowed.
    parser._negative_number_matcher = NEGATIVE_VALUES
    add_analysis_options(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)
    return parser


def _unique_folder(out: Path, stem: str, used: set[str]) -> Path:
    name = stem
    i = 2
    while name in used:
        name = f"{stem}_{i}"
        i += 1
    used.add(name)
    return out / name


def run(args: argparse.Namespace) -> int:
    """Run ``series``; return the exit code (2 when any image failed, after writing the rest).

    The images go through the series engine (:func:`hrtem_core.analysis.series.run_series`),
    which resolves each defocus (given, metadata, name, else the Thon-ring estimate), warns on
    disagreements and builds the profile; this command reads the files and writes the outputs.
    """
    from hrtem_core.analysis.series import run_series

    images = list(args.images)
    defocus = _defocus_values(args.defocus_nm)
    if defocus is not None and len(defocus) != len(images):
        raise AnalysisParameterError(
            f"--defocus-nm gives {len(defocus)} values for {len(images)} images: give one per image"
        )
    params = params_from_args(args)
    cards = cards_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ProgressBar(
        total=float(len(images)), desc="series", unit="image", enabled=not args.no_progress
    ) as bar:
        run_ = run_series(
            images,
            defocus_nm=defocus,
            load=_loader(args),
            params=params,
            cards=cards,
            progress=lambda frac, msg: bar(frac * len(images), msg),
            on_image=_writer(out),
        )
    return _report(run_, out, len(images))


def _loader(args: argparse.Namespace):
    """``load(image) -> Micrograph`` for the engine: the file, with the command's calibration."""
    from hrtem_core.io import load_image

    pixel = pixel_size_from_args(args)

    def load(image: str):
        path = Path(image)
        if not path.is_file():
            raise AnalysisParameterError(f"{image}: no such file")
        return calibrated(load_image(path, pixel_size_nm=pixel, frame=args.frame), args)

    return load


def _writer(out: Path):
    """``on_image(micrograph, series_image)``: each image's outputs in ``out/<stem>/``."""
    from hrtem_core.export import export_analysis

    used: set[str] = set()

    def write(micrograph, image) -> None:
        for w in image.warnings:
            sys.stderr.write(f"warning: {micrograph.name}: {w}\n")
        folder = _unique_folder(out, safe_name(Path(micrograph.name).stem, fallback="image"), used)
        export_analysis(image.result, folder, image=micrograph.data, particles=image.particles)

    return write


def _report(run_, out: Path, n: int) -> int:
    """Write the series outputs, print the best focus and the failures; the exit code."""
    from hrtem_core.export import PARTICLES_SERIES_CSV, export_series, write_csv

    failures = {name: with_flag(msg) for name, msg in run_.failures}
    if run_.series is not None:
        export_series(run_.series, out, failures=failures)
        write_csv(run_.particles, out / PARTICLES_SERIES_CSV)
        best = run_.series.best_focus_nm
        sys.stdout.write(
            f"series of {len(run_.images)} images: best focus "
            f"{'unknown' if best is None else f'{best:g} nm'} -> {out}\n"
        )
    if failures:
        listed = "; ".join(f"{Path(k).name}: {v}" for k, v in failures.items())
        sys.stderr.write(f"error: {len(failures)} of {n} images failed: {listed}\n")
        return 2
    return 0


__all__ = ["add_parser", "run"]
