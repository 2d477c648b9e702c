"""Shared scene builders and scoring for the honesty and pipeline benchmarks (run by hand).

Scenes are multislice HRTEM images from :mod:`hrtem_core.simulate` (300 kV, Cs = 1.2 mm,
Scherzer-like underfocus, 3 nm amorphous carbon support, Poisson noise), seeded, with the exact
particle truth (centre, bounding radius, card, zone axis). Crystals that are not in the shipped
cards (SrTiO3, Au, ZnO) are built here as :class:`~hrtem_core.cards.Phase` objects with their
reflections computed from the cell, and simulated with their atom positions
(:class:`~hrtem_core.simulate.CrystalStructure`), so the benchmark can add the right card later.

Window classes (the benchmark's definitions, stated in its report):

* **inside** a particle: at least ``INSIDE_COVER`` (50 %) of the window's footprint is covered by
  the particle's projected-thickness mask;
* **beyond the halo**: the window's footprint (the ``w x w`` square) lies farther than
  ``R_halo`` (default 3 nm) beyond every particle's edge (bounding circle), i.e. the distance from
  every particle centre to the nearest point of the square exceeds ``radius + R_halo``. Lattice
  fringes delocalise by about ``Cs lambda^3 g^3 + df lambda g`` (about 1-2 nm here), so nothing
  crystalline should be seen there.

Sources of the structures: SrTiO3 Pm-3m a = 3.905 A, Sr 1a, Ti 1b, O 3c (Mitchell et al.,
Phys. Rev. B 61, 2000); Au Fm-3m a = 4.0782 A (Swanson & Tatge, NBS Circ. 539, 1953);
ZnO P6_3mc a = 3.2498, c = 5.2066 A, Zn 2b z = 0, O 2b z = 0.3819 (Kisi & Elcombe,
Acta Cryst. C 45, 1989).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from hrtem_core.cards import CardDatabase, Phase, computed_reflections, load_cards
from hrtem_core.crystallography import UnitCell
from hrtem_core.io import Micrograph
from hrtem_core.simulate import (
    CrystalStructure,
    Particle,
    Site,
    known_structure,
    scherzer_defocus_nm,
    simulate_particles,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

MAGHEMITE, MAGNETITE, HEMATITE, GOETHITE = "39-1346", "19-0629", "33-0664", "29-0713"
#: Near-twin phases: naming either is right when the window is ``ambiguous`` and lists the other.
TWINS: dict[str, set[str]] = {MAGHEMITE: {MAGNETITE}, MAGNETITE: {MAGHEMITE}}
INSIDE_COVER = 0.5
PIXEL_SIZE_NM = 0.02
VOLTAGE_KV = 300.0
CS_MM = 1.2
SUPPORT_NM = 3.0
#: The simulator's default defocus [nm]: carbon shows strong speckle in the U-Net's band there.
DEFAULT_DEFOCUS_NM = -16.0


# --------------------------------------------------------------------------------------------
# Foreign crystals (not in the shipped cards)
# --------------------------------------------------------------------------------------------


def git_rev() -> str:
    """Short commit of the checkout whose ``hrtem_core`` is measured, or ``"?"``."""
    import subprocess

    import hrtem_core

    try:
        return subprocess.run(
            [
                "git",
                "-C",
                str(Path(hrtem_core.__file__).resolve().parents[1]),
                "rev-parse",
                "--short",
                "HEAD",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def make_phase(
    card_id: str,
    name: str,
    formula: str,
    system: str,
    space_group: str,
    number: int,
    a_A: float,
    b_A: float | None = None,
    c_A: float | None = None,
    alpha: float = 90.0,
    beta: float = 90.0,
    gamma: float = 90.0,
    *,
    source: str = "",
) -> Phase:
    """A phase with reflections computed from its cell (lengths in Angstrom)."""
    b_A = a_A if b_A is None else b_A
    c_A = a_A if c_A is None else c_A
    cell = UnitCell.from_angstrom(a_A, b_A, c_A, alpha, beta, gamma)
    return Phase(
        card_id=card_id,
        name=name,
        formula=formula,
        crystal_system=system,
        space_group=space_group,
        space_group_number=number,
        cell=cell,
        source=source or "benchmark",
        notes="",
        enabled=True,
        reflections=computed_reflections(cell, space_group),
    )


@dataclass(frozen=True)
class Foreign:
    """A crystal outside the shipped cards: its card, structure and a zone with visible fringes."""

    phase: Phase
    structure: CrystalStructure
    zone_axis: tuple[int, int, int]


def foreign_crystals() -> dict[str, Foreign]:
    """SrTiO3 [001], Au [110], ZnO [100] (= [2-1-10]) with literature cells and structures."""
    sto = make_phase(
        "bench-SrTiO3", "strontium titanate", "SrTiO3", "cubic", "Pm-3m", 221, 3.905,
        source="Mitchell et al., Phys. Rev. B 61 (2000)",
    )  # fmt: skip
    au = make_phase(
        "bench-Au", "gold", "Au", "cubic", "Fm-3m", 225, 4.0782,
        source="Swanson & Tatge, NBS Circular 539 (1953)",
    )  # fmt: skip
    zno = make_phase(
        "bench-ZnO", "zincite", "ZnO", "hexagonal", "P63mc", 186, 3.2498, 3.2498, 5.2066,
        90.0, 90.0, 120.0, source="Kisi & Elcombe, Acta Cryst. C 45 (1989)",
    )  # fmt: skip
    return {
        "SrTiO3": Foreign(
            sto,
            CrystalStructure(
                "P m -3 m",
                (Site("Sr", (0, 0, 0)), Site("Ti", (0.5, 0.5, 0.5)), Site("O", (0.5, 0.5, 0))),
                "SrTiO3 Pm-3m",
            ),
            (0, 0, 1),
        ),
        "Au": Foreign(au, CrystalStructure("F m -3 m", (Site("Au", (0, 0, 0)),), "Au"), (1, 1, 0)),
        "ZnO": Foreign(
            zno,
            CrystalStructure(
                "P 63 m c", (Site("Zn", (1 / 3, 2 / 3, 0.0)), Site("O", (1 / 3, 2 / 3, 0.3819)))
            ),
            (1, 0, 0),
        ),
    }


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """One image with its truth (particles: card, zone, centre (y, x) px, radius px, foreign)."""

    name: str
    micrograph: Micrograph
    mask: np.ndarray | None
    particles: list[dict] = field(default_factory=list)
    kind: str = "particles"
    window_px: int | None = None  # analyse with this window instead of the benchmark's


def _micrograph(image: np.ndarray, name: str, pixel_size_nm: float) -> Micrograph:
    return Micrograph(
        data=np.asarray(image, dtype=np.float32),
        pixel_size_nm=(pixel_size_nm, pixel_size_nm),
        reader="simulated",
        metadata={},
        warnings=(),
        name=name,
    )


def _simulate(
    name: str,
    parts: list[tuple[Phase, CrystalStructure | None, tuple[int, int, int], float, float, tuple]],
    *,
    size: int,
    seed: int,
    defocus_nm: float,
    foreign_ids: set[str] = frozenset(),  # type: ignore[assignment]
) -> Scene:
    particles = [
        Particle(
            phase=ph,
            zone_axis=zone,
            diameter_nm=d,
            rotation_deg=rot,
            center_px=(c[0] * size, c[1] * size),
            structure=st,
        )
        for ph, st, zone, d, rot, c in parts
    ]
    sim = simulate_particles(
        particles,
        pixel_size_nm=PIXEL_SIZE_NM,
        shape=(size, size),
        defocus_nm=defocus_nm,
        voltage_kv=VOLTAGE_KV,
        cs_mm=CS_MM,
        support_thickness_nm=SUPPORT_NM,
        seed=seed,
    )[0]
    truth = [
        {
            "card_id": t.card_id,
            "name": t.phase_name,
            "zone_axis": list(t.zone_axis),
            "center_px": list(t.center_px),
            "radius_px": float(t.radius_px),
            "foreign": t.card_id in foreign_ids,
        }
        for t in sim.truth.particles
    ]
    return Scene(name, _micrograph(sim.image, name, PIXEL_SIZE_NM), sim.truth.mask, truth)


def shipped_scenes(*, quick: bool, seed: int = 0) -> list[Scene]:
    """Particles of shipped phases on 3 nm carbon; 1024 px (quick) or 2048 px images.

    Centres are fractions of the image side, so the same layout holds at both sizes; particle
    diameters scale with the image (8-12 nm at 2048 px, 6-8 nm at 1024 px), and a quarter of each
    image is left to the carbon (windows beyond the halo).
    """
    db = load_cards()
    mag, hem, goe, mgt = (db.phase(c) for c in (MAGHEMITE, HEMATITE, GOETHITE, MAGNETITE))
    s_mag, s_hem, s_mgt = (known_structure(c) for c in (MAGHEMITE, HEMATITE, MAGNETITE))
    df = round(scherzer_defocus_nm(cs_mm=CS_MM, voltage_kv=VOLTAGE_KV), 1)
    if quick:
        size, k = 1024, 0.7
        layouts = [
            ("A1", [(mag, s_mag, (1, 1, 0), 8.0, 15.0, (0.27, 0.27))], DEFAULT_DEFOCUS_NM),
            ("A2", [(hem, s_hem, (0, 0, 1), 8.0, 40.0, (0.27, 0.70))], df),
        ]
    else:
        size, k = 2048, 1.0
        layouts = [
            (
                "A1",
                [
                    (mag, s_mag, (1, 1, 0), 12.0, 15.0, (0.25, 0.25)),
                    (hem, s_hem, (0, 0, 1), 10.0, 40.0, (0.25, 0.72)),
                    (goe, None, (0, 0, 1), 10.0, 75.0, (0.72, 0.25)),
                ],
                DEFAULT_DEFOCUS_NM,
            ),
            (
                "A2",
                [
                    (mgt, s_mgt, (0, 0, 1), 10.0, 5.0, (0.25, 0.25)),
                    (mag, s_mag, (1, 1, 2), 12.0, 60.0, (0.72, 0.25)),
                    (hem, s_hem, (1, 0, 0), 10.0, 20.0, (0.25, 0.72)),
                ],
                df,
            ),
            (
                "A3",
                [
                    (mag, s_mag, (0, 0, 1), 10.0, 30.0, (0.25, 0.72)),
                    (goe, None, (1, 0, 0), 10.0, 0.0, (0.72, 0.25)),
                ],
                -40.0,
            ),
        ]
    out = []
    for i, (name, parts, defocus) in enumerate(layouts):
        parts = [(ph, st, z, d * k, r, c) for ph, st, z, d, r, c in parts]
        out.append(_simulate(name, parts, size=size, seed=seed + 11 * i + 1, defocus_nm=defocus))
    return out


def foreign_scenes(*, quick: bool, seed: int = 0) -> list[Scene]:
    """One foreign crystal (not in the shipped cards) beside a maghemite particle, per scene."""
    db = load_cards()
    mag = db.phase(MAGHEMITE)
    s_mag = known_structure(MAGHEMITE)
    df = round(scherzer_defocus_nm(cs_mm=CS_MM, voltage_kv=VOLTAGE_KV), 1)
    crystals = foreign_crystals()
    names = ["SrTiO3", "Au"] if quick else ["SrTiO3", "Au", "ZnO"]
    size, d_for, d_mag = (1024, 9.0, 6.0) if quick else (2048, 14.0, 10.0)
    out = []
    for i, key in enumerate(names):
        f = crystals[key]
        parts = [
            (f.phase, f.structure, f.zone_axis, d_for, 10.0 + 25.0 * i, (0.33, 0.33)),
            (mag, s_mag, (1, 1, 0), d_mag, 50.0, (0.75, 0.75)),
        ]
        out.append(
            _simulate(
                f"B-{key}",
                parts,
                size=size,
                seed=seed + 101 + 7 * i,
                defocus_nm=(DEFAULT_DEFOCUS_NM, df, -40.0)[i % 3],
                foreign_ids={f.phase.card_id},
            )
        )
    return out


def null_scenes(*, quick: bool, seed: int = 0) -> list[Scene]:
    """Flat, constant, white noise, Poisson noise, zeros with a noise patch, carbon only."""
    size = 1024 if quick else 2048
    rng = np.random.default_rng(seed + 7)
    images = {
        "zeros": np.zeros((size, size), np.float32),
        "constant": np.full((size, size), 1234.5, np.float32),
        "white noise": rng.normal(100.0, 10.0, (size, size)).astype(np.float32),
        "Poisson noise": rng.poisson(50.0, (size, size)).astype(np.float32),
    }
    # Issue 17: "a 512x512 image of zeros with one random-noise patch": 45 of 49 windows
    # crystalline (w = 128, s = 64); a 64 px patch of uniform [0, 1) noise here.
    patch = np.zeros((512, 512), np.float32)
    patch[200:264, 200:264] = rng.random((64, 64), dtype=np.float32)
    # Amorphous carbon only: a vanishing particle just outside the corner (the simulator needs one).
    db = load_cards()
    df = round(scherzer_defocus_nm(cs_mm=CS_MM, voltage_kv=VOLTAGE_KV), 1)
    sims = simulate_particles(
        [Particle(phase=db.phase(MAGHEMITE), diameter_nm=0.01, center_px=(-2.0, -2.0))],
        pixel_size_nm=PIXEL_SIZE_NM,
        shape=(size, size),
        defocus_nm=[DEFAULT_DEFOCUS_NM, df],
        voltage_kv=VOLTAGE_KV,
        cs_mm=CS_MM,
        support_thickness_nm=SUPPORT_NM,
        seed=seed + 3,
    )
    for sim in sims:
        assert not sim.truth.mask.any()
        images[f"carbon 3 nm df {sim.defocus_nm:g} nm"] = sim.image
    out = [
        Scene(k, _micrograph(v, k, PIXEL_SIZE_NM), None, [], kind="null") for k, v in images.items()
    ]
    for w in (128, 256):
        name = f"zeros + noise patch w{w}"
        out.append(Scene(name, _micrograph(patch, name, PIXEL_SIZE_NM), None, [], "null", w))
    return out


def focal_series_scenes(*, quick: bool) -> list[Scene]:
    """The bundled ``data/examples/focal_series`` (truth.json beside it); quick: every other."""
    from hrtem_core.io import load_image

    folder = REPO / "data" / "examples" / "focal_series"
    truth = json.loads((folder / "truth.json").read_text())
    p = float(truth["params"]["pixel_size_nm"])
    files = sorted(folder.glob("*.tif"))
    if quick:
        files = files[::2]
    shape = tuple(truth["params"]["shape"])
    out = []
    for f in files:
        mg = load_image(f, pixel_size_nm=p)
        parts = []
        for t in truth["params"]["particles"]:
            radius = t["diameter_nm"] / 2.0 / p
            parts.append(
                {
                    "card_id": t["card_id"],
                    "name": t["phase_name"],
                    "zone_axis": list(t["zone_axis"]),
                    "center_px": list(t["center_px"]),
                    "radius_px": float(radius),
                    "foreign": False,
                }
            )
        mask = _disk_mask(shape, parts)
        out.append(Scene(f.name, mg, mask, parts, kind="series"))
    return out


def _disk_mask(shape: tuple[int, ...], parts: list[dict]) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    m = np.zeros(shape[:2], bool)
    for t in parts:
        cy, cx = t["center_px"]
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= t["radius_px"] ** 2
    return m


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def window_classes(
    grid: Any, mask: np.ndarray | None, particles: list[dict], *, halo_nm: float, pixel_nm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per window: index of the particle it lies inside (-1: none) and beyond-halo flag.

    ``inside``: the particle whose mask covers >= ``INSIDE_COVER`` of the footprint (the one with
    the largest cover). ``beyond``: the footprint is farther than ``halo_nm`` beyond every
    particle's bounding circle.
    """
    origins = grid.origins  # (n, 2) (y0, x0)
    w = grid.window_px
    n = origins.shape[0]
    inside = np.full(n, -1, int)
    beyond = np.ones(n, bool)
    halo_px = halo_nm / pixel_nm
    if mask is not None and particles:
        yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
        own = np.full(mask.shape, -1, int)
        for j, t in enumerate(particles):
            cy, cx = t["center_px"]
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= (t["radius_px"] + 1.0) ** 2
            own[disk & mask & (own < 0)] = j
        for i, (y0, x0) in enumerate(origins):
            sub = own[y0 : y0 + w, x0 : x0 + w]
            counts = np.bincount(sub[sub >= 0].ravel(), minlength=len(particles))
            if counts.size and counts.max() >= INSIDE_COVER * w * w:
                inside[i] = int(np.argmax(counts))
    for t in particles:
        cy, cx = t["center_px"]
        dy = np.maximum(np.maximum(origins[:, 0] - cy, 0), cy - (origins[:, 0] + w - 1))
        dx = np.maximum(np.maximum(origins[:, 1] - cx, 0), cx - (origins[:, 1] + w - 1))
        beyond &= np.hypot(dy, dx) > t["radius_px"] + halo_px
    return inside, beyond


