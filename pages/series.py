"""Defocus series: crystallinity and phase fractions vs defocus, images side by side."""

from __future__ import annotations

import streamlit as st

from ui import analyze_ui, particles_ui, series_ui
from ui.common import (
    FOCAL_SERIES_DIR,
    example_description,
    guard,
    load_card_db,
    page_guard,
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
    # Non-overlapping windows by default: a series is many images, and the crystallinity
    # profile does not need the overlap (the Analyze page uses w/2).
    params = analyze_ui.sidebar_params(db, prefix="series", stride_px=256)

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
chosen = []
if items and params is not None and db is not None:
    table = series_ui.defocus_editor(items, key="series")
    with guard():
        chosen, defocus = series_ui.selection(items, table)
        # The overall bar counts the images (each image's own bar is inside the cached call).
        bar = st.progress(0.0, text="Analysing the series ...")
        try:
            series = series_ui.run_series(chosen, defocus, params, cards=db, bar=bar)
        finally:
            bar.empty()

if series is not None:
    with guard():
        series_ui.show_series(series, chosen, key="series")
    with guard():  # issue 22: per-particle crystallinity, defocus estimates
        particles_ui.show_series_particles(series, chosen, key="series")
