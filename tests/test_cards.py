"""The card database: the shipped workbook, validation of bad files, atomic saves, concurrency,
spacing candidates. Tests never write the shipped file: they work on copies in tmp_path."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import multiprocessing
import os
import re
import shutil
import threading
import zipfile
from pathlib import Path

import gemmi
import numpy as np
import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hrtem_core import cards as cards_mod
from hrtem_core.cards import (
    DEFAULT_CARDS_PATH,
    PHASE_COLUMNS,
    REFLECTION_COLUMNS,
    CardDatabase,
    Phase,
    file_digest,
    load_cards,
    save_cards,
    spacing_candidates,
)
from hrtem_core.crystallography import Reflection, UnitCell
from hrtem_core.errors import AnalysisParameterError, CardDatabaseError

SHIPPED_IDS = ("39-1346", "19-0629", "33-0664", "29-0713", "44-1415", "34-1266", "13-0087")
CONFLICT = "changed by someone else since you loaded it"


@pytest.fixture(scope="module", autouse=True)
def shipped_file_untouched():
    """The shipped workbook has the same bytes after this module's tests as before."""
    before = file_digest(DEFAULT_CARDS_PATH)
    yield
    assert file_digest(DEFAULT_CARDS_PATH) == before, "a test wrote data/pdf_cards.xlsx"


@pytest.fixture(scope="module")
def shipped() -> CardDatabase:
    return load_cards()


@pytest.fixture
def cards_copy(tmp_path) -> Path:
    dest = tmp_path / "pdf_cards.xlsx"
    shutil.copyfile(DEFAULT_CARDS_PATH, dest)
    return dest


# --------------------------------------------------------------------------------------------
# The shipped database
# --------------------------------------------------------------------------------------------


def test_shipped_database_loads(shipped):
    assert DEFAULT_CARDS_PATH.name == "pdf_cards.xlsx" and DEFAULT_CARDS_PATH.is_file()
    assert shipped.card_ids == SHIPPED_IDS
    assert shipped.digest == file_digest(DEFAULT_CARDS_PATH)
    assert shipped.warnings == ()
    for p in shipped.phases:
        assert p.enabled and p.source and len(p.reflections) >= 10
        assert all(r.source == "computed" and r.intensity_rel is None for r in p.reflections)
        d = [r.d_nm for r in p.reflections]
        assert np.all(np.diff(d) <= 1e-12) and d[-1] >= 0.1  # d descending (ties to 1e-12)
    assert shipped.phase("39-1346").space_group == "P4₁32"
    assert shipped.phase("33-0664").cell.gamma_deg == 120.0
    assert len(shipped.enabled_phases()) == 7
    with pytest.raises(CardDatabaseError, match="no phase with card_id '46-1436'"):
        shipped.phase("46-1436")


def test_shipped_first_ten_families_match_gemmi(shipped):
    """d of each phase's first ten families agrees with gemmi's independent calculation (0.1 %)."""
    for p in shipped.phases:
        g = gemmi.UnitCell(*p.cell.lengths_angstrom, *p.cell.angles_deg)
        ops = gemmi.find_spacegroup_by_name(
            {"P4₁32": "P 41 3 2", "R-3c": "R -3 c:H"}.get(p.space_group, p.space_group)
        ).operations()
        allowed = [r for r in p.reflections if not r.forbidden][:10]
        assert len(allowed) == 10
        for r in allowed:
            assert r.d_nm * 10 == pytest.approx(g.calculate_d(list(r.hkl)), rel=1e-3)
            assert not ops.is_systematically_absent(list(r.hkl))


# The issue's values (Angstrom, degrees), space groups and numbers, typed here independently of
# scripts/build_pdf_cards.py.
ISSUE_PHASES = {
    "39-1346": ("maghemite", "cubic", "P4₁32", 213, (8.3515, 8.3515, 8.3515, 90, 90, 90)),
    "19-0629": ("magnetite", "cubic", "Fd-3m", 227, (8.396, 8.396, 8.396, 90, 90, 90)),
    "33-0664": ("hematite", "trigonal", "R-3c", 167, (5.035, 5.035, 13.75, 90, 90, 120)),
    "29-0713": ("goethite", "orthorhombic", "Pbnm", 62, (4.608, 9.956, 3.0215, 90, 90, 90)),
    "44-1415": ("lepidocrocite", "orthorhombic", "Cmcm", 63, (3.072, 12.516, 3.873, 90, 90, 90)),
    "34-1266": ("akaganeite", "tetragonal", "I4/m", 87, (10.535, 10.535, 3.030, 90, 90, 90)),
    "13-0087": ("feroxyhyte", "hexagonal", "P-3m1", 164, (2.941, 2.941, 4.49, 90, 90, 120)),
}
GEMMI_HM = {  # gemmi names typed by hand (not through resolve_space_group)
    "39-1346": "P 41 3 2",
    "19-0629": "F d -3 m",
    "33-0664": "R -3 c:H",
    "29-0713": "P b n m",
    "44-1415": "C m c m",
    "34-1266": "I 4/m",
    "13-0087": "P -3 m 1",
}


def test_shipped_values_and_sources(shipped):
    """The seven iron oxides carry the issue's cells, with a source and a cross-check each."""
    assert set(shipped.card_ids) == set(ISSUE_PHASES)
    for cid, (name, system, sg, number, cell) in ISSUE_PHASES.items():
        p = shipped.phase(cid)
        assert (p.name, p.crystal_system, p.space_group, p.space_group_number) == (
            name,
            system,
            sg,
            number,
        )
        assert (*p.cell.lengths_angstrom, *p.cell.angles_deg) == pytest.approx(cell, rel=1e-12)
        assert f"ICDD PDF {cid}" in p.source or cid in p.source, p.source
        assert "cross-checked" in p.source and len(p.source) > 80, p.source
        assert p.notes
    # card 46-1436 (phase not confirmed from public sources) is not shipped without a source
    assert "46-1436" not in shipped.card_ids
    doc = (DEFAULT_CARDS_PATH.parents[1] / "docs" / "card-database.md").read_text()
    assert "46-1436" in doc and "not shipped" in doc


