"""The precomputed first view of the bundled example (issue 18 point 6): an honest cache.

``scripts/build_example_cache.py`` analyses the bundled example with the Analyze page's default
parameters and stores, in ``data/example_cache/``, what the first view needs:

* ``result.pkl.zlib``: the :class:`~hrtem_core.analysis.AnalysisResult`, the particles and Thon-ring
  defocus of the image (:func:`hrtem_core.particles.image_particles`) and the U-Net mask of every
  window (bit-packed), for the window panel's *Detector* tab;
* ``cards.pkl.zlib``: the card database as :func:`hrtem_core.cards.load_cards` builds it from the
  shipped ``data/pdf_cards.xlsx`` (the workbook parse costs 0.5 s);
* ``key.json``: for each of the two, every input that determines it and the sha256 of them all.

The app uses an entry only when the key of its own inputs, computed afresh, equals the stored
one exactly: the image bytes (and name, calibration, shape, frame), every analysis parameter,
the U-Net weights and settings files, the card workbook bytes, the source of every
``hrtem_core`` module that takes part in an analysis (:data:`CODE_EXCLUDED` lists the ones that
do not: figures, export, command line, training), the versions of Python, numpy, pandas, scipy
and torch, and the U-Net's arithmetic on this machine (bfloat16 or float32,
:func:`unet_arithmetic`). Anything else computes as before, without a word. The pickles are
written by our own script into the repository, so they are trusted as the code is; a key
mismatch (e.g. other library versions) never unpickles them.

``tests/test_app_dashboard.py`` recomputes the example and asserts that the cache equals the
fresh result; when the key is stale it fails with "run scripts/build_example_cache.py".

This module does not import streamlit, torch or the analysis: computing a key reads and hashes
files only (a few milliseconds).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import sys
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO / "data" / "example_cache"
KEY_FILE = CACHE_DIR / "key.json"
RESULT_FILE = CACHE_DIR / "result.pkl.zlib"
CARDS_FILE = CACHE_DIR / "cards.pkl.zlib"
#: The bundled example and the default card workbook (also in :mod:`ui.common`).
EXAMPLE_IMAGE = REPO / "data" / "examples" / "maghemite_particle.tif"
CARDS_XLSX = REPO / "data" / "pdf_cards.xlsx"
#: U-Net weights and settings (:data:`hrtem_core.unet.load.DEFAULT_WEIGHTS`, checked by a test;
#: not imported from there, which would import torch).
UNET_WEIGHTS = REPO / "models" / "unet_spots.pt"
UNET_SETTINGS = REPO / "models" / "unet_spots.json"
#: Environment variable: ``0`` switches the precomputed view off (always compute).
DISABLE_ENV = "HRTEM_EXAMPLE_CACHE"
#: Bump when the stored layout changes.
FORMAT = 1
#: ``hrtem_core`` sources that take no part in computing a result (presentation, command line,
#: training, batch driver); every other ``.py`` under ``hrtem_core/`` enters the key.
CODE_EXCLUDED = (
    "figures.py",
    "export.py",
    "cli.py",
    "__main__.py",
    "commands/",
    "batch.py",
    "train.py",
)
#: Libraries whose versions enter the key (numerics and pickle compatibility).
LIBRARIES = ("numpy", "pandas", "scipy", "torch")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str | None:
    try:
        return _sha256(Path(path).read_bytes())
    except OSError:
        return None


def _excluded(rel: str) -> bool:
    return any(rel.startswith(ex) if ex.endswith("/") else rel == ex for ex in CODE_EXCLUDED)


def code_fingerprint(root: Path | None = None) -> str:
    """sha256 over the path and bytes of every ``hrtem_core`` source that shapes a result."""
    root = REPO / "hrtem_core" if root is None else Path(root)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if not _excluded(rel):
            h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Python and :data:`LIBRARIES` versions (installed metadata; nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _cpu_flags() -> set[str] | None:
    """The CPU feature flags of ``/proc/cpuinfo`` (Linux), None where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def unet_arithmetic() -> str:
    """Where and in which arithmetic :func:`hrtem_core.unet.load.load_model` would run the U-Net.

    ``"cpu-bfloat16"`` on a CPU with AVX512-BF16 or AMX tiles, ``"cpu-float32"`` on another
    Linux CPU (``precision="auto"``, :func:`~hrtem_core.unet.load.cpu_has_native_bfloat16`),
    ``"unknown"`` with an NVIDIA device or without ``/proc/cpuinfo`` (the cache never matches
    there). Read from the CPU flags, without importing torch; the build script checks that it
    agrees with the model it loaded.
    """
    if any(Path("/dev").glob("nvidia[0-9]*")):
        return "unknown"
    flags = _cpu_flags()
    if flags is None:
        return "unknown"
    return "cpu-bfloat16" if flags & {"avx512_bf16", "amx_tile"} else "cpu-float32"


