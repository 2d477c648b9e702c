"""The guard every reader passes: size limits from the header, caps, a wall-clock budget.

Nothing here decodes pixels. Each reader asks the guard before it allocates:

* :func:`check_declared` refuses a data set whose declared shape and item size exceed the pixel,
  value, frame or byte limits (:class:`Limits`, read from the :mod:`hrtem_core.io` module
  attributes at call time, so they are configurable per process and in tests);
* :func:`tick` raises when the read has run past its wall-clock budget (a per-read deadline kept
  in a :class:`contextvars.ContextVar`, so concurrent reads on other threads have their own);
* :func:`quiet` silences third-party prints and warnings of *this thread only* (a thread-aware
  proxy on ``sys.stdout``/``sys.stderr``): no process-wide lock, so one slow read never blocks
  another session's read;
* :func:`run_isolated` runs a function in a child process with a timeout and an address-space
  limit (``RLIMIT_AS``), for work that cannot be bounded from inside (a third-party parser).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import multiprocessing
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hrtem_core.errors import HRTEMError, ReadError

GiB = 1024**3


@dataclass(frozen=True)
class Limits:
    """What one read may cost; see the ``MAX_*`` attributes of :mod:`hrtem_core.io`.

    Attributes
    ----------
    image_pixels : int
        Largest 2-D frame [pixels].
    data_values : int
        Largest data set a reader loads whole [values, all frames and samples].
    decoded_bytes : int
        Largest data set a reader loads whole [bytes, item size included].
    frames : int
        Most frames in a stack.
    tags : int
        Most metadata tags (DigitalMicrograph tag tree entries, HDF5 objects).
    metadata_bytes : int
        Largest metadata block read (Velox JSON, .emi XML, TIFF XML) [bytes].
    depth : int
        Deepest nesting of tag groups / HDF5 groups.
    budget_s : float
        Wall-clock budget of one read [s].
    """

    image_pixels: int
    data_values: int
    decoded_bytes: int
    frames: int
    tags: int
    metadata_bytes: int
    depth: int
    budget_s: float


def limits() -> Limits:
    """The current limits, read from :mod:`hrtem_core.io` (``MAX_IMAGE_PIXELS`` etc.)."""
    pkg = sys.modules["hrtem_core.io"]
    return Limits(
        image_pixels=int(pkg.MAX_IMAGE_PIXELS),
        data_values=int(pkg.MAX_DATA_VALUES),
        decoded_bytes=int(pkg.MAX_DECODED_BYTES),
        frames=int(pkg.MAX_FRAMES),
        tags=int(pkg.MAX_TAGS),
        metadata_bytes=int(pkg.MAX_METADATA_BYTES),
        depth=int(pkg.MAX_DEPTH),
        budget_s=float(pkg.READ_BUDGET_S),
    )


def _shown(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims)


def check_declared(
    shape: Sequence[Any],
    name: str,
    *,
    itemsize: int = 4,
    frame_axis: int | None = None,
    samples: int = 1,
    lazy: bool = False,
) -> None:
    """Refuse a data set whose declared size exceeds the limits, before reading it.

    Parameters
    ----------
    shape : sequence of int
        The data set's shape as the header declares it (without a colour-samples axis).
    name : str
        File name for the message.
    itemsize : int, keyword-only
        Bytes per value of the decoded data (8 for complex64, 2 for uint16, ...).
    frame_axis : int, optional, keyword-only
        Axis of the frames in a stack; default: every axis but the last two.
    samples : int, keyword-only
        Colour samples per pixel (RGB: 3), counted in values and bytes.
    lazy : bool, keyword-only
        True when the reader reads one frame at a time (memory map or HDF5 slicing): then the
        whole-data-set value and byte limits do not apply, the per-image and frame limits do.

    Raises
    ------
    ReadError
        An impossible shape, or one over a limit.
    """
    lim = limits()
    dims = [int(s) for s in shape]
    if not dims:
        return
    if min(dims) < 1:
        raise ReadError(
            f"{name}: the header declares an impossible data shape {_shown(dims)} "
            "(corrupt, truncated or not this format)"
        )
    if frame_axis is not None and len(dims) == 3:
        image_dims = [d for i, d in enumerate(dims) if i != frame_axis]
        n_frames = dims[frame_axis]
    else:
        image_dims = dims[-2:]
        n_frames = math.prod(dims[:-2]) if len(dims) > 2 else 1
    image = math.prod(image_dims)
    shown = _shown(dims)
    if image > lim.image_pixels:
        raise ReadError(
            f"{name}: image of {shown} pixels is larger than the limit of "
            f"{lim.image_pixels:,} pixels (8192 x 8192); bin or crop it before analysis"
        )
    if n_frames > lim.frames:
        raise ReadError(
            f"{name}: the stack declares {n_frames:,} frames, more than the limit of "
            f"{lim.frames:,}; export the frame(s) you need as a separate file"
        )
    values = math.prod(dims) * max(1, int(samples))
    if lazy:
        return
    if values > lim.data_values:
        raise ReadError(
            f"{name}: data set of {shown} values is larger than the limit of "
            f"{lim.data_values:,} values; export the frame(s) you need as a separate file"
        )
    if values * max(1, int(itemsize)) > lim.decoded_bytes:
        raise ReadError(
            f"{name}: data set of {shown} ({values * itemsize / GiB:.2f} GiB decoded) is larger "
            f"than the limit of {lim.decoded_bytes / GiB:.2f} GiB; export the frame(s) you need"
        )


def check_count(count: int, cap: int, name: str, what: str) -> None:
    """Refuse ``count`` items of ``what`` (tags, objects, bytes of metadata) above ``cap``."""
    if count > cap:
        raise ReadError(f"{name}: the file holds more than {cap:,} {what}: refused")


# --------------------------------------------------------------------------------------------
# Wall-clock budget
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Deadline:
    name: str
    end: float
    budget_s: float


_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "hrtem_io_deadline", default=None
)


@contextlib.contextmanager
def budget(name: str, budget_s: float | None = None) -> Iterator[None]:
    """Give the reads inside a wall-clock budget [s] (default ``READ_BUDGET_S``)."""
    seconds = limits().budget_s if budget_s is None else float(budget_s)
    token = _DEADLINE.set(_Deadline(name, time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def tick(what: str = "reading") -> None:
    """Raise :class:`ReadError` when the current read has run past its budget."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline.end:
        raise ReadError(
            f"{deadline.name}: {what} took longer than the budget of {deadline.budget_s:g} s: "
            "refused (a damaged or hostile file?)"
        )


