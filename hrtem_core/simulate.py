"""HRTEM image simulator for crystalline nanoparticles, with exact ground truth.

A particle of a phase from the card database, viewed along a zone axis ``[uvw]``, on an amorphous
support, imaged through the objective lens of a transmission electron microscope:

1. **Projected potential** ``V(x, y)`` [V nm]. The particle contributes
   ``t(x, y) [V_0 + sum_g V_g cos(2 pi g . r)]``, with ``t`` its projected thickness (a sphere:
   ``t = 2 sqrt(R^2 - r^2)``; or a faceted polyhedron), ``V_0`` the mean inner potential and ``g``
   every reflection of the zone (``h u + k v + l w = 0``, both Friedel mates, in the image frame).
   The Fourier coefficients ``V_g`` come from the card: ``|F_hkl| ~ sqrt(I_rel / (m Lp))`` (powder
   intensity divided by the multiplicity ``m`` and the Cu K-alpha1 Lorentz-polarization factor
   ``Lp = (1 + cos^2 2theta) / (sin^2 theta cos theta)``), or plain ``sqrt(I_rel)`` on request, or,
   without card intensities, a smooth fall-off ``f_e(s) exp(-B s^2)`` (composition-averaged
   electron scattering factors of International Tables C 4.3.2.2 via gemmi, ``s = 1 / (2 d)``,
   ``B = 0.5 A^2``). The card's strongest line (largest ``I_rel``; else the lowest-order
   reflection) has ``V_g = lattice_potential_v``.
   The amorphous support (carbon) is a Gaussian random field of projected potential with the power
   spectrum ``P(k) = n t |v_C(k)|^2 S(k)`` (``n = 100`` atoms/nm^3, ``v_C`` the projected
   potential of one carbon atom, ``S(k)`` a model structure factor of amorphous carbon with its
   first peak at 4.8 1/nm).
2. **Phase grating** (not the weak-phase approximation: a particle several nm thick shifts the
   phase by radians): ``psi = exp(i sigma V - sigma kappa Vbar)``, with the relativistic
   interaction constant ``sigma = 2 pi m e lambda / h^2`` (0.006526 rad/(V nm) at 300 kV) and a
   small absorption ``kappa`` acting on the mean potential ``Vbar = t V_0`` (+ the support's mean):
   particles look darker than the film, but absorption adds no contrast at the lattice frequencies,
   so that at Gaussian focus with Cs = 0 the lattice is invisible, as for a pure phase object.
   By default (``slice_nm=1.0``) the particle is cut into ~1 nm slices along the beam, each a
   phase grating of its own thickness, with Fresnel propagation between them (multislice: the
   dynamical propagation that matters for particles over a few nm thick); the support film is a
   last grating at the exit surface, and the exit wave is propagated back to the particles'
   mid-plane, the plane the defocus refers to. ``slice_nm=None`` gives the single phase grating
   of the projected potential (the projection approximation); for a 2 nm particle both agree to
   a few per cent of the contrast.
3. **Objective lens**: ``Psi_img(k) = Psi(k) exp(-i chi(k)) E_t(k) E_s(k)`` with

   ``chi(k) = pi lambda df k^2 + (pi / 2) Cs lambda^3 k^4``,

   ``E_t(k) = exp(-(1/2) pi^2 lambda^2 Delta^2 k^4)`` (focal spread ``Delta``, the standard
   deviation of the defocus) and ``E_s(k) = exp(-(pi alpha / lambda)^2 (Cs lambda^3 k^3 +
   df lambda k)^2)`` (beam convergence ``alpha``, the 1/e semi-angle). The intensity the envelopes
   remove from the coherent image, ``|IFT(Psi_img sqrt(1 - E^2))|^2``, is put back blurred by a
   0.5 nm Gaussian (electrons are conserved; partial coherence blurs, it does not absorb).
4. **Recording**: ``I = |psi_img|^2``; Poisson counts at the dose ``D`` [e/A^2], i.e.
   ``D (10 p)^2`` electrons per pixel of ``p`` nm in vacuum.

**Defocus sign convention** (used everywhere in this project): defocus in nm, **negative =
underfocus**. With the wave multiplied by ``exp(-i chi)``, a weak phase object has the image
spectrum ``2 Phi(k) sin chi(k)``; the Scherzer defocus ``df_Sch = -1.2 sqrt(Cs lambda)`` is negative
for ``Cs > 0``, where ``sin chi < 0`` over the whole passband and atoms appear dark.

The image frame: x to the right, y down (rows), the beam along ``x cross y`` (into the screen).
Spatial frequencies ``(gy, gx)`` are in 1/nm; a reflection appears in the FFT of an ``N``-pixel
image at ``(gy, gx) N p`` FFT pixels from the DC, exactly as :mod:`hrtem_core.windows` maps them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.fft

from hrtem_core.errors import AnalysisParameterError
from hrtem_core.optics import (  # re-exported: tests, benchmarks and particles use these names
    ELECTRON_MASS_KG,
    ELEMENTARY_CHARGE_C,
    PLANCK_J_S,
    chi_rad,
    ctf,
    envelope_spatial,
    envelope_temporal,
    information_limit_nm_inv,
    interaction_constant,
    scherzer_defocus_nm,
    wavelength_nm,
)

if TYPE_CHECKING:  # pragma: no cover
    from hrtem_core.cards import Phase

#: h^2 / (2 pi m0 e) [V nm^2]: converts an electron scattering factor [nm] into a Fourier
#: coefficient of the potential times a volume (V_g = this * F_g / Omega).
POTENTIAL_PER_SCATTERING_V_NM2 = (
    PLANCK_J_S**2 / (2 * math.pi * ELECTRON_MASS_KG * ELEMENTARY_CHARGE_C) * 1e18
)
#: Cu K-alpha1 wavelength [nm], the radiation of the PDF cards' intensities.
CU_KALPHA1_NM = 0.15406
#: Debye-Waller B factor of the smooth fall-off model [nm^2] (0.5 A^2).
DEFAULT_B_NM2 = 0.005
#: Number density of amorphous carbon [atoms/nm^3] (2.0 g/cm^3).
AMORPHOUS_CARBON_DENSITY_NM3 = 100.0
#: Default Fourier coefficient of the strongest reflection [V]: maghemite 311 from an ideal spinel
#: model with International Tables C 4.3.2.2 electron scattering factors (3.5 V).
DEFAULT_LATTICE_POTENTIAL_V = 3.5
#: Default mean inner potential [V]: maghemite from the same model (17.8 V).
DEFAULT_MEAN_INNER_POTENTIAL_V = 18.0

ParticleShape = Literal["sphere", "faceted"]
IntensityModel = Literal["powder", "sqrt", "smooth"]


# --------------------------------------------------------------------------------------------
# Zone projection and reflection amplitudes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectedReflection:
    """One reflection of a zone, projected into the image frame.

    Attributes
    ----------
    hkl : tuple of int
        Miller indices of this member (not the family representative).
    d_nm : float
        Interplanar spacing [nm].
    g_nm_inv : (float, float)
        ``(gy, gx)`` [1/nm] in the image frame (y down).
    potential_v : float
        ``|V_g|`` [V], the Fourier coefficient of the potential.
    forbidden : bool
        Kinematically forbidden (systematic absence).
    phase_rad : float
        ``arg V_g`` [rad] relative to a unit-cell origin at the particle centre (0 unless the
        amplitudes come from a :class:`CrystalStructure`).
    """

    hkl: tuple[int, int, int]
    d_nm: float
    g_nm_inv: tuple[float, float]
    potential_v: float
    forbidden: bool = False
    phase_rad: float = 0.0


def image_frame(cell: Any, zone_axis: Sequence[int], *, rotation_deg: float = 0.0) -> np.ndarray:
    """Orthonormal image frame for viewing ``cell`` along ``zone_axis``.

    The beam ``b`` runs along the Cartesian direction of ``[uvw]``; ``e_x`` is the Cartesian x
    axis (or y, when the beam is along x) projected onto the image plane, ``e_y = b x e_x`` (so
    that ``e_x x e_y = b``: x right, y down, beam into the screen); then the in-plane axes turn by
    ``-rotation_deg`` so the crystal appears rotated counter-clockwise on screen by
    ``rotation_deg``.

    Returns
    -------
    ndarray, shape (3, 3)
        Rows ``e_y, e_x, b`` (Cartesian unit vectors); ``frame @ v`` gives ``(y, x, z)``.
    """
    uvw = np.asarray(zone_axis, dtype=float)
    if uvw.shape != (3,) or not np.any(uvw):
        raise AnalysisParameterError(
            f"zone axis must be three integers, not all zero, got {zone_axis!r}"
        )
    b = np.asarray(cell.direct_cartesian(uvw), dtype=float)
    b = b / np.linalg.norm(b)
    ref = np.array([1.0, 0.0, 0.0]) if abs(b[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    ex = ref - (ref @ b) * b
    ex /= np.linalg.norm(ex)
    ey = np.cross(b, ex)
    # Counter-clockwise on screen (y down) by theta: a fixed vector's screen angle atan2(-y, x)
    # grows by theta when the axes turn the other way.
    th = math.radians(float(rotation_deg))
    ex_r = math.cos(th) * ex + math.sin(th) * ey
    ey_r = -math.sin(th) * ex + math.cos(th) * ey
    return np.stack([ey_r, ex_r, b])


def zone_projection(
    phase: Phase,
    *,
    zone_axis: Sequence[int] = (1, 1, 0),
    rotation_deg: float = 0.0,
    d_min_nm: float = 0.1,
    include_forbidden: bool = False,
    lattice_potential_v: float = DEFAULT_LATTICE_POTENTIAL_V,
    intensity_model: IntensityModel = "powder",
    forbidden_amplitude_rel: float = 0.2,
    structure: CrystalStructure | None = None,
) -> tuple[ProjectedReflection, ...]:
    """Every reflection of the zone ``[uvw]`` of ``phase`` in the image frame, with its ``V_g``.

    Members come from :func:`hrtem_core.crystallography.zone_reflections` (both Friedel mates);
    ``g`` from ``UnitCell.reciprocal_cartesian`` expressed in :func:`image_frame`.

    Parameters
    ----------
    phase : Phase
        A phase of the card database.
    zone_axis : (int, int, int), keyword-only
        ``[uvw]``.
    rotation_deg : float, keyword-only
        In-plane rotation, counter-clockwise on screen [deg].
    d_min_nm : float, keyword-only
        Smallest spacing included [nm].
    include_forbidden : bool, keyword-only
        Also kinematically forbidden reflections (with ``forbidden_amplitude_rel`` times the smooth
        model), e.g. to mimic double diffraction.
    lattice_potential_v : float, keyword-only
        ``V_g`` of the card's strongest line (largest ``I_rel``) [V]; without card intensities,
        of the lowest-order allowed reflection.
    intensity_model : {"powder", "sqrt", "smooth"}, keyword-only
        ``"powder"``: ``|F| ~ sqrt(I_rel / (m Lp))`` from card intensities; ``"sqrt"``:
        ``sqrt(I_rel)``; ``"smooth"``: ignore card intensities, ``f_e(s) exp(-B s^2)``. Rows
        without an intensity always use the smooth model, scaled to the rows that have one.
    forbidden_amplitude_rel : float, keyword-only
        Amplitude of an included forbidden reflection relative to the smooth model.
    structure : CrystalStructure or None, keyword-only
        Atom positions: ``V_g`` (modulus and phase) from kinematic electron structure factors,
        absolute (``lattice_potential_v`` and ``intensity_model`` are then unused).

    Returns
    -------
    tuple of ProjectedReflection
        Sorted by decreasing ``d`` then hkl; reflections with ``V_g = 0`` (not on a card that
        lists intensities) are left out.
    """
    from hrtem_core.crystallography import family_members, zone_reflections

    d_min_nm = _check_positive(d_min_nm, "smallest spacing d_min (nm)")
    cell = phase.cell
    frame = image_frame(cell, zone_axis, rotation_deg=rotation_deg)
    members = zone_reflections(
        cell,
        phase.space_group,
        tuple(int(v) for v in zone_axis),
        d_min_nm=d_min_nm,
        include_forbidden=include_forbidden,
    )
    if structure is not None:
        return _structure_projection(
            phase,
            members,
            frame,
            structure,
            include_forbidden=include_forbidden,
            forbidden_amplitude_rel=forbidden_amplitude_rel,
            zone_axis=zone_axis,
        )
    rel = _family_amplitudes(phase, intensity_model=intensity_model)
    member_of: dict[tuple[int, int, int], int] = {}
    for i, refl in enumerate(phase.reflections):
        for m in family_members(phase.space_group, refl.hkl):
            member_of.setdefault(tuple(int(v) for v in m), i)
    smooth = _smooth_model(phase)
    smooth_scale = rel.get("_smooth_scale", 1.0)
    out: list[ProjectedReflection] = []
    for hkl, d in members:
        hkl = tuple(int(v) for v in hkl)
        fam = member_of.get(hkl)
        if fam is None:  # not on the card: match by spacing (0.2 %), else a forbidden/absent row
            fam = _match_by_spacing(phase, float(d))
        forbidden = bool(phase.reflections[fam].forbidden) if fam is not None else False
        if fam is not None and not forbidden:
            amp = rel[fam]
        elif include_forbidden and (forbidden or fam is None):
            amp = forbidden_amplitude_rel * smooth_scale * smooth(float(d))
            forbidden = True
        else:
            amp = 0.0 if rel["_has_card"] else smooth_scale * smooth(float(d))
        if amp <= 0:
            continue
        gy, gx = _in_plane(cell, hkl, frame, zone_axis)
        out.append(
            ProjectedReflection(
                hkl=hkl,
                d_nm=float(d),
                g_nm_inv=(float(gy), float(gx)),
                potential_v=float(lattice_potential_v) * float(amp),
                forbidden=forbidden,
            )
        )
    out.sort(key=lambda r: (-r.d_nm, r.hkl))
    return tuple(out)


def _in_plane(
    cell: Any, hkl: tuple[int, int, int], frame: np.ndarray, zone_axis: Sequence[int]
) -> tuple[float, float]:
    """(gy, gx) [1/nm] of a zone reflection in the image frame (checks g is normal to the beam)."""
    g = np.asarray(cell.reciprocal_cartesian(np.asarray(hkl, dtype=float)), dtype=float)
    gy, gx, gz = frame @ g
    if abs(gz) > 1e-6 * max(1.0, float(np.linalg.norm(g))):
        raise AnalysisParameterError(
            f"reflection {hkl} is not in zone {tuple(zone_axis)} (g . b = {gz:.3g} 1/nm)"
        )
    return float(gy), float(gx)


def _structure_projection(
    phase: Phase,
    members: Sequence[tuple[tuple[int, int, int], float]],
    frame: np.ndarray,
    structure: CrystalStructure,
    *,
    include_forbidden: bool,
    forbidden_amplitude_rel: float,
    zone_axis: Sequence[int],
) -> tuple[ProjectedReflection, ...]:
    """Zone reflections with ``V_g`` from the structure's kinematic structure factors."""
    from hrtem_core.crystallography import is_forbidden

    cell = phase.cell
    if not members:
        return ()
    hkls = np.array([m[0] for m in members], dtype=float)
    vg = structure.potential_v(hkls, cell)
    amp = np.abs(vg)
    smooth = _smooth_model(phase)
    top = float(amp.max()) if amp.size else 0.0
    allowed = [i for i in range(len(members)) if amp[i] > 1e-4 * top]
    scale = float(np.median([amp[i] / smooth(members[i][1]) for i in allowed])) if allowed else 0.0
    out: list[ProjectedReflection] = []
    for i, (hkl, d) in enumerate(members):
        hkl = tuple(int(v) for v in hkl)
        forbidden = bool(is_forbidden(phase.space_group, hkl))
        if forbidden and include_forbidden:
            a, ph = forbidden_amplitude_rel * scale * smooth(float(d)), 0.0
        elif amp[i] > 1e-4 * top and not forbidden:
            a, ph = float(amp[i]), float(np.angle(vg[i]))
        else:
            continue
        gy, gx = _in_plane(cell, hkl, frame, zone_axis)
        out.append(
            ProjectedReflection(
                hkl=hkl,
                d_nm=float(d),
                g_nm_inv=(gy, gx),
                potential_v=a,
                forbidden=forbidden,
                phase_rad=ph,
            )
        )
    out.sort(key=lambda r: (-r.d_nm, r.hkl))
    return tuple(out)


