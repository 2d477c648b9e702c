"""Gatan DigitalMicrograph ``.dm3`` / ``.dm4`` (ncempy), after a bounded scan of the tag tree.

:func:`scan_tags` walks the tag tree from the header without decoding any value, counting the
tags and the nesting depth, and refuses a file above ``MAX_TAGS`` tags or ``MAX_DEPTH`` levels
before ncempy parses it (ncempy's parse of a million tiny tags takes minutes). Then ncempy reads
the first dataset with two image axes (thumbnails and 1-D plots are skipped); Microscope Info /
DataBar / Session Info tags give the metadata. A 3-D stack is memory-mapped, so only the frame(s)
used are read.
"""

from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path

import numpy as np

from hrtem_core.errors import ReadError
from hrtem_core.io import _guard
from hrtem_core.io._model import RawImage, defocus_with_unit, meta_jsonable, text, to_float

SUFFIXES = (".dm3", ".dm4")
LABEL = "a DigitalMicrograph file"
MAGIC = (b"\x00\x00\x00\x03", b"\x00\x00\x00\x04")

#: Bytes of each DM simple data type (2 short ... 12 uint64).
_DM_SIZES = {2: 2, 3: 4, 4: 2, 5: 4, 6: 4, 7: 8, 8: 1, 9: 1, 10: 1, 11: 8, 12: 8}


class _Unparsed(Exception):
    """The tag tree does not follow the format (left to ncempy to report)."""


def scan_tags(path: Path, name: str) -> int:
    """Count the tags of a DM3/DM4 file without decoding them; refuse above the caps.

    Returns
    -------
    int
        The number of tag entries, or -1 when the file does not start like a DM3/DM4 file (the
        parse that follows reports it).

    Raises
    ------
    ReadError
        More than ``MAX_TAGS`` tags, groups nested deeper than ``MAX_DEPTH``, or a tag tree that
        cannot be followed (damaged: never handed to the unbounded parser).
    """
    with open(path, "rb") as fh:
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            return -1
    with mm:
        if len(mm) < 16:
            return -1
        version = struct.unpack_from(">I", mm, 0)[0]
        if version not in (3, 4):
            return -1
        scanner = _TagScanner(mm, version, name)
        try:
            scanner.group(4 + scanner.width + 4, 1)
        except (_Unparsed, IndexError, struct.error):
            raise ReadError(
                f"{name}: cannot be read as {LABEL} (corrupt, truncated or not this format): "
                "the tag tree is damaged"
            ) from None
        return scanner.count


class _TagScanner:
    """Walks a DM3/DM4 tag tree (``mm``, the whole file) counting tags, decoding no value."""

    def __init__(self, mm: mmap.mmap, version: int, name: str) -> None:
        self.mm = mm
        self.size = len(mm)
        self.version = version
        self.name = name
        self.width = 4 if version == 3 else 8
        self.code = ">I" if version == 3 else ">Q"
        self.lim = _guard.limits()
        self.count = 0

    def num(self, pos: int) -> int:
        """The header integer (4 bytes in DM3, 8 in DM4) at ``pos``."""
        if pos + self.width > self.size:
            raise _Unparsed
        return struct.unpack_from(self.code, self.mm, pos)[0]

    def skip_types(self, pos: int) -> tuple[int, int]:
        """(position after the type info, item size in bytes) of one encoded type."""
        width = self.width
        enc = self.num(pos)
        pos += width
        if enc in _DM_SIZES:
            return pos, _DM_SIZES[enc]
        if enc == 15:  # struct: name length, field count, (name length, type) per field
            n_fields = self.num(pos + width)
            if n_fields > 100:
                raise _Unparsed
            pos += 2 * width
            item = 0
            for _ in range(n_fields):
                field_type = self.num(pos + width)
                if field_type not in _DM_SIZES:
                    raise _Unparsed
                item += _DM_SIZES[field_type]
                pos += 2 * width
            return pos, item
        if enc == 20:  # array: element type(s), then the element count
            pos, item = self.skip_types(pos)
            n_items = self.num(pos)
            return pos + width, n_items * item
        raise _Unparsed

    def skip_data(self, pos: int) -> int:
        """Position after one data tag starting at ``pos`` (its ``%%%%`` marker)."""
        if self.mm[pos : pos + 4] != b"%%%%":
            raise _Unparsed
        pos += 4 + self.width  # the info count
        enc = self.num(pos)
        if enc == 18:  # string: 4-byte length, then the characters
            if pos + self.width + 4 > self.size:
                raise _Unparsed
            return pos + self.width + 4 + struct.unpack_from(">I", self.mm, pos + self.width)[0]
        pos, nbytes = self.skip_types(pos)
        return pos + nbytes

    def group(self, pos: int, depth: int) -> int:
        """Position after the tag group at ``pos``, nested ``depth`` levels deep."""
        lim, name = self.lim, self.name
        if depth > lim.depth:
            raise ReadError(
                f"{name}: DigitalMicrograph tag groups nested deeper than {lim.depth} levels: "
                "refused"
            )
        n_tags = self.num(pos + 2)
        pos += 2 + self.width
        if n_tags > (self.size - pos) // 3:  # each tag takes at least 3 bytes: not a tag count
            raise _Unparsed
        if n_tags > lim.tags:
            raise ReadError(
                f"{name}: the DigitalMicrograph file declares {n_tags:,} tags in one group, "
                f"more than the limit of {lim.tags:,}: refused"
            )
        for _ in range(n_tags):
            pos = self._tag(pos, depth)
        return pos

    def _tag(self, pos: int, depth: int) -> int:
        """Position after the tag entry at ``pos`` (a group or a data tag)."""
        self.count += 1
        if self.count > self.lim.tags:
            raise ReadError(
                f"{self.name}: the DigitalMicrograph file holds more than {self.lim.tags:,} tags: "
                "refused"
            )
        if self.count % 1024 == 0:
            _guard.tick("scanning the DigitalMicrograph tags")
        if pos + 3 > self.size:
            raise _Unparsed
        kind = self.mm[pos]
        label = struct.unpack_from(">H", self.mm, pos + 1)[0]
        pos += 3 + label
        if self.version == 4:
            pos += 8
        if kind == 20:
            pos = self.group(pos, depth + 1)
        elif kind == 21:
            pos = self.skip_data(pos)
        else:
            raise _Unparsed
        if pos > self.size:
            raise _Unparsed
        return pos


