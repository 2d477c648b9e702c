"""Defocus estimated from the image itself: Thon rings of the amorphous regions (CTFFIND-style).

The method (after Rohou & Grigorieff, *J. Struct. Biol.* 192 (2015) 216, "CTFFIND4"):

1. **Tiles**: the image is cut into square tiles of ``tile_px`` (half-overlapping); tiles that
   overlap the crystalline regions (``exclude``: a pixel mask, e.g. the crystalline windows'
   footprints) by more than ``max_excluded_fraction`` are left out, so lattice spots do not bias
   the rings. Where no tile is left, every tile is used and the result says so.
2. **Averaged power spectrum**: each tile minus its mean, times a 2-D Hann window, ``|FFT|^2``,
   averaged over the tiles and then over rings of ``|k|`` (astigmatism is not modelled: the
   rotational average fits the mean defocus).
3. **Background subtracted**: the ring profile is divided by its Gaussian-smoothed self
   (``sigma = 1`` 1/nm, :func:`normalise_power`) and, in the fit, a degree-4 polynomial
   background ``B(k)`` is removed jointly with the ring term (not before it: a broad pass band,
   e.g. near Scherzer focus, would otherwise be taken for background).
4. **Fit**: ``y(k) = B(k) + E(k) sin^2 chi(k; df)`` with a linear envelope ``E(k) > 0`` and the
   project's aberration function :func:`hrtem_core.optics.chi_rad`
   (``chi = pi lambda df k^2 + (pi / 2) Cs lambda^3 k^4``); for each ``df`` the polynomials are a
   linear least-squares fit, and the score is the fraction of the background-free variance the
   ring term explains (CTFFIND's score is the equivalent normalised cross-correlation). ``df``
   is scanned on a 0.5 nm grid over ``defocus_range_nm`` (both signs) and the best value refined
   by a bounded 1-D minimisation. The rings are fitted by default over
   ``1.5 <= k <= min(6, 0.75 Nyquist)`` 1/nm (the amorphous-carbon signal is strong there).

**Sign.** ``sin^2 chi`` is unchanged by ``df -> -df`` only where the ``Cs`` term is negligible
(``|df| >> Cs lambda^2 k^2``): then ``chi(-df) ~ -chi(df)``. The ``Cs lambda^3 k^4`` term breaks the
symmetry (under- and over-focus put the rings at different ``k`` at high frequency), and the scan
covers both signs, so the sign is chosen by the data; ``sign_margin`` reports how much better the
chosen sign scores than the best value of the other sign (near 0: the sign is uncertain, e.g. a
spectrum whose rings stop before the ``Cs`` term matters).

**Uncertainty.** A delete-one-group jackknife: the tiles are split into ``n_groups`` interleaved
groups, the fit is repeated without each group (near the full estimate), and
``sigma = sqrt((G - 1) / G * sum (df_i - mean)^2)``, with a floor of a quarter of the defocus step
that moves the outermost fitted ring by a tenth of a ring (``0.025 / (lambda k_max^2)``).

Voltage and ``Cs`` come from the metadata (``voltage_kv``, ``cs_mm``) or the caller; the defaults
are 300 kV and Cs = 1.2 mm (:data:`DEFAULT_VOLTAGE_KV`, :data:`DEFAULT_CS_MM`). Defocus in nm,
negative = underfocus, from the plane the rings come from (the support film: its height can differ
from the particles' by a constant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage as ndi
from scipy.optimize import minimize_scalar

from hrtem_core.errors import AnalysisParameterError
from hrtem_core.optics import chi_rad, ctf, wavelength_nm

#: Default accelerating voltage [kV] when neither the metadata nor the user gives one.
DEFAULT_VOLTAGE_KV = 300.0
#: Default spherical aberration [mm] when neither the metadata nor the user gives one.
DEFAULT_CS_MM = 1.2
#: Smallest peak prominence of a trustworthy fit (see :attr:`DefocusEstimate.prominence`).
MIN_PROMINENCE = 10.0


@dataclass(frozen=True)
class DefocusEstimate:
    """A defocus estimated from the Thon rings of one image.

    Attributes
    ----------
    defocus_nm : float
        Estimate [nm], negative = underfocus.
    uncertainty_nm : float
        One standard deviation [nm] (jackknife over tile groups, with a floor).
    score : float
        Normalised cross-correlation of the background-subtracted ring profile with
        ``-cos 2 chi`` at the estimate (1 = perfect; below ~0.2 the rings are barely seen).
    sign_margin : float
        ``score`` minus the best score of the opposite defocus sign (>= 0; near 0: sign uncertain).
    voltage_kv, cs_mm : float
        The optics the fit used.
    n_tiles : int
        Tiles averaged.
    used_all_tiles : bool
        True when no tile was free of the excluded (crystalline) region and all were used.
    k_nm_inv : ndarray, shape (m,)
        Ring frequencies of the fitted band [1/nm].
    profile : ndarray, shape (m,)
        Background-subtracted, RMS-normalised ``log`` power in the band.
    model : ndarray, shape (m,)
        ``-cos 2 chi(k)`` at the estimate (the fitted model in the same units).
    scan_defocus_nm, scan_score : ndarray, shape (n,)
        The score over the scanned defocus grid (the fit-quality curve).
    source : str
        ``"estimated"``.
    warnings : tuple of str
        One-line warnings (weak rings, uncertain sign, no amorphous tile).
    prominence : float
        ``(best score - median score) / (1.4826 MAD of the scores)`` over the scan: how far the
        fit stands out of what any defocus achieves on that profile. Thon rings give tens;
        a spectrum without rings (or rings too fine for the tiles) gives ~3-5.
    """

    defocus_nm: float
    uncertainty_nm: float
    score: float
    sign_margin: float
    voltage_kv: float
    cs_mm: float
    n_tiles: int
    used_all_tiles: bool
    k_nm_inv: np.ndarray = field(repr=False)
    profile: np.ndarray = field(repr=False)
    model: np.ndarray = field(repr=False)
    scan_defocus_nm: np.ndarray = field(repr=False)
    scan_score: np.ndarray = field(repr=False)
    source: str = "estimated"
    warnings: tuple[str, ...] = ()
    prominence: float = float("nan")

    @property
    def reliable(self) -> bool:
        """True when the score peak stands out of the scan (``prominence >= MIN_PROMINENCE``)."""
        return bool(self.prominence >= MIN_PROMINENCE)

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        return {
            "defocus_estimate_nm": round(float(self.defocus_nm), 2),
            "defocus_uncertainty_nm": round(float(self.uncertainty_nm), 2),
            "defocus_fit_score": round(float(self.score), 4),
            "defocus_sign_margin": round(float(self.sign_margin), 4),
            "defocus_voltage_kv": float(self.voltage_kv),
            "defocus_cs_mm": float(self.cs_mm),
            "defocus_n_tiles": int(self.n_tiles),
            "defocus_source": self.source,
            "defocus_prominence": round(float(self.prominence), 1),
            "defocus_reliable": self.reliable,
            "defocus_warnings": list(self.warnings),
        }


def optics_from_metadata(
    metadata: Mapping[str, Any] | None,
    *,
    voltage_kv: float | None = None,
    cs_mm: float | None = None,
) -> tuple[float, float]:
    """``(voltage_kv, cs_mm)``: the caller's values, else the metadata's, else 300 kV and 1.2 mm."""
    md = dict(metadata or {})

    def pick(given: float | None, key: str, default: float) -> float:
        for v in (given, md.get(key)):
            try:
                f = float(v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if math.isfinite(f) and f > 0:
                return f
        return default

    return pick(voltage_kv, "voltage_kv", DEFAULT_VOLTAGE_KV), pick(cs_mm, "cs_mm", DEFAULT_CS_MM)


def _tile_origins(n: int, tile: int) -> list[int]:
    step = max(1, tile // 2)
    last = n - tile
    out = list(range(0, last + 1, step))
    if out[-1] != last:
        out.append(last)
    return out


def tile_power_spectra(
    image: np.ndarray,
    *,
    tile_px: int,
    exclude: np.ndarray | None = None,
    max_excluded_fraction: float = 0.05,
) -> tuple[np.ndarray, bool]:
    """Power spectra of the half-overlapping tiles that avoid ``exclude``.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
    tile_px : int, keyword-only
        Tile side [px].
    exclude : ndarray of bool, shape (ny, nx), optional, keyword-only
        Pixels to avoid (crystalline regions).
    max_excluded_fraction : float, keyword-only
        A tile is used when at most this fraction of it is excluded.

    Returns
    -------
    spectra : ndarray, shape (n_tiles, tile_px, tile_px)
        ``|FFT(hann * (tile - mean))|^2``, DC at [0, 0].
    used_all : bool
        True when no tile qualified and every tile was used.
    """
    img = np.asarray(image, dtype=np.float64)
    ny, nx = img.shape
    ys, xs = _tile_origins(ny, tile_px), _tile_origins(nx, tile_px)
    origins = [(y, x) for y in ys for x in xs]
    if exclude is not None:
        ex = np.asarray(exclude, dtype=bool)
        if ex.shape != img.shape:
            raise AnalysisParameterError(
                f"exclusion mask shape {ex.shape} does not match the image {img.shape}"
            )
        ok = [
            (y, x)
            for y, x in origins
            if ex[y : y + tile_px, x : x + tile_px].mean() <= max_excluded_fraction
        ]
    else:
        ok = origins
    used_all = not ok
    if used_all:
        ok = origins
    hann = np.hanning(tile_px)
    win = np.outer(hann, hann)
    out = np.empty((len(ok), tile_px, tile_px))
    for i, (y, x) in enumerate(ok):
        t = img[y : y + tile_px, x : x + tile_px]
        out[i] = np.abs(np.fft.fft2((t - t.mean()) * win)) ** 2
    return out, used_all


def radial_profile(spectrum: np.ndarray, pixel_size_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotational median of a (DC at [0, 0]) power spectrum.

    The median over each ring (not the mean) ignores the few pixels of lattice spots a ring may
    cross. Returns ``(k_nm_inv, power)``, one value per ring of width ``1 / (N p)`` [1/nm] out to
    Nyquist.
    """
    n = spectrum.shape[0]
    f = np.fft.fftfreq(n)
    ring = np.rint(np.hypot(f[:, None], f[None, :]) * n).astype(int).ravel()
    nmax = n // 2
    vals = np.asarray(spectrum, dtype=float).ravel()
    sel = ring <= nmax
    order = np.lexsort((vals[sel], ring[sel]))
    r_sorted = ring[sel][order]
    v_sorted = vals[sel][order]
    starts = np.searchsorted(r_sorted, np.arange(nmax + 1), side="left")
    ends = np.searchsorted(r_sorted, np.arange(nmax + 1), side="right")
    power = np.empty(nmax + 1)
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        power[i] = np.median(v_sorted[a:b]) if b > a else 0.0
    k = np.arange(nmax + 1) / (n * pixel_size_nm)
    return k, power


