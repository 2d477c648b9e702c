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

import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hrtem_core.analysis.params import AnalysisParams, ProgressCallback
from hrtem_core.analysis.tables import _summary, phase_tables, window_label, windows_table
from hrtem_core.detectors import detector_for, load_default_model
from hrtem_core.errors import AnalysisParameterError
from hrtem_core.indexing import IndexingTables, WindowIndex, build_tables, index_windows
from hrtem_core.windows import WindowGrid, window_grid

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hrtem_core.cards import CardDatabase
    from hrtem_core.io import Micrograph, PixelSize
    from hrtem_core.spots import SpotPair
    from hrtem_core.unet.load import SpotModel


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
    def pixel_size(self) -> PixelSize:
        """:attr:`pixel_size_nm` as a :class:`~hrtem_core.io.PixelSize` (with the micrograph's
        source, from the summary)."""
        from hrtem_core.io._model import PixelSize

        source = (self.summary or {}).get("pixel_size_source") or "metadata"
        return PixelSize(*self.pixel_size_nm, source=str(source))

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
    return model if model is not None else load_default_model()


def _pixel_size(micrograph: Micrograph) -> PixelSize:
    """The micrograph's :class:`~hrtem_core.io.PixelSize` (a plain ``pixel_size_nm`` pair for
    objects that only have that)."""
    size = getattr(micrograph, "pixel_size", None)
    if size is not None:
        return size
    from hrtem_core.io._model import PixelSize

    return PixelSize.of(micrograph.pixel_size_nm, getattr(micrograph, "pixel_size_source", "user"))


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
    pixel = _pixel_size(micrograph)  # validated: finite, > 0 nm/px
    py, px = pixel
    if tables is None:
        if cards is None:
            cards = _load_default_cards()
        tables = make_tables(cards, params)
    detector = detector_for(params.detector, model=model)

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
        found = detector.pairs_in_image(
            image32,
            grid,
            rows=(r0, r1),
            pixel_size_nm=(py, px),
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


__all__ = ["AnalysisResult", "analyze_image", "load_spot_model", "make_tables"]
