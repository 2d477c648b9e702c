"""TIFF (tifffile) with FEI/Thermo, DigitalMicrograph or ImageJ calibration tags.

FEI/Thermo tags (``FEI_HELIOS`` / ``FEI_SFEG``, pixel size in m, plus the Velox XML in
``FEI_TITAN``), DigitalMicrograph private tags 65003-65011, ImageJ ``unit`` + X/YResolution;
otherwise uncalibrated. The TIFF ResolutionUnit inch/cm (print DPI) is never taken as a microscope
calibration. The declared size is checked in bytes (samples and item size included) and in frames
before any pixel is decoded; the Velox XML is parsed only up to ``MAX_METADATA_BYTES``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from hrtem_core.errors import ReadError
from hrtem_core.io import _guard
from hrtem_core.io._model import RawImage, text, to_float
from hrtem_core.io.emd_velox import fei_optics_metadata

SUFFIXES = (".tif", ".tiff")
LABEL = "a TIFF file"
MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _xml_to_dict(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        tag = child.tag.split("}")[-1]
        out[tag] = _xml_to_dict(child)
    return out


def read(path: Path, name: str) -> RawImage:
    """TIFF via tifffile with FEI, DigitalMicrograph or ImageJ calibration tags."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data, axes = _decode_first_series(tif, name)
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
    raw = RawImage(data=data, reader="tifffile", rgb=rgb)
    _set_frames(raw, data, rgb)
    md = raw.metadata
    md["tiff_axes"] = axes
    if fei:  # 1) FEI / Thermo Fisher: pixel size in m.
        _read_fei(fei, raw)
    _read_velox_xml(tags.get(34683), raw)
    _read_dm_tags(tags, raw)  # 2) DigitalMicrograph private tags
    _read_imagej(imagej, tags, raw)  # 3) ImageJ
    description = tags.get(270)
    if isinstance(description, str) and "Digital Micrograph" in description:
        md["software"] = "DigitalMicrograph"
    if raw.scale_x is not None:
        md["original_units"] = [raw.scale_y[1], raw.scale_x[1]]
        md["original_pixel_size"] = [raw.scale_y[0], raw.scale_x[0]]
    return raw


def _decode_first_series(tif: Any, name: str) -> tuple[np.ndarray, str]:
    """The first series' pixels and axes, its declared size checked before decoding."""
    if not tif.series:
        raise ReadError(f"{name}: the TIFF file holds no image (corrupt or truncated?)")
    series = tif.series[0]
    declared = list(series.shape)
    samples = 1
    if series.axes.endswith("S"):
        samples = declared[-1]
        declared = declared[:-1]
    _guard.check_declared(declared, name, itemsize=series.dtype.itemsize, samples=samples)
    if series.dtype.kind == "c":  # refused before decoding (the same words as finalise)
        raise ReadError(
            f"{name}: complex data ({series.dtype}, an FFT or exit wave?) is not an image; "
            "save the real-space image instead"
        )
    _guard.tick("reading the TIFF header")
    return np.asarray(series.asarray(maxworkers=1)), series.axes


def _set_frames(raw: RawImage, data: np.ndarray, rgb: bool) -> None:
    """Fold every axis before the last two (and the samples) into one frame axis."""
    image_ndim = data.ndim - (1 if rgb else 0)
    if image_ndim > 3:
        lead = int(np.prod(data.shape[: image_ndim - 2]))
        raw.data = data.reshape((lead, *data.shape[image_ndim - 2 :]))
        image_ndim = 3
    if image_ndim == 3:
        raw.frame_axis = 0


def _read_fei(fei: dict, raw: RawImage) -> None:
    """FEI / Thermo Fisher ``FEI_HELIOS`` / ``FEI_SFEG`` tags: pixel size [m], HV, system, time."""
    md = raw.metadata
    scan = fei.get("Scan") or fei.get("EScan") or {}
    width = to_float(scan.get("PixelWidth"))
    height = to_float(scan.get("PixelHeight"))
    if width and height:
        raw.scale_x = (width, "m")
        raw.scale_y = (height, "m")
        raw.reader = "tifffile-fei"
    beam = fei.get("Beam", {}) or {}
    volts = to_float(beam.get("HV"))
    if volts:
        md["voltage_kv"] = volts / 1000.0
    system = fei.get("System", {}) or {}
    if system.get("SystemType"):
        md["microscope"] = text(system["SystemType"])
    user = fei.get("User", {}) or {}
    stamp = " ".join(text(user[k]) for k in ("Date", "Time") if user.get(k))
    if stamp:
        md["acquisition_time"] = stamp


def _read_velox_xml(titan: Any, raw: RawImage) -> None:
    """The Velox XML of tag 34683 (``FEI_TITAN``): optics, and the pixel size if none yet."""
    if isinstance(titan, str) and len(titan) > _guard.limits().metadata_bytes:
        raw.warnings.append("FEI_TITAN metadata larger than the metadata limit: not read")
        return
    if not (isinstance(titan, str) and titan.lstrip().startswith("<")):
        return
    try:
        tree = _xml_to_dict(ET.fromstring(titan.strip()))
    except (ET.ParseError, RecursionError):
        tree = {}
    if not isinstance(tree, dict):
        return
    fei_optics_metadata(tree, raw)
    if raw.reader == "tifffile":
        raw.reader = "tifffile-fei"
    # Velox-exported TIFF: the same BinaryResult/PixelSize as in a Velox EMD.
    binary = tree.get("BinaryResult", {})
    size = binary.get("PixelSize", {}) if isinstance(binary, dict) else {}
    if raw.scale_x is None and isinstance(size, dict):
        width = to_float(size.get("width"))
        height = to_float(size.get("height"))
        if width and height:
            raw.scale_x = (width, text(binary.get("PixelUnitX", "m")) or "m")
            raw.scale_y = (height, text(binary.get("PixelUnitY", "m")) or "m")


def _read_dm_tags(tags: dict, raw: RawImage) -> None:
    """DigitalMicrograph private tags: 65003/65009 x unit/scale, 65004/65010 y unit/scale."""
    if raw.scale_x is not None or 65009 not in tags or 65010 not in tags:
        return
    unit_x = text(tags.get(65003, "")).strip("\x00 ")
    unit_y = text(tags.get(65004, "")).strip("\x00 ")
    scale_x = to_float(tags[65009])
    scale_y = to_float(tags[65010])
    if scale_x and scale_y:
        raw.scale_x = (scale_x, unit_x)
        raw.scale_y = (scale_y, unit_y)
        raw.reader = "tifffile-dm"


def _read_imagej(imagej: dict | None, tags: dict, raw: RawImage) -> None:
    """ImageJ: unit in the description, pixels per unit in X/YResolution (tags 282/283)."""
    if raw.scale_x is not None or imagej is None:
        return
    unit = text(imagej.get("unit", "")).strip()
    yunit = text(imagej.get("yunit", unit)).strip() or unit
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
