"""The rekey driver: each due rekey of a conference, from the lease to the verdicts.

:class:`~secconf.core.roster.RosterTracker` debounces the roster's changes and
decides when a conference is due; the driver runs each decision, one at a time
per conference (a decision that comes while one runs is coalesced into the next
run):

1. the conference's **lease** (:class:`~.lease_keeper.LeaseKeeper`): only its
   holder acts;
2. the next **epoch**: the focus's :class:`~secconf.focus.epochs.EpochMinter`, built
   once from the focus's settings (Redis, KEK, edge, KMS) and run on a thread of its
   own (:class:`~.minting.Minting`): epoch n+1 wrapped in Redis and at the edge, after
   undoing a leftover epoch Redis has and the edge never got;
3. the legs' **switch** (:class:`~.leg_switch.LegSwitches`): each leg's re-INVITE
   trigger, then the edge's verification;
4. the **verdicts** (:func:`secconf.core.roster.plan_after_rekey`, pure) and the
   ``on_failure`` policy for the legs that failed (:class:`~.failed_legs.FailedLegs`).

Each rekey's report (epoch, timings, verdicts; never a key) is logged and appended
to ``P:rekeys:<conference>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from secconf.core.errors import SecconfError
from secconf.core.focus import ConferenceNotFound
from secconf.core.roster import Rekey, RekeyReason, RosterTracker, plan_after_rekey
from secconf.media.control_client import AsyncHttpEdgeControl
from secconf.store.conferences import ConferenceInfo
from secconf.store.executors import AsyncExecutor
from secconf.store.watcher import WatcherJournal

from .channels import Channels
from .conference_view import ConferenceView
from .failed_legs import FailedLegs
from .lease_keeper import LeaseKeeper
from .leg_switch import LegSwitches
from .minting import Minting
from .watcher_settings import WatcherSettings

__all__ = ["RekeyDriver", "RekeyReport", "verdict_counts"]

# Every part of the watcher logs as the watcher: one logger for operators to follow.
log = logging.getLogger("secconf.asterisk.watcher")


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


def verdict_counts(report: RekeyReport) -> dict[str, int]:
    counts: dict[str, int] = {}
    for verdict in report.verdicts.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


class RekeyDriver:
    """Runs the tracker's due rekeys (see the module doc) and publishes their reports."""

    def __init__(
        self,
        settings: WatcherSettings,
        tracker: RosterTracker,
        *,
        channels: Channels,
        leases: LeaseKeeper,
        conferences: ConferenceView,
        edge: AsyncHttpEdgeControl | None,
        minting: Minting,
        switches: LegSwitches,
        failed_legs: FailedLegs,
        redis: AsyncExecutor,
        journal: WatcherJournal,
        request_rekey: Callable[[str, RekeyReason], None],
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._tracker = tracker
        self._channels = channels
        self._leases = leases
        self._conferences = conferences
        self._edge = edge
        self._minting = minting
        self._switches = switches
        self._failed_legs = failed_legs
        self._redis = redis
        self._journal = journal
        self._request_rekey = request_rekey
        self._clock = clock
        #: every report published, oldest first (tests, operators)
        self.reports: list[RekeyReport] = []
        self._report_waiters: list[asyncio.Future[RekeyReport]] = []
        self._running: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, Rekey] = {}

    @property
    def busy(self) -> bool:
        """A rekey is running (or queued behind a running one)."""
        return bool(self._running)

    async def stop(self) -> None:
        """Abandon the rekeys under way (their reports are not published)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def next_report(self, timeout: float) -> RekeyReport:
        """The next rekey report (tests, operators)."""
        future: asyncio.Future[RekeyReport] = asyncio.get_running_loop().create_future()
        self._report_waiters.append(future)
        return await asyncio.wait_for(future, timeout)

    async def on_rekey(self, rekey: Rekey) -> None:
        """A due decision: run it, or queue it behind the running rekey of that conference."""
        conference = rekey.conference
        if conference in self._running:
            self._pending[conference] = rekey  # coalesced: the next run covers it
            return
        self._running[conference] = asyncio.ensure_future(self._run(rekey))

    async def _run(self, rekey: Rekey | None) -> None:
        conference = rekey.conference if rekey else ""
        try:
            while rekey is not None:
                report = await self._drive(rekey)
                if report is not None:
                    await self.publish(report)
                rekey = self._pending.pop(conference, None)
        finally:
            self._running.pop(conference, None)

    async def publish(self, report: RekeyReport) -> None:
        """Log and journal *report* (a journal Redis refuses is logged) and hand it to the
        waiters of :meth:`next_report`."""
        self.reports.append(report)
        summary = report.summary()
        log.info("rekey %s epoch %s: %s", report.conference, report.epoch, summary)
        try:
            await self._redis.run(self._journal.add_report(report.conference, summary))
        except SecconfError as exc:
            log.warning("rekey report for %s not stored: %s", report.conference, exc)
        waiters, self._report_waiters = self._report_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(report)

    async def _drive(self, rekey: Rekey) -> RekeyReport | None:
        conference = rekey.conference
        started = self._clock()
        info = await self._claim(conference)
        if info is None:
            return None
        epoch = await self._mint(conference, info)
        if epoch is None:
            return None
        report = RekeyReport(
            conference,
            epoch,
            tuple(sorted(reason.value for reason in rekey.reasons)),
            rekey.first_change,
            started,
            minted=self._clock(),
        )
        if info.kms_legs > 0:
            # the mint took this epoch from the KMS (a GTGK ticket naming the current
            # members); the module keys each KMS leg's re-INVITE with a TRANSFER_INIT.
            report.note = "kms: epoch from the KMS"
        await self._switch_legs(report)
        return report

    async def _claim(self, conference: str) -> ConferenceInfo | None:
        """The lease and the conference's state; ``None``: this watcher does not rekey it now
        (another holds the lease, it is not active, or Redis failed: then a retry is asked)."""
        try:
            if not await self._leases.hold(conference):
                holder = await self._leases.holder(conference)
                log.info("rekey of %s left to the lease holder %s", conference, holder)
                return None
            info = await self._conferences.conference(conference)
        except SecconfError as exc:
            log.warning("rekey of %s postponed: %s", conference, exc)
            self._request_rekey(conference, RekeyReason.RETRY)
            return None
        if info is None or info.state != "active":
            log.info("conference %s is not active in Redis: no rekey", conference)
            return None
        return info

    async def _mint(self, conference: str, info: ConferenceInfo) -> int | None:
        """The conference's next epoch, in Redis and at the edge; ``None`` if it is gone, or
        if minting failed (then a retry is asked)."""
        try:
            await self._drop_unpublished_epoch(conference, info.epoch)
            return await self._minting.mint(conference)
        except ConferenceNotFound:
            return None
        except SecconfError as exc:
            log.warning("minting an epoch for %s failed (%s): retrying", conference, exc)
            self._request_rekey(conference, RekeyReason.RETRY)
            return None

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
        if self._edge is None or epoch <= 1:
            return
        try:
            described = await self._edge.describe_conference(conference)
            if described is None:
                return
            at_edge = {int(e["epoch"]) for e in described.get("epochs", [])}
        except (SecconfError, ValueError, KeyError, TypeError) as exc:
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
        await self._conferences.drop_epoch(conference, epoch)

    async def _switch_legs(self, report: RekeyReport) -> None:
        """Every remaining leg to the report's epoch, verified at the edge, failures handled."""
        conference, epoch = report.conference, report.epoch
        channels = [member.channel for member in self._tracker.members(conference)]
        call_ids = {channel: await self._channels.call_id(channel) for channel in channels}
        report.switched_at = await self._switches.refresh(conference, epoch, call_ids)
        report.refreshed = self._clock()
        if channels and all(ch in report.switched_at for ch in channels):
            report.all_switched = max(report.switched_at.values())
        observations = await self._switches.verify(conference, epoch, call_ids)
        report.settled = self._clock()
        outcome = plan_after_rekey(
            observations,
            epoch,
            policy=self._settings.on_failure,
            accept_unverified=self._settings.accept_unverified,
        )
        report.verdicts = {channel: verdict.value for channel, verdict in outcome.verdicts.items()}
        report.removed, report.replaced = await self._failed_legs.handle(
            conference, outcome, call_ids
        )
