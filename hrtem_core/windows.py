"""Moving windows, their batched FFT, and the cropped frequency band the U-Net sees.

Geometry (shared by the detector, the spot extractor and the training generator):

* Windows of ``window_px`` (w) pixels on a regular grid from the top-left corner with
  ``stride_px`` (s); ``n = (N - w) // s + 1`` windows per axis. A right or bottom margin narrower
  than the stride is not covered (it is reported by :class:`WindowGrid`).
* Each window is mean-subtracted and apodized with a 2-D Hann window before a batched real FFT
  (``scipy.fft.rfft2`` with ``workers``), never a Python loop per window.
* Spectra are *fftshifted*: the DC term sits at ``(w // 2, w // 2)``. A spot at ``(ky, kx)`` FFT
  pixels from the DC in a window of w pixels with pixel size ``(p_y, p_x)`` nm has the spatial
  frequency ``g = (ky / (w p_y), kx / (w p_x))`` [1/nm]; its lattice spacing is ``1 / |g|`` [nm].
  The method writes q = l / (d p) for the spatial frequency (Zhu et al., ESI-2, eq. 1), with
  ``l`` the half-distance between the two spots of a Friedel pair.
* The *band* is the central part of the spectrum that can hold lattice spots: out to the frequency
  of the smallest spacing of interest ``d_min_nm`` (or Nyquist if lower), i.e. a radius of
  ``w p / d_min`` FFT pixels per axis. It is cropped from the spectrum and resampled to a fixed
  ``size`` x ``size`` (default 64) grid for the U-Net, which makes the network independent of the
  window size and the pixel size (and makes it fast).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.fft

from hrtem_core.errors import AnalysisParameterError

#: Smallest window the analysis accepts [px]: below this an FFT holds too few lattice periods.
MIN_WINDOW_PX = 32
#: Default input size of the U-Net [px].
UNET_INPUT_PX = 64


@dataclass(frozen=True)
class WindowGrid:
    """Positions of the moving windows over an image.

    Attributes
    ----------
    image_shape : tuple of int
        ``(ny, nx)`` of the image [px].
    window_px : int
        Window side w [px].
    stride_px : int
        Step s between neighbouring windows [px].
    n_rows, n_cols : int
        Number of windows along y and x.
    """

    image_shape: tuple[int, int]
    window_px: int
    stride_px: int
    n_rows: int
    n_cols: int

    @property
    def n_windows(self) -> int:
        """Total number of windows, ``n_rows * n_cols``."""
        return self.n_rows * self.n_cols

    @property
    def origins(self) -> np.ndarray:
        """Top-left corner of each window, shape (N, 2) int, ``[row, col]`` in image pixels.

        Windows are ordered row-major: index ``i = r * n_cols + c``.
        """
        rr, cc = np.meshgrid(
            np.arange(self.n_rows) * self.stride_px,
            np.arange(self.n_cols) * self.stride_px,
            indexing="ij",
        )
        return np.stack([rr.ravel(), cc.ravel()], axis=1)

    @property
    def centers(self) -> np.ndarray:
        """Centre of each window, shape (N, 2) float, ``[y, x]`` in image pixels."""
        return self.origins + (self.window_px - 1) / 2.0

    @property
    def row_col(self) -> np.ndarray:
        """Grid index of each window, shape (N, 2) int, ``[row, col]``."""
        idx = np.arange(self.n_windows)
        return np.stack([idx // self.n_cols, idx % self.n_cols], axis=1)

    @property
    def covered_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the part of the image the windows cover [px]."""
        w, s = self.window_px, self.stride_px
        return ((self.n_rows - 1) * s + w, (self.n_cols - 1) * s + w)

    def row_range(self, rows: tuple[int, int] | None) -> tuple[int, int]:
        """Grid rows ``(r0, r1)``, ``0 <= r0 < r1 <= n_rows``; None: all rows.

        Raises
        ------
        AnalysisParameterError
            The rows are empty or lie outside the grid.
        """
        r0, r1 = (0, self.n_rows) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= r0 < r1 <= self.n_rows:
            raise AnalysisParameterError(
                f"grid rows {r0}..{r1 - 1} lie outside the grid's {self.n_rows} rows"
            )
        return r0, r1

    def check_image(self, image: np.ndarray) -> None:
        """Raise :class:`AnalysisParameterError` unless ``image`` has this grid's shape."""
        if image.shape != self.image_shape:
            raise AnalysisParameterError(
                f"image shape {image.shape} does not match the window grid {self.image_shape}"
            )


