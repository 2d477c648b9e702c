"""Figures of an analysis: the plane map, a window's power spectrum, images, defocus profiles.

Interactive figures are plotly (``plane_map_figure``, ``fft_figure``, ``image_figure``,
``profile_figure``, ``phase_fraction_figure``); static figures for publication are matplotlib on
its Agg canvas (no kaleido, no pyplot state): ``plane_map_mpl``, ``fft_mpl``, ``image_mpl``,
``line_profile_mpl``, written as PNG or SVG by :func:`figure_bytes` / ``plane_map_png`` /
``profile_png``. Every real-space image carries an nm scale bar.

Colours (one place, used by every map and figure)
-------------------------------------------------
* One hue per phase, derived from its card id (:func:`phase_color`): a hash of the card id picks
  one of :data:`PHASE_HUES_DEG` (well-separated hues); two card ids of one database that land on
  the same hue are separated by taking the next free hue, in card-id order
  (:func:`phase_colors`), never by the order in which phases are seen.
* The plane families of a phase are shades (lightness) of its hue (:func:`family_shades`),
  again chosen from a hash of the family, collisions resolved in sorted order.
* Windows without a phase get fixed neutral colours by status (:data:`STATUS_COLORS`):
  ``unmatched``, ``spacing-only``, ``no-spots`` and ``non-crystalline``.
* Legends are grouped by phase (plotly ``legendgroup`` + ``legendgrouptitle``).

Hexagonal phases are labelled in four-index Miller-Bravais notation (:func:`miller_bravais`,
:func:`format_hkl`).
"""

from __future__ import annotations

import colorsys
import hashlib
import html
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------
#: Hues [deg] a phase can take: well separated, no grey (greys are for statuses).
PHASE_HUES_DEG: tuple[int, ...] = (215, 355, 135, 280, 30, 185, 325, 55, 95, 250)
#: Lightness of the plane-family shades within a phase's hue (HLS), darkest first.
FAMILY_LIGHTNESS: tuple[float, ...] = (0.30, 0.40, 0.50, 0.60, 0.70, 0.35, 0.45, 0.55, 0.65)
#: Lightness / saturation of a phase's base colour (HLS).
PHASE_LIGHTNESS = 0.45
PHASE_SATURATION = 0.80
#: Fixed neutral colours of windows that carry no phase name.
STATUS_COLORS: dict[str, str] = {
    "unmatched": "#4d4d4d",
    "spacing-only": "#9a9a9a",
    "no-spots": "#d0d0d0",
    "non-crystalline": "#ececec",
}
#: Opacity of the tiles over the image: named and crystalline windows, and the empty ones.
TILE_ALPHA = 0.55
EMPTY_TILE_ALPHA = 0.18
#: Legend group of the windows without a phase.
STATUS_GROUP = "not indexed"

# Kept for callers of the earlier API: crystalline windows that no phase explains.
UNINDEXED_COLOR = STATUS_COLORS["unmatched"]
UNINDEXED_LABEL = "unmatched"

_EMPTY_STATUSES = ("no-spots", "non-crystalline")


def _stable_hash(text: str) -> int:
    return int(hashlib.sha256(str(text).strip().encode("utf-8")).hexdigest()[:12], 16)


def _hls_hex(hue_deg: float, lightness: float, saturation: float) -> str:
    r, g, b = colorsys.hls_to_rgb((hue_deg % 360) / 360.0, lightness, saturation)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in (r, g, b)))


def _slots(keys: Iterable[str], n_slots: int) -> dict[str, int]:
    """Hash each key onto one of ``n_slots``; a taken slot passes to the next free one.

    Keys are placed in sorted order, so the result depends only on the set of keys (and a key
    keeps its own hashed slot whenever no other key of the set took it first).
    """
    out: dict[str, int] = {}
    taken: set[int] = set()
    for key in sorted(set(keys)):
        slot = _stable_hash(key) % n_slots
        if len(taken) < n_slots:
            while slot in taken:
                slot = (slot + 1) % n_slots
        taken.add(slot)
        out[key] = slot
    return out


def phase_hue_deg(card_id: str, *, among: Iterable[str] | None = None) -> int:
    """Hue [deg] of a phase: from a hash of its card id (resolved against ``among``)."""
    ids = {str(card_id)} | {str(c) for c in (among or ())}
    return PHASE_HUES_DEG[_slots(ids, len(PHASE_HUES_DEG))[str(card_id)]]


def phase_color(card_id: str, *, among: Iterable[str] | None = None) -> str:
    """The colour of a phase (hex), stable across runs, pages and figures.

    Parameters
    ----------
    card_id : str
        The phase's card id.
    among : iterable of str, optional, keyword-only
        All card ids of the database (or of the analysis): phases whose hashes collide get
        distinct hues, assigned in card-id order.
    """
    return _hls_hex(phase_hue_deg(card_id, among=among), PHASE_LIGHTNESS, PHASE_SATURATION)


def phase_colors(card_ids: Iterable[str]) -> dict[str, str]:
    """``{card_id: colour}`` for a set of phases (distinct hues while there are enough)."""
    ids = [str(c) for c in card_ids]
    slots = _slots(ids, len(PHASE_HUES_DEG))
    return {c: _hls_hex(PHASE_HUES_DEG[slots[c]], PHASE_LIGHTNESS, PHASE_SATURATION) for c in ids}


def _norm_family(family: str) -> str:
    return " ".join(str(family).replace(",", " ").split())


def family_shades(
    card_id: str,
    families: Iterable[str],
    *,
    among: Iterable[str] | None = None,
    order: Sequence[str] | None = None,
) -> dict[str, str]:
    """Shades of the phase's hue for its plane families: ``{family: colour}``.

    With ``order`` (the card's own families, d descending: :func:`card_family_order`) a family
    takes the lightness :data:`FAMILY_LIGHTNESS` ``[rank on the card mod n]``: fixed by the card,
    the same on every page, and distinct for the card's first n families (the ones usually
    seen); two shown families on one shade separate (the later one on the card takes the next
    free shade). Without it (or for a family not on the card) the shade comes from a hash of the
    family, collisions within ``families`` taking the next free shade in sorted order.
    """
    hue = phase_hue_deg(card_id, among=among)
    n = len(FAMILY_LIGHTNESS)
    fams = [_norm_family(f) for f in families]
    rank = {_norm_family(f): i for i, f in enumerate(order or ())}
    slots: dict[str, int] = {}
    taken: set[int] = set()
    # On the card: its rank's shade; two shown families on one shade (ranks n apart): the later
    # one on the card takes the next free shade.
    for f in sorted({f for f in fams if f in rank}, key=rank.__getitem__):
        slot = rank[f] % n
        if len(taken) < n:
            while slot in taken:
                slot = (slot + 1) % n
        taken.add(slot)
        slots[f] = slot
    rest = [f for f in fams if f not in rank]
    if rest:
        for f in sorted(set(rest)):
            slot = _stable_hash(f) % n
            if len(taken) < n:
                while slot in taken:
                    slot = (slot + 1) % n
            taken.add(slot)
            slots[f] = slot
    return {f: _hls_hex(hue, FAMILY_LIGHTNESS[slots[f]], PHASE_SATURATION) for f in fams}


def card_family_order(phase: Any) -> list[str]:
    """The phase's reflection families as ``"h k l"``, in the card's order (d descending)."""
    refl = sorted(getattr(phase, "reflections", ()), key=lambda r: -float(r.d_nm))
    return [format_hkl(r.hkl) for r in refl if not getattr(r, "forbidden", False)]


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha:g})"


def _hex_rgba(color: str, alpha: float) -> tuple[float, float, float, float]:
    c = color.lstrip("#")
    return (int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255, alpha)


