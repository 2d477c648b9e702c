"""Synthetic HRTEM windows with exact Bragg-spot labels, to train and test the spot U-Net.

Nothing is downloaded: every training window is drawn here from a seeded generator.

A window is ``counts = Poisson(dose * I)`` with the intensity

    I(r) = illumination(r) * (1 + B(r) + sum_l m_l(r) L_l(r)) + scan-line offsets,

* ``L_l`` a crystal lattice: a sum of cosines ``A_hk cos(2 pi g_hk . r + phi_hk)`` over the points
  ``g_hk = h g1 + k g2`` of a random 2-D reciprocal lattice (or a 1-D set of fringes), with
  fundamental spacings in ``ranges.spacing_nm``, random orientation, amplitudes and harmonics
  (``|h|, |k| <= 3``) decaying with order; points beyond Nyquist are not rendered;
* ``m_l`` the lattice's region: a random smooth blob (a star-shaped polygon with soft edges) that
  covers part of the window, or the whole window;
* ``B`` an amorphous background: white noise filtered by the phase-contrast transfer function
  ``|sin chi(q) + 0.07 cos chi(q)|`` with ``chi(q) = pi lambda df q^2 + pi/2 Cs lambda^3 q^4``
  (defocus ``df`` in nm, negative = underfocus; :func:`hrtem_core.optics.chi_rad`) and a
  Gaussian envelope: Thon rings;
* drift as a linear motion blur (its transfer function multiplies lattice and background),
  uneven illumination (a gradient and a broad bump), and occasional scan-line offsets;
* pixel sizes ``p`` in ``ranges.pixel_size_nm`` (sometimes slightly non-square).

Labels. A spot at ``g`` lies at the FFT offset ``k = (g_y w p_y, g_x w p_x)`` [FFT px] from the DC
(see :mod:`hrtem_core.windows`). A spot is *labelled* only when it is visible in the U-Net input:
its own peak magnitude (:func:`spot_peaks`: the spot alone, at its nearest FFT pixel, so a
strong neighbour cannot lend it visibility) is at least ``ranges.snr_label`` times the local RMS
magnitude of everything else (background, shot noise, artefacts) on the 64 x 64 band grid the
U-Net sees (resampled as its input, :func:`hrtem_core.windows.resample_band`), in an annulus
around it; spectra as :func:`hrtem_core.windows.window_spectra` computes them (mean removed,
Hann apodized). Generator 2.1 (2.0 computed the background CTF with an approximate electron
wavelength, 6e-7 relative off: same distributions, other noise draws; 1.0 took the peak as the
3 x 3 band maximum of the summed lattice spectrum, and resampled bilinearly). Spots that are
borderline (``snr_ignore <= SNR < snr_label``) or too close to the DC (``|k| < min_k_px``) are
*ignored* (neither spot nor background in the loss and in the evaluation). Spots outside the band
are not labelled. Windows without crystal (``ranges.p_no_crystal``) have empty labels.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.fft

from hrtem_core.optics import chi_rad
from hrtem_core.windows import (
    BandGeometry,
    band_geometry,
    crop_band,
    hann_2d,
    log_band,
    resample_band,
    window_spectra,
)

#: Version of the generator; stored with the weights. Bump on any change of the distributions.
GENERATOR_VERSION = "2.1"

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_AMPLITUDE_CONTRAST = 0.07


@dataclass(frozen=True)
class SyntheticRanges:
    """Parameter ranges of the generator (training defaults; :meth:`wider` for evaluation).

    Attributes
    ----------
    window_px, window_prob : tuple
        Window sides [px] and their probabilities.
    pixel_size_nm : (float, float)
        Range of the pixel size [nm/px] (log-uniform).
    p_anisotropic, max_anisotropy : float
        Probability of non-square pixels and the largest relative difference ``|p_x/p_y - 1|``.
    spacing_nm : (float, float)
        Range of fundamental lattice spacings [nm] (log-uniform), further limited per window to
        ``(2.2 p, w p / 4)`` (below Nyquist, at least four periods).
    n_lattices, lattice_prob : tuple
        Number of lattices in a crystalline window and its probabilities.
    p_no_crystal : float
        Probability of a window with no crystal at all.
    p_one_dimensional : float
        Probability that a lattice is a single set of fringes.
    p_full_cover : float
        Probability that a lattice covers the whole window.
    amplitude : (float, float)
        Fundamental fringe contrast relative to the mean intensity (log-uniform).
    amorphous_rms : (float, float)
        RMS contrast of the amorphous background (log-uniform).
    dose_e_per_px : (float, float)
        Electrons per pixel (log-uniform).
    defocus_nm : (float, float)
        Defocus of the Thon rings [nm], negative = underfocus.
    cs_mm : (float, float)
        Spherical aberration [mm].
    voltage_kv : tuple of float
        Accelerating voltages [kV].
    p_drift, max_drift_px : float
        Probability of drift and its largest length [px].
    p_scan_lines : float
        Probability of scan-line offsets.
    max_gradient : float
        Largest illumination gradient across the window (relative).
    snr_label, snr_ignore : float
        Visibility thresholds (see the module docstring).
    min_k_px : float
        Spots closer to the DC [FFT px] are ignored.
    d_min_nm : float
        Smallest spacing of the band (as in the analysis).
    """

    window_px: tuple[int, ...] = (128, 256, 512)
    window_prob: tuple[float, ...] = (0.4, 0.5, 0.1)
    pixel_size_nm: tuple[float, float] = (0.01, 0.06)
    p_anisotropic: float = 0.15
    max_anisotropy: float = 0.03
    spacing_nm: tuple[float, float] = (0.1, 0.8)
    n_lattices: tuple[int, ...] = (1, 2, 3)
    lattice_prob: tuple[float, ...] = (0.6, 0.3, 0.1)
    p_no_crystal: float = 0.2
    p_one_dimensional: float = 0.25
    p_full_cover: float = 0.3
    amplitude: tuple[float, float] = (0.02, 0.4)
    amorphous_rms: tuple[float, float] = (0.02, 0.3)
    dose_e_per_px: tuple[float, float] = (1.0, 3000.0)
    defocus_nm: tuple[float, float] = (-300.0, 100.0)
    cs_mm: tuple[float, float] = (0.0, 1.5)
    voltage_kv: tuple[float, ...] = (80.0, 200.0, 300.0)
    p_drift: float = 0.3
    max_drift_px: float = 2.5
    p_scan_lines: float = 0.15
    max_gradient: float = 0.4
    snr_label: float = 5.0
    snr_ignore: float = 3.0
    min_k_px: float = 2.5
    d_min_nm: float = 0.1

    def wider(self) -> SyntheticRanges:
        """Wider ranges for a held-out evaluation set (outside what training saw)."""
        return replace(
            self,
            window_prob=(0.3, 0.5, 0.2),
            pixel_size_nm=(0.008, 0.08),
            max_anisotropy=0.05,
            spacing_nm=(0.09, 1.0),
            n_lattices=(1, 2, 3, 4),
            lattice_prob=(0.5, 0.3, 0.15, 0.05),
            amplitude=(0.003, 0.4),
            amorphous_rms=(0.01, 0.4),
            dose_e_per_px=(0.5, 5000.0),
            defocus_nm=(-500.0, 200.0),
            max_drift_px=3.5,
            max_gradient=0.6,
        )

    def to_dict(self) -> dict:
        """JSON-friendly copy of the ranges."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SyntheticExample:
    """One synthetic window and its truth.

    Attributes
    ----------
    window : ndarray, shape (w, w), float32
        Detector counts.
    pixel_size_nm : (float, float)
        ``(p_y, p_x)`` [nm/px].
    k_offsets : ndarray, shape (m, 2), float
        ``(ky, kx)`` [FFT px] of every labelled (visible) spot; Friedel mates both listed.
    ignore_offsets : ndarray, shape (j, 2), float
        Borderline spots (neither spot nor background).
    spot_snr : ndarray, shape (m,)
        Visibility of each labelled spot (peak / local noise RMS on the band grid).
    harmonic : ndarray of bool, shape (m,)
        The labelled spot is ``n g`` (n >= 2) of another labelled or ignored spot ``g`` of the
        same lattice (the spot extractor folds it into its fundamental).
    params : dict
        Drawn parameters (dose, window, lattices, ...).
    """

    window: np.ndarray
    pixel_size_nm: tuple[float, float]
    k_offsets: np.ndarray
    ignore_offsets: np.ndarray
    spot_snr: np.ndarray
    harmonic: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def window_px(self) -> int:
        """Window side w [px]."""
        return int(self.window.shape[-1])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _lattice_points(
    rng: np.random.Generator,
    *,
    window_px: int,
    pixel_size_nm: tuple[float, float],
    spacing_range: tuple[float, float],
    amplitude: float,
    one_dimensional: bool,
    spacing_nm: float | None,
    angle_deg: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """Points of one lattice (one of each Friedel pair).

    Returns g (m, 2) [1/nm], amplitudes (m,), phases (m,), indices hk (m, 2) and the basis
    spacings [nm] (one for fringes, two for a 2-D lattice).
    """
    lo, hi = spacing_range
    d1 = spacing_nm if spacing_nm is not None else _log_uniform(rng, lo, hi)
    t1 = math.radians(angle_deg) if angle_deg is not None else rng.uniform(0.0, math.pi)
    # Angle convention of the project: angle = atan2(-gy, gx); gy grows downwards.
    g1 = np.array([-math.sin(t1), math.cos(t1)]) / d1
    d2 = _log_uniform(rng, lo, hi)
    t2 = t1 + math.radians(rng.uniform(35.0, 145.0))
    g2 = np.array([-math.sin(t2), math.cos(t2)]) / d2
    rho = rng.uniform(0.2, 0.7)  # decay of the amplitude per order
    hk = []
    for h in range(-3, 4):
        for k in range(-3, 4):
            if (h, k) == (0, 0) or (one_dimensional and k != 0):
                continue
            # One of each Friedel pair: first non-zero index positive.
            if h < 0 or (h == 0 and k < 0):
                continue
            hk.append((h, k))
    hk_arr = np.array(hk, dtype=float)
    order = np.abs(hk_arr).sum(axis=1)
    fundamental = ((hk_arr[:, 0] == 1) & (hk_arr[:, 1] == 0)) | (
        (hk_arr[:, 0] == 0) & (hk_arr[:, 1] == 1)
    )
    present = fundamental | (rng.random(len(hk)) < 0.6)
    amp = amplitude * rng.uniform(0.4, 1.0, len(hk)) * rho ** (order - 1)
    g = hk_arr[:, :1] * g1 + hk_arr[:, 1:] * g2
    # Below Nyquist (with a margin) along both axes.
    w = window_px
    ky = g[:, 0] * w * pixel_size_nm[0]
    kx = g[:, 1] * w * pixel_size_nm[1]
    inside = (np.abs(ky) < w / 2 - 2) & (np.abs(kx) < w / 2 - 2)
    keep = present & inside
    phases = rng.uniform(0.0, 2 * math.pi, len(hk))
    basis = [float(d1)] if one_dimensional else [float(d1), float(d2)]
    return g[keep], amp[keep], phases[keep], hk_arr[keep].astype(int), basis


def _region_mask(rng: np.random.Generator, window_px: int, *, full: bool) -> np.ndarray:
    """Soft region (w, w) in [0, 1]: the whole window or a random star-shaped blob."""
    w = window_px
    if full:
        return np.ones((w, w), dtype=np.float64)
    cy, cx = rng.uniform(-0.15 * w, 1.15 * w, 2)
    radius = rng.uniform(0.15, 0.7) * w
    yy = np.arange(w)[:, None] - cy
    xx = np.arange(w)[None, :] - cx
    theta = np.arctan2(yy, xx)
    r_edge = np.full_like(theta, radius)
    n_harm = rng.integers(1, 6)
    for n in range(2, 2 + n_harm):
        r_edge += radius * rng.uniform(0.0, 0.25 / n * 2) * np.cos(n * theta + rng.uniform(0, 7))
    dist = np.hypot(yy, xx)
    edge_px = rng.uniform(1.0, 6.0)
    return 0.5 * (1.0 - np.tanh((dist - r_edge) / edge_px))


def _drift_transfer(qy_px: np.ndarray, qx_px: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """Transfer of a linear motion blur of vector ``drift`` [px] at frequencies [cycles/px]."""
    return np.sinc(qy_px * drift[0] + qx_px * drift[1])


def synthetic_example(
    rng: np.random.Generator,
    *,
    window_px: int | None = None,
    pixel_size_nm: tuple[float, float] | None = None,
    ranges: SyntheticRanges | None = None,
    crystal: bool | None = None,
    n_lattices: int | None = None,
    spacing_nm: float | None = None,
    angle_deg: float | None = None,
    one_dimensional: bool | None = None,
    full_cover: bool | None = None,
    amplitude: float | None = None,
    amorphous_rms: float | None = None,
    dose_e_per_px: float | None = None,
    artefacts: bool = True,
) -> SyntheticExample:
    """Draw one synthetic HRTEM window with its spot labels.

    Every keyword left at None is drawn from ``ranges``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the example is a pure function of its state).
    window_px : int, keyword-only
        Window side w [px].
    pixel_size_nm : (float, float), keyword-only
        ``(p_y, p_x)`` [nm/px].
    ranges : SyntheticRanges, keyword-only
        Parameter ranges (default: the training ranges).
    crystal : bool, keyword-only
        False: amorphous background only.
    n_lattices : int, keyword-only
        Number of lattices.
    spacing_nm, angle_deg : float, keyword-only
        Fundamental spacing [nm] and direction [deg] (``atan2(-gy, gx)``) of the first lattice's
        first basis vector.
    one_dimensional, full_cover : bool, keyword-only
        Force fringes / a two-dimensional lattice, a full / partial region (all lattices).
    amplitude : float, keyword-only
        Fundamental contrast of every lattice (relative to the mean intensity).
    amorphous_rms : float, keyword-only
        RMS contrast of the background (0: none).
    dose_e_per_px : float, keyword-only
        Electrons per pixel; ``math.inf`` gives a noise-free window.
    artefacts : bool, keyword-only
        False switches off drift, uneven illumination and scan lines.

    Returns
    -------
    SyntheticExample
    """
    rs = ranges if ranges is not None else SyntheticRanges()
    w, (py, px) = _draw_geometry(rng, rs, window_px=window_px, pixel_size_nm=pixel_size_nm)
    if crystal is None:
        crystal = bool(rng.random() >= rs.p_no_crystal)
    if dose_e_per_px is None:
        dose_e_per_px = _log_uniform(rng, *rs.dose_e_per_px)
    if amorphous_rms is None:
        amorphous_rms = _log_uniform(rng, *rs.amorphous_rms)
    params: dict = {
        "window_px": w,
        "pixel_size_nm": (py, px),
        "dose_e_per_px": float(dose_e_per_px),
        "amorphous_rms": float(amorphous_rms),
        "crystal": bool(crystal),
        "lattices": [],
    }
    drift = _draw_drift(rng, rs) if artefacts else np.zeros(2)
    params["drift_px"] = tuple(float(v) for v in drift)
    contrast = np.zeros((w, w), dtype=np.float64)
    if amorphous_rms > 0:
        contrast += _amorphous_background(
            rng, rs, w, (py, px), drift, amorphous_rms=amorphous_rms, params=params
        )
    layers = _Lattices(w)
    if crystal:
        if n_lattices is None:
            n_lattices = int(rng.choice(rs.n_lattices, p=np.asarray(rs.lattice_prob)))
        for i in range(n_lattices):
            first = {"spacing_nm": spacing_nm, "angle_deg": angle_deg} if i == 0 else {}
            params["lattices"].append(
                layers.add(
                    rng,
                    rs,
                    (py, px),
                    drift,
                    one_dimensional=one_dimensional,
                    full_cover=full_cover,
                    amplitude=amplitude,
                    **first,
                )
            )
    illum = _illumination(rng, rs, w) if artefacts else np.ones((w, w))
    lattice_part = illum * layers.image
    clean = np.maximum(illum * (1.0 + contrast) + lattice_part, 0.0)
    image, lattice_counts, scan_lines = _record(
        rng, rs, clean, lattice_part, dose_e_per_px=dose_e_per_px, artefacts=artefacts
    )
    if scan_lines:
        params["scan_lines"] = True
    dose_scale = 1.0 if math.isinf(dose_e_per_px) else float(dose_e_per_px)
    k, lab, ign, snr, harmonic = _visible_spots(
        image, lattice_counts, layers, illum, (py, px), rs, dose_scale=dose_scale
    )
    return SyntheticExample(
        window=image.astype(np.float32),
        pixel_size_nm=(py, px),
        k_offsets=k[lab],
        ignore_offsets=k[ign],
        spot_snr=snr[lab],
        harmonic=harmonic[lab],
        params=params | {"p_mean_nm": 0.5 * (py + px)},
    )


def _draw_geometry(
    rng: np.random.Generator,
    rs: SyntheticRanges,
    *,
    window_px: int | None,
    pixel_size_nm: tuple[float, float] | None,
) -> tuple[int, tuple[float, float]]:
    """Window side w [px] and pixel size ``(p_y, p_x)`` [nm/px], drawn where not given."""
    if window_px is None:
        window_px = int(rng.choice(rs.window_px, p=np.asarray(rs.window_prob)))
    if pixel_size_nm is None:
        p = _log_uniform(rng, *rs.pixel_size_nm)
        aniso = rng.uniform(-rs.max_anisotropy, rs.max_anisotropy)
        if rng.random() < rs.p_anisotropic:
            pixel_size_nm = (p, p * (1.0 + aniso))
        else:
            pixel_size_nm = (p, p)
    py, px = (float(v) for v in pixel_size_nm)
    return int(window_px), (py, px)


def _draw_drift(rng: np.random.Generator, rs: SyntheticRanges) -> np.ndarray:
    """Linear drift ``(dy, dx)`` [px] during the exposure (zero unless drawn)."""
    if rng.random() < rs.p_drift:
        length = rng.uniform(0.5, rs.max_drift_px)
        phi = rng.uniform(0.0, 2 * math.pi)
        return length * np.array([math.sin(phi), math.cos(phi)])
    return np.zeros(2)


def _record(
    rng: np.random.Generator,
    rs: SyntheticRanges,
    clean: np.ndarray,
    lattice_part: np.ndarray,
    *,
    dose_e_per_px: float,
    artefacts: bool,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Counts (Poisson at the dose; ``inf``: noise-free), the lattice's share in counts, and
    whether scan-line offsets were added. Arrays (w, w), float64."""
    w = clean.shape[0]
    if math.isinf(dose_e_per_px):
        image = clean.copy()
        lattice_counts = lattice_part
    else:
        image = rng.poisson(clean * dose_e_per_px).astype(np.float64)
        lattice_counts = lattice_part * dose_e_per_px
    scan_lines = bool(artefacts and rng.random() < rs.p_scan_lines)
    if scan_lines:
        level = float(image.mean())
        image += rng.normal(0.0, rng.uniform(0.005, 0.05) * level, (w, 1))
    return image, lattice_counts, scan_lines


def _amorphous_background(
    rng: np.random.Generator,
    rs: SyntheticRanges,
    w: int,
    pixel_size_nm: tuple[float, float],
    drift: np.ndarray,
    *,
    amorphous_rms: float,
    params: dict,
) -> np.ndarray:
    """CTF-filtered white noise of RMS ``amorphous_rms``, shape (w, w); records its optics."""
    # Frequencies of the full FFT grid [cycles/px], unshifted, rfft layout.
    fy = np.fft.fftfreq(w)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    py, px = pixel_size_nm
    voltage_kv = float(rng.choice(rs.voltage_kv))
    df = rng.uniform(*rs.defocus_nm)
    cs_mm = rng.uniform(*rs.cs_mm)
    q2 = (fy / py) ** 2 + (fx / px) ** 2  # [1/nm^2]
    chi = chi_rad(np.sqrt(q2), defocus_nm=df, voltage_kv=voltage_kv, cs_mm=cs_mm)
    q_env = rng.uniform(2.0, 10.0)  # [1/nm]
    filt = np.abs(np.sin(chi) + _AMPLITUDE_CONTRAST * np.cos(chi)) * np.exp(-q2 / q_env**2)
    filt *= _drift_transfer(fy, fx, drift)
    noise = rng.standard_normal((w, w))
    bg = scipy.fft.irfft2(scipy.fft.rfft2(noise) * filt, s=(w, w))
    bg_rms = float(bg.std())
    params.update(defocus_nm=float(df), cs_mm=float(cs_mm), q_env=q_env)
    if bg_rms > 0:
        return bg * (amorphous_rms / bg_rms)
    return np.zeros((w, w))


class _Lattices:
    """The crystal lattices of one window: their summed contrast and every spot's origin."""

    def __init__(self, w: int) -> None:
        self.w = w
        self.image = np.zeros((w, w), dtype=np.float64)
        self.g: list[np.ndarray] = []  # (m, 2) [1/nm] per lattice
        self.hk: list[np.ndarray] = []
        self.regions: list[np.ndarray] = []
        self.coef: list[np.ndarray] = []

    def add(
        self,
        rng: np.random.Generator,
        rs: SyntheticRanges,
        pixel_size_nm: tuple[float, float],
        drift: np.ndarray,
        *,
        one_dimensional: bool | None,
        full_cover: bool | None,
        amplitude: float | None,
        spacing_nm: float | None = None,
        angle_deg: float | None = None,
    ) -> dict:
        """Draw one lattice and its region, add it to :attr:`image`; its parameters."""
        w = self.w
        py, px = pixel_size_nm
        one_d = (
            one_dimensional
            if one_dimensional is not None
            else bool(rng.random() < rs.p_one_dimensional)
        )
        amp0 = amplitude if amplitude is not None else _log_uniform(rng, *rs.amplitude)
        g, amps, phases, hk, basis = _lattice_points(
            rng,
            window_px=w,
            pixel_size_nm=(py, px),
            spacing_range=(
                max(rs.spacing_nm[0], 2.2 * max(py, px)),
                min(rs.spacing_nm[1], w * min(py, px) / 4.0),
            ),
            amplitude=amp0,
            one_dimensional=one_d,
            spacing_nm=spacing_nm,
            angle_deg=angle_deg,
        )
        full = full_cover if full_cover is not None else bool(rng.random() < rs.p_full_cover)
        region = _region_mask(rng, w, full=full)
        # Drift attenuates each fringe by the blur transfer at its frequency.
        att = _drift_transfer(g[:, 0] * py, g[:, 1] * px, drift)
        coef = amps * att * np.exp(1j * phases)
        ey = np.exp(2j * math.pi * np.outer(np.arange(w) * py, g[:, 0]))  # (w, m)
        ex = np.exp(2j * math.pi * np.outer(np.arange(w) * px, g[:, 1]))  # (w, m)
        self.image += region * ((ey * coef) @ ex.T).real
        self.regions.append(region)
        self.coef.append(coef)
        self.g.append(g)
        self.hk.append(hk)
        return {
            "amplitude": float(amp0),
            "one_dimensional": one_d,
            "full_cover": full,
            "coverage": float(region.mean()),
            "basis_spacing_nm": basis,
            "g_nm_inv": g.tolist(),
        }


def _illumination(rng: np.random.Generator, rs: SyntheticRanges, w: int) -> np.ndarray:
    """Uneven illumination (a gradient and a broad bump), shape (w, w), at least 0.05."""
    yy = (np.arange(w)[:, None] + 0.5) / w - 0.5
    xx = (np.arange(w)[None, :] + 0.5) / w - 0.5
    gy_, gx_ = rng.uniform(-rs.max_gradient, rs.max_gradient, 2) / 2
    bump = rng.uniform(-0.2, 0.2)
    by, bx = rng.uniform(-0.5, 0.5, 2)
    sig = rng.uniform(0.3, 1.0)
    illum = 1.0 + gy_ * yy + gx_ * xx + bump * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / sig**2)
    return np.maximum(illum, 0.05)


def _visible_spots(
    image: np.ndarray,
    lattice_counts: np.ndarray,
    layers: _Lattices,
    illum: np.ndarray,
    pixel_size_nm: tuple[float, float],
    rs: SyntheticRanges,
    *,
    dose_scale: float,
) -> tuple[np.ndarray, ...]:
    """Every spot and its Friedel mate: FFT offsets ``k`` (n, 2) [FFT px], labelled, ignored,
    SNR and harmonic flags (n,). ``illum`` (w, w) and ``dose_scale`` [e/px] weight the spots."""
    w = layers.w
    py, px = pixel_size_nm
    geometry = band_geometry(w, (py, px), d_min_nm=rs.d_min_nm)
    g_cat = np.concatenate(layers.g) if layers.g else np.zeros((0, 2))
    hk_cat = np.concatenate(layers.hk) if layers.hk else np.zeros((0, 2), dtype=int)
    lat_cat = (
        np.concatenate([np.full(len(g), i) for i, g in enumerate(layers.g)])
        if layers.g
        else np.zeros(0, dtype=int)
    )
    k = np.stack([g_cat[:, 0] * w * py, g_cat[:, 1] * w * px], axis=1)
    k = np.concatenate([k, -k])
    hk_cat = np.concatenate([hk_cat, -hk_cat])
    lat_cat = np.concatenate([lat_cat, lat_cat])
    # Each spot's own peak (without its neighbours), on the FFT grid.
    hann = hann_2d(w).astype(np.float64)
    own = np.zeros(len(g_cat))
    for i, (region, coef) in enumerate(zip(layers.regions, layers.coef, strict=True)):
        sel = np.flatnonzero(lat_cat[: len(g_cat)] == i)
        own[sel] = spot_peaks(k[sel], coef, hann * illum * region * dose_scale, geometry)
    own = np.concatenate([own, own])
    lab, ign, snr = _classify_spots(image, lattice_counts, k, own, geometry, rs)
    return k, lab, ign, snr, _harmonic_flags(hk_cat, lat_cat, lab | ign)


def _harmonic_flags(hk: np.ndarray, lattice: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """True for a spot ``n (h, k)`` (n >= 2) whose fundamental ``(h, k)`` is also seen."""
    out = np.zeros(len(hk), dtype=bool)
    index = {
        (int(lt), int(a), int(b)): j for j, (lt, (a, b)) in enumerate(zip(lattice, hk, strict=True))
    }
    for j, (lt, (a, b)) in enumerate(zip(lattice, hk, strict=True)):
        n = math.gcd(int(a), int(b))
        if n >= 2:
            f = index.get((int(lt), int(a) // n, int(b) // n))
            out[j] = f is not None and bool(seen[f])
    return out


def spot_peaks(
    k: np.ndarray, coef: np.ndarray, weight: np.ndarray, geometry: BandGeometry
) -> np.ndarray:
    """Each cosine's own peak magnitude at its nearest FFT pixel, without its neighbours.

    A fringe ``Re(c exp(2 pi i g . r))`` weighted by ``weight(r)`` (apodization, illumination,
    region, dose) contributes ``c / 2`` times the transform of the weight, evaluated at the
    offset of ``k`` from its nearest FFT pixel: ``|c| / 2 |sum_r weight(r) exp(2 pi i delta .
    r)|`` with ``delta = (k - rint(k)) / w`` [cycles/px]. This is what the spectrum shows at the
    spot when it has no neighbour; a stronger spot a few pixels away leaves it unchanged.

    Parameters
    ----------
    k : ndarray, shape (m, 2)
        ``(ky, kx)`` [FFT px] of the spots (the ``+g`` half).
    coef : ndarray, shape (m,), complex
        Fringe coefficients ``c``.
    weight : ndarray, shape (w, w)
        Real weight of the fringes.
    geometry : BandGeometry
        Spots whose nearest pixel is outside the band get 0.

    Returns
    -------
    ndarray, shape (m,)
    """
    k = np.asarray(k, dtype=float).reshape(-1, 2)
    out = np.zeros(len(k))
    near = (np.abs(np.rint(k[:, 0])) <= geometry.radius_y) & (
        np.abs(np.rint(k[:, 1])) <= geometry.radius_x
    )
    if not near.any():
        return out
    w = weight.shape[-1]
    delta = (k[near] - np.rint(k[near])) / w
    ey = np.exp(2j * math.pi * np.outer(delta[:, 0], np.arange(w)))  # (m, w)
    ex = np.exp(2j * math.pi * np.outer(delta[:, 1], np.arange(w)))
    out[near] = 0.5 * np.abs(np.asarray(coef)[near]) * np.abs(((ey @ weight) * ex).sum(axis=1))
    return out


def _classify_spots(
    image: np.ndarray,
    lattice_counts: np.ndarray,
    k: np.ndarray,
    own_peak: np.ndarray,
    geometry: BandGeometry,
    rs: SyntheticRanges,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled and ignored flags and the visibility of each spot offset ``k`` (m, 2).

    ``own_peak`` (m,) is each spot's own magnitude at its nearest FFT pixel (without its
    neighbours: a strong spot a few pixels away must not make a weak one "visible"). The noise
    is the RMS of the non-lattice spectrum on the band grid, resampled as the U-Net input
    (:func:`~hrtem_core.windows.resample_band`), in an annulus of 2-5 band px around the spot.
    Spots outside the band are neither labelled nor ignored.
    """
    n_all = len(k)
    in_band = (np.abs(k[:, 0]) <= geometry.radius_y) & (np.abs(k[:, 1]) <= geometry.radius_x)
    lab_all = np.zeros(n_all, dtype=bool)
    ign_all = np.zeros(n_all, dtype=bool)
    snr_all = np.zeros(n_all)
    k = k[in_band]
    if len(k) == 0:
        return lab_all, ign_all, snr_all
    w = image.shape[-1]
    hann = hann_2d(w).astype(np.float64)
    rest = (image - image.mean() - (lattice_counts - lattice_counts.mean())) * hann
    mag_rest = np.abs(np.fft.fftshift(scipy.fft.fft2(rest)))
    rest_b = resample_band(crop_band(mag_rest[None], geometry), geometry.size)[0]
    s = geometry.size
    r, c = geometry.to_band(k[:, 0], k[:, 1])
    # Noise RMS in an annulus of 2..5 band px around the spot.
    offs = np.arange(-5, 6)
    dy, dx = np.meshgrid(offs, offs, indexing="ij")
    rr = np.rint(r)[:, None, None].astype(int) + dy
    cc = np.rint(c)[:, None, None].astype(int) + dx
    valid = (rr >= 0) & (rr < s) & (cc >= 0) & (cc < s)
    rr_c = np.clip(rr, 0, s - 1)
    cc_c = np.clip(cc, 0, s - 1)
    dist = np.hypot(rr - r[:, None, None], cc - c[:, None, None])
    peak = np.asarray(own_peak, dtype=float)[in_band]
    ring = valid & (dist >= 2.0) & (dist <= 5.0)
    noise2 = np.where(ring, rest_b[rr_c, cc_c] ** 2, 0.0).reshape(len(k), -1).sum(axis=1)
    noise = np.sqrt(noise2 / np.maximum(ring.reshape(len(k), -1).sum(axis=1), 1))
    snr = peak / np.maximum(noise, 1e-12)
    near_dc = np.hypot(k[:, 0], k[:, 1]) < rs.min_k_px
    lab = (snr >= rs.snr_label) & ~near_dc
    ign = ~lab & (snr >= rs.snr_ignore)
    lab_all[in_band] = lab
    ign_all[in_band] = ign
    snr_all[in_band] = snr
    return lab_all, ign_all, snr_all


def synthetic_window(
    rng: np.random.Generator,
    *,
    window_px: int | None = 256,
    pixel_size_nm: tuple[float, float] | None = None,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic window and the FFT offsets of its visible spots.

    Parameters
    ----------
    rng : numpy.random.Generator
    window_px : int, keyword-only
        Window side w [px] (None: random).
    pixel_size_nm : (float, float), keyword-only
        ``(p_y, p_x)`` [nm/px] (None: random).
    **kwargs
        Any other keyword of :func:`synthetic_example`.

    Returns
    -------
    window : ndarray, shape (w, w), float32
    k_offsets : ndarray, shape (m, 2)
        ``(ky, kx)`` [FFT px] of every labelled spot (both members of each Friedel pair).
    """
    ex = synthetic_example(rng, window_px=window_px, pixel_size_nm=pixel_size_nm, **kwargs)
    return ex.window, ex.k_offsets


def label_mask(
    k_offsets: np.ndarray, geometry: BandGeometry, *, radius_px: float = 1.5
) -> np.ndarray:
    """Disks of ``radius_px`` band pixels at the spots, on the band grid.

    Parameters
    ----------
    k_offsets : ndarray, shape (m, 2)
        ``(ky, kx)`` [FFT px] from the DC.
    geometry : BandGeometry
        The band of the window (``BandGeometry.to_band`` maps offsets to band pixels).
    radius_px : float, keyword-only
        Disk radius [band px]; the pixel nearest to each spot is always set.

    Returns
    -------
    ndarray, shape (size, size), bool
    """
    s = geometry.size
    mask = np.zeros((s, s), dtype=bool)
    k = np.asarray(k_offsets, dtype=float).reshape(-1, 2)
    if len(k) == 0:
        return mask
    r, c = geometry.to_band(k[:, 0], k[:, 1])
    rad = max(float(radius_px), 0.5)
    n = math.ceil(rad) + 1
    offs = np.arange(-n, n + 1)
    dy, dx = np.meshgrid(offs, offs, indexing="ij")
    rr = np.rint(r)[:, None, None].astype(int) + dy
    cc = np.rint(c)[:, None, None].astype(int) + dx
    dist = np.hypot(rr - r[:, None, None], cc - c[:, None, None])
    on = (dist <= rad) | ((dy == 0) & (dx == 0))
    on &= (rr >= 0) & (rr < s) & (cc >= 0) & (cc < s)
    mask[rr[on], cc[on]] = True
    return mask


@dataclass(frozen=True)
class SyntheticDataset:
    """U-Net inputs and targets drawn by :func:`make_dataset`.

    Attributes
    ----------
    bands : ndarray, shape (n, S, S), float32
        ``log_band(window_spectra(window), band_geometry(w, p, d_min_nm))``.
    masks : ndarray, shape (n, S, S), bool
        Labelled spots (:func:`label_mask`).
    ignore : ndarray, shape (n, S, S), bool
        Borderline spots (excluded from the loss).
    dose_e_per_px, window_px, n_spots : ndarray, shape (n,)
        Per-example dose, window side and number of labelled spots.
    """

    bands: np.ndarray
    masks: np.ndarray
    ignore: np.ndarray
    dose_e_per_px: np.ndarray
    window_px: np.ndarray
    n_spots: np.ndarray


def example_arrays(
    ex: SyntheticExample, *, radius_px: float = 1.5, d_min_nm: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U-Net input band, label mask and ignore mask of one example, each (S, S)."""
    geometry = band_geometry(ex.window_px, ex.pixel_size_nm, d_min_nm=d_min_nm)
    band = log_band(window_spectra(ex.window[None], workers=1), geometry)[0]
    mask = label_mask(ex.k_offsets, geometry, radius_px=radius_px)
    ignore = label_mask(ex.ignore_offsets, geometry, radius_px=radius_px + 1.0) & ~mask
    return band, mask, ignore


def _make_chunk(args: tuple) -> tuple[np.ndarray, ...]:
    seed_seq, n, ranges, radius_px = args
    rng = np.random.default_rng(seed_seq)
    bands, masks, ignores, doses, wins, nsp = [], [], [], [], [], []
    for _ in range(n):
        ex = synthetic_example(rng, ranges=ranges)
        b, m, i = example_arrays(ex, radius_px=radius_px, d_min_nm=ranges.d_min_nm)
        bands.append(b)
        masks.append(m)
        ignores.append(i)
        doses.append(ex.params["dose_e_per_px"])
        wins.append(ex.window_px)
        nsp.append(len(ex.k_offsets))
    return (
        np.stack(bands),
        np.stack(masks),
        np.stack(ignores),
        np.array(doses),
        np.array(wins),
        np.array(nsp),
    )


def make_dataset(
    n: int,
    *,
    seed: int,
    ranges: SyntheticRanges | None = None,
    radius_px: float = 1.5,
    workers: int = 1,
    chunk_size: int = 250,
) -> SyntheticDataset:
    """Draw ``n`` examples as U-Net arrays, reproducibly.

    The examples are drawn in chunks of ``chunk_size``, chunk ``i`` from
    ``SeedSequence(seed).spawn(...)[i]``, so the result does not depend on ``workers``.

    Parameters
    ----------
    n : int
        Number of examples.
    seed : int, keyword-only
    ranges : SyntheticRanges, keyword-only
    radius_px : float, keyword-only
        Label disk radius [band px].
    workers : int, keyword-only
        Processes (1: in this process).
    chunk_size : int, keyword-only

    Returns
    -------
    SyntheticDataset
    """
    rs = ranges if ranges is not None else SyntheticRanges()
    n_chunks = max(1, math.ceil(n / chunk_size))
    seqs = np.random.SeedSequence(seed).spawn(n_chunks)
    sizes = [min(chunk_size, n - i * chunk_size) for i in range(n_chunks)]
    jobs = [(s, m, rs, radius_px) for s, m in zip(seqs, sizes, strict=True) if m > 0]
    if workers > 1:
        # Fresh worker processes with single-threaded BLAS: no oversubscription of the cores.
        saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))
        try:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                parts = list(pool.map(_make_chunk, jobs))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    else:
        parts = [_make_chunk(j) for j in jobs]
    cols = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    return SyntheticDataset(*cols)


def spacing_of(k_offsets: Sequence, *, window_px: int, pixel_size_nm: tuple[float, float]):
    """Lattice spacing [nm] of FFT offsets ``(ky, kx)``: ``1 / |k / (w p)|``."""
    k = np.asarray(k_offsets, dtype=float).reshape(-1, 2)
    gy = k[:, 0] / (window_px * pixel_size_nm[0])
    gx = k[:, 1] / (window_px * pixel_size_nm[1])
    return 1.0 / np.hypot(gy, gx)


__all__ = [
    "GENERATOR_VERSION",
    "SyntheticDataset",
    "SyntheticExample",
    "SyntheticRanges",
    "example_arrays",
    "label_mask",
    "make_dataset",
    "spacing_of",
    "synthetic_example",
    "synthetic_window",
]
