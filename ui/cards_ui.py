"""Helpers of the PDF-cards page: editor state, validation, save with conflict check, calculator."""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from hrtem_core.errors import CardDatabaseError

_STATE_KEY = "cards_editor"


@dataclass
class EditorState:
    """What the editors of this session start from (kept in ``st.session_state``).

    ``version`` is part of the editor widget keys: bumping it gives fresh editors (after a save,
    a reload, or when computed reflections replace a card's rows).
    """

    phases: pd.DataFrame | None = None
    reflections: pd.DataFrame | None = None
    digest: str | None = None
    version: int = 0
    modified: bool = False


def _editor_keys(state: EditorState) -> tuple[str, str]:
    return (
        f"cards_phases_editor_{state.version}",
        f"cards_reflections_editor_{state.version}",
    )


def _has_pending_edits(state: EditorState) -> bool:
    if state.modified:
        return True
    for key in _editor_keys(state):
        edits = st.session_state.get(key)
        if isinstance(edits, dict) and any(
            edits.get(k) for k in ("edited_rows", "added_rows", "deleted_rows")
        ):
            return True
    return False


def editor_state(db: Any | None) -> EditorState:
    """This session's editor state, (re)filled from ``db`` when it has no pending edits."""
    state = st.session_state.get(_STATE_KEY)
    if not isinstance(state, EditorState):
        state = EditorState()
        st.session_state[_STATE_KEY] = state
    if db is None:
        return state
    stale = state.phases is None or (state.digest != db.digest and not _has_pending_edits(state))
    if stale:
        phases, reflections = db.to_frames()
        state.phases = phases.reset_index(drop=True)
        state.reflections = reflections.reset_index(drop=True)
        if state.digest is not None and state.digest != db.digest:
            state.version += 1  # fresh editors on the new content
        state.digest = db.digest
        state.modified = False
    return state


def reset(state: EditorState) -> None:
    """Drop the editors' content: the next run reloads from the file."""
    state.phases = None
    state.reflections = None
    state.digest = None
    state.modified = False
    state.version += 1


def frames_changed(state: EditorState, phases: pd.DataFrame, reflections: pd.DataFrame) -> bool:
    """Whether the edited tables differ from what was loaded."""
    if state.modified:
        return True
    return not (_same(state.phases, phases) and _same(state.reflections, reflections))


def _same(a: pd.DataFrame | None, b: pd.DataFrame) -> bool:
    if a is None:
        return False
    try:
        return a.reset_index(drop=True).equals(b.reset_index(drop=True))
    except Exception:
        return False


def validate_frames(phases: pd.DataFrame, reflections: pd.DataFrame) -> Any:
    """Build a :class:`CardDatabase` from the edited tables (raises CardDatabaseError)."""
    from hrtem_core.cards import CardDatabase

    return CardDatabase.from_frames(
        phases.reset_index(drop=True), reflections.reset_index(drop=True)
    )


@dataclass(frozen=True)
class RowError:
    """A validation message placed at its row of an editor."""

    table: str  # "phases" or "reflections"
    row: int  # 1-based row of the editor as the user counts it (header not counted)
    column: str
    text: str


_ROW_RE = re.compile(r"sheet '(phases|reflections)', row (\d+)(?:, column '([^']*)')?: (.*)")


def locate_error(message: str) -> RowError | None:
    """Turn a card-database message (spreadsheet rows: the header is row 1) into editor terms.

    ``sheet 'phases', row 2, column 'a': ...`` is the first row of the phases editor.
    Returns None when the message names no row.
    """
    m = _ROW_RE.search(str(message))
    if not m:
        return None
    table, sheet_row, column, text = m.group(1), int(m.group(2)), m.group(3) or "", m.group(4)
    return RowError(table=table, row=max(1, sheet_row - 1), column=column, text=text)


def row_error_text(err: RowError, frame: pd.DataFrame | None) -> str:
    """``Row 1 of the phases table (card 39-1346), column 'a': expected ...``."""
    where = f"Row {err.row} of the {err.table} table"
    if frame is not None and 0 <= err.row - 1 < len(frame) and "card_id" in frame:
        card = frame.iloc[err.row - 1]["card_id"]
        if isinstance(card, str) and card.strip():
            where += f" (card {card.strip()})"
    column = f", column '{err.column}'" if err.column else ""
    return f"{where}{column}: {err.text}"


