"""``.emd`` / ``.h5`` / ``.hdf5``: check the HDF5 file, then read it as Velox or Berkeley EMD."""

from __future__ import annotations

from pathlib import Path

from hrtem_core.io import _hdf5, emd_berkeley, emd_velox
from hrtem_core.io._model import RawImage

SUFFIXES = (".emd", ".h5", ".hdf5")
LABEL = "an EMD (HDF5) file"
MAGIC = (b"\x89HDF\r\n\x1a\n",)


def read(path: Path, name: str) -> RawImage:
    """Velox (a ``Data`` group) or Berkeley EMD (``emd_group_type`` groups)."""
    handle, walk = _hdf5.open_checked(path, name)
    try:
        if emd_velox.is_velox(handle):
            return emd_velox.read_open(handle, name)
        return emd_berkeley.read_open(handle, walk, name)
    except BaseException:
        handle.close()
        raise
