"""A 50-phase card database for tests and benchmarks: the 7 shipped phases + 43 real phases.

Issue 18 asks that indexing against 50 enabled phases take at most twice the 7-phase time; this
fixture gives those 50 plausible cards: metals, semiconductors, oxides and carbides of the cubic,
hexagonal, trigonal, tetragonal, orthorhombic and monoclinic systems, with room-temperature
literature cells and space groups. Reflections are computed from the cell and space group
(:func:`hrtem_core.cards.computed_reflections`, forbidden ones flagged), so no intensities are
claimed. Card ids are fixture ids (``fx-...``), not PDF numbers.

Sources of the cell constants (Angstrom, degrees):

* elements and simple compounds (Au, Ag, Cu, Pt, Pd, Ni, Al, Si, Ge, GaAs, NaCl, MgO, NiO,
  Cu2O, CeO2, Fe, W, Mo, Co, Ti, Mg, ZnO, CdSe, Cr2O3, Al2O3, SnO2, Co3O4, Mn3O4, BaTiO3):
  the NBS/JCPDS powder standards, H. E. Swanson et al., *Standard X-ray Diffraction Powder
  Patterns*, NBS Circular 539 (1953-1960) and NBS Monograph 25 (1962-1981), as tabulated in
  R. W. G. Wyckoff, *Crystal Structures*, 2nd ed., Interscience (1963-1971);
* SrTiO3: Mitchell et al., Phys. Rev. B 61 (2000); GaN: Schulz & Thiemann, Solid State Commun.
  23, 815 (1977); TiO2 rutile and anatase: Howard, Sabine & Dickson, Acta Cryst. B 47, 462
  (1991); ZrO2 cubic/tetragonal/monoclinic: Howard, Hill & Reichert, Acta Cryst. B 44, 116
  (1988) (cubic: Y-stabilised, Wyckoff); HfO2: Hann, Suitch & Pentecost, J. Am. Ceram. Soc. 68,
  C-285 (1985); CuO: Asbrink & Norrby, Acta Cryst. B 26, 8 (1970); beta-Ga2O3: Ahman, Svensson
  & Albertsson, Acta Cryst. C 52, 1336 (1996); MoO3: Kihlborg, Ark. Kemi 21, 357 (1963); V2O5:
  Enjalbert & Galy, Acta Cryst. C 42, 1467 (1986); Fe3C: Fasiska & Jeffrey, Acta Cryst. 19, 463
  (1965); WO3 (monoclinic, gamma): Loopstra & Rietveld, Acta Cryst. B 25, 1420 (1969).

Values are as commonly quoted from these sources (differences between sources are about 0.1 %);
the fixture only needs plausible, distinct cells spanning the crystal systems.
"""

from __future__ import annotations

from hrtem_core.cards import CardDatabase, Phase, computed_reflections, load_cards
from hrtem_core.crystallography import UnitCell

