"""The watcher's leases (``P:watcher-lease:<conference>``): only the holder rekeys.

A watcher takes a conference's lease when it first rekeys it and renews every
lease of a conference with members every ``lease_ttl / 3``, so two watchers
never rekey one conference twice.  A standby that finds a lease it could not
hold before now free has taken the conference over: it asks for one rekey,
since it cannot know how far the old holder got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from secconf.core.errors import SecconfError
from secconf.core.roster import RekeyReason, RosterTracker
from secconf.store.executors import AsyncExecutor
from secconf.store.watcher import WatcherLease

__all__ = ["LeaseKeeper"]

# Every part of the watcher logs as the watcher: one logger for operators to follow.
log = logging.getLogger("secconf.asterisk.watcher")


class LeaseKeeper:
    """Takes, renews and releases this watcher's leases; notices takeovers."""

    def __init__(
        self,
        redis: AsyncExecutor,
        lease: WatcherLease,
        tracker: RosterTracker,
        request_rekey: Callable[[str, RekeyReason], None],
        *,
        renew_every: float,
    ) -> None:
        self._redis = redis
        self._lease = lease
        self._tracker = tracker
        self._request_rekey = request_rekey
        self._renew_every = renew_every
        #: conferences whose lease another watcher held when we last tried
        self._held_by_others: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._renew_loop())

    async def stop(self) -> None:
        """No more renewals (the leases lapse unless :meth:`release` gives them up)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def hold(self, conference: str) -> bool:
        """Take or renew *conference*'s lease; False if another watcher holds it.

        Raises a store error if Redis cannot say.
        """
        held = await self._redis.run(self._lease.hold(conference))
        if not held:
            self._held_by_others.add(conference)
        return held

    async def holder(self, conference: str) -> str | None:
        return await self._redis.run(self._lease.holder(conference))

    async def release(self, conference: str) -> None:
        """Give *conference*'s lease up (if Redis cannot be told, it lapses)."""
        with contextlib.suppress(SecconfError):
            await self._redis.run(self._lease.release(conference))
        self._held_by_others.discard(conference)

    async def _renew_loop(self) -> None:
        """Renew our leases; take over conferences whose holder's lease lapsed."""
        while True:
            await asyncio.sleep(self._renew_every)
            for conference in self._tracker.conferences():
                if not self._tracker.members(conference):
                    continue
                try:
                    held = await self._redis.run(self._lease.hold(conference))
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
                    self._request_rekey(conference, RekeyReason.TAKEOVER)
