"""Shared helpers of the Streamlit pages: paths, caches, uploads, error display.

The pages stay thin (widgets, one call into :mod:`hrtem_core`, a figure); everything they share
lives here. Nothing here computes physics: loading is :func:`hrtem_core.io.load_image`, analysis
is :func:`hrtem_core.analysis.analyze_image` / ``analyze_series``.

Caching
-------
* The U-Net loads once per process (:func:`get_model`, ``st.cache_resource``).
* The card database is re-read only when its file changes (key: path, mtime, size); the
  shipped workbook comes parsed from ``data/example_cache/`` (:mod:`ui.example_cache`).
* The Analyze page's first view of the bundled example comes from ``data/example_cache/`` when
  every input matches the stored key (:func:`analyze_cached` with ``precomputed=True``).
* Decoded images are kept by upload digest (sha256 of the bytes) + pixel-size override + frame
  in a bounded LRU shared by the sessions of the process (:data:`MAX_IMAGES` entries). It hands
  out the same :class:`~hrtem_core.io.Micrograph` object on every rerun, where ``st.cache_data``
  would unpickle a fresh copy of the whole image each time.
* Analysis results are ``st.cache_data`` entries (:func:`_analysis`, ``max_entries`` =
  :data:`MAX_RESULTS`, shared by all sessions of the process) keyed by image key (digest,
  calibration, frame) + all parameters + card-database digest; the micrograph, parameters, cards
  and model travel as unhashed (underscore) arguments. The progress bar is created *inside* the
  cached function and emptied before it returns: computing shows the bar, a cache hit replays an
  empty placeholder (``st.cache_data``'s element replay refuses elements created outside the
  cached function, so the bar cannot come from the page).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from hrtem_core import _files
from hrtem_core.errors import HRTEMError, ReadError
from hrtem_core.io import SUPPORTED_EXTENSIONS

REPO = Path(__file__).resolve().parents[1]
APP_SCRIPT = REPO / "app.py"
EXAMPLES_DIR = REPO / "data" / "examples"
#: The bundled single image the Analyze page opens on.
EXAMPLE_IMAGE = EXAMPLES_DIR / "maghemite_particle.tif"
#: The bundled focal series the Defocus-series page offers.
FOCAL_SERIES_DIR = EXAMPLES_DIR / "focal_series"
MODEL_SETTINGS = REPO / "models" / "unet_spots.json"
#: The U-Net weights (:data:`hrtem_core.unet.load.DEFAULT_WEIGHTS`, not imported: that would
#: import torch).
MODEL_WEIGHTS = REPO / "models" / "unet_spots.pt"
#: The detectors' held-out evaluation, written by ``benchmarks/eval_detectors.py``: the one
#: source of the accuracy figures on the About page and in the README.
DETECTOR_EVAL = REPO / "benchmarks" / "results" / "eval_detectors.json"

#: Environment variable that overrides the card database path (tests point it at a copy).
CARDS_ENV = "HRTEM_CARDS_PATH"

#: File types the uploaders accept (extension without the dot): every suffix a reader of
#: :mod:`hrtem_core.io` is registered for, plus ``emi`` (the metadata companion of a ``.ser``).
IMAGE_TYPES: tuple[str, ...] = (*(e.lstrip(".") for e in SUPPORTED_EXTENSIONS), "emi")
#: Largest upload [MB]; keep equal to server.maxUploadSize in .streamlit/config.toml.
MAX_UPLOAD_MB = 500

#: Bounded caches (entries).
MAX_IMAGES = 8
MAX_RESULTS = 32


# --------------------------------------------------------------------------------------------
# Navigation
# --------------------------------------------------------------------------------------------
_RUN = threading.local()


@contextmanager
def app_run() -> Iterator[None]:
    """Mark the current script run as going through ``app.py``'s ``st.navigation`` (app.py only)."""
    _RUN.inside_app = True
    try:
        yield
    finally:
        _RUN.inside_app = False


