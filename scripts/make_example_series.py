"""Write the bundled example data: a simulated focal series and one example image.

Run from the repository root (about 15 s)::

    /tmp/venv/bin/python scripts/make_example_series.py            # writes data/examples/
    /tmp/venv/bin/python scripts/make_example_series.py -o /tmp/ex

Writes

* ``focal_series/maghemite_110_df<sign><n>nm.tif``: eight maghemite (card 39-1346) particles,
  4 to 10 nm across, on amorphous carbon; the largest and three more are viewed along [110], the
  others along [100], [111] and [211]; defocus -18 to +18 nm in steps of 4 nm (10 images),
  1024 x 1024 px at 0.03 nm/px, a low dose of 150 e/A^2 (13.5 e/px), electron counts stored
  exactly as uint8 in zlib-compressed ImageJ TIFFs calibrated in nm (``hrtem_core.io`` reads the
  pixel size back, and the defocus from the name); about 6 MB in all;
* ``focal_series/truth.json``: every parameter and, per file, the visible reflections (hkl, d,
  g in the image frame, CTF transfer, particle) and each particle's zone axis and bounding circle;
* ``maghemite_particle.tif`` (+ ``maghemite_particle.json``): a maghemite particle [110] and a
  hematite particle (card 33-0664) [100] side by side, at -16 nm.

Why several particles of different sizes: a window of the analysis is "crystalline" as soon as it
shows one Friedel pair, so one big particle saturates the crystallinity at every defocus (a 22 nm
particle gave 37 of 49 windows at all ten defoci). Particles of 4 to 10 nm put the thin ones near
the detection limit, and the crystallinity then follows the lattice transfer of the lens.

Everything is seeded: running the script twice writes identical pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hrtem_core.cards import load_cards  # noqa: E402
from hrtem_core.simulate import (  # noqa: E402
    MAGHEMITE_SPINEL,
    Particle,
    SimulatedImage,
    defocus_tag,
    known_structure,
    simulate_particles,
    write_tiff,
)


def bundled_structure(card_id: str):
    """The structure model the bundled files were made with: the built-in one, except maghemite,
    whose files use the cation-disordered spinel (:data:`MAGHEMITE_SPINEL`, no superstructure
    reflections; the built-in model is now the vacancy-ordered one). Pinned so that this script
    still writes exactly the bundled files."""
    return MAGHEMITE_SPINEL if str(card_id).strip() == "39-1346" else known_structure(card_id)


#: Focal series: -18 .. +18 nm every 4 nm (10 images).
SERIES_DEFOCI_NM = tuple(float(v) for v in np.arange(-18.0, 18.0 + 1e-9, 4.0))

#: Optics shared by the bundled images: a 300 kV field-emission microscope with an image
#: aberration corrector (residual Cs = 10 um). Near Gaussian focus such a microscope transfers
#: almost no phase contrast, and the lattice contrast grows with |defocus| as
#: sin(pi lambda df g^2): over -18 .. +18 nm the strong maghemite reflections go through a
#: minimum near 0 and maxima near |df| = 1 / (2 lambda g^2) (13-16 nm for 311 and 220).
OPTICS = {
    "voltage_kv": 300.0,
    "cs_mm": 0.01,
    "focal_spread_nm": 2.5,
    "convergence_mrad": 0.1,
}
RECORDING = {
    "pixel_size_nm": 0.03,
    "shape": (1024, 1024),
    "dose_e_per_A2": 150.0,
    "support_thickness_nm": 5.0,
    "absorption": 0.05,
}
#: Stored as exact electron counts (at most about 70 per pixel at this dose).
TIFF_DTYPE = "uint8"
SERIES_CARD_ID = "39-1346"
SERIES_ZONE_AXIS = (1, 1, 0)
#: The particles of the focal series: centre (y, x) [px], diameter [nm], zone axis, in-plane
#: rotation [deg], shape. None overlap (centres farther apart than the sum of the radii).
SERIES_PARTICLES = (
    ((300.0, 320.0), 10.0, (1, 1, 0), 20.0, "sphere"),
    ((700.0, 680.0), 8.0, (1, 1, 0), -35.0, "sphere"),
    ((280.0, 760.0), 6.0, (1, 0, 0), 10.0, "faceted"),
    ((760.0, 260.0), 7.0, (2, 1, 1), 50.0, "sphere"),
    ((520.0, 540.0), 4.0, (1, 1, 0), 75.0, "sphere"),
    ((900.0, 900.0), 5.0, (1, 1, 1), 0.0, "faceted"),
    ((120.0, 540.0), 4.5, (1, 1, 0), 0.0, "sphere"),
    ((560.0, 120.0), 5.0, (1, 1, 0), 100.0, "sphere"),
)
SERIES_SEED = 2024
EXAMPLE_DEFOCUS_NM = -16.0
EXAMPLE_SEED = 7


def _file_truth(sim: SimulatedImage) -> dict:
    """The per-file part of truth.json."""
    t = sim.truth.to_dict()
    return {
        "defocus_nm": sim.defocus_nm,
        "pixel_size_nm": sim.pixel_size_nm,
        "particles": t["particles"],
        "mask_fraction": t["mask_fraction"],
        "reflections": t["reflections"],
    }


def series_particles(phase) -> list[Particle]:
    """The :data:`SERIES_PARTICLES` of ``phase`` (with its structure model, if any:
    :func:`bundled_structure`)."""
    structure = bundled_structure(phase.card_id)
    return [
        Particle(
            phase=phase,
            zone_axis=zone,
            diameter_nm=diameter,
            rotation_deg=rotation,
            center_px=center,
            shape=shape,
            structure=structure,
        )
        for center, diameter, zone, rotation, shape in SERIES_PARTICLES
    ]


def make_series(out_dir: Path) -> list[Path]:
    """Simulate and write the focal series and its truth.json; return the files written."""
    db = load_cards()
    phase = db.phase(SERIES_CARD_ID)
    series = simulate_particles(
        series_particles(phase),
        defocus_nm=SERIES_DEFOCI_NM,
        seed=SERIES_SEED,
        **OPTICS,
        **RECORDING,
    )
    folder = out_dir / "focal_series"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tif"):
        old.unlink()
    # The reflections' geometry is the same in every image; only the transfer changes (and a
    # reflection beyond the information limit at one defocus is left out there): one table of
    # reflections, and per file the transfer of each (None where it is not visible).
    table: dict[tuple[int, tuple[int, int, int]], dict] = {}
    for sim in series:
        for r in sim.truth.to_dict()["reflections"]:
            key = (r["particle"], tuple(r["hkl"]))
            table.setdefault(key, {k: v for k, v in r.items() if k != "transfer"})
    keys = sorted(table, key=lambda k: (k[0], -table[k]["d_nm"], k[1]))
    files: dict[str, dict] = {}
    written = []
    for sim in series:
        name = f"maghemite_110_{defocus_tag(sim.defocus_nm)}.tif"
        written.append(write_tiff(folder / name, sim, dtype=TIFF_DTYPE))
        t = sim.truth.to_dict()
        transfer = {(r["particle"], tuple(r["hkl"])): r["transfer"] for r in t["reflections"]}
        files[name] = {
            "defocus_nm": sim.defocus_nm,
            "pixel_size_nm": sim.pixel_size_nm,
            "mask_fraction": t["mask_fraction"],
            "transfer": [transfer.get(k) for k in keys],
        }
    params = dict(series[0].truth.params)
    params.pop("defocus_nm", None)
    params.pop("series_index", None)
    truth = {
        "description": (
            "Simulated HRTEM focal series of eight maghemite (gamma-Fe2O3) particles, 4 to 10 "
            "nm, on amorphous carbon, the largest viewed along [110] (per-particle zone axes "
            "under 'particles'; hrtem_core.simulate; scripts/make_example_series.py). Defocus "
            "in nm, negative = underfocus. Pixel values are electron counts. g vectors "
            "(gy, gx) in 1/nm in the image frame (y down); particle centre (y, x) and radius in "
            "pixels; each reflection names its particle (index into 'particles'); per file, "
            "'transfer' lists sin(chi) E_t E_s of each reflection in that order (null: beyond "
            "the information limit at that defocus)."
        ),
        "card_id": phase.card_id,
        "phase": phase.name,
        "zone_axis": list(SERIES_ZONE_AXIS),
        "defoci_nm": list(SERIES_DEFOCI_NM),
        "params": params,
        "particles": series[0].truth.to_dict()["particles"],
        "reflections": [table[k] for k in keys],
        "files": files,
    }
    text = json.dumps(truth, separators=(",", ":"))
    (folder / "truth.json").write_text(text + "\n", encoding="utf-8")
    return written


def make_example(out_dir: Path) -> Path:
    """Simulate and write the single example image (maghemite + hematite) and its sidecar."""
    db = load_cards()
    mag = db.phase("39-1346")
    hem = db.phase("33-0664")
    ny, nx = RECORDING["shape"]
    parts = [
        Particle(
            phase=mag,
            zone_axis=(1, 1, 0),
            diameter_nm=15.0,
            rotation_deg=35.0,
            center_px=(0.33 * ny, 0.35 * nx),
            structure=bundled_structure(mag.card_id),
        ),
        Particle(
            phase=hem,
            zone_axis=(1, 0, 0),
            diameter_nm=11.0,
            rotation_deg=-10.0,
            center_px=(0.69 * ny, 0.67 * nx),
            shape="faceted",
            structure=bundled_structure(hem.card_id),
        ),
    ]
    (sim,) = simulate_particles(
        parts, defocus_nm=EXAMPLE_DEFOCUS_NM, seed=EXAMPLE_SEED, **OPTICS, **RECORDING
    )
    path = write_tiff(out_dir / "maghemite_particle.tif", sim, dtype=TIFF_DTYPE)
    sidecar = {
        "description": (
            "Simulated HRTEM image: maghemite (39-1346) [110] and hematite (33-0664) [100] "
            "particles on amorphous carbon at -16 nm defocus (hrtem_core.simulate)."
        ),
        "params": sim.truth.params,
        **_file_truth(sim),
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--out", type=Path, default=REPO / "data" / "examples", help="output folder"
    )
    args = parser.parse_args(argv)
    files = make_series(args.out)
    files.append(make_example(args.out))
    total = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"{f.relative_to(args.out)}  {f.stat().st_size / 1e6:.2f} MB")
    print(f"total {total / 1e6:.2f} MB in {len(files)} TIFF files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
