"""hrtem_core.figures: colours by phase, legends grouped by phase, labels, FFT axes, exports."""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hrtem_core import figures
from hrtem_core.windows import window_grid

CARD_IDS = ["39-1346", "19-0629", "33-0664", "29-0713", "44-1415", "34-1266", "13-0087"]


def _hue(color: str) -> float:
    c = color.lstrip("#")
    r, g, b = (int(c[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return colorsys.rgb_to_hls(r, g, b)[0] * 360


def _row(i, *, card="", name="", family="", status="unmatched", spacings="0.2500", pairs=1):
    return {
        "window": i,
        "row": i // 3,
        "col": i % 3,
        "y_px": 0.0,
        "x_px": 0.0,
        "crystalline": int(pairs > 0),
        "n_pairs": pairs,
        "spacings_nm": spacings if pairs else "",
        "directions_deg": "10.00" if pairs else "",
        "angles_deg": "",
        "snr": "9.0" if pairs else "",
        "phase_card": card,
        "phase_name": name,
        "hkl": family,
        "families": family,
        "plane_family": family,
        "zone_axis": "",
        "score": 0.8 if card else 0.0,
        "n_explained": int(bool(card)),
        "spacing_residuals_pct": "",
        "alternatives": "",
        "status": status if pairs else "no-spots",
        "sigma_nm": "0.001",  # a column added later: never read by position
    }


def _result(rows, *, name="test.tif"):
    grid = window_grid((96, 96), window_px=32, stride_px=32)  # 3 x 3 windows
    windows = pd.DataFrame(rows)
    n_cryst = int(windows["crystalline"].sum())
    return SimpleNamespace(
        name=name,
        grid=grid,
        windows=windows,
        pixel_size_nm=(0.05, 0.05),
        phases=pd.DataFrame({"card_id": CARD_IDS[:2], "name": ["maghemite", "magnetite"]}),
        summary={"crystallinity": n_cryst / 9, "n_crystalline": n_cryst, "n_windows": 9},
    )


ROWS = [
    _row(0, card="39-1346", name="maghemite", family="2 2 0", status="indexed"),
    _row(1, card="39-1346", name="maghemite", family="3 1 1", status="ambiguous"),
    _row(2, card="19-0629", name="magnetite", family="2 2 0", status="indexed"),
    _row(3, status="spacing-only"),
    _row(4, status="unmatched"),
    _row(5, pairs=0),
    _row(6, pairs=0),
    _row(7, card="39-1346", name="maghemite", family="2 2 0", status="indexed"),
    _row(8, pairs=0),
]


# ------------------------------------------------------------------------------- colours
def test_phase_colour_comes_from_the_card_id_not_from_the_order_seen():
    forward = figures.phase_colors(CARD_IDS)
    backward = figures.phase_colors(CARD_IDS[::-1])
    assert forward == backward
    assert len(set(forward.values())) == len(CARD_IDS)  # 7 phases, 10 hues: all distinct
    for cid in CARD_IDS:
        assert figures.phase_color(cid, among=CARD_IDS) == forward[cid]
    # Alone, a phase takes the hue its hash gives: the same in every run.
    assert figures.phase_color("39-1346") == figures.phase_color("39-1346", among=["39-1346"])
    hues = {round(_hue(c)) % 360 for c in forward.values()}
    assert hues <= {h % 360 for h in figures.PHASE_HUES_DEG}


def test_family_shades_stay_in_the_phase_hue():
    shades = figures.family_shades("39-1346", ["2 2 0", "3 1 1", "4 0 0", "1 1 1"])
    base = _hue(figures.phase_color("39-1346"))
    assert len(set(shades.values())) == 4
    for color in shades.values():
        assert abs((_hue(color) - base + 180) % 360 - 180) < 2.0
    # The same family keeps its shade whatever other families are present (no collision here).
    assert figures.family_shades("39-1346", ["3 1 1"])["3 1 1"] == shades["3 1 1"]


def test_status_colours_are_fixed_neutrals():
    assert set(figures.STATUS_COLORS) == {
        "unmatched",
        "spacing-only",
        "no-spots",
        "non-crystalline",
    }
    for color in figures.STATUS_COLORS.values():
        c = color.lstrip("#")
        assert c[0:2] == c[2:4] == c[4:6]  # grey
    assert len(set(figures.STATUS_COLORS.values())) == 4


def test_window_category_follows_the_phase_else_the_status():
    cats = [figures.window_category(SimpleNamespace(**r)) for r in ROWS]
    assert cats[0] == ("39-1346", "2 2 0") and cats[1] == ("39-1346", "3 1 1")
    assert cats[3] == (figures.STATUS_GROUP, "spacing-only")
    assert cats[4] == (figures.STATUS_GROUP, "unmatched")
    assert cats[5] == (figures.STATUS_GROUP, "no-spots")
    odd = SimpleNamespace(**dict(ROWS[4], status="something new"))
    assert figures.window_category(odd) == (figures.STATUS_GROUP, "unmatched")
    flat = SimpleNamespace(**dict(ROWS[4], status="weird", crystalline=0))
    assert figures.window_category(flat) == (figures.STATUS_GROUP, "non-crystalline")


# --------------------------------------------------------------------------- plane map
def test_plane_map_colours_and_grouped_legend():
    res = _result(ROWS)
    fig = figures.plane_map_figure(res, np.zeros((96, 96)), hover="compact")
    legend = [t for t in fig.data if getattr(t, "showlegend", None)]
    names = [t.name for t in legend]
    assert names == [
        "magnetite {2 2 0}",
        "maghemite {2 2 0}",
        "maghemite {3 1 1}",
        "spacing-only",
        "unmatched",
        "no-spots",
    ]
    groups = [t.legendgroup for t in legend]
    assert groups == ["19-0629", "39-1346", "39-1346", "not indexed", "not indexed", "empty"]
    titles = [t.legendgrouptitle.text for t in legend]
    assert titles[0] == "magnetite (19-0629)" and titles[1] == "maghemite (39-1346)"
    assert titles[2] is None  # one title per group
    colors = {t.name: t.marker.color for t in legend}
    assert colors["spacing-only"] == figures.STATUS_COLORS["spacing-only"]
    shades = figures.family_shades("39-1346", ["2 2 0", "3 1 1"], among=CARD_IDS[:2])
    assert colors["maghemite {3 1 1}"] == shades["3 1 1"]
    # The same phase {family} has the same colour in another image with other windows.
    other = _result([ROWS[7], ROWS[4]] + [_row(i, pairs=0) for i in range(2, 9)])
    fig2 = figures.plane_map_figure(other, None)
    c2 = {t.name: t.marker.color for t in fig2.data if getattr(t, "showlegend", None)}
    assert c2["maghemite {2 2 0}"] == colors["maghemite {2 2 0}"]
    # Compact hover: phase, (hkl), d in nm and score; nothing else.
    hover = next(t for t in fig.data if t.name == "windows").text[0][0]
    assert hover.count("<br>") == 3
    assert "maghemite" in hover and "(hkl) 2 2 0" in hover and "nm" in hover and "score" in hover
    assert "alternatives" not in hover and "zone axis" not in hover
    # Clicks report the window index.
    centres = next(t for t in fig.data if t.name == "window centres")
    assert list(centres.customdata) == list(range(9))
    # An nm scale bar: 96 px x 0.05 nm = 4.8 nm field -> a 0.5 nm bar of 10 px.
    bar = next(s for s in fig.layout.shapes if s.type == "rect")
    assert bar.x1 - bar.x0 == pytest.approx(10.0)
    assert any(a.text == "<b>0.5 nm</b>" for a in fig.layout.annotations)


def test_hexagonal_phases_are_labelled_in_four_index_notation():
    assert figures.miller_bravais((1, 0, 0)) == (1, 0, -1, 0)
    assert figures.miller_bravais((1, 1, 0)) == (1, 1, -2, 0)
    assert figures.miller_bravais((0, 1, 2)) == (0, 1, -1, 2)
    assert figures.miller_bravais_direction((1, 0, 0)) == (2, -1, -1, 0)
    assert figures.miller_bravais_direction((0, 0, 1)) == (0, 0, 0, 1)
    assert figures.miller_bravais_direction((1, 1, 0)) == (1, 1, -2, 0)
    assert figures.format_hkl((1, 1, 0), four_index=True) == "1 1 -2 0"
    assert figures.relabel("1 0 0;-;0 0 1", four_index=True) == "1 0 -1 0;-;0 0 0 1"
    from hrtem_core.cards import load_cards

    db = load_cards()
    hexagonal = {p.card_id for p in db.phases if figures.is_hexagonal(p)}
    assert {"33-0664", "13-0087"} <= hexagonal and "39-1346" not in hexagonal
    row = _row(0, card="13-0087", name="feroxyhyte", family="1 0 0", status="indexed")
    fig = figures.plane_map_figure(_result([row, *ROWS[1:]]), None, cards=db, hover="compact")
    names = [t.name for t in fig.data if getattr(t, "showlegend", None)]
    assert "feroxyhyte {1 0 -1 0}" in names
    assert "(hkl) 1 0 -1 0" in next(t for t in fig.data if t.name == "windows").text[0][0]


def test_static_map_exports_png_and_svg_with_scale_bar(tmp_path):
    res = _result(ROWS)
    fig = figures.plane_map_mpl(res, np.random.default_rng(0).random((96, 96)))
    png = figures.figure_bytes(fig, "png", dpi=100)
    svg = figures.figure_bytes(fig, "svg").decode("utf-8")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg and "0.5 nm" in svg and "maghemite (39-1346)" in svg
    from PIL import Image

    path = figures.plane_map_png(res, None, tmp_path / "map.png", dpi=50)
    with Image.open(path) as im:
        assert im.size[0] == pytest.approx(9.5 * 50, abs=2)


# -------------------------------------------------------------------------------- FFT
def test_fft_figure_has_axes_in_inverse_nm():
    w, p = 64, (0.02, 0.02)
    spec = np.ones((w, w))
    spec[32 - 8, 32 + 4] = 100.0  # k = (-8, +4) FFT px -> g = k / (w p)
    spots = [("(1 1 1)", -8 / (w * 0.02), 4 / (w * 0.02))]
    fig = figures.fft_figure(
        spec, pixel_size_nm=p, g_max_nm_inv=10.0, spots=spots, rings=[("d 0.2 nm", 0.2)]
    )
    heat = fig.data[0]
    assert heat.x[1] - heat.x[0] == pytest.approx(1 / (w * 0.02))
    iy, ix = np.unravel_index(np.argmax(heat.z), np.shape(heat.z))
    assert heat.y[iy] == pytest.approx(spots[0][1]) and heat.x[ix] == pytest.approx(spots[0][2])
    assert "1/nm" in fig.layout.xaxis.title.text
    ring = next(s for s in fig.layout.shapes if s.type == "circle")
    assert ring.x1 == pytest.approx(5.0)  # radius 1 / 0.2 nm
    pick = next(t for t in fig.data if t.name == "pick")
    assert np.asarray(pick.customdata).shape[1] == 2


def test_labels_do_not_overlap():
    # Twelve spots crowded on a small ring: every label box is disjoint from every other.
    a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    anchors = np.stack([np.cos(a), np.sin(a)], axis=1)
    texts = ["(1 1 -2 0)"] * 12
    pos = figures.place_labels(anchors, texts, char_w=0.05, line_h=0.12)
    boxes = [(x - 0.25, x + 0.25, y - 0.06, y + 0.06) for x, y in pos]
    for i in range(12):
        for j in range(i + 1, 12):
            assert not figures._overlap(boxes[i], boxes[j]), (i, j)
    # Each label sits outward of its spot.
    assert np.all(np.einsum("ij,ij->i", pos - anchors, anchors) > 0)


# ------------------------------------------------------------------------- defocus series
def _series(cryst):
    prof = pd.DataFrame(
        {
            "file": [f"f{i}" for i in range(len(cryst))],
            "defocus_nm": [-8.0, -4.0, 0.0, 4.0, 8.0][: len(cryst)],
            "crystallinity": cryst,
            "crystalline_area_fraction": [0.5] * len(cryst),
        }
    )
    from hrtem_core.analysis import best_focus_nm

    return SimpleNamespace(profile=prof, best_focus_nm=best_focus_nm(prof), phases=())


def test_profile_reports_ties_and_keeps_both_curves_visible():
    s = _series([0.2, 0.9, 0.9, 0.9, 0.1])
    assert figures.focus_ties(s.profile) == [-4.0, 0.0, 4.0]
    fig = figures.profile_figure(s)
    star = next(t for t in fig.data if t.name == "maximum crystallinity")
    assert list(star.x) == [-4.0, 0.0, 4.0]
    cryst, area = fig.data[0], fig.data[1]
    assert cryst.yaxis != area.yaxis  # small multiples: one panel each
    assert cryst.line.dash != area.line.dash and cryst.line.color != area.line.color
    assert any("best focus 0 nm (of 3 tied)" == t.name for t in fig.data)
    assert sum(1 for sh in fig.layout.shapes if sh.x0 == 0.0) == 2  # on both panels
    svg = figures.figure_bytes(figures.profile_mpl(s), "svg").decode()
    assert "of 3 tied" in svg
    json.loads(fig.to_json())


def test_phase_fraction_lines_use_the_phase_colour():
    prof = pd.DataFrame(
        {"file": ["a"], "defocus_nm": [0.0], "crystallinity": [0.5], "fraction_39-1346": [0.4]}
    )
    s = SimpleNamespace(profile=prof, best_focus_nm=0.0, phases=(("39-1346", "maghemite"),))
    fig = figures.phase_fraction_figure(s, card_ids=CARD_IDS)
    assert fig.data[0].line.color == figures.phase_colors(CARD_IDS)["39-1346"]
    assert math.isfinite(fig.data[0].y[0])


def test_family_shades_fixed_by_the_card_are_the_same_whatever_is_shown():
    from hrtem_core.cards import load_cards

    db = load_cards()
    maghemite = next(p for p in db.phases if p.card_id == "39-1346")
    order = figures.card_family_order(maghemite)
    assert order[0] == figures.format_hkl(
        max((r for r in maghemite.reflections if not r.forbidden), key=lambda r: r.d_nm).hkl
    )
    first = order[:9]
    every = figures.family_shades("39-1346", first, order=order)
    assert len(set(every.values())) == 9  # the card's first nine families: nine shades
    for fam in first:
        assert figures.family_shades("39-1346", [fam], order=order)[fam] == every[fam]


# ------------------------------------------------------------------ pins (issue 20 refactor)
#: Plotly JSON of figures built from fixed inputs, written before the long figure functions were
#: split into helpers (issue 20): the split must not change one value.
PIN_DIR = Path(__file__).resolve().parent / "data" / "figure_pins"


def _canonical(value):
    """Plotly JSON with arrays as lists and floats to 12 significant digits."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, np.ndarray):
        return _canonical(value.tolist())
    if isinstance(value, np.generic):
        return _canonical(value.item())
    if isinstance(value, float):
        return float(f"{value:.12g}") if math.isfinite(value) else str(value)
    return value


def _pin_spectrum():
    rng = np.random.default_rng(7)
    spec = rng.random((48, 48)) + 1.0
    spec[24 - 6, 24 + 3] = 80.0
    spec[24 + 6, 24 - 3] = 80.0
    return spec


def _pin_fft_full():
    w, p = 48, (0.02, 0.02)
    g = 1 / (w * 0.02)
    return figures.fft_figure(
        _pin_spectrum(),
        pixel_size_nm=p,
        g_max_nm_inv=12.0,
        spots=[("(1 1 1)", -6 * g, 3 * g), ("", 6 * g, -3 * g), ("(2 0 0)", 2 * g, 7 * g)],
        rings=[("{1 1 1}", 0.25), ("{2 0 0}", 0.21), ("far", 0.01)],
        predicted=[("(1 1 1)", -6 * g, 3 * g), ("(0 2 2)", -4 * g, -5 * g), ("", 1.0, 1.0)],
        points=[(1.5, 2.5), (-3.0, 1.0)],
        title="pinned <spectrum>",
    )


def _pin_fft_plain():
    return figures.fft_figure(
        _pin_spectrum(), pixel_size_nm=(0.03, 0.025), g_max_nm_inv=8.0, clickable=False
    )


def _pin_map_compact():
    image = np.random.default_rng(3).random((96, 96))
    return figures.plane_map_figure(_result(ROWS), image, hover="compact")


def _pin_map_full():
    return figures.plane_map_figure(_result(ROWS), None, card_ids=CARD_IDS)


def _pin_profile():
    return figures.profile_figure(_series([0.2, 0.9, 0.9, 0.9, 0.1]))


PINS = {
    "fft_full": _pin_fft_full,
    "fft_plain": _pin_fft_plain,
    "map_compact": _pin_map_compact,
    "map_full": _pin_map_full,
    "profile": _pin_profile,
}


@pytest.mark.parametrize("name", sorted(PINS))
def test_figures_are_unchanged_by_the_refactor(name, monkeypatch):
    import plotly.io as pio

    # The pins were written with plotly's own default template; importing streamlit (another
    # test in this process) makes its own template the default.
    monkeypatch.setattr(pio.templates, "default", "plotly")
    pinned = json.loads((PIN_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert _canonical(PINS[name]().to_plotly_json()) == pinned


def write_pins() -> None:  # run once by hand before a refactor: python -c "..."
    import plotly.io as pio

    pio.templates.default = "plotly"
    PIN_DIR.mkdir(parents=True, exist_ok=True)
    for name, make in PINS.items():
        text = json.dumps(_canonical(make().to_plotly_json()), sort_keys=True, indent=0)
        (PIN_DIR / f"{name}.json").write_text(text + "\n", encoding="utf-8")
