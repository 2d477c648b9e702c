"""Predicted lattice visibility against defocus for the bundled focal series.

Run from the repository root (about 20 s)::

    /tmp/venv/bin/python benchmarks/plot_visibility.py      # -> docs/img/visibility_vs_defocus.png

Two panels, for the optics and the particle of ``scripts/make_example_series.py``:

* left: linear imaging theory, ``|sin chi(g)| E_t(g) E_s(g)`` of the strongest maghemite
  reflections (111, 220, 311, 400) and the amplitude-weighted lattice visibility
  (:func:`hrtem_core.simulate.lattice_visibility`);
* right: the fringe contrast the simulator actually produces for the bundled (22 nm thick,
  strong-phase) particle, measured on noise-free images of the same specimen at the series'
  defoci (:func:`hrtem_core.simulate.fringe_contrast`), per reflection family.

Prints both as a Markdown table as well.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hrtem_core.cards import load_cards  # noqa: E402
from hrtem_core.simulate import (  # noqa: E402
    Particle,
    ctf,
    fringe_contrast,
    known_structure,
    lattice_visibility,
    simulate_particles,
)

FAMILIES = {"111": (1, 1, 1), "220": (2, 2, 0), "311": (3, 1, 1), "400": (4, 0, 0)}


def _series_settings():
    spec = importlib.util.spec_from_file_location(
        "make_example_series", REPO / "scripts" / "make_example_series.py"
    )
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def _family(hkl: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(sorted((abs(v) for v in hkl), reverse=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--out", type=Path, default=REPO / "docs" / "img" / "visibility_vs_defocus.png"
    )
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = _series_settings()
    optics = ex.OPTICS
    rec = dict(ex.RECORDING)
    part_spec = ex.SERIES_PARTICLE
    phase = load_cards().phase(part_spec["card_id"])
    structure = known_structure(phase.card_id)
    cell = phase.cell

    df_fine = np.linspace(-20.0, 20.0, 401)
    vis = lattice_visibility(
        phase,
        df_fine,
        zone_axis=part_spec["zone_axis"],
        pixel_size_nm=rec["pixel_size_nm"],
        structure=structure,
        **optics,
    )
    curves = {
        name: np.abs(ctf(1.0 / float(cell.d_spacing_nm(hkl)), defocus_nm=df_fine, **optics))
        for name, hkl in FAMILIES.items()
    }

    # Noise-free images of the bundled specimen (same seed) at the series' defoci.
    defoci = np.asarray(ex.SERIES_DEFOCI_NM)
    rec["dose_e_per_A2"] = None
    part = Particle(
        phase=phase,
        zone_axis=part_spec["zone_axis"],
        diameter_nm=part_spec["diameter_nm"],
        rotation_deg=part_spec["rotation_deg"],
        shape=part_spec["shape"],
        structure=structure,
    )
    sims = simulate_particles([part], defocus_nm=defoci, seed=ex.SERIES_SEED, **optics, **rec)
    measured = {name: [] for name in FAMILIES}
    for sim in sims:
        contrast = fringe_contrast(sim)
        for name, hkl in FAMILIES.items():
            fam = _family(hkl)
            vals = [
                c
                for r, c in zip(sim.truth.reflections, contrast, strict=True)
                if _family(r.hkl) == fam
            ]
            measured[name].append(float(np.mean(vals)) if vals else np.nan)

    colors = {"111": "tab:purple", "220": "tab:blue", "311": "tab:red", "400": "tab:green"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4), sharex=True)
    for name, y in curves.items():
        d = float(cell.d_spacing_nm(FAMILIES[name]))
        ax1.plot(df_fine, y, color=colors[name], lw=1.2, label=f"{name} ({d:.3f} nm)")
    ax1.plot(df_fine, vis, color="k", lw=2.2, label="weighted visibility")
    ax1.set_ylabel(r"$|\sin\chi(g)|\,E_t E_s$")
    ax1.set_title("Linear theory (weak-phase CTF)")
    ax1.set_ylim(0, 1.05)
    for name in FAMILIES:
        ax2.plot(defoci, measured[name], "o-", color=colors[name], label=name)
    ax2.set_ylabel("fringe contrast (noise-free image)")
    ax2.set_title("Simulated 22 nm particle (strong phase object)")
    for ax in (ax1, ax2):
        ax.set_xlabel("defocus [nm] (negative = underfocus)")
        ax.axvline(0.0, color="0.7", lw=0.8)
        for d in defoci:
            ax.axvline(d, color="0.9", lw=0.6, zorder=0)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(
        f"Maghemite [110], {optics['voltage_kv']:.0f} kV, Cs {optics['cs_mm']} mm, "
        f"focal spread {optics['focal_spread_nm']} nm, convergence "
        f"{optics['convergence_mrad']} mrad",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")

    # Markdown table at the series' defoci.
    v_series = lattice_visibility(
        phase,
        defoci,
        zone_axis=part_spec["zone_axis"],
        pixel_size_nm=rec["pixel_size_nm"],
        structure=structure,
        **optics,
    )
    head = "| defocus [nm] | predicted visibility | " + " | ".join(
        f"|CTF| {n} | contrast {n}" for n in FAMILIES
    )
    print(head + " |")
    print("|" + "---|" * (2 + 2 * len(FAMILIES)))
    for i, df in enumerate(defoci):
        cells = [f"{df:+.0f}", f"{v_series[i]:.2f}"]
        for name, hkl in FAMILIES.items():
            k = 1.0 / float(cell.d_spacing_nm(hkl))
            cells.append(f"{abs(float(ctf(k, defocus_nm=df, **optics))):.2f}")
            cells.append(f"{measured[name][i]:.3f}")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
