"""Index the lattice planes of windows: spacings + interplanar angles -> phase, (hkl), zone axis.

Method (Zhu et al., ESI-1 and ESI-3, generalised to every crystal system), and what the score means
(the full text is in ``docs/analysis-cli.md``, "What the score means, and when a window is
unmatched"):

1. **Spacings.** Each measured spacing ``d`` is matched against the enabled phases' reflection
   families within a relative tolerance (``|d - d_ref| / d_ref <= spacing_tol``, default 3 %: the
   single spacing rule of the project, as :func:`hrtem_core.cards.spacing_candidates`).
2. **Angles and zone.** The angle between two planes is the angle between their reciprocal-lattice
   vectors (``cos(beta) = h1^T G* h2 / sqrt(h1^T G* h1 h2^T G* h2)``, ESI-3 eqs. 2-5 for the
   orthogonal systems, the metric tensor ``G*`` for every system), evaluated on Cartesian ``g =
   B h``. A hypothesis fixes a zone axis ``[uvw]`` (at most ``max_zone_index`` in every index,
   default 3), a viewing sense, and a reference plane ``i`` assigned to its family's
   representative ``h_i``; every member ``h`` of the zone then has a predicted in-plane direction
   ``phi_i + s psi(h)`` (``psi`` the angle from ``h_i`` about the zone axis). Each other plane is
   assigned the in-zone member of a spacing-matched family nearest its measured direction, within
   ``angle_tol_deg``. All hypotheses are found at once for all windows: per phase, the member
   directions are tabulated per pair of families, sorted by ``(family pair, psi)``, and every
   measured plane pair of every window is looked up with ``searchsorted`` (:func:`index_windows`).
3. **Kinematic intensities.** From the phase's structure (:func:`hrtem_core.simulate.known_structure`)
   or the card's intensities (the CIF import writes them): a matched reflection whose amplitude
   ``|F|`` is below ``WEAK_FRACTION`` of the zone's strongest (the image is linear in ``|F|``)
   costs up to ``1 / WEAK_MATCH_FLOOR``, a strong one of
   the zone (``STRONG_FRACTION``) missing from the observed range ``1 / MISSING_STRONG_PENALTY``,
   and a zone matched by weak reflections alone is rejected. Cards without intensities use the
   electron scattering-factor fall-off, for missing low orders only (``LOW_ORDER_FACTOR``).
   Kinematically forbidden reflections (screw axes, glide planes) are matched only where double
   diffraction in the zone produces them (:func:`_dd_ok`), with the product of the intensities
   of the two beams that make them (:func:`_dd_intensity`), or with ``include_forbidden`` at a
   factor ``1 / FORBIDDEN_WEIGHT``.
4. **Score: the odds against a coincidence.** Every measured spacing and direction carries its own
   standard uncertainty from the sub-pixel fit (``SpotPair.sigma_l_px``; plus the model terms
   ``SIGMA_MODEL_REL`` and ``SIGMA_MODEL_ANGLE_DEG``). ``K`` is the odds "chance : card": the
   likelihood of the measurement under the null model "no enabled card fits" over its likelihood
   under the hypothesis:

   * spacings (:func:`_log10_odds_spacing`): under the card, Gaussian residuals with each plane's
     sigma and a calibration error common to the window (``SIGMA_CALIBRATION_REL``); under chance,
     the density of the card's families per unit ``ln d`` around each measured spacing
     (:func:`_family_density`), so a card dense in reflections pays for explaining spacings;
   * directions (:func:`_log10_odds_angle`): under the card Gaussian; under chance uniform over
     180 deg times the number of directions the family offers (every member over all allowed
     zones for the first other plane, which chooses the zone; the members in that zone for the
     rest);
   * a factor ``1 / UNEXPLAINED_PENALTY`` per plane the hypothesis leaves unexplained, and the
     intensity factors above;
   * added to these odds, those of an unlisted crystal with the same net at another scale
     (:func:`_log10_unlisted_net`, prior :data:`UNLISTED_NET_PRIOR`): a window whose spacings all
     sit beyond about 2.2 calibration sigmas off the card is not named by it. That crystal has
     intensities of its own, so its odds also carry the card's intensity factors for the lowest
     orders seen (reflections within :data:`NEIGHBOUR_BAND_REL` of the coarsest matched plane):
     ``K = K_chance W M + K_net L`` (``W`` the weak-reflection factor, ``M`` the missing-strong
     one, ``L`` both restricted to that band; :func:`_log10_intensity_terms`).

   The **score** is ``1 / (1 + K)``: the probability that the card rather than chance or an
   unlisted crystal with the same net produced the planes, at even prior odds. Candidates are
   ranked by ``K`` (not by the number of planes first): explaining more planes lowers ``K`` only
   when they fit.
5. **Decisions.** A window is ``indexed`` when its best angle-confirmed hypothesis has ``K <=
   max_chance`` (default 0.05: score >= 0.952); other phases within ``ambiguity_decades``
   (default 1, a factor 10 in ``K``) are listed and the window is ``ambiguous``; cards with
   near-twin cells (maghemite / magnetite, :func:`_twin_cells`) are always listed together and
   the convincing one whose residuals fit better leads; so are projection twins, cards whose
   zones predict the same net within the calibration (hematite [001] / feroxyhyte [001],
   :func:`_same_net`), ordered by their spacing misfit alone (a near-twin that loses a plane only at
   the tolerance edge is found by :func:`_edge_twins`). A window with one plane, or whose
   angle-confirmed matches are weaker than ``max_chance``, is ``spacing-only``: its candidates
   are listed, no phase is named, and its score is at most 0.5 (``0.5 / (1 + K)``: one spacing
   cannot tell a card from an unlisted phase with a line at the same ``d``), so it never scores
   above an angle-confirmed window. A window with two or more planes that no card explains with a
   matching angle, or whose spacings no card has, is ``unmatched`` (its spacings are still
   reported). A window with no significant spot pair is ``no-spots``.

Per-phase tables are built once per analysis (:func:`build_tables`); :func:`index_windows`
indexes every window of an image in whole-array operations, and identical plane sets share one
result.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hrtem_core.errors import AnalysisParameterError, CardDatabaseError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from hrtem_core.cards import CardDatabase, Phase

HKL = tuple[int, int, int]

#: Window statuses.
STATUS_NO_SPOTS = "no-spots"
STATUS_UNMATCHED = "unmatched"
STATUS_SPACING_ONLY = "spacing-only"
STATUS_AMBIGUOUS = "ambiguous"
STATUS_INDEXED = "indexed"
STATUSES = (
    STATUS_INDEXED,
    STATUS_AMBIGUOUS,
    STATUS_SPACING_ONLY,
    STATUS_UNMATCHED,
    STATUS_NO_SPOTS,
)
#: Statuses that name a phase.
NAMED_STATUSES = (STATUS_INDEXED, STATUS_AMBIGUOUS)

#: Largest zone-axis index: ``max(|u|, |v|, |w|) <= MAX_ZONE_INDEX`` (crossed fringes are seen
#: along low-index zones; a high-index zone that "explains" two spacings is a coincidence).
MAX_ZONE_INDEX = 3
#: A window names a phase when the odds "chance : card" of its best match are ``K <= MAX_CHANCE``.
MAX_CHANCE = 0.05
#: Other phases within this many decades of the best ``E`` are listed (the window is ambiguous).
AMBIGUITY_DECADES = 1.0
#: Probability that a real crystal shows a plane its card does not explain (another crystal
#: overlapping, a defect, a false spot): the factor an unexplained plane costs a hypothesis.
UNEXPLAINED_PENALTY = 0.05
#: A kinematically forbidden reflection matched without double diffraction (only with
#: ``include_forbidden``) counts as this fraction of an allowed one (its ``P`` is divided by it).
FORBIDDEN_WEIGHT = 0.5
#: Calibration uncertainty of the pixel size (relative, one standard deviation): a scale error
#: common to every spacing of a window (a pixel size that is 1.5 % off moves all spacings alike).
SIGMA_CALIBRATION_REL = 0.01
#: Prior odds that a lattice whose zone net matches a card's in shape (spacing ratios and angles),
#: at a scale the calibration does not confirm, is an unlisted crystal rather than the card's (an
#: fcc metal and a spinel's oxygen sublattice; a perovskite and a spinel's subcell). The
#: alternative "an unlisted crystal with this net" explains the spacings at any common scale
#: within the tolerance, the card only at the calibrated one (:func:`_log10_unlisted_net`).
UNLISTED_NET_PRIOR = 0.01
#: Harmonics (:func:`_refined_by_harmonics`): a plane is the first order of a set whose n-th
#: (2, 3) order the window also shows when its reciprocal vector g lies within HARMONIC_SHIFT_REL
#: of g_n / n (relative to |g_n / n|; parallel reflections of one lattice are multiples of one
#: row vector). 12 % is 2.6 FFT px at l = 22 px: the low-order spot of a small or truncated
#: crystal far from focus is moved by up to 10 % (or split in two lobes by a CTF zero), its
#: harmonic stays within 1 % (README, "Honesty").
HARMONIC_SHIFT_REL = 0.12
#: Per-plane model uncertainty added in quadrature to each spot's own: the card's spacing
#: (composition, strain: relative) and the in-plane direction (image distortion [deg]).
SIGMA_MODEL_REL = 0.003
SIGMA_MODEL_ANGLE_DEG = 0.3
#: Fit uncertainties used for planes that carry none (relative spacing; direction [deg]).
DEFAULT_SIGMA_REL = 0.004
DEFAULT_SIGMA_ANGLE_DEG = 0.25
#: Kinematic intensity rule, on amplitudes: a reflection whose structure-factor amplitude |F| is
#: below this fraction of the zone's strongest is weak (1 % in intensity |F|^2), and a zone match
#: whose matched reflections are all weak is rejected. Amplitudes, because an HRTEM image is
#: linear in the projected potential (weak-phase object): the Fourier component of the image at
#: g is ``|F_g| sin chi(g)``, not ``|F_g|^2`` (Williams & Carter, Transmission Electron
#: Microscopy, ch. 28); a reflection with 4 % of the strongest intensity is a 20 % spot.
WEAK_FRACTION = 0.1
#: A zone reflection at least this fraction of the zone's strongest is "strong": a hypothesis pays
#: MISSING_STRONG_PENALTY for each strong reflection of its zone, at a spacing at least the
#: smallest matched one (inside the range the window shows), that no measured plane matches.
STRONG_FRACTION = 0.3
#: Probability that a kinematically strong reflection in the observed range is not seen (the CTF
#: can hide one): the factor each missing strong reflection costs.
MISSING_STRONG_PENALTY = 0.2
#: A matched reflection weaker than WEAK_FRACTION of the zone's strongest (in amplitude) costs the
#: factor ``1 / max(sqrt(I / I_max) / WEAK_FRACTION, WEAK_MATCH_FLOOR)``: the chance of seeing a
#: spot falls with its amplitude, down to WEAK_MATCH_FLOOR (a factor 10) for an extinct one.
WEAK_MATCH_FLOOR = 0.1
#: A strong zone reflection whose spacing is within this fraction of the coarsest plane a window
#: shows is transferred alike by the CTF (it changes little over 5 % in frequency unless a zero
#: lies there): if it is missing, an unlisted crystal with the card's net explains the window
#: better than the card (:func:`_search_phase`).
NEIGHBOUR_BAND_REL = 0.05
#: For a phase without known intensities: only reflections at spacings at least this many times
#: the largest matched one count as missing strong ones (low orders that any crystal shows).
LOW_ORDER_FACTOR = 1.5
#: Projection twins (:func:`_same_net`): the ratio of two matches' reference spacings may vary
#: by this much over the planes (the same net shape) ...
NET_SHAPE_REL = 0.005
#: ... and differ from 1 by at most this much (two calibration sigmas: indistinguishable).
NET_SCALE_REL = 2 * SIGMA_CALIBRATION_REL
#: Families weaker than this fraction of the phase's strongest count 1/4 in the card density.
VISIBLE_FRACTION = 0.01
#: Width of the tolerance edge, as a fraction of the spacing tolerance (0.25: 3 % -> 3.75 %):
#: a phase that explains the best match's planes with its tolerance widened by this edge is a
#: near-twin (:func:`_edge_twin`).
TOLERANCE_EDGE = 0.25
#: At most this many planes (the strongest) of one window are indexed.
MAX_PLANES = 8
#: Reference planes of the hypotheses: the window's strongest planes, at most this many.
MAX_REFERENCES = 3
#: At most this many spacing candidates are listed for a window that names no phase.
MAX_CANDIDATES = 6

# --------------------------------------------------------------------------------------------
# Measured planes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredPlane:
    """One lattice plane seen in a window (a Friedel pair of spots).

    Attributes
    ----------
    spacing_nm : float
        Lattice spacing d [nm].
    angle_deg : float
        In-plane direction of g, ``degrees(atan2(-gy, gx)) mod 180`` [deg].
    intensity : float
        Peak magnitude above background (for ordering only).
    sigma_rel : float
        Standard uncertainty of ``d`` from the fit, relative (``sigma_l / l``); NaN: unknown
        (:data:`DEFAULT_SIGMA_REL` is used).
    sigma_angle_deg : float
        Standard uncertainty of the direction [deg] (``sigma_l / l`` in radians); NaN: unknown.
    """

    spacing_nm: float
    angle_deg: float
    intensity: float = 0.0
    sigma_rel: float = math.nan
    sigma_angle_deg: float = math.nan

    @property
    def spacing_sigma_rel(self) -> float:
        """Relative uncertainty of ``d`` against a card: the fit's and :data:`SIGMA_MODEL_REL`
        (the common calibration error is treated apart, :data:`SIGMA_CALIBRATION_REL`)."""
        s = self.sigma_rel if math.isfinite(self.sigma_rel) else DEFAULT_SIGMA_REL
        return math.hypot(s, SIGMA_MODEL_REL)

    @property
    def direction_sigma_deg(self) -> float:
        """Uncertainty of the direction [deg]: the fit's and :data:`SIGMA_MODEL_ANGLE_DEG`."""
        s = self.sigma_angle_deg if math.isfinite(self.sigma_angle_deg) else DEFAULT_SIGMA_ANGLE_DEG
        return math.hypot(s, SIGMA_MODEL_ANGLE_DEG)


