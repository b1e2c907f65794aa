"""Per-leg SRTP suites through the real Kamailio, Redis and media edge (SDES mode).

Issue 14: "AES_256_CM_HMAC_SHA1_80/_32 (RFC 6188) accepted on the participant side of
the edge when a peer's policy asks for them (the mixer side stays AES_CM_128)".  The
focus's conference suite is AES_CM_128_HMAC_SHA1_80; ``[focus] suites`` allows both
RFC 6188 suites too.  Each member's offer chooses its leg's suite; its answer (and every
rekey re-INVITE) carries the epoch's key in that suite, which the edge holds next to the
others (docs/mikey-decisions.md #30).  The key of a suite other than the conference's is
checked against the PRF written from the RFC text in tests/unit/test_suite_keys.py.
The mixer's SIP side and media are the stand-in of tests/kamailio (MixingUpstream).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core.g711 import ToneGenerator, ulaw_decode
from secconf.core.sdes import SUITES
from secconf.core.sdp import SessionDescription
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.unit.test_suite_keys import expected_key

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    Focus,
    MixingUpstream,
    Upstream,
    _start_focus,
    crypto_line,
    offer,
    pai,
)
from .media import SdesParticipant, ratio
from .support import _conference_id, _leg_epochs, _mixer_calls, _rekey

pytestmark = pytest.mark.usefixtures("redis_url")

CM_128, CM_256_80, CM_256_32 = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_32",
)
FOCUS_LINES = f'suites = ["{CM_256_80}", "{CM_256_32}"]\n'
TONES = (500.0, 900.0, 1400.0)


@pytest.fixture(scope="module")
def mixed_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
) -> Iterator[Focus]:
    focus = _start_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-mixed-suites"),
        env=media_edge.focus_env, focus_lines=FOCUS_LINES,
    )  # fmt: skip
    yield focus
    focus.server.stop()


def edge_view(edge: RunningEdge, conference: str) -> tuple[object, ...]:
    state = edge.get(f"/v1/conferences/{conference}")
    return tuple(e["keys"] for e in state["epochs"]), tuple(leg["leg"] for leg in state["legs"])


async def hear_in_turn(members: list[SdesParticipant]) -> None:
    """Each member speaks alone; each other one decrypts it with its own suite's key."""
    for speaker, tone in zip(members, TONES, strict=False):
        for member in members:
            member.media.drain()
        await speaker.media.send_audio(ToneGenerator(tone).frames(40), speaker.media.ssrc)
        await asyncio.sleep(0.3)
        for listener in members:
            packets = listener.media.drain()
            if listener is speaker:
                continue
            samples = [s for p in packets for s in ulaw_decode(p.packet.payload)]
            assert ratio(samples, tone) > 0.8, (listener.suite, ratio(samples, tone))
            assert listener.media.totals.auth_failures == 0


def test_members_of_three_suites_share_a_conference_and_a_rekey(
    mixed_focus: Focus, media_edge: RunningEdge
) -> None:
    focus = mixed_focus

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        alice = await SdesParticipant.start(ALICE, suite=CM_128)
        bob = await SdesParticipant.start(BOB, suite=CM_256_80)
        carol = await SdesParticipant.start(CAROL, suite=CM_256_32)
        members = [alice, bob, carol]
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a)
            call_b = await bob.invite(focus.target(f"conf-{conference}"), BOB)
            call_c = await carol.invite(focus.target(f"conf-{conference}"), CAROL)
            calls = [call_a, call_b, call_c]
            mixer = await _mixer_calls(upstream, 3)
            store, client = focus.store()
            info = store.get(conference)
            assert info is not None
            assert info.suite == CM_128  # the conference's suite; the legs choose theirs
            base = store.group_key(conference)
            for member in members:
                assert member.group == expected_key(base, member.suite)
            assert len({m.group for m in members}) == 3  # the epoch's key bytes differ per suite
            state = media_edge.get(f"/v1/conferences/{conference}")
            assert [k["suite"] for k in state["epochs"][0]["keys"]] == [
                CM_128,
                CM_256_80,
                CM_256_32,
            ]
            assert sorted(leg["suite"] for leg in state["legs"]) == sorted(
                [CM_128, CM_256_80, CM_256_32]
            )
            for invite in upstream.invites:  # the mixer side: clear, no key of any suite
                assert b"crypto" not in invite.request.body
            await hear_in_turn(members)

            # Carol leaves; the rekey: epoch 2, each remaining member gets its own suite's key.
            await call_c.bye(timeout=5)
            assert await asyncio.to_thread(_rekey, focus, conference) == 2
            for member, call in ((alice, call_a), (bob, call_b)):
                response = await mixer[call.call_id].reinvite(
                    upstream.mixer_sdp(call.call_id, 3), timeout=5
                )
                assert b"a=crypto" not in response.body
                reoffer = SessionDescription.parse(member.reoffers[-1])
                assert reoffer.media[0].attributes("crypto")[0].split()[1] == member.suite  # type: ignore[union-attr]
            new = store.group_key(conference)
            assert new.epoch == 2
            assert alice.group == expected_key(new, CM_128)
            assert bob.group == expected_key(new, CM_256_80)
            assert _leg_epochs(media_edge, conference) == [2, 2]
            await hear_in_turn([alice, bob])
            client.close()
            for call in calls[:2]:
                await call.bye(timeout=5)
        finally:
            for member in members:
                await member.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_a_suite_the_policy_does_not_allow_is_refused_statelessly(
    mixed_focus: Focus, media_edge: RunningEdge
) -> None:
    focus = mixed_focus

    async def scenario(upstream: Upstream) -> None:
        alice = await SdesParticipant.start(ALICE, suite=CM_256_32)
        try:
            call_a = await alice.invite(focus.target("conf-factory"), ALICE)
            conference = _conference_id(call_a)
            before = focus.snapshot(ours_only=True)
            edge_before = edge_view(media_edge, conference)
            ua = await UserAgent.start("127.0.0.1", identity=BOB)
            try:
                # AES_CM_128_HMAC_SHA1_32: relayed by the edge, not allowed by this focus
                with pytest.raises(SipRequestFailed) as caught:
                    await ua.invite(
                        focus.target(f"conf-{conference}"),
                        offer(crypto=[crypto_line(1, "AES_CM_128_HMAC_SHA1_32")]),
                        extra_headers=pai(BOB),
                        timeout=5,
                    )
            finally:
                await ua.close()
            assert caught.value.status_code == 488
            response = caught.value.response
            assert response is not None
            reason = focus.server.refusal(response.get("Call-ID") or "")
            assert "no usable key in a suite this focus allows" in reason, reason
            assert CM_256_32 in reason, reason
            assert focus.snapshot(ours_only=True) == before
            assert edge_view(media_edge, conference) == edge_before
            assert SUITES[CM_256_32].key_length == len(alice.group[1])  # type: ignore[index]
            await call_a.bye(timeout=5)
        finally:
            await alice.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))
