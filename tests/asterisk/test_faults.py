"""Issue 6's fault list against the real stack (Redis, edge, Kamailio + module, Asterisk 22).

SDES phones (secconf.client.phone) join a ConfBridge through Kamailio; the roster
watcher follows Asterisk's AMI and rekeys.  Each test breaks one thing:

- a member's phone refuses the rekey re-INVITE (488): policy ``remove`` hangs it up
  and rekeys once more without it; policy ``replace`` calls it back on the new
  epoch, calls it back again when it refuses again, and removes it (one more
  rekey) when the call back fails; the module's ``rekey-failed`` entry holds no key;
- the watcher's AMI connection is cut (through a TCP proxy the test controls) while
  a member leaves and just after a leave: it reconnects, reconciles, rekeys once each;
- Asterisk restarts with a conference up: the roster is cleaned, nothing is rekeyed,
  a new conference works end to end;
- Redis stops answering exactly when the watcher mints an epoch: no epoch is left
  half-applied (Redis without the edge), and the retry ends with every leg on it;
- the lease holder dies without releasing: the standby takes over once the lease
  lapses and rekeys once (``takeover``), covering the leave the holder never did.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from secconf.asterisk.ami import AmiClient, AmiSettings
from secconf.asterisk.rekey_driver import RekeyReport
from secconf.asterisk.watcher import Watcher
from secconf.client.phone import SUITE, SdesPhone
from secconf.client.sip import Call
from secconf.core.errors import SecconfError
from secconf.core.keys import key_fingerprint
from secconf.core.roster import FailurePolicy
from secconf.store.conference_scripts import ADD_EPOCH
from secconf.store.conferences import ConferenceStore, DialogRecord
from secconf.store.executors import SyncExecutor
from tests.asterisk.stack import Stack, running_stack
from tests.asterisk.support import bounded, conference_of, wait_for
from tests.fixtures.asterisk_server import AsteriskServer, processes_in
from tests.fixtures.edge_server import EdgeFactory
from tests.fixtures.kamailio_server import KamailioFactory
from tests.fixtures.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ALICE, BOB = "sip:alice@example.com", "sip:bob@example.com"
CAROL, DAVE = "sip:carol@example.com", "sip:dave@example.com"
CAROL_PASSWORD = "carol-secret-271"
PREFIX = "scflt"

SETTINGS = f"""
[focus]
domain = "conf.test.invalid"
server_name = "focus.faults"

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
kek_id = "faults-kek"

[edge]
timeout = 1.0

[digest]
realm = "example.com"
"""


# -- store access in one place (Redis Cluster key layout is changing in parallel) -------


def dialog_of(store: ConferenceStore, conference: str, call_id: str) -> DialogRecord | None:
    return store.dialog(conference, call_id)


def refusals(store: ConferenceStore, conference: str) -> list[dict[str, str]]:
    """The module's ``rekey-failed`` entries of *conference*."""
    return [fields for _, fields in store.rekey_failures(conference)]


def redis_epochs(store: ConferenceStore, conference: str) -> dict[int, str]:
    """Every key epoch Redis holds for *conference*: number -> key fingerprint."""
    numbers = [
        int(field)
        for field in store.client.hkeys(store.conference_key(conference, "epochs"))
        if field.isdigit()
    ]
    found = {}
    for number in numbers:
        key = store.group_key(conference, number)
        found[number] = key_fingerprint(key.key, key.salt)
    return found


# -- the stack --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer,
    edge_factory: EdgeFactory,
    kamailio_factory: KamailioFactory,
    asterisk_server: AsteriskServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    # Replacement calls: kamailio-out's outbound_proxy must be this Kamailio.
    with running_stack(
        redis_server, edge_factory, kamailio_factory, asterisk_server,
        tmp_path_factory.mktemp("faults"), SETTINGS, dialout=True,
    ) as running:  # fmt: skip
        running.add_sip_user(CAROL, "carol", "example.com", CAROL_PASSWORD)
        yield running


# -- helpers ------------------------------------------------------------------------------


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def idle(watcher: Watcher) -> bool:
    """No rekey running, queued or planned: nothing more will be reported without a change."""
    return watcher.tracker.next_deadline() is None and not watcher.rekeys.busy


