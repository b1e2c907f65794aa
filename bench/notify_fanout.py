"""NOTIFY fan-out (issue 15 item 6): one roster change in a conference of N members, each subscribed.

Run as root (Asterisk runs chrooted in the cached Debian sid tree):
``.venv/bin/python bench/notify_fanout.py [--sizes 10 50] [--trials 5] [--subscribers S]``
(default: every member subscribes); ``--quick`` for a
smoke run (one size of 10, two trials each way).

Everything real, on loopback, as in ``rekey_bench.py``: redis-server, the media edge,
Asterisk 22 ConfBridge with the AMI watcher (joins do not rekey, a leave rekeys after the
0.5 s debounce), Kamailio 5.6 with the secconf module and its rtimer NOTIFY process (the
shipped cfg: a tick every 50 ms). **SDES mode over TLS**: every member is an
:class:`~secconf.client.phone.SdesPhone` on its own TLS user agent, joins with a trusted
P-Asserted-Identity (``tls:127.0.0.1``) and subscribes on the same connection with Digest
(:class:`~secconf.client.conference_events.ConferenceWatch`, which reads and checks every
NOTIFY: the RFC 4575 document parsed and applied). KMS mode (CMS bodies) is not measured.

Per trial one change, alternately a join (a fresh identity's phone joins, not subscribed)
and the leave of that phone (BYE). Times are taken in this process from the change's
final response at the changing phone (the join's 2xx, the BYE's 200):

- **view**: the subscriber's ``ConferenceWatch`` applies the NOTIFY that shows it (its
  ``on_view`` callback): the join listed (any endpoint of the new identity), the join
  ``connected`` (the bridge saw the leg: the watcher's AMI event), the leave
  (``disconnected``); first and last of the S subscribers;
- **200 OK**: the subscriber's answer to that NOTIFY handed to its transport (the answer
  is decided synchronously inside the NOTIFY handler, right after the view);
- **CPU per NOTIFY**: CPU seconds from just before the change to the last answer (+0.15 s
  for the last replies to pass Kamailio) of the rtimer process (gross, and net of its
  idle polling rate measured with the same subscriptions in place), of all Kamailio
  processes, of Redis (``INFO cpu``) and of this process (the subscribers), divided by the
  NOTIFYs the subscribers received in that window. All Kamailio includes the change
  itself (the INVITE or BYE through the focus) and the NOTIFY replies' reply route.

Also timed: when the watcher took the change's AMI event (its roster output for the leg
entering or leaving the bridge), and the last 200 OK after it (issue 15 item 4 counts the
500 ms from there).

The rtimer process is found by behaviour: Kamailio's children carry no process titles
without the ctl module, so the child with the most CPU over an idle window (only the
50 ms tick runs then, reading the node's subscriptions) is taken, and its share over that
window is reported beside the runner-up's (close shares would make the pick doubtful).

**Anchor** (``--no-anchor`` skips it): a second Kamailio of the same build, a throwaway
KEMI script (``ANCHOR_SCRIPT``) on an rtimer of its own sending, per 50 ms tick, one
``t_uac_send`` NOTIFY to each of the same S subscribers (their TLS listeners), with the
focus's headers and a body it sent in the trials (in a dialog nobody holds: the
subscribers answer 481, the same one final reply per NOTIFY); at least 2000 NOTIFYs (the
CPU clock ticks at 10 ms). Every one must be sent and answered (counted in the script,
checked). Its rtimer process names itself (its pid in the done file). Reported: secconf's
CPU per NOTIFY / the anchor's (rtimer net, all Kamailio).

Each size runs on a fresh stack (nothing of the last size's conference stays).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rekey_bench import cpu_seconds, kamailio_pids
from rich.console import Console
from rich.table import Table

from secconf.asterisk.ami import AmiSettings
from secconf.asterisk.watcher import Watcher
from secconf.asterisk.watcher_settings import WatcherSettings
from secconf.client.conference_events import ConferenceWatch, Protection
from secconf.client.phone import SdesPhone
from secconf.client.sip import Answer, UserAgent
from secconf.core.confinfo import ConferenceView, EndpointStatus
from secconf.core.roster import MemberJoined, MemberLeft, Output, RekeyPolicy
from secconf.core.sip.message import SipRequest
from secconf.focus.settings import Settings, load_settings
from secconf.lab.services.asterisk import AsteriskProcess, restore_asterisk_tree
from secconf.lab.services.edge import EdgeProcess
from secconf.lab.services.kamailio import KamailioProcess
from secconf.lab.services.redis_server import RedisProcess
from secconf.lab.tlsca import TlsFiles, init_ca, participant_contexts
from secconf.store import generate_key_file
from secconf.store.conferences import connect_blocking
from secconf.store.keywrap import KeyWrapper, load_key_file
from secconf.store.sip_users import SipUserStore

REALM = "example.com"
PASSWORD = "bench-member-secret"  # noqa: S105 - a throwaway lab user's password
MAX_MEMBERS = 100
MAX_JOINERS = 50
#: NOTIFYs the anchor sends at least (at S per tick: 2000 is 10 s for S = 10, 2 s for 50).
ANCHOR_MINIMUM = 2000


def member(index: int) -> str:
    return f"sip:m{index:03d}@{REALM}"


def joiner(index: int) -> str:
    return f"sip:j{index:03d}@{REALM}"


def settings_toml(kek: Path) -> str:
    allowed = ", ".join(
        f'"{identity}"'
        for identity in [*(member(i) for i in range(1, MAX_MEMBERS)),
                         *(joiner(i) for i in range(MAX_JOINERS))]
    )  # fmt: skip
    return f"""
