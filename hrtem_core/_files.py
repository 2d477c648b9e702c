"""One home for file chores: atomic writes, strict JSON, safe names, formula escaping, extensions.

* :func:`atomic_write` / :func:`write_text` / :func:`write_bytes` / :func:`write_csv` /
  :func:`write_xlsx`: the data go to a temporary file in the destination folder, which is then
  moved over the destination with :func:`os.replace` (atomic on POSIX and Windows), so a reader
  never sees half a file and an interrupted write leaves the previous file intact.
* :func:`jsonable`: numpy scalars/arrays, tuples, paths, dataclasses, bytes and datetimes to
  plain JSON types, with one NaN rule: NaN and +-inf become ``None`` (strict JSON ``null``).
* :func:`safe_name`: a file name with a conservative character set, never hidden, never empty.
* :func:`escape_formula` / :func:`escape_frame`: the OWASP rule against CSV/formula injection
  (https://owasp.org/www-community/attacks/CSV_Injection): a text cell that starts with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so that a spreadsheet
  shows it as text instead of evaluating it. Numbers are never touched.

The supported-extension table is :data:`hrtem_core.io.SUPPORTED_EXTENSIONS` (from the reader
registry): this module is the bottom layer and imports nothing of the package.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: First characters that make a spreadsheet cell a formula (OWASP CSV injection).
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    tmp_suffix: str | None = None,
) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it onto ``path``.

    Parameters
    ----------
    path : path-like
        Destination; its folder is created.
    write : callable
        ``write(tmp_path)`` writes the whole file to ``tmp_path`` (it may also check it: an
        exception leaves ``path`` as it was and removes the temporary file).
    tmp_suffix : str, optional, keyword-only
        Suffix of the temporary file; default ``.tmp`` plus the destination's suffix (so that
        writers choosing the format by suffix see it). The temporary name always starts with
        ``.<name>.``.

    Returns
    -------
    Path
        ``path``.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{dest.suffix}" if tmp_suffix is None else tmp_suffix
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _read_umask() -> int:
    """The process umask, read once at import (setting it to read it is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` atomically to ``path``."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically to ``path`` (UTF-8 by default)."""
    return atomic_write(path, lambda p: p.write_text(text, encoding=encoding))


def write_csv(frame: Any, path: str | os.PathLike, *, escape: bool = True) -> Path:
    """Write a DataFrame as UTF-8 CSV without the index, formula-leading text escaped."""
    out = escape_frame(frame) if escape else frame
    return atomic_write(path, lambda p: out.to_csv(p, index=False, encoding="utf-8"))


def write_xlsx(sheets: Mapping[str, Any], path: str | os.PathLike, *, escape: bool = True) -> Path:
    """Write one sheet per DataFrame (names cut to Excel's 31 characters), text escaped."""
    import pandas as pd

    def write(p: Path) -> None:
        with pd.ExcelWriter(p, engine="openpyxl") as xl:
            for name, frame in sheets.items():
                out = escape_frame(frame) if escape else frame
                out.to_excel(xl, sheet_name=escape_formula(str(name))[:31], index=False)

    return atomic_write(path, write)


# --------------------------------------------------------------------------------------------
# Formula injection
# --------------------------------------------------------------------------------------------


def is_formula_like(text: str) -> bool:
    """True when ``text`` starts with a character that makes a spreadsheet cell a formula."""
    return isinstance(text, str) and text.startswith(FORMULA_PREFIXES)


def escape_formula(value: Any) -> Any:
    """Prefix ``'`` to a string that starts with ``= + - @``, a tab or a CR; others unchanged.

    A string that parses as a number (``-0.5``, ``+3``) is left alone: it is data, and a
    spreadsheet reads it as that number, not as a formula.
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def escape_frame(frame: Any) -> Any:
    """A copy of a DataFrame whose text cells, column names and text index are escaped."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return frame
    out = frame.copy()
    for col in out.columns:
        series = out[col]
        if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
            if series.map(is_formula_like).any():
                out[col] = series.map(escape_formula).astype(series.dtype)
    out.columns = [escape_formula(c) if isinstance(c, str) else c for c in out.columns]
    return out


# --------------------------------------------------------------------------------------------
# Strict JSON
# --------------------------------------------------------------------------------------------


def jsonable(value: Any, *, max_array_size: int | None = None) -> Any:
    """Convert to plain JSON types; NaN and +-inf become ``None`` (strict JSON).

    Parameters
    ----------
    value : Any
        Dicts (keys become ``str``), lists/tuples/sets, numpy arrays and scalars, dataclass
        instances, ``bytes`` (UTF-8, bad bytes replaced), dates (ISO 8601), paths.
    max_array_size : int, optional
        Arrays with more elements are replaced by ``"array(shape)"`` (metadata summaries).

    Returns
    -------
    Any
        ``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list`` or ``dict``.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), max_array_size=max_array_size)
    if isinstance(value, dict):
        return {str(k): jsonable(v, max_array_size=max_array_size) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, max_array_size=max_array_size) for v in value]
    if isinstance(value, np.ndarray):
        if max_array_size is not None and value.size > max_array_size:
            return f"array{value.shape}"
        return jsonable(value.tolist(), max_array_size=max_array_size)
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.generic):
        return jsonable(value.item(), max_array_size=max_array_size)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, int | str) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------------------------
# Names and extensions
# --------------------------------------------------------------------------------------------


def safe_name(name: str, *, fallback: str = "file", max_len: int = 200) -> str:
    """A file name from ``name``'s last component: ``[A-Za-z0-9._+-]``, not hidden, not empty.

    Other runs of characters become ``_``; leading dots and underscores go, so the name is never
    hidden and never ``..``; at most ``max_len`` characters.
    """
    base = re.split(r"[\\/]", str(name))[-1]
    text = _UNSAFE_NAME.sub("_", base).lstrip("._")
    return text[:max_len] or fallback


def display_name(name: str, *, fallback: str = "upload") -> str:
    """A file name to show in messages and to parse (defocus): the last component, word characters,
    ``.,+=@ ()-``, ``µ`` and ``Å`` kept, others ``_``; never hidden, never empty.

    Unlike :func:`safe_name` it keeps letters such as ``Å`` (``df-160Å``); it is for messages and
    private temporary files, not for names written into shared folders.
    """
    base = re.split(r"[\\/]", str(name))[-1].strip() or fallback
    base = re.sub(r"[^\w.,+=@ ()\-\u00b5\u00c5]", "_", base)
    return base.lstrip(".") or fallback


__all__ = [
    "FORMULA_PREFIXES",
    "atomic_write",
    "display_name",
    "escape_formula",
    "escape_frame",
    "is_formula_like",
    "jsonable",
    "safe_name",
    "write_bytes",
    "write_csv",
    "write_text",
    "write_xlsx",
]
