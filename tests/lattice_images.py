"""Synthetic lattice images and spot pairs of a known phase in a known zone (test helpers).

``zone_pairs`` projects chosen reflections (hkl) of a phase, seen down a zone axis [uvw], onto the
image plane and returns exact :class:`~hrtem_core.spots.SpotPair` objects (optionally with noise).
``lattice_image`` renders the same projected reflections as a sum of cosines inside a crystal region
on a noisy amorphous-like background, so the whole pipeline can be checked against a known phase,
zone axis and crystal region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hrtem_core.spots import SpotPair


def _zone_frame(cell, uvw: Sequence[int], ref_hkl: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(cell.direct_cartesian(np.asarray(uvw, dtype=float)), dtype=float)
    n /= np.linalg.norm(n)
    g0 = np.asarray(cell.reciprocal_cartesian(np.asarray(ref_hkl, dtype=float)), dtype=float)
    e1 = g0 - (g0 @ n) * n
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(n, e1)


def projected_g(
    cell, uvw: Sequence[int], hkls: Sequence[Sequence[int]], *, rotation_deg: float = 0.0
) -> np.ndarray:
    """Image-frame spatial frequencies ``(gy, gx)`` [1/nm] of reflections in zone [uvw], shape (m, 2).

    ``gy`` points down (image rows). Raises AssertionError for a reflection outside the zone.
    """
    e1, e2 = _zone_frame(cell, uvw, hkls[0])
    n = np.cross(e1, e2)
    out = []
    rot = np.radians(rotation_deg)
    for h in hkls:
        g = np.asarray(cell.reciprocal_cartesian(np.asarray(h, dtype=float)), dtype=float)
        assert abs(g @ n) < 1e-9 * np.linalg.norm(g), f"{h} is not in zone {uvw}"
        phi = np.arctan2(g @ e2, g @ e1) + rot
        gm = float(np.hypot(g @ e1, g @ e2))
        # Counter-clockwise on screen (y down): gy = -|g| sin(phi).
        out.append((-gm * np.sin(phi), gm * np.cos(phi)))
    return np.asarray(out)


def pair_from_g(gy: float, gx: float, *, intensity: float = 1.0, snr: float = 20.0) -> SpotPair:
    """An exact SpotPair for the spatial frequency (gy, gx) [1/nm] (canonical half plane)."""
    if gy > 0 or (gy == 0 and gx < 0):
        gy, gx = -gy, -gx
    gm = float(np.hypot(gy, gx))
    angle = float(np.degrees(np.arctan2(-gy, gx)) % 180.0)
    return SpotPair(
        ky=0.0,
        kx=0.0,
        l_px=0.0,
        gy_nm_inv=float(gy),
        gx_nm_inv=float(gx),
        frequency_nm_inv=gm,
        spacing_nm=1.0 / gm,
        angle_deg=angle,
        intensity=float(intensity),
        snr=float(snr),
    )


def zone_pairs(
    phase,
    uvw: Sequence[int],
    hkls: Sequence[Sequence[int]],
    *,
    rotation_deg: float = 0.0,
    rng: np.random.Generator | None = None,
    spacing_noise: float = 0.0,
    angle_noise_deg: float = 0.0,
) -> list[SpotPair]:
    """SpotPairs of reflections ``hkls`` of ``phase`` in zone ``uvw`` (relative/absolute noise, uniform)."""
    g = projected_g(phase.cell, uvw, hkls, rotation_deg=rotation_deg)
    out = []
    for i, (gy, gx) in enumerate(g):
        gm = float(np.hypot(gy, gx))
        phi = float(np.arctan2(-gy, gx))
        if rng is not None:
            gm /= 1.0 + rng.uniform(-spacing_noise, spacing_noise)
            phi += np.radians(rng.uniform(-angle_noise_deg, angle_noise_deg))
        out.append(pair_from_g(-gm * np.sin(phi), gm * np.cos(phi), intensity=10.0 - i))
    return out


def lattice_image(
    phase,
    uvw: Sequence[int],
    hkls: Sequence[Sequence[int]],
    *,
    shape: tuple[int, int] = (512, 512),
    pixel_size_nm: tuple[float, float] = (0.02, 0.02),
    rotation_deg: float = 0.0,
    region: np.ndarray | None = None,
    amplitude: float = 1.0,
    noise: float = 0.5,
    seed: int = 0,
    stretch: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image (ny, nx) float32 of the lattice ``hkls`` of ``phase`` in zone ``uvw`` inside ``region``.

    Every listed reflection (and its Friedel mate) is a cosine of amplitude ``amplitude`` with a
    random phase; the background is smoothed Gaussian noise of standard deviation ``noise`` plus
    white noise. Returns ``(image, region)`` with region (ny, nx) bool (default: the left half).
    ``stretch = (s_xx, s_xy, s_yy)``: the image is distorted, ``x_true = S x_img``
    (:mod:`hrtem_core.distortion`), so each reflection shows at ``g_img = S g_true``.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    if region is None:
        region = np.zeros(shape, dtype=bool)
        region[:, : nx // 2] = True
    g = projected_g(phase.cell, uvw, hkls, rotation_deg=rotation_deg)
    if stretch is not None:
        sxx, sxy, syy = stretch
        gx = sxx * g[:, 1] + sxy * g[:, 0]
        gy = sxy * g[:, 1] + syy * g[:, 0]
        g = np.column_stack([gy, gx])
    yy = np.arange(ny)[:, None] * pixel_size_nm[0]
    xx = np.arange(nx)[None, :] * pixel_size_nm[1]
    lattice = np.zeros(shape, dtype=np.float64)
    for gy, gx in g:
        lattice += amplitude * np.cos(2 * np.pi * (gy * yy + gx * xx) + rng.uniform(0, 2 * np.pi))
    white = rng.normal(0.0, 1.0, shape)
    # Amorphous-like background: noise low-passed to a few pixels (a broad ring-free spectrum).
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(rng.normal(0.0, 1.0, shape), 1.5)
    smooth *= noise / max(smooth.std(), 1e-12)
    image = 10.0 + region * lattice + smooth + 0.5 * noise * white
    return image.astype(np.float32), region
