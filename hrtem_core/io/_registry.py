"""The reader registry: one module per format family, each with ``SUFFIXES``, ``LABEL``, ``MAGIC``
and ``read(path, name) -> RawImage``. The supported-extension table is derived from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hrtem_core.io import dm, emd, mrc, pil, ser, tiff
from hrtem_core.io._model import RawImage


@dataclass(frozen=True)
class Reader:
    """One format family.

    Attributes
    ----------
    family : str
        Short id (``"dm"``, ``"ser"``, ``"emd"``, ``"mrc"``, ``"tiff"``, ``"pillow"``).
    label : str
        How a message names the format (``"a TIFF file"``).
    suffixes : tuple[str, ...]
        Lower-case file suffixes with the dot.
    magic : tuple[bytes, ...]
        File signatures for names without a known suffix.
    read : callable
        ``read(path, name) -> RawImage``.
    """

    family: str
    label: str
    suffixes: tuple[str, ...]
    magic: tuple[bytes, ...]
    read: Callable[[Path, str], RawImage]


READERS: tuple[Reader, ...] = tuple(
    Reader(family, module.LABEL, module.SUFFIXES, module.MAGIC, module.read)
    for family, module in (
        ("dm", dm),
        ("ser", ser),
        ("emd", emd),
        ("mrc", mrc),
        ("tiff", tiff),
        ("pillow", pil),
    )
)

BY_SUFFIX: dict[str, Reader] = {s: r for r in READERS for s in r.suffixes}

#: Every file suffix :func:`hrtem_core.io.load_image` reads (lower case, with the dot).
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(sorted(BY_SUFFIX))

#: Known microscope suffixes without a reader here, with what to do instead.
UNSUPPORTED: dict[str, str] = {
    ".img": "'.img' (JEOL or SMV/ADSC image) is not supported; export it as TIFF, DM or MRC "
    "from the acquisition software",
    ".emi": "an .emi file holds only metadata; open the .ser file beside it (e.g. name_1.ser)",
    ".bcf": "Bruker .bcf spectrum images are not images; export the image as TIFF",
    ".txt": "a text file is not an image",
    ".csv": "a text file is not an image",
}


def sniff(path: Path) -> Reader | None:
    """The reader whose signature the first bytes carry, for names without a known suffix."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    for reader in READERS:
        if any(head.startswith(m) for m in reader.magic):
            return reader
    return None
