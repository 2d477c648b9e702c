"""Widgets shared by the Analyze and Defocus-series pages: parameters, image source, calibration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import streamlit as st

from hrtem_core.errors import CalibrationError, HRTEMError
from ui.common import (
    MAX_UPLOAD_MB,
    Upload,
    group_uploads,
    micrograph_from_upload,
    phase_label,
    show_error,
    undistorted,
)

DETECTORS = {"U-Net": "unet", "Classical": "classical"}
#: Default window and stride [px], shared by the Analyze and Defocus-series pages.
DEFAULT_WINDOW_PX = 256
DEFAULT_STRIDE_PX = 128


def model_available() -> bool:
    """Whether trained U-Net weights are installed (models/unet_spots.pt) and torch is there.

    Looked up without importing torch (1 s) or the U-Net module.
    """
    from importlib.util import find_spec

    from ui.common import MODEL_WEIGHTS

    return MODEL_WEIGHTS.is_file() and find_spec("torch") is not None


def run_clicked(prefix: str) -> bool:
    """Whether the sidebar's Analyze button was pressed in this script run."""
    return bool(st.session_state.get(f"{prefix}_run", False))


def sidebar_params(db: Any | None, *, prefix: str, stride_px: int = DEFAULT_STRIDE_PX) -> Any:
    """The analysis parameters, from widgets in the sidebar, and the Analyze button.

    The widgets are not in a form: every change reruns the page at once, so the page can tell
    that the result on screen was computed with other settings (:mod:`ui.run_state`) and say so.
    The analysis itself runs when *Analyze* is pressed (or for a new image).

    Parameters
    ----------
    db : CardDatabase or None
        Its enabled phases are offered in "Phases to consider" (one checkbox each, the full
        name wrapping in the sidebar instead of being cut).
    prefix : str, keyword-only
        Widget-key prefix (one per page).
    stride_px : int, keyword-only
        Default stride [px] (:data:`DEFAULT_STRIDE_PX`).

    Returns
    -------
    hrtem_core.analysis.AnalysisParams or None
        None (after a message in the sidebar) when a value is not usable, e.g. a stride of 0.
    """
    from hrtem_core.analysis import AnalysisParams
    from ui import run_state

    enabled = list(db.enabled_phases()) if db is not None else []
    detectors = list(DETECTORS)
    default_detector = 0 if model_available() else 1
    bar = st.sidebar
    bar.markdown("**Analysis parameters**")
    window = bar.number_input(
        "Window size (px)",
        min_value=0,
        max_value=8192,
        value=DEFAULT_WINDOW_PX,
        step=32,
        key=f"{prefix}_window",
        help="Side of the moving window w; each window gives one FFT.",
    )
    stride = bar.number_input(
        "Stride (px)",
        min_value=0,
        max_value=8192,
        value=int(stride_px),
        step=16,
        key=f"{prefix}_stride",
        help="Step between neighbouring windows (w/2 gives half-overlapping windows).",
    )
    detector = bar.radio(
        "Spot detector",
        detectors,
        index=default_detector,
        key=f"{prefix}_detector",
        horizontal=True,
        help="U-Net (trained model) or the classical peak detector (baseline).",
    )
    bar.markdown("Phases to consider")
    chosen = [
        p.card_id
        for p in enabled
        if bar.checkbox(phase_label(p), value=True, key=f"{prefix}_phase_{p.card_id}")
    ]
    spacing_tol, angle_tol, forbidden = _tolerance_widgets(bar, prefix=prefix)
    bar.button(
        "Analyze",
        type="primary",
        key=f"{prefix}_run",
        on_click=run_state.clear_cancel,
        args=(prefix,),
        width="stretch",
    )
    problems = _param_problems(int(window), int(stride), bool(enabled), bool(chosen))
    for problem in problems:
        bar.error(problem)
    if problems:
        return None
    if detector == "U-Net" and not model_available():
        bar.warning("No trained U-Net is installed: using the classical detector.")
        detector = "Classical"
    return AnalysisParams(
        window_px=int(window),
        stride_px=int(stride),
        detector=DETECTORS[detector],
        spacing_tol=float(spacing_tol) / 100.0,
        angle_tol_deg=float(angle_tol),
        phases=tuple(chosen) if len(chosen) != len(enabled) or not enabled else None,
        include_forbidden=bool(forbidden),
    )


def _tolerance_widgets(bar: Any, *, prefix: str) -> tuple[float, float, bool]:
    """Spacing tolerance [%], angle tolerance [deg] and the forbidden-reflections box."""
    spacing_tol = bar.number_input(
        "Spacing tolerance (%)",
        min_value=0.1,
        max_value=20.0,
        value=3.0,
        step=0.5,
        key=f"{prefix}_spacing_tol",
        help="Relative difference allowed between a measured and a card d-spacing.",
    )
    angle_tol = bar.number_input(
        "Angle tolerance (°)",
        min_value=0.1,
        max_value=15.0,
        value=2.0,
        step=0.5,
        key=f"{prefix}_angle_tol",
    )
    forbidden = bar.checkbox(
        "Include forbidden reflections",
        value=False,
        key=f"{prefix}_forbidden",
        help="Also match kinematically forbidden reflections (they can appear through "
        "double diffraction).",
    )
    return spacing_tol, angle_tol, forbidden


