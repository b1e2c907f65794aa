"""The roster watcher and rekey driver: ``secconf watcher serve --config FILE`` (docs/asterisk.md).

One process per Asterisk (more for standby).  It follows AMI with
:class:`~secconf.asterisk.roster.RosterFollower`, keeps each bridge's roster in
Redis (``P:roster:<conference>``, reconciled with ``ConfbridgeList`` after every
(re)connect), takes the debounced decisions of :class:`~secconf.core.roster.RosterTracker`
and drives each rekey:

1. the conference's **lease** (``P:watcher-lease:<conference>``, ``SET NX PX``,
   renewed every ``lease_ttl / 3``): only its holder acts, so two watchers never
   rekey one conference twice; a standby takes over when the lease lapses (and
   rekeys once, since it cannot know how far the old holder got);
2. the next **epoch**: :func:`secconf.focus.rekey.rekey` with the module's own
   settings (Redis, KEK, edge): epoch n+1 wrapped in Redis and at the edge;
3. per remaining channel, one at a time per channel, all channels in parallel (at
   most ``max_parallel``): the **re-INVITE trigger**
   (:meth:`~secconf.asterisk.ami.AmiClient.rekey_refresh`), then wait until the
   dialog record says the leg is on epoch n+1 (the module switched it at the 200 OK)
   or ``P:conf:{<conference>}:rekey-failed`` has the refusal, or ``refresh_timeout``;
4. the edge's **switch verification** (``GET /v1/conferences/{c}``) polled until
   every leg is ``followed``, ``not-followed`` or ``unverified``, or
   ``verify_timeout``;
5. the **verdicts** (:func:`secconf.core.roster.plan_after_rekey`, pure) and the
   policy for every leg that refused, did not answer in time or did not follow:
   ``replace`` (the default) hangs it up (AMI ``Hangup``) and dials the same
   identity back into the bridge (the module keys the new call with the current
   epoch; a failed replacement leaves the member removed and asks for another
   rekey), ``remove`` only hangs it up.

It also **dials out** for REFERs the module accepted: ``P:conf:{<conference>}:refer`` is
read with the consumer group ``dialout`` (each entry to one watcher, once), each
target is called with AMI ``Originate`` of ``PJSIP/kamailio-out/<target>`` into
``[secconf-dialout]`` with the ``X-Secconf-Conference`` header, and the outcome is
appended to ``P:dialout:<conference>``.

Each rekey's report (epoch, timings, verdicts; never a key) is logged and appended to
``P:rekeys:<conference>``.  Every Redis, HTTP and AMI call has a timeout.

Redis is spoken by the store only: the lease, rosters, REFER queue and journal are
:mod:`secconf.store.watcher`'s, dialogs and epochs the conference store's.  What Redis
answers reaches the watcher as store errors (an outage ``ServiceUnavailable``, a
refused command ``RedisRefused``, both ``SecconfError``), which its loops log before
going on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import httpx

from secconf.core.config import ConfigError, Schema, unknown_setting
from secconf.core.errors import SecconfError
from secconf.core.focus import ConferenceNotFound
from secconf.core.roster import (
    ConferenceEnded,
    FailurePolicy,
    LegObservation,
    LegVerdict,
    MemberJoined,
    MemberLeft,
    Output,
    Rekey,
    RekeyPolicy,
    RekeyReason,
    RosterTracker,
    leg_settled,
    plan_after_rekey,
)
from secconf.focus.rekey import rekey as mint_epoch
from secconf.focus.settings import Settings as FocusSettings
from secconf.focus.settings import load_settings as load_focus_settings
from secconf.store.conferences import ConferenceStore, connect_blocking
from secconf.store.keywrap import KeyWrapper, load_key_file
from secconf.store.redis import all_redis_errors
from secconf.store.watcher import ReferQueue, RosterEntry, RosterStore, WatcherJournal, WatcherLease

from .ami import AmiClient, AmiError, AmiSettings
from .roster import RosterFollower

__all__ = [
    "RekeyReport",
    "Watcher",
    "WatcherSettings",
    "load_watcher_settings",
    "run",
]

log = logging.getLogger("secconf.asterisk.watcher")

P = ParamSpec("P")
T = TypeVar("T")


class WatcherConfigError(ConfigError):
    """The watcher's configuration is unusable; the message names the key."""


