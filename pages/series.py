"""Defocus series: crystallinity and phase fractions vs defocus, images side by side."""

from __future__ import annotations

import streamlit as st

from ui import analyze_ui, particles_ui, run_state, series_ui
from ui.common import (
    FOCAL_SERIES_DIR,
    example_description,
    guard,
    image_key,
    load_card_db,
    page_guard,
    result_key,
    show_error,
)

page_guard()
st.title("Defocus series")
st.caption(
    "Several images of the same area at different defocus (nm, negative = underfocus). "
    "The crystallinity (fraction of windows with at least one Friedel pair) peaks near focus."
)

db = None
try:
    db = load_card_db()
except Exception as exc:
    show_error(exc)

params = None
with guard():
    # The same defaults as the Analyze page (window 256 px, stride 128 px).
    params = analyze_ui.sidebar_params(db, prefix="series")

source = st.radio(
    "Images",
    ["Bundled focal series", "Upload"],
    horizontal=True,
    key="series_source",
)
uploads = []
if source == "Upload":
    uploads, problems = analyze_ui.uploader("Image files (one per defocus)", key="series_upload")
    for problem in problems:
        st.error(problem)
    if not uploads and not problems:
        st.info("Drop the images of the series here, or choose the bundled focal series.")
else:
    about = example_description(FOCAL_SERIES_DIR / "truth.json")
    if about:
        st.caption(about)
    with guard():
        uploads = series_ui.bundled_series(FOCAL_SERIES_DIR)

items = series_ui.decode_all(uploads) if uploads else []

series = None
series_run = None
chosen = []
stale = False
if items and params is not None and db is not None:
    table = series_ui.defocus_editor(items, key="series")
    with guard():
        # One scan distortion for the whole series (measure it on the Analyze page).
        stretch = analyze_ui.distortion_input(None, key="series")
        chosen, defocus = series_ui.selection(items, table, stretch=stretch)
        images = tuple(image_key(u, m) for u, m in chosen)
        request = result_key(images, params, db)
        plan = run_state.plan(
            "series", images, request, run_clicked=analyze_ui.run_clicked("series")
        )
        run = None
        if plan.run:
            # The overall bar counts the images (each image's own bar is inside the cached call).
            cancel = st.empty()
            cancel.button(
                "Cancel",
                key="series_cancel",
                on_click=run_state.request_cancel,
                args=("series",),
                help="Stop the analysis; the page stays usable and keeps the previous result.",
            )
            bar = st.progress(0.0, text="Analysing the series ...")
            try:
                run = series_ui.run_series(
                    chosen,
                    defocus,
                    params,
                    cards=db,
                    bar=bar,
                    cancelled=lambda: run_state.cancel_requested("series"),
                )
                run_state.completed("series", images, request, (params, db), params)
            except run_state.AnalysisCancelled:
                run_state.mark_cancelled("series", request)
                plan = run_state.Plan("cancelled", plan.last)
            finally:
                bar.empty()
                cancel.empty()
        if plan.action == "cancelled":
            st.info("Analysis cancelled. Press **Analyze** in the sidebar to run it.")
        if run is None and plan.last is not None and plan.last["image"] == images:
            # The engine again with the parameters of the last run: every image's analysis is
            # a cache hit, so an edited defocus re-labels the profile at once.
            last_params, last_db = plan.last["result"]
            run = series_ui.run_series(chosen, defocus, last_params, cards=last_db)
            stale = plan.last["request"] != request
            if stale:
                run_state.stale_banner(
                    plan.last["params"],
                    params,
                    cards_changed=plan.last["request"][-1] != request[-1],
                )
        if run is not None:
            series_ui.show_defocus(run)
            series, series_run = run.series, run
elif params is None:
    st.info("Fix the analysis parameters in the sidebar to analyse.")

if series is not None:
    with guard():
        series_ui.show_series(series, chosen, key="series", cards=db, stale=stale)
    with guard():  # issue 22: per-particle crystallinity, defocus estimates
        particles_ui.show_series_particles(series_run, key="series")
