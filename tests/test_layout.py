"""The shape of the code: app.py is the article's server, and the arrows run one way.

Read from the source with ``ast``, so that a new import or a new reach below Tornado's public
API fails here rather than in a reader's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import ROOT

PACKAGE = ROOT / "timepush"
MODULES = sorted(PACKAGE.glob("*.py"))
PROJECT = ("app", "timepush", "tests", "benchmarks", "support")
# The only modules that may read another object's underscore attributes: they say so at their
# top, and check at start-up (or in their tests) that what they read is there.
BELOW_THE_API = {"fastpath.py", "acceptor.py"}


def imported(path: Path) -> set[str]:
    """The project's modules that ``path`` imports, as dotted names (``timepush.hosts``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return {name for name in names if name.split(".")[0] in PROJECT}


def test_app_is_short_and_in_the_walkthrough_order() -> None:
    """app.py stays within 500 lines, with the article's names in the order it tells them."""
    source = (ROOT / "app.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 500
    top = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            top.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.append(node.target.id)
    order = ["clients", "IndexHandler", "MyWebSocketHandler", "send_to_all", "SendThread"]
    order += ["make_app", "serve", "main"]
    assert [name for name in top if name in order] == order


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_package_never_imports_app(path: Path) -> None:
    """No module of the package imports app.py, tests/ or benchmarks/."""
    assert not {name for name in imported(path) if name.split(".")[0] != "timepush"}


@pytest.mark.parametrize("name", ["cluster.py", "fastpath.py"])
def test_self_contained(name: str) -> None:
    """The cluster engine and the fast path import nothing of the project."""
    assert imported(PACKAGE / name) == set()


def test_nothing_imports_tests_or_benchmarks() -> None:
    """The server's code imports neither the tests nor the benchmarks."""
    for path in [ROOT / "app.py", *MODULES]:
        assert not {name for name in imported(path) if name.split(".")[0] in PROJECT[2:]}, path


def underscore_reads(path: Path) -> list[str]:
    """Each ``something._name`` in ``path`` (dunders aside), with its line."""
    return [
        f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def test_underscores_only_in_two_modules() -> None:
    """Only the fast path and the accept loop read underscore attributes; they do read some."""
    outside = [ROOT / "app.py", *(path for path in MODULES if path.name not in BELOW_THE_API)]
    assert [read for path in outside for read in underscore_reads(path)] == []
    for name in BELOW_THE_API:
        assert underscore_reads(PACKAGE / name), f"{name} is no longer below the API: say so"
