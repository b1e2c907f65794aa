"""KMS-mode (MIKEY-TICKET) conferences through the real Kamailio, Redis, KMS and media edge.

Participants are :class:`~secconf.client.agent.ParticipantAgent`\\ s: each asks the real
KMS for a ticket naming the focus (the creator's also names who may join), INVITEs with
a TRANSFER_INIT in ``a=key-mgmt:mikey``, and takes the group key from the focus's
TRANSFER_RESP.  The focus resolves every ticket at the KMS (through a TCP proxy that a
test can switch off).  Every refusal is a specific SIP answer and leaves the focus's
Redis keys byte-identical.
"""

from __future__ import annotations

import asyncio
import time

from secconf.client.media import SrtpEndpoint
from secconf.core.g711 import ToneGenerator
from secconf.core.mikey import ticket as mikey_ticket

from .conftest import ALICE, BOB, CAROL, DAVE, FOCUS_IDENTITY, KmsFocus, MixingUpstream, Upstream
from .kms_participants import (
    _agent,
    _conference_id,
    _create,
    _invite,
    _kms_client,
    _offer,
    _refused,
    _sdp,
)
from .media import ratio
from .support import TONE_A, TONE_B

# No per-test flush of Redis (the redis_url fixture): the KMS's users live there too.
# Refusals are checked on the focus's own keys (Focus.snapshot(ours_only=True)).


def test_kms_create_join_and_audio(kms_focus: KmsFocus) -> None:
    focus = kms_focus
    assert focus.edge is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        alice = await _agent(focus, ALICE)
        bob = await _agent(focus, BOB)
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            conference = _conference_id(call_a.call.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            assert call_a.peer == FOCUS_IDENTITY  # the focus authenticated itself (MAC, MPKr')
            assert call_a.group_epoch == 1
            store, client = focus.store()
            info = store.get(conference)
            assert info is not None
            assert info.mode == "kms"
            assert info.creator == ALICE
            # The allowed set is the ticket's recipients but the focus, plus the creator.
            assert store.allowed(conference) == {ALICE, BOB, CAROL}

            call_b = await bob.join_conference(focus.target(f"conf-{conference}"), FOCUS_IDENTITY)
            assert call_b.group_epoch == 1
            assert store.members(conference) == {ALICE: 1, BOB: 1}
            # Both SSRCs from the GENERIC-ID maps are registered (one key, many streams).
            assert {call_a.tx_ssrc, call_b.tx_ssrc} <= store.ssrcs(conference)
            state = edge.get(f"/v1/conferences/{conference}")
            assert {leg["mode"] for leg in state["legs"]} == {"kms"}
            # Nothing of the ticket or the keys reached the mixer.
            for invite in upstream.invites:
                assert b"key-mgmt" not in invite.request.body
                assert b"crypto" not in invite.request.body

            frames = 50
            await asyncio.gather(
                call_a.media.send_audio(ToneGenerator(TONE_A).frames(frames), call_a.tx_ssrc),
                call_b.media.send_audio(ToneGenerator(TONE_B).frames(frames), call_b.tx_ssrc),
            )
            await asyncio.sleep(0.3)
            heard_a = _samples(call_a.media)
            heard_b = _samples(call_b.media)
            assert len(heard_a) > 160 * 30
            assert len(heard_b) > 160 * 30
            assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)
            assert call_a.media.totals.auth_failures == 0
            assert call_b.media.totals.auth_failures == 0

            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
            info = store.get(conference)
            assert info is not None
            assert info.state == "ended"
            client.close()
        finally:
            for agent in (alice, bob):
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def _samples(media: SrtpEndpoint) -> list[int]:
    from secconf.core.g711 import ulaw_decode

    samples: list[int] = []
    for packet in media.drain():
        samples.extend(ulaw_decode(packet.packet.payload))
    return samples


def test_garbage_mikey_is_refused(kms_focus: KmsFocus) -> None:
    # A MIKEY header cut short, and key-mgmt data that is not base64: 400.
    body = _sdp(b"\x01\x0d\x00")
    _refused(kms_focus, "conf-factory", body, ALICE, 400, "truncated")
    broken = body.replace(b"a=key-mgmt:mikey ", b"a=key-mgmt:mikey !!")
    _refused(kms_focus, "conf-factory", broken, ALICE, 400, "not base64")
    # A well-formed MIKEY message that is not a TRANSFER_INIT (an Error message).
    error = mikey_ticket.build_error(b"", [12], now=time.time())
    _refused(
        kms_focus, "conf-factory", _sdp(error), ALICE, 400, "expected MIKEY data type TRANSFER_INIT"
    )


def test_forged_ticket_is_403(kms_focus: KmsFocus) -> None:
    body, _ = asyncio.run(_offer(kms_focus, ALICE, forge="ticket"))
    _refused(kms_focus, "conf-factory", body, ALICE, 403, "MIKEY error 14")


