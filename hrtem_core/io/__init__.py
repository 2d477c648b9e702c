"""Read microscope images with their calibration: one :class:`Micrograph` per file.

One module per format family (in the style of rosettasciio), each with ``SUFFIXES``, ``LABEL``,
``MAGIC`` and ``read(path, name)``, registered in :mod:`hrtem_core.io._registry`:

* :mod:`~hrtem_core.io.dm`: Gatan ``.dm3`` / ``.dm4`` (ncempy, after a bounded tag-tree scan);
* :mod:`~hrtem_core.io.ser`: FEI/TIA ``.ser`` (ncempy) with the ``.emi`` beside it (optional);
* :mod:`~hrtem_core.io.emd`: ``.emd`` / ``.h5`` / ``.hdf5``, checked by :mod:`~hrtem_core.io._hdf5`
  and read as Velox (:mod:`~hrtem_core.io.emd_velox`) or Berkeley EMD
  (:mod:`~hrtem_core.io.emd_berkeley`);
* :mod:`~hrtem_core.io.mrc`: MRC ``.mrc`` / ``.rec`` / ``.st`` / ``.ali`` (ncempy; Å);
* :mod:`~hrtem_core.io.tiff`: TIFF (tifffile) with FEI, DigitalMicrograph or ImageJ calibration;
* :mod:`~hrtem_core.io.pil`: PNG / JPEG / BMP / GIF (Pillow): never calibrated.

Every reader passes the guard (:mod:`hrtem_core.io._guard`): the declared size is checked from
the header before any decode, against the limits below (module attributes, so they can be set per
process; environment variables ``HRTEM_IO_MAX_DECODED_BYTES``, ``HRTEM_IO_READ_BUDGET_S`` give
their defaults); each read has a wall-clock budget; third-party prints are silenced for the
reading thread only (no global lock). :func:`load_image_isolated` runs a read in a child process
with a timeout and an address-space limit.

Every failure inside a third-party reader is caught at the reader boundary and re-raised as
:class:`~hrtem_core.errors.ReadError` naming the file and the format; calibration problems raise
:class:`~hrtem_core.errors.CalibrationError`. Defocus is in nm, negative = underfocus.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hrtem_core._files import display_name
from hrtem_core.errors import HRTEMError, ReadError
from hrtem_core.io import _guard

#: Largest 2-D image (one frame) accepted, in pixels: 8192 x 8192 (256 MiB as float32), twice
#: the side of the common 4k cameras. Larger images (e.g. 16384 x 16384) are refused before their
#: pixels are read, so memory stays bounded; bin or crop them in the acquisition software.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Largest data set (all frames and colour samples of a stack together) that a reader loads
#: whole, in values: 2**28 (e.g. 16 frames of 4096 x 4096); applies to TIFF, SER and PNG/GIF
#: stacks. DM, MRC and EMD stacks are read frame by frame and need only the per-image limit.
MAX_DATA_VALUES = 2**28
#: Largest data set a reader loads whole, in decoded bytes (item size and samples included).
MAX_DECODED_BYTES = int(_guard.env_number("HRTEM_IO_MAX_DECODED_BYTES", 1024**3))
#: Most frames in a stack (a declared 10^6-frame stack is refused from its header).
MAX_FRAMES = 4096
#: Most metadata entries: DigitalMicrograph tags, HDF5 links, attributes on one HDF5 object.
MAX_TAGS = 50_000
#: Largest metadata block read: Velox JSON, .emi XML, TIFF XML, one HDF5 attribute [bytes].
MAX_METADATA_BYTES = 16 * 1024**2
#: Deepest nesting of DigitalMicrograph tag groups or HDF5 groups.
MAX_DEPTH = 64
#: Wall-clock budget of one read [s]; a read past it is refused at its next check.
READ_BUDGET_S = _guard.env_number("HRTEM_IO_READ_BUDGET_S", 60.0)
#: Read HDF5 files (``.emd``, ``.h5``, ``.hdf5``) in a child process (``HRTEM_IO_ISOLATE_HDF5=0``
#: turns it off). libhdf5 runs in C under h5py's process-wide lock, and a damaged file can make
#: it loop for ever (found by ``scripts/fuzz_readers.py``: a corrupt string attribute); in a child
#: such a read ends at its budget, and other reads in this process never wait for it. A daemonic
#: process (a Dask worker) may not start children: there HDF5 is read in-process.
ISOLATE_HDF5 = os.environ.get("HRTEM_IO_ISOLATE_HDF5", "1").strip() != "0"
#: Address-space limit of an isolated read's child process [bytes].
CHILD_MEMORY_BYTES = 3 * 1024**3
_IN_CHILD = False

from hrtem_core.io._model import (  # noqa: E402  (the limits above are read by the modules)
    NON_SQUARE_REL_TOL,
    PLAUSIBLE_PIXEL_NM,
    USER_OVERRIDE_REL_TOL,
    FrameChoice,
    Micrograph,
    PixelSize,
    RawImage,
    defocus_from_name,
    finalise,
    short,
    validate_pixel_size,
)
from hrtem_core.io._registry import (  # noqa: E402
    BY_SUFFIX,
    READERS,
    SUPPORTED_EXTENSIONS,
    UNSUPPORTED,
    Reader,
    sniff,
)

_FAMILY_BY_SUFFIX: dict[str, str] = {s: r.family for s, r in BY_SUFFIX.items()}


def load_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    pixel_size_nm: float | tuple[float, float] | None = None,
    frame: FrameChoice = None,
    budget_s: float | None = None,
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
    budget_s : float, optional
        Wall-clock budget of this read [s]; default :data:`READ_BUDGET_S`.

    Returns
    -------
    Micrograph
        data (ny, nx) float32, pixel_size_nm (y, x), metadata, warnings, defocus_nm.

    Raises
    ------
    ReadError
        Missing, empty, corrupt, truncated or unsupported file; not a 2-D image (spectrum, 4-D);
        complex data; smaller than 2x2; all pixels non-finite; bad frame choice; over a size
        limit, a cap or the time budget; an HDF5 file reaching outside itself.
    CalibrationError
        No pixel size and none given; reciprocal-space or non-length units; a given pixel size
        that is zero, negative, NaN or infinite.
    """
    tmpdir: str | None = None
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            display = display_name(name) if name else "upload"
            payload = bytes(source)
            if not payload:
                raise ReadError(f"{display}: the file is empty (0 bytes)")
            tmpdir = tempfile.mkdtemp(prefix="hrtem_io_")  # mode 0700
            path = Path(tmpdir) / display
            with open(path, "wb") as handle:
                handle.write(payload)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            display = display_name(name) if name else path.name
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
        reader = BY_SUFFIX.get(suffix)
        if reader is None:
            reader = sniff(path)
        if reader is None and suffix in UNSUPPORTED:
            raise ReadError(f"{display}: {UNSUPPORTED[suffix]}")
        if reader is None:
            known = ", ".join(SUPPORTED_EXTENSIONS)
            raise ReadError(
                f"{display}: unsupported or unrecognised file format {suffix or '(no suffix)'!r}; "
                f"supported: {known}"
            )
        if reader.family == "emd" and ISOLATE_HDF5 and not _IN_CHILD and _guard.can_isolate():
            seconds = READ_BUDGET_S if budget_s is None else float(budget_s)
            return _guard.run_isolated(
                _read_in_child,
                str(path),
                display,
                reader.family,
                pixel_size_nm,
                frame,
                seconds,
                _guard.limits(),
                tmpdir,
                name=display,
                timeout_s=seconds + 5.0,
                max_memory_bytes=CHILD_MEMORY_BYTES,
            )
        return _read(
            path,
            display,
            reader,
            pixel_size_nm=pixel_size_nm,
            frame=frame,
            budget_s=budget_s,
            tmpdir=tmpdir,
        )
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _read(
    path: Path,
    display: str,
    reader: Reader,
    *,
    pixel_size_nm: float | tuple[float, float] | None,
    frame: FrameChoice,
    budget_s: float | None,
    tmpdir: str | None,
) -> Micrograph:
    """One read in this process: the reader, then the common checks, inside the guard."""
    try:
        with _guard.quiet(), _guard.budget(display, budget_s):
            raw = reader.read(path, display)
            try:  # stacks may still be read here, frame by frame
                return finalise(
                    raw,
                    name=display,
                    family=reader.family,
                    pixel_size_nm=pixel_size_nm,
                    frame=frame,
                )
            finally:
                for close in raw.closers:
                    close()
    except HRTEMError:
        raise
    except MemoryError:
        raise ReadError(
            f"{display}: not enough memory to read this file (a damaged or hostile file?)"
        ) from None
    except Exception as exc:  # the reader boundary: no library exception escapes
        reason = short(exc)
        if tmpdir is not None:  # never show the private temporary path
            reason = reason.replace(str(path), display).replace(tmpdir, "")
        raise ReadError(
            f"{display}: cannot be read as {reader.label} (corrupt, truncated or "
            f"not this format): {reason}"
        ) from None


