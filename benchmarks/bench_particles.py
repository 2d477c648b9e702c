"""Acceptance check of the particle grouping on held-out multislice scenes (issue 22).

    python benchmarks/bench_particles.py                       # 12 scenes, U-Net detector
    python benchmarks/bench_particles.py --n-scenes 4  # a quick run
    python benchmarks/bench_particles.py --detector classical  # (needs w = 128 to see much)
    python benchmarks/bench_particles.py --atoms       # maghemite, magnetite, hematite from atoms
    python benchmarks/bench_particles.py --seed 7      # the training seed
    python benchmarks/bench_particles.py --halo least  # size from the outline with one R

Each scene: two particles of two different phases of ``data/pdf_cards.xlsx`` (drawn with a
seed not used by the tests), low-index zones, diameters 5-9 nm, random in-plane rotations and
positions (not touching), on 3 nm of amorphous carbon, 512 x 512 px at 0.04 nm/px, 300 kV,
Cs = 1.2 mm, defocus drawn in [-60, -20] nm, multislice (1 nm slices), 2000 e/A^2. Every phase
is simulated with the smooth fall-off over its allowed reflections (the cards list no
intensities), so this benchmark's maghemite has superstructure reflections as strong as its
spinel ones; ``--atoms`` simulates the phases with a structure model (maghemite's
vacancy-ordered P4_132, magnetite, hematite: :func:`hrtem_core.simulate.known_structure`) from
their atoms instead, the same scenes otherwise. The analysis uses w = 64, s = 32; the defocus
used for the delocalisation correction is the one estimated from the image
(:func:`hrtem_core.defocus.defocus_for_result`): nothing is given. Each particle's diffractogram
is indexed with the same cards (:func:`hrtem_core.particles.particle_pattern`).

Acceptance (issue 22): ``particles.csv`` lists exactly the two particles, each centred within
1.5 nm of the truth, with the right phase, and an equivalent diameter within 35 % of the truth.
The report gives each criterion's pass rate separately (the phase depends on the indexing):
"phases right" counts a particle whose named phase is the truth; "right or listed" also counts
an ambiguous particle (``phase_status = ambiguous``) that lists the truth among its candidates
(near-twin cells and projection twins, :func:`hrtem_core.particles.pooled_phase`).
"All of them" uses the strict "phases right".
Writes ``benchmarks/results/particles.json`` and ``particles.md`` (``particles.atoms.*`` with
``--atoms``; ``.seed7`` with ``--seed 7``, the seed the particle rules were tuned on;
``.halo-least`` with ``--halo least``, the size corrected from the outline with one ``R``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrtem_core.analysis import AnalysisParams, analyze_image  # noqa: E402
from hrtem_core.cards import load_cards  # noqa: E402
from hrtem_core.defocus import defocus_for_result  # noqa: E402
from hrtem_core.io import Micrograph  # noqa: E402
from hrtem_core.particles import ParticleParams, particles_for_result  # noqa: E402
from hrtem_core.simulate import Particle, known_structure, simulate_particles  # noqa: E402

#: Zones per card (low-index, in the simulator's [uvw] convention).
ZONES = {
    "39-1346": [(1, 1, 0), (1, 0, 0), (1, 1, 1)],
    "19-0629": [(1, 1, 0), (1, 0, 0), (1, 1, 1)],
    "33-0664": [(0, 0, 1)],
    "29-0713": [(0, 0, 1), (1, 0, 0)],
    "44-1415": [(1, 0, 0)],
    "34-1266": [(0, 0, 1)],
    "13-0087": [(0, 0, 1)],
}
PX = 0.04
SHAPE = (512, 512)


def scene(rng: np.random.Generator, cards, *, atoms: bool = False) -> tuple[list[Particle], float]:
    ids = list(ZONES)
    a, b = rng.choice(len(ids), size=2, replace=False)
    parts = []
    while True:
        d = rng.uniform(5.0, 9.0, size=2)
        r_px = d / 2 / PX
        c = [rng.uniform(r + 20, SHAPE[0] - r - 20, size=2) for r in r_px]
        if np.hypot(*(c[0] - c[1])) > r_px.sum() + 40:
            break
    for k, card in enumerate((ids[a], ids[b])):
        zones = ZONES[card]
        parts.append(
            Particle(
                cards.phase(card),
                zones[int(rng.integers(len(zones)))],
                float(d[k]),
                float(rng.uniform(0, 180)),
                (float(c[k][0]), float(c[k][1])),
                structure=known_structure(card) if atoms else None,
            )
        )
    return parts, float(rng.uniform(-60, -20))


def run(
    n_scenes: int, detector: str, seed: int, *, atoms: bool = False, halo: str = "reflections"
) -> dict:
    cards = load_cards()
    params = AnalysisParams(window_px=64, stride_px=32, detector=detector)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_scenes):
        parts, df = scene(rng, cards, atoms=atoms)
        sim = simulate_particles(
            parts,
            pixel_size_nm=PX,
            shape=SHAPE,
            defocus_nm=df,
            seed=seed * 1000 + i,
            support_thickness_nm=3.0,
        )[0]
        m = Micrograph(
            data=sim.image,
            pixel_size_nm=(PX, PX),
            reader="simulated",
            metadata={},
            warnings=(),
            name=f"scene_{i:02d}.tif",
        )
        t0 = time.perf_counter()
        res = analyze_image(m, params=params, cards=cards)
        est = defocus_for_result(res, sim.image)
        pr = particles_for_result(
            res,
            sim.image,
            defocus_nm=est.defocus_nm,
            cards=cards,
            params=ParticleParams(halo=halo),
        )
        secs = time.perf_counter() - t0
        t = pr.table
        per = []
        for p in sim.truth.particles:
            if len(t):
                dist = np.hypot(t.x_px - p.center_px[1], t.y_px - p.center_px[0]) * PX
                j = int(np.argmin(dist))
                per.append(
                    {
                        "card_id": p.card_id,
                        "phase": p.phase_name,
                        "zone": list(p.zone_axis),
                        "diameter_nm": round(p.diameter_nm, 2),
                        "match": j + 1,
                        "centre_error_nm": round(float(dist.iloc[j]), 3),
                        "found_phase": t.phase_name.iloc[j],
                        "phase_status": t.phase_status.iloc[j],
                        "phase_candidates": t.phase_candidates.iloc[j],
                        # NaN (no named window: named by the diffractogram) -> null
                        "phase_share": (
                            float(t.phase_share.iloc[j])
                            if np.isfinite(t.phase_share.iloc[j])
                            else None
                        ),
                        "diameter_found_nm": float(t.equivalent_diameter_nm.iloc[j]),
                        "diameter_raw_nm": float(t.equivalent_diameter_raw_nm.iloc[j]),
                        "diameter_error": round(
                            float(t.equivalent_diameter_nm.iloc[j] / p.diameter_nm - 1), 3
                        ),
                        "n_windows": int(t.n_windows.iloc[j]),
                    }
                )
        count_ok = len(t) == 2 and len({q["match"] for q in per}) == 2
        centre_ok = count_ok and all(q["centre_error_nm"] <= 1.5 for q in per)
        size_ok = count_ok and all(abs(q["diameter_error"]) <= 0.35 for q in per)
        phase_ok = count_ok and all(q["found_phase"] == q["phase"] for q in per)
        # Right, or listed among the candidates of an ambiguous particle ("maghemite / magnetite").
        listed_ok = count_ok and all(q["phase"] in q["found_phase"].split(" / ") for q in per)
        rows.append(
            {
                "scene": i,
                "defocus_nm": round(df, 2),
                "defocus_estimate_nm": round(est.defocus_nm, 2),
                "n_found": len(t),
                "particles": per,
                "count_ok": count_ok,
                "centre_ok": centre_ok,
                "size_ok": size_ok,
                "phase_ok": phase_ok,
                "phase_listed_ok": listed_ok,
                "all_ok": count_ok and centre_ok and size_ok and phase_ok,
                "seconds": round(secs, 2),
            }
        )
        print(
            f"scene {i}: found {len(t)}; "
            + "; ".join(
                f"{q['phase']} -> {q['found_phase'] or '?'} ({q['phase_status'] or '-'}) "
                f"d {q['diameter_error']:+.2f} "
                f"c {q['centre_error_nm']:.2f} nm"
                for q in per
            ),
            flush=True,
        )
    n = len(rows)
    rate = {
        k: sum(r[k] for r in rows) / n
        for k in ("count_ok", "centre_ok", "size_ok", "phase_ok", "phase_listed_ok", "all_ok")
    }
    # Per phase of the truth: each particle found (a found particle centred within 1.5 nm; the
    # scenes' particles are far enough apart for it to be its own) and what its phase came out
    # as: right, listed with a twin (ambiguous), unnamed or wrong.
    by_phase: dict[str, dict[str, int]] = {}
    for r in rows:
        for q in r["particles"]:
            c = by_phase.setdefault(
                q["phase"],
                {"n": 0, "found": 0, "right": 0, "listed": 0, "unnamed": 0, "wrong": 0},
            )
            c["n"] += 1
            if q["centre_error_nm"] > 1.5:
                continue
            c["found"] += 1
            names = q["found_phase"].split(" / ") if q["found_phase"] else []
            kind = (
                "right"
                if names == [q["phase"]]
                else "listed"
                if q["phase"] in names
                else "unnamed"
                if not names
                else "wrong"
            )
            c[kind] += 1
    errs = [abs(q["diameter_error"]) for r in rows for q in r["particles"]]
    cerr = [q["centre_error_nm"] for r in rows for q in r["particles"]]
    return {
        "detector": detector,
        "seed": seed,
        "n_scenes": n,
        "pass_rates": rate,
        "median_abs_diameter_error": round(float(np.median(errs)), 3) if errs else None,
        "median_centre_error_nm": round(float(np.median(cerr)), 3) if cerr else None,
        "by_phase": by_phase,
        "scenes": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-scenes", type=int, default=12)
    ap.add_argument("--detector", default="unet", choices=("classical", "unet"))
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument(
        "--atoms",
        action="store_true",
        help="simulate maghemite, magnetite and hematite from their structure models "
        "(hrtem_core.simulate.known_structure) instead of the smooth fall-off",
    )
    ap.add_argument(
        "--halo",
        default="reflections",
        choices=("reflections", "least", "strongest", "weighted", "none"),
        help="the size's delocalisation correction (hrtem_core.particles.ParticleParams.halo)",
    )
    args = ap.parse_args()
    rep = run(args.n_scenes, args.detector, args.seed, atoms=args.atoms, halo=args.halo)
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    stem = "particles" if args.detector == "unet" else f"particles.{args.detector}"
    stem += ".atoms" if args.atoms else ""
    stem += f".seed{args.seed}" if args.seed != 2022 else ""
    stem += f".halo-{args.halo}" if args.halo != "reflections" else ""
    (res / f"{stem}.json").write_text(json.dumps(rep, indent=2) + "\n")
    r = rep["pass_rates"]
    lines = [
        f"# Particles on held-out two-phase scenes ({args.detector} detector, {rep['n_scenes']} "
        f"scenes{', structure models' if args.atoms else ''})",
        "",
        "| criterion | pass rate |",
        "|---|---|",
        f"| exactly two particles | {r['count_ok']:.2f} |",
        f"| both centred within 1.5 nm | {r['centre_ok']:.2f} |",
        f"| both diameters within 35 % | {r['size_ok']:.2f} |",
        f"| both phases right (named) | {r['phase_ok']:.2f} |",
        f"| both phases right or listed as the ambiguous alternative | {r['phase_listed_ok']:.2f} |",
        f"| all of them | {r['all_ok']:.2f} |",
        "",
        f"Median |diameter error| {rep['median_abs_diameter_error']}, median centre error "
        f"{rep['median_centre_error_nm']} nm.",
        "",
        "Per phase of the truth (particles found: a particle centred within 1.5 nm; then the "
        "phase: named right, listed with its twin as ambiguous, unnamed, wrong):",
        "",
        "| phase | particles | found | right | listed | unnamed | wrong |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {ph} | {c['n']} | {c['found']} | {c['right']} | {c['listed']} | "
            f"{c['unnamed']} | {c['wrong']} |"
            for ph, c in sorted(rep["by_phase"].items())
        ),
    ]
    (res / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if r["all_ok"] == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
