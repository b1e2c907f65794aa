"""The KMS's Ticket Protection Keys (RFC 6043 §6.3), wrapped in Redis, cached in memory.

Key layout (``P`` is the prefix)::

    P:kms:tpk:<id hex>    string  the TPK wrapped under the KEK (context ``kms-tpk:<id>``)
    P:kms:tpk-current     string  the id of the TPK new tickets are protected with

The first TPK is made on first use; several KMS instances sharing the Redis agree on one
(``SET NX`` of the current id; the loser deletes its own record and uses the winner's).
A TPK is never replaced here, so a ticket stays resolvable as long as its TPK's record
lives.  The Redis calls are :class:`TpkCommands`' operations (:mod:`.commands`), run on
the KMS's ``redis.asyncio`` client; an outage is ``ServiceUnavailable`` (503).
"""

from __future__ import annotations

import os
import secrets
from typing import Final

import redis.asyncio

from secconf.core.errors import TicketRejected

from ._names import tpk_current_key, tpk_key
from .commands import Steps, command, operation
from .executors import AsyncExecutor
from .keywrap import KeyWrapper
from .redis import redis_errors

__all__ = ["TPK_BYTES", "TpkCommands", "TpkStore"]

#: A TPK's length: an AES-256 key.
TPK_BYTES: Final = 32


class TpkCommands:
    """The TPK records' keys and operations; wrapped blobs in, wrapped blobs out."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, tpk_id: bytes) -> str:
        return tpk_key(self.prefix, tpk_id)

    def current_key(self) -> str:
        return tpk_current_key(self.prefix)

    @operation("read the current TPK")
    def current_id(self) -> Steps[bytes | None]:
        current: bytes | None = yield command("GET", self.current_key())
        return current

    @operation("create a TPK")
    def create(self, tpk_id: bytes, blob: bytes) -> Steps[bytes | None]:
        """Store *blob* as *tpk_id* and make it current unless another KMS did first: the
        current id either way (``None`` if that one vanished in between)."""
        yield command("SET", self.key(tpk_id), blob, "NX")
        if (yield command("SET", self.current_key(), tpk_id, "NX")):
            return tpk_id
        # another KMS instance made one first: use theirs
        yield command("DEL", self.key(tpk_id))
        current: bytes | None = yield command("GET", self.current_key())
        return current

    @operation("read a TPK")
    def blob(self, tpk_id: bytes) -> Steps[bytes | None]:
        blob: bytes | None = yield command("GET", self.key(tpk_id))
        return blob


class TpkStore:
    """``current()`` for new tickets, ``load(id)`` to open one; keys never in ``repr``."""

    def __init__(self, client: redis.asyncio.Redis, wrapper: KeyWrapper, prefix: str) -> None:
        self._commands = TpkCommands(prefix)
        self._run = AsyncExecutor(client, errors=redis_errors).run
        self._wrapper = wrapper
        self._cache: dict[bytes, bytes] = {}

    def __repr__(self) -> str:
        return f"TpkStore(prefix={self._commands.prefix!r}, cached={len(self._cache)})"

    @staticmethod
    def _context(tpk_id: bytes) -> bytes:
        return b"kms-tpk:" + tpk_id

    async def current(self) -> tuple[bytes, bytes]:
        """(id, key) of the TPK for new tickets; made on first use, atomically."""
        current = await self._run(self._commands.current_id())
        if current is None:
            tpk_id = os.urandom(8)
            blob = self._wrapper.wrap(secrets.token_bytes(TPK_BYTES), self._context(tpk_id))
            current = await self._run(self._commands.create(tpk_id, blob))
        if not isinstance(current, bytes):
            raise TicketRejected("no current TPK")
        key = await self.load(current)
        if key is None:
            raise TicketRejected("current TPK record is missing")
        return current, key

    async def load(self, tpk_id: bytes) -> bytes | None:
        """The TPK named *tpk_id*, or ``None`` if this KMS never issued under it."""
        if tpk_id in self._cache:
            return self._cache[tpk_id]
        if not 0 < len(tpk_id) <= 32:
            return None
        blob = await self._run(self._commands.blob(tpk_id))
        if not isinstance(blob, bytes):
            return None
        key = self._wrapper.unwrap(blob, self._context(tpk_id))
        self._cache[tpk_id] = key
        return key

    def cached(self, tpk_id: bytes) -> bytes | None:
        """The TPK named *tpk_id* if :meth:`load` or :meth:`current` read it before (no I/O)."""
        return self._cache.get(tpk_id)
