"""Spot detection on a held-out synthetic set: the U-Net against the classical detector.

    python benchmarks/eval_detectors.py [--n 3000 --seed 20261124 --update-settings]

The set is drawn by :func:`hrtem_core.synthetic.synthetic_example` with a seed the training never
used and the *wider* parameter ranges (:meth:`SyntheticRanges.wider`: pixel sizes, spacings,
doses, amplitudes, defocus, drift beyond the training ranges). Both detectors run the steps of
:func:`hrtem_core.spots.detect_pairs` (band masks -> :func:`~hrtem_core.spots.pairs_from_masks`,
for the U-Net with its logits to split touching spots unless ``--no-split``; sub-pixel
refinement, Friedel pairs, harmonics folded into their fundamental).

Matching, per window, on Friedel pairs: a predicted pair ``k`` matches a true spot ``k_t`` when
``min(|k - k_t|, |k + k_t|) <= tol`` FFT px (one-to-one, Hungarian assignment). True spots that are
harmonics (``n g``, n >= 2) of a labelled spot count when found and are not missed when absent
(the extractor folds them into the fundamental); so do *unresolved* spots, closer than
``max(2.5, 1.5 / scale)`` FFT px to a stronger true spot (a Hann-apodized spot is ~4 FFT px wide
and one band pixel spans ``1 / scale`` FFT px, so such spots merge into one); "F1 strict" counts
them as missed; the assignment prefers required spots, so a prediction between a spot and its
unresolved weaker neighbour finds the spot. Predictions on borderline (*ignored*) spots are
neither right nor wrong. The spot SNR is the generator's visibility (peak over the local RMS of
everything else; labels start at 5). Spacing error ``|d - d_t| / d_t`` over matched pairs with
``l = |k_t| >= 10`` FFT px (also for spots of SNR >= 10 only); angle error
``|angle - angle_t|`` (mod 180). Doses in electrons per pixel: low < 10, moderate 10-100,
high >= 100.

Writes a Markdown table to stdout and to ``benchmarks/results/eval_detectors.md``; with
``--update-settings`` the metrics are stored under ``"evaluation"`` in ``models/unet_spots.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrtem_core.spots import detect_pairs, pairs_from_masks  # noqa: E402
from hrtem_core.synthetic import (  # noqa: E402
    GENERATOR_VERSION,
    SyntheticRanges,
    synthetic_example,
)
from hrtem_core.unet.load import (  # noqa: E402
    DEFAULT_WEIGHTS,
    PRECISIONS,
    load_model,
    predict_logits,
    predict_masks,
    settings_path,
)
from hrtem_core.windows import (  # noqa: E402
    band_geometry,
    band_spectra,
    log_band,
    log_band_from_crop,
    window_spectra,
)

DOSE_BINS = (("low", 0.0, 10.0), ("moderate", 10.0, 100.0), ("high", 100.0, math.inf))
DETECTOR_NAMES = ("unet", "classical")


def _canonical(k: np.ndarray) -> np.ndarray:
    """Keep one member of each Friedel pair: ``ky < 0``, or ``ky == 0`` and ``kx > 0``."""
    k = np.asarray(k, dtype=float).reshape(-1, 2)
    keep = (k[:, 0] < 0) | ((k[:, 0] == 0) & (k[:, 1] > 0))
    return k[keep]


def _friedel_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) distances [FFT px] between pairs, either member."""
    d1 = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    d2 = np.hypot(a[:, None, 0] + b[None, :, 0], a[:, None, 1] + b[None, :, 1])
    return np.minimum(d1, d2)


def unresolved_spots(k: np.ndarray, snr: np.ndarray, *, merge_px: float) -> np.ndarray:
    """Spots closer than ``merge_px`` [FFT px] to a stronger spot (either Friedel member).

    A Hann-apodized spot is about 4 FFT px wide (main lobe +-2 px) and the U-Net's band grid has
    ``1 / scale`` FFT px per pixel, so two such spots appear as one; the weaker one counts as found
    when matched and is not missed when absent (like a harmonic).
    """
    k = np.asarray(k, dtype=float).reshape(-1, 2)
    if len(k) < 2:
        return np.zeros(len(k), dtype=bool)
    dist = _friedel_dist(k, k)
    np.fill_diagonal(dist, np.inf)
    stronger = snr[None, :] > snr[:, None]
    return ((dist <= merge_px) & stronger).any(axis=1)