def _match_by_spacing(phase: Phase, d_nm: float) -> int | None:
    """Index of the card row with the same spacing (0.2 %), or None."""
    best = None
    for i, refl in enumerate(phase.reflections):
        if abs(refl.d_nm - d_nm) <= 0.002 * d_nm and (
            best is None or abs(refl.d_nm - d_nm) < abs(phase.reflections[best].d_nm - d_nm)
        ):
            best = i
    return best


def _lorentz_polarization(d_nm: float) -> float:
    """Powder Lorentz-polarization factor for Cu K-alpha1 at spacing ``d_nm``."""
    s = min(CU_KALPHA1_NM / (2 * d_nm), 0.999)
    th = math.asin(s)
    return (1 + math.cos(2 * th) ** 2) / (math.sin(th) ** 2 * math.cos(th))


def _family_amplitudes(phase: Phase, *, intensity_model: IntensityModel) -> dict:
    """Relative |F| per card row (index -> amplitude; 1 for the card's strongest line).

    With card intensities the reference is the row with the largest ``intensity_rel``; without,
    the largest smooth-model amplitude (the lowest-order allowed reflection).
    """
    if intensity_model not in ("powder", "sqrt", "smooth"):
        raise AnalysisParameterError(
            f"intensity model must be 'powder', 'sqrt' or 'smooth', got {intensity_model!r}"
        )
    smooth = _smooth_model(phase)
    raw: dict[int, float] = {}
    card: dict[int, float] = {}
    for i, refl in enumerate(phase.reflections):
        if refl.forbidden:
            continue
        raw[i] = smooth(refl.d_nm)
        inten = refl.intensity_rel
        if intensity_model != "smooth" and inten is not None and math.isfinite(inten) and inten > 0:
            if intensity_model == "powder":
                m = max(int(refl.multiplicity), 1)
                card[i] = math.sqrt(inten / (m * _lorentz_polarization(refl.d_nm)))
            else:
                card[i] = math.sqrt(inten)
    has_card = bool(card)
    scale = 1.0
    if has_card:
        ratios = [card[i] / raw[i] for i in card if raw[i] > 0]
        scale = float(np.median(ratios)) if ratios else 1.0
        # The reference: the card's strongest line (largest intensity_rel).
        ref = max(card, key=lambda i: phase.reflections[i].intensity_rel or 0.0)
        top = card[ref]
    else:
        top = max(raw.values(), default=0.0)
    amp = {i: card.get(i, scale * raw[i]) for i in raw}
    if top <= 0:
        raise AnalysisParameterError(f"card {phase.card_id}: no reflection with an amplitude")
    out: dict = {i: a / top for i, a in amp.items()}
    out["_has_card"] = has_card
    out["_smooth_scale"] = scale / top
    return out


