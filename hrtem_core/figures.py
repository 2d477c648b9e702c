"""Figures of an analysis: the plane-distribution map and the defocus profiles.

Interactive figures are plotly (``plane_map_figure``, ``profile_figure``,
``phase_fraction_figure``); static PNGs are drawn with matplotlib's Agg canvas (no kaleido, no
pyplot state): ``plane_map_png``, ``profile_png``.

The plane map shows the image (block-averaged for display when larger than ``max_display_px``) with
one tile per window, ``s x s`` pixels centred on the window centre, coloured by the window's phase
and the plane family of its strongest indexed plane; crystalline windows that no phase explains are
grey; hovering a tile shows its spacings, angles, (hkl), phase, zone axis, score, alternatives and
status.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Colour of crystalline windows that no phase explains.
UNINDEXED_COLOR = "#9e9e9e"
UNINDEXED_LABEL = "crystalline, not indexed"
#: A long qualitative palette (plotly's Plotly + D3 + Dark24 colours, without greys).
_PALETTE = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
    "#FF97FF", "#FECB52", "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B",
    "#E377C2", "#BCBD22", "#17BECF", "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF",
    "#B68100", "#750D86", "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D",
    "#6C7C32", "#778AAE", "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516",
)  # fmt: skip


def display_image(image: np.ndarray, *, max_display_px: int = 1024) -> tuple[np.ndarray, int]:
    """Block-average ``image`` by an integer factor so its larger side is <= ``max_display_px``.

    Returns
    -------
    (small, factor) : (ndarray, int)
        ``small[i, j]`` is the mean of ``image[i f : (i + 1) f, j f : (j + 1) f]``.
    """
    img = np.asarray(image, dtype=np.float32)
    f = max(1, math.ceil(max(img.shape) / float(max_display_px)))
    if f == 1:
        return img, 1
    ny, nx = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    small = img[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))
    return small, f


def _contrast(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1.0, 99.0])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def plane_map_categories(result: Any) -> tuple[np.ndarray, list[str], list[str]]:
    """Category code of every window on the grid, the category labels and their colours.

    Returns
    -------
    codes : ndarray of float, shape (n_rows, n_cols)
        Index into ``labels``; NaN for windows that are not crystalline.
    labels, colors : list of str
        ``"<phase> {<family>}"`` categories (sorted by phase, then family), then
        :data:`UNINDEXED_LABEL` when present.
    """
    labels_grid = result.label_grid()
    cryst = result.crystalline_grid
    cats = sorted({lab for lab in labels_grid.ravel() if lab})
    labels = list(cats)
    colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(labels))]
    unindexed = cryst & (labels_grid == "")
    if unindexed.any():
        labels.append(UNINDEXED_LABEL)
        colors.append(UNINDEXED_COLOR)
    lut = {lab: i for i, lab in enumerate(labels)}
    codes = np.full(labels_grid.shape, np.nan)
    for (r, c), lab in np.ndenumerate(labels_grid):
        if lab:
            codes[r, c] = lut[lab]
        elif cryst[r, c]:
            codes[r, c] = lut[UNINDEXED_LABEL]
    return codes, labels, colors


def _png_data_uri(small: np.ndarray) -> str:
    """Grey PNG (1-99 % contrast stretch) of ``small`` as a ``data:`` URI (compact in HTML)."""
    import base64
    import io

    from PIL import Image

    lo, hi = _contrast(small)
    grey = np.clip((np.nan_to_num(small, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    buf = io.BytesIO()
    Image.fromarray((grey * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _hover_text(row: Any) -> str:
    e = html.escape
    parts = [f"<b>window ({row.row}, {row.col})</b> at y={row.y_px:.0f}, x={row.x_px:.0f} px"]
    parts.append(f"status: {e(str(row.status))}; pairs: {row.n_pairs}")
    if row.n_pairs:
        parts.append(f"spacings [nm]: {e(str(row.spacings_nm))}")
        if row.angles_deg:
            parts.append(f"angles [deg]: {e(str(row.angles_deg))}")
    if row.phase_name:
        parts.append(f"phase: {e(str(row.phase_name))} ({e(str(row.phase_card))})")
        parts.append(f"hkl: {e(str(row.hkl))}")
        if row.zone_axis:
            parts.append(f"zone axis: [{e(str(row.zone_axis))}]")
        parts.append(f"score: {row.score:.3f}")
    if row.alternatives:
        alts = str(row.alternatives).split(" | ")
        parts.append("alternatives:<br>&nbsp;&nbsp;" + "<br>&nbsp;&nbsp;".join(e(a) for a in alts))
    return "<br>".join(parts)


def plane_map_figure(result: Any, image: np.ndarray | None = None, *, max_display_px: int = 1024):
    """Interactive plane-distribution map (plotly).

    Parameters
    ----------
    result : AnalysisResult
    image : ndarray, shape (ny, nx), optional
        The analysed image, shown in grey underneath (downsampled for display if large).
    max_display_px : int, keyword-only
        Largest side of the displayed image [px].

    Returns
    -------
    plotly.graph_objects.Figure
        Axes in image pixels (x right, y down).
    """
    import plotly.graph_objects as go

    grid = result.grid
    ny, nx = grid.image_shape
    fig = go.Figure()
    if image is not None:
        small, f = display_image(image, max_display_px=max_display_px)
        fig.add_trace(
            go.Image(
                source=_png_data_uri(small),
                x0=(f - 1) / 2.0,
                dx=f,
                y0=(f - 1) / 2.0,
                dy=f,
                hoverinfo="skip",
                name="image",
            )
        )
    codes, labels, colors = plane_map_categories(result)
    text = np.asarray(
        [_hover_text(r) for r in result.windows.itertuples(index=False)], dtype=object
    ).reshape(grid.n_rows, grid.n_cols)
    k = max(len(labels), 1)
    scale = []
    for i in range(k):
        c = colors[i] if i < len(colors) else "#000000"
        scale += [[i / k, c], [(i + 1) / k, c]]
    centers = grid.centers
    fig.add_trace(
        go.Heatmap(
            z=codes,
            x0=float(centers[0, 1]),
            dx=grid.stride_px,
            y0=float(centers[0, 0]),
            dy=grid.stride_px,
            text=text,
            hovertemplate="%{text}<extra></extra>",
            colorscale=scale,
            zmin=-0.5,
            zmax=k - 0.5,
            showscale=False,
            opacity=0.45,
            hoverongaps=False,
            name="windows",
        )
    )
    # Invisible hover layer over all windows (non-crystalline ones too).
    fig.add_trace(
        go.Scatter(
            x=centers[:, 1],
            y=centers[:, 0],
            mode="markers",
            marker={"size": 4, "color": "rgba(255,255,255,0.35)"},
            text=text.ravel(),
            hovertemplate="%{text}<extra></extra>",
            showlegend=False,
            name="window centres",
        )
    )
    for lab, col in zip(labels, colors, strict=True):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"size": 12, "color": col, "symbol": "square"},
                name=lab,
                showlegend=True,
            )
        )
    s = result.summary
    title = (
        f"{html.escape(str(result.name))}: crystallinity {s['crystallinity']:.3f} "
        f"({s['n_crystalline']}/{s['n_windows']} windows), w={grid.window_px}, s={grid.stride_px} px"
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "x [px]", "range": [-0.5, nx - 0.5], "constrain": "domain"},
        yaxis={
            "title": "y [px]",
            "range": [ny - 0.5, -0.5],
            "scaleanchor": "x",
            "constrain": "domain",
        },
        legend={"title": {"text": "phase {plane family}"}},
        template="plotly_white",
        height=800,
    )
    return fig


def _profile_frame(series: Any) -> pd.DataFrame:
    prof = series.profile
    return prof[pd.to_numeric(prof["defocus_nm"], errors="coerce").notna()]


def profile_figure(series: Any):
    """Crystallinity vs defocus (lines and markers), the best focus marked (plotly).

    Parameters
    ----------
    series : SeriesResult

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    prof = _profile_frame(series)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=prof["defocus_nm"],
            y=prof["crystallinity"],
            mode="lines+markers",
            name="crystallinity (fraction of windows)",
            text=prof["file"],
            hovertemplate="%{text}<br>defocus %{x:.1f} nm<br>crystallinity %{y:.3f}<extra></extra>",
        )
    )
    if "crystalline_area_fraction" in prof:
        fig.add_trace(
            go.Scatter(
                x=prof["defocus_nm"],
                y=prof["crystalline_area_fraction"],
                mode="lines+markers",
                line={"dash": "dot"},
                name="crystalline area fraction",
                text=prof["file"],
                hovertemplate="%{text}<br>defocus %{x:.1f} nm<br>area fraction %{y:.3f}<extra></extra>",
            )
        )
    if series.best_focus_nm is not None:
        best = prof.loc[prof["defocus_nm"] == series.best_focus_nm, "crystallinity"]
        fig.add_vline(
            x=series.best_focus_nm,
            line={"dash": "dash", "color": "#d62728"},
            annotation_text=f"best focus {series.best_focus_nm:g} nm",
            annotation_position="top",
        )
        if len(best):
            fig.add_trace(
                go.Scatter(
                    x=[series.best_focus_nm],
                    y=[float(best.iloc[0])],
                    mode="markers",
                    marker={"size": 14, "symbol": "star", "color": "#d62728"},
                    name="maximum crystallinity",
                )
            )
    fig.update_layout(
        title="Crystallinity vs defocus",
        xaxis={"title": "defocus [nm] (negative = underfocus)"},
        yaxis={"title": "fraction", "range": [0, 1.05]},
        template="plotly_white",
    )
    return fig