def normalise_power(
    k_nm_inv: np.ndarray, power: np.ndarray, *, smooth_nm_inv: float = 1.0
) -> np.ndarray:
    """``P(k)`` divided by its Gaussian-smoothed self (``sigma = smooth_nm_inv``): a flat profile
    whose rings keep their relative depth whatever the fall-off of the spectrum."""
    dk = float(k_nm_inv[1] - k_nm_inv[0]) if len(k_nm_inv) > 1 else 1.0
    pw = np.maximum(np.asarray(power, dtype=float), np.finfo(float).tiny)
    sm = ndi.gaussian_filter1d(pw, smooth_nm_inv / dk, mode="nearest")
    return pw / np.maximum(sm, np.finfo(float).tiny)


def ring_model(
    k_nm_inv: np.ndarray, *, defocus_nm: float, voltage_kv: float, cs_mm: float
) -> np.ndarray:
    """Power transfer of a weak phase object, ``sin^2 chi(k)`` (dimensionless)."""
    return np.sin(chi_rad(k_nm_inv, defocus_nm=defocus_nm, voltage_kv=voltage_kv, cs_mm=cs_mm)) ** 2


def _bases(k: np.ndarray, *, bg_degree: int, env_degree: int) -> tuple[np.ndarray, np.ndarray]:
    x = (k - k.min()) / max(float(np.ptp(k)), 1e-12)
    bg = np.stack([x**j for j in range(bg_degree + 1)], axis=1)
    env = np.stack([x**j for j in range(env_degree + 1)], axis=1)
    return bg, env


