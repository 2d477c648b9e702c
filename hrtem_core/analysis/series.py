"""The defocus-series engine: defocus of each image, per-image analysis, profile, best focus.

In a defocus series the **best focus** is the defocus of maximum crystallinity (ties: the larger
crystalline area fraction, then the smaller ``|defocus|``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hrtem_core.analysis.image import (
    AnalysisResult,
    _load_default_cards,
    analyze_image,
    load_spot_model,
    make_tables,
)
from hrtem_core.analysis.params import AnalysisParams, ProgressCallback
from hrtem_core.errors import AnalysisParameterError
from hrtem_core.indexing import IndexingTables

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hrtem_core.cards import CardDatabase
    from hrtem_core.io import Micrograph
    from hrtem_core.unet.load import SpotModel


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
    "SeriesResult",
    "analyze_series",
    "best_focus_nm",
    "fraction_column",
    "resolve_defocus",
    "series_from_results",
    "series_profile",
]
