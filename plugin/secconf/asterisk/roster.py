"""The roster watcher: AMI Confbridge events → :class:`secconf.core.roster.RosterTracker`.

:class:`RosterFollower` is the I/O shell around the pure tracker: it feeds every
``Confbridge*`` event from an :class:`~secconf.asterisk.ami.AmiClient` into the
tracker with the monotonic clock, wakes at :meth:`RosterTracker.next_deadline`
to collect due rekeys, and after every (re)connect resynchronises from
``ConfbridgeListRooms``/``ConfbridgeList`` (a leave missed while AMI was down
still rekeys).  What happens with a decision is the caller's ``on_rekey``.

The rekey driver, the Redis roster and the leases are :mod:`~secconf.asterisk.rekey_driver`,
:mod:`~secconf.asterisk.roster_mirror` and :mod:`~secconf.asterisk.lease_keeper`, wired
together by :mod:`secconf.asterisk.watcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from secconf.core.errors import ProtocolError
from secconf.core.roster import (
    Event,
    Member,
    MemberLeft,
    Output,
    Rekey,
    RosterSnapshot,
    RosterTracker,
    event_from_ami,
)

from .ami import AmiClient, AmiError

__all__ = ["RosterFollower"]

log = logging.getLogger("secconf.asterisk.roster")

RekeyCallback = Callable[[Rekey], Awaitable[None]]
OutputCallback = Callable[[Output], Awaitable[None] | None]


class RosterFollower:
    """Follows every ConfBridge over AMI and calls ``on_rekey`` for each due rekey."""

    def __init__(
        self,
        client: AmiClient,
        tracker: RosterTracker,
        on_rekey: RekeyCallback,
        *,
        on_change: OutputCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.on_rekey = on_rekey
        self.on_change = on_change
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.events_seen = 0
        client.on_event("Confbridge*", self._on_event)
        client.on_connected(self._resync)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """Look at the tracker's deadlines again (after ``tracker.request_rekey``)."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- input ----------------------------------------------------------------------------

    async def _on_event(self, fields: dict[str, str]) -> None:
        try:
            event = event_from_ami(fields)
        except ProtocolError as exc:
            log.warning("ignoring malformed AMI event: %s", exc)
            return
        if event is None:
            return
        self.events_seen += 1
        await self._apply(event)

    async def _apply(self, event: Event) -> None:
        for output in self.tracker.handle(event, self.clock()):
            if isinstance(output, MemberLeft):
                self.client.forget_channel(output.member.channel)
            if self.on_change is not None:
                result = self.on_change(output)
                if asyncio.iscoroutine(result):
                    await result
        self._wake.set()

    async def _resync(self, client: AmiClient) -> None:
        """After a (re)connect: the rooms as Asterisk lists them now."""
        try:
            rooms = set(await client.confbridge_rooms())
            for conference in sorted(rooms | set(self.tracker.conferences())):
                listed = await client.confbridge_list(conference) if conference in rooms else []
                members = tuple(
                    Member(
                        entry.get("Channel", ""),
                        entry.get("Uniqueid", ""),
                        entry.get("CallerIDNum", ""),
                    )
                    for entry in listed
                    if entry.get("Channel")
                )
                await self._apply(RosterSnapshot(conference, members))
        except AmiError as exc:
            log.warning("roster resync failed: %s", exc)

    # -- decisions ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            deadline = self.tracker.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            self._wake.clear()
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            for rekey in self.tracker.poll(self.clock()):
                try:
                    await self.on_rekey(rekey)
                except Exception:
                    log.exception("rekey of %s failed", rekey.conference)