[focus]
domain = "conf.bench.invalid"

[identity]
trusted_sources = ["udp:127.0.0.1", "tls:127.0.0.1"]

[digest]
realm = "{REALM}"
algorithms = ["SHA-256"]

[limits]
dialogs_per_identity = 1000
refers_per_minute = 600

[policy]
creators = ["{member(0)}"]
allowed = [{allowed}]

[events]
node_id = "bench"
max_per_conference = {MAX_MEMBERS + 4}

[upstream]
uri = "sip:127.0.0.1:9"

[redis]
url = "redis://127.0.0.1:1/0"
timeout = 0.5
prefix = "scnfb"
kek_file = "{kek}"
kek_id = "bench-kek"

[edge]
timeout = 1.0
"""


def redis_cpu(url: str) -> float:
    """Redis's own CPU seconds (``INFO cpu``: user + system of the server)."""
    client = connect_blocking(url, timeout=1.0)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def endpoints_of(view: ConferenceView, identity: str) -> list[EndpointStatus | None]:
    return [e.status for u in view.info.users if u.entity == identity for e in u.endpoints]


@dataclass
class Probe:
    """What the subscribers look for in this trial: names and predicates on a view."""

    marks: dict[str, Callable[[ConferenceView], bool]]
    #: mark -> subscriber index -> (view applied, 200 OK handed over), monotonic seconds
    seen: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    #: when the watcher took the change's AMI event (its roster output, before Redis)
    ami: float | None = None

    def __post_init__(self) -> None:
        self.seen = {name: {} for name in self.marks}


@dataclass
class Fanout:
    """The subscribers' side: every NOTIFY counted, the current probe's marks timed."""

    probe: Probe | None = None
    notifies: int = 0
    #: the last NOTIFY with a body received while a probe ran (the anchor copies its shape)
    sample: SipRequest | None = None

    def on_view(self, index: int, view: ConferenceView) -> None:
        probe, now = self.probe, time.monotonic()
        if probe is None:
            return
        for name, wanted in probe.marks.items():
            if index not in probe.seen[name] and wanted(view):
                probe.seen[name][index] = [now]

    def watch_ami(self, watcher: Watcher) -> None:
        """Time the watcher's roster outputs (a leg entering or leaving the bridge)."""
        apply = watcher.mirror.apply

        async def timed(output: Output) -> None:
            probe = self.probe
            if (
                probe is not None
                and probe.ami is None
                and isinstance(output, MemberJoined | MemberLeft)
            ):
                probe.ami = time.monotonic()
            await apply(output)

        watcher.mirror.apply = timed  # type: ignore[method-assign]

    def wrap(self, index: int, watch: ConferenceWatch) -> None:
        """Count each NOTIFY and time the answer of the one that completed a mark."""
        subscription = watch._subscription  # the tests' recording hook (test_e2e_events.py)
        if subscription is None or subscription.on_notify is None:
            raise RuntimeError("the watch has no subscription")
        handler = subscription.on_notify

        def answering(request: SipRequest) -> Answer:
            answer = handler(request)
            self.notifies += 1
            if self.probe is not None:
                if request.body:
                    self.sample = request
                for times in self.probe.seen.values():
                    mark = times.get(index)
                    if mark is not None and len(mark) == 1:
                        mark.append(time.monotonic())
            return answer

        subscription.on_notify = answering


