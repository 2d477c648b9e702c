"""Berkeley EMD (``.emd``, ``.h5``, ``.hdf5``): groups with ``emd_group_type = 1``.

Each such group holds ``data`` and per-axis ``dimN`` vectors with ``name``/``units`` attributes;
the first group with two image axes is read. Read with h5py after
:func:`hrtem_core.io._hdf5.open_checked` (nothing outside the file; the group tree is walked once,
with a visited set, so shared hard links cost one visit). The reader id ``ncempy-emd`` is kept from
the ncempy-based reader this replaces (same groups, same dims, same metadata).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hrtem_core.errors import ReadError
from hrtem_core.io import _guard, _hdf5
from hrtem_core.io._model import RawImage, is_length_unit, text, to_float
from hrtem_core.io.emd_velox import attach

LABEL = "an EMD (HDF5) file"


def _emd_groups(handle: Any, walk: _hdf5.Walk, name: str) -> list[Any]:
    import h5py

    found = []
    # Sorting the paths by their components gives the depth-first order of a recursive walk.
    for path in sorted(walk.groups, key=lambda p: p.split("/")):
        group = handle[path] if path != "/" else handle
        if not isinstance(group, h5py.Group):
            continue
        kind = _hdf5.read_attr(group, "emd_group_type", name)
        if kind is None or "data" not in group:
            continue
        try:
            if int(np.ravel(kind)[0]) != 1:
                continue
        except (TypeError, ValueError, IndexError):
            continue
        if isinstance(group.get("data"), h5py.Dataset):
            found.append(group)
    return found


def _dims(group: Any, ndim: int, name: str) -> list[tuple[float | None, str]]:
    """(step, unit) per axis from ``dim1`` ... ``dimN`` (step None when not a vector)."""
    import h5py

    lim = _guard.limits()
    out: list[tuple[float | None, str]] = []
    for ii in range(ndim):
        dim = group.get(f"dim{ii + 1}")
        if not isinstance(dim, h5py.Dataset):
            raise ReadError(f"{name}: the EMD group {group.name[:80]} has no dim{ii + 1} vector")
        _guard.check_count(
            int(dim.size) * dim.dtype.itemsize, lim.metadata_bytes, name, "bytes in one dim vector"
        )
        vec = np.asarray(dim[()], dtype=float).reshape(-1)
        unit = _hdf5.read_attr(dim, "units", name)
        if isinstance(unit, np.ndarray):
            unit = unit.reshape(-1)[0] if unit.size else "pixels"
        unit = "pixels" if unit is None else text(unit)
        out.append((float(vec[1] - vec[0]) if vec.size > 1 else None, unit))
    return out


def read_open(handle: Any, walk: _hdf5.Walk, name: str) -> RawImage:
    """Read the first Berkeley EMD image of an open, checked file (closed or handed on)."""
    groups = _emd_groups(handle, walk, name)
    if not groups:
        raise ReadError(
            f"{name}: cannot be read as {LABEL} (corrupt, truncated or not this format): "
            "No Berkeley EMD data sets found in file."
        )
    chosen = next((g for g in groups if sum(s > 1 for s in g["data"].shape) >= 2), groups[0])
    dataset = chosen["data"]
    shape = tuple(dataset.shape)
    _guard.check_declared(shape, name, itemsize=dataset.dtype.itemsize, lazy=len(shape) == 3)
    dims = _dims(chosen, len(shape), name)
    units = [d[1] for d in dims]
    frame_axis = None
    if len(shape) == 3:
        lengths = [i for i in range(3) if is_length_unit(units[i])]
        frame_axis = ({0, 1, 2} - set(lengths)).pop() if len(lengths) == 2 else 0
        _guard.check_declared(
            shape, name, itemsize=dataset.dtype.itemsize, frame_axis=frame_axis, lazy=True
        )
    microscope: dict = {}
    scope = handle.get("microscope")
    if scope is not None and hasattr(scope, "attrs"):
        microscope = _hdf5.attrs_dict(scope, name)
    group_name = chosen.name
    raw = RawImage(data=np.empty(0), reader="ncempy-emd")
    steps = [d[0] for d in dims]
    spatial = [i for i in range(len(shape)) if shape[i] > 1]
    if frame_axis is not None:
        spatial = [i for i in range(3) if i != frame_axis]
    attach(raw, handle, dataset, frame_axis=frame_axis, name=name)
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
    volts = to_float(microscope.get("high tension"))
    if volts:
        md["voltage_kv"] = volts / 1000.0 if volts > 1000 else volts
    mag = to_float(microscope.get("magnification"))
    if mag:
        md["magnification"] = mag
    if microscope.get("name") is not None and text(microscope["name"]):
        md["microscope"] = text(microscope["name"])
    if "defocus" in microscope:
        # The Berkeley EMD format does not fix the unit of this attribute: kept, not used.
        md["microscope_defocus_raw"] = to_float(microscope["defocus"])
    return raw
