"""REFER to the focus (add someone to a conference) through the real Kamailio and Redis.

Accepted REFERs are answered 202 (``Refer-Sub: false``: no implicit subscription) and
appended to the Redis stream ``<prefix>:conf:{<conference>}:refer`` for the dial-out watcher;
refused ones get 403 and leave no entry.  The mixer never sees a REFER.  KMS mode uses
the real KMS and media edge: the referrer's MIKEY (a TRANSFER_INIT for the focus) rides
in an ``application/mikey`` body and the 202 carries the focus's TRANSFER_RESP.
"""

from __future__ import annotations

import base64
import time

from secconf.client.sip import Call, SipRequestFailed, UserAgent
from secconf.core.mikey import ticket as mikey_ticket

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    FOCUS_IDENTITY,
    Focus,
    KmsFocus,
    MixingUpstream,
    Upstream,
    offer,
    pai,
)
from .kms_participants import _agent, _conference_id

MIKEY = "application/mikey"


def _entries(focus: Focus, conference: str) -> list[dict[str, str]]:
    store, client = focus.store()
    try:
        return [fields for _, fields in store.refers(conference)]
    finally:
        client.close()


async def _sdes_call(focus: Focus, ua: UserAgent, target: str, identity: str) -> Call:
    return await ua.invite(focus.target(target), offer(), extra_headers=pai(identity), timeout=5)


async def _refer_status(call: Call, refer_to: str, **kwargs) -> int:  # type: ignore[no-untyped-def]
    try:
        response = await call.refer(refer_to, timeout=5, **kwargs)
    except SipRequestFailed as exc:
        refusal = exc.response
        assert refusal is not None
        assert "focus.test" in (refusal.get("Warning") or "")
        return exc.status_code
    assert response.get("Refer-Sub") == "false"
    return response.status


def test_sdes_refer(focus: Focus) -> None:
    async def scenario(upstream: Upstream) -> None:
        alice = await UserAgent.start("127.0.0.1", identity=ALICE)
        bob = await UserAgent.start("127.0.0.1", identity=BOB)
        dave = await UserAgent.start("127.0.0.1", identity=DAVE)
        try:
            call_a = await _sdes_call(focus, alice, "conf-factory", ALICE)
            conference = _conference_id(call_a.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            call_b = await _sdes_call(focus, bob, f"conf-{conference}", BOB)

            # Bob (a member) adds Carol (allowed), in his dialog: 202, queued.
            assert await _refer_status(call_b, f"<{CAROL}>", extra_headers=pai(BOB)) == 202
            entries = _entries(focus, conference)
            assert len(entries) == 1
            assert entries[0]["referrer"] == BOB
            assert entries[0]["target"] == CAROL
            assert entries[0]["mode"] == "sdes"
            assert entries[0]["uri"] == f"sip:conf-{conference}@conf.test.invalid"

            before = focus.snapshot()
            # Dave is not allowed in this conference: 403, nothing queued.
            assert await _refer_status(call_b, f"<{DAVE}>", extra_headers=pai(BOB)) == 403
            # Bob's dialog, someone else's asserted identity: 403.
            assert await _refer_status(call_b, f"<{CAROL}>", extra_headers=pai(ALICE)) == 403
            # No asserted identity: 403.
            assert await _refer_status(call_b, f"<{CAROL}>") == 403
            # Out of dialog, by a non-member: 403.
            response = await dave.request(
                "REFER", focus.target(f"conf-{conference}"),
                extra_headers=[("Refer-To", f"<{CAROL}>"), *pai(DAVE)], timeout=5,
            )  # fmt: skip
            assert response.status == 403
            assert focus.snapshot() == before

            # Out of dialog, by a member (Alice): 202.
            response = await alice.request(
                "REFER", focus.target(f"conf-{conference}"),
                extra_headers=[("Refer-To", f"<{CAROL}>"), *pai(ALICE)], timeout=5,
            )  # fmt: skip
            assert response.status == 202
            assert [e["referrer"] for e in _entries(focus, conference)] == [BOB, ALICE]
            # The mixer never saw a REFER (only the two INVITEs).
            assert [i.request.method for i in upstream.invites] == ["INVITE", "INVITE"]

            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
        finally:
            for ua in (alice, bob, dave):
                await ua.close()

    focus.run(scenario)


def test_kms_refer(kms_focus: KmsFocus) -> None:
    focus = kms_focus

    async def scenario(upstream: Upstream) -> None:
        alice = await _agent(focus, ALICE)
        dave = await _agent(focus, DAVE)
        try:
            joined = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB,)
            )
            call = joined.call
            conference = _conference_id(call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]

            body, pending = await alice.refer_body(FOCUS_IDENTITY)
            response = await call.refer(f"<{BOB}>", body=body, content_type=MIKEY, timeout=5)
            assert response.status == 202
            assert response.get("Refer-Sub") == "false"
            # The focus answered with a TRANSFER_RESP: it authenticated itself to Alice.
            result = mikey_ticket.process_transfer_resp(
                pending, base64.b64decode(response.body), now=time.time()
            )
            assert result.responder == FOCUS_IDENTITY
            entries = _entries(focus, conference)
            assert [(e["referrer"], e["target"], e["mode"]) for e in entries] == [
                (ALICE, BOB, "kms")
            ]

            before = focus.snapshot(ours_only=True)
            # The same MIKEY message again: a replay.
            assert await _refer_status(call, f"<{BOB}>", body=body, content_type=MIKEY) == 403
            # A target outside the ticket's recipients.
            fresh, _ = await alice.refer_body(FOCUS_IDENTITY)
            assert await _refer_status(call, f"<{CAROL}>", body=fresh, content_type=MIKEY) == 403
            # No MIKEY at all (an asserted identity does not count in KMS mode).
            assert await _refer_status(call, f"<{BOB}>", extra_headers=pai(ALICE)) == 403
            # Dave's own valid MIKEY in Alice's dialog: not the dialog's identity.
            dave_body, _ = await dave.refer_body(FOCUS_IDENTITY)
            status = await _refer_status(call, f"<{BOB}>", body=dave_body, content_type=MIKEY)
            assert status == 403
            # Dave out of dialog: authenticated, but not a member.
            dave_body, _ = await dave.refer_body(FOCUS_IDENTITY)
            response = await dave.ua.request(
                "REFER", focus.target(f"conf-{conference}"), body=dave_body,
                content_type=MIKEY, extra_headers=[("Refer-To", f"<{BOB}>")], timeout=5,
            )  # fmt: skip
            assert response.status == 403
            assert focus.snapshot(ours_only=True) == before
            assert all(i.request.method == "INVITE" for i in upstream.invites)

            await call.bye(timeout=5)
            await joined.media.close(bye=False)
        finally:
            await alice.ua.close()
            await dave.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))
