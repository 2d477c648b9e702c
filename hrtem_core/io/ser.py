"""FEI/TIA ``.ser`` (ncempy), microscope metadata from the ``.emi`` beside it.

The ``.emi`` is read here, not by ncempy: at most ``MAX_METADATA_BYTES`` of it, and a missing,
oversized or corrupt ``.emi`` only costs the metadata (a warning), never the image in the
``.ser``. The frame count is checked against ``MAX_FRAMES`` before any frame is read.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from hrtem_core.errors import ReadError
from hrtem_core.io import _guard
from hrtem_core.io._model import RawImage, defocus_with_unit, short, text, to_float

SUFFIXES = (".ser",)
LABEL = "an FEI/TIA SER file"
MAGIC = ()


def emi_path(path: Path) -> Path:
    """The ``.emi`` of ``name_1.ser``: ``name.emi`` (the TIA naming rule, as ncempy)."""
    return path.parent / (path.stem[:-2] + ".emi")


def read_emi(path: Path, name: str) -> tuple[dict | None, str | None]:
    """The ``.emi`` metadata as ncempy's ``read_emi`` gives it, or (None, warning).

    Returns
    -------
    (dict or None, str or None)
        The metadata, or None with a one-line warning when the file is missing, too large or
        not readable.
    """
    emi = emi_path(path)
    shown = f"{path.stem[:-2] if path.stem.endswith(('_1', '_2')) else path.stem}.emi"
    if not emi.is_file():
        return None, (
            f"no {shown} beside the SER file: microscope metadata (voltage, defocus) not available"
        )
    lim = _guard.limits()
    try:
        size = emi.stat().st_size
        if size > lim.metadata_bytes:
            return None, (
                f"{shown} is {size / 2**20:.0f} MiB, more than the {lim.metadata_bytes / 2**20:.0f}"
                " MiB accepted for metadata: microscope metadata not read"
            )
        with open(emi, "rb") as fh:
            data = fh.read(lim.metadata_bytes + 1)
        return _parse_emi(data), None
    except Exception as exc:  # a corrupt .emi costs the metadata, not the image
        return None, (
            f"{shown} beside the SER file is corrupt ({short(exc)}): microscope metadata "
            "(voltage, defocus) not available; the image is read from the SER file"
        )


def _parse_emi(data: bytes) -> dict:
    from ncempy.io.ser import _parseEntry_emi

    start = data.find(b"<ObjectInfo>")
    end = data.find(b"</ObjectInfo>")
    if start < 0 or end < 0:
        raise ValueError("no <ObjectInfo> block")
    root = ET.fromstring(data[start : end + 13])
    out: dict[str, Any] = {}
    for key in ("Uuid", "AcquireDate", "Manufacturer", "DetectorPixelHeight", "DetectorPixelWidth"):
        out[key] = root.findtext(key)
    for path, fmt in (
        ("ExperimentalConditions/MicroscopeConditions", None),
        ("ExperimentalDescription/Root", "label"),
        ("AcquireInfo", None),
        ("DetectorRange", "range"),
    ):
        grp = root.find(path)
        if grp is None:
            continue
        for elem in grp:
            if fmt == "label":
                key = "{} [{}]".format(elem.findtext("Label"), elem.findtext("Unit"))
                out[key] = _parseEntry_emi(elem.findtext("Value"))
            elif fmt == "range":
                out["DetectorRange_" + elem.tag] = _parseEntry_emi(elem.text)
            else:
                out[elem.tag] = _parseEntry_emi(elem.text)
    return out


def _ser_class() -> type:
    from ncempy.io import ser

    _guard.mute(ser)

    class _SER(ser.fileSER):
        def _read_emi(self) -> None:  # the .emi is read by :func:`read_emi`, bounded
            self._emi = None

    return _SER


def read(path: Path, name: str) -> RawImage:
    """FEI/TIA .ser via ncempy, microscope metadata from the .emi beside it."""
    emi, emi_warning = read_emi(path, name)
    with _ser_class()(path) as handle:
        head = handle.head
        if head["ValidNumberElements"] <= 0:
            raise ReadError(f"{name}: the SER file holds no data set")
        if head["DataTypeID"] == 0x4120:
            raise ReadError(
                f"{name}: not an image: the SER file holds spectra (EELS/EDS), not a 2-D image"
            )
        frames = []
        calibration = None
        n_elements = int(head["ValidNumberElements"])
        _guard.check_count(n_elements, _guard.limits().frames, name, "frames")
        for index in range(n_elements):
            _guard.tick("reading the SER frames")
            array, meta = handle.getDataset(index)
            if index == 0:
                _guard.check_declared(
                    (n_elements, *np.shape(array)),
                    name,
                    itemsize=np.asarray(array).dtype.itemsize,
                    frame_axis=0,
                )
            frames.append(np.asarray(array))
            if calibration is None:
                calibration = meta.get("Calibration", [])
    data = frames[0] if len(frames) == 1 else np.stack(frames, axis=0)
    raw = RawImage(data=data, reader="ncempy-ser", frame_axis=0 if data.ndim == 3 else None)
    # SER stores calibration X first, then Y, always in metres.
    if calibration and len(calibration) >= 2:
        raw.scale_x = (float(calibration[0]["CalibrationDelta"]), "m")
        raw.scale_y = (float(calibration[1]["CalibrationDelta"]), "m")
        raw.metadata["original_pixel_size"] = [raw.scale_y[0], raw.scale_x[0]]
        raw.metadata["original_units"] = ["m", "m"]
    md = raw.metadata
    if emi:
        md["emi"] = True
        kv = to_float(emi.get("High tension [kV]"))
        if kv is None:
            volts = to_float(emi.get("AcceleratingVoltage"))
            kv = volts / 1000.0 if volts else None
        if kv:
            md["voltage_kv"] = kv
        mag = to_float(emi.get("Magnification [x]"))
        if mag:
            md["magnification"] = mag
        scope = emi.get("Microscope []")
        if scope:
            md["microscope"] = text(scope).strip()
        if emi.get("AcquireDate"):
            md["acquisition_time"] = text(emi["AcquireDate"])
        if emi.get("Mode []"):
            md["mode"] = text(emi["Mode []"]).strip()
        for key, value in emi.items():
            match = re.fullmatch(r"defocus\s*\[([^\]]*)\]", str(key).strip(), re.IGNORECASE)
            if match:
                defocus = defocus_with_unit(value, match.group(1) or "nm")
                if defocus is not None:
                    raw.defocus_nm = defocus
                    md["defocus_source"] = f"EMI {key!r}"
                break
    else:
        md["emi"] = False
        raw.warnings.append(emi_warning or "the .emi beside the SER file holds no metadata")
    return raw
