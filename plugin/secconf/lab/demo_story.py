"""``make demo``: one secure conference from start to end, for real, told as it happens.

Starts on loopback, on free ports: redis-server, the KMS (``secconf kms serve``),
the media edge (``secconf edge serve``), Asterisk 22 ConfBridge (chrooted in the
cached Debian sid tree), Kamailio 5.6 with the secconf module (SIP over TLS towards
participants with a CA made for this run, UDP towards Asterisk) and the roster
watcher.  Then:

1. alice (KMS mode, secconf agent) gets a ticket naming the focus and bob, carol,
   dave and erin, and creates a secure conference;
2. bob (KMS mode) joins with his own ticket; carol joins with **linphonec** and erin
   with **baresip**, both SDES and authenticated by SIP digest;
3. mallory, a KMS user not in the allowed set, is refused (403), and bob's
   TRANSFER_INIT replayed is refused (403), with nothing written;
4. alice REFERs dave (allowed); the focus dials him out through Asterisk and
   Kamailio (dave: secconf's own SDES phone, registered with the focus);
5. bob leaves: one rekey; alice (a TRANSFER_INIT from the focus, epoch from the
   KMS), carol (linphone) and dave follow in their running calls; erin's baresip,
   which cannot, is detected by the edge and called back on the new epoch; bob's
   key opens nothing sent after his departure, and the KMS will not resolve the
   new epoch's ticket for him;
6. a summary table, a timeline picture (SVG), and an exit code that is non-zero if
   any step did not behave as stated.  Every service is stopped at the end, and on
   Ctrl-C.

Everything printed is measured in this run; keys appear only as fingerprints.
Needs root (Asterisk's chroot).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..asterisk.ami import AmiSettings
from ..asterisk.watcher import RekeyReport, Watcher, WatcherSettings
from ..client.agent import AgentCall, ParticipantAgent
from ..client.kms import KmsClient, KmsRefused
from ..client.media import opened
from ..client.phone import SUITE, SdesPhone
from ..client.sip import SipRequestFailed, UserAgent
from ..core.g711 import ToneGenerator, tone_share, ulaw_decode
from ..core.keys import key_fingerprint
from ..core.mikey import ticket as mikey_ticket
from ..core.roster import FailurePolicy, RekeyPolicy
from ..focus.settings import load_settings
from ..store import generate_key_file
from ..store.conferences import ConferenceStore, connect_blocking
from ..store.keywrap import KeyWrapper, load_key_file
from ..store.sip_users import SipUserStore
from ..store.watcher import RosterStore
from .phones.audio import write_tone_wav
from .phones.baresip import BaresipPhone
from .phones.linphone import LinphonePhone
from .phones.phone import Phone
from .services.asterisk import AsteriskProcess, asterisk_tree_cached, restore_asterisk_tree
from .services.edge import EdgeProcess
from .services.kamailio import KamailioProcess
from .services.kms import KmsProcess
from .services.process import ServiceError
from .services.redis_server import RedisProcess
from .timeline import Timeline
from .tlsca import TlsFiles, init_ca, participant_contexts

__all__ = ["run_story"]

DOMAIN = "example.com"
ALICE, BOB, CAROL, DAVE, ERIN, MALLORY = (
    f"sip:{name}@{DOMAIN}" for name in ("alice", "bob", "carol", "dave", "erin", "mallory")
)
FOCUS = "sip:focus@conf.demo.invalid"
KMS_ID = "sip:kms.demo.invalid"
PREFIX = "scdemo"
TONE = 440.0
CONTROL_TONE = 1000.0  # nobody sends it: a tone "heard" must stand out against it
HEARD = 0.5  # at least half of the audio's energy at TONE
STORY_TIMEOUT = 240.0
T = TypeVar("T")

SETTINGS = """
[focus]
domain = "conf.demo.invalid"
server_name = "focus.demo"

[identity]
trusted_sources = []                 # nobody is believed on their word: tickets or digest

[policy]
creators = ["{alice}"]
allowed = ["{bob}", "{carol}", "{dave}", "{erin}"]
mixed_modes = true                   # SDES phones may join alice's KMS-mode conference