def _d_hand(system: str, hkl, a: float, b: float, c: float) -> float:
    """Closed-form d [Angstrom] for the shipped systems (hexagonal axes for trigonal)."""
    h, k, l = hkl  # noqa: E741 - Miller indices
    if system == "cubic":
        return a / math.sqrt(h * h + k * k + l * l)
    if system == "tetragonal":
        return 1 / math.sqrt((h * h + k * k) / a**2 + l * l / c**2)
    if system == "orthorhombic":
        return 1 / math.sqrt(h * h / a**2 + k * k / b**2 + l * l / c**2)
    return 1 / math.sqrt(4 / 3 * (h * h + h * k + k * k) / a**2 + l * l / c**2)


def _gemmi_first_families(cid: str, n: int) -> list[tuple[float, int]]:
    """(d [Angstrom], multiplicity) of the first n allowed families, enumerated with gemmi only."""
    _, _, _, _, cell = ISSUE_PHASES[cid]
    g = gemmi.UnitCell(*cell)
    ops = gemmi.SpaceGroup(GEMMI_HM[cid]).operations()
    d_min = 1.2  # Angstrom: below the 10th family of every shipped phase
    lim = [int(x / d_min) + 1 for x in cell[:3]]
    seen: set[tuple[int, int, int]] = set()
    fams = []
    for h in range(-lim[0], lim[0] + 1):
        for k in range(-lim[1], lim[1] + 1):
            for l in range(-lim[2], lim[2] + 1):  # noqa: E741
                if (h, k, l) == (0, 0, 0) or (h, k, l) in seen:
                    continue
                d = g.calculate_d([h, k, l])
                if d < d_min or ops.is_systematically_absent([h, k, l]):
                    continue
                members = {tuple(op.apply_to_hkl([h, k, l])) for op in ops.sym_ops}
                members |= {(-x, -y, -z) for x, y, z in members}
                seen |= members
                fams.append((d, len(members)))
    fams.sort(key=lambda t: -t[0])
    return fams[:n]


@pytest.mark.parametrize("cid", list(ISSUE_PHASES))
def test_shipped_first_ten_families_independent(shipped, cid):
    """The first ten allowed families of every shipped phase (d and multiplicity) agree with an
    enumeration done with gemmi alone, and with the closed-form d, to 0.1 % (in fact 1e-9)."""
    p = shipped.phase(cid)
    ours = [r for r in p.reflections if not r.forbidden][:10]
    ref = _gemmi_first_families(cid, 10)
    assert len(ours) == len(ref) == 10
    system = ISSUE_PHASES[cid][1]
    a, b, c = ISSUE_PHASES[cid][4][:3]
    worst = 0.0
    for r, (d_ref, mult) in zip(ours, ref, strict=True):
        d = r.d_nm * 10
        worst = max(worst, abs(d - d_ref) / d_ref, abs(d - _d_hand(system, r.hkl, a, b, c)) / d)
        assert r.multiplicity == mult, (cid, r.hkl)
    assert worst < 1e-3
    assert worst < 1e-9  # the stronger figure actually met


def test_shipped_spinels_flag_200_and_600_forbidden(shipped):
    """{200} and {600} of both spinels are kept, flagged forbidden (double diffraction)."""
    for cid in ("19-0629", "39-1346"):
        fam = {r.hkl: r for r in shipped.phase(cid).reflections}
        assert fam[(2, 0, 0)].forbidden and fam[(6, 0, 0)].forbidden, cid
        assert not fam[(4, 0, 0)].forbidden and not fam[(3, 1, 1)].forbidden
        a = ISSUE_PHASES[cid][4][0]
        assert fam[(6, 0, 0)].d_nm * 10 == pytest.approx(a / 6, rel=1e-12)
        # {200}: only on request; {600} coincides with the allowed {442} (36 = 6^2 = 4^2+4^2+2^2)
        for spacing, forbidden_hkl, allowed in (
            (a / 20, (2, 0, 0), set()),
            (a / 60, (6, 0, 0), {(4, 4, 2)}),
        ):
            hit = spacing_candidates(
                shipped, spacing, rel_tol=1e-4, card_ids=[cid], include_forbidden=True
            )
            assert {(c.hkl, c.forbidden) for c in hit} == {(forbidden_hkl, True)} | {
                (h, False) for h in allowed
            }
            plain = spacing_candidates(shipped, spacing, rel_tol=1e-4, card_ids=[cid])
            assert {c.hkl for c in plain} == allowed


def test_shipped_known_lines(shipped):
    """A few textbook lines of the phases (Angstrom, from the cells)."""
    expect = {
        "19-0629": {(3, 1, 1): 2.532, (4, 0, 0): 2.099, (4, 4, 0): 1.484},
        "33-0664": {(1, 0, 4): 2.700, (1, 1, 0): 2.518, (0, 1, 2): 3.684},
        "29-0713": {(1, 1, 0): 4.183, (1, 3, 0): 2.693, (1, 1, 1): 2.450},
        "44-1415": {(0, 2, 0): 6.258, (0, 2, 1): 3.293, (1, 3, 0): 2.474},
        "34-1266": {(1, 1, 0): 7.449, (3, 1, 0): 3.332},
        "13-0087": {(1, 0, 0): 2.547, (0, 0, 1): 4.490},
    }
    for cid, lines in expect.items():
        fam = {r.hkl: r for r in shipped.phase(cid).reflections}
        for hkl, d in lines.items():
            assert fam[hkl].d_nm * 10 == pytest.approx(d, abs=2e-3), (cid, hkl)
    # goethite (010) and (100) are forbidden in Pbnm; lepidocrocite (010) violates C centring
    goe = {r.hkl: r for r in shipped.phase("29-0713").reflections}
    assert goe[(0, 1, 0)].forbidden and goe[(1, 0, 0)].forbidden and not goe[(0, 2, 0)].forbidden
    assert (0, 1, 0) not in {r.hkl for r in shipped.phase("44-1415").reflections}


