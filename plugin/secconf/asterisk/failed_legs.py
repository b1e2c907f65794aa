"""The ``on_failure`` policy for legs a rekey's verdicts remove (refused, did not answer in
time, did not follow the switch): no member stays on an old key.

``replace`` (the default) hangs each such leg up (AMI ``Hangup``) and dials the
same identity back into the bridge; the module keys the new call with the
current epoch.  ``remove`` only hangs it up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from secconf.core.roster import (
    FailurePolicy,
    LegVerdict,
    RekeyOutcome,
    RekeyReason,
    RosterTracker,
)

from .ami import AmiClient, AmiError
from .conference_view import ConferenceView
from .dialout import Dialer

__all__ = ["FailedLegs", "Removal"]

# Every part of the watcher logs as the watcher: one logger for operators to follow.
log = logging.getLogger("secconf.asterisk.watcher")

#: (channels removed for good, replaced channel -> its replacement's Uniqueid)
Removal = tuple[tuple[str, ...], dict[str, str]]


class FailedLegs:
    """Hangs up (and with ``replace`` dials back) the legs a rekey's outcome removes."""

    def __init__(
        self,
        policy: FailurePolicy,
        ami: AmiClient,
        tracker: RosterTracker,
        conferences: ConferenceView,
        dialer: Dialer,
        request_rekey: Callable[[str, RekeyReason], None],
    ) -> None:
        self._policy = policy
        self._ami = ami
        self._tracker = tracker
        self._conferences = conferences
        self._dialer = dialer
        self._request_rekey = request_rekey

    async def handle(
        self, conference: str, outcome: RekeyOutcome, call_ids: Mapping[str, str]
    ) -> Removal:
        if self._policy is FailurePolicy.REPLACE and outcome.remove:
            return await self._replace(conference, outcome, call_ids)
        return await self._remove(conference, outcome), {}

    async def _remove(self, conference: str, outcome: RekeyOutcome) -> tuple[str, ...]:
        """Policy ``remove``: hang each failing leg up."""
        removed = []
        for channel in outcome.remove:
            log.warning(
                "conference %s: %s %s on epoch %d: hanging up (policy remove)",
                conference,
                channel,
                outcome.verdicts[channel].value,
                outcome.epoch,
            )
            try:
                await self._ami.hangup(channel)
                removed.append(channel)
            except AmiError as exc:
                log.warning("hangup of %s failed: %s", channel, exc)
        return tuple(removed)

    async def _replace(
        self, conference: str, outcome: RekeyOutcome, call_ids: Mapping[str, str]
    ) -> Removal:
        """Policy ``replace``: hang each failing leg up and dial its identity back in.

        The new call is keyed by the module with the conference's current epoch
        (the one just minted).  A leg whose identity is unknown, or whose
        replacement fails (not registered, refuses, no answer), stays removed,
        and the conference is rekeyed once more: that member had been offered
        the new key in signalling.  No member stays on an old key.
        """
        dialogs = await self._conferences.dialogs(
            conference, {channel: call_ids.get(channel, "") for channel in outcome.remove}
        )
        removed: list[str] = []
        replaced: dict[str, str] = {}
        for channel in outcome.remove:
            identity = dialogs[channel].identity if channel in dialogs else None
            verdict = outcome.verdicts[channel]
            if not await self._hang_up(conference, channel, verdict, outcome.epoch, identity):
                continue
            if identity:
                answered = await self._dialer.dial_out(conference, identity, reason="replace")
                if answered.result == "answered":
                    replaced[channel] = answered.channel_id
                    continue
            removed.append(channel)
        if removed:
            self._request_rekey(conference, RekeyReason.LEAVE)
        return tuple(removed), replaced

    async def _hang_up(
        self, conference: str, channel: str, verdict: LegVerdict, epoch: int, identity: str | None
    ) -> bool:
        """Hang *channel* up ahead of its replacement (if *identity* is known); False if AMI
        refused (the leg stays, neither removed nor replaced)."""
        log.warning(
            "conference %s: %s %s on epoch %d: hanging up, %s",
            conference, channel, verdict.value, epoch,
            f"calling {identity} back" if identity else "identity unknown: removed",
        )  # fmt: skip
        if identity:
            # Its leave is not a departure: the same member comes back.
            self._tracker.quiet(conference, channel)
        try:
            await self._ami.hangup(channel)
        except AmiError as exc:
            log.warning("hangup of %s failed: %s", channel, exc)
            self._tracker.unquiet(conference, channel)
            return False
        return True