def page_guard() -> None:
    """First line of every page script: make sure the run goes through ``app.py``.

    Streamlit's older automatic multipage mode (a ``pages/`` folder beside the main script) is in
    force until ``st.navigation`` has run once in the process: a visitor whose first request is a
    page URL (``/series``) would get that page's script alone, without the page configuration
    and the navigation menu. Such a run switches the old mode off (as ``st.navigation`` does on
    its first call), runs ``app.py`` in its place (the same URL now resolves through
    ``st.navigation``, in the same run, so no click or edit is lost) and stops.
    """
    if getattr(_RUN, "inside_app", False):
        return
    import runpy

    try:  # Streamlit internals (1.67); st.navigation in app.py switches the mode off as well
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
    except ImportError:
        pass
    runpy.run_path(str(APP_SCRIPT), run_name="__main__")
    st.stop()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
#: Reader texts (h5py, Pillow, tifffile, rsciio) and what they mean to a microscopist.
_READER_TEXTS: tuple[tuple[str, str], ...] = (
    (
        r"file signature not found|not an hdf5|unable to (synchronously )?open file",
        "it is not an HDF5 file (EMD files are HDF5)",
    ),
    (
        r"bad object header|truncated file|addr overflow|eof",
        "the HDF5 structure is damaged or the file ends early",
    ),
    (
        r"cannot identify image file|could not find a backend|unknown image format",
        "no known image format (PNG/JPEG) was recognised in it",
    ),
    (
        r"image file is truncated|broken data stream|failed to read \d+ bytes",
        "the file ends early (truncated)",
    ),
    (r"decompressionbomb|exceeds limit of", "the image is larger than the reader accepts"),
    (r"not a tiff file", "it has no TIFF header"),
    (r"not a valid dm3 or dm4", "it has no DigitalMicrograph header"),
    (r"endian", "its header is not that of a SER file"),
)


def friendly_message(text: str) -> str:
    """Replace a reader's raw exception text (``OSError: Unable to ...``) by what it means.

    The core's messages end, for unreadable files, with the reader's own exception after
    "(corrupt, truncated or not this format): ". That tail is translated (HDF5, Pillow, TIFF, DM,
    SER texts) or dropped; the rest of the message is kept.
    """
    text = " ".join(str(text).split())
    marker = "(corrupt, truncated or not this format): "
    if marker not in text:
        return text
    head, tail = text.split(marker, 1)
    low = tail.lower()
    for pattern, meaning in _READER_TEXTS:
        if re.search(pattern, low):
            return f"{head}(corrupt, truncated or not this format): {meaning}."
    return f"{head}(corrupt, truncated or not this format)."


def show_error(exc: BaseException) -> None:
    """One ``st.error`` line for an exception: the core's message, or type + message."""
    if isinstance(exc, HRTEMError):
        st.error(friendly_message(exc.message))
    else:
        text = " ".join(str(exc).split()) or "no message"
        st.error(f"Unexpected error ({type(exc).__name__}): {text}")


@contextmanager
def guard() -> Iterator[None]:
    """Show any exception raised in the block as one ``st.error`` line; the page goes on.

    ``st.stop``/``st.rerun`` and friends (control-flow exceptions of Streamlit) pass through.
    """
    try:
        yield
    except HRTEMError as exc:
        show_error(exc)
    except Exception as exc:
        if _is_streamlit_control_flow(exc):
            raise
        show_error(exc)


def _is_streamlit_control_flow(exc: BaseException) -> bool:
    """StopException / RerunException must reach Streamlit's script runner untouched."""
    return type(exc).__module__.startswith("streamlit.runtime.scriptrunner")


