"""One window of an analysis, looked at closely: power spectrum, measuring, Bragg filter, profile.

Only the selected window is recomputed (with :mod:`hrtem_core.windows` and the detector), with
exactly the geometry the analysis used; the spot pairs themselves come from the result, the
labels from the windows table (columns found by name). The numbers come from
:mod:`hrtem_core.measure`, the figures from :mod:`hrtem_core.figures`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from hrtem_core.analysis.window_detail import (
    WindowDetail,
    g_max_nm_inv,
    nearest_window,
    pairs_table,
    spot_labels,
    window_detail,
)

__all__ = [
    "WindowDetail",
    "g_max_nm_inv",
    "nearest_window",
    "pairs_table",
    "show_tools",
    "spot_labels",
    "window_detail",
]


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


def window_figure(detail: WindowDetail, pixel_size_nm: float, *, line: Any = None) -> go.Figure:
    """The real-space window (grey) with an nm scale bar (and a profile line)."""
    from hrtem_core.figures import image_figure

    return image_figure(
        detail.window,
        pixel_size_nm=pixel_size_nm,
        title=f"Window {detail.index} (row {detail.row}, col {detail.col})",
        line=line,
        height=380,
    )


def _cell(row: Any, name: str) -> str:
    try:
        value = row[name]
    except (KeyError, IndexError, TypeError):
        return ""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def pair_labels(row: Any, pairs: tuple, *, four_index: bool = False) -> list[str]:
    """Per detected pair: ``(h k l)`` of the plane it measured (windows-table row), else ''.

    The plane of a pair is the one of the row nearest in spacing and direction (mod 180).
    """
    from hrtem_core.figures import format_hkl, parse_hkl

    if not _cell(row, "phase_card"):
        return [""] * len(pairs)
    d = [float(v) for v in _cell(row, "spacings_nm").split(";") if v]
    a = [float(v) for v in _cell(row, "directions_deg").split(";") if v]
    hkl = _cell(row, "hkl").split(";")
    if not d or len(a) != len(d):
        return [""] * len(pairs)
    out = []
    for p in pairs:
        cost = [
            abs(dq - p.spacing_nm) / max(p.spacing_nm, 1e-9)
            + abs(((aq - p.angle_deg + 90.0) % 180.0) - 90.0) / 180.0
            for dq, aq in zip(d, a, strict=True)
        ]
        k = int(np.argmin(cost))
        h = parse_hkl(hkl[k]) if k < len(hkl) else None
        out.append("" if h is None else "(" + format_hkl(h, four_index=four_index) + ")")
    return out


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
    return _heatmap_layout(fig, f"Detector input + mask ({int(detail.mask.sum())} px)", 380)


# --------------------------------------------------------------------------------------------
# The tools below the map
# --------------------------------------------------------------------------------------------
#: Card rings drawn at most (the strongest reflections of the phase in the shown range).
MAX_RINGS = 10
#: Predicted spots labelled at most (the lowest orders; the others show their hkl on hover).
MAX_PREDICTED_LABELS = 10


def card_rings(phase: Any, g_max: float) -> list[tuple[str, float]]:
    """``(label, d_nm)`` of the phase's strongest reflections inside ``g_max``."""
    from hrtem_core.figures import format_hkl, is_hexagonal

    four = is_hexagonal(phase)
    refl = [r for r in phase.reflections if not r.forbidden and 1.0 / r.d_nm <= g_max * 1.41]
    refl.sort(key=lambda r: (-(r.intensity_rel or 0.0), -r.d_nm))
    return [
        ("{" + format_hkl(r.hkl, four_index=four) + "}", float(r.d_nm)) for r in refl[:MAX_RINGS]
    ]


