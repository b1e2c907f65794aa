"""Real phones in a secure conference: linphonec and baresip through the whole chain.

Kamailio + secconf module (SDES, digest for the phones), the media edge, Asterisk
22 ConfBridge and the roster watcher, all real (tests/interop/conftest.py).  A
secconf participant (alice) creates the conference and talks (440 Hz); carol
(secconf) joins; linphonec 5.1.65 and baresip 1.0.0 dial in, answer the 407
with digest credentials, and each sends its own tone.  SRTP both ways with the
keys each side was given: the edge opens every phone's packets with the
phone's own key (its leg counters), alice hears both phones' tones through the
mix, and each phone records alice's tone decrypted with the group key of its
SDP answer.  carol hangs up: the watcher rekeys;
linphonec follows in its running call (edge verdict ``followed``, alice's tone
still decodable in its recording under the new key); baresip 1.0.0 keeps its
old receive key (edge verdict ``not-followed``), and the watcher's policy
(``replace``) hangs it up and calls it back through Kamailio:

- registered (REGISTER with digest over UDP before it dialled in): baresip
  auto-answers the replacement call, whose offer carries epoch 2's group key;
  the edge opens its SRTP on epoch 2 and baresip hears alice and linphone
  again.  No further rekey (the replacement is the same member).
- the same over SIP/TLS (baresip registers, dials in and is called back over
  TLS; it has a certificate from the CA on its listener, where Kamailio
  connects to call it);
- not registered (not reachable): the replacement fails (480 from Kamailio),
  baresip stays removed; it had accepted epoch 2 in signalling, so its
  removal is a leave: epoch 3 follows, and linphone follows that one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from secconf.asterisk.rekey_driver import RekeyReport
from secconf.asterisk.watcher import Watcher
from secconf.core.g711 import ToneGenerator, ulaw_decode
from secconf.lab.phones.audio import write_tone_wav
from secconf.lab.phones.phone import Transport
from tests.asterisk.support import bounded, conference_of, phone, wait_for
from tests.fixtures.phones import PhoneFactory
from tests.interop.audio import assert_hears
from tests.interop.conftest import ALICE, CAROL, PHONE_USERS, PREFIX, REALM, InteropStack
from tests.interop.replacement import expect_replacement
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
        dialog = store.dialog(conference, call_id)
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


@pytest.mark.parametrize(
    ("registered", "transport"),
    [(True, "udp"), (False, "udp"), (True, "tls")],
    ids=["replaced", "unreachable", "replaced-over-tls"],
)
def test_linphone_follows_a_rekey_and_baresip_is_called_back(
    interop: InteropStack,
    phones: PhoneFactory,
    tmp_path: Path,
    registered: bool,
    transport: Transport,
) -> None:
    """``registered``: baresip is called back and back on epoch 2; else removed, epoch 3.

    ``tls``: baresip registers, dials in and is called back over SIP/TLS (with a
    certificate from the CA on its listener: Kamailio connects there to call it).
    """
    tls = transport == "tls"
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
        registrar=(interop.tls_registrar if tls else interop.registrar) if registered else None,
        transport=transport,
        ca_file=interop.tls.ca_cert if tls else None,
        certificate=interop.tls.clients["participant"] if tls else None,
    )
    if registered:
        registering = time.monotonic()
        baresip.wait_registered(10.0)
        print(f"\nbaresip registered in {time.monotonic() - registering:.2f} s")

    async def scenario() -> None:
        watcher = Watcher(interop.watcher_settings())
        await watcher.start()
        alice, carol = await phone(ALICE), await phone(CAROL)
        talking: asyncio.Task[int] | None = None
        poller: asyncio.Future[None] | None = None
        back_poller: asyncio.Future[None] | None = None
        try:
            call_a = await alice.invite(interop.target("conf-factory"), ALICE)
            conference = conference_of(call_a)
            call_c = await carol.invite(interop.target(f"conf-{conference}"), CAROL)
            talking = asyncio.ensure_future(
                alice.media.send_audio(ToneGenerator(ALICE_TONE).frames(3000), alice.media.ssrc)
            )
            started = time.monotonic()
            linphone.dial(interop.target(f"conf-{conference}"))
            await in_thread(linphone.wait_connected, 10.0)
            target = interop.tls_target if tls else interop.target
            baresip.dial(target(f"conf-{conference}"))
            await in_thread(baresip.wait_connected, 10.0)
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

            async def replaced(report: RekeyReport, closed_at: float) -> None:
                """baresip is hung up and called back; back on epoch 2, it hears the mix."""
                assert report.removed == (), report
                assert set(report.replaced) == {channels["bs"]}, report
                outcome = next(o for o in watcher.dialouts if o.reason == "replace")
                assert (outcome.target, outcome.result) == (f"sip:bs@{REALM}", "answered")
                leg = await expect_replacement(
                    interop, conference, baresip, since, report.replaced[channels["bs"]],
                    old_call_id=call_ids["bs"], epoch=2, tones=(ALICE_TONE, LINPHONE_TONE),
                )  # fmt: skip
                incoming = next(
                    e for e in baresip.events[since:]
                    if e.get("type") == "CALL_ESTABLISHED" and e.get("direction") == "incoming"
                )  # fmt: skip
                print(
                    f"replacement: BYE seen by baresip {closed_at - bye_at:.2f} s after carol's"
                    f" BYE; its new call up {incoming['_received'] - closed_at:.2f} s after its"
                    f" BYE; edge leg on epoch {leg['epoch']} with SRTP opened"
                    f" {(back_on_epoch or [math.nan])[0] - closed_at:.2f} s after its BYE (first poll with"
                    f" rtp_in > 0; auth_failures before the 2xx reached the edge:"
                    f" {leg['counters']['auth_failures']}); dial-out {outcome}"
                )
                # The replacement is the same member with the key it was offered: no rekey.
                await asyncio.sleep(1.5)
                assert len(watcher.reports) == 1, [r.summary() for r in watcher.reports]
                assert {leg["epoch"] for leg in interop.conference(conference)["legs"]} == {2}

            async def removed(report: RekeyReport) -> None:
                """Not registered: the replacement fails, baresip stays removed, epoch 3."""
                assert report.removed == (channels["bs"],), report
                assert report.replaced == {}, report
                outcome = next(o for o in watcher.dialouts if o.reason == "replace")
                assert (outcome.target, outcome.result) == (f"sip:bs@{REALM}", "failed")
                # baresip was given epoch 2 in signalling (it answered the re-INVITE with
                # 200): its removal is a leave like any other, so epoch 3 follows.
                await wait_for(lambda: len(watcher.reports) >= 2, 25, "the rekey after removal")
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
                # linphone's SRTCP (its receiver reports) opened at the edge on its RTCP port.
                assert lin_leg["counters"]["rtcp_in"] >= 2, lin_leg["counters"]
                print(f"linphone leg counters: {lin_leg['counters']}")

            async def watch_back_on_epoch() -> None:
                """When the replacement's edge leg (a new leg on epoch 2) first has rtp_in."""
                old_legs = set(leg_names)
                while True:
                    with contextlib.suppress(Exception):
                        for leg in (await in_thread(interop.conference, conference))["legs"]:
                            if (
                                leg["leg"] not in old_legs
                                and leg["epoch"] == 2
                                and leg["counters"]["rtp_in"] > 0
                            ):
                                back_on_epoch.append(time.monotonic())
                                return
                    await asyncio.sleep(0.05)

            back_on_epoch: list[float] = []
            since = baresip.position()
            # carol leaves: one rekey; the phones get re-INVITEs with the new group key.
            bye_at = time.monotonic()
            poller = asyncio.ensure_future(watch_switches())
            back_poller = asyncio.ensure_future(watch_back_on_epoch())
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
            reason = await in_thread(baresip.wait_ended, 10.0)
            closed_at = next(
                e["_received"] for e in baresip.events[since:] if e.get("type") == "CALL_CLOSED"
            )
            print(f"baresip's call ended: {reason!r}")
            assert not linphone.ended()
            if registered:
                await replaced(report, closed_at)
            else:
                await removed(report)
            assert not linphone.ended()

            # After the rekey(s) linphone still decodes alice's tone, under the new key.
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
            if back_poller is not None:
                back_poller.cancel()
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