# --------------------------------------------------------------------------------------------
# Miller(-Bravais) labels
# --------------------------------------------------------------------------------------------
def miller_bravais(hkl: Sequence[int]) -> tuple[int, int, int, int]:
    """Four-index (hkil) of a plane of a hexagonal lattice: ``i = -(h + k)``."""
    h, k, l_ = (int(v) for v in hkl)
    return (h, k, -(h + k), l_)


def miller_bravais_direction(uvw: Sequence[int]) -> tuple[int, int, int, int]:
    """Four-index [UVTW] of a direction [uvw] of a hexagonal lattice (smallest integers).

    ``U = (2u - v) / 3, V = (2v - u) / 3, T = -(u + v) / 3, W = w``, scaled by 3 and divided by
    the common divisor (e.g. [1 0 0] -> [2 -1 -1 0], [0 0 1] -> [0 0 0 1]).
    """
    u, v, w = (int(x) for x in uvw)
    four = (2 * u - v, 2 * v - u, -(u + v), 3 * w)
    g = 0
    for x in four:
        g = math.gcd(g, abs(x))
    return tuple(x // g for x in four) if g else (0, 0, 0, 0)  # type: ignore[return-value]


def is_hexagonal(phase: Any) -> bool:
    """Whether a phase is described on hexagonal axes (a = b, gamma = 120 degrees)."""
    cell = getattr(phase, "cell", None)
    if cell is None:
        return False
    return (
        math.isclose(cell.a_nm, cell.b_nm, rel_tol=1e-6)
        and math.isclose(cell.gamma_deg, 120.0, abs_tol=1e-6)
        and math.isclose(cell.alpha_deg, 90.0, abs_tol=1e-6)
        and math.isclose(cell.beta_deg, 90.0, abs_tol=1e-6)
    )


def parse_hkl(text: str) -> tuple[int, int, int] | None:
    """``"2 -2 0"`` (or ``"(2 -2 0)"``, ``"{2 2 0}"``) -> (2, -2, 0); None for ``"-"``/``""``."""
    parts = re.findall(r"-?\d+", str(text))
    if len(parts) != 3:
        return None
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def format_hkl(hkl: Sequence[int], *, four_index: bool = False, direction: bool = False) -> str:
    """Indices as text: ``"2 -2 0"``; four-index for hexagonal phases (``"1 0 -1 0"``).

    ``direction=True`` converts a zone axis [uvw] to [UVTW] instead of (hkl) to (hkil).
    """
    if four_index:
        idx: Sequence[int] = miller_bravais_direction(hkl) if direction else miller_bravais(hkl)
    else:
        idx = tuple(int(v) for v in hkl)
    return " ".join(str(int(v)) for v in idx)


def relabel(text: str, *, four_index: bool, direction: bool = False) -> str:
    """A ``;``-joined list of three-index labels in four-index notation (``-`` kept)."""
    if not four_index or not text:
        return str(text)
    out = []
    for part in str(text).split(";"):
        hkl = parse_hkl(part)
        out.append(part if hkl is None else format_hkl(hkl, four_index=True, direction=direction))
    return ";".join(out)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def display_image(image: np.ndarray, *, max_display_px: int = 1024) -> tuple[np.ndarray, int]:
    """Block-average ``image`` by an integer factor so its larger side is <= ``max_display_px``.

    Returns
    -------
    (small, factor) : (ndarray, int)
        ``small[i, j]`` is the mean of ``image[i f : (i + 1) f, j f : (j + 1) f]``.
    """
    img = np.asarray(image, dtype=np.float32)
    f = max(1, math.ceil(max(img.shape) / float(max_display_px)))
    if f == 1:
        return img, 1
    ny, nx = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    small = img[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))
    return small, f