def predicted_spots(
    phase: Any, row: Any, g_max: float, d_min_nm: float
) -> list[tuple[str, float, float]]:
    """The card's zone-axis pattern for an indexed window: ``(label, gy, gx)``, oriented."""
    from hrtem_core.figures import format_hkl, is_hexagonal, parse_hkl
    from hrtem_core.measure import zone_pattern

    zone = parse_hkl(_cell(row, "zone_axis"))
    if phase is None or zone is None:
        return []
    hkls = [parse_hkl(h) for h in _cell(row, "hkl").split(";")]
    dirs = [float(v) for v in _cell(row, "directions_deg").split(";") if v]
    planes = [(h, a) for h, a in zip(hkls, dirs, strict=False) if h is not None]
    if not planes:
        return []
    four = is_hexagonal(phase)
    pattern = zone_pattern(
        phase.cell,
        phase.space_group,
        zone,
        ref_hkl=planes[0][0],
        ref_direction_deg=planes[0][1],
        second=planes[1] if len(planes) > 1 else None,
        d_min_nm=max(float(d_min_nm), 1.0 / (g_max * 1.41)),
    )
    pattern.sort(key=lambda t: math.hypot(t[1], t[2]))
    out = []
    for i, (hkl, gy, gx) in enumerate(pattern):
        label = format_hkl(hkl, four_index=four) if i < MAX_PREDICTED_LABELS else ""
        out.append((label, gy, gx))
    return out


def _spots(detail: WindowDetail, labels: list[str]) -> list[tuple[str, float, float]]:
    out = []
    for name, p in zip(spot_labels(detail, labels), detail.pairs, strict=True):
        out.append((name, float(p.gy_nm_inv), float(p.gx_nm_inv)))
        out.append(("", -float(p.gy_nm_inv), -float(p.gx_nm_inv)))
    return out


def _all_planes(cards: Any, phase_id: str | None) -> list[tuple[str, float]]:
    from hrtem_core.figures import format_hkl, is_hexagonal

    phases = [p for p in getattr(cards, "phases", ()) if phase_id in (None, p.card_id)]
    if phase_id is None:
        phases = [p for p in phases if p.enabled]
    return [
        (f"{p.name} {{{format_hkl(r.hkl, four_index=is_hexagonal(p))}}}", float(r.d_nm))
        for p in phases
        for r in p.reflections
        if not r.forbidden
    ]


def show_tools(
    result: Any,
    micrograph: Any,
    detail: WindowDetail,
    row: Any,
    *,
    key: str,
    cards: Any,
    phase: Any,
    hexagonal: bool,
    stale: bool = False,
) -> None:
    """Tabs under the map: power spectrum + measuring, Bragg filter, line profile, detector."""
    st.subheader(f"Window #{detail.index} in detail")
    tabs = st.tabs(["Power spectrum and measuring", "Bragg filter", "Line profile", "Detector"])
    labels = pair_labels(row, detail.pairs, four_index=hexagonal)
    with tabs[0]:
        _spectrum_tab(result, detail, row, labels, key=key, cards=cards, phase=phase, stale=stale)
    with tabs[1]:
        _bragg_tab(result, micrograph, detail, row, labels, key=key, stale=stale)
    with tabs[2]:
        _profile_tab(result, detail, labels, key=key, cards=cards, stale=stale)
    with tabs[3]:
        c1, c2 = st.columns(2)
        c1.plotly_chart(mask_figure(detail), key=f"{key}_mask")
        c2.plotly_chart(
            window_figure(detail, float(result.pixel_size_nm[1])), key=f"{key}_window_img"
        )
        table = pairs_table(detail, labels)
        if len(table):
            st.dataframe(table, hide_index=True, width="stretch")


def _spectrum_tab(
    result: Any,
    detail: WindowDetail,
    row: Any,
    labels: list[str],
    *,
    key: str,
    cards: Any,
    phase: Any,
    stale: bool,
) -> None:
    from hrtem_core import figures
    from ui.results_ui import FFT_HEIGHT_PX, fft_points_from_event

    g_max = g_max_nm_inv(result)
    phases = list(getattr(cards, "phases", ()))
    names = {p.card_id: f"{p.name} ({p.card_id})" for p in phases}
    left, right = st.columns([3, 2], gap="medium")
    with right:
        ring_id, can_predict, show_pred = _overlay_controls(detail, row, phases, names, key, phase)
    ring_phase = next((p for p in phases if p.card_id == ring_id), None)
    rings = card_rings(ring_phase, g_max) if ring_phase is not None else []
    predicted: list[tuple[str, float, float]] = []
    if can_predict and show_pred:
        try:
            predicted = predicted_spots(phase, row, g_max, result.params.d_min_nm)
        except Exception as exc:  # a zone/plane the card cannot place: say so, go on
            right.caption(f"No predicted pattern: {exc}")
    points_key, points = _clicked_points(detail, key)
    color = (
        figures.phase_color(ring_id or "x", among=[p.card_id for p in phases])
        if ring_id
        else "#8ecae6"
    )
    overlays = {"spots": _spots(detail, labels), "rings": rings, "predicted": predicted}
    fig = figures.fft_figure(
        detail.spectrum,
        pixel_size_nm=tuple(result.pixel_size_nm),
        g_max_nm_inv=g_max,
        points=points,
        ring_color=_light(color),
        title=f"Power spectrum of window #{detail.index} (log |F|), axes in 1/nm",
        height=FFT_HEIGHT_PX,
        **overlays,
    )
    with left:
        event = _fft_panel(result, detail, fig, overlays, g_max, names, ring_id, key, stale)
    clicked = fft_points_from_event(event)
    seen_key = f"{key}_fft_event"
    if clicked and st.session_state.get(seen_key) != clicked:
        st.session_state[seen_key] = clicked
        st.session_state[points_key] = (points + clicked)[-2:]
        st.rerun()
    with right:
        _measure_panel(detail, labels, points, points_key, cards, ring_id, key)