# --------------------------------------------------------------------------------------------
# Thread-local silence
# --------------------------------------------------------------------------------------------


_SILENT = threading.local()
_INSTALL_LOCK = threading.Lock()  # held only for the one-time installation below
_INSTALLED = False

#: Third-party modules whose ``print`` calls are silenced (ncempy prints on errors).
_PRINTING_MODULES = ("ncempy.io.dm", "ncempy.io.ser", "ncempy.io.mrc", "ncempy.io.emd")
#: Loggers given a NullHandler, so that their warnings never reach stderr through logging's
#: last-resort handler (an application that configures logging still receives them).
_LOGGERS = ("tifffile", "imageio", "PIL", "h5py", "ncempy")


def _noop_print(*_args: Any, **_kwargs: Any) -> None:
    return None


def mute(module: Any) -> Any:
    """Silence ``print`` in a third-party module (shadows the builtin there only); return it."""
    module.print = _noop_print
    return module


def _install() -> None:
    """Once per process: mute ncempy's prints, give library loggers a NullHandler, and wrap
    :func:`warnings.showwarning` so that warnings raised inside :func:`quiet` are not shown.

    ``sys.stdout`` and ``sys.stderr`` are never replaced, and nothing here is held during a read.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    import logging

    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        for module_name in _PRINTING_MODULES:  # those imported already; readers call mute()
            module = sys.modules.get(module_name)
            if module is not None:
                mute(module)
        for logger_name in _LOGGERS:
            logger = logging.getLogger(logger_name)
            if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
                logger.addHandler(logging.NullHandler())
        _INSTALLED = True


def _wrap_showwarning() -> None:
    show = warnings.showwarning
    if getattr(show, "_hrtem_quiet", False):
        return

    def showwarning(*args: Any, **kwargs: Any) -> None:
        if getattr(_SILENT, "depth", 0):
            return
        show(*args, **kwargs)

    showwarning._hrtem_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence third-party prints, log warnings and shown warnings of this thread's read.

    No process-wide lock and no redirection of ``sys.stdout``/``sys.stderr``: reads on other
    threads go on, and their output (and everyone else's) is untouched.
    """
    _install()
    _wrap_showwarning()
    _SILENT.depth = getattr(_SILENT, "depth", 0) + 1
    try:
        import numpy as np

        with np.errstate(all="ignore"):
            yield
    finally:
        _SILENT.depth -= 1


