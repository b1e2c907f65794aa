"""With CI=true a skip is a failure (tests/conftest.py), and the run ends with its counts."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SUITE = """
import pytest

def test_skips_in_the_body():
    pytest.skip("sipp not installed")

@pytest.mark.skipif(True, reason="needs root")
def test_skipped_by_a_mark():
    assert 1 + 1 == 2

def test_passes():
    assert 1 + 1 == 2
"""


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> pytest.RunResult:
    # The project's hooks, without its fixture plugins (they need services).
    hooks = CONFTEST.read_text().split("pytest_plugins = [")[0]
    pytester.makeconftest(hooks)
    pytester.makepyfile(test_suite=SUITE)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_in_ci_a_skip_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, "true")
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=0)
    result.stdout.fnmatch_lines(["*CI=true: a skip is a failure (Skipped: sipp not installed)*"])
    result.stdout.fnmatch_lines(["*CI=true: a skip is a failure (Skipped: needs root)*"])
    result.stdout.fnmatch_lines(
        ["secconf tests: 1 passed, 1 failed, 1 errors, 0 skipped (CI=true, skips fail)"]
    )
    assert result.ret != 0


def test_outside_ci_a_skip_is_a_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        ["secconf tests: 1 passed, 0 failed, 0 errors, 2 skipped (CI unset, skips allowed)"]
    )
    assert result.ret == 0
