"""Velox ``.emd`` (Thermo Fisher): ``Data/Image/<id>/Data`` (ny, nx, frames) with JSON metadata.

Read with h5py after :func:`hrtem_core.io._hdf5.open_checked` (nothing outside the file, bounded
walk); the JSON in ``Metadata`` is read only up to ``MAX_METADATA_BYTES``. The reader id
``ncempy-velox`` is kept from the ncempy-based reader this replaces (same layout, same metadata).
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import numpy as np

from hrtem_core.errors import ReadError
from hrtem_core.io import _guard
from hrtem_core.io._model import RawImage, text, to_float

LABEL = "an EMD (HDF5) file"


def is_velox(handle: Any) -> bool:
    """True for the Velox layout (a ``Data`` group)."""
    import h5py

    return "Data" in handle and handle.get("Data", getclass=True) is h5py.Group


def read_open(handle: Any, name: str) -> RawImage:
    """Read the first image of an open, checked Velox file (``handle`` is closed or handed on)."""
    import h5py

    data_group = handle["Data"]
    if "Image" not in data_group or not isinstance(data_group["Image"], h5py.Group):
        raise ReadError(
            f"{name}: Velox EMD without an image (Data/Image): spectra or "
            "spectrum images are not images"
        )
    images = [g for g in data_group["Image"].values() if isinstance(g, h5py.Group)]
    images = [g for g in images if "Data" in g and isinstance(g["Data"], h5py.Dataset)]
    if not images:
        raise ReadError(f"{name}: Velox EMD holds no image data set")
    group = images[0]
    dataset = group["Data"]
    shape = tuple(dataset.shape)  # (ny, nx, n_frames)
    _guard.check_declared(
        shape,
        name,
        itemsize=dataset.dtype.itemsize,
        frame_axis=2 if len(shape) == 3 else None,
        lazy=True,
    )
    meta = _metadata(group, name)
    n_sets = len(images)
    raw = RawImage(data=np.empty(0), reader="ncempy-velox")
    attach(raw, handle, dataset, frame_axis=2, name=name)
    if n_sets > 1:
        raw.warnings.append(f"Velox file holds {n_sets} images; read the first")
    binary = meta.get("BinaryResult", {}) if isinstance(meta, dict) else {}
    binary = binary if isinstance(binary, dict) else {}
    size = binary.get("PixelSize", {})
    size = size if isinstance(size, dict) else {}
    unit_x = text(binary.get("PixelUnitX", ""))
    unit_y = text(binary.get("PixelUnitY", ""))
    width = to_float(size.get("width"))
    height = to_float(size.get("height"))
    if width is not None and height is not None:
        raw.scale_x = (width, unit_x)
        raw.scale_y = (height, unit_y)
    md = raw.metadata
    md["original_units"] = [unit_y, unit_x]
    md["original_pixel_size"] = [height, width]
    md["n_datasets"] = n_sets
    if binary.get("Detector"):
        md["detector"] = text(binary["Detector"])
    fei_optics_metadata(meta if isinstance(meta, dict) else {}, raw)
    return raw


def _metadata(group: Any, name: str) -> dict:
    """The JSON of ``Metadata`` column 0 (the first frame's), bounded by ``MAX_METADATA_BYTES``."""
    import h5py

    if "Metadata" not in group or not isinstance(group["Metadata"], h5py.Dataset):
        return {}
    meta = group["Metadata"]
    if meta.ndim != 2 or meta.dtype.itemsize != 1:
        return {}
    _guard.check_count(
        int(meta.shape[0]), _guard.limits().metadata_bytes, name, "bytes of Velox metadata"
    )
    column = np.asarray(meta[:, 0])
    payload = column[column > 0].tobytes()
    try:
        out = json.loads(payload.decode("utf-8", "ignore"))
    except (ValueError, RecursionError):
        raise ReadError(f"{name}: the Velox metadata is not valid JSON (corrupt?)") from None
    return out if isinstance(out, dict) else {}


def fei_optics_metadata(meta: dict, raw: RawImage) -> None:
    """Velox JSON / FEI_TITAN XML (as a nested dict): voltage, magnification, defocus [m]."""
    md = raw.metadata
    optics = meta.get("Optics", {}) or {}
    volts = to_float(optics.get("AccelerationVoltage"))
    if volts:
        md["voltage_kv"] = volts / 1000.0
    mag = to_float(optics.get("NominalMagnification"))
    if mag:
        md["magnification"] = mag
    instrument = meta.get("Instrument", {}) or {}
    parts: list[str] = []
    for key in ("InstrumentClass", "InstrumentModel"):
        part = text(instrument.get(key, "")).strip()
        if part and part not in parts:
            parts.append(part)
    model = " ".join(parts)
    if model:
        md["microscope"] = model
    acquisition = meta.get("Acquisition", {}) or {}
    start = acquisition.get("AcquisitionStartDatetime")
    if isinstance(start, dict):
        stamp = to_float(start.get("DateTime"))
        if stamp:
            md["acquisition_time"] = _dt.datetime.fromtimestamp(stamp, _dt.UTC).isoformat()
    elif start:
        md["acquisition_time"] = text(start)
    for key in ("OperatingMode", "TemOperatingSubMode", "TEMOperatingSubMode", "ProjectorMode"):
        if optics.get(key):
            md[key[0].lower() + key[1:]] = text(optics[key])
    defocus_m = to_float(optics.get("Defocus"))
    if defocus_m is not None:
        raw.defocus_nm = defocus_m * 1e9
        md["defocus_source"] = "Optics/Defocus (m)"


def attach(raw: RawImage, handle: Any, dataset: Any, *, frame_axis: int | None, name: str) -> None:
    """Set ``raw.data`` from an HDF5 data set: 3-D stacks stay on disk and are read frame by frame.

    For a stack with more than one frame the file stays open (closed by ``raw.closers`` after the
    image is built); otherwise the data set is read at once and the file closed.
    """
    shape = tuple(dataset.shape)
    if len(shape) == 3 and frame_axis is not None and shape[frame_axis] > 1:
        raw.data = dataset  # h5py slicing reads one frame at a time
        raw.frame_axis = frame_axis
        raw.closers.append(handle.close)
        return
    try:
        _guard.check_declared(shape, name, itemsize=dataset.dtype.itemsize)
        data = np.asarray(dataset[...])
        if len(shape) == 3 and frame_axis is not None:  # a single frame
            data = np.take(data, 0, axis=frame_axis)
        raw.data = data
    finally:
        handle.close()
