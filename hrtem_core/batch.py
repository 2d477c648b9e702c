"""Batch analysis of many micrographs on a Dask cluster: one table of windows, one row per file.

:func:`run_batch` analyses every file (paths, folders searched recursively, glob patterns) with
:func:`hrtem_core.analysis.analyze_image`, one Dask task per file, and writes into ``out_dir``:

``windows.parquet/file=<name>/part-0.parquet``
    One row per window of every file that succeeded: a Hive-partitioned Parquet dataset whose
    partition column ``file`` is the file's *safe name* (its base name with characters outside
    ``[A-Za-z0-9._+-]`` replaced by ``_``; a hash of its folder is appended when two inputs share
    a base name). Each part is written (atomically) as soon as its file finishes, so an
    interrupted batch keeps what it finished. Read it back with :func:`read_windows`,
    ``pandas.read_parquet`` or ``pyarrow.dataset``.
``files.csv``
    One row per input file: ``file`` (safe name), ``path``, ``status`` (``ok`` or ``error``),
    ``error`` (one line), ``defocus_nm`` [nm, negative = underfocus], ``defocus_source``
    (``file``: metadata or file name; ``given``: the ``defocus_nm`` argument), ``sha256`` (of
    the file bytes), ``params_digest``, ``n_windows``, ``elapsed_s``, ``worker``, ``reused``
    (``True`` when a previous run's result was kept), then the summary fields of ``analyze``
    (``AnalysisResult.summary``; lists such as ``phases`` as JSON text).
``profile.csv``
    The series profile over defocus (:func:`hrtem_core.analysis.series_profile`) of the files that
    succeeded and whose defocus is known (from metadata or the file name).
``_done.jsonl``
    The manifest: one JSON record appended per finished file (fsync'ed). A re-run skips a file
    whose content hash (sha256 of its bytes) and parameter digest (a hash of the
    :class:`~hrtem_core.analysis.AnalysisParams`, the pixel-size override, the frame, the card
    database's sha256 and the U-Net weights' sha256) match a finished record, so a batch resumes
    after an interruption. Files that failed with a deterministic error (a
    :class:`~hrtem_core.errors.HRTEMError`: unreadable, uncalibrated, too small, ...) are not
    retried with the same content and parameters; other failures (a killed worker, out of
    memory, ...) are.

Scheduling: each task receives a *path* (never an array) and reads the file on the worker; the
worker hashes the bytes, analyses the image and returns a small :class:`FileOutput` (the windows
DataFrame and the summary). The U-Net and the card database are loaded once per worker process
(module-level caches keyed by path and digest); torch runs one thread per worker. ``scheduler``
is ``"local"``/``"processes"`` (a :class:`distributed.LocalCluster` of ``workers`` processes,
default one per CPU, one thread each), a ``tcp://HOST:PORT`` address of a running
``dask-scheduler`` (every worker needs the project installed and the files on a shared path), or
an existing :class:`distributed.Client`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob as globlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hrtem_core import _files
from hrtem_core.errors import CalibrationError, HRTEMError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from distributed import Client, LocalCluster

    from hrtem_core.analysis.params import AnalysisParams

#: Version of the on-disk layout and of the parameter digest; bump it to invalidate old results.
BATCH_FORMAT = 1
#: Name of the windows dataset inside the output folder.
WINDOWS_DIR = "windows.parquet"
#: Name of the per-file table.
FILES_CSV = "files.csv"
#: Name of the series profile table.
PROFILE_CSV = "profile.csv"
#: Name of the manifest of finished files.
MANIFEST = "_done.jsonl"
#: Name of each file's Parquet part inside its partition folder.
PART_NAME = "part-0.parquet"

#: Seconds one file may take (read and analysis) before it is recorded as timed out and the batch
#: goes on; ``None`` for no limit.
DEFAULT_FILE_TIMEOUT_S = 600.0

#: Columns of ``files.csv`` that come before the analysis summary fields.
FILE_COLUMNS: tuple[str, ...] = (
    "file",
    "path",
    "status",
    "error",
    "defocus_nm",
    "defocus_source",
    "sha256",
    "params_digest",
    "n_windows",
    "elapsed_s",
    "worker",
    "reused",
)

ProgressCallback = Callable[[float, str], None]
"""``progress(fraction_done, message)``: fraction in [0, 1] and a short message."""

_LOG = logging.getLogger(__name__)
_GLOB_CHARS = re.compile(r"[*?\[]")


# --------------------------------------------------------------------------------------------
# Settings shared by the client and the workers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSettings:
    """Everything a worker needs to analyse one file, and what the parameter digest covers.

    Attributes
    ----------
    params : AnalysisParams
        Analysis parameters (window, stride, detector, tolerances, phases).
    pixel_size_nm : float or (float, float) or None
        Pixel-size override [nm/px] (``None``: each file's calibration).
    frame : int or "sum" or None
        Frame of a multi-frame file (``None``: the reader's default).
    distortion : (float, float, float) or None
        Scan distortion ``(s_xx, s_xy, s_yy)`` removed from every file before the analysis
        (:func:`hrtem_core.distortion.undistort`; ``None``: none).
    cards_path : str or None
        Card database (``None``: :data:`hrtem_core.cards.DEFAULT_CARDS_PATH`).
    cards_digest : str
        sha256 of the card database file (``"none"`` when there is none).
    weights_path : str or None
        U-Net weights (``None``: :data:`hrtem_core.unet.load.DEFAULT_WEIGHTS`).
    weights_digest : str
        sha256 of the weights file and its settings JSON, ``"none"`` for the classical
        detector.
    """

    params: Any
    pixel_size_nm: float | tuple[float, float] | None = None
    frame: int | str | None = None
    distortion: tuple[float, float, float] | None = None
    cards_path: str | None = None
    cards_digest: str = "none"
    weights_path: str | None = None
    weights_digest: str = "none"

    @property
    def digest(self) -> str:
        """sha256 (hex) of the parameters, the card database and the model weights."""
        params = (
            dataclasses.asdict(self.params)
            if dataclasses.is_dataclass(self.params)
            else repr(self.params)
        )
        pixel = self.pixel_size_nm
        if pixel is not None:
            pixel = [float(v) for v in np.broadcast_to(np.asarray(pixel, dtype=float), (2,))]
        payload = {
            "format": BATCH_FORMAT,
            "params": params,
            "pixel_size_nm": pixel,
            "frame": self.frame,
            "cards_sha256": self.cards_digest,
            "weights_sha256": self.weights_digest,
        }
        if self.distortion is not None:  # (absent otherwise: earlier digests stay valid)
            payload["distortion"] = [float(v) for v in self.distortion]
        text = json.dumps(_jsonable(payload), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_settings(
    params: AnalysisParams | None = None,
    *,
    pixel_size_nm: float | tuple[float, float] | None = None,
    frame: int | str | None = None,
    cards_path: str | os.PathLike | None = None,
    weights_path: str | os.PathLike | None = None,
    distortion: tuple[float, float, float] | None = None,
) -> BatchSettings:
    """Resolve the card and weights files and hash them (on the client, once per batch).

    Parameters
    ----------
    params : AnalysisParams or None
        Analysis parameters; ``None`` for the defaults.
    pixel_size_nm, frame : keyword-only
        Passed to :func:`hrtem_core.io.load_image` for every file.
    cards_path, weights_path : path or None, keyword-only
        Card database and U-Net weights; ``None`` for the project defaults. The weights are only
        read when ``params.detector == "unet"``.
    distortion : (s_xx, s_xy, s_yy) or None, keyword-only
        Scan distortion removed from every file (:mod:`hrtem_core.distortion`), checked here.

    Returns
    -------
    BatchSettings

    Raises
    ------
    HRTEMError
        A missing card database or weights file (for the U-Net detector);
        :class:`~hrtem_core.errors.AnalysisParameterError` for invalid parameters,
        :class:`~hrtem_core.errors.CardDatabaseError` for a broken database or unknown phases.
    """
    if params is None:
        from hrtem_core.analysis.params import AnalysisParams

        params = AnalysisParams()
    if hasattr(params, "validate"):
        params.validate()  # fail once, here, rather than once per file on the workers
    if distortion is not None:
        from hrtem_core.distortion import stretch_matrix

        stretch_matrix(distortion)
        distortion = tuple(float(v) for v in distortion)  # type: ignore[assignment]
    cards = _resolve_cards_path(cards_path)
    if cards is None or not cards.is_file():
        raise HRTEMError(f"card database {cards} does not exist")
    cards_digest = sha256_file(cards)
    # Load it and build the indexing tables once on the client: a broken workbook or an unknown
    # phase is reported once, before any worker starts.
    _cached_tables(str(cards), cards_digest, params)
    weights: Path | None = None
    weights_digest = "none"
    if getattr(params, "detector", "unet") == "unet":
        weights = _resolve_weights_path(weights_path)
        if weights is None or not weights.is_file():
            raise HRTEMError(
                f"U-Net weights {weights} not found: train them (python -m hrtem_core.train) "
                "or use the classical detector"
            )
        weights_digest = weights_digest_of(weights)
    return BatchSettings(
        params=params,
        pixel_size_nm=pixel_size_nm,
        frame=frame,
        distortion=distortion,
        cards_path=None if cards is None else str(cards),
        cards_digest=cards_digest,
        weights_path=None if weights is None else str(weights),
        weights_digest=weights_digest,
    )


def weights_digest_of(path: str | os.PathLike) -> str:
    """sha256 of the U-Net weights, combined with that of their settings JSON when present."""
    digest = sha256_file(path)
    try:
        from hrtem_core.unet.load import settings_path

        sidecar = Path(settings_path(path))
    except ImportError:  # pragma: no cover - the unet package is part of the package
        return digest
    if not sidecar.is_file():
        return digest
    both = f"{digest}:{sha256_file(sidecar)}".encode()
    return hashlib.sha256(both).hexdigest()


def _resolve_cards_path(path: str | os.PathLike | None) -> Path | None:
    if path is not None:
        return Path(path).expanduser().resolve()
    try:
        from hrtem_core.cards import DEFAULT_CARDS_PATH
    except ImportError:  # pragma: no cover - the cards module is part of the package
        return None
    return Path(DEFAULT_CARDS_PATH).resolve()


def _resolve_weights_path(path: str | os.PathLike | None) -> Path | None:
    if path is not None:
        return Path(path).expanduser().resolve()
    try:
        from hrtem_core.unet.load import DEFAULT_WEIGHTS
    except ImportError:  # pragma: no cover - the unet package is part of the package
        return None
    return Path(DEFAULT_WEIGHTS).resolve()


# --------------------------------------------------------------------------------------------
# Files: discovery, names, hashes
# --------------------------------------------------------------------------------------------


def supported_extensions() -> tuple[str, ...]:
    """Lower-case file extensions (with the dot) that a folder search picks up: the suffixes of
    the readers registered in :mod:`hrtem_core.io`."""
    from hrtem_core.io import SUPPORTED_EXTENSIONS

    return SUPPORTED_EXTENSIONS


def discover_files(
    inputs: Iterable[str | os.PathLike],
    *,
    glob: str | None = None,
    extensions: Sequence[str] | None = None,
) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted list of files without duplicates.

    Parameters
    ----------
    inputs : iterable of path or str
        A file is taken as it is (whatever its extension). A folder is searched recursively for
        files with a supported extension (or matching ``glob``). Anything else containing
        ``*``, ``?`` or ``[`` is expanded as a glob pattern (``**`` recurses).
    glob : str or None, keyword-only
        Pattern the folder search matches file names against instead of the extension list,
        e.g. ``"*_focus*.dm4"``.
    extensions : sequence of str or None, keyword-only
        Extensions for the folder search; default :func:`supported_extensions`.

    Returns
    -------
    list of Path
        Absolute paths, folders' contents sorted, duplicates removed (first occurrence kept).

    Raises
    ------
    HRTEMError
        An input that is neither a file, a folder nor a pattern matching something, or no file
        at all.
    """
    exts = tuple(e.lower() for e in (extensions or supported_extensions()))
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            if glob:
                hits = [p for p in path.rglob(glob) if p.is_file()]
            else:
                hits = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in exts]
            hits = [p for p in hits if not _hidden(p.relative_to(path))]
            found.extend(sorted(hits))
        elif _GLOB_CHARS.search(text):
            hits = [Path(p) for p in globlib.glob(os.path.expanduser(text), recursive=True)]
            files = sorted(p for p in hits if p.is_file())
            if not files:
                raise HRTEMError(f"the pattern {text!r} matches no file")
            found.extend(files)
        else:
            raise HRTEMError(f"input {text} is neither a file nor a folder")
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve(), None)
    if not unique:
        where = ", ".join(os.fspath(i) for i in inputs) or "(no input)"
        what = f"matching {glob!r}" if glob else f"with extension {', '.join(exts)}"
        raise HRTEMError(f"no image file {what} found in {where}")
    return list(unique)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def safe_names(paths: Sequence[Path]) -> list[str]:
    """Partition names for ``paths``: the sanitized base name, made unique with a folder hash.

    A name keeps ``[A-Za-z0-9._+-]``; other runs of characters become ``_``. When two paths share
    a sanitized base name, each of them gets ``-<8 hex digits of sha1(folder)>`` before its
    extension, so the name of a file does not depend on the order of the inputs.
    """
    base = [_sanitize(p.name) for p in paths]
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    names = []
    for p, b in zip(paths, base, strict=True):
        if counts[b] > 1:
            tag = hashlib.sha1(str(Path(p).resolve().parent).encode("utf-8")).hexdigest()[:8]
            stem, dot, ext = b.rpartition(".")
            b = f"{stem}-{tag}.{ext}" if dot and stem else f"{b}-{tag}"
        names.append(b)
    return names