def measured_planes(
    pairs: Sequence[Any], *, max_planes: int = MAX_PLANES, min_spacing_nm: float = 0.0
) -> tuple[MeasuredPlane, ...]:
    """Planes of a window in canonical order: spacing descending, then direction.

    Low orders are refined by their harmonics (:func:`_refined_by_harmonics`); then the
    ``max_planes`` strongest (by ``intensity``) are kept; the order of ``pairs`` does not matter.
    Uncertainties come from ``sigma_l_px / l_px`` where the pairs carry them.

    Parameters
    ----------
    pairs : sequence of SpotPair
        Anything with ``spacing_nm``, ``angle_deg`` and (optionally) ``intensity``, ``l_px`` and
        ``sigma_l_px`` attributes.
    max_planes : int, keyword-only
        Cap on the planes kept.
    min_spacing_nm : float, keyword-only
        Planes finer than this [nm] are left out: no table reaches them (:func:`index_windows`
        passes ``d_min (1 - spacing_tol)``), so no card could explain them and they would count
        against every card alike. They stay in the window's spot pairs.

    Returns
    -------
    tuple of MeasuredPlane
    """
    planes = []
    for p in pairs:
        d = float(p.spacing_nm)
        if not (math.isfinite(d) and d > 0):
            continue
        sig = float(getattr(p, "sigma_l_px", math.nan))
        lpx = float(getattr(p, "l_px", math.nan))
        rel = sig / lpx if (math.isfinite(sig) and math.isfinite(lpx) and lpx > 0) else math.nan
        planes.append(
            MeasuredPlane(
                spacing_nm=d,
                angle_deg=float(p.angle_deg) % 180.0,
                intensity=float(getattr(p, "intensity", 0.0) or 0.0),
                sigma_rel=rel,
                sigma_angle_deg=math.degrees(rel) if math.isfinite(rel) else math.nan,
            )
        )
    planes = _refined_by_harmonics(planes)
    planes = [q for q in planes if q.spacing_nm >= min_spacing_nm]
    if len(planes) > max_planes:
        planes.sort(key=lambda q: (-q.intensity, -q.spacing_nm, q.angle_deg))
        planes = planes[:max_planes]
    planes.sort(key=lambda q: (-q.spacing_nm, q.angle_deg, -q.intensity))
    return tuple(planes)


def _g_vector(plane: MeasuredPlane) -> tuple[float, float]:
    """Reciprocal vector of a plane, (g cos a, g sin a) [1/nm], a = ``angle_deg``."""
    a = math.radians(plane.angle_deg)
    return math.cos(a) / plane.spacing_nm, math.sin(a) / plane.spacing_nm


def _plane_at(plane: MeasuredPlane, g: tuple[float, float], **changes: Any) -> MeasuredPlane:
    """``plane`` moved to the reciprocal vector ``g`` [1/nm] (other fields from ``changes``)."""
    return replace(
        plane,
        spacing_nm=1.0 / math.hypot(g[0], g[1]),
        angle_deg=math.degrees(math.atan2(g[1], g[0])) % 180.0,
        **changes,
    )


def _refined_by_harmonics(planes: list[MeasuredPlane]) -> list[MeasuredPlane]:
    """Low orders refined by a parallel higher harmonic of the same window; split lobes merged.

    Reflections parallel to one another in one lattice are multiples of one row vector, so a
    plane whose reciprocal vector ``g`` lies within :data:`HARMONIC_SHIFT_REL` of ``g_n / n``
    (``n`` = 2 or 3; ``g_n`` another plane of the window) is the first order of the set whose
    ``n``-th order is ``g_n``; the most precise such ``g_n`` is taken.

    - Its ``g`` (spacing and direction) becomes the inverse-variance mean of ``g`` and
      ``g_n / n`` (its relative fit uncertainty is ``n`` times the harmonic's at the same
      ``sigma_l`` in pixels). Its uncertainty is left as it was: the refined value's information
      is mostly the harmonic's, which the indexing already counts as a plane of its own, so a
      smaller sigma would count it twice.
    - Two or more planes that are first orders of the same ``g_n`` are the lobes of one spot that
      a CTF zero near its frequency has split (one lattice has one reflection there): they are
      merged into one plane at their intensity-weighted mean ``g`` (intensities added, the
      strongest lobe's uncertainty) before the refinement.

    The low order's position is the weaker one: in small or truncated crystals imaged far from
    focus its spot is broadened and moved by up to 2-3 FFT px (5-10 % of ``d`` at ``l`` = 20 px)
    or split radially, while its second order stays within 1 % (``README``, "Honesty"). The
    harmonics themselves are unchanged.

    Parameters
    ----------
    planes : list of MeasuredPlane

    Returns
    -------
    list of MeasuredPlane
        The refined planes, in the order given; a merged plane takes its strongest lobe's place.
    """
    if len(planes) < 2:
        return list(planes)
    g = [_g_vector(q) for q in planes]
    sig = [q.sigma_rel if math.isfinite(q.sigma_rel) else DEFAULT_SIGMA_REL for q in planes]
    d = [q.spacing_nm for q in planes]
    chosen: dict[int, tuple[int, int]] = {}  # low order -> (harmonic, n)
    for i in range(len(planes)):
        for j in range(len(planes)):
            if d[j] >= d[i]:
                continue
            for n in (2, 3):
                # |g_i| within the shift of |g_j| / n first (cheap), then the vectors.
                if abs(n * d[j] / d[i] - 1.0) > HARMONIC_SHIFT_REL:
                    continue
                tx, ty = g[j][0] / n, g[j][1] / n
                gx, gy = g[i][0], g[i][1]
                if gx * tx + gy * ty < 0:
                    gx, gy = -gx, -gy
                if math.hypot(gx - tx, gy - ty) <= HARMONIC_SHIFT_REL * math.hypot(tx, ty):
                    if i not in chosen or sig[j] < sig[chosen[i][0]]:
                        chosen[i] = (j, n)
    if not chosen:
        return list(planes)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, key in chosen.items():
        groups.setdefault(key, []).append(i)
    out: list[MeasuredPlane | None] = list(planes)
    for (j, n), lows in groups.items():
        tx, ty = g[j][0] / n, g[j][1] / n
        lows.sort(key=lambda i: -planes[i].intensity)
        head = lows[0]
        wts = [max(planes[i].intensity, 0.0) for i in lows]
        if sum(wts) <= 0:
            wts = [1.0] * len(lows)
        sx = sy = 0.0
        for i, wt in zip(lows, wts, strict=True):
            sign = 1.0 if g[i][0] * tx + g[i][1] * ty >= 0 else -1.0
            sx, sy = sx + wt * sign * g[i][0], sy + wt * sign * g[i][1]
        w_lo, w_hi = 1.0 / sig[head] ** 2, 1.0 / sig[j] ** 2
        g_ref = (
            (w_lo * sx / sum(wts) + w_hi * tx) / (w_lo + w_hi),
            (w_lo * sy / sum(wts) + w_hi * ty) / (w_lo + w_hi),
        )
        total = float(sum(planes[i].intensity for i in lows))
        out[head] = _plane_at(planes[head], g_ref, intensity=total)
        for i in lows[1:]:
            out[i] = None
    return [q for q in out if q is not None]


def acute_between_deg(angle1_deg: float, angle2_deg: float) -> float:
    """Acute angle [0, 90] between two plane directions given mod 180 [deg]."""
    diff = abs(float(angle1_deg) - float(angle2_deg)) % 180.0
    return min(diff, 180.0 - diff)


def measured_angles_deg(planes: Sequence[MeasuredPlane]) -> tuple[float, ...]:
    """Acute angles between every pair ``(i < j)`` of planes, in row-major pair order [deg]."""
    out = []
    for i in range(len(planes)):
        for j in range(i + 1, len(planes)):
            out.append(acute_between_deg(planes[i].angle_deg, planes[j].angle_deg))
    return tuple(out)


def _wrap90(a: np.ndarray | float) -> np.ndarray:
    """Wrap angles [deg] to [-90, 90): the difference of two plane directions (mod 180)."""
    return (np.asarray(a) + 90.0) % 180.0 - 90.0


def _canonical_sign(hkl: np.ndarray) -> np.ndarray:
    """Flip each row so that its first non-zero index is positive (one of +-h)."""
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    first = np.zeros(len(hkl), dtype=np.int64)
    for col in (2, 1, 0):
        nz = hkl[:, col] != 0
        first = np.where(nz, hkl[:, col], first)
    sign = np.where(first < 0, -1, 1)
    return hkl * sign[:, None]


