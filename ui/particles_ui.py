"""Dashboard: particles as objects and the defocus read from the image (issue 22).

Render functions called from ``pages/analyze.py`` (:func:`show_particles`) and
``pages/series.py`` (:func:`show_series_particles`). The computations are
:func:`hrtem_core.particles.image_particles` (particles + Thon-ring defocus); the figures are
built here (plotly) from its result. Results are cached per analysis result in the session.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

_CACHE_KEY = "_particles_ui_cache"
_CACHE_MAX = 16


def _cached_particles(result: Any, micrograph: Any) -> Any:
    """:func:`image_particles` of (result, image), cached in the session by object identity."""
    from hrtem_core.particles import image_particles

    cache = st.session_state.setdefault(_CACHE_KEY, {})
    k = (id(result), id(micrograph.data), result.name)
    hit = cache.get(k)
    if hit is not None and hit[0] is result:
        return hit[1]
    from ui.common import pattern_inputs

    extras = image_particles(
        result, micrograph.data, metadata=micrograph.metadata, **pattern_inputs(result)
    )
    if len(cache) >= _CACHE_MAX:
        cache.pop(next(iter(cache)))
    cache[k] = (result, extras)
    return extras


def remember_particles(result: Any, micrograph: Any, extras: Any) -> None:
    """Put particles computed beforehand (the precomputed bundled example) in the session cache."""
    cache = st.session_state.setdefault(_CACHE_KEY, {})
    cache[(id(result), id(micrograph.data), result.name)] = (result, extras)


def _phase_colors(names: list[str]) -> dict[str, str]:
    import plotly.express as px

    palette = px.colors.qualitative.Plotly
    uniq = sorted({n or "no phase" for n in names})
    return {n: palette[i % len(palette)] for i, n in enumerate(uniq)}


def outline_figure(extras: Any, image: np.ndarray, *, max_display_px: int = 1024):
    """The image with every particle's outline (plotly traces) and its id at the centroid."""
    import plotly.graph_objects as go

    from hrtem_core.figures import display_image

    small, step = display_image(np.asarray(image), max_display_px=max_display_px)
    lo, hi = np.percentile(small, [1, 99])
    fig = go.Figure(
        go.Heatmap(
            z=small,
            x0=(step - 1) / 2,
            dx=step,
            y0=(step - 1) / 2,
            dy=step,
            colorscale="gray",
            zmin=float(lo),
            zmax=float(hi),
            showscale=False,
            hoverinfo="skip",
        )
    )
    table = extras.table
    colors = _phase_colors(list(table["phase_name"]))
    outlines = extras.particles.outlines()
    for row in table.itertuples(index=False):
        color = colors[row.phase_name or "no phase"]
        for k, poly in enumerate(outlines.get(int(row.particle_id), [])):
            fig.add_trace(
                go.Scatter(
                    x=poly[:, 1],
                    y=poly[:, 0],
                    mode="lines",
                    line={"color": color, "width": 2},
                    name=f"#{row.particle_id} {row.phase_name or 'no phase'}",
                    legendgroup=str(row.particle_id),
                    showlegend=k == 0,
                    hoverinfo="name",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[row.x_px],
                y=[row.y_px],
                mode="text",
                text=[str(row.particle_id)],
                textfont={"color": color, "size": 14},
                showlegend=False,
                hovertext=(
                    f"#{row.particle_id}: {row.phase_name or 'no phase'} "
                    f"[{row.zone_axis}] d = {row.equivalent_diameter_nm:.2f} nm, {row.status}"
                ),
                hoverinfo="text",
            )
        )
    fig.update_yaxes(autorange="reversed", scaleanchor="x", title="y (px)")
    fig.update_xaxes(title="x (px)")
    fig.update_layout(title=f"{len(table)} particles", height=600)
    return fig


def size_histogram(table: pd.DataFrame, *, bin_nm: float = 1.0):
    """Histogram of equivalent diameters, stacked by phase (plotly)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if len(table):
        d = table["equivalent_diameter_nm"].astype(float)
        lo = math.floor(float(d.min()) / bin_nm) * bin_nm
        hi = math.ceil(float(d.max()) / bin_nm + 1e-9) * bin_nm + bin_nm
        colors = _phase_colors(list(table["phase_name"]))
        for name, grp in table.groupby(table["phase_name"].replace("", "no phase")):
            fig.add_trace(
                go.Histogram(
                    x=grp["equivalent_diameter_nm"],
                    name=str(name),
                    xbins={"start": lo, "end": hi, "size": bin_nm},
                    marker_color=colors[str(name)],
                )
            )
    fig.update_layout(
        barmode="stack",
        title="Particle sizes by phase",
        xaxis_title="equivalent diameter (nm, halo corrected)",
        yaxis_title="particles",
    )
    return fig


def crystallinity_figure(series_table: pd.DataFrame):
    """Per-particle crystallinity across defocus (plotly, one line per particle)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for pid, grp in series_table.groupby("particle_id"):
        g = grp.sort_values("defocus_nm")
        fig.add_trace(
            go.Scatter(
                x=g["defocus_nm"],
                y=g["crystallinity"],
                mode="lines+markers",
                name=f"particle {pid} ({g['x_px'].iloc[0]:.0f}, {g['y_px'].iloc[0]:.0f}) px",
            )
        )
    fig.update_layout(
        title="Per-particle crystallinity across defocus",
        xaxis_title="defocus (nm, negative = underfocus)",
        yaxis_title="crystalline windows on the particle",
        yaxis_range=[0, 1.05],
    )
    return fig


