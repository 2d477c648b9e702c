"""MRC ``.mrc`` / ``.rec`` / ``.st`` / ``.ali`` (ncempy): voxel size in Angstrom, memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrtem_core.io import _guard
from hrtem_core.io._model import RawImage

SUFFIXES = (".mrc", ".rec", ".st", ".ali")
LABEL = "an MRC file"
MAGIC = ()


def read(path: Path, name: str) -> RawImage:
    """MRC via ncempy: voxel size in Å, stacks are (n_frames, ny, nx), memory-mapped."""
    from ncempy.io import mrc

    _guard.mute(mrc)

    with mrc.fileMRC(path) as handle:
        dims = [int(d) for d in handle.dataSize]
        _guard.check_declared(dims, name, frame_axis=0 if len(dims) == 3 else None, lazy=True)
        sizes = [float(s) for s in np.ravel(handle.voxelSize)]
        data = handle.getMemmap()  # memory-mapped: only the frame(s) used are read
    unit = "A"  # the MRC format stores the voxel size in Angstrom
    raw = RawImage(data=data, reader="ncempy-mrc")
    if data.ndim == 3:
        raw.frame_axis = 0
    if len(sizes) >= 2 and all(s > 0 for s in sizes[-2:]):
        raw.scale_y = (sizes[-2], unit)
        raw.scale_x = (sizes[-1], unit)
    raw.metadata["original_units"] = [unit] * len(sizes)
    raw.metadata["original_pixel_size"] = sizes
    return raw