#: DigitalMicrograph data types holding complex numbers (3, 13) or a packed complex FFT (27).
_DM_COMPLEX_TYPES = frozenset({3, 13, 27})


def read(path: Path, name: str) -> RawImage:
    """Gatan .dm3/.dm4 via ncempy: the first dataset with two image axes.

    The choice is made from the header sizes, without reading pixels. A 3-D stack is memory-mapped,
    so only the frame(s) used are read (any number of frames in bounded memory).
    """
    from ncempy.io import dm

    _guard.mute(dm)

    n_tags = scan_tags(path, name)
    with dm.fileDM(path, on_memory=False) as handle:  # no mmap left open on errors
        n_sets = handle.numObjects - (1 if handle.thumbnail else 0)
        if n_sets <= 0:
            raise ReadError(f"{name}: the DigitalMicrograph file holds no data set")
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
                    f"{name}: complex data (DM data type {code}, an FFT?) is not an image; "
                    "save the real-space image instead"
                )
            if len(dims_of(index)) >= 2:
                chosen = index
                break
        index = chosen if chosen is not None else 0
        ii = index + offset
        dims = dims_of(index)
        stack = len(dims) == 3 and int(handle.zSize[ii]) > 1 and int(handle.zSize2[ii]) == 1
        _guard.check_declared(
            dims,
            name,
            itemsize=_itemsize(handle, ii),
            frame_axis=0 if stack else None,
            lazy=stack,
        )
        if stack:
            data = handle.getMemmap(index)  # frames are read on demand
            start = sum(int(n) for n in handle.dataShape[0:ii])
            count = int(handle.dataShape[ii])
            sizes = list(handle.scale[start : start + count])[::-1]  # C order, as getDataset
            units = [text(u) for u in handle.scaleUnit[start : start + count]][::-1]
            if tuple(data.shape) != tuple(dims):
                raise ReadError(f"{name}: stack header and data do not agree (corrupt?)")
        else:
            dataset = handle.getDataset(index)
            data = np.asarray(dataset["data"])
            sizes = list(dataset.get("pixelSize", []))
            units = [text(u) for u in dataset.get("pixelUnit", [])]
        try:
            tags = handle.getMetadata(index)
        except Exception:  # metadata is a bonus: never fail a read on it
            tags = {}
    raw = RawImage(data=data, reader="ncempy-dm")
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
    if n_tags >= 0:
        raw.metadata["n_tags"] = n_tags
    _dm_metadata(tags, raw)
    return raw


def _dm_metadata(tags: dict, raw: RawImage) -> None:
    md = raw.metadata
    voltage = to_float(tags.get("Microscope Info Voltage"))
    if voltage is not None and voltage > 0:
        md["voltage_kv"] = voltage / 1000.0
    mag = to_float(
        tags.get(
            "Microscope Info Indicated Magnification",
            tags.get("Microscope Info Actual Magnification"),
        )
    )
    if mag is not None and mag > 0:
        md["magnification"] = mag
    scope = tags.get("Session Info Microscope") or tags.get("Microscope Info Name")
    if scope:
        md["microscope"] = text(scope)
    date = tags.get("DataBar Acquisition Date")
    time = tags.get("DataBar Acquisition Time")
    if date or time:
        md["acquisition_time"] = " ".join(text(t) for t in (date, time) if t)
    for key in (
        "Microscope Info Cs(mm)",
        "Microscope Info Illumination Mode",
        "Microscope Info Imaging Mode",
        "Microscope Info Operation Mode",
        "DataBar Device Name",
        "DataBar Exposure Time (s)",
    ):
        if key in tags:
            md[key.replace("Microscope Info ", "").replace("DataBar ", "").lower()] = meta_jsonable(
                tags[key]
            )
    # Defocus: a tag whose name holds "defocus"; its unit from "(nm)" / "(um)" in the name, nm if none.
    for key, value in tags.items():
        if "defocus" in key.lower():
            unit_match = re.search(r"\(([^)]*)\)\s*$", key)
            unit = unit_match.group(1) if unit_match else "nm"
            defocus = defocus_with_unit(value, unit)
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
            defocus = defocus_with_unit(match.group(2), unit)
            if defocus is not None:
                raw.defocus_nm = defocus
                md["defocus_source"] = "DM Tecnai Microscope Info"


def _itemsize(handle: object, ii: int) -> int:
    """Bytes per value of data set ``ii`` (from the DM data type; 4 when unknown)."""
    try:
        return int(np.dtype(handle._DM2NPDataType(int(handle.dataType[ii]))).itemsize)
    except Exception:
        return 4