def _read_in_child(
    path: str,
    display: str,
    family: str,
    pixel_size_nm: float | tuple[float, float] | None,
    frame: FrameChoice,
    budget_s: float,
    limits: _guard.Limits,
    tmpdir: str | None,
) -> Micrograph:
    """:func:`_read` in an isolated child, with the parent's limits."""
    global _IN_CHILD, MAX_IMAGE_PIXELS, MAX_DATA_VALUES, MAX_DECODED_BYTES, MAX_FRAMES
    global MAX_TAGS, MAX_METADATA_BYTES, MAX_DEPTH, READ_BUDGET_S
    _IN_CHILD = True
    MAX_IMAGE_PIXELS, MAX_DATA_VALUES = limits.image_pixels, limits.data_values
    MAX_DECODED_BYTES, MAX_FRAMES, MAX_TAGS = limits.decoded_bytes, limits.frames, limits.tags
    MAX_METADATA_BYTES, MAX_DEPTH = limits.metadata_bytes, limits.depth
    READ_BUDGET_S = limits.budget_s
    reader = next(r for r in READERS if r.family == family)
    return _read(
        Path(path),
        display,
        reader,
        pixel_size_nm=pixel_size_nm,
        frame=frame,
        budget_s=budget_s,
        tmpdir=tmpdir,
    )