def channels(watcher: Watcher, conference: str) -> dict[str, str]:
    """Caller ID user -> channel of every member the watcher knows."""
    return {m.caller_id: m.channel for m in watcher.tracker.members(conference)}


def roster(store: ConferenceStore, conference: str) -> dict[str, str]:
    """The watcher's roster in Redis: channel -> Call-ID."""
    raw = cast(dict[bytes, bytes], store.client.hgetall(f"{PREFIX}:roster:{conference}"))
    return {k.decode(): json.loads(v)["call_id"] for k, v in raw.items()}


def rekey_reports(store: ConferenceStore, conference: str) -> list[Any]:
    """The watcher's ``P:rekeys:<conference>`` stream."""
    return cast(list[Any], store.client.xrange(f"{PREFIX}:rekeys:{conference}"))


@dataclass
class Conference:
    id: str
    phones: dict[str, SdesPhone]  # caller ID user -> phone

    def call(self, user: str) -> Call:
        call = self.phones[user].call
        assert call is not None
        return call


@contextlib.asynccontextmanager
async def conference(stack: Stack, watcher: Watcher, users: list[str]) -> AsyncIterator[Conference]:
    """users[0] creates, the others join; all hung up and closed at the end."""
    phones: dict[str, SdesPhone] = {}
    started: list[SdesPhone] = []
    try:
        for user in users:
            phones[user] = await SdesPhone.start(f"sip:{user}@example.com")
            started.append(phones[user])
        creator = await phones[users[0]].invite(
            stack.target("conf-factory"), asserted=f"sip:{users[0]}@example.com"
        )
        conf_id = conference_of(creator)
        for user in users[1:]:
            await phones[user].invite(
                stack.target(f"conf-{conf_id}"), asserted=f"sip:{user}@example.com"
            )
        await wait_for(
            lambda: set(channels(watcher, conf_id)) == set(users), 5, f"{users} in the bridge"
        )
        # Members only: a test deletes those that left; every phone is closed.
        yield Conference(conf_id, dict(phones))
    finally:
        for phone in started:
            if phone.call is not None and not phone.call.ended.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(phone.call.bye(timeout=2), 3)
        for phone in started:
            await bounded(phone.close(), "close a phone")


async def roster_settles(store: ConferenceStore, watcher: Watcher, conf: Conference) -> None:
    """Redis's roster is the bridge's: the watcher's channels, with the members' Call-IDs."""
    calls = {conf.call(user).call_id for user in conf.phones}

    def right() -> bool:
        known = {m.channel for m in watcher.tracker.members(conf.id)}
        written = roster(store, conf.id)
        return set(written) == known and sorted(written.values()) == sorted(calls)

    await wait_for(right, 5, f"the roster of {sorted(conf.phones)} in Redis")


def assert_on_epoch(stack: Stack, store: ConferenceStore, conf: Conference, epoch: int) -> None:
    """Redis, the edge (every leg, with the same key) and every phone are on *epoch*."""
    info = store.get(conf.id)
    assert info is not None
    assert info.epoch == epoch, info
    key = store.group_key(conf.id, epoch)
    state = stack.conference(conf.id)
    at_edge = edge_epochs(stack, conf.id)
    assert at_edge.get(epoch) == key_fingerprint(key.key, key.salt), at_edge
    assert sorted(leg["epoch"] for leg in state["legs"]) == [epoch] * len(conf.phones), state
    for user, phone in conf.phones.items():
        assert phone.group == (SUITE, key.key, key.salt), user
        dialog = dialog_of(store, conf.id, conf.call(user).call_id)
        assert dialog is not None, user
        assert dialog.epoch == epoch, (user, dialog)


def assert_no_key_material(store: ConferenceStore, conference: str, entries: object) -> None:
    """Nothing of any epoch's key (raw hex or SDES base64) in *entries*."""
    text = json.dumps(entries)
    assert "inline:" not in text
    for number in redis_epochs(store, conference):
        key = store.group_key(conference, number)
        for secret in (
            base64.b64encode(key.key + key.salt).decode(),
            base64.b64encode(key.key).decode()[:16],
            key.key.hex(),
            key.salt.hex(),
        ):
            assert secret not in text


