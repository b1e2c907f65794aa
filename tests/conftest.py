"""Shared test set-up: Hypothesis profiles, the capture corpus, and no silent skips in CI."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

DATA = Path(__file__).parent / "data"
SDP_DIR = DATA / "sdp"

# CI runs every property with at least 2,000 examples (issue 2); a developer
# can export SECCONF_HYPOTHESIS_PROFILE=dev for a quicker loop.
settings.register_profile(
    "ci",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("SECCONF_HYPOTHESIS_PROFILE", "ci"))

# With CI=true a test never skips for a missing part (not root, no Kamailio, no sipp, no phone, no
# Asterisk tree): the skip is reported as a failure, so CI cannot go green by testing less.
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None] | pytest.TestReport:
    report: pytest.TestReport = yield
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skip is a failure ({_skip_reason(report)})"
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line at the very end: passed, failed, skipped (what `make test` promises to print)."""
    counts = {
        outcome: len(terminalreporter.stats.get(outcome, []))
        for outcome in ("passed", "failed", "error", "skipped")
    }
    mode = "CI=true, skips fail" if IN_CI else "CI unset, skips allowed"
    terminalreporter.write_line(
        f"secconf tests: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['error']} errors, {counts['skipped']} skipped ({mode})"
    )


def sdp_provenance() -> dict[str, dict[str, object]]:
    """``tests/data/sdp/PROVENANCE.toml``: where every capture came from."""
    with (SDP_DIR / "PROVENANCE.toml").open("rb") as handle:
        return tomllib.load(handle)


def sdp_captures() -> list[Path]:
    return sorted(SDP_DIR.glob("*.sdp"))


@pytest.fixture(params=sdp_captures(), ids=lambda path: path.name)
def capture(request: pytest.FixtureRequest) -> Path:
    """Each real SDP capture in turn."""
    path: Path = request.param
    return path


pytest_plugins = [
    "pytester",  # tests/unit/test_ci_skips.py runs pytest on a made-up suite
    "tests.fixtures.redis_server",
    "tests.fixtures.redis_cluster",
    "tests.fixtures.kms_server",
    "tests.fixtures.kamailio_server",
    "tests.fixtures.edge_server",
    "tests.fixtures.asterisk_server",
    "tests.fixtures.phones",
]
