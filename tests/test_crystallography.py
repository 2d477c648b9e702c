"""Known-answer tests of hrtem_core.crystallography: metric tensors against the method's closed
forms (eqs. 2-5 of the supplementary ESI-3), textbook values, gemmi, and symmetry bookkeeping."""

from __future__ import annotations

import math

import gemmi
import numpy as np
import pytest

from hrtem_core.crystallography import (
    UnitCell,
    family_members,
    interplanar_angle_deg,
    is_centring_absent,
    is_forbidden,
    reflection_families,
    resolve_space_group,
    zone_reflections,
)
from hrtem_core.errors import AnalysisParameterError, CardDatabaseError

# --------------------------------------------------------------------------------------------
# Closed forms written out independently of the library (lengths in nm)
# --------------------------------------------------------------------------------------------


def cos_orthorhombic(h1, h2, a, b, c):  # eq. (2)
    num = h1[0] * h2[0] / a**2 + h1[1] * h2[1] / b**2 + h1[2] * h2[2] / c**2
    n1 = h1[0] ** 2 / a**2 + h1[1] ** 2 / b**2 + h1[2] ** 2 / c**2
    n2 = h2[0] ** 2 / a**2 + h2[1] ** 2 / b**2 + h2[2] ** 2 / c**2
    return num / math.sqrt(n1 * n2)


def cos_cubic(h1, h2):  # eq. (3)
    num = h1[0] * h2[0] + h1[1] * h2[1] + h1[2] * h2[2]
    return num / math.sqrt(sum(x * x for x in h1) * sum(x * x for x in h2))


def cos_hexagonal(h1, h2, a, c):  # eq. (4), three-index (hkl) in hexagonal axes
    f = 3 * a**2 / (4 * c**2)
    num = h1[0] * h2[0] + h1[1] * h2[1] + 0.5 * (h1[0] * h2[1] + h2[0] * h1[1]) + f * h1[2] * h2[2]
    n1 = h1[0] ** 2 + h1[1] ** 2 + h1[0] * h1[1] + f * h1[2] ** 2
    n2 = h2[0] ** 2 + h2[1] ** 2 + h2[0] * h2[1] + f * h2[2] ** 2
    return num / math.sqrt(n1 * n2)


def cos_tetragonal(h1, h2, a, c):  # eq. (5)
    num = (h1[0] * h2[0] + h1[1] * h2[1]) / a**2 + h1[2] * h2[2] / c**2
    n1 = (h1[0] ** 2 + h1[1] ** 2) / a**2 + h1[2] ** 2 / c**2
    n2 = (h2[0] ** 2 + h2[1] ** 2) / a**2 + h2[2] ** 2 / c**2
    return num / math.sqrt(n1 * n2)


def d_closed(system, hkl, a, b, c, beta_deg=90.0):
    h, k, l = hkl  # noqa: E741 - Miller indices
    if system == "cubic":
        return a / math.sqrt(h * h + k * k + l * l)
    if system == "tetragonal":
        return 1 / math.sqrt((h * h + k * k) / a**2 + l * l / c**2)
    if system == "orthorhombic":
        return 1 / math.sqrt(h * h / a**2 + k * k / b**2 + l * l / c**2)
    if system == "hexagonal":
        return 1 / math.sqrt(4 / 3 * (h * h + h * k + k * k) / a**2 + l * l / c**2)
    if system == "monoclinic":  # b unique
        sb = math.sin(math.radians(beta_deg))
        cb = math.cos(math.radians(beta_deg))
        inv = (
            h * h / a**2 + k * k * sb**2 / b**2 + l * l / c**2 - 2 * h * l * cb / (a * c)
        ) / sb**2
        return 1 / math.sqrt(inv)
    raise AssertionError(system)


def random_cell(rng, system):
    a, b, c = rng.uniform(0.25, 2.0, size=3)
    if system == "cubic":
        return UnitCell(a, a, a), (a, a, a)
    if system == "tetragonal":
        return UnitCell(a, a, c), (a, a, c)
    if system == "orthorhombic":
        return UnitCell(a, b, c), (a, b, c)
    if system == "hexagonal":
        return UnitCell(a, a, c, 90, 90, 120), (a, a, c)
    raise AssertionError(system)


