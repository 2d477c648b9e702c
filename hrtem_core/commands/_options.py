"""Options shared by ``analyze``, ``series`` (and ``batch``): one definition, one meaning.

:func:`add_analysis_options` registers the image, window, card, tolerance and detector options;
:func:`params_from_args`, :func:`pixel_size_from_args`, :func:`cards_from_args` turn the parsed
namespace into library objects; :class:`ProgressBar` is a tqdm bar on stderr usable as the
library's ``progress(fraction, message)`` callback.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from hrtem_core.detectors import DETECTORS
from hrtem_core.errors import AnalysisParameterError, CalibrationError


def frame_arg(text: str) -> int | str:
    """argparse type for ``--frame``: a frame number (0, 1, ...) or ``sum``."""
    if text.strip().lower() == "sum":
        return "sum"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--frame must be a frame number (0, 1, ...) or 'sum', got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--frame must be 0 or more, got {value}")
    return value


def pixel_size_arg(text: str) -> float | tuple[float, float]:
    """argparse type for ``--pixel-size-nm``: ``P`` or ``PY,PX`` [nm/px]."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--pixel-size-nm must be a number in nm/px (or PY,PX), got {text!r}"
        ) from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2 and "," in text and "." not in text:
        # "0,02" is a decimal comma, not the two axes 0 and 2 nm/px.
        raise argparse.ArgumentTypeError(
            f"--pixel-size-nm must be a number in nm/px, got {text!r} "
            "(write decimals with a point, e.g. 0.02, or two values as PY,PX, e.g. 0.02,0.021)"
        )
    if len(values) == 2:
        return (values[0], values[1])
    raise argparse.ArgumentTypeError(
        f"--pixel-size-nm takes one value or two (PY,PX), got {text!r}"
    )


