"""Open an HDF5 file only after checking, with h5py's low-level API, that it stays inside itself.

:func:`open_checked` walks every object of the file once (hard links to the same object are
visited once, so a link DAG with 2^40 paths costs as many steps as it has objects) with bounded
depth and object count, and refuses, with a one-line :class:`~hrtem_core.errors.ReadError`:

* external links (a link to another file, e.g. ``/etc/passwd``) and user-defined link types;
* data sets with external raw storage (``H5Pset_external``: pixels read from another file);
* virtual data sets (``H5D_VIRTUAL``: pixels mapped from other files);
* data sets whose chunk decodes to more than a quarter of ``MAX_DECODED_BYTES`` (reading one
  frame would decompress the whole chunk).

Only after the walk does a reader touch data, through the returned :class:`h5py.File`. Soft links
are not followed by the walk (they name an in-file path; when a reader resolves one, it resolves
within this checked file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrtem_core.errors import ReadError
from hrtem_core.io import _guard


@dataclass
class Walk:
    """What the walk found: the groups and data sets by their first path."""

    groups: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)


def open_checked(path: Path, name: str) -> tuple[Any, Walk]:
    """Check the whole file, then open it read-only.

    Returns
    -------
    (h5py.File, Walk)
        The open file (the caller closes it) and the objects found.

    Raises
    ------
    ReadError
        Anything that reaches outside the file, too many objects, too deep a tree.
    """
    import h5py

    handle = h5py.File(path, "r", locking=False)
    try:
        walk = _walk(handle, name)
    except BaseException:
        handle.close()
        raise
    return handle, walk


def _walk(handle: Any, name: str) -> Walk:
    import h5py
    from h5py import h5d, h5l, h5o

    lim = _guard.limits()
    root = handle.id
    visited: set[tuple[int, int]] = set()
    info = h5o.get_info(root)
    visited.add((info.fileno, info.addr))
    walk = Walk(groups=["/"])
    stack: list[tuple[Any, str, int]] = [(h5py.h5g.open(root, b"/"), "", 0)]
    count = 0
    while stack:
        gid, prefix, depth = stack.pop()
        if depth > lim.depth:
            raise ReadError(f"{name}: HDF5 groups nested deeper than {lim.depth} levels: refused")
        for link in gid:
            count += 1
            if count > lim.tags:
                raise ReadError(
                    f"{name}: the HDF5 file holds more than {lim.tags:,} links: refused"
                )
            if count % 256 == 0:
                _guard.tick("walking the HDF5 file")
            kind = gid.links.get_info(link).type
            shown = f"{prefix}/{link.decode('utf-8', 'replace')}"
            if kind == h5l.TYPE_EXTERNAL:
                raise ReadError(
                    f"{name}: the HDF5 file has an external link ({shown[:80]}) to another "
                    "file: refused (only data inside the uploaded file are read)"
                )
            if kind == h5l.TYPE_SOFT:
                continue
            if kind != h5l.TYPE_HARD:
                raise ReadError(
                    f"{name}: the HDF5 file has a user-defined link ({shown[:80]}): refused"
                )
            oid = h5o.open(gid, link)
            oinfo = h5o.get_info(oid)
            key = (oinfo.fileno, oinfo.addr)
            if key in visited:
                continue
            visited.add(key)
            if oinfo.type == h5o.TYPE_GROUP:
                walk.groups.append(shown)
                stack.append((oid, shown, depth + 1))
                continue
            if oinfo.type == h5o.TYPE_DATASET:
                _check_dataset(oid, shown, name, lim, h5d)
                walk.datasets.append(shown)
    return walk


def _check_dataset(oid: Any, shown: str, name: str, lim: _guard.Limits, h5d: Any) -> None:
    dcpl = oid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        raise ReadError(
            f"{name}: the HDF5 data set {shown[:80]} is virtual (mapped from other files): refused"
        )
    if dcpl.get_external_count() > 0:
        raise ReadError(
            f"{name}: the HDF5 data set {shown[:80]} keeps its data in an external file: refused "
            "(only data inside the uploaded file are read)"
        )
    if layout == h5d.CHUNKED:
        chunk = dcpl.get_chunk()
        size = oid.dtype.itemsize
        for c in chunk:
            size *= int(c)
        if size > lim.decoded_bytes // 4:
            raise ReadError(
                f"{name}: the HDF5 data set {shown[:80]} has chunks of {size / 2**20:.0f} MiB "
                "(each read would decode a whole chunk): refused"
            )


def read_attr(obj: Any, key: str, name: str) -> Any:
    """Attribute ``key`` of ``obj`` (None when absent) after checking its stored size."""
    if key not in obj.attrs:
        return None
    size = obj.attrs.get_id(key).get_storage_size()
    _guard.check_count(size, _guard.limits().metadata_bytes, name, "bytes in one HDF5 attribute")
    return obj.attrs[key]


def attrs_dict(obj: Any, name: str) -> dict:
    """All attributes of ``obj``, each after a size check; at most ``MAX_TAGS`` of them."""
    lim = _guard.limits()
    keys = list(obj.attrs.keys())
    _guard.check_count(len(keys), lim.tags, name, "HDF5 attributes on one object")
    return {key: read_attr(obj, key, name) for key in keys}