# --------------------------------------------------------------------------------------------
# Per-analysis tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PhaseTable:
    """Reflection families of one phase, their members, and the direction tables of its zones.

    Attributes
    ----------
    card_id, name, space_group : str
    cell : UnitCell
    family_hkl : tuple of (h, k, l)
        Family representatives (card rows or computed), ``n_f`` of them.
    family_d_nm : ndarray, shape (n_f,)
    family_forbidden : ndarray of bool, shape (n_f,)
    family_intensity : ndarray, shape (n_f,)
        Kinematic intensity per reflection relative to the strongest family (0..1): ``|F|^2``
        from the phase's crystal structure where the project knows it
        (:func:`hrtem_core.simulate.known_structure`), else the card's ``intensity_rel`` (per
        reflection, as the CIF import writes it); else the smooth fall-off of the electron scattering factor
        (``intensity_known`` False: then only the missing low-order rule uses it).
    intensity_known : bool
    family_amplitude_unknown : ndarray of bool, shape (n_f,)
        Families the card's space group allows but the structure model's makes systematically
        absent: superstructure reflections of a model that leaves an order out (e.g. the
        disordered spinel :data:`hrtem_core.simulate.MAGHEMITE_SPINEL` against the P4₁32 card;
        the built-in maghemite model is now the ordered one, so no shipped card has such
        families). Their ``family_intensity`` is 0, their true amplitude unknown:
        they do not weigh against the card in the comparison with an unlisted crystal of the
        same net (:func:`_log10_intensity_terms`).
    family_index : dict
        ``(h, k, l)`` representative -> family index.
    member_hkl : ndarray of int, shape (n_m, 3)
        Every member of every family, one of each Friedel pair (+-h is one plane), the
        representative first in its family.
    member_family : ndarray of int, shape (n_m,)
    member_g : ndarray, shape (n_m, 3)
        Unit Cartesian reciprocal vectors ``B h / |B h|``.
    family_slices : tuple of (start, stop)
        Rows of ``member_*`` that belong to each family.
    rep_g : ndarray, shape (n_f, 3)
    zones : ndarray of int, shape (n_z, 3)
        The zone axes ``[uvw]`` (reduced, first non-zero index positive, max index <=
        ``max_zone_index``) that contain a representative and another member.
    zone_count : ndarray of int, shape (n_z, n_f)
        Members of each family in each zone that can appear there (allowed, or produced by
        double diffraction, or any with ``include_forbidden``).
    zone_max_intensity : ndarray, shape (n_z,)
        Largest ``family_intensity`` among the reflections of each zone (NaN: unknown).
    strong_key : ndarray
        Sorted ``zone * 10 + d`` [nm] of every strong member of every zone (intensity at least
        ``STRONG_FRACTION`` of the zone's strongest; empty when intensities are unknown).
    entry_key : ndarray, shape (n_e,)
        Sorted lookup keys ``(fa * n_f + fc) * 1000 + 100 + psi`` of the direction table: for a
        representative ``h_a`` of family ``fa`` and a member ``h_c`` of family ``fc`` sharing an
        allowed zone, ``psi`` [deg, mod 180] is the angle from ``g_a`` to ``g_c`` about the zone
        axis. Entries within the angle tolerance of 0 or 180 deg are repeated shifted by 180.
    entry_member, entry_zone : ndarray of int, shape (n_e,)
        ``h_c``'s member row, and the zone's row in ``zones``.
    entry_psi : ndarray, shape (n_e,)
    entry_penalty, entry_penalty_ref : ndarray, shape (n_e,)
        log10 of the chance factor of a forbidden reflection matched without double diffraction
        (only with ``include_forbidden``; 0 otherwise), for ``h_c`` and for ``h_a``.
    block_count : ndarray of int, shape (n_f, n_f)
        Entries per family pair (without the repeats): the directions a plane of family ``fc``
        can take relative to ``h_a``.
    density_weight : ndarray, shape (n_f,)
        Weight of each family in the card density ``N_fam``: 1, 1/4 for a kinematically weak
        family, 1/2 for a forbidden one.
    allowed_pm, allowed_set, allowed_intensity, allowed_row
        The kinematically allowed members and their negatives (array, set, relative intensity,
        row of each ``(h, k, l)``): the beams double diffraction combines (:func:`_dd_intensity`).
    zone_family_intensity : ndarray, shape (n_z, n_f)
        Effective intensity of each family in each zone: the kinematic one where allowed, the
        double-diffraction one (:func:`_dd_intensity`) where forbidden, 0 where it cannot appear.
    """

    card_id: str
    name: str
    space_group: str
    cell: Any
    family_hkl: tuple[HKL, ...]
    family_d_nm: np.ndarray
    family_forbidden: np.ndarray
    family_intensity: np.ndarray
    intensity_known: bool
    family_index: dict
    member_hkl: np.ndarray
    member_family: np.ndarray
    member_g: np.ndarray
    family_slices: tuple[tuple[int, int], ...]
    rep_g: np.ndarray
    zones: np.ndarray
    zone_count: np.ndarray
    zone_max_intensity: np.ndarray
    strong_key: np.ndarray
    entry_key: np.ndarray
    entry_member: np.ndarray
    entry_zone: np.ndarray
    entry_psi: np.ndarray
    entry_penalty: np.ndarray
    entry_penalty_ref: np.ndarray
    block_count: np.ndarray
    density_weight: np.ndarray
    allowed_pm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    allowed_set: frozenset = frozenset()
    allowed_intensity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    allowed_row: dict = field(default_factory=dict)
    zone_family_intensity: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    family_amplitude_unknown: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    _dd_cache: dict = field(default_factory=dict)

    @property
    def family_order(self) -> np.ndarray:
        """Family indices by ascending ``d`` (cached)."""
        self._cache_density()
        return self._dd_cache["_order"]

    @property
    def block_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per family pair ``fa * n_f + fc``: the first and one-past-last row of its entries in the
        direction table, without the copies shifted by 180 deg (cached)."""
        if "_blocks" not in self._dd_cache:
            n_f = len(self.family_hkl)
            base = np.arange(n_f * n_f, dtype=float) * 1000.0 + 100.0
            lo = np.searchsorted(self.entry_key, base, side="left")
            hi = np.searchsorted(self.entry_key, base + 180.0, side="left")
            self._dd_cache["_blocks"] = (lo.astype(np.int64), hi.astype(np.int64))
        return self._dd_cache["_blocks"]

    @property
    def sorted_log_d(self) -> np.ndarray:
        """``ln d`` of the families, ascending (cached)."""
        self._cache_density()
        return self._dd_cache["_ld"]

    @property
    def cumulative_weight(self) -> np.ndarray:
        """Cumulative ``density_weight`` in :attr:`sorted_log_d` order, 0 first (cached)."""
        self._cache_density()
        return self._dd_cache["_cw"]

    def _cache_density(self) -> None:
        if "_ld" not in self._dd_cache:
            ld = np.log(self.family_d_nm)
            order = np.argsort(ld, kind="stable")
            self._dd_cache["_order"] = order
            self._dd_cache["_ld"] = ld[order]
            self._dd_cache["_cw"] = np.concatenate([[0.0], np.cumsum(self.density_weight[order])])


@dataclass(frozen=True, eq=False)
class IndexingTables:
    """Everything :func:`index_windows` needs, precomputed once per analysis.

    Build with :func:`build_tables`.
    """

    db: Any
    phases: tuple[PhaseTable, ...]
    card_ids: tuple[str, ...]
    spacing_tol: float
    angle_tol_deg: float
    include_forbidden: bool
    d_min_nm: float
    ambiguity_decades: float = AMBIGUITY_DECADES
    max_chance: float = MAX_CHANCE
    max_zone_index: int = MAX_ZONE_INDEX
    forbidden_weight: float = FORBIDDEN_WEIGHT
    max_planes: int = MAX_PLANES
    tolerance_edge: float = TOLERANCE_EDGE
    _phase_pos: dict = field(default_factory=dict)
    #: Lookups derived from the phases, built on first use (the direction grid, near-twins).
    _cache: dict = field(default_factory=dict)


def _reduce(uvw: Sequence[int]) -> HKL:
    """Divide by the gcd and make the first non-zero index positive."""
    u, v, w = (int(x) for x in uvw)
    g = math.gcd(math.gcd(abs(u), abs(v)), abs(w)) or 1
    u, v, w = u // g, v // g, w // g
    first = u or v or w
    if first < 0:
        u, v, w = -u, -v, -w
    return (u, v, w)


def _dd_ok(pt: PhaseTable, hkl: Sequence[int] | np.ndarray, uvw: Sequence[int]) -> bool:
    """Can double diffraction in zone ``[uvw]`` produce the (kinematically forbidden) ``hkl``?

    True when ``hkl = g1 + g2`` with ``g1`` and ``g2`` kinematically allowed reflections of the
    phase that both lie in the zone (``g . [uvw] = 0``): e.g. (002) = (1 -1 1) + (-1 1 1) in the
    [110] zone of a spinel, or (600) = (3 1 -1) + (3 -1 1) in [011]. Screw-axis and glide-plane
    extinctions are filled in this way in zone-axis images (and by the non-linear interference of
    the two beams in the HRTEM image); lattice-centring extinctions never are (the sum of two
    centring-allowed reflections is allowed). Only the tabulated reflections (``d >= d_min``) are
    used as ``g1`` and ``g2``.
    """
    return _dd_intensity(pt, hkl, uvw) is not None


def _dd_intensity(
    pt: PhaseTable, hkl: Sequence[int] | np.ndarray, uvw: Sequence[int]
) -> float | None:
    """Relative intensity a forbidden ``hkl`` can get by double diffraction in zone ``[uvw]``.

    ``max over hkl = g1 + g2 of I(g1) I(g2)`` over the allowed reflections ``g1``, ``g2`` of the
    zone (:func:`_dd_ok`), with ``I`` the kinematic intensity of their families relative to the
    strongest (0..1). A beam diffracted twice is the second-order term of the scattering series,
    ``psi_h ~ (i sigma t)^2 V_g1 V_g2 / 2``: its amplitude relative to the strongest beam's is at
    most ``|F(g1)| |F(g2)| / |F_max|^2`` for a crystal whose strongest beam is shifted by about a
    radian (a few nm), so its intensity is at most the product ``I(g1) I(g2)``. Two strong beams
    make a strong one (``1 x 1``); two superlattice beams of ``I = 0.04`` make ``0.0016``.
    ``None`` when double diffraction cannot produce ``hkl`` in the zone.
    """
    h = tuple(int(v) for v in hkl)
    z = tuple(int(v) for v in uvw)
    key = (h, z)
    if key in pt._dd_cache:
        return pt._dd_cache[key]
    hit: float | None = None
    if sum(a * b for a, b in zip(h, z, strict=True)) == 0 and len(pt.allowed_pm):
        in_zone = (pt.allowed_pm @ np.asarray(z, dtype=np.int64)) == 0
        g1 = pt.allowed_pm[in_zone]
        i1 = pt.allowed_intensity[in_zone] if len(pt.allowed_intensity) else np.zeros(len(g1))
        for g, i in zip((np.asarray(h, dtype=np.int64)[None, :] - g1).tolist(), i1, strict=True):
            row = pt.allowed_row.get(tuple(g))
            if row is not None:
                i2 = float(pt.allowed_intensity[row]) if len(pt.allowed_intensity) else 0.0
                v = float(i) * i2
                hit = v if hit is None else max(hit, v)
    pt._dd_cache[key] = hit
    return hit


def _family_intensities(
    phase: Phase, reps: Sequence[HKL], d_nm: Sequence[float]
) -> tuple[np.ndarray, bool]:
    """Relative kinematic intensity per reflection of each family (0..1), and whether it is known.

    Known: ``|F|^2`` of the phase's crystal structure (:func:`hrtem_core.simulate.known_structure`)
    or the card's ``intensity_rel``, read as per-reflection intensities (what the CIF import,
    :mod:`hrtem_core.cif`, writes; a powder card's I/I0 includes the multiplicity and the
    Lorentz-polarisation factor and is used as given). Otherwise the
    smooth fall-off of the composition-averaged electron scattering factor, ``f_e(1 / 2d)^2
    exp(-B / 2d^2)`` (International Tables C 4.3.2.2; no structure), flagged unknown.
    """
    from hrtem_core.simulate import _smooth_model, known_structure

    n = len(reps)
    out = np.full(n, np.nan)
    if n == 0:
        return out, False
    structure = known_structure(phase.card_id)
    if structure is not None:
        f = structure.structure_factor_nm(np.asarray(reps, dtype=float), phase.cell)
        out = np.abs(f) ** 2
    else:
        card = {tuple(int(v) for v in r.hkl): r for r in phase.reflections}
        vals = []
        for rep in reps:
            r = card.get(rep)
            i_rel = None if r is None else r.intensity_rel
            vals.append(np.nan if i_rel is None else float(i_rel))
        out = np.asarray(vals, dtype=float)
        if not np.all(np.isfinite(out)):
            f = _smooth_model(phase)
            smooth = np.array([f(float(d)) ** 2 for d in d_nm])
            return smooth / max(float(smooth.max()), 1e-300), False
    top = float(np.max(out)) if np.all(np.isfinite(out)) else 0.0
    return (out / top, True) if top > 0 else (np.full(n, np.nan), False)


def _model_absent(phase: Phase, reps: Sequence[HKL]) -> np.ndarray:
    """Families systematically absent in the space group of the phase's structure model (all
    False without a model): see ``PhaseTable.family_amplitude_unknown``."""
    from hrtem_core.crystallography import is_systematically_absent
    from hrtem_core.simulate import known_structure

    structure = known_structure(phase.card_id)
    if structure is None or not reps:
        return np.zeros(len(reps), dtype=bool)
    return np.array([is_systematically_absent(structure.space_group, h) for h in reps], dtype=bool)


def _zone_keys(z: np.ndarray, k: int) -> np.ndarray:
    """Integer key of each zone row (indices in ``-k .. k``)."""
    b = 2 * k + 1
    return ((z[:, 0] + k) * b + (z[:, 1] + k)) * b + (z[:, 2] + k)


def _reduce_rows(raw: np.ndarray) -> np.ndarray:
    """:func:`_reduce` for rows of integer vectors (non-zero rows)."""
    g = np.gcd(np.gcd(np.abs(raw[:, 0]), np.abs(raw[:, 1])), np.abs(raw[:, 2]))
    g = np.where(g == 0, 1, g)
    return _canonical_sign(raw // g[:, None])


def _phase_table(
    phase: Phase,
    *,
    include_forbidden: bool,
    d_min_nm: float,
    spacing_tol: float,
    angle_tol_deg: float,
    max_zone_index: int,
    forbidden_weight: float,
) -> PhaseTable:
    from hrtem_core.crystallography import family_members

    reps: list[HKL] = []
    ds: list[float] = []
    forb: list[bool] = []
    members: list[np.ndarray] = []
    fam_of: list[np.ndarray] = []
    slices: list[tuple[int, int]] = []
    start = 0
    d_floor = d_min_nm * (1.0 - spacing_tol)
    for ref in phase.reflections:
        # Forbidden families are always tabulated: they are matched when the user includes them,
        # or when double diffraction in the window's zone makes them appear (_dd_ok).
        if not (ref.d_nm >= d_floor):
            continue
        rep = tuple(int(v) for v in ref.hkl)
        if rep in reps:
            continue
        mem = np.asarray(family_members(phase.space_group, rep), dtype=np.int64).reshape(-1, 3)
        if len(mem) == 0:
            mem = np.asarray([rep], dtype=np.int64)
        mem = np.unique(_canonical_sign(mem), axis=0)
        # The representative first: it stands for the family when it is the reference plane.
        rep_c = _canonical_sign(np.asarray(rep))[0]
        keep = ~np.all(mem == rep_c, axis=1)
        mem = np.vstack([rep_c[None, :], mem[keep]])
        fam = len(reps)
        reps.append(rep)
        ds.append(float(ref.d_nm))
        forb.append(bool(ref.forbidden))
        members.append(mem)
        fam_of.append(np.full(len(mem), fam, dtype=np.int64))
        slices.append((start, start + len(mem)))
        start += len(mem)
    n_f = len(reps)
    if members:
        member_hkl = np.vstack(members)
        member_family = np.concatenate(fam_of)
        g = np.asarray(phase.cell.reciprocal_cartesian(member_hkl.astype(float)), dtype=float)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    else:
        member_hkl = np.zeros((0, 3), dtype=np.int64)
        member_family = np.zeros(0, dtype=np.int64)
        g = np.zeros((0, 3))
    rep_rows = np.asarray([s for s, _ in slices], dtype=np.int64)
    rep_g = g[rep_rows] if n_f else np.zeros((0, 3))
    forb_arr = np.asarray(forb, dtype=bool)
    allowed = member_hkl[~forb_arr[member_family]] if len(member_hkl) else member_hkl
    allowed_pm = np.vstack([allowed, -allowed]) if len(allowed) else np.zeros((0, 3), np.int64)
    intensity, known = _family_intensities(phase, reps, ds)
    if not known and n_f:
        # The smooth model knows no structure, but a forbidden reflection has no kinematic
        # intensity (double diffraction may still show it).
        intensity = np.where(np.asarray(forb, dtype=bool), 0.0, intensity)
    allowed_int = (
        np.asarray(intensity, dtype=float)[member_family[~forb_arr[member_family]]]
        if len(member_hkl)
        else np.zeros(0)
    )
    weight = np.ones(n_f)
    if known and n_f:
        weight = np.where(intensity < VISIBLE_FRACTION, 0.25, 1.0)
    weight = np.where(forb_arr, 0.5, weight) if n_f else weight

    pt_stub = PhaseTable(
        card_id=phase.card_id,
        name=phase.name,
        space_group=phase.space_group,
        cell=phase.cell,
        family_hkl=tuple(reps),
        family_d_nm=np.asarray(ds, dtype=float),
        family_forbidden=forb_arr,
        family_intensity=intensity,
        intensity_known=known,
        family_amplitude_unknown=_model_absent(phase, reps) & ~np.asarray(forb_arr, dtype=bool),
        family_index={r: i for i, r in enumerate(reps)},
        member_hkl=member_hkl,
        member_family=member_family,
        member_g=g,
        family_slices=tuple(slices),
        rep_g=rep_g,
        zones=np.zeros((0, 3), np.int64),
        zone_count=np.zeros((0, n_f), np.int64),
        zone_max_intensity=np.zeros(0),
        strong_key=np.zeros(0),
        entry_key=np.zeros(0),
        entry_member=np.zeros(0, np.int64),
        entry_zone=np.zeros(0, np.int64),
        entry_psi=np.zeros(0),
        entry_penalty=np.zeros(0),
        entry_penalty_ref=np.zeros(0),
        block_count=np.zeros((n_f, n_f), np.int64),
        density_weight=weight,
        allowed_pm=allowed_pm,
        allowed_set=frozenset(map(tuple, allowed_pm.tolist())),
        allowed_intensity=np.concatenate([allowed_int, allowed_int]),
        allowed_row={tuple(v): i for i, v in enumerate(allowed_pm.tolist())},
    )
    if n_f == 0:
        return pt_stub
    return _with_zone_tables(
        pt_stub,
        include_forbidden=include_forbidden,
        angle_tol_deg=angle_tol_deg,
        max_zone_index=max_zone_index,
        forbidden_weight=forbidden_weight,
    )


def _cached_phase_table(phase: Phase, **options: Any) -> PhaseTable:
    """:func:`_phase_table`, remembered for the last 256 (phase, options): a series, a batch or
    the dashboard's reruns index against the same cards (a table takes up to a second)."""
    try:
        return _phase_table_lru(phase, **options)
    except TypeError:  # an unhashable phase (not from the card database): build it directly
        return _phase_table(phase, **options)


_phase_table_lru = functools.lru_cache(maxsize=256)(lambda phase, **o: _phase_table(phase, **o))