def phase_fraction_figure(series: Any):
    """Per-phase fraction of windows vs defocus (plotly), one line per phase.

    Parameters
    ----------
    series : SeriesResult

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    from hrtem_core.analysis import fraction_column

    prof = _profile_frame(series)
    fig = go.Figure()
    for i, (cid, name) in enumerate(series.phases):
        col = fraction_column(cid)
        if col not in prof:
            continue
        fig.add_trace(
            go.Scatter(
                x=prof["defocus_nm"],
                y=prof[col],
                mode="lines+markers",
                name=f"{name} ({cid})",
                line={"color": _PALETTE[i % len(_PALETTE)]},
                hovertemplate=f"{html.escape(name)}<br>defocus %{{x:.1f}} nm<br>fraction %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Phase fractions vs defocus (windows whose best match is the phase / all windows)",
        xaxis={"title": "defocus [nm] (negative = underfocus)"},
        yaxis={"title": "fraction of windows", "rangemode": "tozero"},
        template="plotly_white",
    )
    return fig


def write_html(fig: Any, path: str | os.PathLike) -> Path:
    """Write a plotly figure as a self-contained HTML file (plotly.js embedded, works offline)."""
    from hrtem_core._files import atomic_write

    return atomic_write(
        Path(path), lambda p: fig.write_html(str(p), include_plotlyjs=True, full_html=True)
    )


def _hex_rgba(color: str, alpha: float) -> tuple[float, float, float, float]:
    c = color.lstrip("#")
    return (int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255, alpha)


def plane_map_png(
    result: Any,
    image: np.ndarray | None,
    path: str | os.PathLike,
    *,
    max_display_px: int = 1024,
    dpi: int = 100,
) -> Path:
    """Static plane-distribution map (matplotlib, Agg): image, coloured window tiles, legend.

    Parameters
    ----------
    result : AnalysisResult
    image : ndarray, shape (ny, nx) or None
    path : path
        The PNG to write.
    max_display_px : int, keyword-only
    dpi : int, keyword-only

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    grid = result.grid
    ny, nx = grid.image_shape
    fig = Figure(figsize=(9.5, 8.0), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    if image is not None:
        small, _f = display_image(image, max_display_px=max_display_px)
        lo, hi = _contrast(small)
        ax.imshow(small, cmap="gray", vmin=lo, vmax=hi, extent=(-0.5, nx - 0.5, ny - 0.5, -0.5))
    codes, labels, colors = plane_map_categories(result)
    rgba = np.zeros((*codes.shape, 4))
    for i, col in enumerate(colors):
        rgba[codes == i] = _hex_rgba(col, 0.45)
    s = grid.stride_px
    c0 = grid.centers[0]
    ext = (
        c0[1] - s / 2.0,
        c0[1] + (grid.n_cols - 0.5) * s,
        c0[0] + (grid.n_rows - 0.5) * s,
        c0[0] - s / 2.0,
    )
    ax.imshow(rgba, extent=ext, interpolation="nearest")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")
    summ = result.summary
    ax.set_title(
        f"{result.name}: crystallinity {summ['crystallinity']:.3f} "
        f"({summ['n_crystalline']}/{summ['n_windows']}), w={grid.window_px}, s={s} px",
        fontsize=10,
    )
    if labels:
        handles = [
            Patch(facecolor=_hex_rgba(c, 0.8), label=lab)
            for lab, c in zip(labels, colors, strict=True)
        ]
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            title="phase {plane family}",
            title_fontsize=8,
        )
    fig.tight_layout()
    from hrtem_core._files import atomic_write

    return atomic_write(Path(path), lambda p: fig.savefig(p, format="png"))


