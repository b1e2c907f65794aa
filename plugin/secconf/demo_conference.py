"""``make demo`` stage 3: a secure conference end to end, and a rekey when someone leaves.

Starts, for real and on free loopback ports: redis-server, the media edge
(``secconf edge serve``), Asterisk 22 ConfBridge (chrooted in the cached Debian
sid tree, config rendered by :mod:`secconf.asterisk.config`), Kamailio 5.6 with
the secconf module (SDES mode, P-Asserted-Identity trusted from 127.0.0.1, SIP over
TLS towards the phones with a throwaway CA made here, UDP towards
upstream Asterisk), and the roster watcher following Asterisk's AMI.  Alice
creates a conference, Bob and Carol join; Alice's tone reaches both through
Asterisk's mix under the group key.  Carol leaves: the watcher rekeys, Asterisk
re-INVITEs Alice and Bob through Kamailio, the edge switches their legs; Alice's
tone still reaches Bob under the new epoch and Carol's old key opens nothing sent
after the switch.  Everything printed is measured in this run; keys appear only
as fingerprints.  Needs root (the chroot); says so and fails otherwise.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .asterisk.ami import AmiSettings
from .asterisk.watcher import RekeyReport, Watcher, WatcherSettings
from .client.media import KeyMaterial, SrtpEndpoint, inbound_session, opens
from .client.sip import Answer, Call, IncomingRequest, UserAgent
from .core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from .core.keys import key_fingerprint
from .core.roster import RekeyPolicy
from .core.sdes import CryptoAttribute
from .core.sdp import SessionDescription
from .kamailio.settings import load_settings
from .services import (
    AsteriskProcess,
    EdgeProcess,
    KamailioProcess,
    RedisProcess,
    ServiceError,
    asterisk_tree_cached,
    restore_asterisk_tree,
)
from .store import generate_key_file
from .store.conferences import ConferenceStore, connect_blocking
from .store.keywrap import KeyWrapper, load_key_file
from .tlsca import TlsFiles, fingerprint, init_ca, participant_contexts

SUITE = "AES_CM_128_HMAC_SHA1_80"
ALICE, BOB, CAROL = "sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"
TONE = 440.0
PREFIX = "scdemo"
# A member "hears" the tone when at least half of the audio's energy is at TONE and
# 20 times more than at CONTROL_TONE, which nobody sends.  Under load Asterisk's mix
# fills late frames with silence: that lowers the tone's share, not its identity.
HEARD = 0.5
CONTROL_TONE = 1000.0
SCENARIO_TIMEOUT = 90.0

SETTINGS = f"""
[focus]
domain = "conf.demo.invalid"
server_name = "focus.demo"

[identity]
trusted_sources = ["127.0.0.1"]

[policy]
creators = ["{ALICE}"]
allowed = ["{BOB}", "{CAROL}"]

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "{PREFIX}"
kek_file = "@KEK@"
kek_id = "demo-kek"