def _overlay_controls(
    detail: WindowDetail, row: Any, phases: list, names: dict, key: str, phase: Any
) -> tuple[str, bool, bool]:
    """The ring phase (its card id, '' for none) and the zone-pattern overlay choice."""
    options = ["", *[p.card_id for p in phases]]
    ring_key = f"{key}_ring_phase"
    own = _cell(row, "phase_card")
    if st.session_state.get(f"{key}_ring_for") != detail.index:
        st.session_state[f"{key}_ring_for"] = detail.index
        st.session_state[ring_key] = own if own in options else ""
    ring_id = st.selectbox(
        "Rings at the card spacings of",
        options,
        format_func=lambda c: names.get(c, "no phase"),
        key=ring_key,
    )
    can_predict = bool(phase is not None and _cell(row, "zone_axis"))
    show_pred = st.checkbox(
        "Overlay the card's zone-axis pattern",
        value=True,
        disabled=not can_predict,
        key=f"{key}_predicted",
        help="Positions and (hkl) of the card's reflections in the window's zone axis, "
        "turned to the measured planes: judge the match by eye.",
    )
    return ring_id, can_predict, show_pred


def _clicked_points(detail: WindowDetail, key: str) -> tuple[str, list[tuple]]:
    """The points clicked on this window's spectrum (forgotten when the window changes)."""
    points_key = f"{key}_fft_points"
    points = [tuple(p) for p in st.session_state.get(points_key, [])]
    if st.session_state.get(f"{key}_points_for") != detail.index:
        st.session_state[f"{key}_points_for"] = detail.index
        points = []
        st.session_state[points_key] = points
    return points_key, points


def _fft_panel(
    result: Any,
    detail: WindowDetail,
    fig: Any,
    overlays: dict,
    g_max: float,
    names: dict,
    ring_id: str,
    key: str,
    stale: bool,
) -> Any:
    """The clickable spectrum, its captions and downloads; the chart's selection event."""
    from hrtem_core import figures
    from ui.results_ui import figure_downloads

    rings = overlays["rings"]
    event = st.plotly_chart(
        fig,
        key=f"{key}_fft",
        on_select="rerun",
        selection_mode=("points",),
        config={"displaylogo": False, "scrollZoom": True},
    )
    if rings:
        st.caption(
            f"Rings of {names.get(ring_id, ring_id)} (d in nm): "
            + ", ".join(f"{lab} {d:.4f}" for lab, d in rings)
        )
    st.caption(
        "Zoom with the mouse wheel or a box; double-click to reset. Click a point to measure "
        "it (a second click measures the angle between the two)."
    )
    figure_downloads(
        lambda: figures.fft_mpl(
            detail.spectrum,
            pixel_size_nm=tuple(result.pixel_size_nm),
            g_max_nm_inv=g_max,
            title=f"{result.name}, window #{detail.index}",
            **overlays,
        ),
        f"window{detail.index}_fft",
        key=f"{key}_fft_dl",
        stale=stale,
    )
    return event


