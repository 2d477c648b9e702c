"""Electron optics of the objective lens: wavelength, aberration phase, CTF and envelopes.

The one home of these formulas: the simulator (:mod:`hrtem_core.simulate`), the synthetic
training data (:mod:`hrtem_core.synthetic`) and the Thon-ring defocus estimate
(:mod:`hrtem_core.defocus`) all compute through them.

* Relativistic electron wavelength ``lambda = h / sqrt(2 m0 e U (1 + e U / (2 m0 c^2)))``
  (e.g. Williams & Carter, *Transmission Electron Microscopy*, 2nd ed., eq. 1.6), CODATA 2018
  constants: 0.0019687 nm at 300 kV, 0.0025079 nm at 200 kV, 0.0041757 nm at 80 kV.
* Aberration phase ``chi(k) = pi lambda df k^2 + (pi / 2) Cs lambda^3 k^4`` and the phase-contrast
  transfer function ``sin chi(k)`` (Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed.,
  eqs. 3.42 and 3.68), with the wave multiplied by ``exp(-i chi)``.
* Envelopes of partial coherence (Kirkland, ch. 3.3): temporal
  ``E_t(k) = exp(-(1/2) pi^2 lambda^2 Delta^2 k^4)`` (focal spread ``Delta``, the standard
  deviation of the defocus) and spatial
  ``E_s(k) = exp(-(pi alpha / lambda)^2 (Cs lambda^3 k^3 + df lambda k)^2)`` (beam convergence
  ``alpha``, the 1/e semi-angle).
* Scherzer defocus ``df_Sch = -1.2 sqrt(Cs lambda)``.

**Defocus sign convention** (as everywhere in this project): defocus in nm, **negative =
underfocus**. A weak phase object has the image spectrum ``2 Phi(k) sin chi(k)``; at the Scherzer
defocus (negative for ``Cs > 0``) ``sin chi < 0`` over the passband and atoms appear dark.

Units: ``k`` in 1/nm, defocus and focal spread in nm, ``Cs`` in mm, convergence in mrad,
voltage in kV, wavelength in nm.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hrtem_core.errors import AnalysisParameterError

# Physical constants (CODATA 2018, SI).
PLANCK_J_S = 6.62607015e-34  # Planck constant h [J s]
ELECTRON_MASS_KG = 9.1093837015e-31  # electron rest mass m0 [kg]
ELEMENTARY_CHARGE_C = 1.602176634e-19  # elementary charge e [C]
SPEED_OF_LIGHT_M_S = 299792458.0  # speed of light c [m/s]
#: Nanometres per millimetre (``Cs`` is given in mm, used in nm).
NM_PER_MM = 1.0e6

_H, _M0, _E, _C = PLANCK_J_S, ELECTRON_MASS_KG, ELEMENTARY_CHARGE_C, SPEED_OF_LIGHT_M_S


def _positive_kv(value: Any) -> float:
    what = "accelerating voltage (kV)"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AnalysisParameterError(f"{what} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise AnalysisParameterError(f"{what} must be a positive number, got {value!r}")
    return v


def wavelength_nm(voltage_kv: float) -> float:
    """Relativistic electron wavelength [nm].

    ``lambda = h / sqrt(2 m0 e U (1 + e U / (2 m0 c^2)))`` (Williams & Carter, eq. 1.6);
    0.0019687 nm at 300 kV, 0.0025079 nm at 200 kV, 0.0041757 nm at 80 kV.

    Parameters
    ----------
    voltage_kv : float
        Accelerating voltage ``U`` [kV], positive.

    Raises
    ------
    AnalysisParameterError
        If the voltage is not a positive number.
    """
    u = _positive_kv(voltage_kv) * 1e3
    return _H / math.sqrt(2 * _M0 * _E * u * (1 + _E * u / (2 * _M0 * _C**2))) * 1e9


def interaction_constant(voltage_kv: float) -> float:
    """Relativistic interaction constant sigma [rad / (V nm)].

    ``sigma = 2 pi m e lambda / h^2`` with the relativistic mass ``m = m0 (1 + e U / (m0 c^2))``
    (Kirkland, eq. 5.6); 0.006526 rad/(V nm) at 300 kV, 0.007288 at 200 kV.
    """
    u = _positive_kv(voltage_kv) * 1e3
    lam_m = wavelength_nm(voltage_kv) * 1e-9
    m = _M0 * (1 + _E * u / (_M0 * _C**2))
    return 2 * math.pi * m * _E * lam_m / _H**2 * 1e-9


def scherzer_defocus_nm(*, cs_mm: float = 1.2, voltage_kv: float = 300.0) -> float:
    """Scherzer defocus ``df_Sch = -1.2 sqrt(Cs lambda)`` [nm]; negative (underfocus) for Cs > 0."""
    cs_nm = float(cs_mm) * NM_PER_MM
    return -1.2 * math.copysign(math.sqrt(abs(cs_nm) * wavelength_nm(voltage_kv)), cs_nm)


def chi_rad(
    k_nm_inv: np.ndarray | float,
    *,
    defocus_nm: float | np.ndarray,
    voltage_kv: float = 300.0,
    cs_mm: float = 1.2,
) -> np.ndarray:
    """Aberration phase ``chi(k) = pi lambda df k^2 + (pi / 2) Cs lambda^3 k^4`` [rad].

    Parameters
    ----------
    k_nm_inv : array_like
        Spatial frequency ``|k|`` [1/nm], any shape.
    defocus_nm : float or array_like, keyword-only
        Defocus ``df`` [nm], negative = underfocus (broadcast against ``k_nm_inv``).
    voltage_kv, cs_mm : float, keyword-only
        Accelerating voltage [kV]; spherical aberration ``Cs`` [mm].

    Returns
    -------
    ndarray
        ``chi`` [rad], the broadcast shape of ``k_nm_inv`` and ``defocus_nm``.
    """
    lam = wavelength_nm(voltage_kv)
    k2 = np.asarray(k_nm_inv, dtype=float) ** 2
    df = np.asarray(defocus_nm, dtype=float)
    return math.pi * lam * df * k2 + 0.5 * math.pi * float(cs_mm) * NM_PER_MM * lam**3 * k2**2


def envelope_temporal(
    k_nm_inv: np.ndarray | float, *, focal_spread_nm: float, voltage_kv: float = 300.0
) -> np.ndarray:
    """Temporal-coherence envelope ``E_t(k) = exp(-(1/2) pi^2 lambda^2 Delta^2 k^4)``.

    ``Delta`` [nm] is the standard deviation of the defocus spread (chromatic aberration times the
    energy spread and the lens-current instabilities). Same shape as ``k_nm_inv`` [1/nm].
    """
    lam = wavelength_nm(voltage_kv)
    k = np.asarray(k_nm_inv, dtype=float)
    return np.exp(-0.5 * (math.pi * lam * float(focal_spread_nm)) ** 2 * k**4)


def envelope_spatial(
    k_nm_inv: np.ndarray | float,
    *,
    defocus_nm: float | np.ndarray,
    convergence_mrad: float,
    voltage_kv: float = 300.0,
    cs_mm: float = 1.2,
) -> np.ndarray:
    """Spatial-coherence envelope ``E_s(k) = exp(-(pi alpha / lambda)^2 (Cs lambda^3 k^3 + df lambda k)^2)``.

    ``alpha`` [mrad] is the 1/e semi-angle of a Gaussian distribution of illumination angles;
    ``k`` [1/nm] and ``defocus_nm`` broadcast.
    """
    lam = wavelength_nm(voltage_kv)
    k = np.asarray(k_nm_inv, dtype=float)
    grad = float(cs_mm) * NM_PER_MM * lam**3 * k**3 + np.asarray(defocus_nm, dtype=float) * lam * k
    return np.exp(-((math.pi * float(convergence_mrad) * 1e-3 / lam) ** 2) * grad**2)


def ctf(
    k_nm_inv: np.ndarray | float,
    *,
    defocus_nm: float | np.ndarray,
    voltage_kv: float = 300.0,
    cs_mm: float = 1.2,
    focal_spread_nm: float = 0.0,
    convergence_mrad: float = 0.0,
) -> np.ndarray:
    """Phase contrast transfer function ``sin chi(k) E_t(k) E_s(k)`` (dimensionless).

    A weak phase object ``phi`` gives the image spectrum ``2 Phi(k) ctf(k)``. Negative values
    (e.g. over the passband at Scherzer defocus) render a positive potential dark. With the
    default ``focal_spread_nm = convergence_mrad = 0`` this is the coherent ``sin chi(k)``.
    """
    return (
        np.sin(chi_rad(k_nm_inv, defocus_nm=defocus_nm, voltage_kv=voltage_kv, cs_mm=cs_mm))
        * envelope_temporal(k_nm_inv, focal_spread_nm=focal_spread_nm, voltage_kv=voltage_kv)
        * envelope_spatial(
            k_nm_inv,
            defocus_nm=defocus_nm,
            convergence_mrad=convergence_mrad,
            voltage_kv=voltage_kv,
            cs_mm=cs_mm,
        )
    )


def information_limit_nm_inv(*, focal_spread_nm: float, voltage_kv: float = 300.0) -> float:
    """Information limit [1/nm]: where ``E_t = exp(-2)``, ``k = sqrt(2 / (pi lambda Delta))``."""
    if focal_spread_nm <= 0:
        return math.inf
    return math.sqrt(2.0 / (math.pi * wavelength_nm(voltage_kv) * float(focal_spread_nm)))


__all__ = [
    "ELECTRON_MASS_KG",
    "ELEMENTARY_CHARGE_C",
    "NM_PER_MM",
    "PLANCK_J_S",
    "SPEED_OF_LIGHT_M_S",
    "chi_rad",
    "ctf",
    "envelope_spatial",
    "envelope_temporal",
    "information_limit_nm_inv",
    "interaction_constant",
    "scherzer_defocus_nm",
    "wavelength_nm",
]
