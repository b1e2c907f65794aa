"""The first true end-to-end conference: Kamailio + module, edge, Asterisk ConfBridge, watcher.

Real Redis, real media edge (``secconf edge serve``), real Kamailio 5.6 with the
secconf module (SDES mode, P-Asserted-Identity trusted from 127.0.0.1) whose
upstream is the real Asterisk 22 ConfBridge, and the roster watcher
(:class:`secconf.asterisk.watcher.Watcher`) following Asterisk's AMI.  Three SDES
participants (they switch their receive key at their 200 OK, like linphone, and
send receiver reports so the edge can verify the switch) create and join; A's
tone reaches B and C through Asterisk's mixer.  C hangs up: the watcher sees
ConfbridgeLeave, rekeys once, Asterisk re-INVITEs A and B through Kamailio, the
edge switches their legs at their 200 OKs.  After that A's tone still reaches B
under the new key, and C's old key opens nothing the edge sends to B.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from secconf.asterisk.rekey_driver import RekeyReport
from secconf.asterisk.watcher import Watcher
from secconf.client.media import opened
from secconf.core.confinfo import (
    ConferenceState,
    DisconnectionMethod,
    Keying,
    OfferMode,
    describe,
    leg_endpoint,
)
from secconf.core.g711 import ToneGenerator
from secconf.store.conferences import dialog_id
from tests.asterisk.stack import Stack
from tests.asterisk.support import (  # noqa: F401 - `stack` is the module's fixture
    ALICE,
    BOB,
    CAROL,
    PREFIX,
    TONE,
    assert_tone,
    bounded,
    conference_of,
    heard,
    phone,
    stack,
    wait_for,
)
from tests.kamailio.media import SUITE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def test_leave_rekeys_through_asterisk_and_the_leaver_key_opens_nothing(stack: Stack) -> None:  # noqa: F811
    async def scenario() -> None:
        # Two watchers on the same AMI and Redis: the conference's lease lets one act.
        watcher = Watcher(stack.watcher_settings("e2e-1"))
        standby = Watcher(stack.watcher_settings("e2e-2"))
        await watcher.start()
        await standby.start()
        a, b, c = await phone(ALICE), await phone(BOB), await phone(CAROL)
        talking: asyncio.Task[int] | None = None
        store = stack.store()
        try:
            call_a = await a.invite(stack.target("conf-factory"), ALICE)
            conference = conference_of(call_a)
            call_b = await b.invite(stack.target(f"conf-{conference}"), BOB)
            call_c = await c.invite(stack.target(f"conf-{conference}"), CAROL)
            await wait_for(
                lambda: len(watcher.tracker.members(conference)) == 3, 5, "three ConfbridgeJoin"
            )
            channels = {m.caller_id: m.channel for m in watcher.tracker.members(conference)}
            assert set(channels) == {"alice", "bob", "carol"}, channels
            assert a.group == b.group == c.group  # one group key in every answer (epoch 1)
            old_key = c.group
            assert old_key is not None

            # The roster in Redis is the bridge's, with each channel's SIP Call-ID.  The
            # watcher writes it after its tracker saw the join (and a Getvar): wait for it.
            roster_key = f"{PREFIX}:roster:{conference}"
            await wait_for(lambda: store.client.hlen(roster_key) == 3, 5, "three roster entries")
            roster = store.client.hgetall(roster_key)
            assert {k.decode() for k in roster} == set(channels.values())
            assert {call_a.call_id, call_b.call_id, call_c.call_id} == {
                json.loads(v)["call_id"] for v in roster.values()
            }
            # The event package's facts: three answered legs, each seen in the bridge.
            facts = store.event_facts(conference)
            assert facts is not None
            assert [(m.answered, m.in_bridge, m.epoch) for m in facts.members] == [
                (True, True, 1)
            ] * 3
            assert describe(facts).state == ConferenceState(
                user_count=3, active=True, keying=Keying(OfferMode.SDES, 1)
            )
            carol = store.dialog(conference, call_c.call_id)
            assert carol is not None
            counter_before_bye = store.event_counters([conference])[0]

            # Asterisk's media goes to the edge's internal legs (the module's SDP rewrite).
            legs = {
                leg["leg"]: leg for leg in stack.edge.get(f"/v1/conferences/{conference}")["legs"]
            }
            for name, call in (("alice", call_a), ("bob", call_b), ("carol", call_c)):
                dialog = store.dialog(conference, call.call_id)
                assert dialog is not None
                assert dialog.epoch == 1
                leg = legs[dialog.leg]
                dest = await watcher.ami.getvar(channels[name], "CHANNEL(rtp,dest)")
                internal = leg["internal"]
                assert dest == f"{internal['host']}:{internal['port']}", (name, dest, internal)
                remote = leg["internal_remote"]
                assert remote is not None
                assert remote["host"] == "127.0.0.1"
                lo, hi = stack.asterisk.rtp_range
                assert lo <= remote["port"] <= hi

            # A talks; B and C hear it through the ConfBridge mix, under the group key.
            await asyncio.sleep(0.3)
            for p in (a, b, c):
                p.media.drain()
            await a.media.send_audio(ToneGenerator(TONE).frames(60), a.media.ssrc)
            await asyncio.sleep(0.3)
            heard_b, heard_c = heard(b), heard(c)
            assert_tone(heard_b)
            assert_tone(heard_c)

            # Capture everything the edge sends to B from now on.
            captured: list[tuple[float, bytes]] = []
            deliver = b.media._on_datagram

            def capture(data: bytes, addr: tuple[str, int]) -> None:
                captured.append((time.monotonic(), data))
                deliver(data, addr)

            b.media._on_datagram = capture  # type: ignore[method-assign]
            talking = asyncio.ensure_future(
                a.media.send_audio(ToneGenerator(TONE).frames(400), a.media.ssrc)
            )
            await asyncio.sleep(0.3)

            # C leaves.  One rekey (debounce), re-INVITEs to A and B through Kamailio.
            waiters = [asyncio.ensure_future(w.next_report(30)) for w in (watcher, standby)]
            bye_at = time.monotonic()
            await call_c.bye(timeout=5)
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            report: RekeyReport = done.pop().result()
            assert report.epoch == 2
            assert report.reasons == ("leave",)
            assert report.all_switched is not None
            leave_to_switched = report.all_switched - bye_at
            assert set(report.verdicts) == {channels["alice"], channels["bob"]}
            assert set(report.verdicts.values()) == {"followed"}, report.verdicts
            assert report.removed == ()
            edge_state = stack.edge.get(f"/v1/conferences/{conference}")
            assert sorted(leg["epoch"] for leg in edge_state["legs"]) == [2, 2]
            new_key = store.group_key(conference)
            assert new_key.epoch == 2
            # C's own BYE: a departure; the rekey: epoch 2, its time; two still connected.
            facts = store.event_facts(conference)
            assert facts is not None
            assert (facts.epoch, len(facts.members)) == (2, 2)
            assert facts.last_rekey is not None
            assert [(d.identity, d.method) for d in facts.departures] == [
                (carol.identity, DisconnectionMethod.DEPARTED)
            ]
            assert facts.departures[0].endpoint == leg_endpoint(
                carol.identity, dialog_id(call_c.call_id)
            )
            assert describe(facts).state.user_count == 2  # type: ignore[union-attr]
            (counter_after,) = store.event_counters([conference])
            assert counter_before_bye is not None
            assert counter_after is not None
            assert counter_after >= counter_before_bye + 3  # the BYE, the roster, the epoch
            assert a.group == b.group == (SUITE, new_key.key, new_key.salt) != old_key
            print(
                f"\nC's BYE -> all remaining legs on epoch 2: {leave_to_switched * 1000:.0f} ms "
                f"(debounce 0.5 s; BYE -> rekey start {(report.started - bye_at) * 1000:.0f} ms, "
                f"mint {(report.minted - report.started) * 1000:.0f} ms, "
                f"re-INVITEs answered {(report.all_switched - report.minted) * 1000:.0f} ms, "
                f"verified 'followed' {(report.settled - bye_at) * 1000:.0f} ms after the BYE)"
            )

            # After the switch: A's tone reaches B under the new key ...
            b_switched = report.switched_at[channels["bob"]]
            # B dropped the old key when it sent its 200 OK; the edge switched when that
            # 200 OK passed Kamailio: what the edge sent in between is lost (1-2 packets).
            lost_at_switch = b.media.totals.auth_failures
            assert lost_at_switch <= 5, lost_at_switch
            b.media.drain()
            await asyncio.sleep(1.0)
            after = [packet for at, packet in captured if at > b_switched + 0.05]
            assert len(after) > 30
            assert_tone(heard(b))
            assert b.media.totals.auth_failures == lost_at_switch  # none after the switch
            print(f"packets lost by B at its switch: {lost_at_switch}")
            # In arrival order, whatever the edge's rollover count so far.
            assert all(opened(b.group, after))  # type: ignore[arg-type]
            # ... and C's old key (epoch 1) opens none of it.
            assert not any(opened(old_key, after))
            rekeys = store.client.xrange(f"{PREFIX}:rekeys:{conference}")
            assert len(rekeys) == 1  # one leave, one rekey, by one of the two watchers
            assert len(watcher.reports) + len(standby.reports) == 1
            for waiter in waiters:
                waiter.cancel()
            assert store.rekey_failures(conference) == []
        finally:
            if talking is not None:
                talking.cancel()
            for p in (a, b, c):
                if p.call is not None and p is not c:
                    with contextlib.suppress(Exception):
                        await p.call.bye(timeout=2)
                await bounded(p.close(), f"close {p.ua.identity}")
            await bounded(watcher.close(), "close watcher")
            await bounded(standby.close(), "close standby")
            store.client.close()

    asyncio.run(scenario())
