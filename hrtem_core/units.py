"""Length-unit strings from microscope files -> a factor to nanometres.

Real files spell units in many ways: ``nm``, ``NM``, ``nanometers``, ``n_m`` (one Berkeley EMD
writer), ``µm`` with the micro sign (U+00B5) or the Greek mu (U+03BC), ``um``, ``micron``, ``A``,
``Å`` as U+00C5 or as the Angstrom sign U+212B, ImageJ's escaped ``\\u00B5m``, ``m`` (FEI SER and
Velox). :func:`unit_to_nm` folds them all onto one table. Reciprocal-space units (``1/nm``,
``nm^-1``, ``1/m``, ...) and non-length units (``eV``, ``pixel``, empty) raise
:class:`~hrtem_core.errors.CalibrationError` with a message that says why, because a pixel size in
them cannot give real-space lattice spacings.
"""

from __future__ import annotations

import re

from hrtem_core.errors import CalibrationError

#: Canonical length units and their size in nm.
LENGTH_UNITS_NM: dict[str, float] = {
    "m": 1e9,
    "cm": 1e7,
    "mm": 1e6,
    "µm": 1e3,
    "nm": 1.0,
    "å": 0.1,
    "pm": 1e-3,
}

# Spelled-out and variant names -> canonical key of LENGTH_UNITS_NM (all lower case, no spaces).
_ALIASES: dict[str, str] = {
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "centimeter": "cm",
    "centimeters": "cm",
    "centimetre": "cm",
    "centimetres": "cm",
    "millimeter": "mm",
    "millimeters": "mm",
    "millimetre": "mm",
    "millimetres": "mm",
    "um": "µm",
    "micron": "µm",
    "microns": "µm",
    "micrometer": "µm",
    "micrometers": "µm",
    "micrometre": "µm",
    "micrometres": "µm",
    "nanometer": "nm",
    "nanometers": "nm",
    "nanometre": "nm",
    "nanometres": "nm",
    "a": "å",
    "ang": "å",
    "angstrom": "å",
    "angstroms": "å",
    "angstroem": "å",
    "angstroems": "å",
    "ångström": "å",
    "ångströms": "å",
    "ångstrom": "å",
    "ångstroms": "å",
    "picometer": "pm",
    "picometers": "pm",
    "picometre": "pm",
    "picometres": "pm",
}

# Units that are not lengths, with the reason a microscopist recognises.
_NON_LENGTH: dict[str, str] = {
    "ev": "an energy unit (an EELS/EDS spectrum axis?)",
    "kev": "an energy unit (an EELS/EDS spectrum axis?)",
    "mev": "an energy unit (an EELS/EDS spectrum axis?)",
    "s": "a time unit (a time series axis?)",
    "ms": "a time unit (a time series axis?)",
    "us": "a time unit (a time series axis?)",
    "µs": "a time unit (a time series axis?)",
    "ns": "a time unit (a time series axis?)",
    "sec": "a time unit (a time series axis?)",
    "rad": "an angle unit (a diffraction or tilt axis?)",
    "mrad": "an angle unit (a diffraction or tilt axis?)",
    "µrad": "an angle unit (a diffraction or tilt axis?)",
    "urad": "an angle unit (a diffraction or tilt axis?)",
    "deg": "an angle unit (a diffraction or tilt axis?)",
    "degree": "an angle unit (a diffraction or tilt axis?)",
    "degrees": "an angle unit (a diffraction or tilt axis?)",
    "°": "an angle unit (a diffraction or tilt axis?)",
    "inch": "a print resolution (dots per inch), not a microscope calibration",
    "in": "a print resolution (dots per inch), not a microscope calibration",
    "counts": "an intensity unit",
    "e": "an intensity unit",
}

#: Strings meaning "no calibration": the image is in pixels.
UNCALIBRATED_UNITS: frozenset[str] = frozenset(
    {"", "px", "pixel", "pixels", "pix", "none", "null", "unknown", "<auto>", "dimensionless"}
)