def score_window(pairs, ex, *, tol_px: float) -> dict:
    """Counts and errors of one window's predicted pairs against its truth.

    ``fn`` counts missed spots except harmonics and unresolved spots (:func:`unresolved_spots`);
    ``fn_strict`` counts every missed spot that is not a harmonic.
    """
    w = ex.window_px
    py, px = ex.pixel_size_nm
    keep = (ex.k_offsets[:, 0] < 0) | ((ex.k_offsets[:, 0] == 0) & (ex.k_offsets[:, 1] > 0))
    truth = ex.k_offsets[keep]
    harmonic = ex.harmonic[keep]
    snr = np.asarray(ex.spot_snr, dtype=float)[keep]
    geom = band_geometry(w, (py, px), d_min_nm=0.1)
    merge_px = max(2.5, 1.5 / min(geom.scale_y, geom.scale_x))
    unresolved = unresolved_spots(truth, snr, merge_px=merge_px)
    ignored = _canonical(ex.ignore_offsets)
    pred = np.array([[p.ky, p.kx] for p in pairs], dtype=float).reshape(-1, 2)
    res = {"tp": 0, "fp": 0, "fn": 0, "fn_strict": 0, "d_err": [], "d_err_snr10": [], "a_err": []}
    matched_pred = np.zeros(len(pred), dtype=bool)
    matched_true = np.zeros(len(truth), dtype=bool)
    if len(pred) and len(truth):
        dist = _friedel_dist(pred, truth)
        # Most matches first, then required spots before optional ones (harmonics, unresolved):
        # a prediction between a spot and its unresolved weaker neighbour finds the spot.
        optional = harmonic | unresolved
        cost = np.where(dist <= tol_px, dist + np.where(optional, tol_px, 0.0)[None, :], 1e6)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            if dist[r, c] <= tol_px:
                matched_pred[r] = matched_true[c] = True
                kt = truth[c]
                gt = np.array([kt[0] / (w * py), kt[1] / (w * px)])
                d_true = 1.0 / float(np.hypot(*gt))
                if np.hypot(*kt) >= 10.0:
                    err = abs(pairs[r].spacing_nm - d_true) / d_true
                    res["d_err"].append(err)
                    if snr[c] >= 10.0:
                        res["d_err_snr10"].append(err)
                a_true = math.degrees(math.atan2(-gt[0], gt[1])) % 180.0
                res["a_err"].append(abs((pairs[r].angle_deg - a_true + 90.0) % 180.0 - 90.0))
    res["tp"] = int(matched_true.sum())
    res["fn"] = int(np.sum(~matched_true & ~harmonic & ~unresolved))
    res["fn_strict"] = int(np.sum(~matched_true & ~harmonic))
    free = ~matched_pred
    if free.any():
        near = np.zeros(free.sum(), dtype=bool)
        others = np.concatenate([ignored, truth[matched_true]]) if len(truth) else ignored
        if len(others):
            near = _friedel_dist(pred[free], others).min(axis=1) <= tol_px
        res["fp"] = int(np.sum(~near))
    return res


