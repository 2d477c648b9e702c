"""Index the lattice planes of one window: spacings + interplanar angles -> phase, (hkl), zone axis.

Method (Zhu et al., ESI-1 and ESI-3, generalised to every crystal system):

1. **Spacings.** Each measured spacing ``d`` is matched against the enabled phases' reflection
   families within a relative tolerance (default 3 %) with :func:`hrtem_core.cards.spacing_candidates`.
2. **Angles.** The angle between two planes is the angle between their reciprocal-lattice vectors,
   ``cos(beta) = h1^T G* h2 / sqrt(h1^T G* h1 * h2^T G* h2)`` with the reciprocal metric tensor
   ``G*`` (this is ESI-3 eqs. 2-5 for orthorhombic, cubic, hexagonal and tetragonal cells, and it is
   also right for monoclinic and triclinic cells). It is evaluated on precomputed Cartesian g
   vectors (``B h``), which is the same thing.
3. **Members, not families.** The measured acute angle between two planes fixes *which members* of
   their families are seen: the first plane is represented by its family's representative ``h1``
   (any member is equivalent by symmetry), and every member ``h2`` of the second family whose acute
   angle to ``h1`` matches (default 2 degrees) defines a zone axis ``[uvw] = h1 x h2``.
4. **Zone consistency.** For three or more planes, every further plane must be a member ``h_k`` of
   one of its candidate families that lies in the same zone (``h_k . [uvw] = 0``, exact integers),
   at the measured *oriented* in-plane angle from ``h1`` (both viewing directions ``+-[uvw]`` are
   tried) and at the measured acute angle to every plane already accepted.
5. **Score.** ``score = coverage * q_d * q_a * q_z`` in [0, 1], with ``coverage = sum(w_k) / n`` over
   the explained planes (``w = 1``, or ``forbidden_weight`` for a kinematically forbidden
   reflection), ``q_d = mean exp(-(r_k / tol_d)^2 / 2)`` over the relative spacing residuals,
   ``q_a = mean exp(-(dbeta / tol_a)^2 / 2)`` over all pairs of explained planes, and a mild
   preference for zone axes with a short period along the beam, ``q_z = exp(-0.1 t / nm)`` with
   ``t = |u a + v b + w c|`` [nm] (:func:`zone_prior`). Phases are
   ranked by (angle-confirmed, weighted number of explained planes, score). Other phases whose
   score is within ``ambiguity_margin`` (relative) of the best, at the same rank, are kept as
   alternatives and the window is "ambiguous" (near-twins such as maghemite / magnetite). A
   near-twin that lost a plane only to the tolerance bound (a spacing inside the best phase's
   tolerance but just outside its own) is listed too: see :func:`_edge_twin` (``tolerance_edge``).

6. **Forbidden reflections.** A kinematically forbidden reflection (screw axis / glide plane) is
   matched in a zone where double diffraction produces it, i.e. where it is the sum of two allowed
   reflections of the same zone (e.g. (002) = (1-11) + (-111) in a spinel's [110] zone; see
   :func:`_dd_ok`); there it counts fully. Other forbidden reflections are matched only with
   ``include_forbidden`` and then weigh ``forbidden_weight`` (0.5) in the coverage.

A window with a single plane (or whose planes no phase explains with a matching angle) gets
spacing-only candidates and the status ``"spacing-only"``: the best by spacing residual, and every
other phase with a matching spacing as an alternative (spacing alone proves little).

Per-phase family members and their Cartesian g vectors are precomputed once per analysis in
:class:`IndexingTables` (:func:`build_tables`); :func:`index_window` then costs a few hundred
microseconds per window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
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

#: Weight of a kinematically forbidden reflection in the coverage term (allowed: 1).
FORBIDDEN_WEIGHT = 0.5
#: Default relative margin under the best score within which other phases are kept as alternatives.
AMBIGUITY_MARGIN = 0.15
#: Width of the tolerance edge, as a fraction of the spacing tolerance (0.25: 3 % -> 3.75 %).
#: A phase that explains the best match's planes once its spacing tolerance is widened by this
#: edge is a near-twin (:func:`_edge_twin`): it is listed as an alternative.
TOLERANCE_EDGE = 0.25
#: Strength of the low-index zone-axis preference on the index norm (:func:`zone_prior` without a cell).
ZONE_PRIOR = 0.03
#: Strength of the short-period zone-axis preference [1/nm] (:func:`zone_prior` with a cell).
ZONE_PRIOR_PER_NM = 0.1
#: At most this many planes (the strongest) of one window enter the combinatorial search.
MAX_PLANES = 8


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
    """

    spacing_nm: float
    angle_deg: float
    intensity: float = 0.0