# --------------------------------------------------------------------------------------------
# Isolation in a child process
# --------------------------------------------------------------------------------------------


def _child(conn: Any, func: Callable[..., Any], args: tuple, max_memory_bytes: int | None) -> None:
    if max_memory_bytes:
        with contextlib.suppress(ImportError, ValueError, OSError):
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    try:
        result: tuple[str, Any] = ("ok", func(*args))
    except HRTEMError as exc:
        result = ("hrtem", (type(exc), str(exc)))
    except MemoryError:
        result = ("memory", "")
    except BaseException as exc:  # the boundary: anything else becomes one line
        result = ("error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
    try:
        conn.send(result)
    except Exception as exc:  # an unpicklable result
        conn.send(("error", f"{type(exc).__name__}: result could not be sent back"))
    conn.close()


def can_isolate() -> bool:
    """True when this process may start a child (a daemonic process, e.g. a Dask worker, may not)."""
    return not multiprocessing.current_process().daemon


def run_isolated(
    func: Callable[..., Any],
    *args: Any,
    name: str,
    timeout_s: float,
    max_memory_bytes: int | None = 3 * GiB,
) -> Any:
    """Run ``func(*args)`` in a child process with a timeout and an address-space limit.

    Parameters
    ----------
    func : callable
        A module-level (picklable) function; its result must be picklable.
    *args
        Its arguments (picklable).
    name : str, keyword-only
        File name for the messages.
    timeout_s : float, keyword-only
        Wall-clock limit [s]; the child is killed after it.
    max_memory_bytes : int or None, keyword-only
        ``RLIMIT_AS`` of the child [bytes] (POSIX); None for no limit.

    Returns
    -------
    Any
        ``func``'s result.

    Raises
    ------
    HRTEMError
        The child's own :class:`HRTEMError` (same class and message), or a :class:`ReadError`
        for a timeout, memory exhaustion or any other failure, each one line.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":  # children fork from a server that has the readers imported
        ctx.set_forkserver_preload(["numpy", "h5py", "hrtem_core.io"])
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, args, max_memory_bytes), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise ReadError(
                f"{name}: reading took longer than {timeout_s:g} s: refused "
                "(a damaged or hostile file?)"
            )
        try:
            kind, payload = parent.recv()
        except EOFError:
            kind, payload = "memory", ""
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if kind == "ok":
        return payload
    if kind == "hrtem":
        cls, message = payload
        raise cls(message)
    if kind == "memory":
        limit = f" of {max_memory_bytes / GiB:.1f} GiB" if max_memory_bytes else ""
        raise ReadError(f"{name}: reading needs more memory than the limit{limit}: refused")
    raise ReadError(f"{name}: cannot be read: {payload}")


def env_number(name: str, default: float) -> float:
    """A positive number from the environment variable ``name``, else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        return default
    return value if value > 0 and math.isfinite(value) else default
