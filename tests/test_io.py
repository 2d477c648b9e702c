"""hrtem_core.io: known answers on files the tests write, and every row of ../shared/fixtures."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from hrtem_core import io as hio
from hrtem_core.errors import CalibrationError, ReadError
from hrtem_core.io import Micrograph, load_image, validate_pixel_size

# ------------------------------------------------------------------------------------------
# Writers used by the tests (also imported by tests/test_bad_input_files.py)
# ------------------------------------------------------------------------------------------


def write_imagej_tiff(
    path: Path,
    data: np.ndarray,
    *,
    pixel_yx: tuple[float, float] | None,
    unit: str | None = "nm",
) -> Path:
    """ImageJ hyperstack TIFF: ``unit`` in the description, pixels per unit in X/YResolution."""
    kwargs: dict = {"imagej": True}
    metadata: dict = {}
    if data.ndim == 3:
        metadata["axes"] = "ZYX"
    if pixel_yx is not None:
        kwargs["resolution"] = (1.0 / pixel_yx[1], 1.0 / pixel_yx[0])  # (x, y) per unit
    if unit is not None:
        metadata["unit"] = unit
    tifffile.imwrite(path, data, metadata=metadata, **kwargs)
    return path


def write_berkeley_emd(
    path: Path,
    data: np.ndarray | None,
    *,
    steps: tuple[float, ...],
    units: tuple[str, ...],
    shape: tuple[int, ...] | None = None,
    dtype: str = "float32",
    microscope: dict | None = None,
) -> Path:
    """Berkeley EMD v0.2 (h5py): /data/image/{data, dim1, dim2, ...} with ``units`` attributes.

    With ``data=None`` the data set is declared (``shape``, chunked) but never written, so the
    file stays tiny whatever the shape: used for the size-limit test.
    """
    with h5py.File(path, "w") as handle:
        handle.attrs["version_major"] = 0
        handle.attrs["version_minor"] = 2
        group = handle.create_group("data/image")
        group.attrs["emd_group_type"] = 1
        if data is None:
            assert shape is not None
            group.create_dataset("data", shape=shape, dtype=dtype, chunks=True)
        else:
            shape = data.shape
            group.create_dataset("data", data=data)
        for axis, (n, step, unit) in enumerate(zip(shape, steps, units, strict=True)):
            dim = group.create_dataset(f"dim{axis + 1}", data=np.arange(n) * step)
            dim.attrs["name"] = f"axis{axis}"
            dim.attrs["units"] = unit
        scope = handle.create_group("microscope")
        for key, value in (microscope or {}).items():
            scope.attrs[key] = value
    return path


def lattice(shape=(96, 80), period_px=(8.0, 5.0), seed=0, dtype=np.float32) -> np.ndarray:
    """Cosine fringes plus seeded noise: a recognisable, non-constant test image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = 100 + 40 * np.cos(2 * np.pi * yy / period_px[0]) * np.cos(2 * np.pi * xx / period_px[1])
    image = image + rng.normal(0, 2, shape)
    if np.issubdtype(dtype, np.integer):
        image = np.clip(np.round(image), 0, np.iinfo(dtype).max)
    return image.astype(dtype)


# ------------------------------------------------------------------------------------------
# TIFF
# ------------------------------------------------------------------------------------------


def imwrite(path: Path, data: np.ndarray) -> None:
    """Write a PNG/JPEG/BMP/GIF with Pillow (a stack of 2-D frames: an animated GIF)."""
    if data.ndim == 3 and data.shape[-1] not in (3, 4):
        frames = [Image.fromarray(f) for f in data]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    else:
        Image.fromarray(data).save(path)


def test_imagej_tiff_pixel_size_known_answer(tmp_path: Path) -> None:
    data = lattice()
    path = write_imagej_tiff(tmp_path / "au.tif", data, pixel_yx=(0.025, 0.025), unit="nm")
    m = load_image(path)
    assert isinstance(m, Micrograph)
    assert m.reader == "tifffile-imagej"
    assert m.pixel_size_nm == pytest.approx((0.025, 0.025), rel=1e-6)
    assert m.pixel_size_source == "metadata"
    assert m.data.dtype == np.float32 and m.data.shape == (96, 80)
    np.testing.assert_array_equal(m.data, data)
    assert m.warnings == ()
    assert m.name == "au.tif"
    assert m.metadata["original_shape"] == [96, 80]
    assert m.metadata["original_dtype"] == "float32"