[upstream]
uri = "sip:127.0.0.1:9"              # SECCONF_UPSTREAM: Asterisk
# token_secret_file: SECCONF_MIXER_TOKEN_FILE (the secret shared with Asterisk)

[redis]
url = "redis://127.0.0.1:1/0"        # SECCONF_REDIS_URL
timeout = 0.5
prefix = "{prefix}"
kek_file = "{kek}"
kek_id = "demo-kek"

[edge]
timeout = 1.0

[kms]
url = "{kms_url}"
kms_identity = "{kms_identity}"
focus_identity = "{focus}"
psk_file = "{focus_psk}"
timeout = 1.0

[digest]
realm = "{domain}"
# MD5 only: baresip 1.0.0 gives up on any challenge that also offers SHA-256
# (docs/interop.md); over TLS the digest exchange itself is not exposed.
algorithms = ["MD5"]
"""


class StoryFailed(Exception):
    """A step could not go on (the checks so far are reported)."""


@dataclass
class Services:
    """Everything started for the story, on loopback."""

    workdir: Path
    tls: TlsFiles
    redis: RedisProcess
    kms: KmsProcess
    edge: EdgeProcess
    asterisk: AsteriskProcess
    kamailio: KamailioProcess
    psks: dict[str, Path]
    passwords: dict[str, str] = field(repr=False)

    def target(self, user: str) -> str:
        """A SIP URI at Kamailio's TLS listener."""
        return f"sip:{user}@127.0.0.1:{self.kamailio.tls_port};transport=tls"

    @property
    def registrar(self) -> str:
        return f"sip:127.0.0.1:{self.kamailio.tls_port};transport=tls"

    def store(self) -> ConferenceStore:
        settings = load_settings(self.kamailio.settings_path, env=self.kamailio.env)
        return ConferenceStore(
            connect_blocking(self.redis.url, timeout=1.0),
            KeyWrapper(load_key_file(settings.kek_file), settings.kek_id),
            PREFIX,
        )

    def running(self) -> list[str]:
        names = {
            "redis": self.redis.running,
            "kms": self.kms.process is not None and self.kms.process.poll() is None,
            "edge": self.edge.running,
            "asterisk": self.asterisk.running,
            "kamailio": self.kamailio.running,
        }
        return [name for name, alive in names.items() if alive]