# -- 1. a phone refuses the rekey re-INVITE (488) ------------------------------------------


def test_refusal_with_policy_remove_hangs_up_and_rekeys_without_it(stack: Stack) -> None:
    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings("flt-remove", on_failure=FailurePolicy.REMOVE))
        await watcher.start()
        store = stack.store()
        try:
            async with conference(stack, watcher, ["alice", "bob", "carol", "dave"]) as conf:
                await roster_settles(store, watcher, conf)
                chans = channels(watcher, conf.id)
                carol = conf.phones["carol"]
                carol_call = conf.call("carol")
                old_group = carol.group
                carol.refuse = 488
                first = asyncio.ensure_future(watcher.next_report(20))
                await conf.call("dave").bye(timeout=5)
                report: RekeyReport = await first
                second = asyncio.ensure_future(watcher.next_report(20))
                assert report.epoch == 2
                assert report.reasons == ("leave",)
                assert report.verdicts == {
                    chans["alice"]: "followed",
                    chans["bob"]: "followed",
                    chans["carol"]: "refused",
                }, report.verdicts
                assert report.removed == (chans["carol"],)
                assert report.replaced == {}
                # The refusal is on record, without any key.
                entries = refusals(store, conf.id)
                mine = [e for e in entries if e.get("call_id") == carol_call.call_id]
                assert [(e["epoch"], e["status"]) for e in mine] == [("2", "488")], entries
                assert_no_key_material(store, conf.id, entries)
                # Carol was hung up (AMI Hangup: Asterisk's BYE reached her) ...
                await carol_call.wait_ended(5)
                assert carol.group == old_group  # she never took epoch 2's key
                # ... and one more rekey, without her: her refused re-INVITE offered her
                # epoch 2's key.
                again: RekeyReport = await second
                assert again.epoch == 3
                assert again.reasons == ("leave",)
                assert again.verdicts == {chans["alice"]: "followed", chans["bob"]: "followed"}
                assert again.removed == ()
                for gone in ("carol", "dave"):
                    del conf.phones[gone]
                await roster_settles(store, watcher, conf)
                listed = await watcher.ami.confbridge_list(conf.id)
                assert {e["Channel"] for e in listed} == {chans["alice"], chans["bob"]}
                assert dialog_of(store, conf.id, carol_call.call_id) is None
                assert_on_epoch(stack, store, conf, 3)
                await wait_for(lambda: idle(watcher), 5, "the watcher idle")
                assert [r.epoch for r in watcher.reports] == [2, 3]
        finally:
            await bounded(watcher.close(), "close the watcher")
            store.client.close()

    asyncio.run(scenario())