def _sanitize(name: str) -> str:
    return _files.safe_name(name, fallback="file", max_len=200)


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in chunks of ``chunk_bytes``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def stage_file(
    name: str,
    data: bytes,
    folder: str | os.PathLike,
    *,
    companions: Iterable[tuple[str, bytes]] = (),
) -> Path:
    """Write an in-memory file (an upload) where batch workers can read it, once per content.

    The file goes to ``folder/<first 16 hex digits of its sha256>/<name>`` (the name sanitized as
    in :func:`safe_names`), with its companion files (e.g. the ``.emi`` of a ``.ser``) beside it.
    The same bytes always land at the same path, so a batch over staged files resumes across
    sessions, and the partition name in ``windows.parquet`` is the upload's own name. For a
    remote cluster ``folder`` must be on a filesystem the workers see.

    Parameters
    ----------
    name : str
        The file's name (its extension picks the reader; a defocus in it is parsed).
    data : bytes
        The file's contents.
    folder : path
        Staging folder (created).
    companions : iterable of (name, bytes), keyword-only
        Files the reader needs next to it.

    Returns
    -------
    Path
        The staged file.
    """
    companions = tuple(companions)
    h = hashlib.sha256(data)
    for cname, cdata in companions:
        h.update(b"\0" + cname.encode("utf-8") + b"\0" + cdata)
    target_dir = Path(folder).expanduser().resolve() / h.hexdigest()[:16]
    target_dir.mkdir(parents=True, exist_ok=True)
    for fname, content in ((name, data), *companions):
        target = target_dir / _sanitize(Path(fname).name)
        if not (target.is_file() and target.stat().st_size == len(content)):
            _files.write_bytes(target, content)
    return target_dir / _sanitize(Path(name).name)