[edge]
timeout = 1.0
"""


@dataclass
class Phone:
    """An SDES phone: its own sending key in the offer, the group key from the answer.

    Like linphone it switches its receive key when it answers a re-INVITE, and it
    sends receiver reports (~0.3 s) so the edge can verify the switch.
    """

    name: str
    identity: str
    ua: UserAgent
    media: SrtpEndpoint
    own: KeyMaterial = field(repr=False)
    call: Call | None = None
    group: KeyMaterial | None = field(default=None, repr=False)
    reinvites: int = 0  # re-INVITEs answered in the call
    reinvite_transports: list[str] = field(default_factory=list)  # top Via of each re-INVITE

    @classmethod
    async def start(cls, name: str, identity: str, tls: TlsFiles) -> Phone:
        """A phone speaking SIP over TLS, trusting only the demo's throwaway CA."""
        server, client = participant_contexts(tls, "phones")
        ua = await UserAgent.start(
            "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
            identity=identity,
        )  # fmt: skip
        media = await SrtpEndpoint.open("127.0.0.1", rtcp_interval=0.3)
        material = secrets.token_bytes(30)
        phone = cls(name, identity, ua, media, (SUITE, material[:16], material[16:]))
        ua.on_invite = phone._on_invite
        return phone

    async def _on_invite(self, incoming: IncomingRequest) -> Answer:
        if incoming.call is None:
            return Answer(480)
        self.reinvites += 1
        self.reinvite_transports.append(incoming.request.top_via.transport)
        section = SessionDescription.parse(incoming.body).media[0]
        crypto = CryptoAttribute.parse(section.attributes("crypto")[0] or "")
        param = crypto.key_params[0]
        offered = (SUITE, param.key, param.salt)
        if offered != self.group:
            self.media.rekey(rx=offered, grace=0.0)
            self.group = offered
        return Answer(200, self.offer(tag=crypto.tag), "application/sdp")

    def offer(self, tag: int = 1) -> bytes:
        _, key, salt = self.own
        inline = base64.b64encode(key + salt).decode()
        lines = [
            "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
            f"m=audio {self.media.local_address[1]} RTP/SAVP 0", "a=rtpmap:0 PCMU/8000",
            "a=rtcp-mux", f"a=crypto:{tag} {SUITE} inline:{inline}",
            f"a=ssrc:{self.media.ssrc} cname:demo", "a=sendrecv",
        ]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n").encode()

    async def invite(self, target: str) -> Call:
        call = await self.ua.invite(
            target, self.offer(), extra_headers=[("P-Asserted-Identity", f"<{self.identity}>")],
            timeout=5,
        )  # fmt: skip
        self.call = call
        answer = SessionDescription.parse(call.remote_sdp)
        section = answer.media[0]
        connection = section.connection or answer.session.connection
        if connection is None:
            raise RuntimeError("the focus's answer has no connection address")
        crypto = CryptoAttribute.parse(section.attributes("crypto")[0] or "")
        param = crypto.key_params[0]
        self.group = (SUITE, param.key, param.salt)
        self.media.set_remote((connection.address, section.port))
        self.media.set_keys(tx=self.own, rx=self.group)
        return call

    @property
    def group_print(self) -> str:
        return "-" if self.group is None else key_fingerprint(self.group[1], self.group[2])

    def heard(self) -> float:
        """Tone ratio of what arrived since the last call, silence around the tone cut off.

        0.0 when less than half a second of audio came or its energy at TONE is not
        clearly above that at CONTROL_TONE.
        """
        samples: list[int] = []
        for packet in self.media.drain():
            samples.extend(ulaw_decode(packet.packet.payload))
        loud = [index for index, sample in enumerate(samples) if abs(sample) > 1000]
        if not loud:
            return 0.0
        audio = samples[loud[0] : loud[-1] + 1]
        at_tone = tone_ratio(audio, TONE)
        if len(audio) < 4000 or at_tone <= 20 * tone_ratio(audio, CONTROL_TONE):
            return 0.0
        return at_tone

    async def close(self) -> None:
        await self.media.close(bye=False)
        await self.ua.close()


async def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class _Checks:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.failed: list[str] = []

    def __call__(self, ok: bool, text: str) -> bool:
        mark = "[green]ok[/green]" if ok else "[red]FAILED[/red]"
        self.console.print(f"  {mark} {text}")
        if not ok:
            self.failed.append(text)
        return ok


@dataclass
class _Stack:
    redis: RedisProcess
    edge: EdgeProcess
    asterisk: AsteriskProcess
    kamailio: KamailioProcess
    tls: TlsFiles

    def target(self, user: str) -> str:
        """Participants reach Kamailio over TLS only (SDES keys are in the SDP)."""
        return f"sip:{user}@127.0.0.1:{self.kamailio.tls_port};transport=tls"