@pytest.mark.parametrize(
    ("unit", "value", "expected_nm"),
    [
        ("\\u00B5m", 2.5e-5, 0.025),  # ImageJ writes the micro sign escaped
        ("micron", 2.5e-5, 0.025),
        ("A", 0.25, 0.025),
        ("pm", 25.0, 0.025),
        ("n_m", 0.025, 0.025),
    ],
)
def test_imagej_tiff_units_converted_to_nm(
    tmp_path: Path, unit: str, value: float, expected_nm: float
) -> None:
    path = write_imagej_tiff(tmp_path / "u.tif", lattice(), pixel_yx=(value, value), unit=unit)
    m = load_image(path)
    assert m.pixel_size_nm == pytest.approx((expected_nm, expected_nm), rel=1e-6)


def test_anisotropic_pixels_kept_per_axis_with_warning(tmp_path: Path) -> None:
    path = write_imagej_tiff(tmp_path / "aniso.tif", lattice(), pixel_yx=(0.03, 0.02))
    m = load_image(path)
    assert m.pixel_size_nm == pytest.approx((0.03, 0.02), rel=1e-6)
    assert any(re.search(r"pixels are not square: y 0\.03 nm, x 0\.02 nm", w) for w in m.warnings)


def test_pixels_within_half_percent_are_square_without_warning(tmp_path: Path) -> None:
    path = write_imagej_tiff(tmp_path / "near.tif", lattice(), pixel_yx=(0.02008, 0.02))
    m = load_image(path)
    assert m.pixel_size_nm == pytest.approx((0.02008, 0.02), rel=1e-6)
    assert not any("not square" in w for w in m.warnings)


def test_tiff_without_unit_is_uncalibrated(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, lattice(), resolution=(300, 300), resolutionunit="INCH")
    with pytest.raises(CalibrationError, match=r"plain\.tif: the file has no pixel size"):
        load_image(path)
    m = load_image(path, pixel_size_nm=0.05)
    assert m.pixel_size_nm == (0.05, 0.05)
    assert m.pixel_size_source == "user"


def test_dm_written_tiff_tags(tmp_path: Path) -> None:
    path = tmp_path / "dm.tif"
    extratags = [
        (65003, "s", 0, "nm", False),
        (65004, "s", 0, "A", False),
        (65009, "d", 1, 0.02, False),
        (65010, "d", 1, 0.3, False),
    ]
    tifffile.imwrite(path, lattice(dtype=np.int16), extratags=extratags)
    m = load_image(path)
    assert m.reader == "tifffile-dm"
    assert m.pixel_size_nm == pytest.approx((0.03, 0.02), rel=1e-9)


def test_complex_tiff_refused(tmp_path: Path) -> None:
    path = tmp_path / "fft.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.complex64))
    with pytest.raises(ReadError, match=r"fft\.tif: complex data \(complex64.*not an image"):
        load_image(path, pixel_size_nm=0.02)


# ------------------------------------------------------------------------------------------
# Stacks
# ------------------------------------------------------------------------------------------


@pytest.fixture
def stack_tiff(tmp_path: Path) -> tuple[Path, np.ndarray]:
    stack = np.stack([lattice(seed=s) for s in range(4)])
    return write_imagej_tiff(tmp_path / "stack.tif", stack, pixel_yx=(0.02, 0.02)), stack


def test_stack_default_first_frame_with_warning(stack_tiff) -> None:
    path, stack = stack_tiff
    m = load_image(path)
    np.testing.assert_array_equal(m.data, stack[0])
    assert m.metadata["n_frames"] == 4 and m.metadata["frame"] == 0
    assert any("stack of 4 frames: using frame 0" in w for w in m.warnings)


def test_stack_frame_n_and_sum(stack_tiff) -> None:
    path, stack = stack_tiff
    m2 = load_image(path, frame=2)
    np.testing.assert_array_equal(m2.data, stack[2])
    assert m2.metadata["frame"] == 2
    assert not any("stack of" in w for w in m2.warnings)
    total = load_image(path, frame="sum")
    np.testing.assert_allclose(total.data, stack.astype(np.float64).sum(axis=0), rtol=1e-6)
    assert total.metadata["frame"] == "sum"
    assert total.pixel_size_nm == pytest.approx((0.02, 0.02))


def test_stack_bad_frame_choices(stack_tiff, tmp_path: Path) -> None:
    path, _ = stack_tiff
    with pytest.raises(
        ReadError, match=r"stack\.tif: frame 4 is out of range: .*4 frames \(0\.\.3\)"
    ):
        load_image(path, frame=4)
    with pytest.raises(ReadError, match=r"frame must be a frame number .* or 'sum', got 'all'"):
        load_image(path, frame="all")
    single = write_imagej_tiff(tmp_path / "one.tif", lattice(), pixel_yx=(0.02, 0.02))
    with pytest.raises(ReadError, match=r"one\.tif: frame 3 requested but the file holds a single"):
        load_image(single, frame=3)