# --------------------------------------------------------------------------------------------
# Card database and model
# --------------------------------------------------------------------------------------------
def cards_path() -> Path:
    """Path of the card database: ``$HRTEM_CARDS_PATH`` or ``data/pdf_cards.xlsx``."""
    env = os.environ.get(CARDS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    from hrtem_core.cards import DEFAULT_CARDS_PATH

    return Path(DEFAULT_CARDS_PATH)


@st.cache_resource(max_entries=4, show_spinner=False)
def _load_cards_cached(path: str, mtime_ns: int, size: int) -> Any:
    from ui import example_cache

    stored = example_cache.cached_cards(Path(path))  # the shipped workbook, parsed beforehand
    if stored is not None:
        return stored
    from hrtem_core.cards import load_cards

    return load_cards(path)


def load_card_db(path: Path | None = None) -> Any:
    """The card database at ``path`` (default :func:`cards_path`), re-read when the file changes.

    Raises
    ------
    CardDatabaseError
        The file is missing or invalid (message names sheet, row and column).
    """
    path = cards_path() if path is None else Path(path)
    try:
        stat = path.stat()
    except OSError:
        from hrtem_core.errors import CardDatabaseError

        raise CardDatabaseError(
            f"card database {path} not found (set {CARDS_ENV} or restore data/pdf_cards.xlsx)"
        ) from None
    return _load_cards_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def clear_cards_cache() -> None:
    """Forget cached card databases (after a save)."""
    _load_cards_cached.clear()


@st.cache_resource(show_spinner="Loading the U-Net ...")
def _load_model_cached() -> Any:
    from hrtem_core.unet.load import load_model

    return load_model()


def get_model() -> Any:
    """The U-Net spot detector, loaded once per process (CPU unless a GPU is present)."""
    return _load_model_cached()


def pattern_inputs(result: Any) -> dict[str, Any]:
    """``cards`` and ``model`` for the particles' diffractograms of ``result``
    (:func:`hrtem_core.particles.image_particles`): the card database and, when the analysis
    used it, the U-Net. A card database that cannot be read gives no diffractograms (the
    particles are still found; the pages report the database's error where it is edited)."""
    from hrtem_core.errors import HRTEMError

    try:
        cards = load_card_db()
    except HRTEMError:
        return {"cards": None, "model": None}
    model = get_model() if getattr(result.params, "detector", "") == "unet" else None
    return {"cards": cards, "model": model}


# --------------------------------------------------------------------------------------------
# Uploads -> Micrograph
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """One image file received from the browser (or read from the bundled examples).

    Attributes
    ----------
    name : str
        File name as the user gave it (only used for the extension, messages and defocus parsing).
    data : bytes
        File contents.
    digest : str
        sha256 of ``data`` (plus the companion's), the cache key.
    companion : tuple of (str, bytes), optional
        The ``.emi`` of a ``.ser`` file (its microscope metadata), when it was uploaded too.
    """

    name: str
    data: bytes
    digest: str
    companion: tuple[str, bytes] | None = None


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(hashlib.sha256(chunk).digest())
    return h.hexdigest()


def extension(name: str) -> str:
    """Lower-case extension of a file name without the dot ('' when none)."""
    return Path(name).suffix.lower().lstrip(".")


def make_upload(name: str, data: bytes, companion: tuple[str, bytes] | None = None) -> Upload:
    """Check one received file (type, size, not empty) and wrap it in an :class:`Upload`.

    Raises
    ------
    ReadError
        Unknown extension, empty file, or larger than :data:`MAX_UPLOAD_MB`.
    """
    name = Path(str(name)).name or "upload"
    ext = extension(name)
    if ext not in IMAGE_TYPES:
        raise ReadError(
            f"{name}: unsupported file type '.{ext or '?'}' "
            f"(expected one of {', '.join('.' + t for t in IMAGE_TYPES)})"
        )
    if len(data) == 0:
        raise ReadError(f"{name}: the file is empty (0 bytes)")
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise ReadError(f"{name}: {len(data) / 2**20:.0f} MB is over the {MAX_UPLOAD_MB} MB limit")
    chunks = (data,) if companion is None else (data, companion[1])
    return Upload(name=name, data=bytes(data), digest=_digest(*chunks), companion=companion)


_SER_INDEX = re.compile(r"_\d+$")


def group_uploads(files: Sequence[tuple[str, bytes]]) -> tuple[list[Upload], list[str]]:
    """Turn received ``(name, bytes)`` files into images, pairing each ``.ser`` with its ``.emi``.

    A TIA series ``name_1.ser`` keeps its microscope metadata (voltage, defocus, ...) in
    ``name.emi``: when both are uploaded together they form one image. An ``.emi`` without its
    ``.ser`` is not an image.

    Returns
    -------
    uploads : list of Upload
        One per image, in the order received.
    problems : list of str
        One line per file that was refused (type, size, empty, lone ``.emi``).
    """
    emis = {Path(n).stem.lower(): (n, d) for n, d in files if extension(n) == "emi"}
    used_emi: set[str] = set()
    uploads: list[Upload] = []
    problems: list[str] = []
    for name, data in files:
        ext = extension(name)
        if ext == "emi":
            continue
        companion = None
        if ext == "ser":
            stem = _SER_INDEX.sub("", Path(name).stem).lower()
            if stem in emis:
                companion = emis[stem]
                used_emi.add(stem)
        try:
            uploads.append(make_upload(name, data, companion))
        except HRTEMError as exc:
            problems.append(exc.message)
    for stem, (name, _) in emis.items():
        if stem not in used_emi:
            problems.append(
                f"{name}: an .emi file only holds the metadata of its .ser series; "
                "upload it together with the matching .ser file"
            )
    return uploads, problems


def upload_from_path(path: Path) -> Upload:
    """A bundled example file as an :class:`Upload` (server-side files only)."""
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"bundled example {path.name} is missing from {path.parent}")
    return make_upload(path.name, path.read_bytes())