def _scan_fit(
    k: np.ndarray,
    y: np.ndarray,
    grid: np.ndarray,
    *,
    voltage_kv: float,
    cs_mm: float,
    bg_degree: int = 4,
    env_degree: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint linear fit ``y = B(k) + E(k) sin^2 chi(k; df)`` for every ``df`` of ``grid``.

    ``B`` (degree ``bg_degree``) and ``E`` (degree ``env_degree``) are polynomials in ``k``. The
    score is the fraction of the background-free variance of ``y`` that ``E sin^2 chi`` explains,
    negated where the fitted envelope is not positive on average (a negative envelope would fit
    ``cos^2 chi``, the rings' complement).

    Returns ``(score, background_free_y, fitted_ring_term)``: shapes ``(n,)``, ``(m,)``, ``(n, m)``.
    """
    bg, env = _bases(k, bg_degree=bg_degree, env_degree=env_degree)
    q, _ = np.linalg.qr(bg)
    y_perp = y - q @ (q.T @ y)
    s2 = np.sin(chi_rad(k[None, :], defocus_nm=grid[:, None], voltage_kv=voltage_kv, cs_mm=cs_mm))
    c = (s2**2)[:, :, None] * env[None, :, :]
    c_perp = c - np.einsum("ij,njk->nik", q, np.einsum("ji,njk->nik", q, c))
    ata = np.einsum("nik,nil->nkl", c_perp, c_perp)
    atb = np.einsum("nik,i->nk", c_perp, y_perp)
    ridge = 1e-9 * np.trace(ata, axis1=1, axis2=2)[:, None, None] * np.eye(env.shape[1])
    beta = np.linalg.solve(ata + ridge, atb[:, :, None])[:, :, 0]
    fitted = np.einsum("nik,nk->ni", c_perp, beta)
    yy = float(y_perp @ y_perp)
    explained = (fitted * y_perp[None, :]).sum(axis=1) / max(yy, 1e-300)
    env_mean = (env @ beta.T).mean(axis=0)
    score = np.where(env_mean > 0, explained, -explained)
    return score, y_perp, fitted


def _fit(
    k: np.ndarray,
    y: np.ndarray,
    *,
    lo: float,
    hi: float,
    voltage_kv: float,
    cs_mm: float,
    step_nm: float,
) -> tuple[float, np.ndarray, np.ndarray]:
    grid = np.arange(lo, hi + step_nm / 2, step_nm)
    scores = np.concatenate(
        [
            _scan_fit(k, y, grid[i : i + 256], voltage_kv=voltage_kv, cs_mm=cs_mm)[0]
            for i in range(0, len(grid), 256)
        ]
    )
    i = int(np.argmax(scores))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = float(grid[i])
    if b > a:
        res = minimize_scalar(
            lambda d: (
                -float(_scan_fit(k, y, np.array([d]), voltage_kv=voltage_kv, cs_mm=cs_mm)[0][0])
            ),
            bounds=(a, b),
            method="bounded",
            options={"xatol": 0.01},
        )
        if -res.fun >= scores[i]:
            best = float(res.x)
    return best, grid, scores


def _tile_size(shape: tuple[int, ...], tile_px: int | None) -> int:
    """Tile side [px]: ``tile_px``, default ``min(256, ny // 2, nx // 2)`` rounded down to a
    multiple of 16; at least 32 and at most the image's shorter side."""
    ny, nx = shape
    if tile_px is None:
        tile_px = max(32, min(256, ny // 2, nx // 2) // 16 * 16)
    tile_px = int(tile_px)
    if tile_px < 32 or tile_px > min(ny, nx):
        raise AnalysisParameterError(
            f"image {ny}x{nx} px is too small for defocus tiles of {tile_px} px (need >= 32)"
        )
    return tile_px


def _fit_band(
    k_all: np.ndarray, p: float, *, tile_px: int, k_range_nm_inv: tuple[float, float] | None
) -> tuple[np.ndarray, float]:
    """The fitting band over the ring frequencies ``k_all`` [1/nm] (bool mask, at least 8
    rings) and its upper edge [1/nm]; default ``(max(1.5, 8 / (tile_px p)), min(0.75 Nyquist, 6))``."""
    nyq = 0.5 / p
    if k_range_nm_inv is None:
        k_range_nm_inv = (max(1.5, 8.0 / (tile_px * p)), min(0.75 * nyq, 6.0))
    k_lo, k_hi = (float(v) for v in k_range_nm_inv)
    band = (k_all >= k_lo) & (k_all <= k_hi)
    if band.sum() < 8:
        raise AnalysisParameterError(
            f"fitting band {k_lo:.2f}-{k_hi:.2f} 1/nm holds fewer than 8 rings: "
            "use larger tiles or a smaller pixel size"
        )
    return band, k_hi


def _jackknife_sigma(jack: Sequence[float], *, floor_nm: float) -> float:
    """Jackknife standard error [nm] of the ``g`` leave-one-group-out defoci ``jack``:
    ``sqrt((g - 1) / g sum (d_j - mean)^2)``, at least ``floor_nm`` (the scan's resolution);
    ``10 floor_nm`` with fewer than two groups."""
    if len(jack) >= 2:
        g = len(jack)
        ja = np.asarray(jack)
        sigma = math.sqrt((g - 1) / g * float(((ja - ja.mean()) ** 2).sum()))
    else:
        sigma = float("nan")
    return max(sigma, floor_nm) if math.isfinite(sigma) else 10 * floor_nm


def _fit_warnings(
    *, prominence: float, used_all: bool, score: float, sign_margin: float
) -> list[str]:
    """What a microscopist should know about a fit of this quality."""
    warnings = []
    if prominence < MIN_PROMINENCE:
        warnings.append(
            f"no clear Thon rings (fit prominence {prominence:.1f} < {MIN_PROMINENCE:g}): "
            "the defocus estimate is not reliable"
        )
    if used_all:
        warnings.append("no amorphous tile free of crystalline windows: every tile was used")
    if score < 0.2:
        warnings.append(f"weak Thon rings (fit score {score:.2f}): the defocus estimate is unsure")
    if math.isfinite(sign_margin) and sign_margin < 0.05:
        warnings.append(f"under/over-focus barely distinguished (score margin {sign_margin:.3f})")
    return warnings


def estimate_defocus(
    image: np.ndarray,
    pixel_size_nm: float | tuple[float, float],
    *,
    voltage_kv: float | None = None,
    cs_mm: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    exclude: np.ndarray | None = None,
    tile_px: int | None = None,
    k_range_nm_inv: tuple[float, float] | None = None,
    defocus_range_nm: tuple[float, float] = (-600.0, 600.0),
    step_nm: float = 0.5,
    n_groups: int = 4,
    max_excluded_fraction: float = 0.05,
) -> DefocusEstimate:
    """Estimate the defocus of an HRTEM image from the Thon rings of its amorphous regions.

    See the module docstring for the method (CTFFIND-style, rotational average).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        The micrograph (counts or intensity).
    pixel_size_nm : float or (float, float)
        Pixel size [nm/px]; for non-square pixels the mean is used (rings assumed round).
    voltage_kv, cs_mm : float, optional, keyword-only
        Optics; default ``metadata["voltage_kv"]`` / ``metadata["cs_mm"]``, else 300 kV, 1.2 mm.
    metadata : mapping, optional, keyword-only
        The micrograph's metadata.
    exclude : ndarray of bool, shape (ny, nx), optional, keyword-only
        Crystalline pixels to keep out of the spectrum.
    tile_px : int, optional, keyword-only
        Tile side [px]; default ``min(256, ny // 2, nx // 2)`` rounded down to a multiple of 16.
    k_range_nm_inv : (float, float), optional, keyword-only
        Fitting band [1/nm]; default ``(max(1.5, 8 / (tile_px p)), min(0.75 Nyquist, 6))``.
    defocus_range_nm : (float, float), keyword-only
        Scanned defocus range [nm] (both signs by default).
    step_nm : float, keyword-only
        Scan step [nm].
    n_groups : int, keyword-only
        Jackknife groups for the uncertainty.
    max_excluded_fraction : float, keyword-only
        See :func:`tile_power_spectra`.

    Returns
    -------
    DefocusEstimate

    Raises
    ------
    AnalysisParameterError
        An image too small for two tiles of 32 px, a bad pixel size or range.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise AnalysisParameterError(f"defocus estimate needs a 2-D image, got shape {img.shape}")
    p = float(np.mean(np.atleast_1d(np.asarray(pixel_size_nm, dtype=float))))
    if not (math.isfinite(p) and p > 0):
        raise AnalysisParameterError(f"pixel size must be > 0 nm, got {pixel_size_nm!r}")
    vk, cs = optics_from_metadata(metadata, voltage_kv=voltage_kv, cs_mm=cs_mm)
    tile_px = _tile_size(img.shape, tile_px)
    lo_df, hi_df = (float(v) for v in defocus_range_nm)
    if not (lo_df < hi_df):
        raise AnalysisParameterError(f"defocus range must be (low, high), got {defocus_range_nm!r}")
    spectra, used_all = tile_power_spectra(
        img, tile_px=tile_px, exclude=exclude, max_excluded_fraction=max_excluded_fraction
    )
    k_all, _ = radial_profile(spectra[0], p)
    band, k_hi = _fit_band(k_all, p, tile_px=tile_px, k_range_nm_inv=k_range_nm_inv)
    k = k_all[band]

    def profile_of(spec: np.ndarray) -> np.ndarray:
        _, pw = radial_profile(spec, p)
        return normalise_power(k_all, pw)[band]

    prof = profile_of(spectra.mean(axis=0))
    best, grid, scores = _fit(k, prof, lo=lo_df, hi=hi_df, voltage_kv=vk, cs_mm=cs, step_nm=step_nm)
    sc, prof, fitted = _scan_fit(k, prof, np.array([best]), voltage_kv=vk, cs_mm=cs)
    score, model = float(sc[0]), fitted[0]
    other = scores[np.sign(grid) != np.sign(best)]
    sign_margin = float(score - other.max()) if other.size else float("nan")
    n_t = spectra.shape[0]
    g = min(int(n_groups), n_t)
    jack = []
    for j in range(g if g >= 2 else 0):  # leave one group of tiles out, refit near the best
        pj = profile_of(spectra[np.arange(n_t) % g != j].mean(axis=0))
        fit_kw = {"voltage_kv": vk, "cs_mm": cs, "step_nm": step_nm}
        jack.append(_fit(k, pj, lo=best - 20.0, hi=best + 20.0, **fit_kw)[0])
    sigma = _jackknife_sigma(jack, floor_nm=0.025 / (wavelength_nm(vk) * k_hi**2))
    med = float(np.median(scores))
    mad = 1.4826 * float(np.median(np.abs(scores - med)))
    prominence = (float(scores.max()) - med) / mad if mad > 0 else float("inf")
    warnings = _fit_warnings(
        prominence=prominence, used_all=bool(used_all), score=score, sign_margin=sign_margin
    )
    return DefocusEstimate(
        defocus_nm=best,
        uncertainty_nm=sigma,
        score=score,
        sign_margin=sign_margin,
        voltage_kv=vk,
        cs_mm=cs,
        n_tiles=int(n_t),
        used_all_tiles=bool(used_all),
        k_nm_inv=k,
        profile=prof,
        model=model,
        scan_defocus_nm=grid,
        scan_score=scores,
        warnings=tuple(warnings),
        prominence=float(prominence),
    )


def defocus_for_result(
    result: Any,
    image: np.ndarray,
    *,
    metadata: Mapping[str, Any] | None = None,
    voltage_kv: float | None = None,
    cs_mm: float | None = None,
    **kwargs: Any,
) -> DefocusEstimate:
    """:func:`estimate_defocus` on the non-crystalline part of an analysed image.

    The crystalline windows' footprints (``result.windows.crystalline``) are excluded.
    """
    excl = crystalline_footprint(result, np.shape(image))
    return estimate_defocus(
        image,
        result.pixel_size_nm,
        metadata=metadata,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        exclude=excl,
        **kwargs,
    )


def crystalline_footprint(result: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Union of the crystalline windows' footprints, bool, shape ``shape`` (ny, nx)."""
    mask = np.zeros(tuple(int(v) for v in shape[:2]), dtype=bool)
    w = int(result.grid.window_px)
    cry = np.asarray(result.windows["crystalline"], dtype=bool)
    for (y, x), c in zip(np.asarray(result.grid.origins, dtype=int), cry, strict=False):
        if c:
            mask[y : y + w, x : x + w] = True
    return mask


def compare_defocus(
    given_nm: float | None, estimate: DefocusEstimate | None, *, given_uncertainty_nm: float = 0.0
) -> str | None:
    """A one-line warning when a given defocus and the estimate differ by more than their uncertainty.

    The combined uncertainty is ``sqrt(sigma_est^2 + sigma_given^2)``; None when they agree,
    either is missing, or the estimate is not :attr:`~DefocusEstimate.reliable`.
    """
    if given_nm is None or estimate is None or not estimate.reliable:
        return None
    tol = math.hypot(float(estimate.uncertainty_nm), float(given_uncertainty_nm))
    diff = float(given_nm) - float(estimate.defocus_nm)
    if abs(diff) > tol:
        return (
            f"given defocus {float(given_nm):.1f} nm and the estimate from the Thon rings "
            f"{estimate.defocus_nm:.1f} +/- {estimate.uncertainty_nm:.1f} nm disagree "
            f"by {abs(diff):.1f} nm"
        )
    return None


# --------------------------------------------------------------------------------------------
# Figures (plotly; built lazily so the library imports without plotly)
# --------------------------------------------------------------------------------------------


def ring_fit_figure(est: DefocusEstimate):
    """1-D ring fit: background-subtracted profile vs ``-cos 2 chi`` at the estimate (plotly)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=est.k_nm_inv, y=est.profile, mode="lines", name="rings (background subtracted)"
        )
    )
    fig.add_trace(
        go.Scatter(
            x=est.k_nm_inv,
            y=est.model,
            mode="lines",
            name=f"fit: -cos 2chi, df = {est.defocus_nm:.1f} nm",
            line={"dash": "dash"},
        )
    )
    ctf_abs = np.abs(
        ctf(est.k_nm_inv, defocus_nm=est.defocus_nm, voltage_kv=est.voltage_kv, cs_mm=est.cs_mm)
    )
    fig.add_trace(
        go.Scatter(
            x=est.k_nm_inv,
            y=2 * ctf_abs**2 - 1,
            mode="lines",
            name="2 sin^2 chi - 1",
            visible="legendonly",
        )
    )
    fig.update_layout(
        title=(
            f"Thon-ring fit: defocus {est.defocus_nm:.1f} +/- {est.uncertainty_nm:.1f} nm "
            f"(score {est.score:.2f}, {est.n_tiles} tiles)"
        ),
        xaxis_title="spatial frequency k (1/nm)",
        yaxis_title="normalised log power",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def fit_quality_figure(est: DefocusEstimate):
    """Fit score over the scanned defocus (plotly): a sharp single peak = a trustworthy fit."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=est.scan_defocus_nm, y=est.scan_score, mode="lines", name="score"))
    fig.add_vline(x=est.defocus_nm, line_dash="dash", annotation_text="estimate")
    fig.update_layout(
        title=f"Fit quality: score vs defocus (sign margin {est.sign_margin:.3f})",
        xaxis_title="defocus (nm, negative = underfocus)",
        yaxis_title="normalised cross-correlation",
    )
    return fig


__all__ = [
    "DEFAULT_CS_MM",
    "DEFAULT_VOLTAGE_KV",
    "MIN_PROMINENCE",
    "DefocusEstimate",
    "compare_defocus",
    "crystalline_footprint",
    "defocus_for_result",
    "estimate_defocus",
    "fit_quality_figure",
    "normalise_power",
    "optics_from_metadata",
    "radial_profile",
    "ring_fit_figure",
    "ring_model",
    "tile_power_spectra",
]