# --------------------------------------------------------------------------------------------
# The worker side
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FileOutput:
    """What a worker sends back for one file (small: no image, no spectra).

    Attributes
    ----------
    sha256 : str
        sha256 of the file bytes ("" when the file could not be read).
    status : str
        ``"ok"``, ``"error"`` or ``"skipped"`` (already done with this content and parameters).
    windows : pandas.DataFrame or None
        One row per window (``AnalysisResult.windows``) when ``status == "ok"``.
    summary : dict
        ``AnalysisResult.summary`` (JSON-serializable) when ``status == "ok"``.
    defocus_nm : float or None
        Defocus of the file [nm, negative = underfocus], from metadata or the file name.
    error : str or None
        One-line message when ``status == "error"``.
    retry : bool
        Whether a later run should retry a failure (``False`` for deterministic errors).
    elapsed_s : float
        Time spent on the worker [s].
    worker : str
        Address or name of the worker.
    """

    sha256: str
    status: str
    windows: pd.DataFrame | None = None
    summary: dict = field(default_factory=dict)
    defocus_nm: float | None = None
    error: str | None = None
    retry: bool = False
    elapsed_s: float = 0.0
    worker: str = ""


#: Spot-detector threads per batch task (``analyze_image(detector_workers=...)``): one, as the
#: local cluster has one single-threaded worker process per core.
WORKER_DETECTOR_THREADS = 1

#: ``analyze_fn(path, settings) -> (windows, summary, defocus_nm)``; runs on a worker.
AnalyzeFn = Callable[[str, BatchSettings], tuple[pd.DataFrame, dict, float | None]]


def analyze_file(path: str, settings: BatchSettings) -> tuple[pd.DataFrame, dict, float | None]:
    """Analyse one file on a worker: read it, run :func:`~hrtem_core.analysis.analyze_image`.

    The card database and the U-Net are taken from per-process caches, so each worker process
    loads them once per batch, not once per file. The spot detector runs on one thread
    (:data:`WORKER_DETECTOR_THREADS`), and torch on one thread, in every worker process.

    Returns
    -------
    windows : pandas.DataFrame
        One row per window.
    summary : dict
        The summary fields of the analysis.
    defocus_nm : float or None
        Defocus [nm] from the file's metadata or name.
    """
    from hrtem_core.analysis.series import analyze_series_image
    from hrtem_core.io import load_image

    micrograph = load_image(path, pixel_size_nm=settings.pixel_size_nm, frame=settings.frame)
    if getattr(settings, "distortion", None) is not None:
        from hrtem_core.distortion import undistort

        micrograph = undistort(micrograph, settings.distortion)
    tables = _cached_tables(settings.cards_path, settings.cards_digest, settings.params)
    model = None
    if getattr(settings.params, "detector", "unet") == "unet":
        model = _cached_model(settings.weights_path, settings.weights_digest)
    # The series engine's per-image step (defocus from the metadata or the name; no Thon-ring
    # estimate: files.csv keeps the files' own defocus). One detector thread: the cluster runs
    # one single-threaded task per process on every core.
    image = analyze_series_image(
        micrograph,
        params=settings.params,
        model=model,
        tables=tables,
        detector_workers=WORKER_DETECTOR_THREADS,
        estimate=False,
        require_defocus=False,
    )
    result = image.result
    return result.windows, dict(result.summary), result.defocus_nm


