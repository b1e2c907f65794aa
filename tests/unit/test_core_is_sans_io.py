"""The core must stay sans-IO: no sockets, Redis, KSR, clock or randomness imported."""

from __future__ import annotations

import ast
from pathlib import Path

import secconf.core

CORE = Path(secconf.core.__file__).parent

FORBIDDEN = {
    "asyncio", "datetime", "http", "KSR", "os", "random", "redis", "secrets", "select",
    "selectors", "socket", "socketserver", "ssl", "subprocess", "threading", "time",
    "urllib", "uuid",
}  # fmt: skip


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_io_clock_or_randomness() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert files, "core package not found"
    offenders = {
        str(path.relative_to(CORE)): sorted(
            _imported_roots(ast.parse(path.read_text())) & FORBIDDEN
        )
        for path in files
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_core_has_no_assert_statements() -> None:
    # python -O strips asserts: validation in the core raises ProtocolError instead.
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
        assert asserts == [], f"{path.name} uses assert on lines {asserts}"


def test_the_checker_itself_catches_forbidden_imports() -> None:
    tree = ast.parse("import socket\nfrom time import monotonic\nimport os.path\nfrom . import sdp")
    assert _imported_roots(tree) & FORBIDDEN == {"socket", "time", "os"}