_ESCAPES = {
    "\\u00b5": "µ",  # ImageJ writes non-ASCII units escaped in the ImageDescription tag
    "\\u03bc": "µ",
    "\\u00c5": "å",
    "\\u212b": "å",
    "\\u00e5": "å",
}

_PER_PIXEL = re.compile(r"(/|per)(px|pix|pixel|pixels)$")


def normalize_unit(unit: str) -> str:
    """Fold a unit string onto a canonical spelling (lower case, no spaces or underscores).

    Parameters
    ----------
    unit : str
        The unit string as a file writes it.

    Returns
    -------
    str
        Lower-case text with micro signs folded to U+00B5, Angstrom signs to ``å``, whitespace,
        underscores and a trailing ``/px`` removed.
    """
    text = str(unit).strip().lower()
    for escaped, char in _ESCAPES.items():
        text = text.replace(escaped, char)
    # lower() already maps U+00C5 and U+212B to U+00E5; the Greek mu stays U+03BC.
    text = text.replace("\u03bc", "µ").replace("\u212b", "å")
    text = re.sub(r"[\s_]+", "", text)
    text = _PER_PIXEL.sub("", text)
    return text


def _is_length(text: str) -> bool:
    return text in LENGTH_UNITS_NM or text in _ALIASES


def is_reciprocal_unit(unit: str) -> bool:
    """True when ``unit`` is a reciprocal length (``1/nm``, ``nm^-1``, ``1/m``, ``per nm``, ...)."""
    text = normalize_unit(unit)
    if text.startswith(("1/", "recip", "inverse")):
        return True
    if text.startswith("per") and _is_length(text[3:]):
        return True
    return bool(re.search(r"(\^-1|\*\*-1|-1|⁻¹)$", text))


def unit_to_nm(unit: str) -> float:
    """Size of one ``unit`` in nanometres.

    Parameters
    ----------
    unit : str
        A real-space length unit: m, cm, mm, um / µm (U+00B5 or U+03BC) / micron, nm, A / Å
        (U+00C5 or U+212B) / Angstrom, pm, and spelled-out or oddly written variants ("n_m",
        "Nanometers", "nm/px").

    Returns
    -------
    float
        nm per ``unit`` (e.g. 0.1 for Å, 1000 for µm).

    Raises
    ------
    CalibrationError
        For reciprocal-space units (a diffraction pattern or FFT), non-length units (eV, s,
        mrad), no unit / pixels (uncalibrated), and strings that are not a known length unit.
    """
    shown = " ".join(str(unit).split())
    text = normalize_unit(unit)
    if text in UNCALIBRATED_UNITS:
        raise CalibrationError(
            f"unit {shown!r} means the image is not calibrated (pixels only): "
            "give the pixel size in nm/px"
        )
    if is_reciprocal_unit(unit):
        raise CalibrationError(
            f"{shown!r} is a reciprocal-space unit (a diffraction pattern or FFT?); "
            "real-space lattice analysis needs an image with a length per pixel such as nm"
        )
    if text in LENGTH_UNITS_NM:
        return LENGTH_UNITS_NM[text]
    if text in _ALIASES:
        return LENGTH_UNITS_NM[_ALIASES[text]]
    if text in _NON_LENGTH:
        raise CalibrationError(
            f"{shown!r} is {_NON_LENGTH[text]}, not a length per pixel; "
            "real-space lattice analysis needs an image calibrated in nm (or m, µm, Å, pm)"
        )
    raise CalibrationError(
        f"unknown length unit {shown!r}: expected one of m, cm, mm, µm, nm, Å, pm "
        "(or give the pixel size in nm/px)"
    )


__all__ = [
    "LENGTH_UNITS_NM",
    "UNCALIBRATED_UNITS",
    "is_reciprocal_unit",
    "normalize_unit",
    "unit_to_nm",
]
