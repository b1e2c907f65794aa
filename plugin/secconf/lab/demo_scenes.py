"""The demo's acts, in the order :func:`secconf.lab.demo_story.run_story` plays them.

Each act is one step of the story (docs: the module docstring of
:mod:`secconf.lab.demo_story`): it acts on the real services, prints what it measured
and checks it.  What the acts share (the watcher, the store, everyone on stage) is a
:class:`Stage`; what bob's departure measured, the later acts read from a
:class:`Departure`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.table import Table

from ..asterisk.ami import AmiSettings
from ..asterisk.watcher import RekeyReport, Watcher, WatcherSettings
from ..client.agent import AgentCall, ParticipantAgent
from ..client.media import opened
from ..client.phone import SUITE, SdesPhone
from ..client.sip import SipRequestFailed
from ..core.g711 import ToneGenerator, tone_share, ulaw_decode
from ..core.keys import GroupKey, key_fingerprint
from ..core.mikey import ticket as mikey_ticket
from ..core.mikey.keys import SrtpMasterKey
from ..core.roster import FailurePolicy, RekeyPolicy
from ..focus.settings import load_settings
from ..kms.async_client import KmsRefused
from ..store.conferences import ConferenceStore
from ..store.executors import SyncExecutor
from ..store.watcher import RosterStore
from .demo_narrator import Story, StoryFailed
from .demo_services import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    DOMAIN,
    ERIN,
    FOCUS,
    MALLORY,
    PREFIX,
    Services,
    agent,
    tls_ua,
)
from .phones.audio import write_tone_wav
from .phones.baresip import BaresipPhone
from .phones.linphone import LinphonePhone
from .phones.phone import Phone

__all__ = [
    "Departure",
    "Stage",
    "alice_creates",
    "alice_refers_dave",
    "bob_joins",
    "bob_leaves",
    "bob_listens_in",
    "everybody_hears_alice",
    "everybody_hears_epoch_2",
    "leave_the_stage",
    "mallory_is_refused",
    "phones_join",
    "summary",
    "watcher_for",
]

TONE = 440.0
CONTROL_TONE = 1000.0  # nobody sends it: a tone "heard" must stand out against it
HEARD = 0.5  # at least half of the audio's energy at TONE
T = TypeVar("T")


@dataclass
class Stage:
    """What the acts share: the services, the roster watcher, the store, everyone on stage."""

    story: Story
    services: Services
    watcher: Watcher
    store: ConferenceStore
    conference: str = ""
    agents: dict[str, ParticipantAgent] = field(default_factory=dict)
    calls: dict[str, AgentCall] = field(default_factory=dict)
    phones: dict[str, Phone] = field(default_factory=dict)
    dave: SdesPhone | None = None
    #: When each agent's join was answered (its INVITE's 200 OK), monotonic.
    joined_at: dict[str, float] = field(default_factory=dict)
    talking: asyncio.Task[int] | None = None

    @property
    def target(self) -> str:
        """The conference's URI at Kamailio's TLS listener."""
        return self.services.target(f"conf-{self.conference}")

    def members_seen(self, count: int) -> Callable[[], bool]:
        """A predicate: the watcher has seen *count* members in the bridge."""
        return lambda: len(self.watcher.tracker.members(self.conference)) == count


@dataclass
class Departure:
    """What bob's departure measured: the rekey, the edge's verdicts, the keys before and after."""

    report: RekeyReport
    bye_at: float
    channels: dict[str, str]
    verdicts: dict[str, str]
    #: bob's key (epoch 1), as the KMS delivered it to him.
    old_key: SrtpMasterKey | None
    new_key: GroupKey
    #: (arrival time, datagram) of everything the edge sent alice from the BYE on.
    captured: list[tuple[float, bytes]]


# -- measuring -------------------------------------------------------------------------------


async def _wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def _blocking(function: Callable[..., T], *args: Any) -> T:
    """Phone drivers block on their program's output: keep the event loop free."""
    return await asyncio.to_thread(function, *args)


