"""Bragg spots in every window: from a spot mask to sub-pixel Friedel pairs, and a classical detector.

Pipeline (Zhu et al., ESI-2; geometry in :mod:`hrtem_core.windows`):

1. A detector marks spots on the 64 x 64 *band grid* (the U-Net, or :func:`classical_masks`).
2. :func:`pairs_from_mask` labels the connected components of the mask (8-connectivity,
   ``scipy.ndimage.label``); with the U-Net, a component with several logit peaks at least 2 band
   px apart (two spots whose disks touch) is split between them (:func:`split_at_peaks`). Under
   each component it takes the strongest 3 x 3 local maximum of the full-resolution
   FFT magnitude among the FFT pixels of the component's footprint (those whose nearest band
   pixel belongs to it; one band pixel spans ``1 / scale`` FFT pixels), at least ``min_l_px``
   from the DC. Only the footprint is searched, so the skirt of a stronger neighbour next to the
   component cannot be taken for its peak.
3. Components are merged into Friedel pairs: a spot at ``k`` and its mate at ``-k`` (``|F|`` of a
   real window is exactly centrosymmetric). A pair whose mate component is missing from the mask is
   still accepted when ``|F|`` at ``-k`` is an equally strong local maximum. Each pair is reported
   once, in the canonical half plane (``ky < 0``, or ``ky == 0`` and ``kx > 0``).
4. Sub-pixel position: a parabola through the log-magnitude of the 3 x 3 neighbourhood (row and
   column sums), corrected for the known bias of that estimator on a Hann-apodized peak (a lookup
   table built from the Hann window's transform), or -- when the real-space windows are given --
   a local matrix DFT of the apodized window on a 0.2-pixel grid around that estimate (the
   zero-padded transform without the zero padding), again with a parabolic fit.
5. Harmonics: a pair at ``n k`` (n = 2, 3) of a stronger pair ``k`` is supporting evidence for the
   fundamental (``harmonic_orders``), not a new lattice plane, and is dropped from the result.

Spacing: ``g = (ky / (w p_y), kx / (w p_x))`` [1/nm], ``d = 1 / |g|`` [nm] (ESI-2, eq. 1: q = l / (d
p) with l the half-distance of the pair). Direction: ``angle_deg = degrees(atan2(-gy, gx)) mod 180``
(counter-clockwise from +x on screen, y down).

The classical detector (:func:`classical_masks`) subtracts a radial median from the log-magnitude
of the band (this removes the Thon rings of the amorphous background, which are radial), normalizes
by a robust noise scale (1.4826 MAD), and keeps local maxima above ``threshold`` robust standard
deviations; it draws small disks at those maxima on the band grid.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from hrtem_core.errors import AnalysisParameterError, CalibrationError
from hrtem_core.windows import (
    FLAT_RELATIVE,
    BandGeometry,
    WindowGrid,
    band_geometry,
    band_spectra,
    crop_band,
    flat_windows,
    grid_band_spectra,
    hann_2d,
    log_band_from_crop,
    row_median,
    window_view,
)

#: Orders n of the harmonics n g that count as supporting evidence for a fundamental g.
HARMONIC_ORDERS: tuple[int, ...] = (2, 3)
#: Detectors accepted by :func:`detect_pairs`.
DETECTORS: tuple[str, ...] = ("unet", "classical")
#: Default threshold of the classical detector [robust standard deviations of the log-magnitude].
CLASSICAL_THRESHOLD = 6.0
#: Relative tolerance on |F(-k)| / |F(k)| when a pair's mate is missing from the mask.
_MATE_RATIO_TOL = 0.25
#: Local background: an (2 * 5 + 1)^2 patch around the peak without its central 5 x 5.
_BG_HALF_PX = 5
_BG_INNER_PX = 2
#: Step of the local DFT grid used for refinement [FFT px].
_DFT_STEP_PX = 0.2


@dataclass(frozen=True)
class SpotPair:
    """One Friedel pair of Bragg spots in one window (one set of lattice planes).

    Attributes
    ----------
    ky, kx : float
        Sub-pixel FFT offset [FFT px] of one spot from the DC, ``ky`` down, ``kx`` right; the mate
        is at ``(-ky, -kx)``. Canonical: ``ky < 0``, or ``ky == 0`` and ``kx > 0``.
    l_px : float
        ``|k|`` [FFT px]: the method's half-distance between the two spots.
    gy_nm_inv, gx_nm_inv : float
        Spatial frequency ``g = (ky / (w p_y), kx / (w p_x))`` [1/nm].
    frequency_nm_inv : float
        ``|g|`` [1/nm].
    spacing_nm : float
        Lattice spacing ``d = 1 / |g|`` [nm].
    angle_deg : float
        Direction of g, ``degrees(atan2(-gy, gx)) mod 180``, in [0, 180) [deg].
    intensity : float
        Peak magnitude ``|F|`` above the local background (median of the 11 x 11 neighbourhood
        without its central 5 x 5) [same units as the spectrum].
    snr : float
        ``intensity`` divided by the local background's robust spread (1.4826 MAD).
    harmonic_orders : tuple of int
        Orders n of the harmonics ``n g`` also seen (supporting evidence), e.g. ``(2,)``.
    significance : float
        The peak power over the mean background power, ``z = |F(k)|^2 / <|F|^2>_bg``, the smaller
        of the local and the azimuthal estimate (:func:`spot_significance`); the pair passed the
        test ``z >= significance_threshold(...)``. NaN where not computed.
    sigma_l_px : float
        Standard uncertainty of the spot position [FFT px] from the sub-pixel fit,
        ``sqrt(SIGMA_FIT_PX^2 / z + SIGMA_FLOOR_PX^2)`` (:func:`position_sigma_px`). NaN where
        not computed.
    """

    ky: float
    kx: float
    l_px: float
    gy_nm_inv: float
    gx_nm_inv: float
    frequency_nm_inv: float
    spacing_nm: float
    angle_deg: float
    intensity: float
    snr: float
    harmonic_orders: tuple[int, ...] = ()
    significance: float = math.nan
    sigma_l_px: float = math.nan


def acute_angle_deg(p1: SpotPair, p2: SpotPair) -> float:
    """Acute angle between the g vectors (plane normals) of two pairs, in [0, 90] degrees."""
    dot = abs(p1.gy_nm_inv * p2.gy_nm_inv + p1.gx_nm_inv * p2.gx_nm_inv)
    cross = abs(p1.gy_nm_inv * p2.gx_nm_inv - p1.gx_nm_inv * p2.gy_nm_inv)
    if dot == 0 and cross == 0:
        raise AnalysisParameterError("cannot measure an angle with a zero spatial frequency")
    return math.degrees(math.atan2(cross, dot))


def pair_angles_deg(pairs: Sequence[SpotPair]) -> np.ndarray:
    """Matrix of acute angles between all pairs of one window, shape (m, m) [deg], in [0, 90]."""
    if len(pairs) == 0:
        return np.zeros((0, 0))
    g = np.array([[p.gy_nm_inv, p.gx_nm_inv] for p in pairs], dtype=float)
    dot = np.abs(g @ g.T)
    cross = np.abs(g[:, None, 0] * g[None, :, 1] - g[:, None, 1] * g[None, :, 0])
    return np.degrees(np.arctan2(cross, dot))


# --------------------------------------------------------------------------------------------
# Significance of a spot, and its position uncertainty
# --------------------------------------------------------------------------------------------

#: False-alarm rate per window that the significance threshold is set for: the probability that
#: a window of pure noise (white, Poisson or an amorphous film) yields a spot pair. The measured
#: rate over 10,000 noise windows is in ``tests/test_spots.py`` (it must stay <= 1 %).
FALSE_ALARM_PER_WINDOW = 0.002
#: Position uncertainty of a sub-pixel peak fit, ``sigma_l = sqrt(SIGMA_FIT_PX^2 / z +
#: SIGMA_FLOOR_PX^2)`` [FFT px]: the Cramer-Rao bound of a sinusoid's frequency in white noise,
#: ``sqrt(6) / (2 pi sqrt(z)) = 0.39 / sqrt(z)`` FFT px (Rife & Boorstyn, IEEE Trans. Inf. Theory
#: 20 (1974) 591) widened 1.4x for the Hann window's broader peak, plus a floor for the residual
#: bias of the parabolic estimator.
SIGMA_FIT_PX = 0.55
SIGMA_FLOOR_PX = 0.05
_LN2 = math.log(2.0)


def significance_threshold(n_pixels: int, *, false_alarm: float = FALSE_ALARM_PER_WINDOW) -> float:
    """Threshold on the spot significance ``z`` for a per-window false-alarm rate.

    Under the null hypothesis "no lattice here" the window's spectrum is locally that of a
    stationary random field (white noise, shot noise or an amorphous film: complex Gaussian
    Fourier coefficients), so the power of one FFT pixel over the mean power around it is
    exponentially distributed, ``P(z > t) = exp(-t)``. A window offers ``n_pixels`` independent
    places for a spot (the band's half plane: ``|F(-k)| = |F(k)|``), so a Bonferroni bound on
    the rate of at least one false spot is ``n exp(-t)``; the threshold is
    ``t = ln(n / false_alarm)`` (16.8 for a 256 px window at 0.02 nm/px).

    Parameters
    ----------
    n_pixels : int
        Independent FFT pixels searched per window (half the band).
    false_alarm : float, keyword-only
        Target false-alarm rate per window, in (0, 1).
    """
    if not (0.0 < false_alarm < 1.0):
        raise AnalysisParameterError(f"false-alarm rate must be in (0, 1), got {false_alarm!r}")
    return math.log(max(int(n_pixels), 1) / false_alarm)


def position_sigma_px(significance: np.ndarray | float) -> np.ndarray:
    """Standard uncertainty [FFT px] of a spot position fitted at significance ``z``."""
    z = np.maximum(np.asarray(significance, dtype=float), 1e-12)
    return np.sqrt(SIGMA_FIT_PX**2 / z + SIGMA_FLOOR_PX**2)


@functools.lru_cache(maxsize=32)
def _ring_layout(
    shape: tuple[int, int], ry: int, rx: int, aspect: float, min_l: float
) -> tuple[np.ndarray, tuple[np.ndarray, ...], int]:
    """Radius bin of each pixel of a centred spectrum, the flat indices of each bin, and the
    number of searchable pixels in the band's half plane.

    The radius is in physical frequency, ``rint(sqrt(ky^2 + (kx p_y / p_x)^2))`` [FFT px along
    y] (``aspect = p_y / p_x``), so the Thon rings of an isotropic film fall in one bin; pixels
    outside the band (``|ky| > ry`` or ``|kx| > rx``) get -1.
    """
    ny, nx = shape
    cy, cx = ny // 2, nx // 2
    ky = np.arange(ny, dtype=float)[:, None] - cy
    kx = (np.arange(nx, dtype=float)[None, :] - cx) * aspect
    rbin = np.rint(np.hypot(ky, kx)).astype(np.intp)
    inside = (np.abs(ky) <= ry) & (np.abs(np.arange(nx)[None, :] - cx) <= rx)
    rbin = np.where(inside, rbin, -1)
    flat = rbin.ravel()
    members = tuple(np.flatnonzero(flat == b) for b in range(int(flat.max()) + 1))
    kyi = np.arange(ny)[:, None] - cy
    kxi = np.arange(nx)[None, :] - cx
    search = (np.abs(kyi) <= ry - 1) & (np.abs(kxi) <= rx - 1) & (kyi**2 + kxi**2 >= min_l * min_l)
    return rbin, members, max(1, int(search.sum()) // 2)


def spot_significance(
    magnitudes: np.ndarray,
    win: np.ndarray,
    ky: np.ndarray,
    kx: np.ndarray,
    *,
    pixel_size_nm: tuple[float, float],
    radius_px: tuple[int, int],
    min_l_px: float = 2.0,
    local_median: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Significance ``z`` of peaks at integer offsets ``(ky, kx)`` of spectra ``magnitudes[win]``.

    ``z = |F(k)|^2 / mu``, with the mean background power ``mu`` estimated twice, robustly (a
    median, over ``ln 2``: the median of an exponential distribution is ``ln 2`` times its mean):

    * locally: the 11 x 11 pixels around the peak without the central 5 x 5 (follows an
      anisotropic background, e.g. the low-frequency streaks of an edge);
    * azimuthally: every band pixel at the same ``|k|`` (follows the Thon rings of an amorphous
      film, which a local patch across a ring would underestimate on its maximum).

    The smaller of the two ``z`` is returned: a peak must stand out against both. ``z`` does not
    change when the image is scaled or offset. A peak on a background of exactly zero (a
    noiseless lattice) has ``z = inf``; a zero peak has ``z = 0``.

    Parameters
    ----------
    magnitudes : ndarray, shape (n, ny, nx)
        Centred ``|F|`` (full spectra or the band crop), DC at ``shape // 2``.
    win, ky, kx : ndarray of int, shape (m,)
        Window index and integer offset from the DC [FFT px] of each peak.
    pixel_size_nm : (float, float), keyword-only
    radius_px : (int, int), keyword-only
        The band's half-widths ``(radius_y, radius_x)`` [FFT px].
    min_l_px : float, keyword-only
        Peaks nearer the DC are not searched (for the number of searched pixels).
    local_median : ndarray, shape (m,), optional, keyword-only
        The median ``|F|`` of each peak's local ring (:func:`_local_ring`), where the caller
        has it already; computed here otherwise.

    Returns
    -------
    z : ndarray, shape (m,)
    n_searched : int
        Independent pixels searched per window (half of the band beyond ``min_l_px``), for
        :func:`significance_threshold`.
    """
    ny, nx = magnitudes.shape[-2:]
    cy, cx = ny // 2, nx // 2
    py, px = pixel_size_nm
    rbin, members, n_searched = _ring_layout(
        (ny, nx), int(radius_px[0]), int(radius_px[1]), float(py / px), float(min_l_px)
    )
    win = np.asarray(win, dtype=np.intp)
    m = win.size
    if m == 0:
        return np.zeros(0), n_searched
    peak = magnitudes[win, cy + ky, cx + kx].astype(np.float64)
    if local_median is None:
        local_median = row_median(_local_ring(magnitudes, win, cy + ky, cx + kx))
    med_local = np.asarray(local_median, dtype=np.float64)
    med_ring = np.empty(m)
    bins = rbin[cy + ky, cx + kx]
    flat = magnitudes.reshape(magnitudes.shape[0], -1)
    for b in np.unique(bins):
        sel = np.flatnonzero(bins == b)
        idx = members[int(b)] if b >= 0 else np.zeros(0, np.intp)
        if idx.size == 0:
            med_ring[sel] = med_local[sel]
            continue
        med_ring[sel] = row_median(flat[win[sel][:, None], idx[None, :]].astype(np.float64))
    bg = np.maximum(med_local, med_ring)
    power = peak * peak
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(bg > 0, power * _LN2 / np.where(bg > 0, bg * bg, 1.0), np.inf)
    z = np.where(power > 0, z, 0.0)
    return z, n_searched


# --------------------------------------------------------------------------------------------
# Pixel sizes and validation
# --------------------------------------------------------------------------------------------


def _pixel_pair(pixel_size_nm: Any) -> tuple[float, float]:
    """``p`` or ``(p_y, p_x)`` -> ``(p_y, p_x)`` [nm/px], validated positive and finite."""
    if np.ndim(pixel_size_nm) == 0:
        vals = (pixel_size_nm, pixel_size_nm)
    else:
        vals = tuple(np.asarray(pixel_size_nm, dtype=float).ravel())
        if len(vals) != 2:
            raise CalibrationError(
                f"pixel size must be one number or (y, x) in nm/px, got {pixel_size_nm!r}"
            )
    try:
        py, px = (float(v) for v in vals)
    except (TypeError, ValueError):
        raise CalibrationError(
            f"pixel size must be a positive number in nm/px, got {pixel_size_nm!r}"
        ) from None
    if not (math.isfinite(py) and math.isfinite(px) and py > 0 and px > 0):
        raise CalibrationError(
            f"pixel size must be a positive number in nm/px, got {pixel_size_nm!r}"
        )
    return py, px


# --------------------------------------------------------------------------------------------
# Sub-pixel refinement
# --------------------------------------------------------------------------------------------


def _hann_parabola_table(n: int = 201, w: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Log-parabolic estimate of a Hann-apodized peak's offset vs. the true offset in [-0.5, 0.5].

    The estimate ``e = (L[-1] - L[+1]) / (2 (L[-1] - 2 L[0] + L[+1]))`` on the log-magnitude of
    the three bins around the maximum is biased (up to 0.016 px) for the Hann window; the table
    maps ``e`` back to the true offset. The bias hardly depends on w (w = 256 is used).
    """
    t = np.linspace(-0.5, 0.5, n)
    x = np.arange(w)
    h = hann_2d(w)[w // 2] / hann_2d(w)[w // 2].max()
    h = h.astype(float)
    bins = np.array([-1.0, 0.0, 1.0])
    # |DTFT| of h(x) exp(2 pi i t x / w) at integer bins -1, 0, 1.
    phase = np.exp(2j * np.pi * (t[:, None, None] - bins[None, :, None]) * x[None, None, :] / w)
    lm = np.log(np.abs((h[None, None, :] * phase).sum(axis=-1)))
    est = 0.5 * (lm[:, 0] - lm[:, 2]) / (lm[:, 0] - 2 * lm[:, 1] + lm[:, 2])
    return est, t


_HANN_EST, _HANN_TRUE = _hann_parabola_table()


def _parabolic_offset(lm: np.ndarray, *, hann_correct: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets (dy, dx) of the centre of (m, 3, 3) log-magnitude patches, in [-0.5, 0.5].

    Separable parabola through the row sums and column sums of each 3 x 3 patch (a Hann-apodized
    peak is separable, so the sums keep its shape and average the noise).
    """
    ry = lm.sum(axis=2)
    rx = lm.sum(axis=1)

    def vertex(v: np.ndarray) -> np.ndarray:
        den = v[:, 0] - 2.0 * v[:, 1] + v[:, 2]
        num = 0.5 * (v[:, 0] - v[:, 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(den < 0, num / den, 0.0)
        d = np.clip(np.nan_to_num(d, nan=0.0), -0.5, 0.5)
        if hann_correct:
            d = np.interp(d, _HANN_EST, _HANN_TRUE)
        return d

    return vertex(ry), vertex(rx)


def _refine_dft(
    windows: np.ndarray,
    win_idx: np.ndarray,
    ky: np.ndarray,
    kx: np.ndarray,
    *,
    step: float = _DFT_STEP_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """Refine peak positions with a local matrix DFT of the apodized real-space window.

    For each spot, ``|F|`` is evaluated on a 3 x 3 grid ``k + step * {-1, 0, 1}`` per axis by
    ``E_y X E_x^T`` (X the mean-subtracted, Hann-apodized window, ``E = exp(-2 pi i k x / w)``),
    then a parabola through the log-magnitude gives the new position. One matrix product per
    window serves all its spots.

    Parameters
    ----------
    windows : ndarray, shape (n, w, w)
        Real-space windows as given to :func:`~hrtem_core.windows.window_spectra`.
    win_idx : ndarray of int, shape (m,)
        Window of each spot.
    ky, kx : ndarray, shape (m,)
        Starting positions [FFT px from the DC].

    Returns
    -------
    (ky, kx) : ndarrays, shape (m,)
        Refined positions [FFT px].
    """
    w = windows.shape[-1]
    hann = hann_2d(w).astype(np.float64)
    x = np.arange(w, dtype=np.float64)
    out_y = ky.astype(float).copy()
    out_x = kx.astype(float).copy()
    offs = np.array([-step, 0.0, step])
    order = np.argsort(win_idx, kind="stable")
    bounds = np.flatnonzero(np.diff(win_idx[order])) + 1
    for group in np.split(order, bounds):
        if group.size == 0:
            continue
        xw = windows[win_idx[group[0]]].astype(np.float64)
        xw = (xw - xw.mean()) * hann
        ty = 2.0 * np.pi * (ky[group][:, None] + offs[None, :])[:, :, None] * x / w  # (c, 3, w)
        tx = 2.0 * np.pi * (kx[group][:, None] + offs[None, :])[:, :, None] * x / w
        cy, sy = np.cos(ty), np.sin(ty)
        cx, sx = np.cos(tx), np.sin(tx)
        # Rows: sum_y X[y, x] exp(-i ty y) = a_re + i a_im, one real product (einsum: a small
        # product is much slower through a multi-threaded BLAS on a busy machine).
        a = np.einsum("ky,yx->kx", np.concatenate([cy, sy], axis=0).reshape(-1, w), xw)
        a_re = a[: group.size * 3].reshape(group.size, 3, w)
        a_im = -a[group.size * 3 :].reshape(group.size, 3, w)
        # Columns: sum_x (a_re + i a_im) exp(-i tx x).
        f_re = np.einsum("cay,cby->cab", a_re, cx) + np.einsum("cay,cby->cab", a_im, sx)
        f_im = np.einsum("cay,cby->cab", a_im, cx) - np.einsum("cay,cby->cab", a_re, sx)
        f = np.hypot(f_re, f_im)
        lm = np.log(np.maximum(f, 1e-300))
        dy, dx = _parabolic_offset(lm, hann_correct=False)
        out_y[group] += dy * step
        out_x[group] += dx * step
    return out_y, out_x


# --------------------------------------------------------------------------------------------
# Mask -> pairs
# --------------------------------------------------------------------------------------------


def pairs_from_mask(
    mask: np.ndarray,
    magnitude: np.ndarray,
    geometry: BandGeometry,
    *,
    pixel_size_nm: tuple[float, float] | float,
    window: np.ndarray | None = None,
    min_l_px: float = 2.0,
) -> tuple[SpotPair, ...]:
    """Friedel pairs of Bragg spots in one window, from a spot mask on the band grid.

    Parameters
    ----------
    mask : ndarray of bool, shape (S, S)
        Spot mask on the band grid of ``geometry`` (U-Net output or :func:`classical_masks`).
    magnitude : ndarray, shape (w, w)
        Fftshifted ``|F|`` of the window (:func:`~hrtem_core.windows.window_spectra`).
    geometry : BandGeometry
        Band geometry of the mask.
    pixel_size_nm : float or (float, float), keyword-only
        ``(p_y, p_x)`` [nm/px].
    window : ndarray, shape (w, w), optional, keyword-only
        The real-space window; when given, positions are refined by a local DFT (finer than the
        FFT grid).
    min_l_px : float, keyword-only
        Spots closer than this to the DC [FFT px] are ignored (the DC and its leakage).

    Returns
    -------
    tuple of SpotPair
        One per lattice plane set, strongest first; harmonics are folded into
        ``harmonic_orders`` of their fundamental.
    """
    mask = np.asarray(mask, dtype=bool)
    magnitude = np.asarray(magnitude)
    if mask.ndim != 2 or magnitude.ndim != 2:
        raise AnalysisParameterError(
            f"expected a 2-D mask and a 2-D magnitude, got {mask.shape} and {magnitude.shape}"
        )
    windows = None if window is None else np.asarray(window)[None]
    return pairs_from_masks(
        mask[None],
        magnitude[None],
        geometry,
        pixel_size_nm=pixel_size_nm,
        windows=windows,
        min_l_px=min_l_px,
    )[0]


def pairs_from_masks(
    masks: np.ndarray,
    magnitudes: np.ndarray,
    geometry: BandGeometry,
    *,
    pixel_size_nm: tuple[float, float] | float,
    windows: np.ndarray | None = None,
    min_l_px: float = 2.0,
    logits: np.ndarray | None = None,
) -> list[tuple[SpotPair, ...]]:
    """Batched :func:`pairs_from_mask`: one labelling and one vectorized refinement for all windows.

    Parameters
    ----------
    masks : ndarray of bool, shape (n, S, S)
    magnitudes : ndarray, shape (n, w, w) or (n, 2 radius_y + 1, 2 radius_x + 1)
        Fftshifted ``|F|`` of each window, or its centred band (:func:`band_magnitudes`); the DC
        is at ``shape // 2``.
    geometry : BandGeometry
    pixel_size_nm : float or (float, float), keyword-only
    windows : ndarray, shape (n, w, w), optional, keyword-only
        Real-space windows for the local-DFT refinement.
    min_l_px : float, keyword-only
    logits : ndarray, shape (n, S, S), optional, keyword-only
        The U-Net's logits behind the masks: a component with several logit peaks (two spots
        whose disks touch) is split between them (:func:`split_at_peaks`).

    Returns
    -------
    list of tuple of SpotPair
        One tuple per window.
    """
    py, px = _pixel_pair(pixel_size_nm)
    masks = np.asarray(masks, dtype=bool)
    magnitudes = np.asarray(magnitudes)
    if masks.ndim != 3 or magnitudes.ndim != 3:
        raise AnalysisParameterError(
            f"expected masks (n, S, S) and magnitudes (n, w, w), got {masks.shape} and "
            f"{magnitudes.shape}"
        )
    n = magnitudes.shape[0]
    if masks.shape[0] != n:
        raise AnalysisParameterError(
            f"{masks.shape[0]} masks for {n} spectra: one mask per window is expected"
        )
    _check_magnitudes(magnitudes, geometry, windows)
    if masks.shape[1:] != (geometry.size, geometry.size):
        raise AnalysisParameterError(
            f"mask of shape {masks.shape[1:]} does not match the {geometry.size} x "
            f"{geometry.size} band grid"
        )
    windows = None if windows is None else np.asarray(windows)
    min_l = float(min_l_px)
    if not masks.any():
        return [() for _ in range(n)]

    # 1. Connected components, never across windows; 2. local maxima of |F| in their footprint.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, _ = ndi.label(masks, structure=structure)
    if logits is not None:
        if np.shape(logits) != masks.shape:
            raise AnalysisParameterError(
                f"logits of shape {np.shape(logits)} do not match the masks {masks.shape}"
            )
        labels = split_at_peaks(labels, np.asarray(logits))
    win, ky, kx = _component_seeds(labels, magnitudes, geometry, min_l=min_l)
    ones = np.ones(win.size, dtype=np.intp)
    return _pairs_from_seeds(
        magnitudes, geometry, (py, px), win, ky, kx, ones, ones, windows=windows, min_l=min_l
    )


def split_at_peaks(
    labels: np.ndarray, score: np.ndarray, *, min_distance_px: int = 2
) -> np.ndarray:
    """Split labelled components at the local maxima of a score map (e.g. U-Net logits).

    A peak is a component pixel whose score is the largest within ``min_distance_px`` band pixels
    (a (2 d + 1)^2 square, component pixels only). Every pixel of a component goes to its nearest
    peak of that component (a Voronoi split of the component); a component with one peak is
    unchanged.

    Parameters
    ----------
    labels : ndarray of int, shape (n, S, S)
        Components (0 = background), unique across windows (``scipy.ndimage.label`` of the stack
        with no connectivity between windows).
    score : ndarray, shape (n, S, S)
    min_distance_px : int, keyword-only
        Smallest distance between two peaks [band px].

    Returns
    -------
    ndarray of int, shape (n, S, S)
        New labels (0 = background), one per peak.
    """
    wi, rr, cc = np.nonzero(labels)
    if wi.size == 0:
        return labels
    lab = labels[wi, rr, cc]
    d = int(min_distance_px)
    masked = np.where(labels > 0, score, -np.inf)
    o = np.arange(-d, d + 1)
    n_y, n_x = labels.shape[1:]
    yy = np.clip(rr[:, None] + o[None, :], 0, n_y - 1)
    xx = np.clip(cc[:, None] + o[None, :], 0, n_x - 1)
    # Only pixels of the same component compete (another component may lie within d).
    vals = masked[wi[:, None, None], yy[:, :, None], xx[:, None, :]]
    same = labels[wi[:, None, None], yy[:, :, None], xx[:, None, :]] == lab[:, None, None]
    vals = np.where(same, vals, -np.inf).reshape(wi.size, -1)
    is_peak = masked[wi, rr, cc] >= vals.max(axis=1)
    n_peaks = np.bincount(lab[is_peak], minlength=int(labels.max()) + 1)
    if (n_peaks[lab] <= 1).all():
        return labels
    from scipy.spatial import cKDTree

    big = 4.0 * (n_y + n_x)  # separates components in the tree
    pts = np.column_stack([lab * big, rr, cc]).astype(np.float64)
    tree = cKDTree(pts[is_peak])
    _, nearest = tree.query(pts, k=1)
    out = np.zeros_like(labels)
    out[wi, rr, cc] = nearest.astype(labels.dtype) + 1
    return out


def _component_seeds(
    labels: np.ndarray,
    magnitudes: np.ndarray,
    geometry: BandGeometry,
    *,
    min_l: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The integer FFT peak of each labelled mask component.

    The footprint of a component on the FFT grid is every FFT pixel whose nearest band pixel
    belongs to it, plus the FFT pixel nearest to each of its band pixels (so a component still
    has a footprint where the band is finer than the FFT). A component with no local maximum in
    its footprint gives no seed (growing the footprint by a pixel recovered a few masks drawn off
    the peak but let in more false alarms on the held-out set). The seed is the strongest 3 x 3
    local maximum of ``|F|`` in the footprint (not on the band's outermost row or column, at
    least ``min_l`` FFT px from the DC). Searching the footprint, not a box around it, keeps the
    skirt of a stronger neighbour from being taken for the component's peak. Secondary maxima
    are not used: on the held-out set, keeping those above 30 % of the strongest split a few
    merged spots but added four times as many false spots (noise maxima in large components).

    Parameters
    ----------
    labels : ndarray of int, shape (n, S, S)
        Component labels on the band grid (0 = background), never shared between windows.
    magnitudes : ndarray, shape (n, ny, nx)
        Fftshifted ``|F|`` (whole spectrum or its band), DC at ``shape // 2``.
    geometry : BandGeometry
    min_l : float, keyword-only
        Smallest distance from the DC [FFT px].

    Returns
    -------
    win, ky, kx : ndarray of int, shape (m,)
        Window index and peak offsets from the DC [FFT px].
    """
    empty = np.zeros(0, dtype=np.intp)
    wi, rr, cc = np.nonzero(labels)
    if wi.size == 0:
        return empty, empty, empty
    lab = labels[wi, rr, cc]
    ry, rx = geometry.radius_y, geometry.radius_x
    s = geometry.size
    c0 = (s - 1) / 2.0

    def span(r: np.ndarray, scale: float, radius: int) -> tuple[np.ndarray, np.ndarray]:
        # FFT offsets k whose nearest band index rint(c0 + k scale) is r, plus the one nearest r.
        n_off = math.ceil(1.0 / scale) + 2
        lo = np.floor((r - 0.5 - c0) / scale).astype(np.intp)
        k = lo[:, None] + np.arange(n_off)[None, :]
        ok = (np.rint(c0 + k * scale) == r[:, None]) & (np.abs(k) <= radius)
        nearest = np.clip(np.rint((r - c0) / scale).astype(np.intp), -radius, radius)
        k = np.concatenate([k, nearest[:, None]], axis=1)
        ok = np.concatenate([ok, np.ones((r.size, 1), dtype=bool)], axis=1)
        return k, ok

    ky, oky = span(rr, geometry.scale_y, ry)
    kx, okx = span(cc, geometry.scale_x, rx)
    idx, jy, jx = np.nonzero(oky[:, :, None] & okx[:, None, :])
    s_win, s_lab = wi[idx], lab[idx]
    s_ky, s_kx = ky[idx, jy], kx[idx, jx]
    # Interior of the band, away from the DC.
    keep = (
        (np.abs(s_ky) <= ry - 1)
        & (np.abs(s_kx) <= rx - 1)
        & (s_ky.astype(float) ** 2 + s_kx.astype(float) ** 2 >= min_l * min_l)
    )
    s_win, s_lab, s_ky, s_kx = s_win[keep], s_lab[keep], s_ky[keep], s_kx[keep]
    if s_win.size == 0:
        return empty, empty, empty
    ny, nx = magnitudes.shape[1:]
    cy, cx = ny // 2, nx // 2
    # One entry per (component, FFT pixel); labels are unique across windows.
    key = (s_lab.astype(np.int64) * ny + (s_ky + cy)) * nx + (s_kx + cx)
    _, first = np.unique(key, return_index=True)
    s_win, s_lab, s_ky, s_kx = s_win[first], s_lab[first], s_ky[first], s_kx[first]
    is_max = _is_local_max(magnitudes, s_win, cy + s_ky, cx + s_kx)
    s_win, s_lab, s_ky, s_kx = s_win[is_max], s_lab[is_max], s_ky[is_max], s_kx[is_max]
    if s_win.size == 0:
        return empty, empty, empty
    mag = magnitudes[s_win, cy + s_ky, cx + s_kx].astype(np.float64)
    best = np.zeros(int(labels.max()) + 1)
    np.maximum.at(best, s_lab, mag)
    strongest = mag >= best[s_lab]
    return s_win[strongest], s_ky[strongest], s_kx[strongest]


def pairs_from_peaks(
    peaks: np.ndarray,
    magnitudes: np.ndarray,
    geometry: BandGeometry,
    *,
    pixel_size_nm: tuple[float, float] | float,
    windows: np.ndarray | None = None,
    min_l_px: float = 2.0,
) -> list[tuple[SpotPair, ...]]:
    """Like :func:`pairs_from_masks`, from integer peak positions instead of mask components.

    Used by the classical detector (its peaks are known at FFT resolution, so two spots closer
    than a band pixel stay apart). Each peak seeds a search of +-1 FFT px.

    Parameters
    ----------
    peaks : ndarray of int, shape (P, 3)
        ``[window, ky, kx]`` (FFT px from the DC), e.g. from ``classical_masks(...,
        return_peaks=True)``.
    magnitudes, geometry, pixel_size_nm, windows, min_l_px
        As for :func:`pairs_from_masks`.
    """
    py, px = _pixel_pair(pixel_size_nm)
    magnitudes = np.asarray(magnitudes)
    _check_magnitudes(magnitudes, geometry, windows)
    peaks = np.asarray(peaks, dtype=np.intp).reshape(-1, 3)
    if peaks.size and (peaks[:, 0].min() < 0 or peaks[:, 0].max() >= magnitudes.shape[0]):
        raise AnalysisParameterError("peak window index out of range of the spectra")
    ones = np.ones(len(peaks), dtype=np.intp)
    return _pairs_from_seeds(
        magnitudes,
        geometry,
        (py, px),
        peaks[:, 0],
        peaks[:, 1],
        peaks[:, 2],
        ones,
        ones,
        windows=None if windows is None else np.asarray(windows),
        min_l=float(min_l_px),
    )


def _check_magnitudes(
    magnitudes: np.ndarray, geometry: BandGeometry, windows: np.ndarray | None
) -> None:
    """Validate (n, w, w) spectra or (n, 2 ry + 1, 2 rx + 1) bands, and optional windows."""
    w = geometry.window_px
    band_shape = (2 * geometry.radius_y + 1, 2 * geometry.radius_x + 1)
    if magnitudes.ndim != 3 or magnitudes.shape[1:] not in ((w, w), band_shape):
        raise AnalysisParameterError(
            f"spectra of shape {magnitudes.shape[1:]} match neither a {w} px window nor its "
            f"{band_shape[0]} x {band_shape[1]} px band"
        )
    if windows is not None and np.shape(windows) != (magnitudes.shape[0], w, w):
        raise AnalysisParameterError(
            f"windows of shape {np.shape(windows)} do not match {magnitudes.shape[0]} spectra "
            f"of a {w} px window"
        )


def _pairs_from_seeds(
    magnitudes: np.ndarray,
    geometry: BandGeometry,
    pixel_size_nm: tuple[float, float],
    comp_win: np.ndarray,
    iy0: np.ndarray,
    ix0: np.ndarray,
    hy: np.ndarray,
    hx: np.ndarray,
    *,
    windows: np.ndarray | None,
    min_l: float,
) -> list[tuple[SpotPair, ...]]:
    """Search boxes (window, centre iy0/ix0 [FFT px from the DC], half-widths hy/hx) -> pairs."""
    py, px = pixel_size_nm
    n = magnitudes.shape[0]
    w = geometry.window_px
    ny, nx = magnitudes.shape[1:]
    cy, cx = ny // 2, nx // 2
    result: list[tuple[SpotPair, ...]] = [() for _ in range(n)]
    n_comp = comp_win.size
    if n_comp == 0:
        return result
    h = int(max(hy.max(), hx.max()))
    o = np.arange(-h, h + 1)
    yy = cy + iy0[:, None] + o[None, :]  # (m, 2h+1) spectrum rows
    xx = cx + ix0[:, None] + o[None, :]
    ok_y = (np.abs(o)[None, :] <= hy[:, None]) & (yy >= 0) & (yy < ny)
    ok_x = (np.abs(o)[None, :] <= hx[:, None]) & (xx >= 0) & (xx < nx)
    patch = magnitudes[
        comp_win[:, None, None],
        np.clip(yy, 0, ny - 1)[:, :, None],
        np.clip(xx, 0, nx - 1)[:, None, :],
    ].astype(np.float64)
    dist2 = (yy - cy)[:, :, None] ** 2 + (xx - cx)[:, None, :] ** 2
    # Peaks on the outermost row/column of the band cannot be checked as local maxima or refined
    # (a spot just outside the band, finer than d_min, would show there as an edge "peak").
    ok_y &= np.abs(yy - cy) <= geometry.radius_y - 1
    ok_x &= np.abs(xx - cx) <= geometry.radius_x - 1
    valid = ok_y[:, :, None] & ok_x[:, None, :] & (dist2 >= min_l * min_l)
    patch = np.where(valid, patch, -np.inf)
    flat = patch.reshape(n_comp, -1)
    best = np.argmax(flat, axis=1)
    has_peak = np.isfinite(flat[np.arange(n_comp), best])
    side = 2 * h + 1
    pky = iy0 + o[best // side]  # integer peak offsets from the DC
    pkx = ix0 + o[best % side]

    # 3. The maximum must be a local maximum of |F| (3 x 3), not a slope.
    is_max = has_peak & _is_local_max(magnitudes, comp_win, cy + pky, cx + pkx)
    comp_win, pky, pkx = comp_win[is_max], pky[is_max], pkx[is_max]
    if comp_win.size == 0:
        return result

    # 4. Friedel pairs: canonical half plane, one candidate per (window, peak).
    flip = (pky > 0) | ((pky == 0) & (pkx < 0))
    cky = np.where(flip, -pky, pky)
    ckx = np.where(flip, -pkx, pkx)
    key = (comp_win.astype(np.int64) * ny + (cky + cy)) * nx + (ckx + cx)
    ukey, inv = np.unique(key, return_inverse=True)
    n_cand = ukey.size
    seen_pos = np.bincount(inv, weights=(~flip).astype(float), minlength=n_cand) > 0
    seen_neg = np.bincount(inv, weights=flip.astype(float), minlength=n_cand) > 0
    cand_win = (ukey // (ny * nx)).astype(np.intp)
    cand_ky = (ukey // nx % ny - cy).astype(np.intp)
    cand_kx = (ukey % nx - cx).astype(np.intp)
    both = seen_pos & seen_neg
    # A missing mate is accepted if |F(-k)| is an equally strong local maximum.
    m_plus = magnitudes[cand_win, cy + cand_ky, cx + cand_kx].astype(np.float64)
    in_range = (cy - cand_ky >= 0) & (cy - cand_ky < ny) & (cx - cand_kx >= 0) & (cx - cand_kx < nx)
    mate_y = np.clip(cy - cand_ky, 0, ny - 1)
    mate_x = np.clip(cx - cand_kx, 0, nx - 1)
    m_minus = magnitudes[cand_win, mate_y, mate_x].astype(np.float64)
    ratio_ok = np.abs(m_minus - m_plus) <= _MATE_RATIO_TOL * np.maximum(m_plus, 1e-30)
    mate_ok = in_range & ratio_ok & _is_local_max(magnitudes, cand_win, mate_y, mate_x)
    keep = both | mate_ok
    cand_win, cand_ky, cand_kx, m_plus = (
        cand_win[keep],
        cand_ky[keep],
        cand_kx[keep],
        m_plus[keep],
    )
    if cand_win.size == 0:
        return result

    # 5. Sub-pixel refinement.
    lm = np.log(np.maximum(_gather(magnitudes, cand_win, cy + cand_ky, cx + cand_kx, 1), 1e-30))
    dy, dx = _parabolic_offset(lm, hann_correct=True)
    ky = cand_ky + dy
    kx = cand_kx + dx
    if windows is not None:
        ky, kx = _refine_dft(windows, cand_win, ky, kx)
    # Canonical orientation after refinement (only pairs on the ky = 0 axis can flip).
    flip = (ky > 0) | ((ky == 0) & (kx < 0))
    ky = np.where(flip, -ky, ky)
    kx = np.where(flip, -kx, kx)
    l_px = np.hypot(ky, kx)
    keep = l_px >= min_l
    if not keep.all():
        cand_win, cand_ky, cand_kx, m_plus = (
            cand_win[keep],
            cand_ky[keep],
            cand_kx[keep],
            m_plus[keep],
        )
        ky, kx, l_px = ky[keep], kx[keep], l_px[keep]
    if cand_win.size == 0:
        return result

    # 6. Local background and SNR.
    ring_vals = _local_ring(magnitudes, cand_win, cy + cand_ky, cx + cand_kx)
    bg = row_median(ring_vals)
    spread = 1.4826 * row_median(np.abs(ring_vals - bg[:, None]))
    intensity = m_plus - bg
    snr = intensity / np.maximum(spread, 1e-12 * np.maximum(np.abs(bg), 1e-30))

    # 6b. Significance: only a peak that stands out of the noise at the window's false-alarm
    # rate is a lattice plane (a flat, noisy or amorphous region yields none).
    z, n_searched = spot_significance(
        magnitudes,
        cand_win,
        cand_ky,
        cand_kx,
        pixel_size_nm=pixel_size_nm,
        radius_px=(geometry.radius_y, geometry.radius_x),
        min_l_px=min_l,
        local_median=bg,
    )
    keep = z >= significance_threshold(n_searched)
    if not keep.all():
        cand_win, ky, kx, l_px = cand_win[keep], ky[keep], kx[keep], l_px[keep]
        intensity, snr, z = intensity[keep], snr[keep], z[keep]
    if cand_win.size == 0:
        return result
    sigma_l = position_sigma_px(z)

    # 7. Physical quantities.
    gy = ky / (w * py)
    gx = kx / (w * px)
    freq = np.hypot(gy, gx)
    angle = np.degrees(np.arctan2(-gy, gx)) % 180.0
    angle = np.where(angle >= 180.0, 0.0, angle)

    # 8. Per window: harmonics, order, SpotPair objects.
    order = np.lexsort((angle, l_px, -intensity, cand_win))
    bounds = np.flatnonzero(np.diff(cand_win[order])) + 1
    for group in np.split(order, bounds):
        harmonic_of = _harmonics(ky[group], kx[group], l_px[group], intensity[group])
        orders: dict[int, list[int]] = {}
        for i, n_ord in harmonic_of:
            if i >= 0:
                orders.setdefault(i, []).append(n_ord)
        pairs = []
        for j, idx in enumerate(group):
            if harmonic_of[j][0] >= 0:
                continue
            pairs.append(
                SpotPair(
                    ky=float(ky[idx]),
                    kx=float(kx[idx]),
                    l_px=float(l_px[idx]),
                    gy_nm_inv=float(gy[idx]),
                    gx_nm_inv=float(gx[idx]),
                    frequency_nm_inv=float(freq[idx]),
                    spacing_nm=float(1.0 / freq[idx]),
                    angle_deg=float(angle[idx]),
                    intensity=float(intensity[idx]),
                    snr=float(snr[idx]),
                    harmonic_orders=tuple(sorted(set(orders.get(j, ())))),
                    significance=float(z[idx]),
                    sigma_l_px=float(sigma_l[idx]),
                )
            )
        result[int(cand_win[group[0]])] = tuple(pairs)
    return result


def _gather(
    stack: np.ndarray, win: np.ndarray, y: np.ndarray, x: np.ndarray, half: int
) -> np.ndarray:
    """(m, 2 half + 1, 2 half + 1) float64 patches of ``stack[win]`` around (y, x), edge-clamped."""
    o = np.arange(-half, half + 1)
    n_y, n_x = stack.shape[-2:]
    yy = np.clip(y[:, None] + o[None, :], 0, n_y - 1)
    xx = np.clip(x[:, None] + o[None, :], 0, n_x - 1)
    return stack[win[:, None, None], yy[:, :, None], xx[:, None, :]].astype(np.float64)


def _local_ring(stack: np.ndarray, win: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(m, 96) float64 values of the local background ring around (y, x): the 11 x 11 patch
    without its central 5 x 5."""
    ring = np.ones((2 * _BG_HALF_PX + 1,) * 2, dtype=bool)
    inner = slice(_BG_HALF_PX - _BG_INNER_PX, _BG_HALF_PX + _BG_INNER_PX + 1)
    ring[inner, inner] = False
    return _gather(stack, win, y, x, _BG_HALF_PX)[:, ring]


def _is_local_max(stack: np.ndarray, win: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """True where ``stack[win, y, x]`` is >= its 8 neighbours (neighbours outside are ignored)."""
    o = np.array([-1, 0, 1])
    n_y, n_x = stack.shape[-2:]
    yy = y[:, None] + o[None, :]
    xx = x[:, None] + o[None, :]
    inside = ((yy >= 0) & (yy < n_y))[:, :, None] & ((xx >= 0) & (xx < n_x))[:, None, :]
    vals = stack[
        win[:, None, None], np.clip(yy, 0, n_y - 1)[:, :, None], np.clip(xx, 0, n_x - 1)[:, None, :]
    ]
    vals = np.where(inside, vals, -np.inf)
    return vals[:, 1, 1] >= vals.reshape(len(win), -1).max(axis=1)


def _harmonics(
    ky: np.ndarray, kx: np.ndarray, l_px: np.ndarray, intensity: np.ndarray
) -> list[tuple[int, int]]:
    """For each pair of one window, ``(fundamental index, order)`` if it is a harmonic, else (-1, 0).

    Pair j is the harmonic n of pair i when ``|k_j - n k_i| <= 0.5 + 0.015 n l_i`` FFT px and pair
    i is stronger. Both are canonical, so ``n k_i`` is canonical as well. The strongest
    fundamental claims first; a harmonic never claims further harmonics.
    """
    m = ky.size
    out = [(-1, 0)] * m
    if m < 2:
        return out
    for i in np.argsort(-intensity, kind="stable"):
        if out[i][0] >= 0:
            continue
        for n_ord in HARMONIC_ORDERS:
            tol = 0.5 + 0.015 * n_ord * l_px[i]
            d = np.hypot(ky - n_ord * ky[i], kx - n_ord * kx[i])
            for j in np.flatnonzero((d <= tol) & (intensity < intensity[i])):
                if out[j][0] < 0 and j != i:
                    out[j] = (int(i), n_ord)
    return out


# --------------------------------------------------------------------------------------------
# Classical detector
# --------------------------------------------------------------------------------------------


def _radial_bins(geometry: BandGeometry, pixel_size_nm: tuple[float, float]) -> np.ndarray:
    """Integer radius [FFT px along y] of each band pixel, shape (2 ry + 1, 2 rx + 1).

    Radius in physical frequency, ``|g| w p_y = sqrt(ky^2 + (kx p_y / p_x)^2)``, so the rings of an
    isotropic background fall in one bin even with non-square pixels.
    """
    py, px = pixel_size_nm
    ky = np.arange(-geometry.radius_y, geometry.radius_y + 1, dtype=float)
    kx = np.arange(-geometry.radius_x, geometry.radius_x + 1, dtype=float) * (py / px)
    return np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.intp)


def classical_masks(
    spectra: np.ndarray,
    geometry: BandGeometry,
    *,
    pixel_size_nm: tuple[float, float] | float | None = None,
    threshold: float = CLASSICAL_THRESHOLD,
    min_l_px: float = 2.0,
    disk_radius_px: float = 1.0,
    smooth_px: int = 3,
    return_peaks: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Classical spot detector: peaks of the background-subtracted log-spectrum, as band masks.

    For each window: ``L = log |F|`` over the band; the background is the median of L over rings
    of equal spatial frequency (this removes the Thon rings of amorphous carbon and the smooth
    fall-off of the spectrum); the residual is divided by its robust spread (1.4826 MAD over the
    band); local maxima (3 x 3, ``skimage.feature.peak_local_max`` on the whole stack) above
    ``threshold`` are spots. The spread of ``log |F|`` of speckle (noise, amorphous) is fixed
    (log-Rayleigh) with a light upper tail, so a fixed threshold gives no spots on noise.

    Parameters
    ----------
    spectra : ndarray, shape (n, w, w) or (n, 2 radius_y + 1, 2 radius_x + 1)
        Fftshifted ``|F|`` from :func:`~hrtem_core.windows.window_spectra`, or only its band
        (:func:`~hrtem_core.windows.band_spectra`).
    geometry : BandGeometry
        Band geometry (the mask grid).
    pixel_size_nm : float or (float, float) or None, keyword-only
        ``(p_y, p_x)`` [nm/px]; only the ratio matters (rings with non-square pixels). Default:
        square pixels.
    threshold : float, keyword-only
        Detection threshold [robust standard deviations of the residual log-magnitude].
    min_l_px : float, keyword-only
        No spots closer than this to the DC [FFT px].
    disk_radius_px : float, keyword-only
        Radius of the disk drawn at each peak [band px].
    smooth_px : int, keyword-only
        Side of the box over which the power ``|F|^2`` is summed before the log (default 3: a
        Hann-apodized spot spreads over about 3 x 3 FFT pixels, noise is averaged); 1 = none.
    return_peaks : bool, keyword-only
        Also return the peaks, (P, 3) int ``[window, ky, kx]`` (FFT px from the DC).

    Returns
    -------
    ndarray of bool, shape (n, S, S)
        Spot masks on the band grid; with ``return_peaks`` a tuple ``(masks, peaks)``.
    """
    spectra = np.asarray(spectra)
    w = geometry.window_px
    band_shape = (2 * geometry.radius_y + 1, 2 * geometry.radius_x + 1)
    if spectra.ndim != 3 or spectra.shape[1:] not in ((w, w), band_shape):
        raise AnalysisParameterError(
            f"spectra of shape {spectra.shape} match neither (n, {w}, {w}) spectra nor their "
            f"(n, {band_shape[0]}, {band_shape[1]}) band"
        )
    if not (math.isfinite(threshold) and threshold > 0):
        raise AnalysisParameterError(f"detection threshold must be > 0, got {threshold!r}")
    p = (1.0, 1.0) if pixel_size_nm is None else _pixel_pair(pixel_size_nm)
    n = spectra.shape[0]
    size = geometry.size
    masks = np.zeros((n, size, size), dtype=bool)
    peaks = np.zeros((0, 3), dtype=np.intp)
    if n == 0:
        return (masks, peaks) if return_peaks else masks

    ry, rx = geometry.radius_y, geometry.radius_x
    band = spectra if spectra.shape[1:] == band_shape else crop_band(spectra, geometry)
    band = band.astype(np.float32, copy=True)
    if smooth_px > 1:
        # Local power: a Hann-apodized spot spreads over about 3 x 3 FFT pixels.
        band = np.square(band, out=band)
        band = ndi.uniform_filter(band, size=(1, int(smooth_px), int(smooth_px)), mode="nearest")
        band = np.sqrt(np.maximum(band, 0.0, out=band), out=band)
    rbin = _radial_bins(geometry, p)
    ky = np.arange(-ry, ry + 1, dtype=float)[:, None]
    kx = np.arange(-rx, rx + 1, dtype=float)[None, :]
    r_max = min(ry, rx * p[0] / p[1])
    usable = ((ky**2 + kx**2) >= float(min_l_px) ** 2) & (rbin <= r_max)
    uidx = np.flatnonzero(usable.ravel())
    if uidx.size == 0:
        return (masks, peaks) if return_peaks else masks
    # Work on the usable pixels only: (n, U).
    logu = np.log(np.maximum(band.reshape(n, -1)[:, uidx], np.float32(1e-30)))
    ubin = rbin.ravel()[uidx]
    _, ubin = np.unique(ubin, return_inverse=True)
    n_bins = int(ubin.max()) + 1
    # One bin index per (window, ring): sums over the rings of all windows in one bincount.
    wbin = (np.arange(n, dtype=np.intp)[:, None] * n_bins + ubin[None, :]).ravel()

    def ring_sums(values: np.ndarray) -> np.ndarray:
        sums = np.bincount(wbin, weights=values.ravel(), minlength=n * n_bins)
        return sums.reshape(n, n_bins)

    # Radial background: mean of log |F| over each ring of equal |g|, recomputed without the
    # outliers (spots) of the first pass.
    ring_count = np.bincount(ubin, minlength=n_bins).astype(float)
    ring_mean = ring_sums(logu) / ring_count
    resid = logu - ring_mean[:, ubin].astype(np.float32)
    med, mad = _robust_spread(resid)
    keep = ((resid - med[:, None]) <= 3.0 * mad[:, None]).astype(np.float32)
    count = ring_sums(keep)
    ring_mean = np.where(count > 0, ring_sums(logu * keep) / np.maximum(count, 1.0), ring_mean)
    resid = logu - ring_mean[:, ubin].astype(np.float32)
    med, mad = _robust_spread(resid)
    z = (resid - med[:, None]) / mad[:, None]
    # Local maxima (3 x 3) above the threshold, as skimage.feature.peak_local_max(z_band,
    # footprint=3 x 3, threshold_abs=threshold, exclude_border=False) per window, but checked only
    # at the few pixels above the threshold.
    cw, cu = np.nonzero(z > threshold)
    if cw.size == 0:
        return (masks, peaks) if return_peaks else masks
    cz = z[cw, cu]
    lookup = np.full(usable.size, -1, dtype=np.intp)
    lookup[uidx] = np.arange(uidx.size)
    hy, hx = band_shape
    crow, ccol = np.divmod(uidx[cu], hx)
    is_peak = np.ones(cw.size, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nr, nc = crow + dy, ccol + dx
            inside = (nr >= 0) & (nr < hy) & (nc >= 0) & (nc < hx)
            nu = lookup[np.where(inside, nr * hx + nc, 0)]
            nz = np.where(inside & (nu >= 0), z[cw, np.maximum(nu, 0)], -np.inf)
            is_peak &= cz >= nz
    found = np.stack([cw[is_peak], crow[is_peak], ccol[is_peak]], axis=1)
    if found.size == 0:
        return (masks, peaks) if return_peaks else masks
    found = found[np.lexsort((found[:, 2], found[:, 1], found[:, 0]))]
    pw = found[:, 0].astype(np.intp)
    pky = found[:, 1] - ry
    pkx = found[:, 2] - rx
    peaks = np.stack([pw, pky, pkx], axis=1).astype(np.intp)
    draw_disks(masks, pw, *geometry.to_band(pky, pkx), radius_px=disk_radius_px)
    return (masks, peaks) if return_peaks else masks


def _robust_spread(x: np.ndarray, *, step: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Per-row median and 1.4826 MAD of (n, U) values, from every ``step``-th value (fast)."""
    sample = x[:, ::step] if x.shape[1] >= 64 * step else x
    med = row_median(sample)
    mad = 1.4826 * row_median(np.abs(sample - med[:, None]))
    return med, np.maximum(mad, 1e-6)


def draw_disks(
    masks: np.ndarray,
    win: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    *,
    radius_px: float = 1.5,
) -> np.ndarray:
    """Set disks of ``radius_px`` band pixels around sub-pixel (row, col) in ``masks[win]``.

    At least the nearest pixel is always set. Modifies and returns ``masks`` (n, S, S) bool.
    """
    win = np.asarray(win, dtype=np.intp)
    row = np.asarray(row, dtype=float)
    col = np.asarray(col, dtype=float)
    size_y, size_x = masks.shape[-2:]
    r = max(float(radius_px), 0.0)
    hr = math.ceil(r) + 1
    o = np.arange(-hr, hr + 1)
    r0 = np.rint(row).astype(np.intp)
    c0 = np.rint(col).astype(np.intp)
    yy = r0[:, None, None] + o[None, :, None]
    xx = c0[:, None, None] + o[None, None, :]
    inside = (yy - row[:, None, None]) ** 2 + (xx - col[:, None, None]) ** 2 <= r * r
    inside |= (o[:, None] == 0) & (o[None, :] == 0)
    inside &= (yy >= 0) & (yy < size_y) & (xx >= 0) & (xx < size_x)
    ww = np.broadcast_to(win[:, None, None], inside.shape)
    yb = np.broadcast_to(yy, inside.shape)
    xb = np.broadcast_to(xx, inside.shape)
    masks[ww[inside], yb[inside], xb[inside]] = True
    return masks


# --------------------------------------------------------------------------------------------
# Batched detection
# --------------------------------------------------------------------------------------------


def _n_threads(workers: int, n_chunks: int) -> int:
    """Threads for the chunks of :func:`detect_pairs`: ``workers``, or the available cores (-1)."""
    if workers is None or workers < 1:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            workers = os.cpu_count() or 1
        workers = min(workers, 8)
    return max(1, min(int(workers), n_chunks))


def _map_threads(fn: Any, items: list[int], n_threads: int) -> None:
    """``fn(item)`` for every item, in ``n_threads`` threads (in order, here, when 1)."""
    if n_threads <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(n_threads) as pool:
        for _ in pool.map(fn, items):
            pass


def _check_options(detector: str, refine: str, batch_size: int) -> None:
    if detector not in DETECTORS:
        raise AnalysisParameterError(
            f"unknown spot detector {detector!r}: choose one of {', '.join(DETECTORS)}"
        )
    if refine not in ("parabolic", "dft"):
        raise AnalysisParameterError(f"unknown refinement {refine!r}: choose 'parabolic' or 'dft'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AnalysisParameterError(f"batch size must be a positive integer, got {batch_size!r}")


def _detect_chunks(
    chunks: list[tuple[int, int]],
    band_of: Any,
    windows_of: Any,
    geometry: BandGeometry,
    p: tuple[float, float],
    *,
    detector: str,
    model: Any,
    refine: str,
    min_l_px: float,
    threshold: float,
    batch_size: int,
    workers: int,
) -> list[tuple[SpotPair, ...]]:
    """Spot pairs of windows ``0 .. chunks[-1][1] - 1``, chunk by chunk, chunks in threads.

    ``band_of(start, stop)`` gives the chunk's band magnitudes, ``windows_of(start, stop)`` its
    real-space windows (for ``refine="dft"`` only).
    """
    spot_model = None
    if detector == "unet":
        from hrtem_core.unet.load import load_model, predict_logits

        spot_model = load_model() if model is None else model
    found: list[tuple[SpotPair, ...]] = [()] * (chunks[-1][1] if chunks else 0)

    def run_chunk(chunk: tuple[int, int]) -> None:
        # Everything for one chunk of windows: band, (U-Net: log band, logits, masks), spot
        # pairs. Chunks run in parallel threads (scipy.fft, numpy and torch release the GIL),
        # each single-threaded: no step waits on another core, and nothing of size (n, w, w)
        # or (n, S, S) is ever held. Every step is per window, so the chunking changes nothing.
        start, stop = chunk
        band = band_of(start, stop)
        wins = windows_of(start, stop) if refine == "dft" else None
        if spot_model is None:
            # The peaks are known at FFT resolution: seed the refinement with them directly
            # (two spots closer than a band pixel would merge into one mask component).
            _, peaks = classical_masks(
                band,
                geometry,
                pixel_size_nm=p,
                threshold=threshold,
                min_l_px=min_l_px,
                return_peaks=True,
            )
            pairs = pairs_from_peaks(
                peaks, band, geometry, pixel_size_nm=p, windows=wins, min_l_px=min_l_px
            )
        else:
            logits = predict_logits(
                spot_model, log_band_from_crop(band, geometry), batch_size=batch_size, threads=1
            )
            pairs = pairs_from_masks(
                logits > 0.0,  # sigmoid > 0.5
                band,
                geometry,
                pixel_size_nm=p,
                windows=wins,
                min_l_px=min_l_px,
                logits=logits,
            )
        found[start:stop] = pairs

    n_threads = _n_threads(workers, len(chunks))
    on_gpu = getattr(getattr(spot_model, "device", None), "type", "cpu") != "cpu"
    if spot_model is not None and on_gpu:
        n_threads = 1  # one GPU stream; the CPU steps are small
    if spot_model is not None and not on_gpu and n_threads > 1:
        import torch

        before = torch.get_num_threads()  # one intra-op thread per chunk thread
        torch.set_num_threads(1)
        try:
            _map_threads(run_chunk, chunks, n_threads)
        finally:
            torch.set_num_threads(before)
    else:
        _map_threads(run_chunk, chunks, n_threads)
    return found


def detect_pairs(
    windows: np.ndarray,
    *,
    pixel_size_nm: tuple[float, float] | float,
    detector: str = "unet",
    model: Any = None,
    d_min_nm: float = 0.1,
    spectra: np.ndarray | None = None,
    refine: str = "parabolic",
    min_l_px: float = 2.0,
    threshold: float = CLASSICAL_THRESHOLD,
    batch_size: int = 64,
    workers: int = -1,
) -> list[tuple[SpotPair, ...]]:
    """Bragg-spot pairs of every window, batched.

    Per chunk of ``batch_size`` windows: the band of each window's spectrum
    (:func:`~hrtem_core.windows.band_spectra`, or ``crop_band(spectra)`` when full spectra are
    given) with ``geometry = band_geometry(w, p, d_min_nm=d_min_nm)``; masks from the detector
    (:func:`classical_masks`, or the U-Net's logits of the log band, the same input as
    :func:`~hrtem_core.windows.log_band`, thresholded at probability 0.5); then
    :func:`pairs_from_masks` (with the logits, to split touching spots). Windows cut from one
    image on a grid go faster through :func:`detect_pairs_in_image` (same result up to float32
    rounding).

    Parameters
    ----------
    windows : ndarray, shape (n, w, w) or (rows, cols, w, w)
        Real-space windows (:func:`~hrtem_core.windows.extract_windows`), or a 4-D strided view
        of the image (``sliding_window_view(image, (w, w))[::s, ::s]``), taken row-major
        (window ``i = r * cols + c``); each FFT batch copies only its own windows.
    pixel_size_nm : float or (float, float), keyword-only
        ``(p_y, p_x)`` [nm/px].
    detector : {"unet", "classical"}, keyword-only
    model : SpotModel or None, keyword-only
        For ``"unet"``; default: ``hrtem_core.unet.load.load_model()`` (default weights).
    d_min_nm : float, keyword-only
        Smallest spacing of interest [nm] (sets the band).
    spectra : ndarray, shape (n, w, w), optional, keyword-only
        Precomputed :func:`~hrtem_core.windows.window_spectra` of ``windows``.
    refine : {"parabolic", "dft"}, keyword-only
        Sub-pixel refinement: Hann-corrected parabola on the FFT magnitude (default), or a local
        DFT of the real-space windows.
    min_l_px : float, keyword-only
        Spots closer than this to the DC are ignored [FFT px].
    threshold : float, keyword-only
        Threshold of the classical detector [robust standard deviations].
    batch_size : int, keyword-only
        Windows per chunk (FFT, log band, U-Net batch and spot pairs; bounds the memory, stays
        in cache).
    workers : int, keyword-only
        Threads over which the chunks are spread, each single-threaded (-1: the available
        cores, at most 8).

    Returns
    -------
    list of tuple of SpotPair
        One tuple per window (strongest pair first).
    """
    _check_options(detector, refine, batch_size)
    p = _pixel_pair(pixel_size_nm)
    windows = np.asarray(windows)
    if windows.ndim not in (3, 4) or windows.shape[-1] != windows.shape[-2]:
        raise AnalysisParameterError(
            f"expected windows of shape (n, w, w) or (rows, cols, w, w), got {windows.shape}"
        )
    n_cols = windows.shape[1] if windows.ndim == 4 else 1
    n = windows.shape[0] * (n_cols if windows.ndim == 4 else 1)
    w = windows.shape[-1]
    geometry = band_geometry(w, p, d_min_nm=d_min_nm)

    def windows_of(start: int, stop: int) -> np.ndarray:
        if windows.ndim == 3:
            return windows[start:stop]
        idx = np.arange(start, stop)
        return windows[idx // n_cols, idx % n_cols]  # copies only this batch

    if spectra is not None:
        spectra = np.asarray(spectra)
        if spectra.shape != (n, w, w):
            raise AnalysisParameterError(
                f"spectra of shape {spectra.shape} do not match the windows {windows.shape}"
            )

        def band_of(start: int, stop: int) -> np.ndarray:
            return crop_band(spectra[start:stop], geometry)
    else:

        def band_of(start: int, stop: int) -> np.ndarray:
            return band_spectra(windows_of(start, stop), geometry, workers=1)

    chunks = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    found = _detect_chunks(
        chunks,
        band_of,
        windows_of,
        geometry,
        p,
        detector=detector,
        model=model,
        refine=refine,
        min_l_px=min_l_px,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
    )
    # A flat window holds no lattice: its spectrum is rounding residue (windows.FLAT_RELATIVE).
    for i in np.flatnonzero(_flat_stack(windows_of, chunks)):
        found[i] = ()
    return found


def _flat_stack(windows_of: Any, chunks: list[tuple[int, int]]) -> np.ndarray:
    """:func:`~hrtem_core.windows.flat_windows` for a stack of windows (float64 statistics)."""
    if not chunks:
        return np.zeros(0, dtype=bool)
    offset = float(np.mean([np.mean(windows_of(a, b), dtype=np.float64) for a, b in chunks]))
    std = []
    scale = 0.0
    for a, b in chunks:
        x = np.asarray(windows_of(a, b), dtype=np.float64) - offset
        std.append(x.reshape(len(x), -1).std(axis=1))
        scale = max(scale, float(np.max(np.abs(x))) if x.size else 0.0)
    return np.concatenate(std) <= FLAT_RELATIVE * scale


def detect_pairs_in_image(
    image: np.ndarray,
    grid: WindowGrid,
    *,
    pixel_size_nm: tuple[float, float] | float,
    rows: tuple[int, int] | None = None,
    detector: str = "unet",
    model: Any = None,
    d_min_nm: float = 0.1,
    refine: str = "parabolic",
    min_l_px: float = 2.0,
    threshold: float = CLASSICAL_THRESHOLD,
    batch_size: int = 64,
    workers: int = -1,
) -> list[tuple[SpotPair, ...]]:
    """:func:`detect_pairs` over the windows of ``grid`` (or of its rows ``r0 .. r1 - 1``).

    The same steps, but the band spectra come from
    :func:`~hrtem_core.windows.grid_band_spectra`, which shares the row transforms of
    overlapping windows (at ``s = w / 4`` about 1.5x faster than transforming each window), in
    chunks of whole grid rows (about ``2 * batch_size`` windows; the U-Net still predicts
    ``batch_size`` at a time). No window is copied out of the image except for
    ``refine="dft"``. The result equals ``detect_pairs(window_view(image, grid))`` up to
    float32 rounding of the band (about 1e-7 relative).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The image (converted to float32).
    grid : WindowGrid
        From :func:`~hrtem_core.windows.window_grid` for this image's shape.
    rows : (int, int), optional, keyword-only
        Grid rows ``r0 <= r < r1`` to analyse (default all).
    pixel_size_nm, detector, model, d_min_nm, refine, min_l_px, threshold, batch_size, workers
        As :func:`detect_pairs`.

    Returns
    -------
    list of tuple of SpotPair
        One tuple per window of the rows, row-major (window ``i = (r - r0) * n_cols + c``).
    """
    _check_options(detector, refine, batch_size)
    p = _pixel_pair(pixel_size_nm)
    img = np.asarray(image, dtype=np.float32)
    view = window_view(img, grid)  # also checks the shape
    r0, r1 = grid.row_range(rows)
    n_cols, w = grid.n_cols, grid.window_px
    geometry = band_geometry(w, p, d_min_nm=d_min_nm)
    # Chunks of whole grid rows, about 2 * batch_size windows each, as even as possible (the
    # threads take them in turn; one short chunk at the end would leave a core idle).
    n_chunks = -(-(r1 - r0) // max(1, (2 * batch_size) // n_cols))
    bounds = [(r1 - r0) * k // n_chunks for k in range(n_chunks + 1)]
    chunks = [(a * n_cols, b * n_cols) for a, b in itertools.pairwise(bounds)]

    def band_of(start: int, stop: int) -> np.ndarray:
        rows_of_chunk = (r0 + start // n_cols, r0 + stop // n_cols)
        return grid_band_spectra(img, grid, geometry, rows=rows_of_chunk, workers=1)

    def windows_of(start: int, stop: int) -> np.ndarray:
        idx = np.arange(start, stop) + r0 * n_cols
        return view[idx // n_cols, idx % n_cols]

    found = _detect_chunks(
        chunks,
        band_of,
        windows_of,
        geometry,
        p,
        detector=detector,
        model=model,
        refine=refine,
        min_l_px=min_l_px,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
    )
    # A flat window holds no lattice: its spectrum is rounding residue (windows.FLAT_RELATIVE).
    for i in np.flatnonzero(flat_windows(image, grid, rows=(r0, r1))):
        found[i] = ()
    return found


__all__ = [
    "CLASSICAL_THRESHOLD",
    "DETECTORS",
    "FALSE_ALARM_PER_WINDOW",
    "HARMONIC_ORDERS",
    "SpotPair",
    "acute_angle_deg",
    "classical_masks",
    "detect_pairs",
    "detect_pairs_in_image",
    "draw_disks",
    "pair_angles_deg",
    "pairs_from_mask",
    "pairs_from_masks",
    "pairs_from_peaks",
    "position_sigma_px",
    "significance_threshold",
    "spot_significance",
]
