"""The conference event package in KMS mode, through the real Kamailio, KMS, edge and Redis.

A member subscribes with its own MIKEY-TICKET exchange (``ParticipantAgent.subscription``);
every NOTIFY body is CMS AuthEnvelopedData under that subscription's event key, which the
participant's :class:`~secconf.client.conference_events.ConferenceWatch` opens (a plain
body would be refused 403 in KMS mode); tshark, a dissector we did not write, sees each
NOTIFY body as CMS AuthEnvelopedData and no roster on the wire; OpenSSL's CMS opens each
body received with the member's key, and the document inside is valid against the RFC 4575
schema (xmlschema).

Over UDP those NOTIFYs leave whole by ``send_data``, without a tm transaction: the focus's
timer retransmits them (Timer E).  A subscriber on a lossy path loses the first copy of a
NOTIFY: the focus sends the same bytes (same Via branch, same CSeq, tshark says) again
~0.5 s later, the watch applies the view once and the subscription lives on; a lost 200 is
absorbed the same way (the retransmission answered by the subscriber's transaction).
A fetch (``Expires: 0``) in KMS mode over UDP: one NOTIFY under its own key, resent when
lost, then nothing left in Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from secconf.client.conference_events import ConferenceWatch, Protection
from secconf.client.conference_events.kms import MIKEY_CONTENT_TYPE
from secconf.client.conference_events.notify import ACCEPT_KMS
from secconf.client.sip import Answer, SipRequestFailed
from secconf.core import cms
from secconf.core.confinfo import CONFERENCE_INFO_TYPE, ConferenceView, EndpointStatus
from secconf.core.sip.message import SipRequest
from secconf.lab.capture import LoopbackCapture
from secconf.store.conferences import connect_blocking
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
            # alice's TRANSFER_INIT replayed in a new SUBSCRIBE (bob's user agent, another
            # dialog): refused 403 by the replay cache, nothing stored.
            before = _subscription_state(focus)
            with pytest.raises(SipRequestFailed) as refused:
                await bob.ua.subscribe(
                    focus.target(f"conf-{conference}"), "conference", body=exchange.body,
                    content_type=MIKEY_CONTENT_TYPE, extra_headers=[("Accept", ACCEPT_KMS)],
                    timeout=5,
                )  # fmt: skip
            assert refused.value.status_code == 403
            assert _subscription_state(focus) == before
            await watch.close()
            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            for agent in (alice, bob):
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def _subscription_state(focus: KmsFocus) -> dict[bytes, object]:
    """The focus's subscription records, indexes and the replay cache, dumped."""
    client = connect_blocking(focus.redis_server.url, timeout=1.0)
    try:
        keys = [
            key
            for pattern in (f"{focus.prefix}:*sub*", f"{focus.prefix}:replay:*")
            for key in client.scan_iter(match=pattern)
            if not key.endswith(b":wake")
        ]
        return {key: client.dump(key) for key in sorted(keys)}
    finally:
        client.close()


def _lose_first(ua: object, method: bytes) -> list[bytes]:
    """Incoming *method* requests as received; the first one is lost (a lossy UDP path)."""
    protocol = ua._transport_layer._udp  # type: ignore[attr-defined]
    deliver = protocol.deliver
    seen: list[bytes] = []

    def lossy(data: bytes, *rest: object) -> None:
        if data.startswith(method + b" "):
            seen.append(data)
            if len(seen) == 1:
                return
        deliver(data, *rest)

    protocol.deliver = lossy
    return seen


def _connected(view: ConferenceView) -> set[str]:
    return {
        user.entity
        for user in view.info.users
        if any(endpoint.status is EndpointStatus.CONNECTED for endpoint in user.endpoints)
    }


def _wire_fields(focus: KmsFocus) -> list[object]:
    """The ``wire`` field of every subscription record (kept only while resending)."""
    client = connect_blocking(focus.redis_server.url, timeout=1.0)
    try:
        keys = [k for k in client.scan_iter(match=f"{focus.prefix}:*:sub:*") if b":subs" not in k]
        return [client.hget(key, "wire") for key in keys]
    finally:
        client.close()