@dataclass
class Trial:
    kind: str  # "join" | "leave"
    request_ms: float  # the change's request -> its final response at the phone
    #: mark -> (first view, last view, last 200 OK) in ms after the final response
    marks: dict[str, tuple[float, float, float]]
    #: the watcher's AMI event in ms after the final response (None: not seen in the window)
    ami_ms: float | None
    missing: dict[str, int]
    notifies: int
    cpu: dict[str, float]  # seconds in the window
    wall: float


@dataclass
class Stack:
    kamailio: KamailioProcess
    asterisk: AsteriskProcess
    redis: RedisProcess
    tls: TlsFiles
    focus: Settings


async def tls_phone(stack: Stack, identity: str) -> SdesPhone:
    server, client = participant_contexts(stack.tls, "participant")
    ua = await UserAgent.start(
        "127.0.0.1", transport="tls", ssl_context=server, client_ssl_context=client,
        identity=identity,
    )  # fmt: skip
    return await SdesPhone.start(identity, ua, rtcp_interval=1.0)


def tls_uri(stack: Stack, user: str) -> str:
    return f"sip:{user}@127.0.0.1:{stack.kamailio.tls_port};transport=tls"


def add_users(stack: Stack, count: int) -> None:
    """Digest users for the subscribers (HA1 wrapped with the KEK, as ``focus user add``)."""
    client = connect_blocking(stack.redis.url, timeout=1.0)
    try:
        wrapper = KeyWrapper(load_key_file(stack.focus.kek_file), stack.focus.kek_id)
        users = SipUserStore(client, wrapper, stack.focus.redis_prefix)
        for index in range(count):
            users.add(member(index), f"m{index:03d}", REALM, PASSWORD)
    finally:
        client.close()


def find_rtimer(main_pid: int, seconds: float) -> tuple[int, float, float]:
    """The busiest Kamailio child over an idle window: (pid, its share, the runner-up's)."""
    children = [p for p in kamailio_pids(main_pid) if p != main_pid]
    before = {pid: cpu_seconds([pid]) for pid in children}
    time.sleep(seconds)
    shares = sorted(
        ((cpu_seconds([pid]) - before[pid]) / seconds, pid) for pid in children
    )  # fmt: skip
    (second, _), (top, pid) = shares[-2], shares[-1]
    return pid, top, second


# -- the anchor: the same NOTIFYs sent by tm from a throwaway KEMI script --------------------

ANCHOR_CFG = """
#!KAMAILIO
debug=1
log_stderror=no
children=4
enable_tls=yes
disable_tcp=no
auto_aliases=no
tcp_connect_timeout=5
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "rtimer.so"
loadmodule "htable.so"
loadmodule "app_python3.so"
loadmodule "tls.so"
modparam("tls", "config", SECCONF_TLS_CONFIG)
modparam("app_python3", "load", "@SCRIPT@")
modparam("htable", "htable", "anchor=>size=4;")
modparam("rtimer", "timer", "name=anchor;interval=50000u;mode=1;")
modparam("rtimer", "exec", "timer=anchor;route=ksr_anchor_tick")
cfgengine "python"
"""