_FORMULA_RE = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")


@lru_cache(maxsize=64)
def _composition(formula: str) -> tuple[tuple[str, float], ...]:
    """Elements and amounts of a chemical formula (unknown symbols dropped; carbon if none)."""
    import gemmi

    out: list[tuple[str, float]] = []
    for sym, num in _FORMULA_RE.findall(formula or ""):
        el = gemmi.Element(sym)
        if el.atomic_number <= 0 or el.name != sym:
            continue
        out.append((sym, float(num) if num else 1.0))
    return tuple(out) or (("C", 1.0),)


def electron_scattering_factor_nm(element: str, s_nm_inv: np.ndarray | float) -> np.ndarray:
    """Electron scattering factor ``f_e(s)`` [nm] of a neutral atom (International Tables C 4.3.2.2).

    ``s = sin(theta) / lambda = |k| / 2`` [1/nm].
    """
    import gemmi

    coef = gemmi.Element(element).c4322
    a = np.asarray(coef.a, dtype=float)
    b = np.asarray(coef.b, dtype=float)  # [A^2]
    s_a = np.asarray(s_nm_inv, dtype=float) / 10.0  # 1/A
    f_a = np.sum(a[:, None] * np.exp(-b[:, None] * (s_a.ravel()[None, :] ** 2)), axis=0)
    return (f_a * 0.1).reshape(np.shape(s_a))


def _smooth_model(phase: Phase):
    """d [nm] -> composition-averaged ``f_e(1/(2d)) exp(-B / (4 d^2))`` [nm]."""
    comp = _composition(getattr(phase, "formula", "") or "")
    total = sum(n for _, n in comp)

    def f(d_nm: float) -> float:
        s = 1.0 / (2.0 * d_nm)
        fe = sum(n * float(electron_scattering_factor_nm(el, s)) for el, n in comp) / total
        return fe * math.exp(-DEFAULT_B_NM2 * s * s)

    return f


