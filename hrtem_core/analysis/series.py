"""The defocus-series engine: defocus of each image, per-image analysis, profile, best focus.

In a defocus series the **best focus** is the defocus of maximum crystallinity (ties: the larger
crystalline area fraction, then the smaller ``|defocus|``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
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
from hrtem_core.errors import AnalysisParameterError, HRTEMError
from hrtem_core.indexing import IndexingTables

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hrtem_core.cards import CardDatabase
    from hrtem_core.io import Micrograph
    from hrtem_core.particles import ImageParticles
    from hrtem_core.unet.load import SpotModel

#: Where an image's defocus came from (:attr:`SeriesImage.defocus_source`).
SOURCE_GIVEN = "given"
SOURCE_METADATA = "metadata"
SOURCE_NAME = "file name"
SOURCE_ESTIMATED = "estimated"
SOURCE_UNKNOWN = "unknown"

#: What one image of a series may fail with; with ``keep_going`` the other images still run.
IMAGE_ERRORS: tuple[type[BaseException], ...] = (HRTEMError, OSError, ValueError, MemoryError)

#: ``analyze(micrograph, progress) -> AnalysisResult``: the per-image analysis the engine calls
#: (default :func:`~hrtem_core.analysis.image.analyze_image`; the dashboard passes its cached run).
AnalyzeFn = Callable[[Any, "ProgressCallback | None"], AnalysisResult]


#: ``find_particles(result, micrograph) -> ImageParticles`` (default
#: :func:`hrtem_core.particles.image_particles`).
ParticlesFn = Callable[[AnalysisResult, Any], "ImageParticles"]


class DefocusUnknownError(AnalysisParameterError):
    """An image has no defocus: none given, none in its metadata or name, no clear estimate."""


class SeriesCancelled(Exception):
    """The ``cancelled()`` callback of :func:`run_series` asked the engine to stop."""


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
            raise DefocusUnknownError(f"{r.name}: the defocus is unknown: give it in nm")
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


# --------------------------------------------------------------------------------------------
# The engine: defocus of each image, the per-image step, the whole series
# --------------------------------------------------------------------------------------------


def defocus_of(micrograph: Micrograph, given: float | None = None) -> tuple[float | None, str]:
    """The defocus of an image before any estimate [nm] and where it came from.

    ``given`` (the user's value), else the micrograph's own value (its metadata, or its file name
    as the reader parsed it), else the defocus in its file name; ``(None, SOURCE_UNKNOWN)`` when
    none of them gives one.

    Raises
    ------
    AnalysisParameterError
        ``given`` is not a finite number.
    """
    if given is not None:
        v = float(given)
        if not math.isfinite(v):
            raise AnalysisParameterError(
                f"{micrograph.name}: defocus must be a finite number of nm"
            )
        return v, SOURCE_GIVEN
    if micrograph.defocus_nm is not None:
        meta = getattr(micrograph, "metadata", None) or {}
        named = meta.get("defocus_source") == SOURCE_NAME
        return float(micrograph.defocus_nm), SOURCE_NAME if named else SOURCE_METADATA
    from hrtem_core.io import defocus_from_name

    v = defocus_from_name(micrograph.name)
    return (None, SOURCE_UNKNOWN) if v is None else (float(v), SOURCE_NAME)


def _unknown(name: str, why: str = "") -> DefocusUnknownError:
    return DefocusUnknownError(
        f"{name}: the defocus is unknown (not in the metadata or the file name{why}): give it in nm"
    )


def resolve_defocus(micrograph: Micrograph, given: float | None = None) -> float:
    """Defocus of an image [nm]: ``given``, else its metadata, else its file name.

    Raises
    ------
    AnalysisParameterError
        When none of them gives a defocus (:class:`DefocusUnknownError`), or ``given`` is not
        finite.
    """
    v, _source = defocus_of(micrograph, given)
    if v is None:
        raise _unknown(micrograph.name)
    return v


@dataclass(frozen=True)
class SeriesImage:
    """One image of a series as the engine ran it.

    Attributes
    ----------
    result : AnalysisResult
        Its analysis, ``defocus_nm`` filled in (the Thon-ring estimate where none was given).
    defocus_source : str
        :data:`SOURCE_GIVEN`, :data:`SOURCE_METADATA`, :data:`SOURCE_NAME` or
        :data:`SOURCE_ESTIMATED`.
    particles : ImageParticles or None
        Particles and the Thon-ring estimate (:func:`hrtem_core.particles.image_particles`);
        None when the engine ran without estimates.
    warnings : tuple of str
        The disagreement between a given defocus and the estimate, when there is one.
    """

    result: AnalysisResult
    defocus_source: str
    particles: ImageParticles | None = None
    warnings: tuple[str, ...] = ()


def _with_defocus(result: AnalysisResult, defocus_nm: float | None) -> AnalysisResult:
    if result.defocus_nm == defocus_nm:
        return result
    summary = dict(result.summary, defocus_nm=defocus_nm)
    return dataclasses.replace(result, defocus_nm=defocus_nm, summary=summary)


def _finish_image(
    micrograph: Micrograph,
    result: AnalysisResult,
    source: str,
    *,
    estimate: bool,
    find_particles: ParticlesFn | None = None,
    tables: IndexingTables | None = None,
    model: SpotModel | None = None,
) -> SeriesImage:
    """The defocus estimate, its label and warning for an analysed image (issue 22); ``tables``
    and ``model`` index each particle's diffractogram."""
    if not estimate:
        return SeriesImage(result, source)
    if find_particles is None:
        from hrtem_core.particles import image_particles

        extras = image_particles(
            result, micrograph.data, metadata=micrograph.metadata, cards=tables, model=model
        )
    else:
        extras = find_particles(result, micrograph)
    if source == SOURCE_UNKNOWN:
        if extras.defocus_nm is None:
            raise _unknown(micrograph.name, "; no clear Thon rings to estimate it")
        result = extras.with_estimated_defocus(result)
        source = SOURCE_ESTIMATED
    return SeriesImage(result, source, extras, tuple(filter(None, [extras.disagreement])))


def analyze_series_image(
    micrograph: Micrograph,
    *,
    given_defocus_nm: float | None = None,
    params: AnalysisParams = AnalysisParams(),
    tables: IndexingTables | None = None,
    model: SpotModel | None = None,
    progress: ProgressCallback | None = None,
    detector_workers: int = -1,
    estimate: bool = True,
    require_defocus: bool = True,
    analyze: AnalyzeFn | None = None,
    find_particles: ParticlesFn | None = None,
) -> SeriesImage:
    """The engine's per-image step: defocus, analysis, Thon-ring estimate and its warning.

    The defocus is ``given_defocus_nm``, else the image's metadata, else its file name
    (:func:`defocus_of`); where none gives one and ``estimate`` is set, the Thon-ring estimate
    (:func:`hrtem_core.defocus.defocus_for_result`), labelled :data:`SOURCE_ESTIMATED`. A given
    defocus that differs from a reliable estimate by more than its uncertainty is a warning.

    Parameters
    ----------
    micrograph : Micrograph
    given_defocus_nm : float or None, keyword-only
        The user's defocus [nm] (negative = underfocus).
    params, tables, model, progress, detector_workers : keyword-only
        As in :func:`~hrtem_core.analysis.image.analyze_image`.
    estimate : bool, keyword-only
        Estimate the defocus from the Thon rings (and find the particles); without it an image
        with no defocus is an error (unless ``require_defocus`` is off).
    require_defocus : bool, keyword-only
        Without an estimate, an image with no defocus is an error; False: it is analysed with
        ``defocus_nm = None`` (source :data:`SOURCE_UNKNOWN`; the batch's choice).
    analyze : callable, optional, keyword-only
        ``analyze(micrograph, progress)`` instead of ``analyze_image`` (the dashboard's cache).
    find_particles : callable, optional, keyword-only
        ``find_particles(result, micrograph)`` instead of
        :func:`hrtem_core.particles.image_particles` (the dashboard's cache).

    Raises
    ------
    DefocusUnknownError
        No defocus, and no estimate (or ``estimate`` is off).
    """
    df, source = defocus_of(micrograph, given_defocus_nm)
    if df is None and not estimate and require_defocus:
        raise _unknown(micrograph.name)
    m = micrograph if df is None else dataclasses.replace(micrograph, defocus_nm=df)
    if analyze is not None:
        result = analyze(m, progress)
    else:
        result = analyze_image(
            m,
            params=params,
            tables=tables,
            model=model,
            progress=progress,
            detector_workers=detector_workers,
        )
    # A cached result may carry the defocus of an earlier run: this run's defocus wins.
    return _finish_image(
        m,
        _with_defocus(result, df),
        source,
        estimate=estimate,
        find_particles=find_particles,
        tables=tables,
        model=model,
    )


@dataclass(frozen=True)
class SeriesRun:
    """What :func:`run_series` produced.

    Attributes
    ----------
    images : tuple of SeriesImage
        The images that were analysed, in input order.
    failures : tuple of (str, str)
        ``(image name, one-line reason)`` of each image that failed.
    series : SeriesResult or None
        Profile and best focus over the analysed images (None when none was).
    particles : pandas.DataFrame or None
        Per-particle crystallinity across defocus
        (:func:`hrtem_core.particles.particle_series`, the CLI's ``particles_series.csv``); None
        without estimates or images.
    """

    images: tuple[SeriesImage, ...]
    failures: tuple[tuple[str, str], ...] = ()
    series: SeriesResult | None = None
    particles: pd.DataFrame | None = None

    @property
    def results(self) -> tuple[AnalysisResult, ...]:
        """The analysis results, in input order."""
        return tuple(i.result for i in self.images)

    @property
    def warnings(self) -> tuple[tuple[str, str], ...]:
        """``(image name, warning)`` of every defocus disagreement."""
        return tuple((i.result.name, w) for i in self.images for w in i.warnings)

    def defocus_table(self) -> pd.DataFrame:
        """Per image: ``file, defocus_nm, defocus_source, estimate_nm, uncertainty_nm,
        reliable, warning`` (what the CLI writes and the dashboard shows)."""
        rows = []
        for i in self.images:
            est = None if i.particles is None else i.particles.defocus
            rows.append(
                {
                    "file": i.result.name,
                    "defocus_nm": i.result.defocus_nm,
                    "defocus_source": i.defocus_source,
                    "estimate_nm": None if est is None else round(float(est.defocus_nm), 2),
                    "uncertainty_nm": None if est is None else round(float(est.uncertainty_nm), 2),
                    "reliable": None if est is None else bool(est.reliable),
                    "warning": "; ".join(i.warnings),
                }
            )
        return pd.DataFrame(rows)


def _one_line(exc: BaseException) -> str:
    msg = str(exc) if isinstance(exc, HRTEMError) else f"{type(exc).__name__}: {exc}"
    return " ".join(msg.split())


def _check_series_args(n: int, defocus_nm: Sequence[Any] | None, workers: Any) -> None:
    if not n:
        raise AnalysisParameterError("a defocus series needs at least one image")
    if defocus_nm is not None and len(defocus_nm) != n:
        raise AnalysisParameterError(
            f"{len(defocus_nm)} defocus values for {n} images: give one per image"
        )
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise AnalysisParameterError(f"workers must be a positive integer, got {workers!r}")


def _item_name(item: Any) -> str:
    name = getattr(item, "name", None)
    return str(name) if name is not None else str(item)


def run_series(
    images: Sequence[Any],
    *,
    defocus_nm: Sequence[float | None] | None = None,
    load: Callable[[Any], Micrograph] | None = None,
    params: AnalysisParams = AnalysisParams(),
    cards: CardDatabase | None = None,
    model: SpotModel | None = None,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    workers: int = 1,
    estimate: bool = True,
    keep_going: bool = True,
    analyze: AnalyzeFn | None = None,
    find_particles: ParticlesFn | None = None,
    on_image: Callable[[Micrograph, SeriesImage], None] | None = None,
) -> SeriesRun:
    """THE defocus-series engine: the CLI, the dashboard and :func:`analyze_series` call it.

    Each image goes through :func:`analyze_series_image` (defocus from the user, the metadata,
    the file name, else the Thon-ring estimate; the disagreement warning); then the profile over
    defocus, the best focus (:func:`series_from_results`) and the per-particle crystallinity
    across defocus (:func:`hrtem_core.particles.particle_series`).

    Parameters
    ----------
    images : sequence
        Micrographs, or anything ``load`` turns into one (file paths for the CLI).
    defocus_nm : sequence of float or None, optional, keyword-only
        The user's defocus of each image [nm]; None (or a None entry): the image's own.
    load : callable, optional, keyword-only
        ``load(item) -> Micrograph``, called just before the image is analysed.
    params, cards, model : keyword-only
        As in :func:`~hrtem_core.analysis.image.analyze_image`; cards, tables and the model are
        loaded once.
    progress : callable, optional, keyword-only
        ``progress(fraction_done, message)`` over the whole series.
    cancelled : callable, optional, keyword-only
        ``cancelled() -> bool``, asked before each image; True raises :class:`SeriesCancelled`.
    workers : int, keyword-only
        Images analysed at once in separate processes (default 1); the result does not depend
        on it.
    estimate : bool, keyword-only
        Estimate the defocus from the Thon rings where none is known, and find the particles.
    keep_going : bool, keyword-only
        An image that fails (:data:`IMAGE_ERRORS`) is listed in ``failures`` and the others
        still run; False: the first failure is raised.
    analyze, find_particles : callable, optional, keyword-only
        As in :func:`analyze_series_image` (the dashboard passes its caches).
    on_image : callable, optional, keyword-only
        ``on_image(micrograph, series_image)`` after each image (the CLI writes its outputs);
        what it raises counts as that image's failure.

    Returns
    -------
    SeriesRun
    """
    images = list(images)
    _check_series_args(len(images), defocus_nm, workers)
    params.validate()
    tables = None
    if analyze is None:
        tables = make_tables(cards if cards is not None else _load_default_cards(), params)
    step: dict[str, Any] = {
        "params": params,
        "tables": tables,
        "estimate": estimate,
        "analyze": analyze,
        "find_particles": find_particles,
    }
    collect = _Collector(keep_going=keep_going, on_image=on_image)
    givens = list(defocus_nm) if defocus_nm is not None else [None] * len(images)
    if workers > 1 and len(images) > 1 and analyze is None:
        _run_pool(images, givens, load, step, model, progress, int(workers), collect)
    else:
        step["model"] = load_spot_model(model, params.detector) if analyze is None else model
        _run_here(images, givens, load, step, progress, cancelled, collect)
    return collect.assemble(estimate=estimate)


class _Collector:
    """The images done and failed so far; calls ``on_image``; raises unless ``keep_going``."""

    def __init__(
        self, *, keep_going: bool, on_image: Callable[[Any, SeriesImage], None] | None
    ) -> None:
        self.keep_going = keep_going
        self.on_image = on_image
        self.done: list[SeriesImage] = []
        self.failed: list[tuple[str, str]] = []

    def ok(self, micrograph: Micrograph, image: SeriesImage) -> None:
        if self.on_image is not None:
            self.on_image(micrograph, image)
        self.done.append(image)

    def fail(self, name: str, exc: BaseException) -> None:
        if not self.keep_going:
            raise exc
        self.failed.append((name, _one_line(exc)))

    def assemble(self, *, estimate: bool) -> SeriesRun:
        images = tuple(self.done)
        results = [i.result for i in images]
        series = series_from_results(results) if images else None
        particles = None
        if estimate and images:
            from hrtem_core.particles import particle_series

            particles = particle_series(results, [i.particles.particles for i in images])
        return SeriesRun(images, tuple(self.failed), series, particles)


def _run_here(
    images: list[Any],
    givens: list[float | None],
    load: Callable[[Any], Micrograph] | None,
    step: dict[str, Any],
    progress: ProgressCallback | None,
    cancelled: Callable[[], bool] | None,
    collect: _Collector,
) -> None:
    """The images one after the other in this process (the progress runs within each image)."""
    n = len(images)
    for i, item in enumerate(images):
        if cancelled is not None and cancelled():
            raise SeriesCancelled("the series was cancelled")

        def sub(frac: float, msg: str, i: int = i) -> None:
            if progress is not None:
                progress((i + frac) / n, msg)

        try:
            m = load(item) if load is not None else item
            collect.ok(m, analyze_series_image(m, given_defocus_nm=givens[i], progress=sub, **step))
        except IMAGE_ERRORS as exc:
            collect.fail(_item_name(item), exc)
        if progress is not None:
            progress((i + 1) / n, _item_name(item))


def _run_pool(
    images: list[Any],
    givens: list[float | None],
    load: Callable[[Any], Micrograph] | None,
    step: dict[str, Any],
    model: SpotModel | None,
    progress: ProgressCallback | None,
    workers: int,
    collect: _Collector,
) -> None:
    """The analyses in ``workers`` processes; defocus and estimates in this process."""
    todo: list[tuple[Any, float | None, str]] = []
    for item, given in zip(images, givens, strict=True):
        try:
            m = load(item) if load is not None else item
            df, source = defocus_of(m, given)
            if df is None and not step["estimate"]:
                raise _unknown(m.name)
            todo.append((m if df is None else dataclasses.replace(m, defocus_nm=df), df, source))
        except IMAGE_ERRORS as exc:
            collect.fail(_item_name(item), exc)
    if not todo:
        return
    found = _analyze_parallel(
        [m for m, _, _ in todo],
        params=step["params"],
        tables=step["tables"],
        model=model,
        progress=progress,
        workers=min(workers, len(todo)),
    )
    # The particles' diffractograms run here, with the model loaded once.
    pattern_model = load_spot_model(model, step["params"].detector) if step["estimate"] else model
    for (m, df, source), res in zip(todo, found, strict=True):
        try:
            if isinstance(res, BaseException):
                raise res
            res = _with_defocus(res, df)
            kw = {
                "estimate": step["estimate"],
                "find_particles": step["find_particles"],
                "tables": step["tables"],
                "model": pattern_model,
            }
            collect.ok(m, _finish_image(m, res, source, **kw))
        except IMAGE_ERRORS as exc:
            collect.fail(m.name, exc)


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

    The strict form of :func:`run_series`: every image needs a defocus (given, metadata or
    file name; no Thon-ring estimate) and the first failure is raised.

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
    _check_series_args(len(micrographs), defocus_nm, workers)
    dfs = [
        resolve_defocus(m, None if defocus_nm is None else defocus_nm[i])
        for i, m in enumerate(micrographs)
    ]
    run = run_series(
        micrographs,
        defocus_nm=dfs,
        params=params,
        cards=cards,
        model=model,
        progress=progress,
        workers=workers,
        estimate=False,
        keep_going=False,
    )
    assert run.series is not None  # keep_going=False: every image succeeded
    return run.series


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


def _worker_analyze(job: tuple) -> AnalysisResult | BaseException:
    """One image in a worker process; what it fails with (:data:`IMAGE_ERRORS`) is returned."""
    micrograph, params, tables, model = job
    try:
        return _worker_run(micrograph, params, tables, model)
    except IMAGE_ERRORS as exc:
        return exc


def _worker_run(micrograph: Any, params: AnalysisParams, tables: Any, model: Any) -> AnalysisResult:
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
) -> list[AnalysisResult | BaseException]:
    """Analyse images in ``workers`` processes; results (or the image's error) in input order."""
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
    out: list[AnalysisResult | BaseException | None] = [None] * len(micrographs)
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
    "IMAGE_ERRORS",
    "SOURCE_ESTIMATED",
    "SOURCE_GIVEN",
    "SOURCE_METADATA",
    "SOURCE_NAME",
    "SOURCE_UNKNOWN",
    "AnalyzeFn",
    "DefocusUnknownError",
    "ParticlesFn",
    "SeriesCancelled",
    "SeriesImage",
    "SeriesResult",
    "SeriesRun",
    "analyze_series",
    "analyze_series_image",
    "best_focus_nm",
    "defocus_of",
    "fraction_column",
    "resolve_defocus",
    "run_series",
    "series_from_results",
    "series_profile",
]