def _measure_panel(
    detail: WindowDetail,
    labels: list[str],
    points: list[tuple],
    points_key: str,
    cards: Any,
    ring_id: str,
    key: str,
) -> None:
    """Measure d and angles of one or two detected spots or clicked points."""
    from hrtem_core import measure

    st.markdown("**Measure**")
    names_spots = [lab for lab in spot_labels(detail, labels)]
    picked = st.multiselect(
        "Detected spots (one or two)",
        list(range(len(detail.pairs))),
        format_func=lambda i: names_spots[i],
        max_selections=2,
        key=f"{key}_measure_spots_{detail.index}",
    )
    chosen = [
        (float(detail.pairs[i].gy_nm_inv), float(detail.pairs[i].gx_nm_inv)) for i in picked
    ] or points
    if chosen:
        m = measure.fft_point_measure(chosen)
        planes = _all_planes(cards, ring_id or None)
        rows = []
        for i, (d, g, a) in enumerate(
            zip(m.spacings_nm, m.frequencies_nm_inv, m.directions_deg, strict=True)
        ):
            near = measure.nearest_planes(d, planes, n=3)
            rows.append(
                {
                    "point": i + 1,
                    "d (nm)": round(d, 4),
                    "|g| (1/nm)": round(g, 3),
                    "direction (°)": round(a, 1),
                    "nearest card planes": "; ".join(
                        f"{lab} {dc:.4f} nm ({100 * r:+.1f} %)" for lab, dc, r in near
                    ),
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        if m.angle_deg is not None:
            st.markdown(
                f"Angle between the two: **{m.angle_deg:.1f}°** "
                f"(between the planes: {m.acute_angle_deg:.1f}°)"
            )
    else:
        st.caption("Click the spectrum or pick detected spots to measure d and angles.")
    if points and st.button("Clear the clicked points", key=f"{key}_clear_points"):
        st.session_state[points_key] = []
        st.rerun()


def _light(color: str) -> str:
    """A lighter tint of a colour, readable on the black spectrum."""
    c = color.lstrip("#")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    r, g, b = (int(v + 0.45 * (255 - v)) for v in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"


def _families_of_pairs(row: Any, detail: WindowDetail) -> list[str]:
    """The plane family of each pair (windows-table row), '' when unexplained."""
    fams = _cell(row, "families").split(";") if _cell(row, "families") else []
    d = [float(v) for v in _cell(row, "spacings_nm").split(";") if v]
    a = [float(v) for v in _cell(row, "directions_deg").split(";") if v]
    out = []
    for p in detail.pairs:
        if not d or len(a) != len(d) or len(fams) != len(d):
            out.append("")
            continue
        cost = [
            abs(dq - p.spacing_nm) / max(p.spacing_nm, 1e-9)
            + abs(((aq - p.angle_deg + 90.0) % 180.0) - 90.0) / 180.0
            for dq, aq in zip(d, a, strict=True)
        ]
        f = fams[int(np.argmin(cost))]
        out.append("" if f in ("", "-") else f)
    return out


#: Largest region of the image that the Bragg filter transforms at once [px].
BRAGG_MAX_PX = 2048


def _bragg_tab(
    result: Any,
    micrograph: Any,
    detail: WindowDetail,
    row: Any,
    labels: list[str],
    *,
    key: str,
    stale: bool,
) -> None:

    if not detail.pairs:
        st.info("This window has no spot to filter with: pick a crystalline window.")
        return
    names = spot_labels(detail, labels)
    fams = _families_of_pairs(row, detail)
    c1, c2, c3 = st.columns([3, 2, 2])
    family_options = sorted({f for f in fams if f})
    fam = c2.selectbox(
        "…or every spot of one plane family",
        ["", *family_options],
        format_func=lambda f: "—" if not f else "{" + f + "}",
        key=f"{key}_bragg_family_{detail.index}",
    )
    strongest = int(np.argmax([p.snr for p in detail.pairs]))
    picked = c1.multiselect(
        "Spots to keep (with their Friedel mates)",
        list(range(len(detail.pairs))),
        default=[strongest],
        format_func=lambda i: f"{names[i]} · d {detail.pairs[i].spacing_nm:.4f} nm",
        key=f"{key}_bragg_spots_{detail.index}",
    )
    if fam:
        picked = [i for i, f in enumerate(fams) if f == fam]
    g_min = min(float(detail.pairs[i].frequency_nm_inv) for i in (picked or [strongest]))
    ny, nx = micrograph.data.shape
    whole = max(ny, nx) <= BRAGG_MAX_PX
    region = c3.radio(
        "Region",
        ["This window", "Whole image" if whole else f"{BRAGG_MAX_PX} px around the window"],
        key=f"{key}_bragg_region",
    )
    radius = st.slider(
        "Mask radius (1/nm): smaller keeps only the lattice, larger also its local changes",
        min_value=0.05,
        max_value=float(max(0.1, round(0.6 * g_min, 2))),
        value=float(max(0.05, round(0.25 * g_min, 2))),
        step=0.01,
        key=f"{key}_bragg_radius_{detail.index}",
    )
    if not picked:
        st.info("Choose at least one spot (or a plane family).")
        return
    g = [(float(detail.pairs[i].gy_nm_inv), float(detail.pairs[i].gx_nm_inv)) for i in picked]
    if region == "This window":
        area, origin = detail.window, detail.origin
    else:
        area, origin = _bragg_area(result, micrograph, detail, whole=whole)
    filtered, amplitude = _bragg_cached(
        (result.name, tuple(result.pixel_size_nm), detail.index, region, tuple(g), radius),
        np.asarray(area, dtype=np.float32),
        g,
        tuple(result.pixel_size_nm),
        radius,
    )
    what = ", ".join(names[i] for i in picked)
    _bragg_outputs(result, detail, filtered, amplitude, what, origin, radius, key=key, stale=stale)


def _bragg_area(
    result: Any, micrograph: Any, detail: WindowDetail, *, whole: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    """The region the Bragg filter transforms and its origin (y, x) [px]: the whole image, or
    at most :data:`BRAGG_MAX_PX` around the window."""
    if whole:
        return micrograph.data, (0, 0)
    ny, nx = micrograph.data.shape
    cy, cx = (int(v) for v in result.grid.centers[detail.index])
    half = BRAGG_MAX_PX // 2
    y0 = int(np.clip(cy - half, 0, max(ny - BRAGG_MAX_PX, 0)))
    x0 = int(np.clip(cx - half, 0, max(nx - BRAGG_MAX_PX, 0)))
    return micrograph.data[y0 : y0 + BRAGG_MAX_PX, x0 : x0 + BRAGG_MAX_PX], (y0, x0)


def _bragg_outputs(
    result: Any,
    detail: WindowDetail,
    filtered: np.ndarray,
    amplitude: np.ndarray,
    what: str,
    origin: tuple[int, int],
    radius: float,
    *,
    key: str,
    stale: bool,
) -> None:
    """The filtered image and the fringe amplitude, their caption and downloads."""
    from hrtem_core import figures
    from ui.results_ui import figure_downloads

    p = float(result.pixel_size_nm[1])
    a, b = st.columns(2)
    a.plotly_chart(
        figures.image_figure(filtered, pixel_size_nm=p, title=f"Bragg-filtered: {what}"),
        key=f"{key}_bragg_img",
    )
    b.plotly_chart(
        figures.image_figure(
            amplitude, pixel_size_nm=p, title="Local fringe amplitude", colorscale="Viridis"
        ),
        key=f"{key}_bragg_amp",
    )
    st.caption(
        f"Region origin (y, x) = {origin} px; mask: Gaussian discs of radius {radius:g} 1/nm at "
        "the chosen g and -g, inverse FFT (hrtem_core.measure.bragg_filter)."
    )
    stem = f"window{detail.index}_bragg"
    figure_downloads(
        lambda: figures.image_mpl(filtered, pixel_size_nm=p, title=f"Bragg-filtered: {what}"),
        stem,
        key=f"{key}_bragg_dl",
        stale=stale,
    )
    st.download_button(
        "Filtered image (32-bit TIFF, calibrated)" + (" (stale)" if stale else ""),
        data=lambda: _tiff_bytes(filtered, p),
        file_name=f"{stem}.tif",
        mime="image/tiff",
        on_click="ignore",
        key=f"{key}_bragg_tif",
    )


@st.cache_data(max_entries=16, show_spinner="Bragg filtering ...")
def _bragg_cached(
    _key: tuple, _area: np.ndarray, _g: list, _pixel: tuple, _radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered image and local amplitude (cached by the request, ``_key``)."""
    del _key
    from hrtem_core.measure import bragg_filter

    filtered = bragg_filter(_area, _g, pixel_size_nm=_pixel, radius_nm_inv=_radius)
    amplitude = np.zeros(np.shape(_area))
    for g in _g:
        amplitude = np.maximum(
            amplitude,
            np.abs(
                bragg_filter(_area, [g], pixel_size_nm=_pixel, radius_nm_inv=_radius, friedel=False)
            ),
        )
    return filtered.astype(np.float32), amplitude.astype(np.float32)


def _tiff_bytes(image: np.ndarray, pixel_size_nm: float) -> bytes:
    import io

    import tifffile

    buf = io.BytesIO()
    res = 1.0 / float(pixel_size_nm)
    tifffile.imwrite(
        buf,
        np.asarray(image, dtype=np.float32),
        imagej=True,
        resolution=(res, res),
        metadata={"unit": "nm"},
    )
    return buf.getvalue()


def default_line(detail: WindowDetail) -> tuple[float, float, float, float]:
    """``(y0, x0, y1, x1)`` [window px]: through the centre, along g of the strongest pair."""
    w = detail.window.shape[0]
    c = (w - 1) / 2.0
    half = 0.4 * w
    if not detail.pairs:
        return (c, c - half, c, c + half)
    p = max(detail.pairs, key=lambda q: q.snr)
    a = math.radians(p.angle_deg)
    uy, ux = -math.sin(a), math.cos(a)
    return (c - half * uy, c - half * ux, c + half * uy, c + half * ux)


def _profile_tab(
    result: Any,
    detail: WindowDetail,
    labels: list[str],
    *,
    key: str,
    cards: Any,
    stale: bool,
) -> None:
    from hrtem_core import figures, measure
    from hrtem_core.errors import HRTEMError
    from ui.results_ui import figure_downloads

    w = detail.window.shape[0]
    p = float(result.pixel_size_nm[1])
    y0d, x0d, y1d, x1d = default_line(detail)
    st.caption(
        "A line on the window (px from its top-left corner); by default through the centre "
        "along the strongest spot's g, across its fringes."
    )
    cols = st.columns(5)
    vals = []
    for col, (name, default) in zip(
        cols[:4], (("x start", x0d), ("y start", y0d), ("x end", x1d), ("y end", y1d)), strict=True
    ):
        vals.append(
            col.number_input(
                f"{name} (px)",
                min_value=0.0,
                max_value=float(w - 1),
                value=float(np.clip(round(default, 1), 0, w - 1)),
                step=1.0,
                key=f"{key}_line_{name.replace(' ', '_')}_{detail.index}",
            )
        )
    width = cols[4].number_input(
        "width (px)", min_value=1, max_value=32, value=5, key=f"{key}_line_width"
    )
    x0, y0, x1, y1 = (float(v) for v in vals)
    a, b = st.columns(2)
    a.plotly_chart(window_figure(detail, p, line=((y0, x0), (y1, x1))), key=f"{key}_line_img")
    try:
        dist, values = measure.line_profile(
            detail.window, (y0, x0), (y1, x1), width_px=int(width), step_px=0.5
        )
        period = measure.fringe_period_nm(values, step_nm=0.5 * p)
    except HRTEMError as exc:
        b.info(exc.message)
        return
    prof = go.Figure(go.Scatter(x=dist * p, y=values, mode="lines", line={"color": "#1f4e79"}))
    prof.update_layout(
        title={"text": f"Fringe period {period:.4f} nm", "font": {"size": 13}},
        xaxis_title="distance along the line (nm)",
        yaxis_title="intensity",
        height=380,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        template="plotly_white",
    )
    b.plotly_chart(prof, key=f"{key}_line_profile")
    near = measure.nearest_planes(period, _all_planes(cards, None), n=3)
    b.metric("Fringe period", f"{period:.4f} nm")
    if near:
        b.caption(
            "Nearest card planes: "
            + "; ".join(f"{lab} {dc:.4f} nm ({100 * r:+.1f} %)" for lab, dc, r in near)
        )
    figure_downloads(
        lambda: figures.line_profile_mpl(
            dist * p, values, period_nm=period, title=f"{result.name}, window #{detail.index}"
        ),
        f"window{detail.index}_profile",
        key=f"{key}_line_dl",
        stale=stale,
    )
