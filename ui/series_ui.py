"""Helpers of the Defocus-series page: bundled series, defocus table, per-image cached runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from hrtem_core.errors import AnalysisParameterError, CalibrationError, HRTEMError
from ui.common import (
    IMAGE_TYPES,
    Upload,
    analyze_cached,
    friendly_message,
    image_key,
    micrograph_from_upload,
    undistorted,
    upload_from_path,
)
from ui.results_ui import _bytes_via

#: Images per row in the side-by-side view.
MULTIPLES_PER_ROW = 4
#: Largest side of each small image in the browser [px].
MULTIPLE_DISPLAY_PX = 256


@dataclass(frozen=True)
class Item:
    """One file of the series: its upload, the image decoded with its own calibration (or why not)."""

    upload: Upload
    micrograph: Any | None
    error: str | None
    needs_pixel_size: bool = False


def bundled_series(folder: Path) -> list[Upload]:
    """The bundled focal series (server-side files), ordered by the defocus in their names."""
    from hrtem_core.io import defocus_from_name

    folder = Path(folder)
    files = [
        p for p in folder.glob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_TYPES
    ]
    if not files:
        raise HRTEMError(f"the bundled focal series is missing ({folder} holds no image)")

    def order(p: Path) -> tuple[float, str]:
        d = defocus_from_name(p.name)
        return (d if d is not None else math.inf, p.name)

    return [upload_from_path(p) for p in sorted(files, key=order)]


def decode_all(uploads: list[Upload]) -> list[Item]:
    """Decode every file with its metadata calibration (errors kept per file), by defocus."""
    items = []
    for u in uploads:
        try:
            items.append(Item(u, micrograph_from_upload(u), None))
        except CalibrationError as exc:
            items.append(Item(u, None, friendly_message(exc.message), needs_pixel_size=True))
        except HRTEMError as exc:
            items.append(Item(u, None, friendly_message(exc.message)))

    def order(it: Item) -> float:
        m = it.micrograph
        return math.inf if m is None or m.defocus_nm is None else float(m.defocus_nm)

    return sorted(items, key=order)  # stable: files without a defocus keep their order, last


def _signature(items: list[Item]) -> str:
    import hashlib

    h = hashlib.sha256("".join(it.upload.digest for it in items).encode())
    return h.hexdigest()[:16]


def defocus_editor(items: list[Item], *, key: str) -> pd.DataFrame:
    """Editable table: use, defocus [nm] and pixel size [nm/px] of each file (pre-filled)."""
    rows = []
    for it in items:
        m = it.micrograph
        rows.append(
            {
                "use": it.error is None or it.needs_pixel_size,
                "file": it.upload.name,
                "defocus_nm": None if m is None or m.defocus_nm is None else float(m.defocus_nm),
                "pixel_size_nm": None if m is None else float(m.pixel_size_nm[1]),
                "size_px": "" if m is None else "{1} x {0}".format(*m.data.shape),
                "from": "" if m is None else str(m.metadata.get("defocus_source", "")),
                "note": it.error or "; ".join(m.warnings if m is not None else ()),
            }
        )
    frame = pd.DataFrame(rows)
    for problem in (it for it in items if it.error and not it.needs_pixel_size):
        st.error(problem.error)
    st.markdown(
        "**Defocus of each image** (nm, negative = underfocus; pre-filled from the metadata or "
        "the file name, edit to correct). Give the pixel size of uncalibrated files."
    )
    return st.data_editor(
        frame,
        key=f"{key}_table_{_signature(items)}",
        hide_index=True,
        width="stretch",
        disabled=["file", "size_px", "from", "note"],
        column_config={
            "use": st.column_config.CheckboxColumn("use", help="Include this image"),
            "defocus_nm": st.column_config.NumberColumn(
                "defocus (nm)", format="%.2f", help="negative = underfocus"
            ),
            "pixel_size_nm": st.column_config.NumberColumn(
                "pixel size (nm/px)", format="%.6f", min_value=0.0
            ),
            "size_px": st.column_config.TextColumn("size (px)"),
            "from": st.column_config.TextColumn("defocus from"),
            "note": st.column_config.TextColumn("reader notes", width="large"),
        },
    )


def selection(
    items: list[Item], table: pd.DataFrame, *, stretch: tuple[float, float, float] | None = None
) -> tuple[list[tuple[Upload, Any]], list[float | None]]:
    """The chosen images (re-read with the user's pixel size where it was changed, and with the
    scan distortion ``stretch`` removed when one is given) and defocus.

    The defocus of an image is the table's value where the user typed one; None where the cell
    holds the file's own value or is empty: the series engine then takes the metadata, else the
    file name, else the Thon-ring estimate (labelled "estimated"), as the CLI does.

    Raises
    ------
    AnalysisParameterError
        No image chosen, a chosen image without a usable pixel size.
    """
    chosen: list[tuple[Upload, Any]] = []
    defocus: list[float | None] = []
    for it, row in zip(items, table.to_dict("records"), strict=True):
        if not bool(row.get("use")):
            continue
        name = it.upload.name
        df = _number(row.get("defocus_nm"))
        px = _number(row.get("pixel_size_nm"))
        if it.error is not None and not it.needs_pixel_size:
            raise AnalysisParameterError(f"{name}: {it.error} (untick 'use' to leave it out)")
        if px is None or px <= 0:
            raise AnalysisParameterError(
                f"{name}: give its pixel size in nm/px in the table (the file has none)"
            )
        m = it.micrograph
        own = None if m is None or m.defocus_nm is None else float(m.defocus_nm)
        if m is None or not math.isclose(px, float(m.pixel_size_nm[1]), rel_tol=1e-9):
            m = micrograph_from_upload(it.upload, pixel_size_nm=px)
        if stretch is not None:
            m = undistorted(it.upload, m, stretch)
        chosen.append((it.upload, m))
        defocus.append(None if df is None or (own is not None and df == own) else df)
    if not chosen:
        raise AnalysisParameterError("no image chosen: tick 'use' for at least one image")
    return chosen, defocus


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def run_series(
    chosen: list[tuple[Upload, Any]],
    defocus: list[float | None],
    params: Any,
    *,
    cards: Any,
    bar: Any = None,
    cancelled: Any = None,
) -> Any:
    """The series engine (:func:`hrtem_core.analysis.series.run_series`) over the chosen images.

    Each image's analysis is cached on its own (:func:`ui.common.analyze_cached`, with its own
    bar while it computes) and so is its Thon-ring estimate, so editing a defocus is instant.
    ``bar`` (a ``st.progress`` element, optional) counts the images. The defocus values,
    their sources ("given", "metadata", "file name", "estimated"), the warnings and the
    failures are the engine's, as in the CLI. Returns the :class:`SeriesRun`.

    Raises
    ------
    ui.run_state.AnalysisCancelled
        ``cancelled()`` turned true.
    """
    from hrtem_core.analysis.series import SeriesCancelled
    from hrtem_core.analysis.series import run_series as engine
    from ui.run_state import AnalysisCancelled

    uploads = {m.name: (u, m) for u, m in chosen}
    n = len(chosen)
    count = iter(range(n))

    def analyze(micrograph: Any, _progress: Any) -> Any:
        upload, original = uploads[micrograph.name]
        i = next(count, n - 1)
        if bar is not None:
            bar.progress(i / n, text=f"Image {i + 1} of {n}: {upload.name}")
        key = image_key(upload, original)
        label = f"{upload.name}: analysing ..."
        return analyze_cached(
            micrograph, key, params, cards=cards, label=label, cancelled=cancelled
        )

    try:
        run = engine(
            [m for _, m in chosen],
            defocus_nm=defocus,
            params=params,
            cards=cards,
            cancelled=cancelled,
            analyze=analyze,
            find_particles=_cached_particles,
        )
    except SeriesCancelled:
        raise AnalysisCancelled("the series was cancelled") from None
    if bar is not None:
        bar.progress(1.0, text=f"{n} images analysed")
    return run


_PARTICLES_KEY = "_series_particles_cache"
_PARTICLES_MAX = 32


def _cached_particles(result: Any, micrograph: Any) -> Any:
    """:func:`hrtem_core.particles.image_particles`, cached in the session on what it reads:
    the image, its windows and the defocus it is given."""
    import hashlib

    from hrtem_core.particles import image_particles
    from ui.common import pattern_inputs

    inputs = pattern_inputs(result)
    h = hashlib.sha256(memoryview(micrograph.data.tobytes()))
    h.update(pd.util.hash_pandas_object(result.windows.astype(str), index=False).values.tobytes())
    digest = getattr(inputs["cards"], "digest", None)
    key = (h.hexdigest(), result.name, result.defocus_nm, digest)
    cache = st.session_state.setdefault(_PARTICLES_KEY, {})
    if key not in cache:
        if len(cache) >= _PARTICLES_MAX:
            cache.pop(next(iter(cache)))
        cache[key] = image_particles(
            result, micrograph.data, metadata=micrograph.metadata, **inputs
        )
    return cache[key]


def show_defocus(run: Any) -> None:
    """Each image's defocus, where it came from and the estimate; the engine's warnings and
    failures (the same ones the CLI prints)."""
    for name, message in run.failures:
        st.error(f"{name}: {message}")
    for name, warning in run.warnings:
        st.warning(f"{name}: {warning}")
    table = run.defocus_table()
    if len(table):
        with st.expander("Defocus of each image (given, metadata, file name or estimated)"):
            st.dataframe(table, hide_index=True, width="stretch")


def focus_note(series: Any) -> str | None:
    """How the best focus was chosen when several images tie at the maximum crystallinity."""
    from hrtem_core.figures import focus_ties

    ties = focus_ties(series.profile)
    if len(ties) < 2 or series.best_focus_nm is None:
        return None
    top = float(series.profile["crystallinity"].max())
    listed = ", ".join(f"{t:+g}" for t in ties)
    return (
        f"{len(ties)} images tie at the maximum crystallinity ({100 * top:.1f} %): {listed} nm. "
        f"The best focus shown, {series.best_focus_nm:+g} nm, is the tie with the largest "
        "crystalline area fraction, then the smallest |defocus|; the focus lies in the range "
        f"{ties[0]:+g} to {ties[-1]:+g} nm."
    )


def show_series(
    series: Any,
    chosen: list[tuple[Upload, Any]],
    *,
    key: str,
    cards: Any = None,
    stale: bool = False,
) -> None:
    """Profile, phase fractions, small multiples with overlays, table and downloads."""
    from hrtem_core import figures

    _focus_metrics(series)
    left, right = st.columns(2)
    profile_fig = figures.profile_figure(series)
    with left:
        st.plotly_chart(profile_fig, key=f"{key}_profile")
    with right:
        fractions = figures.phase_fraction_figure(
            series, card_ids=[p.card_id for p in getattr(cards, "phases", ())] or None
        )
        fractions.update_layout(
            title={"text": "Phase fractions vs defocus (best match per window)"}
        )
        st.plotly_chart(fractions, key=f"{key}_fractions")
    st.subheader("Images side by side")
    _small_multiples(series, chosen, key=key, cards=cards)
    st.subheader("Profile")
    st.dataframe(series.profile, hide_index=True, width="stretch")
    _downloads(series, profile_fig, key=key, mark=" (stale)" if stale else "")


def _focus_metrics(series: Any) -> None:
    """Number of images, best focus (with the tie note) and the maximum crystallinity."""
    prof = series.profile
    c1, c2, c3 = st.columns(3)
    c1.metric("Images", len(series.results))
    note = focus_note(series)
    c2.metric(
        "Best focus",
        "-" if series.best_focus_nm is None else f"{series.best_focus_nm:+.1f} nm",
        help="Defocus of maximum crystallinity"
        + (" (ties: largest area fraction, then smallest |defocus|)." if note else "."),
    )
    c3.metric("Max crystallinity", f"{100 * float(prof['crystallinity'].max()):.1f} %")
    if note:
        st.info(note, icon=":material/equal:")


def _small_multiples(
    series: Any, chosen: list[tuple[Upload, Any]], *, key: str, cards: Any
) -> None:
    """One small plane map per image, one colour per phase {family} across the series."""
    from hrtem_core import figures

    results = list(series.results)
    by_name = {m.name: m for _, m in chosen}
    card_ids = [p.card_id for p in getattr(cards, "phases", ())] or None
    colors = figures.category_colors([r.windows for r in results], card_ids=card_ids, cards=cards)
    st.markdown(legend_html(results, colors, cards=cards), unsafe_allow_html=True)
    for start in range(0, len(results), MULTIPLES_PER_ROW):
        cols = st.columns(MULTIPLES_PER_ROW)
        for col, r in zip(cols, results[start : start + MULTIPLES_PER_ROW], strict=False):
            m = by_name.get(r.name)
            if m is None:
                continue
            fig = figures.plane_map_figure(
                r,
                m.data,
                max_display_px=MULTIPLE_DISPLAY_PX,
                hover="compact",
                colors=colors,
                cards=cards,
                card_ids=card_ids,
            )
            _compact(fig, f"{r.defocus_nm:+.1f} nm · {100 * r.summary['crystallinity']:.0f} %")
            col.plotly_chart(fig, key=f"{key}_multiple_{start}_{r.name}")


def _downloads(series: Any, profile_fig: Any, *, key: str, mark: str) -> None:
    """Profile CSV, series XLSX, profile plot as HTML, PNG and SVG."""
    from hrtem_core import export, figures

    prof = series.profile
    d1, d2, d3, d4, d5 = st.columns(5)
    d1.download_button(
        f"Profile (CSV){mark}",
        data=_bytes_via(lambda p: export.write_csv(prof, p), "profile.csv"),
        file_name="crystallinity_profile.csv",
        mime="text/csv",
        on_click="ignore",
        key=f"{key}_dl_csv",
    )
    d2.download_button(
        f"Profile and summary (XLSX){mark}",
        data=_series_xlsx(series),
        file_name="defocus_series.xlsx",
        mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        on_click="ignore",
        key=f"{key}_dl_xlsx",
    )
    d3.download_button(
        f"Profile plot (HTML){mark}",
        data=_bytes_via(lambda p: figures.write_html(profile_fig, p), "profile.html"),
        file_name="crystallinity_profile.html",
        mime="text/html",
        on_click="ignore",
        key=f"{key}_dl_html",
    )
    for col, fmt in ((d4, "png"), (d5, "svg")):
        col.download_button(
            f"Profile plot ({fmt.upper()}){mark}",
            data=lambda fmt=fmt: figures.figure_bytes(figures.profile_mpl(series), fmt),
            file_name=f"crystallinity_profile.{fmt}",
            mime="image/png" if fmt == "png" else "image/svg+xml",
            on_click="ignore",
            key=f"{key}_dl_{fmt}",
        )


def _series_xlsx(series: Any) -> Any:
    """Deferred download of ``series.xlsx`` as :func:`hrtem_core.export.export_series` writes it."""
    import tempfile

    def make() -> bytes:
        from hrtem_core import export

        with tempfile.TemporaryDirectory(prefix="hrtem-dl-") as tmp:
            paths = export.export_series(series, tmp, figures=False)
            return Path(paths["series_xlsx"]).read_bytes()

    return make


def legend_html(results: list[Any], colors: dict, *, cards: Any = None) -> str:
    """A legend grouped by phase: the phase (bold), then a coloured square per plane family;
    then the windows without a phase (neutral greys). Text is escaped."""
    import html

    from hrtem_core import figures

    groups: dict[str, list[tuple[str, str]]] = {}
    titles: dict[str, str] = {}
    for r in results:
        info = figures._categories(r, colors=colors, cards=cards, card_ids=None)
        for (group, _k), lab, col in zip(info["keys"], info["labels"], info["colors"], strict=True):
            short = lab if group == figures.STATUS_GROUP else lab.split("{", 1)[-1].rstrip("}")
            if group != figures.STATUS_GROUP:
                short = "{" + short + "}"
                titles[group] = f"{info['names'].get(group, group)} ({group})"
            else:
                titles[group] = "not indexed"
            if (short, col) not in groups.setdefault(group, []):
                groups[group].append((short, col))
        for k in info["empty_keys"]:
            titles["empty"] = "no lattice"
            if (k, figures.STATUS_COLORS[k]) not in groups.setdefault("empty", []):
                groups["empty"].append((k, figures.STATUS_COLORS[k]))

    def square(c: str) -> str:
        return (
            f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{c};'
            'opacity:0.85;margin-right:0.3em;vertical-align:-0.1em;border:1px solid #888"></span>'
        )

    order = sorted(g for g in groups if g not in (figures.STATUS_GROUP, "empty"))
    order += [g for g in (figures.STATUS_GROUP, "empty") if g in groups]
    parts = []
    for g in order:
        items = " ".join(
            f'<span style="white-space:nowrap;margin-right:0.9em">{square(c)}{html.escape(lab)}</span>'
            for lab, c in sorted(groups[g])
        )
        parts.append(
            f'<span style="margin-right:1.6em"><b>{html.escape(titles[g])}</b>: {items}</span>'
        )
    return '<div style="font-size:0.85em;line-height:1.9">' + " ".join(parts) + "</div>"


def _compact(fig: Any, title: str) -> None:
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=300,
        margin={"l": 5, "r": 5, "t": 32, "b": 5},
        showlegend=False,
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