def random_hkl(rng, n):
    out = rng.integers(-6, 7, size=(n, 3))
    out[~out.any(axis=1)] = (1, 0, 0)
    return out


SYSTEMS = ("cubic", "tetragonal", "orthorhombic", "hexagonal")


@pytest.mark.parametrize("system", SYSTEMS)
def test_general_angle_matches_closed_forms(system, rng):
    """The metric-tensor angle agrees with eqs. (2)-(5) to 1e-9 deg over random cells and pairs."""
    n_checked = 0
    for _ in range(20):
        cell, (a, b, c) = random_cell(rng, system)
        h1s, h2s = random_hkl(rng, 50), random_hkl(rng, 50)
        for h1, h2 in zip(h1s.tolist(), h2s.tolist(), strict=True):
            if system == "cubic":
                cos = cos_cubic(h1, h2)
            elif system == "tetragonal":
                cos = cos_tetragonal(h1, h2, a, c)
            elif system == "orthorhombic":
                cos = cos_orthorhombic(h1, h2, a, b, c)
            else:
                cos = cos_hexagonal(h1, h2, a, c)
            if abs(cos) > 1 - 1e-9:  # (anti)parallel: acos is ill-conditioned there
                continue
            expected = math.degrees(math.acos(cos))
            assert cell.angle_deg(h1, h2) == pytest.approx(expected, abs=1e-9)
            assert interplanar_angle_deg(cell, h1, h2, acute=True) == pytest.approx(
                min(expected, 180 - expected), abs=1e-9
            )
            n_checked += 1
    assert n_checked > 900


@pytest.mark.parametrize("system", SYSTEMS)
def test_d_spacing_matches_closed_forms_and_gemmi(system, rng):
    for _ in range(10):
        cell, (a, b, c) = random_cell(rng, system)
        hkl = random_hkl(rng, 40)
        d = cell.d_spacing_nm(hkl)
        assert d.shape == (40,)
        expected = [d_closed(system, h, a, b, c) for h in hkl.tolist()]
        np.testing.assert_allclose(d, expected, rtol=1e-12)
        g = cell.to_gemmi()
        np.testing.assert_allclose(d, [g.calculate_d(h) / 10 for h in hkl.tolist()], rtol=1e-10)


def test_monoclinic_and_triclinic_against_gemmi(rng):
    cell = UnitCell(0.52, 0.91, 0.73, 90, 103.5, 90)
    hkl = random_hkl(rng, 50)
    expected = [d_closed("monoclinic", h, 0.52, 0.91, 0.73, 103.5) for h in hkl.tolist()]
    np.testing.assert_allclose(cell.d_spacing_nm(hkl), expected, rtol=1e-12)
    tri = UnitCell(0.51, 0.62, 0.73, 81.0, 97.0, 112.0)
    g = tri.to_gemmi()
    np.testing.assert_allclose(
        tri.d_spacing_nm(hkl), [g.calculate_d(h) / 10 for h in hkl.tolist()], rtol=1e-10
    )


def test_textbook_silicon():
    si = UnitCell.from_angstrom(5.4309, 5.4309, 5.4309)
    # textbook 0.31356 nm (0.54309 / sqrt(3) = 0.313553: agrees to the last quoted digit)
    assert si.d_spacing_nm((1, 1, 1)) == pytest.approx(0.31356, abs=1e-5)
    assert si.d_spacing_nm((1, 1, 1)) == pytest.approx(0.54309 / math.sqrt(3), rel=1e-14)
    assert si.angle_deg((1, 1, 1), (1, -1, 1)) == pytest.approx(70.53, abs=0.005)
    assert si.angle_deg((1, 0, 0), (1, 1, 0)) == pytest.approx(45.0, abs=1e-12)
    assert si.angle_deg((1, 1, 1), (-1, -1, -1)) == pytest.approx(180.0, abs=1e-6)
    assert interplanar_angle_deg(si, (1, 1, 1), (-1, -1, 1), acute=True) == pytest.approx(
        70.53, abs=0.005
    )
    assert si.zone_axis((1, 1, 1), (1, -1, 1)) == (1, 0, -1)
    assert si.zone_axis((2, 2, 0), (0, 0, 4)) == (1, -1, 0)