def _contrast(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1.0, 99.0])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _png_data_uri(small: np.ndarray) -> str:
    """Grey PNG (1-99 % contrast stretch) of ``small`` as a ``data:`` URI (compact in HTML)."""
    import base64

    from PIL import Image

    lo, hi = _contrast(small)
    grey = np.clip((np.nan_to_num(small, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    buf = io.BytesIO()
    Image.fromarray((grey * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def scale_bar_spec(width_px: float, pixel_size_nm: float) -> tuple[float, float, str]:
    """``(length_nm, length_px, label)`` of the scale bar for an image ``width_px`` wide."""
    from hrtem_core.measure import scale_bar_nm

    length_nm = scale_bar_nm(float(width_px) * float(pixel_size_nm))
    label = f"{length_nm:g} nm"
    return length_nm, length_nm / float(pixel_size_nm), label


def add_scale_bar(
    fig: Any,
    *,
    width_px: float,
    height_px: float,
    pixel_size_nm: float,
    x0_px: float = 0.0,
    y0_px: float = 0.0,
    row: int | None = None,
    col: int | None = None,
) -> Any:
    """Draw an nm scale bar in the lower-left corner of a plotly image whose axes are pixels."""
    _, length_px, label = scale_bar_spec(width_px, pixel_size_nm)
    margin = 0.05 * min(width_px, height_px)
    thick = max(0.012 * height_px, 1.0)
    x0 = x0_px + margin
    y1 = y0_px + height_px - margin
    kw = {} if row is None else {"row": row, "col": col}
    fig.add_shape(
        type="rect",
        x0=x0,
        x1=x0 + length_px,
        y0=y1 - thick,
        y1=y1,
        fillcolor="white",
        line={"color": "black", "width": 1},
        layer="above",
        **kw,
    )
    fig.add_annotation(
        x=x0 + length_px / 2,
        y=y1 - thick,
        text=f"<b>{label}</b>",
        showarrow=False,
        yanchor="bottom",
        font={"color": "white", "size": 13},
        bgcolor="rgba(0,0,0,0.45)",
        **kw,
    )
    return fig


def _scale_bar_mpl(ax: Any, *, width_px: float, height_px: float, pixel_size_nm: float) -> None:
    """An nm scale bar in the lower-left corner of a matplotlib image (axes in pixels)."""
    from matplotlib.patches import Rectangle

    _, length_px, label = scale_bar_spec(width_px, pixel_size_nm)
    margin = 0.05 * min(width_px, height_px)
    thick = max(0.012 * height_px, 1.0)
    x0, y1 = margin, height_px - margin
    ax.add_patch(
        Rectangle(
            (x0 - 0.5, y1 - thick), length_px, thick, facecolor="white", edgecolor="black", lw=0.8
        )
    )
    ax.text(
        x0 + length_px / 2,
        y1 - 1.6 * thick,
        label,
        color="white",
        ha="center",
        va="bottom",
        fontsize=9,
        fontweight="bold",
        bbox={"facecolor": "black", "alpha": 0.45, "edgecolor": "none", "pad": 1.5},
    )


# --------------------------------------------------------------------------------------------
# The plane map
# --------------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def window_category(row: Any) -> tuple[str, str]:
    """``(group, key)`` of one windows-table row: ``(card_id, family)`` or ``(STATUS_GROUP, status)``.

    A window is coloured by its phase and plane family when it carries a phase card; otherwise
    by its status: ``no-spots``, ``non-crystalline`` (no pair), ``spacing-only`` or
    ``unmatched`` (any other status without a phase).
    """
    card = _text(getattr(row, "phase_card", ""))
    if card:
        return card, _norm_family(_text(getattr(row, "plane_family", "")))
    status = _text(getattr(row, "status", ""))
    crystalline = getattr(row, "crystalline", 1)
    if status == "no-spots":
        return STATUS_GROUP, "no-spots"
    try:
        empty = int(crystalline) == 0
    except (TypeError, ValueError):
        empty = False
    if empty:
        return STATUS_GROUP, "non-crystalline"
    if status == "spacing-only":
        return STATUS_GROUP, "spacing-only"
    return STATUS_GROUP, "unmatched"


def _hex_phases(cards: Any) -> set[str]:
    if cards is None:
        return set()
    return {p.card_id for p in getattr(cards, "phases", ()) if is_hexagonal(p)}


def _palette_ids(result: Any, card_ids: Iterable[str] | None) -> list[str]:
    if card_ids is not None:
        return [str(c) for c in card_ids]
    ids: list[str] = []
    phases = getattr(result, "phases", None)
    if phases is not None and len(phases):
        ids = [str(c) for c in phases["card_id"]]
    for c in result.windows["phase_card"].fillna("").astype(str):
        if c and c not in ids:
            ids.append(c)
    return ids


def category_colors(
    windows: Iterable[pd.DataFrame],
    *,
    card_ids: Iterable[str] | None = None,
    cards: Any = None,
) -> dict[tuple[str, str], str]:
    """Colour of every ``(group, key)`` category of one or more windows tables.

    With the card database (``cards``) a family's shade is fixed by its rank on the card
    (:func:`family_shades`); without it, pass all tables shown side by side (a series) so that
    shades are resolved against the same set of families.
    """
    fams: dict[str, set[str]] = {}
    statuses: set[str] = set()
    for frame in windows:
        for row in frame.itertuples(index=False):
            group, key = window_category(row)
            if group == STATUS_GROUP:
                statuses.add(key)
            else:
                fams.setdefault(group, set()).add(key)
    among = set(card_ids or ()) | set(fams)
    out: dict[tuple[str, str], str] = {}
    phases = {p.card_id: p for p in getattr(cards, "phases", ())}
    for card, members in fams.items():
        order = card_family_order(phases[card]) if card in phases else None
        for fam, col in family_shades(card, members, among=among, order=order).items():
            out[(card, fam)] = col
    for st in statuses:
        out[(STATUS_GROUP, st)] = STATUS_COLORS[st]
    return out


def _phase_names(result: Any) -> dict[str, str]:
    names: dict[str, str] = {}
    w = result.windows
    for c, n in zip(w["phase_card"].astype(str), w["phase_name"].astype(str), strict=True):
        if c and c not in names:
            names[c] = n
    phases = getattr(result, "phases", None)
    if phases is not None and len(phases):
        for c, n in zip(phases["card_id"], phases["name"], strict=True):
            names.setdefault(str(c), str(n))
    return names


def plane_map_categories(
    result: Any,
    *,
    colors: dict[tuple[str, str], str] | None = None,
    cards: Any = None,
    card_ids: Iterable[str] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Category code of every crystalline window on the grid, the labels and their colours.

    Returns
    -------
    codes : ndarray of float, shape (n_rows, n_cols)
        Index into ``labels``; NaN for windows without any spot pair (drawn apart, neutral).
    labels, colors : list of str
        ``"<phase> {<family>}"`` categories (by phase, then family), then the statuses
        ``spacing-only`` / ``unmatched`` when present.
    """
    info = _categories(result, colors=colors, cards=cards, card_ids=card_ids)
    return info["codes"], info["labels"], info["colors"]


def _categories(
    result: Any,
    *,
    colors: dict[tuple[str, str], str] | None,
    cards: Any,
    card_ids: Iterable[str] | None,
) -> dict[str, Any]:
    grid = result.grid
    rows = list(result.windows.itertuples(index=False))
    if colors is None:
        colors = category_colors(
            [result.windows], card_ids=_palette_ids(result, card_ids), cards=cards
        )
    names = _phase_names(result)
    hexa = _hex_phases(cards)
    cats = [window_category(r) for r in rows]
    phase_keys = sorted({c for c in cats if c[0] != STATUS_GROUP})
    status_keys = [
        (STATUS_GROUP, s) for s in ("spacing-only", "unmatched") if (STATUS_GROUP, s) in cats
    ]
    keys = phase_keys + status_keys
    labels = []
    for group, key in keys:
        if group == STATUS_GROUP:
            labels.append(key)
        else:
            fam = relabel(key, four_index=group in hexa)
            labels.append(
                f"{names.get(group, group)} {{{fam}}}" if fam else names.get(group, group)
            )
    lut = {k: i for i, k in enumerate(keys)}
    codes = np.full(len(rows), np.nan)
    empty = np.full(len(rows), np.nan)
    empty_keys = [k for k in _EMPTY_STATUSES if (STATUS_GROUP, k) in cats]
    for i, c in enumerate(cats):
        if c in lut:
            codes[i] = lut[c]
        else:
            empty[i] = empty_keys.index(c[1])
    return {
        "codes": codes.reshape(grid.n_rows, grid.n_cols),
        "empty": empty.reshape(grid.n_rows, grid.n_cols),
        "empty_keys": empty_keys,
        "keys": keys,
        "labels": labels,
        "colors": [colors.get(k, STATUS_COLORS["unmatched"]) for k in keys],
        "names": names,
        "hexa": hexa,
    }


def _hover_full(row: Any, four_index: bool) -> str:
    """Everything about one window (the standalone HTML export, which has no side panel)."""
    e = html.escape
    parts = [f"<b>window ({row.row}, {row.col})</b> at y={row.y_px:.0f}, x={row.x_px:.0f} px"]
    parts.append(f"status: {e(str(row.status))}; pairs: {row.n_pairs}")
    if row.n_pairs:
        parts.append(f"spacings [nm]: {e(str(row.spacings_nm))}")
        if row.angles_deg:
            parts.append(f"angles [deg]: {e(str(row.angles_deg))}")
    if row.phase_name:
        parts.append(f"phase: {e(str(row.phase_name))} ({e(str(row.phase_card))})")
        parts.append(f"hkl: {e(relabel(str(row.hkl), four_index=four_index))}")
        if row.zone_axis:
            zone = relabel(str(row.zone_axis), four_index=four_index, direction=True)
            parts.append(f"zone axis: [{e(zone)}]")
        parts.append(f"score: {row.score:.3f}")
    if row.alternatives:
        alts = str(row.alternatives).split(" | ")
        parts.append("alternatives:<br>&nbsp;&nbsp;" + "<br>&nbsp;&nbsp;".join(e(a) for a in alts))
    return "<br>".join(parts)


#: Planes listed at most in the compact hover (the strongest first; the panel shows all).
HOVER_PLANES = 3


def _first(text: str, n: int = HOVER_PLANES) -> str:
    parts = [p for p in str(text).split(";") if p != ""]
    return ", ".join(parts[:n]) + (f" … (+{len(parts) - n})" if len(parts) > n else "")


def _hover_compact(row: Any, four_index: bool) -> str:
    """Phase, (hkl), d in nm and score: four short lines (the dashboard shows the rest on click)."""
    e = html.escape
    head = f"<b>#{int(row.window)}</b> "
    if _text(row.phase_name):
        head += f"{e(str(row.phase_name))} · {e(str(row.status))}"
        lines = [head, f"(hkl) {e(_first(relabel(str(row.hkl), four_index=four_index)))}"]
    else:
        lines = [head + e(window_category(row)[1])]
    if _text(row.spacings_nm):
        lines.append(f"d {e(_first(str(row.spacings_nm)))} nm")
    if _text(row.phase_name):
        lines.append(f"score {float(row.score):.2f}")
    return "<br>".join(lines)


def plane_map_figure(
    result: Any,
    image: np.ndarray | None = None,
    *,
    max_display_px: int = 1024,
    hover: str = "full",
    colors: dict[tuple[str, str], str] | None = None,
    cards: Any = None,
    card_ids: Iterable[str] | None = None,
    scale_bar: bool = True,
):
    """Interactive plane-distribution map (plotly).

    Parameters
    ----------
    result : AnalysisResult
    image : ndarray, shape (ny, nx), optional
        The analysed image, shown in grey underneath (downsampled for display if large).
    max_display_px : int, keyword-only
        Largest side of the displayed image [px].
    hover : {"full", "compact"}, keyword-only
        ``compact``: phase, (hkl), d [nm] and score only (the dashboard, which shows the rest in
        a panel when a window is clicked); ``full``: everything (standalone HTML).
    colors : dict, optional, keyword-only
        :func:`category_colors` shared by several maps (a series); default: this result's own.
    cards : CardDatabase, optional, keyword-only
        To label hexagonal phases in four-index notation.
    card_ids : iterable of str, optional, keyword-only
        All card ids of the database (resolves hue collisions the same way on every page).
    scale_bar : bool, keyword-only
        Draw an nm scale bar (needs the result's pixel size).

    Returns
    -------
    plotly.graph_objects.Figure
        Axes in image pixels (x right, y down). Trace ``"windows"`` is the category heatmap,
        ``"empty windows"`` the windows without spots, ``"window centres"`` the hover/click layer
        (``customdata`` = window index); then one legend entry per category, grouped by phase.
    """
    import plotly.graph_objects as go

    grid = result.grid
    ny, nx = grid.image_shape
    traces = [] if image is None else [_map_image_trace(image, max_display_px=max_display_px)]
    info = _categories(result, colors=colors, cards=cards, card_ids=card_ids)
    hexa = info["hexa"]
    rows = list(result.windows.itertuples(index=False))
    maker = _hover_compact if hover == "compact" else _hover_full
    text = np.asarray([maker(r, _text(r.phase_card) in hexa) for r in rows], dtype=object).reshape(
        grid.n_rows, grid.n_cols
    )
    traces += _map_window_traces(grid, info, text)
    traces += _map_legend_traces(info)
    fig = go.Figure(traces)
    if scale_bar:
        add_scale_bar(fig, width_px=nx, height_px=ny, pixel_size_nm=float(result.pixel_size_nm[1]))
    s = result.summary
    title = (
        f"{html.escape(str(result.name))}: crystallinity {s['crystallinity']:.3f} "
        f"({s['n_crystalline']}/{s['n_windows']} windows), w={grid.window_px}, s={grid.stride_px} px"
    )
    fig.update_layout(
        title=title,
        xaxis={"title": "x [px]", "range": [-0.5, nx - 0.5], "constrain": "domain"},
        yaxis={
            "title": "y [px]",
            "range": [ny - 0.5, -0.5],
            "scaleanchor": "x",
            "constrain": "domain",
        },
        legend={"title": {"text": "phase {plane family}"}, "groupclick": "toggleitem"},
        template="plotly_white",
        height=800,
    )
    return fig


def _map_image_trace(image: np.ndarray, *, max_display_px: int) -> Any:
    """The image in grey under the map (block-averaged to at most ``max_display_px``)."""
    import plotly.graph_objects as go

    small, f = display_image(image, max_display_px=max_display_px)
    return go.Image(
        source=_png_data_uri(small),
        x0=(f - 1) / 2.0,
        dx=f,
        y0=(f - 1) / 2.0,
        dy=f,
        hoverinfo="skip",
        name="image",
    )


def _map_window_traces(grid: Any, info: dict, text: np.ndarray) -> list[Any]:
    """Windows without spots (faint), the category heatmap and the hover/click layer.

    ``info``: :func:`_categories`; ``text``: hover text per window, shape (n_rows, n_cols).
    """
    import plotly.graph_objects as go

    centers = grid.centers
    geometry = {
        "x0": float(centers[0, 1]),
        "dx": grid.stride_px,
        "y0": float(centers[0, 0]),
        "dy": grid.stride_px,
    }
    traces = []
    empty_keys = info["empty_keys"]
    if empty_keys:
        traces.append(
            go.Heatmap(
                z=info["empty"],
                **geometry,
                colorscale=_discrete_scale(
                    [_rgba(STATUS_COLORS[k], EMPTY_TILE_ALPHA) for k in empty_keys]
                ),
                zmin=-0.5,
                zmax=len(empty_keys) - 0.5,
                showscale=False,
                hoverinfo="skip",
                hoverongaps=False,
                name="empty windows",
            )
        )
    k = max(len(info["labels"]), 1)
    traces.append(
        go.Heatmap(
            z=info["codes"],
            **geometry,
            text=text,
            hovertemplate="%{text}<extra></extra>",
            colorscale=_discrete_scale(
                [_rgba(c, TILE_ALPHA) for c in info["colors"]] or ["#000000"]
            ),
            zmin=-0.5,
            zmax=k - 0.5,
            showscale=False,
            hoverongaps=False,
            name="windows",
        )
    )
    # Hover and click layer over all windows (those without spots too).
    traces.append(
        go.Scatter(
            x=centers[:, 1],
            y=centers[:, 0],
            mode="markers",
            marker={"size": 5, "color": "rgba(255,255,255,0.35)"},
            text=text.ravel(),
            customdata=np.arange(grid.n_windows),
            hovertemplate="%{text}<extra></extra>",
            showlegend=False,
            name="window centres",
        )
    )
    return traces


def _map_legend_traces(info: dict) -> list[Any]:
    """One legend entry per category, grouped by phase, then the windows without a lattice."""
    import plotly.graph_objects as go

    names = info["names"]
    seen_groups: set[str] = set()
    traces = []
    for (group, _key), lab, col in zip(info["keys"], info["labels"], info["colors"], strict=True):
        title = "not indexed" if group == STATUS_GROUP else f"{names.get(group, group)} ({group})"
        first = group not in seen_groups
        seen_groups.add(group)
        traces.append(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"size": 12, "color": col, "symbol": "square"},
                name=lab,
                legendgroup=group,
                legendgrouptitle={"text": title} if first else None,
                showlegend=True,
            )
        )
    for key in info["empty_keys"]:
        traces.append(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={
                    "size": 12,
                    "color": STATUS_COLORS[key],
                    "symbol": "square-open" if key == "non-crystalline" else "square",
                },
                name=key,
                legendgroup="empty",
                legendgrouptitle={"text": "no lattice"},
                showlegend=True,
            )
        )
    return traces


def _discrete_scale(colors: Sequence[str]) -> list[list[Any]]:
    k = max(len(colors), 1)
    scale: list[list[Any]] = []
    for i, c in enumerate(colors):
        scale += [[i / k, c], [(i + 1) / k, c]]
    return scale


# --------------------------------------------------------------------------------------------
# A window's power spectrum
# --------------------------------------------------------------------------------------------
def place_labels(
    anchors: np.ndarray,
    texts: Sequence[str],
    *,
    char_w: float,
    line_h: float,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """Label positions that do not overlap: each label goes radially outward from its anchor.

    Labels are placed in order (the first ones get the closest places); for each, candidate
    centres along the outward direction and a few turned by +-40/80 degrees are tried at growing
    distances until its box (``len(text) * char_w`` by ``line_h``) overlaps no placed box and no
    ``avoid`` point.

    Parameters
    ----------
    anchors : ndarray, shape (n, 2)
        ``(x, y)`` of the labelled points (data units; the origin is the pattern's centre).
    texts : sequence of str
    char_w, line_h : float, keyword-only
        Width of one character and height of a line, in data units.
    avoid : ndarray, shape (m, 2), optional, keyword-only
        Points (other markers) no label box may cover.

    Returns
    -------
    ndarray, shape (n, 2)
        Centres of the label boxes.
    """
    anchors = np.asarray(anchors, dtype=float).reshape(-1, 2)
    pts = np.asarray(avoid if avoid is not None else np.zeros((0, 2)), float).reshape(-1, 2)
    placed: list[tuple[float, float, float, float]] = []
    out = np.zeros_like(anchors)
    for i, ((ax, ay), t) in enumerate(zip(anchors, texts, strict=True)):
        w = max(len(t), 1) * char_w
        h = line_h
        base = math.atan2(ay, ax) if (ax or ay) else -math.pi / 2
        best = None
        for step in range(1, 12):
            r = (0.6 + 0.75 * step) * h
            for turn in (0.0, 0.7, -0.7, 1.4, -1.4):
                a = base + turn
                cx = ax + math.cos(a) * (r + 0.5 * w * abs(math.cos(a)))
                cy = ay + math.sin(a) * r
                box = (cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2)
                if any(_overlap(box, b) for b in placed):
                    continue
                if pts.size and np.any(
                    (pts[:, 0] > box[0])
                    & (pts[:, 0] < box[1])
                    & (pts[:, 1] > box[2])
                    & (pts[:, 1] < box[3])
                ):
                    continue
                best = (cx, cy, box)
                break
            if best is not None:
                break
        if best is None:  # crowded: stack outward beyond everything placed
            cy = max([b[3] for b in placed] + [ay]) + h
            best = (ax, cy, (ax - w / 2, ax + w / 2, cy - h / 2, cy + h / 2))
        placed.append(best[2])
        out[i] = best[:2]
    return out


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def spectrum_axes(window_px: int, pixel_size_nm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(g_y, g_x)`` [1/nm] of the rows and columns of a ``w x w`` fftshifted spectrum."""
    py, px = (float(v) for v in pixel_size_nm)
    k = np.arange(window_px) - window_px // 2
    return k / (window_px * py), k / (window_px * px)


def _fft_crop(spectrum: np.ndarray, pixel_size_nm: Sequence[float], g_max: float):
    w = spectrum.shape[0]
    gy, gx = spectrum_axes(w, pixel_size_nm)
    sy = np.abs(gy) <= g_max
    sx = np.abs(gx) <= g_max
    crop = np.log1p(np.asarray(spectrum, dtype=np.float64)[np.ix_(sy, sx)])
    c = w // 2
    # The DC and its cross dominate the contrast: stretch on the rest.
    z = crop.copy()
    lo, hi = np.percentile(z, [5.0, 99.9])
    if c < spectrum.shape[0]:
        hi = max(hi, lo + 1e-9)
    return gy[sy], gx[sx], np.clip(z, lo, hi)


def fft_figure(
    spectrum: np.ndarray,
    *,
    pixel_size_nm: Sequence[float],
    g_max_nm_inv: float,
    spots: Sequence[tuple[str, float, float]] = (),
    rings: Sequence[tuple[str, float]] = (),
    predicted: Sequence[tuple[str, float, float]] = (),
    points: Sequence[tuple[float, float]] = (),
    color: str = "#ffd166",
    ring_color: str = "#8ecae6",
    title: str = "Power spectrum",
    height: int = 600,
    plot_px: int = 420,
    clickable: bool = True,
):
    """A window's power spectrum with axes in 1/nm (plotly, zoomable).

    Parameters
    ----------
    spectrum : ndarray, shape (w, w)
        Fftshifted ``|F|`` of the window (DC at ``(w // 2, w // 2)``).
    pixel_size_nm : (float, float), keyword-only
        ``(p_y, p_x)`` of the window [nm/px]: ``g = k / (w p)``.
    g_max_nm_inv : float, keyword-only
        Half-width of the shown region [1/nm] (e.g. ``1 / d_min``).
    spots : sequence of (label, gy, gx), keyword-only
        Detected spots [1/nm] (both of each Friedel pair, labelled once).
    rings : sequence of (label, d_nm), keyword-only
        Card spacings drawn as circles of radius ``1 / d``.
    predicted : sequence of (label, gy, gx), keyword-only
        The card's zone-axis pattern [1/nm] (open diamonds).
    points : sequence of (gy, gx), keyword-only
        Points picked for a measurement (crosses, joined to the centre).
    plot_px : int, keyword-only
        Smallest expected side of the plot area [px], to size labels so they never overlap.
    clickable : bool, keyword-only
        Add an invisible point per spectrum pixel (trace ``"pick"``, ``customdata = (gy, gx)``)
        so a click anywhere reports its position.

    Returns
    -------
    plotly.graph_objects.Figure
        x: g_x [1/nm] to the right, y: g_y [1/nm] downward (as the image's y).
    """
    import plotly.graph_objects as go

    gy, gx, z = _fft_crop(spectrum, pixel_size_nm, g_max_nm_inv)
    traces = [
        go.Heatmap(
            z=z,
            x=gx,
            y=gy,
            colorscale="gray",
            showscale=False,
            hovertemplate="g = (%{x:.2f}, %{y:.2f}) 1/nm<extra></extra>",
            name="spectrum",
        )
    ]
    if clickable:
        traces.append(_fft_pick_trace(gy, gx))
    shapes, ring_traces = _fft_rings(rings, g_max_nm_inv, ring_color)
    traces += ring_traces
    traces += _fft_marker_traces(spots, predicted, color, ring_color)
    # Data units per screen pixel: the square plot is as large as the smaller of the figure's
    # height and the page column (assumed at least ``plot_px``).
    unit = 2.0 * g_max_nm_inv / max(min(height - 90, plot_px), 100)
    annotations = _fft_label_annotations(spots, predicted, color, ring_color, unit=unit)
    if points:
        shapes += [
            {
                "type": "line",
                "x0": 0,
                "y0": 0,
                "x1": gx_,
                "y1": gy_,
                "line": {"color": "#00e5ff", "width": 1.5},
            }
            for gy_, gx_ in points
        ]
        traces.append(_fft_points_trace(points))
    # One figure from lists: adding shapes and annotations one by one re-validates the
    # whole layout each time (quadratic; 1 s for the first view's spectrum).
    fig = go.Figure(traces)
    if shapes:
        fig.update_layout(shapes=shapes)
    if annotations:
        fig.update_layout(annotations=annotations)
    _fft_layout(fig, title=title, height=height, g_max_nm_inv=g_max_nm_inv)
    return fig


def _fft_pick_trace(gy: np.ndarray, gx: np.ndarray) -> Any:
    """An invisible point per spectrum pixel (``customdata = (gy, gx)``, d on hover)."""
    import plotly.graph_objects as go

    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    return go.Scattergl(
        x=xx.ravel(),
        y=yy.ravel(),
        mode="markers",
        marker={"size": 6, "color": "rgba(0,0,0,0)"},
        customdata=np.stack([yy.ravel(), xx.ravel()], axis=1),
        hovertemplate="g = (%{x:.2f}, %{y:.2f}) 1/nm · d = %{text}<extra></extra>",
        text=[f"{1 / r:.4f} nm" if r > 0 else "-" for r in np.hypot(yy.ravel(), xx.ravel())],
        showlegend=False,
        name="pick",
    )


def _fft_rings(
    rings: Sequence[tuple[str, float]], g_max_nm_inv: float, ring_color: str
) -> tuple[list[dict], list[Any]]:
    """Card spacings as dotted circles of radius 1/d, and a hover line along each."""
    import plotly.graph_objects as go

    shapes: list[dict] = []
    traces: list[Any] = []
    t = np.linspace(0, 2 * np.pi, 73)
    for label, d in rings:
        r = 1.0 / float(d)
        if r > g_max_nm_inv * 1.42:
            continue
        shapes.append(
            {
                "type": "circle",
                "x0": -r,
                "x1": r,
                "y0": -r,
                "y1": r,
                "line": {"color": ring_color, "width": 1, "dash": "dot"},
                "layer": "above",
            }
        )
        # Its label on hover (a stack of ring labels would cover the spots): a thin line of
        # points along the circle.
        traces.append(
            go.Scatter(
                x=r * np.cos(t),
                y=r * np.sin(t),
                mode="lines",
                line={"color": "rgba(0,0,0,0)", "width": 6},
                hoverinfo="text",
                hovertext=f"ring {html.escape(label)}: d = {float(d):.4f} nm",
                name=f"ring {label}",
            )
        )
    return shapes, traces


def _fft_marker_traces(
    spots: Sequence[tuple[str, float, float]],
    predicted: Sequence[tuple[str, float, float]],
    color: str,
    ring_color: str,
) -> list[Any]:
    """Detected spots (open circles) and the card's zone-axis pattern (open diamonds)."""
    import plotly.graph_objects as go

    traces = []
    if spots:
        traces.append(
            go.Scatter(
                x=[s[2] for s in spots],
                y=[s[1] for s in spots],
                mode="markers",
                marker={"size": 13, "color": "rgba(0,0,0,0)", "line": {"color": color, "width": 2}},
                hovertext=[s[0] or f"d = {1 / math.hypot(s[1], s[2]):.4f} nm" for s in spots],
                hoverinfo="text",
                name="detected spots",
            )
        )
    if predicted:
        traces.append(
            go.Scatter(
                x=[p[2] for p in predicted],
                y=[p[1] for p in predicted],
                mode="markers",
                marker={
                    "size": 9,
                    "symbol": "diamond-open",
                    "color": ring_color,
                    "line": {"width": 1.5},
                },
                hovertext=[
                    f"card {p[0]}, d = {1 / math.hypot(p[1], p[2]):.4f} nm" for p in predicted
                ],
                hoverinfo="text",
                name="card pattern",
            )
        )
    return traces


def _fft_label_annotations(
    spots: Sequence[tuple[str, float, float]],
    predicted: Sequence[tuple[str, float, float]],
    color: str,
    ring_color: str,
    *,
    unit: float,
) -> list[dict]:
    """Labels of the spots and of the predicted reflections no spot names, placed apart.

    ``unit``: data units per screen pixel (labels are 7 px per character, 15 px high).
    """
    char_w, line_h = 7.0 * unit, 15.0 * unit
    near = 8.0 * unit

    def covered(y: float, x: float) -> bool:  # a detected spot already names this position
        return any(math.hypot(y - sy, x - sx) < near for _t, sy, sx in spots)

    all_labels = [(t, y, x, color) for t, y, x in spots if t] + [
        (t, y, x, ring_color) for t, y, x in predicted if t and not covered(y, x)
    ]
    if not all_labels:
        return []
    anchors = np.array([[x, y] for _t, y, x, _c in all_labels])
    marks = np.array([[s[2], s[1]] for s in spots] + [[p[2], p[1]] for p in predicted])
    pos = place_labels(
        anchors, [t for t, *_ in all_labels], char_w=char_w, line_h=line_h, avoid=marks
    )
    return [
        {
            "x": px_,
            "y": py_,
            "text": html.escape(t),
            "showarrow": False,
            "font": {"color": c, "size": 11},
            "bgcolor": "rgba(0,0,0,0.55)",
        }
        for (t, _y, _x, c), (px_, py_) in zip(all_labels, pos, strict=True)
    ]


def _fft_points_trace(points: Sequence[tuple[float, float]]) -> Any:
    """The points picked for a measurement (crosses)."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=[p[1] for p in points],
        y=[p[0] for p in points],
        mode="markers",
        marker={
            "size": 12,
            "symbol": "x-thin-open",
            "color": "#00e5ff",
            "line": {"width": 2},
        },
        name="measured",
        hoverinfo="skip",
    )


def _fft_layout(fig: Any, *, title: str, height: int, g_max_nm_inv: float) -> None:
    """Title, size, black background, square axes in 1/nm (g_y downward)."""
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=height,
        margin={"l": 60, "r": 10, "t": 40, "b": 50},
        showlegend=False,
        dragmode="zoom",
        plot_bgcolor="black",
    )
    lim = [-g_max_nm_inv, g_max_nm_inv]
    fig.update_xaxes(title="g<sub>x</sub> (1/nm)", range=lim, constrain="domain", zeroline=False)
    fig.update_yaxes(
        title="g<sub>y</sub> (1/nm, down)",
        range=lim[::-1],
        scaleanchor="x",
        scaleratio=1,
        constrain="domain",
        zeroline=False,
    )


def image_figure(
    image: np.ndarray,
    *,
    pixel_size_nm: float,
    title: str = "",
    colorscale: str = "gray",
    height: int = 420,
    line: tuple[tuple[float, float], tuple[float, float]] | None = None,
    max_display_px: int = 1024,
):
    """A real-space image (plotly heatmap, axes in px) with an nm scale bar.

    ``line``: ``((y0, x0), (y1, x1))`` [px] of a line profile, drawn on top.
    """
    import plotly.graph_objects as go

    small, f = display_image(np.asarray(image, dtype=np.float32), max_display_px=max_display_px)
    lo, hi = _contrast(small)
    ny, nx = np.asarray(image).shape
    fig = go.Figure(
        go.Heatmap(
            z=small,
            x0=(f - 1) / 2.0,
            dx=f,
            y0=(f - 1) / 2.0,
            dy=f,
            zmin=lo,
            zmax=hi,
            colorscale=colorscale,
            showscale=False,
            hovertemplate="x %{x:.0f}, y %{y:.0f} px<extra></extra>",
        )
    )
    if line is not None:
        (y0, x0), (y1, x1) = line
        fig.add_trace(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines+markers",
                line={"color": "#00e5ff", "width": 2},
                hoverinfo="skip",
            )
        )
    add_scale_bar(fig, width_px=nx, height_px=ny, pixel_size_nm=float(pixel_size_nm))
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=height,
        margin={"l": 4, "r": 4, "t": 30, "b": 4},
        showlegend=False,
    )
    fig.update_xaxes(visible=False, range=[-0.5, nx - 0.5], constrain="domain")
    fig.update_yaxes(
        visible=False, range=[ny - 0.5, -0.5], scaleanchor="x", scaleratio=1, constrain="domain"
    )
    return fig


# --------------------------------------------------------------------------------------------
# Static (publication) figures
# --------------------------------------------------------------------------------------------
#: Publication width [inch]: 180 mm, a double-column figure; PNG at :data:`PUBLICATION_DPI`.
PUBLICATION_WIDTH_IN = 180.0 / 25.4
PUBLICATION_DPI = 300


def figure_bytes(fig: Any, fmt: str = "png", *, dpi: int = PUBLICATION_DPI) -> bytes:
    """A matplotlib figure as PNG (``dpi``) or SVG bytes."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"format must be png or svg, got {fmt!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def _mpl_figure(width_in: float, height_in: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def plane_map_mpl(
    result: Any,
    image: np.ndarray | None,
    *,
    max_display_px: int = 1024,
    colors: dict[tuple[str, str], str] | None = None,
    cards: Any = None,
    card_ids: Iterable[str] | None = None,
    width_in: float = PUBLICATION_WIDTH_IN,
) -> Any:
    """Static plane map (matplotlib): image, coloured tiles, scale bar, legend grouped by phase."""
    from matplotlib.patches import Patch

    grid = result.grid
    ny, nx = grid.image_shape
    fig = _mpl_figure(width_in, width_in * 0.78)
    ax = fig.add_subplot(1, 1, 1)
    if image is not None:
        small, _f = display_image(image, max_display_px=max_display_px)
        lo, hi = _contrast(small)
        ax.imshow(small, cmap="gray", vmin=lo, vmax=hi, extent=(-0.5, nx - 0.5, ny - 0.5, -0.5))
    info = _categories(result, colors=colors, cards=cards, card_ids=card_ids)
    codes, labels, cols = info["codes"], info["labels"], info["colors"]
    rgba = np.zeros((*codes.shape, 4))
    for i, col in enumerate(cols):
        rgba[codes == i] = _hex_rgba(col, TILE_ALPHA)
    for i, key in enumerate(info["empty_keys"]):
        rgba[info["empty"] == i] = _hex_rgba(STATUS_COLORS[key], EMPTY_TILE_ALPHA)
    s = grid.stride_px
    c0 = grid.centers[0]
    ext = (
        c0[1] - s / 2.0,
        c0[1] + (grid.n_cols - 0.5) * s,
        c0[0] + (grid.n_rows - 0.5) * s,
        c0[0] - s / 2.0,
    )
    ax.imshow(rgba, extent=ext, interpolation="nearest")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")
    _scale_bar_mpl(ax, width_px=nx, height_px=ny, pixel_size_nm=float(result.pixel_size_nm[1]))
    summ = result.summary
    ax.set_title(
        f"{result.name}: crystallinity {summ['crystallinity']:.3f} "
        f"({summ['n_crystalline']}/{summ['n_windows']}), w={grid.window_px}, s={s} px",
        fontsize=10,
    )
    handles: list[Any] = []
    names = info["names"]
    last_group = None
    for (group, _k), lab, col in zip(info["keys"], labels, cols, strict=True):
        if group != last_group:
            title = (
                "not indexed" if group == STATUS_GROUP else f"{names.get(group, group)} ({group})"
            )
            handles.append(Patch(facecolor="none", edgecolor="none", label=title))
            last_group = group
        short = lab if group == STATUS_GROUP else lab.split(" ", 1)[-1] if "{" in lab else lab
        handles.append(Patch(facecolor=_hex_rgba(col, 0.85), label="   " + short))
    if info["empty_keys"]:
        handles.append(Patch(facecolor="none", edgecolor="none", label="no lattice"))
        for key in info["empty_keys"]:
            handles.append(
                Patch(
                    facecolor=_hex_rgba(STATUS_COLORS[key], 0.9), edgecolor="0.6", label="   " + key
                )
            )
    if handles:
        leg = ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            title="phase {plane family}",
            title_fontsize=8,
        )
        for text, h in zip(leg.get_texts(), handles, strict=True):
            if not h.get_label().startswith("   "):
                text.set_fontweight("bold")
    return fig


def plane_map_png(
    result: Any,
    image: np.ndarray | None,
    path: str | os.PathLike,
    *,
    max_display_px: int = 1024,
    dpi: int = 100,
    fmt: str = "png",
    cards: Any = None,
) -> Path:
    """Write the static plane map (:func:`plane_map_mpl`) as PNG (or SVG with ``fmt="svg"``)."""
    fig = plane_map_mpl(result, image, max_display_px=max_display_px, cards=cards, width_in=9.5)
    from hrtem_core._files import atomic_write

    return atomic_write(Path(path), lambda p: fig.savefig(p, format=fmt, dpi=dpi))


def fft_mpl(
    spectrum: np.ndarray,
    *,
    pixel_size_nm: Sequence[float],
    g_max_nm_inv: float,
    spots: Sequence[tuple[str, float, float]] = (),
    rings: Sequence[tuple[str, float]] = (),
    predicted: Sequence[tuple[str, float, float]] = (),
    title: str = "",
    width_in: float = 180.0 / 25.4 / 2,
) -> Any:
    """Static power spectrum (matplotlib) with axes in 1/nm, spots, card rings and pattern."""
    from matplotlib.patches import Circle

    gy, gx, z = _fft_crop(spectrum, pixel_size_nm, g_max_nm_inv)
    fig = _mpl_figure(width_in, width_in)
    ax = fig.add_subplot(1, 1, 1)
    dy = gy[1] - gy[0] if gy.size > 1 else 1.0
    dx = gx[1] - gx[0] if gx.size > 1 else 1.0
    ax.imshow(
        z,
        cmap="gray",
        extent=(gx[0] - dx / 2, gx[-1] + dx / 2, gy[-1] + dy / 2, gy[0] - dy / 2),
        interpolation="nearest",
    )
    for _label, d in rings:
        r = 1.0 / float(d)
        ax.add_patch(Circle((0, 0), r, fill=False, ls=":", lw=0.7, color="#8ecae6"))
    if rings:
        listed = ", ".join(f"{lab} {float(d):.4f}" for lab, d in rings)
        fig.text(0.01, 0.005, f"rings (d, nm): {listed}", fontsize=5.5, wrap=True)
    if predicted:
        ax.scatter(
            [p[2] for p in predicted],
            [p[1] for p in predicted],
            marker="D",
            s=18,
            facecolors="none",
            edgecolors="#8ecae6",
            lw=0.8,
        )
    if spots:
        ax.scatter(
            [s[2] for s in spots],
            [s[1] for s in spots],
            s=60,
            facecolors="none",
            edgecolors="#ffd166",
            lw=1.2,
        )
    unit = 2.0 * g_max_nm_inv / (width_in * 72 * 0.8)
    items = [(t, y, x, "#ffd166") for t, y, x in spots if t] + [
        (t, y, x, "#8ecae6") for t, y, x in predicted if t
    ]
    if items:
        pos = place_labels(
            np.array([[x, y] for _t, y, x, _c in items]),
            [t for t, *_ in items],
            char_w=4.6 * unit,
            line_h=9.0 * unit,
        )
        for (t, _y, _x, c), (px_, py_) in zip(items, pos, strict=True):
            ax.text(px_, py_, t, color=c, fontsize=6.5, ha="center", va="center")
    ax.set_xlim(-g_max_nm_inv, g_max_nm_inv)
    ax.set_ylim(g_max_nm_inv, -g_max_nm_inv)
    ax.set_xlabel("$g_x$ (1/nm)")
    ax.set_ylabel("$g_y$ (1/nm, down)")
    ax.set_title(title, fontsize=9)
    return fig


def image_mpl(
    image: np.ndarray,
    *,
    pixel_size_nm: float,
    title: str = "",
    cmap: str = "gray",
    width_in: float = 180.0 / 25.4 / 2,
    max_display_px: int = 2048,
) -> Any:
    """Static real-space image (matplotlib) with an nm scale bar, axes hidden."""
    small, _f = display_image(np.asarray(image, dtype=np.float32), max_display_px=max_display_px)
    ny, nx = np.asarray(image).shape
    fig = _mpl_figure(width_in, width_in * ny / nx + 0.3)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = _contrast(small)
    ax.imshow(small, cmap=cmap, vmin=lo, vmax=hi, extent=(-0.5, nx - 0.5, ny - 0.5, -0.5))
    _scale_bar_mpl(ax, width_px=nx, height_px=ny, pixel_size_nm=float(pixel_size_nm))
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return fig


def line_profile_mpl(
    distance_nm: np.ndarray,
    values: np.ndarray,
    *,
    period_nm: float | None = None,
    title: str = "",
    width_in: float = 180.0 / 25.4 / 2,
) -> Any:
    """Static line profile (matplotlib): intensity against distance [nm], period in the title."""
    fig = _mpl_figure(width_in, width_in * 0.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(distance_nm, values, lw=1.0, color="#1f4e79")
    ax.set_xlabel("distance along the line (nm)")
    ax.set_ylabel("intensity (a.u.)")
    extra = f"fringe period {period_nm:.4f} nm" if period_nm else ""
    ax.set_title(" · ".join(t for t in (title, extra) if t), fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# Defocus series
# --------------------------------------------------------------------------------------------
def _profile_frame(series: Any) -> pd.DataFrame:
    prof = series.profile
    return prof[pd.to_numeric(prof["defocus_nm"], errors="coerce").notna()]


def focus_ties(profile: pd.DataFrame) -> list[float]:
    """Defocus values [nm] of every image at the maximum crystallinity (sorted)."""
    p = profile[pd.to_numeric(profile["defocus_nm"], errors="coerce").notna()]
    c = pd.to_numeric(p["crystallinity"], errors="coerce")
    if c.notna().sum() == 0:
        return []
    top = c.max()
    return sorted(float(v) for v in p.loc[np.isclose(c, top, rtol=0, atol=1e-12), "defocus_nm"])


def profile_figure(series: Any):
    """Crystallinity (top) and crystalline area fraction (bottom) vs defocus (plotly).

    Small multiples sharing the defocus axis, with distinct line styles, so neither curve hides
    the other. Every image at the maximum crystallinity is starred (ties are visible); the best
    focus of :func:`hrtem_core.analysis.best_focus_nm` is the dashed line.

    Parameters
    ----------
    series : SeriesResult

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    prof = _profile_frame(series)
    has_area = "crystalline_area_fraction" in prof
    fig = make_subplots(
        rows=2 if has_area else 1,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.14,
        subplot_titles=(
            ("crystallinity (fraction of windows)", "crystalline area fraction")
            if has_area
            else None
        ),
    )
    fig.add_trace(
        go.Scatter(
            x=prof["defocus_nm"],
            y=prof["crystallinity"],
            mode="lines+markers",
            line={"color": "#1f77b4", "width": 2},
            marker={"symbol": "circle", "size": 8},
            name="crystallinity (fraction of windows)",
            text=prof["file"],
            hovertemplate="%{text}<br>defocus %{x:.1f} nm<br>crystallinity %{y:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if has_area:
        fig.add_trace(
            go.Scatter(
                x=prof["defocus_nm"],
                y=prof["crystalline_area_fraction"],
                mode="lines+markers",
                line={"dash": "dot", "color": "#ff7f0e", "width": 2},
                marker={"symbol": "square", "size": 7},
                name="crystalline area fraction",
                text=prof["file"],
                hovertemplate="%{text}<br>defocus %{x:.1f} nm<br>area fraction %{y:.3f}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    _add_focus_marks(fig, series, prof)
    fig.update_layout(
        title="Crystallinity vs defocus",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.18},
    )
    fig.update_yaxes(title="fraction", range=[0, 1.05])
    fig.update_xaxes(title="defocus [nm] (negative = underfocus)", row=2 if has_area else 1)
    return fig


def _add_focus_marks(fig: Any, series: Any, prof: pd.DataFrame) -> None:
    """The best focus (dashed line on every panel, named in the legend) and the tied maxima."""
    import plotly.graph_objects as go

    ties = focus_ties(prof)
    if series.best_focus_nm is not None:
        note = f" (of {len(ties)} tied)" if len(ties) > 1 else ""
        # The line on every panel; its label in the legend (never over a panel's title).
        fig.add_vline(x=series.best_focus_nm, line={"dash": "dash", "color": "#d62728"})
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"dash": "dash", "color": "#d62728"},
                name=f"best focus {series.best_focus_nm:g} nm{note}",
            ),
            row=1,
            col=1,
        )
    if ties:
        top = float(pd.to_numeric(prof["crystallinity"], errors="coerce").max())
        fig.add_trace(
            go.Scatter(
                x=ties,
                y=[top] * len(ties),
                mode="markers",
                marker={"size": 14, "symbol": "star", "color": "#d62728"},
                name="maximum crystallinity",
            ),
            row=1,
            col=1,
        )


def phase_fraction_figure(series: Any, *, card_ids: Iterable[str] | None = None):
    """Per-phase fraction of windows vs defocus (plotly), one line per phase in its own colour.

    Parameters
    ----------
    series : SeriesResult
    card_ids : iterable of str, optional, keyword-only
        All card ids of the database (see :func:`phase_color`); default the series' phases.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    from hrtem_core.analysis.series import fraction_column

    prof = _profile_frame(series)
    ids = list(card_ids) if card_ids is not None else [c for c, _ in series.phases]
    fig = go.Figure()
    for cid, name in series.phases:
        col = fraction_column(cid)
        if col not in prof:
            continue
        fig.add_trace(
            go.Scatter(
                x=prof["defocus_nm"],
                y=prof[col],
                mode="lines+markers",
                name=f"{name} ({cid})",
                line={"color": phase_color(cid, among=ids)},
                hovertemplate=f"{html.escape(name)}<br>defocus %{{x:.1f}} nm<br>fraction %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Phase fractions vs defocus (windows whose best match is the phase / all windows)",
        xaxis={"title": "defocus [nm] (negative = underfocus)"},
        yaxis={"title": "fraction of windows", "rangemode": "tozero"},
        template="plotly_white",
    )
    return fig


def write_html(fig: Any, path: str | os.PathLike) -> Path:
    """Write a plotly figure as a self-contained HTML file (plotly.js embedded, works offline)."""
    from hrtem_core._files import atomic_write

    return atomic_write(
        Path(path), lambda p: fig.write_html(str(p), include_plotlyjs=True, full_html=True)
    )


def profile_mpl(series: Any, *, width_in: float = 7.0) -> Any:
    """Static crystallinity / area fraction vs defocus (matplotlib), two panels, ties starred."""
    prof = _profile_frame(series)
    has_area = "crystalline_area_fraction" in prof
    fig = _mpl_figure(width_in, width_in * (0.8 if has_area else 0.55))
    axes = fig.subplots(2 if has_area else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(prof["defocus_nm"], prof["crystallinity"], "o-", color="#1f77b4", label="crystallinity")
    ties = focus_ties(prof)
    if ties:
        top = float(pd.to_numeric(prof["crystallinity"], errors="coerce").max())
        ax.plot(ties, [top] * len(ties), "*", ms=12, color="#d62728", label="maximum")
    if has_area:
        axes[1].plot(
            prof["defocus_nm"],
            prof["crystalline_area_fraction"],
            "s:",
            color="#ff7f0e",
            label="crystalline area fraction",
        )
        axes[1].set_ylabel("area fraction")
        axes[1].set_ylim(0, 1.05)
    if series.best_focus_nm is not None:
        note = f" (of {len(ties)} tied)" if len(ties) > 1 else ""
        for a in axes:
            a.axvline(series.best_focus_nm, color="#d62728", ls="--")
        ax.plot(
            [], [], "--", color="#d62728", label=f"best focus {series.best_focus_nm:g} nm{note}"
        )
    axes[-1].set_xlabel("defocus [nm] (negative = underfocus)")
    ax.set_ylabel("crystallinity")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Crystallinity vs defocus")
    return fig


def profile_png(series: Any, path: str | os.PathLike, *, dpi: int = 100, fmt: str = "png") -> Path:
    """Write :func:`profile_mpl` as PNG (or SVG with ``fmt="svg"``)."""
    fig = profile_mpl(series)
    from hrtem_core._files import atomic_write

    return atomic_write(Path(path), lambda p: fig.savefig(p, format=fmt, dpi=dpi))


__all__ = [
    "FAMILY_LIGHTNESS",
    "PHASE_HUES_DEG",
    "STATUS_COLORS",
    "UNINDEXED_COLOR",
    "UNINDEXED_LABEL",
    "add_scale_bar",
    "card_family_order",
    "category_colors",
    "display_image",
    "family_shades",
    "fft_figure",
    "fft_mpl",
    "figure_bytes",
    "focus_ties",
    "format_hkl",
    "image_figure",
    "image_mpl",
    "is_hexagonal",
    "line_profile_mpl",
    "miller_bravais",
    "miller_bravais_direction",
    "parse_hkl",
    "phase_color",
    "phase_colors",
    "phase_fraction_figure",
    "place_labels",
    "plane_map_categories",
    "plane_map_figure",
    "plane_map_mpl",
    "plane_map_png",
    "profile_figure",
    "profile_mpl",
    "profile_png",
    "relabel",
    "scale_bar_spec",
    "spectrum_axes",
    "window_category",
    "write_html",
]