@functools.lru_cache(maxsize=4)
def _cached_cards(path: str | None, digest: str) -> Any:
    """The card database, loaded once per worker process (keyed by path and sha256)."""
    if path is None or digest == "none":
        return None
    from hrtem_core.cards import load_cards

    db = load_cards(path)
    found = getattr(db, "digest", None)
    if found and found != digest:
        raise HRTEMError(
            f"card database {path} changed while the batch was running "
            "(its sha256 differs from the one at the start): run the batch again"
        )
    return db


@functools.lru_cache(maxsize=8)
def _cached_tables(path: str | None, digest: str, params: Any) -> Any:
    """Indexing tables for ``params``, built once per worker process and parameter set."""
    cards = _cached_cards(path, digest)
    if cards is None:
        return None
    from hrtem_core.analysis.image import make_tables

    return make_tables(cards, params)


@functools.lru_cache(maxsize=2)
def _cached_model(path: str | None, digest: str) -> Any:
    """The U-Net, loaded once per worker process (keyed by weights path and sha256)."""
    _one_torch_thread()
    from hrtem_core.unet.load import load_model

    if path is not None and weights_digest_of(path) != digest:
        raise HRTEMError(
            f"U-Net weights {path} changed while the batch was running: run the batch again"
        )
    return load_model(path)  # CUDA when the worker has a GPU, else CPU


@functools.cache
def _one_torch_thread() -> None:
    """One torch thread per worker process: the cluster's processes already use every core."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, HRTEMError):
        return str(exc)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _worker_name() -> str:
    try:
        from distributed import get_worker

        w = get_worker()
        return str(w.name if w.name is not None else w.address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def run_file_task(
    path: str,
    settings: BatchSettings,
    expected_sha256: str | None = None,
    analyze_fn: AnalyzeFn | None = None,
    timeout_s: float | None = None,
) -> FileOutput:
    """One Dask task: hash the file, skip it when already done, else analyse it.

    Never raises for a bad file: the error is returned in the :class:`FileOutput`.

    Parameters
    ----------
    path : str
        File to analyse (read on the worker).
    settings : BatchSettings
    expected_sha256 : str or None
        Content hash of a finished earlier result with the same parameters; the file is skipped
        when its bytes still hash to it.
    analyze_fn : callable or None
        ``analyze_fn(path, settings) -> (windows, summary, defocus_nm)``; default
        :func:`analyze_file`.
    timeout_s : float or None
        Seconds the analysis may take. Past it the file is reported as an error ("timed out")
        and the task returns, so the batch goes on; the read inside has the same wall-clock
        budget and stops itself, while an analysis past it finishes unobserved in the
        background (Python cannot stop a thread).
    """
    t0 = time.perf_counter()
    worker = _worker_name()
    try:
        digest = sha256_file(path)
    except OSError as exc:
        return FileOutput(
            sha256="",
            status="error",
            error=f"cannot read {path}: {exc.strerror or exc}",
            retry=True,
            elapsed_s=time.perf_counter() - t0,
            worker=worker,
        )
    if expected_sha256 is not None and digest == expected_sha256:
        return FileOutput(
            sha256=digest, status="skipped", elapsed_s=time.perf_counter() - t0, worker=worker
        )
    fn = analyze_fn or analyze_file
    try:
        windows, summary, defocus = _with_timeout(fn, path, settings, timeout_s)
    except _FileTimeout:
        return FileOutput(
            sha256=digest,
            status="error",
            error=f"{Path(path).name}: timed out after {timeout_s:g} s (analysis abandoned)",
            retry=False,
            elapsed_s=time.perf_counter() - t0,
            worker=worker,
        )
    except Exception as exc:  # one bad file never stops the batch
        return FileOutput(
            sha256=digest,
            status="error",
            error=_error_line(exc),
            retry=not isinstance(exc, HRTEMError),
            elapsed_s=time.perf_counter() - t0,
            worker=worker,
        )
    return FileOutput(
        sha256=digest,
        status="ok",
        windows=windows,
        summary=_jsonable(dict(summary)),
        defocus_nm=None if defocus is None else float(defocus),
        elapsed_s=time.perf_counter() - t0,
        worker=worker,
    )


class _FileTimeout(Exception):
    """One file ran past its time limit."""


def _with_timeout(
    fn: AnalyzeFn, path: str, settings: BatchSettings, timeout_s: float | None
) -> tuple[pd.DataFrame, dict, float | None]:
    """``fn(path, settings)`` on a helper thread, waited for at most ``timeout_s`` seconds.

    The read inside gets the same wall-clock budget (:func:`hrtem_core.io._guard.budget`), so a
    hostile file stops itself; :class:`_FileTimeout` when the time is up.
    """
    if timeout_s is None:
        return fn(path, settings)
    import contextvars

    from hrtem_core.io import _guard

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with _guard.budget(Path(path).name, timeout_s):
                box["result"] = fn(path, settings)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    ctx = contextvars.copy_context()
    thread = threading.Thread(
        target=ctx.run, args=(target,), name=f"hrtem-file-{Path(path).name}", daemon=True
    )
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        _LOG.warning("%s: timed out after %g s; the analysis thread is abandoned", path, timeout_s)
        raise _FileTimeout
    if "error" in box:
        raise box["error"]
    return box["result"]


# --------------------------------------------------------------------------------------------
# The client side: manifest, parts, tables
# --------------------------------------------------------------------------------------------


def read_manifest(out_dir: str | os.PathLike) -> dict[str, dict]:
    """The latest manifest record per safe file name (an empty dict when there is none).

    A truncated last line (an interrupted write) is ignored.
    """
    path = Path(out_dir) / MANIFEST
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "file" in rec:
                records[str(rec["file"])] = rec
    return records


def _is_done(rec: dict | None, params_digest: str, out_dir: Path) -> bool:
    if not rec or rec.get("params_digest") != params_digest or not rec.get("sha256"):
        return False
    if rec.get("status") == "ok":
        return (out_dir / rec.get("part", "")).is_file()
    return rec.get("status") == "error" and not rec.get("retry", True)


def part_path(out_dir: str | os.PathLike, name: str) -> Path:
    """Path of the Parquet part of the file with safe name ``name``."""
    return Path(out_dir) / WINDOWS_DIR / f"file={name}" / PART_NAME


def _write_part(out_dir: Path, name: str, windows: pd.DataFrame) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = part_path(out_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame = windows.reset_index(drop=True)
    if "file" in frame.columns:  # the partition column carries the file's name
        frame = frame.rename(columns={"file": "file_in_window"})
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frame = frame.copy()
        for col in frame.columns:
            if frame[col].dtype == object:
                frame[col] = [None if v is None else json.dumps(_jsonable(v)) for v in frame[col]]
        table = pa.Table.from_pandas(frame, preserve_index=False)
    # The temporary name starts with a dot: readers of the partitioned table ignore it.
    return _files.atomic_write(target, lambda tmp: pq.write_table(table, tmp))


def _remove_part(out_dir: Path, name: str) -> None:
    target = part_path(out_dir, name)
    if target.is_file():
        target.unlink()
        with contextlib.suppress(OSError):
            target.parent.rmdir()


def _append_manifest(out_dir: Path, record: dict) -> None:
    line = json.dumps(_jsonable(record), sort_keys=True) + "\n"
    with open(out_dir / MANIFEST, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_windows(out_dir: str | os.PathLike, *, files: Sequence[str] | None = None) -> pd.DataFrame:
    """Read the windows table of a batch back into one DataFrame.

    Parameters
    ----------
    out_dir : path
        The batch's output folder (or its ``windows.parquet`` folder).
    files : sequence of str or None, keyword-only
        Safe names to read (default: every partition).

    Returns
    -------
    pandas.DataFrame
        The ``file`` column (safe name) first, then the window columns; files in name order.
    """
    import pyarrow.parquet as pq

    root = Path(out_dir)
    if root.name != WINDOWS_DIR:
        root = root / WINDOWS_DIR
    wanted = None if files is None else set(files)
    frames = []
    for part in sorted(root.glob(f"file=*/{PART_NAME}")):
        name = part.parent.name.split("=", 1)[1]
        if wanted is not None and name not in wanted:
            continue
        frame = pq.read_table(part).to_pandas()
        frame.insert(0, "file", name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame({"file": pd.Series([], dtype=object)})
    return pd.concat(frames, ignore_index=True)


def _files_table(rows: list[dict]) -> pd.DataFrame:
    flat = []
    summary_keys: list[str] = []
    for row in rows:
        out = {k: row.get(k) for k in FILE_COLUMNS}
        for key, value in (row.get("summary") or {}).items():
            if key in FILE_COLUMNS:
                continue
            if key not in summary_keys:
                summary_keys.append(key)
            out[key] = json.dumps(value) if isinstance(value, dict | list) else value
        flat.append(out)
    frame = pd.DataFrame(flat, columns=[*FILE_COLUMNS, *summary_keys])
    for col in frame.columns:  # whole numbers stay whole in files.csv (49, not 49.0) beside NaN
        values = [r[col] for r in flat if r.get(col) is not None]
        if values and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in values
        ):
            frame[col] = frame[col].astype("Int64")
    return frame


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Atomic UTF-8 CSV; text that starts like a formula (file names, errors) is escaped."""
    _files.write_csv(frame, path)


