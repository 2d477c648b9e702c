"""Image distortion (STEM scan distortion, projector-lens distortion): measure it on a known
crystal, and correct images for it.

A scanned image (STEM) is often stretched and sheared by a few per cent: the fast and slow scan
directions are not calibrated alike, and drift shears the frame. A lattice that is square in the
crystal then shows two spacings that should be equal differing by 2-5 %, and an angle that should
be 90 deg off by 1-3 deg. Such an image is mis-calibrated, as one with a wrong pixel size is: the
indexing (:mod:`hrtem_core.indexing`) forgives a calibration error common to a window (1 %) but
not a distortion, and leaves such windows unnamed rather than forcing a card on them.

Model. The distortion is an affine map common to the whole image: a true position ``x_true`` [nm]
and the position ``x_img`` [nm] the file's calibration gives it are related by
``x_true = S x_img``, with ``S`` a symmetric 2x2 *stretch* in the image frame (x to the right,
y down; a rotation of the whole image changes no spacing or angle and is left out, so ``S`` is
symmetric). Reciprocal vectors transform the other way, ``g_true = S^-1 g_img``; a plane of true
spacing ``d`` thus satisfies

    ``1 / d^2 = g_img^T Q g_img``, with ``Q = S^-2``,

which holds whatever the sign of ``g`` (an FFT spot pair gives its direction only modulo 180 deg),
the grain's orientation, or the viewing sense: every plane that a card indexes in any window
gives one linear equation for the three entries of ``Q``. :func:`measure_distortion` solves them
by robust least squares; planes along at least three directions are needed. ``S`` includes the
isotropic scale (the "lattice-calibrated" pixel size) and the anisotropic part.

This is a calibration, as the pixel size is: measure it once on an image of a known crystal (a
standard, or the image itself when its phase is known), then pass it to the analysis
(``--distortion SXX,SXY,SYY`` on the command line, the "Scan distortion" fields in the dashboard),
which resamples the image onto square pixels first (:func:`undistort`). The indexing itself
never fits a distortion: with one free per window it would explain foreign crystals by cards
that do not describe them (tried: the ZnO test crystal was then named akaganeite in 56 of its 88
windows, against 23).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrtem_core.errors import CalibrationError

#: Largest relative deviation of a stretch's principal values from 1 that the correction accepts
#: (a larger one is a wrong pixel size, not a distortion).
MAX_STRETCH_DEV = 0.2
#: Largest anisotropy ``s_1 / s_2 - 1`` of a stretch: scan distortions reach a few per cent (the
#: SrTiO3 STEM image of ``../shared/validation``: 2.7 %); more means the card is the wrong one.
MAX_ANISOTROPY = 0.05
#: A calibration must rest on the card explaining (angle-confirmed) at least this fraction of the
#: windows with two or more planes: a card that fits a few windows after a fitted distortion
#: does not describe the image (maghemite on the SrTiO3 image: 14 of 144 windows, 7 % anisotropy).
#: An image where the known crystal covers less than half of the crystalline area is refused too:
#: calibrate on one that it fills.
MIN_COVERAGE = 0.5
#: Planes whose relative residual after the fit exceeds this many robust sigmas (1.4826 MAD, at
#: least 0.3 %) are dropped as misassigned, and the fit repeated.
OUTLIER_SIGMAS = 3.0
#: Rounds of analysis and fit of :func:`calibrate_distortion` at most (the SrTiO3 STEM image of
#: ``../shared/validation`` converges in 4).
MAX_ITERATIONS = 6
#: Least number of plane directions (occupied 10-deg bins modulo 180 deg) for a fit.
MIN_DIRECTIONS = 3


@dataclass(frozen=True)
class DistortionFit:
    """A stretch measured on a known crystal.

    Attributes
    ----------
    stretch : tuple of float
        ``(s_xx, s_xy, s_yy)``: the symmetric ``S`` with ``x_true = S x_img`` (image frame: x to
        the right, y down; dimensionless, 1 = the file's calibration is right).
    card_id : str
        The card the planes were assigned to.
    n_planes, n_windows : int
        Planes used in the fit (after dropping outliers) and the windows they come from.
    n_directions : int
        Distinct plane directions among them (occupied 10-deg bins, modulo 180 deg).
    rms_before_rel, rms_after_rel : float
        Root-mean-square relative spacing residual ``(d - d_card) / d_card`` of those planes at
        the file's calibration and after the correction.
    n_iterations : int
        Rounds of analysis and fit (:func:`calibrate_distortion`; 1 for
        :func:`measure_distortion`).
    n_windows_with_planes : int
        Windows of the (last) analysis with two or more planes: ``n_windows`` of them the card
        explains (the coverage, :data:`MIN_COVERAGE`).
    """

    stretch: tuple[float, float, float]
    card_id: str
    n_planes: int
    n_windows: int
    n_directions: int
    rms_before_rel: float
    rms_after_rel: float
    n_iterations: int = 1
    n_windows_with_planes: int = 0

    @property
    def coverage(self) -> float:
        """``n_windows / n_windows_with_planes`` (0 when there are none)."""
        return self.n_windows / self.n_windows_with_planes if self.n_windows_with_planes else 0.0

    @property
    def matrix(self) -> np.ndarray:
        """``S`` as a (2, 2) array (x, y order)."""
        return stretch_matrix(self.stretch)

    @property
    def scale(self) -> float:
        """Isotropic part, ``sqrt(det S)``: the factor the pixel size is multiplied by."""
        return math.sqrt(float(np.linalg.det(self.matrix)))

    @property
    def principal(self) -> tuple[float, float, float]:
        """``(s_1, s_2, angle_deg)``: principal stretches (``s_1 >= s_2``) and the direction of
        ``s_1`` [deg from the x axis, counter-clockwise on screen, in [0, 180)]."""
        w, v = np.linalg.eigh(self.matrix)
        ang = math.degrees(math.atan2(-v[1, 1], v[0, 1])) % 180.0
        return float(w[1]), float(w[0]), ang

    def describe(self) -> str:
        """One line for a microscopist."""
        s1, s2, ang = self.principal
        return (
            f"scale x{self.scale:.4f}, anisotropy {100 * (s1 / s2 - 1):.2f} % "
            f"(long axis {ang:.0f} deg); spacing residuals {100 * self.rms_before_rel:.2f} % -> "
            f"{100 * self.rms_after_rel:.2f} % rms over {self.n_planes} planes of "
            f"{self.n_windows} of {self.n_windows_with_planes} windows ({self.card_id})"
        )

    def as_option(self) -> str:
        """The ``--distortion`` value: ``SXX,SXY,SYY``."""
        return ",".join(f"{v:.6f}" for v in self.stretch)


def stretch_matrix(stretch: Sequence[float]) -> np.ndarray:
    """``(s_xx, s_xy, s_yy)`` -> the symmetric (2, 2) ``S``, checked.

    Raises
    ------
    CalibrationError
        Not three finite numbers, not positive definite, a principal stretch more than
        :data:`MAX_STRETCH_DEV` from 1, or an anisotropy over :data:`MAX_ANISOTROPY`.
    """
    try:
        vals = tuple(float(v) for v in stretch)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise CalibrationError(
            f"distortion must be three finite numbers SXX,SXY,SYY, got {stretch!r}"
        )
    sxx, sxy, syy = vals
    m = np.array([[sxx, sxy], [sxy, syy]])
    w = np.linalg.eigvalsh(m)
    if not (w[0] > 0) or np.max(np.abs(w - 1.0)) > MAX_STRETCH_DEV:
        raise CalibrationError(
            f"distortion SXX,SXY,SYY = {sxx:g},{sxy:g},{syy:g} has principal stretches "
            f"{w[0]:.3f} and {w[1]:.3f}; a scan distortion stays within "
            f"{100 * MAX_STRETCH_DEV:.0f} % of 1 (check the pixel size and the values)"
        )
    if w[1] / w[0] - 1.0 > MAX_ANISOTROPY:
        raise CalibrationError(
            f"distortion SXX,SXY,SYY = {sxx:g},{sxy:g},{syy:g} stretches one direction "
            f"{100 * (w[1] / w[0] - 1):.1f} % more than the other; a scan distortion stays "
            f"within {100 * MAX_ANISOTROPY:.0f} % (is it the right card?)"
        )
    return m


def _g_image(spacing_nm: np.ndarray, angle_deg: np.ndarray) -> np.ndarray:
    """Reciprocal vectors (n, 2) [1/nm] in the image frame (x right, y down) from the measured
    spacing and direction (``angle = degrees(atan2(-gy, gx))``)."""
    a = np.radians(angle_deg)
    return np.column_stack([np.cos(a), -np.sin(a)]) / spacing_nm[:, None]


def _planes_of_card(
    result: Any, card_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Measured spacing, direction and card spacing of every plane that an angle-confirmed
    hypothesis of ``card_id`` assigns, over all windows; and the window of each."""
    d, a, ref, win = [], [], [], []
    for w, wi in enumerate(result.index):
        cands = ([wi.best] if wi.best is not None else []) + list(wi.alternatives)
        match = next((m for m in cands if m.card_id == card_id and m.angle_confirmed), None)
        if match is None:
            continue
        for plane, d_ref in zip(wi.planes, match.d_ref_nm, strict=False):
            if d_ref is None:
                continue
            d.append(plane.spacing_nm)
            a.append(plane.angle_deg)
            ref.append(d_ref)
            win.append(w)
    return (
        np.asarray(d, dtype=float),
        np.asarray(a, dtype=float),
        np.asarray(ref, dtype=float),
        np.asarray(win, dtype=np.int64),
    )


def _n_directions(angle_deg: np.ndarray) -> int:
    """Distinct plane directions: occupied 10-deg bins modulo 180 deg."""
    if len(angle_deg) == 0:
        return 0
    return len(np.unique(np.floor(np.mod(angle_deg, 180.0) / 10.0).astype(int) % 18))


def fit_stretch(
    spacing_nm: np.ndarray, angle_deg: np.ndarray, card_spacing_nm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``S`` from measured planes and the spacings a card gives them.

    Parameters
    ----------
    spacing_nm, angle_deg : ndarray, shape (n,)
        Measured spacing [nm] and direction of g [deg, ``atan2(-gy, gx)``, modulo 180].
    card_spacing_nm : ndarray, shape (n,)
        The card's spacing of each plane [nm].

    Returns
    -------
    stretch : ndarray, shape (2, 2)
        ``S``, symmetric, ``x_true = S x_img``.
    keep : ndarray of bool, shape (n,)
        The planes kept (outliers beyond :data:`OUTLIER_SIGMAS` robust sigmas dropped).

    Raises
    ------
    CalibrationError
        Fewer than :data:`MIN_DIRECTIONS` plane directions, directions too close to separate the
        three entries of ``Q``, or no positive-definite solution.

    Notes
    -----
    Each plane gives ``g^T Q g = 1 / d_card^2`` (module docstring); divided by its right-hand
    side the equations are in relative terms, so every plane weighs alike (a spacing residual
    ``r`` contributes ``-2 r`` to the equation's residual).
    """
    d = np.asarray(spacing_nm, dtype=float)
    a = np.asarray(angle_deg, dtype=float)
    ref = np.asarray(card_spacing_nm, dtype=float)
    valid = np.isfinite(d) & np.isfinite(a) & np.isfinite(ref) & (d > 0) & (ref > 0)
    keep = valid
    for _ in range(5):
        n_dir = _n_directions(a[keep])
        if n_dir < MIN_DIRECTIONS:
            raise CalibrationError(
                f"the card's planes are seen along {n_dir} direction(s); measuring a distortion "
                f"needs at least {MIN_DIRECTIONS} (a zone axis that shows three or more plane "
                "directions, or grains in several orientations)"
            )
        g = _g_image(d[keep], a[keep]) * ref[keep][:, None]  # g d_card: right-hand side 1
        design = np.column_stack([g[:, 0] ** 2, 2.0 * g[:, 0] * g[:, 1], g[:, 1] ** 2])
        sv = np.linalg.svd(design, compute_uv=False)
        if sv[-1] < 0.05 * sv[0]:
            raise CalibrationError(
                "the card's planes lie along too few distinct directions to separate a "
                "distortion from the scale (a zone axis with three or more plane directions is "
                "needed)"
            )
        q, *_ = np.linalg.lstsq(design, np.ones(len(g)), rcond=None)
        qm = np.array([[q[0], q[1]], [q[1], q[2]]])
        w, v = np.linalg.eigh(qm)
        if not np.all(w > 0):
            raise CalibrationError(
                "the planes assigned to the card give no consistent distortion (check the card)"
            )
        s = (v * (1.0 / np.sqrt(w))) @ v.T  # Q^(-1/2)
        rel = np.full(len(d), np.inf)
        rel[valid] = _residuals(d[valid], a[valid], ref[valid], s)
        mad = float(np.median(np.abs(rel[keep] - np.median(rel[keep]))))
        lim = OUTLIER_SIGMAS * max(1.4826 * mad, 0.003)
        ok = valid & (np.abs(rel) <= lim)  # a plane dropped earlier may come back
        if np.array_equal(ok, keep):
            return s, keep
        keep = ok
    return s, keep


def _residuals(d: np.ndarray, a: np.ndarray, ref: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Relative spacing residuals ``(d_true - d_card) / d_card`` after the correction ``S``."""
    g_true = _g_image(d, a) @ np.linalg.inv(s).T
    return (1.0 / np.linalg.norm(g_true, axis=1) - ref) / ref


def measure_distortion(result: Any, card_id: str) -> DistortionFit:
    """Measure the image's distortion from the planes a known card indexes in it.

    Parameters
    ----------
    result : AnalysisResult
        An analysis of the image (:func:`hrtem_core.analysis.analyze_image`) with the card
        enabled. Every window where an angle-confirmed hypothesis of the card exists counts,
        named or not (a distorted window is often left ``spacing-only``).
    card_id : str
        The card of the crystal the image shows.

    Returns
    -------
    DistortionFit

    Raises
    ------
    CalibrationError
        No window has an angle-confirmed hypothesis of the card, the planes lie along fewer than
        three directions, or the stretch found is beyond :data:`MAX_STRETCH_DEV` or
        :data:`MAX_ANISOTROPY`.
    """
    card_id = str(card_id).strip()
    d, a, ref, win = _planes_of_card(result, card_id)
    if len(d) == 0:
        raise CalibrationError(
            f"no window of this image has planes and angles that card {card_id} explains: "
            "analyse an image of that crystal with the card enabled, at a pixel size within the "
            "spacing tolerance (3 %) of the right one"
        )
    s, keep = fit_stretch(d, a, ref)
    stretch = (float(s[0, 0]), float(s[0, 1]), float(s[1, 1]))
    stretch_matrix(stretch)  # within MAX_STRETCH_DEV and MAX_ANISOTROPY
    before = (d[keep] - ref[keep]) / ref[keep]
    after = _residuals(d[keep], a[keep], ref[keep], s)
    return DistortionFit(
        stretch=stretch,
        card_id=card_id,
        n_planes=int(keep.sum()),
        n_windows=len(np.unique(win[keep])),
        n_directions=_n_directions(a[keep]),
        rms_before_rel=float(np.sqrt(np.mean(before**2))),
        rms_after_rel=float(np.sqrt(np.mean(after**2))),
        n_windows_with_planes=sum(len(wi.planes) >= 2 for wi in result.index),
    )


def _symmetric_part(m: np.ndarray) -> np.ndarray:
    """The symmetric factor ``U`` of the polar decomposition ``m = R U`` (a rotation of the whole
    image changes no spacing or angle)."""
    w, v = np.linalg.eigh(m.T @ m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def calibrate_distortion(
    micrograph: Any,
    card_id: str,
    *,
    analyze: Callable[[Any], Any],
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = 5e-4,
    progress: Callable[[float, str], None] | None = None,
) -> DistortionFit:
    """Measure the distortion of an image of a known crystal, iterating to convergence.

    One pass of :func:`measure_distortion` is biased when the distortion is large: planes more
    than the spacing tolerance off the card are not assigned to it, so the fit sees only the
    planes that already agree. Each round therefore corrects the *original* image with the
    stretch found so far (:func:`undistort`), analyses it again and refines the stretch, until it
    changes by less than ``tolerance`` (in every entry) or after ``max_iterations`` rounds.

    Parameters
    ----------
    micrograph : Micrograph
        The image at the file's (or the user's) calibration.
    card_id : str
        The card of the crystal it shows.
    analyze : callable, keyword-only
        ``analyze(micrograph) -> AnalysisResult`` with the card enabled (the parameters the
        image will be analysed with).
    max_iterations : int, keyword-only
        Rounds at most (default :data:`MAX_ITERATIONS`).
    tolerance : float, keyword-only
        Convergence: largest change of an entry of ``S`` between rounds (default 5e-4).
    progress : callable, keyword-only
        ``progress(fraction_done, message)``.

    Returns
    -------
    DistortionFit
        ``stretch`` the total ``S`` relative to the given calibration; ``rms_before_rel`` from
        the first round (the given calibration), the rest from the last round.

    Raises
    ------
    CalibrationError
        As :func:`measure_distortion` (on the first round: the card does not explain the image);
        a stretch beyond :data:`MAX_STRETCH_DEV` or :data:`MAX_ANISOTROPY`; at the end, the card
        explaining fewer than :data:`MIN_COVERAGE` of the windows with two or more planes.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    total = np.eye(2)
    current = micrograph
    first: DistortionFit | None = None
    fit: DistortionFit | None = None
    for it in range(1, max_iterations + 1):
        if progress is not None:
            progress((it - 1) / max_iterations, f"round {it}: analysing")
        fit = measure_distortion(analyze(current), card_id)
        first = first or fit
        new = _symmetric_part(fit.matrix @ total)
        change = float(np.max(np.abs(new - total)))
        total = new
        stretch = (float(total[0, 0]), float(total[0, 1]), float(total[1, 1]))
        stretch_matrix(stretch)  # the accumulated stretch stays plausible
        fit = dataclasses.replace(
            fit, stretch=stretch, rms_before_rel=first.rms_before_rel, n_iterations=it
        )
        if change < tolerance:
            break
        current = undistort(micrograph, stretch)
    if progress is not None:
        progress(1.0, "done")
    assert fit is not None
    if fit.coverage < MIN_COVERAGE:
        raise CalibrationError(
            f"card {fit.card_id} explains only {fit.n_windows} of the "
            f"{fit.n_windows_with_planes} windows with two or more planes, even after a fitted "
            "distortion: too few to trust the fit, no distortion was measured (is it the right "
            "card? calibrate on an image that crystal fills)"
        )
    return fit


def undistort(micrograph: Any, stretch: Sequence[float]) -> Any:
    """The micrograph resampled onto square pixels with the distortion ``S`` removed.

    Parameters
    ----------
    micrograph : Micrograph
        As read; its pixel size ``(p_y, p_x)`` [nm/px] is the file's (or the user's) calibration.
    stretch : (s_xx, s_xy, s_yy)
        ``S`` with ``x_true = S x_img`` (:class:`DistortionFit`, ``--distortion``).

    Returns
    -------
    Micrograph
        ``data`` resampled (cubic spline) on a grid of square pixels of size
        ``p = sqrt(|det(S diag(p_x, p_y))|)`` [nm/px], cropped to the largest centred rectangle
        inside the original field of view (no padding: a padded edge would add streaks to the
        FFTs of the border windows); ``pixel_size_source = "user"``; ``metadata["distortion"]``
        holds ``S`` and the original pixel size; one warning line says what was done.

    Raises
    ------
    CalibrationError
        A stretch that :func:`stretch_matrix` rejects.
    """
    from scipy import ndimage

    s = stretch_matrix(stretch)
    py, px = (float(v) for v in micrograph.pixel_size_nm)
    a = s @ np.diag([px, py])  # true nm per pixel step, (x, y) order
    p_out = math.sqrt(abs(float(np.linalg.det(a))))
    b = p_out * np.linalg.inv(a)  # output pixel (x, y) -> input pixel (x, y)
    ny, nx = micrograph.shape
    # Half-size of the output (in output pixels) so that its corners map inside the input.
    hx0, hy0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    ax, ay = hx0 * abs(a[0, 0]) / p_out, hy0 * abs(a[1, 1]) / p_out
    scale = 1.0
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            x_in = b @ np.array([sx * ax, sy * ay])
            for val, lim in ((abs(x_in[0]), hx0), (abs(x_in[1]), hy0)):
                if val > 0:
                    scale = min(scale, lim / val)
    out_nx = max(math.floor(2 * scale * ax) + 1, 2)
    out_ny = max(math.floor(2 * scale * ay) + 1, 2)
    # scipy works in (row, col) = (y, x): swap the axes of B.
    m_rc = np.array([[b[1, 1], b[1, 0]], [b[0, 1], b[0, 0]]])
    c_in = np.array([(ny - 1) / 2.0, (nx - 1) / 2.0])
    c_out = np.array([(out_ny - 1) / 2.0, (out_nx - 1) / 2.0])
    data = ndimage.affine_transform(
        np.asarray(micrograph.data, dtype=np.float32),
        m_rc,
        offset=c_in - m_rc @ c_out,
        output_shape=(out_ny, out_nx),
        order=3,
        mode="nearest",
        prefilter=True,
    ).astype(np.float32)
    meta = dict(micrograph.metadata)
    meta["distortion"] = {
        "stretch_sxx_sxy_syy": [float(s[0, 0]), float(s[0, 1]), float(s[1, 1])],
        "pixel_size_nm_before": [py, px],
        "shape_before": [ny, nx],
    }
    note = (
        f"resampled to remove a scan distortion (SXX,SXY,SYY = {s[0, 0]:.4f},{s[0, 1]:.4f},"
        f"{s[1, 1]:.4f}): {ny}x{nx} px at {py:.5g}x{px:.5g} nm/px -> {out_ny}x{out_nx} px at "
        f"{p_out:.5g} nm/px"
    )
    return dataclasses.replace(
        micrograph,
        data=data,
        pixel_size_nm=(p_out, p_out),
        metadata=meta,
        warnings=(*micrograph.warnings, note),
        pixel_size_source="user",
    )


def parse_stretch(text: str) -> tuple[float, float, float]:
    """``"SXX,SXY,SYY"`` -> the checked stretch (one-line :class:`CalibrationError` otherwise)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise CalibrationError(
            f"a scan distortion is three numbers SXX,SXY,SYY (e.g. 1.0,0.012,0.98), got {text!r}"
        )
    stretch_matrix(vals)
    return vals  # type: ignore[return-value]


__all__ = [
    "MAX_ANISOTROPY",
    "MAX_ITERATIONS",
    "MAX_STRETCH_DEV",
    "MIN_COVERAGE",
    "DistortionFit",
    "calibrate_distortion",
    "fit_stretch",
    "measure_distortion",
    "parse_stretch",
    "stretch_matrix",
    "undistort",
]
