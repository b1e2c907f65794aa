"""One rekey's legs moving to the new epoch: the re-INVITE triggers, then the edge's check.

Per remaining channel, one at a time per channel, all channels in parallel (at
most ``max_parallel``): the re-INVITE trigger
(:meth:`~secconf.asterisk.ami.AmiClient.rekey_refresh`), then a wait until the
dialog record says the leg is on the new epoch (the module switched it at the
200 OK), or ``P:conf:{<conference>}:rekey-failed`` has the refusal, or
``refresh_timeout``.  Then the edge's switch verification
(``GET /v1/conferences/{c}``), polled until every leg is ``followed``,
``not-followed`` or ``unverified``, or ``verify_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from secconf.core.errors import SecconfError
from secconf.core.roster import LegObservation, RosterTracker, leg_settled
from secconf.media.control_client import AsyncHttpEdgeControl

from .ami import AmiClient, AmiError
from .channels import Channels
from .conference_view import ConferenceView
from .watcher_settings import WatcherSettings

__all__ = ["LegSwitches"]

# Every part of the watcher logs as the watcher: one logger for operators to follow.
log = logging.getLogger("secconf.asterisk.watcher")


class LegSwitches:
    """Triggers each leg's switch to a new epoch and observes where every leg ended up."""

    def __init__(
        self,
        settings: WatcherSettings,
        ami: AmiClient,
        tracker: RosterTracker,
        channels: Channels,
        conferences: ConferenceView,
        edge: AsyncHttpEdgeControl | None,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._ami = ami
        self._tracker = tracker
        self._channels = channels
        self._conferences = conferences
        self._edge = edge
        self._clock = clock
        self._parallel = asyncio.Semaphore(settings.max_parallel)

    def _present(self, conference: str) -> set[str]:
        return {member.channel for member in self._tracker.members(conference)}

    async def refresh(
        self, conference: str, epoch: int, call_ids: Mapping[str, str]
    ) -> dict[str, float]:
        """Re-INVITE every channel of *call_ids* (channel -> Call-ID); return when each is on
        *epoch*, refused or timed out: channel -> when its dialog record showed *epoch*."""
        switched_at: dict[str, float] = {}
        await asyncio.gather(
            *(
                self._refresh(conference, channel, call_id, epoch, switched_at)
                for channel, call_id in call_ids.items()
            )
        )
        return switched_at

    async def _refresh(
        self,
        conference: str,
        channel: str,
        call_id: str,
        epoch: int,
        switched_at: dict[str, float],
    ) -> None:
        """One re-INVITE on *channel*; return when its leg is on *epoch*, refused, or timed out."""
        lock = self._channels.lock(channel)
        async with self._parallel, lock:
            try:
                await self._ami.rekey_refresh(channel)
            except AmiError as exc:
                log.warning("refresh of %s failed: %s", channel, exc)
                return
            if not call_id:
                return
            deadline = self._clock() + self._settings.refresh_timeout
            while self._clock() < deadline:
                try:
                    dialog = await self._conferences.dialog(conference, call_id)
                    if dialog is not None and (dialog.epoch or 0) >= epoch:
                        switched_at[channel] = self._clock()
                        return
                    if dialog is None or call_id in await self._conferences.refusals(
                        conference, epoch
                    ):
                        return
                except SecconfError as exc:
                    log.warning("dialog read for %s failed: %s", channel, exc)
                if channel not in self._present(conference):
                    return
                await asyncio.sleep(self._settings.poll_interval)
            log.warning("conference %s: %s did not answer the rekey in time", conference, channel)

    async def verify(
        self, conference: str, epoch: int, call_ids: Mapping[str, str]
    ) -> list[LegObservation]:
        """Poll the edge until every leg settled for *epoch* (or ``verify_timeout``)."""
        deadline = self._clock() + self._settings.verify_timeout
        dialogs = await self._conferences.dialogs(conference, call_ids)
        legs = {channel: dialog.leg for channel, dialog in dialogs.items()}
        while True:
            observations = await self._observe(conference, epoch, call_ids, legs)
            if all(leg_settled(o, epoch) for o in observations) or self._clock() >= deadline:
                return observations
            await asyncio.sleep(self._settings.poll_interval)

    async def _described_legs(self, conference: str) -> dict[str, dict[str, Any]]:
        """Edge leg id -> the edge's description of it; empty if the edge cannot say."""
        if self._edge is None:
            return {}
        try:
            described = await self._edge.describe_conference(conference)
        except SecconfError as exc:
            log.warning("edge state of %s unreadable: %s", conference, exc)
            return {}
        return {} if described is None else {leg["leg"]: leg for leg in described.get("legs", [])}

    async def _observe(
        self,
        conference: str,
        epoch: int,
        call_ids: Mapping[str, str],
        legs: Mapping[str, str],
    ) -> list[LegObservation]:
        described = await self._described_legs(conference)
        try:
            refused = await self._conferences.refusals(conference, epoch)
        except SecconfError:
            refused = set()
        present = self._present(conference)
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
