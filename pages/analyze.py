"""Analyze one image: crystal-plane map, per-window FFT/mask/spots, window table, downloads."""

from __future__ import annotations

import streamlit as st

from ui import analyze_ui, particles_ui, results_ui
from ui.common import (
    EXAMPLE_IMAGE,
    analyze_cached,
    example_description,
    guard,
    image_key,
    load_card_db,
    page_guard,
    show_error,
    upload_from_path,
)

page_guard()
st.title("Analyze an image")

db = None
try:
    db = load_card_db()
except Exception as exc:
    show_error(exc)

params = None
with guard():
    params = analyze_ui.sidebar_params(db, prefix="analyze")

source = st.radio(
    "Image",
    ["Bundled example", "Upload"],
    horizontal=True,
    key="analyze_source",
    help="The bundled example: data/examples/maghemite_particle.tif (its ground truth in the "
    ".json beside it).",
)

upload = None
if source == "Upload":
    uploads, problems = analyze_ui.uploader("Image file(s)", key="analyze_upload")
    for problem in problems:
        st.error(problem)
    if len(uploads) > 1:
        names = [u.name for u in uploads]
        pick = st.selectbox("Which image", range(len(uploads)), format_func=lambda i: names[i])
        upload = uploads[int(pick)]
    elif uploads:
        upload = uploads[0]
    elif not problems:
        st.info("Drop an image here, or choose the bundled example.")
else:
    about = example_description(EXAMPLE_IMAGE.with_suffix(".json"))
    if about:
        st.caption(about)
    with guard():
        upload = upload_from_path(EXAMPLE_IMAGE)

calibrated = None
if upload is not None:
    frame = analyze_ui.frame_choice(upload, key="analyze")
    calibrated = analyze_ui.load_with_calibration(upload, key="analyze", frame=frame)

result = None
if calibrated is not None and params is not None and db is not None:
    micrograph = calibrated.micrograph
    st.caption(analyze_ui.describe(micrograph))
    with guard():  # shows its own progress bar while computing; a cached result shows none
        result = analyze_cached(
            micrograph,
            image_key(upload, micrograph),
            params,
            cards=db,
            label=f"{micrograph.name}: analysing ...",
        )

if result is not None:
    with guard():
        results_ui.show_result(result, calibrated.micrograph, key="analyze")
    with guard():  # issue 22: particles and the defocus from the Thon rings
        particles_ui.show_particles(result, calibrated.micrograph, key="analyze")