def _with_zone_tables(
    pt: PhaseTable,
    *,
    include_forbidden: bool,
    angle_tol_deg: float,
    max_zone_index: int,
    forbidden_weight: float,
) -> PhaseTable:
    """Fill the zone and direction tables of a phase table (see :class:`PhaseTable`)."""
    k = int(max_zone_index)
    n_f = len(pt.family_hkl)
    n_m = len(pt.member_hkl)
    reps = pt.member_hkl[[s for s, _ in pt.family_slices]]
    # Every (representative a, member c) pair: zone a x c, reduced, within the index limit.
    fa = np.repeat(np.arange(n_f), n_m)
    mc = np.tile(np.arange(n_m), n_f)
    raw = np.cross(reps[fa], pt.member_hkl[mc])
    ok = np.any(raw != 0, axis=1)
    rep_rows = np.asarray([s for s, _ in pt.family_slices], dtype=np.int64)
    # Members parallel to the representative (its harmonics, e.g. (440) beside (220)) lie in
    # every zone that holds it, at psi = 0.
    par = ~ok & (mc != rep_rows[fa])
    par_fa, par_mc = fa[par], mc[par]
    fa, mc, raw = fa[ok], mc[ok], raw[ok]
    zone = _reduce_rows(raw)
    ok = np.max(np.abs(zone), axis=1) <= k
    fa, mc, zone = fa[ok], mc[ok], zone[ok]
    zkey = _zone_keys(zone, k)
    _, first, z_of = np.unique(zkey, return_index=True, return_inverse=True)
    zones = zone[first]
    n_z = len(zones)
    # Which member can appear in which zone (allowed, double diffraction, or any if included).
    in_zone = (zones @ pt.member_hkl.T) == 0  # (n_z, n_m)
    forb_m = pt.family_forbidden[pt.member_family]
    can = in_zone & ~forb_m[None, :]
    pen_m = np.zeros((n_z, n_m))  # log10 chance factor of a member in a zone
    bad = np.log10(1.0 / forbidden_weight)
    # Effective intensity of each family in each zone: its kinematic one where allowed, what
    # double diffraction gives a forbidden one (_dd_intensity), 0 where only include_forbidden
    # admits it.
    zfi = np.tile(np.where(pt.family_forbidden, 0.0, pt.family_intensity), (n_z, 1))
    for zi, mi in zip(*np.nonzero(in_zone & forb_m[None, :]), strict=True):
        dd = _dd_intensity(pt, pt.member_hkl[mi], zones[zi])
        if dd is not None:
            can[zi, mi] = True
            f = pt.member_family[mi]
            zfi[zi, f] = max(zfi[zi, f], dd)
        elif include_forbidden:
            can[zi, mi] = True
            pen_m[zi, mi] = bad
    zone_count = np.zeros((n_z, n_f), dtype=np.int64)
    for zi in range(n_z):
        zone_count[zi] = np.bincount(pt.member_family[can[zi]], minlength=n_f)
    inten = pt.family_intensity
    if np.all(np.isfinite(inten)):
        zmax = np.array(
            [float(np.max(inten[zone_count[zi] > 0], initial=0.0)) for zi in range(n_z)]
        )
    else:
        zmax = np.full(n_z, np.nan)
    if np.all(np.isfinite(zmax)) and n_z:
        m_int = inten[pt.member_family]
        zs, ms = np.nonzero(can & (m_int[None, :] >= STRONG_FRACTION * zmax[:, None]))
        strong_key = np.sort(zs * 10.0 + pt.family_d_nm[pt.member_family[ms]])
    else:
        strong_key = np.zeros(0)
    # Parallel members: one entry per zone that holds the representative.
    if len(par_fa):
        zi_p, k_p = np.nonzero(in_zone[:, rep_rows[par_fa]])
        fa = np.concatenate([fa, par_fa[k_p]])
        mc = np.concatenate([mc, par_mc[k_p]])
        z_of = np.concatenate([z_of, zi_p])
    is_par = np.zeros(len(fa), dtype=bool)
    is_par[len(fa) - (len(zi_p) if len(par_fa) else 0) :] = True
    # Entries: both ends must be able to appear in the zone.
    ok = can[z_of, rep_rows[fa]] & can[z_of, mc]
    fa, mc, z_of, is_par = fa[ok], mc[ok], z_of[ok], is_par[ok]
    pen_ref = pen_m[z_of, rep_rows[fa]]
    penalty = pen_m[z_of, mc]
    fc = pt.member_family[mc]
    n_dir = np.asarray(pt.cell.direct_cartesian(zones.astype(float)), dtype=float)
    n_dir = n_dir / np.linalg.norm(n_dir, axis=1, keepdims=True)
    ga = pt.rep_g[fa]
    gc = pt.member_g[mc]
    cr = np.cross(ga, gc)
    psi = np.degrees(
        np.arctan2(np.einsum("ij,ij->i", cr, n_dir[z_of]), np.einsum("ij,ij->i", ga, gc))
    )
    psi = np.mod(psi, 180.0)
    psi = np.where(psi >= 180.0, 0.0, psi)
    psi = np.where(is_par, 0.0, psi)
    block = fa * n_f + fc
    # Directions a family offers relative to a representative: one per member and zone, and one
    # per parallel member (the same direction in every zone).
    block_count = np.bincount(block[~is_par], minlength=n_f * n_f)
    par_blocks = np.unique(np.stack([block[is_par], mc[is_par]]), axis=1)[0] if is_par.any() else []
    block_count = (block_count + np.bincount(par_blocks, minlength=n_f * n_f)).reshape(n_f, n_f)
    # Repeat entries near 0 / 180 deg shifted by 180, so a window of +-tol never wraps.
    tol = float(angle_tol_deg)
    lo = psi < tol
    hi = psi > 180.0 - tol
    idx = np.concatenate([np.arange(len(psi)), np.flatnonzero(lo), np.flatnonzero(hi)])
    psi_all = np.concatenate([psi, psi[lo] + 180.0, psi[hi] - 180.0])
    key = block[idx] * 1000.0 + 100.0 + psi_all
    order = np.argsort(key, kind="stable")
    idx = idx[order]
    return replace(
        pt,
        zones=zones,
        zone_count=zone_count,
        zone_max_intensity=zmax,
        zone_family_intensity=zfi,
        strong_key=strong_key,
        entry_key=key[order],
        entry_member=mc[idx],
        entry_zone=z_of[idx],
        entry_psi=psi[idx],
        entry_penalty=penalty[idx],
        entry_penalty_ref=pen_ref[idx],
        block_count=block_count,
    )


def select_phases(db: CardDatabase, card_ids: Sequence[str] | None) -> tuple[Phase, ...]:
    """The phases to index against: ``card_ids`` (in that order), else the enabled phases.

    Raises
    ------
    CardDatabaseError
        A card id that is not in the database, or no phase to index against.
    """
    if card_ids is None:
        phases = tuple(db.enabled_phases())
        if not phases:
            raise CardDatabaseError(
                "no phase is enabled in the card database: enable at least one card or name the phases"
            )
        return phases
    known = [p.card_id for p in db.phases]
    out = []
    for cid in card_ids:
        if cid not in known:
            shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
            raise CardDatabaseError(f"phase {cid!r} is not in the card database (known: {shown})")
        ph = db.phase(cid)
        if ph not in out:
            out.append(ph)
    if not out:
        raise CardDatabaseError("no phase selected: name at least one card id")
    return tuple(out)


def build_tables(
    db: CardDatabase,
    *,
    card_ids: Sequence[str] | None = None,
    spacing_tol: float = 0.03,
    angle_tol_deg: float = 2.0,
    include_forbidden: bool = False,
    d_min_nm: float = 0.1,
    ambiguity_decades: float = AMBIGUITY_DECADES,
    max_chance: float = MAX_CHANCE,
    max_zone_index: int = MAX_ZONE_INDEX,
    forbidden_weight: float = FORBIDDEN_WEIGHT,
    max_planes: int = MAX_PLANES,
) -> IndexingTables:
    """Precompute the families, members, zones and direction tables of the phases (once).

    Parameters
    ----------
    db : CardDatabase
    card_ids : sequence of str, optional, keyword-only
        Phases to index against; default the enabled phases.
    spacing_tol : float, keyword-only
        Relative spacing tolerance, ``|d - d_ref| / d_ref <= spacing_tol`` (default 0.03).
    angle_tol_deg : float, keyword-only
        Interplanar-angle tolerance [deg] (default 2).
    include_forbidden : bool, keyword-only
        Also match kinematically forbidden reflections that the zone does not produce by double
        diffraction (at a chance factor ``1 / forbidden_weight``); those it produces are always
        matched.
    d_min_nm : float, keyword-only
        Smallest spacing of interest [nm].
    ambiguity_decades : float, keyword-only
        Other phases whose odds "chance : card" are within this many decades of the best are listed
        as alternatives (default 1).
    max_chance : float, keyword-only
        Largest odds "chance : card" ``K`` at which a window names a phase (default 0.05).
    max_zone_index : int, keyword-only
        Largest zone-axis index (default 3).
    forbidden_weight : float, keyword-only
        See :data:`FORBIDDEN_WEIGHT`.
    max_planes : int, keyword-only
        At most this many (strongest) planes per window are indexed.

    Raises
    ------
    AnalysisParameterError
        A tolerance or option out of range.
    CardDatabaseError
        Unknown card ids, or no phase to index against.
    """
    check_tolerances(spacing_tol=spacing_tol, angle_tol_deg=angle_tol_deg)
    if not (math.isfinite(d_min_nm) and d_min_nm > 0):
        raise AnalysisParameterError(f"smallest spacing d_min must be > 0 nm, got {d_min_nm!r}")
    check_decision_options(
        ambiguity_decades=ambiguity_decades, max_chance=max_chance, max_zone_index=max_zone_index
    )
    if not (0.0 < forbidden_weight <= 1.0):
        raise AnalysisParameterError(
            f"forbidden weight must be in (0, 1], got {forbidden_weight!r}"
        )
    phases = select_phases(db, card_ids)
    tables = tuple(
        _cached_phase_table(
            p,
            include_forbidden=include_forbidden,
            d_min_nm=d_min_nm,
            spacing_tol=spacing_tol,
            angle_tol_deg=angle_tol_deg,
            max_zone_index=int(max_zone_index),
            forbidden_weight=float(forbidden_weight),
        )
        for p in phases
    )
    out = IndexingTables(
        db=db,
        phases=tables,
        card_ids=tuple(p.card_id for p in phases),
        spacing_tol=float(spacing_tol),
        angle_tol_deg=float(angle_tol_deg),
        include_forbidden=bool(include_forbidden),
        d_min_nm=float(d_min_nm),
        ambiguity_decades=float(ambiguity_decades),
        max_chance=float(max_chance),
        max_zone_index=int(max_zone_index),
        forbidden_weight=float(forbidden_weight),
        max_planes=int(max_planes),
    )
    out._phase_pos.update({t.card_id: i for i, t in enumerate(tables)})
    return out


def check_decision_options(
    *, ambiguity_decades: float, max_chance: float, max_zone_index: int
) -> None:
    """Raise :class:`AnalysisParameterError` unless the decision options are in range."""
    try:
        amb = float(ambiguity_decades)
        mc = float(max_chance)
    except (TypeError, ValueError):
        raise AnalysisParameterError(
            f"ambiguity decades and max chance must be numbers, got {ambiguity_decades!r}, "
            f"{max_chance!r}"
        ) from None
    if not (math.isfinite(amb) and 0.0 <= amb <= 6.0):
        raise AnalysisParameterError(
            f"ambiguity decades must be in [0, 6], got {ambiguity_decades!r}"
        )
    if not (math.isfinite(mc) and 0.0 < mc < 1.0):
        raise AnalysisParameterError(f"max chance must be in (0, 1), got {max_chance!r}")
    if (
        isinstance(max_zone_index, bool)
        or not isinstance(max_zone_index, int | np.integer)
        or not 1 <= int(max_zone_index) <= 12
    ):
        raise AnalysisParameterError(
            f"largest zone-axis index must be an integer from 1 to 12, got {max_zone_index!r}"
        )


def check_tolerances(*, spacing_tol: float, angle_tol_deg: float) -> None:
    """Raise :class:`AnalysisParameterError` unless both tolerances are sensible positive numbers."""
    try:
        st = float(spacing_tol)
        at = float(angle_tol_deg)
    except (TypeError, ValueError):
        raise AnalysisParameterError(
            f"tolerances must be numbers, got spacing {spacing_tol!r}, angle {angle_tol_deg!r}"
        ) from None
    if not (math.isfinite(st) and 0 < st < 0.5):
        raise AnalysisParameterError(
            f"spacing tolerance must be a relative value in (0, 0.5), e.g. 0.03 for 3 %, got {spacing_tol!r}"
        )
    if not (math.isfinite(at) and 0 < at < 45):
        raise AnalysisParameterError(
            f"angle tolerance must be in (0, 45) degrees, got {angle_tol_deg!r}"
        )


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseMatch:
    """The best explanation of a window's planes by one phase.

    Attributes
    ----------
    card_id, phase_name : str
    hkl : tuple of (h, k, l) or None
        Per measured plane (in the window's plane order): the assigned member (angle-confirmed)
        or the family representative (spacing-only); None where the phase does not explain it.
    families : tuple of (h, k, l) or None
        Per plane: the family representative.
    d_ref_nm : tuple of float or None
        Per plane: the reference spacing [nm].
    rel_residuals : tuple of float or None
        Per plane: ``(d - d_ref) / d_ref``.
    forbidden : tuple of bool
        Per plane: the assigned reflection is kinematically forbidden.
    zone_axis : (u, v, w) or None
        Common zone axis (angle-confirmed matches only), first non-zero index positive.
    angle_residuals_deg : tuple of float
        ``|measured - theoretical|`` acute angle for every pair of explained planes [deg].
    score : float
        ``1 / (1 + chance)`` for an angle-confirmed match, ``0.5 / (1 + chance)`` for a
        spacing-only one (module docstring).
    n_explained : int
    angle_confirmed : bool
    chance : float
        ``K``, the odds "chance : card" (module docstring): the likelihood of the measured planes
        if they were random, over their likelihood under this card and hypothesis.
    spacing_sigma_rel : tuple of float
        Per plane: the relative spacing uncertainty used (fit and model).
    density_log10 : float
        The card-density part of ``log10(chance)`` (:func:`_family_density`).
    """

    card_id: str
    phase_name: str
    hkl: tuple[HKL | None, ...]
    families: tuple[HKL | None, ...]
    d_ref_nm: tuple[float | None, ...]
    rel_residuals: tuple[float | None, ...]
    forbidden: tuple[bool, ...]
    zone_axis: HKL | None
    angle_residuals_deg: tuple[float, ...]
    score: float
    n_explained: int
    angle_confirmed: bool
    chance: float = 1.0
    spacing_sigma_rel: tuple[float, ...] = ()
    density_log10: float = 0.0

    @property
    def fit_log10(self) -> float:
        """log10 odds without the card-density term: how well the residuals fit, alone (used to
        order near-twins, which differ in density but not in what they predict)."""
        return math.log10(max(self.chance, 1e-300)) - self.density_log10

    @property
    def spacing_misfit(self) -> float:
        """``chi^2`` of the spacing residuals with the calibration error common to the window
        (:func:`_log10_odds_spacing`): how far the card's spacings are from the measured ones,
        without any count of reflections or directions (orders twins, which predict the same
        planes and angles)."""
        pairs = [
            (r, s)
            for r, s in zip(self.rel_residuals, self.spacing_sigma_rel, strict=False)
            if r is not None and s is not None and math.isfinite(s) and s > 0
        ]
        if not pairs:
            return math.inf
        w = np.array([1.0 / (s * s) for _, s in pairs])
        r = np.array([r for r, _ in pairs])
        s0, s1, s2 = w.sum(), (w * r).sum(), (w * r * r).sum()
        return float(s2 - s1 * s1 / (1.0 / SIGMA_CALIBRATION_REL**2 + s0))

    @property
    def evidence(self) -> float:
        """``-log10(chance)`` [decades]: larger is better."""
        return -math.log10(max(self.chance, 1e-300))

    @property
    def rank_key(self) -> tuple[bool, float]:
        """Sort key, larger is better: (angle-confirmed, evidence)."""
        return (self.angle_confirmed, round(self.evidence, 9))


@dataclass(frozen=True)
class WindowIndex:
    """Indexing of one window.

    Attributes
    ----------
    planes : tuple of MeasuredPlane
        The planes, spacing descending.
    angles_deg : tuple of float
        Acute angles between every pair of planes (i < j) [deg].
    best : PhaseMatch or None
        The named phase (``indexed``/``ambiguous``), or the best candidate of a
        ``spacing-only`` window (not a name: see ``named``); None otherwise.
    alternatives : tuple of PhaseMatch
        Other phases within ``ambiguity_decades`` of the best (named windows), or the other
        candidates (``spacing-only`` and ``unmatched`` windows), best first.
    status : str
        ``indexed``, ``ambiguous``, ``spacing-only``, ``unmatched`` or ``no-spots``.
    """

    planes: tuple[MeasuredPlane, ...]
    angles_deg: tuple[float, ...]
    best: PhaseMatch | None
    alternatives: tuple[PhaseMatch, ...]
    status: str

    @property
    def named(self) -> bool:
        """True when the window names a phase (``indexed`` or ``ambiguous``)."""
        return self.status in NAMED_STATUSES


# --------------------------------------------------------------------------------------------
# Search: all windows at once, per phase
# --------------------------------------------------------------------------------------------

_LOG_UNEXPLAINED = math.log10(1.0 / UNEXPLAINED_PENALTY)


