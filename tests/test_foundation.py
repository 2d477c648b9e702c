"""The project's ground rules: the library never imports streamlit; errors are one line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from hrtem_core import errors
from hrtem_core.cli import main

PACKAGE = Path(__file__).resolve().parents[1] / "hrtem_core"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_streamlit() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 3
    offenders = [str(f) for f in files if "streamlit" in _imported_modules(f)]
    assert offenders == []


def test_library_import_does_not_load_streamlit() -> None:
    code = (
        "import sys, importlib, pkgutil, hrtem_core\n"
        "for m in pkgutil.walk_packages(hrtem_core.__path__, 'hrtem_core.'):\n"
        "    if m.name.endswith('__main__'): continue\n"
        "    importlib.import_module(m.name)\n"
        "print('streamlit' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "cls",
    [
        errors.ReadError,
        errors.CalibrationError,
        errors.CardDatabaseError,
        errors.AnalysisParameterError,
    ],
)
def test_error_hierarchy_and_one_line_messages(cls: type[errors.HRTEMError]) -> None:
    assert issubclass(cls, errors.HRTEMError)
    exc = cls("first line\n  second   line")
    assert str(exc) == "first line second line"
    assert exc.message == str(exc)


def test_cli_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hrtem_core", "--version"],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    )
    assert out.returncode == 0
    assert out.stdout.startswith("hrtem_core ")
