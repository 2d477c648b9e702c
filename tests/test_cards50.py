"""The 50-phase card fixture (tests/cards50.py) used by the indexing-speed checks (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
from cards50 import EXTRA_PHASES, fifty_phase_database

from hrtem_core.cards import CardDatabase, load_cards


@pytest.fixture(scope="module")
def db() -> CardDatabase:
    """Built once for the module (43 phases validated through the sheet rules)."""
    return fifty_phase_database()


def test_fifty_distinct_phases_over_the_crystal_systems(db):
    assert len(db.phases) == 50
    assert len(set(db.card_ids)) == 50
    assert len(EXTRA_PHASES) == 43
    # The 7 shipped phases come first, unchanged.
    shipped = load_cards()
    assert db.card_ids[:7] == shipped.card_ids
    assert db.phases[:7] == shipped.phases
    systems = {p.crystal_system for p in db.phases}
    assert {"cubic", "hexagonal", "tetragonal", "orthorhombic", "monoclinic"} <= systems
    # Distinct cells: no two phases with the same system, space group and cell.
    keys = {
        (p.crystal_system, p.space_group_number, p.cell.lengths_angstrom, p.cell.angles_deg)
        for p in db.phases
    }
    assert len(keys) == 50
    assert all(p.enabled and p.reflections for p in db.phases)


def test_known_spacings(db):

    def first_allowed(card_id: str):
        return next(r for r in db.phase(card_id).reflections if not r.forbidden)

    # fcc Au: (111) first, d = a / sqrt(3); rutile: (110), d = a / sqrt(2); bcc Fe: (110).
    au = first_allowed("fx-Au")
    assert sorted(map(abs, au.hkl)) == [1, 1, 1]
    assert np.isclose(au.d_nm, 0.40782 / np.sqrt(3), rtol=1e-9)
    rutile = first_allowed("fx-rutile")
    assert sorted(map(abs, rutile.hkl)) == [0, 1, 1] and rutile.hkl[2] == 0
    assert np.isclose(rutile.d_nm, 0.45937 / np.sqrt(2), rtol=1e-9)
    fe = first_allowed("fx-Fe")
    assert np.isclose(fe.d_nm, 0.28665 / np.sqrt(2), rtol=1e-9)
    # Hexagonal ZnO (002) = c / 2; monoclinic CuO (100) = a sin(beta).
    zno = {r.hkl: r.d_nm for r in db.phase("fx-ZnO").reflections}
    assert np.isclose(zno[(0, 0, 2)], 0.52066 / 2, rtol=1e-9)
    cuo = db.phase("fx-CuO")
    assert np.isclose(
        cuo.cell.d_spacing_nm((1, 0, 0)), 0.46837 * np.sin(np.radians(99.54)), rtol=1e-12
    )


def test_round_trip_through_frames(db):
    phases, reflections = db.to_frames()
    assert len(phases) == 50
    back = CardDatabase.from_frames(phases, reflections)
    assert back.card_ids == db.card_ids
    for a, b in zip(back.phases, db.phases, strict=True):
        assert a.space_group_number == b.space_group_number
        assert np.allclose(a.cell.lengths_angstrom, b.cell.lengths_angstrom, rtol=1e-12)
        assert np.allclose(a.cell.angles_deg, b.cell.angles_deg)
        assert [r.hkl for r in a.reflections] == [r.hkl for r in b.reflections]
        assert np.allclose([r.d_nm for r in a.reflections], [r.d_nm for r in b.reflections])
