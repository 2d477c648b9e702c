"""From spots to science: one image or a defocus series -> windows table, crystallinity, phase map.

:func:`analyze_image` runs the whole method on one micrograph (Zhu et al.): a grid of moving
windows (:mod:`hrtem_core.windows`), their FFT and Bragg-spot pairs
(:func:`hrtem_core.spots.detect_pairs`, U-Net or classical detector, on a strided view of the
image in blocks of window rows: no window is copied out ahead), and the indexing of every
window's planes (:mod:`hrtem_core.indexing`). The result holds one row per window (the CLI's ``windows.csv``) and a
summary (``summary.json``).

Definitions (see ``docs/analysis-cli.md``):

* a window is **crystalline** when it holds at least one Friedel pair of spots that passes the
  detector;
* the image's **crystallinity** is the fraction of crystalline windows, ``n_crystalline / n_windows``;
* the **crystalline area fraction** is the area of the union of the crystalline windows' footprints
  (``w x w`` each) divided by the image area ``ny * nx``;
* a phase's **fraction** is the number of windows whose best match is that phase divided by the
  number of windows (so the phase fractions add up to at most the crystallinity); its **area
  fraction** is the union of those windows' footprints over the image area; the same for a plane
  family of a phase;
* in a defocus series, the **best focus** is the defocus of maximum crystallinity (ties: the larger
  crystalline area fraction, then the smaller ``|defocus|``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hrtem_core import __version__
from hrtem_core.errors import AnalysisParameterError, HRTEMError
from hrtem_core.indexing import (
    AMBIGUITY_DECADES,
    MAX_CHANCE,
    MAX_ZONE_INDEX,
    STATUS_AMBIGUOUS,
    STATUS_INDEXED,
    STATUS_NO_SPOTS,
    STATUS_SPACING_ONLY,
    STATUS_UNMATCHED,
    IndexingTables,
    WindowIndex,
    build_tables,
    check_decision_options,
    check_tolerances,
    format_hkl,
    format_match,
    index_windows,
)
from hrtem_core.windows import WindowGrid, window_grid

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hrtem_core.cards import CardDatabase
    from hrtem_core.io import Micrograph
    from hrtem_core.spots import SpotPair
    from hrtem_core.unet.load import SpotModel

#: ``progress(fraction_done, message)``: fraction in [0, 1] and a short message.
ProgressCallback = Callable[[float, str], None]

#: Spot detectors the analysis accepts.
DETECTORS: tuple[str, ...] = ("unet", "classical")

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


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisParams:
    """Parameters of one analysis.

    Attributes
    ----------
    window_px : int
        Window side w [px] (default 256).
    stride_px : int or None
        Step s between windows [px]; None: ``w // 2``.
    detector : {"unet", "classical"}
        Spot detector (default the U-Net).
    d_min_nm : float
        Smallest lattice spacing of interest [nm] (default 0.1).
    spacing_tol : float
        Relative spacing tolerance (default 0.03 = 3 %).
    angle_tol_deg : float
        Interplanar-angle tolerance [deg] (default 2).
    phases : tuple of str or None
        Card ids to index against; None: the enabled phases of the card database.
    include_forbidden : bool
        Also match forbidden reflections that double diffraction in the zone does not explain
        (with a lower weight); those it explains are always matched.
    ambiguity_decades : float
        Other phases whose odds against chance are within this many decades of the best are
        listed as alternatives (default 1; :mod:`hrtem_core.indexing`).
    max_chance : float
        A window names a phase only when the odds "chance : card" of its best match are at most
        this (default 0.01: score >= 0.99).
    max_zone_index : int
        Largest zone-axis index considered (default 3).
    batch_size : int
        Windows per block of whole window rows (at least one row): one detector call and one
        progress call per block; bounds the detector's memory on large images.
    """

    window_px: int = 256
    stride_px: int | None = None
    detector: str = "unet"
    d_min_nm: float = 0.1
    spacing_tol: float = 0.03
    angle_tol_deg: float = 2.0
    phases: tuple[str, ...] | None = None
    include_forbidden: bool = False
    ambiguity_decades: float = AMBIGUITY_DECADES
    max_chance: float = MAX_CHANCE
    max_zone_index: int = MAX_ZONE_INDEX
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.phases is not None and not isinstance(self.phases, tuple):
            object.__setattr__(self, "phases", tuple(self.phases))

    def validate(self) -> None:
        """Raise :class:`AnalysisParameterError` for invalid values (one line naming the parameter)."""
        if self.detector not in DETECTORS:
            raise AnalysisParameterError(
                f"unknown spot detector {self.detector!r}: choose one of {', '.join(DETECTORS)}"
            )
        check_tolerances(spacing_tol=self.spacing_tol, angle_tol_deg=self.angle_tol_deg)
        d = self.d_min_nm
        if (
            isinstance(d, bool)
            or not isinstance(d, int | float)
            or not (math.isfinite(d) and d > 0)
        ):
            raise AnalysisParameterError(f"smallest spacing d_min must be > 0 nm, got {d!r}")
        check_decision_options(
            ambiguity_decades=self.ambiguity_decades,
            max_chance=self.max_chance,
            max_zone_index=self.max_zone_index,
        )
        for name in ("window_px", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise AnalysisParameterError(f"{name} must be a positive integer, got {v!r}")
        s = self.stride_px
        if s is not None and (isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1):
            raise AnalysisParameterError(f"stride must be a positive integer, got {s!r}")
        if self.phases is not None:
            if not self.phases:
                raise AnalysisParameterError("phases: name at least one card id, or leave it unset")
            bad = [p for p in self.phases if not isinstance(p, str) or not p.strip()]
            if bad:
                raise AnalysisParameterError(f"phases must be card ids (text), got {bad[0]!r}")

    def to_dict(self) -> dict:
        """JSON-friendly dict of the parameters."""
        d = dataclasses.asdict(self)
        d["phases"] = None if self.phases is None else list(self.phases)
        return d


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisResult:
    """Everything one analysis of one image produced.

    Attributes
    ----------
    name : str
        Image name (file name).
    pixel_size_nm : (float, float)
        ``(p_y, p_x)`` [nm/px].
    params : AnalysisParams
    grid : WindowGrid
    windows : pandas.DataFrame
        One row per window, :data:`WINDOW_COLUMNS` (the CLI's ``windows.csv``).
    pairs : tuple of tuple of SpotPair
        The detected pairs of every window (row-major window order).
    summary : dict
        JSON-friendly summary (the CLI's ``summary.json``).
    defocus_nm : float or None
        Negative = underfocus.
    index : tuple of WindowIndex
        The indexing of every window.
    phases : pandas.DataFrame
        Per phase: :data:`PHASE_COLUMNS`.
    families : pandas.DataFrame
        Per indexed plane family of each phase: :data:`FAMILY_COLUMNS`.
    """

    name: str
    pixel_size_nm: tuple[float, float]
    params: AnalysisParams
    grid: WindowGrid
    windows: pd.DataFrame
    pairs: tuple[tuple[SpotPair, ...], ...]
    summary: dict
    defocus_nm: float | None
    index: tuple[WindowIndex, ...] = ()
    phases: pd.DataFrame | None = None
    families: pd.DataFrame | None = None

    @property
    def crystalline_grid(self) -> np.ndarray:
        """Crystalline windows on the window grid, shape (n_rows, n_cols) bool."""
        return (
            self.windows["crystalline"]
            .to_numpy(dtype=bool)
            .reshape(self.grid.n_rows, self.grid.n_cols)
        )

    def label_grid(self) -> np.ndarray:
        """Plane-map label of every window, shape (n_rows, n_cols) object (str, ``""`` = none).

        The label is ``"<phase name> {<family>}"`` with the family of the window's strongest
        explained plane (:func:`window_label`).
        """
        labels = [window_label(r) for r in self.windows.itertuples(index=False)]
        return np.asarray(labels, dtype=object).reshape(self.grid.n_rows, self.grid.n_cols)


def window_label(row: Any) -> str:
    """Plane-map label of one windows-table row: ``"phase {h k l}"``, ``"phase"`` or ``""``."""
    name = getattr(row, "phase_name", "") or ""
    if not isinstance(name, str) or not name:
        return ""
    fam = getattr(row, "plane_family", "") or ""
    return f"{name} {{{fam}}}" if isinstance(fam, str) and fam else name


@dataclass(frozen=True)
class SeriesResult:
    """A defocus series: per-image results and the profile over defocus.

    Attributes
    ----------
    results : tuple of AnalysisResult
        Sorted by defocus.
    profile : pandas.DataFrame
        One row per image (:func:`series_profile`): ``file, defocus_nm, crystallinity,
        crystalline_area_fraction, n_windows, n_crystalline, fraction_<card_id>...``.
    best_focus_nm : float or None
        Defocus of maximum crystallinity.
    phases : tuple of (card_id, name)
        The phases with a fraction column, in column order.
    """

    results: tuple[AnalysisResult, ...]
    profile: pd.DataFrame
    best_focus_nm: float | None
    phases: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def _load_default_cards() -> CardDatabase:
    from hrtem_core.cards import load_cards

    return load_cards()


def load_spot_model(model: SpotModel | None, detector: str) -> SpotModel | None:
    """The U-Net for ``detector == "unet"`` (``model``, else the default weights), else None.

    Raises
    ------
    AnalysisParameterError
        The default weights cannot be loaded (with a hint to use the classical detector).
    """
    if detector != "unet":
        return None
    if model is not None:
        return model
    from hrtem_core.unet.load import load_model

    try:
        return load_model()
    except HRTEMError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise AnalysisParameterError(
            f"cannot load the U-Net weights ({type(exc).__name__}: {exc}); "
            "train them or use the classical detector"
        ) from None


def make_tables(cards: CardDatabase, params: AnalysisParams) -> IndexingTables:
    """Indexing tables for ``params`` (validates the phases against the cards)."""
    return build_tables(
        cards,
        card_ids=params.phases,
        spacing_tol=params.spacing_tol,
        angle_tol_deg=params.angle_tol_deg,
        include_forbidden=params.include_forbidden,
        d_min_nm=params.d_min_nm,
        ambiguity_decades=params.ambiguity_decades,
        max_chance=params.max_chance,
        max_zone_index=params.max_zone_index,
    )


def analyze_image(
    micrograph: Micrograph,
    *,
    params: AnalysisParams = AnalysisParams(),
    cards: CardDatabase | None = None,
    model: SpotModel | None = None,
    progress: ProgressCallback | None = None,
    tables: IndexingTables | None = None,
    detector_workers: int = -1,
) -> AnalysisResult:
    """Analyse one micrograph: windows -> spot pairs -> indexing -> table and summary.

    Parameters
    ----------
    micrograph : Micrograph
        ``data`` (ny, nx) and ``pixel_size_nm`` (y, x) [nm/px]; non-square pixels are honoured.
    params : AnalysisParams, keyword-only
    cards : CardDatabase or None, keyword-only
        Default :func:`hrtem_core.cards.load_cards` (``data/pdf_cards.xlsx``).
    model : SpotModel or None, keyword-only
        For the U-Net detector; default :func:`hrtem_core.unet.load.load_model`.
    progress : callable or None, keyword-only
        ``progress(fraction_done, message)``, called once before the first window and once per
        block of whole window rows (about ``params.batch_size`` windows).
    tables : IndexingTables or None, keyword-only
        Precomputed :func:`make_tables` (a series shares them); built from ``cards`` otherwise.
    detector_workers : int, keyword-only
        Threads of the spot detector (``detect_pairs_in_image(workers=...)``; -1: the available
        cores, at most 8). Give 1 where several processes already share the cores (batch
        workers, ``analyze_series(workers=...)``). The result does not depend on it.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    AnalysisParameterError
        Invalid parameters, an image smaller than one window, a missing U-Net.
    CardDatabaseError
        Unknown phases, nothing to index against.
    """
    t0 = time.perf_counter()
    params.validate()
    if isinstance(detector_workers, bool) or not isinstance(detector_workers, int | np.integer):
        raise AnalysisParameterError(
            f"detector_workers must be an integer (-1: all cores), got {detector_workers!r}"
        )
    data = np.asarray(micrograph.data)
    if data.ndim != 2:
        raise AnalysisParameterError(
            f"{micrograph.name}: expected a 2-D image, got shape {data.shape}"
        )
    grid = window_grid(data.shape, window_px=int(params.window_px), stride_px=params.stride_px)
    py, px = (float(v) for v in micrograph.pixel_size_nm)
    if tables is None:
        if cards is None:
            cards = _load_default_cards()
        tables = make_tables(cards, params)
    model = load_spot_model(model, params.detector)

    from hrtem_core.spots import detect_pairs_in_image

    n = grid.n_windows
    all_pairs: list[tuple[SpotPair, ...]] = [()] * n
    if progress is not None:
        progress(0.0, f"{micrograph.name}: {n} windows")
    # No window is copied out of the image: the detector transforms image rows shared by the
    # overlapping windows (grid_band_spectra). The grid is processed in blocks of whole window
    # rows (about batch_size windows each): one detector call and one progress call per block,
    # and the detector's per-window arrays (band spectra, masks) never exceed one block,
    # whatever the image size.
    image32 = np.asarray(data, dtype=np.float32)
    # Blocks as even as possible: the detector spreads each block over its threads, and a short
    # last block would leave cores idle.
    n_blocks = -(-grid.n_rows // max(1, int(params.batch_size) // grid.n_cols))
    bounds = [grid.n_rows * k // n_blocks for k in range(n_blocks + 1)]
    for r0, r1 in itertools.pairwise(bounds):
        found = detect_pairs_in_image(
            image32,
            grid,
            rows=(r0, r1),
            pixel_size_nm=(py, px),
            detector=params.detector,
            model=model,
            d_min_nm=params.d_min_nm,
            workers=detector_workers,
        )
        start = r0 * grid.n_cols
        for i, pairs in enumerate(found, start=start):
            all_pairs[i] = tuple(pairs)
        done = r1 * grid.n_cols
        if progress is not None:
            progress(done / n, f"{micrograph.name}: {done}/{n} windows")

    # Every window is indexed at once: one whole-array search per phase (indexing.index_windows).
    all_index = index_windows(all_pairs, tables)
    windows = windows_table(grid, all_pairs, all_index)
    phases, families = phase_tables(windows, grid, tables)
    elapsed = time.perf_counter() - t0
    defocus = micrograph.defocus_nm
    summary = _summary(
        micrograph, grid, params, windows, phases, families, tables, elapsed, defocus, cards
    )
    return AnalysisResult(
        name=micrograph.name,
        pixel_size_nm=(py, px),
        params=params,
        grid=grid,
        windows=windows,
        pairs=tuple(all_pairs),
        summary=summary,
        defocus_nm=None if defocus is None else float(defocus),
        index=tuple(all_index),
        phases=phases,
        families=families,
    )


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
        "warnings": list(getattr(micrograph, "warnings", ()) or ()),
        "elapsed_s": round(float(elapsed_s), 4),
        "version": __version__,
    }


# --------------------------------------------------------------------------------------------
# Defocus series
# --------------------------------------------------------------------------------------------


def fraction_column(card_id: str) -> str:
    return "fraction_" + re.sub(r"[^A-Za-z0-9._-]+", "_", str(card_id))


def series_profile(
    files: pd.DataFrame,
    windows: pd.DataFrame,
    *,
    phases: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """The profile over defocus from per-file rows and the windows of every file.

    Parameters
    ----------
    files : pandas.DataFrame
        One row per image with ``file`` and ``defocus_nm`` (optionally
        ``crystalline_area_fraction``).
    windows : pandas.DataFrame
        The windows tables of the images, concatenated, with a ``file`` column.
    phases : sequence of (card_id, name), optional, keyword-only
        Phases that get a fraction column (default: every phase found in ``windows``).

    Returns
    -------
    pandas.DataFrame
        Sorted by defocus: ``file, defocus_nm, crystallinity, crystalline_area_fraction,
        n_windows, n_crystalline``, then ``fraction_<card_id>`` per phase (windows whose best
        match is the phase / all windows).
    """
    if phases is None:
        seen: dict[str, str] = {}
        if len(windows) and "phase_card" in windows:
            for c, nm in zip(
                windows["phase_card"].fillna("").astype(str),
                windows["phase_name"].fillna("").astype(str),
                strict=True,
            ):
                if c and c not in seen:
                    seen[c] = nm
        phases = sorted(seen.items())
    rows = []
    groups = dict(tuple(windows.groupby("file", sort=False))) if len(windows) else {}
    for rec in files.to_dict("records"):
        name = rec["file"]
        win = groups.get(name)
        n = 0 if win is None else len(win)
        cryst = 0 if win is None else int(pd.to_numeric(win["crystalline"]).astype(bool).sum())
        row: dict[str, Any] = {
            "file": name,
            "defocus_nm": float(rec["defocus_nm"])
            if rec.get("defocus_nm") is not None
            else float("nan"),
            "crystallinity": cryst / n if n else float("nan"),
            "crystalline_area_fraction": float(rec.get("crystalline_area_fraction", float("nan")))
            if rec.get("crystalline_area_fraction") is not None
            else float("nan"),
            "n_windows": n,
            "n_crystalline": cryst,
        }
        cards = (
            win["phase_card"].fillna("").astype(str).to_numpy() if win is not None else np.array([])
        )
        for cid, _nm in phases:
            row[fraction_column(cid)] = float((cards == cid).sum()) / n if n else float("nan")
        rows.append(row)
    cols = [
        "file",
        "defocus_nm",
        "crystallinity",
        "crystalline_area_fraction",
        "n_windows",
        "n_crystalline",
        *[fraction_column(c) for c, _ in phases],
    ]
    prof = pd.DataFrame(rows, columns=cols)
    return prof.sort_values("defocus_nm", kind="stable", ignore_index=True)


def best_focus_nm(profile: pd.DataFrame) -> float | None:
    """Defocus of maximum crystallinity [nm] (ties: larger area fraction, then smaller |defocus|)."""
    p = profile[pd.to_numeric(profile["crystallinity"], errors="coerce").notna()]
    p = p[pd.to_numeric(p["defocus_nm"], errors="coerce").notna()]
    if p.empty:
        return None
    area = pd.to_numeric(p.get("crystalline_area_fraction"), errors="coerce").fillna(0.0)
    key = pd.DataFrame(
        {
            "c": p["crystallinity"].astype(float),
            "a": area.astype(float),
            "d": -p["defocus_nm"].astype(float).abs(),
            "df": p["defocus_nm"].astype(float),
        }
    ).sort_values(["c", "a", "d"], ascending=False, kind="stable")
    return float(key["df"].iloc[0])


def series_from_results(
    results: Sequence[AnalysisResult], defocus_nm: Sequence[float] | None = None
) -> SeriesResult:
    """Assemble a :class:`SeriesResult` from per-image results (defocus from each result by default)."""
    results = list(results)
    if defocus_nm is None:
        defocus_nm = [r.defocus_nm for r in results]
    if len(defocus_nm) != len(results):
        raise AnalysisParameterError(
            f"{len(defocus_nm)} defocus values for {len(results)} images: give one per image"
        )
    fixed = []
    for r, df in zip(results, defocus_nm, strict=True):
        if df is None or not math.isfinite(float(df)):
            raise AnalysisParameterError(
                f"{r.name}: the defocus is unknown; give it with --defocus-nm"
            )
        if r.defocus_nm != float(df):
            summary = dict(r.summary, defocus_nm=float(df))
            r = dataclasses.replace(r, defocus_nm=float(df), summary=summary)
        fixed.append(r)
    phase_order: dict[str, str] = {}
    for r in fixed:
        if r.phases is not None:
            for c, nm in zip(r.phases["card_id"], r.phases["name"], strict=True):
                phase_order.setdefault(str(c), str(nm))
    files = pd.DataFrame(
        {
            "file": [r.name for r in fixed],
            "defocus_nm": [r.defocus_nm for r in fixed],
            "crystalline_area_fraction": [r.summary["crystalline_area_fraction"] for r in fixed],
        }
    )
    names = _unique_names([r.name for r in fixed])
    files["file"] = names
    windows = pd.concat(
        [r.windows.assign(file=nm) for r, nm in zip(fixed, names, strict=True)], ignore_index=True
    )
    phases = list(phase_order.items()) or None
    profile = series_profile(files, windows, phases=phases)
    order = np.argsort([r.defocus_nm for r in fixed], kind="stable")
    return SeriesResult(
        results=tuple(fixed[i] for i in order),
        profile=profile,
        best_focus_nm=best_focus_nm(profile),
        phases=tuple(phase_order.items()),
    )


def _unique_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    seen: dict[str, int] = {}
    for nm in names:
        if nm in seen:
            seen[nm] += 1
            out.append(f"{nm}#{seen[nm]}")
        else:
            seen[nm] = 1
            out.append(nm)
    return out


def resolve_defocus(micrograph: Micrograph, given: float | None = None) -> float:
    """Defocus of an image [nm]: ``given``, else its metadata, else its file name.

    Raises
    ------
    AnalysisParameterError
        When none of them gives a defocus.
    """
    if given is not None:
        v = float(given)
        if not math.isfinite(v):
            raise AnalysisParameterError(
                f"{micrograph.name}: defocus must be a finite number of nm"
            )
        return v
    if micrograph.defocus_nm is not None:
        return float(micrograph.defocus_nm)
    from hrtem_core.io import defocus_from_name

    v = defocus_from_name(micrograph.name)
    if v is None:
        raise AnalysisParameterError(
            f"{micrograph.name}: the defocus is unknown (not in the metadata or the file name); "
            "give it with --defocus-nm"
        )
    return float(v)


def analyze_series(
    micrographs: Sequence[Micrograph],
    *,
    defocus_nm: Sequence[float] | None = None,
    params: AnalysisParams = AnalysisParams(),
    cards: CardDatabase | None = None,
    model: SpotModel | None = None,
    progress: ProgressCallback | None = None,
    workers: int = 1,
) -> SeriesResult:
    """Analyse a defocus series: crystallinity and phase fractions vs defocus, best focus.

    Parameters
    ----------
    micrographs : sequence of Micrograph
    defocus_nm : sequence of float, optional, keyword-only
        One per image [nm]; default each image's metadata, else its file name.
    params, cards, model
        As in :func:`analyze_image` (cards, tables and model are loaded once).
    progress : callable, optional, keyword-only
        ``progress(fraction_done, message)`` over the whole series.
    workers : int, keyword-only
        Images analysed at once in separate processes (default 1: in this process). Each worker
        gets ``cores // workers`` (at least 1) BLAS, torch and spot-detector threads, so the
        processes together do not start more threads than there are cores; the result does
        not depend on it.

    Returns
    -------
    SeriesResult

    Raises
    ------
    AnalysisParameterError
        No image, a defocus count that does not match, or an image whose defocus is unknown.
    """
    micrographs = list(micrographs)
    if not micrographs:
        raise AnalysisParameterError("a defocus series needs at least one image")
    if defocus_nm is not None and len(defocus_nm) != len(micrographs):
        raise AnalysisParameterError(
            f"{len(defocus_nm)} defocus values for {len(micrographs)} images: give one per image"
        )
    dfs = [
        resolve_defocus(m, None if defocus_nm is None else defocus_nm[i])
        for i, m in enumerate(micrographs)
    ]
    params.validate()
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise AnalysisParameterError(f"workers must be a positive integer, got {workers!r}")
    if cards is None:
        cards = _load_default_cards()
    tables = make_tables(cards, params)
    n = len(micrographs)
    if workers > 1 and n > 1:
        return series_from_results(
            _analyze_parallel(
                [
                    dataclasses.replace(m, defocus_nm=df)
                    for m, df in zip(micrographs, dfs, strict=True)
                ],
                params=params,
                tables=tables,
                model=model,
                progress=progress,
                workers=min(int(workers), n),
            ),
            dfs,
        )
    model = load_spot_model(model, params.detector)
    results = []
    for i, (m, df) in enumerate(zip(micrographs, dfs, strict=True)):

        def sub(frac: float, msg: str, i: int = i) -> None:
            if progress is not None:
                progress((i + frac) / n, msg)

        m = dataclasses.replace(m, defocus_nm=df)
        results.append(
            analyze_image(m, params=params, cards=cards, model=model, progress=sub, tables=tables)
        )
    return series_from_results(results, dfs)


def _worker_init(threads: int) -> None:
    import os

    _WORKER_THREADS["threads"] = int(threads)

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import sys

    torch = sys.modules.get("torch")  # only when already imported: importing it costs seconds
    if torch is not None:
        torch.set_num_threads(threads)


_WORKER_MODEL: dict = {}

#: Detector threads of this worker process (set by :func:`_worker_init`).
_WORKER_THREADS: dict = {"threads": 1}


def _worker_analyze(job: tuple) -> AnalysisResult:
    micrograph, params, tables, model = job
    if model is None and params.detector == "unet":
        # Loaded once per worker process, not once per image.
        if "model" not in _WORKER_MODEL:
            _WORKER_MODEL["model"] = load_spot_model(None, params.detector)
        model = _WORKER_MODEL["model"]
    import sys

    threads = int(_WORKER_THREADS["threads"])
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)  # torch may have been imported after _worker_init
    # The processes share the cores: the detector gets this process's share of threads, not
    # one thread per core in every process.
    return analyze_image(
        micrograph, params=params, model=model, tables=tables, detector_workers=threads
    )


def _analyze_parallel(
    micrographs: list,
    *,
    params: AnalysisParams,
    tables: IndexingTables,
    model: SpotModel | None,
    progress: ProgressCallback | None,
    workers: int,
) -> list[AnalysisResult]:
    """Analyse images in ``workers`` processes; results in input order."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    if params.detector == "unet" and model is None:
        load_spot_model(None, params.detector)  # fail here, with one clear message, not in a worker
    # fork is fast (no re-import) and safe for the classical detector; with the U-Net the
    # parent may have run torch's thread pools, which must not be forked: spawn.
    fork_ok = params.detector == "classical" and "fork" in multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if fork_ok else "spawn")
    out: list[AnalysisResult | None] = [None] * len(micrographs)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
    ) as pool:
        futs = {
            pool.submit(_worker_analyze, (m, params, tables, model)): i
            for i, m in enumerate(micrographs)
        }
        done = 0
        for fut in as_completed(futs):
            i = futs[fut]
            out[i] = fut.result()
            done += 1
            if progress is not None:
                progress(done / len(micrographs), f"{micrographs[i].name}: done")
    return [r for r in out if r is not None]


__all__ = [
    "DETECTORS",
    "FAMILY_COLUMNS",
    "PHASE_COLUMNS",
    "WINDOW_COLUMNS",
    "AnalysisParams",
    "AnalysisResult",
    "ProgressCallback",
    "SeriesResult",
    "analyze_image",
    "analyze_series",
    "best_focus_nm",
    "footprint_area_fraction",
    "fraction_column",
    "load_spot_model",
    "make_tables",
    "phase_tables",
    "resolve_defocus",
    "series_from_results",
    "series_profile",
    "window_label",
    "windows_table",
]
