"""The PDF card database (``data/pdf_cards.xlsx``): load with validation, edit, save atomically.

The workbook has two sheets (header in row 1; every problem is reported with the Excel row):

``phases``
    card_id, name, formula, crystal_system, space_group, space_group_number, a, b, c (Angstrom),
    alpha, beta, gamma (degrees), source, notes, enabled.
``reflections``
    card_id, h, k, l, d_A, intensity_rel, source (``card`` | ``computed``), forbidden.

Rules
-----
* A phase with at least one ``card`` row keeps exactly its rows (hkl as printed on the card,
  d_A as printed; the d must agree with the cell within 2 %, which catches a mistyped hkl).
* A phase with only ``computed`` rows, or none, gets its reflections regenerated from its cell and
  space group on every load (down to ``d_min = 0.1 nm``, forbidden ones flagged): computed rows in
  the file are derived data for the reader of the workbook. If they disagree with the cell (the
  cell was edited), :attr:`CardDatabase.warnings` says so.
* Formula cells and external links are refused, never evaluated or followed.

Size: at most 20 MB of workbook (read in chunks; a device such as ``/dev/zero`` is refused at
once), 32 MB uncompressed (about 100,000 reflection rows), 1,000 phases and 200,000 rows per
sheet; larger books are refused before or while their rows are streamed.
Names and card ids that start with ``= + - @`` or a control character are refused (they would
become live formulas in a spreadsheet; OWASP CSV injection).

Saving (:func:`save_cards`) takes a lock (:mod:`filelock`, on a lock file named after the
database's resolved path in ``<tempdir>/hrtem-locks``, so no sidecar is left beside it), checks
that the file is still the one that was loaded (sha256), writes a temporary file in the same folder, reads it back
and validates it, keeps the previous file as ``<file>.bak`` and moves the new file in place with
``os.replace`` (:func:`hrtem_core._files.atomic_write`; atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import math
import numbers
import os
import re
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrtem_core import _files
from hrtem_core.crystallography import (
    Reflection,
    UnitCell,
    family_members,
    is_centring_absent,
    is_forbidden,
    reflection_families,
    resolve_space_group,
)
from hrtem_core.errors import AnalysisParameterError, CardDatabaseError, HRTEMError

__all__ = [
    "COMPUTED_D_MIN_NM",
    "DEFAULT_CARDS_PATH",
    "PHASE_COLUMNS",
    "REFLECTION_COLUMNS",
    "CardDatabase",
    "Phase",
    "SpacingCandidate",
    "file_digest",
    "load_cards",
    "save_cards",
    "spacing_candidates",
]

DEFAULT_CARDS_PATH: Path = Path(__file__).resolve().parents[1] / "data" / "pdf_cards.xlsx"

PHASE_COLUMNS: tuple[str, ...] = (
    "card_id",
    "name",
    "formula",
    "crystal_system",
    "space_group",
    "space_group_number",
    "a",
    "b",
    "c",
    "alpha",
    "beta",
    "gamma",
    "source",
    "notes",
    "enabled",
)
REFLECTION_COLUMNS: tuple[str, ...] = (
    "card_id",
    "h",
    "k",
    "l",
    "d_A",
    "intensity_rel",
    "source",
    "forbidden",
)

#: Computed reflections go down to this spacing [nm].
COMPUTED_D_MIN_NM = 0.1
#: A card row's d may differ from the cell's d(hkl) by at most this fraction.
CARD_D_TOLERANCE = 0.02
#: Cell constraints: relative tolerance on equal lengths, absolute tolerance on angles [deg].
_LENGTH_RTOL = 1e-4
_ANGLE_ATOL = 0.01

_MAX_FILE_BYTES = 20 * 1024 * 1024
_MAX_ROWS = 200_000
#: Largest uncompressed workbook content: openpyxl scans a whole sheet for its size when the
#: sheet does not declare it (about 10 MB of XML per second), so this bounds the load time.
_MAX_EXPANDED_BYTES = 32 * 1024 * 1024
#: Most phases in a database: every phase's reflections are computed or checked on load
#: (about 6 ms each), so 1,000 phases load in seconds; 100,000 would take over ten minutes.
MAX_PHASES = 1_000
_LOCK_TIMEOUT_S = 30.0

_CRYSTAL_SYSTEMS = (
    "cubic",
    "tetragonal",
    "orthorhombic",
    "hexagonal",
    "trigonal",
    "monoclinic",
    "triclinic",
)
_SYSTEM_ALIASES = {"rhombohedral": "trigonal", "isometric": "cubic", "anorthic": "triclinic"}
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_TRUE = {"true", "yes", "y", "1", "x"}
_FALSE = {"false", "no", "n", "0", ""}


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One phase (one PDF card).

    Attributes
    ----------
    card_id : str
        PDF card number, e.g. ``"39-1346"``.
    name, formula : str
    crystal_system : str
        cubic, tetragonal, orthorhombic, hexagonal, trigonal, monoclinic or triclinic.
    space_group : str
        Hermann-Mauguin symbol as written on the card (``P4₁32``, ``R-3c``, ``Pbnm``).
    space_group_number : int
        International Tables number (1-230), must match ``space_group``.
    cell : UnitCell
        Lattice constants in nm (the sheet shows Angstrom).
    source, notes : str
        Where the values come from; free remarks.
    enabled : bool
        Whether the phase takes part in indexing by default.
    reflections : tuple of Reflection
        Families, d descending: the card's rows, or computed from the cell.
    """

    card_id: str
    name: str
    formula: str
    crystal_system: str
    space_group: str
    space_group_number: int
    cell: UnitCell
    source: str
    notes: str
    enabled: bool
    reflections: tuple[Reflection, ...]

    @property
    def has_card_reflections(self) -> bool:
        """True when the reflections were typed from a card (not computed)."""
        return any(r.source == "card" for r in self.reflections)


