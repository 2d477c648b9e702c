"""Structure rules (issue 20.5): no import cycle inside ``hrtem_core``; every test asserts; at most
eight functions over 80 lines of code.

All are read from the source with :mod:`ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hrtem_core"


def module_name(path: Path, root: Path = ROOT) -> str:
    """``hrtem_core/analysis/image.py`` -> ``hrtem_core.analysis.image`` (``__init__`` dropped)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(tree: ast.AST, name: str, *, is_package: bool) -> set[str]:
    """Every module ``name`` imports anywhere (top level, inside functions, under
    ``TYPE_CHECKING`` too), relative imports resolved; ``from a import b`` counts as ``a.b``
    (kept only where that is a module) and as ``a``."""
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = base[: len(base) - (node.level - 1)]
                mod = ".".join(up + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` over every ``.py`` file of ``package``."""
    files = sorted((root / package).rglob("*.py"))
    modules = {module_name(f, root): f for f in files}
    graph: dict[str, set[str]] = {}
    for mod, f in modules.items():
        tree = ast.parse(f.read_text(encoding="utf-8"))
        targets = imported_modules(tree, mod, is_package=f.name == "__init__.py")
        # A package's own __init__ runs first whatever is imported from it: importing
        # ``a.b`` imports ``a``; only edges between different modules count.
        graph[mod] = {t for t in targets if t in modules and t != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def _is_package_edge(a: str, b: str) -> bool:
    """``a`` is a package and ``b`` one of its own submodules (an ``__init__`` re-export)."""
    return b.startswith(a + ".")


def package_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """The import graph without a package's edges to its own submodules: ``__init__`` re-exports
    are not cycles (the submodule importing a sibling through the package is)."""
    graph = import_graph(root)
    return {a: {b for b in deps if not _is_package_edge(a, b)} for a, deps in graph.items()}


def test_find_cycle_knows_a_cycle_and_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_are_resolved(tmp_path):
    pkg = tmp_path / PACKAGE / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .a import x\n")
    (pkg / "a.py").write_text("def f():\n    from ..top import y\n    from . import b\n")
    (pkg / "b.py").write_text("import hrtem_core.top\n")
    (tmp_path / PACKAGE / "top.py").write_text("from hrtem_core.sub import a\n")
    graph = import_graph(tmp_path)
    assert graph[f"{PACKAGE}.sub.a"] == {f"{PACKAGE}.top", f"{PACKAGE}.sub", f"{PACKAGE}.sub.b"}
    assert graph[f"{PACKAGE}.sub.b"] == {f"{PACKAGE}.top"}
    assert graph[f"{PACKAGE}.top"] == {f"{PACKAGE}.sub", f"{PACKAGE}.sub.a"}
    # sub.a -> top -> sub.a: a cycle through a deferred import.
    assert find_cycle(import_graph(tmp_path)) is not None


def test_no_import_cycle_in_the_package():
    graph = package_graph()
    assert graph.get(f"{PACKAGE}.analysis.series")
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# --------------------------------------------------------------------------------------------
# Every test asserts
# --------------------------------------------------------------------------------------------

#: Helper-name prefixes that count as an assertion (they assert inside).
CHECK_PREFIXES = ("assert_", "check_")


def _called_names(fn: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return names


def _asserts_itself(fn: ast.AST) -> bool:
    """An ``assert``, ``pytest.raises``/``warns``/``fail``, or an ``assert_*``/``check_*`` call
    (leading underscores ignored; ``np.testing.assert_*`` included)."""
    if any(isinstance(node, ast.Assert) for node in ast.walk(fn)):
        return True
    return any(
        n in ("raises", "warns", "fail") or n.lstrip("_").startswith(CHECK_PREFIXES)
        for n in _called_names(fn)
    )


def non_asserting_tests(root: Path = ROOT / "tests") -> list[str]:
    """``file::test`` of every ``def test_*`` under ``root`` that asserts nothing.

    A test asserts when it holds an assertion (:func:`_asserts_itself`) or calls a helper of
    its own file that does (directly or through other helpers of the file).
    """
    out = []
    for f in sorted(root.rglob("test_*.py")):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        helpers = {n.name: n for n in funcs if not n.name.startswith("test_")}
        asserting = {name for name, n in helpers.items() if _asserts_itself(n)}
        grew = True
        while grew:  # helpers that call asserting helpers assert too
            more = {n for n, fn in helpers.items() if _called_names(fn) & asserting}
            grew = not more <= asserting
            asserting |= more
        for n in funcs:
            if n.name.startswith("test_") and not (
                _asserts_itself(n) or _called_names(n) & asserting
            ):
                out.append(f"{f.relative_to(root)}::{n.name}")
    return out


def test_the_assert_rule_tells_the_cases_apart(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_a():\n    assert 1\n"
        "def test_b():\n    with pytest.raises(ValueError):\n        int('x')\n"
        "def test_c():\n    check_it(1)\n"
        "def test_d():\n    f(1)\n"
        "def helper(x):\n    assert x\n"
        "def outer(x):\n    helper(x)\n"
        "def test_e():\n    outer(1)\n"
    )
    assert non_asserting_tests(tmp_path) == ["test_x.py::test_d"]


def test_every_test_asserts_something():
    offenders = non_asserting_tests()
    assert not offenders, "tests that assert nothing: " + ", ".join(offenders)


#: Issue 20.5: at most this many functions longer than LONG_FUNCTION_LINES lines of code.
MAX_LONG_FUNCTIONS = 8
LONG_FUNCTION_LINES = 80


def lines_of_code(node: ast.AST, source_lines: list[str]) -> int:
    """Lines of a function without its docstring, blank lines and comment-only lines."""
    body = node.body  # type: ignore[attr-defined]
    doc: set[int] = set()
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(getattr(body[0], "value", None), ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(
        1
        for i in range(node.lineno, node.end_lineno + 1)  # type: ignore[attr-defined]
        if i not in doc
        and source_lines[i - 1].strip()
        and not source_lines[i - 1].strip().startswith("#")
    )


def long_functions(root: Path = ROOT) -> list[tuple[int, str]]:
    """``(lines of code, "path:line name")`` of every function over LONG_FUNCTION_LINES in the
    library, the dashboard helpers, the pages and the app."""
    files = [
        *sorted((root / PACKAGE).rglob("*.py")),
        *sorted((root / "ui").rglob("*.py")),
        *sorted((root / "pages").glob("*.py")),
        root / "app.py",
    ]
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = lines_of_code(node, lines)
                if n > LONG_FUNCTION_LINES:
                    out.append((n, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def test_lines_of_code_counts_neither_docstring_nor_comments(tmp_path) -> None:
    src = 'def f():\n    """Doc.\n\n    More.\n    """\n    # note\n\n    x = 1\n    return x\n'
    node = ast.parse(src).body[0]
    assert lines_of_code(node, src.splitlines()) == 3


def test_few_long_functions() -> None:
    long = long_functions()
    assert len(long) <= MAX_LONG_FUNCTIONS, "functions over 80 lines of code: " + ", ".join(
        f"{where} ({n})" for n, where in long
    )
