"""Build ``data/pdf_cards.xlsx``, the PDF card database shipped with the tool.

Run from the repository root::

    /tmp/venv/bin/python scripts/build_pdf_cards.py            # writes data/pdf_cards.xlsx
    /tmp/venv/bin/python scripts/build_pdf_cards.py -o out.xlsx

The phases of the method (Zhu et al., ESI-1) are typed below as literal tables, each with the
public source of its cell and a second public source it was cross-checked against. The ICDD
cards themselves are not public, so no card intensities are shipped: every phase's reflections
are ``computed`` from its cell and space group (d >= 0.1 nm, glide/screw-forbidden reflections
flagged), and ``intensity_rel`` stays empty. A user who owns a card can paste its hkl / d / I
rows into the ``reflections`` sheet with ``source = card``.

Card 46-1436, also listed by the method, could not be identified from public sources and is
left out (see docs/card-database.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hrtem_core.cards import (  # noqa: E402
    DEFAULT_CARDS_PATH,
    PHASE_COLUMNS,
    REFLECTION_COLUMNS,
    CardDatabase,
    save_cards,
)

# card_id, name, formula, crystal_system, space_group, number, a, b, c [A], alpha, beta, gamma
# [deg], source, notes, enabled
PHASES: list[tuple] = [
    (
        "39-1346",
        "maghemite",
        "γ-Fe2O3",
        "cubic",
        "P4₁32",
        213,
        8.3515,
        8.3515,
        8.3515,
        90.0,
        90.0,
        90.0,
        "ICDD PDF 39-1346 (maghemite-C, syn.), cell a = 8.3515 A as quoted in the literature "
        "that uses this card; cross-checked: Cornell & Schwertmann, The Iron Oxides, 2nd ed. "
        "(Wiley-VCH 2003), Table 2.1, cubic a = 0.834 nm; Mindat/Wikipedia maghemite: P4132, "
        "a = 8.33-8.35 A.",
        "Vacancy-ordered spinel: P4132 keeps the weak superstructure reflections (110), (210), "
        "(211), ... that Fd-3m forbids; many analyses index maghemite as Fd-3m (then it is "
        "magnetite's cell shrunk by 0.5 %). A tetragonal P41212 supercell (c ~ 3a) is also "
        "reported (not used here).",
        True,
    ),
    (
        "19-0629",
        "magnetite",
        "Fe3O4",
        "cubic",
        "Fd-3m",
        227,
        8.396,
        8.396,
        8.396,
        90.0,
        90.0,
        90.0,
        "ICDD PDF 19-0629 = NBS Monograph 25, Sec. 5, p. 31 (1967): a = 8.396 A; cross-checked: "
        "MINCRYST card 'magnetite' (Hamilton 1958 structure, NBS lattice), a = 8.396 A; "
        "Togawa et al., Solid State Ionics 89 (1996) 279: stoichiometric a0 = 0.8396 nm.",
        "Spinel. {200}, {420}, {600} ... are d-glide forbidden (flagged forbidden) but appear "
        "in thick particles by double diffraction.",
        True,
    ),
    (
        "33-0664",
        "hematite",
        "α-Fe2O3",
        "trigonal",
        "R-3c",
        167,
        5.035,
        5.035,
        13.75,
        90.0,
        90.0,
        120.0,
        "ICDD PDF 33-0664 (hematite, syn.), a = 5.035, c = 13.75 A (the card prints "
        "a = 5.0356, c = 13.7489 A as quoted in the literature that uses it); cross-checked: "
        "Schwertmann & Taylor (1989) via Clays Clay Miner. (2023) "
        "doi:10.1007/s42860-023-00242-8: a = 5.034, c = 13.752 A, R-3c (#167); Mindat "
        "hematite (min-1856): a = 5.036, c = 13.749 A; MinIdent-Win lists ICDD 33-664 with "
        "strongest lines 2.696, 2.519, 1.692, 1.842, 3.680 A.",
        "Hexagonal axes (gemmi 'R -3 c:H'); three-index (hkl), obverse setting: -h+k+l = 3n. "
        "The cell is given to the method's precision (a = 5.035, c = 13.75 A); the card's "
        "5.0356 / 13.7489 A differ by 0.012 % / 0.008 %, far below what HRTEM resolves.",
        True,
    ),
    (
        "29-0713",
        "goethite",
        "α-FeOOH",
        "orthorhombic",
        "Pbnm",
        62,
        4.608,
        9.956,
        3.0215,
        90.0,
        90.0,
        90.0,
        "ICDD PDF 29-0713 (goethite), a = 4.608, b = 9.956, c = 3.0215 A in Pbnm; "
        "cross-checked: Schwertmann & Taylor (1989) via Clays Clay Miner. (2023) "
        "doi:10.1007/s42860-023-00242-8: a = 4.608, b = 9.956, c = 3.021 A, Pbnm; Yang et al., "
        "Acta Cryst. E62 (2006) i250 (single crystal): a = 4.596, b = 9.957, c = 3.021 A.",
        "Pbnm is a non-standard setting of Pnma (No. 62): Pnma axes (a, b, c) = Pbnm (b, c, a), "
        "so (hkl) in Pbnm is (k l h) in Pnma; hkl labels here "
        "follow the card's Pbnm axes (e.g. the strong (110) at 4.18 A is (101) in Pnma).",
        True,
    ),
    (
        "44-1415",
        "lepidocrocite",
        "γ-FeOOH",
        "orthorhombic",
        "Cmcm",
        63,
        3.072,
        12.516,
        3.873,
        90.0,
        90.0,
        90.0,
        "ICDD PDF 44-1415 (lepidocrocite), a = 3.072, b = 12.516, c = 3.873 A, Cmcm; "
        "cross-checked: French Wikipedia 'Lépidocrocite' (same cell, Cmcm No. 63); "
        "English Wikipedia gives a = 3.88, b = 12.54, c = 3.07 A with a and c exchanged.",
        "Layered (boehmite type); (020) at 6.26 A is the layer spacing. hkl follow the "
        "card's Cmcm axes (a = 3.07, c = 3.87 A): the strong 3.29 A line is (021) here, "
        "(120) in the older Bbmm setting with a and c exchanged.",
        True,
    ),
    (
        "34-1266",
        "akaganeite",
        "β-FeOOH",
        "tetragonal",
        "I4/m",
        87,
        10.535,
        10.535,
        3.030,
        90.0,
        90.0,
        90.0,
        "ICDD PDF 34-1266 (akaganeite, syn.), a = 10.535, c = 3.030 A, I4/m: the cell refined "
        "by Murad, Clay Minerals 14 (1979) 273 (beta-FeOOH from FeCl3 hydrolysis); "
        "cross-checked: Mackay, Mineral. Mag. 32 (1960) 545: tetragonal a = 10.48, c = 3.023 A.",
        "Hollandite type. Post & Buchwald, Am. Mineral. 76 (1991) 272 find it monoclinic I2/m "
        "(a = 10.600, b = 3.0339, c = 10.513 A, beta = 90.24 deg); the card's tetragonal cell "
        "is kept, as in the method.",
        True,
    ),
    (
        "13-0087",
        "feroxyhyte",
        "δ-FeOOH",
        "hexagonal",
        "P-3m1",
        164,
        2.941,
        2.941,
        4.49,
        90.0,
        90.0,
        120.0,
        "ICDD PDF 13-0087 (synthetic delta-FeOOH), a = 2.941, c = 4.49 A as listed for the "
        "method's card set; cross-checked: MINCRYST card 'feroxyhyte' (Waychunas, Rev. "
        "Mineral. 25 (1991) 38): P-3m1, a = 2.95, c = 4.56 A (natural feroxyhyte).",
        "CdI2-type subcell with disordered Fe; a trigonal space group filed under the "
        "hexagonal family as on the card.",
        True,
    ),
]


def build_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``phases`` table and an empty ``reflections`` table (computed on load)."""
    phases = pd.DataFrame(PHASES, columns=list(PHASE_COLUMNS))
    reflections = pd.DataFrame(columns=list(REFLECTION_COLUMNS))
    return phases, reflections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_CARDS_PATH)
    args = parser.parse_args(argv)
    db = CardDatabase.from_frames(*build_frames())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    digest = save_cards(db, args.output)
    n_refl = sum(len(p.reflections) for p in db.phases)
    print(f"wrote {args.output} ({len(db.phases)} phases, {n_refl} reflections, sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