def file_digest(path: Path) -> str | None:
    """sha256 of the file now on disk (None if it is missing)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def disk_changed(state: EditorState, path: Path) -> bool:
    """True when the file on disk is no longer the one this session loaded."""
    if state.digest is None:
        return False
    now = file_digest(path)
    return now is not None and now != state.digest


def save(db: Any, path: Path, *, expected_digest: str | None) -> str:
    """Atomic save with backup (:func:`hrtem_core.cards.save_cards`); returns the new digest.

    Raises
    ------
    CardDatabaseError
        Invalid content, the file changed on disk since it was loaded (reload), or not writable.
    """
    from hrtem_core.cards import save_cards

    if expected_digest is not None:
        now = file_digest(path)
        if now is not None and now != expected_digest:
            raise CardDatabaseError(
                f"{Path(path).name} was changed on disk since it was loaded: reload the page "
                "data ('Reload from disk') and apply your edits again"
            )
    return save_cards(db, path, expected_digest=expected_digest)


def xlsx_bytes(db: Any) -> bytes:
    """The database as xlsx bytes, written by :func:`hrtem_core.cards.save_cards`."""
    from hrtem_core.cards import save_cards

    with tempfile.TemporaryDirectory(prefix="hrtem-cards-") as tmp:
        out = Path(tmp) / "pdf_cards.xlsx"
        save_cards(db, out)
        return out.read_bytes()


def replace_phase(state: EditorState, db: Any, new_phase: Any) -> None:
    """Put ``new_phase`` in place of the phase with its card id; the editors restart from it."""
    p_df, r_df = db.with_phase(new_phase).to_frames()
    state.phases = p_df.reset_index(drop=True)
    state.reflections = r_df.reset_index(drop=True)
    state.version += 1
    state.modified = True


def computed_reflections(phase: Any, *, d_min_nm: float, include_forbidden: bool) -> list[Any]:
    """Every (hkl) family of ``phase`` with d >= ``d_min_nm`` from its cell and space group."""
    from hrtem_core.crystallography import reflection_families

    return list(
        reflection_families(
            phase.cell,
            phase.space_group,
            d_min_nm=float(d_min_nm),
            include_forbidden=bool(include_forbidden),
        )
    )


def reflections_table(reflections: list[Any]) -> pd.DataFrame:
    """Display table of reflections: h, k, l, d in nm and Angstrom, multiplicity, forbidden."""
    rows = [
        {
            "h": r.hkl[0],
            "k": r.hkl[1],
            "l": r.hkl[2],
            "d (nm)": round(float(r.d_nm), 5),
            "d (Å)": round(float(r.d_nm) * 10.0, 4),
            "multiplicity": int(r.multiplicity),
            "intensity": r.intensity_rel,
            "forbidden": bool(r.forbidden),
            "source": r.source,
        }
        for r in reflections
    ]
    return pd.DataFrame(rows)


def hkl_inputs(label: str, default: tuple[int, int, int], *, key: str) -> tuple[int, int, int]:
    """Three integer inputs side by side for Miller indices."""
    cols = st.columns([1, 1, 1, 3])
    out = []
    for col, name, value in zip(cols[:3], "hkl", default, strict=True):
        out.append(
            int(
                col.number_input(
                    f"{label}: {name}",
                    min_value=-20,
                    max_value=20,
                    value=int(value),
                    step=1,
                    key=f"{key}_{name}",
                )
            )
        )
    return (out[0], out[1], out[2])


def calculator_table(
    phase: Any, hkl1: tuple[int, int, int], hkl2: tuple[int, int, int]
) -> pd.DataFrame:
    """d of both planes, the angle between them (obtuse and acute) and their zone axis."""
    from hrtem_core.crystallography import interplanar_angle_deg

    for hkl in (hkl1, hkl2):
        if not any(hkl):
            raise CardDatabaseError(
                "(000) is not a lattice plane: give at least one non-zero index"
            )
    cell = phase.cell
    d1 = float(np.asarray(cell.d_spacing_nm(hkl1)))
    d2 = float(np.asarray(cell.d_spacing_nm(hkl2)))
    angle = float(interplanar_angle_deg(cell, hkl1, hkl2))
    acute = float(interplanar_angle_deg(cell, hkl1, hkl2, acute=True))
    zone = cell.zone_axis(hkl1, hkl2)
    rows = [
        ("d" + _fmt_hkl(hkl1), f"{d1:.5f} nm", f"{d1 * 10:.4f} Å"),
        ("d" + _fmt_hkl(hkl2), f"{d2:.5f} nm", f"{d2 * 10:.4f} Å"),
        ("angle between the planes", f"{angle:.3f}°", f"acute: {acute:.3f}°"),
        (
            "zone axis [uvw] = h1 × h2",
            "[" + " ".join(str(int(v)) for v in zone) + "]",
            "parallel planes" if not any(zone) else "",
        ),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value", "also"])


def _fmt_hkl(hkl: tuple[int, int, int]) -> str:
    return "(" + " ".join(str(int(v)) for v in hkl) + ")"
