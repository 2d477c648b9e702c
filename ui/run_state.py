"""When to (re)compute, and whether what is on screen is still the answer to the settings shown.

Each page keeps, in ``st.session_state``, the last analysis it completed (the request key and its
result). On every script run the page asks :func:`plan` what to do:

* ``run``: a new image (or the first view), or the *Analyze* button was pressed;
* ``fresh``: the result on screen was computed with exactly the current settings;
* ``stale``: the settings (detector, phases, tolerances, window, stride, card database) changed
  since: the previous result stays on screen under a warning, its downloads marked, until
  *Analyze* is pressed;
* ``cancelled``: the user cancelled this request (it is not started again by itself);
* ``none``: nothing to show yet.

Cancelling: the *Cancel* button's callback sets a flag. Streamlit stops the running script at
its next progress update (a button click reruns the page); the new run finds the flag, and the
progress callback of any analysis started with the flag set raises :class:`AnalysisCancelled`
at once, which the page turns into a notice. The flag is cleared when the user presses
*Analyze*.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import streamlit as st


class AnalysisCancelled(Exception):
    """Raised from the progress callback when the user pressed Cancel."""


@dataclass(frozen=True)
class Plan:
    """What a page does in this script run (see the module docstring)."""

    action: str
    last: dict | None = None

    @property
    def run(self) -> bool:
        return self.action == "run"


def _k(prefix: str, name: str) -> str:
    return f"{prefix}_{name}"


def cancel_key(prefix: str) -> str:
    """Session-state key of the page's cancel flag."""
    return _k(prefix, "cancel_requested")


def request_cancel(prefix: str) -> None:
    """Callback of the Cancel button."""
    st.session_state[cancel_key(prefix)] = True


def clear_cancel(prefix: str) -> None:
    """Callback of the Analyze button: a new, explicit request."""
    st.session_state[cancel_key(prefix)] = False
    st.session_state.pop(_k(prefix, "cancelled"), None)


def cancel_requested(prefix: str) -> bool:
    """Whether Cancel was pressed since the last explicit request."""
    return bool(st.session_state.get(cancel_key(prefix), False))


def plan(prefix: str, image: Any, request: Any, *, run_clicked: bool) -> Plan:
    """Decide what the page does for image key ``image`` and full request key ``request``.

    ``request`` holds everything the result depends on (image key, parameters, card digest).
    """
    last = st.session_state.get(_k(prefix, "last"))
    cancelled = st.session_state.get(_k(prefix, "cancelled"))
    if run_clicked:
        return Plan("run", last)
    if last is not None and last["request"] == request:
        return Plan("fresh", last)
    if cancelled is not None and cancelled == request:
        return Plan("cancelled", last if last is not None and last["image"] == image else None)
    if last is None or last["image"] != image:
        return Plan("run", last)
    if cancel_requested(prefix):  # cancelled a run with new settings on the same image
        st.session_state[_k(prefix, "cancelled")] = request
        st.session_state[cancel_key(prefix)] = False
        return Plan("cancelled", last)
    return Plan("stale", last)


def completed(prefix: str, image: Any, request: Any, result: Any, params: Any) -> None:
    """Remember a completed analysis as the page's current result."""
    st.session_state[_k(prefix, "last")] = {
        "image": image,
        "request": request,
        "result": result,
        "params": params,
    }
    st.session_state[cancel_key(prefix)] = False
    st.session_state.pop(_k(prefix, "cancelled"), None)


def mark_cancelled(prefix: str, request: Any) -> None:
    """Remember that ``request`` was cancelled (it is not restarted by itself)."""
    st.session_state[_k(prefix, "cancelled")] = request
    st.session_state[cancel_key(prefix)] = False


_NAMES = {
    "window_px": ("window", " px"),
    "stride_px": ("stride", " px"),
    "detector": ("detector", ""),
    "spacing_tol": ("spacing tolerance", ""),
    "angle_tol_deg": ("angle tolerance", "°"),
    "phases": ("phases", ""),
    "include_forbidden": ("forbidden reflections", ""),
    "d_min_nm": ("d min", " nm"),
}


def changes(old: Any, new: Any) -> list[str]:
    """Human-readable differences between two :class:`AnalysisParams` (``window 256 → 128 px``)."""
    out = []
    for f in fields(old):
        if f.name not in _NAMES:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b:
            label, unit = _NAMES[f.name]
            if f.name == "phases":
                a = "all enabled" if a is None else f"{len(a)} chosen"
                b = "all enabled" if b is None else f"{len(b)} chosen"
            if f.name == "spacing_tol":
                a, b, unit = f"{100 * a:g}", f"{100 * b:g}", " %"
            out.append(f"{label} {a} → {b}{unit}")
    return out


def stale_banner(old_params: Any, new_params: Any, *, cards_changed: bool = False) -> None:
    """The warning shown above results computed with other settings."""
    diff = changes(old_params, new_params) if old_params is not None else []
    if cards_changed:
        diff.append("the card database changed")
    detail = f" ({'; '.join(diff)})" if diff else ""
    st.warning(
        f"These results are for the previous settings{detail}. Press **Analyze** in the "
        "sidebar to run again with the settings shown; the downloads below are marked stale.",
        icon=":material/history:",
    )