_ALT = re.compile(r"\((?P<card>[^()]*)\)\s[^|]*?(?:\[(?P<zone>-?\d+ -?\d+ -?\d+)\])?\s*score")


def alternatives(text: Any) -> list[tuple[str, tuple[int, ...] | None]]:
    """``[(card_id, zone or None)]`` parsed from an ``alternatives`` cell."""
    if not isinstance(text, str) or not text.strip():
        return []
    out = []
    for part in text.split(" | "):
        m = _ALT.search(part)
        if m:
            z = tuple(int(v) for v in m.group("zone").split()) if m.group("zone") else None
            out.append((m.group("card").strip(), z))
    return out


def _parse_zone(text: Any) -> tuple[int, ...] | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        z = tuple(int(v) for v in text.split())
    except ValueError:
        return None
    return z if len(z) == 3 else None


def named(row: Any) -> bool:
    """The window carries a phase name."""
    return isinstance(row.phase_card, str) and bool(row.phase_card.strip())


def phase_right(row: Any, card: str) -> bool:
    """Named ``card``; or ``ambiguous`` naming its near-twin while listing ``card``."""
    if not named(row):
        return False
    if row.phase_card == card:
        return True
    listed = {c for c, _ in alternatives(row.alternatives)}
    return row.status == "ambiguous" and row.phase_card in TWINS.get(card, set()) and card in listed