# --------------------------------------------------------------------------------------------
# Crystal structures (kinematic structure factors)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """One atomic site of an asymmetric unit.

    ``xyz`` fractional coordinates; ``occupancy`` in [0, 1]; ``b_iso_A2`` the isotropic
    Debye-Waller factor [A^2].
    """

    element: str
    xyz: tuple[float, float, float]
    occupancy: float = 1.0
    b_iso_A2: float = 0.5


@dataclass(frozen=True)
class CrystalStructure:
    """Atom positions of a phase, for kinematic electron structure factors.

    Attributes
    ----------
    space_group : str
        gemmi Hermann-Mauguin symbol with the setting, e.g. ``"F d -3 m:2"``; it only generates
        the atom positions (the reflections still come from the phase's own space group).
    sites : tuple of Site
        Asymmetric unit.
    source : str
        Where the positions come from.
    """

    space_group: str
    sites: tuple[Site, ...]
    source: str = ""

    def atoms(self) -> tuple[tuple[str, np.ndarray, np.ndarray, np.ndarray], ...]:
        """Per site: ``(element, positions (n, 3) fractional, occupancy, B [A^2])`` in the cell."""
        return _expand_sites(self)

    def structure_factor_nm(self, hkl: np.ndarray, cell: Any) -> np.ndarray:
        """Electron structure factors ``F(hkl) = sum_j occ_j f_j(s) exp(-B_j s^2) exp(2 pi i h.x_j)``.

        Parameters
        ----------
        hkl : array_like, shape (n, 3)
        cell : UnitCell
            Gives ``s = 1 / (2 d)``.

        Returns
        -------
        ndarray, shape (n,), complex [nm]

        Notes
        -----
        Convention (pinned in ``tests/test_cif.py``): ``s = sin(theta)/lambda = 1/(2d)``,
        ``f_j`` of International Tables C 4.3.2.2, Debye-Waller ``exp(-B s^2)``, the sum over the
        *distinct* atoms of the cell (:func:`_expand_sites`) with chemical occupancies. It equals
        ``gemmi.StructureFactorCalculatorE.calculate_sf_from_small_structure`` times 0.1 (A -> nm)
        to 1e-6, once gemmi's occupancies are made crystallographic
        (``SmallStructure.change_occupancies_to_crystallographic()``): gemmi sums every site over
        all symmetry images, so without that step a special position is counted once per
        operator that fixes it, and the two disagree by a reflection-dependent factor.
        """
        h = np.atleast_2d(np.asarray(hkl, dtype=float))
        inv_d2 = np.einsum("ni,ij,nj->n", h, cell.reciprocal_metric, h)
        s_nm = 0.5 * np.sqrt(inv_d2)
        out = np.zeros(h.shape[0], dtype=complex)
        for el, pos, occ, b_a2 in self.atoms():
            fe = electron_scattering_factor_nm(el, s_nm)
            dw = np.exp(-np.outer(s_nm**2, b_a2 * 0.01))  # B [A^2] -> nm^2
            phase = np.exp(2j * math.pi * (h @ pos.T))  # (n, m)
            out += fe * np.sum(occ[None, :] * dw * phase, axis=1)
        return out

    def potential_v(self, hkl: np.ndarray, cell: Any) -> np.ndarray:
        """Fourier coefficients ``V_g = (h^2 / 2 pi m0 e) F_g / Omega`` [V], complex, shape (n,)."""
        return (
            POTENTIAL_PER_SCATTERING_V_NM2 * self.structure_factor_nm(hkl, cell) / cell.volume_nm3
        )

    def mean_inner_potential_v(self, cell: Any) -> float:
        """``V_0 = (h^2 / 2 pi m0 e) sum_j occ_j f_j(0) / Omega`` [V] (neutral atoms)."""
        total = 0.0
        for el, _pos, occ, _b in self.atoms():
            total += float(electron_scattering_factor_nm(el, 0.0)) * float(np.sum(occ))
        return POTENTIAL_PER_SCATTERING_V_NM2 * total / cell.volume_nm3


@lru_cache(maxsize=32)
def _expand_sites(structure: CrystalStructure) -> tuple:
    import gemmi

    ops = gemmi.SpaceGroup(structure.space_group).operations()
    out = []
    for site in structure.sites:
        q = np.mod(np.array([op.apply_to_xyz(list(site.xyz)) for op in ops], dtype=float), 1.0)
        # Symmetry images that coincide (within 1e-5, periodically) are one atom: keep the first
        # of each group, in the order of the operations (as the former pairwise loop did).
        diff = np.mod(q[:, None, :] - q[None, :, :] + 0.5, 1.0) - 0.5
        same = np.all(np.abs(diff) <= 1e-5, axis=2)
        first = ~np.any(np.tril(same, k=-1), axis=1)
        pos = q[first]
        pts = pos
        out.append(
            (
                site.element,
                pos,
                np.full(len(pts), float(site.occupancy)),
                np.full(len(pts), float(site.b_iso_A2)),
            )
        )
    return tuple(out)


#: gamma-Fe2O3 as a cation-deficient spinel with the vacancies disordered over the octahedral
#: sites (Fd-3m, origin choice 2): Fe 8a, Fe 16d with occupancy 5/6 (21 1/3 Fe per 32 O), O 32e
#: x = 0.2549; B = 0.5 A^2. The P4132 superstructure reflections (110, 210, 211, ...) of the
#: vacancy-ordered form are therefore absent: they are weak in real maghemite.
MAGHEMITE_SPINEL = CrystalStructure(
    space_group="F d -3 m:2",
    sites=(
        Site("Fe", (0.125, 0.125, 0.125), 1.0),
        Site("Fe", (0.5, 0.5, 0.5), 5.0 / 6.0),
        Site("O", (0.2549, 0.2549, 0.2549), 1.0),
    ),
    source="cation-disordered spinel model of maghemite (Fd-3m:2, O x = 0.2549)",
)
#: Fe3O4 (Fd-3m, origin choice 2): Fe 8a, Fe 16d, O 32e x = 0.2549 (Fleet, Acta Cryst. B 1981).
MAGNETITE_SPINEL = CrystalStructure(
    space_group="F d -3 m:2",
    sites=(
        Site("Fe", (0.125, 0.125, 0.125)),
        Site("Fe", (0.5, 0.5, 0.5)),
        Site("O", (0.2549, 0.2549, 0.2549)),
    ),
    source="magnetite, Fd-3m:2, Fe 8a + 16d, O 32e x = 0.2549",
)
#: alpha-Fe2O3 (R-3c, hexagonal axes): Fe 12c z = 0.35530, O 18e x = 0.30590
#: (Blake et al., Am. Mineral. 51, 123, 1966).
HEMATITE = CrystalStructure(
    space_group="R -3 c:H",
    sites=(Site("Fe", (0.0, 0.0, 0.35530)), Site("O", (0.30590, 0.0, 0.25))),
    source="hematite, R-3c (hexagonal axes), Blake et al. 1966",
)
#: gamma-Fe2O3 with its octahedral vacancies ordered (P4₁32, the card's space group): the spinel
#: above (Fd-3m origin choice 1: Fe 8a (0,0,0), Fe 16d (5/8,5/8,5/8), O 32e u = 0.3799 =
#: 0.2549 + 1/8), inverted to the P4₁32 hand, with the 16d sites split into 4b (3/8,3/8,3/8) at
#: occupancy 1/3 (where the vacancies order, as Li does in LiFe5O8) and 12d (3/8,1/8,1/8) full;
#: Fe 8a -> 8c (0,0,0), O 32e -> 8c (x,x,x) x = 0.6201 and 24e (0.1299, 0.3701, 0.3701). 21 1/3 Fe
#: per 32 O. Ideal positions (the displacements of real maghemite are left out), so the
#: superstructure reflections come from the occupancy order alone: |F| relative to (311) is 0.19
#: for (110), 0.21 (210), 0.14 (211), 0.12 (310), 0 for (221); real maghemite shows them as weak
#: lines of a few per cent in intensity (tests/test_simulate.py pins these values).
MAGHEMITE_ORDERED = CrystalStructure(
    space_group="P 41 3 2",
    sites=(
        Site("Fe", (0.0, 0.0, 0.0), 1.0),
        Site("Fe", (0.375, 0.375, 0.375), 1.0 / 3.0),
        Site("Fe", (0.375, 0.125, 0.125), 1.0),
        Site("O", (0.6201, 0.6201, 0.6201), 1.0),
        Site("O", (0.1299, 0.3701, 0.3701), 1.0),
    ),
    source="vacancy-ordered maghemite, P4132, ideal spinel positions, Fe 4b occupancy 1/3",
)
#: Built-in structures by card id (for :func:`known_structure`). Maghemite (39-1346, P4₁32) is
#: the vacancy-ordered model; :data:`MAGHEMITE_SPINEL` (its disordered average) stays available.
KNOWN_STRUCTURES: dict[str, CrystalStructure] = {
    "39-1346": MAGHEMITE_ORDERED,
    "19-0629": MAGNETITE_SPINEL,
    "33-0664": HEMATITE,
}


def known_structure(card_id: str) -> CrystalStructure | None:
    """The built-in structure model of a card (maghemite, magnetite, hematite), or None."""
    return KNOWN_STRUCTURES.get(str(card_id).strip())


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisibleReflection:
    """A reflection of a simulated particle that the image can show.

    Attributes
    ----------
    hkl : tuple of int
        Miller indices of the member.
    d_nm : float
        Interplanar spacing [nm].
    g_nm_inv : (float, float)
        ``(gy, gx)`` [1/nm] in the image frame (y down); the FFT spot of an ``N``-pixel image (or
        window) with pixel size ``p`` lies at ``(gy, gx) N p`` FFT pixels from the DC.
    potential_v : float
        Fourier coefficient ``V_g`` [V].
    transfer : float
        ``ctf(|g|)`` at this image's defocus: ``sin chi E_t E_s`` (sign included).
    particle : int
        Index of the particle it belongs to.
    card_id : str
        Card of the particle's phase.
    forbidden : bool
        Kinematically forbidden (only with ``include_forbidden=True``).
    """

    hkl: tuple[int, int, int]
    d_nm: float
    g_nm_inv: tuple[float, float]
    potential_v: float = 0.0
    transfer: float = 0.0
    particle: int = 0
    card_id: str = ""
    forbidden: bool = False

    @property
    def angle_deg(self) -> float:
        """Direction of g on screen, ``degrees(atan2(-gy, gx)) mod 180`` (as ``SpotPair``)."""
        return math.degrees(math.atan2(-self.g_nm_inv[0], self.g_nm_inv[1])) % 180.0


@dataclass(frozen=True)
class ParticleTruth:
    """Where one particle is and what it is.

    ``center_px`` is ``(y, x)`` in image pixels; ``radius_px`` the radius of its bounding circle.
    """

    card_id: str
    phase_name: str
    zone_axis: tuple[int, int, int]
    diameter_nm: float
    rotation_deg: float
    shape: str
    center_px: tuple[float, float]
    radius_px: float
    max_thickness_nm: float
    mean_inner_potential_v: float = 0.0
    structure: str = ""


@dataclass(frozen=True)
class SimulationTruth:
    """Ground truth of a simulated image.

    Attributes
    ----------
    mask : ndarray, shape (ny, nx), bool
        Pixels covered by a particle (projected thickness > 0).
    reflections : tuple of VisibleReflection
        Reflections inside Nyquist and the information limit (transfer envelope >= exp(-2)),
        both Friedel mates, every particle.
    zone_axis : (int, int, int)
        Zone axis of the first particle.
    card_id : str
        Card of the first particle.
    params : dict
        Every simulation parameter (JSON-serializable).
    particles : tuple of ParticleTruth
    """

    mask: np.ndarray
    reflections: tuple[VisibleReflection, ...]
    zone_axis: tuple[int, int, int]
    card_id: str
    params: dict
    particles: tuple[ParticleTruth, ...] = ()

    def to_dict(self) -> dict:
        """JSON-serializable summary (the mask as bounding circles, not pixels)."""
        return {
            "card_id": self.card_id,
            "zone_axis": list(self.zone_axis),
            "params": self.params,
            "particles": [asdict(p) for p in self.particles],
            "mask_fraction": float(self.mask.mean()),
            "reflections": [
                {
                    "hkl": list(r.hkl),
                    "d_nm": round(r.d_nm, 6),
                    "g_nm_inv": [round(r.g_nm_inv[0], 6), round(r.g_nm_inv[1], 6)],
                    "angle_deg": round(r.angle_deg, 4),
                    "potential_v": round(r.potential_v, 5),
                    "transfer": round(r.transfer, 5),
                    "particle": r.particle,
                    "card_id": r.card_id,
                    "forbidden": r.forbidden,
                }
                for r in self.reflections
            ],
        }


@dataclass(frozen=True)
class SimulatedImage:
    """A simulated HRTEM image and its truth.

    Attributes
    ----------
    image : ndarray, shape (ny, nx), float32
        Counts per pixel (Poisson), or the noise-free intensity (vacuum = 1) when the dose is None.
    pixel_size_nm : float
        Square pixel size [nm/px].
    defocus_nm : float
        Defocus [nm], negative = underfocus.
    truth : SimulationTruth
    """

    image: np.ndarray
    pixel_size_nm: float
    defocus_nm: float
    truth: SimulationTruth


@dataclass(frozen=True)
class Particle:
    """One particle to simulate (for :func:`simulate_particles`).

    ``center_px`` is ``(y, x)`` in image pixels (None: the image centre).
    """

    phase: Phase
    zone_axis: tuple[int, int, int] = (1, 1, 0)
    diameter_nm: float = 12.0
    rotation_deg: float = 0.0
    center_px: tuple[float, float] | None = None
    shape: ParticleShape = "sphere"
    structure: CrystalStructure | None = None


@dataclass(frozen=True)
class _Optics:
    voltage_kv: float
    cs_mm: float
    focal_spread_nm: float
    convergence_mrad: float
    objective_aperture_nm_inv: float | None


@dataclass(frozen=True)
class _Specimen:
    wave: np.ndarray  # exit wave (ny, nx) complex128
    mask: np.ndarray
    particles: tuple[ParticleTruth, ...]
    projections: tuple[tuple[ProjectedReflection, ...], ...]
    card_ids: tuple[str, ...]
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Specimen: projected potential and exit wave
# --------------------------------------------------------------------------------------------


def _z_extent(
    particle: Particle, yy: np.ndarray, xx: np.ndarray, frame: np.ndarray, radius_nm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit heights ``(z_min, z_max)`` [nm] of the particle along the beam.

    At in-plane coordinates (y, x) [nm] relative to the centre; z = 0 is the particle's mid-plane
    and grows along the beam; ``z_max <= z_min`` outside the particle. The projected thickness is
    ``t = max(z_max - z_min, 0)`` (``2 sqrt(R^2 - r^2)`` for a sphere).
    """
    if particle.shape == "sphere":
        half = np.sqrt(np.clip(radius_nm**2 - yy**2 - xx**2, 0.0, None))
        return -half, half
    if particle.shape != "faceted":
        raise AnalysisParameterError(
            f"particle shape must be 'sphere' or 'faceted', got {particle.shape!r}"
        )
    # Convex polyhedron: facets normal to the two lowest-order allowed families, at distance R
    # (first family) and 1.04 R (second), e.g. {110} and {111} for a cubic spinel.
    from hrtem_core.crystallography import family_members

    ph = particle.phase
    fams = [r for r in ph.reflections if not r.forbidden][:2]
    normals: list[np.ndarray] = []
    dists: list[float] = []
    for j, refl in enumerate(fams):
        for m in family_members(ph.space_group, refl.hkl):
            g = np.asarray(ph.cell.reciprocal_cartesian(np.asarray(m, dtype=float)), dtype=float)
            n = frame @ (g / np.linalg.norm(g))  # (ny, nx, nz) components in the image frame
            normals.append(n)
            dists.append(radius_nm * (1.0 if j == 0 else 1.04))
    zmax = np.full(yy.shape, np.inf)
    zmin = np.full(yy.shape, -np.inf)
    for n, h in zip(normals, dists, strict=True):
        rhs = h - n[0] * yy - n[1] * xx
        if abs(n[2]) < 1e-9:
            bad = rhs < 0
            zmax[bad] = -np.inf
            continue
        lim = rhs / n[2]
        if n[2] > 0:
            zmax = np.minimum(zmax, lim)
        else:
            zmin = np.maximum(zmin, lim)
    # Bound by the circumscribed sphere as well (a polyhedron with few facets could be open).
    half = np.sqrt(np.clip((1.5 * radius_nm) ** 2 - yy**2 - xx**2, 0.0, None))
    zmin = np.maximum(zmin, -half)
    zmax = np.minimum(zmax, half)
    return zmin, zmax


def _support_potential(
    shape: tuple[int, int], pixel_size_nm: float, thickness_nm: float, rng: np.random.Generator
) -> np.ndarray:
    """Projected potential of an amorphous carbon film [V nm], shape (ny, nx).

    Mean ``n t v_C(0)``; fluctuations a Gaussian random field with the power spectrum
    ``P(k) = n t |v_C(k)|^2 S(k)``, with ``v_C(k) = (h^2 / 2 pi m0 e) f_C(k / 2)`` and the model
    structure factor ``S(k) = 1 - 0.9 exp(-(k / 2.5)^2) + 0.8 exp(-((k - 4.8) / 0.9)^2)``.
    """
    ny, nx = shape
    if thickness_nm <= 0:
        return np.zeros(shape)
    p = pixel_size_nm
    n2 = AMORPHOUS_CARBON_DENSITY_NM3 * thickness_nm  # atoms per nm^2
    ky = np.fft.fftfreq(ny, d=p)[:, None]
    kx = np.fft.fftfreq(nx, d=p)[None, :]
    k = np.sqrt(ky**2 + kx**2)
    v_atom = POTENTIAL_PER_SCATTERING_V_NM2 * electron_scattering_factor_nm("C", k / 2.0)
    v_atom *= np.exp(-DEFAULT_B_NM2 * (k / 2.0) ** 2)
    s_k = 1.0 - 0.9 * np.exp(-((k / 2.5) ** 2)) + 0.8 * np.exp(-(((k - 4.8) / 0.9) ** 2))
    psd = n2 * v_atom**2 * s_k  # [(V nm)^2 nm^2]
    white = rng.standard_normal(shape)
    field_ = scipy.fft.ifft2(scipy.fft.fft2(white) * np.sqrt(psd) / p).real
    mean = n2 * POTENTIAL_PER_SCATTERING_V_NM2 * float(electron_scattering_factor_nm("C", 0.0))
    return mean + field_


def _lattice_sum(
    refls: Sequence[ProjectedReflection], yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """``sum_g V_g cos(2 pi g . r)`` over a rectangular block (separable phase factors)."""
    y = yy[:, 0]
    x = xx[0, :]
    out = np.zeros(yy.shape)
    for r in refls:
        gy, gx = r.g_nm_inv
        ey = np.exp(2j * math.pi * gy * y)
        ex = np.exp(2j * math.pi * gx * x)
        out += r.potential_v * np.real(np.exp(1j * r.phase_rad) * ey[:, None] * ex[None, :])
    return out


def _particle_block(
    part: Particle,
    shape: tuple[int, int],
    p: float,
    *,
    d_min_nm: float,
    include_forbidden: bool,
    lattice_potential_v: float,
    intensity_model: IntensityModel,
    mean_inner_potential_v: float | None,
) -> tuple[
    tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray, float],
    np.ndarray,
    ParticleTruth,
    tuple[ProjectedReflection, ...],
]:
    """One particle on a ``shape`` grid of ``p`` nm/px.

    Returns the block ``(rows, cols, U, z_min, z_max, V_0)`` (potential per unit thickness ``U``
    [V] and the particle's entrance and exit heights [nm] on the rows x cols patch around it),
    the patch's inside mask (bool), its ground truth and its reflections inside Nyquist.
    """
    ny, nx = shape
    diameter = _check_positive(part.diameter_nm, "particle diameter (nm)")
    radius_nm = diameter / 2.0
    cy, cx = (
        ((ny - 1) / 2.0, (nx - 1) / 2.0)
        if part.center_px is None
        else (float(part.center_px[0]), float(part.center_px[1]))
    )
    frame = image_frame(part.phase.cell, part.zone_axis, rotation_deg=part.rotation_deg)
    refls = zone_projection(
        part.phase,
        zone_axis=part.zone_axis,
        rotation_deg=part.rotation_deg,
        d_min_nm=d_min_nm,
        include_forbidden=include_forbidden,
        lattice_potential_v=lattice_potential_v,
        intensity_model=intensity_model,
        structure=part.structure,
    )
    if mean_inner_potential_v is not None:
        v0 = float(mean_inner_potential_v)
    elif part.structure is not None:
        v0 = part.structure.mean_inner_potential_v(part.phase.cell)
    else:
        v0 = DEFAULT_MEAN_INNER_POTENTIAL_V
    # Only keep frequencies the grid can hold (aliased ones would land at wrong places).
    nyq = 0.5 / p
    refls = tuple(r for r in refls if max(abs(r.g_nm_inv[0]), abs(r.g_nm_inv[1])) < nyq)
    reach = radius_nm * (1.5 if part.shape == "faceted" else 1.0) / p + 2
    r0, r1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, ny)
    c0, c1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, nx)
    if r0 >= r1 or c0 >= c1:
        raise AnalysisParameterError(
            f"particle centre ({cy:.0f}, {cx:.0f}) px lies outside the {ny}x{nx} px image"
        )
    yy, xx = np.meshgrid((np.arange(r0, r1) - cy) * p, (np.arange(c0, c1) - cx) * p, indexing="ij")
    zmin, zmax = _z_extent(part, yy, xx, frame, radius_nm)
    t = np.clip(zmax - zmin, 0.0, None)
    inside = t > 0
    # Potential per unit thickness [V]: V_0 + sum_g V_g cos(2 pi g.r + phi_g).
    block = (slice(r0, r1), slice(c0, c1), v0 + _lattice_sum(refls, yy, xx), zmin, zmax, v0)
    dist = np.sqrt(yy[inside] ** 2 + xx[inside] ** 2).max() / p if inside.any() else 0.0
    truth = ParticleTruth(
        card_id=str(part.phase.card_id),
        phase_name=str(part.phase.name),
        zone_axis=tuple(int(v) for v in part.zone_axis),
        diameter_nm=float(diameter),
        rotation_deg=float(part.rotation_deg),
        shape=str(part.shape),
        center_px=(cy, cx),
        radius_px=float(dist),
        max_thickness_nm=float(t.max()) if t.size else 0.0,
        mean_inner_potential_v=float(v0),
        structure=part.structure.source if part.structure is not None else "",
    )
    return block, inside, truth, refls