def test_kms_notify_over_udp_is_retransmitted(kms_focus: KmsFocus, tmp_path: Path) -> None:
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
            watch = await ConferenceWatch.start(
                alice.ua, focus.target(f"conf-{conference}"), protection=Protection.KMS,
                kms=exchange,
            )  # fmt: skip
            first = await watch.next_view(5)
            path = tmp_path / "notify.pcapng"
            with LoopbackCapture(path, f"udp port {alice.ua.local_port}") as capture:
                copies = _lose_first(alice.ua, b"NOTIFY")
                call_b = await bob.join_conference(
                    focus.target(f"conf-{conference}"), FOCUS_IDENTITY
                )
                joined = time.monotonic()
                view = await watch.next_view(5)
                waited = time.monotonic() - joined
                assert BOB in _users(view)
                assert view.version == first.version + 1
                assert 0.4 < waited < 2.0  # the copy Timer E sent after T1
                assert len(copies) >= 2
                assert copies[0] == copies[1]  # byte for byte: same branch, same CSeq
                # a later NOTIFY's 200 is lost instead: the focus resends, alice's
                # transaction answers again, the view is applied once
                lost: list[bytes] = []

                def lose_one_200(data: bytes) -> bool:
                    if data.startswith(b"SIP/2.0 200") and b" NOTIFY\r\n" in data and not lost:
                        lost.append(data)
                        return True
                    return False

                alice.ua.outgoing_filter = lose_one_200
                await call_b.call.bye(timeout=5)
                versions = [view.version]
                while BOB in _connected(view := await watch.next_view(5)):
                    versions.append(view.version)
                versions.append(view.version)
                await asyncio.sleep(1.5)  # the retransmission and its answer
                assert lost
                assert watch._views.empty()  # nothing applied twice
                assert versions == list(range(versions[0], versions[0] + len(versions)))
                assert not watch.ended.is_set()
                assert list(watch.counters.refusals) == []
                assert [bool(wire) for wire in _wire_fields(focus)] == [False]  # nothing kept
            rows = capture.fields('sip.Method == "NOTIFY"', ("sip.Via.branch", "sip.CSeq.seq"))
            pairs = [(row["sip.Via.branch"], row["sip.CSeq.seq"]) for row in rows]
            repeated = {pair for pair in pairs if pairs.count(pair) == 2}
            assert len(repeated) == 2  # the lost NOTIFY, and the one whose 200 was lost
            assert all(branch.startswith("z9hG4bK") for branch, _ in repeated)
            await watch.close()
            await call_a.call.bye(timeout=5)
        finally:
            for agent in (alice, bob):
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_kms_fetch_over_udp(kms_focus: KmsFocus, tmp_path: Path) -> None:
    """A fetch in KMS mode: the member's TRANSFER_INIT, 200 ``Expires: 0`` with the
    TRANSFER_RESP, one NOTIFY (its first copy lost: resent) under the fetch's own key,
    full state, ``terminated;reason=timeout``; then nothing of it in Redis."""
    focus = kms_focus

    async def scenario(upstream: Upstream) -> None:
        alice = await _agent(focus, ALICE)
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB,)
            )
            conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            exchange = await alice.subscription(FOCUS_IDENTITY)
            copies = _lose_first(alice.ua, b"NOTIFY")
            fetch = await alice.ua.subscribe(
                focus.target(f"conf-{conference}"), "conference", expires=0,
                body=exchange.body, content_type=MIKEY_CONTENT_TYPE,
                extra_headers=[("Accept", ACCEPT_KMS)], timeout=5,
            )  # fmt: skip
            assert fetch.response is not None
            assert fetch.response.get("Expires") == "0"
            key = exchange.answered(fetch.response.body)
            notify = await fetch.next_notification(5)
            assert len(copies) == 2
            assert copies[0] == copies[1]
            assert notify.get("subscription-state") == "terminated;reason=timeout"
            assert (notify.get("content-type") or "").startswith("application/pkcs7-mime")
            entity = _openssl_open(tmp_path / "fetch.p7m", notify.body, key)
            document = cms.split_inner_entity(entity, CONFERENCE_INFO_TYPE)
            assert_valid(document)
            assert b'state="full"' in document
            assert ALICE.encode() in document
            deadline = time.monotonic() + 5
            while _wire_fields(focus) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert _wire_fields(focus) == []  # the record is gone after its 200
            with pytest.raises(TimeoutError):
                await fetch.next_notification(1.0)  # one NOTIFY, no more
            await call_a.call.bye(timeout=5)
        finally:
            await alice.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))
