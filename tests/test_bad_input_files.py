"""Issue 9, file-reading rows of the bad-input matrix: each via load_image and via the CLI.

Every refusal is a :class:`ReadError` or :class:`CalibrationError` whose one-line message is checked;
from the command line (``python -m hrtem_core info``, run in-process) it is exit code 2 and exactly
one stderr line ``error: ...``, never a traceback. Files are generated in ``tmp_path``; the DM and
SER truncation rows use ../shared/fixtures (skipped where absent: no writer exists for them).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hrtem_core.cli import main
from hrtem_core.errors import CalibrationError, HRTEMError, ReadError
from hrtem_core.io import load_image
from tests.test_io import imwrite, lattice, write_berkeley_emd, write_imagej_tiff

# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def cli_error(capsys, *args: str) -> str:
    """Run ``info`` in-process; assert exit 2, one ``error:`` line, no traceback; return it.

    Usage errors (argparse) leave through ``SystemExit(2)``, file errors through the return code.
    """
    try:
        code = main(["info", *args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0][len("error: ") :]


def cli_ok(capsys, *args: str) -> dict:
    """Run ``info`` in-process; assert exit 0 and one JSON object on stdout; return it."""
    code = main(["info", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def refused(path: Path | bytes, exc: type[HRTEMError], pattern: str, **kwargs) -> str:
    with pytest.raises(exc, match=pattern) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------
# Empty, random, text files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".dm3", ".dm4", ".ser", ".emd", ".tif", ".png", ".mrc"])
def test_empty_file(tmp_path: Path, capsys, ext: str) -> None:
    path = tmp_path / f"empty{ext}"
    path.write_bytes(b"")
    pattern = rf"empty\{ext}: the file is empty \(0 bytes\)"
    refused(path, ReadError, pattern)
    refused(b"", ReadError, pattern, name=path.name)
    assert cli_error(capsys, str(path)) == f"empty{ext}: the file is empty (0 bytes)"


_FORMAT_LABEL = {
    ".dm3": "a DigitalMicrograph file",
    ".dm4": "a DigitalMicrograph file",
    ".ser": "an FEI/TIA SER file",
    ".emd": "an EMD (HDF5) file",
    ".tif": "a TIFF file",
    ".png": "a PNG/JPEG image",
}


@pytest.mark.parametrize("ext", sorted(_FORMAT_LABEL))
def test_random_bytes_with_a_microscope_suffix(tmp_path: Path, capsys, ext: str) -> None:
    payload = np.random.default_rng(7).bytes(4096)
    path = tmp_path / f"noise{ext}"
    path.write_bytes(payload)
    pattern = (
        rf"noise\{ext}: cannot be read as {re.escape(_FORMAT_LABEL[ext])} \(corrupt, truncated or not "
        r"this format\): \w+"
    )
    refused(path, ReadError, pattern)
    refused(payload, ReadError, pattern, name=path.name)
    message = cli_error(capsys, str(path))
    assert message.startswith(f"noise{ext}: cannot be read as {_FORMAT_LABEL[ext]}")
    assert str(tmp_path) not in refused(payload, ReadError, pattern, name=path.name)


def test_random_bytes_mrc_header_impossible_shape(tmp_path: Path, capsys) -> None:
    path = tmp_path / "noise.mrc"
    path.write_bytes(np.random.default_rng(7).bytes(4096))
    refused(path, ReadError, r"noise\.mrc: the header declares an impossible data shape")
    assert "impossible data shape" in cli_error(capsys, str(path))


def test_text_files(tmp_path: Path, capsys) -> None:
    text = "d_nm,angle\n0.235,54.7\n"
    (tmp_path / "spacings.txt").write_text(text)
    (tmp_path / "spacings.csv").write_text(text)
    (tmp_path / "notes.dm3").write_text(text)
    refused(tmp_path / "spacings.txt", ReadError, r"spacings\.txt: a text file is not an image")
    refused(tmp_path / "spacings.csv", ReadError, r"spacings\.csv: a text file is not an image")
    refused(tmp_path / "notes.dm3", ReadError, r"notes\.dm3: cannot be read as a DigitalMicro")
    assert cli_error(capsys, str(tmp_path / "spacings.txt")) == (
        "spacings.txt: a text file is not an image"
    )
    (tmp_path / "readme").write_text(text)
    msg = refused(tmp_path / "readme", ReadError, r"readme: unsupported or unrecognised file")
    assert ".dm3" in msg and ".tif" in msg  # lists what is supported


def test_missing_file_cli(tmp_path: Path, capsys) -> None:
    assert cli_error(capsys, str(tmp_path / "gone.dm4")).startswith("gone.dm4: file not found")


# ------------------------------------------------------------------------------------------
# Truncated files
# ------------------------------------------------------------------------------------------

_FRACTIONS = (0.0005, 0.02, 0.3, 0.6, 0.95, 0.999)


def _truncations(data: bytes) -> list[int]:
    return sorted({max(1, int(len(data) * f)) for f in _FRACTIONS})


def _check_truncated(tmp_path: Path, capsys, name: str, data: bytes, label: str) -> None:
    pattern = (
        re.escape(name) + rf": (cannot be read as {label} \(corrupt, truncated or not "
        r"this format\)|the TIFF file holds no image \(corrupt or truncated\?\)|the header "
        r"declares an impossible data shape)"
    )
    for cut in _truncations(data):
        path = tmp_path / f"cut{cut}" / name
        path.parent.mkdir()
        path.write_bytes(data[:cut])
        refused(path, ReadError, pattern)
    # the command line says the same for the middle cut
    assert cli_error(capsys, str(tmp_path / f"cut{_truncations(data)[2]}" / name)).startswith(
        f"{name}: "
    )


def test_truncated_tiff(tmp_path: Path, capsys) -> None:
    src = write_imagej_tiff(tmp_path / "full.tif", lattice(), pixel_yx=(0.02, 0.02))
    _check_truncated(tmp_path, capsys, "au.tif", src.read_bytes(), "a TIFF file")


def test_truncated_emd(tmp_path: Path, capsys) -> None:
    src = write_berkeley_emd(
        tmp_path / "full.emd", lattice(), steps=(0.02, 0.02), units=("nm",) * 2
    )
    _check_truncated(tmp_path, capsys, "au.emd", src.read_bytes(), r"an EMD \(HDF5\) file")


@pytest.mark.parametrize(
    ("fname", "label"),
    [
        ("dmTest_float32_nonSquare_diffPixelSize.dm3", "a DigitalMicrograph file"),
        ("dmTest_float32_nonSquare_diffPixelSize.dm4", "a DigitalMicrograph file"),
        ("multi_signal.dm3", "a DigitalMicrograph file"),
        ("128x128-TEM_search_1.ser", "an FEI/TIA SER file"),
        ("fei_example_tem_stack.emd", r"an EMD \(HDF5\) file"),
        ("temp.mrc", "an MRC file"),
    ],
)
def test_truncated_fixture_files(
    fixtures_dir: Path, tmp_path: Path, capsys, fname: str, label: str
) -> None:
    _check_truncated(tmp_path, capsys, fname, (fixtures_dir / fname).read_bytes(), label)


# ------------------------------------------------------------------------------------------
# Not an image: 1-D, complex, reciprocal units, too small, 4-D
# ------------------------------------------------------------------------------------------


def test_one_dimensional_spectrum(tmp_path: Path, capsys) -> None:
    spectrum = np.random.default_rng(1).random(2048).astype(np.float32)
    emd = write_berkeley_emd(tmp_path / "eels.emd", spectrum, steps=(0.1,), units=("eV",))
    refused(emd, ReadError, r"eels\.emd: not an image: data of shape \(2048,\) is one-dim")
    row = tmp_path / "row.tif"
    tifffile.imwrite(row, spectrum[None, :])
    refused(row, ReadError, r"row\.tif: not an image: .*\(1, 2048\) is one-dimensional",
            pixel_size_nm=0.02)  # fmt: skip
    assert "not an image" in cli_error(capsys, str(emd))


def test_four_dimensional_scan(tmp_path: Path, capsys) -> None:
    data = np.zeros((3, 4, 8, 8), np.float32)
    path = write_berkeley_emd(
        tmp_path / "4d.emd", data, steps=(1.0, 1.0, 0.1, 0.1), units=("nm", "nm", "1/nm", "1/nm")
    )
    refused(path, ReadError, r"4d\.emd: not an image: 4-D data of shape \(3, 4, 8, 8\)")
    assert "4D-STEM" in cli_error(capsys, str(path))


def test_reciprocal_space_units(tmp_path: Path, capsys) -> None:
    path = write_berkeley_emd(
        tmp_path / "dp.emd", lattice(), steps=(0.01, 0.01), units=("1/nm", "1/nm")
    )
    pattern = r"dp\.emd: y axis: '1/nm' is a reciprocal-space unit \(a diffraction pattern"
    refused(path, CalibrationError, pattern)
    refused(path, CalibrationError, r"typed-in pixel size cannot be applied", pixel_size_nm=0.02)
    assert "reciprocal-space unit" in cli_error(capsys, str(path))
    assert "reciprocal-space unit" in cli_error(capsys, str(path), "--pixel-size-nm", "0.02")


def test_energy_unit_on_an_image_axis(tmp_path: Path, capsys) -> None:
    path = write_berkeley_emd(tmp_path / "si.emd", lattice(), steps=(0.1, 0.02), units=("eV", "nm"))
    refused(path, CalibrationError, r"si\.emd: y axis: 'eV' is an energy unit")
    assert "energy unit" in cli_error(capsys, str(path))


def test_complex_data(tmp_path: Path, capsys) -> None:
    data = (lattice() * np.exp(1j * lattice(seed=2))).astype(np.complex64)
    path = write_berkeley_emd(tmp_path / "exitwave.emd", data, steps=(0.02,) * 2, units=("nm",) * 2)
    refused(path, ReadError, r"exitwave\.emd: complex data \(complex64, an FFT or exit wave\?\)")
    tif = tmp_path / "fft.tif"
    tifffile.imwrite(tif, data)
    refused(tif, ReadError, r"fft\.tif: complex data", pixel_size_nm=0.02)
    assert "complex data" in cli_error(capsys, str(path))


def test_stack_without_frame_choice_reads_frame_0_and_says_so(tmp_path: Path, capsys) -> None:
    stack = np.stack([lattice(seed=s) for s in range(5)])
    path = write_imagej_tiff(tmp_path / "series.tif", stack, pixel_yx=(0.02, 0.02))
    m = load_image(path)
    np.testing.assert_array_equal(m.data, stack[0])
    warning = "the file is a stack of 5 frames: using frame 0 (choose a frame number 0..4 or 'sum')"
    assert warning in m.warnings
    out = cli_ok(capsys, str(path))
    assert out["warnings"] == [warning] and out["n_frames"] == 5 and out["frame"] == 0
    assert cli_ok(capsys, str(path), "--frame", "sum")["frame"] == "sum"
    assert "out of range" in cli_error(capsys, str(path), "--frame", "9")
    assert "--frame must be a frame number" in cli_error(capsys, str(path), "--frame", "last")
    assert "--frame must be 0 or more" in cli_error(capsys, str(path), "--frame", "-1")


def test_two_by_two_and_smaller(tmp_path: Path, capsys) -> None:
    tiny = write_imagej_tiff(tmp_path / "2x2.tif", lattice(shape=(2, 2)), pixel_yx=(0.02, 0.02))
    m = load_image(tiny)  # read; the analysis refuses images smaller than its window
    assert m.shape == (2, 2)
    assert cli_ok(capsys, str(tiny))["image_shape"] == [2, 2]
    one = tmp_path / "1x1.tif"
    tifffile.imwrite(one, np.ones((1, 1), np.float32))
    refused(one, ReadError, r"1x1\.tif: not an image: data of shape \(1, 1\)", pixel_size_nm=0.02)
    assert "not an image" in cli_error(capsys, str(one), "--pixel-size-nm", "0.02")


# ------------------------------------------------------------------------------------------
# Pixel values: NaN/Inf, constant, dtypes
# ------------------------------------------------------------------------------------------


def test_nan_and_inf_pixels(tmp_path: Path, capsys) -> None:
    data = lattice()
    data[0, :3] = [np.nan, np.inf, -np.inf]
    path = tmp_path / "holes.tif"
    tifffile.imwrite(path, data)
    m = load_image(path, pixel_size_nm=0.02)
    assert np.isfinite(m.data).all()
    out = cli_ok(capsys, str(path), "--pixel-size-nm", "0.02")
    assert any("3 NaN/infinite pixels replaced by the median" in w for w in out["warnings"])
    tifffile.imwrite(tmp_path / "void.tif", np.full((16, 16), np.nan, np.float32))
    refused(tmp_path / "void.tif", ReadError, r"void\.tif: every pixel is NaN or infinite",
            pixel_size_nm=0.02)  # fmt: skip
    assert "every pixel is NaN" in cli_error(
        capsys, str(tmp_path / "void.tif"), "--pixel-size-nm", "0.02"
    )


def test_constant_image(tmp_path: Path, capsys) -> None:
    path = tmp_path / "flat.png"
    imwrite(path, np.full((64, 64), 128, np.uint8))
    m = load_image(path, pixel_size_nm=0.02)
    assert np.all(m.data == 128)
    out = cli_ok(capsys, str(path), "--pixel-size-nm", "0.02")
    assert any("every pixel has the same value (128): the image has no contrast" in w
               for w in out["warnings"])  # fmt: skip


@pytest.mark.parametrize(
    ("dtype", "suffix"),
    [(np.uint8, ".png"), (np.uint16, ".png"), (np.uint8, ".tif"), (np.uint16, ".tif"),
     (np.int16, ".tif"), (np.float32, ".tif"), (np.float64, ".tif")],
)  # fmt: skip
def test_8bit_16bit_float_images(tmp_path: Path, capsys, dtype, suffix: str) -> None:
    data = lattice(dtype=dtype)
    path = tmp_path / f"img{suffix}"
    (imwrite if suffix == ".png" else tifffile.imwrite)(path, data)
    m = load_image(path, pixel_size_nm=0.02)
    assert m.data.dtype == np.float32
    np.testing.assert_allclose(m.data, data.astype(np.float64), rtol=1e-6)
    out = cli_ok(capsys, str(path), "--pixel-size-nm", "0.02")
    assert out["dtype"] == np.dtype(dtype).name and out["shape"] == [96, 80]


# ------------------------------------------------------------------------------------------
# Pixel size: 0, negative, NaN, implausible
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "pattern"),
    [
        ("0", 0.0, r"pixel size 0 nm/px must be positive"),
        ("-0.02", -0.02, r"pixel size -0\.02 nm/px must be positive"),
        ("nan", math.nan, r"pixel size nan nm/px is not a finite number"),
        ("inf", math.inf, r"pixel size inf nm/px is not a finite number"),
    ],
)
def test_bad_pixel_size(tmp_path: Path, capsys, text: str, value: float, pattern: str) -> None:
    path = tmp_path / "g.png"
    imwrite(path, lattice(dtype=np.uint8))
    refused(path, CalibrationError, pattern, pixel_size_nm=value)
    refused(path, CalibrationError, pattern, pixel_size_nm=(0.02, value))
    assert "pixel size" in cli_error(capsys, str(path), "--pixel-size-nm", text)
    assert "pixel size" in cli_error(capsys, str(path), f"--pixel-size-nm={text}")


def test_pixel_size_not_a_number_cli(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.png"
    imwrite(path, lattice(dtype=np.uint8))
    assert "--pixel-size-nm must be a number in nm/px, got '0,02'" in cli_error(
        capsys, str(path), "--pixel-size-nm", "0,02"
    )


def test_uncalibrated_without_pixel_size(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.png"
    imwrite(path, lattice(dtype=np.uint8))
    message = cli_error(capsys, str(path))
    assert message == (
        "g.png: the file has no pixel size (uncalibrated: no unit or 'pixel'); give the pixel "
        "size in nm/px (--pixel-size-nm)"
    )


@pytest.mark.parametrize(
    ("value", "phrase"),
    [(2.5, "is above 1 nm/px: too coarse"), (0.0004, "is below 0.001 nm/px: implausibly fine")],
)
def test_implausible_pixel_size_warns(tmp_path: Path, capsys, value: float, phrase: str) -> None:
    path = tmp_path / "g.png"
    imwrite(path, lattice(dtype=np.uint8))
    m = load_image(path, pixel_size_nm=value)
    assert m.pixel_size_nm == (value, value)
    assert sum(phrase in w for w in m.warnings) == 1
    out = cli_ok(capsys, str(path), "--pixel-size-nm", str(value))
    assert any(phrase in w for w in out["warnings"])
    # implausible metadata is read too, with the same warning
    tif = write_imagej_tiff(tmp_path / "meta.tif", lattice(), pixel_yx=(value, value))
    assert any(phrase in w for w in load_image(tif).warnings)


# ------------------------------------------------------------------------------------------
# Very large image: refused above the documented limit, before any pixel is read
# ------------------------------------------------------------------------------------------


def test_very_large_image_refused_in_bounded_memory(tmp_path: Path, capsys) -> None:
    import tracemalloc

    path = write_berkeley_emd(
        tmp_path / "montage.emd",
        None,
        shape=(16384, 16384),
        steps=(0.02, 0.02),
        units=("nm", "nm"),
        dtype="float32",
    )
    small = write_berkeley_emd(
        tmp_path / "small.emd", lattice(), steps=(0.02,) * 2, units=("nm",) * 2
    )
    load_image(small)  # import the readers first: only the refusal itself is measured
    tracemalloc.start()
    try:
        refused(
            path,
            ReadError,
            r"montage\.emd: image of 16384x16384 pixels is larger than the limit of 67,108,864 "
            r"pixels \(8192 x 8192\); bin or crop it",
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # the 1 GiB of pixels was never allocated
    assert "larger than the limit" in cli_error(capsys, str(path))


def test_long_hdf5_stack_is_read_frame_by_frame(tmp_path: Path, capsys) -> None:
    """40 x 4096 x 4096 uint16 (1.25 GiB, above MAX_DATA_VALUES): one frame is read, not all."""
    import tracemalloc

    path = write_berkeley_emd(
        tmp_path / "movie.emd",
        None,
        shape=(40, 4096, 4096),
        steps=(1.0, 0.02, 0.02),
        units=("s", "nm", "nm"),
        dtype="uint16",
    )
    small = write_berkeley_emd(
        tmp_path / "small.emd", lattice(), steps=(0.02,) * 2, units=("nm",) * 2
    )
    load_image(small)  # import the readers first: only the read itself is measured
    tracemalloc.start()
    try:
        m = load_image(path, frame=39)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert m.shape == (4096, 4096) and m.metadata["n_frames"] == 40 and m.metadata["frame"] == 39
    assert m.pixel_size_nm == pytest.approx((0.02, 0.02))
    # one uint16 frame (32 MiB) + the float32 image (64 MiB) + checks, far below the 1.25 GiB stack
    assert peak < 200 * 2**20, peak / 2**20


def test_eager_stack_above_the_data_limit_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    from hrtem_core import io as hio

    monkeypatch.setattr(hio, "MAX_DATA_VALUES", 2 * 96 * 80)
    stack = np.stack([lattice(seed=s) for s in range(3)])
    path = write_imagej_tiff(tmp_path / "movie.tif", stack, pixel_yx=(0.02, 0.02))
    pattern = r"movie\.tif: data set of 3x96x80 values is larger than the limit of 15,360 values"
    refused(path, ReadError, pattern)
    assert "export the frame(s) you need" in cli_error(capsys, str(path))


# ------------------------------------------------------------------------------------------
# A real process: nothing reaches stderr after the one line (no garbage-collection noise)
# ------------------------------------------------------------------------------------------


def test_real_process_prints_one_line_for_a_broken_dm_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    rng = np.random.default_rng(11)
    path = tmp_path / "broken.dm4"
    path.write_bytes(b"\x00\x00\x00\x04" + rng.bytes(8000))  # a DM4 version word, then garbage
    result = subprocess.run(
        [sys.executable, "-m", "hrtem_core", "info", str(path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: broken.dm4: cannot be read as a Digital")