#: (card_id, name, formula, crystal system, space group, number, a, b, c, alpha, beta, gamma)
#: lengths in Angstrom, angles in degrees; b, c None = a.
EXTRA_PHASES: tuple[tuple, ...] = (
    # cubic
    ("fx-Au", "gold", "Au", "cubic", "Fm-3m", 225, 4.0782, None, None, 90, 90, 90),
    ("fx-Ag", "silver", "Ag", "cubic", "Fm-3m", 225, 4.0862, None, None, 90, 90, 90),
    ("fx-Cu", "copper", "Cu", "cubic", "Fm-3m", 225, 3.6150, None, None, 90, 90, 90),
    ("fx-Pt", "platinum", "Pt", "cubic", "Fm-3m", 225, 3.9231, None, None, 90, 90, 90),
    ("fx-Pd", "palladium", "Pd", "cubic", "Fm-3m", 225, 3.8898, None, None, 90, 90, 90),
    ("fx-Ni", "nickel", "Ni", "cubic", "Fm-3m", 225, 3.5238, None, None, 90, 90, 90),
    ("fx-Al", "aluminium", "Al", "cubic", "Fm-3m", 225, 4.0494, None, None, 90, 90, 90),
    ("fx-Si", "silicon", "Si", "cubic", "Fd-3m", 227, 5.4309, None, None, 90, 90, 90),
    ("fx-Ge", "germanium", "Ge", "cubic", "Fd-3m", 227, 5.6576, None, None, 90, 90, 90),
    ("fx-GaAs", "gallium arsenide", "GaAs", "cubic", "F-43m", 216, 5.6533, None, None, 90, 90, 90),
    ("fx-NaCl", "halite", "NaCl", "cubic", "Fm-3m", 225, 5.6402, None, None, 90, 90, 90),
    ("fx-MgO", "periclase", "MgO", "cubic", "Fm-3m", 225, 4.2112, None, None, 90, 90, 90),
    ("fx-NiO", "bunsenite", "NiO", "cubic", "Fm-3m", 225, 4.1771, None, None, 90, 90, 90),
    ("fx-Cu2O", "cuprite", "Cu2O", "cubic", "Pn-3m", 224, 4.2696, None, None, 90, 90, 90),
    ("fx-CeO2", "ceria", "CeO2", "cubic", "Fm-3m", 225, 5.4113, None, None, 90, 90, 90),
    ("fx-cZrO2", "cubic zirconia", "ZrO2", "cubic", "Fm-3m", 225, 5.128, None, None, 90, 90, 90),
    ("fx-SrTiO3", "strontium titanate", "SrTiO3", "cubic", "Pm-3m", 221, 3.905, None, None,
     90, 90, 90),
    ("fx-Fe", "alpha iron", "Fe", "cubic", "Im-3m", 229, 2.8665, None, None, 90, 90, 90),
    ("fx-W", "tungsten", "W", "cubic", "Im-3m", 229, 3.1648, None, None, 90, 90, 90),
    ("fx-Mo", "molybdenum", "Mo", "cubic", "Im-3m", 229, 3.1472, None, None, 90, 90, 90),
    ("fx-Co3O4", "cobalt spinel", "Co3O4", "cubic", "Fd-3m", 227, 8.0837, None, None, 90, 90, 90),
    # hexagonal
    ("fx-ZnO", "zincite", "ZnO", "hexagonal", "P63mc", 186, 3.2498, 3.2498, 5.2066, 90, 90, 120),
    ("fx-GaN", "gallium nitride", "GaN", "hexagonal", "P63mc", 186, 3.189, 3.189, 5.185,
     90, 90, 120),
    ("fx-CdSe", "cadmium selenide (wurtzite)", "CdSe", "hexagonal", "P63mc", 186, 4.299, 4.299,
     7.010, 90, 90, 120),
    ("fx-Co", "cobalt (hcp)", "Co", "hexagonal", "P63/mmc", 194, 2.5071, 2.5071, 4.0695,
     90, 90, 120),
    ("fx-Ti", "titanium", "Ti", "hexagonal", "P63/mmc", 194, 2.9506, 2.9506, 4.6835, 90, 90, 120),
    ("fx-Mg", "magnesium", "Mg", "hexagonal", "P63/mmc", 194, 3.2094, 3.2094, 5.2108,
     90, 90, 120),
    # trigonal (hexagonal axes)
    ("fx-Cr2O3", "eskolaite", "Cr2O3", "trigonal", "R-3c", 167, 4.9588, 4.9588, 13.5942,
     90, 90, 120),
    ("fx-Al2O3", "corundum", "Al2O3", "trigonal", "R-3c", 167, 4.7588, 4.7588, 12.9910,
     90, 90, 120),
    # tetragonal
    ("fx-rutile", "rutile", "TiO2", "tetragonal", "P42/mnm", 136, 4.5937, 4.5937, 2.9587,
     90, 90, 90),
    ("fx-anatase", "anatase", "TiO2", "tetragonal", "I41/amd", 141, 3.7842, 3.7842, 9.5146,
     90, 90, 90),
    ("fx-SnO2", "cassiterite", "SnO2", "tetragonal", "P42/mnm", 136, 4.7382, 4.7382, 3.1871,
     90, 90, 90),
    ("fx-BaTiO3", "barium titanate (tetragonal)", "BaTiO3", "tetragonal", "P4mm", 99, 3.9945,
     3.9945, 4.0335, 90, 90, 90),
    ("fx-Mn3O4", "hausmannite", "Mn3O4", "tetragonal", "I41/amd", 141, 5.762, 5.762, 9.470,
     90, 90, 90),
    ("fx-tZrO2", "tetragonal zirconia", "ZrO2", "tetragonal", "P42/nmc", 137, 3.5984, 3.5984,
     5.152, 90, 90, 90),
    # orthorhombic
    ("fx-MoO3", "molybdite", "MoO3", "orthorhombic", "Pbnm", 62, 3.963, 13.856, 3.697,
     90, 90, 90),
    ("fx-V2O5", "shcherbinaite", "V2O5", "orthorhombic", "Pmmn", 59, 11.512, 3.564, 4.368,
     90, 90, 90),
    ("fx-Fe3C", "cementite", "Fe3C", "orthorhombic", "Pnma", 62, 5.0896, 6.7443, 4.5248,
     90, 90, 90),
    # monoclinic
    ("fx-mZrO2", "baddeleyite", "ZrO2", "monoclinic", "P21/c", 14, 5.1505, 5.2116, 5.3173,
     90, 99.23, 90),
    ("fx-mHfO2", "hafnia (monoclinic)", "HfO2", "monoclinic", "P21/c", 14, 5.1170, 5.1754,
     5.2915, 90, 99.216, 90),
    ("fx-CuO", "tenorite", "CuO", "monoclinic", "C2/c", 15, 4.6837, 3.4226, 5.1288,
     90, 99.54, 90),
    ("fx-Ga2O3", "beta gallium oxide", "Ga2O3", "monoclinic", "C2/m", 12, 12.214, 3.0371,
     5.7981, 90, 103.83, 90),
    ("fx-WO3", "tungsten trioxide (monoclinic)", "WO3", "monoclinic", "P21/n", 14, 7.297,
     7.539, 7.688, 90, 90.91, 90),
)  # fmt: skip


def extra_phase(row: tuple) -> Phase:
    """A :class:`Phase` from one row of :data:`EXTRA_PHASES` (reflections computed)."""
    card_id, name, formula, system, sg, number, a, b, c, al, be, ga = row
    cell = UnitCell.from_angstrom(a, a if b is None else b, a if c is None else c, al, be, ga)
    return Phase(
        card_id=card_id,
        name=name,
        formula=formula,
        crystal_system=system,
        space_group=sg,
        space_group_number=number,
        cell=cell,
        source="literature cell (tests/cards50.py)",
        notes="test fixture",
        enabled=True,
        reflections=computed_reflections(cell, sg),
    )


def fifty_phase_database() -> CardDatabase:
    """The 7 shipped phases (``data/pdf_cards.xlsx``) plus the 43 of :data:`EXTRA_PHASES`."""
    db = load_cards()
    for row in EXTRA_PHASES:
        db = db.with_phase(extra_phase(row))  # validated as a sheet row would be
    return db
