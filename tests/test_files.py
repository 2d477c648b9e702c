"""hrtem_core._files: atomic writes, strict JSON, safe names, formula escaping, extensions; and
that every CSV/XLSX writer of the project escapes, and card names that would be formulas are
refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from hrtem_core import _files
from hrtem_core.errors import CardDatabaseError

INJECTIONS = [
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+2",
    "\r=1+2",
]

# ------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    assert _files.write_text(target, "one") == target
    _files.write_text(target, "two")
    _files.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert target.read_text() == "two" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.txt"]


def test_atomic_write_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = _files.write_text(tmp_path / "a.txt", "previous")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _files.atomic_write(target, half_then_fail)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_keeps_the_suffix_for_writers_that_need_it(tmp_path: Path) -> None:
    seen: list[str] = []
    _files.atomic_write(tmp_path / "r.xlsx", lambda p: (seen.append(p.suffix), p.write_bytes(b"x")))
    assert seen == [".xlsx"]


# ------------------------------------------------------------------------------------------
# Strict JSON: one NaN rule
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Point:
    x: float
    y: np.float32


def test_jsonable_one_nan_rule_and_types() -> None:
    value = {
        1: np.float64("nan"),
        "inf": -math.inf,
        "f32": np.float32(1.5),
        "i": np.int16(-3),
        "b": np.bool_(True),
        "arr": np.array([1.0, np.nan]),
        "bytes": b"caf\xc3\xa9\xff",
        "when": dt.datetime(2024, 3, 16, 10, 11, 12),
        "path": Path("/a/b"),
        "point": _Point(np.inf, np.float32(2.0)),
        "set": {3},
        "other": complex(1, 2),
    }
    out = _files.jsonable(value)
    assert out == {
        "1": None,
        "inf": None,
        "f32": 1.5,
        "i": -3,
        "b": True,
        "arr": [1.0, None],
        "bytes": "café\ufffd",
        "when": "2024-03-16T10:11:12",
        "path": "/a/b",
        "point": {"x": None, "y": 2.0},
        "set": [3],
        "other": "(1+2j)",
    }
    json.dumps(out, allow_nan=False)
    assert _files.jsonable(np.zeros((10, 10)), max_array_size=64) == "array(10, 10)"


def test_export_and_batch_share_the_rule() -> None:
    from hrtem_core import batch, export

    value = {"a": [np.float32(np.nan), np.int64(2)], "b": np.float64(0.25)}
    assert export.jsonable(value) == batch._jsonable(value) == {"a": [None, 2], "b": 0.25}


# ------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a b/../c;d.ser", "c_d.ser"),
        ("..", "file"),
        (".hidden.tif", "hidden.tif"),
        ("C:\\data\\np_df-16nm.tif", "np_df-16nm.tif"),
        ('=HYPERLINK("x").tif', "HYPERLINK_x_.tif"),
        ("", "file"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert _files.safe_name(name) == expected


def test_display_name_keeps_units_for_the_defocus() -> None:
    assert _files.display_name("dir/df-160Å.tif") == "df-160Å.tif"
    assert _files.display_name("../.x") == "x"
    assert _files.display_name("") == "upload"


def test_supported_extensions_come_from_the_reader_registry() -> None:
    from hrtem_core import batch, io

    suffixes = sorted(s for reader in io.READERS for s in reader.suffixes)
    assert list(batch.supported_extensions()) == suffixes == list(io.SUPPORTED_EXTENSIONS)
    assert batch.supported_extensions() == io.SUPPORTED_EXTENSIONS
    assert {".dm3", ".dm4", ".ser", ".emd", ".mrc", ".tif", ".png", ".jpg"} <= set(suffixes)


# ------------------------------------------------------------------------------------------
# Formula injection (OWASP): escape on write
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", INJECTIONS)
def test_escape_formula_prefixes_an_apostrophe(text: str) -> None:
    assert _files.is_formula_like(text)
    assert _files.escape_formula(text) == "'" + text


@pytest.mark.parametrize("value", ["-0.5", "+3", "-1e-3", "plain", "a=b", "", 3.0, -2, None])
def test_escape_formula_leaves_data_alone(value) -> None:
    assert _files.escape_formula(value) == value


def test_escape_frame_is_a_copy(tmp_path: Path) -> None:
    frame = pd.DataFrame({"=col": ["=1+2", "ok"], "n": [-1.0, 2.0]})
    out = _files.escape_frame(frame)
    assert list(out.columns) == ["'=col", "n"]
    assert list(out["'=col"]) == ["'=1+2", "ok"] and list(out["n"]) == [-1.0, 2.0]
    assert list(frame["=col"]) == ["=1+2", "ok"]  # the caller's frame is untouched


def _xlsx_cells(path: Path) -> list:
    wb = openpyxl.load_workbook(path)
    return [c for ws in wb.worksheets for row in ws.iter_rows() for c in row]


def test_csv_and_xlsx_writers_escape(tmp_path: Path) -> None:
    from hrtem_core import export

    frame = pd.DataFrame(
        {"file": INJECTIONS, "spacing_nm": np.linspace(-0.2, 0.3, len(INJECTIONS))}
    )
    for write in (_files.write_csv, export.write_csv):
        path = write(frame, tmp_path / "t.csv")
        assert (
            b"'\r=1+2" in path.read_bytes()
        )  # a bare CR is not a CSV line break for the writer: check raw
        back = pd.read_csv(path, keep_default_na=False, nrows=len(INJECTIONS) - 1)
        assert list(back["file"]) == ["'" + t for t in INJECTIONS[:-1]]
        np.testing.assert_allclose(back["spacing_nm"], frame["spacing_nm"][:-1])
    for write in (_files.write_xlsx, export.write_xlsx):
        path = write({"windows": frame, "=sheet": frame}, tmp_path / "t.xlsx")
        cells = _xlsx_cells(path)
        assert not [c for c in cells if c.data_type == "f"]  # no live formula anywhere
        texts = [c.value for c in cells if isinstance(c.value, str) and c.value != "file"]
        assert texts and all(v.startswith("'") or v == "spacing_nm" for v in texts)
        assert openpyxl.load_workbook(path).sheetnames == ["windows", "'=sheet"]


def test_export_analysis_escapes_file_and_phase_names(tmp_path: Path) -> None:
    from hrtem_core import export

    name = INJECTIONS[0] + ".tif"
    windows = pd.DataFrame({"file": [name], "phase": ["@evil"], "spacing_nm": [0.25]})
    export.write_csv(windows, tmp_path / "windows.csv")
    text = (tmp_path / "windows.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text and "'@evil" in text and "\n=" not in text and ",=" not in text


def test_batch_files_csv_escapes(tmp_path: Path) -> None:
    from hrtem_core import batch

    rows = [
        {"file": "-evil.tif", "path": "/x/-evil.tif", "status": "error", "error": INJECTIONS[1]},
        {"file": "ok.tif", "path": "/x/ok.tif", "status": "ok", "summary": {"note": "@x"}},
    ]
    table = batch._files_table(rows)
    batch._write_csv(table, tmp_path / "files.csv")
    back = pd.read_csv(tmp_path / "files.csv", keep_default_na=False)
    assert list(back["file"]) == ["'-evil.tif", "ok.tif"]
    assert back.loc[0, "error"] == "'" + INJECTIONS[1] and back.loc[1, "note"] == "'@x"
    assert list(table["file"]) == ["-evil.tif", "ok.tif"]  # only the file is escaped


# ------------------------------------------------------------------------------------------
# Cards: names that would be formulas are refused
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("name", "+cmd", "'+'"),
        ("name", "-2+3", "'-'"),
        ("name", "@SUM(1)", "'@'"),
        ("card_id", "-1", "'-'"),
    ],
)
def test_card_names_that_are_formulas_refused(column: str, value: str, shown: str) -> None:
    from hrtem_core.cards import CardDatabase, load_cards

    phases, reflections = load_cards().to_frames()
    phases = phases.copy()
    phases.loc[0, column] = value
    pattern = rf"row 2, column '{column}': .*starts with {re.escape(shown)}"
    with pytest.raises(CardDatabaseError, match=pattern):
        CardDatabase.from_frames(phases, reflections)


def test_card_names_inside_are_fine() -> None:
    from hrtem_core.cards import CardDatabase, load_cards

    phases, reflections = load_cards().to_frames()
    phases = phases.copy()
    phases.loc[0, "name"] = "maghemite (γ-Fe2O3) = spinel"
    phases.loc[1, "name"] = "\t magnetite"  # surrounding blanks are stripped: not formula-like
    db = CardDatabase.from_frames(phases, reflections)
    assert db.phases[0].name == "maghemite (γ-Fe2O3) = spinel"
    assert db.phases[1].name == "magnetite"


def test_atomic_write_gives_the_usual_file_mode(tmp_path) -> None:
    """mkstemp's private 0600 is not kept: the file gets 0666 minus the umask, like open()."""
    import os

    from hrtem_core import _files

    out = _files.write_bytes(tmp_path / "a.bin", b"x")
    plain = tmp_path / "b.bin"
    plain.write_bytes(b"x")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert os.access(out, os.R_OK)