def window_grid(
    image_shape: tuple[int, ...],
    *,
    window_px: int = 256,
    stride_px: int | None = None,
) -> WindowGrid:
    """Regular grid of ``window_px`` windows with step ``stride_px`` from the top-left corner.

    Parameters
    ----------
    image_shape : tuple of int
        ``(ny, nx)`` of the image [px].
    window_px : int, keyword-only
        Window side w [px], at least :data:`MIN_WINDOW_PX`. Any size is allowed (the FFT does
        not need a power of two; powers of two are fastest).
    stride_px : int or None, keyword-only
        Step between windows [px], ``1 <= s``; default ``w // 2``.

    Returns
    -------
    WindowGrid

    Raises
    ------
    AnalysisParameterError
        A window or stride that is not a positive integer, a window below the minimum, or an image
        smaller than one window.
    """
    if len(image_shape) != 2:
        raise AnalysisParameterError(f"expected a 2-D image, got shape {tuple(image_shape)}")
    ny, nx = (int(v) for v in image_shape)
    w = _positive_int(window_px, "window size")
    if w < MIN_WINDOW_PX:
        raise AnalysisParameterError(
            f"window size {w} px is too small: use at least {MIN_WINDOW_PX} px "
            "(a window must hold several lattice periods)"
        )
    s = w // 2 if stride_px is None else _positive_int(stride_px, "stride")
    if ny < w or nx < w:
        raise AnalysisParameterError(
            f"the image ({ny}x{nx} px) is smaller than one {w}x{w} px window: "
            "choose a smaller window"
        )
    return WindowGrid(
        image_shape=(ny, nx),
        window_px=w,
        stride_px=s,
        n_rows=(ny - w) // s + 1,
        n_cols=(nx - w) // s + 1,
    )


def _positive_int(value: object, what: str) -> int:
    """Validate a positive integer parameter (bools and non-integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float):
        raise AnalysisParameterError(f"{what} must be a positive integer, got {value!r}")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise AnalysisParameterError(f"{what} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise AnalysisParameterError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def window_view(image: np.ndarray, grid: WindowGrid) -> np.ndarray:
    """The windows of ``grid`` as a read-only strided view of ``image`` (no copy).

    Parameters
    ----------
    image : ndarray, shape (ny, nx), float32
        The image (already float32: a view of another dtype would need a copy).
    grid : WindowGrid
        From :func:`window_grid` for this image's shape.

    Returns
    -------
    ndarray, shape (n_rows, n_cols, w, w)
        Window ``(r, c)`` is ``image[r*s : r*s + w, c*s : c*s + w]``.
    """
    grid.check_image(image)
    w, s = grid.window_px, grid.stride_px
    view = np.lib.stride_tricks.sliding_window_view(image, (w, w))[::s, ::s]
    return view[: grid.n_rows, : grid.n_cols]


def extract_windows(
    image: np.ndarray, grid: WindowGrid, *, indices: np.ndarray | None = None
) -> np.ndarray:
    """Copy the windows of ``grid`` out of ``image``.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The image; converted to float32.
    grid : WindowGrid
        From :func:`window_grid` for this image's shape.
    indices : ndarray of int, optional, keyword-only
        Which windows (row-major indices); default all.

    Returns
    -------
    ndarray, shape (n, w, w), float32
    """
    w = grid.window_px
    view = window_view(np.asarray(image, dtype=np.float32), grid).reshape(grid.n_windows, w, w)
    if indices is None:
        return np.ascontiguousarray(view)
    return np.ascontiguousarray(view[np.asarray(indices, dtype=np.intp)])


def iter_window_batches(
    image: np.ndarray, grid: WindowGrid, *, batch_size: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, windows)`` in batches so memory stays bounded on large images.

    ``windows`` has shape (n, w, w) float32; ``indices`` are the row-major window indices.
    """
    batch_size = _positive_int(batch_size, "batch size")
    for start in range(0, grid.n_windows, batch_size):
        idx = np.arange(start, min(start + batch_size, grid.n_windows))
        yield idx, extract_windows(image, grid, indices=idx)