@dataclass(frozen=True)
class CardDatabase:
    """An immutable set of phases; edits return new databases.

    ``path`` and ``digest`` (sha256 of the file as loaded) travel with edits so that
    :func:`save_cards` can refuse to overwrite a file someone else changed meanwhile.
    """

    phases: tuple[Phase, ...]
    path: Path | None = None
    digest: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for p in self.phases:
            if p.card_id in seen:
                raise CardDatabaseError(f"sheet 'phases': card_id {p.card_id!r} appears twice")
            seen.add(p.card_id)

    @property
    def card_ids(self) -> tuple[str, ...]:
        """The card ids in order."""
        return tuple(p.card_id for p in self.phases)

    def phase(self, card_id: str) -> Phase:
        """The phase with this card id (:class:`CardDatabaseError` if absent)."""
        for p in self.phases:
            if p.card_id == str(card_id).strip():
                return p
        raise CardDatabaseError(
            f"no phase with card_id {card_id!r} in the card database "
            f"(known: {', '.join(self.card_ids) or 'none'})"
        )

    def enabled_phases(self) -> tuple[Phase, ...]:
        """The phases with ``enabled=True``."""
        return tuple(p for p in self.phases if p.enabled)

    # -- editing (each returns a new database) -------------------------------------------

    def with_phase(self, phase: Phase) -> CardDatabase:
        """Add ``phase``, or replace the phase with the same card_id (kept in place)."""
        phase = _checked_phase(phase)
        phases = list(self.phases)
        for i, p in enumerate(phases):
            if p.card_id == phase.card_id:
                phases[i] = phase
                break
        else:
            phases.append(phase)
        return dataclasses.replace(self, phases=tuple(phases), warnings=())

    def without_phase(self, card_id: str) -> CardDatabase:
        """Remove the phase with this card_id (:class:`CardDatabaseError` if absent)."""
        self.phase(card_id)
        key = str(card_id).strip()
        return dataclasses.replace(
            self, phases=tuple(p for p in self.phases if p.card_id != key), warnings=()
        )

    def with_computed_reflections(self, card_id: str) -> CardDatabase:
        """Replace a phase's reflections by those computed from its cell and space group."""
        p = self.phase(card_id)
        return self.with_phase(
            dataclasses.replace(p, reflections=computed_reflections(p.cell, p.space_group))
        )

    # -- tables ----------------------------------------------------------------------------

    def to_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The two sheets as DataFrames ``(phases, reflections)`` (lengths in Angstrom)."""
        prow = []
        rrow = []
        for p in self.phases:
            a, b, c = (_to_angstrom(x) for x in (p.cell.a_nm, p.cell.b_nm, p.cell.c_nm))
            prow.append(
                {
                    "card_id": p.card_id,
                    "name": p.name,
                    "formula": p.formula,
                    "crystal_system": p.crystal_system,
                    "space_group": p.space_group,
                    "space_group_number": int(p.space_group_number),
                    "a": a,
                    "b": b,
                    "c": c,
                    "alpha": p.cell.alpha_deg,
                    "beta": p.cell.beta_deg,
                    "gamma": p.cell.gamma_deg,
                    "source": p.source,
                    "notes": p.notes,
                    "enabled": bool(p.enabled),
                }
            )
            for r in p.reflections:
                rrow.append(
                    {
                        "card_id": p.card_id,
                        "h": int(r.hkl[0]),
                        "k": int(r.hkl[1]),
                        "l": int(r.hkl[2]),
                        "d_A": _to_angstrom(r.d_nm)
                        if r.source == "card"
                        else round(r.d_nm * 10.0, 6),
                        "intensity_rel": r.intensity_rel,
                        "source": r.source,
                        "forbidden": bool(r.forbidden),
                    }
                )
        phases = pd.DataFrame(prow, columns=list(PHASE_COLUMNS))
        refl = pd.DataFrame(rrow, columns=list(REFLECTION_COLUMNS))
        if len(refl):
            refl["intensity_rel"] = refl["intensity_rel"].astype(object)
        return phases, refl

    @classmethod
    def from_frames(cls, phases: pd.DataFrame, reflections: pd.DataFrame) -> CardDatabase:
        """Build and validate a database from the two sheets as DataFrames.

        Row numbers in error messages are Excel rows (DataFrame position + 2, header in row 1).
        """
        for sheet, frame in (("phases", phases), ("reflections", reflections)):
            if isinstance(frame, pd.DataFrame) and len(frame) > _MAX_ROWS:
                raise CardDatabaseError(f"sheet {sheet!r} has more than {_MAX_ROWS} rows")
        prows = _frame_rows(phases, "phases", PHASE_COLUMNS)
        rrows = _frame_rows(reflections, "reflections", REFLECTION_COLUMNS)
        _check_phase_count(len(prows), "(edited)")
        phases_t, warnings = _build(prows, rrows)
        return cls(phases=phases_t, warnings=warnings)


@dataclass(frozen=True)
class SpacingCandidate:
    """One (phase, hkl family) whose spacing lies within the tolerance of a measured spacing."""

    card_id: str
    phase_name: str
    hkl: tuple[int, int, int]
    d_nm: float
    rel_residual: float  # (measured - reference) / reference, signed
    forbidden: bool
    multiplicity: int


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def computed_reflections(
    cell: UnitCell, space_group: str, *, d_min_nm: float = COMPUTED_D_MIN_NM
) -> tuple[Reflection, ...]:
    """Reflection families computed from a cell and space group (forbidden ones flagged)."""
    return reflection_families(cell, space_group, d_min_nm=d_min_nm, include_forbidden=True)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_cards(path: str | os.PathLike = DEFAULT_CARDS_PATH) -> CardDatabase:
    """Load and validate the card database workbook.

    Parameters
    ----------
    path : path-like
        The ``.xlsx`` file (default: the shipped ``data/pdf_cards.xlsx``).

    Returns
    -------
    CardDatabase
        With ``path`` and ``digest`` (sha256 of the bytes that were read) set.

    Raises
    ------
    CardDatabaseError
        For anything wrong with the file; the message names the sheet, Excel row and column.

    Notes
    -----
    The file is read once into memory; the digest is that of exactly these bytes. A database
    already validated from identical bytes is reused (the objects are immutable).
    """
    p = Path(path)
    try:
        data = _read_capped(p)
    except FileNotFoundError:
        raise CardDatabaseError(f"card database {p} does not exist") from None
    except OSError as exc:
        raise CardDatabaseError(
            f"card database {p} cannot be read: {exc.strerror or exc}"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    key = (digest, p.name)
    with _LOAD_CACHE_LOCK:
        db = _LOAD_CACHE.get(key)
    if db is None:
        db = _load_bytes(data, p.name)
        with _LOAD_CACHE_LOCK:
            while len(_LOAD_CACHE) >= 16:
                _LOAD_CACHE.pop(next(iter(_LOAD_CACHE)))
            _LOAD_CACHE[key] = db
    return dataclasses.replace(db, path=p, digest=digest)


def _read_capped(p: Path) -> bytes:
    """The file's bytes, read in chunks; refused past ``_MAX_FILE_BYTES`` or when not a file."""
    with open(p, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise CardDatabaseError(f"card database {p} is not a regular file")
        chunks: list[bytes] = []
        total = 0
        while chunk := fh.read(1 << 20):
            total += len(chunk)
            if total > _MAX_FILE_BYTES:
                raise CardDatabaseError(
                    f"card database {p.name} is larger than {_MAX_FILE_BYTES / 1e6:.0f} MB: refused"
                )
            chunks.append(chunk)
    return b"".join(chunks)


#: Validated databases by (sha256, file name): identical bytes need not be parsed twice.
_LOAD_CACHE: dict[tuple[str, str], CardDatabase] = {}
_LOAD_CACHE_LOCK = threading.Lock()


def save_cards(
    db: CardDatabase,
    path: str | os.PathLike,
    *,
    expected_digest: str | None = None,
    lock_timeout_s: float = _LOCK_TIMEOUT_S,
) -> str:
    """Write the database atomically; return the sha256 digest of the new file.

    Parameters
    ----------
    db : CardDatabase
    path : path-like
        Destination ``.xlsx``.
    expected_digest : str, optional
        sha256 the file must still have (the digest it had when loaded). Defaults to
        ``db.digest`` when ``db.path`` is this same file. If the file changed meanwhile (or
        disappeared) a :class:`CardDatabaseError` asks to reload and apply the edit again: an
        edit is never silently dropped.
    lock_timeout_s : float
        How long to wait for another session's save to finish [s].

    Notes
    -----
    Steps, under an exclusive lock on ``<path>.lock``: check the digest; write
    ``<path>.<random>.tmp`` in the same folder; read it back and validate that it loads to the
    same phases; copy the current file to ``<path>.bak``; ``os.replace`` the temporary file onto
    ``path``. Any failure leaves the previous file intact and removes the temporary file; a
    writer that was killed part-way leaves at most a ``.<name>.*.tmp`` file, which the next save
    removes (the flock dies with its process, so the lock is never stuck).
    """
    dest = Path(path)
    if expected_digest is None and db.digest is not None and db.path is not None:
        with contextlib.suppress(OSError):
            if Path(db.path).resolve() == dest.resolve():
                expected_digest = db.digest
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise CardDatabaseError(f"cannot save the card database: folder {folder} does not exist")
    with _file_lock(dest, timeout_s=lock_timeout_s):
        _remove_stale_temporaries(dest)
        if expected_digest is not None:
            current = file_digest(dest) if dest.exists() else None
            if current != expected_digest:
                raise CardDatabaseError(
                    "the card database was changed by someone else since you loaded it: "
                    "reload it and apply your edit again"
                )
        written: dict[str, bytes] = {}

        def write_checked(tmp: Path) -> None:
            _write_workbook(db, tmp)
            _copy_mode(dest, tmp)
            written["data"] = tmp.read_bytes()
            check = _load_bytes(written["data"], dest.name)
            if not _same_phases(check.phases, db.phases):
                raise CardDatabaseError(
                    f"cannot save the card database to {dest}: the written file does not read "
                    "back identically (nothing was changed)"
                )
            if dest.exists():
                _backup(dest)

        try:
            _files.atomic_write(dest, write_checked, tmp_suffix=".tmp")
            _fsync_dir(folder)
        except HRTEMError:
            raise
        except OSError as exc:
            raise CardDatabaseError(
                f"cannot save the card database to {dest}: {exc.strerror or exc} "
                "(the previous file is unchanged)"
            ) from None
        except Exception as exc:  # a writer bug must not become a traceback or a torn file
            raise CardDatabaseError(
                f"cannot save the card database to {dest}: {type(exc).__name__}: {exc} "
                "(the previous file is unchanged)"
            ) from None
        data = written["data"]
        return hashlib.sha256(data).hexdigest()


def spacing_candidates(
    db: CardDatabase,
    spacing_nm: float,
    *,
    rel_tol: float = 0.03,
    card_ids: Sequence[str] | None = None,
    include_forbidden: bool = False,
) -> list[SpacingCandidate]:
    """Every (phase, hkl family) whose d lies within ``rel_tol`` of a measured spacing.

    Parameters
    ----------
    db : CardDatabase
    spacing_nm : float
        Measured lattice spacing [nm].
    rel_tol : float
        Largest ``|measured - reference| / reference`` kept (default 3 %).
    card_ids : sequence of str, optional
        Phases to consider (default: the enabled phases).
    include_forbidden : bool
        Also consider glide/screw-forbidden reflections (double diffraction).

    Returns
    -------
    list of SpacingCandidate
        Sorted by ``|rel_residual|`` (then card_id, hkl): near-twins stay visible side by side.
    """
    if isinstance(spacing_nm, bool) or not isinstance(spacing_nm, numbers.Real):
        raise AnalysisParameterError(f"spacing_nm must be a number, got {spacing_nm!r}")
    if not (math.isfinite(spacing_nm) and spacing_nm > 0):
        raise AnalysisParameterError(
            f"spacing_nm must be a positive length in nm, got {spacing_nm!r}"
        )
    if isinstance(rel_tol, bool) or not isinstance(rel_tol, numbers.Real):
        raise AnalysisParameterError(f"rel_tol must be a number, got {rel_tol!r}")
    if not (math.isfinite(rel_tol) and 0 <= rel_tol < 1):
        raise AnalysisParameterError(f"rel_tol must lie in [0, 1), got {rel_tol!r}")
    if card_ids is None:
        phases: Sequence[Phase] = db.enabled_phases()
    else:
        if isinstance(card_ids, str):
            card_ids = [card_ids]
        phases = [db.phase(cid) for cid in card_ids]
    out = []
    for p in phases:
        for r in p.reflections:
            if r.forbidden and not include_forbidden:
                continue
            res = (float(spacing_nm) - r.d_nm) / r.d_nm
            if abs(res) <= rel_tol:
                out.append(
                    SpacingCandidate(
                        card_id=p.card_id,
                        phase_name=p.name,
                        hkl=r.hkl,
                        d_nm=r.d_nm,
                        rel_residual=res,
                        forbidden=r.forbidden,
                        multiplicity=r.multiplicity,
                    )
                )
    out.sort(key=lambda c: (abs(c.rel_residual), c.card_id, tuple(-x for x in c.hkl)))
    return out


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    sheet: str
    row: int  # Excel row number
    values: dict[str, Any]


def _load_bytes(data: bytes, name: str) -> CardDatabase:
    import io

    import openpyxl

    if len(data) > _MAX_FILE_BYTES:
        raise CardDatabaseError(
            f"card database {name} is {len(data) / 1e6:.1f} MB; at most "
            f"{_MAX_FILE_BYTES / 1e6:.0f} MB is accepted"
        )
    buf = io.BytesIO(data)
    try:
        with zipfile.ZipFile(buf) as zf:
            names = zf.namelist()
            total = sum(i.file_size for i in zf.infolist())
    except zipfile.BadZipFile:
        raise CardDatabaseError(
            f"card database {name} is not an .xlsx workbook (not a zip container)"
        ) from None
    if total > _MAX_EXPANDED_BYTES:
        raise CardDatabaseError(
            f"card database {name} expands to {total / 1e6:.0f} MB, more than "
            f"{_MAX_EXPANDED_BYTES / 1e6:.0f} MB: refused"
        )
    links = [n for n in names if n.lower().startswith("xl/externallinks/")]
    if links:
        raise CardDatabaseError(
            f"card database {name} contains an external link ({links[0]}): external links are "
            "never followed; remove them (Data > Edit Links > Break Link) and save again"
        )
    buf.seek(0)
    try:
        wb = openpyxl.load_workbook(buf, read_only=True, data_only=False, keep_links=False)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise CardDatabaseError(
            f"card database {name} cannot be opened as an .xlsx workbook: {type(exc).__name__}"
        ) from None
    try:
        sheets = {}
        for sheet, columns in (("phases", PHASE_COLUMNS), ("reflections", REFLECTION_COLUMNS)):
            if sheet not in wb.sheetnames:
                raise CardDatabaseError(
                    f"card database {name}: sheet {sheet!r} is missing "
                    f"(found: {', '.join(map(repr, wb.sheetnames))})"
                )
            sheets[sheet] = _sheet_rows(
                wb[sheet], sheet, columns, max_rows=MAX_PHASES if sheet == "phases" else None
            )
    finally:
        wb.close()
    _check_phase_count(len(sheets["phases"]), name)
    phases, warnings = _build(sheets["phases"], sheets["reflections"])
    return CardDatabase(phases=phases, warnings=warnings)


def _check_phase_count(n: int, name: str) -> None:
    if n > MAX_PHASES:
        raise CardDatabaseError(
            f"card database {name} holds {n:,} phases, more than the limit of {MAX_PHASES:,}: "
            "refused (split it, or keep only the phases you index against)"
        )


def _sheet_rows(
    ws: Any, sheet: str, columns: Sequence[str], *, max_rows: int | None = None
) -> list[_Row]:
    """The non-blank rows of a sheet, streamed; refused as soon as there are more than
    ``_MAX_ROWS`` rows or ``max_rows`` non-blank ones (the phase cap)."""
    rows_iter = ws.iter_rows()
    header_cells = next(rows_iter, None)
    if header_cells is None:
        raise CardDatabaseError(f"sheet {sheet!r} is empty: row 1 must hold the column names")
    header: list[str | None] = []
    for cell in header_cells:
        _refuse_formula(cell, sheet, 1, "header")
        v = cell.value
        header.append(None if v is None else str(v).strip())
    _check_header(header, sheet, columns)
    index = {name: header.index(name) for name in columns}
    out = []
    for n, cells in enumerate(rows_iter, start=2):
        if n > _MAX_ROWS:
            raise CardDatabaseError(f"sheet {sheet!r} has more than {_MAX_ROWS} rows")
        values: dict[str, Any] = {}
        for col, i in index.items():
            cell = cells[i] if i < len(cells) else None
            if cell is None:
                values[col] = None
                continue
            _refuse_formula(cell, sheet, n, col)
            values[col] = cell.value
        for i, cell in enumerate(cells):
            if i < len(header) and header[i] in index:
                continue
            _refuse_formula(
                cell, sheet, n, header[i] if i < len(header) and header[i] else f"#{i + 1}"
            )
        if all(_blank(v) for v in values.values()):
            continue
        out.append(_Row(sheet, n, values))
        if max_rows is not None and len(out) > max_rows:
            raise CardDatabaseError(
                f"sheet {sheet!r} holds more than {max_rows:,} phases, the limit: refused "
                "(split the database, or keep only the phases you index against)"
            )
    return out


def _refuse_formula(cell: Any, sheet: str, row: int, column: str) -> None:
    v = getattr(cell, "value", None)
    if getattr(cell, "data_type", None) == "f" or (isinstance(v, str) and v.startswith("=")):
        raise CardDatabaseError(
            f"sheet {sheet!r}, row {row}, column {column!r}: formula cells are not allowed "
            "(formulas are never evaluated); type the value itself"
        )


def _check_header(header: Sequence[str | None], sheet: str, columns: Sequence[str]) -> None:
    present = [h for h in header if h]
    missing = [c for c in columns if c not in present]
    if missing:
        raise CardDatabaseError(
            f"sheet {sheet!r}, row 1: column(s) {', '.join(map(repr, missing))} missing "
            f"(expected columns: {', '.join(columns)})"
        )
    dup = sorted({h for h in present if present.count(h) > 1 and h in columns})
    if dup:
        raise CardDatabaseError(f"sheet {sheet!r}, row 1: column {dup[0]!r} appears twice")


def _frame_rows(frame: pd.DataFrame, sheet: str, columns: Sequence[str]) -> list[_Row]:
    if not isinstance(frame, pd.DataFrame):
        raise CardDatabaseError(
            f"sheet {sheet!r} must be a table (DataFrame), got {type(frame).__name__}"
        )
    header = [None if c is None else str(c).strip() for c in frame.columns]
    _check_header(header, sheet, columns)
    positions = {c: header.index(c) for c in columns}
    out = []
    for i in range(len(frame)):
        values = {}
        for c, j in positions.items():
            v = frame.iat[i, j]
            if isinstance(v, str) and v.startswith("="):
                raise CardDatabaseError(
                    f"sheet {sheet!r}, row {i + 2}, column {c!r}: formula cells are not allowed "
                    "(formulas are never evaluated); type the value itself"
                )
            values[c] = v
        if all(_blank(v) for v in values.values()):
            continue
        out.append(_Row(sheet, i + 2, values))
    return out


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _blank(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip() == ""
    if isinstance(v, float) and math.isnan(v):
        return True
    return bool(v is pd.NA or v is pd.NaT) or (isinstance(v, np.floating) and bool(np.isnan(v)))


def _where(r: _Row, col: str) -> str:
    return f"sheet {r.sheet!r}, row {r.row}, column {col!r}"


def _text(r: _Row, col: str, *, required: bool) -> str:
    v = r.values.get(col)
    if _blank(v):
        if required:
            raise CardDatabaseError(f"{_where(r, col)}: a value is required")
        return ""
    if isinstance(v, bool):
        raise CardDatabaseError(f"{_where(r, col)}: expected text, got {v!r}")
    if isinstance(v, (numbers.Integral, np.integer)):
        return str(int(v))
    if isinstance(v, (numbers.Real, np.floating)):
        f = float(v)
        if f.is_integer():
            return str(int(f))
        return repr(f)
    if isinstance(v, str):
        if len(v) > 10_000:
            raise CardDatabaseError(f"{_where(r, col)}: text longer than 10000 characters")
        if _CONTROL_CHARS.search(v):
            raise CardDatabaseError(
                f"{_where(r, col)}: the text contains control characters (code < 32), which a "
                "workbook cannot hold; retype it"
            )
        return v.strip()
    raise CardDatabaseError(f"{_where(r, col)}: expected text, got a {type(v).__name__} ({v!r})")


def _number(
    r: _Row,
    col: str,
    *,
    required: bool = True,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    unit: str = "",
) -> float | None:
    v = r.values.get(col)
    if _blank(v):
        if required:
            raise CardDatabaseError(f"{_where(r, col)}: a number is required")
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(
        v, (numbers.Real, np.integer, np.floating)
    ):
        raise CardDatabaseError(
            f"{_where(r, col)}: expected a number{(' in ' + unit) if unit else ''}, got {v!r}"
        )
    f = float(v)
    if not math.isfinite(f):
        raise CardDatabaseError(f"{_where(r, col)}: expected a finite number, got {v!r}")
    if lo is not None and (f < lo or (lo_open and f == lo)):
        rel = ">" if lo_open else ">="
        raise CardDatabaseError(
            f"{_where(r, col)}: expected a value {rel} {lo:g} {unit}, got {f:g}"
        )
    if hi is not None and f > hi:
        raise CardDatabaseError(f"{_where(r, col)}: expected a value <= {hi:g} {unit}, got {f:g}")
    return f


def _integer(r: _Row, col: str, *, lo: int, hi: int) -> int:
    f = _number(r, col, required=True, lo=lo, hi=hi)
    assert f is not None
    if not float(f).is_integer():
        raise CardDatabaseError(f"{_where(r, col)}: expected a whole number, got {f:g}")
    return int(f)


def _boolean(r: _Row, col: str, *, default: bool | None) -> bool | None:
    v = r.values.get(col)
    if _blank(v):
        return default
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (numbers.Integral, np.integer)) and int(v) in (0, 1):
        return bool(int(v))
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise CardDatabaseError(f"{_where(r, col)}: expected TRUE or FALSE, got {v!r}")


def _system_matches(system: str, sg_system: str) -> bool:
    if system == sg_system:
        return True
    # trigonal space groups are often filed under the hexagonal family on cards
    return system == "hexagonal" and sg_system == "trigonal"


def _check_cell(r: _Row, system: str, cell: UnitCell, sg_hex_axes: bool | None) -> None:
    a, b, c = cell.lengths_angstrom
    al, be, ga = cell.angles_deg

    def eq_len(x: float, y: float) -> bool:
        return abs(x - y) <= _LENGTH_RTOL * max(x, y)

    def eq_ang(x: float, y: float) -> bool:
        return abs(x - y) <= _ANGLE_ATOL

    def fail(col: str, what: str) -> None:
        raise CardDatabaseError(
            f"{_where(r, col)}: a {system} cell needs {what} "
            f"(got a={a:g}, b={b:g}, c={c:g} A, alpha={al:g}, beta={be:g}, gamma={ga:g} deg)"
        )

    right = ("alpha", al), ("beta", be), ("gamma", ga)
    if system == "cubic":
        if not eq_len(a, b):
            fail("b", "a = b = c")
        if not eq_len(a, c):
            fail("c", "a = b = c")
        for col, x in right:
            if not eq_ang(x, 90):
                fail(col, "alpha = beta = gamma = 90")
    elif system == "tetragonal":
        if not eq_len(a, b):
            fail("b", "a = b")
        for col, x in right:
            if not eq_ang(x, 90):
                fail(col, "alpha = beta = gamma = 90")
    elif system == "orthorhombic":
        for col, x in right:
            if not eq_ang(x, 90):
                fail(col, "alpha = beta = gamma = 90")
    elif system in ("hexagonal", "trigonal") and sg_hex_axes is not False:
        if not eq_len(a, b):
            fail("b", "a = b (hexagonal axes)")
        for col, x in right[:2]:
            if not eq_ang(x, 90):
                fail(col, "alpha = beta = 90 and gamma = 120 (hexagonal axes)")
        if not eq_ang(ga, 120):
            fail("gamma", "alpha = beta = 90 and gamma = 120 (hexagonal axes)")
    elif system in ("hexagonal", "trigonal"):  # rhombohedral axes
        if not (eq_len(a, b) and eq_len(a, c)):
            fail("b", "a = b = c (rhombohedral axes)")
        if not (eq_ang(al, be) and eq_ang(al, ga)):
            fail("beta", "alpha = beta = gamma (rhombohedral axes)")
    elif system == "monoclinic":
        n90 = sum(eq_ang(x, 90) for _, x in right)
        if n90 < 2:
            fail("alpha", "two of alpha, beta, gamma equal to 90")


def _no_formula(r: _Row, col: str, value: str) -> str:
    """Refuse a name that a spreadsheet would run as a formula (``= + - @``, tab, CR, control)."""
    if value and (value[0] in "=+-@" or ord(value[0]) < 32 or ord(value[0]) == 127):
        raise CardDatabaseError(
            f"{_where(r, col)}: {value[:20]!r} starts with {value[0]!r}; names may not start with "
            "= + - @ or a control character (a spreadsheet would run them as a formula)"
        )
    return value


def _parse_phase(r: _Row) -> tuple[Phase, str]:
    card_id = _no_formula(r, "card_id", _text(r, "card_id", required=True))
    name = _no_formula(r, "name", _text(r, "name", required=True))
    formula = _text(r, "formula", required=False)
    system_raw = _text(r, "crystal_system", required=True)
    system = _SYSTEM_ALIASES.get(system_raw.lower(), system_raw.lower())
    if system not in _CRYSTAL_SYSTEMS:
        raise CardDatabaseError(
            f"{_where(r, 'crystal_system')}: unknown crystal system {system_raw!r} "
            f"(expected one of {', '.join(_CRYSTAL_SYSTEMS)})"
        )
    sg_text = _text(r, "space_group", required=True)
    try:
        sg = resolve_space_group(sg_text)
    except CardDatabaseError:
        raise CardDatabaseError(
            f"{_where(r, 'space_group')}: unknown space group {sg_text!r} "
            "(expected a Hermann-Mauguin symbol such as Fd-3m, P4132, R-3c, Pbnm)"
        ) from None
    number = _integer(r, "space_group_number", lo=1, hi=230)
    if number != sg.number:
        raise CardDatabaseError(
            f"{_where(r, 'space_group_number')}: space group {sg_text!r} is number {sg.number}, "
            f"not {number}"
        )
    sg_system = sg.crystal_system_str()
    if not _system_matches(system, sg_system):
        raise CardDatabaseError(
            f"{_where(r, 'crystal_system')}: space group {sg_text!r} is {sg_system}, "
            f"not {system_raw}"
        )
    lengths = [
        _number(r, col, lo=0.0, hi=1000.0, lo_open=True, unit="Angstrom") for col in ("a", "b", "c")
    ]
    angles = [
        _number(r, col, lo=0.0, hi=180.0, lo_open=True, unit="deg")
        for col in ("alpha", "beta", "gamma")
    ]
    for col, x in zip(("alpha", "beta", "gamma"), angles, strict=True):
        if x is not None and x >= 180.0:
            raise CardDatabaseError(f"{_where(r, col)}: expected an angle below 180 deg, got {x:g}")
    try:
        cell = UnitCell.from_angstrom(*lengths, *angles)  # type: ignore[arg-type]
    except CardDatabaseError as exc:
        raise CardDatabaseError(f"{_where(r, 'alpha')}: {exc}") from None
    hex_axes = None
    if sg_system == "trigonal" and sg.ext in ("H", "R"):
        hex_axes = sg.ext == "H"
    elif sg_system in ("trigonal", "hexagonal"):
        hex_axes = True
    _check_cell(r, system, cell, hex_axes)
    source = _text(r, "source", required=True)
    notes = _text(r, "notes", required=False)
    enabled = _boolean(r, "enabled", default=True)
    phase = Phase(
        card_id=card_id,
        name=name,
        formula=formula,
        crystal_system=system,
        space_group=sg_text,
        space_group_number=number,
        cell=cell,
        source=source,
        notes=notes,
        enabled=bool(enabled),
        reflections=(),
    )
    return phase, sg.xhm()


def _parse_reflection(r: _Row, phase: Phase, xhm: str) -> Reflection:
    hkl = tuple(_integer(r, col, lo=-200, hi=200) for col in ("h", "k", "l"))
    if hkl == (0, 0, 0):
        raise CardDatabaseError(f"{_where(r, 'h')}: (0 0 0) is not a reflection")
    source = _text(r, "source", required=False).lower() or "card"
    if source not in ("card", "computed"):
        raise CardDatabaseError(
            f"{_where(r, 'source')}: expected 'card' or 'computed', got {r.values.get('source')!r}"
        )
    d_calc = float(phase.cell.d_spacing_nm(hkl)) * 10.0
    d_a = _number(r, "d_A", required=False, lo=0.0, hi=1000.0, lo_open=True, unit="Angstrom")
    if d_a is None:
        d_a = d_calc
    elif abs(d_a - d_calc) > CARD_D_TOLERANCE * d_calc:
        raise CardDatabaseError(
            f"{_where(r, 'd_A')}: d = {d_a:g} A but the cell of card {phase.card_id} gives "
            f"d({hkl[0]} {hkl[1]} {hkl[2]}) = {d_calc:.4f} A; check the hkl and the cell"
        )
    intensity = _number(r, "intensity_rel", required=False, lo=0.0, hi=100.0)
    if is_centring_absent(xhm, hkl):
        raise CardDatabaseError(
            f"{_where(r, 'h')}: ({hkl[0]} {hkl[1]} {hkl[2]}) violates the lattice centring of "
            f"{phase.space_group} (not a reflection of this lattice); check the hkl"
        )
    forbidden = _boolean(r, "forbidden", default=None)
    if forbidden is None:
        forbidden = is_forbidden(xhm, hkl)
    return Reflection(
        hkl=hkl,  # type: ignore[arg-type]
        d_nm=d_a / 10.0,
        multiplicity=len(family_members(xhm, hkl)),
        intensity_rel=intensity,
        forbidden=bool(forbidden),
        source=source,
    )


def _build(prows: list[_Row], rrows: list[_Row]) -> tuple[tuple[Phase, ...], tuple[str, ...]]:
    if not prows:
        raise CardDatabaseError("sheet 'phases' has no phases (row 2 onwards is empty)")
    parsed: dict[str, tuple[Phase, str, int]] = {}
    order = []
    for r in prows:
        phase, xhm = _parse_phase(r)
        if phase.card_id in parsed:
            first = parsed[phase.card_id][2]
            raise CardDatabaseError(
                f"{_where(r, 'card_id')}: card_id {phase.card_id!r} already used in row {first}"
            )
        parsed[phase.card_id] = (phase, xhm, r.row)
        order.append(phase.card_id)
    by_card: dict[str, list[_Row]] = {cid: [] for cid in order}
    for r in rrows:
        cid = _text(r, "card_id", required=True)
        if cid not in by_card:
            raise CardDatabaseError(
                f"{_where(r, 'card_id')}: card_id {cid!r} is not in sheet 'phases'"
            )
        by_card[cid].append(r)
    phases = []
    warnings = []
    for cid in order:
        phase, xhm, _ = parsed[cid]
        rows = by_card[cid]
        refl = [_parse_reflection(r, phase, xhm) for r in rows]
        if any(x.source == "card" for x in refl):
            seen: dict[tuple[int, int, int], int] = {}
            for x, r in zip(refl, rows, strict=True):
                if x.hkl in seen:
                    raise CardDatabaseError(
                        f"{_where(r, 'h')}: reflection {x.hkl} of card {cid} already in row "
                        f"{seen[x.hkl]}"
                    )
                seen[x.hkl] = r.row
            reflections = tuple(sorted(refl, key=lambda x: (-x.d_nm, tuple(-i for i in x.hkl))))
        else:
            reflections = computed_reflections(phase.cell, xhm)
            if refl and _stale(refl, reflections):
                warnings.append(
                    f"card {cid}: the computed reflections stored in sheet 'reflections' do not "
                    "match the cell any more; they were recomputed from the cell"
                )
        phases.append(dataclasses.replace(phase, reflections=reflections))
    return tuple(phases), tuple(warnings)


def _stale(stored: Sequence[Reflection], fresh: Sequence[Reflection]) -> bool:
    if len(stored) != len(fresh):
        return True
    fd = {r.hkl: r.d_nm for r in fresh}
    return any(r.hkl not in fd or abs(r.d_nm - fd[r.hkl]) > 1e-6 * fd[r.hkl] for r in stored)


def _checked_phase(phase: Phase) -> Phase:
    """Validate a phase built in code by passing it through the sheet validators.

    Card reflections are kept; a phase without card reflections gets them computed.
    """
    if not isinstance(phase, Phase):
        raise CardDatabaseError(f"expected a Phase, got {type(phase).__name__}")
    pf, rf = CardDatabase(phases=(phase,)).to_frames()
    return CardDatabase.from_frames(pf, rf).phases[0]


def _to_angstrom(x_nm: float) -> float:
    """x_nm * 10 as the shortest decimal that reads back (divided by 10) to exactly x_nm."""
    x_nm = float(x_nm)
    for digits in range(4, 17):
        w = round(x_nm * 10.0, digits)
        if w / 10.0 == x_nm:
            return w
    w = x_nm * 10.0
    for cand in (w, float(np.nextafter(w, np.inf)), float(np.nextafter(w, -np.inf))):
        if cand / 10.0 == x_nm:
            return cand
    return w


def _same_phases(a: Sequence[Phase], b: Sequence[Phase]) -> bool:
    """Equal phases, cells and d-spacings equal to 1e-12 (nm values not reachable from Angstrom)."""
    if len(a) != len(b):
        return False
    for p, q in zip(a, b, strict=True):
        if dataclasses.replace(p, cell=q.cell, reflections=()) != dataclasses.replace(
            q, reflections=()
        ):
            return False
        if not np.allclose(
            [p.cell.a_nm, p.cell.b_nm, p.cell.c_nm, *p.cell.angles_deg],
            [q.cell.a_nm, q.cell.b_nm, q.cell.c_nm, *q.cell.angles_deg],
            rtol=1e-12,
            atol=0,
        ):
            return False
        if len(p.reflections) != len(q.reflections):
            return False
        for r, t in zip(p.reflections, q.reflections, strict=True):
            if dataclasses.replace(r, d_nm=t.d_nm) != t or abs(r.d_nm - t.d_nm) > 1e-12 * t.d_nm:
                return False
    return True


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _write_workbook(db: CardDatabase, path: Path) -> None:
    import openpyxl

    phases, refl = db.to_frames()
    wb = openpyxl.Workbook(write_only=True)
    for title, frame, columns in (
        ("phases", phases, PHASE_COLUMNS),
        ("reflections", refl, REFLECTION_COLUMNS),
    ):
        ws = wb.create_sheet(title)
        ws.append(list(columns))
        for rec in frame.itertuples(index=False, name=None):
            ws.append([_cell_value(v) for v in rec])
    wb.save(path)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _cell_value(v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (numbers.Integral, np.integer)):
        return int(v)
    if isinstance(v, (numbers.Real, np.floating)):
        return float(v)
    s = str(v)
    if s.startswith("="):
        # never write a formula: a leading apostrophe-free text cell is kept as text
        raise CardDatabaseError(f"cannot save text {s[:20]!r}: it would be read as a formula")
    return s


def _remove_stale_temporaries(dest: Path) -> None:
    """Delete ``.<name>.*.tmp`` files left by a save that crashed (the caller holds the lock).

    Every temporary file of a save (the new workbook and the backup copy) is created while the
    lock is held, so under the lock any such file belongs to a writer that died.
    """
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _backup(dest: Path) -> None:
    """Copy ``dest`` to ``<dest>.bak`` atomically (fsynced, same permissions)."""

    def copy(tmp: Path) -> None:
        with open(tmp, "wb") as out, open(dest, "rb") as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _copy_mode(dest, tmp)

    _files.atomic_write(dest.with_name(dest.name + ".bak"), copy, tmp_suffix=".tmp")


def _copy_mode(dest: Path, tmp: Path) -> None:
    """Give the new file the permissions of the file it replaces (else 0666 minus umask)."""
    try:
        mode = dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _file_lock(dest: Path, *, timeout_s: float) -> Iterator[None]:
    """Exclusive inter-process lock for saving ``dest`` (:class:`filelock.FileLock`).

    The lock file lives in ``<tempdir>/hrtem-locks/`` under a name derived from the resolved path
    of ``dest``, so every process saving the same database takes the same lock and nothing is
    left beside the workbook. filelock uses ``flock`` on POSIX and ``msvcrt`` locking on Windows;
    the lock dies with its process.
    """
    import filelock

    lock_path = _lock_path(dest)
    lock = filelock.FileLock(lock_path, timeout=max(0.0, float(timeout_s)), mode=0o666)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise CardDatabaseError(
            f"the card database {dest.name} is being saved by another session "
            f"(lock held for over {timeout_s:g} s); try again in a moment"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _lock_path(dest: Path) -> Path:
    """``<tempdir>/hrtem-locks/<name>-<sha1 of the resolved path>.lock`` (folder created)."""
    folder = Path(tempfile.gettempdir()) / "hrtem-locks"
    if not folder.is_dir():
        with contextlib.suppress(OSError):
            folder.mkdir(mode=0o1777, exist_ok=True)
            os.chmod(folder, 0o1777)  # shared by every user's sessions, like /tmp
    key = hashlib.sha1(str(Path(dest).resolve()).encode("utf-8")).hexdigest()[:16]
    return folder / f"{dest.name}-{key}.lock"
