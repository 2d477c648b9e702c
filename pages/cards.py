"""PDF cards: edit, validate and save the card database; compute reflections; d/angle calculator."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from hrtem_core.errors import CardDatabaseError, HRTEMError
from ui import auth, cards_ui
from ui.common import (
    REPO,
    cards_path,
    clear_cards_cache,
    guard,
    load_card_db,
    page_guard,
    phase_label,
    show_error,
)

page_guard()
st.title("PDF card database")
editable = auth.editor_gate()  # optional editor password (ui/auth.py); read-only without it
path = cards_path()
try:
    shown = path.resolve().relative_to(REPO)
except ValueError:
    shown = path
st.caption(
    f"File: `{shown}` (set the environment variable `HRTEM_CARDS_PATH` to use another one). "
    "Lengths on the cards in Angstrom; nm everywhere else."
)

db = None
try:
    db = load_card_db(path)
except HRTEMError as exc:
    show_error(exc)
except Exception as exc:
    show_error(exc)

state = cards_ui.editor_state(db)
tab_edit, tab_compute, tab_calc, tab_io = st.tabs(
    ["Phases and reflections", "Reflections from the cell", "Calculator", "Import / export"]
)

# ---------------------------------------------------------------------------------- editor
with tab_edit:
    edited_db = None
    if state.phases is None:
        st.info("No database is loaded: fix the file or import one on the 'Import / export' tab.")
    else:
        st.markdown("**Phases** (one row per card; untick *enabled* to leave a phase out)")
        phases_edit = st.data_editor(
            state.phases,
            key=f"cards_phases_editor_{state.version}",
            num_rows="dynamic",
            width="stretch",
            hide_index=True,
        )
        phases_msg = st.container()  # a validation message about a phase row goes here
        st.markdown("**Reflections** (one row per (hkl) family of a card)")
        refl_edit = st.data_editor(
            state.reflections,
            key=f"cards_reflections_editor_{state.version}",
            num_rows="dynamic",
            width="stretch",
            hide_index=True,
            height=320,
        )
        refl_msg = st.container()  # ... and one about a reflection row here
        changed = cards_ui.frames_changed(state, phases_edit, refl_edit)
        try:
            edited_db = cards_ui.validate_frames(phases_edit, refl_edit)
        except CardDatabaseError as exc:
            at = cards_ui.locate_error(exc.message)
            if at is None:
                st.error(f"Not valid: {exc.message}")
            else:
                frame = phases_edit if at.table == "phases" else refl_edit
                box = phases_msg if at.table == "phases" else refl_msg
                box.error(f"Not valid: {cards_ui.row_error_text(at, frame)}")
                if 0 <= at.row - 1 < len(frame):
                    box.dataframe(frame.iloc[[at.row - 1]], hide_index=True, width="stretch")
        except Exception as exc:
            show_error(exc)
        else:
            n_refl = sum(len(p.reflections) for p in edited_db.phases)
            st.success(
                f"Valid: {len(edited_db.phases)} phases "
                f"({len(edited_db.enabled_phases())} enabled), {n_refl} reflections."
                + (" Unsaved changes." if changed else "")
            )
        conflict = cards_ui.disk_changed(state, path)
        if conflict:
            st.error(
                "The file was changed on disk since this page loaded it (another session or "
                "editor saved it): reload to see the new version (your unsaved edits are lost), "
                "or download your edits first."
            )
        col_save, col_reload, _ = st.columns([1, 1, 4])
        save = col_save.button(
            "Save",
            type="primary",
            disabled=edited_db is None or conflict or not changed or not editable,
            key="cards_save",
        )
        if col_reload.button("Reload from disk", key="cards_reload"):
            cards_ui.reset(state)
            st.rerun()
        if save and edited_db is not None:
            with guard():
                auth.require_editor()
                digest = cards_ui.save(edited_db, path, expected_digest=state.digest)
                clear_cards_cache()
                cards_ui.reset(state)
                st.session_state["cards_flash"] = f"Saved to {path.name} (sha256 {digest[:12]}...)."
                st.rerun()
    flash = st.session_state.pop("cards_flash", None)
    if flash:
        st.success(flash)

# The phases to compute with / calculate on: the edited version when valid, else the saved one.
work_db = edited_db if edited_db is not None else db
phases = list(work_db.phases) if work_db is not None else []
labels = {phase_label(p): p for p in phases}

# --------------------------------------------------------------------- compute reflections
with tab_compute:
    st.markdown(
        "All (hkl) families of a phase from its cell and space group, d descending; "
        "kinematically forbidden reflections (systematic absences) are flagged."
    )
    if not phases:
        st.info("No valid phase to compute from.")
    else:
        c1, c2, c3 = st.columns([3, 1, 1])
        label = c1.selectbox("Phase", list(labels), key="cards_compute_phase")
        d_min = c2.number_input(
            "d min (nm)", min_value=0.03, max_value=2.0, value=0.1, step=0.01, format="%.3f"
        )
        forbidden = c3.checkbox("Include forbidden", value=False, key="cards_compute_forbidden")
        with guard():
            phase = labels[label]
            computed = cards_ui.computed_reflections(
                phase, d_min_nm=float(d_min), include_forbidden=forbidden
            )
            st.dataframe(cards_ui.reflections_table(computed), hide_index=True, width="stretch")
            if st.button(
                f"Use these {len(computed)} reflections for {phase.card_id} in the editor",
                disabled=edited_db is None,
                help="Replaces this card's reflection rows in the editor; press Save to keep it.",
                key="cards_use_computed",
            ):
                new_phase = dataclasses.replace(phase, reflections=tuple(computed))
                cards_ui.replace_phase(state, edited_db, new_phase)
                st.rerun()

# ---------------------------------------------------------------------------- calculator
with tab_calc:
    st.markdown("Interplanar spacing d(hkl) and the angle between two planes (ESI-3).")
    if not phases:
        st.info("No valid phase to calculate with.")
    else:
        label = st.selectbox("Phase", list(labels), key="cards_calc_phase")
        phase = labels[label]
        cell = phase.cell
        st.caption(
            f"a = {cell.a_nm * 10:.4f} Å, b = {cell.b_nm * 10:.4f} Å, c = {cell.c_nm * 10:.4f} Å, "
            f"α = {cell.alpha_deg:g}°, β = {cell.beta_deg:g}°, γ = {cell.gamma_deg:g}°, "
            f"{phase.crystal_system}, {phase.space_group}"
        )
        hkl1 = cards_ui.hkl_inputs("Plane 1", (1, 1, 1), key="calc1")
        hkl2 = cards_ui.hkl_inputs("Plane 2", (2, 2, 0), key="calc2")
        with guard():
            st.dataframe(cards_ui.calculator_table(phase, hkl1, hkl2), hide_index=True)

# ------------------------------------------------------------------------ import / export
with tab_io:
    st.markdown("**Download** the saved database (xlsx).")
    if path.is_file():
        st.download_button(
            "Download pdf_cards.xlsx",
            data=path.read_bytes(),
            file_name=path.name,
            mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            key="cards_download",
        )
    if edited_db is not None and state.phases is not None:
        with guard():
            st.download_button(
                "Download the edited version (unsaved edits included)",
                data=cards_ui.xlsx_bytes(edited_db),
                file_name="pdf_cards_edited.xlsx",
                mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                key="cards_download_edited",
            )
    st.markdown("**Import** a card database (xlsx with the same sheets); it is validated first.")
    up = st.file_uploader("Card database (.xlsx)", type=["xlsx"], key="cards_upload")
    if up is not None:
        with guard():
            with tempfile.TemporaryDirectory(prefix="hrtem-cards-") as tmp:
                tmp_path = Path(tmp) / "uploaded_cards.xlsx"
                tmp_path.write_bytes(up.getvalue())
                from hrtem_core.cards import load_cards

                new_db = load_cards(tmp_path)
            st.success(
                f"{up.name} is valid: {len(new_db.phases)} phases: "
                + ", ".join(p.card_id for p in new_db.phases)
            )
            st.dataframe(pd.DataFrame(new_db.to_frames()[0]), hide_index=True, width="stretch")
            if st.button(
                "Replace the database with this file", key="cards_replace", disabled=not editable
            ):
                auth.require_editor()
                expected = state.digest if state.phases is not None else None
                digest = cards_ui.save(new_db, path, expected_digest=expected)
                clear_cards_cache()
                cards_ui.reset(state)
                st.session_state["cards_flash"] = f"Imported {up.name} (sha256 {digest[:12]}...)."
                st.rerun()

# ------------------------------------------------------------------------------ CIF import
with tab_io:
    from ui import cif_ui

    cif_ui.render(db, path, state)
