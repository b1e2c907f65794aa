"""Real phones in a secure conference: linphonec and baresip through the whole chain.

Kamailio + secconf module (SDES, digest for the phones), the media edge, Asterisk
22 ConfBridge and the roster watcher, all real (tests/interop/conftest.py).  A
secconf participant (alice) creates the conference and talks (440 Hz); carol
(secconf) joins; linphonec 5.1.65 and baresip 1.0.0 dial in, answer the 407
with digest credentials, and each sends its own tone.  SRTP both ways with the
keys each side was given: the edge opens every phone's packets with the
phone's own key (its leg counters), alice hears both phones' tones through the
mix, and each phone records alice's tone decrypted with the group key of its
SDP answer.  carol hangs up: the watcher rekeys; linphonec follows in its
running call (edge verdict ``followed``, alice's tone still decodable in its
recording under the new key); baresip 1.0.0 keeps its old receive key (edge
verdict ``not-followed``) and the watcher's policy (``remove``) hangs it up.
baresip had accepted epoch 2 in signalling, so its removal is a leave too: the
watcher rekeys again (epoch 3), and linphone follows that one as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from secconf.asterisk.watcher import RekeyReport, Watcher
from secconf.core.g711 import ToneGenerator, ulaw_decode
from secconf.phones import write_tone_wav
from tests.asterisk.test_e2e_rekey import bounded, conference_of, phone, wait_for
from tests.fixtures.phones import PhoneFactory
from tests.interop.audio import assert_hears
from tests.interop.conftest import ALICE, CAROL, PHONE_USERS, PREFIX, REALM, InteropStack
from tests.kamailio.media import SdesParticipant

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

ALICE_TONE, LINPHONE_TONE, BARESIP_TONE = 440.0, 660.0, 880.0


def alice_heard(participant: SdesParticipant) -> list[int]:
    samples: list[int] = []
    for packet in participant.media.drain():
        samples.extend(ulaw_decode(packet.packet.payload))
    return samples


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Phone calls block (they wait on the program's output): keep the event loop free."""
    return await asyncio.to_thread(function, *args)


def leg_of(stack: InteropStack, conference: str, call_id: str) -> dict[str, Any]:
    store = stack.store()
    try:
        dialog = store.dialog(call_id)
    finally:
        store.client.close()
    assert dialog is not None, call_id
    legs = {leg["leg"]: leg for leg in stack.conference(conference)["legs"]}
    return legs[dialog.leg]  # type: ignore[no-any-return]


def phone_call_ids(stack: InteropStack, conference: str) -> dict[str, str]:
    """caller id -> SIP Call-ID of every channel in the bridge (the watcher's roster hash)."""
    store = stack.store()
    try:
        roster = store.client.hgetall(f"{PREFIX}:roster:{conference}")
    finally:
        store.client.close()
    return {
        json.loads(value)["caller_id"]: json.loads(value)["call_id"] for value in roster.values()
    }


