"""The data model every reader fills, and the checks common to all formats.

:class:`Micrograph` is what :func:`hrtem_core.io.load_image` returns; :class:`RawImage` is what each
format module returns before the common checks of :func:`finalise` (frame choice, grey
conversion, finite pixels, calibration, defocus). Defocus in nm, negative = underfocus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hrtem_core._files import jsonable
from hrtem_core.errors import CalibrationError, ReadError
from hrtem_core.io import _guard
from hrtem_core.units import is_reciprocal_unit, normalize_unit, unit_to_nm

#: Relative x/y pixel-size difference above which the pixels are reported as not square.
NON_SQUARE_REL_TOL = 0.005
#: Relative difference between a user-given and the metadata pixel size that is reported.
USER_OVERRIDE_REL_TOL = 0.01
#: Plausible HRTEM pixel sizes [nm/px]; outside, a warning (not an error).
PLAUSIBLE_PIXEL_NM = (0.001, 1.0)

FrameChoice = int | Literal["sum"] | None


@dataclass(frozen=True)
class PixelSize:
    """The size of one pixel in nm, per axis, with where it came from.

    Attributes
    ----------
    y_nm, x_nm : float
        Pixel size along the rows (y) and the columns (x) [nm/px]; finite and > 0.
    source : str
        Where it came from: ``"metadata"`` (the file's calibration), ``"user"`` (typed in, a
        CLI option), ``"name"`` (a file name), ...

    Iterating gives ``(y_nm, x_nm)``, so ``py, px = size`` and ``tuple(size)`` work where a
    ``(y, x)`` tuple did.

    Raises
    ------
    CalibrationError
        A size that is not a finite number > 0 nm/px.
    """

    y_nm: float
    x_nm: float
    source: str = "metadata"

    def __post_init__(self) -> None:
        for axis in ("y_nm", "x_nm"):
            v = getattr(self, axis)
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = math.nan
            if isinstance(v, bool) or not (math.isfinite(f) and f > 0):
                raise CalibrationError(f"pixel size must be a finite number > 0 nm/px, got {v!r}")
            object.__setattr__(self, axis, f)

    @classmethod
    def of(cls, value: Any, source: str = "user") -> PixelSize:
        """From a :class:`PixelSize`, one number (square pixels) or a ``(y, x)`` pair [nm/px]."""
        if isinstance(value, PixelSize):
            return value
        if np.ndim(value) == 0:
            return cls(value, value, source)
        vals = list(np.ravel(value))
        if len(vals) != 2:
            raise CalibrationError(f"pixel size needs one value or two (y, x), got {len(vals)}")
        return cls(vals[0], vals[1], source)

    @property
    def yx_nm(self) -> tuple[float, float]:
        """``(y, x)`` [nm/px]."""
        return (self.y_nm, self.x_nm)

    @property
    def mean_nm(self) -> float:
        """The mean of the two axes [nm/px] (the size of square pixels)."""
        return 0.5 * (self.y_nm + self.x_nm)

    @property
    def is_square(self) -> bool:
        """Whether both axes have the same size (to 1e-9 relative)."""
        return math.isclose(self.y_nm, self.x_nm, rel_tol=1e-9)

    def __iter__(self) -> Iterator[float]:
        return iter((self.y_nm, self.x_nm))


@dataclass(frozen=True, eq=False)
class Micrograph:
    """One 2-D image with its calibration.

    Attributes
    ----------
    data : np.ndarray
        (ny, nx) float32, indexed [row, col]; finite values only.
    pixel_size_nm : tuple[float, float]
        (y, x) pixel size in nm/px; each axis keeps its own scale.
    reader : str
        Which reader produced it, e.g. ``"ncempy-dm"``, ``"tifffile-imagej"``, ``"pillow"``.
    metadata : dict
        JSON-friendly: ``voltage_kv``, ``magnification``, ``microscope``, ``acquisition_time``,
        ``defocus_nm``, ``original_units``, ``original_pixel_size``, ``original_shape``,
        ``original_dtype``, ``n_frames``, ``frame``, ... where available.
    warnings : tuple[str, ...]
        One-line warnings a user should see (stack frame choice, non-square pixels, ...).
    name : str
        The file name (no directory).
    defocus_nm : float | None
        From metadata, else from the file name (:func:`defocus_from_name`), else None.
        Negative = underfocus.
    pixel_size_source : str
        ``"metadata"`` or ``"user"``.
    """

    data: np.ndarray
    pixel_size_nm: tuple[float, float]
    reader: str
    metadata: dict
    warnings: tuple[str, ...]
    name: str
    defocus_nm: float | None = None
    pixel_size_source: str = "metadata"

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of :attr:`data`."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def pixel_size(self) -> PixelSize:
        """:attr:`pixel_size_nm` with its :attr:`pixel_size_source`, validated."""
        return PixelSize(*self.pixel_size_nm, source=self.pixel_size_source or "metadata")


@dataclass
class RawImage:
    """What each format reader returns, before the common checks."""

    data: np.ndarray  # original array (any ndim, any dtype)
    reader: str
    frame_axis: int | None = None  # axis of the frames for 3-D data
    rgb: bool = False  # last axis holds colour samples
    # (value, unit) per image axis as in the file, or None when the file has no calibration.
    scale_y: tuple[float, str] | None = None
    scale_x: tuple[float, str] | None = None
    metadata: dict = field(default_factory=dict)
    defocus_nm: float | None = None
    warnings: list[str] = field(default_factory=list)
    # Called after the image is built: closes a file kept open for frame-by-frame reading.
    closers: list[Callable[[], None]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Small helpers shared by the readers
# --------------------------------------------------------------------------------------------


def short(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 160 characters of message."""
    line = " ".join(str(exc).split())
    if len(line) > 160:
        line = line[:157] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def to_float(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def text(value: Any) -> str:
    """bytes (UTF-8, bad bytes replaced), 1-element arrays and anything else as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return text(value.reshape(-1)[0])
    return str(value)


def defocus_with_unit(value: Any, unit: str) -> float | None:
    """``value`` in ``unit`` as nm, or None when not a number or not a length unit."""
    number = to_float(value)
    if number is None:
        return None
    try:
        return number * unit_to_nm(unit)
    except CalibrationError:
        return None


def is_length_unit(unit: str) -> bool:
    """True when ``unit`` is a real-space length unit."""
    try:
        unit_to_nm(unit)
    except CalibrationError:
        return False
    return True


def meta_jsonable(value: Any) -> Any:
    """Metadata values as strict JSON (arrays above 64 values summarised by their shape)."""
    return jsonable(value, max_array_size=64)


# --------------------------------------------------------------------------------------------
# Pixel size validation
# --------------------------------------------------------------------------------------------


def validate_pixel_size(pixel_size_nm: Any) -> tuple[tuple[float, float], tuple[str, ...]]:
    """Check a pixel size and return it per axis.

    Parameters
    ----------
    pixel_size_nm : float or (float, float)
        One value for square pixels, or (y, x), in nm/px.

    Returns
    -------
    ((float, float), tuple[str, ...])
        (y, x) in nm/px and warnings (outside 0.001-1 nm/px, implausible for HRTEM).

    Raises
    ------
    CalibrationError
        Not a number, not one or two values, zero, negative, NaN or infinite.
    """
    if isinstance(pixel_size_nm, (str, bytes)):
        raise CalibrationError(
            f"pixel size {pixel_size_nm!r} is not a number: give nm per pixel, e.g. 0.02"
        )
    if np.ndim(pixel_size_nm) == 0:
        values = [pixel_size_nm, pixel_size_nm]
    else:
        values = list(np.ravel(np.asarray(pixel_size_nm, dtype=object)))
        if len(values) != 2:
            raise CalibrationError(
                f"pixel size needs one value or two (y, x) in nm/px, got {len(values)} values"
            )
    out: list[float] = []
    for value in values:
        if isinstance(value, (bool, np.bool_)):
            raise CalibrationError(f"pixel size {value!r} is not a number: give nm per pixel")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise CalibrationError(
                f"pixel size {value!r} is not a number: give nm per pixel, e.g. 0.02"
            ) from None
        if not math.isfinite(number):
            raise CalibrationError(
                f"pixel size {number} nm/px is not a finite number: give a positive size"
            )
        if number <= 0:
            raise CalibrationError(
                f"pixel size {number:g} nm/px must be positive (nm per pixel, e.g. 0.02)"
            )
        out.append(number)
    warns: list[str] = []
    low, high = PLAUSIBLE_PIXEL_NM
    for axis, number in zip(("y", "x"), out, strict=True):
        if number > high:
            warns.append(
                f"pixel size {number:g} nm/px ({axis}) is above {high:g} nm/px: "
                "too coarse to resolve lattice fringes; check the calibration"
            )
        elif number < low:
            warns.append(
                f"pixel size {number:g} nm/px ({axis}) is below {low:g} nm/px: "
                "implausibly fine for HRTEM; check the calibration"
            )
    if len(warns) == 2 and out[0] == out[1]:
        warns = [warns[0].replace(" (y)", "")]
    return (out[0], out[1]), tuple(warns)


# --------------------------------------------------------------------------------------------
# Defocus from a file name
# --------------------------------------------------------------------------------------------

_NUM = r"(?P<num>\d+(?:\.\d+)?)"
_UNIT = r"\s?(?P<unit>nm|a|å|\u212b|angstrom|angstroms|um|µm|\u03bcm)(?![a-z])"
_PREFIXED = re.compile(
    r"(?<![a-z])(?:defocus|df)[\s_=:]*(?P<sign>[+-]?)" + _NUM + _UNIT, re.IGNORECASE
)
_SIGNED = re.compile(r"(?<![0-9.])(?P<sign>[+-])" + _NUM + _UNIT, re.IGNORECASE)
_DEFOCUS_UNIT_NM = {"nm": 1.0, "um": 1000.0, "µm": 1000.0, "\u03bcm": 1000.0}


def _defocus_unit_factor(unit: str) -> float:
    unit = unit.lower()
    return _DEFOCUS_UNIT_NM.get(unit, 0.1)  # every other accepted spelling is Angstrom


def defocus_from_name(name: str) -> float | None:
    """Defocus [nm] written in a file name, or None.

    Understood (case-insensitive; a unit nm, Å/A/Angstrom or µm/um is required):

    * with a ``df`` or ``defocus`` prefix, sign optional: ``df-16nm``, ``df+4nm``, ``df=-16 nm``,
      ``defocus_-16nm``, ``df_0nm``, ``df-2.5nm``, ``df-160A`` (= -16 nm);
    * without a prefix, only with an explicit sign: ``_-16nm``, ``-16nm``, ``+18nm``
      (the sign must not follow a digit, so ``2024-16nm`` is not read as -16 nm).

    Not matched: an unsigned number without prefix (``particle_5nm_scalebar.tif``: a scale bar),
    dates (``2024-03-16``), frame numbers (``_0016``), ``256px``. When the name holds two
    different prefixed values (or, without a prefix, two different signed values) it is ambiguous
    and None is returned.

    Parameters
    ----------
    name : str
        A file name or path (only the last component is used).

    Returns
    -------
    float | None
        Defocus in nm, negative = underfocus.
    """
    base = re.split(r"[\\/]", str(name))[-1]
    for pattern in (_PREFIXED, _SIGNED):
        values = []
        for match in pattern.finditer(base):
            value = float(match.group("num")) * _defocus_unit_factor(match.group("unit"))
            if match.group("sign") == "-":
                value = -value
            values.append(value + 0.0)  # -0.0 -> 0.0
        if values:
            distinct = {round(v, 9) for v in values}
            return values[0] if len(distinct) == 1 else None
    return None


# --------------------------------------------------------------------------------------------
# Common post-processing
# --------------------------------------------------------------------------------------------


def select_frame(
    raw: RawImage, frame: FrameChoice, name: str
) -> tuple[np.ndarray, dict, list[str]]:
    data = raw.data
    info: dict[str, Any] = {}
    warns: list[str] = []
    if isinstance(frame, bool) or not (
        frame is None or frame == "sum" or isinstance(frame, (int, np.integer))
    ):
        raise ReadError(f"{name}: frame must be a frame number (0, 1, ...) or 'sum', got {frame!r}")
    if raw.frame_axis is None:
        if frame not in (None, 0, "sum"):
            raise ReadError(f"{name}: frame {frame} requested but the file holds a single image")
        info["n_frames"] = 1
        return data, info, warns
    axis = raw.frame_axis
    n_frames = int(data.shape[axis])
    info["n_frames"] = n_frames

    def take(index: int) -> np.ndarray:
        # Index the frame axis directly: works for arrays, memory maps and HDF5 data sets, and
        # reads only that frame from disk for the latter two.
        key: list[Any] = [slice(None)] * data.ndim
        key[axis] = index
        return np.asarray(data[tuple(key)])

    if frame is None:
        image = take(0)
        info["frame"] = 0
        if n_frames > 1:
            warns.append(
                f"the file is a stack of {n_frames} frames: using frame 0 "
                "(choose a frame number 0..{0} or 'sum')".format(n_frames - 1)
            )
    elif frame == "sum":
        image = take(0).astype(np.float64)
        for index in range(1, n_frames):  # frame by frame: one frame in memory at a time
            _guard.tick(f"summing {n_frames} frames")
            image += take(index)
        info["frame"] = "sum"
    else:
        index = int(frame)
        if not 0 <= index < n_frames:
            raise ReadError(
                f"{name}: frame {index} is out of range: the stack has {n_frames} frames "
                f"(0..{n_frames - 1})"
            )
        image = take(index)
        info["frame"] = index
    return image, info, warns


def _to_grey(image: np.ndarray, warns: list[str]) -> np.ndarray:
    colour = image[..., :3].astype(np.float64)
    if image.shape[-1] == 4:
        warns.append("alpha channel ignored")
    if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(
        colour[..., 0], colour[..., 2]
    ):
        return colour[..., 0]
    warns.append("colour image converted to grey (luminance 0.2125 R + 0.7154 G + 0.0721 B)")
    return colour @ np.array([0.2125, 0.7154, 0.0721])


def _calibration_nm(raw: RawImage, name: str) -> tuple[float, float] | None:
    """Metadata pixel size (y, x) in nm, or None when absent; CalibrationError when unusable."""
    if raw.scale_y is None or raw.scale_x is None:
        return None
    out = []
    for axis, (value, unit) in (("y", raw.scale_y), ("x", raw.scale_x)):
        if normalize_unit(unit) in ("", "px", "pixel", "pixels", "pix", "none", "unknown"):
            return None
        try:
            factor = unit_to_nm(unit)
        except CalibrationError as exc:
            raise CalibrationError(f"{name}: {axis} axis: {exc}") from None
        out.append(float(value) * factor)
    return (out[0], out[1])


def finalise(
    raw: RawImage,
    *,
    name: str,
    family: str,
    pixel_size_nm: Any,
    frame: FrameChoice,
) -> Micrograph:
    original_shape, original_dtype = _check_image_data(raw, name)
    warns = list(raw.warnings)
    image, frame_info = _finalise_pixels(raw, frame, name, original_shape, warns)
    metadata = dict(raw.metadata)
    metadata.update(frame_info)
    metadata["original_shape"] = original_shape
    metadata["original_dtype"] = original_dtype
    metadata["format"] = family
    (py, px), source = _finalise_pixel_size(raw, name, pixel_size_nm, metadata, warns)
    defocus = _finalise_defocus(raw, name, metadata)
    return Micrograph(
        data=image,
        pixel_size_nm=(float(py), float(px)),
        reader=raw.reader,
        metadata=meta_jsonable(metadata),
        warnings=tuple(" ".join(w.split()) for w in warns),
        name=name,
        defocus_nm=defocus,
        pixel_size_source=source,
    )


def _check_image_data(raw: RawImage, name: str) -> tuple[list[int], str]:
    """Refuse data that is not one numeric 2-D image (or a stack/RGB of them).

    Returns ``(original_shape, original_dtype)``.
    """
    data = raw.data
    original_shape = [int(s) for s in np.shape(raw.data)]
    original_dtype = str(data.dtype)
    if data.dtype.kind == "c":
        raise ReadError(
            f"{name}: complex data ({original_dtype}, an FFT or exit wave?) is not an image; "
            "save the real-space image instead"
        )
    if data.dtype.kind not in "uifb" or data.dtype.names is not None:
        raise ReadError(f"{name}: data type {original_dtype} is not a numeric image")
    image_ndim = data.ndim - (1 if raw.rgb else 0) - (1 if raw.frame_axis is not None else 0)
    image_shape = [
        s
        for i, s in enumerate(data.shape[: data.ndim - (1 if raw.rgb else 0)])
        if i != raw.frame_axis
    ]
    if data.size == 0:
        raise ReadError(f"{name}: the file holds an empty data set (shape {tuple(original_shape)})")
    if image_ndim < 2 or sum(s > 1 for s in image_shape) < 2:
        raise ReadError(
            f"{name}: not an image: data of shape {tuple(original_shape)} is one-dimensional "
            "(a spectrum or line profile?)"
        )
    if image_ndim > 2:
        raise ReadError(
            f"{name}: not an image: {image_ndim + (1 if raw.frame_axis is not None else 0)}-D "
            f"data of shape {tuple(original_shape)} (a 4D-STEM scan or spectrum image?)"
        )
    return original_shape, original_dtype


def _finalise_pixels(
    raw: RawImage, frame: FrameChoice, name: str, original_shape: list[int], warns: list[str]
) -> tuple[np.ndarray, dict]:
    """The chosen frame as a contiguous float32 2-D image (RGB to grey, NaN to the median).

    Appends its warnings to ``warns``; returns ``(image, frame_info)``.
    """
    image, frame_info, frame_warns = select_frame(raw, frame, name)
    warns.extend(frame_warns)
    if raw.rgb:
        image = _to_grey(np.asarray(image), warns)
    image = np.asarray(image)
    if image.ndim != 2:
        raise ReadError(
            f"{name}: not an image: could not reduce shape {tuple(original_shape)} to 2-D"
        )
    ny, nx = image.shape
    if ny < 2 or nx < 2:
        raise ReadError(f"{name}: image of {ny}x{nx} pixels is too small (at least 2x2)")
    image = image.astype(np.float32)
    finite = np.isfinite(image)
    if not finite.all():
        n_bad = int(image.size - finite.sum())
        if n_bad == image.size:
            raise ReadError(f"{name}: every pixel is NaN or infinite: no image data")
        median = float(np.median(image[finite]))
        image = np.where(finite, image, np.float32(median)).astype(np.float32)
        warns.append(f"{n_bad} NaN/infinite pixels replaced by the median {median:g}")
    image = np.ascontiguousarray(image)
    low_value, high_value = float(image.min()), float(image.max())
    if low_value == high_value:
        warns.append(
            f"every pixel has the same value ({low_value:g}): the image has no contrast, "
            "so no lattice fringes can be found"
        )
    return image, frame_info


def _finalise_pixel_size(
    raw: RawImage, name: str, pixel_size_nm: Any, metadata: dict, warns: list[str]
) -> tuple[tuple[float, float], str]:
    """Calibration: the user's value always wins; metadata otherwise; else ask.

    Returns ``((py, px) [nm/px], source)``; appends warnings to ``warns`` and the file's own
    calibration (when a user value overrides it) to ``metadata``.
    """
    if pixel_size_nm is not None:
        size, size_warns = validate_pixel_size(pixel_size_nm)
        source = "user"
        for axis, scale in (("y", raw.scale_y), ("x", raw.scale_x)):
            if scale is not None and is_reciprocal_unit(scale[1]):
                # A diffraction pattern stays one whatever pixel size is typed in.
                raise CalibrationError(
                    f"{name}: {axis} axis is calibrated in {scale[1]!r}, a reciprocal-space unit "
                    "(a diffraction pattern or FFT?); real-space lattice analysis needs an image, "
                    "so a typed-in pixel size cannot be applied to it"
                )
        try:
            meta_size = _calibration_nm(raw, name)
        except CalibrationError as exc:
            meta_size = None
            warns.append(f"metadata calibration not usable ({exc}); using the given pixel size")
        if meta_size is not None:
            metadata["metadata_pixel_size_nm"] = list(meta_size)
            rel = max(abs(u - m) / m for u, m in zip(size, meta_size, strict=True))
            if rel > USER_OVERRIDE_REL_TOL:
                warns.append(
                    f"given pixel size ({size[0]:.6g}, {size[1]:.6g}) nm/px differs from the "
                    f"file's ({meta_size[0]:.6g}, {meta_size[1]:.6g}) nm/px by {100 * rel:.1f} %; "
                    "using the given value"
                )
    else:
        meta_size = _calibration_nm(raw, name)
        if meta_size is None:
            raise CalibrationError(
                f"{name}: the file has no pixel size (uncalibrated: no unit or 'pixel'); "
                "give the pixel size in nm/px"
            )
        size, size_warns = validate_pixel_size(meta_size)
        source = "metadata"
    warns.extend(size_warns)
    py, px = size
    if abs(py - px) / min(py, px) > NON_SQUARE_REL_TOL:
        warns.append(
            f"pixels are not square: y {py:.6g} nm, x {px:.6g} nm "
            f"({100 * abs(py - px) / min(py, px):.2f} % apart); each axis keeps its own scale"
        )
    return (py, px), source


def _finalise_defocus(raw: RawImage, name: str, metadata: dict) -> float | None:
    """The defocus [nm]: the file's metadata, else the file name, else None (noted in metadata)."""
    defocus = raw.defocus_nm
    if defocus is not None and math.isfinite(defocus):
        defocus = float(defocus)
        metadata.setdefault("defocus_source", "metadata")
    else:
        defocus = defocus_from_name(name)
        if defocus is not None:
            metadata["defocus_source"] = "file name"
    metadata["defocus_nm"] = defocus
    return defocus