async def _scenario(console: Console, stack: _Stack) -> bool:
    check = _Checks(console)
    focus = load_settings(stack.kamailio.settings_path, env=stack.kamailio.env)
    watcher = Watcher(
        WatcherSettings(
            ami=AmiSettings(
                port=stack.asterisk.ami_port,
                username=stack.asterisk.ami_user,
                secret=stack.asterisk.ami_secret,
            ),
            focus=focus,
            # Joins do not rekey here: the story is about the leave (Carol holds epoch 1).
            policy=RekeyPolicy(debounce=0.5, rekey_on_join=False),
            watcher_id="demo-watcher",
            refresh_timeout=5.0,
            verify_timeout=8.0,
            poll_interval=0.02,
        )
    )
    store = ConferenceStore(
        connect_blocking(stack.redis.url, timeout=1.0),
        KeyWrapper(load_key_file(focus.kek_file), focus.kek_id),
        PREFIX,
    )
    phones: list[Phone] = []
    talking: asyncio.Task[int] | None = None
    try:
        await watcher.start()
        console.print(f"roster watcher on Asterisk's AMI (port {stack.asterisk.ami_port})")
        a, b, c = (
            await Phone.start("Alice", ALICE, stack.tls),
            await Phone.start("Bob", BOB, stack.tls),
            await Phone.start("Carol", CAROL, stack.tls),
        )
        phones += [a, b, c]

        call_a = await a.invite(stack.target("conf-factory"))
        header = call_a.response.get("X-Secconf-Conference") if call_a.response else None
        if not check(header is not None, "Alice created a conference (X-Secconf-Conference)"):
            return False
        conference = header.split("conf-", 1)[1].split("@", 1)[0]  # type: ignore[union-attr]
        console.print(f"Alice created conference {conference}; group key epoch 1 {a.group_print}")
        calls = {"Alice": call_a}
        for phone in (b, c):
            calls[phone.name] = await phone.invite(stack.target(f"conf-{conference}"))
            console.print(f"{phone.name} joined; group key {phone.group_print}")
        check(
            await _wait_for(lambda: len(watcher.tracker.members(conference)) == 3, 5.0),
            "the watcher saw three ConfbridgeJoin events",
        )
        channels = {m.caller_id: m.channel for m in watcher.tracker.members(conference)}
        check(a.group == b.group == c.group, "one group key in every answer (epoch 1)")
        old_key = c.group
        legs_before = {}
        for phone in phones:
            dialog = store.dialog(conference, calls[phone.name].call_id)
            legs_before[phone.name] = dialog.leg if dialog else "-"
            check(
                dialog is not None and dialog.epoch == 1,
                f"{phone.name}'s dialog in Redis: leg {legs_before[phone.name]}, epoch "
                f"{dialog.epoch if dialog else '-'}",
            )

        # Alice talks; Bob and Carol hear her through the ConfBridge mix, under the group key.
        await asyncio.sleep(0.3)
        for phone in phones:
            phone.media.drain()
        await a.media.send_audio(ToneGenerator(TONE).frames(60), a.media.ssrc)
        await asyncio.sleep(0.3)
        before = {"Bob": b.heard(), "Carol": c.heard()}
        for name, value in before.items():
            check(value > HEARD, f"{name} heard Alice's {TONE:.0f} Hz tone: ratio {value:.3f}")

        # Capture everything the edge sends to Bob from now on.
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

        # Carol leaves; the watcher rekeys once (debounce 0.5 s), Asterisk re-INVITEs.
        waiter = asyncio.ensure_future(watcher.next_report(30))
        bye_at = time.monotonic()
        if c.call is None:
            raise ServiceError("Carol has no call to hang up")
        await c.call.bye(timeout=5)
        console.print("Carol hung up (BYE through Kamailio to Asterisk)")
        report: RekeyReport = await asyncio.wait_for(waiter, 30)
        switched = report.all_switched
        console.print(
            f"rekey to epoch {report.epoch} ({', '.join(report.reasons)}): BYE -> rekey start "
            f"{(report.started - bye_at) * 1000:.0f} ms (debounce 500 ms), mint "
            f"{(report.minted - report.started) * 1000:.0f} ms, re-INVITEs answered "
            + (f"{(switched - report.minted) * 1000:.0f} ms" if switched else "never")
            + f", verified {(report.settled - bye_at) * 1000:.0f} ms after the BYE"
        )
        if switched is not None:
            console.print(
                f"[bold]Carol's BYE -> all remaining legs on epoch {report.epoch}: "
                f"{(switched - bye_at) * 1000:.0f} ms[/bold]"
            )
        check(report.epoch == 2 and report.reasons == ("leave",), "one rekey, for the leave")
        check(switched is not None, "every remaining leg switched")
        check(
            all(p.reinvite_transports and set(p.reinvite_transports) == {"TLS"} for p in (a, b)),
            "Asterisk's re-INVITEs (UDP to Kamailio) reached Alice and Bob over TLS",
        )
        check(
            set(report.verdicts) == {channels.get("alice"), channels.get("bob")}
            and set(report.verdicts.values()) == {"followed"},
            f"edge verdicts: {', '.join(sorted(report.verdicts.values())) or 'none'}",
        )
        new_key = store.group_key(conference)
        check(
            new_key.epoch == 2 and a.group == b.group == (SUITE, new_key.key, new_key.salt),
            f"Alice and Bob hold the new group key epoch {new_key.epoch} "
            f"{key_fingerprint(new_key.key, new_key.salt)} (Carol kept {c.group_print})",
        )
        check(a.group != old_key, "the new key differs from Carol's")

        # After the switch: Alice's tone still reaches Bob, under the new key only.
        b_switched = report.switched_at.get(channels.get("bob", ""), time.monotonic())
        lost_at_switch = b.media.totals.auth_failures
        check(lost_at_switch <= 5, f"packets Bob lost at his switch: {lost_at_switch}")
        b.media.drain()
        await asyncio.sleep(1.0)
        after = [packet for at, packet in captured if at > b_switched + 0.05]
        after_ratio = b.heard()
        check(after_ratio > HEARD, f"Bob hears Alice under epoch 2: tone ratio {after_ratio:.3f}")
        check(
            b.media.totals.auth_failures == lost_at_switch,
            "no authentication failure at Bob after his switch",
        )
        new_session = inbound_session(b.group) if b.group else None
        opened_new = sum(opens(new_session, p) for p in after) if new_session else 0
        opened_old = sum(opens(inbound_session(old_key), p) for p in after) if old_key else -1
        check(
            len(after) > 30 and opened_new == len(after),
            f"the new key opens {opened_new}/{len(after)} packets sent to Bob after the switch",
        )
        check(opened_old == 0, f"Carol's old key opens {opened_old}/{len(after)} of them")
        check(store.rekey_failures(conference) == [], "no rekey failure recorded")

        edge_state = stack.edge.get(f"/v1/conferences/{conference}")
        edge_legs = {leg["leg"]: leg for leg in edge_state["legs"]}  # type: ignore[index]
        table = Table(title=f"conference {conference} after Carol left (measured in this run)")
        table.add_column("member")
        table.add_column("leg", no_wrap=True, min_width=16)
        table.add_column("epoch", no_wrap=True)
        table.add_column("packets\nreceived", no_wrap=True)
        table.add_column("auth\nfailures", no_wrap=True)
        table.add_column("tone ratio\nbefore/after", no_wrap=True)
        ratios = {
            "Alice": "sender",
            "Bob": f"{before['Bob']:.3f}/{after_ratio:.3f}",
            "Carol": f"{before['Carol']:.3f}/left",
        }
        for phone in phones:
            dialog = store.dialog(conference, calls[phone.name].call_id)
            leg = legs_before[phone.name]
            short = leg.removeprefix(f"{conference}-")
            if phone is c:
                epoch = "left at 1"
            else:
                on_edge = edge_legs.get(leg, {}).get("epoch", "?")
                epoch = f"{dialog.epoch if dialog else '-'}, edge {on_edge}"
            table.add_row(
                phone.name, short, epoch, str(phone.media.totals.packets),
                str(phone.media.totals.auth_failures), ratios[phone.name],
            )  # fmt: skip
        console.print(table)
        return not check.failed
    finally:
        if talking is not None:
            talking.cancel()
        for phone in phones:
            if phone.call is not None and phone.name != "Carol":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.call.bye(timeout=2), 3)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(phone.close(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watcher.close(), 5)
        store.client.close()


def _start_tree(console: Console, tree: Path) -> None:
    cached = asterisk_tree_cached()
    console.print(
        "restoring the cached Asterisk 22 tree (Debian sid)..."
        if cached
        else "building the Asterisk 22 tree (Debian sid, first run only, ~35 s)..."
    )
    shown = [0.0]

    def progress(elapsed: float) -> None:
        if elapsed - shown[0] >= 5.0:
            shown[0] = elapsed
            console.print(f"  ... still {'restoring' if cached else 'building'}: {elapsed:.0f} s")

    seconds = restore_asterisk_tree(tree, progress=progress)
    console.print(f"Asterisk tree ready in {seconds:.1f} s")


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    with open("/proc/self/mounts") as table:
        points = [line.split()[1].replace("\\040", " ") for line in table]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def run_conference_stage(console: Console) -> bool:
    """Run stage 3; True when every check held.  Every process started is stopped."""
    console.rule("[bold]stage 3: a conference through Kamailio, the edge and Asterisk ConfBridge")
    if os.geteuid() != 0:
        console.print(
            "[red]stage 3 needs root: Asterisk runs chrooted in the cached Debian tree "
            "(docker/asterisk-tree.sh). Not run.[/red]"
        )
        return False
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="secconf-demo-"))
    launched: list[RedisProcess | EdgeProcess | AsteriskProcess | KamailioProcess] = []
    try:
        try:
            with contextlib.ExitStack() as services:
                redis = services.enter_context(RedisProcess(workdir))
                launched.append(redis)
                console.print(f"redis-server on {redis.url}")
                (workdir / "edge").mkdir()
                edge = services.enter_context(EdgeProcess(workdir / "edge"))
                launched.append(edge)
                console.print(f"media edge (secconf edge serve), control API {edge.url}")
                _start_tree(console, workdir / "tree")
                asterisk = services.enter_context(AsteriskProcess(workdir / "tree"))
                launched.append(asterisk)
                console.print(
                    f"Asterisk ConfBridge: SIP udp 127.0.0.1:{asterisk.sip_port}, AMI "
                    f"{asterisk.ami_port}, RTP {asterisk.rtp_range[0]}-{asterisk.rtp_range[1]}"
                )
                kek = workdir / "kek"
                generate_key_file(kek)
                tls = init_ca(workdir / "tls", ["127.0.0.1", "localhost"], clients=["phones"])
                console.print(
                    "throwaway CA for SIP over TLS (secconf tls init), SHA-256 "
                    f"{fingerprint(tls.ca_cert.read_bytes())[:23]}..."
                )
                (workdir / "kamailio").mkdir()
                kamailio = services.enter_context(
                    KamailioProcess(
                        workdir / "kamailio",
                        SETTINGS.replace("@KEK@", str(kek)),
                        env={
                            "SECCONF_REDIS_URL": redis.url,
                            "SECCONF_UPSTREAM": f"sip:127.0.0.1:{asterisk.sip_port}",
                            "SECCONF_EDGE_URL": edge.url,
                            "SECCONF_EDGE_TOKEN_FILE": str(edge.token_file),
                        },
                        tls_dir=tls.directory,
                    )
                )
                launched.append(kamailio)
                console.print(
                    f"Kamailio + secconf module (SDES, trusted P-Asserted-Identity): "
                    f"SIP TLS 127.0.0.1:{kamailio.tls_port} for participants, "
                    f"udp 127.0.0.1:{kamailio.port} towards Asterisk"
                )
                stack = _Stack(redis, edge, asterisk, kamailio, tls)
                ok = asyncio.run(asyncio.wait_for(_scenario(console, stack), SCENARIO_TIMEOUT))
        except ServiceError as exc:
            console.print(f"[red]stage 3: a service did not start: {exc}[/red]")
            return False
        except TimeoutError:
            console.print(f"[red]stage 3: the scenario took over {SCENARIO_TIMEOUT:.0f} s[/red]")
            return False
    finally:
        # Never delete through a mount (/proc is mounted only in Asterisk's own namespace).
        mounted = _mounts_under(workdir)
        if mounted:
            console.print(f"[red]still mounted, not deleting {workdir}: {mounted}[/red]")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    left = [service for service in launched if service.running]
    console.print(
        f"stage 3 ran in {time.monotonic() - started:.1f} s; services still running after "
        f"teardown: {len(left)}; mounts left under the work directory: {len(mounted)}"
    )
    return ok and not left and not mounted
