"""The focus dials out: REFER → watcher → Asterisk → Kamailio → a registered phone; replacement.

Real Redis, real media edge, real Kamailio 5.6 with the module (SDES, P-Asserted-Identity
trusted from 127.0.0.1, digest realm for REGISTER, usrloc in memory), real Asterisk 22
ConfBridge whose ``kamailio-out`` endpoint is rendered with Kamailio's real port (Asterisk
is restarted on its ports once Kamailio runs), and the watcher (policy ``replace``).

- Dave registers (digest, 401 first).  Alice REFERs Dave: the module queues it, the
  watcher reads it with its consumer group, originates ``PJSIP/kamailio-out/sip:dave@...``
  into ``[secconf-dialout]`` with the conference header; Kamailio keys the INVITE with the
  group key and finds Dave's contact; Dave answers with SDES and hears Alice's tone
  through the bridge under the group key.
- Alice REFERs Carol (allowed, not registered): Kamailio answers 480, the Originate
  fails, the watcher records the failure; nothing is left in Redis or the bridge.
- Dave stops following rekeys (baresip 1.0.0 behaviour: accepts the new key in
  signalling, keeps decrypting with the old one).  Bob leaves; the rekey re-INVITEs
  Alice and Dave; the edge reports Dave's leg ``not-followed``; the watcher hangs it up
  and dials Dave back in; the new call is on epoch 2 and Dave hears the tone again.
- Dave unregisters; the next rekey finds him not following again; his replacement
  fails (480): he stays removed, it is reported, and the conference is rekeyed once
  more (he had been offered that epoch's key).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

from secconf.asterisk.rekey_driver import RekeyReport
from secconf.asterisk.watcher import Watcher
from secconf.core.g711 import ToneGenerator
from secconf.core.roster import FailurePolicy, RekeyReason
from tests.asterisk.stack import Stack, running_stack
from tests.asterisk.support import (
    TONE,
    assert_tone,
    bounded,
    conference_of,
    heard,
    wait_for,
)
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer
from tests.kamailio.media import SUITE, SdesParticipant

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ALICE, BOB, CAROL = "sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"
DAVE = "sip:dave@example.com"
DAVE_PASSWORD = "dave-secret-333"
PREFIX = "scdo"

SETTINGS = f"""
[focus]
domain = "conf.test.invalid"
server_name = "focus.dialout"

[lab]
# The test UAs send SDES over UDP (tests/security checks the TLS-only default).
sdes_over_udp = true

[identity]
trusted_sources = ["udp:127.0.0.1"]

[limits]
# Functional tests and benchmarks hold many dialogs per identity (tests/security checks the limit).
dialogs_per_identity = 1000
refers_per_minute = 600

