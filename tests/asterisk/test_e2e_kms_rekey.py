"""End to end in KMS mode: Kamailio + module, KMS, edge, Asterisk ConfBridge, watcher.

Like tests/asterisk/test_e2e_rekey.py, but every participant is a
:class:`~secconf.client.agent.ParticipantAgent` (MIKEY-TICKET): Alice creates the
conference with a ticket naming Bob and Carol, they join with their own tickets.
Carol leaves: the watcher rekeys, the module takes epoch 2 from the real KMS (a GTGK
ticket naming Alice and Bob only), Asterisk re-INVITEs Alice and Bob through
Kamailio, which puts a TRANSFER_INIT of the focus into each offer; the agents resolve
it at the KMS, answer, and switch.  After that Alice's tone reaches Bob under the new
key, and Carol's epoch-1 key opens nothing the edge sends to Bob.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from secconf.asterisk.rekey_driver import RekeyReport
from secconf.asterisk.watcher import Watcher
from secconf.client.agent import AgentCall, ParticipantAgent
from secconf.client.media import opened
from secconf.client.sip import Answer, UserAgent
from secconf.core.g711 import ToneGenerator, ulaw_decode
from secconf.core.mikey import group as mikey_group
from secconf.core.roster import RekeyReason
from secconf.kms.async_client import KmsClient
from secconf.store.keywrap import load_key_file
from tests.asterisk.stack import Stack, running_stack
from tests.fixtures.asterisk_server import AsteriskServer
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.kms_server import RunningKms
from tests.fixtures.redis_server import RedisServer
from tests.kamailio.media import SUITE

from .support import assert_tone, bounded, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ALICE, BOB, CAROL = "sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"
DAVE = "sip:dave@example.com"
DAVE_PASSWORD = "dave-kms-secret-42"
FOCUS = "sip:focus@conf.test.invalid"
TONE = 440.0
PREFIX = "sce2ek"

SETTINGS = f"""
[focus]
domain = "conf.test.invalid"
server_name = "focus.e2e"

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
# A KMS ticket names the allowed set within these (docs/security.md).
allowed = ["{BOB}", "{CAROL}", "{DAVE}"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "{PREFIX}"
kek_file = "@KEK@"
kek_id = "e2e-kek"

[edge]
timeout = 1.0

[digest]
realm = "example.com"

[kms]
url = "KMS_URL"
kms_identity = "KMS_IDENTITY"
focus_identity = "{FOCUS}"
psk_file = "FOCUS_PSK"
timeout = 1.0
"""


@dataclass
class KmsStack(Stack):
    """The end-to-end stack with the session's real KMS behind the focus."""

    kms: RunningKms | None = None

    async def agent(self, identity: str) -> ParticipantAgent:
        kms = self.kms
        assert kms is not None
        psk = kms.workdir / (identity.replace(":", "_").replace("@", "_") + ".psk")
        if not psk.exists():
            psk = kms.add_user(identity)
        ua = await UserAgent.start("127.0.0.1", identity=identity)
        client = KmsClient(kms.url, kms.identity, identity, load_key_file(psk, "PSK"))
        # Receiver reports every ~0.3 s, so the edge can verify each switch quickly.
        # Calls from the focus (dial-outs) are taken from its identity only.
        return ParticipantAgent(identity, client, ua, rtcp_interval=0.3, dialout_focus=FOCUS)


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    kms: RunningKms,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KmsStack]:
    focus_psk = kms.workdir / (FOCUS.replace(":", "_").replace("@", "_") + ".psk")
    if not focus_psk.exists():
        focus_psk = kms.add_user(FOCUS)
    text = (
        SETTINGS.replace("KMS_URL", kms.url)
        .replace("KMS_IDENTITY", kms.identity)
        .replace("FOCUS_PSK", str(focus_psk))
    )
    # Dial-out: kamailio-out must point at this Kamailio.
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("e2e-kms"), text, dialout=True,
    ) as running:  # fmt: skip
        running.add_sip_user(DAVE, "dave", "example.com", DAVE_PASSWORD)
        fields = {f.name: getattr(running, f.name) for f in dataclasses.fields(running)}
        yield KmsStack(**fields, kms=kms)


