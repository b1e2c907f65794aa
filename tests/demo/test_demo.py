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
                 "called erin back", "bob's key opens 0/", "every service stopped",
                 "mallory's SUBSCRIBE refused with 403", "no subscription stored for her",
                 "alice's views came in increasing versions, none refused"):  # fmt: skip
        assert step in output, step
    _assert_event_package(output)
    # No key material in what a user sees: keys appear as fingerprints only.
    assert not re.search(r"inline:[A-Za-z0-9+/]{20,}", output)
    root = ET.fromstring(timeline.read_text())  # noqa: S314 - the demo's own output
    bands = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "epoch"]
    calls = {r.get("data-member") for r in root.iter(f"{SVG}rect") if r.get("class") == "call"}
    assert [b.get("data-epoch") for b in bands] == ["1", "2"]
    assert calls == {"alice", "bob", "carol", "erin", "dave"}
    views = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "view"]
    assert len(views) >= 5, len(views)


def _assert_event_package(output: str) -> None:
    """alice's roster views, timed; the capture: CMS only, no roster identity in clear."""
    # The view after bob's BYE shows him disconnected, and arrived within 500 ms.
    left = re.search(
        r"ok +alice's view shows bob disconnected \(departed\).*?(\d+) ms\s+after\s+bob's\s+BYE",
        output,
        re.DOTALL,
    )
    assert left, output[-6000:]
    assert int(left.group(1)) < 500
    joined = re.search(r"ok +bob in alice's view (\d+) ms after his INVITE's 200 OK", output)
    assert joined, output[-6000:]
    assert int(joined.group(1)) < 500
    assert re.search(r"sip:bob@example\.com +disconnected +dialed-in", output)
    # Each view checked against the story: members, user-count, the KMS members' SSRCs.
    assert re.search(
        r"ok +members alice, carol, dave, erin connected \(user-count 4\), bob departed", output
    )
    assert re.search(
        r"ok +members alice, bob connected \(user-count 2\); src-id alice \d+, bob \d+", output
    )
    # The capture's verdict: every NOTIFY body CMS AuthEnvelopedData, no identity in clear.
    bodies = re.search(r"ok +(\d+) NOTIFY bodies on the wire, each application/pkcs7-mime", output)
    assert bodies, output[-6000:]
    assert int(bodies.group(1)) >= 2
    assert re.search(
        r"ok +the roster alice's device opened names 4 others;.*?\s+names\s+0\s+of\s+them",
        output,
        re.DOTALL,
    )
    assert output.count("1.2.840.113549.1.9.16.1.23 (AuthEnvelopedData)") == int(bodies.group(1))
