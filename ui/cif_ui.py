"""Cards page: import a CIF as a new card (review, edit card id and source, then add).

One entry point, :func:`render`, called from ``pages/cards.py``. The CIF is parsed by
:func:`hrtem_core.cif.phase_from_cif` (validated like any edit); nothing is written until the user
presses "Add to database", which saves atomically with the digest check of the editor's save.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from hrtem_core.errors import CardDatabaseError
from ui import cards_ui
from ui.common import clear_cards_cache, guard, show_error

_KEY = "cards_cif"


def _phase_table(phase: Any) -> pd.DataFrame:
    from hrtem_core.cards import CardDatabase

    phases, _ = CardDatabase(phases=(phase,)).to_frames()
    return phases.drop(columns=["notes"])


def _reflection_table(phase: Any) -> pd.DataFrame:
    rows = [
        {
            "h": r.hkl[0],
            "k": r.hkl[1],
            "l": r.hkl[2],
            "d (Å)": round(float(r.d_nm) * 10.0, 4),
            "d (nm)": round(float(r.d_nm), 5),
            "multiplicity": int(r.multiplicity),
            "intensity (electron |F|², strongest 100)": r.intensity_rel,
            "forbidden": bool(r.forbidden),
        }
        for r in phase.reflections
    ]
    return pd.DataFrame(rows)


def render(db: Any | None, path: Path, state: cards_ui.EditorState) -> None:
    """The CIF import panel: upload, review the card, edit card id / source, add on request.

    Parameters
    ----------
    db : CardDatabase or None
        The database as loaded from ``path`` (None when the file is broken: nothing can be added).
    path : Path
        The card database file.
    state : cards_ui.EditorState
        The page's editor state (reset after a successful add so the editors show the new card).
    """
    from hrtem_core.cif import MAX_CIF_BYTES, phase_from_cif

    st.markdown(
        "**Import a CIF**: cell, space group and atom sites give the reflections (d ≥ 1 Å), "
        "their extinctions and kinematic electron intensities. Review the card, then add it."
    )
    flash = st.session_state.pop(f"{_KEY}_flash", None)
    if flash:
        st.success(flash)
    n = int(st.session_state.get(f"{_KEY}_n", 0))  # a new uploader after each add
    up = st.file_uploader("Crystal structure (.cif)", type=["cif"], key=f"{_KEY}_upload_{n}")
    if up is None:
        return
    data = up.getvalue()
    if len(data) > MAX_CIF_BYTES:
        st.error(f"{up.name} is larger than {MAX_CIF_BYTES // (1024 * 1024)} MB: not a CIF card")
        return
    digest = hashlib.sha256(data).hexdigest()[:12]
    try:
        default = phase_from_cif(data, file_name=up.name)
    except CardDatabaseError as exc:
        st.error(f"{up.name}: {exc.message}")
        return
    except Exception as exc:  # never a traceback in the app
        show_error(exc)
        return
    c1, c2 = st.columns([1, 3])
    card_id = c1.text_input("Card id", value=default.card_id, key=f"{_KEY}_id_{digest}")
    source = c2.text_input("Source", value=default.source, key=f"{_KEY}_source_{digest}")
    enabled = st.checkbox("Enabled for indexing", value=True, key=f"{_KEY}_enabled_{digest}")
    phase = None
    try:
        phase = phase_from_cif(
            data, file_name=up.name, card_id=card_id, source=source, enabled=enabled
        )
    except CardDatabaseError as exc:
        st.error(f"Not valid: {exc.message}")
    except Exception as exc:
        show_error(exc)
    if phase is None:
        return
    st.dataframe(_phase_table(phase), hide_index=True, width="stretch")
    st.caption(phase.notes)
    st.dataframe(_reflection_table(phase), hide_index=True, width="stretch", height=300)
    problem = None
    if db is None:
        problem = "No card database is loaded: fix or import the database first."
    elif phase.card_id in db.card_ids:
        problem = f"Card id {phase.card_id!r} is already in the database: choose another one."
    elif cards_ui._has_pending_edits(state):
        problem = "The editor has unsaved edits: save or reload them before adding a card."
    if problem:
        st.error(problem)
    else:
        st.success(f"Valid: {phase.card_id}, {len(phase.reflections)} reflections.")
    if st.button(
        "Add to database", type="primary", disabled=problem is not None, key=f"{_KEY}_add"
    ):
        with guard():
            new_db = db.with_phase(phase)
            saved = cards_ui.save(new_db, path, expected_digest=db.digest)
            clear_cards_cache()
            cards_ui.reset(state)
            st.session_state[f"{_KEY}_n"] = n + 1
            st.session_state[f"{_KEY}_flash"] = (
                f"Added card {phase.card_id} from {up.name} to {path.name} "
                f"(sha256 {saved[:12]}...)."
            )
            st.rerun()


__all__ = ["render"]