def test_refusal_with_policy_replace_calls_back_until_the_call_back_fails(stack: Stack) -> None:
    """``replace``: the refuser is hung up and called back (the new call carries the new
    epoch).  It refuses again at the next rekey: called back again.  When it no longer
    answers the call back (480), it stays removed and the conference is rekeyed once more."""

    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings("flt-replace", on_failure=FailurePolicy.REPLACE))
        await watcher.start()
        store = stack.store()
        try:
            async with conference(stack, watcher, ["alice", "bob", "carol", "dave"]) as conf:
                carol = conf.phones["carol"]
                registrar = f"sip:127.0.0.1:{stack.kamailio.port}"
                registered = await carol.ua.register(
                    registrar, credentials=("carol", CAROL_PASSWORD), timeout=5
                )
                assert registered.status == 200
                carol.refuse, carol.accept_calls = 488, True
                chans = channels(watcher, conf.id)

                # Rekey 1 (Dave leaves): Carol refuses, is hung up and called back.
                old_call = conf.call("carol")
                waiter = asyncio.ensure_future(watcher.next_report(20))
                await conf.call("dave").bye(timeout=5)
                del conf.phones["dave"]
                first: RekeyReport = await waiter
                assert first.epoch == 2, first
                assert first.verdicts[chans["carol"]] == "refused", first.verdicts
                assert set(first.replaced) == {chans["carol"]}
                assert first.removed == ()
                await old_call.wait_ended(5)
                carol.call = await carol.ua.next_call(10)
                await wait_for(
                    lambda: (
                        first.replaced[chans["carol"]]
                        in {m.uniqueid for m in watcher.tracker.members(conf.id)}
                    ),
                    5,
                    "Carol's call back in the bridge",
                )
                dialog = dialog_of(store, conf.id, carol.call.call_id)
                assert dialog is not None
                assert (dialog.dialout, dialog.epoch) == (True, 2)
                assert_on_epoch(stack, store, conf, 2)  # her new call carries epoch 2
                await roster_settles(store, watcher, conf)
                await wait_for(lambda: idle(watcher), 5, "the watcher idle")
                assert len(watcher.reports) == 1  # the call back asks for no rekey

                # Rekey 2 (Bob leaves): she refuses again; this time the call back fails.
                by_uniqueid = {m.uniqueid: m.channel for m in watcher.tracker.members(conf.id)}
                chans["carol"] = by_uniqueid[first.replaced[chans["carol"]]]
                assert chans["carol"].startswith("PJSIP/kamailio-out-")
                carol.accept_calls = False
                old_call = conf.call("carol")
                waiter = asyncio.ensure_future(watcher.next_report(20))
                await conf.call("bob").bye(timeout=5)
                del conf.phones["bob"]
                second: RekeyReport = await waiter
                third_waiter = asyncio.ensure_future(watcher.next_report(20))
                assert second.epoch == 3, second
                assert second.verdicts == {
                    chans["alice"]: "followed",
                    chans["carol"]: "refused",
                }, second.verdicts
                assert second.removed == (chans["carol"],)
                assert second.replaced == {}
                assert (watcher.dialouts[-1].target, watcher.dialouts[-1].result) == (
                    CAROL,
                    "failed",
                )
                await old_call.wait_ended(5)
                # She was offered epoch 3's key: one more rekey, without her.
                third: RekeyReport = await third_waiter
                assert third.epoch == 4
                assert third.reasons == ("leave",)
                assert third.verdicts == {chans["alice"]: "followed"}
                del conf.phones["carol"]
                assert_on_epoch(stack, store, conf, 4)
                await roster_settles(store, watcher, conf)
                entries = refusals(store, conf.id)
                assert sorted((e["epoch"], e["status"]) for e in entries) == [
                    ("2", "488"),
                    ("3", "488"),
                ], entries
                assert_no_key_material(store, conf.id, entries)
                await wait_for(lambda: idle(watcher), 5, "the watcher idle")
                assert [r.epoch for r in watcher.reports] == [2, 3, 4]
        finally:
            await bounded(watcher.close(), "close the watcher")
            store.client.close()

    asyncio.run(scenario())


# -- 2. the watcher's AMI connection breaks --------------------------------------------------


class AmiProxy:
    """A TCP proxy in front of Asterisk's AMI: the test cuts it and stops it listening."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._pumps: set[asyncio.Future[Any]] = set()

    async def listen(self) -> None:
        """Accept connections (again, on the same port)."""
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop_listening(self) -> None:
        """New connections are refused (the watcher's reconnects fail at once)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def cut(self) -> None:
        """Reset every connection through the proxy, both sides."""
        for transport in list(self._transports):
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()

    async def close(self) -> None:
        self.stop_listening()
        self.cut()
        for pump in list(self._pumps):
            pump.cancel()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream), 2
            )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self.connections += 1
        self._transports |= {writer.transport, up_writer.transport}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        task = asyncio.ensure_future(
            asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        )
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)