# --------------------------------------------------------------------------------------------
# Near twins and candidates
# --------------------------------------------------------------------------------------------


def test_maghemite_magnetite_differ_by_half_a_percent_everywhere(shipped):
    mgh = {r.hkl: r.d_nm for r in shipped.phase("39-1346").reflections}
    mag = {r.hkl: r.d_nm for r in shipped.phase("19-0629").reflections}
    common = set(mgh) & set(mag)
    assert len(common) > 20
    ratios = np.array([mag[h] / mgh[h] for h in common])
    np.testing.assert_allclose(ratios, 8.396 / 8.3515, rtol=1e-12)
    assert 0.004 < ratios[0] - 1 < 0.006
    # both stay visible as candidates for a maghemite (311) spacing
    cands = spacing_candidates(shipped, mgh[(3, 1, 1)], rel_tol=0.01)
    keys = [(c.card_id, c.hkl) for c in cands]
    assert ("39-1346", (3, 1, 1)) in keys and ("19-0629", (3, 1, 1)) in keys


def test_maghemite_311_vs_hematite_110(shipped):
    cands = spacing_candidates(shipped, 0.2518, rel_tol=0.002)
    keys = [(c.card_id, c.hkl) for c in cands]
    assert keys[:2] == [("39-1346", (3, 1, 1)), ("33-0664", (1, 1, 0))] or keys[:2] == [
        ("33-0664", (1, 1, 0)),
        ("39-1346", (3, 1, 1)),
    ]
    for c in cands[:2]:
        assert abs(c.rel_residual) < 5e-4
        assert c.d_nm * 10 == pytest.approx(2.518, abs=1e-3)


def test_feroxyhyte_100_vs_akaganeite_211(shipped):
    cands = spacing_candidates(shipped, 0.2548, rel_tol=0.002)
    keys = {(c.card_id, c.hkl) for c in cands}
    assert ("13-0087", (1, 0, 0)) in keys and ("34-1266", (2, 1, 1)) in keys
    by = {(c.card_id, c.hkl): c for c in cands}
    assert by[("13-0087", (1, 0, 0))].d_nm * 10 == pytest.approx(2.547, abs=1e-3)
    assert by[("34-1266", (2, 1, 1))].d_nm * 10 == pytest.approx(2.549, abs=1e-3)


def test_candidates_sorted_signed_and_filtered(shipped):
    cands = spacing_candidates(shipped, 0.25, rel_tol=0.03)
    res = [abs(c.rel_residual) for c in cands]
    assert res == sorted(res) and all(r <= 0.03 for r in res)
    for c in cands:
        assert c.rel_residual == pytest.approx((0.25 - c.d_nm) / c.d_nm, rel=1e-12)
        assert not c.forbidden and c.multiplicity >= 1
    only = spacing_candidates(shipped, 0.25, rel_tol=0.03, card_ids=["19-0629"])
    assert {c.card_id for c in only} == {"19-0629"}
    # forbidden (200) of magnetite only on request (double diffraction)
    d200 = 0.8396 / 2
    assert not any(c.hkl == (2, 0, 0) for c in spacing_candidates(shipped, d200, rel_tol=1e-3))
    with_f = spacing_candidates(shipped, d200, rel_tol=1e-3, include_forbidden=True)
    assert any(c.hkl == (2, 0, 0) and c.forbidden and c.card_id == "19-0629" for c in with_f)
    disabled = shipped.with_phase(dataclasses.replace(shipped.phase("19-0629"), enabled=False))
    assert not any(c.card_id == "19-0629" for c in spacing_candidates(disabled, 0.25))
    assert spacing_candidates(disabled, 0.25, card_ids=["19-0629"])
    with pytest.raises(CardDatabaseError, match="no phase"):
        spacing_candidates(shipped, 0.25, card_ids=["99-9999"])
    for bad in (0.0, -1.0, float("nan"), "0.25"):
        with pytest.raises(AnalysisParameterError, match="spacing_nm"):
            spacing_candidates(shipped, bad)
    with pytest.raises(AnalysisParameterError, match="rel_tol"):
        spacing_candidates(shipped, 0.25, rel_tol=-0.1)


# --------------------------------------------------------------------------------------------
# Editing, saving, round trips
# --------------------------------------------------------------------------------------------


def si_phase(card_id="99-0001") -> Phase:
    cell = UnitCell.from_angstrom(5.4309, 5.4309, 5.4309)
    rows = [  # test data: d from the cell, intensities arbitrary
        Reflection((1, 1, 1), 0.31355, 8, 100.0, False, "card"),
        Reflection((2, 2, 0), 0.19201, 12, 55.0, False, "card"),
        Reflection((3, 1, 1), 0.16375, 24, 30.0, False, "card"),
        Reflection((2, 0, 0), 0.27155, 6, None, True, "card"),
    ]
    return Phase(
        card_id=card_id,
        name="silicon (test)",
        formula="Si",
        crystal_system="cubic",
        space_group="Fd-3m",
        space_group_number=227,
        cell=cell,
        source="test",
        notes="",
        enabled=True,
        reflections=tuple(rows),
    )