def _build_specimen(
    particles: Sequence[Particle],
    *,
    pixel_size_nm: float,
    shape: tuple[int, int],
    voltage_kv: float,
    support_thickness_nm: float,
    mean_inner_potential_v: float | None,
    lattice_potential_v: float,
    absorption: float,
    include_forbidden: bool,
    intensity_model: IntensityModel,
    d_min_nm: float,
    seed: int,
    slice_nm: float | None,
) -> _Specimen:
    p = pixel_size_nm
    rng = np.random.default_rng([int(seed), 0])
    support = _support_potential(shape, p, float(support_thickness_nm), rng)
    blocks: list[tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray, float]] = []
    mask = np.zeros(shape, dtype=bool)
    truths: list[ParticleTruth] = []
    projections: list[tuple[ProjectedReflection, ...]] = []
    for part in particles:
        block, inside, truth, refls = _particle_block(
            part,
            shape,
            p,
            d_min_nm=d_min_nm,
            include_forbidden=include_forbidden,
            lattice_potential_v=lattice_potential_v,
            intensity_model=intensity_model,
            mean_inner_potential_v=mean_inner_potential_v,
        )
        blocks.append(block)
        mask[block[0], block[1]] |= inside
        truths.append(truth)
        projections.append(refls)
    wave = _exit_wave(
        blocks,
        support,
        pixel_size_nm=p,
        voltage_kv=voltage_kv,
        absorption=float(absorption),
        slice_nm=slice_nm,
    )
    return _Specimen(
        wave=wave,
        mask=mask,
        particles=tuple(truths),
        projections=tuple(projections),
        card_ids=tuple(str(p.phase.card_id) for p in particles),
    )


def _propagator(shape: tuple[int, int], pixel_size_nm: float, lam: float, dz: float) -> np.ndarray:
    """Fresnel propagator ``exp(-i pi lambda dz k^2)`` (forward by ``dz`` nm along the beam)."""
    ky = np.fft.fftfreq(shape[0], d=pixel_size_nm)[:, None]
    kx = np.fft.fftfreq(shape[1], d=pixel_size_nm)[None, :]
    return np.exp(-1j * math.pi * lam * dz * (ky**2 + kx**2))


