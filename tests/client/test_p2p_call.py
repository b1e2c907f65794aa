"""Two participant agents, as separate processes, call each other with MIKEY-TICKET.

The RFC 6043 point-to-point case: Alice asks the KMS for a ticket naming
Bob, INVITEs him with a TRANSFER_INIT in the SDP; Bob resolves it at the KMS
and answers with a TRANSFER_RESP; both then send a tone over SRTP and each
must hear the other's tone.  A third identity that is not in the ticket is
refused by Bob before any media flows.
"""

from __future__ import annotations

import json
import queue
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.kms_server import RunningKms

SECCONF = str(Path(sys.executable).parent / "secconf")

pytestmark = pytest.mark.slow


def _identity(name: str) -> str:
    return f"sip:{name}-{secrets.token_hex(4)}@example.com"


def _kms_options(kms: RunningKms, identity: str, psk: Path) -> list[str]:
    return ["--kms-url", kms.url, "--kms-identity", kms.identity,
            "--identity", identity, "--psk-file", str(psk)]  # fmt: skip


class Answerer:
    """`secconf client answer` in the background; knows its SIP port once it listens."""

    def __init__(self, kms: RunningKms, identity: str, psk: Path, tone: float, expect: float):
        self.process = subprocess.Popen(
            [SECCONF, "client", "answer", *_kms_options(kms, identity, psk),
             "--tone", str(tone), "--expect-tone", str(expect), "--seconds", "2", "--wait", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(
            target=lambda: [lines.put(line) for line in self.process.stderr or ()], daemon=True
        ).start()
        deadline = time.monotonic() + 20
        self.port = 0
        while not self.port and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.log.append(line)
            if "answering on" in line:
                self.port = int(line.rsplit(":", 1)[1])
        if not self.port:
            self.process.kill()
            raise AssertionError("answerer did not start: " + "".join(self.log))
        self._lines = lines

    def report(self) -> dict[str, object]:
        stdout, _ = self.process.communicate(timeout=90)
        while not self._lines.empty():
            self.log.append(self._lines.get())
        assert self.process.returncode == 0, "".join(self.log)
        return json.loads(stdout)


def _call(kms: RunningKms, identity: str, psk: Path, port: int, target: str, tone: float,
          expect: float) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [SECCONF, "client", "call", *_kms_options(kms, identity, psk),
         "--target", f"sip:{target.split(':', 1)[1].split('@')[0]}@127.0.0.1:{port}",
         "--target-identity", target, "--tone", str(tone), "--expect-tone", str(expect),
         "--seconds", "2"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def test_two_agents_set_up_srtp_with_mikey_ticket_and_hear_each_other(kms: RunningKms) -> None:
    alice, bob = _identity("alice"), _identity("bob")
    alice_psk, bob_psk = kms.add_user(alice), kms.add_user(bob)
    answerer = Answerer(kms, bob, bob_psk, tone=600.0, expect=1000.0)
    try:
        caller = _call(kms, alice, alice_psk, answerer.port, bob, tone=1000.0, expect=600.0)
        assert caller.returncode == 0, caller.stderr
        alice_report = json.loads(caller.stdout)
        bob_report = answerer.report()
    finally:
        answerer.process.kill()
    # Each side authenticated the other through the KMS ...
    assert alice_report["peer"] == bob
    assert bob_report["peer"] == alice
    # ... and audio went both ways under SRTP: ≥ 90 % of 100 packets, and it is the tone sent.
    for report in (alice_report, bob_report):
        assert report["suite"] == "AES_CM_128_HMAC_SHA1_80"
        assert report["sent"] == 100
        assert report["received"] >= 90, report
        assert report["auth_failures"] == 0
        assert report["tone_ratio"] is not None
        assert report["tone_ratio"] > 0.9, report


def test_a_caller_the_ticket_does_not_name_is_refused(kms: RunningKms) -> None:
    # Mallory holds a valid ticket, but for Carol, and calls Bob with it: Bob's
    # early check refuses it (403) without any media or KMS resolve.
    bob, mallory, carol = _identity("bob"), _identity("mallory"), _identity("carol")
    bob_psk, mallory_psk = kms.add_user(bob), kms.add_user(mallory)
    kms.add_user(carol)
    answerer = Answerer(kms, bob, bob_psk, tone=600.0, expect=1000.0)
    try:
        # Mallory asks for a ticket naming Carol but dials Bob's address.
        caller = subprocess.run(
            [SECCONF, "client", "call", *_kms_options(kms, mallory, mallory_psk),
             "--target", f"sip:bob@127.0.0.1:{answerer.port}", "--target-identity", carol,
             "--seconds", "1"],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert caller.returncode == 1
        assert "403" in caller.stderr
    finally:
        answerer.process.kill()