def test_ami_cut_watcher_reconnects_reconciles_and_rekeys_each_leave_once(stack: Stack) -> None:
    async def scenario() -> None:
        proxy = AmiProxy(stack.asterisk.ami_port)
        await proxy.listen()
        settings = stack.watcher_settings("flt-ami")
        watcher = Watcher(
            dataclasses.replace(settings, ami=dataclasses.replace(settings.ami, port=proxy.port))
        )
        await watcher.start()
        store = stack.store()
        try:
            async with conference(stack, watcher, ["alice", "bob", "carol", "dave"]) as conf:
                await roster_settles(store, watcher, conf)
                assert watcher.ami.connects == 1

                # AMI down (connection reset, reconnects refused) while Dave leaves.
                proxy.stop_listening()
                proxy.cut()
                await wait_for(lambda: not watcher.ami.connected, 5, "the watcher to notice")
                await conf.call("dave").bye(timeout=5)
                del conf.phones["dave"]
                await until(
                    lambda: members_listed(stack, conf.id, 3), 5, "Dave's leave in Asterisk"
                )
                assert len(channels(watcher, conf.id)) == 4  # it missed the event
                assert watcher.reports == []
                waiter = asyncio.ensure_future(watcher.next_report(20))
                await proxy.listen()
                await wait_for(lambda: watcher.ami.connects == 2, 15, "the reconnect")
                # The ConfbridgeList snapshot lacks Dave: a leave, one rekey.
                report: RekeyReport = await waiter
                assert report.epoch == 2
                assert report.reasons == ("leave",)
                assert set(report.verdicts.values()) == {"followed"}, report.verdicts
                await roster_settles(store, watcher, conf)
                assert_on_epoch(stack, store, conf, 2)

                # Carol leaves; the connection is cut right after her ConfbridgeLeave
                # (inside the debounce window): the reconnect's snapshot must not count
                # her leave a second time.
                waiter = asyncio.ensure_future(watcher.next_report(20))
                await conf.call("carol").bye(timeout=5)
                del conf.phones["carol"]
                await wait_for(lambda: len(channels(watcher, conf.id)) == 2, 5, "Carol's leave")
                proxy.cut()
                await wait_for(lambda: watcher.ami.connects == 3, 15, "the second reconnect")
                report = await waiter
                assert report.epoch == 3
                assert report.reasons == ("leave",)
                await roster_settles(store, watcher, conf)

                # A cut with no change in between: reconnect, reconcile, no rekey.
                proxy.cut()
                await wait_for(lambda: watcher.ami.connects == 4, 15, "the third reconnect")
                await wait_for(lambda: idle(watcher), 5, "the watcher idle")
                await roster_settles(store, watcher, conf)
                assert [(r.epoch, r.reasons) for r in watcher.reports] == [
                    (2, ("leave",)),
                    (3, ("leave",)),
                ]
                assert len(rekey_reports(store, conf.id)) == 2
                assert_on_epoch(stack, store, conf, 3)
        finally:
            await bounded(watcher.close(), "close the watcher")
            await proxy.close()
            store.client.close()

    asyncio.run(scenario())


async def members_listed(stack: Stack, conference: str, count: int) -> bool:
    """Asterisk's own ConfbridgeList (on a connection of the test's) has *count* members."""
    probe = AmiClient(
        AmiSettings(
            port=stack.asterisk.ami_port,
            username=stack.asterisk.ami_user,
            secret=stack.asterisk.ami_secret,
        )
    )
    await probe.start()
    try:
        return len(await probe.confbridge_list(conference)) == count
    finally:
        await probe.close()


# -- 3. Asterisk restarts with a conference up ------------------------------------------------


