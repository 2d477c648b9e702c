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
)

DETECTORS = {"U-Net": "unet", "Classical": "classical"}


def model_available() -> bool:
    """Whether trained U-Net weights are installed (models/unet_spots.pt)."""
    try:
        from hrtem_core.unet.load import DEFAULT_WEIGHTS
    except Exception:
        return False
    return DEFAULT_WEIGHTS.is_file()


def sidebar_params(db: Any | None, *, prefix: str, stride_px: int = 128) -> Any:
    """The analysis parameters, from a form in the sidebar (applied on 'Analyze').

    Parameters
    ----------
    db : CardDatabase or None
        Its enabled phases are offered in "Phases to consider".
    prefix : str, keyword-only
        Widget-key prefix (one per page).
    stride_px : int, keyword-only
        Default stride [px] (the window defaults to 256 px).

    Returns
    -------
    hrtem_core.analysis.AnalysisParams
    """
    from hrtem_core.analysis import AnalysisParams

    enabled = list(db.enabled_phases()) if db is not None else []
    labels = {p.card_id: phase_label(p) for p in enabled}
    detectors = list(DETECTORS)
    default_detector = 0 if model_available() else 1
    with st.sidebar.form(f"{prefix}_params"):
        st.markdown("**Analysis parameters**")
        window = st.number_input(
            "Window size (px)",
            min_value=32,
            max_value=8192,
            value=256,
            step=32,
            key=f"{prefix}_window",
            help="Side of the moving window w; each window gives one FFT.",
        )
        stride = st.number_input(
            "Stride (px)",
            min_value=1,
            max_value=8192,
            value=int(stride_px),
            step=16,
            key=f"{prefix}_stride",
            help="Step between neighbouring windows (w/2 gives half-overlapping windows).",
        )
        detector = st.radio(
            "Spot detector",
            detectors,
            index=default_detector,
            key=f"{prefix}_detector",
            horizontal=True,
            help="U-Net (trained model) or the classical peak detector (baseline).",
        )
        phases = st.multiselect(
            "Phases to consider",
            list(labels),
            default=list(labels),
            format_func=lambda cid: labels.get(cid, cid),
            key=f"{prefix}_phases",
        )
        spacing_tol = st.number_input(
            "Spacing tolerance (%)",
            min_value=0.1,
            max_value=20.0,
            value=3.0,
            step=0.5,
            key=f"{prefix}_spacing_tol",
            help="Relative difference allowed between a measured and a card d-spacing.",
        )
        angle_tol = st.number_input(
            "Angle tolerance (°)",
            min_value=0.1,
            max_value=15.0,
            value=2.0,
            step=0.5,
            key=f"{prefix}_angle_tol",
        )
        forbidden = st.checkbox(
            "Include forbidden reflections",
            value=False,
            key=f"{prefix}_forbidden",
            help="Also match kinematically forbidden reflections (they can appear through "
            "double diffraction).",
        )
        st.form_submit_button("Analyze", type="primary")
    if detector == "U-Net" and not model_available():
        st.sidebar.warning("No trained U-Net is installed: using the classical detector.")
        detector = "Classical"
    return AnalysisParams(
        window_px=int(window),
        stride_px=int(stride),
        detector=DETECTORS[detector],
        spacing_tol=float(spacing_tol) / 100.0,
        angle_tol_deg=float(angle_tol),
        phases=tuple(phases) if len(phases) != len(labels) or not labels else None,
        include_forbidden=bool(forbidden),
    )


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


def load_with_calibration(upload: Upload, *, key: str, frame: Any = None) -> Calibrated | None:
    """Decode ``upload``; show the pixel size (editable) and the reader's warnings.

    The pixel size comes from the file's metadata; a value typed by the user is passed to
    :func:`hrtem_core.io.load_image` as ``pixel_size_nm``. When the file has no usable calibration
    the user is asked for one. Returns None (after an ``st.error``) when the image cannot be used.
    """
    metadata_px: float | None = None
    base = None
    try:
        base = micrograph_from_upload(upload, frame=frame)
        metadata_px = float(base.pixel_size_nm[1])
    except CalibrationError as exc:
        st.error(f"{exc.message} — enter the pixel size below.")
    except HRTEMError as exc:
        show_error(exc)
        return None
    default = metadata_px if metadata_px and math.isfinite(metadata_px) else 0.0
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
    if base is not None and metadata_px is not None and math.isclose(px, metadata_px, rel_tol=1e-9):
        micrograph = base
    else:
        if px <= 0:
            st.info("Enter the pixel size (nm/px) to analyse this image.")
            return None
        try:
            micrograph = micrograph_from_upload(upload, pixel_size_nm=float(px), frame=frame)
        except HRTEMError as exc:
            show_error(exc)
            return None
    for warning in micrograph.warnings:
        st.warning(warning)
    return Calibrated(micrograph=micrograph, metadata_pixel_nm=metadata_px)


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