def _jsonable(value: Any) -> Any:
    """Strict JSON values (NaN and inf -> None): :func:`hrtem_core._files.jsonable`."""
    return _files.jsonable(value)


# --------------------------------------------------------------------------------------------
# Scheduler
# --------------------------------------------------------------------------------------------


def default_workers() -> int:
    """Worker processes of the default local cluster: the CPUs this process may use.

    :data:`dask.system.CPU_COUNT` honours the CPU affinity mask and the cgroup quota of a
    container or a SLURM allocation, where :func:`os.cpu_count` reports every core of the host.
    """
    try:
        from dask.system import CPU_COUNT
    except ImportError:  # pragma: no cover - dask is a dependency of distributed
        CPU_COUNT = None
    n = CPU_COUNT or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
    return max(1, int(n or os.cpu_count() or 1))


#: glibc malloc settings of the local cluster's worker processes (set before they start).
#: distributed sets ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold
#: at 128 kB: every large temporary array of the analysis (windows, spectra: MBs each) is then
#: mmap'ed and unmapped, and its pages zeroed again on the next file. Measured in a worker on
#: the benchmark images (1024 px, window 256, classical detector, 24 files, twice): 15,000
#: minor page faults and 0.086-0.100 s of CPU per file with distributed's value, 320 faults and
#: 0.063-0.065 s with these. A worker keeps up to the trim threshold of freed heap for the
#: next file instead of returning it to the system.
WORKER_MALLOC_ENV: dict[str, str] = {
    "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
}


def local_cluster(n_workers: int | None = None) -> LocalCluster:
    """A :class:`distributed.LocalCluster` for batches: processes, one thread each.

    ``n_workers`` processes (default :func:`default_workers`, the CPUs this process may use),
    memory split evenly between them (``memory_limit="auto"``), no dashboard (the scheduler's
    HTTP endpoint takes a free port), worker logs at ERROR, :data:`WORKER_MALLOC_ENV` in the
    workers' environment. Torch is set to one thread per worker when a task first needs it;
    OpenMP/MKL/OpenBLAS get one thread from distributed's defaults.
    """
    import dask
    from distributed import LocalCluster

    n = int(n_workers) if n_workers is not None else default_workers()
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    with dask.config.set(environ):  # read by each Nanny when the cluster creates it
        return LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
        )


