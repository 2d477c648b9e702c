"""``python -m hrtem_core info FILE [--pixel-size-nm P] [--frame N|sum]``.

Reads one microscope file and prints one JSON object on stdout: the original data's ``shape`` and
``dtype``, the image shape used, ``pixel_size_nm`` as [y, x], its source, the ``reader``,
``defocus_nm``, ``warnings`` and key metadata. Bad input: exit code 2 and one line
``error: ...`` on stderr (see :mod:`hrtem_core.cli`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from hrtem_core.commands._options import frame_arg, pixel_size_arg
from hrtem_core.io import load_image

#: Metadata keys printed at the top level when present.
KEY_METADATA: tuple[str, ...] = (
    "voltage_kv",
    "magnification",
    "microscope",
    "acquisition_time",
    "original_units",
    "original_pixel_size",
    "n_frames",
    "frame",
    "defocus_source",
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``info`` sub-command."""
    parser = sub.add_parser(
        "info",
        help="read a microscope file and print its calibration and metadata as JSON",
        description=(
            "Read a microscope image (dm3/dm4, ser+emi, Velox or Berkeley emd, mrc, tif, png, "
            "jpg) and print one JSON object: shape, dtype, pixel_size_nm [y, x], reader, "
            "defocus_nm, warnings and key metadata."
        ),
    )
    parser.add_argument("file", help="the image file")
    parser.add_argument(
        "--pixel-size-nm",
        type=pixel_size_arg,
        default=None,
        metavar="P|PY,PX",
        help="pixel size in nm/px (or PY,PX per axis); overrides the file's calibration (required for PNG/JPG)",
    )
    parser.add_argument(
        "--frame",
        type=frame_arg,
        default=None,
        metavar="N|sum",
        help="for stacks: the frame number (from 0) or 'sum' (default: frame 0, with a warning)",
    )
    parser.add_argument(
        "--read-budget",
        type=seconds_arg("--read-budget"),
        default=None,
        metavar="S",
        help="wall-clock budget of the read in seconds (default 60); a read past it is refused",
    )
    parser.set_defaults(func=run)
    return parser


def seconds_arg(flag: str):
    """argparse type: a positive finite number of seconds."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a number of seconds, got {text!r}"
            ) from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{flag} must be > 0 seconds, got {text!r}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    """Read ``args.file`` and print its description as JSON; return 0."""
    micrograph = load_image(
        args.file,
        pixel_size_nm=args.pixel_size_nm,
        frame=args.frame,
        budget_s=getattr(args, "read_budget", None),
    )
    metadata = micrograph.metadata
    out = {
        "name": micrograph.name,
        "shape": metadata.get("original_shape"),
        "dtype": metadata.get("original_dtype"),
        "image_shape": list(micrograph.shape),
        "pixel_size_nm": list(micrograph.pixel_size_nm),
        "pixel_size_source": micrograph.pixel_size_source,
        "reader": micrograph.reader,
        "defocus_nm": micrograph.defocus_nm,
        "warnings": list(micrograph.warnings),
    }
    for key in KEY_METADATA:
        if key in metadata and key not in out:
            out[key] = metadata[key]
    out["metadata"] = metadata
    sys.stdout.write(json.dumps(out, ensure_ascii=False, default=str) + "\n")
    return 0


__all__ = ["add_parser", "run"]