def _exit_wave(
    blocks: Sequence[tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray, float]],
    support: np.ndarray,
    *,
    pixel_size_nm: float,
    voltage_kv: float,
    absorption: float,
    slice_nm: float | None,
) -> np.ndarray:
    """Exit wave of the particles (multislice, or one phase grating) and the support.

    Multislice: the particles are cut into slices of about ``slice_nm`` along the beam; slice j
    transmits ``exp(i sigma t_j U - sigma kappa t_j V_0)``, ``t_j`` the particle's thickness
    inside the slice and ``U`` its potential per unit thickness, then the wave propagates to the
    next slice. The support (a thin film) transmits ``exp(i sigma V_s - sigma kappa <V_s>)`` just
    below the lowest particle. Finally the wave is propagated back to z = 0, the particles'
    mid-plane, which is the plane the defocus refers to. ``slice_nm=None``: the projection
    approximation, one phase grating with the projected potential (exact for thin particles).
    """
    shape = support.shape
    sigma = interaction_constant(voltage_kv)
    lam = wavelength_nm(voltage_kv)
    kappa = float(absorption)
    support_t = np.exp(1j * sigma * support - kappa * sigma * float(support.mean()))
    if slice_nm is None or not blocks:
        phase = np.zeros(shape)
        absorb = np.zeros(shape)
        for rs, cs, u, zmin, zmax, v0 in blocks:
            t = np.clip(zmax - zmin, 0.0, None)
            phase[rs, cs] += t * u
            absorb[rs, cs] += t * v0
        return np.exp(1j * sigma * phase - kappa * sigma * absorb) * support_t
    z_top = min(float(np.min(b[3], initial=0.0)) for b in blocks)
    z_bot = max(float(np.max(b[4], initial=0.0)) for b in blocks)
    n_slices = max(1, math.ceil((z_bot - z_top) / float(slice_nm) - 1e-9))
    dz = (z_bot - z_top) / n_slices
    prop = _propagator(shape, pixel_size_nm, lam, dz)
    wave = np.ones(shape, dtype=complex)
    for j in range(n_slices):
        a, b = z_top + j * dz, z_top + (j + 1) * dz
        trans = np.ones(shape, dtype=complex)
        for rs, cs, u, zmin, zmax, v0 in blocks:
            t = np.clip(np.minimum(zmax, b) - np.maximum(zmin, a), 0.0, None)
            trans[rs, cs] *= np.exp(1j * sigma * t * u - kappa * sigma * t * v0)
        wave = scipy.fft.ifft2(scipy.fft.fft2(wave * trans) * prop)
    wave = wave * support_t
    # Back to the mid-plane z = 0 (the plane the defocus refers to).
    return scipy.fft.ifft2(scipy.fft.fft2(wave) * _propagator(shape, pixel_size_nm, lam, -z_bot))


# --------------------------------------------------------------------------------------------
# Imaging
# --------------------------------------------------------------------------------------------


def _image_intensity(
    wave: np.ndarray, *, pixel_size_nm: float, defocus_nm: float, optics: _Optics
) -> np.ndarray:
    """Image intensity of an exit wave through the lens (vacuum = 1), electrons conserved."""
    ny, nx = wave.shape
    p = pixel_size_nm
    ky = np.fft.fftfreq(ny, d=p)[:, None]
    kx = np.fft.fftfreq(nx, d=p)[None, :]
    k = np.sqrt(ky**2 + kx**2)
    chi = chi_rad(k, defocus_nm=defocus_nm, voltage_kv=optics.voltage_kv, cs_mm=optics.cs_mm)
    env = envelope_temporal(
        k, focal_spread_nm=optics.focal_spread_nm, voltage_kv=optics.voltage_kv
    ) * envelope_spatial(
        k,
        defocus_nm=defocus_nm,
        convergence_mrad=optics.convergence_mrad,
        voltage_kv=optics.voltage_kv,
        cs_mm=optics.cs_mm,
    )
    aperture = (
        1.0 if optics.objective_aperture_nm_inv is None else (k <= optics.objective_aperture_nm_inv)
    )
    spec = scipy.fft.fft2(wave) * np.exp(-1j * chi) * aperture
    intensity = np.abs(scipy.fft.ifft2(spec * env)) ** 2
    # Partial coherence blurs intensity, it does not remove electrons. The part of the wave the
    # envelopes take out of the coherent image, psi_inc = IFT(Psi sqrt(1 - E^2)), carries exactly
    # the missing electrons (Parseval); it returns as its intensity blurred by a 0.5 nm Gaussian
    # (a diffuse background where the scattering happened). Electrons stopped by an objective
    # aperture stay lost.
    incoherent = np.abs(scipy.fft.ifft2(spec * np.sqrt(np.clip(1.0 - env**2, 0.0, None)))) ** 2
    blur = np.exp(-2 * math.pi**2 * 0.5**2 * k**2)
    intensity = intensity + scipy.fft.ifft2(scipy.fft.fft2(incoherent) * blur).real
    return np.clip(intensity, 0.0, None)


def _visible(
    specimen: _Specimen,
    *,
    pixel_size_nm: float,
    defocus_nm: float,
    optics: _Optics,
) -> tuple[VisibleReflection, ...]:
    nyq = 0.5 / pixel_size_nm
    out: list[VisibleReflection] = []
    for i, refls in enumerate(specimen.projections):
        for r in refls:
            gy, gx = r.g_nm_inv
            if max(abs(gy), abs(gx)) >= nyq:
                continue
            k = math.hypot(gy, gx)
            if (
                optics.objective_aperture_nm_inv is not None
                and k > optics.objective_aperture_nm_inv
            ):
                continue
            env = float(
                envelope_temporal(
                    k, focal_spread_nm=optics.focal_spread_nm, voltage_kv=optics.voltage_kv
                )
                * envelope_spatial(
                    k,
                    defocus_nm=defocus_nm,
                    convergence_mrad=optics.convergence_mrad,
                    voltage_kv=optics.voltage_kv,
                    cs_mm=optics.cs_mm,
                )
            )
            if env < math.exp(-2.0):
                continue
            s = float(
                np.sin(
                    chi_rad(
                        k, defocus_nm=defocus_nm, voltage_kv=optics.voltage_kv, cs_mm=optics.cs_mm
                    )
                )
            )
            out.append(
                VisibleReflection(
                    hkl=r.hkl,
                    d_nm=r.d_nm,
                    g_nm_inv=r.g_nm_inv,
                    potential_v=r.potential_v,
                    transfer=s * env,
                    particle=i,
                    card_id=specimen.card_ids[i],
                    forbidden=r.forbidden,
                )
            )
    return tuple(out)