# ------------------------------------------------------------------------------------------
# Berkeley EMD and MRC
# ------------------------------------------------------------------------------------------


def test_berkeley_emd_per_axis_units(tmp_path: Path) -> None:
    data = lattice()
    path = write_berkeley_emd(
        tmp_path / "b.emd",
        data,
        steps=(0.3, 0.02),
        units=("\u212b", "n_m"),
        microscope={"high tension": 300000.0, "name": "TEAM 0.5"},
    )
    m = load_image(path)
    assert m.reader == "ncempy-emd"
    assert m.pixel_size_nm == pytest.approx((0.03, 0.02), rel=1e-9)
    np.testing.assert_array_equal(m.data, data)
    assert m.metadata["voltage_kv"] == pytest.approx(300.0)
    assert m.metadata["microscope"] == "TEAM 0.5"
    assert any("not square" in w for w in m.warnings)


def test_berkeley_emd_stack_frames(tmp_path: Path) -> None:
    stack = np.stack([lattice(seed=s) for s in range(3)])
    path = write_berkeley_emd(
        tmp_path / "s.emd", stack, steps=(1.0, 0.2, 0.2), units=("s", "A", "A")
    )
    m = load_image(path, frame=1)
    np.testing.assert_array_equal(m.data, stack[1])
    assert m.pixel_size_nm == pytest.approx((0.02, 0.02))
    assert m.metadata["n_frames"] == 3
    total = load_image(path, frame="sum")
    np.testing.assert_allclose(total.data, stack.sum(axis=0), rtol=1e-6)


def test_berkeley_emd_reciprocal_refused_even_with_user_size(tmp_path: Path) -> None:
    path = write_berkeley_emd(
        tmp_path / "dp.emd", lattice(), steps=(0.1, 0.1), units=("1/nm", "1/nm")
    )
    with pytest.raises(CalibrationError, match=r"dp\.emd: y axis: '1/nm' is a reciprocal-space"):
        load_image(path)
    with pytest.raises(CalibrationError, match=r"reciprocal-space unit .*typed-in pixel size"):
        load_image(path, pixel_size_nm=0.02)


def test_berkeley_emd_complex_refused(tmp_path: Path) -> None:
    data = (lattice() + 1j * lattice(seed=1)).astype(np.complex64)
    path = write_berkeley_emd(tmp_path / "wave.emd", data, steps=(0.02, 0.02), units=("nm", "nm"))
    with pytest.raises(ReadError, match=r"wave\.emd: complex data .*save the real-space image"):
        load_image(path)


def test_mrc_angstrom_voxels(tmp_path: Path) -> None:
    from ncempy.io import mrc

    stack = np.stack([lattice(seed=s) for s in range(2)])
    path = tmp_path / "t.mrc"
    mrc.mrcWriter(path, stack, (1.0, 0.25, 0.25))
    m = load_image(path, frame=1)
    assert m.reader == "ncempy-mrc"
    assert m.pixel_size_nm == pytest.approx((0.025, 0.025), rel=1e-6)
    np.testing.assert_array_equal(m.data, stack[1])


# ------------------------------------------------------------------------------------------
# PNG / JPEG, RGB, dtypes
# ------------------------------------------------------------------------------------------


def test_png_needs_a_user_pixel_size(tmp_path: Path) -> None:
    data = lattice(dtype=np.uint8)
    path = tmp_path / "grab.png"
    imwrite(path, data)
    with pytest.raises(
        CalibrationError,
        match=r"grab\.png: the file has no pixel size .*give the pixel size in nm/px$",
    ):
        load_image(path)
    m = load_image(path, pixel_size_nm=0.04)
    assert m.reader == "pillow"
    assert m.pixel_size_nm == (0.04, 0.04) and m.pixel_size_source == "user"
    np.testing.assert_array_equal(m.data, data.astype(np.float32))


