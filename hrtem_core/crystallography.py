"""Unit cells, metric tensors, d-spacings, interplanar angles, zone axes and reflection lists.

Everything is computed through the metric tensors, so one code path serves every crystal system.
For a cell with lattice constants ``a, b, c`` and angles ``alpha, beta, gamma`` the real metric
tensor is ``G = [[a.a, a.b, a.c], [b.a, b.b, b.c], [c.a, c.b, c.c]]`` and the reciprocal metric
tensor is ``G* = inv(G)``. For a reciprocal-lattice vector ``g = h a* + k b* + l c*``:

* ``1 / d(hkl)^2 = [h k l] G* [h k l]^T`` (reduces to the closed forms of every system);
* the angle between planes ``(h1 k1 l1)`` and ``(h2 k2 l2)`` (between their normals) is
  ``cos(beta) = h1 G* h2^T / sqrt((h1 G* h1^T)(h2 G* h2^T))``, which is the general form of the
  method's eqs. (2)-(5) (orthorhombic, cubic, hexagonal with the ``3a^2/(4c^2) l1 l2`` term for
  three-index (hkl) in hexagonal axes, tetragonal; supplementary ESI-3 of Zhu et al.);
* the zone axis of two planes is ``[uvw] = (h1 k1 l1) x (h2 k2 l2)`` in the cell's own direct
  basis (Weiss zone law ``h u + k v + l w = 0``).

Symmetry (systematic absences, equivalent reflections) comes from gemmi's space-group tables.
Lengths are in nm, reciprocal lengths in 1/nm (no factor 2 pi), angles in degrees.

Forbidden reflections
---------------------
An (hkl) whose structure factor vanishes by the space group's glide planes or screw axes is kept
with ``forbidden=True`` (kinematically forbidden, but dynamical double diffraction in thick
crystals makes such spots visible, e.g. {200} and {600} of spinels). An (hkl) violating the
lattice centring (F, I, C, R, ...) is not a reciprocal-lattice vector of the crystal at all and is
never listed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import gemmi
import numpy as np

from hrtem_core.errors import AnalysisParameterError, CardDatabaseError

__all__ = [
    "Reflection",
    "UnitCell",
    "family_members",
    "interplanar_angle_deg",
    "is_centring_absent",
    "is_forbidden",
    "reflection_families",
    "resolve_space_group",
    "zone_reflections",
]

_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
_MINUS_SIGNS = str.maketrans(
    {"\u2212": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u00af": "-"}
)
_COMBINING_BARS = ("\u0304", "\u0305")


# --------------------------------------------------------------------------------------------
# Unit cell
# --------------------------------------------------------------------------------------------


#: Plausible range of a lattice constant [nm]: 0.1 Angstrom to 1 um (protein crystals stay below).
MIN_CELL_LENGTH_NM = 0.01
MAX_CELL_LENGTH_NM = 1000.0


@dataclass(frozen=True)
class UnitCell:
    """A unit cell: lattice constants in nm, angles in degrees (validated on construction).

    Parameters
    ----------
    a_nm, b_nm, c_nm : float
        Lattice constants [nm], finite and positive.
    alpha_deg, beta_deg, gamma_deg : float
        Interaxial angles [deg] in (0, 180); together they must describe a real cell
        (positive volume).

    Notes
    -----
    The Cartesian frame puts ``a`` along x and ``b`` in the xy plane (``c*`` along z).
    """

    a_nm: float
    b_nm: float
    c_nm: float
    alpha_deg: float = 90.0
    beta_deg: float = 90.0
    gamma_deg: float = 90.0

    def __post_init__(self) -> None:
        for name in ("a_nm", "b_nm", "c_nm", "alpha_deg", "beta_deg", "gamma_deg"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise CardDatabaseError(f"unit cell: {name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise CardDatabaseError(f"unit cell: {name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)
        for name in ("a_nm", "b_nm", "c_nm"):
            if getattr(self, name) <= 0.0:
                raise CardDatabaseError(
                    f"unit cell: {name} must be a positive length in nm, got {getattr(self, name)!r}"
                )
            if not MIN_CELL_LENGTH_NM <= getattr(self, name) <= MAX_CELL_LENGTH_NM:
                # Far outside any crystal; a tiny length would also underflow the metric tensor.
                raise CardDatabaseError(
                    f"unit cell: {name} must lie between {MIN_CELL_LENGTH_NM} and "
                    f"{MAX_CELL_LENGTH_NM:g} nm ({MIN_CELL_LENGTH_NM * 10:g} to "
                    f"{MAX_CELL_LENGTH_NM * 10:g} Angstrom), got {getattr(self, name)!r}"
                )
        for name in ("alpha_deg", "beta_deg", "gamma_deg"):
            if not 0.0 < getattr(self, name) < 180.0:
                raise CardDatabaseError(
                    f"unit cell: {name} must lie between 0 and 180 degrees, got {getattr(self, name)!r}"
                )
        ca, cb, cg = (
            math.cos(math.radians(x)) for x in (self.alpha_deg, self.beta_deg, self.gamma_deg)
        )
        if 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg <= 1e-9:
            raise CardDatabaseError(
                "unit cell: the angles alpha, beta, gamma "
                f"({self.alpha_deg}, {self.beta_deg}, {self.gamma_deg}) do not form a real cell "
                "(zero or imaginary volume)"
            )

    @classmethod
    def from_angstrom(
        cls,
        a: float,
        b: float,
        c: float,
        alpha: float = 90.0,
        beta: float = 90.0,
        gamma: float = 90.0,
    ) -> UnitCell:
        """Build a cell from lattice constants in Angstrom (as printed on a PDF card)."""
        return cls(float(a) / 10.0, float(b) / 10.0, float(c) / 10.0, alpha, beta, gamma)

    @property
    def lengths_angstrom(self) -> tuple[float, float, float]:
        """(a, b, c) [Angstrom]."""
        return (self.a_nm * 10.0, self.b_nm * 10.0, self.c_nm * 10.0)

    @property
    def angles_deg(self) -> tuple[float, float, float]:
        """(alpha, beta, gamma) [deg]."""
        return (self.alpha_deg, self.beta_deg, self.gamma_deg)

    @property
    def volume_nm3(self) -> float:
        """Cell volume [nm^3] = sqrt(det G)."""
        return float(math.sqrt(np.linalg.det(self.real_metric)))

    @property
    def real_metric(self) -> np.ndarray:
        """Real-space metric tensor G, shape (3, 3) [nm^2]."""
        a, b, c = self.a_nm, self.b_nm, self.c_nm
        ca, cb, cg = (
            math.cos(math.radians(x)) for x in (self.alpha_deg, self.beta_deg, self.gamma_deg)
        )
        return np.array(
            [
                [a * a, a * b * cg, a * c * cb],
                [a * b * cg, b * b, b * c * ca],
                [a * c * cb, b * c * ca, c * c],
            ],
            dtype=float,
        )

    @property
    def reciprocal_metric(self) -> np.ndarray:
        """Reciprocal metric tensor G* = inv(G), shape (3, 3) [nm^-2]."""
        return np.linalg.inv(self.real_metric)

    @property
    def direct_matrix(self) -> np.ndarray:
        """Columns are the direct basis vectors a, b, c in Cartesian coordinates, (3, 3) [nm].

        ``a`` along x, ``b`` in the xy plane.
        """
        a, b, c = self.a_nm, self.b_nm, self.c_nm
        ca, cb, cg = (
            math.cos(math.radians(x)) for x in (self.alpha_deg, self.beta_deg, self.gamma_deg)
        )
        sg = math.sin(math.radians(self.gamma_deg))
        cx = c * cb
        cy = c * (ca - cb * cg) / sg
        cz = math.sqrt(max(c * c - cx * cx - cy * cy, 0.0))
        return np.array([[a, b * cg, cx], [0.0, b * sg, cy], [0.0, 0.0, cz]], dtype=float)

    @property
    def b_matrix(self) -> np.ndarray:
        """Columns are the reciprocal basis vectors a*, b*, c* in Cartesian coordinates [1/nm].

        ``B = inv(A)^T`` where ``A`` is :attr:`direct_matrix`, so ``a_i . a*_j = delta_ij``
        (no factor 2 pi) and ``g = B @ [h, k, l]`` has length ``1 / d(hkl)``.
        """
        return np.linalg.inv(self.direct_matrix).T

    def d_spacing_nm(self, hkl: Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Interplanar spacing d(hkl) [nm] from ``1/d^2 = h G* h^T``.

        Parameters
        ----------
        hkl : array_like, shape (3,) or (n, 3)
            Miller indices (integers; (0, 0, 0) is refused).

        Returns
        -------
        float or ndarray of shape (n,)
        """
        h = _as_hkl_array(hkl)
        inv_d2 = np.einsum("...i,ij,...j->...", h, self.reciprocal_metric, h)
        if np.any(inv_d2 <= 0.0):
            raise AnalysisParameterError("d-spacing: (0 0 0) is not a lattice plane")
        d = 1.0 / np.sqrt(inv_d2)
        return float(d) if d.ndim == 0 else d

    def angle_deg(self, hkl1: Sequence[float], hkl2: Sequence[float]) -> float:
        """Angle between the normals of planes (h1 k1 l1) and (h2 k2 l2) [deg], in [0, 180].

        ``cos(beta) = h1 G* h2^T / sqrt((h1 G* h1^T)(h2 G* h2^T))`` (general form of eqs. 2-5).
        """
        h1 = _as_hkl_array(hkl1)
        h2 = _as_hkl_array(hkl2)
        gs = self.reciprocal_metric
        n1 = float(h1 @ gs @ h1)
        n2 = float(h2 @ gs @ h2)
        if n1 <= 0.0 or n2 <= 0.0:
            raise AnalysisParameterError("interplanar angle: (0 0 0) is not a lattice plane")
        cos = float(h1 @ gs @ h2) / math.sqrt(n1 * n2)
        return math.degrees(math.acos(min(1.0, max(-1.0, cos))))

    def zone_axis(self, hkl1: Sequence[int], hkl2: Sequence[int]) -> tuple[int, int, int]:
        """Zone axis [uvw] common to planes (h1 k1 l1) and (h2 k2 l2), in the direct basis.

        ``[uvw] = h1 x h2``, divided by the gcd of its components (sign as the cross product).
        Raises :class:`~hrtem_core.errors.AnalysisParameterError` for parallel planes.
        """
        h1 = _as_int_hkl(hkl1)
        h2 = _as_int_hkl(hkl2)
        u = h1[1] * h2[2] - h1[2] * h2[1]
        v = h1[2] * h2[0] - h1[0] * h2[2]
        w = h1[0] * h2[1] - h1[1] * h2[0]
        g = math.gcd(math.gcd(abs(u), abs(v)), abs(w))
        if g == 0:
            raise AnalysisParameterError(
                f"zone axis: planes {tuple(h1)} and {tuple(h2)} are parallel (no unique zone axis)"
            )
        return (u // g, v // g, w // g)

    def reciprocal_cartesian(self, hkl: Sequence[float] | np.ndarray) -> np.ndarray:
        """Cartesian reciprocal-lattice vectors g = B @ hkl [1/nm], shape (..., 3); |g| = 1/d."""
        h = np.asarray(hkl, dtype=float)
        if h.shape[-1:] != (3,):
            raise AnalysisParameterError(f"hkl must have 3 components, got shape {h.shape}")
        return h @ self.b_matrix.T

    def direct_cartesian(self, uvw: Sequence[float] | np.ndarray) -> np.ndarray:
        """Cartesian direct-lattice vectors r = A @ uvw [nm], shape (..., 3)."""
        r = np.asarray(uvw, dtype=float)
        if r.shape[-1:] != (3,):
            raise AnalysisParameterError(f"uvw must have 3 components, got shape {r.shape}")
        return r @ self.direct_matrix.T

    def to_gemmi(self) -> gemmi.UnitCell:
        """The same cell as a ``gemmi.UnitCell`` (Angstrom)."""
        a, b, c = self.lengths_angstrom
        return gemmi.UnitCell(a, b, c, self.alpha_deg, self.beta_deg, self.gamma_deg)


def interplanar_angle_deg(
    cell: UnitCell, hkl1: Sequence[int], hkl2: Sequence[int], *, acute: bool = False
) -> float:
    """Angle between planes (h1 k1 l1) and (h2 k2 l2) [deg].

    In [0, 180] between plane normals, or with ``acute=True`` folded into [0, 90] (the angle an
    HRTEM image shows between two sets of fringes).
    """
    angle = cell.angle_deg(hkl1, hkl2)
    return min(angle, 180.0 - angle) if acute else angle


def _as_hkl_array(hkl: Sequence[float] | np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, dtype=float)
    if h.shape[-1:] != (3,) or h.ndim > 2:
        raise AnalysisParameterError(f"hkl must have shape (3,) or (n, 3), got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise AnalysisParameterError("hkl must be finite numbers")
    return h


def _as_int_hkl(hkl: Sequence[int]) -> tuple[int, int, int]:
    h = np.asarray(hkl)
    if h.shape != (3,):
        raise AnalysisParameterError(f"hkl must have 3 components, got shape {h.shape}")
    out = []
    for x in h.tolist():
        if isinstance(x, float) and not x.is_integer():
            raise AnalysisParameterError(
                f"Miller indices must be integers, got {tuple(h.tolist())}"
            )
        out.append(int(x))
    return (out[0], out[1], out[2])


# --------------------------------------------------------------------------------------------
# Space groups
# --------------------------------------------------------------------------------------------


def _normalise_sg_name(name: str) -> str:
    text = unicodedata.normalize("NFC", str(name)).translate(_SUBSCRIPTS).translate(_MINUS_SIGNS)
    # an overbar written as a combining character after the digit: 3\u0305 -> -3
    for bar in _COMBINING_BARS:
        text = re.sub(r"(\d)" + bar, r"-\1", text)
    text = unicodedata.normalize("NFKC", text).replace("_", "")  # P2_1/c -> P21/c
    return " ".join(text.split())


@lru_cache(maxsize=256)
def _resolve(name: str) -> gemmi.SpaceGroup | None:
    text = _normalise_sg_name(name)
    if not text:
        return None
    if text.isdigit():
        number = int(text)
        if 1 <= number <= 230:
            return gemmi.find_spacegroup_by_number(number)
        return None
    # "R -3 c (hexagonal axes)" and similar annotations
    low = text.lower()
    suffix = ""
    if "rhombohedral" in low:
        suffix = ":R"
    elif "hexagonal" in low:
        suffix = ":H"
    text = re.sub(r"\(.*?\)", "", text).strip()
    candidates = [text, text.replace(" ", "")]
    for cand in candidates:
        if not cand:
            continue
        if suffix and ":" not in cand:
            sg = _find(cand + suffix)
            if sg is not None:
                return sg
        sg = _find(cand)
        if sg is not None:
            return sg
    return None


def _find(name: str) -> gemmi.SpaceGroup | None:
    try:
        return gemmi.find_spacegroup_by_name(name)
    except (ValueError, RuntimeError):
        return None


def resolve_space_group(space_group: str | int) -> gemmi.SpaceGroup:
    """A gemmi space group from a Hermann-Mauguin symbol or an International Tables number.

    Accepts unicode subscripts and overbars (``P4₁32``, ``Fd3̄m``), TeX-style subscripts
    (``P4_132``), compact or spaced symbols
    (``Fd-3m``, ``F d -3 m``), non-standard settings (``Pbnm``), ``R-3c`` (hexagonal axes unless
    ``:R`` is given) and numbers ``1..230``. An unknown name raises
    :class:`~hrtem_core.errors.CardDatabaseError`.
    """
    if isinstance(space_group, bool):
        raise CardDatabaseError(f"unknown space group {space_group!r}")
    if isinstance(space_group, (int, np.integer)):
        key = str(int(space_group))
    else:
        key = str(space_group)
    sg = _resolve(key)
    if sg is None:
        raise CardDatabaseError(
            f"unknown space group {space_group!r}: expected a Hermann-Mauguin symbol "
            "such as Fd-3m, P4132, R-3c, Pbnm or a number 1-230"
        )
    return sg


@dataclass(frozen=True)
class _SymmetryTables:
    rotations: np.ndarray  # (n_ops, 3, 3) int: hkl' = hkl @ rotations[i]  (incl. Friedel mates)
    ops: gemmi.GroupOps


@lru_cache(maxsize=128)
def _symmetry(xhm: str) -> _SymmetryTables:
    sg = gemmi.SpaceGroup(xhm)
    ops = sg.operations()
    mats = []
    eye = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    for op in ops.sym_ops:
        m = np.array([op.apply_to_hkl(list(e)) for e in eye], dtype=np.int64)
        mats.append(m)
        mats.append(-m)
    rot = np.unique(np.stack(mats), axis=0)
    return _SymmetryTables(rotations=rot, ops=ops)


def _tables(space_group: str | int) -> _SymmetryTables:
    return _symmetry(resolve_space_group(space_group).xhm())


def is_centring_absent(space_group: str | int, hkl: Sequence[int]) -> bool:
    """True when (hkl) violates the lattice centring (not a reciprocal-lattice vector at all)."""
    h = _as_int_hkl(hkl)
    ops = _tables(space_group).ops
    den = gemmi.Op.DEN
    return any((h[0] * t[0] + h[1] * t[1] + h[2] * t[2]) % den != 0 for t in ops.cen_ops)


def is_systematically_absent(space_group: str | int, hkl: Sequence[int]) -> bool:
    """True when (hkl) is absent in the space group: its centring, glide planes or screw axes."""
    return bool(_tables(space_group).ops.is_systematically_absent(list(_as_int_hkl(hkl))))


def is_forbidden(space_group: str | int, hkl: Sequence[int]) -> bool:
    """True when (hkl) is kinematically forbidden by a glide plane or screw axis.

    Centring absences are not counted here (see :func:`is_centring_absent`).
    """
    h = _as_int_hkl(hkl)
    if is_centring_absent(space_group, h):
        return False
    return is_systematically_absent(space_group, h)


def _encode(h: np.ndarray, base: int) -> np.ndarray:
    off = base // 2
    return ((h[..., 0] + off) * base + (h[..., 1] + off)) * base + (h[..., 2] + off)


def _families(hkl: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Representative and multiplicity of each row of ``hkl`` (n, 3) under ``rotations``.

    The representative is the member with the fewest negative indices, then the
    lexicographically largest (h, k, l): (311) in cubic, (110) and (104) in hexagonal axes.
    """
    members = np.einsum("ni,oij->onj", hkl, rotations)  # (o, n, 3)
    base = int(2 * np.abs(members).max() + 3)
    codes = _encode(members, base)  # (o, n)
    n_neg = (members < 0).sum(axis=-1)
    score = (3 - n_neg) * base**3 + codes
    best = np.argmax(score, axis=0)
    reps = members[best, np.arange(hkl.shape[0])]
    sorted_codes = np.sort(codes, axis=0)
    mult = 1 + (np.diff(sorted_codes, axis=0) != 0).sum(axis=0)
    return reps, mult


def family_members(space_group: str | int, hkl: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """Every reflection equivalent to (hkl) in the space group's Laue class, Friedel mates included.

    Sorted with the family representative first, then descending (h, k, l).
    """
    h = np.array([_as_int_hkl(hkl)], dtype=np.int64)
    if not h.any():
        raise AnalysisParameterError("family members: (0 0 0) is not a reflection")
    rot = _tables(space_group).rotations
    members = np.unique(np.einsum("ni,oij->onj", h, rot)[:, 0, :], axis=0)
    rep = tuple(int(x) for x in _families(h, rot)[0][0])
    rest = sorted((tuple(int(x) for x in m) for m in members if tuple(m) != rep), reverse=True)
    return (rep, *rest)


# --------------------------------------------------------------------------------------------
# Reflections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reflection:
    """One reflection family of a phase.

    Attributes
    ----------
    hkl : tuple of int
        Family representative (from a card: the card's own label).
    d_nm : float
        Interplanar spacing [nm].
    multiplicity : int
        Number of equivalent (hkl) in the family, Friedel mates included (powder multiplicity).
    intensity_rel : float or None
        Relative intensity 0..100 when known from a card, else None.
    forbidden : bool
        Kinematically forbidden by a glide plane or screw axis of the space group.
    source : str
        ``"card"`` (typed from a card) or ``"computed"`` (generated from the cell).
    """

    hkl: tuple[int, int, int]
    d_nm: float
    multiplicity: int
    intensity_rel: float | None
    forbidden: bool
    source: str

    @property
    def d_angstrom(self) -> float:
        """d [Angstrom]."""
        return self.d_nm * 10.0


def _lattice_points(cell: UnitCell, d_min_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """All (hkl) != 0 with d >= d_min_nm, and their d [nm]."""
    lim = [math.floor(x / d_min_nm + 1e-9) for x in (cell.a_nm, cell.b_nm, cell.c_nm)]
    if (2 * lim[0] + 1) * (2 * lim[1] + 1) * (2 * lim[2] + 1) > 20_000_000:
        raise AnalysisParameterError(
            f"d_min_nm = {d_min_nm} is too small for this cell (too many reflections)"
        )
    axes = [np.arange(-m, m + 1, dtype=np.int64) for m in lim]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid[np.any(grid != 0, axis=1)]
    gs = cell.reciprocal_metric
    inv_d2 = np.einsum("ni,ij,nj->n", grid.astype(float), gs, grid.astype(float))
    keep = inv_d2 <= (1.0 / d_min_nm) ** 2 * (1.0 + 1e-9)
    grid = grid[keep]
    return grid, 1.0 / np.sqrt(inv_d2[keep])


def _check_d_min(d_min_nm: float) -> float:
    if isinstance(d_min_nm, bool) or not isinstance(
        d_min_nm, (int, float, np.integer, np.floating)
    ):
        raise AnalysisParameterError(f"d_min_nm must be a number, got {d_min_nm!r}")
    d = float(d_min_nm)
    if not (math.isfinite(d) and d > 0.0):
        raise AnalysisParameterError(f"d_min_nm must be a positive length in nm, got {d_min_nm!r}")
    return d


def _absence_flags(space_group: str | int, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centring_absent, forbidden) boolean arrays for rows of ``hkl``."""
    tables = _tables(space_group)
    den = gemmi.Op.DEN
    cen = np.array(tables.ops.cen_ops, dtype=np.int64).reshape(-1, 3)
    centring = np.any((hkl @ cen.T) % den != 0, axis=1)
    forbidden = np.zeros(hkl.shape[0], dtype=bool)
    ops = tables.ops
    for i in np.flatnonzero(~centring):
        forbidden[i] = ops.is_systematically_absent([int(x) for x in hkl[i]])
    return centring, forbidden


def reflection_families(
    cell: UnitCell,
    space_group: str | int,
    *,
    d_min_nm: float = 0.1,
    include_forbidden: bool = True,
) -> tuple[Reflection, ...]:
    """Every reflection family of a phase with d >= ``d_min_nm``, d descending.

    Parameters
    ----------
    cell : UnitCell
    space_group : str or int
        Hermann-Mauguin symbol or number (see :func:`resolve_space_group`).
    d_min_nm : float
        Smallest spacing [nm] (default 0.1 nm).
    include_forbidden : bool
        Keep families forbidden by glide planes / screw axes, flagged ``forbidden=True``
        (default). Centring absences are never listed.

    Returns
    -------
    tuple of Reflection
        ``source="computed"``, ``intensity_rel=None``; sorted by d descending, then by the
        representative's (h, k, l) descending.
    """
    d_min = _check_d_min(d_min_nm)
    tables = _tables(space_group)
    hkl, d = _lattice_points(cell, d_min)
    if hkl.shape[0] == 0:
        return ()
    reps, mult = _families(hkl, tables.rotations)
    uniq, first = np.unique(reps, axis=0, return_index=True)
    centring, forbidden = _absence_flags(space_group, uniq)
    out = []
    for i in range(uniq.shape[0]):
        if centring[i] or (forbidden[i] and not include_forbidden):
            continue
        j = first[i]
        out.append(
            Reflection(
                hkl=(int(uniq[i, 0]), int(uniq[i, 1]), int(uniq[i, 2])),
                d_nm=float(d[j]),
                multiplicity=int(mult[j]),
                intensity_rel=None,
                forbidden=bool(forbidden[i]),
                source="computed",
            )
        )
    out.sort(key=lambda r: (-round(r.d_nm, 12), tuple(-x for x in r.hkl)))
    return tuple(out)


def zone_reflections(
    cell: UnitCell,
    space_group: str | int,
    uvw: Sequence[int],
    *,
    d_min_nm: float = 0.1,
    include_forbidden: bool = False,
) -> tuple[tuple[tuple[int, int, int], float], ...]:
    """Every reflection (each member, not families) of the zone [uvw]: ``h u + k v + l w = 0``.

    Returns ``((hkl, d_nm), ...)`` with d >= ``d_min_nm``, sorted by d descending then hkl
    descending. Centring absences are never listed; glide/screw-forbidden ones only with
    ``include_forbidden=True``.
    """
    d_min = _check_d_min(d_min_nm)
    z = np.array(_as_int_hkl(uvw), dtype=np.int64)
    if not z.any():
        raise AnalysisParameterError("zone axis [0 0 0] is not a direction")
    hkl, d = _lattice_points(cell, d_min)
    on = hkl @ z == 0
    hkl, d = hkl[on], d[on]
    if hkl.shape[0] == 0:
        return ()
    centring, forbidden = _absence_flags(space_group, hkl)
    keep = ~centring & (include_forbidden | ~forbidden)
    rows = [
        ((int(h[0]), int(h[1]), int(h[2])), float(dd))
        for h, dd in zip(hkl[keep], d[keep], strict=True)
    ]
    rows.sort(key=lambda r: (-round(r[1], 12), tuple(-x for x in r[0])))
    return tuple(rows)
