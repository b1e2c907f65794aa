"""The watcher's epoch minting: one :class:`~secconf.focus.epochs.EpochMinter` on one thread.

The focus mints epochs with blocking clients (Redis through the store, the edge's and the
KMS's keep-alive HTTP clients, one connection each): the watcher builds the minter once,
when it starts, and runs every mint on a thread of its own, one mint at a time.  Mints
are short (a Redis script, the edge's PUT, for KMS legs one ticket request), so
conferences rekeyed at once wait for each other only that long; the legs' re-INVITEs and
the edge's verification, which take seconds, run in parallel on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from secconf.focus.settings import Settings as FocusSettings
from secconf.focus.wiring import build_minter, close_minter

__all__ = ["Minting"]

log = logging.getLogger("secconf.asterisk.watcher")

_LEVELS = {"err": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO}


class Minting:
    """``await mint(conference)``: the conference's next epoch, in Redis and at the edge."""

    def __init__(self, focus: FocusSettings, kek: bytes) -> None:
        self._minter = build_minter(focus, kek, log=_log)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="secconf-mint")

    async def mint(self, conference: str) -> int:
        """Raises what :meth:`~secconf.focus.epochs.EpochMinter.mint` raises."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._minter.mint, conference)

    def close(self) -> None:
        """Wait for a mint under way (each call is bounded by its client's timeout), then close."""
        self._thread.shutdown(wait=True)
        close_minter(self._minter)


def _log(level: str, message: str) -> None:
    log.log(_LEVELS.get(level, logging.INFO), "%s", message)
