"""Known answers and closed forms of the electron optics (:mod:`hrtem_core.optics`).

The closed forms below are written out independently of the module (CODATA 2018 constants), on a
grid of voltages, aberrations, defoci and frequencies, and must agree to a relative 1e-12: the
simulator, the synthetic training data and the defocus estimate all compute through these
functions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrtem_core import defocus, optics, simulate, synthetic

H, M0, E, C = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
VOLTAGES_KV = (60.0, 80.0, 120.0, 200.0, 300.0)
CS_MM = (0.0, 0.5, 1.2, -0.01)
DEFOCI_NM = (-80.0, -10.0, 0.0, 35.0)
K = np.linspace(0.0, 12.0, 241)  # [1/nm]


def _lam_nm(kv: float) -> float:
    u = kv * 1e3
    return H / math.sqrt(2 * M0 * E * u * (1 + E * u / (2 * M0 * C**2))) * 1e9


def _chi(k, df, kv, cs):
    lam = _lam_nm(kv)
    return np.pi * lam * df * k**2 + np.pi / 2 * cs * 1e6 * lam**3 * k**4


def _close(a, b, rel=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=rel, atol=rel * max(1.0, float(np.max(np.abs(b)))))


def test_wavelength_known_answers():
    assert optics.wavelength_nm(300.0) == pytest.approx(0.0019687, abs=1e-7)
    assert optics.wavelength_nm(200.0) == pytest.approx(0.0025079, abs=1e-7)
    assert optics.wavelength_nm(80.0) == pytest.approx(0.0041757, abs=1e-7)
    for kv in VOLTAGES_KV:
        _close(optics.wavelength_nm(kv), _lam_nm(kv))
        # the familiar approximation 1.226426 / sqrt(U (1 + 0.978476e-6 U)) [nm, U in V]
        u = kv * 1e3
        assert optics.wavelength_nm(kv) == pytest.approx(
            1.226426 / math.sqrt(u * (1 + 0.978476e-6 * u)), rel=1e-6
        )


def test_interaction_constant_closed_form():
    for kv in VOLTAGES_KV:
        u = kv * 1e3
        m = M0 * (1 + E * u / (M0 * C**2))
        _close(
            optics.interaction_constant(kv), 2 * math.pi * m * E * _lam_nm(kv) * 1e-9 / H**2 * 1e-9
        )


@pytest.mark.parametrize("kv", VOLTAGES_KV)
def test_chi_ctf_envelopes_closed_forms(kv):
    lam = _lam_nm(kv)
    for cs in CS_MM:
        for df in DEFOCI_NM:
            chi = _chi(K, df, kv, cs)
            _close(optics.chi_rad(K, defocus_nm=df, voltage_kv=kv, cs_mm=cs), chi)
            es = np.exp(
                -((np.pi * 0.3e-3 / lam) ** 2) * (cs * 1e6 * lam**3 * K**3 + df * lam * K) ** 2
            )
            _close(
                optics.envelope_spatial(
                    K, defocus_nm=df, convergence_mrad=0.3, voltage_kv=kv, cs_mm=cs
                ),
                es,
            )
            et = np.exp(-0.5 * np.pi**2 * lam**2 * 3.0**2 * K**4)
            _close(optics.ctf(K, defocus_nm=df, voltage_kv=kv, cs_mm=cs), np.sin(chi))
            full = optics.ctf(
                K, defocus_nm=df, voltage_kv=kv, cs_mm=cs, focal_spread_nm=3.0, convergence_mrad=0.3
            )
            _close(full, np.sin(chi) * et * es)
        sch = -1.2 * math.copysign(math.sqrt(abs(cs) * 1e6 * lam), cs)
        _close(optics.scherzer_defocus_nm(cs_mm=cs, voltage_kv=kv), sch)
    _close(
        optics.envelope_temporal(K, focal_spread_nm=4.0, voltage_kv=kv),
        np.exp(-0.5 * (np.pi * lam * 4.0) ** 2 * K**4),
    )
    _close(
        optics.information_limit_nm_inv(focal_spread_nm=4.0, voltage_kv=kv),
        math.sqrt(2 / (math.pi * lam * 4.0)),
    )
    assert optics.information_limit_nm_inv(focal_spread_nm=0.0, voltage_kv=kv) == math.inf


def test_defocus_broadcasts_against_frequency():
    df = np.array([[-20.0], [15.0]])
    got = optics.chi_rad(K[None, :], defocus_nm=df, voltage_kv=300.0, cs_mm=1.2)
    assert got.shape == (2, K.size)
    _close(got, _chi(K[None, :], df, 300.0, 1.2))


def test_one_home_simulate_defocus_and_synthetic_use_these_functions():
    names = ("wavelength_nm", "chi_rad", "ctf", "envelope_spatial", "envelope_temporal")
    for name in names:
        assert getattr(simulate, name) is getattr(optics, name)
    assert defocus.chi_rad is optics.chi_rad and defocus.ctf is optics.ctf
    assert synthetic.chi_rad is optics.chi_rad
    assert simulate.scherzer_defocus_nm is optics.scherzer_defocus_nm


def test_bad_voltage_is_refused():
    from hrtem_core.errors import AnalysisParameterError

    for bad in (0.0, -300.0, float("nan"), "x"):
        with pytest.raises(AnalysisParameterError, match="accelerating voltage"):
            optics.wavelength_nm(bad)
