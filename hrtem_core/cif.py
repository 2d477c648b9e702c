"""Cards from CIF files: cell, space group, atom sites -> a validated :class:`~hrtem_core.cards.Phase`.

A CIF (Crystallographic Information File, Hall, Allen & Brown, *Acta Cryst.* A47 (1991) 655) is
read with gemmi (``gemmi.cif.read_string`` and ``gemmi.make_small_structure_from_block``). The
phase gets

* the cell (Angstrom in the CIF, nm inside) and the space group, which gemmi recognises from the
  Hermann-Mauguin symbol, the Hall symbol or the symmetry operators; its crystal system;
* every reflection family with ``d >= d_min_nm`` (default 0.1 nm), glide/screw-forbidden ones
  flagged as in :func:`hrtem_core.crystallography.reflection_families`;
* for each family the **kinematic electron intensity** ``I = |F(hkl)|^2`` scaled so that the
  strongest family has 100 (forbidden families 0), with

  ``F(hkl) = sum_j occ_j f_j(s) exp(-B_j s^2) exp(2 pi i (h x_j + k y_j + l z_j))``,

  ``s = sin(theta) / lambda = 1 / (2 d)``, ``f_j`` the electron scattering factors of
  International Tables C 4.3.2.2 (neutral atoms, via gemmi), ``B_j = 8 pi^2 U_j`` from the CIF's
  ``_atom_site_U_iso_or_equiv`` / ``_atom_site_B_iso_or_equiv`` (or the equivalent isotropic
  ``U_eq`` of ``_atom_site_aniso_U_*``; Fischer & Tillmanns, *Acta Cryst.* C44 (1988) 775), else
  :data:`DEFAULT_B_A2`. The sum runs over every atom of the unit cell: each site is expanded with
  the space group's operators (centring included) and images closer than
  :data:`MERGE_DISTANCE_A` are one atom, at their mean position (a site on a special position
  is counted once; CIF coordinates such as 0.3333 for 1/3 are merged onto 1/3). ``occ_j`` is
  the CIF's ``_atom_site_occupancy`` (the chemical occupancy of the site). This is the simulator's own
  structure factor (:meth:`hrtem_core.simulate.CrystalStructure.structure_factor_nm`), checked
  against ``gemmi.StructureFactorCalculatorE`` in the tests.

  These are intensities of single reflections (no multiplicity, no Lorentz-polarization factor):
  what decides how strong a lattice fringe is in an HRTEM image. They are not X-ray powder
  intensities.

A rhombohedral space group given on rhombohedral axes is converted to hexagonal axes (obverse
setting, ``a_H = a_R - b_R``, ``b_H = b_R - c_R``, ``c_H = a_R + b_R + c_R``), as the shipped
cards are written.

The reflections are stored as ``card`` rows (kept exactly, intensities included, like a card
typed by hand; ``computed`` rows would be regenerated from the cell without intensities on every
load); the phase's ``source`` says that they were computed from the CIF and ``notes`` how.
Every phase goes through the card database's own validation
(:meth:`~hrtem_core.cards.CardDatabase.with_phase`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

from hrtem_core.cards import COMPUTED_D_MIN_NM, CardDatabase, Phase
from hrtem_core.crystallography import (
    Reflection,
    UnitCell,
    reflection_families,
    resolve_space_group,
)
from hrtem_core.errors import CardDatabaseError, HRTEMError
from hrtem_core.simulate import CrystalStructure, Site

__all__ = [
    "CIF_REFLECTION_SOURCE",
    "DEFAULT_B_A2",
    "MAX_CIF_BYTES",
    "MERGE_DISTANCE_A",
    "CifStructure",
    "electron_intensities",
    "import_cif",
    "phase_from_cif",
    "read_cif",
]

#: Largest CIF accepted [bytes] (a CIF of a crystal structure is a few kB).
MAX_CIF_BYTES = 5 * 1024 * 1024
#: Most atoms in the unit cell after symmetry expansion.
MAX_CELL_ATOMS = 20_000
#: Debye-Waller B [A^2] for sites without displacement parameters in the CIF.
DEFAULT_B_A2 = 0.5
#: Symmetry images of a site closer than this [A] are one atom.
MERGE_DISTANCE_A = 0.05
#: ``source`` of the reflection rows (rows kept exactly, with their intensities).
CIF_REFLECTION_SOURCE = "card"
#: Longest phase name / source text taken from a CIF [characters].
_MAX_TEXT = 400
#: A leading character that a spreadsheet reads as the start of a formula.
_FORMULA_START = ("=", "+", "@", "\t", "\r")

_DATABASE_CODE_TAGS = (
    ("_database_code_ICSD", "ICSD"),
    ("_database_code_amcsd", "AMCSD"),
    ("_cod_database_code", "COD"),
    ("_database_code_CSD", "CSD"),
    ("_database_code_depnum_ccdc_archive", "CCDC"),
    ("_database_code_PDF", "PDF"),
)


@dataclass(frozen=True)
class CifStructure:
    """What a CIF data block describes.

    Attributes
    ----------
    block_name : str
        The CIF data block name (``data_<name>``).
    database_code : str
        E.g. ``"ICSD 15840"``, ``"COD 9000139"``; empty if the CIF has none.
    name, formula : str
        Mineral / common / systematic name (the formula if none); ``_chemical_formula_sum``
        without spaces.
    reference : str
        Journal reference (first author, journal, volume, year, first page), or empty.
    cell : UnitCell
        Lattice constants [nm] (hexagonal axes for a rhombohedral lattice).
    space_group : str
        gemmi's extended Hermann-Mauguin symbol with the setting, e.g. ``"F d -3 m:2"``.
    structure : CrystalStructure
        Every atom of the unit cell (space group ``P 1``, sites already expanded).
    b_from_cif : bool
        True when every site has a displacement parameter in the CIF.
    converted_to_hexagonal : bool
        True when rhombohedral axes were converted to hexagonal axes.
    """

    block_name: str
    database_code: str
    name: str
    formula: str
    reference: str
    cell: UnitCell
    space_group: str
    structure: CrystalStructure
    b_from_cif: bool
    converted_to_hexagonal: bool

    @property
    def gemmi_space_group(self) -> gemmi.SpaceGroup:
        """The space group as a ``gemmi.SpaceGroup``."""
        return gemmi.SpaceGroup(self.space_group)

    @property
    def crystal_system(self) -> str:
        """cubic, tetragonal, orthorhombic, hexagonal, trigonal, monoclinic or triclinic."""
        return self.gemmi_space_group.crystal_system_str()

    @property
    def card_space_group(self) -> str:
        """The space-group symbol written on the card: short (``Fd-3m``, ``P21/n``) when that
        resolves to the same setting, else the full symbol without spaces (``P1121/b``)."""
        sg = self.gemmi_space_group
        cands = (sg.short_name(), sg.hm.replace(" ", ""))
        if sg.ext == "H":  # R-3c (hexagonal axes by default), not gemmi's short name H-3c
            cands = cands[::-1]
        for cand in cands:
            try:
                back = resolve_space_group(cand)
            except CardDatabaseError:
                continue
            if back.hm == sg.hm and (sg.ext not in ("H", "R") or back.ext == sg.ext):
                return cand
        return sg.xhm().replace(" ", "")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_cif(data: bytes | str | os.PathLike, *, block: str | None = None) -> CifStructure:
    """Read a crystal structure from a CIF.

    Parameters
    ----------
    data : bytes or path-like
        The CIF's bytes, or the path of a ``.cif`` file (a ``str`` is a path).
    block : str, optional
        Name of the data block to use; default the first block with a cell and atom sites.

    Returns
    -------
    CifStructure

    Raises
    ------
    CardDatabaseError
        One line for anything wrong: too large (> 5 MB), not text, a CIF syntax error (with its
        line), no cell, no atom sites, an unknown element or space group.
    """
    text = _cif_text(data)
    try:
        doc = gemmi.cif.read_string(text)
    except (ValueError, RuntimeError) as exc:
        msg = " ".join(str(exc).split()).replace("string:", "line ", 1)
        raise CardDatabaseError(f"not a valid CIF: {msg}") from None
    blk = _pick_block(doc, block)
    try:
        small = gemmi.make_small_structure_from_block(blk)
    except (ValueError, RuntimeError) as exc:
        raise CardDatabaseError(
            f"CIF block {blk.name!r}: cannot read the structure ({' '.join(str(exc).split())})"
        ) from None
    sg = small.spacegroup
    if sg is None:
        raise CardDatabaseError(
            f"CIF block {blk.name!r}: the space group is missing or not recognised (give "
            "_space_group_name_H-M_alt, _space_group_name_Hall or the symmetry operators)"
        )
    gc = small.cell
    try:
        cell = UnitCell.from_angstrom(gc.a, gc.b, gc.c, gc.alpha, gc.beta, gc.gamma)
    except CardDatabaseError as exc:
        raise CardDatabaseError(f"CIF block {blk.name!r}: {exc.message}") from None
    if not small.sites:
        raise CardDatabaseError(f"CIF block {blk.name!r} has no atom sites (_atom_site_fract_x)")
    sites, b_from_cif = _sites(blk, small, cell)
    converted = False
    if sg.ext == "R":
        sg, cell, sites = _rhombohedral_to_hexagonal(sg, cell, sites)
        converted = True
    atoms = _expand(sites, sg, cell)
    code = _database_code(blk)
    formula = _formula(blk)
    name = _first_text(
        blk, "_chemical_name_mineral", "_chemical_name_common", "_chemical_name_systematic"
    )
    return CifStructure(
        block_name=str(blk.name),
        database_code=code,
        name=name or formula or str(blk.name),
        formula=formula,
        reference=_reference(blk),
        cell=cell,
        space_group=sg.xhm(),
        structure=CrystalStructure(space_group="P 1", sites=atoms, source=f"CIF {blk.name}"),
        b_from_cif=b_from_cif,
        converted_to_hexagonal=converted,
    )


def _cif_text(data: bytes | str | os.PathLike) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > MAX_CIF_BYTES:
            raise CardDatabaseError(
                f"the CIF is {len(raw) / 1e6:.1f} MB; at most {MAX_CIF_BYTES // (1024 * 1024)} "
                "MB is accepted (a crystal structure is a few kB)"
            )
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        try:
            size = path.stat().st_size
            if size > MAX_CIF_BYTES:
                raise CardDatabaseError(
                    f"{path.name} is {size / 1e6:.1f} MB; at most "
                    f"{MAX_CIF_BYTES // (1024 * 1024)} MB is accepted (a CIF is a few kB)"
                )
            with open(path, "rb") as fh:
                raw = fh.read(MAX_CIF_BYTES + 1)
        except FileNotFoundError:
            raise CardDatabaseError(f"CIF file {path} does not exist") from None
        except IsADirectoryError:
            raise CardDatabaseError(f"{path} is a folder, not a CIF file") from None
        except OSError as exc:
            raise CardDatabaseError(
                f"CIF file {path} cannot be read: {exc.strerror or exc}"
            ) from None
        if len(raw) > MAX_CIF_BYTES:
            raise CardDatabaseError(f"{path.name} is larger than {MAX_CIF_BYTES} bytes")
    else:
        raise CardDatabaseError(f"expected the CIF's bytes or its path, got {type(data).__name__}")
    if b"\x00" in raw:
        raise CardDatabaseError("not a CIF: the file is binary (contains NUL bytes)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _pick_block(doc: gemmi.cif.Document, name: str | None) -> gemmi.cif.Block:
    blocks = list(doc)
    if not blocks:
        raise CardDatabaseError("not a CIF: no data block (data_...)")
    if name is not None:
        for b in blocks:
            if b.name == name:
                return b
        raise CardDatabaseError(
            f"the CIF has no data block {name!r} (blocks: {', '.join(b.name for b in blocks)})"
        )
    for b in blocks:
        if b.find_value("_cell_length_a") is not None and b.find_values("_atom_site_fract_x"):
            return b
    raise CardDatabaseError(
        "the CIF has no data block with a cell (_cell_length_a) and atom sites (_atom_site_fract_x)"
    )


def _value(blk: gemmi.cif.Block, tag: str) -> str:
    v = blk.find_value(tag)
    if v is None or gemmi.cif.is_null(v):
        return ""
    return " ".join(gemmi.cif.as_string(v).split())


def _first_text(blk: gemmi.cif.Block, *tags: str) -> str:
    for tag in tags:
        v = _value(blk, tag)
        if v:
            return v[:_MAX_TEXT]
    return ""


def _formula(blk: gemmi.cif.Block) -> str:
    f = _first_text(blk, "_chemical_formula_sum", "_chemical_formula_structural")
    return f.replace(" ", "")


def _database_code(blk: gemmi.cif.Block) -> str:
    for tag, label in _DATABASE_CODE_TAGS:
        v = _value(blk, tag)
        if v:
            return f"{label} {v}"
    for item in blk:  # any other _database_code_*
        pair = item.pair
        if pair is not None and pair[0].lower().startswith("_database_code_"):
            v = pair[1]
            if not gemmi.cif.is_null(v):
                return f"{pair[0][len('_database_code_') :]} {gemmi.cif.as_string(v)}".strip()
    return ""


def _reference(blk: gemmi.cif.Block) -> str:
    authors = [gemmi.cif.as_string(a) for a in blk.find_values("_publ_author_name")]
    authors = [a for a in authors if a and a not in ("?", ".")]
    first = ""
    if authors:
        first = authors[0].split(",")[0].strip() + (" et al." if len(authors) > 1 else "")
    journal = _first_text(blk, "_journal_name_full", "_journal_name_abbrev")
    vol = _value(blk, "_journal_volume")
    year = _value(blk, "_journal_year")
    page = _value(blk, "_journal_page_first")
    parts = [p for p in (first, journal) if p]
    tail = " ".join(x for x in (vol, f"({year})" if year else "", page) if x)
    ref = ", ".join(parts) + (f" {tail}" if tail and parts else tail)
    return ref.strip()[:_MAX_TEXT]


def _number(text: str) -> float | None:
    """A CIF number (standard uncertainty in brackets dropped); None for '?', '.' or text."""
    if gemmi.cif.is_null(text):
        return None
    m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\(\d+\))?\s*", text)
    return float(m.group(1)) if m else None


def _u_eq_a2(aniso: gemmi.SMat33f, cell: UnitCell) -> float:
    """``U_eq = (1/3) sum_ij U^ij a*_i a*_j (a_i . a_j)`` [A^2] (Fischer & Tillmanns 1988)."""
    u = np.array(
        [
            [aniso.u11, aniso.u12, aniso.u13],
            [aniso.u12, aniso.u22, aniso.u23],
            [aniso.u13, aniso.u23, aniso.u33],
        ]
    )
    g = cell.real_metric * 100.0  # A^2
    astar = np.sqrt(np.diag(cell.reciprocal_metric) / 100.0)  # 1/A
    return float(np.sum(u * np.outer(astar, astar) * g) / 3.0)


def _sites(
    blk: gemmi.cif.Block, small: gemmi.SmallStructure, cell: UnitCell
) -> tuple[list[tuple[str, np.ndarray, float, float]], bool]:
    """Asymmetric unit as ``(element, xyz, occupancy, B [A^2])``; True if every B is from the CIF."""
    given_u: dict[str, float] = {}
    table = blk.find("_atom_site_", ["label", "?U_iso_or_equiv", "?B_iso_or_equiv"])
    for row in table:
        label = gemmi.cif.as_string(row[0])
        for col, factor in ((1, 8.0 * math.pi**2), (2, 1.0)):
            if row.has(col):
                x = _number(row[col])
                if x is not None:
                    given_u[label] = x * factor  # B [A^2]
                    break
    out = []
    all_given = True
    for site in small.sites:
        el = site.element
        if el.atomic_number <= 0 or el.atomic_number > 98:
            raise CardDatabaseError(
                f"CIF site {site.label!r}: unknown element {site.type_symbol or site.label!r}"
            )
        name = "H" if el.name == "D" else el.name
        b = given_u.get(site.label)
        if b is None and site.aniso.nonzero():
            b = 8.0 * math.pi**2 * _u_eq_a2(site.aniso, cell)
        if b is None:
            b = DEFAULT_B_A2
            all_given = False
        occ = float(site.occ)
        if not (math.isfinite(occ) and 0.0 <= occ <= 1.0 + 1e-6):
            raise CardDatabaseError(f"CIF site {site.label!r}: occupancy {occ:g} is outside 0..1")
        if not (math.isfinite(b) and -1.0 <= b <= 100.0):
            raise CardDatabaseError(
                f"CIF site {site.label!r}: displacement parameter B = {b:g} A^2 is not plausible"
            )
        xyz = np.array([site.fract.x, site.fract.y, site.fract.z], dtype=float)
        if not np.all(np.isfinite(xyz)):
            raise CardDatabaseError(f"CIF site {site.label!r}: coordinates are not numbers")
        out.append((name, xyz, min(occ, 1.0), max(b, 0.0)))
    return out, all_given


def _rhombohedral_to_hexagonal(
    sg: gemmi.SpaceGroup, cell: UnitCell, sites: list
) -> tuple[gemmi.SpaceGroup, UnitCell, list]:
    """Rhombohedral axes -> hexagonal axes (obverse): ``[a_H b_H c_H] = [a_R b_R c_R] P``."""
    p = np.array([[1, 0, 1], [-1, 1, 1], [0, -1, 1]], dtype=float)
    a_hex = cell.direct_matrix @ p
    lengths = np.linalg.norm(a_hex, axis=0) * 10.0
    a = float(np.mean(lengths[:2]))
    hex_cell = UnitCell.from_angstrom(a, a, float(lengths[2]), 90.0, 90.0, 120.0)
    p_inv = np.linalg.inv(p)
    new_sites = [(el, np.mod(p_inv @ xyz, 1.0), occ, b) for el, xyz, occ, b in sites]
    hex_sg = gemmi.SpaceGroup(sg.hm + ":H")
    return hex_sg, hex_cell, new_sites


def _expand(sites: list, sg: gemmi.SpaceGroup, cell: UnitCell) -> tuple[Site, ...]:
    """Every atom of the unit cell; images closer than MERGE_DISTANCE_A are one atom."""
    ops = list(sg.operations())
    rot = np.array([np.array(op.rot, dtype=float) / gemmi.Op.DEN for op in ops])  # (n, 3, 3)
    tra = np.array([np.array(op.tran, dtype=float) / gemmi.Op.DEN for op in ops])  # (n, 3)
    amat = cell.direct_matrix * 10.0  # A
    out: list[Site] = []
    for el, xyz, occ, b in sites:
        pts = np.mod(rot @ xyz + tra, 1.0)
        first: list[np.ndarray] = []  # one image per atom
        members: list[list[np.ndarray]] = []  # its coinciding images, unwrapped next to it
        for q in pts:
            if first:
                diff = q[None, :] - np.array(first)
                diff -= np.round(diff)
                dist = np.linalg.norm(diff @ amat.T, axis=1)
                j = int(np.argmin(dist))
                if dist[j] < MERGE_DISTANCE_A:
                    members[j].append(first[j] + diff[j])
                    continue
            first.append(q)
            members.append([q])
        for group in members:
            # The mean of the coinciding images is the exact special position (x = 0.3333
            # written for 1/3 becomes 1/3 to the CIF's precision).
            q = np.mod(np.mean(group, axis=0), 1.0)
            out.append(Site(el, (float(q[0]), float(q[1]), float(q[2])), occ, b))
        if len(out) > MAX_CELL_ATOMS:
            raise CardDatabaseError(
                f"the CIF's unit cell holds more than {MAX_CELL_ATOMS} atoms: too large for a card"
            )
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Reflections, intensities, phase
# --------------------------------------------------------------------------------------------


def electron_intensities(
    structure: CrystalStructure, cell: UnitCell, reflections: tuple[Reflection, ...]
) -> np.ndarray:
    """Kinematic electron intensities ``|F(hkl)|^2`` scaled to 100 for the strongest family.

    Parameters
    ----------
    structure : CrystalStructure
    cell : UnitCell
    reflections : tuple of Reflection
        Families (their representative ``hkl`` is used; Friedel's law holds kinematically).

    Returns
    -------
    ndarray, shape (n,)
        0..100; forbidden families 0.
    """
    if not reflections:
        return np.zeros(0)
    hkl = np.array([r.hkl for r in reflections], dtype=float)
    f2 = np.abs(structure.structure_factor_nm(hkl, cell)) ** 2
    forbidden = np.array([r.forbidden for r in reflections], dtype=bool)
    f2[forbidden] = 0.0
    top = float(f2.max())
    if not top > 0.0:
        raise CardDatabaseError("the CIF's structure scatters into no reflection (all |F| = 0)")
    return 100.0 * f2 / top


def phase_from_cif(
    data: bytes | str | os.PathLike,
    *,
    card_id: str | None = None,
    source: str | None = None,
    name: str | None = None,
    notes: str | None = None,
    file_name: str | None = None,
    enabled: bool = True,
    d_min_nm: float = COMPUTED_D_MIN_NM,
    block: str | None = None,
) -> Phase:
    """A validated card (:class:`~hrtem_core.cards.Phase`) from a CIF.

    Parameters
    ----------
    data : bytes or path-like
        The CIF (see :func:`read_cif`).
    card_id : str, optional
        Default: the CIF's database code (``ICSD 15840``, ``COD 9000139``), else its data block
        name.
    source : str, optional
        Default: ``"CIF <file name>: <formula>, <journal reference>"``.
    name, notes : str, optional
        Default: the CIF's mineral/common/systematic name; how the reflections were computed.
    file_name : str, optional
        File name for the default source (default: the path's name; ``"upload"`` for bytes).
    enabled : bool
        Whether the phase takes part in indexing.
    d_min_nm : float
        Smallest spacing listed [nm] (default 0.1 nm).
    block : str, optional
        CIF data block (default: the first with a cell and atom sites).

    Returns
    -------
    Phase
        Passed through the card database's validation; reflections d descending, rows of source
        :data:`CIF_REFLECTION_SOURCE` with ``intensity_rel`` the kinematic electron intensities.

    Raises
    ------
    CardDatabaseError
        Bad CIF, or a card that does not validate (e.g. text that a spreadsheet would read as a
        formula).
    """
    cs = read_cif(data, block=block)
    if file_name is None:
        file_name = Path(data).name if isinstance(data, (str, os.PathLike)) else "upload"
    cid = _user_text(card_id, "card id") or cs.database_code or cs.block_name
    src = _user_text(source, "source") or default_source(cs, file_name=file_name)
    reflections = reflection_families(
        cs.cell, cs.space_group, d_min_nm=d_min_nm, include_forbidden=True
    )
    intensities = electron_intensities(cs.structure, cs.cell, reflections)
    rows = tuple(
        dataclasses.replace(r, intensity_rel=round(float(i), 3), source=CIF_REFLECTION_SOURCE)
        for r, i in zip(reflections, intensities, strict=True)
    )
    phase = Phase(
        card_id=cid,
        name=_user_text(name, "name") or cs.name,
        formula=cs.formula,
        crystal_system=cs.crystal_system,
        space_group=cs.card_space_group,
        space_group_number=int(cs.gemmi_space_group.number),
        cell=cs.cell,
        source=src,
        notes=_user_text(notes, "notes") or default_notes(cs, d_min_nm=d_min_nm),
        enabled=bool(enabled),
        reflections=rows,
    )
    try:
        checked = CardDatabase(phases=()).with_phase(phase).phases[0]
    except HRTEMError as exc:
        raise CardDatabaseError(f"the card from the CIF is not valid: {exc.message}") from None
    for field_name in ("card_id", "name", "formula", "source", "notes"):
        _check_cell_text(getattr(checked, field_name), field_name)
    return checked


def default_source(cs: CifStructure, *, file_name: str) -> str:
    """``"CIF <file>: <formula>, <reference>"`` (what the source column says by default)."""
    bits = [b for b in (cs.formula, cs.database_code, cs.reference) if b]
    text = f"CIF {file_name}" + (": " + ", ".join(bits) if bits else "")
    return text[:_MAX_TEXT]


def default_notes(cs: CifStructure, *, d_min_nm: float = COMPUTED_D_MIN_NM) -> str:
    """How the card's reflections and intensities were computed."""
    dw = (
        "Debye-Waller from the CIF"
        if cs.b_from_cif
        else f"B = {DEFAULT_B_A2:g} A^2 where the CIF gives no displacement parameter"
    )
    text = (
        f"Computed from the CIF (block {cs.block_name}, {cs.space_group}, "
        f"{len(cs.structure.sites)} atoms per cell): reflections with d >= {d_min_nm * 10:g} A, "
        "intensity_rel = kinematic electron |F|^2 per reflection (strongest 100; IT C 4.3.2.2 "
        f"scattering factors, {dw}); not X-ray powder intensities."
    )
    if cs.converted_to_hexagonal:
        text += " Rhombohedral axes of the CIF converted to hexagonal axes (obverse)."
    return text


def _user_text(value: str | None, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CardDatabaseError(f"the {what} must be text, got {type(value).__name__}")
    return " ".join(value.split()) if what != "notes" else value.strip()


def _check_cell_text(text: str, what: str) -> None:
    """Refuse text that a spreadsheet would read as a formula (CSV/XLSX injection)."""
    if text.startswith(_FORMULA_START):
        raise CardDatabaseError(
            f"the {what} {text[:20]!r} starts with {text[0]!r}, which a spreadsheet reads as a "
            "formula; change it"
        )


def import_cif(
    db: CardDatabase,
    data: bytes | str | os.PathLike,
    *,
    replace: bool = False,
    **options: object,
) -> tuple[CardDatabase, Phase]:
    """Add the phase of a CIF to a card database (validated); returns ``(new_db, phase)``.

    ``options`` are those of :func:`phase_from_cif`. A card id already in ``db`` is refused
    unless ``replace=True``.
    """
    phase = phase_from_cif(data, **options)  # type: ignore[arg-type]
    if not replace and phase.card_id in db.card_ids:
        raise CardDatabaseError(
            f"card_id {phase.card_id!r} is already in the card database: choose another card id "
            "or replace it explicitly"
        )
    return db.with_phase(phase), phase
