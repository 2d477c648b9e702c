"""Honest-indexing acceptance (issue 17) on real microscope images nobody here made.

    python scripts/validate_real.py                      # ../shared/validation beside the checkout
    python scripts/validate_real.py --validation DIR --detector classical --stride 64

The images (``../shared/validation``, see its README.md; never copied into the project):

=============================  ==========================  ====================================
16_STOimage_1.ser (+ .emi)     SrTiO3 [001], STEM, 80 kV    metadata 0.010013 nm/px, about 3.6 %
                                                            larger than the lattice implies: run
                                                            with the metadata calibration AND
                                                            with the corrected one (/ 1.036)
Acquisition_18.emd             SrTiO3, STEM, 200 kV         0.0122465 nm/px
YBCO_tem.tif                   YBa2Cu3O7, HAADF, 300 kV     0.035246 nm/px (FEI tags)
Dataset140_Frame_0016.jpg      Zr/ZrO2, HRTEM               none: run at several assumed pixel
                                                            sizes (a crystal that no shipped card
                                                            describes must stay unnamed at any)
ExampleImage.tif (+ .mat)      soot, curved fringes         0.0555 nm/px (px_nm in the .mat)
=============================  ==========================  ====================================

For each image, :func:`hrtem_core.analysis.analyze_image` (w = 256, s = 64 by default, U-Net)
with the 7 shipped iron-oxide cards gives the fraction of crystalline windows that carry a phase
name (``phase_card`` non-empty; acceptance <= 10 %: none of these crystals is in the cards).
Then, with the right card added (SrTiO3 Pm-3m a = 3.905 A; YBa2Cu3O7 Pmmm a = 3.82, b = 3.89,
c = 11.68 A), the fraction of crystalline windows named right (>= 80 %) and with the zone right
(>= 60 %; the zone counts as right when it is +- a symmetry-equivalent direction of the expected
one: SrTiO3 .ser [001]; the .emd <001> (not documented: inferred from its square lattice of
(100) and (110) spots at 45 deg); YBCO [100], [010] or [001] (a and b differ by 2 %)).

The .emd and the YBCO tif measure lattice spacings about 4-5 % larger than their cards at the
file's calibration (as the .ser does): they (and the .ser, to compare its factor with the
README's 3.6 %) are run again "lattice-calibrated", the pixel size scaled so
that the median measured spacing near SrTiO3 (100) = 0.3905 nm, resp. YBCO (100)/(010) = 0.3855 nm,
falls on the card (the factor is printed). The .ser is a STEM image with a scan distortion
besides ((100) and (010) 2-3 deg from 90 deg, (110) and (1-10) 5 % apart): a scalar pixel size
cannot calibrate it. Each image is therefore also run "distortion-calibrated" (the .emd and
the YBCO tif from their lattice-calibrated pixel size: more than the 3 % spacing tolerance off,
no plane is assigned to the card to start from): the full 2x2
stretch measured on the image with its card (:func:`hrtem_core.distortion.calibrate_distortion`,
``python -m hrtem_core calibrate FILE --card ID``), the image resampled with it
(:func:`hrtem_core.distortion.undistort`, ``--distortion``), as a microscopist calibrates a STEM
on a known lattice. Naming with the shipped cards is judged at every
calibration. The soot image
has no sharp spots: at most half of its windows may be crystalline (and none named).

Prints one table (PASS / FAIL per line) and writes ``benchmarks/results/honesty_real.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
from hrtem_core.cards import CardDatabase, load_cards  # noqa: E402
from hrtem_core.distortion import calibrate_distortion, undistort  # noqa: E402
from hrtem_core.io import load_image  # noqa: E402

#: SrTiO3 .ser: the metadata pixel size is about 3.6 % larger than the lattice implies (README).
STO_SER_CORRECTION = 1.036
NAMED_MAX = 0.10
NAMED_RIGHT_MIN = 0.80
ZONE_RIGHT_MIN = 0.60
SOOT_CRYSTALLINE_MAX = 0.50
#: SrTiO3 .emd: not documented; its lattice is square with d(100) / d(110) = sqrt(2) and 45 deg
#: between them (seen in this image's own spots), i.e. <001>.
EMD_ZONES = ((0, 0, 1),)
#: YBCO: [100], [010] (a and b differ by 2 %) or [001] (the a-b plane, a square-looking lattice).
YBCO_ZONES = ((1, 0, 0), (0, 1, 0), (0, 0, 1))


def lattice_factor(windows, d_ref_nm: float) -> float | None:
    """``d_ref / median(measured d)`` over the spacings within -5 % .. +10 % of ``d_ref``.

    The analysis's own spacings (any window, any card) at the file's calibration; multiplying
    the pixel size by this factor puts the strongest low-index lattice spacing on the card.
    """
    vals = []
    for text in windows["spacings_nm"]:
        if isinstance(text, str) and text:
            vals.extend(float(v) for v in text.split(";"))
    near = [v for v in vals if 0.95 * d_ref_nm <= v <= 1.10 * d_ref_nm]
    if len(near) < 5:
        return None
    near.sort()
    return d_ref_nm / near[len(near) // 2]


def sto_phase():
    return sc.make_phase(
        "val-SrTiO3", "strontium titanate", "SrTiO3", "cubic", "Pm-3m", 221, 3.905,
        source="SrTiO3 Pm-3m a = 3.905 A (validation card)",
    )  # fmt: skip


def ybco_phase():
    return sc.make_phase(
        "val-YBCO", "YBa2Cu3O7", "YBa2Cu3O7", "orthorhombic", "Pmmm", 47, 3.82, 3.89, 11.68,
        source="YBa2Cu3O7 Pmmm a = 3.82, b = 3.89, c = 11.68 A (validation card)",
    )  # fmt: skip


@dataclass
class Case:
    """One image at one calibration, with the card that describes it (if any)."""

    label: str
    file: str
    pixel_size_nm: float | None  # None: the file's metadata
    card: Any = None  # Phase or None
    zones: tuple[tuple[int, int, int], ...] = ()  # accepted zone axes; () = not judged
    kind: str = "crystal"  # "crystal" | "uncalibrated" | "soot"
    notes: str = ""
    extra: dict = field(default_factory=dict)


def cases(folder: Path) -> list[Case]:
    ser_meta = 0.010012704240403384
    mat = folder / "ExampleImage_px-nm.mat"
    soot_px = None
    if mat.is_file():
        import scipy.io

        soot_px = 1.0 / float(scipy.io.loadmat(mat)["px_nm"].ravel()[0])  # px per nm -> nm/px
    out = [
        Case("STO .ser (metadata px)", "16_STOimage_1.ser", None, sto_phase(), ((0, 0, 1),)),
        Case(
            "STO .ser (corrected px)",
            "16_STOimage_1.ser",
            ser_meta / STO_SER_CORRECTION,
            sto_phase(),
            ((0, 0, 1),),
            notes=f"metadata / {STO_SER_CORRECTION}",
        ),
        Case(
            "STO .ser (lattice-calibrated)",
            "16_STOimage_1.ser",
            None,
            sto_phase(),
            ((0, 0, 1),),
            extra={"calibrate_d_nm": 0.3905},
        ),
        Case(
            "STO .ser (distortion-calibrated)",
            "16_STOimage_1.ser",
            None,
            sto_phase(),
            ((0, 0, 1),),
            extra={"distortion": True},
        ),
        Case("STO .emd", "Acquisition_18.emd", None, sto_phase(), EMD_ZONES),
        Case("YBCO .tif", "YBCO_tem.tif", None, ybco_phase(), YBCO_ZONES),
        Case(
            "STO .emd (lattice-calibrated)",
            "Acquisition_18.emd",
            None,
            sto_phase(),
            EMD_ZONES,
            extra={"calibrate_d_nm": 0.3905},
        ),
        Case(
            "YBCO .tif (lattice-calibrated)",
            "YBCO_tem.tif",
            None,
            ybco_phase(),
            YBCO_ZONES,
            extra={"calibrate_d_nm": 0.3855},
        ),
        Case(
            "STO .emd (distortion-calibrated)",
            "Acquisition_18.emd",
            None,
            sto_phase(),
            EMD_ZONES,
            extra={"calibrate_d_nm": 0.3905, "distortion": True},
        ),
        Case(
            "YBCO .tif (distortion-calibrated)",
            "YBCO_tem.tif",
            None,
            ybco_phase(),
            YBCO_ZONES,
            extra={"calibrate_d_nm": 0.3855, "distortion": True},
        ),
    ]
    for p in (0.01, 0.02, 0.04):
        out.append(
            Case(f"Zr/ZrO2 .jpg (assumed {p} nm/px)", "Dataset140_Frame_0016.jpg", p,
                 kind="uncalibrated", notes="no calibration in the file")
        )  # fmt: skip
    out.append(Case("soot .tif (.mat px)", "ExampleImage.tif", soot_px, kind="soot"))
    return out


def zone_ok(sg: str, zones: tuple, found: Any) -> bool:
    return any(sc.equivalent_zone(sg, z, found) for z in zones)


def count(windows, card_id: str | None, sg: str | None, zones: tuple) -> dict:
    rows = list(windows.itertuples())
    cryst = [r for r in rows if int(r.crystalline) > 0]
    named = [r for r in cryst if sc.named(r)]
    out = {
        "n_windows": len(rows),
        "n_crystalline": len(cryst),
        "n_named": len(named),
        "named_as": dict(collections.Counter(r.phase_name for r in named).most_common(5)),
        "status_counts": dict(collections.Counter(r.status for r in rows)),
    }
    if card_id:
        right = [r for r in cryst if sc.named(r) and r.phase_card == card_id]
        out["n_named_right"] = len(right)
        out["zones_of_right"] = dict(collections.Counter(r.zone_axis for r in right).most_common(6))
        if zones:
            out["n_zone_right"] = sum(zone_ok(sg, zones, sc.zone_of(r, card_id)) for r in right)
    return out


def frac(n: int, d: int) -> float | None:
    return None if d == 0 else n / d


def mark(value: float | None, op: str, thr: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value <= thr if op == "<=" else value >= thr) else "FAIL"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--validation", default=str(REPO.parent / "shared" / "validation"))
    ap.add_argument("--detector", default="unet", choices=("unet", "classical"))
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--out", default="honesty_real.json")
    args = ap.parse_args(argv)
    folder = Path(args.validation)
    if not folder.is_dir():
        print(f"no validation folder at {folder}: nothing to do")
        return 1
    t0 = time.perf_counter()
    db = load_cards()
    params = AnalysisParams(window_px=args.window, stride_px=args.stride, detector=args.detector)
    model = None
    if args.detector == "unet":
        from hrtem_core.unet.load import load_model

        model = load_model()
    results = []
    lines = []
    for case in cases(folder):
        path = folder / case.file
        if not path.is_file():
            print(f"missing {path}: skipped")
            continue
        mg = load_image(path, pixel_size_nm=case.pixel_size_nm)
        prm = params
        if min(mg.shape) < params.window_px:
            prm = replace(params, window_px=min(mg.shape) // 2)
        res = analyze_image(mg, params=prm, cards=db, model=model)
        if "calibrate_d_nm" in case.extra:
            factor = lattice_factor(res.windows, case.extra["calibrate_d_nm"])
            if factor is None:
                print(f"{case.label}: too few spacings near the lattice: skipped")
                continue
            case.notes = f"metadata x {factor:.4f} (lattice-calibrated)"
            print(f"{case.label}: pixel size {case.notes}")
            mg = load_image(path, pixel_size_nm=mg.pixel_size_nm[0] * factor)
            res = analyze_image(mg, params=prm, cards=db, model=model)
        if case.extra.get("distortion"):
            db_card = db.with_phase(case.card)
            fit = calibrate_distortion(
                mg,
                case.card.card_id,
                analyze=lambda m, prm=prm, db_card=db_card: analyze_image(
                    m, params=prm, cards=db_card, model=model
                ),
            )
            case.notes = f"--distortion {fit.as_option()}: {fit.describe()}"
            print(f"{case.label}: {case.notes} ({fit.n_iterations} rounds)")
            if "calibrate_d_nm" in case.extra:
                case.notes = f"metadata x {factor:.4f}, then {case.notes}"
            mg = undistort(mg, fit.stretch)
            res = analyze_image(mg, params=prm, cards=db, model=model)
        shipped = count(res.windows, None, None, ())
        entry: dict[str, Any] = {
            "case": case.label,
            "file": case.file,
            "pixel_size_nm": mg.pixel_size_nm[0],
            "notes": case.notes,
            "pixel_size_nm_metadata_or_given": case.pixel_size_nm,
            "shipped_cards": shipped,
        }
        if case.kind == "soot":
            v = frac(shipped["n_crystalline"], shipped["n_windows"])
            lines.append((case.label, "crystalline windows", v, "<=", SOOT_CRYSTALLINE_MAX,
                          f"{shipped['n_crystalline']}/{shipped['n_windows']}"))  # fmt: skip
        v = frac(shipped["n_named"], shipped["n_crystalline"])
        lines.append((case.label, "named, shipped cards", v, "<=", NAMED_MAX,
                      f"{shipped['n_named']}/{shipped['n_crystalline']} "
                      f"{shipped['named_as']}"))  # fmt: skip
        if case.card is not None:
            db_plus: CardDatabase = db.with_phase(case.card)
            res2 = analyze_image(mg, params=prm, cards=db_plus, model=model)
            added = count(res2.windows, case.card.card_id, case.card.space_group, case.zones)
            entry["with_card"] = added
            v = frac(added["n_named_right"], added["n_crystalline"])
            lines.append((case.label, "named right, card added", v, ">=", NAMED_RIGHT_MIN,
                          f"{added['n_named_right']}/{added['n_crystalline']}"))  # fmt: skip
            if case.zones:
                v = frac(added["n_zone_right"], added["n_crystalline"])
                detail = f"{added['n_zone_right']}/{added['n_crystalline']}"
            else:
                v, detail = None, "zone not documented"
            lines.append((case.label, "zone right, card added", v, ">=", ZONE_RIGHT_MIN,
                          f"{detail}; zones {added['zones_of_right']}"))  # fmt: skip
        results.append(entry)
    elapsed = time.perf_counter() - t0

    print(
        f"validate_real, hrtem_core {__version__}, detector {args.detector}, "
        f"w={args.window} s={args.stride}, {folder}"
    )
    print(f"{'image':34s} {'measure':26s} {'value':>7s} {'target':>7s} verdict  detail")
    table = []
    for label, what, v, op, thr, detail in lines:
        val = "n/a" if v is None else f"{100 * v:.1f}%"
        verdict = mark(v, op, thr)
        print(f"{label:34s} {what:26s} {val:>7s} {op}{100 * thr:3.0f}%  {verdict:7s}  {detail}")
        table.append(
            {"image": label, "measure": what, "value": v, "target": [op, thr], "verdict": verdict,
             "detail": detail}
        )  # fmt: skip
    print(f"elapsed {elapsed:.1f} s (machine shared with other jobs)")
    report = {
        "version": __version__,
        "detector": args.detector,
        "library": str(Path(hrtem_core.__file__).resolve().parent),
        "window_px": args.window,
        "stride_px": args.stride,
        "sto_ser_correction": STO_SER_CORRECTION,
        "table": table,
        "images": results,
        "elapsed_s": round(elapsed, 1),
    }
    path = sc.save_json(report, args.out)
    print(f"wrote {path}")
    print(json.dumps({"n_pass": sum(t["verdict"] == "PASS" for t in table),
                      "n_fail": sum(t["verdict"] == "FAIL" for t in table)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