def _record(
    intensity: np.ndarray,
    *,
    dose_e_per_A2: float | None,
    pixel_size_nm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    if dose_e_per_A2 is None:
        return intensity.astype(np.float32)
    dose = _check_positive(dose_e_per_A2, "electron dose (e/A^2)")
    per_px = dose * (10.0 * pixel_size_nm) ** 2
    return rng.poisson(intensity * per_px).astype(np.float32)


def _checked_optics(
    defocus_nm: float | Sequence[float],
    *,
    voltage_kv: float,
    cs_mm: float,
    focal_spread_nm: float,
    convergence_mrad: float,
    support_thickness_nm: float,
    absorption: float,
    objective_aperture_nm_inv: float | None,
) -> tuple[list[float], _Optics]:
    """The defoci [nm] and the lens, checked (:class:`AnalysisParameterError` otherwise)."""
    defoci = [float(defocus_nm)] if np.isscalar(defocus_nm) else [float(v) for v in defocus_nm]
    if not defoci or not all(math.isfinite(v) for v in defoci):
        raise AnalysisParameterError(
            f"defocus values must be finite numbers (nm), got {defocus_nm!r}"
        )
    for name, val in (
        ("Cs (mm)", cs_mm),
        ("focal spread (nm)", focal_spread_nm),
        ("convergence (mrad)", convergence_mrad),
        ("support thickness (nm)", support_thickness_nm),
        ("absorption", absorption),
    ):
        if not math.isfinite(float(val)) or (name != "Cs (mm)" and float(val) < 0):
            raise AnalysisParameterError(f"{name} must be a finite number >= 0, got {val!r}")
    optics = _Optics(
        voltage_kv=_check_positive(voltage_kv, "accelerating voltage (kV)"),
        cs_mm=float(cs_mm),
        focal_spread_nm=float(focal_spread_nm),
        convergence_mrad=float(convergence_mrad),
        objective_aperture_nm_inv=None
        if objective_aperture_nm_inv is None
        else _check_positive(objective_aperture_nm_inv, "objective aperture (1/nm)"),
    )
    return defoci, optics


def _optics_params(optics: _Optics) -> dict[str, Any]:
    """The lens settings and what follows from them, as recorded in the truth's ``params``."""
    return {
        "voltage_kv": optics.voltage_kv,
        "wavelength_nm": wavelength_nm(optics.voltage_kv),
        "interaction_constant_rad_per_V_nm": interaction_constant(optics.voltage_kv),
        "cs_mm": optics.cs_mm,
        "focal_spread_nm": optics.focal_spread_nm,
        "convergence_mrad": optics.convergence_mrad,
        "objective_aperture_nm_inv": optics.objective_aperture_nm_inv,
        "information_limit_nm": 1.0
        / information_limit_nm_inv(
            focal_spread_nm=optics.focal_spread_nm, voltage_kv=optics.voltage_kv
        )
        if optics.focal_spread_nm > 0
        else 0.0,
        "scherzer_defocus_nm": scherzer_defocus_nm(
            cs_mm=optics.cs_mm, voltage_kv=optics.voltage_kv
        ),
    }


def _particle_params(t: ParticleTruth) -> dict[str, Any]:
    """One particle as recorded in the truth's ``params``."""
    return {
        "card_id": t.card_id,
        "phase_name": t.phase_name,
        "zone_axis": list(t.zone_axis),
        "diameter_nm": t.diameter_nm,
        "rotation_deg": t.rotation_deg,
        "shape": t.shape,
        "center_px": list(t.center_px),
        "mean_inner_potential_v": t.mean_inner_potential_v,
        "structure": t.structure,
    }


def simulate_particles(
    particles: Sequence[Particle],
    *,
    pixel_size_nm: float = 0.02,
    shape: tuple[int, int] = (1024, 1024),
    defocus_nm: float | Sequence[float] = -16.0,
    voltage_kv: float = 300.0,
    cs_mm: float = 1.2,
    focal_spread_nm: float = 3.0,
    convergence_mrad: float = 0.2,
    dose_e_per_A2: float | None = 2000.0,
    support_thickness_nm: float = 5.0,
    seed: int = 0,
    mean_inner_potential_v: float | None = None,
    lattice_potential_v: float = DEFAULT_LATTICE_POTENTIAL_V,
    absorption: float = 0.05,
    include_forbidden: bool = False,
    intensity_model: IntensityModel = "powder",
    objective_aperture_nm_inv: float | None = None,
    d_min_nm: float = 0.1,
    slice_nm: float | None = 1.0,
) -> tuple[SimulatedImage, ...]:
    """Simulate one or more particles on a support at one or more defoci.

    The specimen (particle potentials, support) depends only on ``seed``; each image of a focal
    series gets its own Poisson noise (seeded by ``seed`` and its index), so only the optics and
    the noise change along the series.

    Parameters
    ----------
    particles : sequence of Particle
        The particles (their potentials add where they overlap).
    pixel_size_nm : float, keyword-only
        Square pixel size [nm/px].
    shape : (int, int), keyword-only
        ``(ny, nx)`` [px].
    defocus_nm : float or sequence of float, keyword-only
        Defocus [nm], negative = underfocus; a sequence gives a focal series.
    voltage_kv : float, keyword-only
        Accelerating voltage [kV].
    cs_mm : float, keyword-only
        Spherical aberration [mm].
    focal_spread_nm : float, keyword-only
        Standard deviation of the defocus spread [nm].
    convergence_mrad : float, keyword-only
        Beam convergence semi-angle [mrad].
    dose_e_per_A2 : float or None, keyword-only
        Electron dose [e/A^2]; None: the noise-free intensity (vacuum = 1).
    support_thickness_nm : float, keyword-only
        Amorphous carbon thickness [nm] (0: none).
    seed : int, keyword-only
        Seed of the specimen and the noise.
    mean_inner_potential_v : float or None, keyword-only
        ``V_0`` [V]; None: from the particle's structure, else
        :data:`DEFAULT_MEAN_INNER_POTENTIAL_V` (18 V).
    lattice_potential_v : float, keyword-only
        ``V_g`` of the card's strongest line [V] (unused for a particle with a structure).
    absorption : float, keyword-only
        Imaginary / real ratio ``kappa`` of the mean potential (particle ``t V_0``, support).
    include_forbidden : bool, keyword-only
        Add kinematically forbidden reflections (weak).
    intensity_model : {"powder", "sqrt", "smooth"}, keyword-only
        See :func:`zone_projection`.
    objective_aperture_nm_inv : float or None, keyword-only
        Objective aperture radius [1/nm]; None: no aperture.
    d_min_nm : float, keyword-only
        Smallest spacing put into the potential [nm].
    slice_nm : float or None, keyword-only
        Multislice slice thickness [nm] (default 1 nm): thick particles get the Fresnel
        propagation (excitation errors) between slices; the defocus refers to the particles'
        mid-plane. None: projection approximation (one phase grating).

    Returns
    -------
    tuple of SimulatedImage
        One per defocus.
    """
    ny, nx = _check_shape(shape)
    p = _check_positive(pixel_size_nm, "pixel size (nm)")
    if not particles:
        raise AnalysisParameterError("at least one particle is needed")
    defoci, optics = _checked_optics(
        defocus_nm,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        focal_spread_nm=focal_spread_nm,
        convergence_mrad=convergence_mrad,
        support_thickness_nm=support_thickness_nm,
        absorption=absorption,
        objective_aperture_nm_inv=objective_aperture_nm_inv,
    )
    specimen = _build_specimen(
        particles,
        pixel_size_nm=p,
        shape=(ny, nx),
        voltage_kv=optics.voltage_kv,
        support_thickness_nm=float(support_thickness_nm),
        mean_inner_potential_v=None
        if mean_inner_potential_v is None
        else float(mean_inner_potential_v),
        lattice_potential_v=float(lattice_potential_v),
        absorption=float(absorption),
        include_forbidden=bool(include_forbidden),
        intensity_model=intensity_model,
        d_min_nm=float(d_min_nm),
        seed=int(seed),
        slice_nm=None if slice_nm is None else _check_positive(slice_nm, "slice thickness (nm)"),
    )
    base_params = {
        "pixel_size_nm": p,
        "shape": [ny, nx],
        **_optics_params(optics),
        "dose_e_per_A2": None if dose_e_per_A2 is None else float(dose_e_per_A2),
        "support_thickness_nm": float(support_thickness_nm),
        "seed": int(seed),
        "mean_inner_potential_v": None
        if mean_inner_potential_v is None
        else float(mean_inner_potential_v),
        "lattice_potential_v": float(lattice_potential_v),
        "absorption": float(absorption),
        "include_forbidden": bool(include_forbidden),
        "intensity_model": str(intensity_model),
        "d_min_nm": float(d_min_nm),
        "slice_nm": None if slice_nm is None else float(slice_nm),
        "defocus_convention": "nm, negative = underfocus, from the particles' mid-plane",
        "particles": [_particle_params(t) for t in specimen.particles],
    }
    return tuple(
        _image_at(
            specimen, df, optics=optics, params=dict(base_params, defocus_nm=df, series_index=i)
        )
        for i, df in enumerate(defoci)
    )


def _image_at(
    specimen: _Specimen, defocus_nm: float, *, optics: _Optics, params: dict[str, Any]
) -> SimulatedImage:
    """The recorded image of ``specimen`` at one defocus of a series, with its ground truth.

    ``params`` holds the run's settings (pixel size, dose, seed, series index, ...); the noise is
    seeded by ``(seed, 1, series_index)``.
    """
    p = params["pixel_size_nm"]
    intensity = _image_intensity(
        specimen.wave, pixel_size_nm=p, defocus_nm=defocus_nm, optics=optics
    )
    rng = np.random.default_rng([params["seed"], 1, params["series_index"]])
    image = _record(intensity, dose_e_per_A2=params["dose_e_per_A2"], pixel_size_nm=p, rng=rng)
    truth = SimulationTruth(
        mask=specimen.mask.copy(),
        reflections=_visible(specimen, pixel_size_nm=p, defocus_nm=defocus_nm, optics=optics),
        zone_axis=specimen.particles[0].zone_axis,
        card_id=specimen.particles[0].card_id,
        params=params,
        particles=specimen.particles,
    )
    return SimulatedImage(image=image, pixel_size_nm=p, defocus_nm=defocus_nm, truth=truth)


def simulate_particle(
    phase: Phase,
    *,
    zone_axis: Sequence[int] = (1, 1, 0),
    diameter_nm: float = 12.0,
    rotation_deg: float = 0.0,
    pixel_size_nm: float = 0.02,
    shape: tuple[int, int] = (1024, 1024),
    center_px: tuple[float, float] | None = None,
    defocus_nm: float = -16.0,
    voltage_kv: float = 300.0,
    cs_mm: float = 1.2,
    focal_spread_nm: float = 3.0,
    convergence_mrad: float = 0.2,
    dose_e_per_A2: float | None = 2000.0,
    support_thickness_nm: float = 5.0,
    seed: int = 0,
    particle_shape: ParticleShape = "sphere",
    structure: CrystalStructure | None = None,
    **kwargs: Any,
) -> SimulatedImage:
    """Simulate one particle of ``phase`` viewed along ``zone_axis`` (see the module docstring).

    Parameters are those of :func:`simulate_particles` plus the particle's: ``zone_axis``
    ``[uvw]``, ``diameter_nm`` [nm], ``rotation_deg`` (in-plane, counter-clockwise on screen),
    ``center_px`` ``(y, x)`` [px] (None: the image centre) and ``particle_shape``
    (``"sphere"`` or ``"faceted"``), ``structure`` (a :class:`CrystalStructure` for absolute
    structure-factor amplitudes, e.g. ``known_structure(phase.card_id)``). Extra keyword arguments (``mean_inner_potential_v``,
    ``lattice_potential_v``, ``absorption``, ``include_forbidden``, ``intensity_model``,
    ``objective_aperture_nm_inv``, ``d_min_nm``, ``slice_nm``) pass through.

    Returns
    -------
    SimulatedImage
    """
    if not np.isscalar(defocus_nm):
        raise AnalysisParameterError("simulate_particle takes one defocus; use simulate_series")
    part = Particle(
        phase=phase,
        zone_axis=tuple(int(v) for v in zone_axis),
        diameter_nm=float(diameter_nm),
        rotation_deg=float(rotation_deg),
        center_px=center_px,
        shape=particle_shape,
        structure=structure,
    )
    return simulate_particles(
        [part],
        pixel_size_nm=pixel_size_nm,
        shape=shape,
        defocus_nm=float(defocus_nm),
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        focal_spread_nm=focal_spread_nm,
        convergence_mrad=convergence_mrad,
        dose_e_per_A2=dose_e_per_A2,
        support_thickness_nm=support_thickness_nm,
        seed=seed,
        **kwargs,
    )[0]


def simulate_series(
    phase: Phase, defocus_nm: Sequence[float], **kwargs: Any
) -> tuple[SimulatedImage, ...]:
    """A focal series of one particle: same specimen (seeded), independent noise per image.

    ``kwargs`` are those of :func:`simulate_particle` (except ``defocus_nm``). Image ``i`` equals
    ``simulate_particle(phase, defocus_nm=defocus_nm[i], ...)`` for ``i = 0`` and differs from the
    others only by the optics and the noise.
    """
    defoci = [float(v) for v in defocus_nm]
    if not defoci:
        raise AnalysisParameterError("a focal series needs at least one defocus value")
    part_keys = (
        "zone_axis",
        "diameter_nm",
        "rotation_deg",
        "center_px",
        "particle_shape",
        "structure",
    )
    pk = {k: kwargs.pop(k) for k in part_keys if k in kwargs}
    part = Particle(
        phase=phase,
        zone_axis=tuple(int(v) for v in pk.get("zone_axis", (1, 1, 0))),
        diameter_nm=float(pk.get("diameter_nm", 12.0)),
        rotation_deg=float(pk.get("rotation_deg", 0.0)),
        center_px=pk.get("center_px"),
        shape=pk.get("particle_shape", "sphere"),
        structure=pk.get("structure"),
    )
    return simulate_particles([part], defocus_nm=defoci, **kwargs)


# --------------------------------------------------------------------------------------------
# Predicted lattice visibility
# --------------------------------------------------------------------------------------------


def lattice_visibility(
    phase: Phase,
    defocus_nm: float | Sequence[float] | np.ndarray,
    *,
    zone_axis: Sequence[int] = (1, 1, 0),
    voltage_kv: float = 300.0,
    cs_mm: float = 1.2,
    focal_spread_nm: float = 3.0,
    convergence_mrad: float = 0.2,
    pixel_size_nm: float | None = None,
    d_min_nm: float = 0.1,
    intensity_model: IntensityModel = "powder",
    structure: CrystalStructure | None = None,
) -> np.ndarray | float:
    """Predicted lattice visibility against defocus (linear imaging theory).

    ``visibility(df) = sum_g |V_g| |sin chi(g; df)| E_t(g) E_s(g; df) / sum_g |V_g|`` over the
    reflections of the zone (inside Nyquist when ``pixel_size_nm`` is given), in [0, 1]: 1 when
    every reflection is transferred with full contrast. ``V_g`` as in :func:`zone_projection`
    (card intensities, smooth model, or ``structure``).

    Returns
    -------
    float or ndarray
        Same shape as ``defocus_nm``.
    """
    refls = zone_projection(
        phase,
        zone_axis=zone_axis,
        d_min_nm=d_min_nm,
        intensity_model=intensity_model,
        structure=structure,
    )
    if pixel_size_nm is not None:
        nyq = 0.5 / _check_positive(pixel_size_nm, "pixel size (nm)")
        refls = tuple(r for r in refls if max(abs(r.g_nm_inv[0]), abs(r.g_nm_inv[1])) < nyq)
    if not refls:
        raise AnalysisParameterError(
            f"card {phase.card_id}: no reflection in zone {tuple(zone_axis)}"
        )
    k = np.array([math.hypot(*r.g_nm_inv) for r in refls])
    w = np.array([abs(r.potential_v) for r in refls])
    dfs = np.atleast_1d(np.asarray(defocus_nm, dtype=float))
    vis = np.array(
        [
            float(
                np.sum(
                    w
                    * np.abs(
                        ctf(
                            k,
                            defocus_nm=df,
                            voltage_kv=voltage_kv,
                            cs_mm=cs_mm,
                            focal_spread_nm=focal_spread_nm,
                            convergence_mrad=convergence_mrad,
                        )
                    )
                )
                / np.sum(w)
            )
            for df in dfs
        ]
    )
    if np.ndim(defocus_nm) == 0:
        return float(vis[0])
    return vis.reshape(np.shape(defocus_nm))


def fringe_contrast(
    sim: SimulatedImage,
    *,
    particle: int | None = None,
    inner_fraction: float = 0.8,
) -> np.ndarray:
    """Measured lattice-fringe contrast of each truth reflection in a simulated image.

    For each visible reflection ``g``, ``c_g = 2 |sum_r I(r) e^{-2 pi i g.r}| / sum_r I(r)`` over
    the particle's inner disc (``inner_fraction`` of its bounding radius, away from the edge
    fringes): the amplitude of that cosine fringe relative to the mean intensity. Unlike
    :func:`lattice_visibility` it includes every non-linear imaging term, so it is the reference
    for how a thick (strong-phase) particle really images.

    Parameters
    ----------
    sim : SimulatedImage
    particle : int or None, keyword-only
        Only this particle's reflections and region (default: each reflection over its own
        particle).
    inner_fraction : float, keyword-only
        Radius of the measured disc relative to the particle's bounding radius.

    Returns
    -------
    ndarray, shape (n,)
        In the order of ``sim.truth.reflections`` (restricted to ``particle`` when given).
    """
    img = np.asarray(sim.image, dtype=float)
    ny, nx = img.shape
    p = sim.pixel_size_nm
    refls = [r for r in sim.truth.reflections if particle is None or r.particle == int(particle)]
    yy, xx = np.mgrid[0:ny, 0:nx]
    out = np.empty(len(refls))
    regions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
    for j, r in enumerate(refls):
        if r.particle not in regions:
            pt = sim.truth.particles[r.particle]
            cy, cx = pt.center_px
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (inner_fraction * pt.radius_px) ** 2
            disc &= sim.truth.mask
            rows, cols = np.nonzero(disc)
            vals = img[rows, cols]
            regions[r.particle] = (rows * p, cols * p, vals, float(vals.sum()))
        ys, xs, vals, total = regions[r.particle]
        gy, gx = r.g_nm_inv
        f = np.sum(vals * np.exp(-2j * math.pi * (gy * ys + gx * xs)))
        out[j] = 2.0 * abs(f) / total if total > 0 else 0.0
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def defocus_tag(defocus_nm: float) -> str:
    """File-name tag of a defocus with its sign: ``-16 -> "df-16nm"``, ``4 -> "df+4nm"``.

    Non-integer values keep up to two decimals: ``-2.5 -> "df-2.5nm"``. ``hrtem_core.io``'s
    ``defocus_from_name`` reads every tag back.
    """
    v = float(defocus_nm)
    if not math.isfinite(v):
        raise AnalysisParameterError(f"defocus must be a finite number (nm), got {defocus_nm!r}")
    if v == round(v):
        return f"df{round(v):+d}nm"
    return f"df{v:+.2f}".rstrip("0") + "nm"


def write_tiff(
    path: str | Path,
    sim: SimulatedImage,
    *,
    dtype: Literal["uint8", "uint16", "float32"] = "uint16",
    compress: bool = True,
) -> Path:
    """Write a simulated image as an ImageJ-calibrated TIFF (pixel size in nm, defocus in Info).

    ``uint16`` stores rounded counts (clipped to 0..65535); ``uint8`` stores the counts exactly
    and refuses an image with more than 255 counts in a pixel (a low-dose image fits, and
    compresses to about 15 % less than ``uint16``); ``float32`` stores the values as they are.
    The ImageJ metadata carry ``unit=nm`` and the resolution ``1 / pixel_size_nm`` px/nm, so
    readers get the pixel size back; the file is zlib-compressed (level 9) unless ``compress`` is
    False.
    """
    import tifffile

    path = Path(path)
    img = np.asarray(sim.image)
    if dtype == "uint16":
        data = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
    elif dtype == "uint8":
        counts = np.rint(img)
        if counts.min() < 0 or counts.max() > 255:
            raise AnalysisParameterError(
                f"{path.name}: counts span {counts.min():.0f}..{counts.max():.0f}, more than "
                "uint8 holds (0..255); write it as uint16 or lower the dose"
            )
        data = counts.astype(np.uint8)
    elif dtype == "float32":
        data = img.astype(np.float32)
    else:
        raise AnalysisParameterError(
            f"TIFF data type must be 'uint8', 'uint16' or 'float32', got {dtype!r}"
        )
    info = json.dumps(
        {
            "defocus_nm": sim.defocus_nm,
            "voltage_kv": sim.truth.params.get("voltage_kv"),
            "cs_mm": sim.truth.params.get("cs_mm"),
            "source": "hrtem_core.simulate",
        }
    )
    res = 1.0 / float(sim.pixel_size_nm)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(res, res),
        metadata={"unit": "nm", "Info": info},
        compression="zlib" if compress else None,
        compressionargs={"level": 9} if compress else None,
    )
    return path


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_positive(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AnalysisParameterError(f"{what} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise AnalysisParameterError(f"{what} must be a positive number, got {value!r}")
    return v


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise AnalysisParameterError(
            f"image shape must be (ny, nx) pixels, got {shape!r}"
        ) from None
    if ny < 16 or nx < 16:
        raise AnalysisParameterError(f"image shape must be at least 16x16 px, got {shape!r}")
    return ny, nx


__all__ = [
    "DEFAULT_LATTICE_POTENTIAL_V",
    "DEFAULT_MEAN_INNER_POTENTIAL_V",
    "HEMATITE",
    "KNOWN_STRUCTURES",
    "MAGHEMITE_ORDERED",
    "MAGHEMITE_SPINEL",
    "MAGNETITE_SPINEL",
    "CrystalStructure",
    "Particle",
    "ParticleTruth",
    "ProjectedReflection",
    "SimulatedImage",
    "SimulationTruth",
    "Site",
    "VisibleReflection",
    "chi_rad",
    "ctf",
    "defocus_tag",
    "electron_scattering_factor_nm",
    "envelope_spatial",
    "envelope_temporal",
    "fringe_contrast",
    "image_frame",
    "information_limit_nm_inv",
    "interaction_constant",
    "known_structure",
    "lattice_visibility",
    "scherzer_defocus_nm",
    "simulate_particle",
    "simulate_particles",
    "simulate_series",
    "wavelength_nm",
    "write_tiff",
    "zone_projection",
]
