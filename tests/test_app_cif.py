"""Cards page, CIF import (ui/cif_ui.py) under streamlit.testing: review, edit, add on request.

Runs against a temporary copy of the card database (HRTEM_CARDS_PATH); the shipped
data/pdf_cards.xlsx is never written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from hrtem_core.cards import load_cards
from ui import common

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
SHIPPED_CARDS = REPO / "data" / "pdf_cards.xlsx"
INTENSITY = "intensity (electron |F|², strongest 100)"

#: Gold, fcc, a = 4.0782 A, with a database code and a journal reference.
GOLD_CIF = b"""data_gold
_database_code_amcsd 0011280
_chemical_name_mineral Gold
_chemical_formula_sum Au
loop_
_publ_author_name
'Wyckoff, R. W. G.'
_journal_name_full 'Crystal Structures'
_journal_volume 1
_journal_year 1963
_journal_page_first 7
_cell_length_a 4.0782
_cell_length_b 4.0782
_cell_length_c 4.0782
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'F m -3 m'
loop_
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_U_iso_or_equiv
Au1 0 0 0 0.0076
"""


@pytest.fixture
def cards_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dest = tmp_path / "pdf_cards.xlsx"
    shutil.copyfile(SHIPPED_CARDS, dest)
    monkeypatch.setenv(common.CARDS_ENV, str(dest))
    return dest


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/cards.py").run()
    assert not at.exception
    return at


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _upload(at: AppTest, name: str, data: bytes, n: int = 0) -> AppTest:
    at.file_uploader(key=f"cards_cif_upload_{n}").set_value((name, data, "chemical/x-cif"))
    return at.run()


def test_cif_is_shown_edited_and_added_only_on_request(cards_copy: Path) -> None:
    before = cards_copy.read_bytes()
    at = _upload(_page(), "gold.cif", GOLD_CIF)
    assert not at.exception and not _errors(at), _errors(at)
    refl = next(d.value for d in at.dataframe if INTENSITY in d.value.columns)
    assert (refl.loc[0, "h"], refl.loc[0, "k"], refl.loc[0, "l"]) == (1, 1, 1)
    assert refl.loc[0, INTENSITY] == 100.0 and refl[INTENSITY].is_monotonic_decreasing
    assert refl.loc[0, "d (Å)"] == pytest.approx(4.0782 / 3**0.5, abs=1e-4)
    row = [d.value for d in at.dataframe if "space_group_number" in d.value.columns][-1]
    assert len(row) == 1
    assert row.loc[0, "card_id"] == "AMCSD 0011280" and row.loc[0, "space_group_number"] == 225
    assert cards_copy.read_bytes() == before  # nothing written before the click

    at.text_input(key=next(k for k in _keys(at) if k.startswith("cards_cif_id_"))).set_value(
        "Au-test"
    ).run()
    src_key = next(k for k in _keys(at) if k.startswith("cards_cif_source_"))
    assert at.text_input(key=src_key).value.startswith("CIF gold.cif: Au, AMCSD 0011280, Wyckoff")
    at.text_input(key=src_key).set_value("Wyckoff 1963 via AMCSD").run()
    assert not at.exception and not _errors(at), _errors(at)
    assert cards_copy.read_bytes() == before
    at.button(key="cards_cif_add").click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert any("Added card Au-test" in s.value for s in at.success)
    phase = load_cards(cards_copy).phase("Au-test")
    assert phase.source == "Wyckoff 1963 via AMCSD" and phase.space_group == "Fm-3m"
    assert phase.reflections[0].intensity_rel == 100.0
    assert (cards_copy.parent / "pdf_cards.xlsx.bak").read_bytes() == before


def _keys(at: AppTest) -> list[str]:
    return [w.key for w in at.text_input if w.key]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"data_x\n_cell_length_a 5 6\n", "not a valid CIF"),
        (b"data_x\n_cell_length_a 5\n", "no data block with a cell"),
    ],
)
def test_bad_cif_is_one_error_and_nothing_is_written(cards_copy: Path, data, needle) -> None:
    before = cards_copy.read_bytes()
    at = _upload(_page(), "bad.cif", data)
    assert not at.exception
    assert any(needle in e for e in _errors(at)), _errors(at)
    assert not [b for b in at.button if b.key == "cards_cif_add"]
    assert cards_copy.read_bytes() == before


def test_invalid_edits_and_duplicate_ids_disable_the_add_button(cards_copy: Path) -> None:
    before = cards_copy.read_bytes()
    at = _upload(_page(), "gold.cif", GOLD_CIF)
    id_key = next(k for k in _keys(at) if k.startswith("cards_cif_id_"))
    at.text_input(key=id_key).set_value("=HYPERLINK(1)").run()
    assert not at.exception
    assert any("formula" in e for e in _errors(at)), _errors(at)
    at.text_input(key=id_key).set_value("39-1346").run()  # maghemite's card id
    assert any("already in the database" in e for e in _errors(at)), _errors(at)
    assert at.button(key="cards_cif_add").disabled
    assert cards_copy.read_bytes() == before