#: The throwaway KEMI script: on every 50 ms tick of its own rtimer process, one round of
#: ``t_uac_send`` NOTIFYs (the plan's targets, headers and body, all fixed) while the
#: plan's rounds last; nothing else (no Redis, no document, no state per subscription).
ANCHOR_SCRIPT = """
import json
import os

import KSR

PLAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plan.json")


class kamailio:
    def __init__(self):
        self.plan_id = None
        self.left = 0
        self.plan = None
        self.failed = 0
        self.report_in = 0  # ticks until the replies are counted (they trail the sends)

    def child_init(self, rank):
        return 0

    def ksr_request_route(self, msg):
        KSR.sl.sl_send_reply(200, "OK")
        return 1

    def ksr_reply_route(self, msg):
        KSR.htable.sht_inc("anchor", "replies")
        return 1

    def ksr_anchor_tick(self, msg, route=None):
        if self.report_in > 0:
            self.report_in -= 1
            if self.report_in == 0:
                replies = KSR.htable.sht_get("anchor", "replies")
                with open(PLAN + ".done", "w") as handle:
                    handle.write("%d %d %d" % (os.getpid(), self.failed, replies))
            return 1
        if self.left == 0:
            try:
                with open(PLAN) as handle:
                    plan = json.load(handle)
            except (OSError, ValueError):
                return 1
            if plan["id"] == self.plan_id:
                return 1
            self.plan_id, self.plan, self.left = plan["id"], plan, plan["rounds"]
            self.failed = 0
            KSR.htable.sht_seti("anchor", "replies", 0)
        plan = self.plan
        for index, (ruri, hop) in enumerate(plan["targets"]):
            headers = plan["headers"].replace("@N@", str(index))
            sent = KSR.tm.t_uac_send("NOTIFY", ruri, hop, plan["socket"], headers, plan["body"])
            if sent is None or sent <= 0:
                self.failed += 1
        self.left -= 1
        if self.left == 0:
            self.report_in = 10  # 0.5 s for the last replies
        return 1


def mod_init():
    return kamailio()
"""


@dataclass
class Anchor:
    notifies: int
    cpu: dict[str, float]  # seconds: rtimer, kamailio
    idle: float  # the anchor's rtimer process, share of a core when it sends nothing


def anchor_headers(sample: SipRequest) -> str:
    """A NOTIFY's headers shaped like *sample* (the focus's), in a dialog nobody holds."""
    names = ("from", "to", "contact", "event", "subscription-state", "content-type")
    lines = [f"{name.title()}: {sample.get(name) or ''}" for name in names]
    lines += ["Call-ID: anchor-@N@-x7f3q9", "CSeq: 7 NOTIFY"]
    return "".join(f"{line}\r\n" for line in lines)


def run_anchor(workdir: Path, tls: TlsFiles, uas: list[UserAgent], sample: SipRequest,
               rounds: int) -> Anchor:  # fmt: skip
    """Start the anchor Kamailio, warm its TLS connections up, then time *rounds* rounds."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "anchor_kemi.py"
    script.write_text(ANCHOR_SCRIPT)
    cfg = workdir / "anchor.cfg"
    cfg.write_text(ANCHOR_CFG.replace("@SCRIPT@", str(script)))
    with KamailioProcess(workdir / "kamailio", config=cfg, tls_dir=tls.directory) as kamailio:
        if kamailio.pid is None:
            raise RuntimeError("the anchor Kamailio is not running")
        plan = {
            "socket": f"tls:127.0.0.1:{kamailio.tls_port}",
            "targets": [[str(ua.contact.uri), f"sip:127.0.0.1:{ua.local_port};transport=tls"]
                        for ua in uas],
            "headers": anchor_headers(sample),
            "body": sample.body.decode("utf-8"),
        }  # fmt: skip
        done = script.parent / "plan.json.done"

        def send(plan_id: int, count: int) -> int:
            """The rounds sent; returns the rtimer's pid (checked: all sent, all answered)."""
            done.unlink(missing_ok=True)
            (script.parent / "plan.json").write_text(
                json.dumps({**plan, "id": plan_id, "rounds": count})
            )
            deadline = time.monotonic() + 30 + count
            while not done.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the anchor's rounds never finished")
                time.sleep(0.01)
            pid, failed, replies = (int(v) for v in done.read_text().split())
            if failed or replies != count * len(uas):
                raise RuntimeError(
                    f"anchor: {failed} not sent, {replies}/{count * len(uas)} answered"
                )
            return pid

        rtimer = send(1, 2)  # warm-up (TLS connections opened); the rtimer process says its pid
        before_idle = cpu_seconds([rtimer])
        time.sleep(2.0)
        idle = (cpu_seconds([rtimer]) - before_idle) / 2.0
        pids = {"rtimer": [rtimer], "kamailio": kamailio_pids(kamailio.pid)}
        before = {name: cpu_seconds(p) for name, p in pids.items()}
        started = time.monotonic()
        send(2, rounds)
        wall = time.monotonic() - started
        cpu = {name: cpu_seconds(p) - before[name] for name, p in pids.items()}
        cpu["rtimer_net"] = cpu["rtimer"] - idle * wall
        return Anchor(rounds * len(uas), cpu, idle)