def test_round_trip_exact(cards_copy):
    db = load_cards(cards_copy)
    original = cards_copy.read_bytes()
    edited = (
        db.with_phase(dataclasses.replace(db.phase("29-0713"), notes="edited", enabled=False))
        .without_phase("13-0087")
        .with_phase(si_phase())
    )
    assert edited.digest == db.digest and edited.path == cards_copy
    digest = save_cards(edited, cards_copy)
    assert digest == hashlib.sha256(cards_copy.read_bytes()).hexdigest()
    again = load_cards(cards_copy)
    assert again.phases == edited.phases
    assert again.digest == digest
    si = again.phase("99-0001")
    assert [r.hkl for r in si.reflections] == [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1)]
    assert si.reflections[0].intensity_rel == 100.0 and si.reflections[0].source == "card"
    assert si.reflections[1].forbidden and si.reflections[1].intensity_rel is None
    assert again.phase("29-0713").notes == "edited" and not again.phase("29-0713").enabled
    # backup holds the previous version
    assert (cards_copy.parent / "pdf_cards.xlsx.bak").read_bytes() == original
    # a second save of the same database round-trips too
    d2 = save_cards(again, cards_copy)
    assert load_cards(cards_copy).phases == edited.phases
    assert d2 == file_digest(cards_copy)
    # frames round trip
    assert CardDatabase.from_frames(*again.to_frames()).phases == again.phases
    # no temporary or lock files left behind
    assert sorted(p.name for p in cards_copy.parent.iterdir()) == [
        "pdf_cards.xlsx",
        "pdf_cards.xlsx.bak",
    ]


def test_with_computed_reflections_and_cell_edit(cards_copy):
    db = load_cards(cards_copy).with_phase(si_phase())
    comp = db.with_computed_reflections("99-0001").phase("99-0001")
    assert all(r.source == "computed" for r in comp.reflections)
    assert len(comp.reflections) > 10
    # editing the cell of a computed phase recomputes its reflections
    p = db.phase("19-0629")
    bigger = db.with_phase(dataclasses.replace(p, cell=UnitCell.from_angstrom(8.5, 8.5, 8.5)))
    r311 = {r.hkl: r for r in bigger.phase("19-0629").reflections}[(3, 1, 1)]
    assert r311.d_nm == pytest.approx(0.85 / math.sqrt(11), rel=1e-12)
    with pytest.raises(CardDatabaseError, match="no phase"):
        db.without_phase("nope")
    with pytest.raises(CardDatabaseError, match="appears twice"):
        CardDatabase(phases=(p, p))
    # a bad phase built in code is refused with the sheet's vocabulary
    with pytest.raises(CardDatabaseError, match="column 'space_group_number'"):
        db.with_phase(dataclasses.replace(p, space_group_number=225))


def test_stale_computed_rows_are_recomputed_with_a_warning(cards_copy):
    wb = openpyxl.load_workbook(cards_copy)
    ws = wb["phases"]
    col = [c.value for c in ws[1]].index("a") + 1
    for name in ("a", "b", "c"):  # magnetite, row 3
        ws.cell(row=3, column=[c.value for c in ws[1]].index(name) + 1, value=8.40)
    wb.save(cards_copy)
    assert col
    db = load_cards(cards_copy)
    assert any("19-0629" in w and "recomputed" in w for w in db.warnings)
    r = {x.hkl: x for x in db.phase("19-0629").reflections}[(4, 0, 0)]
    assert r.d_nm == pytest.approx(0.21, rel=1e-12)


def test_failed_save_leaves_previous_file_intact(cards_copy, monkeypatch):
    db = load_cards(cards_copy)
    before = cards_copy.read_bytes()
    edited = db.without_phase("13-0087")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cards_mod.os, "replace", boom)
    with pytest.raises(CardDatabaseError, match="previous file is unchanged"):
        save_cards(edited, cards_copy)
    monkeypatch.undo()
    assert cards_copy.read_bytes() == before
    assert load_cards(cards_copy).phases == db.phases
    assert not [p for p in cards_copy.parent.iterdir() if p.name.endswith((".tmp", ".lock"))]

    def half_written(db_, path):
        Path(path).write_bytes(b"PK\x03\x04 truncated")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cards_mod, "_write_workbook", half_written)
    with pytest.raises(CardDatabaseError, match="cannot save"):
        save_cards(edited, cards_copy)
    monkeypatch.undo()
    assert cards_copy.read_bytes() == before
    # a writer that produces an unreadable file is caught by the read-back validation
    monkeypatch.setattr(
        cards_mod, "_write_workbook", lambda db_, path: Path(path).write_bytes(b"garbage")
    )
    with pytest.raises(CardDatabaseError, match=r"not an \.xlsx"):
        save_cards(edited, cards_copy)
    monkeypatch.undo()
    assert cards_copy.read_bytes() == before
    # and the original still saves fine afterwards
    save_cards(edited, cards_copy)
    assert load_cards(cards_copy).card_ids == SHIPPED_IDS[:-1]


@pytest.mark.parametrize("where", ["writer bug", "backup", "read-back", "fsync"])
def test_failure_at_each_step_of_a_save_leaves_previous_file(cards_copy, monkeypatch, where):
    """A failure injected at each step before the final rename: one-line CardDatabaseError,
    previous bytes untouched and loadable, no temporary or lock file left, next save works."""
    db = load_cards(cards_copy)
    before = cards_copy.read_bytes()
    edited = db.without_phase("13-0087")
    real_write = cards_mod._write_workbook

    def bug(db_, path):  # a non-OSError bug in the writer, after half a file
        Path(path).write_bytes(b"PK\x03\x04")
        raise ValueError("writer bug")

    def bad_backup(dest):
        raise OSError(28, "No space left on device")

    def bad_readback(data, name):
        raise CardDatabaseError("card database: read-back check failed")

    def bad_fsync(db_, path):
        real_write(db_, path)
        raise OSError(5, "Input/output error")

    patch = {
        "writer bug": ("_write_workbook", bug),
        "backup": ("_backup", bad_backup),
        "read-back": ("_load_bytes", bad_readback),
        "fsync": ("_write_workbook", bad_fsync),
    }[where]
    monkeypatch.setattr(cards_mod, *patch)
    with pytest.raises(CardDatabaseError) as info:
        save_cards(edited, cards_copy)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert cards_copy.read_bytes() == before
    assert load_cards(cards_copy).phases == db.phases
    assert sorted(p.name for p in cards_copy.parent.iterdir()) == ["pdf_cards.xlsx"]
    save_cards(edited, cards_copy)  # the lock was released
    assert load_cards(cards_copy).card_ids == SHIPPED_IDS[:-1]