def cards_inputs(data: bytes, name: str) -> dict[str, Any]:
    """Everything the card database loaded from ``data`` (file ``name``) depends on."""
    return {
        "format": FORMAT,
        "cards_sha256": _sha256(data),
        "cards_name": name,
        "code": code_fingerprint(),
        "versions": library_versions(),
    }


def result_inputs(image_key: tuple, params: Any, cards_digest: str | None) -> dict[str, Any]:
    """Everything an analysis of the Analyze page depends on.

    Parameters
    ----------
    image_key : tuple
        :func:`ui.common.image_key`: (sha256 of the file, name, pixel size [nm], shape, frame,
        scan-distortion stretch).
    params : hrtem_core.analysis.AnalysisParams
        Exactly as passed to :func:`~hrtem_core.analysis.analyze_image` (its ``repr``).
    cards_digest : str or None
        sha256 of the card workbook (``CardDatabase.digest``).
    """
    digest, name, pixel_size_nm, shape, frame, distortion = image_key
    return {
        "format": FORMAT,
        "image_sha256": str(digest),
        "image_name": str(name),
        "pixel_size_nm": [float(v) for v in pixel_size_nm],
        "shape": [int(v) for v in shape],
        "frame": str(frame),
        "distortion": str(distortion),
        "params": repr(params),
        "unet_weights_sha256": _file_sha(UNET_WEIGHTS),
        "unet_settings_sha256": _file_sha(UNET_SETTINGS),
        "unet_arithmetic": unet_arithmetic(),
        "cards_sha256": cards_digest,
        "code": code_fingerprint(),
        "versions": library_versions(),
    }


def key_of(inputs: dict[str, Any]) -> str:
    """sha256 of the inputs' canonical JSON."""
    return _sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode())


