"""The conference store as the watcher's loops read it (docs/store.md).

The conference store's own operations (:class:`~secconf.store.conference_commands.
ConferenceCommands`, the ones :class:`~secconf.store.conferences.ConferenceStore` runs
for the focus) run here on the watcher's asyncio client.  Whatever Redis answers
reaches the watcher as a store error (the executor's policy: an outage
``ServiceUnavailable``, a refused command ``RedisRefused``); the watcher's polls log it
and go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from secconf.core.errors import SecconfError
from secconf.store.conference_commands import ConferenceCommands
from secconf.store.conferences import ConferenceInfo, DialogRecord
from secconf.store.executors import AsyncExecutor

__all__ = ["ConferenceView"]


class ConferenceView:
    """Asynchronous reads of the conferences, dialogs and rekey refusals the focus writes."""

    def __init__(self, redis: AsyncExecutor, commands: ConferenceCommands) -> None:
        self._redis = redis
        self._commands = commands

    async def conference(self, conference: str) -> ConferenceInfo | None:
        return await self._redis.run(self._commands.get(conference))

    async def dialog(self, conference: str, call_id: str) -> DialogRecord | None:
        return await self._redis.run(self._commands.dialog(conference, call_id))

    async def dialogs(
        self, conference: str, call_ids: Mapping[str, str]
    ) -> dict[str, DialogRecord]:
        """Channel -> dialog record, for each channel of *call_ids* (channel -> Call-ID) whose
        record could be read; a channel without Call-ID, record or answer is left out."""
        dialogs: dict[str, DialogRecord] = {}
        for channel, call_id in call_ids.items():
            with contextlib.suppress(SecconfError):
                dialog = await self.dialog(conference, call_id) if call_id else None
                if dialog is not None:
                    dialogs[channel] = dialog
        return dialogs

    async def refusals(self, conference: str, epoch: int) -> set[str]:
        """The Call-IDs whose participant refused *epoch* (``P:conf:{<id>}:rekey-failed``)."""
        failures = await self._redis.run(self._commands.rekey_failures(conference))
        return {
            call_id
            for _, entry in failures
            if entry.get("epoch") == str(epoch) and (call_id := entry.get("call_id"))
        }

    async def drop_epoch(self, conference: str, epoch: int) -> None:
        """Undo *epoch* in Redis if it is still the newest (a write, not one of the polls)."""
        await self._redis.run(self._commands.drop_epoch(conference, epoch))
