"""Write analysis results to CSV, XLSX and JSON (and the figures next to them).

One image (:func:`export_analysis`) -> ``windows.csv``, ``summary.json``, ``results.xlsx``
(sheets ``windows``, ``phases``, ``families``, ``summary``, ``parameters`` with the software
version), ``plane_map.html`` (plotly) and ``plane_map.png`` (matplotlib).

A defocus series (:func:`export_series`) -> ``profile.csv``, ``profile.html``, ``profile.png``,
``phase_fractions.html``, ``series.json`` (best focus, files) and ``series.xlsx``.

Every file is written to a temporary name and moved into place (:mod:`hrtem_core._files`), so a
reader never sees half a file; text cells that start like a formula (file names, phase names,
notes) are escaped with a leading ``'`` in every CSV and XLSX.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrtem_core import __version__, _files

#: File names of one image's outputs.
WINDOWS_CSV = "windows.csv"
SUMMARY_JSON = "summary.json"
RESULTS_XLSX = "results.xlsx"
PLANE_MAP_HTML = "plane_map.html"
PLANE_MAP_PNG = "plane_map.png"
#: File names of a series' outputs.
PROFILE_CSV = "profile.csv"
PROFILE_HTML = "profile.html"
PROFILE_PNG = "profile.png"
PHASE_FRACTIONS_HTML = "phase_fractions.html"
SERIES_JSON = "series.json"
SERIES_XLSX = "series.xlsx"
#: Per-particle outputs (issue 22): one image's particles, a series' particles across defocus.
PARTICLES_CSV = "particles.csv"
PARTICLES_SERIES_CSV = "particles_series.csv"


def jsonable(value: Any) -> Any:
    """Numpy scalars/arrays, tuples, paths -> JSON types; NaN and inf -> None (strict JSON).

    The one rule of :func:`hrtem_core._files.jsonable`.
    """
    return _files.jsonable(value)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame as UTF-8 CSV without the index, atomically; text cells that start like
    a formula (``= + - @``, tab, CR) get a leading ``'`` (OWASP CSV injection)."""
    return _files.write_csv(frame, path)


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write strict JSON (NaN -> null), indented, atomically."""
    text = json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False)
    return _files.write_text(path, text + "\n")


def _kv_frame(data: dict) -> pd.DataFrame:
    rows = []
    for k, v in data.items():
        v = jsonable(v)
        rows.append(
            {
                "key": k,
                "value": json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v,
            }
        )
    return pd.DataFrame(rows, columns=["key", "value"])


def _parameters_frame(params: dict, extra: dict) -> pd.DataFrame:
    info = {
        "software": "hrtem_core",
        "version": __version__,
        "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
        **{f"param.{k}": v for k, v in params.items()},
    }
    return _kv_frame(info)


def write_xlsx(sheets: dict[str, pd.DataFrame], path: str | os.PathLike) -> Path:
    """Write one sheet per DataFrame (names cut to Excel's 31 characters), atomically; text
    cells that start like a formula get a leading ``'`` (OWASP CSV injection)."""
    return _files.write_xlsx(sheets, path)


def result_sheets(result: Any) -> dict[str, pd.DataFrame]:
    """The XLSX sheets of one analysis: windows, phases, families, summary, parameters."""
    summary = {
        k: v for k, v in result.summary.items() if k not in ("phases", "families", "parameters")
    }
    extra = {
        "file": result.name,
        "cards_path": result.summary.get("cards_path"),
        "cards_digest": result.summary.get("cards_digest"),
    }
    phases = result.phases if result.phases is not None else pd.DataFrame()
    families = result.families if result.families is not None else pd.DataFrame()
    return {
        "windows": result.windows,
        "phases": phases,
        "families": families,
        "summary": _kv_frame(summary),
        "parameters": _parameters_frame(result.params.to_dict(), extra),
    }


def export_analysis(
    result: Any,
    out_dir: str | os.PathLike,
    *,
    image: np.ndarray | None = None,
    figures: bool = True,
    particles: Any = None,
) -> dict[str, Path]:
    """Write every output of one analysis into ``out_dir``.

    Parameters
    ----------
    result : AnalysisResult
    out_dir : path
        Created if missing.
    image : ndarray, shape (ny, nx), optional, keyword-only
        The analysed image (background of the plane map); without it the map is drawn on a blank
        canvas.
    figures : bool, keyword-only
        Also write ``plane_map.html`` and ``plane_map.png`` (default True).
    particles : ImageParticles, optional, keyword-only
        :func:`hrtem_core.particles.image_particles`: adds ``particles.csv``, a ``particles``
        sheet and the particle list and defocus estimate in ``summary.json``.

    Returns
    -------
    dict
        Output kind -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, sheets = result.summary, result_sheets(result)
    if particles is not None:  # issue 22: particles + defocus estimate
        summary, sheets = particle_outputs(particles, summary, sheets)
    paths = {
        "windows_csv": write_csv(result.windows, out / WINDOWS_CSV),
        "summary_json": write_json(summary, out / SUMMARY_JSON),
        "results_xlsx": write_xlsx(sheets, out / RESULTS_XLSX),
    }
    if particles is not None:
        paths["particles_csv"] = write_csv(particles.table, out / PARTICLES_CSV)
    if figures:
        from hrtem_core.figures import plane_map_figure, plane_map_png, write_html

        paths["plane_map_html"] = write_html(plane_map_figure(result, image), out / PLANE_MAP_HTML)
        paths["plane_map_png"] = plane_map_png(result, image, out / PLANE_MAP_PNG)
    return paths


def particle_outputs(
    particles: Any, summary: dict, sheets: dict[str, pd.DataFrame]
) -> tuple[dict, dict[str, pd.DataFrame]]:
    """``summary`` with the particle list and defocus estimate, ``sheets`` with ``particles``.

    ``particles`` is an :class:`hrtem_core.particles.ImageParticles`; the defocus estimate and its
    uncertainty also go into the ``summary`` sheet.
    """
    extra = particles.summary()
    summary = dict(summary, **extra)
    sheets = dict(sheets)
    sheets["particles"] = particles.table
    sheets["summary"] = pd.concat(
        [sheets["summary"], _kv_frame({k: v for k, v in extra.items() if k != "particles"})],
        ignore_index=True,
    )
    return summary, sheets


def export_series(
    series: Any,
    out_dir: str | os.PathLike,
    *,
    failures: dict[str, str] | None = None,
    figures: bool = True,
) -> dict[str, Path]:
    """Write the outputs of a defocus series (not the per-image folders) into ``out_dir``.

    Parameters
    ----------
    series : SeriesResult
    out_dir : path
    failures : dict, optional, keyword-only
        Image -> one-line error of the images that could not be analysed (listed in series.json).
    figures : bool, keyword-only
        Also write ``profile.html``, ``profile.png`` and ``phase_fractions.html``.

    Returns
    -------
    dict
        Output kind -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "n_images": len(series.results),
        "best_focus_nm": series.best_focus_nm,
        "phases": [{"card_id": c, "name": n} for c, n in series.phases],
        "files": [
            {
                "file": r.name,
                "defocus_nm": r.defocus_nm,
                "crystallinity": r.summary["crystallinity"],
                "crystalline_area_fraction": r.summary["crystalline_area_fraction"],
            }
            for r in series.results
        ],
        "failures": [{"file": k, "error": v} for k, v in (failures or {}).items()],
        "parameters": series.results[0].params.to_dict() if series.results else None,
        "version": __version__,
    }
    paths = {
        "profile_csv": write_csv(series.profile, out / PROFILE_CSV),
        "series_json": write_json(info, out / SERIES_JSON),
    }
    params = series.results[0].params.to_dict() if series.results else {}
    paths["series_xlsx"] = write_xlsx(
        {
            "profile": series.profile,
            "summary": _kv_frame({k: v for k, v in info.items() if k != "parameters"}),
            "parameters": _parameters_frame(params, {}),
        },
        out / SERIES_XLSX,
    )
    if figures:
        from hrtem_core.figures import (
            phase_fraction_figure,
            profile_figure,
            profile_png,
            write_html,
        )

        paths["profile_html"] = write_html(profile_figure(series), out / PROFILE_HTML)
        paths["profile_png"] = profile_png(series, out / PROFILE_PNG)
        paths["phase_fractions_html"] = write_html(
            phase_fraction_figure(series), out / PHASE_FRACTIONS_HTML
        )
    return paths


__all__ = [
    "PARTICLES_CSV",
    "PARTICLES_SERIES_CSV",
    "PHASE_FRACTIONS_HTML",
    "PLANE_MAP_HTML",
    "PLANE_MAP_PNG",
    "PROFILE_CSV",
    "PROFILE_HTML",
    "PROFILE_PNG",
    "RESULTS_XLSX",
    "SERIES_JSON",
    "SERIES_XLSX",
    "SUMMARY_JSON",
    "WINDOWS_CSV",
    "export_analysis",
    "export_series",
    "jsonable",
    "particle_outputs",
    "result_sheets",
    "write_csv",
    "write_json",
    "write_xlsx",
]