@contextlib.contextmanager
def dask_client(
    scheduler: str | Client = "local", *, workers: int | None = None
) -> Iterator[tuple[Client, str]]:
    """A :class:`distributed.Client` for ``scheduler``, closed on exit if this function made it.

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"local"`` or ``"processes"``: a :class:`distributed.LocalCluster` with ``workers``
        processes (default: the CPU count), one thread each, no dashboard. ``"tcp://HOST:PORT"``
        (or ``tls://``, ``ucx://``, ``inproc://``): a running scheduler. A ``Client``: used as is.
    workers : int or None, keyword-only
        Number of local worker processes (ignored for a remote scheduler).

    Yields
    ------
    (client, description)
    """
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler, f"client {scheduler.scheduler.address}"
        return
    if not isinstance(scheduler, str):
        raise HRTEMError(
            f"unknown scheduler {scheduler!r}: use local, processes or tcp://HOST:PORT"
        )
    text = scheduler.strip()
    if workers is not None and (not isinstance(workers, int | np.integer) or workers < 1):
        raise HRTEMError(f"the number of workers must be a positive integer, got {workers!r}")
    if text in {"local", "processes"}:
        n = int(workers) if workers is not None else default_workers()
        cluster = local_cluster(n)
        try:
            client = Client(cluster)
            try:
                yield client, f"LocalCluster({n} processes x 1 thread)"
            finally:
                client.close()
        finally:
            cluster.close()
        return
    if re.match(r"^(tcp|tls|ucx|inproc)://", text):
        try:
            client = Client(text, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise HRTEMError(
                f"cannot connect to the Dask scheduler at {text}: {_error_line(exc)}"
            ) from exc
        try:
            yield client, f"scheduler {text}"
        finally:
            client.close()
        return
    raise HRTEMError(f"unknown scheduler {text!r}: use local, processes or tcp://HOST:PORT")


# --------------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BatchResult:
    """What :func:`run_batch` did and where it wrote it.

    Attributes
    ----------
    out_dir : Path
        Output folder.
    files : pandas.DataFrame
        The rows of ``files.csv`` (one per input file, inputs in discovery order).
    profile : pandas.DataFrame or None
        The rows of ``profile.csv`` (``None`` when no succeeded file had a defocus).
    n_files, n_analysed, n_skipped, n_failed : int
        Inputs; analysed in this run; kept from an earlier run; failed (this run or earlier).
    elapsed_s : float
        Wall time of the run [s].
    scheduler : str
        Description of the cluster used.
    n_workers : int
        Workers the scheduler had at the start.
    warnings : tuple of str
        Non-fatal notes (files left out of the profile, failures, ...).
    best_focus_nm : float or None
        Defocus of maximum crystallinity over the profile [nm]
        (:func:`hrtem_core.analysis.best_focus_nm`; ``None`` without a profile).
    """

    out_dir: Path
    files: pd.DataFrame
    profile: pd.DataFrame | None
    n_files: int
    n_analysed: int
    n_skipped: int
    n_failed: int
    elapsed_s: float
    scheduler: str
    n_workers: int
    warnings: tuple[str, ...] = ()
    best_focus_nm: float | None = None

    @property
    def windows_path(self) -> Path:
        """The windows dataset folder (``out_dir / "windows.parquet"``)."""
        return self.out_dir / WINDOWS_DIR

    @property
    def files_path(self) -> Path:
        """``out_dir / "files.csv"``."""
        return self.out_dir / FILES_CSV

    @property
    def profile_path(self) -> Path | None:
        """``out_dir / "profile.csv"``, or ``None`` when no profile was written."""
        return None if self.profile is None else self.out_dir / PROFILE_CSV

    def windows(self) -> pd.DataFrame:
        """The windows of every file of this batch that succeeded (see :func:`read_windows`)."""
        ok = self.files.loc[self.files["status"] == "ok", "file"].tolist()
        return read_windows(self.out_dir, files=ok)

    def series(self) -> Any:
        """The profile as a :class:`~hrtem_core.analysis.SeriesResult` (``None`` without one).

        ``results`` is empty (the batch keeps tables, not per-image result objects);
        ``profile``, ``best_focus_nm`` and ``phases`` are those of ``series`` for the same
        files, so :func:`hrtem_core.figures.profile_figure` and ``phase_fraction_figure`` draw it.
        """
        if self.profile is None:
            return None
        from hrtem_core.analysis.series import SeriesResult, fraction_column

        ok = self.files[self.files["status"] == "ok"]
        phases = tuple(
            (cid, name)
            for cid, name in phase_order(ok)
            if fraction_column(cid) in self.profile.columns
        )
        return SeriesResult(
            results=(), profile=self.profile, best_focus_nm=self.best_focus_nm, phases=phases
        )


def run_batch(
    paths: Iterable[str | os.PathLike],
    *,
    params: AnalysisParams | None = None,
    out_dir: str | os.PathLike,
    scheduler: str | Client = "local",
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    glob: str | None = None,
    pixel_size_nm: float | tuple[float, float] | None = None,
    frame: int | str | None = None,
    cards_path: str | os.PathLike | None = None,
    weights_path: str | os.PathLike | None = None,
    settings: BatchSettings | None = None,
    analyze_fn: AnalyzeFn | None = None,
    defocus_nm: Mapping[str | os.PathLike, float] | None = None,
    pixel_sizes_nm: Mapping[str | os.PathLike, float | tuple[float, float]] | None = None,
    file_timeout_s: float | None = DEFAULT_FILE_TIMEOUT_S,
) -> BatchResult:
    """Analyse many files on a Dask cluster and write one table of windows and one of files.

    Parameters
    ----------
    paths : iterable of path or str
        Files, folders (searched recursively for supported extensions) and glob patterns; see
        :func:`discover_files`.
    params : AnalysisParams or None, keyword-only
        Analysis parameters (default ``AnalysisParams()``).
    out_dir : path, keyword-only
        Output folder (created); see the module docstring for its contents. Re-running into the
        same folder resumes: files already done with the same content and parameters are
        skipped.
    scheduler : str or distributed.Client, keyword-only
        ``"local"``/``"processes"``, ``"tcp://HOST:PORT"`` or a ``Client``; see
        :func:`dask_client`.
    workers : int or None, keyword-only
        Local worker processes (default: the CPU count).
    progress : callable or None, keyword-only
        ``progress(fraction_done, message)``, called once per finished file (as completed).
    glob : str or None, keyword-only
        File-name pattern for the folder search.
    pixel_size_nm, frame : keyword-only
        Pixel-size override [nm/px] and frame for every file (see ``load_image``).
    cards_path, weights_path : path or None, keyword-only
        Card database and U-Net weights (default: the project's).
    settings : BatchSettings or None, keyword-only
        Ready-made settings (then ``params``, ``pixel_size_nm``, ``frame``, ``cards_path`` and
        ``weights_path`` are ignored).
    analyze_fn : callable or None, keyword-only
        ``analyze_fn(path, settings) -> (windows, summary, defocus_nm)`` run on the workers
        instead of :func:`analyze_file` (it must be importable or picklable by value).
    defocus_nm : mapping of path -> float, or None, keyword-only
        Defocus of some files [nm, negative = underfocus], replacing what their metadata or
        name say (``defocus_source`` becomes ``"given"``). It only changes ``files.csv`` and the
        profile, not the analysis: editing it never recomputes a file.
    pixel_sizes_nm : mapping of path -> float or (float, float), or None, keyword-only
        Pixel size of some files [nm/px], replacing ``pixel_size_nm`` for them (e.g. files
        without a calibration). Part of those files' parameter digest.
    file_timeout_s : float or None, keyword-only
        Seconds one file may take (default :data:`DEFAULT_FILE_TIMEOUT_S`; None: no limit). A
        file past it is recorded in ``files.csv`` as an error "timed out after ... s" and the
        batch goes on.

    Returns
    -------
    BatchResult

    Raises
    ------
    HRTEMError
        No input file, an unknown scheduler, an unreachable cluster, missing weights, an
        override for a file that is not among the inputs.
    """
    t0 = time.perf_counter()
    files = discover_files(paths, glob=glob)
    names = safe_names(files)
    given_defocus = _per_file(defocus_nm, files, "a defocus", _check_defocus)
    given_pixel = _per_file(pixel_sizes_nm, files, "a pixel size", _check_pixel_size)
    if settings is None:
        settings = make_settings(
            params,
            pixel_size_nm=pixel_size_nm,
            frame=frame,
            cards_path=cards_path,
            weights_path=weights_path,
        )
    file_settings = [
        settings if px is None else dataclasses.replace(settings, pixel_size_nm=px)
        for px in given_pixel
    ]
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / WINDOWS_DIR).mkdir(exist_ok=True)
    with folder_lock(out):  # one batch at a time writes into a folder
        previous = read_manifest(out)

        n_total = len(files)
        with dask_client(scheduler, workers=workers) as (client, description):
            n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            futures = _submit_files(
                client, files, names, file_settings, previous, out, analyze_fn, file_timeout_s
            )
            rows: dict[str, dict] = {}
            try:
                n_analysed, n_skipped = _collect_files(futures, out, previous, rows, progress)
            finally:
                if futures:  # interrupted: stop what is still queued or running on the cluster
                    with contextlib.suppress(Exception):
                        client.cancel(list(futures))
                # Written even when interrupted: what finished is in files.csv and the manifest.
                table = _files_table(_ordered_rows(files, names, given_defocus, rows))
                _write_csv(table, out / FILES_CSV)

        failed, warnings = _failure_warnings(table)
        profile = _write_profile(out, table, warnings)
        best = None
        if profile is not None:
            from hrtem_core.analysis.series import best_focus_nm

            best = best_focus_nm(profile)
        return BatchResult(
            out_dir=out,
            files=table,
            profile=profile,
            n_files=n_total,
            n_analysed=n_analysed,
            n_skipped=n_skipped,
            n_failed=len(failed),
            elapsed_s=time.perf_counter() - t0,
            scheduler=description,
            n_workers=n_workers,
            warnings=tuple(warnings),
            best_focus_nm=best,
        )


