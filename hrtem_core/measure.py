"""Measurements a microscopist makes by hand: Bragg filtering, line profiles, FFT points, scale bars.

Pure numpy on arrays and plain numbers (the dashboard draws; this module computes).

* :func:`bragg_filter` keeps chosen spatial frequencies (with their Friedel mates) of an image
  and transforms back: the classical way to see where one set of lattice planes lives
  (Hytch, Snoeck & Kilaas, *Ultramicroscopy* 74 (1998) 131, eqs. 2-4).
* :func:`line_profile` samples an image along a line (bilinear interpolation, averaged over a
  width) and :func:`fringe_period_nm` gives the period of the fringes on it.
* :func:`fft_point_measure` turns one or two clicked points of a power spectrum [1/nm] into
  spacings, directions and the angle between them; :func:`nearest_planes` names the card planes
  nearest to a measured spacing.
* :func:`scale_bar_nm` chooses a round scale-bar length for a field of view.

Conventions as everywhere in :mod:`hrtem_core`: image axes ``(y, x)`` with y down; a spatial
frequency ``g = (gy, gx)`` [1/nm]; directions are ``degrees(atan2(-gy, gx)) mod 180``
(counter-clockwise from +x as seen on the screen).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hrtem_core.errors import AnalysisParameterError

__all__ = [
    "FFTMeasurement",
    "bragg_filter",
    "direction_deg",
    "fft_point_measure",
    "fringe_period_nm",
    "line_profile",
    "nearest_planes",
    "scale_bar_nm",
    "zone_pattern",
]


def _pixel_sizes(pixel_size_nm: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(pixel_size_nm, int | float):
        py = px = float(pixel_size_nm)
    else:
        py, px = (float(v) for v in pixel_size_nm)
    if not (math.isfinite(py) and math.isfinite(px) and py > 0 and px > 0):
        raise AnalysisParameterError(f"pixel size must be > 0 nm/px, got {pixel_size_nm!r}")
    return py, px


def bragg_filter(
    image: np.ndarray,
    g_nm_inv: Sequence[Sequence[float]] | np.ndarray,
    *,
    pixel_size_nm: float | Sequence[float],
    radius_nm_inv: float,
    friedel: bool = True,
) -> np.ndarray:
    """Bragg-filtered image: only the chosen spatial frequencies survive (inverse FFT).

    The image (mean removed) is Fourier transformed, multiplied by a mask of soft-edged discs
    (Gaussian of standard deviation ``radius_nm_inv / 2``, i.e. ``exp(-2 r^2 / R^2)``) centred on
    every chosen ``g`` (and on ``-g`` when ``friedel``), and transformed back.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Real image (a window or the whole micrograph).
    g_nm_inv : array_like, shape (n, 2)
        Spatial frequencies ``(gy, gx)`` [1/nm] to keep (gy down, as a spot's ``gy_nm_inv``).
    pixel_size_nm : float or (float, float), keyword-only
        ``p`` or ``(p_y, p_x)`` [nm/px].
    radius_nm_inv : float, keyword-only
        Mask radius R [1/nm]; a few FFT pixels of the image (``1 / (n p)``) up to about a third of
        ``|g|``: larger keeps more local detail (and more noise).
    friedel : bool, keyword-only
        Also keep ``-g`` (default): the result is real. With False the result is the complex
        image of the ``+g`` side only: its modulus is the local fringe amplitude (Hytch et al.).

    Returns
    -------
    ndarray, shape (ny, nx)
        float64 (``friedel=True``) or complex128 (``friedel=False``).

    Raises
    ------
    AnalysisParameterError
        Not a 2-D image, no frequency given, or a radius that is not positive.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 2:
        raise AnalysisParameterError(f"Bragg filter: expected a 2-D image, got shape {img.shape}")
    g = np.asarray(g_nm_inv, dtype=np.float64).reshape(-1, 2)
    if g.shape[0] == 0:
        raise AnalysisParameterError("Bragg filter: choose at least one spot")
    r = float(radius_nm_inv)
    if not (math.isfinite(r) and r > 0):
        raise AnalysisParameterError(f"Bragg filter: mask radius must be > 0 1/nm, got {r!r}")
    py, px = _pixel_sizes(pixel_size_nm)
    ny, nx = img.shape
    fy = np.fft.fftfreq(ny, d=py)[:, None]  # [1/nm]
    fx = np.fft.fftfreq(nx, d=px)[None, :]
    centres = np.concatenate([g, -g]) if friedel else g
    mask = np.zeros((ny, nx))
    for gy, gx in centres:
        mask = np.maximum(mask, np.exp(-2.0 * ((fy - gy) ** 2 + (fx - gx) ** 2) / r**2))
    spectrum = np.fft.fft2(img - img.mean())
    out = np.fft.ifft2(spectrum * mask)
    return out.real if friedel else out


def line_profile(
    image: np.ndarray,
    start_yx: Sequence[float],
    end_yx: Sequence[float],
    *,
    width_px: int = 1,
    step_px: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Image values along the line ``start -> end`` (bilinear), averaged across ``width_px``.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
    start_yx, end_yx : (float, float)
        End points ``(y, x)`` [px] (pixel centres at integers); clipped to the image.
    width_px : int, keyword-only
        Number of parallel lines, one pixel apart, averaged (>= 1).
    step_px : float, keyword-only
        Sampling step along the line [px].

    Returns
    -------
    distance_px : ndarray, shape (n,)
        Distance of each sample from ``start`` [px].
    values : ndarray, shape (n,)
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise AnalysisParameterError(f"line profile: expected a 2-D image, got shape {img.shape}")
    ny, nx = img.shape
    y0, x0 = (float(v) for v in start_yx)
    y1, x1 = (float(v) for v in end_yx)
    length = math.hypot(y1 - y0, x1 - x0)
    if not length >= 2.0:
        raise AnalysisParameterError("line profile: the line must be at least 2 px long")
    n = int(length / float(step_px)) + 1
    t = np.linspace(0.0, 1.0, n)
    uy, ux = (y1 - y0) / length, (x1 - x0) / length
    offsets = np.arange(max(1, int(width_px))) - (max(1, int(width_px)) - 1) / 2.0
    total = np.zeros(n)
    for o in offsets:  # perpendicular (-ux, uy) shifts
        yy = np.clip(y0 + t * (y1 - y0) + o * ux, 0, ny - 1)
        xx = np.clip(x0 + t * (x1 - x0) - o * uy, 0, nx - 1)
        iy = np.minimum(np.floor(yy).astype(int), ny - 2) if ny > 1 else np.zeros(n, int)
        ix = np.minimum(np.floor(xx).astype(int), nx - 2) if nx > 1 else np.zeros(n, int)
        fy, fx = yy - iy, xx - ix
        iy1 = np.minimum(iy + 1, ny - 1)
        ix1 = np.minimum(ix + 1, nx - 1)
        total += (
            img[iy, ix] * (1 - fy) * (1 - fx)
            + img[iy, ix1] * (1 - fy) * fx
            + img[iy1, ix] * fy * (1 - fx)
            + img[iy1, ix1] * fy * fx
        )
    return t * length, total / len(offsets)


def fringe_period_nm(
    values: Sequence[float] | np.ndarray,
    *,
    step_nm: float,
    min_period_nm: float | None = None,
) -> float:
    """Period of the strongest fringes on a line profile [nm].

    The profile (mean removed, Hann window) is transformed with 16x zero padding; the highest
    peak of the power spectrum above the lowest frequencies (at least 1.5 cycles over the
    profile, and below ``1 / min_period_nm``) is refined by a parabola through its three samples.

    Parameters
    ----------
    values : array_like, shape (n,)
        Profile values, ``step_nm`` apart (:func:`line_profile`).
    step_nm : float, keyword-only
        Sampling step [nm].
    min_period_nm : float, optional, keyword-only
        Shortest period considered [nm] (default: two samples, Nyquist).

    Returns
    -------
    float
        The period [nm].

    Raises
    ------
    AnalysisParameterError
        Fewer than 8 samples, or no fringe (a flat profile).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 8:
        raise AnalysisParameterError("fringe period: the profile needs at least 8 samples")
    step = float(step_nm)
    if not (math.isfinite(step) and step > 0):
        raise AnalysisParameterError(f"fringe period: step must be > 0 nm, got {step_nm!r}")
    v = (v - v.mean()) * np.hanning(v.size)
    if not np.any(np.abs(v) > 1e-12 * (1.0 + np.abs(values).max())):
        raise AnalysisParameterError("fringe period: the profile is flat (no fringes)")
    n_fft = 16 * int(2 ** math.ceil(math.log2(v.size)))
    power = np.abs(np.fft.rfft(v, n=n_fft)) ** 2
    freqs = np.fft.rfftfreq(n_fft, d=step)  # [1/nm]
    f_lo = 1.5 / (v.size * step)
    f_hi = 1.0 / (min_period_nm if min_period_nm else 2.0 * step)
    ok = (freqs >= f_lo) & (freqs <= f_hi)
    if not ok.any():
        raise AnalysisParameterError("fringe period: the profile is too short for any period")
    k = int(np.flatnonzero(ok)[np.argmax(power[ok])])
    if 0 < k < power.size - 1:
        a, b, c = np.log(power[k - 1 : k + 2] + 1e-300)
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
    else:
        shift = 0.0
    f = (k + float(np.clip(shift, -0.5, 0.5))) * (freqs[1] - freqs[0])
    return 1.0 / f


def direction_deg(gy: float, gx: float) -> float:
    """Direction of g, ``degrees(atan2(-gy, gx)) mod 180`` [deg] (as a spot pair's ``angle_deg``)."""
    return math.degrees(math.atan2(-float(gy), float(gx))) % 180.0


@dataclass(frozen=True)
class FFTMeasurement:
    """What one or two points clicked on a power spectrum measure.

    Attributes
    ----------
    spacings_nm : tuple of float
        ``d = 1 / |g|`` of each point [nm].
    frequencies_nm_inv : tuple of float
        ``|g|`` of each point [1/nm].
    directions_deg : tuple of float
        Direction of each g (mod 180) [deg].
    angle_deg : float or None
        Angle between the two g vectors, 0-180 [deg] (None for one point).
    acute_angle_deg : float or None
        The same as an angle between planes, 0-90 [deg].
    """

    spacings_nm: tuple[float, ...]
    frequencies_nm_inv: tuple[float, ...]
    directions_deg: tuple[float, ...]
    angle_deg: float | None
    acute_angle_deg: float | None


def fft_point_measure(points_nm_inv: Sequence[Sequence[float]]) -> FFTMeasurement:
    """Spacings, directions and the angle between one or two points of a power spectrum.

    Each point ``(gy, gx)`` [1/nm] is measured from the centre (DC): ``d = 1 / |g|`` (ESI-2,
    eq. 1). For two points the angle between the two g vectors is given, also folded to 0-90
    degrees (the angle between two sets of planes).

    Raises
    ------
    AnalysisParameterError
        Not one or two points, or a point at the centre.
    """
    pts = np.asarray(points_nm_inv, dtype=np.float64).reshape(-1, 2)
    if not 1 <= pts.shape[0] <= 2:
        raise AnalysisParameterError("measure: give one or two points of the spectrum")
    mags = np.hypot(pts[:, 0], pts[:, 1])
    if np.any(mags <= 0) or not np.all(np.isfinite(mags)):
        raise AnalysisParameterError("measure: a point at the centre of the spectrum has no d")
    angle = acute = None
    if pts.shape[0] == 2:
        # Screen vectors (x right, y up): (gx, -gy).
        v1 = np.array([pts[0, 1], -pts[0, 0]])
        v2 = np.array([pts[1, 1], -pts[1, 0]])
        cos = float(v1 @ v2 / (mags[0] * mags[1]))
        angle = math.degrees(math.acos(min(1.0, max(-1.0, cos))))
        acute = min(angle, 180.0 - angle)
    return FFTMeasurement(
        spacings_nm=tuple(float(1.0 / m) for m in mags),
        frequencies_nm_inv=tuple(float(m) for m in mags),
        directions_deg=tuple(direction_deg(p[0], p[1]) for p in pts),
        angle_deg=angle,
        acute_angle_deg=acute,
    )


def nearest_planes(
    spacing_nm: float,
    planes: Iterable[tuple[str, float]],
    *,
    n: int = 3,
) -> list[tuple[str, float, float]]:
    """The ``n`` card planes whose spacing is nearest to ``spacing_nm``.

    Parameters
    ----------
    spacing_nm : float
        Measured spacing [nm].
    planes : iterable of (label, d_nm)
        Card planes, e.g. ``("maghemite (3 1 1)", 0.2518)``.
    n : int, keyword-only

    Returns
    -------
    list of (label, d_nm, relative_difference)
        Sorted by ``|d_measured - d_card| / d_card``; the difference is signed (measured - card).
    """
    d = float(spacing_nm)
    rows = [(str(lab), float(dc), (d - float(dc)) / float(dc)) for lab, dc in planes if dc > 0]
    rows.sort(key=lambda r: (abs(r[2]), r[0]))
    return rows[: max(0, int(n))]


def scale_bar_nm(field_nm: float, *, fraction: float = 0.2) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k nm) close to ``fraction`` of the field.

    The largest 1-2-5 value not above ``fraction * field_nm`` (at least the smallest 1-2-5
    value above ``fraction * field_nm / 2.5``), e.g. 10 nm for a 52 nm field.

    Raises
    ------
    AnalysisParameterError
        A field that is not a positive finite length.
    """
    f = float(field_nm)
    if not (math.isfinite(f) and f > 0):
        raise AnalysisParameterError(f"scale bar: field must be > 0 nm, got {field_nm!r}")
    target = f * float(fraction)
    k = math.floor(math.log10(target))
    best = 10.0**k
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10.0**k <= target * (1 + 1e-9):
            best = m * 10.0**k
    return best


def zone_pattern(
    cell: object,
    space_group: str | int,
    zone_uvw: Sequence[int],
    *,
    ref_hkl: Sequence[int],
    ref_direction_deg: float,
    second: tuple[Sequence[int], float] | None = None,
    d_min_nm: float = 0.1,
) -> list[tuple[tuple[int, int, int], float, float]]:
    """The card's spot pattern of zone [uvw], oriented like a measured window: ``(hkl, gy, gx)``.

    The reflections of the zone (:func:`hrtem_core.crystallography.zone_reflections`) are
    projected on the plane normal to [uvw] and turned so that ``ref_hkl`` points along the
    measured direction ``ref_direction_deg`` (screen, counter-clockwise from +x, y down). The
    mirror ambiguity of a 2-D projection is resolved with ``second = (hkl2, direction2_deg)``
    (the pattern handedness that puts hkl2 closer to its measured direction, mod 180 degrees).
    Spot positions use the card's cell, so the distance between a predicted and a measured spot
    shows the spacing residual.

    Parameters
    ----------
    cell : UnitCell
    space_group : str or int
    zone_uvw : (int, int, int)
    ref_hkl : (int, int, int), keyword-only
        A plane of the zone, indexed in the window.
    ref_direction_deg : float, keyword-only
        Its measured direction [deg].
    second : ((int, int, int), float), optional, keyword-only
        Another indexed plane of the zone and its measured direction [deg].
    d_min_nm : float, keyword-only

    Returns
    -------
    list of ((h, k, l), gy, gx)
        ``g`` [1/nm] of every reflection, gy down.

    Raises
    ------
    AnalysisParameterError
        ``ref_hkl`` is not in the zone.
    """
    from hrtem_core.crystallography import zone_reflections

    z = np.asarray(cell.direct_cartesian(zone_uvw), dtype=float)  # type: ignore[attr-defined]
    z /= np.linalg.norm(z)
    g_ref = np.asarray(cell.reciprocal_cartesian(ref_hkl), dtype=float)  # type: ignore[attr-defined]
    if abs(float(g_ref @ z)) > 1e-6 * np.linalg.norm(g_ref):
        raise AnalysisParameterError(
            f"plane {tuple(ref_hkl)} is not in the zone [{' '.join(map(str, zone_uvw))}]"
        )
    e1 = g_ref / np.linalg.norm(g_ref)
    e2 = np.cross(z, e1)
    rows = zone_reflections(cell, space_group, zone_uvw, d_min_nm=d_min_nm)  # type: ignore[arg-type]
    theta = math.radians(float(ref_direction_deg))
    c, s = math.cos(theta), math.sin(theta)

    def place(hkl: Sequence[int], hand: float) -> tuple[float, float]:
        g = np.asarray(cell.reciprocal_cartesian(hkl), dtype=float)  # type: ignore[attr-defined]
        a, b = float(g @ e1), hand * float(g @ e2)
        vx, vy = a * c - b * s, a * s + b * c  # screen, y up
        return -vy, vx  # (gy down, gx)

    hand = 1.0
    if second is not None:
        hkl2, dir2 = second
        errs = []
        for h in (1.0, -1.0):
            gy, gx = place(hkl2, h)
            diff = (direction_deg(gy, gx) - float(dir2)) % 180.0
            errs.append(min(diff, 180.0 - diff))
        hand = 1.0 if errs[0] <= errs[1] else -1.0
    out = []
    for hkl, _d in rows:
        gy, gx = place(hkl, hand)
        out.append((tuple(int(v) for v in hkl), gy, gx))
    return out  # type: ignore[return-value]