def heard(call: AgentCall) -> list[int]:
    samples: list[int] = []
    for packet in call.media.drain():
        samples.extend(ulaw_decode(packet.packet.payload))
    loud = [index for index, sample in enumerate(samples) if abs(sample) > 1000]
    return samples[loud[0] : loud[-1] + 1] if loud else []


def test_kms_leave_rekeys_from_the_kms_and_the_leaver_key_opens_nothing(stack: KmsStack) -> None:
    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings())
        await watcher.start()
        agents = [await stack.agent(identity) for identity in (ALICE, BOB, CAROL)]
        a, b, c = agents
        calls: list[AgentCall] = []
        talking: asyncio.Task[int] | None = None
        store = stack.store()
        try:
            calls.append(
                await a.join_conference(
                    stack.target("conf-factory"), FOCUS, allowed=(BOB, CAROL), timeout=5
                )
            )
            call_a = calls[0]
            assert call_a.call.response is not None
            header = call_a.call.response.get("X-Secconf-Conference") or ""
            conference = header.split("conf-", 1)[1].split("@", 1)[0]
            call_b = await b.join_conference(stack.target(f"conf-{conference}"), FOCUS, timeout=5)
            call_c = await c.join_conference(stack.target(f"conf-{conference}"), FOCUS, timeout=5)
            calls += [call_b, call_c]
            await wait_for(
                lambda: len(watcher.tracker.members(conference)) == 3, 5, "three ConfbridgeJoin"
            )
            channels = {m.caller_id: m.channel for m in watcher.tracker.members(conference)}
            assert set(channels) == {"alice", "bob", "carol"}, channels
            assert call_a.group_key == call_b.group_key == call_c.group_key
            old_key = call_c.group_key
            assert old_key is not None
            assert call_c.group_epoch == 1

            # A talks; B hears it through the ConfBridge mix under the group key.
            await asyncio.sleep(0.3)
            for call in calls:
                call.media.drain()
            await call_a.media.send_audio(ToneGenerator(TONE).frames(60), call_a.tx_ssrc)
            await asyncio.sleep(0.3)
            assert_tone(heard(call_b))

            captured: list[tuple[float, bytes]] = []
            deliver = call_b.media._on_datagram

            def capture(data: bytes, addr: tuple[str, int]) -> None:
                captured.append((time.monotonic(), data))
                deliver(data, addr)

            call_b.media._on_datagram = capture  # type: ignore[method-assign]
            talking = asyncio.ensure_future(
                call_a.media.send_audio(ToneGenerator(TONE).frames(400), call_a.tx_ssrc)
            )
            await asyncio.sleep(0.3)

            # C leaves: one rekey, epoch 2 from the KMS, re-INVITEs to A and B.
            waiter = asyncio.ensure_future(watcher.next_report(30))
            bye_at = time.monotonic()
            await call_c.call.bye(timeout=5)
            report: RekeyReport = await waiter
            assert report.epoch == 2
            assert report.reasons == ("leave",)
            assert report.note == "kms: epoch from the KMS"
            assert report.all_switched is not None
            assert set(report.verdicts) == {channels["alice"], channels["bob"]}
            assert set(report.verdicts.values()) == {"followed"}, report.verdicts
            assert report.removed == ()
            edge_state = stack.edge.get(f"/v1/conferences/{conference}")
            assert sorted(leg["epoch"] for leg in edge_state["legs"]) == [2, 2]
            new_key = store.group_key(conference)
            assert new_key.epoch == 2
            assert store.epoch_ticket(conference, 2) is not None  # the epoch came from the KMS
            for call in (call_a, call_b):
                assert call.group_epoch == 2
                assert call.group_key is not None
                assert call.group_key.key == new_key.key
            assert old_key.key != new_key.key
            print(
                f"\nKMS mode: C's BYE -> all remaining legs on epoch 2: "
                f"{(report.all_switched - bye_at) * 1000:.0f} ms (debounce 0.5 s; mint with the "
                f"KMS {(report.minted - report.started) * 1000:.0f} ms; re-INVITEs answered "
                f"{(report.all_switched - report.minted) * 1000:.0f} ms)"
            )

            # After the switch: A's tone reaches B under the new key ...
            b_switched = report.switched_at[channels["bob"]]
            call_b.media.drain()
            await asyncio.sleep(1.0)
            after = [packet for at, packet in captured if at > b_switched + 0.05]
            assert len(after) > 30
            assert_tone(heard(call_b))
            # In arrival order, whatever the edge's rollover count so far.
            assert all(opened((SUITE, new_key.key, new_key.salt), after))
            # ... and C's epoch-1 key opens none of it.
            assert not any(opened((SUITE, old_key.key, old_key.salt), after))
            assert store.rekey_failures(conference) == []
        finally:
            if talking is not None:
                talking.cancel()
            for call in calls[:2]:
                with contextlib.suppress(Exception):
                    await call.call.bye(timeout=2)
            for call in calls:
                await bounded(call.media.close(bye=False), "close media")
            for agent in agents:
                await bounded(agent.ua.close(), f"close {agent.identity}")
            await bounded(watcher.close(), "close watcher")
            store.client.close()

    asyncio.run(scenario())


