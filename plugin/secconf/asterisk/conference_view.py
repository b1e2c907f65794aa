"""The conference store as the watcher's loops read it (docs/store.md).

Every read runs in a thread, and whatever Redis answers reaches the watcher as a
store error: the conference store passes on what Redis refuses (``WRONGTYPE``,
...) as redis-py raises it, for the focus to fail loudly; the watcher's polls
log it and go on, as they do when Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

from secconf.core.errors import SecconfError
from secconf.store.conferences import ConferenceInfo, ConferenceStore, DialogRecord
from secconf.store.redis import all_redis_errors

__all__ = ["ConferenceView"]

P = ParamSpec("P")
T = TypeVar("T")


class ConferenceView:
    """Asynchronous reads of the conferences, dialogs and rekey refusals the focus writes."""

    def __init__(self, store: ConferenceStore) -> None:
        self._store = store

    async def _read(self, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with all_redis_errors("read the conference store"):
            return await asyncio.to_thread(read, *args, **kwargs)

    async def conference(self, conference: str) -> ConferenceInfo | None:
        return await self._read(self._store.get, conference)

    async def dialog(self, conference: str, call_id: str) -> DialogRecord | None:
        return await self._read(self._store.dialog, conference, call_id)

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
        failures = await self._read(self._store.rekey_failures, conference)
        return {
            call_id
            for _, entry in failures
            if entry.get("epoch") == str(epoch) and (call_id := entry.get("call_id"))
        }

    async def drop_epoch(self, conference: str, epoch: int) -> None:
        """Undo *epoch* in Redis if it is still the newest (a write, not one of the polls)."""
        await asyncio.to_thread(self._store.drop_epoch, conference, epoch)