def _load_in_child(source: str | bytes, kwargs: dict) -> Micrograph:
    global _IN_CHILD
    _IN_CHILD = True  # already isolated: HDF5 is read right here
    return load_image(source, **kwargs)


def load_image_isolated(
    source: str | os.PathLike | bytes,
    *,
    timeout_s: float = 120.0,
    max_memory_bytes: int | None = 3 * 1024**3,
    **kwargs: object,
) -> Micrograph:
    """:func:`load_image` in a child process with a timeout and an address-space limit.

    For untrusted files on a shared server: a read that hangs in a third-party parser or
    allocates past ``max_memory_bytes`` (``RLIMIT_AS``, POSIX) ends as a one-line
    :class:`ReadError` and never holds the calling process. Costs a process start (about a
    second) per read.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        As for :func:`load_image`.
    timeout_s : float, keyword-only
        Wall-clock limit [s].
    max_memory_bytes : int or None, keyword-only
        Address-space limit of the child [bytes]; None for none.
    **kwargs
        ``name``, ``pixel_size_nm``, ``frame``, ``budget_s`` as for :func:`load_image`.
    """
    if not _guard.can_isolate():  # a daemonic process may not start children
        return load_image(source, **kwargs)  # type: ignore[arg-type]
    shown = display_name(str(kwargs.get("name") or "")) if kwargs.get("name") else None
    if shown is None:
        shown = "upload" if isinstance(source, (bytes, bytearray)) else Path(source).name
    payload = (
        bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    )
    return _guard.run_isolated(
        _load_in_child,
        payload,
        dict(kwargs),
        name=shown,
        timeout_s=timeout_s,
        max_memory_bytes=max_memory_bytes,
    )


__all__ = [
    "MAX_DATA_VALUES",
    "MAX_DECODED_BYTES",
    "MAX_DEPTH",
    "MAX_FRAMES",
    "MAX_IMAGE_PIXELS",
    "MAX_METADATA_BYTES",
    "MAX_TAGS",
    "NON_SQUARE_REL_TOL",
    "PLAUSIBLE_PIXEL_NM",
    "READERS",
    "READ_BUDGET_S",
    "SUPPORTED_EXTENSIONS",
    "USER_OVERRIDE_REL_TOL",
    "Micrograph",
    "PixelSize",
    "RawImage",
    "defocus_from_name",
    "load_image",
    "load_image_isolated",
    "validate_pixel_size",
]