def test_hexagonal_textbook_angles():
    hem = UnitCell.from_angstrom(5.0356, 5.0356, 13.7489, 90, 90, 120)
    # (100) and (010) normals in hexagonal axes are 60 deg apart; (110) and (1-10) 90 deg
    assert hem.angle_deg((1, 0, 0), (0, 1, 0)) == pytest.approx(60.0, abs=1e-9)
    assert hem.angle_deg((1, 1, 0), (1, -1, 0)) == pytest.approx(90.0, abs=1e-9)
    assert hem.d_spacing_nm((1, 1, 0)) == pytest.approx(0.50356 / 2, rel=1e-12)
    assert hem.d_spacing_nm((0, 0, 6)) == pytest.approx(1.37489 / 6, rel=1e-12)


def test_cartesian_bases_are_dual(rng):
    cell = UnitCell(0.51, 0.62, 0.73, 81.0, 97.0, 112.0)
    a = cell.direct_matrix
    b = cell.b_matrix
    np.testing.assert_allclose(a.T @ b, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(a.T @ a, cell.real_metric, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.T @ b, cell.reciprocal_metric, rtol=1e-12, atol=1e-12)
    assert a[1, 0] == 0 and a[2, 0] == 0 and a[2, 1] == 0  # a along x, b in xy
    hkl = random_hkl(rng, 30)
    g = cell.reciprocal_cartesian(hkl)
    assert g.shape == (30, 3)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1 / cell.d_spacing_nm(hkl), rtol=1e-12)
    uvw = random_hkl(rng, 30)
    r = cell.direct_cartesian(uvw)
    # g(hkl) . r(uvw) = h u + k v + l w (no 2 pi)
    np.testing.assert_allclose(np.sum(g * r, axis=1), np.sum(hkl * uvw, axis=1), atol=1e-9)
    assert cell.volume_nm3 == pytest.approx(abs(np.linalg.det(a)), rel=1e-12)


def test_zone_axis_obeys_weiss_law(rng):
    cell = UnitCell(0.51, 0.62, 0.73, 81.0, 97.0, 112.0)
    h1s, h2s = random_hkl(rng, 100), random_hkl(rng, 100)
    n = 0
    for h1, h2 in zip(h1s.tolist(), h2s.tolist(), strict=True):
        if not np.cross(h1, h2).any():
            with pytest.raises(AnalysisParameterError, match="parallel"):
                cell.zone_axis(h1, h2)
            continue
        uvw = cell.zone_axis(h1, h2)
        assert np.dot(uvw, h1) == 0 and np.dot(uvw, h2) == 0
        assert math.gcd(math.gcd(abs(uvw[0]), abs(uvw[1])), abs(uvw[2])) == 1
        # the zone axis is perpendicular to both g vectors in Cartesian space
        r = cell.direct_cartesian(uvw)
        g = cell.reciprocal_cartesian([h1, h2])
        np.testing.assert_allclose(g @ r, 0, atol=1e-9)
        n += 1
    assert n > 90


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(a_nm=-0.5, b_nm=0.5, c_nm=0.5), "a_nm must be a positive"),
        (dict(a_nm=0.5, b_nm=0.0, c_nm=0.5), "b_nm must be a positive"),
        (dict(a_nm=0.5, b_nm=0.5, c_nm=float("nan")), "finite"),
        (dict(a_nm=0.5, b_nm=0.5, c_nm=0.5, gamma_deg=180.0), "between 0 and 180"),
        (
            dict(a_nm=0.5, b_nm=0.5, c_nm=0.5, alpha_deg=120, beta_deg=120, gamma_deg=120),
            "real cell",
        ),
        (dict(a_nm="0.5", b_nm=0.5, c_nm=0.5), "must be a number"),
        # found by hypothesis: a positive but absurd length underflowed the metric tensor
        (dict(a_nm=0.5, b_nm=0.5, c_nm=1.75e-167), r"c_nm must lie between 0.01 and 1000 nm"),
        (dict(a_nm=2000.0, b_nm=0.5, c_nm=0.5), r"a_nm must lie between 0.01 and 1000 nm"),
    ],
)
def test_invalid_cells_are_refused(kwargs, match):
    with pytest.raises(CardDatabaseError, match=match):
        UnitCell(**kwargs)