def test_linphone_follows_a_rekey_and_baresip_is_removed(
    interop: InteropStack, phones: PhoneFactory, tmp_path: Path
) -> None:
    linphone = phones.linphone(
        "lin",
        password=PHONE_USERS["lin"],
        realm=REALM,
        tone=write_tone_wav(tmp_path / "lin.wav", LINPHONE_TONE, 60),
    )
    baresip = phones.baresip(
        "bs",
        password=PHONE_USERS["bs"],
        realm=REALM,
        tone=write_tone_wav(tmp_path / "bs.wav", BARESIP_TONE, 60),
    )

    async def scenario() -> None:
        watcher = Watcher(interop.watcher_settings())
        await watcher.start()
        alice, carol = await phone(ALICE), await phone(CAROL)
        talking: asyncio.Task[int] | None = None
        poller: asyncio.Future[None] | None = None
        try:
            call_a = await alice.invite(interop.target("conf-factory"), ALICE)
            conference = conference_of(call_a)
            call_c = await carol.invite(interop.target(f"conf-{conference}"), CAROL)
            talking = asyncio.ensure_future(
                alice.media.send_audio(ToneGenerator(ALICE_TONE).frames(3000), alice.media.ssrc)
            )
            started = time.monotonic()
            for device in (linphone, baresip):
                device.dial(interop.target(f"conf-{conference}"))
                await in_thread(device.wait_connected, 10.0)
            joined = time.monotonic() - started
            await wait_for(
                lambda: len(watcher.tracker.members(conference)) == 4, 5, "four ConfbridgeJoin"
            )
            channels = {m.caller_id: m.channel for m in watcher.tracker.members(conference)}
            assert set(channels) == {"alice", "carol", "lin", "bs"}, channels
            await wait_for(
                lambda: set(phone_call_ids(interop, conference)) == set(channels), 5, "roster"
            )
            call_ids = phone_call_ids(interop, conference)
            leg_names = {
                leg_of(interop, conference, cid)["leg"]: name for name, cid in call_ids.items()
            }

            # Media both ways, each side with the keys it was given.
            marks = {device: device.mark() for device in (linphone, baresip)}
            alice.media.drain()
            before = {
                name: leg_of(interop, conference, call_ids[name])["counters"]
                for name in ("lin", "bs")
            }
            await asyncio.sleep(2.0)
            for name in ("lin", "bs"):
                leg = leg_of(interop, conference, call_ids[name])
                # Neither phone offers a=rtcp-mux: the edge takes their RTCP on port + 1.
                assert leg["rtcp_mux"] == {"participant": False, "internal": True}, (name, leg)
                after = leg["counters"]
                # The edge opened the phone's SRTP with the key of the phone's own offer.
                assert after["rtp_in"] - before[name]["rtp_in"] >= 80, (name, after)
                assert after["auth_failures"] == 0, (name, after)
                assert after["rtp_out"] - before[name]["rtp_out"] >= 80, (name, after)
            # Alice (group key towards her) hears both phones through the mix ...
            assert_hears(alice_heard(alice), (LINPHONE_TONE, BARESIP_TONE), "alice")
            # ... and each phone decrypted alice's tone with the group key of its answer.
            for device, others in (
                (linphone, (ALICE_TONE, BARESIP_TONE)),
                (baresip, (ALICE_TONE, LINPHONE_TONE)),
            ):
                rate, samples = device.heard(marks[device])
                assert_hears(samples, others, device.program, rate)

            # Every switch state the edge reports, per leg (for the log: why a verdict).
            switches: dict[str, list[tuple[float, str, str]]] = {}

            async def watch_switches() -> None:
                while True:
                    with contextlib.suppress(Exception):
                        for leg in (await in_thread(interop.conference, conference))["legs"]:
                            name, state = leg_names.get(leg["leg"], leg["leg"]), leg["switch"]
                            seen = (state.get("epoch"), state.get("state"), state.get("reason"))
                            history = switches.setdefault(name, [])
                            if not history or history[-1][1:] != seen:
                                history.append((round(time.monotonic() - bye_at, 2), *seen))
                    await asyncio.sleep(0.1)

            # carol leaves: one rekey; the phones get re-INVITEs with the new group key.
            bye_at = time.monotonic()
            poller = asyncio.ensure_future(watch_switches())
            waiter = asyncio.ensure_future(watcher.next_report(40))
            await call_c.bye(timeout=5)
            report: RekeyReport = await waiter
            print(
                f"\njoins {joined:.2f} s; carol's BYE -> report {time.monotonic() - bye_at:.2f} s;"
                f" verdicts {report.verdicts}; removed {report.removed}; {report.summary()}"
            )
            edge_state = interop.conference(conference)
            for leg in edge_state["legs"]:
                print(
                    leg_names.get(leg["leg"]), leg["epoch"], leg["switch"], leg.get("rtcp_mux"),
                    leg.get("participant_rtcp_remote"), leg.get("rtcp_latched"),
                    {k: v for k, v in leg["counters"].items() if v},
                )  # fmt: skip
            assert report.epoch == 2
            assert report.reasons == ("leave",)
            assert report.verdicts == {
                channels["alice"]: "followed",
                channels["lin"]: "followed",
                channels["bs"]: "not-followed",
            }, report.verdicts
            # The policy today: a leg that did not follow is removed (Hangup).
            assert report.removed == (channels["bs"],)
            reason = await in_thread(baresip.wait_ended, 10.0)
            print(f"baresip's call ended: {reason!r}")
            assert not linphone.ended()
            # baresip was given epoch 2 in signalling (it answered the re-INVITE with 200):
            # its removal is a leave like any other, so epoch 3 follows for the rest.
            await wait_for(lambda: len(watcher.reports) >= 2, 25, "the rekey after the removal")
            second = watcher.reports[1]
            print(f"second rekey: {second.summary()}")
            assert second.epoch == 3
            assert "leave" in second.reasons
            assert second.verdicts == {
                channels["alice"]: "followed",
                channels["lin"]: "followed",
            }, second.verdicts
            assert second.removed == ()
            lin_leg = leg_of(interop, conference, call_ids["lin"])
            assert lin_leg["epoch"] == 3
            # linphone's SRTCP (its receiver reports) opened at the edge on its own RTCP port.
            assert lin_leg["counters"]["rtcp_in"] >= 2, lin_leg["counters"]
            print(f"linphone leg counters: {lin_leg['counters']}")
            assert not linphone.ended()

            # After the rekey linphone still decodes alice's tone, under the new key.
            mark = linphone.mark()
            await asyncio.sleep(2.0)
            rate, samples = linphone.heard(mark)
            assert_hears(samples, (ALICE_TONE,), "linphone after the rekey", rate)
            assert not linphone.ended()
            poller.cancel()
            for name, history in switches.items():
                print(
                    f"switch states of {name} (s after carol's BYE, epoch, state, reason): {history}"
                )
        finally:
            if talking is not None:
                talking.cancel()
            if poller is not None:
                poller.cancel()
            for device in (linphone, baresip):
                with contextlib.suppress(Exception):
                    await in_thread(device.hangup)
            for participant in (alice, carol):
                if participant.call is not None and participant is not carol:
                    with contextlib.suppress(Exception):
                        await participant.call.bye(timeout=2)
                await bounded(participant.close(), f"close {participant.ua.identity}")
            await bounded(watcher.close(), "close watcher")

    asyncio.run(scenario())
