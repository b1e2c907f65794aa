"""The import contracts (pyproject.toml ``[tool.importlinter]``, ``make structure``) can fail.

Each contract is run by ``lint-imports`` on a copy of the package: the copy as it is keeps every
contract, and the copy with one import the contract forbids breaks that contract.  The contracts
are all ``forbidden`` contracts and silence nothing with ``ignore_imports``: a never that does
not hold yet is listed in docs/ARCHITECTURE.md ("Structure still to fix (issue 13)") instead.
Indirect imports count, except in the contract on redis-py, which every part reaches through
the store by design.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import secconf

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONFIG = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
CONTRACTS: list[dict[str, Any]] = CONFIG["contracts"]


def _copy(tmp_path: Path) -> Path:
    """The package copied under *tmp_path*/plugin (sources only); that directory."""
    plugin = tmp_path / "plugin"
    shutil.copytree(
        REPO / "plugin" / "secconf",
        plugin / "secconf",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return plugin


def _lint_imports(plugin: Path, *contract_ids: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts on the package copied to *plugin*."""
    env = {**os.environ, "PYTHONPATH": str(plugin), "COLUMNS": "200"}
    selected = [arg for contract_id in contract_ids for arg in ("--contract", contract_id)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *selected, str(PYPROJECT)],
        capture_output=True, text=True, env=env, cwd=plugin.parent, timeout=120, check=False,
    )  # fmt: skip


def _offend(plugin: Path, source: str, forbidden: str) -> Path:
    """Make *source* import *forbidden*: a new module in a package, a line in a module."""
    path = plugin.joinpath(*source.split("."))
    line = f"import {forbidden}  # the offending import\n"
    if path.is_dir():
        probe = path / "_structure_probe.py"
        probe.write_text(line)
        return probe
    module = path.with_suffix(".py")
    module.write_text(module.read_text() + "\n" + line)
    return module


def _external(contract: dict[str, Any]) -> bool:
    """True for a contract on packages from outside secconf (redis-py).

    Every part reaches those through the one part allowed to import them, so only direct
    imports count there (``allow_indirect_imports``).
    """
    return not any(module.startswith("secconf") for module in contract["forbidden_modules"])


def test_the_contracts_are_forbidden_contracts_that_ignore_nothing() -> None:
    assert CONFIG["root_package"] == "secconf"
    assert len(CONTRACTS) >= 5
    for contract in CONTRACTS:
        assert contract["type"] == "forbidden", contract["id"]
        assert "ignore_imports" not in contract, contract["id"]
        indirect_allowed = contract.get("allow_indirect_imports", False)
        assert indirect_allowed is _external(contract), contract["id"]
    assert len({contract["id"] for contract in CONTRACTS}) == len(CONTRACTS)


def test_only_the_store_imports_redis() -> None:
    """issue 13: every Redis key, command, script and stream lives in secconf.store."""
    (contract,) = (c for c in CONTRACTS if "redis" in c["forbidden_modules"])
    assert CONFIG["include_external_packages"] is True
    parts = {f"secconf.{m.name}" for m in pkgutil.iter_modules(secconf.__path__)}
    assert set(contract["source_modules"]) == parts - {"secconf.store"}


def test_the_core_contract_names_every_other_part_of_secconf() -> None:
    (core,) = (c for c in CONTRACTS if c["source_modules"] == ["secconf.core"])
    parts = {f"secconf.{m.name}" for m in pkgutil.iter_modules(secconf.__path__)}
    assert set(core["forbidden_modules"]) == parts - {"secconf.core"}


def test_the_package_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_imports(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c["id"] for c in CONTRACTS])
def test_an_offending_import_breaks_the_contract(tmp_path: Path, contract: dict[str, Any]) -> None:
    plugin = _copy(tmp_path)
    source, forbidden = contract["source_modules"][-1], contract["forbidden_modules"][-1]
    offender = _offend(plugin, source, forbidden)
    result = _lint_imports(plugin, contract["id"])
    assert result.returncode != 0, result.stdout
    assert "Contracts: 0 kept, 1 broken." in result.stdout, result.stdout + result.stderr
    importer = ".".join(offender.relative_to(plugin).with_suffix("").parts)
    assert f"{importer} -> {forbidden}" in result.stdout, result.stdout
