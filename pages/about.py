"""About: the method, the definitions, the conventions and how well the U-Net does."""

from __future__ import annotations

import json

import streamlit as st

from ui.common import (
    DETECTOR_EVAL,
    MODEL_SETTINGS,
    detector_eval_table,
    detector_false_alarms,
    guard,
    model_summary,
    page_guard,
    validation_table,
)

page_guard()
st.title("About this tool")

st.markdown(
    """
**Method** (after Zhu et al., *Deep learning-assisted analysis of HRTEM images of crystalline
nanoparticles*). A square window of *w* px moves over the image with a stride *s*. Each window is
mean-subtracted, Hann-apodized and Fourier transformed; the central band of its power spectrum
(out to the smallest lattice spacing of interest, 0.1 nm by default) is resampled to 64 x 64 px
and a U-Net marks the Bragg spots in it (a classical peak detector is offered as a baseline).
Spots are refined to sub-pixel accuracy on the full spectrum and paired with their Friedel mates
(centrosymmetric partners). A pair at half-distance *l* FFT px gives the spatial frequency
*q = l / (w p)* [1/nm] and the lattice spacing *d = w p / l* [nm] (ESI-2, eq. 1), with *p* the
pixel size [nm/px]. The spacings and the angles between the pairs of a window are matched against
the PDF cards (d within the spacing tolerance, interplanar angles within the angle tolerance,
ESI-3): the best phase, the (hkl) of each pair and the zone axis [uvw], with a score and the
alternatives that also fit.

**Crystallinity** of an image is the fraction of its windows that hold at least one Friedel pair
passing the detector. The **crystalline area fraction** is the area of the union of the
crystalline windows divided by the image area (overlapping windows are counted once). Across a
focal series the crystallinity profile peaks near the best focus.

**Units and conventions.** Lengths in nm, spatial frequencies in 1/nm, angles in degrees
(Angstrom only where a PDF card shows it). **Defocus in nm, negative = underfocus** (the Scherzer
defocus is negative for Cs > 0). In-plane directions are counter-clockwise from +x as seen on the
screen (y down); the angle between two planes of one window is the acute angle between their
reciprocal vectors, 0 to 90 degrees.

**Pages.** *Analyze*: one image, its crystal-plane map, each window's FFT, mask and labelled spots,
downloads. *Defocus series*: several images of one area at different defocus, the crystallinity
profile and the images side by side. *PDF cards*: edit, validate and save the card database,
compute reflections from the cell, d(hkl) and angle calculator.
"""
)

st.subheader("The U-Net spot detector")
with guard():
    evaluation = None
    if DETECTOR_EVAL.is_file():
        evaluation = json.loads(DETECTOR_EVAL.read_text(encoding="utf-8"))
    table = detector_eval_table(evaluation)
    if table is not None:
        meta = evaluation.get("meta") or {}
        st.markdown(
            f"**How well it does** on {int(meta.get('n', 0)):,} held-out synthetic windows from "
            "another seed, with wider ranges than training (a spot counts as found within "
            f"{meta.get('tol_px', 2):g} FFT px; `python benchmarks/eval_detectors.py`, "
            "`benchmarks/results/eval_detectors.json`, the same figures as the README):"
        )
        st.dataframe(table, hide_index=True)
        alarms = detector_false_alarms(evaluation)
        if alarms:
            st.caption(
                "Windows with no crystal that still got a pair: "
                + ", ".join(f"{k} {100 * v:.1f} %" for k, v in alarms.items())
                + "."
            )
    else:
        st.info("The detector evaluation (benchmarks/results/eval_detectors.json) is missing.")
    if not MODEL_SETTINGS.is_file():
        st.info(
            "No trained model is installed (models/unet_spots.json is missing): the classical "
            "detector is available; train one with `python -m hrtem_core.train --seed 0`."
        )
    else:
        info = json.loads(MODEL_SETTINGS.read_text(encoding="utf-8"))
        st.markdown(model_summary(info))
        with st.expander("Scores during training (validation windows from the training ranges)"):
            scores = validation_table(info.get("validation") or info.get("metrics"))
            if scores is not None:
                st.dataframe(scores, hide_index=True)
            validation = info.get("validation") or {}
            if isinstance(validation.get("pixel_f1"), int | float):
                st.caption(f"pixel F1 {validation['pixel_f1']:.3f}")
        with st.expander("All training settings (models/unet_spots.json)"):
            st.json({k: v for k, v in info.items() if k != "history"}, expanded=False)
