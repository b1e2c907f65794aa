"""What the watcher keeps per PJSIP channel while it is in a bridge (forgotten when it leaves)."""

from __future__ import annotations

import asyncio
import logging

from .ami import AmiClient, AmiError

__all__ = ["Channels"]

# Every part of the watcher logs as the watcher: one logger for operators to follow.
log = logging.getLogger("secconf.asterisk.watcher")


class Channels:
    """Each channel's SIP Call-ID (its dialog record's key, asked of Asterisk once) and the
    lock that keeps its re-INVITE triggers one at a time."""

    def __init__(self, ami: AmiClient) -> None:
        self._ami = ami
        self._call_ids: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def call_id(self, channel: str) -> str:
        """The Call-ID of *channel*, ``""`` if Asterisk did not say (asked again next time)."""
        known = self._call_ids.get(channel)
        if known:
            return known
        try:
            call_id = await self._ami.getvar(channel, "CHANNEL(pjsip,call-id)")
        except AmiError as exc:
            log.warning("Call-ID of %s unknown: %s", channel, exc)
            return ""
        if call_id:
            self._call_ids[channel] = call_id
        return call_id

    def lock(self, channel: str) -> asyncio.Lock:
        return self._locks.setdefault(channel, asyncio.Lock())

    def forget(self, channel: str) -> None:
        """*channel* left its bridge: its Call-ID and lock go."""
        self._call_ids.pop(channel, None)
        self._locks.pop(channel, None)
