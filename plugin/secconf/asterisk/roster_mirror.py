"""Each bridge's roster in Redis (``P:roster:<conference>``), as the follower sees it.

Members joining and leaving are written as they come; after every AMI
(re)connect, once the follower resynchronised, Redis is made to list exactly
what Asterisk lists (``ConfbridgeList``): changes missed while disconnected
leave nothing behind.
"""

from __future__ import annotations

import logging

from secconf.core.errors import SecconfError
from secconf.core.roster import ConferenceEnded, MemberJoined, MemberLeft, Output, RosterTracker
from secconf.store.executors import AsyncExecutor
from secconf.store.watcher import RosterEntry, RosterStore

from .ami import AmiClient
from .channels import Channels

__all__ = ["RosterMirror"]

# Every part of the watcher logs as the watcher: one logger for operators to follow.
log = logging.getLogger("secconf.asterisk.watcher")


class RosterMirror:
    """Keeps :class:`~secconf.store.watcher.RosterStore` equal to the tracker's members."""

    def __init__(
        self,
        redis: AsyncExecutor,
        rosters: RosterStore,
        tracker: RosterTracker,
        channels: Channels,
    ) -> None:
        self._redis = redis
        self._rosters = rosters
        self._tracker = tracker
        self._channels = channels

    async def apply(self, output: Output) -> None:
        """Write one roster change; a store error is logged (the next reconcile repairs it)."""
        try:
            if isinstance(output, MemberJoined):
                member = output.member
                call_id = await self._channels.call_id(member.channel)
                entry = RosterEntry(member.uniqueid, member.caller_id, call_id)
                await self._redis.run(self._rosters.add(output.conference, member.channel, entry))
            elif isinstance(output, MemberLeft):
                await self._redis.run(
                    self._rosters.remove(output.conference, output.member.channel)
                )
            elif isinstance(output, ConferenceEnded):
                await self._redis.run(self._rosters.delete(output.conference))
        except SecconfError as exc:
            log.warning("roster write for %s failed: %s", output.conference, exc)

    async def reconcile(self, client: AmiClient) -> None:
        """After every (re)connect (and the follower's resync): Redis = what Asterisk lists."""
        rosters: dict[str, dict[str, RosterEntry]] = {}
        for conference in self._tracker.conferences():
            rosters[conference] = {}
            for member in self._tracker.members(conference):
                call_id = await self._channels.call_id(member.channel)
                rosters[conference][member.channel] = RosterEntry(
                    member.uniqueid, member.caller_id, call_id
                )
        try:
            await self._redis.run(self._rosters.replace_all(rosters))
        except SecconfError as exc:
            log.warning("roster reconcile failed: %s", exc)