def measured_planes(
    pairs: Sequence[Any], *, max_planes: int = MAX_PLANES
) -> tuple[MeasuredPlane, ...]:
    """Planes of a window in canonical order: spacing descending, then direction.

    The ``max_planes`` strongest pairs (by ``intensity``) are kept; the order of ``pairs`` does not
    matter.

    Parameters
    ----------
    pairs : sequence of SpotPair
        Anything with ``spacing_nm``, ``angle_deg`` and (optionally) ``intensity`` attributes.
    max_planes : int, keyword-only
        Cap on the planes kept.

    Returns
    -------
    tuple of MeasuredPlane
    """
    planes = []
    for p in pairs:
        d = float(p.spacing_nm)
        if not (math.isfinite(d) and d > 0):
            continue
        planes.append(
            MeasuredPlane(
                spacing_nm=d,
                angle_deg=float(p.angle_deg) % 180.0,
                intensity=float(getattr(p, "intensity", 0.0) or 0.0),
            )
        )
    if len(planes) > max_planes:
        planes.sort(key=lambda q: (-q.intensity, -q.spacing_nm, q.angle_deg))
        planes = planes[:max_planes]
    planes.sort(key=lambda q: (-q.spacing_nm, q.angle_deg, -q.intensity))
    return tuple(planes)


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


# --------------------------------------------------------------------------------------------
# Per-analysis tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PhaseTable:
    """Reflection families of one phase with their members and unit Cartesian g vectors.

    Attributes
    ----------
    card_id, name, space_group : str
    family_hkl : tuple of (h, k, l)
        Family representatives (card rows or computed), ``n_f`` of them.
    family_d_nm : ndarray, shape (n_f,)
    family_forbidden : ndarray of bool, shape (n_f,)
    family_index : dict
        ``(h, k, l)`` representative -> family index.
    member_hkl : ndarray of int, shape (n_m, 3)
        Every member of every family, one of each Friedel pair (+-h is one plane).
    member_family : ndarray of int, shape (n_m,)
    member_g : ndarray, shape (n_m, 3)
        Unit Cartesian reciprocal vectors ``B h / |B h|``.
    family_slices : tuple of (start, stop)
        Rows of ``member_*`` that belong to each family.
    rep_g : ndarray, shape (n_f, 3)
        Unit Cartesian g of each family representative.
    allowed_pm : ndarray of int, shape (n_a, 3)
        Every kinematically allowed member, both signs (for the double-diffraction rule).
    allowed_set : frozenset of (h, k, l)
        The same as a set.
    """

    card_id: str
    name: str
    space_group: str
    cell: Any
    family_hkl: tuple[HKL, ...]
    family_d_nm: np.ndarray
    family_forbidden: np.ndarray
    family_index: dict
    member_hkl: np.ndarray
    member_family: np.ndarray
    member_g: np.ndarray
    family_slices: tuple[tuple[int, int], ...]
    rep_g: np.ndarray
    allowed_pm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    allowed_set: frozenset = frozenset()
    _dd_cache: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class IndexingTables:
    """Everything :func:`index_window` needs, precomputed once per analysis.

    Build with :func:`build_tables`.
    """

    db: Any
    phases: tuple[PhaseTable, ...]
    card_ids: tuple[str, ...]
    spacing_tol: float
    angle_tol_deg: float
    include_forbidden: bool
    d_min_nm: float
    ambiguity_margin: float = AMBIGUITY_MARGIN
    forbidden_weight: float = FORBIDDEN_WEIGHT
    max_planes: int = MAX_PLANES
    tolerance_edge: float = TOLERANCE_EDGE
    _phase_pos: dict = field(default_factory=dict)


def _canonical_sign(hkl: np.ndarray) -> np.ndarray:
    """Flip each row so that its first non-zero index is positive (one of +-h)."""
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    first = np.zeros(len(hkl), dtype=np.int64)
    for col in (2, 1, 0):
        nz = hkl[:, col] != 0
        first = np.where(nz, hkl[:, col], first)
    sign = np.where(first < 0, -1, 1)
    return hkl * sign[:, None]


