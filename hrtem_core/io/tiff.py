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
        data = np.asarray(series.asarray(maxworkers=1))
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
    raw = RawImage(data=data, reader="tifffile", rgb=rgb)
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
    titan = tags.get(34683)
    if isinstance(titan, str) and len(titan) > _guard.limits().metadata_bytes:
        raw.warnings.append("FEI_TITAN metadata larger than the metadata limit: not read")
        titan = None
    if isinstance(titan, str) and titan.lstrip().startswith("<"):
        try:
            tree = _xml_to_dict(ET.fromstring(titan.strip()))
        except (ET.ParseError, RecursionError):
            tree = {}
        if isinstance(tree, dict):
            fei_optics_metadata(tree, raw)
            if raw.reader == "tifffile":
                raw.reader = "tifffile-fei"
            # Velox-exported TIFF: the same BinaryResult/PixelSize as in a Velox EMD.
            binary = tree.get("BinaryResult", {}) if isinstance(tree, dict) else {}
            size = binary.get("PixelSize", {}) if isinstance(binary, dict) else {}
            if raw.scale_x is None and isinstance(size, dict):
                width = to_float(size.get("width"))
                height = to_float(size.get("height"))
                if width and height:
                    raw.scale_x = (width, text(binary.get("PixelUnitX", "m")) or "m")
                    raw.scale_y = (height, text(binary.get("PixelUnitY", "m")) or "m")
    # 2) DigitalMicrograph private tags: 65003/65009 x unit/scale, 65004/65010 y unit/scale.
    if raw.scale_x is None and 65009 in tags and 65010 in tags:
        unit_x = text(tags.get(65003, "")).strip("\x00 ")
        unit_y = text(tags.get(65004, "")).strip("\x00 ")
        scale_x = to_float(tags[65009])
        scale_y = to_float(tags[65010])
        if scale_x and scale_y:
            raw.scale_x = (scale_x, unit_x)
            raw.scale_y = (scale_y, unit_y)
            raw.reader = "tifffile-dm"
    # 3) ImageJ: unit in the description, pixels per unit in X/YResolution.
    if raw.scale_x is None and imagej is not None:
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
    description = tags.get(270)
    if isinstance(description, str) and "Digital Micrograph" in description:
        md["software"] = "DigitalMicrograph"
    if raw.scale_x is not None:
        md["original_units"] = [raw.scale_y[1], raw.scale_x[1]]
        md["original_pixel_size"] = [raw.scale_y[0], raw.scale_x[0]]
    return raw
