"""The conference event package in KMS mode, through the real Kamailio, KMS, edge and Redis.

A member subscribes with its own MIKEY-TICKET exchange (``ParticipantAgent.subscription``);
every NOTIFY body is CMS AuthEnvelopedData under that subscription's event key, which the
participant's :class:`~secconf.client.conference_events.ConferenceWatch` opens (a plain
body would be refused 403 in KMS mode); tshark, a dissector we did not write, sees each
NOTIFY body as CMS AuthEnvelopedData and no roster on the wire; OpenSSL's CMS opens each
body received with the member's key, and the document inside is valid against the RFC 4575
schema (xmlschema).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from secconf.client.conference_events import ConferenceWatch, Protection
from secconf.client.sip import Answer
from secconf.core import cms
from secconf.core.confinfo import CONFERENCE_INFO_TYPE, ConferenceView
from secconf.core.sip.message import SipRequest
from secconf.lab.capture import LoopbackCapture
from tests.fixtures.confinfo import assert_valid

from .conftest import ALICE, BOB, CAROL, FOCUS_IDENTITY, KmsFocus, MixingUpstream, Upstream
from .kms_participants import _agent, _conference_id

pytestmark = pytest.mark.slow

#: RFC 5083 §1.1: id-ct-authEnvelopedData.
AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"


def _record_notifies(watch: ConferenceWatch) -> list[SipRequest]:
    """The NOTIFYs the watch gets from now on, as received."""
    subscription = watch._subscription
    assert subscription is not None
    handler = subscription.on_notify
    assert handler is not None
    seen: list[SipRequest] = []

    def recording(request: SipRequest) -> Answer:
        seen.append(request)
        return handler(request)

    subscription.on_notify = recording
    return seen


def _openssl_open(path: Path, body: bytes, key: cms.EventKey) -> bytes:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is not installed (docker/bootstrap-debian.sh)"
    path.write_bytes(body)
    opened = subprocess.run(
        [openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(path),
         "-secretkey", key.kek.hex(), "-secretkeyid", key.key_id.hex()],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    return opened.stdout


def _users(view: ConferenceView) -> set[str]:
    return {user.entity for user in view.info.users}


def test_kms_member_reads_protected_notifications(kms_focus: KmsFocus, tmp_path: Path) -> None:
    focus = kms_focus

    async def scenario(upstream: Upstream) -> None:
        alice = await _agent(focus, ALICE)
        bob = await _agent(focus, BOB)
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            exchange = await alice.subscription(FOCUS_IDENTITY)
            path = tmp_path / "notify.pcapng"
            with LoopbackCapture(path, f"udp port {alice.ua.local_port}") as capture:
                watch = await ConferenceWatch.start(
                    alice.ua, focus.target(f"conf-{conference}"), protection=Protection.KMS,
                    kms=exchange,
                )  # fmt: skip
                first = await watch.next_view(5)
                assert _users(first) == {ALICE}
                wire = _record_notifies(watch)
                call_b = await bob.join_conference(
                    focus.target(f"conf-{conference}"), FOCUS_IDENTITY
                )
                joined = time.monotonic()
                while BOB not in _users(view := await watch.next_view(5)):
                    pass
                assert time.monotonic() - joined < 0.5
                assert view.version > first.version
                assert list(watch.counters.refusals) == []
                await asyncio.sleep(0.2)
            # Wireshark's SIP and CMS dissectors: every NOTIFY body is AuthEnvelopedData, and
            # the roster (Bob's URI, the document) is nowhere on the wire in the clear.
            rows = capture.fields('sip.Method == "NOTIFY"', ("sip.Content-Type", "cms.contentType"))
            assert len(rows) >= 2
            assert {row["cms.contentType"] for row in rows} == {AUTH_ENVELOPED_DATA}
            assert all(row["sip.Content-Type"].startswith("application/pkcs7-mime") for row in rows)
            captured = path.read_bytes()
            assert b"sip:bob@example.com" not in captured
            assert b"<conference-info" not in captured
            # OpenSSL's CMS (KEK recipient: -secretkey/-secretkeyid) opens what the focus
            # sent with the member's own event key: the wire format is standard.
            key = exchange.early_key()
            assert key is not None
            bodies = [notify.body for notify in wire if notify.body]
            assert bodies
            for index, body in enumerate(bodies):
                entity = _openssl_open(tmp_path / f"notify-{index}.p7m", body, key)
                document = cms.split_inner_entity(entity, CONFERENCE_INFO_TYPE)
                assert_valid(document)
            await watch.close()
            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            for agent in (alice, bob):
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))