class Conference:
    """N members joined and subscribed; changes made and measured one at a time."""

    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.fanout = Fanout()
        self.phones: list[SdesPhone] = []
        self.watches: list[ConferenceWatch] = []
        self.conference = ""

    async def setup(self, size: int, subscribers: int) -> None:
        """*size* members join; the first *subscribers* of them subscribe."""
        stack = self.stack
        for index in range(size):
            self.phones.append(await tls_phone(stack, member(index)))
        first = await self.phones[0].invite(tls_uri(stack, "conf-factory"), asserted=member(0))
        header = first.response.get("X-Secconf-Conference") if first.response else None
        if header is None:
            raise RuntimeError("no conference created")
        self.conference = header.split("conf-", 1)[1].split("@", 1)[0]
        uri = tls_uri(stack, f"conf-{self.conference}")
        for start in range(1, size, 10):
            await asyncio.gather(*(
                self.phones[i].invite(uri, asserted=member(i), timeout=15)
                for i in range(start, min(start + 10, size))
            ))  # fmt: skip
        for start in range(0, subscribers, 10):
            self.watches += await asyncio.gather(*(
                ConferenceWatch.start(
                    self.phones[i].ua, uri, protection=Protection.SDES,
                    credentials=(f"m{i:03d}", PASSWORD),
                    on_view=functools.partial(self.fanout.on_view, i),
                )
                for i in range(start, min(start + 10, subscribers))
            ))  # fmt: skip
        for index, watch in enumerate(self.watches):
            self.fanout.wrap(index, watch)

    async def quiet(self, seconds: float = 0.6, cap: float = 20.0) -> None:
        """Until no NOTIFY came for *seconds* (the previous change and its rekey done)."""
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            count = self.fanout.notifies
            await asyncio.sleep(seconds)
            if self.fanout.notifies == count:
                return
        raise RuntimeError("NOTIFYs never stopped")

    async def measure(
        self, kind: str, change: Callable[[], object], marks: dict[str, Callable[..., bool]],
        pids: dict[str, list[int]],
    ) -> Trial:  # fmt: skip
        probe = Probe(marks)
        count = len(self.watches)
        before = {name: cpu_seconds(p) for name, p in pids.items()}
        before["redis"] = redis_cpu(self.stack.redis.url)
        notifies = self.fanout.notifies
        self.fanout.probe = probe
        sent = time.monotonic()
        await change()  # type: ignore[misc]
        answered = time.monotonic()
        deadline = answered + 10
        while time.monotonic() < deadline and not all(
            sum(len(t) == 2 for t in seen.values()) == count for seen in probe.seen.values()
        ):
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.15)  # the last 200 OKs through Kamailio's reply route
        wall = time.monotonic() - sent
        cpu = {name: cpu_seconds(p) - before[name] for name, p in pids.items()}
        cpu["redis"] = redis_cpu(self.stack.redis.url) - before["redis"]
        self.fanout.probe = None
        timed: dict[str, tuple[float, float, float]] = {}
        missing: dict[str, int] = {}
        for name, seen in probe.seen.items():
            done = [t for t in seen.values() if len(t) == 2]
            missing[name] = count - len(done)
            if done:
                timed[name] = (
                    (min(t[0] for t in done) - answered) * 1000,
                    (max(t[0] for t in done) - answered) * 1000,
                    (max(t[1] for t in done) - answered) * 1000,
                )
        ami = None if probe.ami is None else (probe.ami - answered) * 1000
        return Trial(
            kind, (answered - sent) * 1000, timed, ami, missing,
            self.fanout.notifies - notifies, cpu, wall,
        )  # fmt: skip

    async def close(self) -> None:
        for watch in self.watches:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.close(), 3)
        for phone in self.phones:
            if phone.call is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.call.bye(timeout=2), 3)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(phone.close(), 5)


