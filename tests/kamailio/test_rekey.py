"""Rekey re-INVITEs through the real Kamailio, Redis and media edge (SDES mode).

The mixer's SIP stand-in sends the re-INVITE in each conference dialog (as
Asterisk does on ``PJSIP_SEND_SESSION_REFRESH``); the participants are SRTP
endpoints that switch their receive key when they send the 200 OK, like
linphone.  ``secconf.focus.rekey.rekey`` mints the new epoch.
"""

from __future__ import annotations

import asyncio
import base64
import secrets

import pytest

from secconf.client.sip import SipRequestFailed
from secconf.core.errors import SecconfError
from secconf.core.sdes import CryptoAttribute
from secconf.core.sdp import SessionDescription
from tests.fixtures.edge_server import RunningEdge

from .conftest import ALICE, BOB, Focus, MixingUpstream, Upstream
from .media import SUITE, SdesParticipant, ratio, talk
from .support import TONE_A, TONE_B, _conference_id, _leg_epochs, _mixer_calls, _rekey

pytestmark = pytest.mark.usefixtures("redis_url")


@pytest.mark.slow
def test_rekey_reinvites_switch_legs_and_audio_uses_the_new_key(
    focus_real_edge: Focus, media_edge: RunningEdge
) -> None:
    focus = focus_real_edge

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        alice = await SdesParticipant.start(ALICE)
        bob = await SdesParticipant.start(BOB)
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a)
            call_b = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            mixer = await _mixer_calls(upstream, 2)
            store, client = focus.store()
            old = alice.group
            first_port = SessionDescription.parse(call_a.remote_sdp).media[0].port

            # A re-INVITE while no newer epoch exists: the same key again, never clear.
            await mixer[call_a.call_id].reinvite(upstream.mixer_sdp(call_a.call_id), timeout=5)
            same = SessionDescription.parse(alice.reoffers[-1])
            assert same.media[0].proto == "RTP/SAVP"
            assert alice.group == old
            assert store.dialog(conference, call_a.call_id).epoch == 1  # type: ignore[union-attr]

            epoch = await asyncio.to_thread(_rekey, focus, conference)
            assert epoch == 2
            assert store.get(conference).epoch == 2  # type: ignore[union-attr]
            edge_state = media_edge.get(f"/v1/conferences/{conference}")
            assert [e["epoch"] for e in edge_state["epochs"]] == [1, 2]
            assert _leg_epochs(media_edge, conference) == [1, 1]  # nobody switched yet

            for participant, call in ((alice, call_a), (bob, call_b)):
                response = await mixer[call.call_id].reinvite(
                    upstream.mixer_sdp(call.call_id, 3), timeout=5
                )
                # Towards the mixer: the participant's answer, clear, via the edge, no key.
                assert b"a=crypto" not in response.body
                assert b"RTP/AVP" in response.body
                offer = SessionDescription.parse(participant.reoffers[-1])
                crypto = CryptoAttribute.parse(offer.media[0].attributes("crypto")[0] or "")
                assert crypto.tag == 1  # the tag of the original negotiation
                assert offer.media[0].port == (
                    first_port if participant is alice else offer.media[0].port
                )
                assert store.dialog(conference, call.call_id).epoch == 2  # type: ignore[union-attr]
            new_key = store.group_key(conference)
            assert alice.group == bob.group == (SUITE, new_key.key, new_key.salt)
            assert alice.group != old
            assert _leg_epochs(media_edge, conference) == [2, 2]

            alice.media.drain()
            bob.media.drain()
            heard_a, heard_b = await talk([alice.media, bob.media], [TONE_A, TONE_B], 1.0)
            assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)
            for participant in (alice, bob):
                assert participant.media.totals.auth_failures == 0
                assert participant.media.rx_epochs == (participant.media.rx_epochs[0],)

            # The participant's own re-INVITE with a new sending key: the edge takes it.
            material = secrets.token_bytes(30)
            alice.own = (SUITE, material[:16], material[16:])
            response = await call_a.reinvite(alice.offer(), timeout=5)
            answer = SessionDescription.parse(response.body)
            keyed = CryptoAttribute.parse(answer.media[0].attributes("crypto")[0] or "")
            assert keyed.key_params[0].key == new_key.key  # the current epoch's key
            sent = upstream.invites[-1].request.body
            assert b"a=crypto" not in sent
            assert base64.b64encode(material).decode().encode() not in sent
            alice.media.set_keys(tx=alice.own, rx=alice.group)  # type: ignore[arg-type]
            bob.media.drain()
            _, heard_b = await talk([alice.media, bob.media], [TONE_A, TONE_B], 0.6)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)

            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
            client.close()
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_refused_rekey_is_reported_and_the_leg_keeps_its_epoch(
    focus_real_edge: Focus, media_edge: RunningEdge
) -> None:
    focus = focus_real_edge

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        alice = await SdesParticipant.start(ALICE)
        bob = await SdesParticipant.start(BOB)
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a)
            call_b = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            mixer = await _mixer_calls(upstream, 2)
            store, client = focus.store()
            assert await asyncio.to_thread(_rekey, focus, conference) == 2

            bob.refuse = 488
            await mixer[call_a.call_id].reinvite(upstream.mixer_sdp(call_a.call_id), timeout=5)
            with pytest.raises(SipRequestFailed) as info:
                await mixer[call_b.call_id].reinvite(upstream.mixer_sdp(call_b.call_id), timeout=5)
            assert info.value.status_code == 488
            legs = {
                leg["leg"]: leg["epoch"]
                for leg in media_edge.get(f"/v1/conferences/{conference}")["legs"]
            }
            assert legs[store.dialog(conference, call_a.call_id).leg] == 2  # type: ignore[union-attr]
            assert legs[store.dialog(conference, call_b.call_id).leg] == 1  # type: ignore[union-attr]
            assert store.dialog(conference, call_b.call_id).epoch == 1  # type: ignore[union-attr]
            failures = store.rekey_failures(conference)
            assert len(failures) == 1
            entry = failures[0][1]
            assert entry["identity"] == BOB
            assert entry["status"] == "488"
            assert (entry["epoch"], entry["leg_epoch"]) == ("2", "1")
            assert entry["call_id"] == call_b.call_id
            # Nothing of any key in the report.
            key = store.group_key(conference)
            assert base64.b64encode(key.key + key.salt).decode() not in repr(failures)

            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
            client.close()
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_rekey_of_an_unknown_conference_changes_nothing(focus_real_edge: Focus) -> None:
    before = focus_real_edge.snapshot(ours_only=True)
    with pytest.raises(SecconfError) as info:
        _rekey(focus_real_edge, "0123456789abcdef")
    assert info.value.status_code == 404
    assert focus_real_edge.snapshot(ours_only=True) == before