def _tone_share(samples: list[int]) -> float:
    return tone_share(samples, TONE, CONTROL_TONE)


def _agent_heard(call: AgentCall) -> float:
    samples: list[int] = []
    for packet in call.media.drain():
        samples.extend(ulaw_decode(packet.packet.payload))
    return _tone_share(samples)


def _phone_heard(phone: Phone, since: int) -> float:
    rate, samples = phone.heard(since)
    if rate != 8000:
        samples = samples[:: max(1, rate // 8000)]
    return _tone_share(samples)


def _members(store: ConferenceStore, conference: str) -> dict[str, tuple[str, str]]:
    """name -> (channel, edge leg) of everyone in the bridge, from Redis.

    The watcher's roster hash names each channel's SIP Call-ID; the module's dialog
    record for that Call-ID names the identity it admitted (a dial-out's caller ID is
    the conference's, so the record is the only reliable name) and the edge leg.
    """
    members: dict[str, tuple[str, str]] = {}
    roster = SyncExecutor(store.client).run(RosterStore(PREFIX).members(conference))
    for channel, entry in roster.items():
        dialog = store.dialog(conference, entry.call_id) if entry.call_id else None
        if dialog is not None:
            name = dialog.identity.removeprefix("sip:").split("@", 1)[0]
            members[name] = (channel, dialog.leg)
    return members


def _conference_of(call: AgentCall) -> str:
    response = call.call.response
    header = response.get("X-Secconf-Conference") if response else None
    if not header:
        raise StoryFailed("the focus's answer names no conference")
    return header.strip("<>").split("conf-", 1)[1].split("@", 1)[0]


# -- the acts --------------------------------------------------------------------------------


def watcher_for(services: Services) -> Watcher:
    """The roster watcher on Asterisk's AMI, with the story's rekey policy."""
    focus_settings = load_settings(services.kamailio.settings_path, env=services.kamailio.env)
    return Watcher(
        WatcherSettings(
            ami=AmiSettings(
                port=services.asterisk.ami_port,
                username=services.asterisk.ami_user,
                secret=services.asterisk.ami_secret,
            ),
            focus=focus_settings,
            # Joins do not rekey in this story (the default policy rekeys on joins too):
            # it follows the one rekey that bob's departure needs.
            policy=RekeyPolicy(debounce=0.5, rekey_on_join=False),
            watcher_id="demo-watcher",
            refresh_timeout=5.0,
            verify_timeout=12.0,
            poll_interval=0.05,
            on_failure=FailurePolicy.REPLACE,
            dialout_timeout=10.0,
            dialout_poll=0.1,
        )
    )


async def alice_creates(stage: Stage) -> None:
    """1. alice creates the conference with a ticket naming the allowed participants."""
    story, services, timeline = stage.story, stage.services, stage.story.timeline
    story.step("alice (KMS mode) asks the KMS for a ticket and creates a secure conference")
    alice = stage.agents["alice"] = await agent(services, ALICE, "alice")
    call_a = await alice.join_conference(
        services.target("conf-factory"), FOCUS, allowed=(BOB, CAROL, DAVE, ERIN), timeout=10
    )
    stage.calls["alice"] = call_a
    conference = stage.conference = _conference_of(call_a)
    timeline.title = f"secconf demo: conference conf-{conference}"
    timeline.epoch(1, story.now())
    timeline.joined("alice", story.now(), "kms")
    key1 = call_a.group_key
    story.say(
        f"conference conf-{conference}: allowed bob, carol, dave, erin; group key epoch "
        f"{call_a.group_epoch} {key_fingerprint(key1.key, key1.salt) if key1 else '-'}"
    )
    story.check(
        call_a.group_epoch == 1 and call_a.peer == FOCUS,
        "the focus answered with its TRANSFER_RESP (MAC verified: the focus is "
        "authenticated) and delivered the group key",
    )
    stage.talking = asyncio.ensure_future(
        call_a.media.send_audio(ToneGenerator(TONE).frames(6000), call_a.tx_ssrc)
    )
    story.say(f"alice talks: a {TONE:.0f} Hz tone, from now on")


async def bob_joins(stage: Stage) -> None:
    """2a. bob joins with his own ticket (KMS mode)."""
    story = stage.story
    story.step("bob joins with his own ticket (KMS mode)")
    bob = stage.agents["bob"] = await agent(stage.services, BOB, "bob")
    call_b = await bob.join_conference(stage.target, FOCUS, timeout=10)
    stage.joined_at["bob"] = time.monotonic()
    stage.calls["bob"] = call_b
    story.timeline.joined("bob", story.now(), "kms")
    call_a = stage.calls["alice"]
    story.check(
        call_b.group_key == call_a.group_key and call_b.group_epoch == 1,
        "bob got the same group key (epoch 1)",
    )


async def phones_join(stage: Stage) -> None:
    """2b. carol (linphonec) and erin (baresip) join: SDES over TLS, SIP digest."""
    story, services, timeline = stage.story, stage.services, stage.story.timeline
    # The phones send silence (no tone file): everybody should hear alice's tone alone.
    for name in ("carol", "erin"):
        (services.workdir / name).mkdir()
    # linphonec sends only what it plays: a long silence, so its leg carries SRTP too.
    silence = write_tone_wav(services.workdir / "silence.wav", 0.0, 600.0, amplitude=0)
    story.step("carol joins with linphonec, erin with baresip: SDES over TLS, SIP digest")
    # linphonec checks Kamailio's certificate by name (DNS names only: "localhost"), and
    # answers Kamailio's optional client-certificate request with one from the CA.
    carol = LinphonePhone(
        services.workdir / "carol", "carol", password=services.passwords["carol"],
        realm=DOMAIN, transport="tls", ca_file=services.tls.ca_cert, tone=silence,
        certificate=services.tls.clients["carol"],
    )  # fmt: skip
    stage.phones["carol"] = carol
    await _blocking(carol.start)
    carol.dial(f"sip:conf-{stage.conference}@localhost:{services.kamailio.tls_port};transport=tls")
    await _blocking(carol.wait_connected, 15.0)
    timeline.joined("carol", story.now(), "sdes")
    story.check(True, "carol (linphonec 5.1.65) answered the 407 with digest and is in")
    erin = BaresipPhone(
        services.workdir / "erin", "erin", password=services.passwords["erin"],
        realm=DOMAIN, transport="tls", ca_file=services.tls.ca_cert,
        registrar=services.registrar,
    )  # fmt: skip
    stage.phones["erin"] = erin
    await _blocking(erin.start)
    await _blocking(erin.wait_registered, 10.0)
    erin.dial(stage.target)
    await _blocking(erin.wait_connected, 15.0)
    timeline.joined("erin", story.now(), "sdes")
    story.check(True, "erin (baresip 1.0.0) registered with the focus and is in")
    story.check(
        await _wait_for(stage.members_seen(4), 10),
        "the watcher saw four ConfbridgeJoin events",
    )


async def mallory_is_refused(stage: Stage) -> None:
    """3. mallory (not invited) is refused, and so is bob's TRANSFER_INIT replayed."""
    story, timeline = stage.story, stage.story.timeline
    story.step("mallory (a KMS user, not invited) tries to join; then replays bob's offer")
    members_before = stage.store.members(stage.conference)
    mallory = stage.agents["mallory"] = await agent(stage.services, MALLORY, "mallory")
    refused_status = 0
    try:
        await mallory.join_conference(stage.target, FOCUS, timeout=10)
    except SipRequestFailed as exc:
        refused_status = exc.status_code
        story.say(f"focus: {exc.status_code} {exc.reason} ({exc.message})")
    timeline.mark(story.now(), "refused", "mallory: not in the allowed set (403)")
    story.check(refused_status == 403, "mallory's INVITE refused with 403")
    replayed_status = 0
    try:
        await mallory.ua.invite(stage.target, stage.calls["bob"].call.invite.body, timeout=10)
    except SipRequestFailed as exc:
        replayed_status = exc.status_code
        story.say(f"focus: {exc.status_code} {exc.reason} ({exc.message})")
    timeline.mark(story.now(), "refused", "bob's TRANSFER_INIT replayed (403)")
    story.check(replayed_status == 403, "bob's TRANSFER_INIT replayed: refused with 403")
    story.check(
        stage.store.members(stage.conference) == members_before,
        "the conference's members are unchanged",
    )


async def alice_refers_dave(stage: Stage) -> None:
    """4. dave registers; alice REFERs him; the focus dials him out through Asterisk."""
    story, services = stage.story, stage.services
    story.step("dave registers; alice REFERs him into the conference; the focus dials out")
    dave = stage.dave = await SdesPhone.start(DAVE, await tls_ua(services, DAVE, "dave"))
    dave.accept_calls = True
    registered = await dave.ua.register(
        services.registrar, credentials=("dave", services.passwords["dave"]), timeout=5
    )
    story.check(registered.status == 200, f"dave registered (digest): {registered.status}")
    body, pending = await stage.agents["alice"].refer_body(FOCUS)
    referred = await stage.calls["alice"].call.refer(
        f"<{DAVE}>", body=body, content_type="application/mikey", timeout=10
    )
    verified = False
    with contextlib.suppress(Exception):
        mikey_ticket.process_transfer_resp(
            pending, base64.b64decode(referred.body), now=time.time()
        )
        verified = True
    story.check(
        referred.status == 202 and verified,
        f"REFER accepted ({referred.status}); its TRANSFER_RESP verifies at alice",
    )
    dave.call = await dave.ua.next_call(20)
    story.timeline.joined("dave", story.now(), "dial-out")
    story.check(
        await _wait_for(stage.members_seen(5), 10),
        "dave answered the focus's call and is in the bridge (five members)",
    )


async def everybody_hears_alice(stage: Stage) -> None:
    """Everybody hears alice's tone through the ConfBridge mix, under the group key."""
    assert stage.dave is not None
    stage.story.step("everybody hears alice through the ConfBridge mix, under the group key")
    await asyncio.sleep(1.0)
    marks = {name: phone.mark() for name, phone in stage.phones.items()}
    stage.calls["bob"].media.drain()
    stage.dave.media.drain()
    await asyncio.sleep(1.5)
    heard_before = {
        "bob": _agent_heard(stage.calls["bob"]),
        "dave": stage.dave.heard(TONE, CONTROL_TONE),
        **{name: _phone_heard(phone, marks[name]) for name, phone in stage.phones.items()},
    }
    for name, share in heard_before.items():
        stage.story.check(share > HEARD, f"{name} hears the {TONE:.0f} Hz tone: share {share:.2f}")


async def bob_leaves(stage: Stage) -> Departure:
    """5. bob leaves: one rekey; who follows it in their running call, who is called back."""
    story, timeline = stage.story, stage.story.timeline
    call_a, call_b = stage.calls["alice"], stage.calls["bob"]
    story.step("bob leaves; the conference is rekeyed")
    channels = {name: ch for name, (ch, _) in _members(stage.store, stage.conference).items()}
    old_key = call_b.group_key
    captured: list[tuple[float, bytes]] = []
    deliver = call_a.media._on_datagram

    def capture(data: bytes, addr: tuple[str, int]) -> None:
        captured.append((time.monotonic(), data))
        deliver(data, addr)

    call_a.media._on_datagram = capture  # type: ignore[method-assign]
    erin = stage.phones["erin"]
    erin_since = erin.position()
    waiter = asyncio.ensure_future(stage.watcher.next_report(60))
    bye_at = time.monotonic()
    await call_b.call.bye(timeout=5)
    timeline.left("bob", story.at(bye_at), "bye")
    report: RekeyReport = await asyncio.wait_for(waiter, 60)
    switched = report.all_switched
    timeline.mark(
        story.at(report.started), "rekey",
        f"rekey to epoch {report.epoch} ({', '.join(report.reasons)})",
    )  # fmt: skip
    timeline.epoch(report.epoch, story.at(switched or report.settled))
    story.say(
        f"rekey to epoch {report.epoch} ({', '.join(report.reasons)}; {report.note or 'sdes'}):"
        f" BYE -> start {(report.started - bye_at) * 1000:.0f} ms (debounce 500 ms), mint "
        f"{(report.minted - report.started) * 1000:.0f} ms, all legs on epoch {report.epoch} "
        + (f"{(switched - bye_at) * 1000:.0f} ms after the BYE" if switched else "never")
    )
    verdicts = {
        name: report.verdicts.get(channels.get(name, ""), "-")
        for name in ("alice", "carol", "dave", "erin")
    }
    story.say("edge verdicts: " + ", ".join(f"{n} {v}" for n, v in verdicts.items()))
    story.check(report.epoch == 2 and report.reasons == ("leave",), "one rekey, for the leave")
    story.check(
        verdicts["alice"] == verdicts["carol"] == verdicts["dave"] == "followed",
        "alice (KMS), carol (linphone) and dave follow in their running calls",
    )
    story.check(
        verdicts["erin"] == "not-followed" and channels.get("erin", "") in report.replaced,
        "erin's baresip did not follow; the watcher hung it up and called erin back",
    )
    await _blocking(erin.wait_incoming, erin_since, 20.0)
    timeline.left("erin", story.at(report.settled), "replaced")
    timeline.joined("erin", story.now(), "dial-out")
    new_key = stage.store.group_key(stage.conference)
    _check_epoch_2_keys(stage, new_key)
    return Departure(report, bye_at, channels, verdicts, old_key, new_key, captured)


def _check_epoch_2_keys(stage: Stage, new_key: GroupKey) -> None:
    """alice (from the KMS) and dave (in SDES) hold the key of epoch 2."""
    assert stage.dave is not None
    call_a = stage.calls["alice"]
    stage.story.check(
        call_a.group_epoch == 2 and call_a.group_key is not None
        and call_a.group_key.key == new_key.key,
        f"alice holds epoch 2 {key_fingerprint(new_key.key, new_key.salt)} (from the KMS: "
        "a GTGK ticket naming the members still in)",
    )  # fmt: skip
    stage.story.check(
        stage.dave.group == (SUITE, new_key.key, new_key.salt), "dave holds the epoch 2 key"
    )


async def everybody_hears_epoch_2(stage: Stage) -> None:
    """After the rekey: everyone still in hears alice under the key of epoch 2."""
    assert stage.dave is not None
    await asyncio.sleep(1.5)
    marks = {name: phone.mark() for name, phone in stage.phones.items()}
    stage.dave.media.drain()
    await asyncio.sleep(1.5)
    heard_after = {
        "dave": stage.dave.heard(TONE, CONTROL_TONE),
        **{name: _phone_heard(phone, marks[name]) for name, phone in stage.phones.items()},
    }
    for name, share in heard_after.items():
        stage.story.check(share > HEARD, f"{name} hears alice on epoch 2: share {share:.2f}")


async def bob_listens_in(stage: Stage, departure: Departure) -> None:
    """bob tries: his key on what was sent to alice after her switch, and the KMS."""
    story, report = stage.story, departure.report
    old_key, new_key = departure.old_key, departure.new_key
    story.step("bob tries to listen in after his departure")
    a_switched = report.switched_at.get(departure.channels.get("alice", ""), time.monotonic())
    after = [packet for at, packet in departure.captured if at > a_switched + 0.05]
    # In arrival order, whatever the edge's rollover count so far (client.media.opened).
    opened_old = sum(opened((SUITE, old_key.key, old_key.salt), after)) if old_key else -1
    opened_new = sum(opened((SUITE, new_key.key, new_key.salt), after))
    story.check(
        len(after) > 30 and opened_new == len(after),
        f"the epoch 2 key opens {opened_new}/{len(after)} packets sent to alice after her switch",
    )
    story.check(opened_old == 0, f"bob's key opens {opened_old}/{len(after)} of them")
    refused_by_kms = False
    call_a = stage.calls["alice"]
    if call_a.rekey_transfers:
        transfer = mikey_ticket.TransferInit.read(call_a.rekey_transfers[-1])
        try:
            await stage.agents["bob"].kms.resolve(transfer)
        except KmsRefused as exc:
            refused_by_kms = True
            story.say(f"KMS to bob: {exc}")
    story.check(
        refused_by_kms,
        "the KMS refuses bob the epoch 2 ticket (he is not among its recipients)",
    )


#: How each member still in at the end joined (the summary's second column).
HOW_THEY_JOINED = {
    "alice": "KMS ticket (agent)",
    "carol": "SDES, digest (linphonec)",
    "dave": "REFER, dial-out, SDES",
    "erin": "SDES, digest (baresip); replaced",
}


def summary(stage: Stage, departure: Departure) -> None:
    """6. The table of every member's leg at the edge, and the rekey's latency."""
    story, console, conference = stage.story, stage.story.console, stage.conference
    state = stage.services.edge.get(f"/v1/conferences/{conference}")
    legs = {leg["leg"]: leg for leg in state["legs"]}  # type: ignore[index]
    table = Table(title=f"conf-{conference}, measured in this run (all SIP over TLS)")
    for column in ("member", "joined as", "epoch", "rekey verdict", "packets to it",
                   "packets from it", "auth failures"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("member", "joined as") else "right")
    now_in = _members(stage.store, conference)
    for name in ("alice", "carol", "dave", "erin"):
        leg = legs.get(now_in[name][1], {}) if name in now_in else {}
        counters = leg.get("counters", {})
        table.add_row(
            name, HOW_THEY_JOINED[name], str(leg.get("epoch", "-")),
            departure.verdicts.get(name, "-"),
            str(counters.get("rtp_out", "-")), str(counters.get("rtp_in", "-")),
            str(counters.get("auth_failures", "-")),
        )  # fmt: skip
    table.add_row("bob", "KMS ticket (agent); left", "left at 1", "-", "-", "-", "-")
    table.add_row("mallory", "KMS ticket (agent)", "INVITEs, SUBSCRIBE: 403", "-", "-", "-", "-")
    console.print()
    console.print(table)
    report, switched = departure.report, departure.report.all_switched
    if switched is not None:
        console.print(
            f"rekey latency: bob's BYE -> every remaining leg on epoch 2 in "
            f"{(switched - departure.bye_at) * 1000:.0f} ms (500 ms of it the debounce window); "
            f"erin's replacement call was up {story.now() - story.at(report.settled):.1f} s "
            "before the end"
        )


async def leave_the_stage(stage: Stage) -> None:
    """Hang up and close everything the acts started, whatever happened (services stay)."""
    if stage.talking is not None:
        stage.talking.cancel()
    calls = stage.calls
    for call in calls.values():
        if call is not calls.get("bob"):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.call.bye(timeout=2), 3)
    dave = stage.dave
    if dave is not None:
        if dave.call is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dave.call.bye(timeout=2), 3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(dave.close(), 5)
    for phone in stage.phones.values():
        with contextlib.suppress(Exception):
            await _blocking(phone.stop)
    for call in calls.values():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call.media.close(bye=False), 5)
    for participant in stage.agents.values():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(participant.ua.close(), 5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(stage.watcher.close(), 5)
    stage.store.client.close()
