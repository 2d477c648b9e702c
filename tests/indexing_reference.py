"""A plain reference implementation of the indexing search, for tests only.

It enumerates the hypotheses of :mod:`hrtem_core.indexing` one by one with Python loops (phase,
reference plane among the strongest, its candidate families, every zone axis up to the index
limit, both viewing senses), computes each member's direction about the zone axis from the cell
directly, assigns every other plane the cheapest in-zone member, and scores with the module's
odds formulas. The production search (whole-array look-ups in sorted tables) must give the same
best hypothesis per phase and window.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from hrtem_core import indexing as ix


def _zones(k: int) -> list[tuple[int, int, int]]:
    out = set()
    for u, v, w in itertools.product(range(-k, k + 1), repeat=3):
        if (u, v, w) != (0, 0, 0):
            out.add(ix._reduce((u, v, w)))
    return sorted(out)


def _can_appear(pt: ix.PhaseTable, m: int, z: tuple[int, int, int], include_forbidden: bool):
    """(can appear, log10 penalty) of member row ``m`` in zone ``z``."""
    if not pt.family_forbidden[pt.member_family[m]]:
        return True, 0.0
    if ix._dd_ok(pt, pt.member_hkl[m], z):
        return True, 0.0
    if include_forbidden:
        return True, math.log10(1.0 / ix.FORBIDDEN_WEIGHT)
    return False, 0.0


def _effective_intensity(pt: ix.PhaseTable, f: int, z: tuple[int, int, int]) -> float:
    """Kinematic intensity of family ``f`` in zone ``z``; for a forbidden family, the best that
    double diffraction gives any of its members in the zone (0 if none)."""
    if not pt.family_forbidden[f]:
        return float(pt.family_intensity[f])
    best = 0.0
    for mm in range(len(pt.member_hkl)):
        if int(pt.member_family[mm]) == f and int(np.dot(pt.member_hkl[mm], z)) == 0:
            dd = ix._dd_intensity(pt, pt.member_hkl[mm], z)
            if dd is not None:
                best = max(best, dd)
    return best


def best_per_phase(planes, pt: ix.PhaseTable, tables: ix.IndexingTables) -> tuple | None:
    """The best hypothesis of one phase for one window: ``(log10 odds, n_explained, zone,
    {plane: member row})``, or None."""
    n = len(planes)
    if n < 2:
        return None
    tol, tol_a = tables.spacing_tol, tables.angle_tol_deg
    d = np.array([p.spacing_nm for p in planes])
    phi = np.array([p.angle_deg for p in planes])
    sr = np.array([p.spacing_sigma_rel for p in planes])
    sa = np.array([p.direction_sigma_deg for p in planes])
    rank = sorted(range(n), key=lambda k: (-planes[k].intensity, k))
    refs = rank[: ix.MAX_REFERENCES]
    ln_rho = np.log(ix._family_density(pt, d, math.log1p(tol)))
    # The zones spanned by two non-parallel reflections of the phase, max index <= the limit.
    spanned = {tuple(int(v) for v in z) for z in pt.zones}
    zones = [z for z in _zones(tables.max_zone_index) if z in spanned]
    # Members of the families within the spacing tolerance of each plane.
    cand_members = []
    for j in range(n):
        rows_j = []
        for f, (a, b) in enumerate(pt.family_slices):
            if abs((d[j] - pt.family_d_nm[f]) / pt.family_d_nm[f]) <= tol:
                rows_j.extend(range(a, b))
        cand_members.append(rows_j)
    best = None
    for i in refs:
        for fa in range(len(pt.family_hkl)):
            ra = (d[i] - pt.family_d_nm[fa]) / pt.family_d_nm[fa]
            if abs(ra) > tol:
                continue
            rep_row = pt.family_slices[fa][0]
            h_a = pt.member_hkl[rep_row]
            for z in zones:
                if int(np.dot(h_a, z)) != 0:
                    continue
                ok_a, pen_a = _can_appear(pt, rep_row, z, tables.include_forbidden)
                if not ok_a:
                    continue
                n_z = np.asarray(pt.cell.direct_cartesian(np.asarray(z, dtype=float)))
                n_z = n_z / np.linalg.norm(n_z)
                g_a = pt.member_g[rep_row]
                for sgn in (1, -1):
                    rows = {}
                    for j in range(n):
                        if j == i:
                            continue
                        target = (sgn * (phi[j] - phi[i])) % 180.0
                        best_j = None
                        for m in cand_members[j]:
                            if m == rep_row or int(np.dot(pt.member_hkl[m], z)) != 0:
                                continue
                            fc = int(pt.member_family[m])
                            rc = (d[j] - pt.family_d_nm[fc]) / pt.family_d_nm[fc]
                            if abs(rc) > tol:
                                continue
                            ok_c, pen_c = _can_appear(pt, m, z, tables.include_forbidden)
                            if not ok_c:
                                continue
                            g_c = pt.member_g[m]
                            psi = math.degrees(
                                math.atan2(float(np.cross(g_a, g_c) @ n_z), float(g_a @ g_c))
                            )
                            delta = float(ix._wrap90(psi % 180.0 - target))
                            if abs(delta) > tol_a + 1e-9:
                                continue
                            sig = math.hypot(sa[i], sa[j])
                            cost = (rc / sr[j]) ** 2 + (delta / sig) ** 2
                            key = (cost, m)
                            if best_j is None or key < best_j[0]:
                                best_j = (key, m, fc, rc, delta, sig, pen_c)
                        if best_j is not None:
                            rows[j] = best_j
                    if not rows:
                        continue
                    js = sorted(rows)
                    total = pen_a
                    r_all = [ra] + [rows[j][3] for j in js]
                    s_all = [sr[i]] + [sr[j] for j in js]
                    w = 1.0 / np.square(s_all)
                    r_all = np.asarray(r_all)
                    total += float(
                        ix._log10_odds_spacing(
                            np.array([w.sum()]),
                            np.array([(w * r_all).sum()]),
                            np.array([(w * r_all * r_all).sum()]),
                            np.array([float(np.sum(np.log(np.square(s_all))))]),
                            np.array([len(js) + 1]),
                            np.array([ln_rho[i] + sum(ln_rho[j] for j in js)]),
                        )[0]
                    )
                    for t, j in enumerate(js):
                        _key, m, fc, rc, delta, sig, pen_c = rows[j]
                        if t == 0:
                            # The first other plane chooses the zone: every direction of its
                            # family relative to the reference, over all allowed zones.
                            n_dir = 2 * int(pt.block_count[fa, fc])
                        else:
                            n_dir = sum(
                                1
                                for mm in range(len(pt.member_hkl))
                                if int(pt.member_family[mm]) == fc
                                and int(np.dot(pt.member_hkl[mm], z)) == 0
                                and _can_appear(pt, mm, z, tables.include_forbidden)[0]
                            )
                        total += (
                            float(
                                ix._log10_odds_angle(
                                    np.array([n_dir]), np.array([delta]), np.array([sig])
                                )[0]
                            )
                            + pen_c
                        )
                    n_expl = len(js) + 1
                    total += (n - n_expl) * ix._LOG_UNEXPLAINED
                    intensity_log = net_log = 0.0
                    inten = pt.family_intensity
                    zi = [tuple(v) for v in pt.zones.tolist()].index(z)
                    zmax = pt.zone_max_intensity[zi]
                    if len(inten) and np.all(np.isfinite(inten)) and np.isfinite(zmax):
                        fams = [fa] + [rows[j][2] for j in js]
                        fd = pt.family_d_nm
                        if pt.intensity_known:
                            eff = [_effective_intensity(pt, f, z) for f in fams]
                            if math.sqrt(max(max(eff), 0.0) / zmax) < ix.WEAK_FRACTION:
                                continue
                            each = [
                                float(ix._log10_weak_penalty(np.array([e]), np.array([zmax]))[0])
                                for e in eff
                            ]
                            weak_log = sum(each)
                            d_lo = min(fd[f] for f in fams) * (1.0 - 1e-9)
                        else:
                            weak_log = 0.0
                            d_lo = ix.LOW_ORDER_FACTOR * max(fd[f] for f in fams)
                        strong = [
                            mm
                            for mm in range(len(pt.member_hkl))
                            if int(np.dot(pt.member_hkl[mm], z)) == 0
                            and _can_appear(pt, mm, z, tables.include_forbidden)[0]
                            and inten[pt.member_family[mm]] >= ix.STRONG_FRACTION * zmax
                            and fd[pt.member_family[mm]] >= d_lo
                        ]
                        seen = sum(
                            inten[f] >= ix.STRONG_FRACTION * zmax and fd[f] >= d_lo for f in fams
                        )
                        missing = max(len(strong) - seen, 0)
                        pen = math.log10(1.0 / ix.MISSING_STRONG_PENALTY)
                        intensity_log = weak_log + missing * pen
                        if pt.intensity_known:
                            # Strong members within the band around the coarsest matched plane.
                            d_hi = max(fd[f] for f in fams)
                            lo_b = d_hi / (1.0 + ix.NEIGHBOUR_BAND_REL)
                            hi_b = d_hi * (1.0 + ix.NEIGHBOUR_BAND_REL)
                            # (Not `strong`: the band may reach below d_lo.)
                            near = sum(
                                int(np.dot(pt.member_hkl[mm], z)) == 0
                                and _can_appear(pt, mm, z, tables.include_forbidden)[0]
                                and inten[pt.member_family[mm]] >= ix.STRONG_FRACTION * zmax
                                and lo_b <= fd[pt.member_family[mm]] <= hi_b
                                for mm in range(len(pt.member_hkl))
                            )
                            near -= sum(
                                inten[f] >= ix.STRONG_FRACTION * zmax and lo_b <= fd[f] <= hi_b
                                for f in fams
                            )
                            net_log = min(max(near, 0), missing) * pen + sum(
                                x
                                for x, f in zip(each, fams, strict=True)
                                if lo_b <= fd[f] <= hi_b and not pt.family_amplitude_unknown[f]
                            )
                    # Chance (all intensity terms), or an unlisted crystal with the same net at
                    # another scale (it pays the card's intensity rules only for the lowest
                    # orders: the band around the coarsest matched plane).
                    net = ix._log10_unlisted_net(
                        np.array([w.sum()]), np.array([(w * r_all).sum()]), tol
                    )
                    total = float(
                        ix._log10_add(np.array([total + intensity_log]), net + net_log)[0]
                    )
                    cand = (round(total, 9), -n_expl)
                    if best is None or cand < best[0]:
                        best = (cand, total, n_expl, z, {i: rep_row, **{j: rows[j][1] for j in js}})
    if best is None:
        return None
    return best[1], best[2], best[3], best[4]