def profile_png(series: Any, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Static crystallinity-vs-defocus plot (matplotlib, Agg) with the best focus marked."""
    from matplotlib.figure import Figure

    prof = _profile_frame(series)
    fig = Figure(figsize=(7.0, 4.5), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(prof["defocus_nm"], prof["crystallinity"], "o-", label="crystallinity")
    if "crystalline_area_fraction" in prof:
        ax.plot(
            prof["defocus_nm"],
            prof["crystalline_area_fraction"],
            "s:",
            label="crystalline area fraction",
        )
    if series.best_focus_nm is not None:
        ax.axvline(
            series.best_focus_nm,
            color="#d62728",
            ls="--",
            label=f"best focus {series.best_focus_nm:g} nm",
        )
    ax.set_xlabel("defocus [nm] (negative = underfocus)")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Crystallinity vs defocus")
    fig.tight_layout()
    from hrtem_core._files import atomic_write

    return atomic_write(Path(path), lambda p: fig.savefig(p, format="png"))


__all__ = [
    "UNINDEXED_COLOR",
    "UNINDEXED_LABEL",
    "display_image",
    "phase_fraction_figure",
    "plane_map_categories",
    "plane_map_figure",
    "plane_map_png",
    "profile_figure",
    "profile_png",
    "write_html",
]
