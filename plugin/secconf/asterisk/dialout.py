"""Dial-outs: Asterisk calls a target into a conference's bridge (REFERs, replacement calls).

REFERs the module accepted are read from ``P:conf:{<conference>}:refer`` with the
consumer group ``dialout`` (each entry to one watcher, once); each target is
called with AMI ``Originate`` of ``PJSIP/kamailio-out/<target>`` into
``[secconf-dialout]`` with the ``X-Secconf-Conference`` header.  The rekey
driver dials the same way to call a replaced member back.  Every outcome (never
a key) is logged and appended to ``P:dialout:<conference>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from secconf.core.errors import SecconfError
from secconf.core.roster import RosterTracker
from secconf.store.executors import AsyncExecutor
from secconf.store.watcher import ReferQueue, WatcherJournal

from .ami import AmiClient, AmiError
from .watcher_settings import WatcherSettings

__all__ = ["DialOutcome", "Dialer"]

# Every part of the watcher logs as the watcher: one logger for operators to follow.
log = logging.getLogger("secconf.asterisk.watcher")


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


class Dialer:
    """Makes Asterisk dial out (AMI ``Originate``) and consumes the REFER queue."""

    def __init__(
        self,
        settings: WatcherSettings,
        ami: AmiClient,
        tracker: RosterTracker,
        redis: AsyncExecutor,
        refers: ReferQueue,
        journal: WatcherJournal,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._ami = ami
        self._tracker = tracker
        self._redis = redis
        self._refers = refers
        self._journal = journal
        self._clock = clock
        #: every dial-out made, oldest first (tests, operators)
        self.dialouts: list[DialOutcome] = []
        self._originates: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._dialling: set[asyncio.Task[DialOutcome]] = set()
        self._task: asyncio.Task[None] | None = None
        ami.on_event("OriginateResponse", self._on_originate_response)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._refer_loop())

    async def stop(self) -> None:
        """No more REFERs taken; the dial-outs under way are abandoned."""
        tasks = [t for t in (self._task, *self._dialling) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def forget(self, conference: str) -> None:
        """*conference* ended: its REFER stream is not read any more."""
        self._refers.forget(conference)

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
        started = self._clock()
        channel_id = f"secconf-dialout-{secrets.token_hex(8)}"
        if reason == "replace":
            # The same member back with the current key: no rekey for its join.
            self._tracker.quiet(conference, channel_id)
        result, detail, channel = "failed", "", ""
        try:
            result, detail, channel = await self._originate(conference, target, channel_id)
        finally:
            if result != "answered":
                self._tracker.unquiet(conference, channel_id)
        outcome = DialOutcome(
            conference, target, reason, result, detail, channel_id, channel, referrer,
            started, self._clock(),
        )  # fmt: skip
        self.dialouts.append(outcome)
        log.info("dial-out %s to %s in %s: %s (%s)", reason, target, conference, result, detail)
        try:
            await self._record(outcome)
        except SecconfError as exc:
            log.warning("dial-out record for %s not stored: %s", conference, exc)
        return outcome

    async def _originate(
        self, conference: str, target: str, channel_id: str
    ) -> tuple[str, str, str]:
        """One ``Originate`` and its ``OriginateResponse``: (result, detail, channel)."""
        settings = self._settings
        future: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._originates[channel_id] = future
        try:
            await self._ami.originate(
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
        except AmiError as exc:
            return "failed", f"originate refused: {exc}", ""
        except TimeoutError:
            return "failed", "no OriginateResponse in time", ""
        finally:
            self._originates.pop(channel_id, None)
        answered = response.get("Response", "").lower() == "success"
        detail = f"reason {response.get('Reason', '?')}"
        return "answered" if answered else "failed", detail, response.get("Channel", "")

    async def _record(self, outcome: DialOutcome) -> None:
        await self._redis.run(self._journal.add_dialout(outcome.conference, outcome.fields()))

    async def _refer_loop(self) -> None:
        """Consume ``P:conf:{<conference>}:refer`` (REFERs the module accepted): one dial-out each.

        Every watcher reads with the consumer group ``dialout``: Redis hands each
        entry to exactly one of them (XREADGROUP), which dials it once and
        acknowledges it when done.  An entry taken by a watcher that died stays
        pending (not dialled twice).
        """
        while True:
            await asyncio.sleep(self._settings.dialout_poll)
            for conference in self._tracker.conferences():
                try:
                    entries = await self._redis.run(self._refers.take(conference))
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
                    fields.get("referrer", ""), self._clock(), self._clock(),
                )  # fmt: skip
                await self._record(outcome)
                return outcome
            return await self.dial_out(
                conference, target, reason="refer", referrer=fields.get("referrer", "")
            )
        finally:
            with contextlib.suppress(SecconfError):
                await self._redis.run(self._refers.ack(conference, entry_id))
