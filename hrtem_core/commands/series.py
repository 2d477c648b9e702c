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

from hrtem_core.commands._options import (
    ProgressBar,
    add_analysis_options,
    cards_from_args,
    params_from_args,
    pixel_size_from_args,
    safe_stem,
)
from hrtem_core.errors import AnalysisParameterError, HRTEMError

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
    """Run ``series``; return the exit code (2 when any image failed, after writing the rest)."""
    from hrtem_core.analysis import (
        analyze_image,
        load_spot_model,
        make_tables,
        resolve_defocus,
        series_from_results,
    )
    from hrtem_core.export import PARTICLES_SERIES_CSV, export_analysis, export_series, write_csv
    from hrtem_core.io import load_image
    from hrtem_core.particles import image_particles, particle_series

    images = list(args.images)
    defocus = _defocus_values(args.defocus_nm)
    if defocus is not None and len(defocus) != len(images):
        raise AnalysisParameterError(
            f"--defocus-nm gives {len(defocus)} values for {len(images)} images: give one per image"
        )
    params = params_from_args(args)
    cards = cards_from_args(args)
    tables = make_tables(cards, params)
    pixel = pixel_size_from_args(args)
    model = load_spot_model(None, params.detector)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = []
    particle_results = []
    failures: dict[str, str] = {}
    used: set[str] = set()
    n = len(images)
    with ProgressBar(
        total=float(n), desc="series", unit="image", enabled=not args.no_progress
    ) as bar:
        for i, image in enumerate(images):

            def sub(frac: float, msg: str, i: int = i) -> None:
                bar((i + frac) / n, msg)

            try:
                path = Path(image)
                if not path.is_file():
                    raise AnalysisParameterError(f"{image}: no such file")
                micrograph = load_image(path, pixel_size_nm=pixel, frame=args.frame)
                try:
                    df = resolve_defocus(micrograph, None if defocus is None else defocus[i])
                    micrograph = _with_defocus(micrograph, df)
                except AnalysisParameterError as exc:  # issue 22: estimate from the Thon rings
                    df, unknown = None, exc
                result = analyze_image(
                    micrograph, params=params, cards=cards, model=model, progress=sub, tables=tables
                )
                extras = image_particles(result, micrograph.data, metadata=micrograph.metadata)
                if df is None and extras.defocus_nm is None:
                    raise AnalysisParameterError(f"{unknown} (no clear Thon rings to estimate it)")
                result = extras.with_estimated_defocus(result)
                for w in filter(None, [extras.disagreement]):
                    sys.stderr.write(f"warning: {micrograph.name}: {w}\n")
                folder = _unique_folder(out, safe_stem(micrograph.name), used)
                export_analysis(result, folder, image=micrograph.data, particles=extras)
                results.append(result)
                particle_results.append(extras.particles)
            except (HRTEMError, OSError, ValueError, MemoryError) as exc:
                msg = str(exc) if isinstance(exc, HRTEMError) else f"{type(exc).__name__}: {exc}"
                failures[image] = " ".join(msg.split())
            bar((i + 1) / n, Path(image).name)

    if results:
        series = series_from_results(results)
        export_series(series, out, failures=failures)
        write_csv(particle_series(results, particle_results), out / PARTICLES_SERIES_CSV)
        best = series.best_focus_nm
        sys.stdout.write(
            f"series of {len(results)} images: best focus "
            f"{'unknown' if best is None else f'{best:g} nm'} -> {out}\n"
        )
    if failures:
        listed = "; ".join(f"{Path(k).name}: {v}" for k, v in failures.items())
        sys.stderr.write(f"error: {len(failures)} of {n} images failed: {listed}\n")
        return 2
    return 0


def _with_defocus(micrograph, defocus_nm: float):
    import dataclasses

    return dataclasses.replace(micrograph, defocus_nm=float(defocus_nm))


__all__ = ["add_parser", "run"]
