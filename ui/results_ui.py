"""The result of one analysis on the Analyze page: map, window panel, FFT tools, tables, downloads."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from ui import window_view
from ui.common import get_model

#: Largest side of the image under the plane map in the browser [px] (block-averaged; the
#: analysis itself always uses the full image).
MAP_DISPLAY_PX = 512
MAP_HEIGHT_PX = 640
FFT_HEIGHT_PX = 620
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MIME = {"png": "image/png", "svg": "image/svg+xml"}


def _bytes_via(write: Callable[[Path], Any], name: str) -> Callable[[], bytes]:
    """A deferred download: ``write(path)`` into a private temporary folder, return the bytes."""

    def make() -> bytes:
        with tempfile.TemporaryDirectory(prefix="hrtem-dl-") as tmp:
            path = Path(tmp) / name
            write(path)
            return path.read_bytes()

    return make


def figure_downloads(
    make_figure: Callable[[], Any], stem: str, *, key: str, stale: bool = False
) -> None:
    """Two buttons, PNG (300 dpi) and SVG, of a matplotlib figure built only when clicked."""
    from hrtem_core import figures

    mark = " (stale)" if stale else ""
    cols = st.columns(2)
    for col, fmt in zip(cols, ("png", "svg"), strict=True):
        col.download_button(
            f"{fmt.upper()}{mark}",
            data=lambda fmt=fmt: figures.figure_bytes(make_figure(), fmt),
            file_name=f"{stem}.{fmt}",
            mime=MIME[fmt],
            on_click="ignore",
            key=f"{key}_{fmt}",
            help="Publication size (180 mm wide maps, 90 mm panels), with the nm scale bar.",
        )


def default_window(result: Any) -> int:
    """The window to show first: the most convincing indexed one.

    Ranked by: a zone axis was found (two or more planes indexed together), then the number of
    planes the match explains, then the score; without any match, the first crystalline window.
    """
    w = result.windows
    if len(w) == 0:
        return 0
    if (w["score"] > 0).any():
        has_zone = (w["zone_axis"].astype(str).str.len() > 0).to_numpy()
        explained = pd.to_numeric(w["n_explained"], errors="coerce").fillna(0).to_numpy()
        score = pd.to_numeric(w["score"], errors="coerce").fillna(0).to_numpy()
        order = np.lexsort((-np.arange(len(w)), score, explained, has_zone))
        return int(order[-1])
    cryst = np.flatnonzero(w["crystalline"].to_numpy() > 0)
    return int(cryst[0]) if cryst.size else 0


def _selected_from_event(event: Any, result: Any) -> int | None:
    """Window index of the first point clicked/selected on the plane map, if any."""
    try:
        points = event.selection.points  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError):
        return None
    for pt in points or []:
        custom = pt.get("customdata")
        if isinstance(custom, list | tuple) and custom:
            custom = custom[0]
        if isinstance(custom, int | float) and not isinstance(custom, bool):
            idx = int(custom)
            if 0 <= idx < result.grid.n_windows:
                return idx
        if "x" in pt and "y" in pt:
            try:
                return window_view.nearest_window(result.grid, float(pt["x"]), float(pt["y"]))
            except (TypeError, ValueError):
                continue
    return None


def fft_points_from_event(event: Any) -> list[tuple[float, float]]:
    """``(gy, gx)`` [1/nm] of the point clicked on the power spectrum (x = gx, y = gy).

    One click can select a point of several overlapping traces (the pick grid and a spot
    marker): only the first is taken, so one click is one point.
    """
    try:
        points = event.selection.points  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError):
        return []
    for pt in points or []:
        try:
            return [(float(pt["y"]), float(pt["x"]))]
        except (KeyError, TypeError, ValueError):
            continue
    return []


def _cell(row: Any, name: str) -> str:
    value = row.get(name, "") if hasattr(row, "get") else getattr(row, name, "")
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def window_facts(row: Any, *, four_index: bool = False) -> pd.DataFrame:
    """One row per plane of a window: d, direction, (hkl), residual (columns found by name)."""
    from hrtem_core.figures import relabel

    def split(name: str) -> list[str]:
        text = _cell(row, name)
        return text.split(";") if text else []

    d = split("spacings_nm")
    rows = []
    hkl = split("hkl")
    fam = split("families")
    res = split("spacing_residuals_pct")
    direction = split("directions_deg")
    snr = split("snr")
    for i, di in enumerate(d):
        entry = {"d (nm)": di}
        if i < len(direction):
            entry["direction (°)"] = direction[i]
        if i < len(hkl):
            entry["(hkl)"] = relabel(hkl[i], four_index=four_index)
        if i < len(fam):
            entry["family"] = relabel(fam[i], four_index=four_index)
        if i < len(res):
            entry["Δd/d (%)"] = res[i]
        if i < len(snr):
            entry["SNR"] = snr[i]
        rows.append(entry)
    return pd.DataFrame(rows)


def _phase_of(cards: Any, card_id: str) -> Any | None:
    if cards is None or not card_id:
        return None
    for p in getattr(cards, "phases", ()):
        if p.card_id == card_id:
            return p
    return None


def show_result(
    result: Any,
    micrograph: Any,
    *,
    key: str,
    cards: Any = None,
    stale: bool = False,
) -> None:
    """Everything below the progress bar of the Analyze page.

    ``stale``: the result was computed with other settings than the ones shown (the page shows
    the banner; here the downloads are marked).
    """
    _metrics(result.summary)
    card_ids = [p.card_id for p in getattr(cards, "phases", ())] or None
    map_col, detail_col = st.columns([3, 2], gap="medium")
    with map_col:
        event = _plane_map(result, micrograph, key=key, cards=cards, card_ids=card_ids)
    _follow_click(event, result, key=key)
    with detail_col:
        index, row, phase, hexagonal = _window_panel(result, key=key, cards=cards)
    detail = window_detail(result, micrograph.data, index)
    window_view.show_tools(
        result,
        micrograph,
        detail,
        row,
        key=key,
        cards=cards,
        phase=phase,
        hexagonal=hexagonal,
        stale=stale,
    )
    _tables(result, key=key)
    _downloads(result, micrograph.data, key=key, cards=cards, card_ids=card_ids, stale=stale)


def _metrics(s: dict) -> None:
    """The summary in five numbers (windows, crystallinity, area, indexed, time)."""
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Windows", f"{s['n_windows']} ({s['n_rows']} x {s['n_cols']})")
    m2.metric(
        "Crystallinity", f"{100 * s['crystallinity']:.1f} %", help="windows with ≥ 1 Friedel pair"
    )
    m3.metric(
        "Crystalline area",
        f"{100 * s['crystalline_area_fraction']:.1f} %",
        help="union of the crystalline windows / image area",
    )
    m4.metric(
        "Indexed (ambiguous)",
        f"{s['n_indexed']} ({s['n_ambiguous']})",
        help="windows indexed to one phase; in brackets: several phases fit equally well",
    )
    m5.metric("Time", f"{s['elapsed_s']:.1f} s", help=f"detector: {s['detector']}")


def _plane_map(result: Any, micrograph: Any, *, key: str, cards: Any, card_ids: Any) -> Any:
    """The crystal-plane map (clickable); returns its selection event."""
    from hrtem_core import figures

    st.subheader("Crystal-plane map")
    fig = figures.plane_map_figure(
        result,
        micrograph.data,
        max_display_px=MAP_DISPLAY_PX,
        hover="compact",
        cards=cards,
        card_ids=card_ids,
    )
    fig.update_layout(
        height=MAP_HEIGHT_PX,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        title={"font": {"size": 13}, "y": 0.98, "yanchor": "top"},
        legend={"font": {"size": 11}, "tracegroupgap": 6},
    )
    event = st.plotly_chart(
        fig,
        key=f"{key}_map",
        on_select="rerun",
        selection_mode=("points",),
        config={"displaylogo": False},
    )
    st.caption(
        "Hover a window for its phase, (hkl), d and score; click it for everything else. "
        "Colours: one hue per phase (from its card id), its plane families in shades; greys "
        "for windows without a phase."
    )
    return event


def _follow_click(event: Any, result: Any, *, key: str) -> None:
    """A new click on the map moves the window selector (applied before it is drawn)."""
    sel_key = f"{key}_selected_window"
    clicked = _selected_from_event(event, result)
    last_key = f"{key}_last_click"
    if clicked is not None and st.session_state.get(last_key) != (result.name, clicked):
        st.session_state[last_key] = (result.name, clicked)
        st.session_state[sel_key] = clicked
    current = st.session_state.get(sel_key)
    if not isinstance(current, int) or not 0 <= current < result.grid.n_windows:
        st.session_state[sel_key] = default_window(result)


def _window_panel(result: Any, *, key: str, cards: Any) -> tuple[int, Any, Any, bool]:
    """The window selector and the facts of the chosen window.

    Returns
    -------
    (index, row, phase, hexagonal)
        Window index, its windows-table row, its card phase (or None), whether hexagonal.
    """
    from hrtem_core import figures

    sel_key = f"{key}_selected_window"
    windows = result.windows
    labels = [
        f"#{int(r['window'])} (row {int(r['row'])}, col {int(r['col'])})"
        + (f" · {r['phase_name']} {{{r['plane_family']}}}" if _cell(r, "phase_name") else "")
        + ("" if int(r["n_pairs"]) else " · no spots")
        for r in windows.to_dict("records")
    ]
    st.subheader("The clicked window")
    index = int(
        st.selectbox(
            "Window",
            list(range(result.grid.n_windows)),
            format_func=lambda i: labels[i],
            key=sel_key,
        )
    )
    row = windows.iloc[index]
    phase = _phase_of(cards, _cell(row, "phase_card"))
    hexagonal = phase is not None and figures.is_hexagonal(phase)
    if _cell(row, "phase_name"):
        zone = _cell(row, "zone_axis")
        zone_txt = (
            f", zone axis [{figures.relabel(zone, four_index=hexagonal, direction=True)}]"
            if zone
            else ""
        )
        st.markdown(
            f"**{row['phase_name']}** ({row['phase_card']}){zone_txt}, "
            f"score {float(row['score']):.2f}, status *{row['status']}*"
        )
    else:
        st.markdown(f"Status *{row['status']}* (no phase named)")
    facts = window_facts(row, four_index=hexagonal)
    if len(facts):
        st.dataframe(facts, hide_index=True, width="stretch")
    if _cell(row, "angles_deg"):
        st.caption(f"Angles between the planes: {row['angles_deg'].replace(';', ', ')} °")
    if _cell(row, "alternatives"):
        st.caption("Alternatives / candidates: " + _cell(row, "alternatives"))
    with st.expander("All columns of this window"):
        st.json({c: _jsonable(row[c]) for c in windows.columns}, expanded=True)

    return index, row, phase, hexagonal


def _tables(result: Any, *, key: str) -> None:
    """The phases, plane families and windows tables."""
    st.subheader("Phases")
    if result.phases is not None and len(result.phases):
        st.dataframe(
            _percent(result.phases, ("fraction", "area_fraction")), hide_index=True, width="stretch"
        )
    else:
        st.info("No window was indexed with the chosen phases.")
    if result.families is not None and len(result.families):
        with st.expander("Plane families"):
            st.dataframe(
                _percent(result.families, ("fraction", "area_fraction")),
                hide_index=True,
                width="stretch",
            )

    st.subheader("Windows")
    st.dataframe(result.windows, hide_index=True, width="stretch", height=300, key=f"{key}_table")


def _downloads(
    result: Any, image: Any, *, key: str, cards: Any, card_ids: Any, stale: bool
) -> None:
    """Deferred downloads: windows CSV, all tables XLSX, summary JSON, the map (HTML/PNG/SVG)."""
    from hrtem_core import export, figures

    stem = Path(result.name).stem or "result"
    mark = " (stale)" if stale else ""
    if stale:
        st.caption("The downloads are the results of the previous settings (marked stale).")
    d1, d2, d3, d4, d5, d6 = st.columns(6)
    d1.download_button(
        f"Windows (CSV){mark}",
        data=_bytes_via(lambda p: export.write_csv(result.windows, p), "windows.csv"),
        file_name=f"{stem}_windows.csv",
        mime="text/csv",
        on_click="ignore",
        key=f"{key}_dl_csv",
    )
    d2.download_button(
        f"All tables (XLSX){mark}",
        data=_bytes_via(lambda p: export.write_xlsx(export.result_sheets(result), p), "r.xlsx"),
        file_name=f"{stem}_results.xlsx",
        mime=XLSX_MIME,
        on_click="ignore",
        key=f"{key}_dl_xlsx",
    )
    d3.download_button(
        f"Summary (JSON){mark}",
        data=_bytes_via(lambda p: export.write_json(result.summary, p), "summary.json"),
        file_name=f"{stem}_summary.json",
        mime="application/json",
        on_click="ignore",
        key=f"{key}_dl_json",
    )

    def full_map() -> Any:
        return figures.plane_map_figure(result, image, cards=cards, card_ids=card_ids)

    d4.download_button(
        f"Map (HTML){mark}",
        data=_bytes_via(lambda p: figures.write_html(full_map(), p), "plane_map.html"),
        file_name=f"{stem}_plane_map.html",
        mime="text/html",
        on_click="ignore",
        key=f"{key}_dl_html",
    )

    def static_map() -> Any:
        return figures.plane_map_mpl(result, image, cards=cards, card_ids=card_ids)

    d5.download_button(
        f"Map (PNG){mark}",
        data=lambda: figures.figure_bytes(static_map(), "png"),
        file_name=f"{stem}_plane_map.png",
        mime="image/png",
        on_click="ignore",
        key=f"{key}_dl_png",
        help="180 mm wide at 300 dpi, with the nm scale bar and the legend grouped by phase.",
    )
    d6.download_button(
        f"Map (SVG){mark}",
        data=lambda: figures.figure_bytes(static_map(), "svg"),
        file_name=f"{stem}_plane_map.svg",
        mime="image/svg+xml",
        on_click="ignore",
        key=f"{key}_dl_svg",
    )


def window_detail(result: Any, image: np.ndarray, index: int) -> Any:
    """:func:`ui.window_view.window_detail` of one window, with the U-Net where it is needed.

    For the precomputed result of the bundled example (:mod:`ui.example_cache`) the window's
    U-Net mask is the stored one (computed by the same U-Net on the same band): neither torch
    nor the model is loaded for the first view.
    """
    from dataclasses import replace

    from ui import example_cache

    unet = result.params.detector == "unet"
    stored = example_cache.precomputed_for(result) if unet else None
    if stored is not None and 0 <= int(index) < len(stored.masks):
        detail = window_view.window_detail(result, image, index, model=None)
        return replace(detail, mask=np.asarray(stored.masks[int(index)], dtype=bool))
    model = get_model() if unet else None
    return window_view.window_detail(result, image, index, model=model)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _percent(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """A copy with fraction columns in percent (display only)."""
    out = frame.copy()
    for c in columns:
        if c in out:
            out[c] = (100.0 * out[c].astype(float)).round(2)
            out = out.rename(columns={c: f"{c} (%)"})
    return out
