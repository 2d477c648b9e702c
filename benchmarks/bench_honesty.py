"""Honest-indexing benchmark (issue 17, point 6 and its acceptance) on the project's own scenes.

    python benchmarks/bench_honesty.py            # 2048 px scenes, all of the bundled series
    python benchmarks/bench_honesty.py --quick    # 1024 px scenes, half the series (< 3 min)
    python benchmarks/bench_honesty.py --detector classical --halo-nm 2

Scenes (:mod:`benchmarks.scenes`, seeded):

(a) multislice particle scenes of shipped phases (maghemite, magnetite, hematite, goethite;
    300 kV, Cs = 1.2 mm, near Scherzer focus, 3 nm amorphous carbon, Poisson noise);
(b) the same with one crystal NOT in the shipped cards (SrTiO3 [001], Au [110], ZnO [2-1-10]),
    analysed with the shipped cards, then again with the foreign crystal's card added;
(c) zeros, a constant, white noise, Poisson noise, amorphous carbon only (at the simulator's
    default -16 nm and at Scherzer focus), and 512 x 512 zeros with one 64 px noise patch
    (analysed with w = 128 and w = 256: the issue's "45 of 49 windows" case);
(d) the bundled focal series ``data/examples/focal_series`` (truth.json beside it).

Each window is analysed with :func:`hrtem_core.analysis.analyze_image` (w = 256, s = 64, U-Net
by default, shipped cards). Window classes: **inside** a particle = at least 50 % of the
footprint covered by the particle; **beyond the halo** = the footprint lies farther than
``R_halo`` (default 3 nm) beyond every particle's edge (bounding circle). "Carries a phase name" =
``phase_card`` non-empty. Phase right = named the true card, or ``ambiguous`` naming its near-twin
(maghemite / magnetite) while listing the true card. Zone right = phase right and the zone given
for the true card is +- a symmetry-equivalent direction of the true zone.

Each line is marked PASS / FAIL against the issue's acceptance thresholds. The numbers go to
``benchmarks/results/honesty_quick.json`` or ``honesty_full.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
# HRTEM_CORE_PATH=/path/to/checkout: measure that checkout's hrtem_core (e.g. a branch under work)
# with this harness; default the checkout this script is in.
if os.environ.get("HRTEM_CORE_PATH"):
    sys.path.insert(0, str(Path(os.environ["HRTEM_CORE_PATH"]).resolve()))

import scenes as sc  # noqa: E402

import hrtem_core  # noqa: E402
from hrtem_core import __version__  # noqa: E402
from hrtem_core.analysis import AnalysisParams, analyze_image  # noqa: E402
from hrtem_core.cards import load_cards  # noqa: E402

#: Acceptance thresholds of issue 17: (comparison, value).
THRESHOLDS = {
    "false_crystalline_beyond_halo": ("<=", 0.05),
    "recall_inside": (">=", 0.90),
    "phase_right_inside": (">=", 0.90),
    "zone_right_inside": (None, None),
    "foreign_named_fraction": ("<=", 0.10),
    "foreign_named_right_with_card": (">=", 0.80),
    "foreign_zone_right_with_card": (">=", 0.60),
    "null_crystalline_rate": ("<=", 0.02),
    "series_maghemite_fraction": (">=", 0.95),
}


def verdict(key: str, value: float | None) -> str:
    op, thr = THRESHOLDS[key]
    if value is None:
        return "n/a"
    if op is None:
        return "info"
    ok = value <= thr if op == "<=" else value >= thr
    return "PASS" if ok else "FAIL"


def fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024 px scenes, half the series")
    ap.add_argument("--halo-nm", type=float, default=3.0, help="R_halo [nm] (default 3)")
    ap.add_argument("--detector", default="unet", choices=("unet", "classical"))
    ap.add_argument("--stride", type=int, default=64, help="window stride [px] (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON name in benchmarks/results/")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    db = load_cards()
    params = AnalysisParams(window_px=256, stride_px=args.stride, detector=args.detector)
    model = None
    if args.detector == "unet":
        from hrtem_core.unet.load import load_model

        model = load_model()

    def run(scene: sc.Scene, cards, **kw) -> dict:
        prm = params
        if scene.window_px is not None:
            prm = dataclasses.replace(params, window_px=scene.window_px)
        res = analyze_image(scene.micrograph, params=prm, cards=cards, model=model)
        print(f"  analysed {scene.name} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
        return sc.score_scene(res.windows, res.grid, scene, cards, halo_nm=args.halo_nm, **kw)

    q = args.quick
    log: dict = {"scenes": {}}
    # (a) shipped phases
    a_scores = [run(s, db) for s in sc.shipped_scenes(quick=q, seed=args.seed)]
    # (b) foreign crystal, without and with its card
    crystals = sc.foreign_crystals()
    b_without, b_with = [], []
    for s in sc.foreign_scenes(quick=q, seed=args.seed):
        b_without.append(run(s, db))
        key = s.name.split("-", 1)[1]
        db_plus = db.with_phase(crystals[key].phase)
        b_with.append(run(s, db_plus, foreign_named_as=crystals[key].phase.card_id))
    # (c) null images
    c_scores = [run(s, db) for s in sc.null_scenes(quick=q, seed=args.seed)]
    # (d) bundled focal series
    d_scores, d_named, d_mag = [], 0, 0
    for s in sc.focal_series_scenes(quick=q):
        res = analyze_image(s.micrograph, params=params, cards=db, model=model)
        d_scores.append(sc.score_scene(res.windows, res.grid, s, db, halo_nm=args.halo_nm))
        for row in res.windows.itertuples():
            if not sc.named(row):
                continue
            d_named += 1
            listed = {c for c, _ in sc.alternatives(row.alternatives)}
            d_mag += int(
                row.phase_card == sc.MAGHEMITE
                or (
                    row.status == "ambiguous"
                    and row.phase_card == sc.MAGNETITE
                    and sc.MAGHEMITE in listed
                )
            )

    def total(scores: list[dict], group: str, key: str) -> int:
        return sum(s[group][key] for s in scores)

    def tot(scores: list[dict], key: str) -> int:
        return sum(s[key] for s in scores)

    ab = a_scores + b_without
    metrics = {
        "false_crystalline_beyond_halo": (
            sc.ratio(tot(ab, "n_beyond_halo_crystalline"), tot(ab, "n_beyond_halo")),
            f"{tot(ab, 'n_beyond_halo_crystalline')}/{tot(ab, 'n_beyond_halo')} windows "
            f"> {args.halo_nm:g} nm beyond every particle edge, scenes (a)+(b)",
        ),
        "recall_inside": (
            sc.ratio(total(a_scores, "shipped", "found"), total(a_scores, "shipped", "inside")),
            f"{total(a_scores, 'shipped', 'found')}/{total(a_scores, 'shipped', 'inside')} "
            "windows inside shipped-phase particles crystalline, scenes (a)",
        ),
        "phase_right_inside": (
            sc.ratio(
                total(a_scores, "shipped", "phase_right"), total(a_scores, "shipped", "found")
            ),
            f"{total(a_scores, 'shipped', 'phase_right')}/{total(a_scores, 'shipped', 'found')} "
            f"crystalline inside windows (strict, best match only: "
            f"{total(a_scores, 'shipped', 'phase_right_strict')})",
        ),
        "zone_right_inside": (
            sc.ratio(total(a_scores, "shipped", "zone_right"), total(a_scores, "shipped", "found")),
            f"{total(a_scores, 'shipped', 'zone_right')}/{total(a_scores, 'shipped', 'found')} "
            "crystalline inside windows (no threshold in the issue)",
        ),
        "foreign_named_fraction": (
            sc.ratio(total(b_without, "foreign", "named"), total(b_without, "foreign", "found")),
            f"{total(b_without, 'foreign', 'named')}/{total(b_without, 'foreign', 'found')} "
            "crystalline windows on the foreign crystal carry a phase name (shipped cards)",
        ),
        "foreign_named_right_with_card": (
            sc.ratio(total(b_with, "foreign", "named_right"), total(b_with, "foreign", "found")),
            f"{total(b_with, 'foreign', 'named_right')}/{total(b_with, 'foreign', 'found')} "
            "named right with the foreign card added",
        ),
        "foreign_zone_right_with_card": (
            sc.ratio(total(b_with, "foreign", "zone_right"), total(b_with, "foreign", "found")),
            f"{total(b_with, 'foreign', 'zone_right')}/{total(b_with, 'foreign', 'found')} "
            "zone right with the foreign card added",
        ),
        "null_crystalline_rate": (
            sc.ratio(tot(c_scores, "n_crystalline"), tot(c_scores, "n_windows")),
            f"{tot(c_scores, 'n_crystalline')}/{tot(c_scores, 'n_windows')} windows on "
            "flat/constant/noise/carbon images",
        ),
        "series_maghemite_fraction": (
            sc.ratio(d_mag, d_named),
            f"{d_mag}/{d_named} named windows of the bundled series say maghemite "
            "(or magnetite, ambiguous, listing maghemite)",
        ),
    }
    elapsed = time.perf_counter() - t_start

    print(
        f"bench_honesty ({'quick' if q else 'full'}), hrtem_core {__version__} @ {sc.git_rev()}, "
        f"detector {args.detector}, w=256 s={args.stride}, R_halo = {args.halo_nm:g} nm"
    )
    print(f"{'metric':34s} {'value':>7s}  {'target':>8s}  verdict  detail")
    for key, (value, detail) in metrics.items():
        op, thr = THRESHOLDS[key]
        target = "" if op is None else f"{op} {100 * thr:.0f}%"
        print(f"{key:34s} {fmt(value):>7s}  {target:>8s}  {verdict(key, value):7s}  {detail}")
    print("per null image (crystalline / windows):")
    for s in c_scores:
        print(f"  {s['scene']:24s} {s['n_crystalline']:4d}/{s['n_windows']:<4d}")
    print("per foreign scene (named / crystalline inside; with card: named right, zone right):")
    for s0, s1 in zip(b_without, b_with, strict=True):
        f0, f1 = s0["foreign"], s1["foreign"]
        print(
            f"  {s0['scene']:10s} inside {f0['inside']:3d} found {f0['found']:3d} "
            f"named {f0['named']:3d} unmatched {f0['unmatched']:3d} | with card: found {f1['found']:3d} "
            f"right {f1['named_right']:3d} zone {f1['zone_right']:3d}"
        )
    print("per shipped scene (inside, found, phase right, zone right, beyond-halo crystalline):")
    for s in a_scores + d_scores:
        a = s["shipped"]
        print(
            f"  {s['scene'][:26]:26s} {a['inside']:3d} {a['found']:3d} {a['phase_right']:3d} "
            f"{a['zone_right']:3d}   {s['n_beyond_halo_crystalline']}/{s['n_beyond_halo']}"
        )
    print(f"elapsed {elapsed:.1f} s on {os.cpu_count()} cores (machine shared: indicative)")

    log.update(
        {
            "mode": "quick" if q else "full",
            "version": __version__,
            "git": sc.git_rev(),
            "library": str(Path(hrtem_core.__file__).resolve().parent),
            "python": platform.python_version(),
            "detector": args.detector,
            "window_px": 256,
            "stride_px": args.stride,
            "halo_nm": args.halo_nm,
            "seed": args.seed,
            "elapsed_s": round(elapsed, 1),
            "definitions": {
                "inside": f"window footprint covered >= {sc.INSIDE_COVER:.0%} by one particle",
                "beyond_halo": "footprint farther than halo_nm beyond every particle edge",
                "named": "phase_card non-empty",
                "phase_right": "named the true card, or ambiguous naming its twin and listing it",
                "zone_right": "phase right and zone +- symmetry-equivalent to the true zone",
            },
            "metrics": {
                k: {
                    "value": v,
                    "detail": d,
                    "target": THRESHOLDS[k],
                    "verdict": verdict(k, v),
                }
                for k, (v, d) in metrics.items()
            },
        }
    )
    log["scenes"] = {
        "a_shipped": a_scores,
        "b_foreign_without_card": b_without,
        "b_foreign_with_card": b_with,
        "c_null": c_scores,
        "d_series": d_scores,
    }
    name = args.out or f"honesty_{'quick' if q else 'full'}.json"
    print(f"wrote {sc.save_json(log, name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