@dataclass(frozen=True)
class _Planes:
    """The planes of many windows, flattened (window ``w`` owns ``start[w] .. start[w] + n[w]``)."""

    d: np.ndarray
    phi: np.ndarray
    sig_r: np.ndarray
    sig_a: np.ndarray
    win: np.ndarray
    local: np.ndarray
    start: np.ndarray
    n: np.ndarray
    strength_rank: np.ndarray


def _flatten(plane_sets: Sequence[Sequence[MeasuredPlane]]) -> _Planes:
    n = np.array([len(p) for p in plane_sets], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) if len(n) else n
    flat = [q for ps in plane_sets for q in ps]
    inten = np.array([q.intensity for q in flat], dtype=float)
    win = np.repeat(np.arange(len(n)), n)
    local = np.concatenate([np.arange(k) for k in n]).astype(np.int64) if len(n) else n
    # Rank of each plane by intensity within its window (0 = strongest; ties: plane order).
    order = np.lexsort((local, -inten, win))
    rank = np.empty(len(flat), dtype=np.int64)
    rank[order] = np.arange(len(flat)) - np.repeat(start, n)
    return _Planes(
        d=np.array([q.spacing_nm for q in flat], dtype=float),
        phi=np.array([q.angle_deg for q in flat], dtype=float),
        sig_r=np.array([q.spacing_sigma_rel for q in flat], dtype=float),
        sig_a=np.array([q.direction_sigma_deg for q in flat], dtype=float),
        win=win,
        local=local,
        start=start,
        n=n,
        strength_rank=rank,
    )


def _pair_queries(fl: _Planes) -> tuple[np.ndarray, np.ndarray]:
    """Ordered pairs (i, j != i) of planes of the same window, as global plane indices, with the
    reference plane ``i`` among the window's :data:`MAX_REFERENCES` strongest.

    A hypothesis is reached from each of its explained planes as the reference; one that
    explains none of the strongest planes leaves them all unexplained and cannot compete.
    """
    qi: list[np.ndarray] = []
    qj: list[np.ndarray] = []
    for k in np.unique(fl.n):
        if k < 2:
            continue
        ii, jj = np.nonzero(~np.eye(int(k), dtype=bool))
        base = fl.start[fl.n == k][:, None]
        gi = (base + ii[None, :]).ravel()
        gj = (base + jj[None, :]).ravel()
        keep = fl.strength_rank[gi] < MAX_REFERENCES
        qi.append(gi[keep])
        qj.append(gj[keep])
    if not qi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(qi), np.concatenate(qj)


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges ``lo[k] .. hi[k] - 1``: (k per element, element index)."""
    cnt = np.maximum(hi - lo, 0)
    k = np.repeat(np.arange(len(lo)), cnt)
    idx = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
    return k, idx


def _candidates_within(
    pt: PhaseTable, d: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plane, family, relative residual) with ``|d - d_ref| / d_ref <= tol``, plane by plane
    (ascending plane, then ascending ``d_ref``)."""
    fd = pt.family_d_nm
    if len(fd) == 0 or len(d) == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0)
    order = pt.family_order
    ds = fd[order]
    lo = np.searchsorted(ds, d / (1.0 + tol) * (1.0 - 1e-12), side="left")
    hi = np.searchsorted(ds, d / (1.0 - tol) * (1.0 + 1e-12), side="right")
    p, idx = _expand(lo, hi)
    f = order[idx]
    r = (d[p] - fd[f]) / fd[f]
    ok = np.abs(r) <= tol
    return p[ok], f[ok], r[ok]


def _spacing_candidates(
    pt: PhaseTable, d: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plane, family, relative residual) with ``|d - d_ref| / d_ref <= tol``, sorted by plane,
    then |residual|, then family (the representative's hkl descending breaks exact ties)."""
    p, f, r = _candidates_within(pt, d, tol)
    o = np.lexsort((f, np.abs(r), p))
    return p[o], f[o], r[o]


def _first_per_group(group: np.ndarray, key1: np.ndarray, key2: np.ndarray) -> np.ndarray:
    """Per run of equal ``group`` values (contiguous): the index of its smallest ``key1``, ties
    broken by the smallest integer ``key2``, without sorting the runs."""
    if len(group) == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    seg = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(group)]])))
    tie = key1 == np.minimum.reduceat(key1, starts)[seg]
    k2_min = np.minimum.reduceat(np.where(tie, key2, np.iinfo(np.int64).max), starts)
    sel = np.flatnonzero(tie & (key2 == k2_min[seg]))
    return sel[np.unique(seg[sel], return_index=True)[1]]


