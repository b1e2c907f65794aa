"""Every test can fail: it checks something, directly or through a helper of the test suite.

A test function passes this check when it, or a function of the test suite it names (called or
handed to a runner such as ``run(full_call)``, followed through imports between test modules),

- asserts something that is not a constant (``assert True`` proves nothing), or
- expects an exception (``pytest.raises``, ``pytest.warns``, ``pytest.fail``), or
- lets exactly one family of errors pass (``contextlib.suppress(E)`` in a property test: any
  other exception fails it), or
- drives a real program that fails on its own (``check=True`` for subprocess).

Ruff has no rule for this (PT015 only flags ``assert False``), so the suite checks itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

EXPECTING_CALLS = {"raises", "warns", "fail", "suppress"}


@dataclass
class Module:
    path: Path
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, name)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def _index() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted(TESTS.rglob("*.py")):
        name = _module_name(path)
        module = Module(path)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                module.functions.setdefault(node.name, node)
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.level:
                    base = name.split(".")[: -node.level]
                    source = ".".join([*base, node.module])
                else:
                    source = node.module
                if source.startswith("tests"):
                    for alias in node.names:
                        module.imported[alias.asname or alias.name] = (source, alias.name)
        modules[name] = module
    return modules


def _checks_directly(function: ast.AST) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Assert) and not isinstance(node.test, ast.Constant):
            return True
        if isinstance(node, ast.Call):
            callee = node.func
            name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
            if name in EXPECTING_CALLS:
                return True
            if any(
                kw.arg == "check" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                for kw in node.keywords
            ):
                return True
    return False


def _named(function: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)  # self._helper(...), module.helper(...)
    return names


def _can_fail(modules: dict[str, Module], module_name: str, function_name: str) -> bool:
    seen: set[tuple[str, str]] = set()
    todo = [(module_name, function_name)]
    while todo and len(seen) < 500:  # bounded: the suite has far fewer helpers
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        module = modules.get(key[0])
        if module is None:
            continue
        function = module.functions.get(key[1])
        if function is None:
            if key[1] in module.imported:
                todo.append(module.imported[key[1]])
            continue
        if _checks_directly(function):
            return True
        for name in _named(function) - {key[1]}:
            if name in module.functions:
                todo.append((key[0], name))
            elif name in module.imported:
                todo.append(module.imported[name])
    return False


def _test_functions(modules: dict[str, Module]) -> list[tuple[str, str, int]]:
    found = []
    for name, module in modules.items():
        if not module.path.name.startswith("test_"):
            continue
        for function in module.functions.values():
            if function.name.startswith("test_"):
                found.append((name, function.name, function.lineno))
    return found


def test_every_test_function_can_fail() -> None:
    modules = _index()
    tests = _test_functions(modules)
    assert len(tests) > 500, "the test suite was not found"
    cannot_fail = [
        f"{module.replace('.', '/')}.py:{line} {name}"
        for module, name, line in tests
        if not _can_fail(modules, module, name)
    ]
    assert cannot_fail == []


def test_no_test_asserts_a_constant() -> None:
    constant = [
        f"{path.relative_to(TESTS.parent)}:{node.lineno}"
        for path in sorted(TESTS.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant)
    ]
    assert constant == []


def test_the_check_catches_a_test_that_asserts_nothing(tmp_path: Path) -> None:
    tree = ast.parse(
        "def test_nothing():\n    x = 1\n    assert True\n"
        "def test_something():\n    assert 1 + 1 == 2\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
    )
    verdicts = {
        node.name: _checks_directly(node) for node in tree.body if isinstance(node, ast.FunctionDef)
    }
    assert verdicts == {"test_nothing": False, "test_something": True, "test_raises": True}