#: Every setting the watcher reads (config/watcher.toml, docs/asterisk.md); anything else is
#: refused. ``[rekey]`` is checked by RekeyPolicy.from_mapping (it names an unknown key).
SCHEMA: Final[Schema] = {
    "watcher": frozenset({
        "id", "focus_config", "lease_ttl", "refresh_timeout", "verify_timeout", "poll_interval",
        "max_parallel", "on_failure", "accept_unverified", "redis_timeout",
    }),
    "dialout": frozenset({"endpoint", "context", "exten", "ring_timeout", "poll"}),
    "ami": frozenset({
        "host", "port", "username", "secret_file", "connect_timeout", "action_timeout",
        "keepalive",
    }),
    "rekey": None,
}  # fmt: skip


@dataclass(frozen=True)
class WatcherSettings:
    ami: AmiSettings
    focus: FocusSettings = field(repr=False)
    policy: RekeyPolicy = field(default_factory=RekeyPolicy)
    watcher_id: str = ""
    lease_ttl: float = 15.0
    refresh_timeout: float = 5.0
    verify_timeout: float = 15.0
    poll_interval: float = 0.1
    max_parallel: int = 8
    on_failure: FailurePolicy = FailurePolicy.REPLACE
    accept_unverified: bool = True
    redis_timeout: float = 1.0
    #: dial-out (REFER targets, replacement calls): seconds a target may ring
    dialout_timeout: float = 30.0
    #: seconds between reads of the conferences' REFER streams
    dialout_poll: float = 0.25
    #: the pjsip endpoint whose outbound_proxy is Kamailio (config/asterisk/pjsip.conf)
    dialout_endpoint: str = "kamailio-out"
    #: dialplan context and extension that put an answered dial-out into its bridge
    dialout_context: str = "secconf-dialout"
    dialout_exten: str = "join"

    @property
    def prefix(self) -> str:
        return self.focus.redis_prefix


