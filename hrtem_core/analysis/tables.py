"""The tables of an analysis: one row per window, per phase and per plane family, and the summary.

Definitions (see ``docs/analysis-cli.md``): a window is **crystalline** when it holds at least one
Friedel pair; the **crystallinity** is ``n_crystalline / n_windows``; the **crystalline area
fraction** is the union of the crystalline windows' footprints over the image area; a phase's
**fraction** is the number of windows whose best match is that phase over the number of windows,
its **area fraction** the union of their footprints over the image area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hrtem_core import __version__
from hrtem_core.analysis.params import AnalysisParams
from hrtem_core.indexing import (
    STATUS_AMBIGUOUS,
    STATUS_INDEXED,
    STATUS_NO_SPOTS,
    STATUS_SPACING_ONLY,
    STATUS_UNMATCHED,
    IndexingTables,
    WindowIndex,
    format_hkl,
    format_match,
)
from hrtem_core.windows import WindowGrid

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hrtem_core.spots import SpotPair

#: Columns of the windows table (``windows.csv``), in order.
WINDOW_COLUMNS: tuple[str, ...] = (
    "window",
    "row",
    "col",
    "y_px",
    "x_px",
    "crystalline",
    "n_pairs",
    "spacings_nm",
    "directions_deg",
    "angles_deg",
    "snr",
    "phase_card",
    "phase_name",
    "hkl",
    "families",
    "plane_family",
    "zone_axis",
    "score",
    "evidence",
    "n_explained",
    "spacing_residuals_pct",
    "spacing_sigma_pct",
    "angle_residuals_deg",
    "alternatives",
    "status",
)

#: Columns of the per-phase table.
PHASE_COLUMNS: tuple[str, ...] = (
    "card_id",
    "name",
    "n_windows",
    "n_angle_confirmed",
    "fraction",
    "area_fraction",
)

#: Columns of the per-family table.
FAMILY_COLUMNS: tuple[str, ...] = (
    "card_id",
    "name",
    "family",
    "d_ref_nm",
    "n_windows",
    "fraction",
    "area_fraction",
)


def window_label(row: Any) -> str:
    """Plane-map label of one windows-table row: ``"phase {h k l}"``, ``"phase"`` or ``""``."""
    name = getattr(row, "phase_name", "") or ""
    if not isinstance(name, str) or not name:
        return ""
    fam = getattr(row, "plane_family", "") or ""
    return f"{name} {{{fam}}}" if isinstance(fam, str) and fam else name


def _fmt(values: Sequence[float], digits: int) -> str:
    return ";".join(f"{v:.{digits}f}" for v in values)


def windows_table(
    grid: WindowGrid, pairs: Sequence[Sequence[SpotPair]], index: Sequence[WindowIndex]
) -> pd.DataFrame:
    """One row per window (:data:`WINDOW_COLUMNS`), row-major.

    Multi-valued cells are ``;``-joined in the window's plane order (spacing descending):
    ``spacings_nm``, ``directions_deg`` (in-plane direction of g), ``hkl`` / ``families`` (``-``
    for a plane the phase does not explain), ``spacing_residuals_pct`` and
    ``spacing_sigma_pct`` (each plane's uncertainty); ``angles_deg`` lists the acute angles
    between every pair of planes (1-2, 1-3, ..., 2-3, ...), ``angle_residuals_deg`` the
    named phase's angle residuals for every pair of explained planes.

    Only a window that names a phase (status ``indexed`` or ``ambiguous``) fills ``phase_card``,
    ``phase_name``, ``hkl``, ``families``, ``plane_family`` and ``zone_axis``; the candidates of a
    ``spacing-only`` or ``unmatched`` window are listed in ``alternatives``, and its ``score`` is
    that of its best candidate (at most 0.5). ``evidence`` is ``-log10`` of the odds "chance :
    card" of the score's match [decades].
    """
    rc = grid.row_col
    centers = grid.centers
    rows = []
    for i in range(grid.n_windows):
        wi = index[i]
        best = wi.best
        planes = wi.planes
        snr_by_plane = _snr_for_planes(pairs[i], planes)
        row = {
            "window": i,
            "row": int(rc[i, 0]),
            "col": int(rc[i, 1]),
            "y_px": float(centers[i, 0]),
            "x_px": float(centers[i, 1]),
            "crystalline": int(len(pairs[i]) > 0),
            "n_pairs": len(pairs[i]),
            "spacings_nm": _fmt([p.spacing_nm for p in planes], 4),
            "directions_deg": _fmt([p.angle_deg for p in planes], 2),
            "angles_deg": _fmt(wi.angles_deg, 2),
            "snr": _fmt(snr_by_plane, 1),
            "phase_card": "",
            "phase_name": "",
            "hkl": "",
            "families": "",
            "plane_family": "",
            "zone_axis": "",
            "score": 0.0,
            "evidence": 0.0,
            "n_explained": 0,
            "spacing_residuals_pct": "",
            "spacing_sigma_pct": _fmt([100 * q.spacing_sigma_rel for q in planes], 2),
            "angle_residuals_deg": "",
            "alternatives": " | ".join(format_match(a) for a in wi.alternatives),
            "status": wi.status,
        }
        if best is not None and not wi.named:
            row.update(
                score=round(float(best.score), 4),
                evidence=round(float(best.evidence), 3),
                alternatives=" | ".join(format_match(a) for a in (best, *wi.alternatives)),
            )
        elif best is not None:
            strongest = max(
                (k for k in range(len(planes)) if best.families[k] is not None),
                key=lambda k: (planes[k].intensity, planes[k].spacing_nm),
            )
            row.update(
                phase_card=best.card_id,
                phase_name=best.phase_name,
                hkl=";".join(format_hkl(h) if h is not None else "-" for h in best.hkl),
                families=";".join(format_hkl(h) if h is not None else "-" for h in best.families),
                plane_family=format_hkl(best.families[strongest]),
                zone_axis=format_hkl(best.zone_axis),
                score=round(float(best.score), 4),
                evidence=round(float(best.evidence), 3),
                n_explained=int(best.n_explained),
                angle_residuals_deg=_fmt(best.angle_residuals_deg, 2),
                spacing_residuals_pct=";".join(
                    f"{100 * r:.2f}" if r is not None else "-" for r in best.rel_residuals
                ),
            )
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(WINDOW_COLUMNS))
    return frame.astype(
        {
            "window": "int64",
            "row": "int64",
            "col": "int64",
            "crystalline": "int64",
            "n_pairs": "int64",
            "n_explained": "int64",
            "score": "float64",
            "evidence": "float64",
        }
    )


def _snr_for_planes(pairs: Sequence[SpotPair], planes: Sequence[Any]) -> list[float]:
    """SNR of the pair behind each measured plane (matched on spacing and direction)."""
    out = []
    for q in planes:
        best = None
        for p in pairs:
            if (
                abs(p.spacing_nm - q.spacing_nm) < 1e-12
                and abs((p.angle_deg % 180) - q.angle_deg) < 1e-9
            ):
                best = p
                break
        out.append(float(getattr(best, "snr", float("nan"))) if best is not None else float("nan"))
    return out


# --------------------------------------------------------------------------------------------
# Areas and fractions
# --------------------------------------------------------------------------------------------


def footprint_area_fraction(grid: WindowGrid, selected: np.ndarray) -> float:
    """Area of the union of the selected windows' ``w x w`` footprints over the image area.

    Exact: the footprints are unions of ``g x g`` cells with ``g = gcd(w, s)``.

    Parameters
    ----------
    grid : WindowGrid
    selected : ndarray of bool, shape (n_windows,)
    """
    sel = np.asarray(selected, dtype=bool).reshape(grid.n_rows, grid.n_cols)
    if not sel.any():
        return 0.0
    w, s = grid.window_px, grid.stride_px
    g = math.gcd(w, s)
    k, m = w // g, s // g
    cy = (grid.n_rows - 1) * m + k
    cx = (grid.n_cols - 1) * m + k
    # Each window covers cells [r m, r m + k) x [c m, c m + k): a 2-D "dilation" by k cells.
    cov = np.zeros((cy, cx), dtype=bool)
    rr, cc = np.nonzero(sel)
    if k <= 64:
        for dy in range(k):
            for dx in range(k):
                cov[rr * m + dy, cc * m + dx] = True
    else:  # very unequal window and stride: paint rectangles
        for r, c in zip(rr.tolist(), cc.tolist(), strict=True):
            cov[r * m : r * m + k, c * m : c * m + k] = True
    ny, nx = grid.image_shape
    return float(cov.sum()) * g * g / float(ny * nx)


def phase_tables(
    windows: pd.DataFrame, grid: WindowGrid, tables: IndexingTables | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-phase and per-family window counts, fractions and area fractions.

    Parameters
    ----------
    windows : pandas.DataFrame
        The windows table.
    grid : WindowGrid
    tables : IndexingTables or None
        Lists every phase that was searched (also those never found); else only phases found.

    Returns
    -------
    (phases, families) : pandas.DataFrame
        :data:`PHASE_COLUMNS` and :data:`FAMILY_COLUMNS`.
    """
    n = max(len(windows), 1)
    card = windows["phase_card"].fillna("").astype(str).to_numpy()
    names = windows["phase_name"].fillna("").astype(str).to_numpy()
    status = windows["status"].astype(str).to_numpy()
    confirmed = np.isin(status, [STATUS_INDEXED, STATUS_AMBIGUOUS])
    order: list[tuple[str, str]] = []
    if tables is not None:
        order = [(p.card_id, p.name) for p in tables.phases]
    for c, nm in zip(card, names, strict=True):
        if c and c not in [o[0] for o in order]:
            order.append((c, nm))
    prow = []
    for cid, nm in order:
        sel = card == cid
        prow.append(
            {
                "card_id": cid,
                "name": nm,
                "n_windows": int(sel.sum()),
                "n_angle_confirmed": int((sel & confirmed).sum()),
                "fraction": float(sel.sum()) / n,
                "area_fraction": footprint_area_fraction(grid, sel),
            }
        )
    phases = pd.DataFrame(prow, columns=list(PHASE_COLUMNS))
    fam_sel: dict[tuple[str, str], np.ndarray] = {}
    fam_name: dict[str, str] = dict(order)
    for i, (c, fams) in enumerate(
        zip(card, windows["families"].fillna("").astype(str), strict=True)
    ):
        if not c or not fams:
            continue
        for f in set(fams.split(";")):
            if f and f != "-":
                fam_sel.setdefault((c, f), np.zeros(len(windows), dtype=bool))[i] = True
    d_ref: dict[tuple[str, str], float] = {}
    if tables is not None:
        for pt in tables.phases:
            for hkl, d in zip(pt.family_hkl, pt.family_d_nm, strict=True):
                d_ref[(pt.card_id, format_hkl(hkl))] = float(d)
    frow = []
    for (c, f), sel in fam_sel.items():
        frow.append(
            {
                "card_id": c,
                "name": fam_name.get(c, ""),
                "family": f,
                "d_ref_nm": d_ref.get((c, f), float("nan")),
                "n_windows": int(sel.sum()),
                "fraction": float(sel.sum()) / n,
                "area_fraction": footprint_area_fraction(grid, sel),
            }
        )
    families = pd.DataFrame(frow, columns=list(FAMILY_COLUMNS))
    if len(families):
        families = families.sort_values(
            ["card_id", "d_ref_nm", "family"], ascending=[True, False, True], ignore_index=True
        )
    return phases, families


def _summary(
    micrograph: Any,
    grid: WindowGrid,
    params: AnalysisParams,
    windows: pd.DataFrame,
    phases: pd.DataFrame,
    families: pd.DataFrame,
    tables: IndexingTables,
    elapsed_s: float,
    defocus_nm: float | None,
    cards: Any,
) -> dict:
    n = grid.n_windows
    cryst = windows["crystalline"].to_numpy(dtype=bool)
    status = windows["status"].astype(str)
    db = tables.db
    return {
        "file": micrograph.name,
        "image_shape": [int(v) for v in grid.image_shape],
        "pixel_size_nm": [float(v) for v in micrograph.pixel_size_nm],
        "window_px": int(grid.window_px),
        "stride_px": int(grid.stride_px),
        "n_rows": int(grid.n_rows),
        "n_cols": int(grid.n_cols),
        "n_windows": int(n),
        "n_crystalline": int(cryst.sum()),
        "crystallinity": float(cryst.sum()) / n,
        "crystalline_area_fraction": footprint_area_fraction(grid, cryst),
        "covered_area_fraction": float(np.prod(grid.covered_shape))
        / float(np.prod(grid.image_shape)),
        "n_indexed": int((status == STATUS_INDEXED).sum()),
        "n_ambiguous": int((status == STATUS_AMBIGUOUS).sum()),
        "n_spacing_only": int((status == STATUS_SPACING_ONLY).sum()),
        "n_unmatched": int((status == STATUS_UNMATCHED).sum()),
        "n_no_spots": int((status == STATUS_NO_SPOTS).sum()),
        "phases": [
            {
                "card_id": r.card_id,
                "name": r.name,
                "n_windows": int(r.n_windows),
                "n_angle_confirmed": int(r.n_angle_confirmed),
                "fraction": float(r.fraction),
                "area_fraction": float(r.area_fraction),
            }
            for r in phases.itertuples(index=False)
        ],
        "families": [
            {
                "card_id": r.card_id,
                "name": r.name,
                "family": r.family,
                "d_ref_nm": None if not math.isfinite(r.d_ref_nm) else float(r.d_ref_nm),
                "n_windows": int(r.n_windows),
                "fraction": float(r.fraction),
                "area_fraction": float(r.area_fraction),
            }
            for r in families.itertuples(index=False)
        ],
        "defocus_nm": None if defocus_nm is None else float(defocus_nm),
        "detector": params.detector,
        "parameters": params.to_dict(),
        "cards_path": None if getattr(db, "path", None) is None else str(db.path),
        "cards_digest": getattr(db, "digest", None),
        "reader": getattr(micrograph, "reader", None),
        "pixel_size_source": getattr(micrograph, "pixel_size_source", None),
        # The scan distortion removed before the analysis (hrtem_core.distortion.undistort):
        # the stretch and the file's pixel size and shape; None when none was.
        "distortion": (getattr(micrograph, "metadata", None) or {}).get("distortion"),
        "warnings": list(getattr(micrograph, "warnings", ()) or ()),
        "elapsed_s": round(float(elapsed_s), 4),
        "version": __version__,
    }


__all__ = [
    "FAMILY_COLUMNS",
    "PHASE_COLUMNS",
    "WINDOW_COLUMNS",
    "footprint_area_fraction",
    "phase_tables",
    "window_label",
    "windows_table",
]