def _param_problems(window: int, stride: int, any_enabled: bool, any_chosen: bool) -> list[str]:
    """What makes the sidebar's values unusable (one message each; empty: none)."""
    problems = []
    if stride < 1:
        problems.append("Stride must be at least 1 px (the step between windows).")
    if window < 32:
        problems.append("Window size must be at least 32 px.")
    if any_enabled and not any_chosen:
        problems.append("Tick at least one phase to consider.")
    return problems


def received_files(uploaded: Any) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of what a ``st.file_uploader`` returned (one file, a list or None)."""
    if uploaded is None:
        return []
    items = uploaded if isinstance(uploaded, list) else [uploaded]
    return [(f.name, f.getvalue()) for f in items]


def uploader(label: str, *, key: str, multiple: bool = True) -> tuple[list[Upload], list[str]]:
    """A file uploader for images; a .ser is paired with its .emi when both are given."""
    # No ``type=`` filter: Streamlit would raise on a file of another type before the page runs
    # (an exception instead of a message); the type is checked in ui.common.make_upload instead.
    files = st.file_uploader(
        label,
        accept_multiple_files=multiple,
        key=key,
        help="dm3, dm4, ser (+ its .emi, in the same upload), emd, mrc, tif/tiff, png, jpg; "
        f"up to {MAX_UPLOAD_MB} MB per file.",
    )
    return group_uploads(received_files(files))


@dataclass(frozen=True)
class Calibrated:
    """A decoded image and how its pixel size was obtained."""

    micrograph: Any
    metadata_pixel_nm: float | None


def load_with_calibration(
    upload: Upload,
    *,
    key: str,
    frame: Any = None,
    db: Any | None = None,
    params: Any | None = None,
) -> Calibrated | None:
    """Decode ``upload``; show the pixel size (editable), the scan distortion and the reader's
    warnings.

    The pixel size comes from the file's metadata; a value typed by the user is passed to
    :func:`hrtem_core.io.load_image` as ``pixel_size_nm``. When the file has no usable calibration
    the user is asked for one. A scan distortion typed or measured in the "Scan distortion"
    expander (:func:`distortion_input`; measuring needs ``db`` and ``params``) is removed with
    :func:`hrtem_core.distortion.undistort`. Returns None (after an ``st.error``) when the image
    cannot be used.
    """
    metadata_px: float | None = None
    base = None
    missing: str | None = None
    try:
        base = micrograph_from_upload(upload, frame=frame)
        metadata_px = float(base.pixel_size_nm[1])
    except CalibrationError as exc:
        missing = exc.message
    except HRTEMError as exc:
        show_error(exc)
        return None
    default = metadata_px if metadata_px and math.isfinite(metadata_px) else 0.0
    # The "no pixel size" message sits above the input and goes once a pixel size is typed.
    notice = st.empty()
    col, _ = st.columns([1, 2])
    px = col.number_input(
        "Pixel size (nm/px)",
        min_value=0.0,
        value=default,
        step=0.001,
        format="%.6f",
        key=f"{key}_px_{upload.digest[:16]}",
        help="From the file's metadata; change it to override the calibration.",
    )
    if missing is not None:
        if px <= 0:
            notice.error(f"{missing} — enter the pixel size below.")
        else:
            notice.caption(f"Pixel size typed by hand: {px:g} nm/px (the file has none).")
    if base is not None and metadata_px is not None and math.isclose(px, metadata_px, rel_tol=1e-9):
        micrograph = base
    else:
        if px <= 0:
            if missing is None:
                st.info("Enter the pixel size (nm/px) to analyse this image.")
            return None
        try:
            micrograph = micrograph_from_upload(upload, pixel_size_nm=float(px), frame=frame)
        except HRTEMError as exc:
            show_error(exc)
            return None
    try:
        stretch = distortion_input(
            micrograph, key=f"{key}_{upload.digest[:16]}", db=db, params=params
        )
        if stretch is not None:
            micrograph = undistorted(upload, micrograph, stretch)
    except HRTEMError as exc:
        show_error(exc)
        return None
    for warning in micrograph.warnings:
        st.warning(warning)
    return Calibrated(micrograph=micrograph, metadata_pixel_nm=metadata_px)


def distortion_input(
    micrograph: Any, *, key: str, db: Any | None = None, params: Any | None = None
) -> tuple[float, float, float] | None:
    """The "Scan distortion" expander: a stretch ``SXX,SXY,SYY`` typed, or measured on this image
    (``micrograph``, with ``db`` and ``params`` given) with a card the user names
    (:func:`hrtem_core.distortion.calibrate_distortion`).

    Returns the stretch, or None for none.

    Raises
    ------
    CalibrationError
        A typed value that is not a stretch (the caller shows it; the image is not analysed
        until it is fixed or cleared).
    """
    from hrtem_core.distortion import parse_stretch

    text_key, note_key = f"{key}_distortion", f"{key}_distortion_note"
    with st.expander("Scan distortion (STEM)", expanded=bool(st.session_state.get(text_key))):
        st.caption(
            "A scanned image is often stretched and sheared by a few per cent: spacings that "
            "should be equal differ and right angles are off, and the indexing then names "
            "nothing. Measure the distortion once on an image of a known crystal (a standard, "
            "or this image when its phase is known) and give it for images taken alike. The "
            "image is resampled onto square pixels; the stretch includes the scale."
        )
        if micrograph is not None and db is not None and params is not None and len(db.phases):
            pick, go = st.columns([3, 1], vertical_alignment="bottom")
            ids = [p.card_id for p in db.phases]
            card = pick.selectbox(
                "Crystal this image shows",
                ids,
                format_func=lambda c: phase_label(db.phase(c)),
                key=f"{key}_distortion_card",
            )
            if go.button("Measure", key=f"{key}_distortion_measure"):
                _measure_distortion(micrograph, card, db, params, text_key, note_key)
        measured = st.session_state.get(note_key)
        if measured and measured[0] == st.session_state.get(text_key):
            st.success(measured[1])  # (gone once the field is edited: never a stale note)
        text = st.text_input(
            "Stretch SXX,SXY,SYY (empty: none)",
            key=text_key,
            placeholder="e.g. 0.9719,0.0117,0.9605",
            help="x_true = S x_image (x right, y down), as `python -m hrtem_core calibrate` "
            "prints it.",
        )
    if not str(text or "").strip():
        return None
    return parse_stretch(text)


def _measure_distortion(
    micrograph: Any, card: str, db: Any, params: Any, text_key: str, note_key: str
) -> None:
    """Run the calibration with a progress bar; put the stretch into the text field."""
    from hrtem_core.analysis import analyze_image
    from hrtem_core.distortion import MAX_ITERATIONS, calibrate_distortion
    from ui.common import get_model

    params = params.with_phase(card)
    model = get_model() if params.detector == "unet" else None
    bar = st.progress(0.0, text="Measuring the distortion ...")
    rounds = MAX_ITERATIONS
    at = {"base": 0.0, "label": ""}

    def rounds_done(fraction: float, message: str) -> None:
        at["base"], at["label"] = fraction, message
        bar.progress(min(max(fraction, 0.0), 1.0), text=message)

    def windows_done(fraction: float, _message: str = "") -> None:  # within one round
        done = min(max(at["base"] + fraction / rounds, 0.0), 1.0)
        bar.progress(done, text=f"{at['label']} ({100 * fraction:.0f} % of the windows)")

    try:
        fit = calibrate_distortion(
            micrograph,
            card,
            analyze=lambda m: analyze_image(
                m, params=params, cards=db, model=model, progress=windows_done
            ),
            max_iterations=rounds,
            progress=rounds_done,
        )
    except HRTEMError as exc:
        st.session_state.pop(note_key, None)
        show_error(exc)
        return
    finally:
        bar.empty()
    st.session_state[text_key] = fit.as_option()
    st.session_state[note_key] = (
        fit.as_option(),
        f"Measured: {fit.describe()}, {fit.n_iterations} rounds.",
    )


def n_frames(micrograph: Any) -> int:
    """Number of frames of the source stack, from the reader's metadata (1 for a single image)."""
    md = getattr(micrograph, "metadata", {}) or {}
    for key in ("n_frames", "frames", "num_frames"):
        value = md.get(key)
        if isinstance(value, int | float) and value >= 1:
            return int(value)
    return 1


