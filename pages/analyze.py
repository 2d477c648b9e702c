"""Analyze one image: crystal-plane map, per-window FFT/mask/spots, window table, downloads."""

from __future__ import annotations

import streamlit as st

from ui import analyze_ui, example_cache, particles_ui, results_ui, run_state
from ui.common import (
    EXAMPLE_IMAGE,
    analyze_cached,
    example_description,
    guard,
    image_key,
    load_card_db,
    page_guard,
    result_key,
    show_error,
    upload_from_path,
)

page_guard()
st.title("Analyze an image")

#: Session flag: this session asked for the bundled example to be analysed again (no stored view).
RECOMPUTE = "analyze_recompute"


def _recompute() -> None:
    st.session_state[RECOMPUTE] = True
    st.session_state["analyze_force_run"] = True


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
    calibrated = analyze_ui.load_with_calibration(
        upload, key="analyze", frame=frame, db=db, params=params
    )

result = None
stale = False
if calibrated is not None and params is not None and db is not None:
    micrograph = calibrated.micrograph
    st.caption(analyze_ui.describe(micrograph))
    img_key = image_key(upload, micrograph)
    request = result_key(img_key, params, db)
    clicked = analyze_ui.run_clicked("analyze") or st.session_state.pop("analyze_force_run", 0)
    plan = run_state.plan("analyze", img_key, request, run_clicked=bool(clicked))
    if plan.run:
        cancel = st.empty()
        cancel.button(
            "Cancel",
            key="analyze_cancel",
            on_click=run_state.request_cancel,
            args=("analyze",),
            help="Stop this analysis; the page stays usable and keeps the previous result.",
        )
        with guard():  # shows its own progress bar while computing; a cached result shows none
            try:
                result = analyze_cached(
                    micrograph,
                    img_key,
                    params,
                    cards=db,
                    label=f"{micrograph.name}: analysing ...",
                    cancelled=lambda: run_state.cancel_requested("analyze"),
                    precomputed=not st.session_state.get(RECOMPUTE, False),
                )
                run_state.completed("analyze", img_key, request, result, params)
            except run_state.AnalysisCancelled:
                run_state.mark_cancelled("analyze", request)
                plan = run_state.Plan("cancelled", plan.last)
        cancel.empty()
    if plan.action == "cancelled":
        st.info("Analysis cancelled. Press **Analyze** in the sidebar to run it.")
    if result is None and plan.action in ("fresh", "stale", "cancelled") and plan.last:
        if plan.last["image"] == img_key:
            result = plan.last["result"]
            stale = plan.last["request"] != request
    if result is not None and stale:
        run_state.stale_banner(
            plan.last["params"],
            params,
            cards_changed=plan.last["request"][-1] != request[-1],
        )
elif params is None:
    st.info("Fix the analysis parameters in the sidebar to analyse.")

if result is not None:
    stored = example_cache.precomputed_for(result)
    if stored is not None:
        note, again = st.columns([5, 1], vertical_alignment="center")
        note.caption(
            "Precomputed for the bundled example with exactly these inputs (image, parameters, "
            "U-Net, cards, code; key " + stored.key[:12] + "); **Re-run** analyses it again."
        )
        again.button("Re-run", key="analyze_rerun", on_click=_recompute)
        particles_ui.remember_particles(result, calibrated.micrograph, stored.particles)
    with guard():
        results_ui.show_result(result, calibrated.micrograph, key="analyze", cards=db, stale=stale)
    with guard():  # issue 22: particles and the defocus from the Thon rings
        particles_ui.show_particles(result, calibrated.micrograph, key="analyze")
