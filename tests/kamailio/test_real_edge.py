"""SDES conferences through the real Kamailio, the real Redis and the real media edge process.

The mixer is the fake Asterisk of tests/media/edge_harness.py (a forwarder between
channels) behind a SIP stand-in; participants are real SRTP endpoints that send with their
own key (offered in ``a=crypto``) and decrypt with the group key of their SDP answer.
"""

from __future__ import annotations

import pytest

from secconf.core.sdp import SessionDescription
from tests.fixtures.edge_server import RunningEdge

from .conftest import ALICE, BOB, Focus, MixingUpstream, Upstream
from .media import SdesParticipant, ratio, talk

pytestmark = pytest.mark.usefixtures("redis_url")

TONE_A, TONE_B = 440.0, 1000.0


def _conference_id(header: str | None) -> str:
    assert header is not None
    return header.split("conf-", 1)[1].split("@", 1)[0]


def test_sdes_create_join_and_audio_through_the_edge(
    focus_real_edge: Focus, media_edge: RunningEdge
) -> None:
    focus = focus_real_edge

    async def scenario(upstream: Upstream) -> None:
        alice = await SdesParticipant.start(ALICE)
        bob = await SdesParticipant.start(BOB)
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a.response.get("X-Secconf-Conference"))  # type: ignore[union-attr]
            call_b = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            # One group key for every dialog (R5); the edge's address, not the mixer's.
            assert alice.group == bob.group
            assert alice.group != alice.own
            answer = SessionDescription.parse(call_a.remote_sdp)
            assert answer.media[0].port not in (
                ch.address[1]
                for ch in upstream.mixer.channels.values()  # type: ignore[union-attr]
            )
            state = media_edge.get(f"/v1/conferences/{conference}")
            assert [e["epoch"] for e in state["epochs"]] == [1]
            assert len(state["legs"]) == 2

            heard_a, heard_b = await talk([alice.media, bob.media], [TONE_A, TONE_B], 1.0)
            # Each hears the other through edge -> mixer -> edge, decrypted with the group key.
            assert len(heard_a) > 160 * 30
            assert len(heard_b) > 160 * 30
            assert ratio(heard_a, TONE_B) > 0.8, ratio(heard_a, TONE_B)
            assert ratio(heard_b, TONE_A) > 0.8, ratio(heard_b, TONE_A)
            assert alice.media.totals.auth_failures == 0
            assert bob.media.totals.auth_failures == 0
            # The mixer got clear RTP from both (the edge decrypted with each one's own key).
            mixer = upstream.mixer
            assert mixer is not None
            assert all(len(ch.received) > 30 for ch in mixer.channels.values())
            # What Alice received was sent by the edge under its own SSRC, not Bob's.
            assert bob.media.ssrc not in alice.media.stats

            await call_b.bye(timeout=5)
            await call_a.bye(timeout=5)
            media_edge.get(f"/v1/conferences/{conference}", status=404)
        finally:
            await alice.close()
            await bob.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))
