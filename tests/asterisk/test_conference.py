"""Two participants in a real ConfBridge: AMI roster events, the rekey decision, re-INVITEs.

The participants call Asterisk's conference extension directly on its free SIP
port (Kamailio and the edge are not in the path yet) with plain RTP.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

import pytest

from secconf.asterisk.ami import AmiClient, AmiError, AmiSettings
from secconf.asterisk.roster import RosterFollower
from secconf.client.sip import SipRequestFailed
from secconf.core.mixer_token import MixerTokenKeys
from secconf.core.roster import Rekey, RekeyPolicy, RekeyReason, RosterTracker
from tests.asterisk.participants import Participant, audio_sdp, offered_payload_types
from tests.asterisk.support import ami_client, wait_for
from tests.fixtures.asterisk_server import AsteriskServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def conference_id() -> str:
    return secrets.token_hex(8)


def token_keys(server: AsteriskServer) -> MixerTokenKeys:
    """The join-token keys of the session's Asterisk (the module's, derived from its secret)."""
    return MixerTokenKeys.derive(server.mixer_token_secret())


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def test_two_participants_join_the_roster_follows_and_a_leave_rekeys(
    asterisk_server: AsteriskServer,
) -> None:
    conference = conference_id()

    async def scenario() -> None:
        ami = ami_client(asterisk_server)
        events: list[dict[str, str]] = []
        ami.on_event("Confbridge*", events.append)
        rekeys: list[Rekey] = []

        async def on_rekey(rekey: Rekey) -> None:
            rekeys.append(rekey)

        tracker = RosterTracker(RekeyPolicy(debounce=0.3))
        follower = RosterFollower(ami, tracker, on_rekey)
        await ami.start()
        follower.start()
        # One action round trip: AMI is logged in and sends events before anyone joins.
        await ami.confbridge_rooms()
        alice = await Participant.start("alice", 31000)
        bob = await Participant.start("bob", 31002)
        try:
            await alice.join(asterisk_server.sip_port, conference, token_keys(asterisk_server))
            # A 200 OK is not yet a bridge member: ConfBridge raises ConfbridgeJoin when the
            # channel enters the bridge, and the first member's entry (which creates the
            # bridge) can come after a quick second one's.  Let Alice be in first.
            await wait_for(lambda: len(tracker.members(conference)) == 1, 5.0, "Alice's join")
            await bob.join(asterisk_server.sip_port, conference, token_keys(asterisk_server))
            await wait_for(lambda: len(tracker.members(conference)) == 2, 5.0, "two ConfbridgeJoin")
            joins = [e for e in events if e["Event"] == "ConfbridgeJoin"]
            assert [(e["Conference"], e["CallerIDNum"]) for e in joins] == [
                (conference, "alice"),
                (conference, "bob"),
            ]
            assert all(e["Channel"].startswith("PJSIP/kamailio-") for e in joins)
            assert all(e["Uniqueid"] for e in joins)
            assert any(
                e["Event"] == "ConfbridgeStart" and e["Conference"] == conference for e in events
            )
            # AMI's own list agrees with the events.
            listed = await ami.confbridge_list(conference)
            assert sorted(m["Channel"] for m in listed) == sorted(e["Channel"] for e in joins)
            assert conference in await ami.confbridge_rooms()

            # bob's join rekeyed once (the first member's did not).
            await wait_for(lambda: len(rekeys) == 1, 3.0, "the join rekey")
            assert rekeys[0].reasons == frozenset({RekeyReason.JOIN})

            bob_channel = joins[1]["Channel"]
            assert bob.call is not None
            await bob.call.bye(timeout=3.0)
            bob.call = None
            await wait_for(lambda: len(rekeys) == 2, 5.0, "the leave rekey")
            leave = [e for e in events if e["Event"] == "ConfbridgeLeave"]
            assert [(e["Channel"], e["CallerIDNum"]) for e in leave] == [(bob_channel, "bob")]
            assert rekeys[1].reasons == frozenset({RekeyReason.LEAVE})
            assert rekeys[1].left == frozenset({bob_channel})
            assert rekeys[1].channels == (joins[0]["Channel"],)
            assert 0.25 <= rekeys[1].at - rekeys[1].first_change < 1.5
        finally:
            await alice.close()
            await bob.close()
            await follower.close()
            await ami.close()

    run(scenario)


@pytest.mark.parametrize(
    ("supports", "answers"),
    [(["0", "8"], "all"), (["0", "8"], "one"), (["0"], "all"), (["8", "0"], "one")],
    ids=["answers-all", "answers-one", "pcmu-only", "pcma-first"],
)
def test_every_rekey_refresh_makes_asterisk_send_a_reinvite(
    asterisk_server: AsteriskServer, supports: list[str], answers: str
) -> None:
    """Three rekey refreshes in a row on one channel: three re-INVITEs, whatever the phone answers."""
    conference = conference_id()

    async def scenario() -> None:
        ami = ami_client(asterisk_server)
        joins: list[dict[str, str]] = []
        ami.on_event("ConfbridgeJoin", joins.append)
        await ami.start()
        alice = await Participant.start("alice", 31010, supports=supports, answers=answers)
        try:
            await alice.join(asterisk_server.sip_port, conference, token_keys(asterisk_server))
            await wait_for(lambda: len(joins) == 1, 5.0, "ConfbridgeJoin")
            channel = joins[0]["Channel"]
            for n in range(1, 4):
                await ami.rekey_refresh(channel)
                assert await alice.wait_reinvites(n, 3.0) == n, f"refresh {n}: no re-INVITE"
                # One refresh at a time: let the 200 OK/ACK of this one complete first
                # (a refresh asked for while a re-INVITE is in flight is not reliable).
                await asyncio.sleep(0.3)
            offers = [offered_payload_types(body) for _, body in alice.reinvites]
            # The two offers alternate; the codecs in use stay first.
            assert offers[0] == offers[2] != offers[1]
            assert all(offer[:2] == ["0", "8"] for offer in offers)
            # The call survived all three.
            listed = await ami.confbridge_list(conference)
            assert [m["Channel"] for m in listed] == [channel]
        finally:
            await alice.close()
            await ami.close()

    run(scenario)


def test_plain_session_refresh_is_skipped_once_the_topology_is_equal(
    asterisk_server: AsteriskServer,
) -> None:
    """The caveat itself: PJSIP_SEND_SESSION_REFRESH() alone sends nothing to a phone that
    answered every codec (DESIGN.md §2, "Topologies are equal")."""
    conference = conference_id()

    async def scenario() -> None:
        ami = ami_client(asterisk_server)
        joins: list[dict[str, str]] = []
        ami.on_event("ConfbridgeJoin", joins.append)
        await ami.start()
        alice = await Participant.start("alice", 31020, supports=["0", "8"], answers="all")
        try:
            await alice.join(asterisk_server.sip_port, conference, token_keys(asterisk_server))
            await wait_for(lambda: len(joins) == 1, 5.0, "ConfbridgeJoin")
            await ami.session_refresh(joins[0]["Channel"])
            assert await alice.wait_reinvites(1, 1.0) == 0
        finally:
            await alice.close()
            await ami.close()

    run(scenario)


def test_only_conference_uris_reach_a_bridge(asterisk_server: AsteriskServer) -> None:
    async def scenario() -> None:
        alice = await Participant.start("alice", 31030)
        try:
            for user in (
                "conf-TOOSHORT",
                "conf-0123456789abcdefx",
                "alice",
                "conf-ABCDEF0123456789",
            ):
                with pytest.raises(SipRequestFailed) as refused:
                    await alice.ua.invite(
                        f"sip:{user}@127.0.0.1:{asterisk_server.sip_port}",
                        audio_sdp(31030, ["0"]),
                        timeout=5.0,
                    )
                assert refused.value.status_code == 404, user
        finally:
            await alice.ua.close()

    run(scenario)


def test_ami_errors_are_precise(asterisk_server: AsteriskServer) -> None:
    async def scenario() -> None:
        wrong = AmiClient(
            AmiSettings(port=asterisk_server.ami_port, username="secconf", secret="wrong")
        )
        with pytest.raises(AmiError, match="refused"):
            await wrong.start()
        await wrong.close()
        ami = ami_client(asterisk_server)
        await ami.start()
        try:
            assert await ami.confbridge_list("0000000000000000") == []
            with pytest.raises(AmiError):
                await ami.setvar("PJSIP/nobody-00000000", "PJSIP_SEND_SESSION_REFRESH()", "invite")
        finally:
            await ami.close()
        closed = AmiClient(AmiSettings(port=1, connect_timeout=0.5))
        with pytest.raises(AmiError):
            await closed.start()
        await closed.close()

    run(scenario)
