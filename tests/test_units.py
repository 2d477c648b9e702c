"""Unit strings -> nm, and defocus values in file names (known answers + Hypothesis properties)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrtem_core.errors import CalibrationError
from hrtem_core.io import defocus_from_name
from hrtem_core.units import is_reciprocal_unit, normalize_unit, unit_to_nm

# ------------------------------------------------------------------------------------------
# unit_to_nm: known answers
# ------------------------------------------------------------------------------------------

KNOWN_UNITS = [
    ("m", 1e9),
    ("cm", 1e7),
    ("mm", 1e6),
    ("um", 1e3),
    ("\u00b5m", 1e3),  # micro sign
    ("\u03bcm", 1e3),  # Greek small letter mu
    ("micron", 1e3),
    ("Micrometer", 1e3),
    ("\\u00B5m", 1e3),  # ImageJ's escaped micro sign
    ("nm", 1.0),
    ("NM", 1.0),
    ("n_m", 1.0),  # a real Berkeley EMD file
    ("nanometer", 1.0),
    ("Nanometers", 1.0),
    ("nm/px", 1.0),
    ("nm per pixel", 1.0),
    ("A", 0.1),
    ("a", 0.1),
    ("\u00c5", 0.1),  # Latin capital A with ring
    ("\u212b", 0.1),  # Angstrom sign
    ("Angstrom", 0.1),
    ("angstroms", 0.1),
    ("\u00c5ngstr\u00f6m", 0.1),
    ("pm", 1e-3),
    ("picometre", 1e-3),
    (" nm ", 1.0),
]


@pytest.mark.parametrize(("unit", "nm"), KNOWN_UNITS)
def test_unit_to_nm_known(unit: str, nm: float) -> None:
    assert unit_to_nm(unit) == pytest.approx(nm, rel=1e-12)


@pytest.mark.parametrize(
    "unit", ["1/nm", "1/m", "1/A", "1/\u00c5", "nm^-1", "nm-1", "1 / nm", "per nm", "\u00c5^-1"]
)
def test_reciprocal_units_refused_with_reason(unit: str) -> None:
    with pytest.raises(CalibrationError, match=r"reciprocal-space unit .*diffraction pattern"):
        unit_to_nm(unit)
    assert is_reciprocal_unit(unit)


@pytest.mark.parametrize("unit", ["eV", "keV"])
def test_energy_units_refused(unit: str) -> None:
    with pytest.raises(CalibrationError, match=r"energy unit .*not a length per pixel"):
        unit_to_nm(unit)


@pytest.mark.parametrize("unit", ["mrad", "deg", "s"])
def test_other_non_length_units_refused(unit: str) -> None:
    with pytest.raises(CalibrationError, match="not a length per pixel"):
        unit_to_nm(unit)


@pytest.mark.parametrize("unit", ["", "pixel", "px", "Pixels", "  "])
def test_uncalibrated_units_ask_for_pixel_size(unit: str) -> None:
    with pytest.raises(CalibrationError, match=r"not calibrated .*give the pixel size in nm/px"):
        unit_to_nm(unit)


def test_unknown_unit_names_the_string() -> None:
    with pytest.raises(CalibrationError, match=r"unknown length unit 'furlong'"):
        unit_to_nm("furlong")


def test_inch_is_not_a_calibration() -> None:
    with pytest.raises(CalibrationError, match="dots per inch"):
        unit_to_nm("inch")


def test_normalize_unit_folds_spellings() -> None:
    assert normalize_unit("\u03bcm") == normalize_unit("\u00b5m") == "\u00b5m"
    assert normalize_unit("\u212b") == normalize_unit("\u00c5") == "\u00e5"
    assert normalize_unit(" N_m ") == "nm"


# ------------------------------------------------------------------------------------------
# unit_to_nm: properties
# ------------------------------------------------------------------------------------------

# canonical spelling -> (ways to write it, exponent of ten relative to the metre)
_PREFIXED_METRES = {
    "m": (["m", "meter", "metre", "meters"], 0),
    "cm": (["cm", "centimeter", "centimetre"], -2),
    "mm": (["mm", "millimeter", "millimetres"], -3),
    "um": (["um", "\u00b5m", "\u03bcm", "micron", "micrometer", "micrometres"], -6),
    "nm": (["nm", "nanometer", "nanometres", "n_m"], -9),
    "A": (["A", "\u00c5", "\u212b", "angstrom", "Angstroms"], -10),
    "pm": (["pm", "picometer", "picometres"], -12),
}


@st.composite
def _unit_variant(draw) -> tuple[str, int]:
    key = draw(st.sampled_from(sorted(_PREFIXED_METRES)))
    spellings, exponent = _PREFIXED_METRES[key]
    text = draw(st.sampled_from(spellings))
    # random case (the Greek mu and Angstrom sign have case forms that fold back)
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    text = "".join(c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True))
    pad_left = draw(st.sampled_from(["", " ", "  "]))
    pad_right = draw(st.sampled_from(["", " ", "\t"]))
    return pad_left + text + pad_right, exponent


@settings(max_examples=200, deadline=None)
@given(_unit_variant(), _unit_variant())
def test_unit_scaling_consistent(a: tuple[str, int], b: tuple[str, int]) -> None:
    """unit_to_nm(a) / unit_to_nm(b) == 10**(exp_a - exp_b) for every spelling and case."""
    (unit_a, exp_a), (unit_b, exp_b) = a, b
    assert unit_to_nm(unit_a) == pytest.approx(10.0 ** (exp_a + 9), rel=1e-12)
    assert unit_to_nm(unit_a) / unit_to_nm(unit_b) == pytest.approx(
        10.0 ** (exp_a - exp_b), rel=1e-12
    )


@settings(max_examples=200, deadline=None)
@given(
    _unit_variant(), st.sampled_from(["1/{u}", "1 / {u}", "{u}^-1", "{u}-1", "{u}**-1", "per {u}"])
)
def test_reciprocal_forms_always_refused(variant: tuple[str, int], form: str) -> None:
    unit = form.format(u=variant[0].strip())
    with pytest.raises(CalibrationError, match="reciprocal-space"):
        unit_to_nm(unit)


# ------------------------------------------------------------------------------------------
# defocus_from_name: known answers
# ------------------------------------------------------------------------------------------

DEFOCUS_NAMES = [
    ("particle_df-16nm.tif", -16.0),
    ("df+4nm.dm3", 4.0),
    ("image_df=-16 nm.tif", -16.0),
    ("defocus_-16nm.dm4", -16.0),
    ("Au_-16nm.tif", -16.0),
    ("-16nm.png", -16.0),
    ("series_df-160A.tif", -16.0),
    ("series_df-160\u00c5.tif", -16.0),
    ("df_0nm.tif", 0.0),
    ("focal_+18nm.tif", 18.0),
    ("df-2.5nm.ser", -2.5),
    ("DF-16NM.TIF", -16.0),
    ("Defocus=+30nm_stack.emd", 30.0),
    ("df16nm.tif", 16.0),  # with the prefix the sign is optional
    ("df-0.2um.tif", -200.0),
    ("/some/dir-5nm/df-12nm.tif", -12.0),  # only the last path component counts
]


@pytest.mark.parametrize(("name", "nm"), DEFOCUS_NAMES)
def test_defocus_from_name_known(name: str, nm: float) -> None:
    value = defocus_from_name(name)
    assert value is not None
    assert value == pytest.approx(nm, abs=1e-12)


NOT_DEFOCUS = [
    "2024-03-16_image.tif",  # a date
    "Dataset140_Frame_0016.jpg",  # a frame number
    "image_0016.tif",
    "crop_256px.tif",
    "scale_5nm.tif",  # unsigned, no df prefix: a scale, not a defocus
    "particle_5nm_scalebar.tif",
    "PTO100-40nm-HAADF.dm4",  # '-' after a digit is a separator, not a sign
    "2024-03-16nm.tif",
    "sample.dm3",
    "df-16.tif",  # no unit
    "df-16px.tif",
    "df-3nm_df-5nm.tif",  # ambiguous: two different values
    "pdf-16nm.tif",  # 'df' inside a word is not the prefix... but the signed value remains
]


@pytest.mark.parametrize("name", NOT_DEFOCUS[:-1])
def test_defocus_from_name_rejects(name: str) -> None:
    assert defocus_from_name(name) is None


def test_defocus_signed_value_inside_word_is_still_a_signed_value() -> None:
    # "pdf" is not the df prefix, but "-16nm" stands alone as a signed defocus
    assert defocus_from_name(NOT_DEFOCUS[-1]) == -16.0


def test_defocus_repeated_same_value_is_not_ambiguous() -> None:
    assert defocus_from_name("df-16nm_copy_df-16nm.tif") == -16.0


# ------------------------------------------------------------------------------------------
# defocus_from_name: properties
# ------------------------------------------------------------------------------------------

_PATTERNS_NM = [
    # (template, sign required)
    ("df{s}{n}nm", False),
    ("df_{s}{n}nm", False),
    ("df={s}{n} nm", False),
    ("DF{s}{n}nm", False),
    ("defocus_{s}{n}nm", False),
    ("Defocus{s}{n}nm", False),
    ("sample_{s}{n}nm", True),
    ("{s}{n}nm", True),
    ("img_{s}{n}nm_stack", True),
]
_PATTERNS_A = ["df{s}{n}A", "df_{s}{n}\u00c5", "defocus{s}{n}Angstrom"]


@st.composite
def _defocus_value(draw) -> tuple[str, str, float]:
    magnitude = draw(st.floats(min_value=0, max_value=5000, allow_nan=False))
    decimals = draw(st.integers(min_value=0, max_value=4))
    text = f"{magnitude:.{decimals}f}"
    sign = draw(st.sampled_from(["-", "+", ""]))
    value = float(text) * (-1.0 if sign == "-" else 1.0)
    return sign, text, value


@settings(max_examples=300, deadline=None)
@given(
    _defocus_value(),
    st.sampled_from(_PATTERNS_NM),
    st.sampled_from(["", "Au_np_", "run3_"]),
    st.sampled_from([".tif", ".dm3", "_1.ser", ""]),
)
def test_defocus_round_trip_nm(value, pattern, prefix, suffix) -> None:
    sign, text, expected = value
    template, sign_required = pattern
    if sign_required and not sign:
        sign = "+"
    name = prefix + template.format(s=sign, n=text) + suffix
    parsed = defocus_from_name(name)
    assert parsed is not None, name
    assert math.isclose(parsed, expected, rel_tol=0, abs_tol=1e-9), (name, parsed, expected)


@settings(max_examples=200, deadline=None)
@given(_defocus_value(), st.sampled_from(_PATTERNS_A))
def test_defocus_round_trip_angstrom(value, template) -> None:
    sign, text, expected_a = value
    parsed = defocus_from_name(template.format(s=sign, n=text) + ".tif")
    assert parsed is not None
    assert math.isclose(parsed, expected_a / 10.0, rel_tol=0, abs_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1990, 2099),
    st.integers(1, 12),
    st.integers(1, 31),
    st.integers(0, 99999),
    st.sampled_from(
        [
            "{y}-{m:02d}-{d:02d}_image_{f:04d}.tif",
            "{y}{m:02d}{d:02d}_{f:05d}.dm3",
            "Frame_{f:04d}.jpg",
            "Dataset{f}_Frame_{f:04d}.jpg",
            "{y}-{m:02d}-{d:02d}-{f}.tif",
            "scan_{f}px_{y}.tif",
            "particle_{d}nm_scalebar.tif",
            "{y}-{m}-{d}nm.tif",
            "x{f}-{d}nm.tif",
        ]
    ),
)
def test_dates_and_frame_numbers_never_match(y, m, d, f, template) -> None:
    assert defocus_from_name(template.format(y=y, m=m, d=d, f=f)) is None


# ------------------------------------------------------------------------------------------
# Robustness properties: arbitrary text never crashes the parsers
# ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_unit_to_nm_any_text_gives_a_factor_or_calibration_error(text: str) -> None:
    try:
        factor = unit_to_nm(text)
    except CalibrationError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert factor in {1e9, 1e7, 1e6, 1e3, 1.0, 0.1, 1e-3}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_defocus_from_name_any_text_never_raises(text: str) -> None:
    value = defocus_from_name(text)
    assert value is None or (isinstance(value, float) and math.isfinite(value))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10)))
def test_validate_pixel_size_property(value) -> None:
    from hrtem_core.io import validate_pixel_size

    if math.isfinite(value) and value > 0:
        size, warns = validate_pixel_size(value)
        assert size == (float(value), float(value))
        assert bool(warns) == (not 0.001 <= value <= 1.0)
    else:
        with pytest.raises(CalibrationError, match="pixel size"):
            validate_pixel_size(value)
