"""What the dashboard shows for one window of an analysis (the computation, no UI).

:func:`window_detail` recomputes one window's spectrum, the detector's input band and its mask
with exactly the geometry and the detector of the analysis; the spot pairs come from the
result. :func:`pairs_table` lists them, :func:`nearest_window` finds the window under a point
of the image and :func:`g_max_nm_inv` the range of spatial frequency shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class WindowDetail:
    """What the detail panel shows for window ``index``.

    Attributes
    ----------
    index, row, col : int
        Row-major window index and grid position.
    origin : (int, int)
        Top-left ``[row, col]`` of the window in the image [px].
    window : ndarray, shape (w, w) float32
        The real-space window.
    spectrum : ndarray, shape (w, w) float32
        Fftshifted ``|F|`` (DC at ``(w // 2, w // 2)``).
    band : ndarray, shape (S, S) float32
        The detector's input (log band).
    mask : ndarray, shape (S, S) bool
        The detector's output on the band grid.
    geometry : BandGeometry
    pairs : tuple of SpotPair
        From the analysis result.
    """

    index: int
    row: int
    col: int
    origin: tuple[int, int]
    window: np.ndarray
    spectrum: np.ndarray
    band: np.ndarray
    mask: np.ndarray
    geometry: Any
    pairs: tuple


def window_detail(result: Any, image: np.ndarray, index: int, *, model: Any = None) -> WindowDetail:
    """Recompute the FFT and the detector mask of one window of ``result``.

    The geometry is exactly the analysis's (:mod:`hrtem_core.windows`); the detector is the
    analysis's (:func:`hrtem_core.detectors.detector_for`), the classical one when the result
    used the U-Net and no ``model`` is given; the pairs come from the result.

    Parameters
    ----------
    result : AnalysisResult
    image : ndarray, shape (ny, nx)
        The analysed image (``micrograph.data``).
    index : int
        Row-major window index.
    model : SpotModel, optional
        The U-Net (needed when ``result.params.detector == "unet"``).

    Raises
    ------
    IndexError
        ``index`` is not a window of the grid.
    """
    from hrtem_core.detectors import detector_for
    from hrtem_core.windows import band_geometry, extract_windows, log_band, window_spectra

    grid = result.grid
    index = int(index)
    if not 0 <= index < grid.n_windows:
        raise IndexError(f"window {index} is outside 0..{grid.n_windows - 1}")
    windows = extract_windows(image, grid, indices=np.array([index]))
    spectra = window_spectra(windows)
    pixel = tuple(float(v) for v in result.pixel_size_nm)
    geometry = band_geometry(grid.window_px, pixel, d_min_nm=result.params.d_min_nm)
    name = result.params.detector
    if name == "unet" and model is None:
        name = "classical"
    mask = detector_for(name, model=model).window_masks(spectra, geometry, pixel_size_nm=pixel)
    row, col = (int(v) for v in grid.row_col[index])
    origin = tuple(int(v) for v in grid.origins[index])
    return WindowDetail(
        index=index,
        row=row,
        col=col,
        origin=(origin[0], origin[1]),
        window=windows[0],
        spectrum=spectra[0],
        band=log_band(spectra, geometry)[0],
        mask=np.asarray(mask[0], dtype=bool),
        geometry=geometry,
        pairs=tuple(result.pairs[index]),
    )


def spot_labels(detail: WindowDetail, labels: list[str] | None = None) -> list[str]:
    """Marker labels, one per pair: the (hkl) when indexed, else the spacing in nm."""
    out = []
    for i, p in enumerate(detail.pairs):
        if labels is not None and i < len(labels) and labels[i]:
            out.append(labels[i])
        else:
            out.append(f"{p.spacing_nm:.3f} nm")
    return out


def pairs_table(detail: WindowDetail, labels: list[str] | None = None) -> pd.DataFrame:
    """One row per Friedel pair of the window: label, spacing, frequency, direction, strength."""
    names = spot_labels(detail, labels)
    rows = [
        {
            "spot": name,
            "d (nm)": round(float(p.spacing_nm), 5),
            "|g| (1/nm)": round(float(p.frequency_nm_inv), 4),
            "direction (°)": round(float(p.angle_deg), 2),
            "l (FFT px)": round(float(p.l_px), 2),
            "ky, kx (FFT px)": f"{p.ky:+.2f}, {p.kx:+.2f}",
            "SNR": round(float(p.snr), 1),
            "harmonics": ", ".join(str(o) for o in p.harmonic_orders),
        }
        for name, p in zip(names, detail.pairs, strict=True)
    ]
    return pd.DataFrame(rows)


def nearest_window(grid: Any, x: float, y: float) -> int:
    """Row-major index of the window whose centre is nearest to image point (x, y) [px]."""
    centers = grid.centers
    d2 = (centers[:, 0] - float(y)) ** 2 + (centers[:, 1] - float(x)) ** 2
    return int(np.argmin(d2))


def g_max_nm_inv(result: Any) -> float:
    """Half-width of the spectrum shown [1/nm]: out to d_min, within Nyquist."""
    p = max(float(v) for v in result.pixel_size_nm)
    return min(1.0 / float(result.params.d_min_nm), 1.0 / (2.0 * p))


__all__ = [
    "WindowDetail",
    "g_max_nm_inv",
    "nearest_window",
    "pairs_table",
    "spot_labels",
    "window_detail",
]
