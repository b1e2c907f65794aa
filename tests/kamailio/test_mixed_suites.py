"""Per-leg SRTP suites through the real Kamailio, Redis, KMS and media edge.

Issue 14: "AES_256_CM_HMAC_SHA1_80/_32 (RFC 6188) accepted on the participant side of
the edge when a peer's policy asks for them (the mixer side stays AES_CM_128)".  The
focus's conference suite is AES_CM_128_HMAC_SHA1_80; ``[focus] suites`` allows both
RFC 6188 suites too.  Each member's offer chooses its leg's suite; its answer (and every
rekey re-INVITE) carries the epoch's key in that suite, which the edge holds next to the
others (docs/mikey-decisions.md #30).  The key of a suite other than the conference's is
checked against the PRF written from the RFC text in tests/unit/test_suite_keys.py.
KMS mode: the suite a member's TRANSFER_INIT policy asks; its TRANSFER_RESP delivers
epoch 1's key in that suite, and a rekey's group TRANSFER_INIT names the member's suite,
so it derives the TEK from the GTGK at that suite's lengths (RFC 6043 §5.1.3) -- the key
the edge holds for its leg.  The mixer's SIP side and media are the stand-in of
tests/kamailio (MixingUpstream); tests/asterisk/test_e2e_mixed_suites.py runs the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from secconf.client.sip import SipRequestFailed, UserAgent
from secconf.core.g711 import ToneGenerator, ulaw_decode
from secconf.core.mikey import group as mikey_group
from secconf.core.mikey.srtp import policy_for_suite
from secconf.core.sdes import SUITES
from secconf.core.sdp import SessionDescription
from tests.fixtures.edge_server import RunningEdge
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.kms_server import RunningKms
from tests.fixtures.redis_server import RedisServer
from tests.unit.test_suite_keys import expected_key

from .conftest import (
    ALICE,
    BOB,
    CAROL,
    FOCUS_IDENTITY,
    Focus,
    KmsFocus,
    MixingUpstream,
    Upstream,
    _start_focus,
    crypto_line,
    offer,
    pai,
    start_kms_focus,
)
from .kms_participants import _agent, _hear_each_other, _offer, _refused
from .media import SdesParticipant, ratio
from .support import _conference_id, _leg_epochs, _mixer_calls, _rekey

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


@pytest.mark.usefixtures("redis_url")  # an empty database (never in the KMS tests: its users)
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


@pytest.mark.usefixtures("redis_url")
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


# -- KMS mode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_kms_focus(
    kamailio_factory: KamailioFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    media_edge: RunningEdge,
    kms: RunningKms,
) -> Iterator[KmsFocus]:
    focus = start_kms_focus(
        kamailio_factory, redis_server, tmp_path_factory.mktemp("focus-kms-mixed"), media_edge,
        kms, focus_lines=FOCUS_LINES,
    )  # fmt: skip
    yield focus
    focus.stop()


def test_kms_members_of_two_suites_share_a_conference_and_a_rekey(
    mixed_kms_focus: KmsFocus,
) -> None:
    focus = mixed_kms_focus
    assert focus.edge is not None
    edge = focus.edge

    async def scenario(upstream: Upstream) -> None:
        assert isinstance(upstream, MixingUpstream)
        alice = await _agent(focus, ALICE)
        agents = [alice]
        store, client = focus.store()
        try:
            call_a = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            conference = _conference_id(call_a.call)
            bob, carol = await _agent(focus, BOB), await _agent(focus, CAROL)
            agents += [bob, carol]
            bob.suite = SUITES[CM_256_80]  # his TRANSFER_INITs ask AES-CM with a 256-bit key
            carol.suite = SUITES[CM_256_32]
            call_b = await bob.join_conference(focus.target(f"conf-{conference}"), FOCUS_IDENTITY)
            call_c = await carol.join_conference(focus.target(f"conf-{conference}"), FOCUS_IDENTITY)
            mixer = await _mixer_calls(upstream, 3)
            base = store.group_key(conference)
            for agent, call in zip(agents, (call_a, call_b, call_c), strict=True):
                assert call.group_key is not None
                got = (agent.suite.name, call.group_key.key, call.group_key.salt)
                assert got == expected_key(base, agent.suite.name)
            state = edge.get(f"/v1/conferences/{conference}")
            assert [k["suite"] for k in state["epochs"][0]["keys"]] == [
                CM_128,
                CM_256_80,
                CM_256_32,
            ]
            await _hear_each_other(call_a, call_b)
            await _hear_each_other(call_b, call_c)

            # Carol leaves; epoch 2 from a GTGK ticket; each member derives its suite's TEK.
            await call_c.call.bye(timeout=5)
            assert await asyncio.to_thread(_rekey, focus, conference) == 2
            stored = store.epoch_ticket(conference, 2)
            assert stored is not None
            group_epoch = mikey_group.GroupEpochTicket.from_bytes(stored)
            for agent_call in (call_a, call_b):
                call_id = agent_call.call.call_id
                await mixer[call_id].reinvite(upstream.mixer_sdp(call_id, 3), timeout=5)  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)  # the agent's switch runs right after its 200 OK
            for agent, agent_call in ((alice, call_a), (bob, call_b)):
                suite = agent.suite
                master = group_epoch.srtp_master_key(8 * suite.key_length, 8 * suite.salt_length)
                assert agent_call.group_epoch == 2
                assert agent_call.group_key is not None
                assert (agent_call.group_key.key, agent_call.group_key.salt) == (
                    master.key,
                    master.salt,
                )
            assert len(call_b.group_key.key) == 32  # type: ignore[union-attr]
            assert _leg_epochs(edge, conference) == [2, 2]
            await _hear_each_other(call_a, call_b)
            for agent_call in (call_a, call_b):
                assert agent_call.media.totals.auth_failures == 0
            await call_b.call.bye(timeout=5)
            await call_a.call.bye(timeout=5)
        finally:
            client.close()
            for agent in agents:
                await agent.ua.close()

    focus.run(scenario, MixingUpstream(focus.upstream_port))


def test_kms_policy_in_a_suite_the_focus_does_not_allow_is_refused(
    mixed_kms_focus: KmsFocus,
) -> None:
    focus = mixed_kms_focus

    async def create() -> str:
        alice = await _agent(focus, ALICE)
        try:
            call = await alice.join_conference(
                focus.target("conf-factory"), FOCUS_IDENTITY, allowed=(BOB, CAROL)
            )
            await call.media.close(bye=False)
            return _conference_id(call.call)
        finally:
            await alice.ua.close()

    conference = focus.run(lambda _: create(), MixingUpstream(focus.upstream_port))
    policy = policy_for_suite(0, SUITES["AES_CM_128_HMAC_SHA1_32"])
    body, _ = asyncio.run(_offer(focus, BOB, policy=policy))
    _refused(focus, f"conf-{conference}", body, BOB, 488,
             "the SRTP policy asks a suite this focus does not allow")  # fmt: skip
