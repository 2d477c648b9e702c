"""Window grid, batched spectra and band geometry (hrtem_core.windows): known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal.windows import hann

from hrtem_core.errors import AnalysisParameterError
from hrtem_core.windows import (
    MIN_WINDOW_PX,
    BandGeometry,
    band_geometry,
    band_spectra,
    crop_band,
    extract_windows,
    frequency_nm_inv,
    grid_band_spectra,
    hann_2d,
    image_offset,
    iter_window_batches,
    log_band,
    log_band_from_crop,
    resample_band,
    row_median,
    window_grid,
    window_spectra,
    window_view,
)

# --- grid ------------------------------------------------------------------------------------


def test_grid_counts_2048_w256_s64() -> None:
    grid = window_grid((2048, 2048), window_px=256, stride_px=64)
    assert (grid.n_rows, grid.n_cols) == (29, 29)
    assert grid.n_windows == 841
    assert grid.covered_shape == (2048, 2048)


def test_grid_default_stride_is_half_window() -> None:
    grid = window_grid((1000, 700), window_px=256)
    assert grid.stride_px == 128
    # (1000 - 256) // 128 + 1 = 6 rows, (700 - 256) // 128 + 1 = 4 columns
    assert (grid.n_rows, grid.n_cols) == (6, 4)
    # the uncovered right/bottom margins are narrower than the stride
    cy, cx = grid.covered_shape
    assert (cy, cx) == (5 * 128 + 256, 3 * 128 + 256)
    assert 1000 - cy < 128 and 700 - cx < 128


def test_grid_origins_centres_row_major() -> None:
    grid = window_grid((300, 400), window_px=100, stride_px=50)
    assert (grid.n_rows, grid.n_cols) == (5, 7)
    origins = grid.origins
    assert origins.shape == (35, 2)
    np.testing.assert_array_equal(origins[0], [0, 0])
    np.testing.assert_array_equal(origins[1], [0, 50])  # row-major: next column first
    np.testing.assert_array_equal(origins[7], [50, 0])
    np.testing.assert_array_equal(origins[-1], [200, 300])
    np.testing.assert_allclose(grid.centers[0], [49.5, 49.5])
    np.testing.assert_allclose(grid.centers[-1], [249.5, 349.5])
    rc = grid.row_col
    np.testing.assert_array_equal(rc[8], [1, 1])
    np.testing.assert_array_equal(origins, rc * 50)


@pytest.mark.parametrize("stride", [0, -64, 1.5, True, "64"])
def test_grid_rejects_bad_stride(stride) -> None:
    with pytest.raises(AnalysisParameterError, match="stride"):
        window_grid((512, 512), window_px=128, stride_px=stride)


@pytest.mark.parametrize("window", [0, -256, 2.5, None])
def test_grid_rejects_bad_window(window) -> None:
    with pytest.raises(AnalysisParameterError, match="window size"):
        window_grid((512, 512), window_px=window)


def test_grid_rejects_window_larger_than_image_and_tiny_window() -> None:
    with pytest.raises(AnalysisParameterError, match="smaller than one"):
        window_grid((200, 512), window_px=256)
    with pytest.raises(AnalysisParameterError, match="too small"):
        window_grid((512, 512), window_px=MIN_WINDOW_PX - 1)
    with pytest.raises(AnalysisParameterError, match="2-D"):
        window_grid((3, 512, 512), window_px=128)


def test_non_power_of_two_window_allowed() -> None:
    grid = window_grid((500, 500), window_px=100, stride_px=30)
    assert grid.window_px == 100
    assert grid.n_rows == (500 - 100) // 30 + 1 == 14
    image = np.arange(500 * 500, dtype=np.float32).reshape(500, 500)
    wins = extract_windows(image, grid)
    assert wins.shape == (196, 100, 100)
    spec = window_spectra(wins[:3])
    assert spec.shape == (3, 100, 100)


# --- windows ---------------------------------------------------------------------------------


def test_extract_windows_copies_the_right_pixels(rng) -> None:
    image = rng.standard_normal((260, 330)).astype(np.float32)
    grid = window_grid(image.shape, window_px=64, stride_px=40)
    wins = extract_windows(image, grid)
    assert wins.dtype == np.float32 and wins.flags.c_contiguous
    for i, (r, c) in enumerate(grid.origins):
        np.testing.assert_array_equal(wins[i], image[r : r + 64, c : c + 64])
    sub = extract_windows(image, grid, indices=np.array([5, 2]))
    np.testing.assert_array_equal(sub, wins[[5, 2]])
    batches = list(iter_window_batches(image, grid, batch_size=7))
    np.testing.assert_array_equal(np.concatenate([i for i, _ in batches]), np.arange(len(wins)))
    np.testing.assert_array_equal(np.concatenate([w for _, w in batches]), wins)
    with pytest.raises(AnalysisParameterError, match="does not match"):
        extract_windows(image[:-1], grid)


def test_window_view_is_a_copy_free_view_of_the_grid(rng) -> None:
    image = rng.standard_normal((260, 330)).astype(np.float32)
    grid = window_grid(image.shape, window_px=64, stride_px=40)
    view = window_view(image, grid)
    assert view.shape == (grid.n_rows, grid.n_cols, 64, 64)
    assert np.shares_memory(view, image)
    for i, (r, c) in enumerate(grid.origins):
        rr, cc = grid.row_col[i]
        np.testing.assert_array_equal(view[rr, cc], image[r : r + 64, c : c + 64])
    with pytest.raises(AnalysisParameterError, match="does not match"):
        window_view(image[:, :-1], grid)


# --- spectra ---------------------------------------------------------------------------------


@pytest.mark.parametrize("w", [64, 100, 63])
def test_spectra_equal_numpy_fft_reference(rng, w) -> None:
    wins = rng.standard_normal((4, w, w)).astype(np.float32)
    x = wins.astype(np.float64) - wins.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    h = hann(w, sym=False)
    ref = np.abs(np.fft.fftshift(np.fft.fft2(x * np.outer(h, h)), axes=(-2, -1)))
    got = window_spectra(wins)
    assert got.shape == (4, w, w) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4 * ref.max())
    raw = np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1)))
    np.testing.assert_allclose(window_spectra(wins, apodize=False), raw, atol=2e-4 * raw.max())


def test_spectrum_of_a_cosine_peaks_at_its_frequency_with_dc_at_centre() -> None:
    w = 128
    y, x = np.mgrid[0:w, 0:w]
    ky, kx = -9, 14  # FFT px from the DC
    win = np.cos(2 * np.pi * (ky * y + kx * x) / w).astype(np.float32)
    spec = window_spectra(win[None])[0]
    c = w // 2
    peak = np.unravel_index(np.argmax(spec), spec.shape)
    assert {(peak[0] - c, peak[1] - c), (c - peak[0], c - peak[1])} == {(ky, kx), (-ky, -kx)}
    np.testing.assert_allclose(spec[c + ky, c + kx], spec[c - ky, c - kx], rtol=1e-6)
    # Hann main lobe: the neighbours are half the peak; the DC is removed.
    np.testing.assert_allclose(spec[c + ky, c + kx + 1] / spec[c + ky, c + kx], 0.5, atol=1e-3)
    assert spec[c, c] < 1e-3 * spec[c + ky, c + kx]


def test_hann_2d_is_separable_and_peaks_at_one() -> None:
    h = hann_2d(64)
    assert h.shape == (64, 64) and h.dtype == np.float32
    np.testing.assert_allclose(h.max(), 1.0)
    np.testing.assert_allclose(h, np.outer(h[32], h[:, 32]), atol=1e-7)


def test_spectra_reject_non_square_windows() -> None:
    with pytest.raises(AnalysisParameterError, match="shape"):
        window_spectra(np.zeros((2, 64, 32), dtype=np.float32))


# --- band geometry -----------------------------------------------------------------------------


def test_band_radius_and_nyquist_cap() -> None:
    g = band_geometry(256, (0.0168, 0.0168), d_min_nm=0.1)
    # ceil(256 * 0.0168 / 0.1) + 1 = ceil(43.008) + 1 = 45
    assert (g.radius_y, g.radius_x, g.size) == (45, 45, 64)
    g2 = band_geometry(256, (0.02, 0.0204), d_min_nm=0.1)
    assert (g2.radius_y, g2.radius_x) == (53, 54)  # ceil(51.2)+1, ceil(52.224)+1
    g3 = band_geometry(128, (0.05, 0.05), d_min_nm=0.1)
    assert (g3.radius_y, g3.radius_x) == (63, 63)  # capped at w // 2 - 1 (Nyquist)
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(AnalysisParameterError, match="d_min"):
            band_geometry(256, (0.02, 0.02), d_min_nm=bad)


def test_band_mapping_round_trip_and_dc(rng) -> None:
    g = band_geometry(256, (0.02, 0.03), d_min_nm=0.1)
    ky = rng.uniform(-g.radius_y, g.radius_y, 50)
    kx = rng.uniform(-g.radius_x, g.radius_x, 50)
    r, c = g.to_band(ky, kx)
    back_y, back_x = g.from_band(r, c)
    np.testing.assert_allclose(back_y, ky, atol=1e-12)
    np.testing.assert_allclose(back_x, kx, atol=1e-12)
    assert g.to_band(0.0, 0.0) == ((g.size - 1) / 2, (g.size - 1) / 2)
    # the band edge pixels map onto the edge pixels of the grid (pixel-centre alignment)
    r_edge, c_edge = g.to_band(g.radius_y + 0.5, g.radius_x + 0.5)
    np.testing.assert_allclose([r_edge, c_edge], [g.size - 0.5, g.size - 0.5])
    assert g.scale_y == pytest.approx(64 / (2 * g.radius_y + 1))


def test_frequency_per_axis_pixel_size() -> None:
    gy, gx = frequency_nm_inv(
        np.array([-10.0]), np.array([20.0]), window_px=256, pixel_size_nm=(0.02, 0.025)
    )
    np.testing.assert_allclose(gy, -10 / (256 * 0.02))
    np.testing.assert_allclose(gx, 20 / (256 * 0.025))


def test_log_band_shape_standardized_and_from_crop(rng) -> None:
    wins = rng.standard_normal((6, 256, 256)).astype(np.float32)
    g = band_geometry(256, (0.02, 0.02))
    spec = window_spectra(wins)
    lb = log_band(spec, g)
    assert lb.shape == (6, 64, 64) and lb.dtype == np.float32
    flat = lb.reshape(6, -1)
    np.testing.assert_allclose(np.median(flat, axis=1), 0.0, atol=1e-5)
    mad = 1.4826 * np.median(np.abs(flat), axis=1)
    np.testing.assert_allclose(mad, 1.0, atol=1e-3)
    np.testing.assert_array_equal(log_band_from_crop(crop_band(spec, g), g), lb)
    with pytest.raises(AnalysisParameterError, match="band"):
        log_band_from_crop(spec, g)


@pytest.mark.parametrize(
    ("w", "p"),
    [(256, (0.0168, 0.0168)), (128, (0.05, 0.049)), (100, (0.02, 0.03)), (63, (0.01, 0.01))],
)
def test_band_spectra_equal_cropped_full_spectra(rng, w, p) -> None:
    wins = rng.standard_normal((3, w, w)).astype(np.float32)
    g = band_geometry(w, p)
    full = crop_band(window_spectra(wins), g)
    fast = band_spectra(wins, g)
    assert fast.shape == (3, 2 * g.radius_y + 1, 2 * g.radius_x + 1)
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-5 * full.max())
    with pytest.raises(AnalysisParameterError, match="band geometry"):
        band_spectra(wins, band_geometry(w + 2, p))


# --- resampling to the band grid ----------------------------------------------------------------


@pytest.mark.parametrize("n_in", [65, 103, 255, 511])
def test_resample_band_max_pools_every_fft_pixel_into_its_nearest_band_pixel(rng, n_in) -> None:
    """Coarser than the band grid: each band pixel is the max of the FFT pixels mapped to it."""
    size = 64
    r = (n_in - 1) // 2
    geom = BandGeometry(window_px=2 * n_in, radius_y=r, radius_x=r, size=size)
    stack = rng.random((2, n_in, n_in)).astype(np.float32)
    out = resample_band(stack, size)
    assert out.shape == (2, size, size)
    k = np.arange(-r, r + 1)
    idx = np.rint(geom.to_band(k, k)[0]).astype(int)  # nearest band pixel of each FFT pixel
    assert idx.min() == 0 and idx.max() == size - 1
    expected = np.full((2, size, size), -np.inf, dtype=np.float32)
    np.maximum.at(expected, (slice(None), idx[:, None], idx[None, :]), stack)
    np.testing.assert_array_equal(out, expected)


def test_resample_band_keeps_a_one_pixel_spot_that_sampling_would_miss() -> None:
    """A spot one FFT pixel wide survives at 4 FFT px per band pixel (bilinear sampling loses it)."""
    stack = np.zeros((1, 255, 255), dtype=np.float32)
    stack[0, 127 + 9, 127 - 22] = 1.0
    out = resample_band(stack, 64)
    assert out.max() == 1.0 and np.count_nonzero(out) == 1


def test_resample_band_is_bilinear_where_the_band_is_finer() -> None:
    """Finer than the band grid: a linear ramp stays linear, pixel centres aligned."""
    n_in, size = 27, 64
    ramp = np.broadcast_to(np.arange(n_in, dtype=np.float32), (1, n_in, n_in)).copy()
    out = resample_band(ramp, size)
    pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
    np.testing.assert_allclose(out[0], np.broadcast_to(pos, (size, size)), atol=1e-5)


# --- shared row transforms and fast medians ----------------------------------------------------


@pytest.mark.parametrize(
    ("w", "s", "p", "apodize"),
    [
        (256, 64, (0.02, 0.02), True),
        (128, 96, (0.03, 0.031), True),
        (200, 50, (0.02, 0.02), True),
        (128, 128, (0.005, 0.005), True),  # band capped at Nyquist, no overlap
        (128, 32, (0.02, 0.02), False),
    ],
)
def test_grid_band_spectra_equal_per_window_band_spectra(rng, w, s, p, apodize) -> None:
    # Counts with a large offset and a lattice: the mean subtraction must still be exact.
    ny, nx = 3 * w + 17, 2 * w + 5
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = 500.0 + 20 * np.cos(2 * np.pi * (yy * 0.11 + xx * 0.07))
    image = rng.poisson(image + 30 * rng.random((ny, nx))).astype(np.float32)
    grid = window_grid(image.shape, window_px=w, stride_px=s)
    geometry = band_geometry(w, p)
    windows = extract_windows(image, grid)
    ref = band_spectra(windows, geometry, apodize=apodize)
    got = grid_band_spectra(image, grid, geometry, apodize=apodize)
    n_y, n_x = 2 * geometry.radius_y + 1, 2 * geometry.radius_x + 1
    assert got.shape == ref.shape == (grid.n_windows, n_y, n_x)
    # Against the float64 transform of each mean-subtracted window: at least as accurate as
    # the per-window float32 transform, everywhere (next to the DC included).
    x = windows.astype(np.float64)
    x -= x.mean(axis=(1, 2), keepdims=True)
    if apodize:
        x *= hann_2d(w).astype(np.float64)
    truth = crop_band(np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))), geometry)
    err, err_ref = np.abs(got - truth), np.abs(ref - truth)
    assert err.max() <= 1e-6 * truth.max()
    assert err_ref.max() <= 1e-5 * truth.max()
    # Pixel by pixel (next to the DC included) within 0.1 % of the float64 value.
    assert (err / np.maximum(truth, 1.0)).max() < 1e-3
    # Blocks of rows: bit for bit the windows of the whole grid.
    for rows in ((0, 1), (1, grid.n_rows), (grid.n_rows - 1, grid.n_rows)):
        part = grid_band_spectra(image, grid, geometry, rows=rows, apodize=apodize)
        np.testing.assert_array_equal(part, got[rows[0] * grid.n_cols : rows[1] * grid.n_cols])


def test_image_offset_is_near_the_mean_and_the_band_does_not_depend_on_it(rng) -> None:
    image = rng.poisson(300.0, (520, 530)).astype(np.float32)
    assert image_offset(image) == pytest.approx(float(image.mean()), rel=0.01)
    grid = window_grid(image.shape, window_px=128, stride_px=64)
    geometry = band_geometry(128, (0.02, 0.02))
    a = grid_band_spectra(image, grid, geometry)
    b = grid_band_spectra(image, grid, geometry, offset=0.0)
    # The offset only sets the float32 rounding of the large DC term, which reaches the
    # pixels next to the DC (worse without it); elsewhere the bands agree.
    far = np.ones(a.shape[1:], bool)
    far[
        geometry.radius_y - 1 : geometry.radius_y + 2, geometry.radius_x - 1 : geometry.radius_x + 2
    ] = False
    np.testing.assert_allclose(a[:, far], b[:, far], rtol=1e-4, atol=1e-5 * a.max())


def test_grid_band_spectra_rejects_bad_input(rng) -> None:
    image = rng.random((300, 300)).astype(np.float32)
    grid = window_grid(image.shape, window_px=128, stride_px=64)
    geometry = band_geometry(128, (0.02, 0.02))
    with pytest.raises(AnalysisParameterError, match="does not match the window grid"):
        grid_band_spectra(image[:-1], grid, geometry)
    with pytest.raises(AnalysisParameterError, match="band geometry"):
        grid_band_spectra(image, grid, band_geometry(256, (0.02, 0.02)))
    for rows in ((1, 1), (-1, 2), (0, grid.n_rows + 1)):
        with pytest.raises(AnalysisParameterError, match="outside"):
            grid_band_spectra(image, grid, geometry, rows=rows)


def test_row_median_equals_numpy_median(rng) -> None:
    for _ in range(100):
        shape = (int(rng.integers(1, 6)), int(rng.integers(1, 200)))
        for dtype in (np.float32, np.float64):
            values = (rng.standard_normal(shape) * 10 ** rng.uniform(-3, 3)).astype(dtype)
            got = row_median(values)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, np.median(values, axis=1))
    ints = rng.integers(0, 10, (4, 6))
    np.testing.assert_array_equal(row_median(ints), np.median(ints, axis=1))
    np.testing.assert_array_equal(row_median(np.array([[3.0, 1.0, 2.0, 10.0]])), [2.5])
    for bad in (np.zeros(5), np.zeros((2, 0)), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="row_median"):
            row_median(bad)


def test_flat_windows_by_blocks_of_rows_equal_the_whole_grid() -> None:
    """The flat test of a block of grid rows equals the whole grid's (one image-wide scale)."""
    from hrtem_core.windows import flat_windows

    rng = np.random.default_rng(3)
    img = np.zeros((640, 512), np.float32)
    img[300:420, 100:300] = rng.normal(50.0, 2.0, (120, 200))
    grid = window_grid(img.shape, window_px=128, stride_px=64)
    whole = flat_windows(img, grid)
    assert whole.any() and not whole.all()
    parts = [
        flat_windows(img, grid, rows=(a, min(a + 3, grid.n_rows))) for a in range(0, grid.n_rows, 3)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(flat_windows(img * 7.0 + 1e4, grid), whole)