def test_zero_hkl_is_refused():
    cell = UnitCell(0.5, 0.5, 0.5)
    with pytest.raises(AnalysisParameterError):
        cell.d_spacing_nm((0, 0, 0))
    with pytest.raises(AnalysisParameterError):
        cell.angle_deg((0, 0, 0), (1, 0, 0))
    with pytest.raises(AnalysisParameterError):
        cell.zone_axis((1.5, 0, 0), (0, 1, 0))


# --------------------------------------------------------------------------------------------
# Space groups and reflections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "number", "xhm"),
    [
        ("P4₁32", 213, "P 41 3 2"),
        ("P4132", 213, "P 41 3 2"),
        ("P 41 3 2", 213, "P 41 3 2"),
        ("Fd-3m", 227, "F d -3 m:1"),
        ("Fd3\u0305m", 227, "F d -3 m:1"),
        ("Fd\u22123m", 227, "F d -3 m:1"),
        ("R-3c", 167, "R -3 c:H"),
        ("R -3 c:H", 167, "R -3 c:H"),
        ("R-3c (hexagonal axes)", 167, "R -3 c:H"),
        ("R-3c:R", 167, "R -3 c:R"),
        ("Pbnm", 62, "P b n m"),
        ("Pnma", 62, "P n m a"),
        ("Cmcm", 63, "C m c m"),
        ("I4/m", 87, "I 4/m"),
        ("P-3m1", 164, "P -3 m 1"),
        ("227", 227, "F d -3 m:1"),
        (167, 167, "R -3 c:H"),
    ],
)
def test_space_group_names(name, number, xhm):
    sg = resolve_space_group(name)
    assert sg.number == number
    assert sg.xhm() == xhm


@pytest.mark.parametrize("name", ["Xyz", "", "P 7", "231", "0", "Fd-3q", True])
def test_unknown_space_group(name):
    with pytest.raises(CardDatabaseError, match="unknown space group"):
        resolve_space_group(name)


MAGNETITE = UnitCell.from_angstrom(8.396, 8.396, 8.396)
MAGHEMITE = UnitCell.from_angstrom(8.3515, 8.3515, 8.3515)
HEMATITE = UnitCell.from_angstrom(5.0356, 5.0356, 13.7489, 90, 90, 120)


def test_spinel_fd3m_families():
    allowed = reflection_families(MAGNETITE, "Fd-3m", include_forbidden=False)
    labels = [r.hkl for r in allowed[:10]]
    assert labels == [
        (1, 1, 1),
        (2, 2, 0),
        (3, 1, 1),
        (2, 2, 2),
        (4, 0, 0),
        (3, 3, 1),
        (4, 2, 2),
        (5, 1, 1),
        (3, 3, 3),
        (4, 4, 0),
    ]
    mult = {r.hkl: r.multiplicity for r in allowed}
    assert mult[(1, 1, 1)] == 8 and mult[(2, 2, 0)] == 12 and mult[(3, 1, 1)] == 24
    assert mult[(4, 0, 0)] == 6 and mult[(5, 3, 1)] == 48
    assert all(not r.forbidden and r.source == "computed" for r in allowed)
    full = reflection_families(MAGNETITE, "Fd-3m")
    forbidden = {r.hkl for r in full if r.forbidden}
    # d-glide absences: kept, flagged (double diffraction makes them visible in thick particles)
    assert {(2, 0, 0), (6, 0, 0), (4, 2, 0)} <= forbidden
    # F-centring absences (mixed parity) are not lattice vectors: never listed
    assert all(len({x % 2 for x in r.hkl}) == 1 for r in full)
    assert (1, 0, 0) not in {r.hkl for r in full}
    d = [r.d_nm for r in full]
    assert np.all(np.diff(d) <= 1e-12) and min(d) >= 0.1