def zone_of(row: Any, card: str) -> tuple[int, ...] | None:
    """The zone axis the window gives for ``card`` (the best match or a listed alternative)."""
    if row.phase_card == card:
        return _parse_zone(row.zone_axis)
    for c, z in alternatives(row.alternatives):
        if c == card:
            return z
    return None


def equivalent_zone(
    space_group: str, truth: tuple[int, ...], found: tuple[int, ...] | None
) -> bool:
    """``found`` is ``+-`` a symmetry-equivalent direction of ``truth`` (uvw' = R uvw)."""
    if found is None or not any(found):
        return False
    from hrtem_core.crystallography import resolve_space_group

    sg = resolve_space_group(space_group)
    t = np.asarray(truth, float)
    f = np.asarray(found, float)
    f = f / np.gcd.reduce(np.abs(f).astype(int)) if np.any(f) else f
    g = np.gcd.reduce(np.abs(t).astype(int))
    t = t / g
    for op in sg.operations():
        r = np.asarray(op.rot, float) / gemmi.Op.DEN
        u = r @ t
        if np.allclose(u, f) or np.allclose(u, -f):
            return True
    return False


def ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def score_scene(
    windows: pd.DataFrame,
    grid: Any,
    scene: Scene,
    db: CardDatabase,
    *,
    halo_nm: float,
    foreign_named_as: str = "",
) -> dict:
    """Counts for one analysed scene (see the module docstring for the window classes)."""
    p = float(scene.micrograph.pixel_size_nm[0])
    inside, beyond = window_classes(grid, scene.mask, scene.particles, halo_nm=halo_nm, pixel_nm=p)
    cryst = windows["crystalline"].to_numpy(dtype=int) > 0
    out: dict[str, Any] = {
        "scene": scene.name,
        "n_windows": len(windows),
        "n_beyond_halo": int(beyond.sum()),
        "n_beyond_halo_crystalline": int((beyond & cryst).sum()),
        "n_crystalline": int(cryst.sum()),
        "n_named": int(sum(named(r) for r in windows.itertuples())),
        "status_counts": {str(k): int(v) for k, v in windows["status"].value_counts().items()},
        "shipped": {"inside": 0, "found": 0, "phase_right": 0, "phase_right_strict": 0,
                    "zone_right": 0},
        "foreign": {"inside": 0, "found": 0, "named": 0, "unmatched": 0, "named_right": 0,
                    "zone_right": 0},
    }  # fmt: skip
    rows = list(windows.itertuples())
    for i, row in enumerate(rows):
        j = inside[i]
        if j < 0:
            continue
        t = scene.particles[j]
        key = "foreign" if t["foreign"] else "shipped"
        acc = out[key]
        acc["inside"] += 1
        if not cryst[i]:
            continue
        acc["found"] += 1
        card = t["card_id"]
        if t["foreign"]:
            acc["named"] += int(named(row))
            acc["unmatched"] += int(row.status == "unmatched")
            if foreign_named_as:
                right = named(row) and row.phase_card == card
                acc["named_right"] += int(right)
                sg = db.phase(card).space_group
                acc["zone_right"] += int(
                    right and equivalent_zone(sg, tuple(t["zone_axis"]), zone_of(row, card))
                )
        else:
            right = phase_right(row, card)
            acc["phase_right"] += int(right)
            acc["phase_right_strict"] += int(named(row) and row.phase_card == card)
            sg = db.phase(card).space_group
            acc["zone_right"] += int(
                right and equivalent_zone(sg, tuple(t["zone_axis"]), zone_of(row, card))
            )
    return out


def save_json(data: dict, name: str) -> Path:
    """Write ``benchmarks/results/<name>`` (indented, sorted keys)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path