class Story:
    """The narrator: prints steps and checks, keeps the timeline and the verdict."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.t0 = time.monotonic()
        self.timeline = Timeline(title)
        self.failed: list[str] = []
        self.passed = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def at(self, monotonic: float) -> float:
        return monotonic - self.t0

    def step(self, text: str) -> None:
        self.console.print(f"\n[bold cyan]{self.now():6.2f} s[/bold cyan]  [bold]{text}[/bold]")

    def say(self, text: str) -> None:
        self.console.print(f"           {text}")

    def check(self, ok: bool, text: str) -> bool:
        mark = "[green]ok[/green]    " if ok else "[red]FAILED[/red]"
        self.console.print(f"         {mark} {text}")
        if ok:
            self.passed += 1
        else:
            self.failed.append(text)
        return ok


# -- helpers --------------------------------------------------------------------------------


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
    for channel, entry in RosterStore(store.client, PREFIX).members(conference).items():
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


# -- the services -----------------------------------------------------------------------------


@contextlib.contextmanager
def _services(console: Console, workdir: Path) -> Iterator[Services]:
    """Start everything (with a progress display); stop everything on the way out."""
    passwords = {name: secrets.token_urlsafe(12) for name in ("carol", "dave", "erin")}
    with contextlib.ExitStack() as stack:
        progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, transient=False,
        )  # fmt: skip
        progress.start()

        def started(description: str) -> TaskID:
            return progress.add_task(description, total=1)

        def done(task: TaskID, description: str) -> None:
            progress.update(task, completed=1, description=f"[green]✓[/green] {description}")

        task = started("throwaway CA for SIP over TLS")
        tls = init_ca(
            workdir / "tls", ["127.0.0.1", "localhost", "conf.demo.invalid"],
            clients=["alice", "bob", "carol", "dave", "mallory"],
        )  # fmt: skip
        done(task, f"throwaway CA and certificates in {tls.directory}")

        task = started("redis-server")
        redis = stack.enter_context(RedisProcess(workdir / "redis"))
        done(task, f"redis-server on {redis.url}")

        task = started("KMS (secconf kms serve) and its users")
        kms = stack.enter_context(KmsProcess(workdir / "kms", redis.url, identity=KMS_ID))
        psks = {who: kms.add_user(who) for who in (FOCUS, ALICE, BOB, MALLORY)}
        done(task, f"KMS {KMS_ID} on {kms.url}; users: focus, alice, bob, mallory")

        task = started("media edge (secconf edge serve)")
        edge = stack.enter_context(EdgeProcess(workdir / "edge"))
        done(task, f"media edge, control API {edge.url}")

        cached = asterisk_tree_cached()
        task = started(
            "Asterisk 22 tree: "
            + ("restoring the cached Debian sid tree" if cached else "building it (first run)")
        )
        seconds = restore_asterisk_tree(workdir / "tree")
        done(task, f"Asterisk 22 tree ready in {seconds:.1f} s")

        task = started("Asterisk ConfBridge")
        asterisk = stack.enter_context(AsteriskProcess(workdir / "tree"))
        done(
            task,
            f"Asterisk ConfBridge: SIP udp 127.0.0.1:{asterisk.sip_port}, AMI {asterisk.ami_port}",
        )

        task = started("Kamailio + secconf module")
        kek = workdir / "kek"
        generate_key_file(kek)
        settings = SETTINGS.format(
            alice=ALICE, bob=BOB, carol=CAROL, dave=DAVE, erin=ERIN, prefix=PREFIX, kek=kek,
            kms_url=kms.url, kms_identity=KMS_ID, focus=FOCUS, focus_psk=psks[FOCUS],
            domain=DOMAIN,
        )  # fmt: skip
        kamailio = KamailioProcess(
            workdir / "kamailio",
            settings,
            env={
                "SECCONF_REDIS_URL": redis.url,
                "SECCONF_UPSTREAM": f"sip:127.0.0.1:{asterisk.sip_port}",
                **edge.focus_env,
                **asterisk.focus_env,  # the join tokens' shared secret
            },
            tls_dir=tls.directory,
            children=4,
        )
        # Asterisk's kamailio-out endpoint (dial-out) was rendered with this port.
        kamailio.port = asterisk.kamailio_port
        stack.enter_context(kamailio)
        client = connect_blocking(redis.url, timeout=1.0)
        users = SipUserStore(client, KeyWrapper(load_key_file(kek), "demo-kek"), PREFIX)
        for name, password in passwords.items():
            users.add(f"sip:{name}@{DOMAIN}", name, DOMAIN, password)
        client.close()
        done(
            task,
            f"Kamailio + secconf: SIP/TLS 127.0.0.1:{kamailio.tls_port} (participants), "
            f"udp {kamailio.port} (Asterisk); digest users carol, dave, erin",
        )
        progress.stop()
        services = Services(workdir, tls, redis, kms, edge, asterisk, kamailio, psks, passwords)
        yield services


async def _tls_ua(services: Services, identity: str, name: str) -> UserAgent:
    server, client = participant_contexts(services.tls, name)
    return await UserAgent.start(
        "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
        identity=identity,
    )  # fmt: skip


async def _agent(services: Services, identity: str, name: str) -> ParticipantAgent:
    ua = await _tls_ua(services, identity, name)
    client = KmsClient(
        services.kms.url, KMS_ID, identity, load_key_file(services.psks[identity], "PSK")
    )
    return ParticipantAgent(identity, client, ua, rtcp_interval=0.3)


# -- the story ----------------------------------------------------------------------------------


async def _story(story: Story, services: Services) -> None:
    console = story.console
    focus_settings = load_settings(services.kamailio.settings_path, env=services.kamailio.env)
    watcher = Watcher(
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
    store = services.store()
    agents: list[ParticipantAgent] = []
    calls: dict[str, AgentCall] = {}
    phones: dict[str, Phone] = {}
    dave: SdesPhone | None = None
    talking: asyncio.Task[int] | None = None
    timeline = story.timeline
    try:
        await watcher.start()
        story.say(f"roster watcher on Asterisk's AMI (port {services.asterisk.ami_port})")

        # 1. alice creates the conference with a ticket naming the allowed participants.
        story.step("alice (KMS mode) asks the KMS for a ticket and creates a secure conference")
        alice = await _agent(services, ALICE, "alice")
        agents.append(alice)
        call_a = await alice.join_conference(
            services.target("conf-factory"), FOCUS, allowed=(BOB, CAROL, DAVE, ERIN), timeout=10
        )
        calls["alice"] = call_a
        conference = _conference_of(call_a)
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
        talking = asyncio.ensure_future(
            call_a.media.send_audio(ToneGenerator(TONE).frames(6000), call_a.tx_ssrc)
        )
        story.say(f"alice talks: a {TONE:.0f} Hz tone, from now on")

        # 2. bob (KMS), carol (linphonec, SDES, digest) and erin (baresip, SDES, digest).
        story.step("bob joins with his own ticket (KMS mode)")
        bob = await _agent(services, BOB, "bob")
        agents.append(bob)
        call_b = await bob.join_conference(services.target(f"conf-{conference}"), FOCUS, timeout=10)
        calls["bob"] = call_b
        timeline.joined("bob", story.now(), "kms")
        story.check(
            call_b.group_key == call_a.group_key and call_b.group_epoch == 1,
            "bob got the same group key (epoch 1)",
        )

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
        phones["carol"] = carol
        await _blocking(carol.start)
        carol.dial(f"sip:conf-{conference}@localhost:{services.kamailio.tls_port};transport=tls")
        await _blocking(carol.wait_connected, 15.0)
        timeline.joined("carol", story.now(), "sdes")
        story.check(True, "carol (linphonec 5.1.65) answered the 407 with digest and is in")
        erin = BaresipPhone(
            services.workdir / "erin", "erin", password=services.passwords["erin"],
            realm=DOMAIN, transport="tls", ca_file=services.tls.ca_cert,
            registrar=services.registrar,
        )  # fmt: skip
        phones["erin"] = erin
        await _blocking(erin.start)
        await _blocking(erin.wait_registered, 10.0)
        erin_since = erin.position()
        erin.dial(services.target(f"conf-{conference}"))
        await _blocking(erin.wait_connected, 15.0)
        timeline.joined("erin", story.now(), "sdes")
        story.check(True, "erin (baresip 1.0.0) registered with the focus and is in")
        story.check(
            await _wait_for(lambda: len(watcher.tracker.members(conference)) == 4, 10),
            "the watcher saw four ConfbridgeJoin events",
        )

        # 3. mallory and a replay.
        story.step("mallory (a KMS user, not invited) tries to join; then replays bob's offer")
        members_before = store.members(conference)
        mallory = await _agent(services, MALLORY, "mallory")
        agents.append(mallory)
        refused_status = 0
        try:
            await mallory.join_conference(services.target(f"conf-{conference}"), FOCUS, timeout=10)
        except SipRequestFailed as exc:
            refused_status = exc.status_code
            story.say(f"focus: {exc.status_code} {exc.reason} ({exc.message})")
        timeline.mark(story.now(), "refused", "mallory: not in the allowed set (403)")
        story.check(refused_status == 403, "mallory's INVITE refused with 403")
        replayed_status = 0
        try:
            await mallory.ua.invite(
                services.target(f"conf-{conference}"), call_b.call.invite.body, timeout=10
            )
        except SipRequestFailed as exc:
            replayed_status = exc.status_code
            story.say(f"focus: {exc.status_code} {exc.reason} ({exc.message})")
        timeline.mark(story.now(), "refused", "bob's TRANSFER_INIT replayed (403)")
        story.check(replayed_status == 403, "bob's TRANSFER_INIT replayed: refused with 403")
        story.check(
            store.members(conference) == members_before, "the conference's members are unchanged"
        )

        # 4. alice REFERs dave; the focus dials him out.
        story.step("dave registers; alice REFERs him into the conference; the focus dials out")
        dave = await SdesPhone.start(DAVE, await _tls_ua(services, DAVE, "dave"))
        dave.accept_calls = True
        registered = await dave.ua.register(
            services.registrar, credentials=("dave", services.passwords["dave"]), timeout=5
        )
        story.check(registered.status == 200, f"dave registered (digest): {registered.status}")
        body, pending = await alice.refer_body(FOCUS)
        referred = await call_a.call.refer(
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
        timeline.joined("dave", story.now(), "dial-out")
        story.check(
            await _wait_for(lambda: len(watcher.tracker.members(conference)) == 5, 10),
            "dave answered the focus's call and is in the bridge (five members)",
        )

        # Everybody hears alice.
        story.step("everybody hears alice through the ConfBridge mix, under the group key")
        await asyncio.sleep(1.0)
        marks = {name: phone.mark() for name, phone in phones.items()}
        call_b.media.drain()
        dave.media.drain()
        await asyncio.sleep(1.5)
        heard_before = {
            "bob": _agent_heard(call_b),
            "dave": dave.heard(TONE, CONTROL_TONE),
            **{name: _phone_heard(phone, marks[name]) for name, phone in phones.items()},
        }
        for name, share in heard_before.items():
            story.check(share > HEARD, f"{name} hears the {TONE:.0f} Hz tone: share {share:.2f}")

        # 5. bob leaves: one rekey.
        story.step("bob leaves; the conference is rekeyed")
        channels = {name: channel for name, (channel, _) in _members(store, conference).items()}
        old_key = call_b.group_key
        captured: list[tuple[float, bytes]] = []
        deliver = call_a.media._on_datagram

        def capture(data: bytes, addr: tuple[str, int]) -> None:
            captured.append((time.monotonic(), data))
            deliver(data, addr)

        call_a.media._on_datagram = capture  # type: ignore[method-assign]
        erin_since = erin.position()
        waiter = asyncio.ensure_future(watcher.next_report(60))
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
        new_key = store.group_key(conference)
        story.check(
            call_a.group_epoch == 2 and call_a.group_key is not None
            and call_a.group_key.key == new_key.key,
            f"alice holds epoch 2 {key_fingerprint(new_key.key, new_key.salt)} (from the KMS: "
            "a GTGK ticket naming the members still in)",
        )  # fmt: skip
        story.check(dave.group == (SUITE, new_key.key, new_key.salt), "dave holds the epoch 2 key")

        # After the rekey: who hears what.
        await asyncio.sleep(1.5)
        marks = {name: phone.mark() for name, phone in phones.items()}
        dave.media.drain()
        await asyncio.sleep(1.5)
        heard_after = {
            "dave": dave.heard(TONE, CONTROL_TONE),
            **{name: _phone_heard(phone, marks[name]) for name, phone in phones.items()},
        }
        for name, share in heard_after.items():
            story.check(share > HEARD, f"{name} hears alice on epoch 2: share {share:.2f}")

        # bob tries: his key on what was sent to alice after her switch, and the KMS.
        story.step("bob tries to listen in after his departure")
        a_switched = report.switched_at.get(channels.get("alice", ""), time.monotonic())
        after = [packet for at, packet in captured if at > a_switched + 0.05]
        # In arrival order, whatever the edge's rollover count so far (client.media.opened).
        opened_old = sum(opened((SUITE, old_key.key, old_key.salt), after)) if old_key else -1
        opened_new = sum(opened((SUITE, new_key.key, new_key.salt), after))
        story.check(
            len(after) > 30 and opened_new == len(after),
            f"the epoch 2 key opens {opened_new}/{len(after)} packets sent to alice after "
            "her switch",
        )
        story.check(opened_old == 0, f"bob's key opens {opened_old}/{len(after)} of them")
        refused_by_kms = False
        if call_a.rekey_transfers:
            transfer = mikey_ticket.TransferInit.read(call_a.rekey_transfers[-1])
            try:
                await bob.kms.resolve(transfer)
            except KmsRefused as exc:
                refused_by_kms = True
                story.say(f"KMS to bob: {exc}")
        story.check(
            refused_by_kms,
            "the KMS refuses bob the epoch 2 ticket (he is not among its recipients)",
        )

        # 6. The summary.
        state = services.edge.get(f"/v1/conferences/{conference}")
        legs = {leg["leg"]: leg for leg in state["legs"]}  # type: ignore[index]
        table = Table(title=f"conf-{conference}, measured in this run (all SIP over TLS)")
        for column in ("member", "joined as", "epoch", "rekey verdict", "packets to it",
                       "packets from it", "auth failures"):  # fmt: skip
            table.add_column(
                column, justify="left" if column in ("member", "joined as") else "right"
            )
        now_in = _members(store, conference)
        how = {
            "alice": "KMS ticket (agent)",
            "carol": "SDES, digest (linphonec)",
            "dave": "REFER, dial-out, SDES",
            "erin": "SDES, digest (baresip); replaced",
        }
        for name in ("alice", "carol", "dave", "erin"):
            leg = legs.get(now_in[name][1], {}) if name in now_in else {}
            counters = leg.get("counters", {})
            table.add_row(
                name, how[name], str(leg.get("epoch", "-")), verdicts.get(name, "-"),
                str(counters.get("rtp_out", "-")), str(counters.get("rtp_in", "-")),
                str(counters.get("auth_failures", "-")),
            )  # fmt: skip
        table.add_row("bob", "KMS ticket (agent); left", "left at 1", "-", "-", "-", "-")
        table.add_row("mallory", "KMS ticket (agent)", "refused 403 twice", "-", "-", "-", "-")
        console.print()
        console.print(table)
        if switched is not None:
            console.print(
                f"rekey latency: bob's BYE -> every remaining leg on epoch 2 in "
                f"{(switched - bye_at) * 1000:.0f} ms (500 ms of it the debounce window); "
                f"erin's replacement call was up {story.now() - story.at(report.settled):.1f} s "
                "before the end"
            )
    finally:
        if talking is not None:
            talking.cancel()
        for call in calls.values():
            if call is not calls.get("bob"):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.call.bye(timeout=2), 3)
        if dave is not None:
            if dave.call is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(dave.call.bye(timeout=2), 3)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dave.close(), 5)
        for phone in phones.values():
            with contextlib.suppress(Exception):
                await _blocking(phone.stop)
        for call in calls.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.media.close(bye=False), 5)
        for agent in agents:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent.ua.close(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watcher.close(), 5)
        store.client.close()


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    with open("/proc/self/mounts") as table:
        points = [line.split()[1].replace("\\040", " ") for line in table]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def run_story(console: Console, timeline_path: Path) -> int:
    """Run the whole story; 0 when every check held, 1 otherwise.  Every service stops."""
    console.rule("[bold]secconf: a secure conference, for real, on this machine")
    if os.geteuid() != 0:
        console.print(
            "[red]The demo needs root: Asterisk runs chrooted in the cached Debian tree "
            "(docker/asterisk-tree.sh).[/red]"
        )
        return 1
    story = Story(console, "secconf demo")
    workdir = Path(tempfile.mkdtemp(prefix="secconf-demo-"))
    left: list[str] = []
    mounted: list[str] = []
    try:
        with _services(console, workdir) as services:
            try:
                asyncio.run(asyncio.wait_for(_story(story, services), STORY_TIMEOUT))
            except StoryFailed as exc:
                story.check(False, str(exc))
            except (SipRequestFailed, ServiceError, OSError, RuntimeError) as exc:
                story.check(False, f"the story stopped: {type(exc).__name__}: {exc}")
            except TimeoutError:
                story.check(False, f"the story took over {STORY_TIMEOUT:.0f} s")
            end = story.now()
            running = services
        left = running.running()
    except ServiceError as exc:
        story.check(False, f"a service did not start: {exc}")
        end = story.now()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every service was stopped[/yellow]")
        story.failed.append("interrupted")
        end = story.now()
    finally:
        mounted = _mounts_under(workdir)
        if not mounted:
            shutil.rmtree(workdir, ignore_errors=True)
    story.check(not left, f"every service stopped ({', '.join(left) or 'none left running'})")
    story.check(not mounted, f"nothing left mounted ({len(mounted)})")
    timeline_path.write_text(story.timeline.svg(end=max(end, 1.0)))
    console.print(f"\ntimeline picture: {timeline_path.resolve()}")
    if story.failed:
        console.print(f"[bold red]{len(story.failed)} step(s) did not behave as stated:[/]")
        for text in story.failed:
            console.print(f"  [red]- {text}[/red]")
        return 1
    console.print(f"[bold green]all {story.passed} checks held[/bold green]")
    return 0
