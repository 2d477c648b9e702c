"""Write the bundled example data: a simulated focal series and one example image.

Run from the repository root (about 15 s)::

    /tmp/venv/bin/python scripts/make_example_series.py            # writes data/examples/
    /tmp/venv/bin/python scripts/make_example_series.py -o /tmp/ex

Writes

* ``focal_series/maghemite_110_df<sign><n>nm.tif``: a maghemite (card 39-1346) particle viewed
  along [110] on amorphous carbon, defocus -18 to +18 nm in steps of 4 nm, 1024 x 1024 px,
  uint16 counts, zlib-compressed ImageJ TIFFs calibrated in nm (``hrtem_core.io`` reads the pixel
  size back, and the defocus from the name);
* ``focal_series/truth.json``: every parameter and, per file, the visible reflections (hkl, d,
  g in the image frame, CTF transfer) and the particle's bounding circle;
* ``maghemite_particle.tif`` (+ ``maghemite_particle.json``): a maghemite particle [110] and a
  hematite particle (card 33-0664) [100] side by side, at -16 nm.

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
    Particle,
    SimulatedImage,
    defocus_tag,
    known_structure,
    simulate_particles,
    write_tiff,
)

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
    "dose_e_per_A2": 800.0,
    "support_thickness_nm": 5.0,
    "absorption": 0.05,
}
SERIES_PARTICLE = {
    "card_id": "39-1346",
    "zone_axis": (1, 1, 0),
    "diameter_nm": 22.0,
    "rotation_deg": 20.0,
    "shape": "sphere",
}
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


def make_series(out_dir: Path) -> list[Path]:
    """Simulate and write the focal series and its truth.json; return the files written."""
    db = load_cards()
    phase = db.phase(SERIES_PARTICLE["card_id"])
    part = Particle(
        phase=phase,
        zone_axis=SERIES_PARTICLE["zone_axis"],
        diameter_nm=SERIES_PARTICLE["diameter_nm"],
        rotation_deg=SERIES_PARTICLE["rotation_deg"],
        shape=SERIES_PARTICLE["shape"],
        structure=known_structure(phase.card_id),
    )
    series = simulate_particles(
        [part], defocus_nm=SERIES_DEFOCI_NM, seed=SERIES_SEED, **OPTICS, **RECORDING
    )
    folder = out_dir / "focal_series"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tif"):
        old.unlink()
    files: dict[str, dict] = {}
    written = []
    for sim in series:
        name = f"maghemite_110_{defocus_tag(sim.defocus_nm)}.tif"
        written.append(write_tiff(folder / name, sim, dtype="uint16"))
        files[name] = _file_truth(sim)
    params = dict(series[0].truth.params)
    params.pop("defocus_nm", None)
    params.pop("series_index", None)
    truth = {
        "description": (
            "Simulated HRTEM focal series of a maghemite (gamma-Fe2O3) particle viewed along "
            "[110] on amorphous carbon (hrtem_core.simulate; scripts/make_example_series.py). "
            "Defocus in nm, negative = underfocus. g vectors (gy, gx) in 1/nm in the image "
            "frame (y down); particle centre (y, x) and radius in pixels."
        ),
        "card_id": phase.card_id,
        "phase": phase.name,
        "zone_axis": list(SERIES_PARTICLE["zone_axis"]),
        "defoci_nm": list(SERIES_DEFOCI_NM),
        "params": params,
        "files": files,
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
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
            structure=known_structure(mag.card_id),
        ),
        Particle(
            phase=hem,
            zone_axis=(1, 0, 0),
            diameter_nm=11.0,
            rotation_deg=-10.0,
            center_px=(0.69 * ny, 0.67 * nx),
            shape="faceted",
            structure=known_structure(hem.card_id),
        ),
    ]
    (sim,) = simulate_particles(
        parts, defocus_nm=EXAMPLE_DEFOCUS_NM, seed=EXAMPLE_SEED, **OPTICS, **RECORDING
    )
    path = write_tiff(out_dir / "maghemite_particle.tif", sim, dtype="uint16")
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