def _hann_1d(window_px: int) -> np.ndarray:
    """Periodic 1-D Hann window, shape (w,) float32, peak 1."""
    # scipy.signal takes ~0.7 s to import: only when a window is apodised (not on a cached view)
    from scipy.signal.windows import hann

    return hann(int(window_px), sym=False).astype(np.float32)


def hann_2d(window_px: int) -> np.ndarray:
    """Separable 2-D Hann apodization window, shape (w, w) float32, peak 1."""
    h = _hann_1d(window_px)
    return np.outer(h, h)


def _check_window_geometry(window_px: int, geometry: BandGeometry) -> None:
    if window_px != geometry.window_px:
        raise AnalysisParameterError(
            f"windows of {window_px} px do not match the band geometry of a "
            f"{geometry.window_px} px window"
        )


def window_spectra(windows: np.ndarray, *, apodize: bool = True, workers: int = -1) -> np.ndarray:
    """Batched FFT magnitude of each window, fftshifted (DC at ``(w // 2, w // 2)``).

    Each window is mean-subtracted (suppresses the DC peak) and, by default, multiplied by a 2-D
    Hann window (suppresses the edge streaks of a non-periodic window) before one batched
    ``scipy.fft.rfft2`` over all windows in float32. The full spectrum is rebuilt from the
    Hermitian half: ``|F(-k)| = |F(k)|`` for a real window.

    Parameters
    ----------
    windows : ndarray, shape (n, w, w)
        Real-space windows.
    apodize : bool, keyword-only
        Apply the Hann window (default True).
    workers : int, keyword-only
        Threads for scipy.fft (-1: all cores).

    Returns
    -------
    ndarray, shape (n, w, w), float32
        ``|F|``, fftshifted.
    """
    half = _rfft_half(windows, apodize=apodize, workers=workers)
    w = windows.shape[-1]
    mag = np.empty((windows.shape[0], w, w), dtype=np.float32)
    nxh = half.shape[-1]  # w // 2 + 1
    mag[:, :, :nxh] = half
    # Negative kx columns from Hermitian symmetry: M[ky, -kx] = M[-ky, kx].
    neg = half[:, (-np.arange(w)) % w, 1 : w - nxh + 1][:, :, ::-1]
    mag[:, :, nxh:] = neg
    return np.fft.fftshift(mag, axes=(-2, -1))


def _rfft_half(windows: np.ndarray, *, apodize: bool, workers: int) -> np.ndarray:
    """Magnitude of the batched rfft2 of mean-subtracted (apodized) windows, unshifted."""
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise AnalysisParameterError(f"expected windows of shape (n, w, w), got {x.shape}")
    x = x - x.mean(axis=(1, 2), keepdims=True)
    if apodize:
        x = x * hann_2d(x.shape[-1])
    spec = scipy.fft.rfft2(x, axes=(-2, -1), workers=workers, overwrite_x=True)
    return np.abs(spec).astype(np.float32, copy=False)