[policy]
creators = ["{ALICE}"]
allowed = ["{BOB}", "{CAROL}", "{DAVE}"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "{PREFIX}"
kek_file = "@KEK@"
kek_id = "dialout-kek"

[edge]
timeout = 1.0

[digest]
realm = "example.com"
"""


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("dialout"), SETTINGS, dialout=True,
    ) as running:  # fmt: skip
        running.add_sip_user(DAVE, "dave", "example.com", DAVE_PASSWORD)
        yield running


async def phone(identity: str) -> SdesParticipant:
    """An SDES phone sending receiver reports every ~0.3 s (the edge verifies switches)."""
    return await SdesParticipant.start(identity, rtcp_interval=0.3)


def channels_by_uniqueid(watcher: Watcher, conference: str) -> dict[str, str]:
    return {m.uniqueid: m.channel for m in watcher.tracker.members(conference)}


async def tone_heard_by(talker: SdesParticipant, listener: SdesParticipant) -> None:
    """*listener* hears *talker*'s tone through the mix (decrypting with its group key).

    On this shared 2-core host Asterisk's mix fills late frames with silence under load,
    which can push one burst under the threshold: up to three 1.2 s bursts, one must pass.
    """
    failures: list[str] = []
    for _attempt in range(3):
        await asyncio.sleep(0.3)
        for p in (talker, listener):
            p.media.drain()
        await talker.media.send_audio(ToneGenerator(TONE).frames(60), talker.media.ssrc)
        await asyncio.sleep(0.3)
        try:
            assert_tone(heard(listener))
        except AssertionError as exc:
            failures.append(str(exc))
            continue
        if failures:
            print(f"tone heard after {len(failures)} short burst(s): {failures}")
        return
    raise AssertionError(f"tone not heard in 3 bursts: {failures}")


def test_refer_dials_out_and_a_non_follower_is_replaced(stack: Stack) -> None:
    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings("dialout-1", on_failure=FailurePolicy.REPLACE))
        await watcher.start()
        a, b, d = await phone(ALICE), await phone(BOB), await phone(DAVE)
        d.accept_calls = True
        store = stack.store()
        try:
            call_a = await a.invite(stack.target("conf-factory"), ALICE)
            conference = conference_of(call_a)
            call_b = await b.invite(stack.target(f"conf-{conference}"), BOB)
            await wait_for(lambda: len(watcher.tracker.members(conference)) == 2, 5, "2 joins")

            registrar = f"sip:127.0.0.1:{stack.kamailio.port}"
            challenged = await d.ua.register(registrar, timeout=5)
            assert challenged.status == 401
            registered = await d.ua.register(
                registrar, credentials=("dave", DAVE_PASSWORD), timeout=5
            )
            assert registered.status == 200

            # (b) REFER by a member → watcher → Originate → Asterisk → Kamailio → Dave.
            started = time.monotonic()
            refer = await call_a.refer(f"<{DAVE}>", extra_headers=[("P-Asserted-Identity", f"<{ALICE}>")], timeout=5)  # fmt: skip
            assert refer.status == 202
            d.call = await d.ua.next_call(10)
            await wait_for(lambda: len(watcher.tracker.members(conference)) == 3, 5, "Dave joins")
            # The OriginateResponse may be handled after the ConfbridgeJoin.
            await wait_for(lambda: bool(watcher.dialouts), 5, "the dial-out's outcome")
            joined = time.monotonic() - started
            outcome = watcher.dialouts[-1]
            assert (outcome.target, outcome.reason, outcome.result) == (DAVE, "refer", "answered")
            channels = {m.uniqueid: m.channel for m in watcher.tracker.members(conference)}
            d_channel = channels[outcome.channel_id]
            assert d_channel.startswith("PJSIP/kamailio-out-")
            assert d.group == a.group  # the group key of epoch 1 in Dave's offer
            dialog = store.dialog(conference, d.call.call_id)
            assert dialog is not None
            assert (dialog.identity, dialog.dialout, dialog.epoch) == (DAVE, True, 1)
            assert d.call.invite.get("X-Secconf-Conference") == (
                f"<sip:conf-{conference}@conf.test.invalid>"
            )
            await tone_heard_by(a, d)
            print(f"\nREFER -> Dave in the bridge: {joined * 1000:.0f} ms")

            # A REFER target that is not registered: reported, nothing left.
            members = store.members(conference)
            refer = await call_a.refer(f"<{CAROL}>", extra_headers=[("P-Asserted-Identity", f"<{ALICE}>")], timeout=5)  # fmt: skip
            assert refer.status == 202
            await wait_for(
                lambda: any(o.target == CAROL for o in watcher.dialouts), 15, "Carol's outcome"
            )
            failed = next(o for o in watcher.dialouts if o.target == CAROL)
            assert failed.result == "failed", failed
            assert store.members(conference) == members
            assert len(watcher.tracker.members(conference)) == 3
            recorded = store.client.xrange(f"{PREFIX}:dialout:{conference}")
            assert [f[b"result"] for _, f in recorded] == [b"answered", b"failed"]
            assert all(b"inline" not in v for _, f in recorded for v in f.values())
            # Each REFER entry was dialled once and acknowledged.
            pending = store.client.xpending(store.refer_stream_key(conference), "dialout")
            assert pending["pending"] == 0

            # (c) Dave stops following rekeys (baresip 1.0.0); Bob leaves → rekey.
            d.follow = False
            old_call = d.call
            report_waiter = asyncio.ensure_future(watcher.next_report(30))
            await call_b.bye(timeout=5)
            report: RekeyReport = await report_waiter
            assert report.epoch == 2
            assert report.verdicts[d_channel] == "not-followed", report.verdicts
            assert set(report.verdicts.values()) == {"followed", "not-followed"}
            assert d_channel in report.replaced, report
            assert report.removed == ()
            await old_call.wait_ended(5)
            d.call = await d.ua.next_call(10)
            assert d.call.call_id != old_call.call_id
            await wait_for(
                lambda: (
                    report.replaced[d_channel]
                    in {m.uniqueid for m in watcher.tracker.members(conference)}
                ),
                5,
                "the replacement joins",
            )
            new_key = store.group_key(conference)
            assert new_key.epoch == 2
            assert d.group == a.group == (SUITE, new_key.key, new_key.salt)
            dialog = store.dialog(conference, d.call.call_id)
            assert dialog is not None
            assert (dialog.dialout, dialog.epoch) == (True, 2)
            await tone_heard_by(a, d)
            # The replacement changed the roster without another rekey.
            await asyncio.sleep(1.0)
            assert len(watcher.reports) == 1
            assert store.get(conference).epoch == 2  # type: ignore[union-attr]

            # A replacement that fails: Dave unregisters, the next rekey finds him
            # not following again; hung up, not reachable (480) → removed, reported,
            # and one more rekey, since he had been offered the epoch-3 key.
            gone = await d.ua.register(
                registrar, credentials=("dave", DAVE_PASSWORD), expires=0, timeout=5
            )
            assert gone.status == 200
            d_channel = channels_by_uniqueid(watcher, conference)[report.replaced[d_channel]]
            waiter = asyncio.ensure_future(watcher.next_report(30))
            watcher.tracker.request_rekey(conference, watcher.clock(), RekeyReason.RETRY)
            watcher.follower.wake()
            second: RekeyReport = await waiter
            assert second.epoch == 3
            assert second.verdicts[d_channel] == "not-followed", second.verdicts
            assert second.removed == (d_channel,)
            assert second.replaced == {}
            failed = watcher.dialouts[-1]
            assert (failed.target, failed.reason, failed.result) == (DAVE, "replace", "failed")
            await d.call.wait_ended(5)
            d.call = None
            third: RekeyReport = await watcher.next_report(30)
            assert third.epoch == 4
            assert third.reasons == ("leave",)
            assert set(third.verdicts.values()) == {"followed"}
            assert store.members(conference) == {ALICE: 1}
            recorded = store.client.xrange(f"{PREFIX}:dialout:{conference}")
            assert [(f[b"reason"], f[b"result"]) for _, f in recorded][-1] == (
                b"replace",
                b"failed",
            )
        finally:
            for p in (a, b, d):
                if p.call is not None:
                    with contextlib.suppress(Exception):
                        await p.call.bye(timeout=2)
                await bounded(p.close(), f"close {p.ua.identity}")
            await bounded(watcher.close(), "close watcher")
            store.client.close()

    asyncio.run(scenario())
