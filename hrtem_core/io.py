"""Read microscope images with their calibration: one :class:`Micrograph` per file.

Formats (one reader function per family, all returning the same :class:`_RawImage`):

* Gatan DigitalMicrograph ``.dm3`` / ``.dm4`` (ncempy): the first dataset with two image axes
  (thumbnails and 1-D plots are skipped); Microscope Info / DataBar / Session Info tags.
* FEI/TIA ``.ser`` (ncempy) with the ``.emi`` beside it for microscope metadata.
* ``.emd``: Velox (ncempy.io.emdVelox; JSON metadata) and Berkeley EMD (ncempy.io.emd; per-axis
  ``dimN`` vectors with ``units`` attributes).
* MRC ``.mrc`` / ``.rec`` / ``.st`` / ``.ali`` (ncempy; voxel size in Å).
* TIFF (tifffile): FEI/Thermo tags (``FEI_HELIOS`` / ``FEI_SFEG``, pixel size in m, plus the
  Velox XML in ``FEI_TITAN``), DigitalMicrograph private tags 65003-65011, ImageJ ``unit`` +
  X/YResolution; otherwise uncalibrated. The TIFF ResolutionUnit inch/cm (print DPI) is never
  taken as a microscope calibration.
* PNG / JPEG / BMP / GIF (imageio): never calibrated, the user gives the pixel size.

Every failure inside a third-party reader is caught at the reader boundary and re-raised as
:class:`~hrtem_core.errors.ReadError` naming the file and the format; calibration problems raise
:class:`~hrtem_core.errors.CalibrationError`. Defocus is in nm, negative = underfocus.

Memory: each data set's declared shape is checked against :data:`MAX_IMAGE_PIXELS` (per frame)
and :data:`MAX_DATA_VALUES` (whole data set, for readers that load it whole) before any pixel is
read. DM, MRC and EMD stacks are read frame by frame (memory map / HDF5 slicing).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io as _stdio
import math
import os
import re
import shutil
import tempfile
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hrtem_core.errors import CalibrationError, HRTEMError, ReadError
from hrtem_core.units import is_reciprocal_unit, normalize_unit, unit_to_nm

#: Relative x/y pixel-size difference above which the pixels are reported as not square.
NON_SQUARE_REL_TOL = 0.005
#: Relative difference between a user-given and the metadata pixel size that is reported.
USER_OVERRIDE_REL_TOL = 0.01
#: Plausible HRTEM pixel sizes [nm/px]; outside, a warning (not an error).
PLAUSIBLE_PIXEL_NM = (0.001, 1.0)
#: Largest 2-D image (one frame) accepted, in pixels: 8192 x 8192 (256 MiB as float32), twice
#: the side of the common 4k cameras. Larger images (e.g. 16384 x 16384) are refused before their
#: pixels are read, so memory stays bounded; bin or crop them in the acquisition software.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Largest data set (all frames of a stack together) that a reader loads whole, in values:
#: 2**28 (e.g. 16 frames of 4096 x 4096); applies to TIFF, SER and imageio stacks. DM, MRC and
#: EMD stacks are read frame by frame and need only the per-image limit. Checked from the header.
MAX_DATA_VALUES = 2**28

FrameChoice = int | Literal["sum"] | None

_FAMILY_BY_SUFFIX: dict[str, str] = {
    ".dm3": "dm",
    ".dm4": "dm",
    ".ser": "ser",
    ".emd": "emd",
    ".h5": "emd",
    ".hdf5": "emd",
    ".mrc": "mrc",
    ".rec": "mrc",
    ".st": "mrc",
    ".ali": "mrc",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "imageio",
    ".jpg": "imageio",
    ".jpeg": "imageio",
    ".bmp": "imageio",
    ".gif": "imageio",
}

#: Every file suffix :func:`load_image` reads (lower case, with the dot).
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(_FAMILY_BY_SUFFIX))

#: Known microscope suffixes without a reader here, with what to do instead.
_UNSUPPORTED: dict[str, str] = {
    ".img": "'.img' (JEOL or SMV/ADSC image) is not supported; export it as TIFF, DM or MRC "
    "from the acquisition software",
    ".emi": "an .emi file holds only metadata; open the .ser file beside it (e.g. name_1.ser)",
    ".bcf": "Bruker .bcf spectrum images are not images; export the image as TIFF",
    ".txt": "a text file is not an image",
    ".csv": "a text file is not an image",
}

_FAMILY_LABEL: dict[str, str] = {
    "dm": "a DigitalMicrograph file",
    "ser": "an FEI/TIA SER file",
    "emd": "an EMD (HDF5) file",
    "mrc": "an MRC file",
    "tiff": "a TIFF file",
    "imageio": "a PNG/JPEG image",
}


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
        Which reader produced it, e.g. ``"ncempy-dm"``, ``"tifffile-imagej"``, ``"imageio"``.
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


@dataclass
class _RawImage:
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
# Small helpers
# --------------------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays, bytes, datetimes -> plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist()) if value.size <= 64 else f"array{value.shape}"
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _to_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


#: Serialises :func:`_quiet`: redirecting sys.stdout/stderr and the warning filters is process
#: wide, and two overlapping redirections in server threads would leave stdout pointing at a
#: discarded buffer. Reads are short next to an analysis, so one at a time costs little.
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet():
    """Silence third-party prints and warnings (ncempy prints to stdout on errors); thread-safe."""
    with (
        _QUIET_LOCK,
        contextlib.redirect_stdout(_stdio.StringIO()),
        contextlib.redirect_stderr(_stdio.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def _defocus_with_unit(value: Any, unit: str) -> float | None:
    number = _to_float(value)
    if number is None:
        return None
    try:
        return number * unit_to_nm(unit)
    except CalibrationError:
        return None


def _check_declared_size(
    shape: Any, name: str, *, frame_axis: int | None = None, lazy: bool = False
) -> None:
    """Refuse a data set whose declared shape exceeds the size limits, before reading it.

    Parameters
    ----------
    shape : sequence of int
        The data set's shape as the file header declares it.
    name : str
        File name for the message.
    frame_axis : int, optional
        Axis of the frames in a stack (excluded from the per-image count); default: all axes
        but the last two are frame axes.
    lazy : bool
        True when the reader reads one frame at a time (memory map or HDF5 slicing): then only
        the per-image limit applies, not the whole-data-set one.
    """
    dims = [int(s) for s in shape]
    if not dims:
        return
    if min(dims) < 1:
        shown = "x".join(str(d) for d in dims)
        raise ReadError(
            f"{name}: the header declares an impossible data shape {shown} "
            "(corrupt, truncated or not this format)"
        )
    total = math.prod(dims)
    if frame_axis is not None and len(dims) == 3:
        image_dims = [d for i, d in enumerate(dims) if i != frame_axis]
    else:
        image_dims = dims[-2:]
    image = math.prod(image_dims)
    shown = "x".join(str(d) for d in dims)
    if image > MAX_IMAGE_PIXELS:
        raise ReadError(
            f"{name}: image of {shown} pixels is larger than the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels (8192 x 8192); bin or crop it before analysis"
        )
    if total > MAX_DATA_VALUES and not lazy:
        raise ReadError(
            f"{name}: data set of {shown} values is larger than the limit of "
            f"{MAX_DATA_VALUES:,} values; export the frame(s) you need as a separate file"
        )


# --------------------------------------------------------------------------------------------
# Readers: one per format family
# --------------------------------------------------------------------------------------------


#: DigitalMicrograph data types holding complex numbers (3, 13) or a packed complex FFT (27).
_DM_COMPLEX_TYPES = frozenset({3, 13, 27})


def _read_dm(path: Path) -> _RawImage:
    """Gatan .dm3/.dm4 via ncempy: the first dataset with two image axes.

    The choice is made from the header sizes, without reading pixels. A 3-D stack is memory-mapped,
    so only the frame(s) used are read (any number of frames in bounded memory).
    """
    from ncempy.io import dm

    with dm.fileDM(path, on_memory=False) as handle:  # no mmap left open on errors
        n_sets = handle.numObjects - (1 if handle.thumbnail else 0)
        if n_sets <= 0:
            raise ReadError(f"{path.name}: the DigitalMicrograph file holds no data set")
        offset = 1 if handle.thumbnail else 0

        def dims_of(index: int) -> list[int]:
            ii = index + offset
            declared = [handle.zSize2[ii], handle.zSize[ii], handle.ySize[ii], handle.xSize[ii]]
            return [int(d) for d in declared if int(d) > 1] or [1]

        chosen = None
        for index in range(n_sets):
            code = int(handle.dataType[index + offset])
            if code in _DM_COMPLEX_TYPES:
                raise ReadError(
                    f"{path.name}: complex data (DM data type {code}, an FFT?) is not an image; "
                    "save the real-space image instead"
                )
            if len(dims_of(index)) >= 2:
                chosen = index
                break
        index = chosen if chosen is not None else 0
        ii = index + offset
        dims = dims_of(index)
        stack = len(dims) == 3 and int(handle.zSize[ii]) > 1 and int(handle.zSize2[ii]) == 1
        _check_declared_size(dims, path.name, frame_axis=0 if stack else None, lazy=stack)
        if stack:
            data = handle.getMemmap(index)  # frames are read on demand
            start = sum(int(n) for n in handle.dataShape[0:ii])
            count = int(handle.dataShape[ii])
            sizes = list(handle.scale[start : start + count])[::-1]  # C order, as getDataset
            units = [_text(u) for u in handle.scaleUnit[start : start + count]][::-1]
            if tuple(data.shape) != tuple(dims):
                raise ReadError(f"{path.name}: stack header and data do not agree (corrupt?)")
        else:
            dataset = handle.getDataset(index)
            data = np.asarray(dataset["data"])
            sizes = list(dataset.get("pixelSize", []))
            units = [_text(u) for u in dataset.get("pixelUnit", [])]
        try:
            tags = handle.getMetadata(index)
        except Exception:  # metadata is a bonus: never fail a read on it
            tags = {}
    raw = _RawImage(data=data, reader="ncempy-dm")
    if chosen is not None and n_sets > 1 and index > 0:
        raw.warnings.append(f"file holds {n_sets} data sets; read data set {index} (2-D image)")
    if data.ndim >= 2 and len(sizes) >= 2 and len(units) >= 2:
        raw.scale_y = (float(sizes[-2]), units[-2])
        raw.scale_x = (float(sizes[-1]), units[-1])
    if data.ndim == 3:
        raw.frame_axis = 0
    raw.metadata["original_units"] = units
    raw.metadata["original_pixel_size"] = [float(s) for s in sizes]
    raw.metadata["n_datasets"] = n_sets
    raw.metadata["dataset"] = index
    _dm_metadata(tags, raw)
    return raw


def _dm_metadata(tags: dict, raw: _RawImage) -> None:
    md = raw.metadata
    voltage = _to_float(tags.get("Microscope Info Voltage"))
    if voltage is not None and voltage > 0:
        md["voltage_kv"] = voltage / 1000.0
    mag = _to_float(
        tags.get(
            "Microscope Info Indicated Magnification",
            tags.get("Microscope Info Actual Magnification"),
        )
    )
    if mag is not None and mag > 0:
        md["magnification"] = mag
    scope = tags.get("Session Info Microscope") or tags.get("Microscope Info Name")
    if scope:
        md["microscope"] = _text(scope)
    date = tags.get("DataBar Acquisition Date")
    time = tags.get("DataBar Acquisition Time")
    if date or time:
        md["acquisition_time"] = " ".join(_text(t) for t in (date, time) if t)
    for key in (
        "Microscope Info Cs(mm)",
        "Microscope Info Illumination Mode",
        "Microscope Info Imaging Mode",
        "Microscope Info Operation Mode",
        "DataBar Device Name",
        "DataBar Exposure Time (s)",
    ):
        if key in tags:
            md[key.replace("Microscope Info ", "").replace("DataBar ", "").lower()] = _jsonable(
                tags[key]
            )
    # Defocus: a tag whose name holds "defocus"; its unit from "(nm)" / "(um)" in the name, nm if none.
    for key, value in tags.items():
        if "defocus" in key.lower():
            unit_match = re.search(r"\(([^)]*)\)\s*$", key)
            unit = unit_match.group(1) if unit_match else "nm"
            defocus = _defocus_with_unit(value, unit)
            if defocus is not None:
                raw.defocus_nm = defocus
                md["defocus_source"] = f"DM tag {key!r}"
                break
    tecnai = tags.get("Tecnai Microscope Info")
    if raw.defocus_nm is None and isinstance(tecnai, str):
        match = re.search(
            r"defocus\s*(?:\(([^)]*)\))?\s*[:=]?\s*([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)\s*([a-zµ\u03bc]*)",
            tecnai,
            re.IGNORECASE,
        )
        if match:
            unit = match.group(1) or match.group(3) or "nm"
            defocus = _defocus_with_unit(match.group(2), unit)
            if defocus is not None:
                raw.defocus_nm = defocus
                md["defocus_source"] = "DM Tecnai Microscope Info"


def _read_ser(path: Path) -> _RawImage:
    """FEI/TIA .ser via ncempy, microscope metadata from the .emi beside it."""
    from ncempy.io import ser

    with ser.fileSER(path) as handle:
        head = handle.head
        if head["ValidNumberElements"] <= 0:
            raise ReadError(f"{path.name}: the SER file holds no data set")
        if head["DataTypeID"] == 0x4120:
            raise ReadError(
                f"{path.name}: not an image: the SER file holds spectra (EELS/EDS), not a 2-D image"
            )
        frames = []
        calibration = None
        n_elements = int(head["ValidNumberElements"])
        for index in range(n_elements):
            array, meta = handle.getDataset(index)
            if index == 0:
                _check_declared_size((n_elements, *np.shape(array)), path.name, frame_axis=0)
            frames.append(np.asarray(array))
            if calibration is None:
                calibration = meta.get("Calibration", [])
        emi = handle._emi
    data = frames[0] if len(frames) == 1 else np.stack(frames, axis=0)
    raw = _RawImage(data=data, reader="ncempy-ser", frame_axis=0 if data.ndim == 3 else None)
    # SER stores calibration X first, then Y, always in metres.
    if calibration and len(calibration) >= 2:
        raw.scale_x = (float(calibration[0]["CalibrationDelta"]), "m")
        raw.scale_y = (float(calibration[1]["CalibrationDelta"]), "m")
        raw.metadata["original_pixel_size"] = [raw.scale_y[0], raw.scale_x[0]]
        raw.metadata["original_units"] = ["m", "m"]
    md = raw.metadata
    if emi:
        md["emi"] = True
        kv = _to_float(emi.get("High tension [kV]"))
        if kv is None:
            volts = _to_float(emi.get("AcceleratingVoltage"))
            kv = volts / 1000.0 if volts else None
        if kv:
            md["voltage_kv"] = kv
        mag = _to_float(emi.get("Magnification [x]"))
        if mag:
            md["magnification"] = mag
        scope = emi.get("Microscope []")
        if scope:
            md["microscope"] = _text(scope).strip()
        if emi.get("AcquireDate"):
            md["acquisition_time"] = _text(emi["AcquireDate"])
        if emi.get("Mode []"):
            md["mode"] = _text(emi["Mode []"]).strip()
        for key, value in emi.items():
            match = re.fullmatch(r"defocus\s*\[([^\]]*)\]", str(key).strip(), re.IGNORECASE)
            if match:
                defocus = _defocus_with_unit(value, match.group(1) or "nm")
                if defocus is not None:
                    raw.defocus_nm = defocus
                    md["defocus_source"] = f"EMI {key!r}"
                break
    else:
        md["emi"] = False
        raw.warnings.append(
            f"no {path.stem[:-2] if path.stem.endswith(('_1', '_2')) else path.stem}.emi beside "
            "the SER file: microscope metadata (voltage, defocus) not available"
        )
    return raw


def _read_emd(path: Path) -> _RawImage:
    """EMD: Berkeley EMD (emd_group_type groups) or Velox (Data/Image)."""
    import h5py

    with h5py.File(path, "r") as handle:
        is_velox = "Data" in handle and isinstance(handle["Data"], h5py.Group)
        has_image = is_velox and "Image" in handle["Data"]
    if is_velox:
        if not has_image:
            raise ReadError(
                f"{path.name}: Velox EMD without an image (Data/Image): spectra or "
                "spectrum images are not images"
            )
        return _read_velox(path)
    return _read_berkeley(path)


def _read_velox(path: Path) -> _RawImage:
    from ncempy.io import emdVelox

    with emdVelox.fileEMDVelox(path) as handle:
        if not handle.list_data:
            raise ReadError(f"{path.name}: Velox EMD holds no image data set")
        group = handle.list_data[0]
        shape = tuple(group["Data"].shape)  # (ny, nx, n_frames)
        _check_declared_size(shape, path.name, frame_axis=2 if len(shape) == 3 else None, lazy=True)
        data_path = group["Data"].name
        handle.parseMetaData(group)
        meta = handle.metaDataJSON or {}
        n_sets = len(handle.list_data)
    raw = _RawImage(data=np.empty(0), reader="ncempy-velox")
    _attach_hdf5(raw, path, data_path, frame_axis=2)
    if n_sets > 1:
        raw.warnings.append(f"Velox file holds {n_sets} images; read the first")
    binary = meta.get("BinaryResult", {})
    size = binary.get("PixelSize", {})
    unit_x = _text(binary.get("PixelUnitX", ""))
    unit_y = _text(binary.get("PixelUnitY", ""))
    width = _to_float(size.get("width"))
    height = _to_float(size.get("height"))
    if width is not None and height is not None:
        raw.scale_x = (width, unit_x)
        raw.scale_y = (height, unit_y)
    md = raw.metadata
    md["original_units"] = [unit_y, unit_x]
    md["original_pixel_size"] = [height, width]
    md["n_datasets"] = n_sets
    if binary.get("Detector"):
        md["detector"] = _text(binary["Detector"])
    _fei_optics_metadata(meta, raw)
    return raw


def _fei_optics_metadata(meta: dict, raw: _RawImage) -> None:
    """Velox JSON / FEI_TITAN XML (as a nested dict): voltage, magnification, defocus [m]."""
    md = raw.metadata
    optics = meta.get("Optics", {}) or {}
    volts = _to_float(optics.get("AccelerationVoltage"))
    if volts:
        md["voltage_kv"] = volts / 1000.0
    mag = _to_float(optics.get("NominalMagnification"))
    if mag:
        md["magnification"] = mag
    instrument = meta.get("Instrument", {}) or {}
    parts: list[str] = []
    for key in ("InstrumentClass", "InstrumentModel"):
        part = _text(instrument.get(key, "")).strip()
        if part and part not in parts:
            parts.append(part)
    model = " ".join(parts)
    if model:
        md["microscope"] = model
    acquisition = meta.get("Acquisition", {}) or {}
    start = acquisition.get("AcquisitionStartDatetime")
    if isinstance(start, dict):
        stamp = _to_float(start.get("DateTime"))
        if stamp:
            md["acquisition_time"] = _dt.datetime.fromtimestamp(stamp, _dt.UTC).isoformat()
    elif start:
        md["acquisition_time"] = _text(start)
    for key in ("OperatingMode", "TemOperatingSubMode", "TEMOperatingSubMode", "ProjectorMode"):
        if optics.get(key):
            md[key[0].lower() + key[1:]] = _text(optics[key])
    defocus_m = _to_float(optics.get("Defocus"))
    if defocus_m is not None:
        raw.defocus_nm = defocus_m * 1e9
        md["defocus_source"] = "Optics/Defocus (m)"


def _attach_hdf5(raw: _RawImage, path: Path, data_path: str, *, frame_axis: int | None) -> None:
    """Set ``raw.data`` from an HDF5 data set: 3-D stacks stay on disk and are read frame by frame.

    For a stack with more than one frame the file stays open (closed by ``raw.closers`` after the
    image is built); otherwise the data set is read at once and the file closed.
    """
    import h5py

    handle = h5py.File(path, "r")
    try:
        dataset = handle[data_path]
        shape = tuple(dataset.shape)
        if len(shape) == 3 and frame_axis is not None and shape[frame_axis] > 1:
            raw.data = dataset  # h5py slicing reads one frame at a time
            raw.frame_axis = frame_axis
            raw.closers.append(handle.close)
            return
        data = np.asarray(dataset[...])
        if len(shape) == 3 and frame_axis is not None:  # a single frame
            data = np.take(data, 0, axis=frame_axis)
        raw.data = data
    except BaseException:
        handle.close()
        raise
    handle.close()


def _read_berkeley(path: Path) -> _RawImage:
    from ncempy.io import emd

    with emd.fileEMD(path, readonly=True) as handle:
        groups = list(handle.list_emds)
        chosen = None
        for group in groups:
            shape = group["data"].shape
            if sum(s > 1 for s in shape) >= 2:
                chosen = group
                break
        if chosen is None:
            chosen = groups[0]
        shape = tuple(chosen["data"].shape)
        _check_declared_size(shape, path.name, lazy=len(shape) == 3)
        dims = handle.get_emddims(chosen)
        microscope = dict(handle.microscope.attrs) if handle.microscope is not None else {}
        group_name = chosen.name
    raw = _RawImage(data=np.empty(0), reader="ncempy-emd")
    steps: list[float | None] = []
    units: list[str] = []
    for vector, _name, unit in dims:
        vec = np.asarray(vector, dtype=float).reshape(-1)
        steps.append(float(vec[1] - vec[0]) if vec.size > 1 else None)
        units.append(_text(unit))
    spatial = [i for i in range(len(shape)) if shape[i] > 1]
    frame_axis = None
    if len(shape) == 3:
        lengths = [i for i in range(3) if _is_length_unit(units[i])]
        frame_axis = ({0, 1, 2} - set(lengths)).pop() if len(lengths) == 2 else 0
        spatial = [i for i in range(3) if i != frame_axis]
    _attach_hdf5(raw, path, f"{group_name}/data", frame_axis=frame_axis)
    if len(spatial) >= 2:
        ay, ax = spatial[-2], spatial[-1]
        if steps[ay] is not None and steps[ax] is not None:
            raw.scale_y = (abs(steps[ay]), units[ay])
            raw.scale_x = (abs(steps[ax]), units[ax])
    md = raw.metadata
    md["original_units"] = units
    md["original_pixel_size"] = steps
    md["emd_group"] = group_name
    if len(groups) > 1:
        raw.warnings.append(f"EMD file holds {len(groups)} data sets; read {group_name}")
    volts = _to_float(microscope.get("high tension"))
    if volts:
        md["voltage_kv"] = volts / 1000.0 if volts > 1000 else volts
    mag = _to_float(microscope.get("magnification"))
    if mag:
        md["magnification"] = mag
    if microscope.get("name"):
        md["microscope"] = _text(microscope["name"])
    if "defocus" in microscope:
        # The Berkeley EMD format does not fix the unit of this attribute: kept, not used.
        md["microscope_defocus_raw"] = _to_float(microscope["defocus"])
    return raw


def _is_length_unit(unit: str) -> bool:
    try:
        unit_to_nm(unit)
    except CalibrationError:
        return False
    return True


def _read_mrc(path: Path) -> _RawImage:
    """MRC via ncempy: voxel size in Å, stacks are (n_frames, ny, nx), memory-mapped."""
    from ncempy.io import mrc

    with mrc.fileMRC(path) as handle:
        dims = [int(d) for d in handle.dataSize]
        _check_declared_size(dims, path.name, frame_axis=0 if len(dims) == 3 else None, lazy=True)
        sizes = [float(s) for s in np.ravel(handle.voxelSize)]
        data = handle.getMemmap()  # memory-mapped: only the frame(s) used are read
    unit = "A"  # the MRC format stores the voxel size in Angstrom
    raw = _RawImage(data=data, reader="ncempy-mrc")
    if data.ndim == 3:
        raw.frame_axis = 0
    if len(sizes) >= 2 and all(s > 0 for s in sizes[-2:]):
        raw.scale_y = (sizes[-2], unit)
        raw.scale_x = (sizes[-1], unit)
    raw.metadata["original_units"] = [unit] * len(sizes)
    raw.metadata["original_pixel_size"] = sizes
    return raw


def _xml_to_dict(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        tag = child.tag.split("}")[-1]
        out[tag] = _xml_to_dict(child)
    return out


def _read_tiff(path: Path) -> _RawImage:
    """TIFF via tifffile with FEI, DigitalMicrograph or ImageJ calibration tags."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ReadError(f"{path.name}: the TIFF file holds no image (corrupt or truncated?)")
        series = tif.series[0]
        declared = list(series.shape)
        if series.axes.endswith("S"):
            declared = declared[:-1]
        _check_declared_size(declared, path.name)
        data = np.asarray(series.asarray())
        axes = series.axes
        page = tif.pages[0]
        tags = {tag.code: tag.value for tag in page.tags}
        fei = tif.fei_metadata if tif.is_fei else None
        imagej = tif.imagej_metadata if tif.is_imagej else None
        photometric = page.photometric
    rgb = bool(
        axes.endswith("S")
        and data.shape[-1] in (3, 4)
        and photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    ) or (axes.endswith("S") and data.shape[-1] in (3, 4))
    raw = _RawImage(data=data, reader="tifffile", rgb=rgb)
    image_ndim = data.ndim - (1 if rgb else 0)
    if image_ndim > 3:
        lead = int(np.prod(data.shape[: image_ndim - 2]))
        raw.data = data.reshape((lead, *data.shape[image_ndim - 2 :]))
        image_ndim = 3
    if image_ndim == 3:
        raw.frame_axis = 0
    md = raw.metadata
    md["tiff_axes"] = axes
    # 1) FEI / Thermo Fisher: pixel size in m.
    if fei:
        scan = fei.get("Scan") or fei.get("EScan") or {}
        width = _to_float(scan.get("PixelWidth"))
        height = _to_float(scan.get("PixelHeight"))
        if width and height:
            raw.scale_x = (width, "m")
            raw.scale_y = (height, "m")
            raw.reader = "tifffile-fei"
        beam = fei.get("Beam", {}) or {}
        volts = _to_float(beam.get("HV"))
        if volts:
            md["voltage_kv"] = volts / 1000.0
        system = fei.get("System", {}) or {}
        if system.get("SystemType"):
            md["microscope"] = _text(system["SystemType"])
        user = fei.get("User", {}) or {}
        stamp = " ".join(_text(user[k]) for k in ("Date", "Time") if user.get(k))
        if stamp:
            md["acquisition_time"] = stamp
    titan = tags.get(34683)
    if isinstance(titan, str) and titan.lstrip().startswith("<"):
        try:
            tree = _xml_to_dict(ET.fromstring(titan.strip()))
        except ET.ParseError:
            tree = {}
        if isinstance(tree, dict):
            _fei_optics_metadata(tree, raw)
            if raw.reader == "tifffile":
                raw.reader = "tifffile-fei"
            # Velox-exported TIFF: the same BinaryResult/PixelSize as in a Velox EMD.
            binary = tree.get("BinaryResult", {}) if isinstance(tree, dict) else {}
            size = binary.get("PixelSize", {}) if isinstance(binary, dict) else {}
            if raw.scale_x is None and isinstance(size, dict):
                width = _to_float(size.get("width"))
                height = _to_float(size.get("height"))
                if width and height:
                    raw.scale_x = (width, _text(binary.get("PixelUnitX", "m")) or "m")
                    raw.scale_y = (height, _text(binary.get("PixelUnitY", "m")) or "m")
    # 2) DigitalMicrograph private tags: 65003/65009 x unit/scale, 65004/65010 y unit/scale.
    if raw.scale_x is None and 65009 in tags and 65010 in tags:
        unit_x = _text(tags.get(65003, "")).strip("\x00 ")
        unit_y = _text(tags.get(65004, "")).strip("\x00 ")
        scale_x = _to_float(tags[65009])
        scale_y = _to_float(tags[65010])
        if scale_x and scale_y:
            raw.scale_x = (scale_x, unit_x)
            raw.scale_y = (scale_y, unit_y)
            raw.reader = "tifffile-dm"
    # 3) ImageJ: unit in the description, pixels per unit in X/YResolution.
    if raw.scale_x is None and imagej is not None:
        unit = _text(imagej.get("unit", "")).strip()
        yunit = _text(imagej.get("yunit", unit)).strip() or unit
        xres = tags.get(282)
        yres = tags.get(283)
        if unit and xres and yres:
            per_x = xres[0] / xres[1] if xres[1] else 0.0
            per_y = yres[0] / yres[1] if yres[1] else 0.0
            if per_x > 0 and per_y > 0:
                raw.scale_x = (1.0 / per_x, unit)
                raw.scale_y = (1.0 / per_y, yunit)
                raw.reader = "tifffile-imagej"
        elif not unit:
            raw.reader = "tifffile-imagej"
    description = tags.get(270)
    if isinstance(description, str) and "Digital Micrograph" in description:
        md["software"] = "DigitalMicrograph"
    if raw.scale_x is not None:
        md["original_units"] = [raw.scale_y[1], raw.scale_x[1]]
        md["original_pixel_size"] = [raw.scale_y[0], raw.scale_x[0]]
    return raw


