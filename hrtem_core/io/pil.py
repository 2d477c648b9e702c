"""PNG / JPEG / BMP / GIF (Pillow): never calibrated, the user gives the pixel size.

The header (size, mode, frame count) is read with Pillow before any decode and checked by the
guard in pixels, frames and decoded bytes (16-bit and 32-bit modes and colour bands included).
Then the pixels are decoded with Pillow: palette images are expanded to their palette's colours,
16-bit PNGs stay 16-bit (``uint16``), and GIF / animated PNG files give every frame (a stack,
frame axis first), other files their first frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrtem_core.errors import ReadError
from hrtem_core.io import _guard
from hrtem_core.io._model import RawImage

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
LABEL = "a PNG/JPEG image"
MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a")

#: Bytes per value of the decoded array, by Pillow mode (others: 1 byte per band).
_MODE_ITEMSIZE = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}


def _header(path: Path, name: str) -> tuple[list[int], int, int]:
    """(declared shape without bands, bands, item size) from Pillow's header parse."""
    from PIL import Image

    lim = _guard.limits()
    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
            bands = 4 if mode == "P" else len(im.getbands())
            n_frames = int(getattr(im, "n_frames", 1) or 1)
    except Image.DecompressionBombError:
        raise ReadError(
            f"{name}: image larger than the limit of {lim.image_pixels:,} pixels (8192 x 8192); "
            "bin or crop it before analysis"
        ) from None
    shape = [height, width] if n_frames == 1 else [n_frames, height, width]
    return shape, bands, _MODE_ITEMSIZE.get(mode, 1)


def _frame_array(frame, *, animated: bool) -> np.ndarray:
    """One decoded frame as an array: palette expanded, 16-bit PNG as ``uint16``, GIF frames RGB."""
    if animated and frame.mode != "RGB":
        # every frame of a GIF as RGB, so that the frames stack (Pillow decodes the
        # frames after the first as RGB or RGBA; the alpha of a GIF only marks a colour index)
        frame = frame.convert("RGB")
    elif frame.mode == "P":
        frame = frame.convert(frame.palette.mode)
    elif frame.format == "PNG" and frame.mode == "I":
        frame = frame.convert("I;16" if np.little_endian else "I;16B")
    return np.array(frame)


def _decode(path: Path) -> np.ndarray:
    """The pixels: every frame of a GIF or animated PNG (stacked), else the first frame."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        if im.format == "GIF" or im.get_format_mimetype() == "image/apng":
            gif = im.format == "GIF"
            frames = [_frame_array(f, animated=gif) for f in ImageSequence.Iterator(im)]
            return np.stack(frames, axis=0)
        return _frame_array(im, animated=False)


def read(path: Path, name: str) -> RawImage:
    """PNG/JPEG/BMP/GIF via Pillow: never calibrated."""
    declared, bands, itemsize = _header(path, name)
    _guard.check_declared(declared, name, itemsize=itemsize, samples=bands)
    data = _decode(path)
    raw = RawImage(data=data, reader="pillow")
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        raw.rgb = True
    elif data.ndim == 4 and data.shape[-1] in (3, 4):  # animated GIF
        raw.rgb = True
        raw.frame_axis = 0
    elif data.ndim == 3:
        raw.frame_axis = 0
    return raw
