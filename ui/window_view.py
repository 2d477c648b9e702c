"""One window of an analysis, looked at closely: its FFT, the detector's mask, the labelled spots.

Only the selected window is recomputed (with :mod:`hrtem_core.windows` and the detector), with
exactly the geometry the analysis used; the spot pairs themselves come from the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go


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

    Parameters
    ----------
    result : AnalysisResult
    image : ndarray, shape (ny, nx)
        The analysed image (``micrograph.data``).
    index : int
        Row-major window index.
    model : SpotModel, optional
        The U-Net (needed when ``result.params.detector == "unet"``).
    """
    from hrtem_core.spots import classical_masks
    from hrtem_core.windows import (
        band_geometry,
        crop_band,
        extract_windows,
        log_band,
        window_spectra,
    )

    grid = result.grid
    index = int(index)
    if not 0 <= index < grid.n_windows:
        raise IndexError(f"window {index} is outside 0..{grid.n_windows - 1}")
    windows = extract_windows(image, grid, indices=np.array([index]))
    spectra = window_spectra(windows)
    geometry = band_geometry(
        grid.window_px, tuple(result.pixel_size_nm), d_min_nm=result.params.d_min_nm
    )
    band = log_band(spectra, geometry)
    if result.params.detector == "unet" and model is not None:
        from hrtem_core.unet.load import predict_masks

        mask = predict_masks(model, band)
    else:
        # As hrtem_core.spots.detect_pairs does: the classical detector on the cropped band.
        mask = classical_masks(
            crop_band(spectra, geometry), geometry, pixel_size_nm=tuple(result.pixel_size_nm)
        )
        if isinstance(mask, tuple):
            mask = mask[0]
    row, col = (int(v) for v in grid.row_col[index])
    origin = tuple(int(v) for v in grid.origins[index])
    return WindowDetail(
        index=index,
        row=row,
        col=col,
        origin=(origin[0], origin[1]),
        window=windows[0],
        spectrum=spectra[0],
        band=band[0],
        mask=np.asarray(mask[0], dtype=bool),
        geometry=geometry,
        pairs=tuple(result.pairs[index]),
    )


def _heatmap_layout(fig: go.Figure, title: str, size: int = 300) -> go.Figure:
    """Square, axis-free layout; the width follows the page column, ``size`` is the height [px]."""
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=size,
        margin={"l": 4, "r": 4, "t": 30, "b": 4},
        showlegend=False,
    )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(
        visible=False, autorange="reversed", scaleanchor="x", scaleratio=1, constrain="domain"
    )
    return fig


def window_figure(detail: WindowDetail) -> go.Figure:
    """The real-space window (grey)."""
    fig = go.Figure(
        go.Heatmap(z=detail.window, colorscale="gray", showscale=False, hoverinfo="skip")
    )
    return _heatmap_layout(fig, f"Window {detail.index} (row {detail.row}, col {detail.col})")


def spot_labels(detail: WindowDetail, labels: list[str] | None = None) -> list[str]:
    """Marker labels, one per pair: the (hkl) when indexed, else the spacing in nm."""
    out = []
    for i, p in enumerate(detail.pairs):
        if labels is not None and i < len(labels) and labels[i]:
            out.append(labels[i])
        else:
            out.append(f"{p.spacing_nm:.3f} nm")
    return out


def fft_figure(detail: WindowDetail, labels: list[str] | None = None) -> go.Figure:
    """log |F| of the window, cropped to the band, with both spots of every pair marked."""
    geom = detail.geometry
    w = detail.spectrum.shape[0]
    c = w // 2
    ry, rx = geom.radius_y, geom.radius_x
    crop = detail.spectrum[c - ry : c + ry + 1, c - rx : c + rx + 1]
    z = np.log1p(crop.astype(np.float64))
    ky = np.arange(-ry, ry + 1)
    kx = np.arange(-rx, rx + 1)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=kx,
            y=ky,
            colorscale="gray",
            showscale=False,
            hovertemplate="ky %{y} px, kx %{x} px<extra></extra>",
        )
    )
    names = spot_labels(detail, labels)
    if detail.pairs:
        xs, ys, text, hover = [], [], [], []
        for name, p in zip(names, detail.pairs, strict=True):
            for sign in (1, -1):
                xs.append(sign * p.kx)
                ys.append(sign * p.ky)
                text.append(name if sign == 1 else "")
                hover.append(
                    f"{name}<br>d = {p.spacing_nm:.4f} nm<br>angle {p.angle_deg:.1f}°"
                    f"<br>|g| = {p.frequency_nm_inv:.3f} 1/nm<br>SNR {p.snr:.1f}"
                )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers+text",
                text=text,
                textposition="top center",
                textfont={"color": "#ffd166", "size": 11},
                marker={
                    "size": 11,
                    "color": "rgba(0,0,0,0)",
                    "line": {"color": "#ffd166", "width": 2},
                },
                hovertext=hover,
                hoverinfo="text",
            )
        )
    return _heatmap_layout(fig, "FFT (log |F|) and spot pairs")


def mask_figure(detail: WindowDetail) -> go.Figure:
    """The detector's input band with its output mask on top (red)."""
    band = detail.band.astype(np.float64)
    fig = go.Figure(go.Heatmap(z=band, colorscale="gray", showscale=False, hoverinfo="skip"))
    m = detail.mask.astype(float)
    m[m == 0] = np.nan
    fig.add_trace(
        go.Heatmap(
            z=m,
            colorscale=[[0, "rgba(230,57,70,0.75)"], [1, "rgba(230,57,70,0.75)"]],
            showscale=False,
            hoverinfo="skip",
        )
    )
    return _heatmap_layout(fig, f"Detector input + mask ({int(detail.mask.sum())} px)")


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
