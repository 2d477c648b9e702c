"""Issue 19 acceptance: crafted hostile files end within 30 s, under a 3 GB address-space limit,
as a one-line error or a correct read, without leaking the content of any other file.

The files are written by the tests into a temporary folder; all of them are read by ONE child
process (``RLIMIT_AS`` = 3 GB, set before anything is imported), which reports per file: the
outcome, the message and the seconds it took. Each test below checks one file's report.
"""

from __future__ import annotations

import itertools
import json
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from hrtem_core.errors import CardDatabaseError, ReadError
from hrtem_core.io import load_image
from tests.conftest import FIXTURES, REPO
from tests.test_io import lattice, write_berkeley_emd, write_imagej_tiff

SECRET = "TOPSECRET-7f3a91"  # written into files that a hostile EMD points at
ADDRESS_SPACE = 3 * 1024**3
PER_FILE_S = 30.0

# ------------------------------------------------------------------------------------------
# Crafted files
# ------------------------------------------------------------------------------------------


def craft_tiff(
    path: Path, width: int, height: int, spp: int, bits: int, sample_format: int
) -> Path:
    """A minimal little-endian TIFF header declaring an image, with no pixel data behind it."""
    entries: list[tuple[int, int, int, int]] = []
    n = 11
    extra_off = 8 + 2 + n * 12 + 4
    extra = struct.pack(f"<{spp}H", *([bits] * spp)) + struct.pack(
        f"<{spp}H", *([sample_format] * spp)
    )
    entries += [(256, 4, 1, width), (257, 4, 1, height)]
    entries += [(258, 3, spp, extra_off if spp > 2 else bits), (259, 3, 1, 1)]
    entries += [(262, 3, 1, 1 if spp == 1 else 2), (273, 4, 1, extra_off + len(extra))]
    entries += [(277, 3, 1, spp), (278, 4, 1, height)]
    entries += [(279, 4, 1, min(width * height * spp * bits // 8, 2**32 - 1)), (284, 3, 1, 1)]
    entries += [(339, 3, spp, extra_off + 2 * spp if spp > 2 else sample_format)]
    packed = b"".join(
        struct.pack("<HHII", *e) if e[1] == 4 or e[2] > 2 else struct.pack("<HHIHH", *e, 0)
        for e in sorted(entries)
    )
    path.write_bytes(
        b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n) + packed + b"\0\0\0\0" + extra
    )
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def craft_png(
    path: Path, width: int, height: int, bit_depth: int, *, rows: int | None = None
) -> Path:
    """A grey PNG of zeros (``rows`` rows of IDAT; default all), compressed."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    row = b"\x00" * (1 + width * bit_depth // 8)
    n_rows = height if rows is None else rows
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(n_rows)) + comp.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    return path


def craft_dm3_tag_flood(path: Path, n_tags: int, *, groups: int = 1) -> Path:
    """A DM3 with ``n_tags`` tiny long-integer tags, in the root group or in ``groups`` groups."""
    tag = b"\x15\x00\x00%%%%" + struct.pack(">II", 1, 3) + b"\x00\x00\x00\x00"
    if groups == 1:
        body = b"\x00\x01" + struct.pack(">I", n_tags) + tag * n_tags
    else:
        per = n_tags // groups
        group = b"\x14\x00\x00" + b"\x00\x01" + struct.pack(">I", per) + tag * per
        body = b"\x00\x01" + struct.pack(">I", groups) + group * groups
    path.write_bytes(struct.pack(">III", 3, len(body) + 12, 1) + body + b"\x00" * 8)
    return path


def craft_mrc_frames(path: Path, nz: int) -> Path:
    """An MRC header declaring ``nz`` frames of 64 x 64 float32, with one frame of data."""
    header = bytearray(1024)
    struct.pack_into("<3i", header, 0, 64, 64, nz)
    struct.pack_into("<i", header, 12, 2)  # mode 2: float32
    struct.pack_into("<3i", header, 28, 64, 64, nz)  # mx, my, mz
    struct.pack_into("<3f", header, 40, 64.0, 64.0, float(nz))  # cell (Å)
    struct.pack_into("<3i", header, 64, 1, 2, 3)
    header[208:212] = b"MAP "
    header[212:216] = b"\x44\x44\x00\x00"
    path.write_bytes(bytes(header) + np.zeros((64, 64), np.float32).tobytes())
    return path


def _berkeley_group(handle: h5py.File, path: str, data: np.ndarray) -> None:
    group = handle.create_group(path)
    group.attrs["emd_group_type"] = 1
    group.create_dataset("data", data=data)
    for axis, n in enumerate(data.shape):
        dim = group.create_dataset(f"dim{axis + 1}", data=np.arange(n) * 0.02)
        dim.attrs["units"] = "nm"


def craft_hdf5_cases(folder: Path) -> dict[str, Path]:
    secret_h5 = folder / "secret.h5"
    with h5py.File(secret_h5, "w") as f:
        f["image"] = np.frombuffer((SECRET * 300).encode()[: 64 * 64], np.uint8).reshape(64, 64)
    secret_raw = folder / "secret.raw"
    secret_raw.write_bytes((SECRET * 1000).encode()[: 64 * 64])
    out: dict[str, Path] = {}

    out["external_link"] = folder / "extlink.emd"
    with h5py.File(out["external_link"], "w") as f:
        group = f.create_group("data/image")
        group.attrs["emd_group_type"] = 1
        group["data"] = h5py.ExternalLink(str(secret_h5), "/image")
        for axis in (1, 2):
            group.create_dataset(f"dim{axis}", data=np.arange(64) * 0.02).attrs["units"] = "nm"

    out["external_link_passwd"] = folder / "passwd.emd"
    with h5py.File(out["external_link_passwd"], "w") as f:
        f["data"] = h5py.ExternalLink("/etc/passwd", "/")

    out["external_storage"] = folder / "extstore.emd"
    with h5py.File(out["external_storage"], "w") as f:
        group = f.create_group("data/image")
        group.attrs["emd_group_type"] = 1
        group.create_dataset(
            "data", shape=(64, 64), dtype="u1", external=[(str(secret_raw), 0, 64 * 64)]
        )
        for axis in (1, 2):
            group.create_dataset(f"dim{axis}", data=np.arange(64) * 0.02).attrs["units"] = "nm"

    out["virtual"] = folder / "virtual.emd"
    layout = h5py.VirtualLayout(shape=(64, 64), dtype="u1")
    layout[:] = h5py.VirtualSource(str(secret_h5), "image", shape=(64, 64))
    with h5py.File(out["virtual"], "w") as f:
        group = f.create_group("data/image")
        group.attrs["emd_group_type"] = 1
        group.create_virtual_dataset("data", layout)
        for axis in (1, 2):
            group.create_dataset(f"dim{axis}", data=np.arange(64) * 0.02).attrs["units"] = "nm"

    # Hard links forming a DAG: each of 40 levels links twice to the next (2^40 paths).
    out["link_dag"] = folder / "dag.emd"
    with h5py.File(out["link_dag"], "w") as f:
        levels = [f.create_group(f"level{i}") for i in range(41)]
        for upper, lower in itertools.pairwise(levels):
            upper["a"] = lower
            upper["b"] = lower
        _berkeley_group(f, "level40/image", lattice((64, 64)))

    out["deep_groups"] = folder / "deep.emd"
    with h5py.File(out["deep_groups"], "w") as f:
        f.create_group("/".join(f"g{i}" for i in range(80)))

    out["hdf5_chunk_bomb"] = write_berkeley_emd(
        folder / "chunkbomb.emd", None, steps=(0.02, 0.02), units=("nm", "nm"), shape=(1, 1)
    )
    with h5py.File(out["hdf5_chunk_bomb"], "r+") as f:
        del f["data/image/data"]
        f["data/image"].create_dataset(
            "data", shape=(8192, 8192), dtype="f8", chunks=(8192, 8192), compression="gzip"
        )
        for axis in (1, 2):
            del f[f"data/image/dim{axis}"]
            f["data/image"].create_dataset(f"dim{axis}", data=np.arange(8192) * 0.02)
            f[f"data/image/dim{axis}"].attrs["units"] = "nm"

    out["hdf5_byte_bomb"] = write_berkeley_emd(
        folder / "bytebomb.emd",
        None,
        steps=(0.02, 0.02),
        units=("nm", "nm"),
        shape=(100_000, 100_000),
        dtype="float64",
    )
    out["hdf5_frame_bomb"] = write_berkeley_emd(
        folder / "framebomb.emd",
        None,
        steps=(1.0, 0.02, 0.02),
        units=("s", "nm", "nm"),
        shape=(1_000_000, 64, 64),
    )
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Write every crafted file, read them all in one limited child process, return reports."""
    folder = tmp_path_factory.mktemp("hostile")
    cases: dict[str, tuple[Path, dict]] = {}
    for key, path in craft_hdf5_cases(folder).items():
        cases[key] = (path, {})
    cases["hdf5_frame_bomb_sum"] = (cases["hdf5_frame_bomb"][0], {"frame": "sum"})
    cases["tiff_sample_bomb"] = (craft_tiff(folder / "samples.tif", 8192, 8192, 4, 64, 3), {})
    cases["tiff_complex"] = (craft_tiff(folder / "complex.tif", 4096, 4096, 1, 64, 6), {})
    pages = np.zeros((5000, 2, 2), np.uint8)
    tifffile.imwrite(folder / "pages.tif", pages, photometric="minisblack")
    cases["tiff_page_bomb"] = (folder / "pages.tif", {"pixel_size_nm": 0.02})
    cases["png_16bit_8k"] = (
        craft_png(folder / "big16.png", 8192, 8192, 16),
        {"pixel_size_nm": 0.02},
    )
    cases["png_huge_header"] = (craft_png(folder / "huge.png", 100_000, 100_000, 8, rows=4), {})
    cases["mrc_frame_bomb"] = (craft_mrc_frames(folder / "frames.mrc", 1_000_000), {"frame": "sum"})
    cases["dm3_tag_flood"] = (craft_dm3_tag_flood(folder / "flood.dm3", 1_000_000), {})
    cases["dm3_tag_flood_groups"] = (
        craft_dm3_tag_flood(folder / "flood2.dm3", 1_000_000, groups=1000),
        {},
    )
    name = '=HYPERLINK("http://evil.example","click").tif'
    write_imagej_tiff(folder / "inject.tif", lattice(), pixel_yx=(0.02, 0.02))
    cases["injection_name"] = (folder / "inject.tif", {"name": name})
    ser = FIXTURES / "128x128-TEM_search_1.ser"
    if ser.is_file():
        for key, emi in (
            ("emi_corrupt", b"<ObjectInfo><Uuid>\x00\xff<<<" + bytes(range(256)) * 40),
            ("emi_truncated", (FIXTURES / "128x128-TEM_search.emi").read_bytes()[:3000]),
        ):
            sub = folder / key
            sub.mkdir()
            shutil.copy(ser, sub / ser.name)
            (sub / "128x128-TEM_search.emi").write_bytes(emi)
            cases[key] = (sub / ser.name, {})
    payload = json.dumps({k: [str(p), kw] for k, (p, kw) in cases.items()})
    child = f"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
from hrtem_core.errors import HRTEMError
from hrtem_core.io import load_image
cases = json.loads(sys.argv[1])
out = {{}}
for key, (path, kwargs) in cases.items():
    t0 = time.monotonic()
    try:
        m = load_image(path, **kwargs)
        out[key] = {{"outcome": "ok", "shape": list(m.shape), "warnings": list(m.warnings)}}
    except HRTEMError as exc:
        out[key] = {{"outcome": type(exc).__name__, "message": str(exc)}}
    except BaseException as exc:
        out[key] = {{"outcome": "crash", "message": repr(exc)[:300]}}
    out[key]["seconds"] = time.monotonic() - t0
print(json.dumps(out))
"""
    result = subprocess.run(
        [sys.executable, "-c", child, payload],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PER_FILE_S * len(cases),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def refused(report: dict, pattern: str) -> str:
    import re

    assert report["outcome"] == "ReadError", report
    message = report["message"]
    assert "\n" not in message and re.search(pattern, message), message
    assert SECRET not in message and "root:" not in message  # no content of another file
    assert report["seconds"] < PER_FILE_S
    return message


# ------------------------------------------------------------------------------------------
# HDF5: nothing outside the file, a DAG costs its objects, not its paths
# ------------------------------------------------------------------------------------------


def test_hdf5_external_link_refused(hostile: dict) -> None:
    refused(hostile["external_link"], r"extlink\.emd: the HDF5 file has an external link")
    refused(hostile["external_link_passwd"], r"passwd\.emd: .*external link .*refused")


def test_hdf5_external_storage_refused(hostile: dict) -> None:
    refused(hostile["external_storage"], r"extstore\.emd: .*keeps its data in an external file")


def test_hdf5_virtual_dataset_refused(hostile: dict) -> None:
    refused(hostile["virtual"], r"virtual\.emd: the HDF5 data set .* is virtual")


def test_hdf5_hard_link_dag_read_once(hostile: dict) -> None:
    report = hostile["link_dag"]
    assert report["outcome"] == "ok" and report["shape"] == [64, 64], report
    assert report["seconds"] < 5.0  # 42 groups, not 2^40 paths


def test_hdf5_depth_bounded(hostile: dict) -> None:
    refused(hostile["deep_groups"], r"deep\.emd: HDF5 groups nested deeper than 64 levels")


def test_hdf5_byte_bombs_refused(hostile: dict) -> None:
    refused(hostile["hdf5_chunk_bomb"], r"chunkbomb\.emd: .*chunks of 512 MiB")
    refused(hostile["hdf5_byte_bomb"], r"bytebomb\.emd: image of 100000x100000 pixels is larger")


def test_frame_bombs_refused_from_the_header(hostile: dict) -> None:
    for key in ("hdf5_frame_bomb", "hdf5_frame_bomb_sum"):
        refused(hostile[key], r"framebomb\.emd: the stack declares 1,000,000 frames")
    refused(hostile["mrc_frame_bomb"], r"frames\.mrc: the stack declares 1,000,000 frames")
    refused(hostile["tiff_page_bomb"], r"pages\.tif: the stack declares 5,000 frames")


# ------------------------------------------------------------------------------------------
# TIFF / PNG / DM byte and tag bombs
# ------------------------------------------------------------------------------------------


def test_tiff_size_counts_bytes_samples_and_dtype(hostile: dict) -> None:
    refused(hostile["tiff_sample_bomb"], r"samples\.tif: data set of 8192x8192 \(2\.00 GiB")
    refused(hostile["tiff_complex"], r"complex\.tif: complex data \(complex64")


def test_png_bombs(hostile: dict) -> None:
    report = hostile["png_16bit_8k"]  # 16-bit 8192 x 8192: read in bounded memory
    assert report["outcome"] == "ok" and report["shape"] == [8192, 8192], report
    assert report["seconds"] < PER_FILE_S
    refused(hostile["png_huge_header"], r"huge\.png: image .*larger than the limit")


def test_dm3_tag_flood_refused_early(hostile: dict) -> None:
    message = refused(
        hostile["dm3_tag_flood"], r"flood\.dm3: .*declares 1,000,000 tags in one group, more than"
    )
    assert hostile["dm3_tag_flood"]["seconds"] < 5.0, message
    message = refused(hostile["dm3_tag_flood_groups"], r"flood2\.dm3: .*more than 50,000 tags")
    assert hostile["dm3_tag_flood_groups"]["seconds"] < 5.0, message


def test_formula_like_name_reads(hostile: dict) -> None:
    report = hostile["injection_name"]
    assert report["outcome"] == "ok" and report["shape"] == [96, 80], report


def test_corrupt_emi_keeps_the_ser(hostile: dict) -> None:
    if "emi_corrupt" not in hostile:
        pytest.skip("../shared/fixtures is not present beside the checkout")
    for key in ("emi_corrupt", "emi_truncated"):
        report = hostile[key]
        assert report["outcome"] == "ok" and report["shape"] == [128, 128], report
        assert any(".emi beside the SER file is corrupt" in w for w in report["warnings"]), report


# ------------------------------------------------------------------------------------------
# Cards: a huge book and a device
# ------------------------------------------------------------------------------------------


def _xlsx_with_phase_rows(path: Path, n_rows: int) -> Path:
    """A minimal .xlsx (inline strings) with ``n_rows`` phase rows and an empty reflections sheet."""
    import zipfile

    from hrtem_core.cards import PHASE_COLUMNS, REFLECTION_COLUMNS

    def cell(ref: str, text: str) -> str:
        if text == "TRUE":
            return f'<c r="{ref}" t="b"><v>1</v></c>'
        if text.isdigit() and not ref.startswith("A"):
            return f'<c r="{ref}"><v>{text}</v></c>'
        return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'

    def sheet(header: tuple[str, ...], rows: int) -> str:
        cols = [chr(65 + i) for i in range(len(header))]
        lines = [
            '<row r="1">'
            + "".join(cell(f"{c}1", h) for c, h in zip(cols, header, strict=True))
            + "</row>"
        ]
        values = (
            "{i}",
            "P{i}",
            "Fe",
            "cubic",
            "Fm-3m",
            "225",
            "4",
            "4",
            "4",
            "90",
            "90",
            "90",
            "x",
            "",
            "TRUE",
        )
        for r in range(2, rows + 2):
            lines.append(
                f'<row r="{r}">'
                + "".join(
                    cell(f"{c}{r}", v.format(i=r)) for c, v in zip(cols, values, strict=False)
                )
                + "</row>"
            )
        return (
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f"<sheetData>{''.join(lines)}</sheetData></worksheet>"
        )

    ns = "http://schemas.openxmlformats.org"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            f'<Types xmlns="{ns}/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/worksheets/sheet2.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>",
        )
        z.writestr(
            "_rels/.rels",
            f'<Relationships xmlns="{ns}/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>",
        )
        z.writestr(
            "xl/workbook.xml",
            f'<workbook xmlns="{ns}/spreadsheetml/2006/main" xmlns:r="{ns}/officeDocument/2006/relationships">'
            '<sheets><sheet name="phases" sheetId="1" r:id="rId1"/>'
            '<sheet name="reflections" sheetId="2" r:id="rId2"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            f'<Relationships xmlns="{ns}/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{ns}/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{ns}/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet2.xml"/>'
            "</Relationships>",
        )
        z.writestr("xl/worksheets/sheet1.xml", sheet(PHASE_COLUMNS, n_rows))
        z.writestr("xl/worksheets/sheet2.xml", sheet(REFLECTION_COLUMNS, 0))
    return path


def test_huge_card_book_refused_early(tmp_path: Path) -> None:
    from hrtem_core.cards import MAX_PHASES, load_cards

    small = load_cards(_xlsx_with_phase_rows(tmp_path / "small.xlsx", 3))
    assert [p.name for p in small.phases] == ["P2", "P3", "P4"]  # the writer makes valid books
    path = _xlsx_with_phase_rows(tmp_path / "huge.xlsx", 100_000)
    t0 = time.monotonic()
    with pytest.raises(CardDatabaseError, match=r"huge\.xlsx expands to \d+ MB, more than 34 MB"):
        load_cards(path)  # 100,000 phases: refused from the zip directory
    assert time.monotonic() - t0 < 5.0
    path = _xlsx_with_phase_rows(tmp_path / "many.xlsx", 1_500)
    t0 = time.monotonic()
    with pytest.raises(CardDatabaseError, match=rf"more than {MAX_PHASES:,} phases") as info:
        load_cards(path)  # streamed: refused at row 1,002
    assert time.monotonic() - t0 < PER_FILE_S
    assert "\n" not in str(info.value)


def test_cards_from_a_device_end_at_once(tmp_path: Path) -> None:
    from hrtem_core.cards import load_cards

    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    t0 = time.monotonic()
    with pytest.raises(CardDatabaseError, match=r"/dev/zero is not a regular file"):
        load_cards("/dev/zero")
    image = write_imagej_tiff(tmp_path / "a.tif", lattice(), pixel_yx=(0.02, 0.02))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hrtem_core",
            "analyze",
            str(image),
            "--cards",
            "/dev/zero",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "/dev/zero is not a regular file" in lines[0], result.stderr
    assert time.monotonic() - t0 < 120


# ------------------------------------------------------------------------------------------
# No global lock: a second read completes while a bad one is held up
# ------------------------------------------------------------------------------------------


def test_second_read_completes_while_a_slow_read_is_held(tmp_path: Path, monkeypatch) -> None:
    from hrtem_core.io import _registry

    release = threading.Event()
    entered = threading.Event()
    slow = dict(vars(_registry.BY_SUFFIX[".mrc"]))

    def stuck(path: Path, name: str):  # a read stuck inside a third-party parser
        entered.set()
        release.wait(30)
        raise ReadError(f"{name}: refused")

    slow["read"] = stuck
    monkeypatch.setitem(_registry.BY_SUFFIX, ".mrc", _registry.Reader(**slow))
    (tmp_path / "bad.mrc").write_bytes(b"x" * 2048)
    good = write_imagej_tiff(tmp_path / "good.tif", lattice(), pixel_yx=(0.02, 0.02))
    errors: list[str] = []

    def bad_read() -> None:
        try:
            load_image(tmp_path / "bad.mrc")
        except ReadError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=bad_read)
    thread.start()
    try:
        assert entered.wait(10)
        t0 = time.monotonic()
        micrograph = load_image(good)  # served while the bad read is held
        assert micrograph.shape == (96, 80) and time.monotonic() - t0 < 10
        assert thread.is_alive()
    finally:
        release.set()
        thread.join(30)
    assert errors == ["bad.mrc: refused"]


def test_read_budget_refuses_a_slow_sum(tmp_path: Path) -> None:
    stack = np.stack([lattice(seed=i) for i in range(40)])
    path = write_imagej_tiff(tmp_path / "stack.tif", stack, pixel_yx=(0.02, 0.02))
    with pytest.raises(
        ReadError, match=r"stack\.tif: .* took longer than the budget of 1e-09 s: refused"
    ):
        load_image(path, frame="sum", budget_s=1e-9)
    assert load_image(path, frame="sum").metadata["n_frames"] == 40


def test_isolated_read_matches_and_limits(tmp_path: Path) -> None:
    from hrtem_core.io import load_image_isolated

    path = write_imagej_tiff(tmp_path / "a.tif", lattice(), pixel_yx=(0.02, 0.02))
    direct = load_image(path)
    isolated = load_image_isolated(path, timeout_s=60)
    np.testing.assert_array_equal(direct.data, isolated.data)
    assert isolated.pixel_size_nm == direct.pixel_size_nm
    with pytest.raises(
        ReadError,
        match=r"a\.tif: (reading needs more memory than the limit|not enough memory to read)",
    ):
        load_image_isolated(path, timeout_s=60, max_memory_bytes=64 * 1024**2)