async def tone_heard_by(talker: AgentCall, listener: AgentCall) -> None:
    """*listener* hears *talker*'s tone through the mix, under its own group key.

    As in test_e2e_dialout.py: on this shared 2-core host Asterisk's mix fills late
    frames with silence under load, so up to three 1.2 s bursts, one must pass.
    """
    failures: list[str] = []
    for _attempt in range(3):
        await asyncio.sleep(0.3)
        for call in (talker, listener):
            call.media.drain()
        await talker.media.send_audio(ToneGenerator(TONE).frames(60), talker.tx_ssrc)
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


def test_kms_refer_dials_out_a_registered_agent_who_follows_the_next_rekey(stack: KmsStack) -> None:
    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings())
        await watcher.start()
        agents = [await stack.agent(identity) for identity in (ALICE, BOB, DAVE)]
        a, b, d = agents
        d.answer_calls()
        calls: list[AgentCall] = []
        talking: asyncio.Task[int] | None = None
        store = stack.store()
        try:
            call_a = await a.join_conference(
                stack.target("conf-factory"), FOCUS, allowed=(BOB, DAVE), timeout=5
            )
            calls.append(call_a)
            assert call_a.call.response is not None
            header = call_a.call.response.get("X-Secconf-Conference") or ""
            conference = header.split("conf-", 1)[1].split("@", 1)[0]
            call_b = await b.join_conference(stack.target(f"conf-{conference}"), FOCUS, timeout=5)
            calls.append(call_b)
            await wait_for(lambda: len(watcher.tracker.members(conference)) == 2, 5, "2 joins")

            # Dave, a KMS user with a SIP password, registers with the focus (digest).
            registrar = f"sip:127.0.0.1:{stack.kamailio.port}"
            registered = await d.ua.register(
                registrar, credentials=("dave", DAVE_PASSWORD), timeout=5
            )
            assert registered.status == 200

            # Alice REFERs Dave (authenticated by her TRANSFER_INIT in application/mikey).
            started = time.monotonic()
            body, _ = await a.refer_body(FOCUS)
            refer = await call_a.call.refer(
                f"<{DAVE}>", body=body, content_type="application/mikey", timeout=5
            )
            assert refer.status == 202
            call_d = await asyncio.wait_for(d.answered.get(), 10)
            calls.append(call_d)
            await wait_for(lambda: len(watcher.tracker.members(conference)) == 3, 5, "Dave joins")
            await wait_for(lambda: bool(watcher.dialouts), 5, "the dial-out's outcome")
            joined = time.monotonic() - started
            outcome = watcher.dialouts[-1]
            assert (outcome.target, outcome.reason, outcome.result) == (DAVE, "refer", "answered")
            channels = {m.uniqueid: m.channel for m in watcher.tracker.members(conference)}
            d_channel = channels[outcome.channel_id]
            assert d_channel.startswith("PJSIP/kamailio-out-")
            # Keyed by the focus's TRANSFER_INIT on an epoch minted for the dial-out.
            assert call_d.peer == FOCUS
            assert call_d.group_epoch == 2
            two = store.group_key(conference, 2)
            assert call_d.group_key is not None
            assert call_d.group_key.key == two.key
            assert b"key-mgmt:mikey" in call_d.call.invite.body
            assert b"a=crypto" not in call_d.call.invite.body
            dialog = store.dialog(conference, call_d.call.call_id)
            assert dialog is not None
            assert (dialog.identity, dialog.mode, dialog.dialout, dialog.epoch) == (
                DAVE, "kms", True, 2,
            )  # fmt: skip
            assert store.get(conference).kms_legs == 3  # type: ignore[union-attr]
            # Alice and Bob stay on epoch 1 (no rekey on join here); the edge keys per leg.
            assert call_a.group_epoch == call_b.group_epoch == 1
            print(f"\nKMS REFER -> Dave in the bridge: {joined * 1000:.0f} ms")

            # Alice's tone reaches Dave through the bridge under his epoch's key.
            await tone_heard_by(call_a, call_d)

            # Bob leaves: one rekey (epoch 3 from the KMS, naming Alice and Dave); Dave
            # follows the focus's rekey re-INVITE in his running call.
            talking = asyncio.ensure_future(
                call_a.media.send_audio(ToneGenerator(TONE).frames(400), call_a.tx_ssrc)
            )
            waiter = asyncio.ensure_future(watcher.next_report(30))
            await call_b.call.bye(timeout=5)
            report: RekeyReport = await waiter
            assert report.epoch == 3
            assert report.reasons == ("leave",)
            assert set(report.verdicts.values()) == {"followed"}, report.verdicts
            assert d_channel in report.verdicts
            assert report.removed == ()
            three = store.group_key(conference)
            assert three.epoch == 3
            stored = store.epoch_ticket(conference, 3)
            assert stored is not None
            assert set(mikey_group.GroupEpochTicket.from_bytes(stored).recipients) == {ALICE, DAVE}
            for call in (call_a, call_d):
                assert call.group_epoch == 3
                assert call.group_key is not None
                assert call.group_key.key == three.key
            assert store.dialog(conference, call_d.call.call_id).epoch == 3  # type: ignore[union-attr]
            await asyncio.sleep(0.5)
            call_d.media.drain()
            await asyncio.sleep(1.0)
            assert_tone(heard(call_d))
            assert store.rekey_failures(conference) == []
            talking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talking
            talking = None

            # A replacement call of a KMS leg: Dave refuses the next rekey (488); the
            # watcher hangs him up and dials him back; the module keys that call with the
            # epoch just minted (its ticket names Dave: no second mint), Dave takes it.
            async def refuse(*_: object) -> Answer:
                return Answer(488)

            d._answer_rekey = refuse  # type: ignore[method-assign]
            waiter = asyncio.ensure_future(watcher.next_report(30))
            watcher.tracker.request_rekey(conference, watcher.clock(), RekeyReason.RETRY)
            watcher.follower.wake()
            again: RekeyReport = await waiter
            assert again.epoch == 4
            assert again.verdicts[d_channel] == "refused", again.verdicts
            assert d_channel in again.replaced, again
            await call_d.call.wait_ended(5)
            replacement = await asyncio.wait_for(d.answered.get(), 10)
            calls.append(replacement)
            assert replacement.call.call_id != call_d.call.call_id
            assert replacement.group_epoch == 4
            four = store.group_key(conference)
            assert four.epoch == 4  # the replacement minted nothing
            assert replacement.group_key is not None
            assert replacement.group_key.key == four.key
            dialog = store.dialog(conference, replacement.call.call_id)
            assert dialog is not None
            assert (dialog.mode, dialog.dialout, dialog.epoch) == ("kms", True, 4)
            await wait_for(
                lambda: (
                    again.replaced[d_channel]
                    in {m.uniqueid for m in watcher.tracker.members(conference)}
                ),
                5,
                "the replacement joins",
            )
            await tone_heard_by(call_a, replacement)
            await asyncio.sleep(1.0)
            assert len(watcher.reports) == 2  # the replacement asked for no rekey
        finally:
            if talking is not None:
                talking.cancel()
            for call in calls:
                with contextlib.suppress(Exception):
                    await call.call.bye(timeout=2)
            for call in calls:
                await bounded(call.media.close(bye=False), "close media")
            for agent in agents:
                await bounded(agent.ua.close(), f"close {agent.identity}")
            await bounded(watcher.close(), "close watcher")
            store.client.close()

    asyncio.run(scenario())