def kill_asterisk(asterisk: AsteriskServer) -> None:
    """SIGKILL Asterisk (a crash: no hangups, no BYEs, no AMI events), then reap it."""
    for pid in processes_in(asterisk.tree):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    asterisk.stop()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_asterisk_restart_cleans_the_roster_and_a_new_conference_works(
    stack: Stack, how: str
) -> None:
    """SIGTERM: Asterisk hangs every call up on its way down (ConfbridgeLeave events,
    BYEs).  SIGKILL: nothing is said; the watcher learns it from the reconnect's
    ConfbridgeList.  Either way no rekey, the roster goes, a new conference works."""

    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings("flt-restart"))
        await watcher.start()
        store = stack.store()
        try:
            async with conference(stack, watcher, ["alice", "bob", "carol"]) as conf:
                await roster_settles(store, watcher, conf)
                roster_key = f"{PREFIX}:roster:{conf.id}"
                assert store.client.exists(roster_key)
                started = time.monotonic()
                stop = stack.asterisk.stop if how == "sigterm" else kill_asterisk
                await asyncio.to_thread(stop, *(() if how == "sigterm" else (stack.asterisk,)))
                # Started from the main thread, not asyncio.to_thread: the fixture's
                # pdeathsig fires when the *thread* that spawned Asterisk exits, and the
                # executor's worker threads exit with asyncio.run (Asterisk killed).
                stack.asterisk.start()
                await wait_for(lambda: watcher.ami.connects == 2, 20, "the reconnect")
                reconnected = time.monotonic() - started
                # The bridge is gone: the watcher forgets its members, deletes its roster.
                await wait_for(
                    lambda: (
                        not watcher.tracker.members(conf.id) and not store.client.exists(roster_key)
                    ),
                    5,
                    "the roster of the vanished bridge deleted",
                )
                assert await watcher.ami.confbridge_rooms() == []
                await wait_for(lambda: idle(watcher), 5, "the watcher idle")
                assert watcher.reports == []  # everyone left at once: nothing to rekey
                print(f"\nAsterisk stop+start -> watcher reconnected in {reconnected:.1f} s")
                ended = {user: conf.call(user).ended.is_set() for user in conf.phones}
                info = store.get(conf.id)
                print(
                    f"calls ended at the phones by the {how}: {ended}; conference in Redis: "
                    f"{None if info is None else info.state}"
                )

            # A new conference afterwards: join, leave, exactly one rekey.
            async with conference(stack, watcher, ["alice", "bob", "carol"]) as conf:
                await roster_settles(store, watcher, conf)
                waiter = asyncio.ensure_future(watcher.next_report(20))
                await conf.call("carol").bye(timeout=5)
                del conf.phones["carol"]
                report: RekeyReport = await waiter
                assert report.conference == conf.id
                assert report.epoch == 2
                assert report.reasons == ("leave",)
                assert set(report.verdicts.values()) == {"followed"}, report.verdicts
                await roster_settles(store, watcher, conf)
                assert_on_epoch(stack, store, conf, 2)
                await wait_for(lambda: idle(watcher), 5, "the watcher idle")
                assert len(watcher.reports) == 1
        finally:
            await bounded(watcher.close(), "close the watcher")
            store.client.close()

    asyncio.run(scenario())


# -- 4. Redis stops answering at the moment of the mint -----------------------------------


