"""Shared test set-up: Hypothesis profiles and the capture corpus."""

from __future__ import annotations

import os
import tomllib
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
    "tests.fixtures.redis_server",
    "tests.fixtures.redis_cluster",
    "tests.fixtures.kms_server",
    "tests.fixtures.kamailio_server",
    "tests.fixtures.edge_server",
    "tests.fixtures.asterisk_server",
    "tests.fixtures.phones",
]