def _read_imageio(path: Path) -> _RawImage:
    """PNG/JPEG/BMP/GIF via imageio: never calibrated."""
    import imageio.v3 as iio

    props = iio.improps(path)
    declared = list(props.shape)
    if len(declared) >= 3 and declared[-1] in (3, 4):
        declared = declared[:-1]
    _check_declared_size(declared, path.name)
    data = np.asarray(iio.imread(path))
    raw = _RawImage(data=data, reader="imageio")
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        raw.rgb = True
    elif data.ndim == 4 and data.shape[-1] in (3, 4):  # animated GIF
        raw.rgb = True
        raw.frame_axis = 0
    elif data.ndim == 3:
        raw.frame_axis = 0
    return raw


_READERS: dict[str, Callable[[Path], _RawImage]] = {
    "dm": _read_dm,
    "ser": _read_ser,
    "emd": _read_emd,
    "mrc": _read_mrc,
    "tiff": _read_tiff,
    "imageio": _read_imageio,
}


def _sniff(path: Path) -> str | None:
    """Format family from the first bytes, for names without a known suffix."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff" or head[:2] == b"BM":
        return "imageio"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "emd"
    if head[:4] in (b"\x00\x00\x00\x03", b"\x00\x00\x00\x04"):
        return "dm"
    return None


# --------------------------------------------------------------------------------------------
# Common post-processing
# --------------------------------------------------------------------------------------------


def _select_frame(
    raw: _RawImage, frame: FrameChoice, name: str
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


def _calibration_nm(raw: _RawImage, name: str) -> tuple[float, float] | None:
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


def _finalise(
    raw: _RawImage,
    *,
    name: str,
    family: str,
    pixel_size_nm: Any,
    frame: FrameChoice,
) -> Micrograph:
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
    warns = list(raw.warnings)
    image, frame_info, frame_warns = _select_frame(raw, frame, name)
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

    metadata = dict(raw.metadata)
    metadata.update(frame_info)
    metadata["original_shape"] = original_shape
    metadata["original_dtype"] = original_dtype
    metadata["format"] = family

    # Calibration: the user's value always wins; metadata otherwise; else ask.
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
                "give the pixel size in nm/px (pixel_size_nm, CLI --pixel-size-nm)"
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

    defocus = raw.defocus_nm
    if defocus is not None and math.isfinite(defocus):
        defocus = float(defocus)
        metadata.setdefault("defocus_source", "metadata")
    else:
        defocus = defocus_from_name(name)
        if defocus is not None:
            metadata["defocus_source"] = "file name"
    metadata["defocus_nm"] = defocus
    return Micrograph(
        data=image,
        pixel_size_nm=(float(py), float(px)),
        reader=raw.reader,
        metadata=_jsonable(metadata),
        warnings=tuple(" ".join(w.split()) for w in warns),
        name=name,
        defocus_nm=defocus,
        pixel_size_source=source,
    )


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    base = re.split(r"[\\/]", name)[-1].strip() or "upload"
    base = re.sub(r"[^\w.,+=@ ()\-\u00b5\u00c5]", "_", base)
    return base.lstrip(".") or "upload"


def load_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    pixel_size_nm: float | tuple[float, float] | None = None,
    frame: FrameChoice = None,
) -> Micrograph:
    """Read one microscope image with its pixel size (nm/px per axis) and metadata.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A path, or the file's bytes (as a browser upload hands them over; then ``name`` gives the
        file name and so the format).
    name : str, optional
        File name shown in messages and used for the format and the defocus; default: the path's.
    pixel_size_nm : float or (float, float), optional
        Overrides the file's calibration ((y, x) nm/px); required for uncalibrated files.
    frame : int or "sum", optional
        For stacks: the frame index, or "sum" for the sum of all frames; default frame 0 with a
        warning naming the number of frames.

    Returns
    -------
    Micrograph
        data (ny, nx) float32, pixel_size_nm (y, x), metadata, warnings, defocus_nm.

    Raises
    ------
    ReadError
        Missing, empty, corrupt, truncated or unsupported file; not a 2-D image (spectrum, 4-D);
        complex data; smaller than 2x2; all pixels non-finite; bad frame choice.
    CalibrationError
        No pixel size and none given; reciprocal-space or non-length units; a given pixel size
        that is zero, negative, NaN or infinite.
    """
    tmpdir: str | None = None
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            display = _safe_name(name) if name else "upload"
            payload = bytes(source)
            if not payload:
                raise ReadError(f"{display}: the file is empty (0 bytes)")
            tmpdir = tempfile.mkdtemp(prefix="hrtem_io_")  # mode 0700
            path = Path(tmpdir) / display
            with open(path, "wb") as handle:
                handle.write(payload)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            display = _safe_name(name) if name else path.name
            if not path.exists():
                raise ReadError(f"{display}: file not found ({path})")
            if not path.is_file():
                raise ReadError(f"{display}: not a file ({path})")
            if path.stat().st_size == 0:
                raise ReadError(f"{display}: the file is empty (0 bytes)")
        else:
            raise ReadError(
                f"cannot read {type(source).__name__}: give a file path or the file's bytes"
            )
        suffix = Path(display).suffix.lower() or path.suffix.lower()
        family = _FAMILY_BY_SUFFIX.get(suffix)
        if family is None:
            family = _sniff(path)
        if family is None and suffix in _UNSUPPORTED:
            raise ReadError(f"{display}: {_UNSUPPORTED[suffix]}")
        if family is None:
            known = ", ".join(sorted(_FAMILY_BY_SUFFIX))
            raise ReadError(
                f"{display}: unsupported or unrecognised file format {suffix or '(no suffix)'!r}; "
                f"supported: {known}"
            )
        reader = _READERS[family]
        try:
            with _quiet():
                raw = reader(path)
                try:  # stacks may still be read here, frame by frame
                    return _finalise(
                        raw, name=display, family=family, pixel_size_nm=pixel_size_nm, frame=frame
                    )
                finally:
                    for close in raw.closers:
                        close()
        except HRTEMError:
            raise
        except Exception as exc:  # the reader boundary: no library exception escapes
            reason = _short(exc)
            if tmpdir is not None:  # never show the private temporary path
                reason = reason.replace(str(path), display).replace(tmpdir, "")
            raise ReadError(
                f"{display}: cannot be read as {_FAMILY_LABEL[family]} (corrupt, truncated or "
                f"not this format): {reason}"
            ) from None
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


__all__ = [
    "MAX_DATA_VALUES",
    "MAX_IMAGE_PIXELS",
    "NON_SQUARE_REL_TOL",
    "PLAUSIBLE_PIXEL_NM",
    "SUPPORTED_EXTENSIONS",
    "USER_OVERRIDE_REL_TOL",
    "Micrograph",
    "defocus_from_name",
    "load_image",
    "validate_pixel_size",
]