def _summary(rows: list[dict]) -> dict:
    tp = sum(r["tp"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    fn_strict = sum(r["fn_strict"] for r in rows)

    def f1_of(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / (tp + fn) if tp + fn else float("nan")
        return prec, rec, (2 * prec * rec / (prec + rec) if tp else 0.0)

    prec, rec, f1 = f1_of(tp, fp, fn)
    _, rec_strict, f1_strict = f1_of(tp, fp, fn_strict)

    def cat(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(r[key], float) for r in rows]) if rows else np.zeros(0)

    d, d10, a = cat("d_err"), cat("d_err_snr10"), cat("a_err")

    def q(x: np.ndarray, v: float) -> float:
        return float(np.quantile(x, v)) if len(x) else float("nan")

    return {
        "windows": len(rows),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "fn_strict": fn_strict,
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "recall_strict": rec_strict,
        "f1_strict": f1_strict,
        "spacing_rel_err_median": q(d, 0.5),
        "spacing_rel_err_p95": q(d, 0.95),
        "spacing_rel_err_snr10_median": q(d10, 0.5),
        "spacing_rel_err_snr10_p95": q(d10, 0.95),
        "angle_err_deg_median": q(a, 0.5),
        "angle_err_deg_p95": q(a, 0.95),
        "n_spacing": len(d),
        "n_spacing_snr10": len(d10),
    }


def measure_speed(model, *, n: int = 841, repeats: int = 3) -> dict:
    """Windows/s of predict_masks and of the whole detect_pairs on n 256-px windows."""
    rng = np.random.default_rng(7)
    p = (0.02, 0.02)
    wins = np.stack(
        [synthetic_example(rng, window_px=256, pixel_size_nm=p).window for _ in range(n)]
    )
    spectra = window_spectra(wins)
    bands = log_band(spectra, band_geometry(256, p, d_min_nm=0.1))
    predict_masks(model, bands[:64])
    t_pred, t_all = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_masks(model, bands)
        t_pred.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        detect_pairs(wins, pixel_size_nm=p, detector="unet", model=model)
        t_all.append(time.perf_counter() - t0)
    tp, ta = float(np.median(t_pred)), float(np.median(t_all))
    return {
        "windows": n,
        "window_px": 256,
        "torch_threads": torch.get_num_threads(),
        "device": str(model.device),
        "predict_masks_s": round(tp, 3),
        "predict_masks_windows_per_s": round(n / tp, 1),
        "detect_pairs_s": round(ta, 3),
        "detect_pairs_windows_per_s": round(n / ta, 1),
    }


def _fmt(v: float, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.2f} %" if pct else f"{v:.3f}"


def markdown(results: dict) -> str:
    """The evaluation as a Markdown report."""
    meta = results["meta"]
    lines = [
        "# Spot detection on held-out synthetic windows: U-Net vs classical",
        "",
        f"{meta['n']} windows from `hrtem_core.synthetic` v{meta['generator_version']} "
        f"(seed {meta['seed']}, "
        + ("wider ranges than training" if meta["ranges_kind"] == "wider" else "training ranges")
        + f": pixel size "
        f"{meta['ranges']['pixel_size_nm'][0]}–{meta['ranges']['pixel_size_nm'][1]} nm, "
        f"spacing {meta['ranges']['spacing_nm'][0]}–{meta['ranges']['spacing_nm'][1]} nm, "
        f"dose {meta['ranges']['dose_e_per_px'][0]}–{meta['ranges']['dose_e_per_px'][1]} e/px, "
        f"windows {', '.join(map(str, meta['ranges']['window_px']))} px); "
        f"{meta['no_crystal_windows']} without crystal. Match tolerance {meta['tol_px']} FFT px; "
        "spacing error over matched pairs with l >= 10 FFT px. F1 counts spots merged with a "
        "stronger one closer than the spot width (max(2.5 FFT px, 1.5 band px)) as optional, "
        "F1 strict as missed; p95 (SNR >= 10): spots at least twice the labelling threshold. "
        "Dose: low < 10, moderate 10–100, high >= 100 e/px. "
        f"Weights: `{meta['weights']}`, U-Net in {meta.get('unet_precision', 'float32')}; "
        f"{meta['date']}.",
        "",
        "| dose | detector | windows | precision | recall | F1 | F1 strict | "
        "spacing err. median | spacing err. p95 | p95 (SNR >= 10) | "
        "angle err. median [deg] | angle err. p95 [deg] |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dose in [b[0] for b in DOSE_BINS] + ["all"]:
        for det in DETECTOR_NAMES:
            s = results["by_dose"][dose][det]
            lines.append(
                f"| {dose} | {det} | {s['windows']} | {_fmt(s['precision'])} | "
                f"{_fmt(s['recall'])} | {_fmt(s['f1'])} | {_fmt(s['f1_strict'])} | "
                f"{_fmt(s['spacing_rel_err_median'], True)} | "
                f"{_fmt(s['spacing_rel_err_p95'], True)} | "
                f"{_fmt(s['spacing_rel_err_snr10_p95'], True)} | "
                f"{_fmt(s['angle_err_deg_median'])} | {_fmt(s['angle_err_deg_p95'])} |"
            )
    lines += [
        "",
        "False alarms on windows without crystal (fraction with at least one pair): "
        + ", ".join(f"{det} {results['empty_false_alarm'][det]:.3f}" for det in DETECTOR_NAMES)
        + ".",
    ]
    if "speed" in results:
        sp = results["speed"]
        lines += [
            "",
            f"Speed ({sp['windows']} windows of {sp['window_px']} px, {sp['torch_threads']} "
            f"torch threads, {sp['device']}): `predict_masks` {sp['predict_masks_s']} s "
            f"({sp['predict_masks_windows_per_s']} windows/s); whole `detect_pairs` "
            f"(FFT, band, U-Net, pairs) {sp['detect_pairs_s']} s "
            f"({sp['detect_pairs_windows_per_s']} windows/s).",
        ]
    lines += ["", f"Evaluation time {meta['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    """Generate the held-out set, detect, score; returns the results dict."""
    torch.set_num_threads(max(1, args.threads))
    model = load_model(args.weights, device="cpu", precision=args.precision)
    ranges = SyntheticRanges().wider() if args.ranges == "wider" else SyntheticRanges()
    t0 = time.perf_counter()
    per = {det: [] for det in DETECTOR_NAMES}
    doses, crystal = [], []
    for start in range(0, args.n, args.chunk):
        exs = [
            synthetic_example(np.random.default_rng([args.seed, i]), ranges=ranges)
            for i in range(start, min(start + args.chunk, args.n))
        ]
        # U-Net: the same steps as detect_pairs(detector="unet"), with one batched forward pass
        # over the chunk (the windows differ in size and pixel size, so each has its own band).
        geoms = [band_geometry(ex.window_px, ex.pixel_size_nm, d_min_nm=0.1) for ex in exs]
        bands = [band_spectra(ex.window[None], g) for ex, g in zip(exs, geoms, strict=True)]
        logb = np.concatenate([log_band_from_crop(b, g) for b, g in zip(bands, geoms, strict=True)])
        logits = predict_logits(model, logb)
        masks = logits > math.log(args.threshold / (1.0 - args.threshold))
        for j, ex in enumerate(exs):
            unet_pairs = pairs_from_masks(
                masks[j : j + 1],
                bands[j],
                geoms[j],
                pixel_size_nm=ex.pixel_size_nm,
                logits=logits[j : j + 1] if args.split else None,
            )[0]
            classical_pairs = detect_pairs(
                ex.window[None], pixel_size_nm=ex.pixel_size_nm, detector="classical"
            )[0]
            for det, pairs in (("unet", unet_pairs), ("classical", classical_pairs)):
                r = score_window(pairs, ex, tol_px=args.tol_px)
                r["n_pairs"] = len(pairs)
                per[det].append(r)
            doses.append(ex.params["dose_e_per_px"])
            crystal.append(ex.params["crystal"])
        if args.verbose:
            print(f"{len(doses)}/{args.n} [{time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    doses = np.asarray(doses)
    crystal = np.asarray(crystal)
    by_dose = {}
    for name, lo, hi in (*DOSE_BINS, ("all", 0.0, math.inf)):
        sel = np.flatnonzero((doses >= lo) & (doses < hi))
        by_dose[name] = {det: _summary([per[det][j] for j in sel]) for det in DETECTOR_NAMES}
    empty = np.flatnonzero(~crystal)
    results = {
        "meta": {
            "n": args.n,
            "seed": args.seed,
            "ranges_kind": args.ranges,
            "unet_threshold": args.threshold,
            "unet_precision": str(model.dtype).removeprefix("torch."),
            "tol_px": args.tol_px,
            "generator_version": GENERATOR_VERSION,
            "ranges": ranges.to_dict(),
            "no_crystal_windows": len(empty),
            "weights": str(Path(args.weights).resolve().relative_to(REPO))
            if Path(args.weights).resolve().is_relative_to(REPO)
            else str(args.weights),
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
            "seconds": time.perf_counter() - t0,
        },
        "by_dose": by_dose,
        "empty_false_alarm": {
            det: float(np.mean([per[det][j]["n_pairs"] > 0 for j in empty])) if len(empty) else 0.0
            for det in DETECTOR_NAMES
        },
    }
    if args.speed:
        results["speed"] = measure_speed(model)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="held-out windows")
    ap.add_argument("--seed", type=int, default=20261124, help="seed of the held-out set")
    ap.add_argument("--tol-px", type=float, default=2.0, help="match tolerance [FFT px]")
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_detectors.md"
    )
    ap.add_argument(
        "--speed",
        action="store_true",
        help="also time predict_masks / detect_pairs on 841 windows (see bench_spots.py)",
    )
    ap.add_argument(
        "--ranges",
        choices=("wider", "training"),
        default="wider",
        help="parameter ranges of the held-out set (default: wider than training)",
    )
    ap.add_argument("--threshold", type=float, default=0.5, help="U-Net spot probability threshold")
    ap.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="U-Net arithmetic (default auto: bfloat16 on a CPU with native bfloat16)",
    )
    ap.add_argument("--chunk", type=int, default=200, help="windows per U-Net batch")
    ap.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="do not split mask components at their logit peaks",
    )
    ap.add_argument(
        "--update-settings", action="store_true", help="store the metrics in the settings JSON"
    )
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    results = run(args)
    text = markdown(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    if args.update_settings:
        js = settings_path(args.weights)
        settings = json.loads(js.read_text(encoding="utf-8"))
        settings["evaluation"] = {
            k: results[k] for k in ("meta", "by_dose", "empty_false_alarm", "speed") if k in results
        }
        js.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