def distortion_arg(text: str) -> tuple[float, float, float]:
    """argparse type for ``--distortion``: ``SXX,SXY,SYY`` (:mod:`hrtem_core.distortion`)."""
    from hrtem_core.distortion import parse_stretch

    try:
        return parse_stretch(text)
    except CalibrationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def positive_int(name: str, *, unit: str = "pixels"):
    """argparse type for an option ``name`` that takes a whole number (of ``unit``) >= 1."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a whole number of {unit}, got {text!r}"
            ) from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {v}")
        return v

    return parse


def _positive_float(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text!r}")
        return v

    return parse


def add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """Register the options every analysing sub-command shares."""
    _add_image_options(parser.add_argument_group("image"))
    _add_window_options(parser.add_argument_group("windows and spots"))
    _add_indexing_options(parser.add_argument_group("indexing"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _add_image_options(g: argparse._ArgumentGroup) -> None:
    """``--pixel-size-nm`` and ``--frame``."""
    g.add_argument(
        "--pixel-size-nm",
        type=pixel_size_arg,
        default=None,
        metavar="P",
        help="pixel size in nm/px, or PY,PX for non-square pixels; overrides the file's calibration",
    )
    g.add_argument(
        "--frame",
        type=frame_arg,
        default=None,
        metavar="N",
        help="frame of a stack (0, 1, ...) or 'sum' (default: frame 0, with a warning)",
    )
    g.add_argument(
        "--distortion",
        type=distortion_arg,
        default=None,
        metavar="SXX,SXY,SYY",
        help="scan distortion to remove before the analysis: the symmetric stretch S with "
        "x_true = S x_image (x right, y down), as 'calibrate' measures it on a known crystal; "
        "the image is resampled onto square pixels",
    )


def _add_window_options(g: argparse._ArgumentGroup) -> None:
    """``--window``, ``--stride``, ``--detector`` and ``--d-min-nm``."""
    g.add_argument(
        "--window",
        type=positive_int("--window"),
        default=256,
        metavar="W",
        help="moving-window size in pixels (default 256)",
    )
    g.add_argument(
        "--stride",
        type=positive_int("--stride"),
        default=None,
        metavar="S",
        help="step between windows in pixels (default: half the window)",
    )
    g.add_argument(
        "--detector",
        choices=DETECTORS,
        default="unet",
        help="spot detector: the trained U-Net (default) or the classical peak finder",
    )
    g.add_argument(
        "--d-min-nm",
        type=_positive_float("--d-min-nm"),
        default=0.1,
        metavar="D",
        help="smallest lattice spacing of interest in nm (default 0.1)",
    )


def _add_indexing_options(g: argparse._ArgumentGroup) -> None:
    """The card database, the phases, the tolerances and the decision rule."""
    g.add_argument(
        "--cards",
        default=None,
        metavar="XLSX",
        help="PDF card database (default data/pdf_cards.xlsx)",
    )
    g.add_argument(
        "--phases",
        nargs="+",
        default=None,
        metavar="CARD_ID",
        help="card ids to index against (default: the enabled phases of the database)",
    )
    g.add_argument(
        "--spacing-tol",
        type=_positive_float("--spacing-tol"),
        default=0.03,
        metavar="T",
        help="relative spacing tolerance (default 0.03 = 3 %%)",
    )
    g.add_argument(
        "--angle-tol-deg",
        type=_positive_float("--angle-tol-deg"),
        default=2.0,
        metavar="A",
        help="interplanar-angle tolerance in degrees (default 2)",
    )
    g.add_argument(
        "--include-forbidden",
        action="store_true",
        help="also match kinematically forbidden reflections (double diffraction), with a lower weight",
    )
    g.add_argument(
        "--max-zone-index",
        type=positive_int("--max-zone-index", unit="index units"),
        default=3,
        metavar="N",
        help="largest zone-axis index considered (default 3)",
    )
    g.add_argument(
        "--max-chance",
        type=_positive_float("--max-chance"),
        default=0.05,
        metavar="K",
        help="name a phase only when the odds chance:card are at most K (default 0.05)",
    )


def params_from_args(args: argparse.Namespace) -> Any:
    """:class:`~hrtem_core.analysis.AnalysisParams` from the parsed options (validated)."""
    from hrtem_core.analysis.params import AnalysisParams

    params = AnalysisParams(
        window_px=int(args.window),
        stride_px=None if args.stride is None else int(args.stride),
        detector=args.detector,
        d_min_nm=float(args.d_min_nm),
        spacing_tol=float(args.spacing_tol),
        angle_tol_deg=float(args.angle_tol_deg),
        phases=None if not args.phases else tuple(str(p) for p in args.phases),
        include_forbidden=bool(args.include_forbidden),
        max_zone_index=int(args.max_zone_index),
        max_chance=float(args.max_chance),
    )
    params.validate()
    return params


def cards_from_args(args: argparse.Namespace) -> Any:
    """The card database named by ``--cards`` (default ``data/pdf_cards.xlsx``)."""
    from hrtem_core.cards import DEFAULT_CARDS_PATH, load_cards

    path = Path(args.cards) if args.cards else DEFAULT_CARDS_PATH
    return load_cards(path)


def pixel_size_from_args(args: argparse.Namespace) -> Any:
    """The ``--pixel-size-nm`` override (None when not given); checks it is positive."""
    p = args.pixel_size_nm
    if p is None:
        return None
    values = p if isinstance(p, tuple) else (p,)
    for v in values:
        if not (math.isfinite(v) and v > 0):
            raise CalibrationError(f"--pixel-size-nm must be a positive number of nm/px, got {v!r}")
    return p


def calibrated(micrograph: Any, args: argparse.Namespace) -> Any:
    """The micrograph with ``--distortion`` removed (:func:`hrtem_core.distortion.undistort`);
    unchanged without it."""
    stretch = getattr(args, "distortion", None)
    if stretch is None:
        return micrograph
    from hrtem_core.distortion import undistort

    return undistort(micrograph, stretch)


def check_image_path(path: str) -> Path:
    """The image path, or a one-line error when it does not exist."""
    p = Path(path)
    if not p.exists():
        raise AnalysisParameterError(f"{path}: no such file")
    if p.is_dir():
        raise AnalysisParameterError(f"{path}: is a folder, not an image file")
    return p


class ProgressBar:
    """A tqdm progress bar on stderr, callable as ``progress(fraction_done, message)``.

    Disabled with ``enabled=False`` and when stderr is not a terminal.
    """

    def __init__(self, *, total: float, desc: str, unit: str, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.total = float(total)
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            disable=None if enabled else True,
            leave=False,
            dynamic_ncols=True,
        )

    def __call__(self, fraction: float, message: str = "") -> None:
        """Move to ``fraction`` of the total; show ``message``."""
        target = max(0.0, min(1.0, float(fraction))) * self.total
        delta = target - self._bar.n
        if delta > 0:
            self._bar.update(round(delta, 6))
        if message:
            self._bar.set_postfix_str(message[-60:], refresh=False)

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The core speaks of a quantity; the command line names the flag that gives it.
_FLAGS = (
    ("the defocus is unknown", "--defocus-nm"),
    ("the file has no pixel size", "--pixel-size-nm"),
)


def with_flag(message: str) -> str:
    """``message`` with the option that supplies the missing quantity, where it names one."""
    for text, flag in _FLAGS:
        if text in message:
            return f"{message} ({flag})"
    return message


__all__ = [
    "ProgressBar",
    "add_analysis_options",
    "calibrated",
    "cards_from_args",
    "check_image_path",
    "distortion_arg",
    "frame_arg",
    "params_from_args",
    "pixel_size_arg",
    "pixel_size_from_args",
    "positive_int",
    "with_flag",
]
