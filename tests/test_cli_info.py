"""``python -m hrtem_core info``: one JSON object describing the file and its calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrtem_core.cli import main
from tests.test_io import lattice, write_berkeley_emd, write_imagej_tiff


def run_info(capsys, *args: str) -> dict:
    code = main(["info", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1  # one JSON object on one line
    return json.loads(lines[0])


def test_info_fields_for_a_calibrated_tiff(tmp_path: Path, capsys) -> None:
    path = write_imagej_tiff(tmp_path / "Au_df-16nm.tif", lattice(), pixel_yx=(0.025, 0.025))
    out = run_info(capsys, str(path))
    assert out["name"] == "Au_df-16nm.tif"
    assert out["shape"] == [96, 80] and out["image_shape"] == [96, 80]
    assert out["dtype"] == "float32"
    assert out["pixel_size_nm"] == pytest.approx([0.025, 0.025], rel=1e-6)
    assert out["pixel_size_source"] == "metadata"
    assert out["reader"] == "tifffile-imagej"
    assert out["defocus_nm"] == -16.0 and out["defocus_source"] == "file name"
    assert out["warnings"] == []
    assert out["n_frames"] == 1
    assert out["original_units"] == ["nm", "nm"]
    assert out["metadata"]["format"] == "tiff"


def test_info_key_metadata_and_per_axis_pixel(tmp_path: Path, capsys) -> None:
    path = write_berkeley_emd(
        tmp_path / "b.emd",
        lattice(dtype=np.uint16),
        steps=(0.3, 0.02),
        units=("A", "nm"),
        microscope={"high tension": 300000.0, "magnification": 800000.0, "name": "TEAM I"},
    )
    out = run_info(capsys, str(path))
    assert out["pixel_size_nm"] == pytest.approx([0.03, 0.02])  # [y, x]
    assert out["dtype"] == "uint16"
    assert out["reader"] == "ncempy-emd"
    assert out["voltage_kv"] == pytest.approx(300.0)
    assert out["magnification"] == pytest.approx(800000.0)
    assert out["microscope"] == "TEAM I"
    assert out["defocus_nm"] is None
    assert any("not square" in w for w in out["warnings"])


def test_info_user_pixel_size_and_frame(tmp_path: Path, capsys) -> None:
    stack = np.stack([lattice(seed=s) for s in range(3)])
    path = write_imagej_tiff(tmp_path / "s.tif", stack, pixel_yx=(0.02, 0.02))
    out = run_info(capsys, str(path), "--pixel-size-nm", "0.03", "--frame", "2")
    assert out["shape"] == [3, 96, 80] and out["image_shape"] == [96, 80]
    assert out["pixel_size_nm"] == [0.03, 0.03]
    assert out["pixel_size_source"] == "user"
    assert out["frame"] == 2 and out["n_frames"] == 3
    assert out["metadata"]["metadata_pixel_size_nm"] == pytest.approx([0.02, 0.02])
    assert any("differs from the file's" in w for w in out["warnings"])
    total = run_info(capsys, str(path), "--frame", "sum")
    assert total["frame"] == "sum" and total["warnings"] == []


def test_info_fixture_dm3(fixtures_dir: Path, capsys) -> None:
    out = run_info(capsys, str(fixtures_dir / "test_STEM_image.dm3"))
    assert out["reader"] == "ncempy-dm"
    assert out["shape"] == [68, 68] and out["dtype"] == "uint32"
    assert out["pixel_size_nm"] == pytest.approx([0.24854, 0.24854], rel=1e-4)
    assert out["voltage_kv"] == pytest.approx(200.0)
    assert out["microscope"] == "FEI Titan"
    assert "acquisition_time" in out


def test_info_help_lists_options(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["info", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--pixel-size-nm" in text and "--frame" in text


def test_info_agrees_with_load_image_on_every_fixture(fixtures_dir: Path, capsys) -> None:
    """Issue 3, done-when: every fixture is read or refused from the command line too."""
    from hrtem_core.commands._options import with_flag
    from hrtem_core.errors import HRTEMError
    from hrtem_core.io import load_image

    files = sorted(p for p in fixtures_dir.iterdir() if p.name != "MANIFEST.md")
    assert len(files) >= 20
    for path in files:
        try:
            expected = load_image(path)
        except HRTEMError as exc:
            code = main(["info", str(path)])
            out, err = capsys.readouterr()
            assert code == 2 and out == ""
            # the same message, with the option that supplies a missing quantity
            assert err == f"error: {with_flag(str(exc))}\n", path.name
        else:
            out = run_info(capsys, str(path))
            assert out["pixel_size_nm"] == list(expected.pixel_size_nm), path.name
            assert out["image_shape"] == list(expected.shape)
            assert out["warnings"] == list(expected.warnings)


def test_info_per_axis_user_pixel_size(tmp_path: Path, capsys) -> None:
    path = write_imagej_tiff(tmp_path / "a.tif", lattice(), pixel_yx=(0.02, 0.02))
    out = run_info(capsys, str(path), "--pixel-size-nm", "0.021,0.02")
    assert out["pixel_size_nm"] == [0.021, 0.02]
    assert out["pixel_size_source"] == "user"
    assert any("differ" in w for w in out["warnings"])  # x and y differ by 5 %


def test_core_messages_name_the_quantity_and_the_cli_adds_its_flag() -> None:
    """Issue 20.4: the library asks for a quantity; only the command line names its option."""
    from hrtem_core.commands._options import with_flag

    core = "a.png: the file has no pixel size (uncalibrated); give the pixel size in nm/px"
    assert "--" not in core
    assert with_flag(core) == core + " (--pixel-size-nm)"
    assert with_flag("b.tif: the defocus is unknown").endswith("(--defocus-nm)")
    assert with_flag("c.tif: not an image") == "c.tif: not an image"
