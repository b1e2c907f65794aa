"""The replay cache shared by every KMS and Kamailio process (RFC 3830 §5.4, RFC 6043 §12.4).

Key layout (``P`` is the prefix)::

    P:replay:<hex SHA-256 of the token>   string "1", expires after the TTL

Only the hash is stored, never the message: the cache must not become a copy of
MIKEY traffic.  One ``SET key 1 NX PX ttl`` decides, atomically across every
process sharing the Redis, whether a token was seen within its TTL.
"""

from __future__ import annotations

import math

import redis
import redis.asyncio

from secconf.core.errors import ServiceUnavailable

from ._names import check_prefix, replay_key
from .commands import Steps, command, operation
from .executors import AsyncExecutor, SyncExecutor
from .redis import redis_errors

__all__ = ["BlockingReplayCache", "ReplayCache", "ReplayCommands", "forget_replay_key"]


def _ttl_ms(token: object, ttl_seconds: object) -> int:
    if not isinstance(token, bytes | bytearray):
        raise TypeError("the token must be bytes")
    if not (
        isinstance(ttl_seconds, int | float)
        and not isinstance(ttl_seconds, bool)
        and math.isfinite(ttl_seconds)
        and ttl_seconds > 0
    ):
        raise ValueError("ttl_seconds must be a positive number")
    return max(1, math.ceil(ttl_seconds * 1000))


def forget_replay_key(client: redis.Redis, key: str) -> None:
    """Undo a replay-cache entry a script set for a request that was then refused.

    Best effort: Redis down, the entry expires on its own and the refusal stands.
    """
    try:
        with redis_errors("undo a replay-cache entry"):
            client.delete(key)
    except ServiceUnavailable:
        pass


class ReplayCommands:
    """The replay cache's operations (:mod:`.commands`), for both faces below."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)

    def key(self, token: bytes) -> str:
        return replay_key(self.prefix, token)

    @operation("check the replay cache")
    def seen(self, token: bytes) -> Steps[bool]:
        """True if *token* is remembered (a replay); writes nothing."""
        _ttl_ms(token, 1)
        return bool((yield command("EXISTS", self.key(bytes(token)))))

    @operation("check the replay cache")
    def remember(self, token: bytes, ttl_seconds: float, holder: str = "") -> Steps[bool]:
        """True if *token* is new (now remembered), False if it is a replay: one
        ``SET key value NX PX ttl``; *value* is *holder*, or ``"1"``."""
        ttl_ms = _ttl_ms(token, ttl_seconds)
        value = holder.encode("ascii") if holder else b"1"
        return bool((yield command("SET", self.key(bytes(token)), value, "NX", "PX", ttl_ms)))

    @operation("check the replay cache")
    def holder(self, token: bytes) -> Steps[str | None]:
        """``None`` if *token* is not remembered, else the *holder* it was remembered with."""
        _ttl_ms(token, 1)
        value: bytes | None = yield command("GET", self.key(bytes(token)))
        return None if value is None else value.decode("ascii", "replace")

    @operation("update the replay cache")
    def forget(self, token: bytes) -> Steps[None]:
        """Drop *token* (undo a :meth:`remember` whose request was then refused)."""
        yield command("DEL", self.key(bytes(token)))


class ReplayCache:
    """Remembers tokens (e.g. a MIKEY message's bytes) for a while, by hash only (asyncio).

    The caller decides what a token is and how long it matters: for MIKEY, the
    message (or its timestamp and RAND) for the allowed clock skew.
    """

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "secconf") -> None:
        self._commands = ReplayCommands(prefix)
        self._run = AsyncExecutor(client, errors=redis_errors).run

    def __repr__(self) -> str:
        return f"ReplayCache(prefix={self._commands.prefix!r})"

    def key(self, token: bytes) -> bytes:
        """The Redis key that remembers *token*: the prefix and the token's SHA-256."""
        return self._commands.key(token).encode("ascii")

    async def seen(self, token: bytes) -> bool:
        """True if *token* is remembered (a replay); writes nothing.

        A check before other writes, so that a plain replay is refused without
        any; :meth:`remember` stays the deciding one (two copies racing).
        """
        return await self._run(self._commands.seen(token))

    async def remember(self, token: bytes, ttl_seconds: float) -> bool:
        """True if *token* is new (now remembered for *ttl_seconds*), False if it is a replay.

        A replay does not extend the first sighting's TTL.  The TTL is rounded
        up to whole milliseconds.  Raises ``ServiceUnavailable`` if Redis does not
        answer: the caller must then refuse, not accept unchecked.
        """
        return await self._run(self._commands.remember(token, ttl_seconds))


class BlockingReplayCache:
    """:class:`ReplayCache` for code without an event loop (Kamailio workers): same keys.

    The client is a synchronous ``redis.Redis`` with timeouts
    (:func:`secconf.store.conferences.connect_blocking`).
    """

    def __init__(self, client: redis.Redis, prefix: str = "secconf") -> None:
        self._commands = ReplayCommands(prefix)
        self._run = SyncExecutor(client, errors=redis_errors).run

    def __repr__(self) -> str:
        return f"BlockingReplayCache(prefix={self._commands.prefix!r})"

    def key(self, token: bytes) -> str:
        return self._commands.key(token)

    def seen(self, token: bytes) -> bool:
        """True if *token* is remembered (a replay); writes nothing."""
        return self._run(self._commands.seen(token))

    def remember(self, token: bytes, ttl_seconds: float, *, holder: str = "") -> bool:
        """True if *token* is new (now remembered), False if it is a replay (see ReplayCache).

        *holder* (e.g. the hash of the Call-ID that carried the token; no
        secret) is stored instead of ``"1"`` so that :meth:`holder` can tell
        a retransmission of the same request from a replay in another one.
        """
        return self._run(self._commands.remember(token, ttl_seconds, holder))

    def holder(self, token: bytes) -> str | None:
        """``None`` if *token* is not remembered, else the *holder* it was remembered with."""
        return self._run(self._commands.holder(token))

    def forget(self, token: bytes) -> None:
        """Drop *token* (undo a :meth:`remember` whose request was then refused)."""
        self._run(self._commands.forget(token))