@dataclass(frozen=True)
class BandGeometry:
    """How the central band of a w-pixel spectrum maps onto the U-Net input grid.

    The band holds FFT offsets ``-radius_y..radius_y`` (rows) and ``-radius_x..radius_x``
    (columns) around the DC; it is resampled to ``size`` x ``size``. Offsets are in FFT pixels of
    the w-pixel window, relative to the DC; ``ky`` grows downwards (image rows), ``kx`` to the
    right.

    Attributes
    ----------
    window_px : int
        Window side w [px].
    radius_y, radius_x : int
        Band half-widths [FFT px] along ky and kx.
    size : int
        Side of the resampled band (U-Net input) [px].
    """

    window_px: int
    radius_y: int
    radius_x: int
    size: int = UNET_INPUT_PX

    @property
    def scale_y(self) -> float:
        """U-Net pixels per FFT pixel along ky."""
        return self.size / (2 * self.radius_y + 1)

    @property
    def scale_x(self) -> float:
        """U-Net pixels per FFT pixel along kx."""
        return self.size / (2 * self.radius_x + 1)

    def to_band(self, ky: np.ndarray, kx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FFT offsets from the DC [FFT px] -> band-grid coordinates (row, col) [band px].

        Pixel centres are at integer coordinates; the DC maps to ``((size - 1) / 2,) * 2``.
        """
        c = (self.size - 1) / 2.0
        return (
            c + np.asarray(ky, dtype=float) * self.scale_y,
            c + np.asarray(kx, dtype=float) * self.scale_x,
        )

    def from_band(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band-grid coordinates (row, col) [band px] -> FFT offsets (ky, kx) from the DC."""
        c = (self.size - 1) / 2.0
        return (
            (np.asarray(row, dtype=float) - c) / self.scale_y,
            (np.asarray(col, dtype=float) - c) / self.scale_x,
        )


def band_geometry(
    window_px: int,
    pixel_size_nm: tuple[float, float],
    *,
    d_min_nm: float = 0.1,
    size: int = UNET_INPUT_PX,
) -> BandGeometry:
    """Band that can hold lattice spots down to spacing ``d_min_nm`` (or Nyquist if lower).

    The radius along each axis is ``ceil(w p / d_min)`` FFT pixels plus one pixel of margin,
    capped at ``w // 2 - 1`` (Nyquist).

    Parameters
    ----------
    window_px : int
        Window side w [px].
    pixel_size_nm : (float, float)
        ``(p_y, p_x)`` [nm/px].
    d_min_nm : float, keyword-only
        Smallest lattice spacing of interest [nm] (default 0.1 nm).
    size : int, keyword-only
        Side of the resampled band [px] (default 64).
    """
    if not (math.isfinite(d_min_nm) and d_min_nm > 0):
        raise AnalysisParameterError(f"smallest spacing d_min must be > 0 nm, got {d_min_nm!r}")
    w = int(window_px)
    nyq = w // 2 - 1
    py, px = (float(v) for v in pixel_size_nm)
    ry = min(math.ceil(w * py / d_min_nm) + 1, nyq)
    rx = min(math.ceil(w * px / d_min_nm) + 1, nyq)
    return BandGeometry(window_px=w, radius_y=ry, radius_x=rx, size=int(size))


def crop_band(spectra: np.ndarray, geometry: BandGeometry) -> np.ndarray:
    """Crop the central band of fftshifted spectra (no resampling).

    Parameters
    ----------
    spectra : ndarray, shape (n, w, w)
        From :func:`window_spectra`.
    geometry : BandGeometry

    Returns
    -------
    ndarray, shape (n, 2 radius_y + 1, 2 radius_x + 1)
    """
    c = geometry.window_px // 2
    ry, rx = geometry.radius_y, geometry.radius_x
    return spectra[:, c - ry : c + ry + 1, c - rx : c + rx + 1]


def band_spectra(
    windows: np.ndarray, geometry: BandGeometry, *, apodize: bool = True, workers: int = -1
) -> np.ndarray:
    """Only the band of the windows' spectra: ``crop_band(window_spectra(windows), geometry)``.

    Same preprocessing as :func:`window_spectra` (mean subtraction, Hann apodization, float32),
    but the transform is split: a real FFT along x, then a complex FFT along y of only the
    ``radius_x + 1`` non-negative kx columns of the band; the magnitude is taken of the band
    rows only and the negative-kx half is rebuilt from ``|F(ky, -kx)| = |F(-ky, kx)|``. This
    avoids building, shifting and storing the full (n, w, w) spectrum (several times faster).

    Parameters
    ----------
    windows : ndarray, shape (n, w, w)
        Real-space windows (a strided view is fine).
    geometry : BandGeometry
        Band geometry for this window size.
    apodize : bool, keyword-only
        Apply the Hann window (default True).
    workers : int, keyword-only
        Threads for scipy.fft (-1: all cores).

    Returns
    -------
    ndarray, shape (n, 2 radius_y + 1, 2 radius_x + 1), float32
        Fftshifted ``|F|`` of the band, DC at ``(radius_y, radius_x)``.
    """
    x = np.array(windows, dtype=np.float32, copy=True)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise AnalysisParameterError(f"expected windows of shape (n, w, w), got {x.shape}")
    w = x.shape[-1]
    _check_window_geometry(w, geometry)
    ry, rx = geometry.radius_y, geometry.radius_x
    x -= x.mean(axis=(1, 2), keepdims=True)
    if apodize:
        x *= hann_2d(w)
    fx = scipy.fft.rfft(x, axis=-1, workers=workers, overwrite_x=True)[:, :, : rx + 1]
    del x
    rows = np.r_[w - ry : w, 0 : ry + 1]  # ky = -ry .. ry
    fy = scipy.fft.fft(fx, axis=-2, workers=workers, overwrite_x=True)[:, rows, :]
    right = np.abs(fy).astype(np.float32, copy=False)  # kx = 0 .. rx
    band = np.empty((right.shape[0], 2 * ry + 1, 2 * rx + 1), dtype=np.float32)
    band[:, :, rx:] = right
    band[:, :, :rx] = right[:, ::-1, rx:0:-1]
    return band


def image_offset(image: np.ndarray) -> float:
    """A value near the mean of ``image``: the mean of every 16th pixel along each axis.

    The offset :func:`grid_band_spectra` subtracts before its row transforms; a subsample keeps
    it cheap on large images (it is recomputed for every block of rows) and deterministic.
    """
    return float(np.asarray(image)[::16, ::16].mean(dtype=np.float64))


#: A window is flat (no contrast at all: zeros, a constant, a saturated patch) when its standard
#: deviation is at most this fraction of the image's largest deviation from its offset. Its
#: spectrum is then float32 rounding residue, not signal (about 1e-7 relative), and it holds no
#: spot, whatever a detector makes of the residue.
FLAT_RELATIVE = 1e-5


def flat_windows(
    image: np.ndarray, grid: WindowGrid, *, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """Which windows of ``grid`` rows ``r0..r1 - 1`` are flat (:data:`FLAT_RELATIVE`).

    The windows' standard deviations come from summed-area tables of ``image - offset`` in
    float64 (exact for a constant image, whatever its value), so the test does not change when
    the image is scaled or offset.

    Returns
    -------
    ndarray of bool, shape ((r1 - r0) * n_cols,)
    """
    img = np.asarray(image)
    grid.check_image(img)
    r0, r1 = grid.row_range(rows)
    w, s = grid.window_px, grid.stride_px
    offset = image_offset(img)
    # The scale is the whole image's (the same for every block of rows); the sums only need the
    # rows of this block.
    scale = max(float(np.max(img)) - offset, offset - float(np.min(img))) if img.size else 0.0
    y0 = r0 * s
    x = img[y0 : (r1 - 1) * s + w].astype(np.float64) - offset
    ys = np.arange(r0, r1) * s - y0
    xs = np.arange(grid.n_cols) * s

    def box_sums(a: np.ndarray) -> np.ndarray:
        sat = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
        np.cumsum(np.cumsum(a, axis=0), axis=1, out=sat[1:, 1:])
        y0, x0 = ys[:, None], xs[None, :]
        return sat[y0 + w, x0 + w] - sat[y0, x0 + w] - sat[y0 + w, x0] + sat[y0, x0]

    n_px = float(w * w)
    mean = box_sums(x) / n_px
    var = np.maximum(box_sums(x * x) / n_px - mean * mean, 0.0)
    return (np.sqrt(var) <= FLAT_RELATIVE * scale).ravel()


def grid_band_spectra(
    image: np.ndarray,
    grid: WindowGrid,
    geometry: BandGeometry,
    *,
    rows: tuple[int, int] | None = None,
    offset: float | None = None,
    apodize: bool = True,
    workers: int = 1,
) -> np.ndarray:
    """:func:`band_spectra` of the windows of ``grid`` rows ``r0..r1 - 1``, row transforms shared.

    Overlapping windows share image rows: the windows of one grid column hold the same stretch
    of each image row they cover. The transform is separable (and so is the 2-D Hann window,
    ``h(y) h(x)``), so the real FFT along x of each apodized row stretch, ``X_c(y, kx)``, is
    computed once per image row and grid column and shared by up to ``ceil(w / s)`` windows;
    each window then takes the complex FFT along y of ``h(y - y0) X_c(y, kx)`` over its own rows,
    for the ``radius_x + 1`` non-negative kx of the band only. The windows' mean subtraction is
    applied afterwards, exactly, by linearity: ``FFT[(x - mu) h] = FFT[x h] - mu FFT[h]``
    (``FFT[h]`` is non-zero only next to the DC). At stride ``s = w / 4`` the x transforms cost
    a quarter of :func:`band_spectra`'s; the result equals it up to float32 rounding (about
    1e-7 of the band's largest magnitude), and a window's band does not depend on ``rows``
    (each window's arithmetic is the same whichever block it is computed in).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The image (converted to float32).
    grid : WindowGrid
        From :func:`window_grid` for this image's shape.
    geometry : BandGeometry
        Band geometry for the grid's window size.
    rows : (int, int), optional, keyword-only
        Grid rows ``r0 <= r < r1`` (default all).
    offset : float, optional, keyword-only
        Subtracted from the image before the row transforms (it changes only the DC, which the
        mean subtraction removes; a value near the image mean keeps the float32 transforms
        accurate). Default: :func:`image_offset` (the same for every block of rows).
    apodize : bool, keyword-only
        Apply the Hann window (default True).
    workers : int, keyword-only
        Threads for scipy.fft (default 1).

    Returns
    -------
    ndarray, shape ((r1 - r0) * n_cols, 2 radius_y + 1, 2 radius_x + 1), float32
        Fftshifted ``|F|`` of the band of each window, row-major, DC at ``(radius_y, radius_x)``.
    """
    img = np.asarray(image, dtype=np.float32)
    grid.check_image(img)
    w, s = grid.window_px, grid.stride_px
    _check_window_geometry(w, geometry)
    r0, r1 = grid.row_range(rows)
    ry, rx = geometry.radius_y, geometry.radius_x
    n_r, n_c = r1 - r0, grid.n_cols
    if offset is None:
        offset = image_offset(img)
    block = img[r0 * s : (r1 - 1) * s + w, : (n_c - 1) * s + w] - np.float32(offset)
    h = _hann_1d(w) if apodize else np.ones(w, np.float32)
    # Row stretches of every grid column: (rows of the block, n_c, w), a view.
    strips = np.lib.stride_tricks.sliding_window_view(block, w, axis=1)[:, ::s][:, :n_c]
    row_sums = strips.sum(axis=-1, dtype=np.float64)  # (H, n_c)
    xs = scipy.fft.rfft(strips * h, axis=-1, workers=workers)[..., : rx + 1]  # (H, n_c, rx + 1)
    # Window means: the sums of each window's w row sums (summed per window, so a window's mean
    # does not depend on the block).
    win_sums = np.lib.stride_tricks.sliding_window_view(row_sums, w, axis=0)[::s][:n_r]
    mu = (win_sums.sum(axis=-1) / (w * w)).astype(np.float32)  # (n_r, n_c)
    # Each window's w rows of X (a strided view), apodized along y: (n_r, n_c, rx + 1, w).
    cols = np.lib.stride_tricks.sliding_window_view(xs, w, axis=0)[::s][:n_r]
    fy = scipy.fft.fft(cols * h, axis=-1, workers=workers, overwrite_x=True)
    ky = np.r_[w - ry : w, 0 : ry + 1]  # ky = -ry .. ry
    fy = fy[..., ky]  # (n_r, n_c, rx + 1, 2 ry + 1)
    # The mean's transform mu FFT[h](ky) FFT[h](kx), non-zero only next to the DC.
    hk = np.fft.fft(h.astype(np.float64))
    near = np.flatnonzero(np.abs(hk) > 1e-9 * np.abs(hk[0]))
    near_x = near[near <= rx]
    for j in near:
        sj = j if j <= ry else j - w  # signed ky
        if abs(sj) > ry:
            continue
        corr = (hk[j] * hk[near_x]).astype(np.complex64)  # over kx in near_x
        fy[:, :, near_x, sj + ry] -= mu[:, :, None] * corr[None, None, :]
    right = np.abs(fy).astype(np.float32, copy=False).reshape(n_r * n_c, rx + 1, 2 * ry + 1)
    right = right.transpose(0, 2, 1)  # (n, ky, kx >= 0)
    band = np.empty((n_r * n_c, 2 * ry + 1, 2 * rx + 1), dtype=np.float32)
    band[:, :, rx:] = right
    band[:, :, :rx] = right[:, ::-1, rx:0:-1]  # |F(ky, -kx)| = |F(-ky, kx)|
    return band


def log_band(spectra: np.ndarray, geometry: BandGeometry) -> np.ndarray:
    """The U-Net input: the band's log-magnitude, resampled to size x size and standardized.

    ``log1p(|F| / median)`` over the band, resampled by :func:`resample_band` (max-pooled where
    the band is coarser than the FFT, bilinear where finer; aligned as
    :meth:`BandGeometry.to_band`), then shifted to zero median and scaled to unit robust spread
    (1.4826 x MAD) per window; the DC pixel is set to the median so it never dominates.

    Parameters
    ----------
    spectra : ndarray, shape (n, w, w)
        Fftshifted magnitudes from :func:`window_spectra`.
    geometry : BandGeometry

    Returns
    -------
    ndarray, shape (n, size, size), float32
    """
    return log_band_from_crop(crop_band(spectra, geometry), geometry)


def log_band_from_crop(band: np.ndarray, geometry: BandGeometry) -> np.ndarray:
    """:func:`log_band` from an already cropped band (e.g. :func:`hrtem_core.spots.band_magnitudes`).

    Parameters
    ----------
    band : ndarray, shape (n, 2 radius_y + 1, 2 radius_x + 1)
        Centred band of fftshifted magnitudes (:func:`crop_band`).
    geometry : BandGeometry

    Returns
    -------
    ndarray, shape (n, size, size), float32
        Identical to ``log_band(spectra, geometry)`` for ``band = crop_band(spectra, geometry)``.
    """
    ry, rx = geometry.radius_y, geometry.radius_x
    if band.ndim != 3 or band.shape[1:] != (2 * ry + 1, 2 * rx + 1):
        raise AnalysisParameterError(
            f"band of shape {band.shape} does not match the band geometry "
            f"({2 * ry + 1} x {2 * rx + 1} px)"
        )
    band = band.astype(np.float32, copy=True)
    band[:, ry, rx] = 0.0
    med = row_median(band.reshape(band.shape[0], -1))[:, None, None]
    band = np.log1p(band / np.maximum(med, 1e-12))
    out = resample_band(band, geometry.size)
    flat = out.reshape(out.shape[0], -1)
    m = row_median(flat)[:, None, None]
    mad = row_median(np.abs(flat - m[:, :, 0]))[:, None, None] * 1.4826
    out = (out - m) / np.maximum(mad, 1e-6)
    return out.astype(np.float32, copy=False)


def row_median(values: np.ndarray) -> np.ndarray:
    """Median of each row of finite values: ``np.median(values, axis=1)``, several times faster.

    One ``np.partition`` at the middle index per row (``np.median`` also partitions at the last
    index to look for NaNs, which costs about as much again); for an even number of values the
    lower middle value is the largest of the left part. The result equals ``np.median`` exactly
    for finite input (with NaNs it is undefined).

    Parameters
    ----------
    values : ndarray, shape (n, m), m >= 1

    Returns
    -------
    ndarray, shape (n,)
        In the dtype of ``values`` (float64 for integer input).
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] < 1:
        raise ValueError(f"row_median needs a (n, m) array with m >= 1, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    half = values.shape[1] // 2
    part = np.partition(values, half, axis=1)
    upper = part[:, half]
    if values.shape[1] % 2:
        return upper
    lower = part[:, :half].max(axis=1)
    return ((lower + upper) / 2).astype(values.dtype, copy=False)  # as np.mean of the two


def resample_band(stack: np.ndarray, size: int) -> np.ndarray:
    """Band (n, hy, hx) -> (n, size, size), each axis on its own: max-pooled where it is coarser.

    Along an axis with more FFT pixels than band pixels, each band pixel takes the largest value
    of the FFT pixels whose nearest band pixel it is (``rint(c + k * scale)``, as
    :meth:`BandGeometry.to_band`): a Hann-apodized spot is about 4 FFT px wide, so plain
    sampling at 2-8 FFT px per band pixel would let spots fall between samples. Along an axis with
    fewer FFT pixels than band pixels the band is bilinearly interpolated (pixel centres
    aligned).

    Parameters
    ----------
    stack : ndarray, shape (n, hy, hx)
    size : int
        Side of the output [band px].

    Returns
    -------
    ndarray, shape (n, size, size)
    """
    out = stack
    for axis in (1, 2):
        n_in = out.shape[axis]
        if n_in > size:
            members = _pool_members(n_in, size)
            pooled = np.take(out, members[:, 0], axis=axis)
            for j in range(1, members.shape[1]):
                np.maximum(pooled, np.take(out, members[:, j], axis=axis), out=pooled)
            out = pooled
        elif n_in < size:
            out = _resample_bilinear_axis(out, size, axis)
    return out


def _pool_members(n_in: int, size: int) -> np.ndarray:
    """(size, G) FFT indices whose nearest band index is each band pixel (padded by repetition).

    FFT pixel ``j`` (offset ``k = j - (n_in - 1) / 2``) belongs to band pixel
    ``rint((size - 1) / 2 + k size / n_in)``, as :meth:`BandGeometry.to_band`; for ``n_in > size``
    every band pixel gets at least one FFT pixel.
    """
    k = np.arange(n_in) - (n_in - 1) / 2.0
    idx = np.rint((size - 1) / 2.0 + k * (size / n_in)).astype(np.intp)
    starts = np.searchsorted(idx, np.arange(size), side="left")
    stops = np.searchsorted(idx, np.arange(size), side="right")
    width = int((stops - starts).max())
    members = starts[:, None] + np.arange(width)[None, :]
    return np.where(members < stops[:, None], members, starts[:, None])


def _resample_bilinear_axis(stack: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Bilinear resampling of one axis of (n, hy, hx) to ``size``, pixel centres aligned."""
    n_in = stack.shape[axis]
    pos = np.clip((np.arange(size) + 0.5) * (n_in / size) - 0.5, 0.0, n_in - 1.0)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    wt = (pos - i0).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = size
    wt = wt.reshape(shape)
    return np.take(stack, i0, axis=axis) * (1 - wt) + np.take(stack, i1, axis=axis) * wt


def frequency_nm_inv(
    ky: np.ndarray, kx: np.ndarray, *, window_px: int, pixel_size_nm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """FFT offsets (ky, kx) [FFT px] -> spatial frequency components (gy, gx) [1/nm].

    ``g = k / (w p)`` per axis, each axis with its own pixel size (Zhu et al., ESI-2, eq. 1).
    """
    py, px = (float(v) for v in pixel_size_nm)
    w = float(window_px)
    return np.asarray(ky, dtype=float) / (w * py), np.asarray(kx, dtype=float) / (w * px)


__all__ = [
    "MIN_WINDOW_PX",
    "UNET_INPUT_PX",
    "BandGeometry",
    "WindowGrid",
    "band_geometry",
    "band_spectra",
    "crop_band",
    "extract_windows",
    "frequency_nm_inv",
    "grid_band_spectra",
    "hann_2d",
    "image_offset",
    "iter_window_batches",
    "log_band",
    "log_band_from_crop",
    "row_median",
    "window_grid",
    "window_spectra",
    "window_view",
]
