"""From spots to science: one image or a defocus series -> windows table, crystallinity, phase map.

The package, by subject:

* :mod:`~hrtem_core.analysis.params` -- :class:`AnalysisParams` (validated), the progress type;
* :mod:`~hrtem_core.analysis.image` -- :func:`analyze_image`, the per-image run (Zhu et al.),
  and the model / card-table loading it shares with the series;
* :mod:`~hrtem_core.analysis.tables` -- the windows table, the phase and family tables, the
  summary;
* :mod:`~hrtem_core.analysis.series` -- THE defocus-series engine (defocus resolution with the
  Thon-ring estimate, profile, best focus, progress, optional process pool), which the CLI,
  the dashboard and batch call;
* :mod:`~hrtem_core.analysis.window_detail` -- what the dashboard shows for one window.

Every public name of the former ``hrtem_core.analysis`` module is re-exported here.
"""

from __future__ import annotations

from hrtem_core.analysis.image import (
    AnalysisResult,
    analyze_image,
    load_spot_model,
    make_tables,
)
from hrtem_core.analysis.params import DETECTORS, AnalysisParams, ProgressCallback
from hrtem_core.analysis.series import (
    DefocusUnknownError,
    SeriesCancelled,
    SeriesImage,
    SeriesResult,
    SeriesRun,
    analyze_series,
    analyze_series_image,
    best_focus_nm,
    defocus_of,
    fraction_column,
    resolve_defocus,
    run_series,
    series_from_results,
    series_profile,
)
from hrtem_core.analysis.tables import (
    FAMILY_COLUMNS,
    PHASE_COLUMNS,
    WINDOW_COLUMNS,
    footprint_area_fraction,
    phase_tables,
    window_label,
    windows_table,
)

__all__ = [
    "DETECTORS",
    "FAMILY_COLUMNS",
    "PHASE_COLUMNS",
    "WINDOW_COLUMNS",
    "AnalysisParams",
    "AnalysisResult",
    "DefocusUnknownError",
    "ProgressCallback",
    "SeriesCancelled",
    "SeriesImage",
    "SeriesResult",
    "SeriesRun",
    "analyze_image",
    "analyze_series",
    "analyze_series_image",
    "best_focus_nm",
    "defocus_of",
    "footprint_area_fraction",
    "fraction_column",
    "load_spot_model",
    "make_tables",
    "phase_tables",
    "resolve_defocus",
    "run_series",
    "series_from_results",
    "series_profile",
    "window_label",
    "windows_table",
]