def test_redis_hung_during_the_mint_leaves_no_half_applied_epoch(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis is paused (SIGSTOP) just as the watcher's mint writes the new epoch.

    The write times out (the module's 0.5 s), so the mint fails before the edge is
    told.  But the script is already in Redis's socket buffer: when Redis resumes it
    runs, and Redis names an epoch the edge never got.  The watcher's retry must
    not build on it: in the end every epoch Redis holds is the edge's (same key),
    one epoch was minted for the one leave, and every leg is on it.
    """

    async def scenario() -> None:
        watcher = Watcher(stack.watcher_settings("flt-redis"))
        await watcher.start()
        store = stack.store()
        original = ConferenceStore.add_epoch
        armed, tried = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def add_epoch(self: ConferenceStore, *args: Any, **kwargs: Any) -> None:
            if not armed.is_set():
                return original(self, *args, **kwargs)
            armed.clear()
            stack.redis.pause()  # the moment of the mint: Redis hangs
            try:
                return original(self, *args, **kwargs)
            except BaseException as exc:
                failures.append(exc)
                raise
            finally:
                tried.set()

        monkeypatch.setattr(ConferenceStore, "add_epoch", add_epoch)
        try:
            async with conference(stack, watcher, ["alice", "bob", "carol"]) as conf:
                await roster_settles(store, watcher, conf)
                before = edge_epochs(stack, conf.id)
                # Redis knows the epoch script, as after any earlier rekey on this server
                # (else the EVALSHA that runs late would only get NOSCRIPT).
                store.client.script_load(ADD_EPOCH)
                armed.set()
                waiter = asyncio.ensure_future(watcher.next_report(30))
                await conf.call("carol").bye(timeout=5)
                del conf.phones["carol"]
                await until(lambda: asyncio.to_thread(tried.wait, 0.05), 10, "the mint")
                assert len(failures) == 1, failures
                assert isinstance(failures[0], SecconfError), failures
                assert failures[0].status_code == 503
                # While Redis hangs nothing reached the edge.
                assert edge_epochs(stack, conf.id) == before
                assert watcher.reports == []
                stack.redis.resume()
                report: RekeyReport = await waiter
                assert report.reasons in (("retry",), ("leave", "retry")), report.reasons
                assert set(report.verdicts.values()) == {"followed"}, report.verdicts
                # Every epoch in Redis is at the edge with the same key: nothing half-applied.
                at_edge = edge_epochs(stack, conf.id)
                in_redis = redis_epochs(store, conf.id)
                assert {n: f for n, f in in_redis.items() if n in at_edge} == at_edge
                assert set(in_redis) - set(at_edge) <= {1}, (in_redis, at_edge)  # 1 retired
                # One leave, one new epoch: the failed attempt left no trace.
                assert report.epoch == 2, (report.epoch, in_redis, at_edge)
                assert_on_epoch(stack, store, conf, 2)
                await wait_for(lambda: idle(watcher), 5, "the watcher idle")
                assert len(watcher.reports) == 1
        finally:
            stack.redis.resume()
            await bounded(watcher.close(), "close the watcher")
            store.client.close()

    asyncio.run(scenario())


def edge_epochs(stack: Stack, conference: str) -> dict[int, str]:
    """The edge's key epochs of *conference*: number -> key fingerprint."""
    return {e["epoch"]: e["fingerprint"] for e in stack.conference(conference)["epochs"]}


# -- 5. the lease holder dies without releasing --------------------------------------------


def test_standby_takes_over_a_lapsed_lease_and_rekeys_once(stack: Stack) -> None:
    """Two watchers; the one holding the conference's lease dies (its tasks stop, its
    AMI connection drops, nothing is released) just after a leave, before its rekey.
    The standby's own decision for that leave is left to the holder (the lease is
    still valid); once the lease lapses the standby takes it and rekeys once
    (``takeover``), which covers the leave."""

    async def scenario() -> None:
        ttl = 1.5
        first = Watcher(stack.watcher_settings("flt-lease-1", lease_ttl=ttl))
        second = Watcher(stack.watcher_settings("flt-lease-2", lease_ttl=ttl))
        await first.start()
        await second.start()
        store = stack.store()
        leases = SyncExecutor(store.client)
        try:
            async with conference(stack, first, ["alice", "bob", "carol"]) as conf:
                await wait_for(lambda: len(second.tracker.members(conf.id)) == 3, 5, "3 joins")
                # The lease loops take the lease for a conference with members.
                await wait_for(
                    lambda: leases.run(first.lease.holder(conf.id)) is not None, 5, "a lease holder"
                )
                holder_token = leases.run(first.lease.holder(conf.id))
                assert holder_token is not None
                holder, standby = (
                    (first, second) if holder_token == first.lease.token else (second, first)
                )
                assert holder_token == holder.lease.token
                # The holder dies right after Carol's leave, inside the debounce window.
                waiter = asyncio.ensure_future(standby.next_report(20))
                await conf.call("carol").bye(timeout=5)
                del conf.phones["carol"]
                await wait_for(
                    lambda: len(holder.tracker.members(conf.id)) == 2, 5, "the holder sees it"
                )
                died = time.monotonic()
                await crash(holder)
                report: RekeyReport = await waiter
                took = time.monotonic() - died
                assert report.reasons == ("takeover",), report.reasons
                assert report.epoch == 2
                assert set(report.verdicts.values()) == {"followed"}, report.verdicts
                assert leases.run(standby.lease.holder(conf.id)) == standby.lease.token
                assert holder.reports == []
                assert_on_epoch(stack, store, conf, 2)
                await wait_for(lambda: idle(standby), 5, "the standby idle")
                assert len(standby.reports) == 1
                assert len(rekey_reports(store, conf.id)) == 1
                print(f"\nholder died -> standby's takeover rekey done in {took:.1f} s (ttl {ttl})")
        finally:
            await bounded(first.close(), "close the first watcher")
            await bounded(second.close(), "close the second watcher")
            store.client.close()

    asyncio.run(scenario())


async def crash(watcher: Watcher) -> None:
    """The watcher stops as if its process died: no renewals, no AMI, nothing released."""
    await watcher.leases.stop()
    await watcher.dialer.stop()
    await watcher.rekeys.stop()
    await watcher.follower.close()
    await watcher.ami.close()