def _submit_files(
    client: Any,
    files: Sequence[Path],
    names: Sequence[str],
    file_settings: Sequence[BatchSettings],
    previous: Mapping[str, dict],
    out: Path,
    analyze_fn: AnalyzeFn | None,
    file_timeout_s: float | None,
) -> dict:
    """One task per file on the cluster: ``{future: (path, name, params digest)}``."""
    futures = {}
    for path, name, fs in zip(files, names, file_settings, strict=True):
        digest = fs.digest
        rec = previous.get(name)
        expected = rec["sha256"] if _is_done(rec, digest, out) else None
        fut = client.submit(
            run_file_task,
            str(path),
            fs,
            expected,
            analyze_fn,
            file_timeout_s,
            key=f"hrtem-batch-{name}-{digest[:12]}-{time.time_ns()}",
            pure=False,
            retries=0,
        )
        futures[fut] = (path, name, digest)
    return futures


def _collect_files(
    futures: dict,
    out: Path,
    previous: Mapping[str, dict],
    rows: dict[str, dict],
    progress: ProgressCallback | None,
) -> tuple[int, int]:
    """Finish each file as its task completes (``rows`` filled in); ``(n_analysed, n_skipped)``.

    ``futures`` loses each finished task, so what is left after an interruption is what to
    cancel.
    """
    from distributed import as_completed

    n_total = len(futures)
    n_analysed = n_skipped = finished = 0
    for fut in as_completed(list(futures)):
        path, name, params_digest = futures.pop(fut)
        try:
            res: FileOutput = fut.result()
        except Exception as exc:  # a killed worker, a lost connection, ...
            res = FileOutput(sha256="", status="error", error=_error_line(exc), retry=True)
        fut.release()
        finished += 1
        rows[name] = _finish_file(out, path, name, res, previous.get(name), params_digest)
        # n_skipped: not run again (done earlier, also an earlier failure that is final);
        # n_failed counts every error row of files.csv.
        if res.status == "skipped":
            n_skipped += 1
        elif res.status == "ok":
            n_analysed += 1
        if progress is not None:
            status = "done earlier" if res.status == "skipped" else res.status
            progress(finished / n_total, f"{finished}/{n_total} {name}: {status}")
    return n_analysed, n_skipped


def _ordered_rows(
    files: Sequence[Path],
    names: Sequence[str],
    given_defocus: Sequence[float | None],
    rows: Mapping[str, dict],
) -> list[dict]:
    """The rows of ``files.csv`` in input order (``pending`` where no task finished), with the
    defocus and its source (``given`` or ``file``)."""
    ordered = []
    for path, name, df in zip(files, names, given_defocus, strict=True):
        row = rows.get(name) or {
            "file": name,
            "path": str(path),
            "status": "pending",
            "reused": False,
        }
        if df is not None:
            row = dict(row, defocus_nm=df, defocus_source="given")
        elif row.get("defocus_nm") is not None:
            row = dict(row, defocus_source="file")
        ordered.append(row)
    return ordered