def test_transfer_init_not_keyed_by_the_ticket_is_403(kms_focus: KmsFocus) -> None:
    body, _ = asyncio.run(_offer(kms_focus, ALICE, forge="mac"))
    _refused(kms_focus, "conf-factory", body, ALICE, 403, "MIKEY error 14")


def test_expired_ticket_is_403(kms_focus: KmsFocus) -> None:
    async def expired() -> bytes:
        issued = await _kms_client(kms_focus, ALICE).request_ticket(
            mikey_ticket.DesiredPolicy(
                recipients=(FOCUS_IDENTITY,), valid_until=time.time() + 1, responder_keys=True
            )
        )
        await asyncio.sleep(1.3)
        body, _ = await _offer(kms_focus, ALICE, issued=issued)
        return body

    _refused(kms_focus, "conf-factory", asyncio.run(expired()), ALICE, 403, "not valid now")


def test_ticket_not_naming_the_focus_is_403(kms_focus: KmsFocus) -> None:
    body, _ = asyncio.run(_offer(kms_focus, ALICE, recipients=(BOB,)))
    _refused(kms_focus, "conf-factory", body, ALICE, 403, "not among the ticket's recipients")


def test_ticket_without_responder_keys_is_488(kms_focus: KmsFocus) -> None:
    body, _ = asyncio.run(_offer(kms_focus, ALICE, responder_keys=False))
    _refused(kms_focus, "conf-factory", body, ALICE, 488, "M flag")


def test_replayed_transfer_init_is_403(kms_focus: KmsFocus) -> None:
    conference = _create(kms_focus)
    body, _ = asyncio.run(_offer(kms_focus, BOB))
    assert _invite(kms_focus, f"conf-{conference}", body, sip_identity=BOB) == 200
    # The same TRANSFER_INIT again (a new Call-ID: not a retransmission).
    _refused(kms_focus, f"conf-{conference}", body, BOB, 403, "replayed")


def test_non_recipient_cannot_join(kms_focus: KmsFocus) -> None:
    conference = _create(kms_focus)
    body, _ = asyncio.run(_offer(kms_focus, DAVE))  # Dave's own valid ticket for the focus
    _refused(kms_focus, f"conf-{conference}", body, DAVE, 403, "not a member")


def test_non_creator_cannot_create(kms_focus: KmsFocus) -> None:
    body, _ = asyncio.run(_offer(kms_focus, BOB))
    _refused(kms_focus, "conf-factory", body, BOB, 403, "not allowed to create")


def test_spoofed_from_the_ticket_initiator_wins(kms_focus: KmsFocus) -> None:
    conference = _create(kms_focus)
    # Dave writes Bob into From and P-Asserted-Identity (from a trusted source, even):
    # his MIKEY names him, so he is Dave, and Dave is not allowed.
    body, _ = asyncio.run(_offer(kms_focus, DAVE))
    pai = [("P-Asserted-Identity", f"<{BOB}>")]
    _refused(kms_focus, f"conf-{conference}", body, BOB, 403, "not a member", headers=pai)
    # Dave presents Bob's ticket under his own name: not from the ticket's initiator.
    bob_ticket = asyncio.run(
        _kms_client(kms_focus, BOB).request_ticket(
            mikey_ticket.DesiredPolicy(
                recipients=(FOCUS_IDENTITY,), valid_until=time.time() + 3600, responder_keys=True
            )
        )
    )
    body, _ = asyncio.run(_offer(kms_focus, DAVE, issued=bob_ticket))
    _refused(kms_focus, f"conf-{conference}", body, DAVE, 403, "not from the ticket's initiator")
    # ... or under Bob's name, without Bob's keys: the MAC does not verify.
    body, _ = asyncio.run(_offer(kms_focus, BOB, issued=bob_ticket, forge="mac"))
    _refused(kms_focus, f"conf-{conference}", body, DAVE, 403, "MIKEY error 14")


def test_sdes_offer_to_a_kms_conference_is_488(kms_focus: KmsFocus) -> None:
    from .conftest import offer, pai

    conference = _create(kms_focus)
    _refused(
        kms_focus,
        f"conf-{conference}",
        offer(),
        BOB,
        488,
        "not keyed in sdes mode",
        headers=pai(BOB),
    )


def test_kms_down_is_503_fast_and_recovers(kms_focus: KmsFocus) -> None:
    assert kms_focus.proxy is not None
    conference = _create(kms_focus)
    body, _ = asyncio.run(_offer(kms_focus, BOB))
    kms_focus.proxy.down = True
    try:
        started = time.monotonic()
        _refused(kms_focus, f"conf-{conference}", body, BOB, 503, "KMS unavailable")
        assert time.monotonic() - started < 1.0
    finally:
        kms_focus.proxy.down = False
    # The same TRANSFER_INIT was refused without being remembered: it works now.
    assert _invite(kms_focus, f"conf-{conference}", body, sip_identity=BOB) == 200
    assert kms_focus.server.running