def _number(table: Mapping[str, Any], key: str, default: float, *, section: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise WatcherConfigError(f"[{section}] {key} must be a positive number")
    return float(value)


def load_watcher_settings(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> WatcherSettings:
    """Read config/watcher.toml (see the sample); relative paths are relative to the file."""
    environ = os.environ if env is None else env
    config_path = Path(path)
    try:
        data = tomllib.loads(config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise WatcherConfigError(f"cannot read {config_path}: {exc}") from None
    unknown = unknown_setting(data, SCHEMA)
    if unknown is not None:
        raise WatcherConfigError(f"{config_path}: unknown setting {unknown} (docs/asterisk.md)")
    base = config_path.parent
    watcher = data.get("watcher", {})
    ami = data.get("ami", {})
    focus_path = environ.get("SECCONF_KAMAILIO_CONFIG") or watcher.get("focus_config")
    if not focus_path:
        raise WatcherConfigError("[watcher] focus_config (the Kamailio module's TOML) is required")
    focus_file = Path(focus_path)
    # The watcher relays no INVITE to the mixer: it never reads the join-token secret.
    focus = load_focus_settings(
        focus_file if focus_file.is_absolute() else base / focus_file, env, mixer_token=False
    )
    secret = environ.get("SECCONF_AMI_SECRET", "")
    secret_file = environ.get("SECCONF_AMI_SECRET_FILE") or ami.get("secret_file")
    if not secret and secret_file:
        secret_path = Path(secret_file)
        secret_path = secret_path if secret_path.is_absolute() else base / secret_path
        try:
            lines = secret_path.read_text().splitlines()
        except OSError as exc:
            raise WatcherConfigError(f"[ami] secret_file: {exc}") from None
        secret = lines[0].strip() if lines else ""
    if not secret:
        raise WatcherConfigError("[ami] secret_file (or $SECCONF_AMI_SECRET) is required")
    port = environ.get("SECCONF_AMI_PORT") or ami.get("port", 5038)
    try:
        ami_settings = AmiSettings(
            host=str(ami.get("host", "127.0.0.1")),
            port=int(port),
            username=str(ami.get("username", "secconf")),
            secret=secret,
            connect_timeout=_number(ami, "connect_timeout", 2.0, section="ami"),
            action_timeout=_number(ami, "action_timeout", 2.0, section="ami"),
            keepalive=_number(ami, "keepalive", 10.0, section="ami"),
        )
        policy = RekeyPolicy.from_mapping(data.get("rekey", {}))
    except (ValueError, SecconfError) as exc:
        raise WatcherConfigError(str(exc)) from None
    on_failure = str(watcher.get("on_failure", "replace"))
    if on_failure not in ("replace", "remove"):
        raise WatcherConfigError('[watcher] on_failure must be "replace" or "remove"')
    dialout = data.get("dialout", {})
    endpoint = str(dialout.get("endpoint", "kamailio-out"))
    context = str(dialout.get("context", "secconf-dialout"))
    exten = str(dialout.get("exten", "join"))
    for name, value in (("endpoint", endpoint), ("context", context), ("exten", exten)):
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise WatcherConfigError(f"[dialout] {name} must be letters, digits, '-' or '_'")
    accept_unverified = watcher.get("accept_unverified", True)
    if not isinstance(accept_unverified, bool):
        raise WatcherConfigError("[watcher] accept_unverified must be true or false")
    max_parallel = watcher.get("max_parallel", 8)
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        raise WatcherConfigError("[watcher] max_parallel must be a positive integer")
    return WatcherSettings(
        ami=ami_settings,
        focus=focus,
        policy=policy,
        watcher_id=str(watcher.get("id") or f"{socket.gethostname()}-{os.getpid()}"),
        lease_ttl=_number(watcher, "lease_ttl", 15.0, section="watcher"),
        refresh_timeout=_number(watcher, "refresh_timeout", 5.0, section="watcher"),
        verify_timeout=_number(watcher, "verify_timeout", 15.0, section="watcher"),
        poll_interval=_number(watcher, "poll_interval", 0.1, section="watcher"),
        max_parallel=max_parallel,
        on_failure=FailurePolicy(on_failure),
        accept_unverified=accept_unverified,
        redis_timeout=_number(watcher, "redis_timeout", 1.0, section="watcher"),
        dialout_timeout=_number(dialout, "ring_timeout", 30.0, section="dialout"),
        dialout_poll=_number(dialout, "poll", 0.25, section="dialout"),
        dialout_endpoint=endpoint,
        dialout_context=context,
        dialout_exten=exten,
    )


# -- reports ----------------------------------------------------------------------------


@dataclass
class RekeyReport:
    """One rekey as the watcher drove it (times in seconds on the monotonic clock)."""

    conference: str
    epoch: int
    reasons: tuple[str, ...]
    first_change: float
    started: float
    minted: float = 0.0
    refreshed: float = 0.0
    settled: float = 0.0
    #: when the last remaining leg's dialog record showed the new epoch
    all_switched: float | None = None
    verdicts: dict[str, str] = field(default_factory=dict)
    switched_at: dict[str, float] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    note: str = ""
    #: channels hung up and dialled back in (policy replace): old channel -> new Uniqueid
    replaced: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, str]:
        def ms(value: float | None) -> str:
            return "" if value is None else f"{(value - self.started) * 1000:.0f}"

        return {
            "epoch": str(self.epoch),
            "reasons": ",".join(self.reasons),
            "wait_ms": f"{(self.started - self.first_change) * 1000:.0f}",
            "mint_ms": ms(self.minted),
            "refresh_ms": ms(self.refreshed),
            "all_switched_ms": ms(self.all_switched),
            "settled_ms": ms(self.settled),
            "verdicts": json.dumps(self.verdicts, sort_keys=True),
            "removed": ",".join(self.removed),
            "replaced": json.dumps(self.replaced, sort_keys=True),
            "note": self.note,
        }


# -- the watcher --------------------------------------------------------------------------


class Watcher:
    """AMI follower + Redis roster + lease + rekey driver (see the module doc)."""

    def __init__(
        self,
        settings: WatcherSettings,
        *,
        ami: AmiClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        focus = settings.focus
        self.redis = connect_blocking(
            focus.redis_url, timeout=max(settings.redis_timeout, focus.redis_timeout)
        )
        self.store = ConferenceStore(
            self.redis, KeyWrapper(load_key_file(focus.kek_file), focus.kek_id), focus.redis_prefix
        )
        self.lease = WatcherLease(
            self.redis, settings.prefix, settings.watcher_id, settings.lease_ttl
        )
        self.rosters = RosterStore(self.redis, settings.prefix)
        self.refers = ReferQueue(self.redis, settings.prefix, settings.watcher_id)
        self.journal = WatcherJournal(self.redis, settings.prefix)
        self.ami = ami or AmiClient(settings.ami)
        self.tracker = RosterTracker(settings.policy)
        self.follower = RosterFollower(
            self.ami, self.tracker, self._on_rekey, on_change=self._on_change, clock=clock
        )
        self.ami.on_connected(self._reconcile)
        headers = {"authorization": f"Bearer {focus.edge_token}"} if focus.edge_token else {}
        self.edge = (
            httpx.AsyncClient(
                base_url=focus.edge_url,
                headers=headers,
                timeout=max(focus.edge_timeout, 1.0),
                trust_env=False,
            )
            if focus.edge_url
            else None
        )
        self.reports: list[RekeyReport] = []
        self._report_waiters: list[asyncio.Future[RekeyReport]] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, Rekey] = {}
        self._call_ids: dict[str, str] = {}
        self._channel_locks: dict[str, asyncio.Lock] = {}
        self._held_by_others: set[str] = set()
        self._parallel = asyncio.Semaphore(settings.max_parallel)
        self._lease_task: asyncio.Task[None] | None = None
        self._dialout_task: asyncio.Task[None] | None = None
        self._originates: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._dialling: set[asyncio.Task[DialOutcome]] = set()
        self.dialouts: list[DialOutcome] = []
        self.ami.on_event("OriginateResponse", self._on_originate_response)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        await self.ami.start(wait=wait)
        self.follower.start()
        self._lease_task = asyncio.ensure_future(self._lease_loop())
        self._dialout_task = asyncio.ensure_future(self._refer_loop())

    async def close(self) -> None:
        tasks = [
            t
            for t in (
                self._lease_task,
                self._dialout_task,
                *self._running.values(),
                *self._dialling,
            )
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.follower.close()
        await self.ami.close()
        for conference in self.tracker.conferences():
            with contextlib.suppress(SecconfError):
                await asyncio.to_thread(self.lease.release, conference)
        if self.edge is not None:
            await self.edge.aclose()
        self.redis.close()

    async def next_report(self, timeout: float) -> RekeyReport:
        """The next rekey report (tests, operators)."""
        future: asyncio.Future[RekeyReport] = asyncio.get_running_loop().create_future()
        self._report_waiters.append(future)
        return await asyncio.wait_for(future, timeout)

    # -- the roster in Redis -----------------------------------------------------------------

    async def _on_change(self, output: Output) -> None:
        try:
            if isinstance(output, MemberJoined):
                member = output.member
                entry = RosterEntry(
                    member.uniqueid, member.caller_id, await self._call_id(member.channel)
                )
                await asyncio.to_thread(self.rosters.add, output.conference, member.channel, entry)
            elif isinstance(output, MemberLeft):
                self._call_ids.pop(output.member.channel, None)
                self._channel_locks.pop(output.member.channel, None)
                await asyncio.to_thread(
                    self.rosters.remove, output.conference, output.member.channel
                )
            elif isinstance(output, ConferenceEnded):
                self.refers.forget(output.conference)
                await asyncio.to_thread(self.rosters.delete, output.conference)
                with contextlib.suppress(SecconfError):
                    await asyncio.to_thread(self.lease.release, output.conference)
                self._held_by_others.discard(output.conference)
        except SecconfError as exc:
            log.warning("roster write for %s failed: %s", output.conference, exc)

    async def _reconcile(self, client: AmiClient) -> None:
        """After every (re)connect (and the follower's resync): Redis = what Asterisk lists."""
        rosters: dict[str, dict[str, RosterEntry]] = {}
        for conference in self.tracker.conferences():
            members = self.tracker.members(conference)
            rosters[conference] = {}
            for member in members:
                call_id = await self._call_id(member.channel)
                rosters[conference][member.channel] = RosterEntry(
                    member.uniqueid, member.caller_id, call_id
                )
        try:
            await asyncio.to_thread(self.rosters.replace_all, rosters)
        except SecconfError as exc:
            log.warning("roster reconcile failed: %s", exc)

    async def _conference_read(self, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A read of the conference store, in a thread; whatever Redis answers, a store error.

        The conference store passes on what Redis refuses (``WRONGTYPE``, ...) as redis-py
        raises it, for the focus to fail loudly; the watcher's polls log it and go on, as
        they do when Redis is down.
        """
        with all_redis_errors("read the conference store"):
            return await asyncio.to_thread(read, *args, **kwargs)

    async def _call_id(self, channel: str) -> str:
        """The SIP Call-ID of a PJSIP channel (the dialog record's key), cached."""
        known = self._call_ids.get(channel)
        if known:
            return known
        try:
            call_id = await self.ami.getvar(channel, "CHANNEL(pjsip,call-id)")
        except AmiError as exc:
            log.warning("Call-ID of %s unknown: %s", channel, exc)
            return ""
        if call_id:
            self._call_ids[channel] = call_id
        return call_id

    # -- leases --------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Renew our leases; take over conferences whose holder's lease lapsed."""
        while True:
            await asyncio.sleep(self.settings.lease_ttl / 3)
            for conference in self.tracker.conferences():
                if not self.tracker.members(conference):
                    continue
                try:
                    held = await asyncio.to_thread(self.lease.hold, conference)
                except SecconfError as exc:
                    log.warning("lease renewal for %s failed: %s", conference, exc)
                    continue
                if not held:
                    self._held_by_others.add(conference)
                elif conference in self._held_by_others:
                    self._held_by_others.discard(conference)
                    log.warning(
                        "took over conference %s from a lapsed watcher: rekeying", conference
                    )
                    self.tracker.request_rekey(conference, self.clock(), RekeyReason.TAKEOVER)
                    self.follower.wake()

    # -- rekeys --------------------------------------------------------------------------------

    async def _on_rekey(self, rekey: Rekey) -> None:
        """A due decision: run it, or queue it behind the running rekey of that conference."""
        conference = rekey.conference
        if conference in self._running:
            self._pending[conference] = rekey  # coalesced: the next run covers it
            return
        self._running[conference] = asyncio.ensure_future(self._rekey_loop(rekey))

    async def _rekey_loop(self, rekey: Rekey | None) -> None:
        conference = rekey.conference if rekey else ""
        try:
            while rekey is not None:
                report = await self._drive(rekey)
                if report is not None:
                    self._publish(report)
                rekey = self._pending.pop(conference, None)
        finally:
            self._running.pop(conference, None)

    def _publish(self, report: RekeyReport) -> None:
        self.reports.append(report)
        summary = report.summary()
        log.info("rekey %s epoch %s: %s", report.conference, report.epoch, summary)
        try:
            self.journal.add_report(report.conference, summary)
        except SecconfError as exc:
            log.warning("rekey report for %s not stored: %s", report.conference, exc)
        waiters, self._report_waiters = self._report_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(report)

    def _retry(self, conference: str) -> None:
        self.tracker.request_rekey(conference, self.clock(), RekeyReason.RETRY)
        self.follower.wake()

    async def _drive(self, rekey: Rekey) -> RekeyReport | None:
        conference = rekey.conference
        started = self.clock()
        try:
            if not await asyncio.to_thread(self.lease.hold, conference):
                holder = await asyncio.to_thread(self.lease.holder, conference)
                self._held_by_others.add(conference)
                log.info("rekey of %s left to the lease holder %s", conference, holder)
                return None
            info = await self._conference_read(self.store.get, conference)
        except SecconfError as exc:
            log.warning("rekey of %s postponed: %s", conference, exc)
            self._retry(conference)
            return None
        if info is None or info.state != "active":
            log.info("conference %s is not active in Redis: no rekey", conference)
            return None
        try:
            await self._drop_unpublished_epoch(conference, info.epoch)
            epoch = await asyncio.to_thread(mint_epoch, conference, self.settings.focus)
        except ConferenceNotFound:
            return None
        except SecconfError as exc:
            log.warning("minting an epoch for %s failed (%s): retrying", conference, exc)
            self._retry(conference)
            return None
        report = RekeyReport(
            conference,
            epoch,
            tuple(sorted(reason.value for reason in rekey.reasons)),
            rekey.first_change,
            started,
            minted=self.clock(),
        )
        if info.kms_legs > 0:
            # mint_epoch took this epoch from the KMS (a GTGK ticket naming the current
            # members); the module keys each KMS leg's re-INVITE with a TRANSFER_INIT.
            report.note = "kms: epoch from the KMS"
        channels = [member.channel for member in self.tracker.members(conference)]
        call_ids = {channel: await self._call_id(channel) for channel in channels}
        await asyncio.gather(
            *(self._refresh(conference, ch, call_ids[ch], epoch, report) for ch in channels)
        )
        report.refreshed = self.clock()
        if channels and all(ch in report.switched_at for ch in channels):
            report.all_switched = max(report.switched_at.values())
        observations = await self._verify(conference, epoch, call_ids)
        report.settled = self.clock()
        outcome = plan_after_rekey(
            observations,
            epoch,
            policy=self.settings.on_failure,
            accept_unverified=self.settings.accept_unverified,
        )
        report.verdicts = {channel: verdict.value for channel, verdict in outcome.verdicts.items()}
        if self.settings.on_failure is FailurePolicy.REPLACE and outcome.remove:
            await self._replace(
                conference, epoch, outcome.remove, call_ids, outcome.verdicts, report
            )
            return report
        removed = []
        for channel in outcome.remove:
            log.warning(
                "conference %s: %s %s on epoch %d: hanging up (policy remove)",
                conference,
                channel,
                outcome.verdicts[channel].value,
                epoch,
            )
            try:
                await self.ami.hangup(channel)
                removed.append(channel)
            except AmiError as exc:
                log.warning("hangup of %s failed: %s", channel, exc)
        report.removed = tuple(removed)
        return report

    async def _drop_unpublished_epoch(self, conference: str, epoch: int) -> None:
        """Undo Redis's current *epoch* if the edge never got it (a mint that timed out late).

        A mint whose Redis write times out fails before the edge is told, but
        Redis may still run that write once it answers again (the script was
        already in its socket buffer; tests/asterisk/test_faults.py).  Redis
        then names as current an epoch the edge does not have, and the next
        mint would build on it.  Only the lease holder mints, so an epoch newer
        than every epoch at the edge is such a leftover: it is dropped
        (compare-and-delete in one script) before minting again.
        """
        if self.edge is None or epoch <= 1:
            return
        try:
            response = await self.edge.get(f"/v1/conferences/{conference}")
            if response.status_code != 200:
                return
            at_edge = {int(e["epoch"]) for e in response.json().get("epochs", [])}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("edge epochs of %s unreadable: %s", conference, exc)
            return
        if not at_edge or epoch <= max(at_edge):
            return
        log.warning(
            "conference %s: epoch %d is in Redis but not at the edge (a mint that timed "
            "out): dropping it",
            conference,
            epoch,
        )
        await asyncio.to_thread(self.store.drop_epoch, conference, epoch)

    async def _refresh(
        self, conference: str, channel: str, call_id: str, epoch: int, report: RekeyReport
    ) -> None:
        """One re-INVITE on *channel*; return when its leg is on *epoch*, refused, or timed out."""
        lock = self._channel_locks.setdefault(channel, asyncio.Lock())
        async with self._parallel, lock:
            try:
                await self.ami.rekey_refresh(channel)
            except AmiError as exc:
                log.warning("refresh of %s failed: %s", channel, exc)
                return
            if not call_id:
                return
            deadline = self.clock() + self.settings.refresh_timeout
            while self.clock() < deadline:
                try:
                    dialog = await self._conference_read(self.store.dialog, conference, call_id)
                    if dialog is not None and (dialog.epoch or 0) >= epoch:
                        report.switched_at[channel] = self.clock()
                        return
                    if dialog is None or await self._refused(conference, call_id, epoch):
                        return
                except SecconfError as exc:
                    log.warning("dialog read for %s failed: %s", channel, exc)
                if channel not in {m.channel for m in self.tracker.members(conference)}:
                    return
                await asyncio.sleep(self.settings.poll_interval)
            log.warning("conference %s: %s did not answer the rekey in time", conference, channel)

    async def _refused(self, conference: str, call_id: str, epoch: int) -> bool:
        failures = await self._conference_read(self.store.rekey_failures, conference)
        return any(
            entry.get("call_id") == call_id and entry.get("epoch") == str(epoch)
            for _, entry in failures
        )

    async def _verify(
        self, conference: str, epoch: int, call_ids: Mapping[str, str]
    ) -> list[LegObservation]:
        """Poll the edge until every leg settled for *epoch* (or ``verify_timeout``)."""
        deadline = self.clock() + self.settings.verify_timeout
        legs: dict[str, str] = {}
        for channel, call_id in call_ids.items():
            with contextlib.suppress(SecconfError):
                dialog = (
                    await self._conference_read(self.store.dialog, conference, call_id)
                    if call_id
                    else None
                )
                if dialog is not None:
                    legs[channel] = dialog.leg
        while True:
            observations = await self._observe(conference, epoch, call_ids, legs)
            if all(leg_settled(o, epoch) for o in observations) or self.clock() >= deadline:
                return observations
            await asyncio.sleep(self.settings.poll_interval)

    async def _observe(
        self,
        conference: str,
        epoch: int,
        call_ids: Mapping[str, str],
        legs: Mapping[str, str],
    ) -> list[LegObservation]:
        described: dict[str, dict[str, Any]] = {}
        if self.edge is not None:
            try:
                response = await self.edge.get(f"/v1/conferences/{conference}")
                if response.status_code == 200:
                    described = {leg["leg"]: leg for leg in response.json().get("legs", [])}
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("edge state of %s unreadable: %s", conference, exc)
        try:
            failures = await self._conference_read(self.store.rekey_failures, conference)
        except SecconfError:
            failures = []
        refused = {
            entry.get("call_id")
            for _, entry in failures
            if entry.get("epoch") == str(epoch) and entry.get("call_id")
        }
        present = {member.channel for member in self.tracker.members(conference)}
        observations = []
        for channel, call_id in call_ids.items():
            leg = described.get(legs.get(channel, ""))
            switch = (leg or {}).get("switch") or {}
            observations.append(
                LegObservation(
                    channel=channel,
                    epoch=None if leg is None else int(leg["epoch"]),
                    switch_state=str(switch.get("state", "none")),
                    switch_epoch=switch.get("epoch"),
                    refused=call_id in refused,
                    present=channel in present,
                )
            )
        return observations

    # -- dial-out: REFER targets and replacement calls --------------------------------------

    def _on_originate_response(self, fields: Mapping[str, str]) -> None:
        future = self._originates.get(fields.get("Uniqueid", ""))
        if future is not None and not future.done():
            future.set_result(dict(fields))

    async def dial_out(
        self, conference: str, target: str, *, reason: str, referrer: str = ""
    ) -> DialOutcome:
        """Make Asterisk call *target* into *conference*'s bridge; wait for the outcome.

        AMI ``Originate`` (async) of ``PJSIP/<dialout_endpoint>/<target>`` (the
        endpoint's ``outbound_proxy`` is Kamailio, which keys the call and finds
        the target's contact) into ``[secconf-dialout]`` ``join`` with
        ``SECCONF_CONF`` and the header the module requires
        (``PJSIP_HEADER(add,X-Secconf-Conference)``).  The channel's Uniqueid is
        chosen here (``ChannelId``), so its ``OriginateResponse`` and its
        ``ConfbridgeJoin`` are recognised.  The outcome (never a key) is logged
        and appended to ``P:dialout:<conference>``.
        """
        started = self.clock()
        channel_id = f"secconf-dialout-{secrets.token_hex(8)}"
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._originates[channel_id] = future
        settings = self.settings
        result, detail, channel = "failed", "", ""
        if reason == "replace":
            # The same member back with the current key: no rekey for its join.
            self.tracker.quiet(conference, channel_id)
        try:
            await self.ami.originate(
                f"PJSIP/{settings.dialout_endpoint}/{target}",
                context=settings.dialout_context,
                exten=settings.dialout_exten,
                variables={
                    "SECCONF_CONF": conference,
                    "PJSIP_HEADER(add,X-Secconf-Conference)": conference,
                },
                caller_id=f'"conference" <conf-{conference}>',
                ring_timeout=settings.dialout_timeout,
                channel_id=channel_id,
            )
            response = await asyncio.wait_for(
                future, settings.dialout_timeout + settings.ami.action_timeout + 2.0
            )
            channel = response.get("Channel", "")
            if response.get("Response", "").lower() == "success":
                result = "answered"
            detail = f"reason {response.get('Reason', '?')}"
        except AmiError as exc:
            detail = f"originate refused: {exc}"
        except TimeoutError:
            detail = "no OriginateResponse in time"
        finally:
            self._originates.pop(channel_id, None)
            if result != "answered":
                self.tracker.unquiet(conference, channel_id)
        outcome = DialOutcome(
            conference, target, reason, result, detail, channel_id, channel, referrer,
            started, self.clock(),
        )  # fmt: skip
        self.dialouts.append(outcome)
        log.info("dial-out %s to %s in %s: %s (%s)", reason, target, conference, result, detail)
        try:
            await asyncio.to_thread(self._record_dialout, outcome)
        except SecconfError as exc:
            log.warning("dial-out record for %s not stored: %s", conference, exc)
        return outcome

    def _record_dialout(self, outcome: DialOutcome) -> None:
        self.journal.add_dialout(outcome.conference, outcome.fields())

    async def _replace(
        self,
        conference: str,
        epoch: int,
        channels: tuple[str, ...],
        call_ids: Mapping[str, str],
        verdicts: Mapping[str, LegVerdict],
        report: RekeyReport,
    ) -> None:
        """Policy ``replace``: hang each failing leg up and dial its identity back in.

        The new call is keyed by the module with the conference's current epoch
        (the one just minted).  A leg whose identity is unknown, or whose
        replacement fails (not registered, refuses, no answer), stays removed,
        and the conference is rekeyed once more: that member had been offered
        the new key in signalling.  No member stays on an old key.
        """
        identities: dict[str, str] = {}
        for channel in channels:
            call_id = call_ids.get(channel, "")
            with contextlib.suppress(SecconfError):
                dialog = (
                    await self._conference_read(self.store.dialog, conference, call_id)
                    if call_id
                    else None
                )
                if dialog is not None:
                    identities[channel] = dialog.identity
        removed: list[str] = []
        lost = False
        for channel in channels:
            identity = identities.get(channel)
            log.warning(
                "conference %s: %s %s on epoch %d: hanging up, %s",
                conference, channel, verdicts[channel].value, epoch,
                f"calling {identity} back" if identity else "identity unknown: removed",
            )  # fmt: skip
            if identity:
                # Its leave is not a departure: the same member comes back.
                self.tracker.quiet(conference, channel)
            try:
                await self.ami.hangup(channel)
            except AmiError as exc:
                log.warning("hangup of %s failed: %s", channel, exc)
                self.tracker.unquiet(conference, channel)
                continue
            if not identity:
                removed.append(channel)
                lost = True
                continue
            outcome = await self.dial_out(conference, identity, reason="replace")
            if outcome.result == "answered":
                report.replaced[channel] = outcome.channel_id
            else:
                removed.append(channel)
                lost = True
        report.removed = tuple(removed)
        if lost:
            self.tracker.request_rekey(conference, self.clock(), RekeyReason.LEAVE)
            self.follower.wake()

    async def _refer_loop(self) -> None:
        """Consume ``P:conf:{<conference>}:refer`` (REFERs the module accepted): one dial-out each.

        Every watcher reads with the consumer group ``dialout``: Redis hands each
        entry to exactly one of them (XREADGROUP), which dials it once and
        acknowledges it when done.  An entry taken by a watcher that died stays
        pending (not dialled twice).
        """
        while True:
            await asyncio.sleep(self.settings.dialout_poll)
            for conference in self.tracker.conferences():
                try:
                    entries = await asyncio.to_thread(self.refers.take, conference)
                except SecconfError as exc:
                    log.warning("REFER stream of %s unreadable: %s", conference, exc)
                    continue
                for entry_id, fields in entries:
                    task = asyncio.ensure_future(self._dial_refer(conference, entry_id, fields))
                    self._dialling.add(task)
                    task.add_done_callback(self._dialling.discard)

    async def _dial_refer(
        self, conference: str, entry_id: str, fields: Mapping[str, str]
    ) -> DialOutcome:
        target = fields.get("target", "")
        try:
            if fields.get("conference", conference) != conference or not target.startswith("sip:"):
                outcome = DialOutcome(
                    conference, target, "refer", "failed", "unusable REFER entry", "", "",
                    fields.get("referrer", ""), self.clock(), self.clock(),
                )  # fmt: skip
                await asyncio.to_thread(self._record_dialout, outcome)
                return outcome
            return await self.dial_out(
                conference, target, reason="refer", referrer=fields.get("referrer", "")
            )
        finally:
            with contextlib.suppress(SecconfError):
                await asyncio.to_thread(self.refers.ack, conference, entry_id)


@dataclass(frozen=True)
class DialOutcome:
    """One dial-out as the watcher made it (times on the monotonic clock; no keys)."""

    conference: str
    target: str
    reason: str  # "refer" or "replace"
    result: str  # "answered" or "failed"
    detail: str
    channel_id: str
    channel: str
    referrer: str
    started: float
    finished: float

    def fields(self) -> dict[str, str]:
        return {
            "target": self.target,
            "reason": self.reason,
            "result": self.result,
            "detail": self.detail,
            "uniqueid": self.channel_id,
            "channel": self.channel,
            "referrer": self.referrer,
            "ms": f"{(self.finished - self.started) * 1000:.0f}",
        }


def verdict_counts(report: RekeyReport) -> dict[str, int]:
    counts: dict[str, int] = {}
    for verdict in report.verdicts.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


async def serve(settings: WatcherSettings, stop: asyncio.Event | None = None) -> None:
    watcher = Watcher(settings)
    await watcher.start(wait=False)
    log.info("watcher %s following AMI at %s", settings.watcher_id, settings.ami)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await watcher.close()


def run(settings: WatcherSettings) -> None:
    """``secconf watcher serve``: until SIGINT/SIGTERM."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    asyncio.run(main())


__all__ += ["DialOutcome", "LegVerdict", "serve", "verdict_counts"]