def _failure_warnings(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The failed rows of ``files.csv`` and one warning line per failed file."""
    warnings: list[str] = []
    failed = table[table["status"] == "error"]
    for _, r in failed.iterrows():
        error, path = str(r["error"]), str(r["path"])
        name = Path(path).name
        if error.startswith(f"{name}:"):  # the readers' messages start with the file name
            error = error[len(name) + 1 :].lstrip()
        warnings.append(f"{path}: {error}")
    return failed, warnings


@contextlib.contextmanager
def folder_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir/.lock`` (:class:`filelock.FileLock`) while a batch
    writes there.

    filelock takes ``flock`` on POSIX and ``msvcrt`` locking on Windows (the hand-written lock it
    replaces locked nothing on Windows); the lock goes with the process, also when it is killed.

    Raises
    ------
    HRTEMError
        Another process holds the lock (a batch is already writing into ``out_dir``).
    """
    import filelock

    lock = filelock.FileLock(Path(out_dir) / ".lock", timeout=0, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise HRTEMError(
            f"another batch is writing into {out_dir}: wait for it to finish or choose "
            "another output folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _per_file(
    mapping: Mapping[str | os.PathLike, Any] | None,
    files: Sequence[Path],
    what: str,
    check: Callable[[Path, Any], Any],
) -> list[Any]:
    """Values of a per-file override, in the order of ``files`` (``None`` where not given)."""
    if not mapping:
        return [None] * len(files)
    index = {p: i for i, p in enumerate(files)}
    values: list[Any] = [None] * len(files)
    for key, value in mapping.items():
        path = Path(key).expanduser().resolve()
        if path not in index:
            raise HRTEMError(f"{what} is given for {key}, which is not among the batch's inputs")
        if value is not None:
            values[index[path]] = check(path, value)
    return values


def _check_defocus(path: Path, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v):
        raise HRTEMError(f"{path.name}: the defocus must be a finite number of nm, got {value!r}")
    return v


def _check_pixel_size(path: Path, value: Any) -> float | tuple[float, float]:
    arr = np.asarray(value, dtype=float).ravel()
    if arr.size not in (1, 2) or not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise CalibrationError(
            f"{path.name}: the pixel size must be one or two positive numbers of nm/px, "
            f"got {value!r}"
        )
    return float(arr[0]) if arr.size == 1 else (float(arr[0]), float(arr[1]))


def _finish_file(
    out: Path, path: Path, name: str, res: FileOutput, earlier: dict | None, params_digest: str
) -> dict:
    """Write the part and the manifest record of one finished file; return its files.csv row."""
    if res.status == "skipped" and earlier is not None:
        row = dict(earlier)
        row.update(path=str(path), reused=True)
        return row
    row: dict[str, Any] = {
        "file": name,
        "path": str(path),
        "status": res.status,
        "error": res.error,
        "retry": res.retry,
        "defocus_nm": res.defocus_nm,
        "sha256": res.sha256,
        "params_digest": params_digest,
        "n_windows": None,
        "elapsed_s": round(res.elapsed_s, 4),
        "worker": res.worker,
        "reused": False,
        "summary": res.summary,
        "part": None,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if res.status == "ok" and res.windows is not None:
        target = _write_part(out, name, res.windows)
        row["n_windows"] = len(res.windows)
        row["part"] = str(target.relative_to(out))
    else:
        _remove_part(out, name)  # a stale part of an older version of this file
    _append_manifest(out, row)
    return row


def _write_profile(out: Path, table: pd.DataFrame, warnings: list[str]) -> pd.DataFrame | None:
    """profile.csv over the succeeded files with a known defocus (``None`` when there are none)."""
    target = out / PROFILE_CSV
    ok = table[table["status"] == "ok"]
    known = ok[pd.to_numeric(ok["defocus_nm"], errors="coerce").notna()]
    if len(known) < len(ok):
        warnings.append(
            f"{len(ok) - len(known)} of {len(ok)} analysed files have no defocus "
            "(metadata or file name) and are left out of the profile"
        )
    if known.empty:
        if target.is_file():
            target.unlink()
        return None
    windows = read_windows(out, files=known["file"].tolist())
    try:
        profile = profile_from_tables(known, windows)
    except Exception as exc:  # the tables are written; a profile problem must not lose them
        warnings.append(f"profile.csv not written: {_error_line(exc)}")
        if target.is_file():
            target.unlink()
        return None
    _write_csv(profile, target)
    return profile


def profile_from_tables(files: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """The series profile over defocus from the batch tables.

    :func:`hrtem_core.analysis.series_profile` on the rows of ``files.csv`` and the windows
    table, with a fraction column for every phase the summaries list (in their order), as
    :func:`hrtem_core.analysis.series_from_results` does for ``series``.

    Parameters
    ----------
    files : pandas.DataFrame
        Rows of ``files.csv`` (``file``, ``defocus_nm``, ``crystalline_area_fraction``,
        ``phases``).
    windows : pandas.DataFrame
        Rows of the windows table (``file`` column plus the window columns).

    Returns
    -------
    pandas.DataFrame
        One row per file, sorted by defocus [nm].
    """
    from hrtem_core.analysis.series import series_profile

    frame = files.copy()
    frame["defocus_nm"] = pd.to_numeric(frame["defocus_nm"], errors="coerce")
    return series_profile(frame, windows, phases=list(phase_order(files)) or None)


def phase_order(files: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """``(card_id, name)`` of every phase the summaries in ``files.csv`` list, first seen first."""
    order: dict[str, str] = {}
    for value in files.get("phases", pd.Series([], dtype=object)):
        entries = json.loads(value) if isinstance(value, str) and value else value
        if isinstance(entries, list):
            for e in entries:
                if isinstance(e, dict) and e.get("card_id") is not None:
                    order.setdefault(str(e["card_id"]), str(e.get("name", "")))
    return tuple(order.items())


__all__ = [
    "BATCH_FORMAT",
    "FILE_COLUMNS",
    "WORKER_MALLOC_ENV",
    "AnalyzeFn",
    "BatchResult",
    "BatchSettings",
    "FileOutput",
    "ProgressCallback",
    "analyze_file",
    "dask_client",
    "default_workers",
    "discover_files",
    "folder_lock",
    "local_cluster",
    "make_settings",
    "part_path",
    "phase_order",
    "profile_from_tables",
    "read_manifest",
    "read_windows",
    "run_batch",
    "run_file_task",
    "safe_names",
    "sha256_file",
    "stage_file",
    "supported_extensions",
    "weights_digest_of",
]