def _defocus_caption(extras: Any) -> str:
    est = extras.defocus
    if est is None:
        return "Defocus from the Thon rings: no estimate (image too small)."
    state = "reliable" if est.reliable else "not reliable (no clear Thon rings)"
    given = (
        "none given"
        if extras.defocus_given_nm is None
        else f"given {extras.defocus_given_nm:+.1f} nm"
    )
    return (
        f"Defocus from the Thon rings: **{est.defocus_nm:+.1f} +/- {est.uncertainty_nm:.1f} nm** "
        f"({state}; {given}; {est.voltage_kv:g} kV, Cs {est.cs_mm:g} mm, {est.n_tiles} tiles)."
    )


def show_particles(result: Any, micrograph: Any, *, key: str) -> None:
    """Particles of one analysed image: outlines, table, size histogram, defocus ring fit."""
    from hrtem_core.defocus import fit_quality_figure, ring_fit_figure

    st.subheader("Particles")
    extras = _cached_particles(result, micrograph)
    table = extras.table
    if extras.disagreement:
        st.warning(extras.disagreement)
    if len(table) == 0:
        st.info(
            "No particle: no group of crystalline windows with a clear lattice, and no lattice "
            "that a card names in windows twice as large."
        )
    else:
        c1, c2, c3 = st.columns(3)
        c1.metric("Particles", len(table))
        c2.metric("Median diameter", f"{float(table['equivalent_diameter_nm'].median()):.2f} nm")
        c3.metric("Twinned/polycrystalline", int((table["status"] != "single-crystal").sum()))
        st.plotly_chart(outline_figure(extras, micrograph.data), key=f"{key}_particle_map")
        st.dataframe(table, hide_index=True, width="stretch")
        if (table["phase_status"] == "ambiguous").any():
            st.caption(
                "A phase written 'a / b' is ambiguous: neither the particle's windows, pooled, nor "
                "its whole diffractogram tell these phases apart (near-twin cells or projection "
                "twins, within the calibration uncertainty); phase_candidates gives each one's "
                "pooled evidence (-log10 K), pattern_phase what the diffractogram lists."
            )
        st.plotly_chart(size_histogram(table), key=f"{key}_particle_sizes")
        st.caption(
            "Sizes come from each strong reflection's own fringe region, corrected for its "
            "delocalisation halo R = |lambda df g + Cs lambda^3 g^3| (the SNR-weighted median; "
            "the raw outline's size is equivalent_diameter_raw_nm). outline_from: what drew "
            "the outline (the windows, the particle's diffractogram, or windows twice as large "
            "for a particle no window region gave)."
        )
        from hrtem_core import export
        from ui.results_ui import _bytes_via

        # The CLI's writer: text cells that start like a formula (a card's phase name) escaped.
        st.download_button(
            "particles.csv",
            data=_bytes_via(lambda p: export.write_csv(table, p), "particles.csv"),
            file_name="particles.csv",
            mime="text/csv",
            on_click="ignore",
            key=f"{key}_particles_csv",
        )
    st.markdown(_defocus_caption(extras))
    if extras.defocus is not None:
        left, right = st.columns(2)
        with left:
            st.plotly_chart(ring_fit_figure(extras.defocus), key=f"{key}_ring_fit")
        with right:
            st.plotly_chart(fit_quality_figure(extras.defocus), key=f"{key}_fit_quality")


def show_series_particles(run: Any, *, key: str) -> None:
    """Per-particle crystallinity across defocus and each image's particle count, from the series
    engine's :class:`hrtem_core.analysis.series.SeriesRun` (``run.particles``, each image's
    particles). The defocus estimates and their warnings are shown with the defocus table
    (:func:`ui.series_ui.show_defocus`)."""
    st.subheader("Particles across defocus")
    counts = [
        {
            "file": i.result.name,
            "defocus_nm": i.result.defocus_nm,
            "particles": 0 if i.particles is None else len(i.particles.table),
        }
        for i in run.images
    ]
    st.dataframe(pd.DataFrame(counts), hide_index=True, width="stretch", key=f"{key}_counts")
    tab = run.particles
    if tab is not None and len(tab):
        # A light line chart (one line per particle; the plotly version is crystallinity_figure).
        wide = tab.pivot_table(
            index="defocus_nm", columns="particle_id", values="crystallinity", aggfunc="mean"
        )
        wide.columns = [f"particle {c}" for c in wide.columns]
        st.caption(
            "Per-particle crystallinity (crystalline windows on the particle) vs defocus (nm)"
        )
        st.line_chart(wide, x_label="defocus (nm)", y_label="crystalline fraction")
    else:
        st.info("No particle found in any image of the series.")


__all__ = [
    "crystallinity_figure",
    "outline_figure",
    "show_particles",
    "show_series_particles",
    "size_histogram",
]