def test_maghemite_p4132_superstructure():
    fam = {r.hkl: r for r in reflection_families(MAGHEMITE, "P4₁32")}
    for hkl in [(1, 1, 0), (2, 1, 0), (2, 1, 1)]:  # weak superstructure spots: allowed
        assert hkl in fam and not fam[hkl].forbidden
    for hkl in [(1, 0, 0), (2, 0, 0), (3, 0, 0)]:  # 4_1 screw: h00 with h != 4n
        assert fam[hkl].forbidden
    assert not fam[(4, 0, 0)].forbidden
    assert fam[(2, 1, 0)].multiplicity == 24  # Laue class m-3m
    assert fam[(3, 1, 1)].d_nm == pytest.approx(0.83515 / math.sqrt(11), rel=1e-12)


def test_hematite_r3c_hexagonal_axes():
    refl = reflection_families(HEMATITE, "R-3c", include_forbidden=False)
    assert [r.hkl for r in refl[:8]] == [
        (0, 1, 2),
        (1, 0, 4),
        (1, 1, 0),
        (0, 0, 6),
        (1, 1, 3),
        (2, 0, 2),
        (0, 2, 4),
        (1, 1, 6),
    ]
    full = reflection_families(HEMATITE, "R-3c")
    assert all((-r.hkl[0] + r.hkl[1] + r.hkl[2]) % 3 == 0 for r in full)  # obverse R centring
    forbidden = {r.hkl for r in full if r.forbidden}
    assert (0, 0, 3) in forbidden  # 00l: l = 6n
    mult = {r.hkl: r.multiplicity for r in full}
    assert mult[(1, 1, 0)] == 6 and mult[(0, 0, 6)] == 2 and mult[(1, 0, 4)] == 6


def test_family_members_share_d_and_count_multiplicity():
    for cell, sg in [(MAGNETITE, "Fd-3m"), (HEMATITE, "R-3c"), (MAGHEMITE, "P4132")]:
        for r in reflection_families(cell, sg)[:25]:
            members = family_members(sg, r.hkl)
            assert members[0] == r.hkl
            assert len(members) == len(set(members)) == r.multiplicity
            np.testing.assert_allclose(cell.d_spacing_nm(members), r.d_nm, rtol=1e-12)
            assert tuple(-x for x in r.hkl) in members  # Friedel mate
            # every member has the same absence status
            assert len({is_forbidden(sg, m) for m in members}) == 1


def test_forbidden_flags_agree_with_gemmi():
    ops = gemmi.find_spacegroup_by_name("P b n m").operations()
    goe = UnitCell.from_angstrom(4.608, 9.956, 3.0215)
    for r in reflection_families(goe, "Pbnm", d_min_nm=0.15):
        assert r.forbidden == ops.is_systematically_absent(list(r.hkl))
    assert is_centring_absent("Cmcm", (1, 0, 0)) and not is_centring_absent("Cmcm", (1, 1, 0))
    assert is_forbidden("Fd-3m", (2, 0, 0)) and not is_forbidden("Fd-3m", (1, 0, 0))


def test_zone_reflections_weiss_law_and_forbidden():
    rows = zone_reflections(MAGNETITE, "Fd-3m", (1, 1, 0), d_min_nm=0.2)
    hkls = [h for h, _ in rows]
    assert all(h[0] + h[1] == 0 for h in hkls)
    assert {(1, -1, 1), (-1, 1, -1), (2, -2, 0), (0, 0, 4)} <= set(hkls)
    assert (0, 0, 2) not in hkls
    with_forbidden = [
        h
        for h, _ in zone_reflections(
            MAGNETITE, "Fd-3m", (1, 1, 0), d_min_nm=0.2, include_forbidden=True
        )
    ]
    assert (0, 0, 2) in with_forbidden and (0, 0, -2) in with_forbidden
    d = [dd for _, dd in rows]
    assert np.all(np.diff(d) <= 1e-12)
    for h, dd in rows:
        assert dd == pytest.approx(MAGNETITE.d_spacing_nm(h), rel=1e-12)
    with pytest.raises(AnalysisParameterError):
        zone_reflections(MAGNETITE, "Fd-3m", (0, 0, 0))


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), "0.1", True])
def test_bad_d_min(bad):
    with pytest.raises(AnalysisParameterError, match="d_min_nm"):
        reflection_families(MAGNETITE, "Fd-3m", d_min_nm=bad)