@dataclass
class SizeResult:
    size: int
    trials: list[Trial]
    rtimer_idle: float  # share of a core of the rtimer process, idle with S subscriptions
    runner_up: float
    phones_idle: float
    anchor: Anchor | None = None
    subscribers: int = 0

    @property
    def label(self) -> str:
        return f"{self.size} / {self.subscribers}"


async def join_and_leave(
    conference: Conference, identity: str, uri: str, pids: dict[str, list[int]]
) -> list[Trial]:
    """One fresh phone joins (measured), the NOTIFYs settle, it leaves (measured)."""
    phone = await tls_phone(conference.stack, identity)
    try:
        join = await conference.measure(
            "join", lambda: phone.invite(uri, asserted=identity), {
                "listed": lambda v: bool(endpoints_of(v, identity)),
                "connected": lambda v: EndpointStatus.CONNECTED in endpoints_of(v, identity),
            }, pids,
        )  # fmt: skip
        await conference.quiet()
        call = phone.call
        if call is None:
            raise RuntimeError("the joiner has no call")
        leave = await conference.measure(
            "leave", lambda: call.bye(timeout=5), {
                "disconnected": lambda v: bool(endpoints_of(v, identity)) and all(
                    s is EndpointStatus.DISCONNECTED for s in endpoints_of(v, identity)
                ),
            }, pids,
        )  # fmt: skip
        await conference.quiet()  # the leave's rekey (0.5 s debounce) and its NOTIFYs
        return [join, leave]
    finally:
        await asyncio.wait_for(phone.close(), 5)


async def run_size(
    size: int, trial_count: int, stack: Stack, args: argparse.Namespace
) -> SizeResult:
    watcher = Watcher(
        WatcherSettings(
            ami=AmiSettings(
                port=stack.asterisk.ami_port,
                username=stack.asterisk.ami_user,
                secret=stack.asterisk.ami_secret,
            ),
            focus=stack.focus,
            policy=RekeyPolicy(debounce=0.5, rekey_on_join=False),
            watcher_id=f"fanout-{size}",
            refresh_timeout=10.0,
            verify_timeout=15.0,
            poll_interval=0.02,
        )
    )
    conference = Conference(stack, args)
    try:
        await watcher.start()
        conference.fanout.watch_ami(watcher)
        await conference.setup(size, min(args.subscribers or size, size))
        await conference.quiet(1.0)
        main_pid = stack.kamailio.pid
        if main_pid is None:
            raise RuntimeError("Kamailio is not running")
        phones_before = cpu_seconds([os.getpid()])
        rtimer, idle, runner_up = await asyncio.to_thread(find_rtimer, main_pid, 3.0)
        phones_idle = (cpu_seconds([os.getpid()]) - phones_before) / 3.0
        pids = {"rtimer": [rtimer], "kamailio": kamailio_pids(main_pid), "phones": [os.getpid()]}
        uri = tls_uri(stack, f"conf-{conference.conference}")
        trials: list[Trial] = []
        for number in range(trial_count):
            identity = joiner(number)
            trials += await join_and_leave(conference, identity, uri, pids)
        anchor = None
        sample = conference.fanout.sample
        if args.anchor and sample is not None:
            # As many NOTIFYs as the trials received, S per 50 ms tick, and at least
            # ANCHOR_MINIMUM: the CPU clock ticks at 10 ms (resolution, not load).
            wanted = max(sum(t.notifies for t in trials), ANCHOR_MINIMUM)
            subscribers = len(conference.watches)
            rounds = -(-wanted // subscribers)
            anchor = await asyncio.to_thread(
                run_anchor, args.workdir / f"anchor-{size}", stack.tls,
                [phone.ua for phone in conference.phones[:subscribers]], sample, rounds,
            )  # fmt: skip
        return SizeResult(
            size, trials, idle, runner_up, phones_idle, anchor, len(conference.watches)
        )
    finally:
        await conference.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watcher.close(), 5)


