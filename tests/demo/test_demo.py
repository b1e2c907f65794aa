"""``make demo`` runs in ``make test``: the whole story, as a user runs it (``secconf demo``).

Real everything (Redis, KMS, edge, Asterisk 22, Kamailio with TLS, the watcher,
linphonec, baresip); the demo's own checks decide its exit code, so this test
fails whenever a step of the story stops behaving as the demo says.  Needs root
(Asterisk's chroot), as CI has.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SECCONF = Path(sys.executable).parent / "secconf"
SVG = "{http://www.w3.org/2000/svg}"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(os.geteuid() != 0, reason="Asterisk runs chrooted: needs root"),
]


def test_make_demo_story_holds_and_draws_its_timeline(tmp_path: Path) -> None:
    timeline = tmp_path / "timeline.svg"
    result = subprocess.run(
        [str(SECCONF), "demo", "--timeline", str(timeline)],
        capture_output=True, text=True, timeout=400, check=False,
        env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}, cwd=tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "FAILED" not in output
    assert re.search(r"all \d+ checks held", output), output[-3000:]
    for step in ("mallory's INVITE refused with 403", "replayed: refused with 403",
                 "called erin back", "bob's key opens 0/", "every service stopped"):  # fmt: skip
        assert step in output, step
    # No key material in what a user sees: keys appear as fingerprints only.
    assert not re.search(r"inline:[A-Za-z0-9+/]{20,}", output)
    root = ET.fromstring(timeline.read_text())  # noqa: S314 - the demo's own output
    bands = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "epoch"]
    calls = {r.get("data-member") for r in root.iter(f"{SVG}rect") if r.get("class") == "call"}
    assert [b.get("data-epoch") for b in bands] == ["1", "2"]
    assert calls == {"alice", "bob", "carol", "erin", "dave"}