def example_description(json_path: Path) -> str | None:
    """First sentence of the ``description`` in a bundled example's JSON sidecar, if any."""
    import json

    try:
        text = str(json.loads(Path(json_path).read_text(encoding="utf-8"))["description"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    first = text.split(". ")[0].strip()
    return first if first.endswith(".") else first + "."


def _safe_name(name: str, fallback: str) -> str:
    return _files.safe_name(name, fallback=fallback)


#: Environment variable: ``1`` reads every upload in a child process with a timeout and an
#: address-space limit (:func:`hrtem_core.io.load_image_isolated`), for a public deployment.
ISOLATE_ENV = "HRTEM_ISOLATE_READS"


def _reader() -> Any:
    """:func:`hrtem_core.io.load_image`, or its isolated variant when :data:`ISOLATE_ENV` is 1."""
    from hrtem_core import io as hio

    if os.environ.get(ISOLATE_ENV, "").strip() == "1":
        return hio.load_image_isolated
    return hio.load_image


def _load_upload(upload: Upload, pixel_size_nm: float | None, frame: int | str | None) -> Any:
    load_image = _reader()
    if upload.companion is None:
        return load_image(upload.data, name=upload.name, pixel_size_nm=pixel_size_nm, frame=frame)
    # A .ser needs its .emi beside it: both go into a private temporary folder (our own names,
    # never a path from the user) that is deleted right after reading.
    with tempfile.TemporaryDirectory(prefix="hrtem-upload-") as tmp:
        ser = Path(tmp) / _safe_name(upload.name, "image_1.ser")
        emi = Path(tmp) / _safe_name(upload.companion[0], "image.emi")
        ser.write_bytes(upload.data)
        emi.write_bytes(upload.companion[1])
        return load_image(ser, name=upload.name, pixel_size_nm=pixel_size_nm, frame=frame)


class _LRU:
    """A small thread-safe LRU mapping, shared by all sessions of the process (decoded images)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = int(max_entries)
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


@st.cache_resource
def _image_store() -> _LRU:
    return _LRU(MAX_IMAGES)


def micrograph_from_upload(
    upload: Upload,
    *,
    pixel_size_nm: float | None = None,
    frame: int | str | None = None,
) -> Any:
    """Decode an upload into a :class:`hrtem_core.io.Micrograph` (cached by digest).

    Parameters
    ----------
    upload : Upload
        From :func:`make_upload` / :func:`group_uploads` / :func:`upload_from_path`.
    pixel_size_nm : float, optional, keyword-only
        User override of the calibration [nm/px]; None keeps the file's metadata.
    frame : int or "sum" or None, keyword-only
        Frame of a stack (None: the reader's default).

    Raises
    ------
    ReadError, CalibrationError
        From :func:`hrtem_core.io.load_image`, with a one-line message.
    """
    key = (upload.digest, upload.name, pixel_size_nm, frame)
    store = _image_store()
    cached = store.get(key)
    if cached is not None:
        return cached
    micrograph = _load_upload(upload, pixel_size_nm, frame)
    store.put(key, micrograph)
    return micrograph


def undistorted(upload: Upload, micrograph: Any, stretch: tuple[float, float, float]) -> Any:
    """``micrograph`` with the scan distortion ``stretch`` removed
    (:func:`hrtem_core.distortion.undistort`), kept in the image store: a rerun of the page does
    not resample again.

    Raises
    ------
    CalibrationError
        A stretch that is not a scan distortion.
    """
    from hrtem_core.distortion import undistort

    key = ("undistorted", image_key(upload, micrograph), tuple(float(v) for v in stretch))
    store = _image_store()
    cached = store.get(key)
    if cached is None:
        cached = undistort(micrograph, stretch)
        store.put(key, cached)
    return cached


def image_key(upload: Upload, micrograph: Any) -> tuple:
    """Cache key of a decoded image: digest + calibration + frame actually used."""
    return (
        upload.digest,
        upload.name,
        tuple(float(v) for v in micrograph.pixel_size_nm),
        micrograph.data.shape,
        str((micrograph.metadata or {}).get("frame")),
        str(((micrograph.metadata or {}).get("distortion") or {}).get("stretch_sxx_sxy_syy")),
    )


# --------------------------------------------------------------------------------------------
# Analysis with progress
# --------------------------------------------------------------------------------------------
def progress_text(fraction: float, *, total: int | None, elapsed_s: float, label: str = "") -> str:
    """``name: 412 / 961 windows · 12 s elapsed · about 16 s left`` (no ETA before 2 %)."""
    f = min(max(float(fraction), 0.0), 1.0)
    parts = []
    if total:
        parts.append(f"{round(f * total)} / {int(total)} windows")
    else:
        parts.append(f"{100 * f:.0f} %")
    parts.append(f"{elapsed_s:.0f} s elapsed")
    if 0.02 <= f < 1.0 and elapsed_s > 0:
        left = elapsed_s * (1.0 - f) / f
        parts.append(
            f"about {left:.0f} s left" if left < 120 else f"about {left / 60:.1f} min left"
        )
    text = " · ".join(parts)
    return f"{label}: {text}" if label else text


def progress_reporter(
    bar: Any,
    *,
    total: int | None = None,
    label: str = "",
    cancelled: Callable[[], bool] | None = None,
    clock: Callable[[], float] | None = None,
) -> Callable:
    """A :data:`hrtem_core.analysis.ProgressCallback` that drives a ``st.progress`` element.

    The bar shows windows done out of ``total``, the time elapsed and an estimate of the time
    left (linear in the fraction done). When ``cancelled()`` is true the callback raises
    :class:`ui.run_state.AnalysisCancelled`, which stops the analysis.
    """
    import time

    from ui.run_state import AnalysisCancelled

    now = clock or time.monotonic
    t0 = now()

    def report(fraction: float, message: str = "") -> None:
        if cancelled is not None and cancelled():
            raise AnalysisCancelled("cancelled")
        text = progress_text(fraction, total=total, elapsed_s=now() - t0, label=label)
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=text)

    return report


def params_key(params: Any) -> tuple:
    """Hashable key of an :class:`AnalysisParams` (a frozen dataclass)."""
    from dataclasses import astuple

    return ("params", *astuple(params))


#: Progress updates wanted over one image: the analysis reports once per block of window rows.
PROGRESS_STEPS = 25


def fine_blocks(params: Any, shape: tuple[int, int]) -> Any:
    """``params`` with blocks of about 1/:data:`PROGRESS_STEPS` of the windows (>= one row).

    The analysis reports progress (and can be cancelled) once per block; the default block of
    256 windows gives only four updates on a 4096 x 4096 image. Results do not depend on it.
    """
    from dataclasses import replace

    from hrtem_core.windows import window_grid

    try:
        grid = window_grid(
            tuple(shape), window_px=int(params.window_px), stride_px=params.stride_px
        )
    except Exception:
        return params
    if grid.n_windows <= params.batch_size:
        return params  # one block: no intermediate updates needed on a small image
    per_block = max(grid.n_cols, -(-grid.n_windows // PROGRESS_STEPS))
    if per_block >= params.batch_size:
        return params
    return replace(params, batch_size=int(per_block))


@st.cache_data(max_entries=MAX_RESULTS, show_spinner=False)
def _analysis(
    full_key: tuple,
    _micrograph: Any,
    _params: Any,
    _cards: Any,
    _model: Any,
    _label: str,
    _cancelled: Callable[[], bool] | None = None,
) -> Any:
    """:func:`hrtem_core.analysis.analyze_image` under ``st.cache_data``, hashed on ``full_key`` only.

    The progress bar lives in a placeholder created here (so that ``st.cache_data`` can replay
    it) and is emptied before returning, also on an error: a cache hit replays an empty
    placeholder, so nothing shows. The returned :class:`~hrtem_core.analysis.AnalysisResult`
    is pickled into the cache (about 0.2 MB for the 49 windows of the bundled example). A
    cancelled run raises :class:`ui.run_state.AnalysisCancelled` and caches nothing.
    """
    from hrtem_core.analysis import analyze_image

    total = None
    shape = getattr(getattr(_micrograph, "data", None), "shape", None)
    if shape is not None:
        from hrtem_core.windows import window_grid

        try:
            total = window_grid(
                tuple(shape), window_px=int(_params.window_px), stride_px=_params.stride_px
            ).n_windows
        except Exception:
            total = None
    placeholder = st.empty()
    bar = placeholder.progress(0.0, text=_label)
    try:
        return analyze_image(
            _micrograph,
            params=_params,
            cards=_cards,
            model=_model,
            progress=progress_reporter(
                bar, total=total, label=_label.split(":")[0], cancelled=_cancelled
            ),
        )
    finally:
        placeholder.empty()


def result_key(key: tuple, params: Any, cards: Any) -> tuple:
    """Cache key of an analysis: image key + all parameters + card-database digest."""
    return ("image", tuple(key), params_key(params), getattr(cards, "digest", None))


def analyze_cached(
    micrograph: Any,
    key: tuple,
    params: Any,
    *,
    cards: Any,
    label: str = "Analysing ...",
    cancelled: Callable[[], bool] | None = None,
    precomputed: bool = False,
) -> Any:
    """:func:`hrtem_core.analysis.analyze_image`, cached by image key + params + cards digest.

    Shows its own progress bar (text ``label``, then windows done / total, time elapsed and
    left) at the current place of the page while it computes; a cached result returns at once
    and shows nothing. See the module docstring.

    Parameters
    ----------
    micrograph : hrtem_core.io.Micrograph
        The decoded image (:func:`micrograph_from_upload`).
    key : tuple
        :func:`image_key` of that image (digest, calibration, frame).
    params : hrtem_core.analysis.AnalysisParams
        All of them enter the cache key (with blocks sized for progress, :func:`fine_blocks`).
    cards : hrtem_core.cards.CardDatabase, keyword-only
        Its ``digest`` enters the cache key.
    label : str, keyword-only
        Text of the progress bar before the first window block is done.
    cancelled : callable, optional, keyword-only
        Polled at every progress update; when true the analysis stops with
        :class:`ui.run_state.AnalysisCancelled`.
    precomputed : bool, keyword-only
        Return the stored result of the bundled example (:mod:`ui.example_cache`) when the key
        of exactly these inputs matches its key (nothing is loaded or computed then).

    Raises
    ------
    HRTEMError
        From the analysis (not cached: the next run tries again).
    """
    shape = getattr(getattr(micrograph, "data", None), "shape", None)
    if shape is not None and len(shape) == 2:
        params = fine_blocks(params, shape)
    if precomputed:
        from ui import example_cache

        hit = example_cache.precomputed_result(
            key,
            params,
            getattr(cards, "digest", None),
            cards_path=getattr(cards, "path", None),
        )
        if hit is not None:
            return hit.result
    model = get_model() if params.detector == "unet" else None
    return _analysis(
        result_key(key, params, cards), micrograph, params, cards, model, label, cancelled
    )


def clear_result_cache() -> None:
    """Forget all cached analysis results (every session of the process)."""
    _analysis.clear()


def phase_label(phase: Any) -> str:
    """``card_id — name (formula)`` for selection widgets."""
    return f"{phase.card_id} — {phase.name} ({phase.formula})"


# --------------------------------------------------------------------------------------------
# The model's card (About page)
# --------------------------------------------------------------------------------------------
def model_summary(info: dict) -> str:
    """How the U-Net was trained, in a few sentences, from its settings JSON."""
    arch = info.get("architecture") or {}
    training = info.get("training") or {}
    timing = info.get("timing") or {}
    generator = info.get("generator") or {}
    parts = [
        "The network is trained on synthetic windows with exact spot labels (lattice fringes of "
        "random spacing, orientation and strength on an amorphous background, with shot noise; "
        f"`{generator.get('module', 'hrtem_core.synthetic')}`), so no labelled microscope data "
        f"are needed. It sees the log-scaled {arch.get('input_px', 64)} x "
        f"{arch.get('input_px', 64)} px band of each window's spectrum and marks the spot pixels."
    ]
    facts = []
    if arch.get("parameters"):
        facts.append(f"{int(arch['parameters']):,} parameters")
    if training.get("n_train"):
        facts.append(
            f"{int(training['n_train']):,} training and {int(training.get('n_val', 0)):,} "
            "validation windows"
        )
    if training.get("epochs"):
        facts.append(f"{training['epochs']} epochs")
    if timing.get("training_s"):
        facts.append(f"{float(timing['training_s']) / 60:.0f} min of training on the CPU")
    if "seed" in training:
        facts.append(f"seed {training['seed']}")
    if facts:
        parts.append("This model: " + ", ".join(facts) + ".")
    if info.get("command"):
        parts.append(f"Reproduce it with `{info['command']}`.")
    return " ".join(parts)


_DOSES = {"low": "low (< 10 e/px)", "moderate": "moderate (10-100)", "high": "high (≥ 100)"}
_DETECTOR_NAMES = {"unet": "U-Net", "classical": "classical"}


def detector_eval_table(data: Any) -> Any:
    """Precision / recall / F1 and spacing error by dose and detector from the eval JSON.

    ``data`` is the content of :data:`DETECTOR_EVAL` (``by_dose`` -> dose -> detector ->
    scores). Returns None when absent. Values rounded as the README shows them.
    """
    import pandas as pd

    by_dose = data.get("by_dose") if isinstance(data, dict) else None
    if not isinstance(by_dose, dict):
        return None
    rows = []
    for dose, label in _DOSES.items():
        for det, name in _DETECTOR_NAMES.items():
            sc = (by_dose.get(dose) or {}).get(det)
            if not isinstance(sc, dict):
                continue
            rows.append(
                {
                    "dose (e/px)": label,
                    "detector": name,
                    "precision": round(float(sc["precision"]), 3),
                    "recall": round(float(sc["recall"]), 3),
                    "F1": round(float(sc["f1"]), 3),
                    "Δd/d median (%)": round(100 * float(sc["spacing_rel_err_median"]), 2),
                    "Δd/d p95 (%)": round(100 * float(sc["spacing_rel_err_p95"]), 2),
                    "angle error p95 (°)": round(float(sc["angle_err_deg_p95"]), 2),
                }
            )
    return pd.DataFrame(rows) if rows else None


def detector_false_alarms(data: Any) -> dict[str, float]:
    """Fraction of windows without a crystal that still got a pair, per detector (eval JSON)."""
    fa = data.get("empty_false_alarm") if isinstance(data, dict) else None
    if not isinstance(fa, dict):
        return {}
    return {_DETECTOR_NAMES.get(k, k): float(v) for k, v in fa.items()}


def validation_table(validation: Any) -> Any:
    """Precision / recall / F1 of the spot detector overall and by dose (None when absent)."""
    import pandas as pd

    if not isinstance(validation, dict):
        return None
    names = {
        "all": "all windows",
        "dose_low": "low dose",
        "dose_moderate": "moderate dose",
        "dose_high": "high dose",
    }
    rows = []
    for key, label in names.items():
        score = validation.get(key)
        if isinstance(score, dict) and {"precision", "recall", "f1"} <= set(score):
            rows.append(
                {
                    "data": label,
                    "precision": round(float(score["precision"]), 3),
                    "recall": round(float(score["recall"]), 3),
                    "F1": round(float(score["f1"]), 3),
                    "spots": int(score.get("tp", 0)) + int(score.get("fn", 0)),
                }
            )
    return pd.DataFrame(rows) if rows else None