def _phase_table(
    phase: Phase, *, include_forbidden: bool, d_min_nm: float, spacing_tol: float
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
    if members:
        member_hkl = np.vstack(members)
        member_family = np.concatenate(fam_of)
        g = np.asarray(phase.cell.reciprocal_cartesian(member_hkl.astype(float)), dtype=float)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    else:
        member_hkl = np.zeros((0, 3), dtype=np.int64)
        member_family = np.zeros(0, dtype=np.int64)
        g = np.zeros((0, 3))
    rep_g = g[[s for s, _ in slices]] if slices else np.zeros((0, 3))
    forb_arr = np.asarray(forb, dtype=bool)
    allowed = member_hkl[~forb_arr[member_family]] if len(member_hkl) else member_hkl
    allowed_pm = np.vstack([allowed, -allowed]) if len(allowed) else np.zeros((0, 3), np.int64)
    return PhaseTable(
        card_id=phase.card_id,
        name=phase.name,
        space_group=phase.space_group,
        cell=phase.cell,
        family_hkl=tuple(reps),
        family_d_nm=np.asarray(ds, dtype=float),
        family_forbidden=np.asarray(forb, dtype=bool),
        family_index={r: i for i, r in enumerate(reps)},
        member_hkl=member_hkl,
        member_family=member_family,
        member_g=g,
        family_slices=tuple(slices),
        rep_g=rep_g,
        allowed_pm=allowed_pm,
        allowed_set=frozenset(map(tuple, allowed_pm.tolist())),
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
    ambiguity_margin: float = AMBIGUITY_MARGIN,
    forbidden_weight: float = FORBIDDEN_WEIGHT,
    max_planes: int = MAX_PLANES,
) -> IndexingTables:
    """Precompute family members and Cartesian g vectors of the phases (once per analysis).

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
        diffraction (weighted ``forbidden_weight``); those it produces are always matched.
    d_min_nm : float, keyword-only
        Smallest spacing of interest [nm].
    ambiguity_margin : float, keyword-only
        Relative score margin for alternatives (default 0.15).
    forbidden_weight : float, keyword-only
        Coverage weight of a forbidden reflection (default 0.5).
    max_planes : int, keyword-only
        At most this many (strongest) planes per window are indexed.

    Raises
    ------
    AnalysisParameterError
        A tolerance that is not a positive finite number.
    CardDatabaseError
        Unknown card ids, or no phase to index against.
    """
    check_tolerances(spacing_tol=spacing_tol, angle_tol_deg=angle_tol_deg)
    if not (math.isfinite(d_min_nm) and d_min_nm > 0):
        raise AnalysisParameterError(f"smallest spacing d_min must be > 0 nm, got {d_min_nm!r}")
    if not (0.0 <= ambiguity_margin < 1.0):
        raise AnalysisParameterError(
            f"ambiguity margin must be in [0, 1), got {ambiguity_margin!r}"
        )
    phases = select_phases(db, card_ids)
    tables = tuple(
        _phase_table(
            p, include_forbidden=include_forbidden, d_min_nm=d_min_nm, spacing_tol=spacing_tol
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
        ambiguity_margin=float(ambiguity_margin),
        forbidden_weight=float(forbidden_weight),
        max_planes=int(max_planes),
    )
    out._phase_pos.update({t.card_id: i for i, t in enumerate(tables)})
    return out


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
        In [0, 1] (module docstring).
    n_explained : int
    angle_confirmed : bool
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
    weight: float = 0.0

    @property
    def rank_key(self) -> tuple[bool, float, float]:
        """Sort key, larger is better: (angle-confirmed, weighted planes explained, score)."""
        return (self.angle_confirmed, round(self.weight, 6), self.score)


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
    alternatives : tuple of PhaseMatch
        Other phases within the ambiguity margin of the best, best first.
    status : str
        ``indexed``, ``ambiguous``, ``spacing-only``, ``unmatched`` or ``no-spots``.
    """

    planes: tuple[MeasuredPlane, ...]
    angles_deg: tuple[float, ...]
    best: PhaseMatch | None
    alternatives: tuple[PhaseMatch, ...]
    status: str


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


def _q(x: np.ndarray | float) -> np.ndarray | float:
    return np.exp(-0.5 * np.square(x))


def _wrap90(a: np.ndarray) -> np.ndarray:
    """Wrap angles [deg] to [-90, 90): the difference of two plane directions (mod 180)."""
    return (np.asarray(a) + 90.0) % 180.0 - 90.0


def _spacing_matches(
    tables: IndexingTables, planes: Sequence[MeasuredPlane]
) -> list[list[list[tuple[int, float]]]]:
    """Per phase, per plane: candidate ``(family index, rel. residual)`` sorted by |residual|.

    The rule of :func:`hrtem_core.cards.spacing_candidates` (``|d - d_ref| / d_ref <= tol``, the
    single spacing rule of the project), vectorised over the precomputed family spacings; ties are
    ordered as there (then by hkl). Forbidden families are always returned (see ``_dd_ok``).
    """
    d = np.array([p.spacing_nm for p in planes], dtype=float)
    return [_phase_spacing_matches(pt, d, tables.spacing_tol) for pt in tables.phases]


def _phase_spacing_matches(
    pt: PhaseTable, d_nm: np.ndarray, rel_tol: float
) -> list[list[tuple[int, float]]]:
    """Per plane of spacings ``d_nm`` (n,) [nm]: ``(family index, rel. residual)`` of one phase."""
    if len(pt.family_d_nm) == 0:
        return [[] for _ in range(len(d_nm))]
    res = (d_nm[:, None] - pt.family_d_nm[None, :]) / pt.family_d_nm[None, :]
    per_plane: list[list[tuple[int, float]]] = []
    for k in range(len(d_nm)):
        hit = np.flatnonzero(np.abs(res[k]) <= rel_tol)
        items = [(int(f), float(res[k, f])) for f in hit]
        items.sort(key=lambda c: (abs(c[1]), tuple(-x for x in pt.family_hkl[c[0]])))
        per_plane.append(items)
    return per_plane


def _spacing_only(
    pt: PhaseTable,
    cands: list[list[tuple[int, float]]],
    n: int,
    tables: IndexingTables,
) -> PhaseMatch | None:
    """Best family per plane by spacing alone (no angle confirmation)."""
    hkl: list[HKL | None] = [None] * n
    dref: list[float | None] = [None] * n
    res: list[float | None] = [None] * n
    forb = [False] * n
    weight = 0.0
    qsum = 0.0
    m = 0
    for k in range(n):
        ck = cands[k]
        if not tables.include_forbidden:
            # No zone is known, so double diffraction cannot be invoked: allowed families only.
            ck = [c for c in ck if not pt.family_forbidden[c[0]]]
        if not ck:
            continue
        fi, r = min(ck, key=lambda c: (bool(pt.family_forbidden[c[0]]), abs(c[1]), c[0]))
        hkl[k] = pt.family_hkl[fi]
        dref[k] = float(pt.family_d_nm[fi])
        res[k] = r
        forb[k] = bool(pt.family_forbidden[fi])
        weight += tables.forbidden_weight if forb[k] else 1.0
        qsum += float(_q(r / tables.spacing_tol))
        m += 1
    if m == 0:
        return None
    score = (weight / n) * (qsum / m)
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
        score=float(score),
        n_explained=m,
        angle_confirmed=False,
        weight=weight,
    )


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of (..., 3) arrays (np.cross has a large per-call overhead)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


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
    h = tuple(int(v) for v in hkl)
    z = tuple(int(v) for v in uvw)
    key = (h, z)
    hit = pt._dd_cache.get(key)
    if hit is None:
        hit = False
        if sum(a * b for a, b in zip(h, z, strict=True)) == 0 and len(pt.allowed_pm):
            g1 = pt.allowed_pm[(pt.allowed_pm @ np.asarray(z, dtype=np.int64)) == 0]
            for g in (np.asarray(h, dtype=np.int64)[None, :] - g1).tolist():
                if tuple(g) in pt.allowed_set:
                    hit = True
                    break
        pt._dd_cache[key] = hit
    return hit


def _angle_search(
    pt: PhaseTable,
    planes: Sequence[MeasuredPlane],
    cands: list[list[tuple[int, float]]],
    tables: IndexingTables,
) -> PhaseMatch | None:
    """Best angle-consistent assignment (>= 2 planes sharing a zone axis), or None."""
    n = len(planes)
    tol_a = tables.angle_tol_deg
    tol_d = tables.spacing_tol
    theta = np.array([p.angle_deg for p in planes])
    diff = np.abs(theta[:, None] - theta[None, :]) % 180.0
    acute = np.minimum(diff, 180.0 - diff)  # acute_between_deg, vectorised
    with_c = [k for k in range(n) if cands[k]]
    if len(with_c) < 2:
        return None
    # Candidate members of every plane, concatenated: rows of (plane, family, residual, member).
    flat = [(k, fi, r) for k in with_c for fi, r in cands[k]]
    f_plane = np.array([x[0] for x in flat], dtype=np.int64)
    f_fam = np.array([x[1] for x in flat], dtype=np.int64)
    f_res = np.array([x[2] for x in flat], dtype=float)
    f_start = np.array([pt.family_slices[fi][0] for fi in f_fam.tolist()], dtype=np.int64)
    f_cnt = np.array([pt.family_slices[fi][1] for fi in f_fam.tolist()], dtype=np.int64) - f_start
    c_plane = np.repeat(f_plane, f_cnt)
    c_fam = np.repeat(f_fam, f_cnt)
    c_res = np.repeat(f_res, f_cnt)
    c_mem = (
        np.arange(int(f_cnt.sum()), dtype=np.int64)
        - np.repeat(np.cumsum(f_cnt) - f_cnt, f_cnt)
        + np.repeat(f_start, f_cnt)
    )
    c_hkl = pt.member_hkl[c_mem]
    c_g = pt.member_g[c_mem]
    c_forb = pt.family_forbidden[c_fam]
    c_cost_d = np.square(c_res / tol_d)

    best: PhaseMatch | None = None
    best_key: tuple | None = None
    seen: set = set()
    built: set = set()
    for i in with_c:
        for fi, _ri in cands[i]:
            h_i = pt.member_hkl[pt.family_slices[fi][0]]
            g_i = pt.rep_g[fi]
            # Zones from every later plane j whose members meet h_i at the measured acute angle.
            zones: dict[HKL, np.ndarray] = {}
            rows = np.flatnonzero(c_plane > i)  # rows are in plane order, as the loop over j was
            if rows.size:
                cosang = np.clip(np.abs(c_g[rows] @ g_i), 0.0, 1.0)
                ang = np.degrees(np.arccos(cosang))
                r_ok = rows[np.abs(ang - acute[i, c_plane[rows]]) <= tol_a]
                if r_ok.size:
                    cross = _cross(h_i[None, :], c_hkl[r_ok])
                    nonpar = np.any(cross != 0, axis=1)
                    if np.any(nonpar):
                        nvecs = _cross(g_i[None, :], c_g[r_ok[nonpar]])
                        nvecs /= np.linalg.norm(nvecs, axis=1, keepdims=True)
                        for uvw_raw, nvec in zip(cross[nonpar].tolist(), nvecs, strict=True):
                            key = _reduce(uvw_raw)
                            if key not in zones:
                                zones[key] = nvec
            for uvw, nvec in zones.items():
                if not tables.include_forbidden and pt.family_forbidden[fi]:
                    if not _dd_ok(pt, h_i, uvw):
                        continue
                in_zone = (c_hkl @ np.asarray(uvw, dtype=np.int64)) == 0
                in_zone &= c_plane != i
                if not tables.include_forbidden:
                    for row in np.flatnonzero(in_zone & c_forb):
                        if not _dd_ok(pt, c_hkl[row], uvw):
                            in_zone[row] = False
                if not np.any(in_zone):
                    continue
                e1 = g_i
                e2 = _cross(nvec, e1)
                gz = c_g[in_zone]
                phi = np.degrees(np.arctan2(gz @ e2, gz @ e1))
                pz = c_plane[in_zone]
                delta = theta[pz] - theta[i]
                for sgn in (1.0, -1.0):
                    dkey = (i, fi, uvw, sgn)
                    if dkey in seen:
                        continue
                    seen.add(dkey)
                    res_a = np.abs(_wrap90(phi - sgn * delta))
                    okz = res_a <= tol_a
                    if not np.any(okz):
                        continue
                    idx = np.flatnonzero(in_zone)[okz]
                    cost = c_cost_d[idx] + np.square(res_a[okz] / tol_a) + 0.5 * c_forb[idx]
                    order = np.lexsort((c_mem[idx], cost, c_plane[idx]))
                    # Greedy in plane order; every accepted pair must match its acute angle.
                    # plane -> (family, member row in the phase table)
                    chosen = {i: (fi, pt.family_slices[fi][0])}
                    chosen_g = {i: g_i}
                    for k in np.unique(c_plane[idx]):
                        for row in idx[order][c_plane[idx][order] == k]:
                            gk = c_g[row]
                            good = True
                            for l_, gl in chosen_g.items():
                                th = math.degrees(math.acos(min(1.0, abs(float(gk @ gl)))))
                                if abs(th - acute[k, l_]) > tol_a:
                                    good = False
                                    break
                            if good:
                                chosen[int(k)] = (int(c_fam[row]), int(c_mem[row]))
                                chosen_g[int(k)] = gk
                                break
                    if len(chosen) < 2:
                        continue
                    # The same assignment is reached from several reference planes and signs:
                    # build it once. An assignment whose weight is below the best one's cannot
                    # win (the rank key compares weights first): skip it (exact pruning).
                    akey = (uvw, tuple(sorted((k, m) for k, (_f, m) in chosen.items())))
                    if akey in built:
                        continue
                    built.add(akey)
                    if best_key is not None:
                        wsum = 0.0
                        for _f, m in chosen.values():
                            forb_m = bool(pt.family_forbidden[_f])
                            wsum += (
                                tables.forbidden_weight
                                if forb_m and not _dd_ok(pt, pt.member_hkl[m], uvw)
                                else 1.0
                            )
                        if round(wsum, 6) < best_key[1]:
                            continue
                    match = _build_match(pt, planes, cands, chosen, chosen_g, uvw, acute, tables)
                    # Scores equal to rounding (assignments related by a symmetry the card does
                    # not have, e.g. (101) / (-101) of a trigonal phase in [010]): the first found
                    # wins, which does not depend on the order of the spots or an image rotation.
                    key = (*match.rank_key[:2], round(match.score, 12))
                    if best_key is None or key > best_key:
                        best, best_key = match, key
    return best


def _build_match(
    pt: PhaseTable,
    planes: Sequence[MeasuredPlane],
    cands: list[list[tuple[int, float]]],
    chosen: dict,
    chosen_g: dict,
    uvw: HKL,
    acute: np.ndarray,
    tables: IndexingTables,
) -> PhaseMatch:
    n = len(planes)
    hkl: list[HKL | None] = [None] * n
    fams: list[HKL | None] = [None] * n
    dref: list[float | None] = [None] * n
    res: list[float | None] = [None] * n
    forb = [False] * n
    weight = 0.0
    qd = 0.0
    for k, (fam, mem) in chosen.items():
        res_k = dict(cands[k])[fam]
        hkl[k] = tuple(int(v) for v in pt.member_hkl[mem])
        fams[k] = pt.family_hkl[fam]
        dref[k] = float(pt.family_d_nm[fam])
        res[k] = float(res_k)
        forb[k] = bool(pt.family_forbidden[fam])
        if forb[k] and not _dd_ok(pt, pt.member_hkl[mem], uvw):
            weight += tables.forbidden_weight
        else:  # allowed, or forbidden but produced by double diffraction in this zone
            weight += 1.0
        qd += float(_q(res_k / tables.spacing_tol))
    ks = sorted(chosen)
    ares = []
    for a in range(len(ks)):
        for b in range(a + 1, len(ks)):
            ga, gb = chosen_g[ks[a]], chosen_g[ks[b]]
            th = math.degrees(math.acos(min(1.0, abs(float(ga @ gb)))))
            ares.append(abs(th - float(acute[ks[a], ks[b]])))
    m = len(chosen)
    qa = float(np.mean(_q(np.asarray(ares) / tables.angle_tol_deg))) if ares else 1.0
    zp = pt._dd_cache.get(("zone_prior", uvw))
    if zp is None:
        zp = pt._dd_cache[("zone_prior", uvw)] = zone_prior(uvw, cell=pt.cell)
    score = (weight / n) * (qd / m) * qa * zp
    return PhaseMatch(
        card_id=pt.card_id,
        phase_name=pt.name,
        hkl=tuple(hkl),
        families=tuple(fams),
        d_ref_nm=tuple(dref),
        rel_residuals=tuple(res),
        forbidden=tuple(forb),
        zone_axis=uvw,
        angle_residuals_deg=tuple(float(v) for v in ares),
        score=float(score),
        n_explained=m,
        angle_confirmed=True,
        weight=weight,
    )


def zone_prior(uvw: Sequence[int], *, cell: Any = None) -> float:
    """Preference for zone axes with a short repeat along the beam, in [0, 1].

    With ``cell`` (a :class:`~hrtem_core.crystallography.UnitCell`): ``exp(-ZONE_PRIOR_PER_NM * t)``
    where ``t = |u a + v b + w c| = sqrt([uvw]^T G [uvw])`` [nm] is the period of the atom
    columns along the zone axis (``G`` the real metric tensor): 0.39 nm for SrTiO3 [001], 1.18 nm
    for maghemite [110], 1.87 nm for maghemite [012], 10.4 nm for maghemite [7 5 9]. Crossed
    fringes are seen where the projected columns are short-period; two spacings and one angle that
    fit a long-period zone are usually a coincidence of a large cell with many reflections, so the
    period is measured in nm (not in indices) to compare phases of different cell sizes fairly.

    Without ``cell`` (back-compatible): ``exp(-ZONE_PRIOR * (|[uvw]| - 1))`` on the Euclidean norm
    of the reduced indices.
    """
    if cell is not None:
        t_nm = float(np.linalg.norm(cell.direct_cartesian(np.asarray(uvw, dtype=float))))
        return float(math.exp(-ZONE_PRIOR_PER_NM * t_nm))
    return float(math.exp(-ZONE_PRIOR * (math.sqrt(sum(int(v) ** 2 for v in uvw)) - 1.0)))


def index_window(
    pairs: Sequence[Any],
    db: CardDatabase | IndexingTables,
    *,
    card_ids: Sequence[str] | None = None,
    spacing_tol: float = 0.03,
    angle_tol_deg: float = 2.0,
    include_forbidden: bool = False,
    d_min_nm: float = 0.1,
    ambiguity_margin: float = AMBIGUITY_MARGIN,
) -> WindowIndex:
    """Index the planes of one window against the phases of a card database.

    Parameters
    ----------
    pairs : sequence of SpotPair
        The window's Friedel pairs (anything with ``spacing_nm``, ``angle_deg``, ``intensity``).
    db : CardDatabase or IndexingTables
        The cards, or tables from :func:`build_tables` (then the keyword options below are
        ignored: the tables carry them). Pass tables when indexing many windows.
    card_ids, spacing_tol, angle_tol_deg, include_forbidden, d_min_nm, ambiguity_margin
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
            ambiguity_margin=ambiguity_margin,
        )
    planes = measured_planes(pairs, max_planes=tables.max_planes)
    angles = measured_angles_deg(planes)
    n = len(planes)
    if n == 0:
        return WindowIndex(planes, angles, None, (), STATUS_NO_SPOTS)
    matches_all = _spacing_matches(tables, planes)
    per_phase: list[PhaseMatch] = []
    searched: dict[str, tuple[PhaseTable, list[list[tuple[int, float]]]]] = {}
    for pt, cands in zip(tables.phases, matches_all, strict=True):
        if not any(cands):
            continue
        match = _angle_search(pt, planes, cands, tables) if n >= 2 else None
        if match is None:
            match = _spacing_only(pt, cands, n, tables)
        if match is not None:
            per_phase.append(match)
            searched[pt.card_id] = (pt, cands)
    if not per_phase:
        return WindowIndex(planes, angles, None, (), STATUS_UNMATCHED)
    order = {cid: i for i, cid in enumerate(tables.card_ids)}
    per_phase.sort(key=lambda m: (m.rank_key, -order[m.card_id]), reverse=True)
    best = per_phase[0]
    if not best.angle_confirmed:
        # Spacing alone proves little: every phase with a matching spacing stays a candidate.
        return WindowIndex(planes, angles, best, tuple(per_phase[1:]), STATUS_SPACING_ONLY)
    floor = best.score * (1.0 - tables.ambiguity_margin)
    alts: list[PhaseMatch] = []
    for m in per_phase[1:]:
        if m.angle_confirmed and abs(m.weight - best.weight) < 1e-9 and m.score >= floor:
            alts.append(m)
        elif m.angle_confirmed and m.weight < best.weight - 1e-9:
            # Fewer planes explained: a near-twin may have lost a plane at the tolerance edge.
            twin = _edge_twin(*searched[m.card_id], m, planes, best, tables)
            if twin is not None and twin.score >= floor:
                alts.append(twin)
    alts.sort(key=lambda m: (m.rank_key, -order[m.card_id]), reverse=True)
    status = STATUS_AMBIGUOUS if alts else STATUS_INDEXED
    return WindowIndex(planes, angles, best, tuple(alts), status)


def _edge_twin(
    pt: PhaseTable,
    cands: list[list[tuple[int, float]]],
    match: PhaseMatch,
    planes: Sequence[MeasuredPlane],
    best: PhaseMatch,
    tables: IndexingTables,
) -> PhaseMatch | None:
    """The phase's match when it explains as many planes as ``best`` within the tolerance edge.

    A near-twin (e.g. maghemite, a = 0.8352 nm, beside magnetite, a = 0.8396 nm: every spacing
    0.5 % apart) loses a plane measured 2.5-3 % from the winner's reference because that plane
    lies 3.0-3.5 % from its own: the rank key (weighted planes first) then ranks it lower although
    the measurement (about 1 % per spacing) cannot tell the two apart. The phase's angle search is
    repeated with the spacing tolerance widened to ``spacing_tol * (1 + tolerance_edge)``; it is a
    near-twin when the widened search explains at least the weighted planes of ``best`` (angle-
    confirmed, zone-consistent). Its score keeps the normal tolerance in ``q_d``, so a plane in the
    edge band counts with a lower spacing quality (``exp(-r^2/2)``, r > 1 in units of the tolerance).

    ``match`` is the phase's angle-confirmed match at the normal tolerance (``cands``). Only a
    near-twin of ``best`` in this window is searched: on at least two planes explained by both,
    its reference spacings agree with the best's within the edge band
    (``|d_ref - d_ref,best| <= spacing_tol * tolerance_edge * d_ref,best``; 0.53 % for maghemite
    and magnetite, 0.75 % allowed at 3 %). A plane within the tolerance of the best then lies
    within the widened tolerance of the twin, so the band is exactly wide enough. The search is
    also skipped when the planes that gain a candidate in the band are fewer than the weight the
    phase lacks. Returns None when the phase is no near-twin.
    """
    edge = tables.spacing_tol * tables.tolerance_edge
    if edge <= 0.0 or not (best.angle_confirmed and match.angle_confirmed):
        return None
    # Near-twins only: on the planes both explain, the reference spacings agree within the edge.
    shared = [(a, b) for a, b in zip(match.d_ref_nm, best.d_ref_nm, strict=True) if a and b]
    if len(shared) < 2 or any(abs(a - b) > edge * b for a, b in shared):
        return None
    d = np.array([p.spacing_nm for p in planes], dtype=float)
    wide = _phase_spacing_matches(pt, d, tables.spacing_tol * (1.0 + tables.tolerance_edge))
    n_gain = sum(1 for w, c in zip(wide, cands, strict=True) if len(w) > len(c))
    if n_gain == 0 or match.weight + n_gain < best.weight - 1e-9:
        return None
    twin = _angle_search(pt, planes, wide, tables)
    if twin is None or twin.weight < best.weight - 1e-9:
        return None
    return twin


# --------------------------------------------------------------------------------------------
# Formatting helpers (CSV cells)
# --------------------------------------------------------------------------------------------


def format_hkl(hkl: Sequence[int] | None) -> str:
    """``(2, -2, 0)`` -> ``"2 -2 0"``; None -> ``""``."""
    if hkl is None:
        return ""
    return " ".join(str(int(v)) for v in hkl)


def format_match(match: PhaseMatch) -> str:
    """One-line description: ``name [card] (hkl;hkl) [uvw] score``."""
    hk = ";".join(format_hkl(h) if h is not None else "-" for h in match.hkl)
    zone = f" [{format_hkl(match.zone_axis)}]" if match.zone_axis is not None else ""
    return f"{match.phase_name} ({match.card_id}) {hk}{zone} score {match.score:.3f}"


__all__ = [
    "AMBIGUITY_MARGIN",
    "FORBIDDEN_WEIGHT",
    "MAX_PLANES",
    "STATUSES",
    "STATUS_AMBIGUOUS",
    "STATUS_INDEXED",
    "STATUS_NO_SPOTS",
    "STATUS_SPACING_ONLY",
    "STATUS_UNMATCHED",
    "TOLERANCE_EDGE",
    "ZONE_PRIOR",
    "ZONE_PRIOR_PER_NM",
    "IndexingTables",
    "MeasuredPlane",
    "PhaseMatch",
    "PhaseTable",
    "WindowIndex",
    "acute_between_deg",
    "build_tables",
    "check_tolerances",
    "format_hkl",
    "format_match",
    "index_window",
    "measured_angles_deg",
    "measured_planes",
    "select_phases",
    "zone_prior",
]