def test_png_user_pixel_size_per_axis(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    imwrite(path, lattice(dtype=np.uint8))
    m = load_image(path, pixel_size_nm=(0.041, 0.04))
    assert m.pixel_size_nm == (0.041, 0.04)
    assert any("not square" in w for w in m.warnings)


def test_rgb_converted_to_grey(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    imwrite(path, rgb)
    m = load_image(path, pixel_size_nm=0.02)
    expected = rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    np.testing.assert_allclose(m.data, expected, rtol=1e-5)
    assert any("colour image converted to grey" in w for w in m.warnings)
    grey3 = np.repeat(lattice(shape=(32, 40), dtype=np.uint8)[..., None], 3, axis=2)
    imwrite(tmp_path / "grey3.png", grey3)
    g = load_image(tmp_path / "grey3.png", pixel_size_nm=0.02)
    np.testing.assert_array_equal(g.data, grey3[..., 0].astype(np.float32))
    assert not any("colour" in w for w in g.warnings)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_dtypes_become_float32_with_same_values(tmp_path: Path, dtype) -> None:
    data = lattice(dtype=dtype)
    path = tmp_path / "d.tif"
    tifffile.imwrite(path, data)
    m = load_image(path, pixel_size_nm=0.02)
    assert m.data.dtype == np.float32
    assert m.metadata["original_dtype"] == np.dtype(dtype).name
    np.testing.assert_allclose(m.data, data.astype(np.float64), rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Bytes input, user override, pixel-size validation, defocus, size limit
# ------------------------------------------------------------------------------------------


def test_bytes_with_a_name_and_temp_file_deleted(tmp_path: Path, monkeypatch) -> None:
    path = write_imagej_tiff(tmp_path / "x.tif", lattice(), pixel_yx=(0.02, 0.02))
    private = tmp_path / "private_tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    m = load_image(path.read_bytes(), name="C:\\users\\me\\Au_df-16nm.tif")
    assert m.name == "Au_df-16nm.tif"
    assert m.pixel_size_nm == pytest.approx((0.02, 0.02))
    assert m.defocus_nm == -16.0 and m.metadata["defocus_source"] == "file name"
    assert list(private.iterdir()) == []  # the private temp folder is gone
    with pytest.raises(ReadError, match=r"Au\.tif: the file is empty \(0 bytes\)"):
        load_image(b"", name="Au.tif")
    with pytest.raises(ReadError, match=r"upload: unsupported or unrecognised file format"):
        load_image(b"not an image at all")


def test_user_pixel_size_overrides_and_is_recorded(tmp_path: Path) -> None:
    path = write_imagej_tiff(tmp_path / "o.tif", lattice(), pixel_yx=(0.02, 0.02))
    m = load_image(path, pixel_size_nm=0.021)
    assert m.pixel_size_nm == (0.021, 0.021)
    assert m.pixel_size_source == "user"
    assert m.metadata["metadata_pixel_size_nm"] == pytest.approx([0.02, 0.02])
    assert any("differs from the file's" in w and "5.0 %" in w for w in m.warnings)
    same = load_image(path, pixel_size_nm=0.02)
    assert same.pixel_size_source == "user"
    assert not any("differs" in w for w in same.warnings)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (0, r"pixel size 0 nm/px must be positive"),
        (-0.02, r"pixel size -0\.02 nm/px must be positive"),
        (float("nan"), r"pixel size nan nm/px is not a finite number"),
        (float("inf"), r"pixel size inf nm/px is not a finite number"),
        ("abc", r"pixel size 'abc' is not a number"),
        ((0.1, 0.2, 0.3), r"needs one value or two \(y, x\) in nm/px, got 3 values"),
        (True, r"pixel size True is not a number"),
        (None, r"pixel size None is not a number"),
    ],
)
def test_validate_pixel_size_refusals(value, pattern: str) -> None:
    with pytest.raises(CalibrationError, match=pattern):
        validate_pixel_size(value)


def test_validate_pixel_size_plausibility_warnings() -> None:
    assert validate_pixel_size(0.02) == ((0.02, 0.02), ())
    assert validate_pixel_size((0.03, 0.02))[0] == (0.03, 0.02)
    (size, warns) = validate_pixel_size(2.0)
    assert size == (2.0, 2.0)
    assert len(warns) == 1 and "above 1 nm/px" in warns[0]
    (_, warns) = validate_pixel_size(0.0005)
    assert len(warns) == 1 and "below 0.001 nm/px" in warns[0]
    (_, warns) = validate_pixel_size((0.02, 5.0))
    assert warns == (
        "pixel size 5 nm/px (x) is above 1 nm/px: too coarse to resolve lattice fringes; "
        "check the calibration",
    )


def test_defocus_from_metadata_wins_over_name(tmp_path: Path) -> None:
    path = write_imagej_tiff(tmp_path / "df-16nm.tif", lattice(), pixel_yx=(0.02, 0.02))
    m = load_image(path)
    assert m.defocus_nm == -16.0
    assert m.metadata["defocus_nm"] == -16.0
    plain = write_imagej_tiff(tmp_path / "plain.tif", lattice(), pixel_yx=(0.02, 0.02))
    assert load_image(plain).defocus_nm is None


def test_image_above_size_limit_refused_before_reading(tmp_path: Path) -> None:
    path = write_berkeley_emd(
        tmp_path / "huge.emd",
        None,
        shape=(16384, 16384),
        steps=(0.02, 0.02),
        units=("nm", "nm"),
        dtype="uint16",
    )
    assert path.stat().st_size < 1_000_000  # declared, never written
    with pytest.raises(ReadError, match=r"huge\.emd: image of 16384x16384 pixels is larger than"):
        load_image(path)


def test_size_limits_apply_to_every_reader(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(hio, "MAX_IMAGE_PIXELS", 50 * 50)
    tif = write_imagej_tiff(tmp_path / "big.tif", lattice(), pixel_yx=(0.02, 0.02))
    with pytest.raises(ReadError, match=r"big\.tif: image of 96x80 pixels is larger than"):
        load_image(tif)
    imwrite(tmp_path / "big.png", lattice(dtype=np.uint8))
    with pytest.raises(ReadError, match=r"big\.png: image of 96x80 pixels"):
        load_image(tmp_path / "big.png", pixel_size_nm=0.02)
    monkeypatch.setattr(hio, "MAX_IMAGE_PIXELS", 8192 * 8192)
    monkeypatch.setattr(hio, "MAX_DATA_VALUES", 2 * 96 * 80)
    stack = np.stack([lattice(seed=s) for s in range(3)])
    st = write_imagej_tiff(tmp_path / "st.tif", stack, pixel_yx=(0.02, 0.02))
    with pytest.raises(ReadError, match=r"st\.tif: data set of 3x96x80 values is larger than"):
        load_image(st)


def test_constant_and_nonfinite_images(tmp_path: Path) -> None:
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, np.full((32, 32), 7, np.uint16))
    m = load_image(path, pixel_size_nm=0.02)
    assert any("every pixel has the same value (7)" in w for w in m.warnings)
    data = lattice()
    data[3, 4] = np.nan
    data[5, 6] = np.inf
    tifffile.imwrite(tmp_path / "n.tif", data)
    m = load_image(tmp_path / "n.tif", pixel_size_nm=0.02)
    assert np.isfinite(m.data).all()
    median = float(np.median(data[np.isfinite(data)]))
    assert m.data[3, 4] == pytest.approx(median) and m.data[5, 6] == pytest.approx(median)
    assert any("2 NaN/infinite pixels replaced by the median" in w for w in m.warnings)
    tifffile.imwrite(tmp_path / "allnan.tif", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(ReadError, match=r"allnan\.tif: every pixel is NaN or infinite"):
        load_image(tmp_path / "allnan.tif", pixel_size_nm=0.02)


def test_missing_and_unsupported_paths(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match=r"nope\.dm3: file not found"):
        load_image(tmp_path / "nope.dm3")
    with pytest.raises(ReadError, match=r"not a file"):
        load_image(tmp_path)
    (tmp_path / "a.img").write_bytes(b"\x00" * 64)
    with pytest.raises(ReadError, match=r"a\.img: '\.img' \(JEOL or SMV/ADSC image\) is not"):
        load_image(tmp_path / "a.img")
    with pytest.raises(ReadError, match=r"cannot read int: give a file path or the file's bytes"):
        load_image(3)  # type: ignore[arg-type]


def test_metadata_is_json_serialisable(tmp_path: Path) -> None:
    import json

    path = write_berkeley_emd(tmp_path / "j.emd", lattice(), steps=(0.02, 0.02), units=("nm", "nm"))
    m = load_image(path)
    # strict JSON (no numpy scalars or arrays, no NaN) that reads back as the same metadata
    text = json.dumps(m.metadata, allow_nan=False)
    assert json.loads(text) == m.metadata
    assert m.metadata["original_units"] == ["nm", "nm"]
    assert m.metadata["original_pixel_size"] == [0.02, 0.02]
    assert m.metadata["original_shape"] == [96, 80] and m.metadata["n_frames"] == 1
    assert m.metadata["format"] == "emd" and m.metadata["defocus_nm"] is None


# ------------------------------------------------------------------------------------------
# ../shared/fixtures: one test per MANIFEST row
# ------------------------------------------------------------------------------------------


def _close(actual: tuple[float, float], expected: tuple[float, float], rel: float = 1e-4) -> bool:
    return all(math.isclose(a, e, rel_tol=rel) for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize("ext", ["dm3", "dm4"])
def test_fixture_nonsquare_dm(fixtures_dir: Path, ext: str) -> None:
    m = load_image(fixtures_dir / f"dmTest_float32_nonSquare_diffPixelSize.{ext}")
    assert m.shape == (64, 128)
    assert _close(m.pixel_size_nm, (0.2, 1.0))
    assert m.metadata["original_units"][-2:] in (["\u00c5", "nm"], ["A", "nm"])
    assert any("pixels are not square" in w for w in m.warnings)


@pytest.mark.parametrize("ext", ["dm3", "dm4"])
def test_fixture_3d_stack_dm(fixtures_dir: Path, ext: str) -> None:
    path = fixtures_dir / f"dmTest_3D_int16_64,65,66.{ext}"
    m = load_image(path)
    assert m.shape == (65, 64)
    assert m.metadata["n_frames"] == 66
    assert _close(m.pixel_size_nm, (3.0, 0.002))
    assert any("stack of 66 frames: using frame 0" in w for w in m.warnings)
    assert any("not square" in w for w in m.warnings)
    last = load_image(path, frame=65)
    total = load_image(path, frame="sum")
    assert last.metadata["frame"] == 65 and total.metadata["frame"] == "sum"
    # every frame of this test file holds the same x ramp: the sum is 66 times a frame
    np.testing.assert_array_equal(total.data, 66 * last.data)


def test_fixture_stem_image_dm3(fixtures_dir: Path) -> None:
    m = load_image(fixtures_dir / "test_STEM_image.dm3")
    assert m.shape == (68, 68) and m.metadata["original_dtype"] == "uint32"
    assert _close(m.pixel_size_nm, (0.24854, 0.24854))
    assert m.metadata["voltage_kv"] == pytest.approx(200.0)
    assert m.metadata["microscope"] == "FEI Titan"
    assert m.metadata["magnification"] == pytest.approx(225000.0)


def test_fixture_multi_signal_reads_the_image(fixtures_dir: Path) -> None:
    m = load_image(fixtures_dir / "multi_signal.dm3")
    assert m.shape == (512, 512) and m.metadata["original_dtype"] == "uint16"
    assert _close(m.pixel_size_nm, (0.017752, 0.017752))


def test_fixture_micro_sign_dm3(fixtures_dir: Path) -> None:
    m = load_image(fixtures_dir / "Fei HAADF-UK_location.dm3")
    assert m.shape == (4, 16)
    assert _close(m.pixel_size_nm, (5.506, 5.506))
    assert any("above 1 nm/px" in w for w in m.warnings)


def test_fixture_diffraction_dm3_refused(fixtures_dir: Path) -> None:
    with pytest.raises(
        CalibrationError,
        match=r"test_diffraction_pattern\.dm3: y axis: '1/nm' is a reciprocal-space unit",
    ):
        load_image(fixtures_dir / "test_diffraction_pattern.dm3")


def test_fixture_eels_spectrum_refused(fixtures_dir: Path) -> None:
    with pytest.raises(ReadError, match=r"08_carbon\.dm3: not an image: .*one-dimensional"):
        load_image(fixtures_dir / "08_carbon.dm3")


@pytest.mark.parametrize("ext", ["dm3", "dm4"])
def test_fixture_uncalibrated_2x2(fixtures_dir: Path, ext: str) -> None:
    path = fixtures_dir / f"test-1.{ext}"
    with pytest.raises(CalibrationError, match=rf"test-1\.{ext}: the file has no pixel size"):
        load_image(path)
    m = load_image(path, pixel_size_nm=0.02)
    assert m.shape == (2, 2) and m.pixel_size_source == "user"


def test_fixture_packed_complex_fft_refused(fixtures_dir: Path) -> None:
    with pytest.raises(
        ReadError, match=r"test_fft_packed_complex8\.dm4: complex data \(DM data type 27"
    ):
        load_image(fixtures_dir / "test_fft_packed_complex8.dm4")


def test_fixture_ser_with_emi(fixtures_dir: Path) -> None:
    m = load_image(fixtures_dir / "128x128-TEM_search_1.ser")
    assert m.reader == "ncempy-ser"
    assert m.shape == (128, 128) and m.metadata["original_dtype"] == "int32"
    assert _close(m.pixel_size_nm, (5.2612, 5.2612))
    assert m.metadata["emi"] is True
    assert m.metadata["voltage_kv"] == pytest.approx(200.0)
    assert "TalosF200X" in m.metadata["microscope"]
    with pytest.raises(ReadError, match=r"an \.emi file holds only metadata; open the \.ser"):
        load_image(fixtures_dir / "128x128-TEM_search.emi")


def test_fixture_ser_bytes_without_emi_warns(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "128x128-TEM_search_1.ser").read_bytes()
    m = load_image(data, name="128x128-TEM_search_1.ser")
    assert _close(m.pixel_size_nm, (5.2612, 5.2612))
    assert any("no 128x128-TEM_search.emi beside the SER file" in w for w in m.warnings)


def test_fixture_velox_stack(fixtures_dir: Path) -> None:
    path = fixtures_dir / "fei_example_tem_stack.emd"
    m = load_image(path)
    assert m.reader == "ncempy-velox"
    assert m.shape == (3, 3) and m.metadata["n_frames"] == 2
    assert _close(m.pixel_size_nm, (0.0081729, 0.0081729))
    assert any("stack of 2 frames" in w for w in m.warnings)
    assert m.metadata["voltage_kv"] == pytest.approx(300.0)
    assert m.defocus_nm is not None and m.metadata["defocus_source"] == "Optics/Defocus (m)"
    f1 = load_image(path, frame=1)
    total = load_image(path, frame="sum")
    np.testing.assert_allclose(total.data, m.data + f1.data)


def test_fixture_velox_image(fixtures_dir: Path) -> None:
    m = load_image(fixtures_dir / "Camera Ceta Imaging Micro.emd")
    assert m.shape == (512, 512) and m.metadata["original_dtype"] == "int16"
    assert _close(m.pixel_size_nm, (3.1388, 3.1388))


def test_fixture_velox_diffraction_refused(fixtures_dir: Path) -> None:
    with pytest.raises(
        CalibrationError,
        match=r"Camera Ceta Diffraction Micro\.emd: y axis: '1/m' is a reciprocal-space unit",
    ):
        load_image(fixtures_dir / "Camera Ceta Diffraction Micro.emd")


def test_fixture_mrc_stack(fixtures_dir: Path) -> None:
    m = load_image(fixtures_dir / "temp.mrc")
    assert m.shape == (128, 128) and m.metadata["n_frames"] == 3
    assert _close(m.pixel_size_nm, (0.2, 0.2))


@pytest.mark.parametrize(
    ("fname", "reader"),
    [
        ("test_loading_image_saved_with_DM.tif", "tifffile-dm"),
        ("test_loading_image_saved_with_imageJ.tif", "tifffile-imagej"),
    ],
)
def test_fixture_calibrated_tiffs(fixtures_dir: Path, fname: str, reader: str) -> None:
    m = load_image(fixtures_dir / fname)
    assert m.reader == reader
    assert m.shape == (68, 68)
    assert _close(m.pixel_size_nm, (168.67, 168.67))  # 0.16867 um


def test_fixture_jeol_img_refused(fixtures_dir: Path) -> None:
    with pytest.raises(
        ReadError,
        match=r"View000_0000000\.img: '\.img' \(JEOL or SMV/ADSC image\) is not supported",
    ):
        load_image(fixtures_dir / "View000_0000000.img")


@pytest.mark.parametrize(
    ("fname", "shape", "pixel_nm"),
    [
        ("PZO.dm3", (525, 525), 0.0159945),
        ("Sample_ABF.dm3", (323, 323), 0.0159945),
        ("PTO100-40nm-HAADF.dm4", (258, 244), 0.016),
    ],
)
def test_fixture_real_lattice_images(
    fixtures_dir: Path, fname: str, shape: tuple[int, int], pixel_nm: float
) -> None:
    m = load_image(fixtures_dir / fname)
    assert m.shape == shape
    assert _close(m.pixel_size_nm, (pixel_nm, pixel_nm))
    assert m.defocus_nm is None  # "PTO100-40nm" is a thickness after a digit, not a defocus
    assert m.warnings == ()


def test_every_fixture_file_has_a_test(fixtures_dir: Path) -> None:
    """Guard: a file added to ../shared/fixtures without a row here fails loudly."""
    source = Path(__file__).read_text(encoding="utf-8")
    for path in sorted(fixtures_dir.iterdir()):
        if path.name == "MANIFEST.md":
            continue
        stem = re.sub(r"\.(dm3|dm4)$", "", path.name)
        assert stem in source or path.name in source, path.name


def test_fei_tiff_pixel_size_in_metres(tmp_path: Path) -> None:
    ini = (
        "[User]\nDate=01/02/2024\nTime=10:11:12 AM\n[Beam]\nHV=300000\n"
        "[Scan]\nPixelWidth=2.5e-11\nPixelHeight=2.6e-11\n[System]\nSystemType=Titan\n"
    )
    path = tmp_path / "fei.tif"
    tifffile.imwrite(path, lattice(dtype=np.uint16), extratags=[(34682, "s", 0, ini, False)])
    m = load_image(path)
    assert m.reader == "tifffile-fei"
    assert m.pixel_size_nm == pytest.approx((0.026, 0.025), rel=1e-9)
    assert m.metadata["voltage_kv"] == pytest.approx(300.0)
    assert m.metadata["microscope"] == "Titan"
    assert m.metadata["acquisition_time"] == "01/02/2024 10:11:12 AM"


def test_velox_tiff_xml_pixel_size_and_defocus(tmp_path: Path) -> None:
    xml = (
        "<Metadata><Optics><AccelerationVoltage>200000</AccelerationVoltage>"
        "<Defocus>-1.6e-08</Defocus><NominalMagnification>620000</NominalMagnification></Optics>"
        "<BinaryResult><PixelSize><width>2.1e-11</width><height>2.1e-11</height></PixelSize>"
        "<PixelUnitX>m</PixelUnitX><PixelUnitY>m</PixelUnitY></BinaryResult></Metadata>"
    )
    path = tmp_path / "velox.tif"
    tifffile.imwrite(path, lattice(dtype=np.uint16), extratags=[(34683, "s", 0, xml, False)])
    m = load_image(path)
    assert m.reader == "tifffile-fei"
    assert m.pixel_size_nm == pytest.approx((0.021, 0.021), rel=1e-9)
    assert m.defocus_nm == pytest.approx(-16.0)
    assert m.metadata["defocus_source"] == "Optics/Defocus (m)"
    assert m.metadata["voltage_kv"] == pytest.approx(200.0)


def test_jpeg_needs_a_user_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    imwrite(path, lattice(dtype=np.uint8))
    with pytest.raises(CalibrationError, match=r"photo\.jpg: the file has no pixel size"):
        load_image(path)
    m = load_image(path, pixel_size_nm=0.05)
    assert m.shape == (96, 80) and m.reader == "pillow"


def test_imagej_pixel_unit_is_uncalibrated(tmp_path: Path) -> None:
    path = write_imagej_tiff(tmp_path / "px.tif", lattice(), pixel_yx=(1.0, 1.0), unit="pixel")
    with pytest.raises(CalibrationError, match=r"px\.tif: the file has no pixel size"):
        load_image(path)


def test_imagej_hyperstack_frames_flattened(tmp_path: Path) -> None:
    data = np.stack([lattice(seed=s) for s in range(6)]).reshape(2, 3, 96, 80)
    path = tmp_path / "tzyx.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(50, 50),
        metadata={"unit": "nm", "axes": "TZYX"},
    )
    m = load_image(path, frame=4)
    assert m.metadata["n_frames"] == 6
    np.testing.assert_array_equal(m.data, data.reshape(6, 96, 80)[4])


def test_animated_gif_and_rgba(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    imwrite(tmp_path / "anim.gif", frames)
    m = load_image(tmp_path / "anim.gif", pixel_size_nm=0.02, frame=2)
    assert m.metadata["n_frames"] == 3 and m.shape == (16, 16)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    imwrite(tmp_path / "rgba.png", rgba)
    m = load_image(tmp_path / "rgba.png", pixel_size_nm=0.02)
    assert "alpha channel ignored" in m.warnings
    expected = rgba[..., :3].astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    np.testing.assert_allclose(m.data, expected, rtol=1e-5)


def test_hdf5_without_emd_data_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "plain.emd", "w") as handle:
        handle["foo"] = np.ones((8, 8))
    with pytest.raises(
        ReadError, match=r"plain\.emd: cannot be read as an EMD \(HDF5\) file .*No Berkeley EMD"
    ):
        load_image(tmp_path / "plain.emd")


def test_concurrent_reads_keep_stdout_and_give_each_its_own_image(tmp_path: Path) -> None:
    import sys
    from concurrent.futures import ThreadPoolExecutor

    paths = [
        write_imagej_tiff(tmp_path / f"t{i}.tif", lattice(seed=i), pixel_yx=(0.02 + i * 1e-3,) * 2)
        for i in range(6)
    ]
    stdout, stderr = sys.stdout, sys.stderr
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(load_image, paths * 3))
    assert sys.stdout is stdout and sys.stderr is stderr
    for i, m in enumerate(results):
        np.testing.assert_array_equal(m.data, lattice(seed=i % 6))
        assert m.pixel_size_nm == pytest.approx((0.02 + (i % 6) * 1e-3,) * 2)
