"""Crystallinity profile of the bundled focal series against the simulator's predicted visibility.

Run from the repository root (about 1 minute on one core; the U-Net is used when
``models/unet_spots.pt`` exists, else the classical detector, and the output says which)::

    /tmp/venv/bin/python benchmarks/plot_visibility.py
    /tmp/venv/bin/python benchmarks/plot_visibility.py --detector classical

It runs the real pipeline (:func:`hrtem_core.analysis.analyze_series`, default parameters: 256 px
windows, stride 128 px, d_min 0.1 nm) on ``data/examples/focal_series`` read through
:func:`hrtem_core.io.load_image` (pixel size from the TIFF calibration, defocus from the file
name), and compares the measured crystallinity (fraction of windows with a Friedel pair) with the
simulator's own prediction of lattice visibility against defocus:
:func:`hrtem_core.simulate.lattice_visibility`, the ``|V_g|``-weighted mean of
``|sin chi(g)| E_t(g) E_s(g)`` over the reflections of each particle's zone (within Nyquist and
d >= 0.1 nm), averaged over the particles of ``truth.json`` weighted by their projected area
(diameter squared), with the optics recorded in ``truth.json``.

Writes

* ``docs/img/profile_vs_ctf.png``: the two curves, with per-family ``|CTF|`` of the [110] zone's
  strongest reflections for reference;
* ``benchmarks/results/profile_vs_ctf.csv``: per image, the measured profile and the prediction;
* ``benchmarks/results/profile_vs_ctf.json``: the agreement (Pearson and Spearman correlation of
  the crystallinity and of the crystalline area fraction with the prediction, and where each
  curve has its minimum), the detector and the run time.

Agreement "in shape" is what is claimed, not in value: the crystallinity counts windows with at
least one detected pair, which saturates where the lattice is clearly visible, while the
prediction is a linear-imaging amplitude.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hrtem_core.analysis import AnalysisParams, analyze_series  # noqa: E402
from hrtem_core.cards import load_cards  # noqa: E402
from hrtem_core.io import load_image  # noqa: E402
from hrtem_core.simulate import ctf, known_structure, lattice_visibility  # noqa: E402

SERIES_DIR = REPO / "data" / "examples" / "focal_series"
OUT_PNG = REPO / "docs" / "img" / "profile_vs_ctf.png"
OUT_CSV = REPO / "benchmarks" / "results" / "profile_vs_ctf.csv"
#: The strongest low-order families of maghemite [110], drawn for reference.
FAMILIES = {"220": (2, 2, 0), "311": (3, 1, 1), "400": (4, 0, 0), "440": (4, 4, 0)}
OPTICS_KEYS = ("voltage_kv", "cs_mm", "focal_spread_nm", "convergence_mrad")


def predicted_visibility(truth: dict, defocus_nm: np.ndarray, cards) -> np.ndarray:
    """Area-weighted mean of :func:`lattice_visibility` over the particles of ``truth.json``.

    Parameters
    ----------
    truth : dict
        The parsed ``truth.json`` of a simulated series.
    defocus_nm : ndarray, shape (n,)
        Defocus values [nm], negative = underfocus.
    cards : CardDatabase

    Returns
    -------
    ndarray, shape (n,)
        Predicted visibility in [0, 1].
    """
    params = truth["params"]
    optics = {k: float(params[k]) for k in OPTICS_KEYS}
    total = np.zeros(np.shape(defocus_nm))
    weight = 0.0
    cache: dict[tuple, np.ndarray] = {}
    for part in truth["particles"]:
        phase = cards.phase(part["card_id"])
        key = (part["card_id"], tuple(part["zone_axis"]))
        if key not in cache:
            cache[key] = np.asarray(
                lattice_visibility(
                    phase,
                    defocus_nm,
                    zone_axis=tuple(part["zone_axis"]),
                    pixel_size_nm=float(params["pixel_size_nm"]),
                    d_min_nm=float(params.get("d_min_nm", 0.1)),
                    structure=known_structure(phase.card_id) if part.get("structure") else None,
                    **optics,
                )
            )
        w = float(part["diameter_nm"]) ** 2
        total += w * cache[key]
        weight += w
    return total / weight


def _pick_detector(choice: str) -> tuple[str, str]:
    """(detector, note): the U-Net when its weights exist (for ``auto``), else classical."""
    from hrtem_core.unet.load import DEFAULT_WEIGHTS

    if choice != "auto":
        return choice, f"{'U-Net' if choice == 'unet' else 'classical'} (requested)"
    if DEFAULT_WEIGHTS.exists():
        return "unet", f"U-Net ({DEFAULT_WEIGHTS.relative_to(REPO)})"
    return "classical", "classical (no models/unet_spots.pt yet)"


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, default=SERIES_DIR, help="focal-series folder")
    parser.add_argument("--detector", choices=("auto", "unet", "classical"), default="auto")
    parser.add_argument("--out", type=Path, default=OUT_PNG, help="figure (PNG)")
    parser.add_argument("--csv", type=Path, default=OUT_CSV, help="table (CSV; JSON beside it)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    truth = json.loads((args.series / "truth.json").read_text(encoding="utf-8"))
    files = sorted(args.series.glob("*.tif"))
    micrographs = [load_image(f) for f in files]
    detector, note = _pick_detector(args.detector)
    cards = load_cards()
    t0 = time.perf_counter()
    result = analyze_series(micrographs, params=AnalysisParams(detector=detector), cards=cards)
    seconds = time.perf_counter() - t0
    prof = result.profile.sort_values("defocus_nm").reset_index(drop=True)
    dfs = prof["defocus_nm"].to_numpy(dtype=float)
    cryst = prof["crystallinity"].to_numpy(dtype=float)
    area = prof["crystalline_area_fraction"].to_numpy(dtype=float)
    # With the U-Net, the classical detector's profile as well, for comparison.
    cryst_cl = None
    if detector == "unet":
        res_cl = analyze_series(
            micrographs, params=AnalysisParams(detector="classical"), cards=cards
        )
        prof_cl = res_cl.profile.sort_values("defocus_nm").reset_index(drop=True)
        cryst_cl = prof_cl["crystallinity"].to_numpy(dtype=float)

    pred = predicted_visibility(truth, dfs, cards)
    df_fine = np.linspace(-20.0, 20.0, 401)
    pred_fine = predicted_visibility(truth, df_fine, cards)
    optics = {k: float(truth["params"][k]) for k in OPTICS_KEYS}
    cell = cards.phase(truth["card_id"]).cell

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float("nan")

    stats = {
        "detector": detector,
        "detector_note": note,
        "n_images": len(files),
        "analysis_seconds": round(seconds, 1),
        "pearson_crystallinity": round(pearson(cryst, pred), 3),
        "spearman_crystallinity": round(_rank_corr(cryst, pred), 3),
        "pearson_area_fraction": round(pearson(area, pred), 3),
        "spearman_area_fraction": round(_rank_corr(area, pred), 3),
        "pearson_crystallinity_classical": None
        if cryst_cl is None
        else round(pearson(cryst_cl, pred), 3),
        "spearman_crystallinity_classical": None
        if cryst_cl is None
        else round(_rank_corr(cryst_cl, pred), 3),
        "min_crystallinity_defocus_nm": float(dfs[int(np.argmin(cryst))]),
        "min_prediction_defocus_nm": float(dfs[int(np.argmin(pred))]),
        "best_focus_nm": result.best_focus_nm,
        "optics": optics,
        "prediction": (
            "area-weighted mean over the particles of lattice_visibility (|V_g|-weighted "
            "|sin chi| E_t E_s over each particle's zone, d >= d_min, within Nyquist)"
        ),
    }

    table = pd.DataFrame(
        {
            "file": prof["file"],
            "defocus_nm": dfs,
            "crystallinity": np.round(cryst, 4),
            "crystalline_area_fraction": np.round(area, 4),
            "n_crystalline": prof["n_crystalline"],
            "n_windows": prof["n_windows"],
            "predicted_visibility": np.round(pred, 4),
            "detector": detector,
        }
    )
    if cryst_cl is not None:
        table.insert(6, "crystallinity_classical", np.round(cryst_cl, 4))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.csv, index=False)
    args.csv.with_suffix(".json").write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")

    fig, ax1 = plt.subplots(figsize=(8.0, 5.2))
    for name, hkl in FAMILIES.items():
        k = 1.0 / float(cell.d_spacing_nm(hkl))
        ax1.plot(
            df_fine, np.abs(ctf(k, defocus_nm=df_fine, **optics)), lw=0.8, alpha=0.45,
            label=f"|CTF| {name} ({1 / k:.3f} nm)",
        )  # fmt: skip
    ax1.plot(df_fine, pred_fine, color="k", lw=2.2, label="predicted lattice visibility")
    ax1.set_ylim(0, 1.05)
    ax1.set_xlabel("defocus [nm] (negative = underfocus)")
    ax1.set_ylabel("predicted visibility / |CTF|")
    ax2 = ax1.twinx()
    ax2.plot(dfs, cryst, "o-", color="tab:red", lw=1.8, ms=6, label="measured crystallinity")
    ax2.plot(dfs, area, "s--", color="tab:orange", lw=1.0, ms=4, label="crystalline area fraction")
    if cryst_cl is not None:
        ax2.plot(
            dfs, cryst_cl, "^:", color="tab:brown", lw=1.0, ms=4,
            label="crystallinity, classical detector",
        )  # fmt: skip
    ax2.set_ylabel("measured by the pipeline", color="tab:red")
    measured = [cryst, area] + ([] if cryst_cl is None else [cryst_cl])
    lo = min(float(m.min()) for m in measured)
    hi = max(float(m.max()) for m in measured)
    pad = 0.1 * max(hi - lo, 0.05)
    ax2.set_ylim(lo - pad, hi + pad)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax1.legend(
        h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4
    )
    ax1.set_title(
        f"Bundled focal series, detector: {note}\nPearson r = {stats['pearson_crystallinity']:.2f}, "
        f"Spearman = {stats['spearman_crystallinity']:.2f}\n"
        f"{optics['voltage_kv']:.0f} kV, Cs {optics['cs_mm']} mm, focal spread "
        f"{optics['focal_spread_nm']} nm, convergence {optics['convergence_mrad']} mrad",
        fontsize=9,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)

    print(f"detector: {note}; analysis of {len(files)} images took {seconds:.1f} s")
    print(table.to_string(index=False))
    print(json.dumps({k: v for k, v in stats.items() if k != "optics"}, indent=1))
    print(f"wrote {args.out}, {args.csv}, {args.csv.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