def _die_while_saving(path: str) -> None:
    """Child process: start a save and get killed half-way through writing the new file."""

    def half_then_die(db_, tmp):
        Path(tmp).write_bytes(b"PK\x03\x04 half a workbook")
        os._exit(9)

    cards_mod._write_workbook = half_then_die
    db = load_cards(path)
    save_cards(db.without_phase("13-0087"), path)


def test_writer_killed_mid_save(cards_copy):
    """A process killed in the middle of a save: the file is intact, the lock dies with the
    process, and the next save removes the orphaned temporary file."""
    before = cards_copy.read_bytes()
    proc = multiprocessing.get_context("fork").Process(
        target=_die_while_saving, args=(str(cards_copy),)
    )
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 9
    assert cards_copy.read_bytes() == before
    orphans = [p.name for p in cards_copy.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(orphans) == 1
    db = load_cards(cards_copy)
    save_cards(db.without_phase("34-1266"), cards_copy, lock_timeout_s=5)
    assert "34-1266" not in load_cards(cards_copy).card_ids
    assert sorted(p.name for p in cards_copy.parent.iterdir()) == [
        "pdf_cards.xlsx",
        "pdf_cards.xlsx.bak",
    ]


def test_conflicting_edit_is_refused(cards_copy):
    a = load_cards(cards_copy)
    b = load_cards(cards_copy)
    save_cards(a.without_phase("13-0087"), cards_copy)
    with pytest.raises(CardDatabaseError, match=CONFLICT):
        save_cards(b.without_phase("34-1266"), cards_copy)
    with pytest.raises(CardDatabaseError, match=CONFLICT):
        save_cards(b, cards_copy, expected_digest="0" * 64)
    # explicit digest of the current file is accepted
    b2 = load_cards(cards_copy)
    save_cards(b2.without_phase("34-1266"), cards_copy, expected_digest=b2.digest)
    assert load_cards(cards_copy).card_ids == SHIPPED_IDS[:5]
    # the file vanished meanwhile: also a conflict
    c = load_cards(cards_copy)
    cards_copy.unlink()
    with pytest.raises(CardDatabaseError, match=CONFLICT):
        save_cards(c, cards_copy)


def test_save_into_missing_folder(tmp_path, shipped):
    with pytest.raises(CardDatabaseError, match="does not exist"):
        save_cards(shipped, tmp_path / "nope" / "cards.xlsx")


# --------------------------------------------------------------------------------------------
# Concurrent saves
# --------------------------------------------------------------------------------------------

STRESS_REPEATS = int(os.environ.get("HRTEM_STRESS_REPEATS", "1"))
N_WRITERS = 8


def _small_db(path: Path) -> Path:
    full = load_cards(DEFAULT_CARDS_PATH)
    save_cards(CardDatabase(phases=(full.phase("13-0087"),)), path)
    return path


def _writer(path: str, index: int, barrier, results) -> None:
    """Load, add one phase, save; on a conflict reload and try again. Report the outcome."""
    conflicts = 0
    try:
        barrier.wait(timeout=30)
        for _ in range(200):
            db = load_cards(path)
            phase = dataclasses.replace(
                db.phase("13-0087"), card_id=f"T-{index}", name=f"writer {index}"
            )
            try:
                save_cards(db.with_phase(phase), path)
            except CardDatabaseError as exc:
                if CONFLICT not in str(exc):
                    results.put((index, "error", str(exc), conflicts))
                    return
                conflicts += 1
                continue
            results.put((index, "landed", "", conflicts))
            return
        results.put((index, "gave up", "", conflicts))
    except Exception as exc:
        results.put((index, "error", f"{type(exc).__name__}: {exc}", conflicts))


def _check_outcome(path: Path, outcomes: list) -> int:
    assert len(outcomes) == N_WRITERS
    bad = [o for o in outcomes if o[1] != "landed"]
    assert not bad, bad
    db = load_cards(path)  # always a valid file
    expected = {"13-0087"} | {f"T-{i}" for i in range(N_WRITERS)}
    assert set(db.card_ids) == expected, "an edit was lost"
    return sum(o[3] for o in outcomes)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_concurrent_saves_never_lose_an_edit(tmp_path, kind):
    """8 writers save at once, HRTEM_STRESS_REPEATS times (default 1): every edit lands (after
    'changed since loaded' retries), the file is valid throughout, no temporary files remain."""
    total_conflicts = 0
    for rep in range(STRESS_REPEATS):
        path = _small_db(tmp_path / f"{kind}-{rep}.xlsx")
        if kind == "threads":
            import queue

            results: queue.Queue = queue.Queue()
            barrier = threading.Barrier(N_WRITERS + 1)
            stop = threading.Event()
            reader_errors: list[str] = []

            def reader(path=path, stop=stop, reader_errors=reader_errors) -> None:
                while not stop.is_set():
                    try:
                        load_cards(path)
                    except Exception as exc:
                        reader_errors.append(repr(exc))

            workers = [
                threading.Thread(target=_writer, args=(str(path), i, barrier, results))
                for i in range(N_WRITERS)
            ]
            rt = threading.Thread(target=reader)
            for w in workers:
                w.start()
            rt.start()
            barrier.wait(timeout=30)
            for w in workers:
                w.join(timeout=120)
            stop.set()
            rt.join(timeout=30)
            assert not reader_errors, reader_errors[:3]
            outcomes = [results.get_nowait() for _ in range(results.qsize())]
        else:
            ctx = multiprocessing.get_context("fork")
            results = ctx.Queue()
            barrier = ctx.Barrier(N_WRITERS)
            procs = [
                ctx.Process(target=_writer, args=(str(path), i, barrier, results))
                for i in range(N_WRITERS)
            ]
            for p in procs:
                p.start()
            outcomes = [results.get(timeout=120) for _ in range(N_WRITERS)]
            for p in procs:
                p.join(timeout=30)
                assert p.exitcode == 0
        total_conflicts += _check_outcome(path, outcomes)
        leftovers = [p.name for p in tmp_path.iterdir() if p.suffix in (".tmp", ".lock")]
        assert not leftovers, leftovers
    # the writers did collide: the conflict path was exercised
    assert total_conflicts > 0
    print(f"{kind}: {STRESS_REPEATS} x {N_WRITERS} writers, {total_conflicts} reload refusals")


# --------------------------------------------------------------------------------------------
# Bad databases: every problem is a CardDatabaseError naming sheet, row and column
# --------------------------------------------------------------------------------------------


def _col(ws, name: str) -> int:
    return [c.value for c in ws[1]].index(name) + 1


def _mutate(path: Path, fn) -> Path:
    wb = openpyxl.load_workbook(path)
    fn(wb)
    wb.save(path)
    return path


def _set(sheet: str, row: int, column: str, value):
    def fn(wb):
        ws = wb[sheet]
        ws.cell(row=row, column=_col(ws, column)).value = value

    return fn


def _rename(sheet: str, old: str, new: str):
    def fn(wb):
        ws = wb[sheet]
        ws.cell(row=1, column=_col(ws, old), value=new)

    return fn


def _drop_sheet(name: str):
    def fn(wb):
        del wb[name]

    return fn


def _card_row(sheet_cells):
    def fn(wb):
        ws = wb["reflections"]
        for col, v in sheet_cells.items():
            ws.cell(row=2, column=_col(ws, col)).value = v

    return fn


BAD_CASES = {
    "missing sheet": (_drop_sheet("reflections"), r"sheet 'reflections' is missing"),
    "missing phases sheet": (_drop_sheet("phases"), r"sheet 'phases' is missing"),
    "renamed sheet": (
        lambda wb: setattr(wb["phases"], "title", "phase cards"),
        r"sheet 'phases' is missing \(found: 'phase cards', 'reflections'\)",
    ),
    "renamed column": (_rename("phases", "a", "a_A"), r"sheet 'phases', row 1: column\(s\) 'a'"),
    "renamed reflection column": (
        _rename("reflections", "d_A", "d (A)"),
        r"sheet 'reflections', row 1: column\(s\) 'd_A'",
    ),
    "text in numeric": (_set("phases", 2, "a", "8.35 A"), r"sheet 'phases', row 2, column 'a'"),
    "number as text": (_set("phases", 3, "gamma", "90"), r"sheet 'phases', row 3, column 'gamma'"),
    "text in hkl": (_set("reflections", 5, "k", "one"), r"sheet 'reflections', row 5, column 'k'"),
    "bool in numeric": (_set("phases", 2, "c", True), r"sheet 'phases', row 2, column 'c'"),
    "negative lattice constant": (
        _set("phases", 4, "c", -13.75),
        r"sheet 'phases', row 4, column 'c'.*> 0",
    ),
    "zero lattice constant": (_set("phases", 5, "b", 0), r"sheet 'phases', row 5, column 'b'"),
    "missing lattice constant": (
        _set("phases", 6, "a", None),
        r"sheet 'phases', row 6, column 'a'",
    ),
    "formula cell": (
        _set("phases", 2, "a", "=8.35*1"),
        r"sheet 'phases', row 2, column 'a': formula",
    ),
    "formula in reflections": (
        _set("reflections", 3, "d_A", "=SUM(1,2)"),
        r"sheet 'reflections', row 3, column 'd_A': formula",
    ),
    "formula in an extra column": (
        lambda wb: wb["phases"].cell(row=2, column=30, value='=WEBSERVICE("http://x")'),
        r"sheet 'phases', row 2, .*formula",
    ),
    "duplicate card id": (
        _set("phases", 3, "card_id", "39-1346"),
        r"sheet 'phases', row 3, column 'card_id'.*already used in row 2",
    ),
    "inconsistent cubic cell": (
        _set("phases", 2, "b", 8.40),
        r"sheet 'phases', row 2, column 'b'.*cubic cell needs a = b = c",
    ),
    "hexagonal gamma 90": (
        _set("phases", 4, "gamma", 90.0),
        r"sheet 'phases', row 4, column 'gamma'.*gamma = 120",
    ),
    "orthorhombic angle": (
        _set("phases", 5, "beta", 95.0),
        r"sheet 'phases', row 5, column 'beta'.*orthorhombic",
    ),
    "tetragonal a != b": (
        _set("phases", 7, "b", 10.0),
        r"sheet 'phases', row 7, column 'b'.*tetragonal",
    ),
    "non-integer hkl": (
        _set("reflections", 2, "h", 1.5),
        r"sheet 'reflections', row 2, column 'h'.*whole number",
    ),
    "zero hkl": (
        _card_row({"h": 0, "k": 0, "l": 0}),
        r"sheet 'reflections', row 2, column 'h'.*\(0 0 0\)",
    ),
    "unknown space group": (
        _set("phases", 2, "space_group", "P4_1 32x"),
        r"sheet 'phases', row 2, column 'space_group'.*unknown space group",
    ),
    "space group number mismatch": (
        _set("phases", 3, "space_group_number", 225),
        r"sheet 'phases', row 3, column 'space_group_number'.*227",
    ),
    "crystal system mismatch": (
        _set("phases", 5, "crystal_system", "tetragonal"),
        r"sheet 'phases', row 5, column 'crystal_system'.*orthorhombic",
    ),
    "unknown crystal system": (
        _set("phases", 5, "crystal_system", "cubicish"),
        r"sheet 'phases', row 5, column 'crystal_system'",
    ),
    "angle out of range": (
        _set("phases", 2, "alpha", 190),
        r"sheet 'phases', row 2, column 'alpha'",
    ),
    "missing source": (
        _set("phases", 2, "source", None),
        r"sheet 'phases', row 2, column 'source'",
    ),
    "bad enabled": (
        _set("phases", 2, "enabled", "maybe"),
        r"sheet 'phases', row 2, column 'enabled'",
    ),
    "unknown card in reflections": (
        _set("reflections", 2, "card_id", "00-0000"),
        r"sheet 'reflections', row 2, column 'card_id'.*not in sheet 'phases'",
    ),
    "bad reflection source": (
        _set("reflections", 2, "source", "typed"),
        r"sheet 'reflections', row 2, column 'source'",
    ),
    "card d disagrees with cell": (
        _card_row({"h": 1, "k": 1, "l": 1, "d_A": 2.95, "source": "card"}),
        r"sheet 'reflections', row 2, column 'd_A'.*d\(1 1 1\)",
    ),
    "intensity out of range": (
        _card_row({"h": 1, "k": 1, "l": 1, "d_A": 4.82, "source": "card", "intensity_rel": 150}),
        r"sheet 'reflections', row 2, column 'intensity_rel'",
    ),
    "centring-absent card hkl": (
        lambda wb: (
            _set("reflections", 2, "card_id", "19-0629")(wb),
            _card_row({"h": 1, "k": 0, "l": 0, "d_A": 8.396, "source": "card"})(wb),
        ),
        r"sheet 'reflections', row 2, column 'h'.*centring",
    ),
    "no phases": (
        lambda wb: wb["phases"].delete_rows(2, 20),
        r"sheet 'phases' has no phases",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_database_matrix(cards_copy, case):
    fn, pattern = BAD_CASES[case]
    _mutate(cards_copy, fn)
    with pytest.raises(CardDatabaseError, match=pattern) as info:
        load_cards(cards_copy)
    assert "\n" not in str(info.value)


# The six card-database rows of the bad-input matrix (issue 9), through the CLI: exit code 2 and
# one line "error: ..." on stderr that names the sheet, row and column.
CLI_ROWS = {
    "missing sheet": r"sheet 'reflections' is missing",
    "renamed column": r"sheet 'phases', row 1: column\(s\) 'a' missing",
    "text in numeric": r"sheet 'phases', row 2, column 'a': expected a number",
    "negative lattice constant": r"sheet 'phases', row 4, column 'c'",
    "formula cell": r"sheet 'phases', row 2, column 'a': formula cells are not allowed",
    "duplicate card id": r"sheet 'phases', row 3, column 'card_id'.*already used in row 2",
}


@pytest.mark.parametrize("case", list(CLI_ROWS))
def test_bad_database_through_the_cli(cards_copy, capsys, case):
    from hrtem_core.cli import main

    _mutate(cards_copy, BAD_CASES[case][0])
    image = cards_copy.parent / "image.tif"
    image.write_bytes(b"not read: the card database is checked first")
    code = main(["analyze", str(image), "--cards", str(cards_copy), "--out", str(image.parent)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(CLI_ROWS[case], lines[0]), lines[0]
    assert "Traceback" not in err


def test_external_link_is_refused_not_followed(cards_copy):
    """An external-link part in the package is refused outright (never followed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(cards_copy) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr(
            "xl/externalLinks/externalLink1.xml",
            '<externalLink xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            '<externalBook r:id="rId1" xmlns:r="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships"/></externalLink>',
        )
    cards_copy.write_bytes(buf.getvalue())
    with pytest.raises(CardDatabaseError, match="external link"):
        load_cards(cards_copy)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "not an .xlsx"),
        (b"card_id,name\n1,2\n", "not an .xlsx"),
        (b"PK\x03\x04" + b"\x00" * 100, "not an .xlsx|cannot be opened"),
    ],
)
def test_not_a_workbook(tmp_path, content, pattern):
    p = tmp_path / "cards.xlsx"
    p.write_bytes(content)
    with pytest.raises(CardDatabaseError, match=pattern):
        load_cards(p)


def test_zip_without_workbook(tmp_path):
    p = tmp_path / "cards.xlsx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(CardDatabaseError, match="cannot be opened"):
        load_cards(p)
    with pytest.raises(CardDatabaseError, match="does not exist"):
        load_cards(tmp_path / "missing.xlsx")


def test_user_pasted_card_rows_are_used(cards_copy):
    """A card's own hkl / d / I table replaces the computed reflections of that phase."""

    def fn(wb):
        ws = wb["reflections"]
        # remove magnetite's computed rows and append a pasted card table
        keep = [r for r in ws.iter_rows(min_row=2, values_only=True) if r[0] != "19-0629"]
        ws.delete_rows(2, ws.max_row)
        for r in keep:
            ws.append(list(r))
        for hkl, d, i in [((2, 2, 0), 2.967, 30), ((3, 1, 1), 2.532, 100), ((4, 0, 0), 2.099, 20)]:
            ws.append(["19-0629", *hkl, d, i, "card", None])

    _mutate(cards_copy, fn)
    db = load_cards(cards_copy)
    mag = db.phase("19-0629")
    assert [r.hkl for r in mag.reflections] == [(2, 2, 0), (3, 1, 1), (4, 0, 0)]
    assert [r.intensity_rel for r in mag.reflections] == [30, 100, 20]
    assert mag.reflections[1].d_nm == pytest.approx(0.2532, rel=1e-12)
    assert mag.reflections[1].multiplicity == 24 and not mag.reflections[1].forbidden
    assert (
        db.phase("39-1346").reflections
        == load_cards(DEFAULT_CARDS_PATH).phase("39-1346").reflections
    )


# --------------------------------------------------------------------------------------------
# Hypothesis: random valid cells load; random corruptions are CardDatabaseErrors only
# --------------------------------------------------------------------------------------------

SYSTEM_SG = {
    "cubic": ("Fm-3m", 225),
    "tetragonal": ("I4/m", 87),
    "orthorhombic": ("Pbnm", 62),
    "hexagonal": ("P6₃/mmc", 194),
    "trigonal": ("R-3c", 167),
    "monoclinic": ("P2_1/c", 14),
    "triclinic": ("P-1", 2),
}

length = st.floats(2.0, 9.0).map(lambda x: round(x, 4))


@st.composite
def valid_phase_row(draw):
    system = draw(st.sampled_from(sorted(SYSTEM_SG)))
    a, b, c = draw(length), draw(length), draw(length)
    al = be = ga = 90.0
    if system == "cubic":
        b = c = a
    elif system == "tetragonal":
        b = a
    elif system in ("hexagonal", "trigonal"):
        b, ga = a, 120.0
    elif system == "monoclinic":
        be = round(draw(st.floats(91.0, 120.0)), 3)
    elif system == "triclinic":
        al = round(draw(st.floats(80.0, 100.0)), 3)
        be = round(draw(st.floats(80.0, 100.0)), 3)
        ga = round(draw(st.floats(80.0, 100.0)), 3)
    sg, num = SYSTEM_SG[system]
    return {
        "card_id": draw(st.text("0123456789-", min_size=1, max_size=8)).strip("-") or "1",
        "name": draw(
            st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=20).filter(
                # names starting with = + - @ are refused (formula injection), see test_files.py
                lambda s: s.strip() and s.strip()[0] not in "=+-@"
            )
        ),
        "formula": "X",
        "crystal_system": system,
        "space_group": sg,
        "space_group_number": num,
        "a": a,
        "b": b,
        "c": c,
        "alpha": al,
        "beta": be,
        "gamma": ga,
        "source": "hypothesis",
        "notes": "",
        "enabled": draw(st.booleans()),
    }


EMPTY_REFL = pd.DataFrame(columns=list(REFLECTION_COLUMNS))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_phase_row())
def test_random_valid_cells_load(row):
    db = CardDatabase.from_frames(pd.DataFrame([row], columns=list(PHASE_COLUMNS)), EMPTY_REFL)
    p = db.phases[0]
    assert p.card_id == row["card_id"] and p.name == row["name"].strip()
    assert p.cell.lengths_angstrom == pytest.approx((row["a"], row["b"], row["c"]), rel=1e-12)
    assert p.reflections and p.reflections[0].d_nm >= p.reflections[-1].d_nm >= 0.1
    g = gemmi.UnitCell(row["a"], row["b"], row["c"], row["alpha"], row["beta"], row["gamma"])
    r = p.reflections[0]
    assert r.d_nm * 10 == pytest.approx(g.calculate_d(list(r.hkl)), rel=1e-9)
    # and survives the frames round trip exactly
    assert CardDatabase.from_frames(*db.to_frames()).phases == db.phases


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(valid_phase_row())
def test_random_valid_cells_round_trip_through_xlsx(tmp_path, row):
    db = CardDatabase.from_frames(pd.DataFrame([row], columns=list(PHASE_COLUMNS)), EMPTY_REFL)
    path = tmp_path / "h.xlsx"
    path.unlink(missing_ok=True)
    save_cards(db, path)
    assert load_cards(path).phases == db.phases


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["=1+1", "=A1", "8.35 A", "NaN", "-1", "R-3c", "", " ", "TRUE", "=HYPERLINK(1)"]
    ),
)
NUMERIC = ("space_group_number", "a", "b", "c", "alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def shipped_frames(shipped):
    phases, _ = shipped.to_frames()
    return phases


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(row=st.integers(0, 6), column=st.sampled_from(PHASE_COLUMNS), value=junk)
@example(row=2, column="c", value=1.7477186731864608e-166)  # once a LinAlgError (underflow)
def test_random_corruption_only_raises_card_database_error(shipped_frames, row, column, value):
    frame = shipped_frames.copy().astype(object)
    frame.iat[row, PHASE_COLUMNS.index(column)] = value
    try:
        CardDatabase.from_frames(frame, EMPTY_REFL)
    except CardDatabaseError as exc:
        msg = str(exc)
        assert "\n" not in msg
        assert "sheet 'phases', row " in msg and f"row {row + 2}" in msg, msg
        return
    # accepted: then the corruption must have been harmless
    if column in NUMERIC:
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
        assert math.isfinite(value) and value > 0
        if column == "space_group_number":
            assert value == shipped_frames.iat[row, PHASE_COLUMNS.index(column)]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    row=st.integers(0, 6),
    column=st.sampled_from(NUMERIC),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.text(min_size=1, max_size=10),
        st.floats(max_value=0.0),
        st.just(float("nan")),
        st.just(float("inf")),
    ),
)
def test_invalid_numeric_values_always_refused(shipped_frames, row, column, value):
    frame = shipped_frames.copy().astype(object)
    frame.iat[row, PHASE_COLUMNS.index(column)] = value
    with pytest.raises(CardDatabaseError, match=rf"row {row + 2}, column '{column}'"):
        CardDatabase.from_frames(frame, EMPTY_REFL)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(row=st.integers(2, 8), column=st.sampled_from(PHASE_COLUMNS), value=junk)
def test_random_corruption_in_xlsx(tmp_path, row, column, value):
    path = tmp_path / "c.xlsx"
    shutil.copyfile(DEFAULT_CARDS_PATH, path)
    wb = openpyxl.load_workbook(path)
    ws = wb["phases"]
    if isinstance(value, str):
        value = "".join(ch for ch in value if ch.isprintable())
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    if isinstance(value, int) and abs(value) > 2**53:
        value = str(value)
    ws.cell(row=row, column=_col(ws, column)).value = value
    wb.save(path)
    try:
        db = load_cards(path)
    except CardDatabaseError as exc:
        # refused in one line that points at the cell (or at a reflection the change orphans)
        message = str(exc)
        where = re.match(r"sheet '(phases|reflections)', row (\d+), column '[^']+': \S", message)
        assert where is not None and "\n" not in message, message
        assert where[1] == "reflections" or int(where[2]) == row, message
        return
    # accepted: the value was valid there, and no other phase changed
    shipped = load_cards(DEFAULT_CARDS_PATH)
    assert len(db.phases) == len(shipped.phases)
    changed = [i for i, (a, b) in enumerate(zip(db.phases, shipped.phases, strict=True)) if a != b]
    assert set(changed) <= {row - 2}
