"""The KMS's Ticket Protection Keys (RFC 6043 §6.3), wrapped in Redis, cached in memory.

Key layout (``P`` is the prefix)::

    P:kms:tpk:<id hex>    string  the TPK wrapped under the KEK (context ``kms-tpk:<id>``)
    P:kms:tpk-current     string  the id of the TPK new tickets are protected with

The first TPK is made on first use; several KMS instances sharing the Redis agree on one
(``SET NX`` of the current id; the loser deletes its own record and uses the winner's).
A TPK is never replaced here, so a ticket stays resolvable as long as its TPK's record
lives.  Asynchronous (``redis.asyncio``); an outage is ``ServiceUnavailable`` (503).
"""

from __future__ import annotations

import os
import secrets
from typing import Final

import redis.asyncio

from secconf.core.errors import TicketRejected

from .keywrap import KeyWrapper
from .redis import redis_errors

__all__ = ["TPK_BYTES", "TpkStore"]

#: A TPK's length: an AES-256 key.
TPK_BYTES: Final = 32


class TpkStore:
    """``current()`` for new tickets, ``load(id)`` to open one; keys never in ``repr``."""

    def __init__(self, client: redis.asyncio.Redis, wrapper: KeyWrapper, prefix: str) -> None:
        self._redis = client
        self._wrapper = wrapper
        self._prefix = prefix
        self._cache: dict[bytes, bytes] = {}

    def __repr__(self) -> str:
        return f"TpkStore(prefix={self._prefix!r}, cached={len(self._cache)})"

    def _key(self, tpk_id: bytes) -> str:
        return f"{self._prefix}:kms:tpk:{tpk_id.hex()}"

    def _current_key(self) -> str:
        return f"{self._prefix}:kms:tpk-current"

    @staticmethod
    def _context(tpk_id: bytes) -> bytes:
        return b"kms-tpk:" + tpk_id

    async def current(self) -> tuple[bytes, bytes]:
        """(id, key) of the TPK for new tickets; made on first use, atomically."""
        with redis_errors("read the current TPK"):
            current = await self._redis.get(self._current_key())
        if current is None:
            tpk_id = os.urandom(8)
            blob = self._wrapper.wrap(secrets.token_bytes(TPK_BYTES), self._context(tpk_id))
            with redis_errors("create a TPK"):
                await self._redis.set(self._key(tpk_id), blob, nx=True)
                won = await self._redis.set(self._current_key(), tpk_id, nx=True)
                if not won:  # another KMS instance made one first: use theirs
                    await self._redis.delete(self._key(tpk_id))
                    current = await self._redis.get(self._current_key())
                else:
                    current = tpk_id
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
        with redis_errors("read a TPK"):
            blob = await self._redis.get(self._key(tpk_id))
        if not isinstance(blob, bytes):
            return None
        key = self._wrapper.unwrap(blob, self._context(tpk_id))
        self._cache[tpk_id] = key
        return key

    def cached(self, tpk_id: bytes) -> bytes | None:
        """The TPK named *tpk_id* if :meth:`load` or :meth:`current` read it before (no I/O)."""
        return self._cache.get(tpk_id)
