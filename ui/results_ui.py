"""The result of one analysis on the Analyze page: map, window detail, tables, downloads."""

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
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _bytes_via(write: Callable[[Path], Any], name: str) -> Callable[[], bytes]:
    """A deferred download: ``write(path)`` into a private temporary folder, return the bytes."""

    def make() -> bytes:
        with tempfile.TemporaryDirectory(prefix="hrtem-dl-") as tmp:
            path = Path(tmp) / name
            write(path)
            return path.read_bytes()

    return make


def pair_labels(result: Any, index: int) -> list[str]:
    """Per detected pair of window ``index``: ``(h k l)`` of the best phase, '' if unexplained."""
    pairs = result.pairs[index]
    if not result.index or index >= len(result.index):
        return [""] * len(pairs)
    wi = result.index[index]
    best = wi.best
    if best is None or not wi.planes:
        return [""] * len(pairs)
    labels = []
    for p in pairs:
        # The plane measured from this pair: nearest in spacing and direction (mod 180).
        cost = [
            abs(q.spacing_nm - p.spacing_nm) / max(p.spacing_nm, 1e-9)
            + abs(((q.angle_deg - p.angle_deg + 90.0) % 180.0) - 90.0) / 180.0
            for q in wi.planes
        ]
        k = int(np.argmin(cost))
        hkl = best.hkl[k] if k < len(best.hkl) else None
        if hkl is None and k < len(best.families):
            hkl = best.families[k]
        labels.append("" if hkl is None else "(" + " ".join(str(int(v)) for v in hkl) + ")")
    return labels


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
        if isinstance(custom, list | tuple) and custom and isinstance(custom[0], int | float):
            idx = int(custom[0])
            if 0 <= idx < result.grid.n_windows:
                return idx
        if "x" in pt and "y" in pt:
            try:
                return window_view.nearest_window(result.grid, float(pt["x"]), float(pt["y"]))
            except (TypeError, ValueError):
                continue
    return None


def show_result(result: Any, micrograph: Any, *, key: str) -> None:
    """Everything below the progress bar of the Analyze page."""
    from hrtem_core import export, figures

    s = result.summary
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

    map_col, detail_col = st.columns([3, 2], gap="medium")
    with map_col:
        st.subheader("Crystal-plane map")
        fig = figures.plane_map_figure(result, micrograph.data, max_display_px=MAP_DISPLAY_PX)
        fig.update_layout(
            height=MAP_HEIGHT_PX,
            margin={"l": 10, "r": 10, "t": 70, "b": 10},
            title={"font": {"size": 13}, "y": 0.98, "yanchor": "top"},
            legend={"orientation": "h", "yanchor": "top", "y": -0.08, "x": 0.0},
        )
        event = st.plotly_chart(
            fig,
            key=f"{key}_map",
            on_select="rerun",
            selection_mode=("points",),
            config={"displaylogo": False},
        )
        st.caption("Click a window on the map (or pick it on the right) to see its FFT and spots.")

    # A new click on the map moves the window selector (applied before the selector is drawn).
    sel_key = f"{key}_selected_window"
    clicked = _selected_from_event(event, result)
    last_key = f"{key}_last_click"
    if clicked is not None and st.session_state.get(last_key) != (result.name, clicked):
        st.session_state[last_key] = (result.name, clicked)
        st.session_state[sel_key] = clicked
    current = st.session_state.get(sel_key)
    if not isinstance(current, int) or not 0 <= current < result.grid.n_windows:
        st.session_state[sel_key] = default_window(result)

    windows = result.windows
    labels = [
        f"#{int(r.window)} (row {int(r.row)}, col {int(r.col)})"
        + (f" · {r.phase_name} {{{r.plane_family}}}" if r.phase_name else "")
        + ("" if r.n_pairs else " · no spots")
        for r in windows.itertuples(index=False)
    ]
    with detail_col:
        st.subheader("One window")
        index = st.selectbox(
            "Window",
            list(range(result.grid.n_windows)),
            format_func=lambda i: labels[i],
            key=sel_key,
        )
        model = get_model() if result.params.detector == "unet" else None
        detail = window_view.window_detail(result, micrograph.data, int(index), model=model)
        spot_names = pair_labels(result, int(index))
        f1, f2 = st.columns(2)
        f1.plotly_chart(window_view.fft_figure(detail, spot_names), key=f"{key}_fft")
        f2.plotly_chart(window_view.mask_figure(detail), key=f"{key}_mask")
        row = windows.iloc[int(index)]
        if row["phase_name"]:
            zone = f", zone axis [{row['zone_axis']}]" if row["zone_axis"] else ""
            st.markdown(
                f"**{row['phase_name']}** ({row['phase_card']}){zone}, score {row['score']:.2f}, "
                f"status *{row['status']}*"
            )
        else:
            st.markdown(f"Status *{row['status']}*")
        if row["angles_deg"]:
            st.caption(f"Angles between the planes: {row['angles_deg'].replace(';', ', ')} °")
        if row["alternatives"]:
            st.caption(f"Alternatives: {row['alternatives']}")
        table = window_view.pairs_table(detail, spot_names)
        if len(table):
            st.dataframe(table, hide_index=True, width="stretch")
        with st.expander("The window itself"):
            st.plotly_chart(window_view.window_figure(detail), key=f"{key}_window_img")

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
    st.dataframe(windows, hide_index=True, width="stretch", height=300, key=f"{key}_table")

    stem = Path(result.name).stem or "result"
    image = micrograph.data
    d1, d2, d3, d4, d5 = st.columns(5)
    d1.download_button(
        "Windows (CSV)",
        data=_bytes_via(lambda p: export.write_csv(result.windows, p), "windows.csv"),
        file_name=f"{stem}_windows.csv",
        mime="text/csv",
        on_click="ignore",
        key=f"{key}_dl_csv",
    )
    d2.download_button(
        "All tables (XLSX)",
        data=_bytes_via(lambda p: export.write_xlsx(export.result_sheets(result), p), "r.xlsx"),
        file_name=f"{stem}_results.xlsx",
        mime=XLSX_MIME,
        on_click="ignore",
        key=f"{key}_dl_xlsx",
    )
    d3.download_button(
        "Summary (JSON)",
        data=_bytes_via(lambda p: export.write_json(result.summary, p), "summary.json"),
        file_name=f"{stem}_summary.json",
        mime="application/json",
        on_click="ignore",
        key=f"{key}_dl_json",
    )
    d4.download_button(
        "Map (HTML)",
        data=_bytes_via(lambda p: figures.write_html(fig, p), "plane_map.html"),
        file_name=f"{stem}_plane_map.html",
        mime="text/html",
        on_click="ignore",
        key=f"{key}_dl_html",
    )
    d5.download_button(
        "Map (PNG)",
        data=_bytes_via(lambda p: figures.plane_map_png(result, image, p), "plane_map.png"),
        file_name=f"{stem}_plane_map.png",
        mime="image/png",
        on_click="ignore",
        key=f"{key}_dl_png",
    )


def _percent(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """A copy with fraction columns in percent (display only)."""
    out = frame.copy()
    for c in columns:
        if c in out:
            out[c] = (100.0 * out[c].astype(float)).round(2)
            out = out.rename(columns={c: f"{c} (%)"})
    return out