def describe(micrograph: Any) -> str:
    """One line: name, size, pixel size, field of view, defocus, reader."""
    ny, nx = micrograph.data.shape
    py, px = micrograph.pixel_size_nm
    parts = [
        f"**{micrograph.name}**",
        f"{nx} x {ny} px",
        f"{px:.5g} nm/px ({micrograph.pixel_size_source})",
        f"field of view {nx * px:.3g} x {ny * py:.3g} nm",
    ]
    if micrograph.defocus_nm is not None:
        parts.append(f"defocus {micrograph.defocus_nm:+.1f} nm")
    parts.append(f"reader {micrograph.reader}")
    return " · ".join(parts)


def frame_choice(upload: Upload, *, key: str) -> int | str | None:
    """For a stack: a frame selector (a frame number or the sum); None for a single image."""
    probe = None
    try:
        probe = micrograph_from_upload(upload)
    except CalibrationError:
        try:  # an uncalibrated stack: probe its frame count with a provisional scale
            probe = micrograph_from_upload(upload, pixel_size_nm=1.0)
        except HRTEMError:
            probe = None
    except HRTEMError:
        probe = None
    n = n_frames(probe) if probe is not None else 1
    if n <= 1:
        return None
    options: list[int | str] = ["sum", *range(n)]
    choice = st.selectbox(
        f"Frame (the file is a stack of {n} frames)",
        options,
        index=1,
        format_func=lambda v: "sum of all frames" if v == "sum" else f"frame {v}",
        key=f"{key}_frame_{upload.digest[:16]}",
    )
    return choice