def _best_spacing_candidates(
    pt: PhaseTable, d: np.ndarray, tol: float, include_forbidden: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plane only the first usable candidate of :func:`_spacing_candidates` (smallest
    |residual|, then family), without sorting them all: ``(plane, family, residual)``."""
    p, f, r = _candidates_within(pt, d, tol)
    if not include_forbidden:
        ok = ~pt.family_forbidden[f]
        p, f, r = p[ok], f[ok], r[ok]
    sel = _first_per_group(p, np.abs(r), f)
    return p[sel], f[sel], r[sel]


_LN10 = math.log(10.0)
_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _log10_odds_spacing(
    s0: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    slog: np.ndarray,
    m: np.ndarray,
    ln_density: np.ndarray,
) -> np.ndarray:
    """log10 of the odds "chance : card" of the explained spacings of each hypothesis.

    Under the card, the relative residuals are ``r_k = delta + e_k``: a calibration error
    ``delta ~ N(0, SIGMA_CALIBRATION_REL^2)`` common to the window and independent
    ``e_k ~ N(0, sigma_k^2)``, so ``r ~ N(0, D + sigma_c^2 1 1^T)`` with ``D = diag(sigma_k^2)``;
    by Sherman-Morrison, ``r^T S^-1 r = S2 - S1^2 / (1 / sigma_c^2 + S0)`` and
    ``det S = prod sigma_k^2 (1 + sigma_c^2 S0)``, with the sums ``S0 = sum 1/sigma^2``,
    ``S1 = sum r/sigma^2``, ``S2 = sum r^2/sigma^2`` (``slog = sum ln sigma^2``). Under chance,
    each residual has the density of the card's families per unit of ``ln d`` around the
    measured spacing (:func:`_family_density`); ``ln_density`` is the sum of their logs.
    """
    inv_c = 1.0 / SIGMA_CALIBRATION_REL**2
    chi2 = s2 - s1 * s1 / (inv_c + s0)
    logdet = slog + np.log1p(s0 / inv_c)
    ln_card = -0.5 * chi2 - 0.5 * logdet - m * _LN_SQRT_2PI
    return (ln_density - ln_card) / _LN10


def _log10_unlisted_net(s0: np.ndarray, s1: np.ndarray, scale_range_rel: float) -> np.ndarray:
    """log10 of the odds "an unlisted crystal with the card's net : card" of each hypothesis.

    Both explain the same planes with the same directions; they differ in the scale (here), and
    in the intensities: the unlisted crystal has its own, so the card's intensity factors for
    the lowest orders seen multiply these odds in :func:`_search_phase`. Under the card the
    common relative residual of the window is the calibration error,
    ``N(0, SIGMA_CALIBRATION_REL^2)``; under an unlisted crystal with the same net it is any
    scale within the spacing tolerance, uniform on ``[-T, T]``. With the weighted mean residual
    ``mu = S1 / S0`` and its variance ``1 / S0`` (sums of :func:`_log10_odds_spacing`), the ratio
    of the two marginal likelihoods is ``(1 / 2T) / N(mu; 0, sigma_c^2 + 1 / S0)``, times the prior
    odds :data:`UNLISTED_NET_PRIOR`. At ``mu = 0`` it is about 0.004; it passes
    :data:`MAX_CHANCE` where ``|mu|`` exceeds about 2.2 calibration sigmas (a window whose every
    spacing sits 2.5 % off the card is not named by it).
    """
    var = SIGMA_CALIBRATION_REL**2 + 1.0 / s0
    mu = s1 / s0
    ln_ratio = (
        math.log(UNLISTED_NET_PRIOR / (2.0 * scale_range_rel))
        + 0.5 * np.log(2.0 * math.pi * var)
        + 0.5 * mu * mu / var
    )
    return ln_ratio / _LN10


def _log10_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log10(10**a + 10**b)``, elementwise (``inf`` stays ``inf``)."""
    return np.logaddexp(a * _LN10, b * _LN10) / _LN10


def _family_density(pt: PhaseTable, d: np.ndarray, half_width: float) -> np.ndarray:
    """Weighted number of the card's families per unit ``ln d`` around each spacing ``d``.

    ``sum_f w_f [|ln(d / d_f)| <= H] / (2 H)`` with ``H`` the spacing tolerance, at least
    ``1 / (2 H)`` (the matched family itself): ``2 H`` times it is the expected number of the
    card's families that a random spacing near ``d`` matches within the tolerance. A card dense in
    reflections in the measured range explains random spacings easily and pays for it here.
    """
    if len(pt.family_d_nm) == 0 or len(d) == 0:
        return np.full(len(d), 1.0 / (2.0 * half_width))
    ld, cw = pt.sorted_log_d, pt.cumulative_weight
    lnd = np.log(d)
    lo = np.searchsorted(ld, lnd - half_width, side="left")
    hi = np.searchsorted(ld, lnd + half_width, side="right")
    return np.maximum(cw[hi] - cw[lo], 1.0) / (2.0 * half_width)


def _log10_odds_angle(n_dir: np.ndarray, delta: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """log10 of the odds "chance : card" of one direction: uniform over ``n_dir`` directions in
    180 deg against ``N(delta; 0, sigma)``."""
    ln_card = -0.5 * np.square(delta / sig) - np.log(sig) - _LN_SQRT_2PI
    ln_chance = np.log(np.maximum(n_dir, 1) / 180.0)
    return (ln_chance - ln_card) / _LN10


@dataclass(frozen=True)
class _PhaseResult:
    """One phase's best hypotheses for every window (``-1`` / ``inf`` where none).

    ``best_*`` are per window; ``rows_*`` hold the non-reference planes of each window's best
    hypothesis (window ``w`` owns ``rows_start[w] .. rows_start[w] + rows_n[w]``).
    """

    log_chance: np.ndarray
    log_density: np.ndarray
    n_explained: np.ndarray
    ref_plane: np.ndarray
    ref_family: np.ndarray
    ref_residual: np.ndarray
    zone: np.ndarray
    sign: np.ndarray
    rows_start: np.ndarray
    rows_n: np.ndarray
    rows_plane: np.ndarray
    rows_member: np.ndarray
    rows_family: np.ndarray
    rows_residual: np.ndarray
    rows_delta: np.ndarray
    so_log_chance: np.ndarray
    so_family: np.ndarray
    so_residual: np.ndarray


def _amplitude_rel(intensity: np.ndarray, zone_max: np.ndarray) -> np.ndarray:
    """Structure-factor amplitude relative to the zone's strongest, ``sqrt(I / I_max)``."""
    return np.sqrt(np.maximum(intensity, 0.0) / np.maximum(zone_max, 1e-300))


def _log10_weak_penalty(intensity: np.ndarray, zone_max: np.ndarray) -> np.ndarray:
    """log10 of the factor a matched reflection of kinematic ``intensity`` costs: 0 when its
    amplitude is at least WEAK_FRACTION of the zone's strongest (``zone_max`` in intensity), up
    to 1 for an extinct one."""
    rel = np.clip(_amplitude_rel(intensity, zone_max) / WEAK_FRACTION, WEAK_MATCH_FLOOR, 1.0)
    return -np.log10(rel)


def _no_hypotheses(n_w: int) -> dict[str, np.ndarray]:
    """The per-window fields of a :class:`_PhaseResult` for windows without any hypothesis."""
    return dict(
        log_chance=np.full(n_w, np.inf),
        log_density=np.zeros(n_w),
        n_explained=np.zeros(n_w, np.int64),
        ref_plane=np.full(n_w, -1, np.int64),
        ref_family=np.full(n_w, -1, np.int64),
        ref_residual=np.zeros(n_w),
        zone=np.full(n_w, -1, np.int64),
        sign=np.zeros(n_w, np.int64),
        rows_start=np.zeros(n_w, np.int64),
        rows_n=np.zeros(n_w, np.int64),
    )


def _block_hits(
    pt: PhaseTable,
    fl: _Planes,
    qi: np.ndarray,
    qj: np.ndarray,
    cand: tuple[np.ndarray, np.ndarray, np.ndarray],
    ccount: np.ndarray,
    cstart: np.ndarray,
    tol_a: float,
) -> tuple[np.ndarray, ...] | None:
    """The direction hits of one phase, family pair by family pair (see :func:`_direction_hits`)."""
    _cp, cf, cr = cand
    n_f = len(pt.family_hkl)
    # Combine the spacing candidates of both planes of every pair query.
    ni, nj = ccount[qi], ccount[qj]
    q, off = _expand(np.zeros(len(qi), np.int64), ni * nj)
    if len(q) == 0:
        return None
    a_idx = cstart[qi][q] + off // nj[q]
    c_idx = cstart[qj][q] + off % nj[q]
    fa, fc = cf[a_idx], cf[c_idx]
    # Only family pairs that share an allowed zone have directions; each block is a few per
    # zone: all of them, once for both viewing senses, kept within the angle tolerance.
    bs, be = pt.block_bounds
    bid = fa * n_f + fc
    k, e = _expand(bs[bid], be[bid])
    if len(k) == 0:
        return None
    dphi = np.mod(fl.phi[qj[q[k]]] - fl.phi[qi[q[k]]], 180.0)
    psi_e = pt.entry_psi[e]
    d_plus = _wrap90(psi_e - dphi)
    d_minus = _wrap90(psi_e + dphi)
    ok_p = np.abs(d_plus) <= tol_a + 1e-9
    ok_m = np.abs(d_minus) <= tol_a + 1e-9
    mc = np.concatenate([k[ok_p], k[ok_m]])
    me = np.concatenate([e[ok_p], e[ok_m]])
    ms = np.concatenate([np.ones(int(ok_p.sum()), np.int64), np.full(int(ok_m.sum()), -1)])
    delta = np.concatenate([d_plus[ok_p], d_minus[ok_m]])
    return (
        qi[q[mc]],
        qj[q[mc]],
        fa[mc],
        cr[a_idx[mc]],
        fc[mc],
        cr[c_idx[mc]],
        me,
        ms,
        delta,
    )


@dataclass(frozen=True)
class _DirectionGrid:
    """The direction entries of every phase, binned for range lookups (see :func:`_direction_grid`).

    Points ``(x, y, z)`` are binned in unit cells of ``(x, y)``, and sorted by the composite key
    ``cell * z_span + (z - z_lo)``: the points of one cell within a range of ``z`` are one
    contiguous run of ``key``. Every per-point array is in that sorted order.
    """

    key: np.ndarray
    x: np.ndarray
    y: np.ndarray
    x0: int
    y0: int
    nx: int
    ny: int
    z_lo: float
    z_span: float
    per_point: dict[str, np.ndarray]


def _direction_grid(tables: IndexingTables) -> tuple[_DirectionGrid | None, float]:
    """One binned table of the direction entries of every phase (cached on the tables).

    Points ``(ln d_a / H, ln d_c / H, psi / tol)``: the reference family's and the member's
    spacing and the direction between them (with the copies near 0 / 180 deg shifted by 180), in
    units of the tolerances (``H = -ln(1 - spacing_tol)``, the wider side of the relative
    tolerance), so that every entry within the tolerances of a measured plane pair lies in the
    unit box (L-infinity ball) around it. Returns (grid, H); the grid's per-point arrays: phase,
    entry, fa, fc, d_a, d_c, psi.
    """
    hit = tables._cache.get("_grid")
    if hit is not None:
        return hit
    h = -math.log1p(-tables.spacing_tol)
    tol = float(tables.angle_tol_deg)
    pts, cols = [], {k: [] for k in ("phase", "entry", "fa", "fc", "d_a", "d_c", "psi")}
    for k, pt in enumerate(tables.phases):
        if len(pt.entry_key) == 0:
            continue
        n_f = len(pt.family_hkl)
        blk = np.floor(pt.entry_key / 1000.0).astype(np.int64)
        psi_all = pt.entry_key - blk * 1000.0 - 100.0
        ld = np.log(pt.family_d_nm)
        fa, fc = blk // n_f, pt.member_family[pt.entry_member]
        pts.append(np.column_stack([ld[fa] / h, ld[fc] / h, psi_all / tol]))
        cols["phase"].append(np.full(len(blk), k, dtype=np.int64))
        cols["entry"].append(np.arange(len(blk), dtype=np.int64))
        cols["fa"].append(fa)
        cols["fc"].append(fc)
        cols["d_a"].append(pt.family_d_nm[fa])
        cols["d_c"].append(pt.family_d_nm[fc])
        cols["psi"].append(pt.entry_psi)
    grid = None
    if pts:
        p = np.vstack(pts)
        bx, by = np.floor(p[:, 0]).astype(np.int64), np.floor(p[:, 1]).astype(np.int64)
        x0, y0 = int(bx.min()), int(by.min())
        nx, ny = int(bx.max()) - x0 + 1, int(by.max()) - y0 + 1
        # Queries lie in 0 <= z < 180 / tol; the margins keep every z range of a query (+-1)
        # inside its own cell's run of keys.
        z_lo = min(float(p[:, 2].min()), 0.0) - 2.0
        z_span = max(float(p[:, 2].max()), 180.0 / tol) - z_lo + 4.0
        key = ((bx - x0) * ny + (by - y0)) * z_span + (p[:, 2] - z_lo)
        o = np.argsort(key, kind="stable")
        grid = _DirectionGrid(
            key=key[o],
            x=p[o, 0],
            y=p[o, 1],
            x0=x0,
            y0=y0,
            nx=nx,
            ny=ny,
            z_lo=z_lo,
            z_span=z_span,
            per_point={k: np.concatenate(v)[o] for k, v in cols.items()},
        )
    tables._cache["_grid"] = (grid, h)
    return grid, h


def _grid_range_search(grid: _DirectionGrid, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (query, point) pair with the point in the unit box (L-infinity distance <= 1, with
    1e-9 to spare) around the query ``pts`` (n, 3): ``(row, point)`` index arrays.

    The box spans at most 3 x 3 unit cells in ``(x, y)``; in each, the points within the ``z``
    range are one run of the sorted keys (two binary searches), and ``x``, ``y`` are then checked.
    """
    slack = 1.0 + 1e-9
    d_x = np.repeat(np.arange(-1, 2), 3)
    d_y = np.tile(np.arange(-1, 2), 3)
    cx = np.floor(pts[:, 0]).astype(np.int64)[:, None] - grid.x0 + d_x[None, :]
    cy = np.floor(pts[:, 1]).astype(np.int64)[:, None] - grid.y0 + d_y[None, :]
    valid = (cx >= 0) & (cx < grid.nx) & (cy >= 0) & (cy < grid.ny)
    base = (cx * grid.ny + cy) * grid.z_span + (pts[:, 2] - grid.z_lo)[:, None]
    lo = np.searchsorted(grid.key, (base - slack).ravel(), side="left")
    hi = np.searchsorted(grid.key, (base + slack).ravel(), side="right")
    hi = np.where(valid.ravel(), hi, lo)
    k, idx = _expand(lo, hi)
    row = k // 9
    keep = (np.abs(grid.x[idx] - pts[row, 0]) <= slack) & (
        np.abs(grid.y[idx] - pts[row, 1]) <= slack
    )
    return row[keep], idx[keep]


def _direction_hits(
    tables: IndexingTables, fl: _Planes, qi: np.ndarray, qj: np.ndarray
) -> dict[int, tuple[np.ndarray, ...]]:
    """Direction hits of every phase, from one range lookup per measured plane pair and sense.

    A hit is a measured pair ``(i, j)``, a viewing sense ``s``, and a direction entry (reference
    family ``fa``, member of family ``fc``, zone) with ``|d_i - d_fa| / d_fa``, ``|d_j - d_fc| /
    d_fc`` within the spacing tolerance and the direction within the angle tolerance. Per phase:
    ``(i, j, fa, r_a, fc, r_c, entry, s, delta)``, as :func:`_block_hits`, the same set.
    """
    grid, h = _direction_grid(tables)
    out: dict[int, tuple[np.ndarray, ...]] = {}
    if grid is None or len(qi) == 0:
        return out
    pp = grid.per_point
    tol, tol_a = tables.spacing_tol, float(tables.angle_tol_deg)
    dphi = np.mod(fl.phi[qj] - fl.phi[qi], 180.0)
    lx, ly = np.log(fl.d[qi]) / h, np.log(fl.d[qj]) / h
    qs = np.concatenate([np.arange(len(qi)), np.arange(len(qi))])
    sg = np.concatenate([np.ones(len(qi), np.int64), np.full(len(qi), -1, np.int64)])
    target = np.mod(sg * np.concatenate([dphi, dphi]), 180.0)
    pts = np.column_stack([np.concatenate([lx, lx]), np.concatenate([ly, ly]), target / tol_a])
    row, g = _grid_range_search(grid, pts)
    if len(row) == 0:
        return out
    # The exact tolerances, for all phases at once; a copy near 0 / 180 deg and its original
    # never both fall within them.
    q, s_ = qs[row], sg[row]
    pi, pj = qi[q], qj[q]
    ra = (fl.d[pi] - pp["d_a"][g]) / pp["d_a"][g]
    rc = (fl.d[pj] - pp["d_c"][g]) / pp["d_c"][g]
    delta = _wrap90(pp["psi"][g] - target[row])
    ok = (np.abs(ra) <= tol) & (np.abs(rc) <= tol) & (np.abs(delta) <= tol_a + 1e-9)
    sel = np.flatnonzero(ok)
    ph = pp["phase"][g[sel]]
    # Grouped by phase, keeping the order within a phase (a stable sort; on 16-bit keys numpy
    # uses a radix sort, linear in the number of hits).
    n_ph = len(tables.phases)
    o = np.argsort(ph.astype(np.int16) if n_ph < 2**15 else ph, kind="stable")
    sel = sel[o]
    gs = g[sel]
    cols = (pi[sel], pj[sel], pp["fa"][gs], ra[sel], pp["fc"][gs], rc[sel], pp["entry"][gs])
    cols = (*cols, s_[sel], delta[sel])
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ph, minlength=n_ph))])
    for k in range(n_ph):
        lo, hi = bounds[k], bounds[k + 1]
        if lo < hi:
            out[k] = tuple(c[lo:hi] for c in cols)
    return out


@dataclass(frozen=True)
class _Rows:
    """The non-reference planes of every hypothesis of one phase (one row per hypothesis and
    plane, grouped by hypothesis: ``start`` / ``count`` per hypothesis, ``of`` per row)."""

    pi: np.ndarray
    pj: np.ndarray
    fa: np.ndarray
    ra: np.ndarray
    fc: np.ndarray
    rc: np.ndarray
    entry: np.ndarray
    sign: np.ndarray
    delta: np.ndarray
    zone: np.ndarray
    member: np.ndarray
    sig_a: np.ndarray
    start: np.ndarray
    count: np.ndarray
    of: np.ndarray


def _spacing_only(
    pt: PhaseTable,
    fl: _Planes,
    cand: tuple[np.ndarray, np.ndarray, np.ndarray],
    ln_rho: np.ndarray,
    include_forbidden: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plane its best family (allowed ones first when no zone is known), and per window the
    log10 odds of those spacings alone: ``(so_log, so_family, so_residual)``."""
    cp, cf, cr = cand
    n_w, n_p = len(fl.n), len(fl.d)
    so_family = np.full(n_p, -1, dtype=np.int64)
    so_res = np.zeros(n_p)
    if len(cp):
        # The candidates are sorted by plane, |residual|, family: the first usable one per plane.
        u = np.flatnonzero(True if include_forbidden else ~pt.family_forbidden[cf])
        pick = u[np.unique(cp[u], return_index=True)[1]]
        so_family[cp[pick]] = cf[pick]
        so_res[cp[pick]] = cr[pick]
    has = so_family >= 0
    hw = has.astype(float) / np.square(fl.sig_r)
    so_m = np.bincount(fl.win, weights=has.astype(float), minlength=n_w)
    so_log = (
        _log10_odds_spacing(
            np.bincount(fl.win, weights=hw, minlength=n_w),
            np.bincount(fl.win, weights=hw * so_res, minlength=n_w),
            np.bincount(fl.win, weights=hw * so_res * so_res, minlength=n_w),
            np.bincount(fl.win, weights=np.where(has, 2.0 * np.log(fl.sig_r), 0.0), minlength=n_w),
            so_m,
            np.bincount(fl.win, weights=np.where(has, ln_rho, 0.0), minlength=n_w),
        )
        + (fl.n - so_m) * _LOG_UNEXPLAINED
    )
    return np.where(so_m > 0, so_log, np.inf), so_family, so_res


def _hypothesis_rows(pt: PhaseTable, fl: _Planes, hits: tuple[np.ndarray, ...]) -> _Rows:
    """Group direction hits into hypotheses (reference plane, its family, zone, viewing sense);
    per hypothesis and plane keep the member with the smallest cost."""
    pi, pj, m_fa, m_ra, m_fc, m_rc, me, ms, delta = hits
    n_f, n_p = len(pt.family_hkl), len(fl.d)
    zone = pt.entry_zone[me]
    member = pt.entry_member[me]
    sig_a = np.hypot(fl.sig_a[pi], fl.sig_a[pj])
    n_z = max(len(pt.zones), 1)
    hkey = ((pi * n_f + m_fa) * n_z + zone) * 2 + (ms > 0)
    cost = np.square(m_rc / fl.sig_r[pj]) + np.square(delta / sig_a)
    gkey = hkey * n_p + pj
    # Per (hypothesis, plane): the smallest cost, then the smallest member (no full sort).
    o = np.argsort(gkey, kind="stable")
    o = o[_first_per_group(gkey[o], cost[o], member[o])]
    _uh, hstart, hcount = np.unique(hkey[o], return_index=True, return_counts=True)
    return _Rows(
        pi=pi[o],
        pj=pj[o],
        fa=m_fa[o],
        ra=m_ra[o],
        fc=m_fc[o],
        rc=m_rc[o],
        entry=me[o],
        sign=ms[o],
        delta=delta[o],
        zone=zone[o],
        member=member[o],
        sig_a=sig_a[o],
        start=hstart,
        count=hcount,
        of=np.repeat(np.arange(len(hstart)), hcount),
    )


def _log10_odds_hypotheses(
    pt: PhaseTable, fl: _Planes, r: _Rows, ln_rho: np.ndarray, scale_range_rel: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log10 odds "chance : card" of every hypothesis from its spacings, directions and
    unexplained planes (module docstring), its summed log density, and the log10 odds "unlisted
    crystal with this net : card" (:func:`_log10_unlisted_net`): ``(log_e, ln_dens, log_net)``."""
    hs, n_h = r.start, len(r.start)
    first_row = np.zeros(len(r.pj), dtype=bool)
    first_row[hs] = True
    n_dir = np.where(first_row, 2 * pt.block_count[r.fa, r.fc], pt.zone_count[r.zone, r.fc])
    row_log = _log10_odds_angle(n_dir.astype(float), r.delta, r.sig_a) + pt.entry_penalty[r.entry]
    h_pi, h_ra = r.pi[hs], r.ra[hs]
    w_rows = 1.0 / np.square(fl.sig_r[r.pj])
    w_ref = 1.0 / np.square(fl.sig_r[h_pi])
    s0 = np.bincount(r.of, weights=w_rows, minlength=n_h) + w_ref
    s1 = np.bincount(r.of, weights=r.rc * w_rows, minlength=n_h) + h_ra * w_ref
    s2 = np.bincount(r.of, weights=r.rc * r.rc * w_rows, minlength=n_h) + h_ra * h_ra * w_ref
    slog = np.bincount(r.of, weights=-np.log(w_rows), minlength=n_h) - np.log(w_ref)
    h_dens = np.bincount(r.of, weights=ln_rho[r.pj], minlength=n_h) + ln_rho[h_pi]
    n_expl = r.count + 1
    log_e = (
        _log10_odds_spacing(s0, s1, s2, slog, n_expl, h_dens)
        + np.bincount(r.of, weights=row_log, minlength=n_h)
        + pt.entry_penalty_ref[r.entry[hs]]
        + (fl.n[fl.win[h_pi]] - n_expl) * _LOG_UNEXPLAINED
    )
    return log_e, h_dens, _log10_unlisted_net(s0, s1, scale_range_rel)


def _log10_intensity_terms(pt: PhaseTable, r: _Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log10 factor of the kinematic-intensity rules per hypothesis (``inf``: rejected).

    Weak reflections alone, where the zone has strong ones, are no match; each matched weak
    reflection costs up to ``1 / WEAK_MATCH_FLOOR``, each strong one of the zone missing in the
    observed range ``1 / MISSING_STRONG_PENALTY``. Without a structure (smooth intensities) only
    the low-order rule applies: strong zone reflections at spacings >= ``LOW_ORDER_FACTOR`` x
    the largest matched one.

    Returns ``(weak, missing, lowest)`` per hypothesis: the weak-reflection factor (``inf``
    where the zone is matched by weak reflections alone), the missing-strong factor, and the
    factor of the lowest orders: both rules restricted to reflections within
    :data:`NEIGHBOUR_BAND_REL` of the coarsest matched plane (0 without known intensities).
    Chance pays the first two; the unlisted crystal with the card's net the last
    (:func:`_search_phase`).
    """
    hs, n_h = r.start, len(r.start)
    inten = pt.family_intensity
    if not (
        len(inten) and np.all(np.isfinite(inten)) and np.all(np.isfinite(pt.zone_max_intensity))
    ):
        return np.zeros(n_h), np.zeros(n_h), np.zeros(n_h)
    h_zone, h_fa = r.zone[hs], r.fa[hs]
    zmax = pt.zone_max_intensity[h_zone]
    fd = pt.family_d_nm
    out = np.zeros(n_h)
    if pt.intensity_known:
        # A forbidden reflection matched here counts with the intensity double diffraction
        # from the zone's allowed reflections gives it (_dd_intensity; 0 where only
        # include_forbidden admits it).
        zfi = pt.zone_family_intensity
        eff_rows = zfi[r.zone, r.fc]
        eff_ref = zfi[h_zone, h_fa]
        i_max = np.maximum(eff_ref, np.maximum.reduceat(eff_rows, hs))
        out = np.where(_amplitude_rel(i_max, zmax) < WEAK_FRACTION, np.inf, out)
        weak_rows = _log10_weak_penalty(eff_rows, pt.zone_max_intensity[r.zone])
        weak_ref = _log10_weak_penalty(eff_ref, zmax)
        out = out + np.bincount(r.of, weights=weak_rows, minlength=n_h) + weak_ref
        d_lo = np.minimum(np.minimum.reduceat(fd[r.fc], hs), fd[h_fa]) * (1.0 - 1e-9)
    else:
        d_lo = LOW_ORDER_FACTOR * np.maximum(np.maximum.reduceat(fd[r.fc], hs), fd[h_fa])
    # Matched strong members inside the range (each matched plane is one zone member).
    strong_r = inten[r.fc] >= STRONG_FRACTION * pt.zone_max_intensity[r.zone]
    strong_h = inten[h_fa] >= STRONG_FRACTION * zmax
    n_strong = np.bincount(
        r.of, weights=(strong_r & (fd[r.fc] >= d_lo[r.of])).astype(float), minlength=n_h
    ) + (strong_h & (fd[h_fa] >= d_lo))
    in_range = np.searchsorted(pt.strong_key, h_zone * 10.0 + 10.0) - np.searchsorted(
        pt.strong_key, h_zone * 10.0 + d_lo
    )
    missing = np.maximum(in_range - n_strong, 0)
    log_pen = math.log10(1.0 / MISSING_STRONG_PENALTY)
    if not pt.intensity_known:
        return out, missing * log_pen, np.zeros(n_h)
    # The lowest orders: within NEIGHBOUR_BAND_REL of the coarsest matched plane. Their strong
    # zone reflections left unmatched, and the weak-reflection factor of the matched ones
    # (superstructure reflections the structure model leaves out have no known amplitude).
    d_hi = np.maximum(np.maximum.reduceat(fd[r.fc], hs), fd[h_fa])
    lo_b, hi_b = d_hi / (1.0 + NEIGHBOUR_BAND_REL), d_hi * (1.0 + NEIGHBOUR_BAND_REL)
    band_r = (fd[r.fc] >= lo_b[r.of]) & (fd[r.fc] <= hi_b[r.of])
    band_h = (fd[h_fa] >= lo_b) & (fd[h_fa] <= hi_b)
    in_band = np.searchsorted(pt.strong_key, h_zone * 10.0 + hi_b) - np.searchsorted(
        pt.strong_key, h_zone * 10.0 + lo_b
    )
    seen_band = np.bincount(r.of, weights=(strong_r & band_r).astype(float), minlength=n_h) + (
        strong_h & band_h
    )
    near = np.minimum(np.maximum(in_band - seen_band, 0), missing) * log_pen
    unknown = pt.family_amplitude_unknown
    if len(unknown) != len(fd):
        unknown = np.zeros(len(fd), dtype=bool)
    rows_w = np.where(band_r & ~unknown[r.fc], weak_rows, 0.0)
    near = near + np.bincount(r.of, weights=rows_w, minlength=n_h)
    near = near + np.where(band_h & ~unknown[h_fa], weak_ref, 0.0)
    return out, missing * log_pen, np.where(np.isinf(out), np.inf, near)


def _best_per_window(fl: _Planes, r: _Rows, log_e: np.ndarray) -> np.ndarray:
    """The best hypothesis of every window that has one: smallest E (rounded to 1e-9 as in the
    reference implementation: sums in another order differ in the last bits), then more
    planes, then a fixed order. Only the hypotheses at their window's smallest E are sorted."""
    hs = r.start
    h_win = fl.win[r.pi[hs]]
    le = np.round(log_e, 9)
    w_min = np.full(len(fl.n), np.inf)
    np.minimum.at(w_min, h_win, le)
    tied = np.flatnonzero(np.isfinite(le) & (le == w_min[h_win]))
    keys = (
        r.sign[hs][tied],
        r.zone[hs][tied],
        r.fa[hs][tied],
        fl.local[r.pi[hs][tied]],
        -(r.count[tied] + 1),
        h_win[tied],
    )
    o = tied[np.lexsort(keys)]
    return o[np.unique(h_win[o], return_index=True)[1]]


def _search_phase(
    pt: PhaseTable,
    fl: _Planes,
    qi: np.ndarray,
    qj: np.ndarray,
    *,
    spacing_tol: float,
    angle_tol_deg: float,
    include_forbidden: bool,
    hits: tuple[np.ndarray, ...] | None = None,
    scale_range_rel: float | None = None,
) -> _PhaseResult:
    """All hypotheses of one phase for all windows of ``fl``; the best per window.

    ``hits``: the phase's direction hits from :func:`_direction_hits` (looked up here when None).
    ``scale_range_rel``: the scale range of an unlisted net (:func:`_log10_unlisted_net`), the
    spacing tolerance unless given (the edge-twin search widens the tolerance, not this range).
    """
    n_w, n_p = len(fl.n), len(fl.d)
    ln_rho = np.log(_family_density(pt, fl.d, math.log1p(spacing_tol)))
    # 1-2. Spacing candidates of every plane (sorted, for the family-pair lookup) or only the
    # best one per plane (enough when the direction hits are given); the spacing-only odds.
    if hits is None:
        cand = _spacing_candidates(pt, fl.d, spacing_tol)
        cstart = np.searchsorted(cand[0], np.arange(n_p), side="left")
        ccount = np.searchsorted(cand[0], np.arange(n_p), side="right") - cstart
    else:
        cand = _best_spacing_candidates(pt, fl.d, spacing_tol, include_forbidden)
    so_log, so_family, so_res = _spacing_only(pt, fl, cand, ln_rho, include_forbidden)
    spacing_only = dict(so_log_chance=so_log, so_family=so_family, so_residual=so_res)
    empty = _PhaseResult(
        **_no_hypotheses(n_w),
        rows_plane=np.zeros(0, np.int64),
        rows_member=np.zeros(0, np.int64),
        rows_family=np.zeros(0, np.int64),
        rows_residual=np.zeros(0),
        rows_delta=np.zeros(0),
        **spacing_only,
    )
    if len(qi) == 0 or len(pt.entry_key) == 0:
        return empty
    # 3-4. Every (reference family, member, zone) direction that fits a measured plane pair:
    # looked up for all phases at once (_direction_hits) or here, family pair by family pair.
    if hits is None:
        hits = _block_hits(pt, fl, qi, qj, cand, ccount, cstart, float(angle_tol_deg))
    if hits is None or len(hits[0]) == 0:
        return empty
    # 5-7. Hypotheses, their odds and the intensity rules.
    r = _hypothesis_rows(pt, fl, hits)
    scale_range = spacing_tol if scale_range_rel is None else scale_range_rel
    log_e, h_dens, log_net = _log10_odds_hypotheses(pt, fl, r, ln_rho, scale_range)
    # Chance, or an unlisted crystal with the same net at another scale: their odds add. Neither
    # predicts intensities, so the card's intensity terms multiply both.
    # An unlisted crystal with the net of the matched planes has intensities of its own, so the
    # card's intensity rules weigh against the card here too, but only for the lowest orders
    # seen (within NEIGHBOUR_BAND_REL of the coarsest matched plane): a strong reflection there
    # is transferred alike by the CTF, so it is not hidden (gold [110] as the spinel's net: no
    # (311) beside the (222)), and a weak one there is not the product of double diffraction,
    # which makes kinematically extinct higher orders strong in a thick crystal (the spinel's
    # (442) in the bundled series). Elsewhere the rules are no argument against the net.
    weak, missing, lowest = _log10_intensity_terms(pt, r)
    log_e = _log10_add(log_e + weak + missing, log_net + lowest)
    # 8. The best hypothesis per window and its rows, grouped by window.
    best_h = _best_per_window(fl, r, log_e)
    hs = r.start
    wins = fl.win[r.pi[hs][best_h]]
    res = _no_hypotheses(n_w)
    res["log_chance"][wins] = log_e[best_h]
    res["log_density"][wins] = h_dens[best_h] / _LN10
    res["n_explained"][wins] = r.count[best_h] + 1
    res["ref_plane"][wins] = r.pi[hs][best_h]
    res["ref_family"][wins] = r.fa[hs][best_h]
    res["ref_residual"][wins] = r.ra[hs][best_h]
    res["zone"][wins] = r.zone[hs][best_h]
    res["sign"][wins] = r.sign[hs][best_h]
    rows = np.flatnonzero(np.isin(r.of, best_h))
    rw = fl.win[r.pi[rows]]
    ro = np.lexsort((fl.local[r.pj[rows]], rw))
    rows, rw = rows[ro], rw[ro]
    counts = np.bincount(rw, minlength=n_w)
    res["rows_n"] = counts
    res["rows_start"] = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return _PhaseResult(
        **res,
        rows_plane=r.pj[rows],
        rows_member=r.member[rows],
        rows_family=r.fc[rows],
        rows_residual=r.rc[rows],
        rows_delta=r.delta[rows],
        **spacing_only,
    )


def _angle_match(
    pt: PhaseTable, r: _PhaseResult, w: int, fl: _Planes, planes: Sequence[MeasuredPlane]
) -> PhaseMatch:
    """The angle-confirmed :class:`PhaseMatch` of window ``w`` from a phase's search result."""
    n = len(planes)
    hkl: list[HKL | None] = [None] * n
    fams: list[HKL | None] = [None] * n
    dref: list[float | None] = [None] * n
    res: list[float | None] = [None] * n
    forb = [False] * n
    g: dict[int, np.ndarray] = {}
    for j, m, f, resid in _explained_rows(pt, r, w, fl):
        hkl[j] = tuple(int(v) for v in pt.member_hkl[m])
        fams[j] = pt.family_hkl[f]
        dref[j] = float(pt.family_d_nm[f])
        res[j] = resid
        forb[j] = bool(pt.family_forbidden[f])
        g[j] = pt.member_g[m]
    ks = sorted(g)
    ares = []
    for x in range(len(ks)):
        for y in range(x + 1, len(ks)):
            th = math.degrees(math.acos(min(1.0, abs(float(g[ks[x]] @ g[ks[y]])))))
            meas = acute_between_deg(planes[ks[x]].angle_deg, planes[ks[y]].angle_deg)
            ares.append(abs(th - meas))
    chance = 10.0 ** float(r.log_chance[w])
    return PhaseMatch(
        card_id=pt.card_id,
        phase_name=pt.name,
        hkl=tuple(hkl),
        families=tuple(fams),
        d_ref_nm=tuple(dref),
        rel_residuals=tuple(res),
        forbidden=tuple(forb),
        zone_axis=tuple(int(v) for v in pt.zones[int(r.zone[w])]),
        angle_residuals_deg=tuple(ares),
        score=1.0 / (1.0 + chance),
        n_explained=len(ks),
        angle_confirmed=True,
        chance=chance,
        spacing_sigma_rel=tuple(p.spacing_sigma_rel for p in planes),
        density_log10=float(r.log_density[w]),
    )


def _explained_rows(
    pt: PhaseTable, r: _PhaseResult, w: int, fl: _Planes
) -> list[tuple[int, int, int, float]]:
    """The planes window ``w``'s angle-confirmed match explains: ``(plane index in the window,
    member row, family, relative residual)``, the reference plane (its family's representative)
    first."""
    s0 = int(fl.start[w])
    fa = int(r.ref_family[w])
    out = [(int(r.ref_plane[w]) - s0, pt.family_slices[fa][0], fa, float(r.ref_residual[w]))]
    for k in range(int(r.rows_start[w]), int(r.rows_start[w] + r.rows_n[w])):
        out.append(
            (
                int(r.rows_plane[k]) - s0,
                int(r.rows_member[k]),
                int(r.rows_family[k]),
                float(r.rows_residual[k]),
            )
        )
    return out


def _angle_d_refs(pt: PhaseTable, r: _PhaseResult, w: int, fl: _Planes) -> list[float | None]:
    """The reference spacings [nm] of window ``w``'s angle-confirmed match (``None`` where a plane
    is unexplained), as :func:`_angle_match` gives them in ``d_ref_nm``."""
    out: list[float | None] = [None] * int(fl.n[w])
    for j, _m, f, _res in _explained_rows(pt, r, w, fl):
        out[j] = float(pt.family_d_nm[f])
    return out


def _spacing_match(
    pt: PhaseTable, r: _PhaseResult, w: int, fl: _Planes, planes: Sequence[MeasuredPlane]
) -> PhaseMatch:
    """The spacing-only :class:`PhaseMatch` of window ``w`` (best family per plane)."""
    n = len(planes)
    s0 = int(fl.start[w])
    hkl: list[HKL | None] = [None] * n
    dref: list[float | None] = [None] * n
    res: list[float | None] = [None] * n
    forb = [False] * n
    for k in range(n):
        f = int(r.so_family[s0 + k])
        if f < 0:
            continue
        hkl[k] = pt.family_hkl[f]
        dref[k] = float(pt.family_d_nm[f])
        res[k] = float(r.so_residual[s0 + k])
        forb[k] = bool(pt.family_forbidden[f])
    chance = 10.0 ** float(r.so_log_chance[w])
    return PhaseMatch(
        card_id=pt.card_id,
        phase_name=pt.name,
        hkl=tuple(hkl),
        families=tuple(hkl),
        d_ref_nm=tuple(dref),
        rel_residuals=tuple(res),
        forbidden=tuple(forb),
        zone_axis=None,
        angle_residuals_deg=(),
        score=0.5 / (1.0 + chance),
        n_explained=sum(h is not None for h in hkl),
        angle_confirmed=False,
        chance=chance,
        spacing_sigma_rel=tuple(p.spacing_sigma_rel for p in planes),
    )


def index_windows(
    pair_sets: Sequence[Sequence[Any]],
    tables: IndexingTables,
) -> list[WindowIndex]:
    """Index many windows at once (the whole image): one whole-array search per phase.

    Parameters
    ----------
    pair_sets : sequence of sequence of SpotPair
        Each window's Friedel pairs (anything with ``spacing_nm``, ``angle_deg``, and optionally
        ``intensity``, ``l_px``, ``sigma_l_px``).
    tables : IndexingTables
        From :func:`build_tables`.
    Returns
    -------
    list of WindowIndex
        One per window, in order. Windows with identical planes share one result.
    """
    d_floor = tables.d_min_nm * (1.0 - tables.spacing_tol)
    planes_of = [
        measured_planes(p, max_planes=tables.max_planes, min_spacing_nm=d_floor) for p in pair_sets
    ]
    keys = [
        tuple((q.spacing_nm, q.angle_deg, q.sigma_rel, q.intensity) for q in ps) for ps in planes_of
    ]
    unique: dict[tuple, int] = {}
    uniq_planes: list[tuple[MeasuredPlane, ...]] = []
    for k, ps in zip(keys, planes_of, strict=True):
        if k not in unique:
            unique[k] = len(uniq_planes)
            uniq_planes.append(ps)
    results = _index_unique(uniq_planes, tables)
    return [results[unique[k]] for k in keys]


def _index_unique(
    plane_sets: Sequence[tuple[MeasuredPlane, ...]],
    tables: IndexingTables,
) -> list[WindowIndex]:
    fl = _flatten(plane_sets)
    qi, qj = _pair_queries(fl)
    opts = dict(
        spacing_tol=tables.spacing_tol,
        angle_tol_deg=tables.angle_tol_deg,
        include_forbidden=tables.include_forbidden,
    )
    hits_by_phase = _direction_hits(tables, fl, qi, qj)
    empty_hits = (np.zeros(0, np.int64),) * 9
    per_phase = [
        _search_phase(pt, fl, qi, qj, hits=hits_by_phase.get(k, empty_hits), **opts)
        for k, pt in enumerate(tables.phases)
    ]
    n_w = len(plane_sets)
    if per_phase:
        log_a = np.stack([r.log_chance for r in per_phase])  # (n_phases, n_w)
        log_s = np.stack([r.so_log_chance for r in per_phase])
    else:
        log_a = np.full((0, n_w), np.inf)
        log_s = np.full((0, n_w), np.inf)
    limit = math.log10(tables.max_chance)
    twins = _edge_twins(plane_sets, fl, per_phase, log_a, tables, limit)
    out: list[WindowIndex] = []
    for w, planes in enumerate(plane_sets):
        angles = measured_angles_deg(planes)
        if not planes:
            out.append(WindowIndex(planes, angles, None, (), STATUS_NO_SPOTS))
            continue
        la = log_a[:, w]
        named = [int(k) for k in np.argsort(la, kind="stable") if la[k] <= limit]
        if named:
            ctx = (plane_sets, fl, per_phase, tables)
            out.append(_named_window(w, named, la, twins.get(w, ()), ctx))
            continue
        weak = [int(k) for k in np.argsort(la, kind="stable") if np.isfinite(la[k])][:3]
        cands = [_angle_match(tables.phases[k], per_phase[k], w, fl, planes) for k in weak]
        cands = [replace(c, score=0.5 / (1.0 + c.chance)) for c in cands]
        ls = log_s[:, w]
        spacing = [
            _spacing_match(tables.phases[k], per_phase[k], w, fl, planes)
            for k in np.argsort(ls, kind="stable")[:MAX_CANDIDATES]
            if np.isfinite(ls[k]) and int(k) not in weak
        ]
        if cands or (len(planes) == 1 and spacing):
            allc = cands + spacing
            out.append(WindowIndex(planes, angles, allc[0], tuple(allc[1:]), STATUS_SPACING_ONLY))
        else:
            out.append(WindowIndex(planes, angles, None, tuple(spacing), STATUS_UNMATCHED))
    return out


def _named_window(
    w: int,
    named: list[int],
    la: np.ndarray,
    twins: Sequence[tuple[int, PhaseMatch]],
    ctx: tuple[
        Sequence[tuple[MeasuredPlane, ...]], _Planes, Sequence[_PhaseResult], IndexingTables
    ],
) -> WindowIndex:
    """The :class:`WindowIndex` of a window with convincing matches (phases ``named``, best
    first; ``la`` the log10 K of every phase; ``twins`` its edge near-twins)."""
    plane_sets, fl, per_phase, tables = ctx
    planes = plane_sets[w]
    best_k = named[0]
    best = _angle_match(tables.phases[best_k], per_phase[best_k], w, fl, planes)
    # Every other convincing match: those within the ambiguity margin are listed, and
    # projection twins (below) at any odds (a projection twin explains as many planes).
    n_best = per_phase[best_k].n_explained[w]
    others = [(la[k] <= la[best_k] + tables.ambiguity_decades, k) for k in named[1:]]
    # A match outside the margin is needed only as a projection twin: its spacings are tested
    # first, before the full match is built.
    others_m = [
        (near, _angle_match(tables.phases[k], per_phase[k], w, fl, planes))
        for near, k in others
        if near
        or (
            per_phase[k].n_explained[w] == n_best
            and _same_net_spacings(
                best.d_ref_nm, _angle_d_refs(tables.phases[k], per_phase[k], w, fl)
            )
        )
    ]
    alts = [m for near, m in others_m if near]
    # Near-twins predict the same planes: they are always listed, and the one whose residuals
    # fit best leads (their card densities differ, not what they predict). So do projection
    # twins: other cells whose zone predicts the same net within the calibration (hematite [001]
    # and feroxyhyte [001], 0.8 %).
    group = [best]
    for k, twin in twins:
        if k != best_k:
            alts = [a for a in alts if a.card_id != twin.card_id]
            group.append(twin)
    proj = [m for _near, m in others_m if _same_net(best, m)]
    alts = [a for a in alts if not _same_net(best, a)]
    group.extend(proj)
    # Only a convincing match (K <= max_chance) may lead. Projection twins differ in which
    # reflections their cards list beside the net (so in density, directions and intensity
    # penalties): only their spacings decide.
    group.sort(
        key=lambda m: (
            m.chance > tables.max_chance,
            round(m.spacing_misfit, 9) if proj else 0.0,
            round(m.fit_log10, 9),
            -m.n_explained,
        )
    )
    alts = [*group[1:], *alts]
    alts.sort(key=lambda m: m.rank_key, reverse=True)
    status = STATUS_AMBIGUOUS if alts else STATUS_INDEXED
    return WindowIndex(planes, measured_angles_deg(planes), group[0], tuple(alts), status)


def _edge_twins(
    plane_sets: Sequence[tuple[MeasuredPlane, ...]],
    fl: _Planes,
    per_phase: Sequence[_PhaseResult],
    log_a: np.ndarray,
    tables: IndexingTables,
    limit: float,
) -> dict[int, list[tuple[int, PhaseMatch]]]:
    """Near-twins that lose a plane only at the tolerance edge, per window: ``[(phase, match)]``.

    A near-twin (e.g. maghemite, a = 0.8352 nm, beside magnetite, a = 0.8396 nm: every spacing
    0.5 % apart) loses a plane measured 2.5-3 % from the winner's reference because that plane
    lies 3.0-3.5 % from its own; it then explains fewer planes and pays the unexplained-plane
    factor although the measurement (about 1 % per spacing) cannot tell the two apart. For every
    named window, each other phase whose families lie within the edge band
    (``spacing_tol * tolerance_edge`` relative) of every reference spacing of the best match is
    searched again with the tolerance widened by that band, in one whole-array search per phase
    over those windows; it is a near-twin when it then explains at least as many planes. Only
    cards with near-twin cells are compared (:func:`_twin_cells`): same cell angles, lengths
    within the edge band.
    """
    edge = tables.spacing_tol * tables.tolerance_edge
    out: dict[int, list[tuple[int, PhaseMatch]]] = {}
    if edge <= 0 or log_a.shape[0] < 2:
        return out
    best_k = np.argmin(log_a, axis=0) if log_a.size else np.zeros(0, np.int64)
    wide_tol = tables.spacing_tol * (1.0 + tables.tolerance_edge)
    twin_of = tables._cache.get("_twin_of")
    if twin_of is None:
        twin_of = np.array(
            [[_twin_cells(a.cell, b.cell, edge) for b in tables.phases] for a in tables.phases]
        )
        tables._cache["_twin_of"] = twin_of
    cols = np.arange(log_a.shape[1])
    named = log_a[best_k, cols] <= limit
    for k, pt in enumerate(tables.phases):
        wins = []
        # Windows whose named best phase is a near-twin cell of this one (whole-array test).
        for w in np.flatnonzero(named & (best_k != k) & twin_of[best_k, k]).tolist():
            b = int(best_k[w])
            rb = per_phase[b]
            fams = [int(rb.ref_family[w])] + [
                int(f) for f in rb.rows_family[rb.rows_start[w] : rb.rows_start[w] + rb.rows_n[w]]
            ]
            dref = tables.phases[b].family_d_nm[fams]
            near = np.abs(pt.family_d_nm[None, :] - dref[:, None]) <= edge * dref[:, None]
            if not near.any(axis=1).all():
                continue
            if per_phase[k].n_explained[w] >= rb.n_explained[w]:
                out.setdefault(w, []).append(
                    (k, _angle_match(pt, per_phase[k], w, fl, plane_sets[w]))
                )
            else:
                wins.append(w)
        if not wins:
            continue
        sub = [plane_sets[w] for w in wins]
        sfl = _flatten(sub)
        sqi, sqj = _pair_queries(sfl)
        r = _search_phase(
            pt,
            sfl,
            sqi,
            sqj,
            spacing_tol=wide_tol,
            angle_tol_deg=tables.angle_tol_deg,
            include_forbidden=tables.include_forbidden,
            scale_range_rel=tables.spacing_tol,
        )
        for t, w in enumerate(wins):
            b = int(best_k[w])
            if np.isfinite(r.log_chance[t]) and r.n_explained[t] >= per_phase[b].n_explained[w]:
                out.setdefault(w, []).append((k, _angle_match(pt, r, t, sfl, sub[t])))
    return out


def _same_net(a: PhaseMatch, b: PhaseMatch) -> bool:
    """Projection twins: two angle-confirmed matches that explain the same planes with reference
    spacings in one common ratio (within ``NET_SHAPE_REL``) that the calibration cannot tell from
    1 (within ``NET_SCALE_REL``): their zones predict the same net, up to a scale, e.g. hematite
    [001] (110), (300) and feroxyhyte [001] (100), (110), 0.8 % apart. Their card densities
    differ, not what they predict, so their residuals decide which leads."""
    if not (a.angle_confirmed and b.angle_confirmed) or a.card_id == b.card_id:
        return False
    return _same_net_spacings(a.d_ref_nm, b.d_ref_nm)


def _same_net_spacings(d_a: Sequence[float | None], d_b: Sequence[float | None]) -> bool:
    """The spacing test of :func:`_same_net`: the same planes explained, reference spacings
    [nm] in one common ratio within ``NET_SHAPE_REL`` and within ``NET_SCALE_REL`` of 1."""
    if len(d_a) != len(d_b):
        return False
    ratios = []
    for da, db_ in zip(d_a, d_b, strict=True):
        if (da is None) != (db_ is None):
            return False
        if da is not None:
            ratios.append(db_ / da)
    if len(ratios) < 2:
        return False
    r = np.asarray(ratios)
    return bool(np.ptp(r) <= NET_SHAPE_REL and np.all(np.abs(r - 1.0) <= NET_SCALE_REL))


def _twin_cells(a: Any, b: Any, edge: float) -> bool:
    """Near-twin cells: the same cell angles (within 0.1 deg) and every length within ``edge``
    (relative), e.g. maghemite a = 0.8352 nm and magnetite a = 0.8396 nm (0.53 %)."""
    la = (a.a_nm, a.b_nm, a.c_nm)
    lb = (b.a_nm, b.b_nm, b.c_nm)
    aa = (a.alpha_deg, a.beta_deg, a.gamma_deg)
    ab = (b.alpha_deg, b.beta_deg, b.gamma_deg)
    return all(abs(x - y) <= edge * x for x, y in zip(la, lb, strict=True)) and all(
        abs(x - y) <= 0.1 for x, y in zip(aa, ab, strict=True)
    )


def index_window(
    pairs: Sequence[Any],
    db: CardDatabase | IndexingTables,
    *,
    card_ids: Sequence[str] | None = None,
    spacing_tol: float = 0.03,
    angle_tol_deg: float = 2.0,
    include_forbidden: bool = False,
    d_min_nm: float = 0.1,
    ambiguity_decades: float = AMBIGUITY_DECADES,
    max_chance: float = MAX_CHANCE,
    max_zone_index: int = MAX_ZONE_INDEX,
) -> WindowIndex:
    """Index the planes of one window (:func:`index_windows` for a single window).

    Parameters
    ----------
    pairs : sequence of SpotPair
    db : CardDatabase or IndexingTables
        The cards, or tables from :func:`build_tables` (then the keyword options other than
        none are ignored: the tables carry them). Pass tables when indexing many
        windows, or better, call :func:`index_windows`.
    card_ids, spacing_tol, angle_tol_deg, include_forbidden, d_min_nm, ambiguity_decades,
    max_chance, max_zone_index
        As in :func:`build_tables`.
    Returns
    -------
    WindowIndex
    """
    if isinstance(db, IndexingTables):
        tables = db
    else:
        tables = build_tables(
            db,
            card_ids=card_ids,
            spacing_tol=spacing_tol,
            angle_tol_deg=angle_tol_deg,
            include_forbidden=include_forbidden,
            d_min_nm=d_min_nm,
            ambiguity_decades=ambiguity_decades,
            max_chance=max_chance,
            max_zone_index=max_zone_index,
        )
    return index_windows([pairs], tables)[0]


# --------------------------------------------------------------------------------------------
# Formatting helpers (CSV cells)
# --------------------------------------------------------------------------------------------


def format_hkl(hkl: Sequence[int] | None) -> str:
    """``(2, -2, 0)`` -> ``"2 -2 0"``; None -> ``""``."""
    if hkl is None:
        return ""
    return " ".join(str(int(v)) for v in hkl)


def format_match(match: PhaseMatch) -> str:
    """One-line description: ``name (card) hkl;hkl [uvw] score S K odds dd residuals dang angles``."""
    hk = ";".join(format_hkl(h) if h is not None else "-" for h in match.hkl)
    zone = f" [{format_hkl(match.zone_axis)}]" if match.zone_axis is not None else ""
    res = ";".join(f"{100 * r:+.1f}%" if r is not None else "-" for r in match.rel_residuals)
    ang = ""
    if match.angle_residuals_deg:
        ang = " dang " + ";".join(f"{a:.1f}" for a in match.angle_residuals_deg)
    return (
        f"{match.phase_name} ({match.card_id}) {hk}{zone} score {match.score:.3f} "
        f"K {match.chance:.1e} dd {res}{ang}"
    )


__all__ = [
    "AMBIGUITY_DECADES",
    "FORBIDDEN_WEIGHT",
    "MAX_CHANCE",
    "MAX_PLANES",
    "MAX_ZONE_INDEX",
    "NAMED_STATUSES",
    "STATUSES",
    "STATUS_AMBIGUOUS",
    "STATUS_INDEXED",
    "STATUS_NO_SPOTS",
    "STATUS_SPACING_ONLY",
    "STATUS_UNMATCHED",
    "TOLERANCE_EDGE",
    "UNEXPLAINED_PENALTY",
    "IndexingTables",
    "MeasuredPlane",
    "PhaseMatch",
    "PhaseTable",
    "WindowIndex",
    "acute_between_deg",
    "build_tables",
    "check_decision_options",
    "check_tolerances",
    "format_hkl",
    "format_match",
    "index_window",
    "index_windows",
    "measured_angles_deg",
    "measured_planes",
    "select_phases",
]
