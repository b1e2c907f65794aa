"""The roster watcher and rekey driver: ``secconf watcher serve --config FILE`` (docs/asterisk.md).

One process per Asterisk (more for standby).  :class:`Watcher` wires its parts
together:

- :class:`~secconf.asterisk.roster.RosterFollower` follows AMI and feeds
  :class:`~secconf.core.roster.RosterTracker`, which debounces the roster's changes
  into rekey decisions;
- :class:`~.roster_mirror.RosterMirror` keeps each bridge's roster in Redis
  (``P:roster:<conference>``, reconciled with ``ConfbridgeList`` after every
  (re)connect);
- :class:`~.lease_keeper.LeaseKeeper` holds the conferences' leases
  (``P:watcher-lease:<conference>``, ``SET NX PX``, renewed every ``lease_ttl / 3``):
  only its holder acts, so two watchers never rekey one conference twice; a standby
  takes over when the lease lapses (and rekeys once, since it cannot know how far
  the old holder got);
- :class:`~.rekey_driver.RekeyDriver` drives each rekey: the next epoch
  (:class:`~.minting.Minting`: the focus's `EpochMinter`, built once), the legs' re-INVITEs and the edge's switch
  verification (:class:`~.leg_switch.LegSwitches`), the verdicts and the
  ``on_failure`` policy (:class:`~.failed_legs.FailedLegs`: ``replace``, the
  default, hangs a failing leg up and dials the same identity back in; ``remove``
  only hangs it up);
- :class:`~.dialout.Dialer` **dials out** for REFERs the module accepted
  (``P:conf:{<conference>}:refer``, consumer group ``dialout``: each entry to one
  watcher, once) and for the replacement calls; outcomes go to
  ``P:dialout:<conference>``.

Each rekey's report (epoch, timings, verdicts; never a key) is logged and appended to
``P:rekeys:<conference>``.  Every Redis, HTTP and AMI call has a timeout.

Redis is spoken by the store only: the lease, rosters, REFER queue and journal are
:mod:`secconf.store.watcher`'s, dialogs and epochs the conference store's.  What Redis
answers reaches the watcher as store errors (an outage ``ServiceUnavailable``, a
refused command ``RedisRefused``, both ``SecconfError``), which its loops log before
going on.  The edge is read with :class:`secconf.media.control_client.AsyncHttpEdgeControl`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from secconf.core.roster import ConferenceEnded, MemberLeft, Output, RekeyReason, RosterTracker
from secconf.media.control_client import AsyncHttpEdgeControl
from secconf.store.conference_commands import ConferenceCommands
from secconf.store.executors import AsyncExecutor
from secconf.store.keywrap import load_key_file
from secconf.store.redis import connect
from secconf.store.watcher import ReferQueue, RosterStore, WatcherJournal, WatcherLease

from .ami import AmiClient
from .channels import Channels
from .conference_view import ConferenceView
from .dialout import Dialer, DialOutcome
from .failed_legs import FailedLegs
from .lease_keeper import LeaseKeeper
from .leg_switch import LegSwitches
from .minting import Minting
from .rekey_driver import RekeyDriver, RekeyReport
from .roster import RosterFollower
from .roster_mirror import RosterMirror
from .watcher_settings import WatcherSettings

# RekeyReport and WatcherSettings are the types of the Watcher's API (its settings, its
# reports); lab/demo_story.py imports them from here.
__all__ = ["RekeyReport", "Watcher", "WatcherSettings", "run", "serve"]

log = logging.getLogger("secconf.asterisk.watcher")


class Watcher:
    """AMI follower + Redis roster + lease + rekey driver + dial-outs (see the module doc)."""

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
        #: the asyncio client every Redis call of the watcher's loops goes through (the
        #: mint excepted: it runs the focus's blocking stores on a thread, minting.py)
        self.redis = AsyncExecutor(
            connect(focus.redis_url, timeout=max(settings.redis_timeout, focus.redis_timeout))
        )
        #: the focus's epoch minter, on a thread of its own (minting.py)
        self.minting = Minting(focus, load_key_file(focus.kek_file))
        # What the watcher asks of Redis, as operations (secconf.store.commands).
        self.conference_commands = ConferenceCommands(focus.redis_prefix)
        self.lease = WatcherLease(settings.prefix, settings.watcher_id, settings.lease_ttl)
        self.rosters = RosterStore(settings.prefix)
        self.refers = ReferQueue(settings.prefix, settings.watcher_id)
        self.journal = WatcherJournal(settings.prefix)
        self.ami = ami or AmiClient(settings.ami)
        # The watcher waits for the edge at least a second: it is no Kamailio worker.
        self.edge = (
            AsyncHttpEdgeControl(
                focus.edge_url, timeout=max(focus.edge_timeout, 1.0), token=focus.edge_token
            )
            if focus.edge_url
            else None
        )
        self.tracker = RosterTracker(settings.policy)
        self.channels = Channels(self.ami)
        self.mirror = RosterMirror(self.redis, self.rosters, self.tracker, self.channels)
        self.leases = LeaseKeeper(
            self.redis,
            self.lease,
            self.tracker,
            self._request_rekey,
            renew_every=settings.lease_ttl / 3,
        )
        self.dialer = Dialer(
            settings, self.ami, self.tracker, self.redis, self.refers, self.journal, clock
        )
        conferences = ConferenceView(self.redis, self.conference_commands)
        self.rekeys = RekeyDriver(
            settings,
            self.tracker,
            channels=self.channels,
            leases=self.leases,
            conferences=conferences,
            edge=self.edge,
            minting=self.minting,
            switches=LegSwitches(
                settings, self.ami, self.tracker, self.channels, conferences, self.edge, clock
            ),
            failed_legs=FailedLegs(
                settings.on_failure,
                self.ami,
                self.tracker,
                conferences,
                self.dialer,
                self._request_rekey,
            ),
            redis=self.redis,
            journal=self.journal,
            request_rekey=self._request_rekey,
            clock=clock,
        )
        self.follower = RosterFollower(
            self.ami, self.tracker, self.rekeys.on_rekey, on_change=self._on_change, clock=clock
        )
        self.ami.on_connected(self.mirror.reconcile)

    @property
    def reports(self) -> list[RekeyReport]:
        """Every rekey report published, oldest first."""
        return self.rekeys.reports

    @property
    def dialouts(self) -> list[DialOutcome]:
        """Every dial-out made, oldest first."""
        return self.dialer.dialouts

    async def next_report(self, timeout: float) -> RekeyReport:
        """The next rekey report (tests, operators)."""
        return await self.rekeys.next_report(timeout)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        await self.ami.start(wait=wait)
        self.follower.start()
        self.leases.start()
        self.dialer.start()

    async def close(self) -> None:
        await self.leases.stop()
        await self.dialer.stop()
        await self.rekeys.stop()
        await self.follower.close()
        await self.ami.close()
        for conference in self.tracker.conferences():
            await self.leases.release(conference)
        if self.edge is not None:
            await self.edge.aclose()
        await asyncio.to_thread(self.minting.close)
        await self.redis.client.aclose()

    # -- the parts' meeting points ----------------------------------------------------------

    def _request_rekey(self, conference: str, reason: RekeyReason) -> None:
        """A rekey the watcher itself asks for (a takeover, a retry, a member lost)."""
        self.tracker.request_rekey(conference, self.clock(), reason)
        self.follower.wake()

    async def _on_change(self, output: Output) -> None:
        """A roster change: Redis's roster follows; a channel or conference gone is forgotten."""
        if isinstance(output, MemberLeft):
            self.channels.forget(output.member.channel)
        elif isinstance(output, ConferenceEnded):
            self.dialer.forget(output.conference)
        await self.mirror.apply(output)
        if isinstance(output, ConferenceEnded):
            await self.leases.release(output.conference)


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