def stored_keys(path: Path | None = None) -> dict[str, Any]:
    """The content of ``key.json`` ({} when absent or unreadable)."""
    try:
        data = json.loads(Path(KEY_FILE if path is None else path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stored_key(entry: str) -> str | None:
    value = stored_keys().get(entry, {})
    return value.get("key") if isinstance(value, dict) else None


@dataclass(frozen=True)
class Precomputed:
    """The stored first view of the bundled example.

    Attributes
    ----------
    result : AnalysisResult
    particles : ImageParticles
        :func:`hrtem_core.particles.image_particles` of the result and the image.
    masks : ndarray, shape (n_windows, S, S) bool
        The U-Net mask of every window's band (:func:`hrtem_core.unet.load.predict_masks`).
    key : str
    """

    result: Any
    particles: Any
    masks: np.ndarray
    key: str


_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}


def _unpickle(path: Path, key: str) -> Any:
    """The pickle at ``path`` (loaded once per process and key)."""
    with _LOCK:
        hit = _LOADED.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
    obj = pickle.loads(zlib.decompress(path.read_bytes()))
    with _LOCK:
        _LOADED[str(path)] = (key, obj)
    return obj


def enabled() -> bool:
    """False when ``$HRTEM_EXAMPLE_CACHE`` is ``0`` (the build script and benchmarks)."""
    import os

    return os.environ.get(DISABLE_ENV, "").strip() != "0"


def precomputed_result(
    image_key: tuple, params: Any, cards_digest: str | None, *, cards_path: Any = None
) -> Any:
    """The stored :class:`Precomputed` when its key equals that of these inputs, else None.

    ``cards_path``: the card workbook in use (same bytes, as the key says); it replaces the
    path of the build machine in ``result.summary["cards_path"]``.
    """
    if not enabled():
        return None
    stored = _stored_key("result")
    if not stored or not RESULT_FILE.is_file():
        return None
    if key_of(result_inputs(image_key, params, cards_digest)) != stored:
        return None
    path = None if cards_path is None else str(cards_path)
    with _LOCK:  # one object per process (and card path): is_precomputed tests identity
        hit = _LOADED.get("object")
        if hit is not None and hit.key == stored and hit.result.summary["cards_path"] == path:
            return hit
    try:
        payload = _unpickle(RESULT_FILE, stored)
        shape = tuple(payload["masks_shape"])
        masks = np.unpackbits(payload["masks_packed"], count=int(np.prod(shape))).reshape(shape)
        result = payload["result"]
        result = replace(result, summary={**result.summary, "cards_path": path})
        obj = Precomputed(result, payload["particles"], masks.astype(bool), stored)
    except Exception:  # unreadable or foreign pickle: compute as if there were none
        return None
    with _LOCK:
        _LOADED["object"] = obj
    return obj


def precomputed_for(result: Any) -> Precomputed | None:
    """The :class:`Precomputed` whose ``result`` is this very object, else None."""
    with _LOCK:
        hit = _LOADED.get("object")
    return hit if hit is not None and hit.result is result else None


def cached_cards(path: Path) -> Any:
    """The card database of the workbook at ``path`` from ``cards.pkl.zlib`` when its key matches.

    The same object as :func:`hrtem_core.cards.load_cards` returns (``path`` and ``digest`` set
    to this file); None when the key differs or anything is amiss (then load it as usual).
    """
    stored = _stored_key("cards")
    if not enabled() or not stored or not CARDS_FILE.is_file():
        return None
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if key_of(cards_inputs(data, path.name)) != stored:
        return None
    try:
        db = _unpickle(CARDS_FILE, stored)
        return replace(db, path=path, digest=_sha256(data))
    except Exception:
        return None


def _pack(obj: Any) -> bytes:
    """Pickle (protocol 4) compressed with zlib (the particle label image is mostly zeros).

    Pickled twice: a freshly computed table and its unpickled copy can differ in memory layout
    (and so in bytes); the second pickle of the copy is stable, so rebuilds are byte-identical.
    """
    return zlib.compress(canonical_pickle(obj), 9)


def canonical_pickle(obj: Any) -> bytes:
    """``pickle.dumps`` of the object's unpickled copy (protocol 4): stable bytes."""
    return pickle.dumps(pickle.loads(pickle.dumps(obj, protocol=4)), protocol=4)


def write(
    result: Any,
    particles: Any,
    masks: np.ndarray,
    result_in: dict[str, Any],
    cards_db: Any,
    cards_in: dict[str, Any],
    *,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Write ``result.pkl.zlib``, ``cards.pkl.zlib`` and ``key.json`` (the build script's last step)."""
    out = CACHE_DIR if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    masks = np.asarray(masks, dtype=bool)
    key = key_of(result_in)
    payload = {
        "key": key,
        "result": replace(result, summary={**result.summary, "cards_path": None}),
        "particles": particles,
        "masks_packed": np.packbits(masks.ravel()),
        "masks_shape": tuple(int(v) for v in masks.shape),
    }
    (out / RESULT_FILE.name).write_bytes(_pack(payload))
    db = replace(cards_db, path=None, digest=None)
    (out / CARDS_FILE.name).write_bytes(_pack(db))
    keys = {
        "about": "Precomputed first view of the bundled example; written by "
        "scripts/build_example_cache.py. Used only when the key of the app's own inputs "
        "equals 'key' (ui/example_cache.py).",
        "result": {"key": key, "inputs": result_in},
        "cards": {"key": key_of(cards_in), "inputs": cards_in},
        "python": sys.version.split()[0],
    }
    (out / KEY_FILE.name).write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    with _LOCK:
        _LOADED.clear()
    return keys


__all__ = [
    "Precomputed",
    "cached_cards",
    "cards_inputs",
    "code_fingerprint",
    "key_of",
    "library_versions",
    "precomputed_for",
    "precomputed_result",
    "result_inputs",
    "stored_keys",
    "unet_arithmetic",
    "write",
]