def median_range(values: list[float], unit: str = "ms", scale: float = 1.0) -> str:
    if not values:
        return "-"
    scaled = [v * scale for v in values]
    return f"{statistics.median(scaled):.0f} ({min(scaled):.0f}-{max(scaled):.0f}) {unit}"


def report(console: Console, results: list[SizeResult], trials: int) -> None:
    table = Table(
        title=f"NOTIFY fan-out, SDES over TLS, {os.cpu_count()} CPUs; {trials} trials each way; "
        "median (min-max), ms after the change's final response at the changing phone"
    )
    for column in ("members / subscribers", "change", "request", "first view", "last view",
                   "last 200 OK", "AMI event", "last 200 OK after AMI", "missed",
                   "NOTIFYs/trial"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in results:
        for kind, marks in (("join", ("listed", "connected")), ("leave", ("disconnected",))):
            runs = [t for t in r.trials if t.kind == kind]
            for mark in marks:
                timed = [t.marks[mark] for t in runs if mark in t.marks]
                table.add_row(
                    r.label, f"{kind}: {mark}",
                    median_range([t.request_ms for t in runs]),
                    median_range([m[0] for m in timed]),
                    median_range([m[1] for m in timed]),
                    median_range([m[2] for m in timed]),
                    median_range([t.ami_ms for t in runs if t.ami_ms is not None]),
                    median_range([t.marks[mark][2] - t.ami_ms for t in runs
                                  if mark in t.marks and t.ami_ms is not None]),
                    str(sum(t.missing[mark] for t in runs)),
                    median_range([float(t.notifies) for t in runs], unit=""),
                )  # fmt: skip
    console.print(table)
    table = Table(
        title="CPU per NOTIFY: CPU seconds summed over the trials' windows / NOTIFYs received in "
        "them; rtimer net = minus its idle polling rate; phones = this process (the subscribers)"
    )
    for column in ("members / subscribers", "change", "NOTIFYs", "windows", "rtimer gross", "rtimer net",
                   "all Kamailio", "Redis", "phones", "phones' share of a core",
                   "idle shares: rtimer (runner-up), phones"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in results:
        for kind in ("join", "leave"):
            runs = [t for t in r.trials if t.kind == kind and t.notifies]
            sent = sum(t.notifies for t in runs) or 1
            wall = sum(t.wall for t in runs) or 1.0

            def per(name: str, runs: list[Trial] = runs, sent: int = sent) -> str:
                return f"{sum(t.cpu[name] for t in runs) / sent * 1e6:.0f} µs"

            idle = r.rtimer_idle * wall / sent * 1e6
            phones = sum(t.cpu["phones"] for t in runs) / wall
            table.add_row(
                r.label, kind, str(sent), f"{wall:.2f} s", per("rtimer"),
                f"{sum(t.cpu['rtimer'] for t in runs) / sent * 1e6 - idle:.0f} µs",
                per("kamailio"), per("redis"), per("phones"), f"{phones * 100:.0f} %",
                f"{r.rtimer_idle * 100:.1f} % ({r.runner_up * 100:.1f} %), "
                f"{r.phones_idle * 100:.1f} %",
            )  # fmt: skip
    console.print(table)
    anchored = [r for r in results if r.anchor is not None]
    if anchored:
        report_anchor(console, anchored)


def report_anchor(console: Console, results: list[SizeResult]) -> None:
    table = Table(
        title="Anchor: NOTIFYs of the focus's shape (its headers, a body it sent), S per 50 ms tick, by "
        "tm's t_uac_send from a throwaway KEMI script on an rtimer, same Kamailio build, same "
        "subscribers (they answer 481); µs per NOTIFY, and secconf (all trials) / anchor"
    )
    for column in ("members / subscribers", "anchor NOTIFYs", "anchor rtimer gross", "anchor rtimer net",
                   "anchor all Kamailio", "secconf rtimer net", "secconf all Kamailio",
                   "ratio rtimer net", "ratio all Kamailio"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in results:
        anchor = r.anchor
        if anchor is None:
            continue
        sent = sum(t.notifies for t in r.trials) or 1
        wall = sum(t.wall for t in r.trials)
        ours_net = (sum(t.cpu["rtimer"] for t in r.trials) - r.rtimer_idle * wall) / sent
        ours_all = sum(t.cpu["kamailio"] for t in r.trials) / sent
        theirs_net = anchor.cpu["rtimer_net"] / anchor.notifies
        theirs_all = anchor.cpu["kamailio"] / anchor.notifies
        table.add_row(
            r.label, str(anchor.notifies),
            f"{anchor.cpu['rtimer'] / anchor.notifies * 1e6:.0f}", f"{theirs_net * 1e6:.0f}",
            f"{theirs_all * 1e6:.0f}", f"{ours_net * 1e6:.0f}", f"{ours_all * 1e6:.0f}",
            f"{ours_net / theirs_net:.1f}" if theirs_net > 0 else "-",
            f"{ours_all / theirs_all:.1f}" if theirs_all > 0 else "-",
        )  # fmt: skip
    console.print(table)


def measure_size(size: int, args: argparse.Namespace) -> SizeResult:
    """Start the stack (Redis, edge, Asterisk, Kamailio with TLS), run one size, stop it."""
    workdir = args.workdir = Path(tempfile.mkdtemp(prefix="secconf-fanout-bench-"))
    try:
        with contextlib.ExitStack() as services:
            redis = services.enter_context(RedisProcess(workdir / "redis"))
            edge = services.enter_context(EdgeProcess(workdir / "edge"))
            restore_asterisk_tree(workdir / "tree")
            asterisk = services.enter_context(AsteriskProcess(workdir / "tree"))
            kek = workdir / "kek"
            generate_key_file(kek)
            tls = init_ca(workdir / "tls", ["127.0.0.1", "localhost"], clients=["participant"])
            kamailio = services.enter_context(
                KamailioProcess(
                    workdir / "kamailio",
                    settings_toml(kek),
                    env={
                        "SECCONF_REDIS_URL": redis.url,
                        "SECCONF_UPSTREAM": f"sip:127.0.0.1:{asterisk.sip_port}",
                        **edge.focus_env,
                        **asterisk.focus_env,
                    },
                    children=4,
                    tls_dir=tls.directory,
                )
            )
            focus = load_settings(kamailio.settings_path, env=kamailio.env)
            stack = Stack(kamailio, asterisk, redis, tls, focus)
            add_users(stack, size)
            return asyncio.run(asyncio.wait_for(run_size(size, args.trials, stack, args), 600))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--trials", type=int, default=5, help="joins and leaves per size")
    parser.add_argument(
        "--subscribers", type=int, default=0, help="members who subscribe (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: size 10, 2 trials")
    parser.add_argument(
        "--no-anchor", dest="anchor", action="store_false", help="skip the bare-tm anchor"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.trials = [10], 2
    if max(args.sizes) > MAX_MEMBERS or args.trials > MAX_JOINERS:
        sys.exit(f"at most {MAX_MEMBERS} members and {MAX_JOINERS} trials")
    if os.geteuid() != 0:
        sys.exit("run as root: Asterisk runs chrooted in the cached Debian sid tree")
    console = Console(width=200)
    results: list[SizeResult] = []
    for size in args.sizes:  # each size on a fresh stack: nothing of the last one stays
        subscribers = min(args.subscribers or size, size)
        console.log(f"{size} members, {subscribers} subscribed: {args.trials} x join+leave")
        results.append(measure_size(size, args))
    report(console, results, args.trials)


if __name__ == "__main__":
    main()
