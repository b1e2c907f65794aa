"""KMS identities and their pre-shared keys, wrapped at rest.

Key layout (``P`` is the prefix, ``secconf`` by default; see docs/store.md)::

    P:{users}:user:<identity>  hash  psk         wrapped PSK (secconf.store.keywrap v1 blob)
                                     created     UNIX time, decimal text
                                     revoked     "0" or "1"
                                     revoked_at  UNIX time, only once revoked
    P:{users}                  set   every identity with a user hash (the index list() reads)

Both share the Redis Cluster hash tag ``{users}`` (one slot for the whole
table, which is small), so the scripts below that touch a user and the index
work on a cluster too.

The PSK is wrapped with context ``b"user-psk:" + identity`` (UTF-8), so a blob
copied to another user's hash does not open.  Every change that touches both
keys runs as one Lua script, so a reader never sees half of it and two
concurrent ``add`` calls for one identity cannot both succeed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import redis.asyncio

from ._names import check_identity, check_prefix, is_identity, user_index_key, user_key
from .commands import Eval, Pipeline, Script, Steps, command, operation
from .errors import (
    CorruptRecord,
    InvalidRecord,
    RevokedUser,
    UnknownUser,
    UserExists,
    quote_identity,
)
from .executors import AsyncExecutor
from .keywrap import KeyWrapper
from .redis import redis_errors

__all__ = [
    "MAX_PSK_LENGTH",
    "MIN_PSK_LENGTH",
    "UserCommands",
    "UserInfo",
    "UserStore",
    "psk_context",
]

MIN_PSK_LENGTH: Final = 16
MAX_PSK_LENGTH: Final = 1024

# KEYS[1] user hash, KEYS[2] index set; ARGV identity, wrapped psk, created, replace flag.
_ADD: Final = Script("""
if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'psk', ARGV[2], 'created', ARGV[3], 'revoked', '0')
redis.call('SADD', KEYS[2], ARGV[1])
return 1
""")

# KEYS[1] user hash; ARGV[1] now.  Revoking twice keeps the first revoked_at.
_REVOKE: Final = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HGET', KEYS[1], 'revoked') ~= '1' then
  redis.call('HSET', KEYS[1], 'revoked', '1', 'revoked_at', ARGV[1])
end
return 1
""")

# KEYS[1] user hash, KEYS[2] index set; ARGV[1] identity.
_REMOVE: Final = Script("""
local removed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return removed
""")


def psk_context(identity: str) -> bytes:
    """The key-wrapping context of *identity*'s PSK: binds the blob to that user's record."""
    return b"user-psk:" + identity.encode("utf-8")


def _time_text(value: float) -> bytes:
    return repr(float(value)).encode("ascii")


def _parse_time(raw: bytes | None, field: str) -> float:
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CorruptRecord(f"user record: field {field!r} missing or not a time")
    return value


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What :meth:`UserStore.list` tells about a user: never the key."""

    identity: str
    created: float
    revoked: bool
    revoked_at: float | None = None


class UserCommands:
    """The user table's operations (:mod:`.commands`): checks, wrapping and Redis calls.

    *wrapper* holds the KEK the PSKs are wrapped under; *clock* gives UNIX time for
    ``created`` and ``revoked_at``.
    """

    def __init__(self, wrapper: KeyWrapper, prefix: str, clock: Callable[[], float]) -> None:
        self.wrapper = wrapper
        self.prefix = check_prefix(prefix)
        self._clock = clock
        self._index = user_index_key(self.prefix)

    def __repr__(self) -> str:
        return f"UserCommands(prefix={self.prefix!r}, wrapper={self.wrapper!r})"

    def key(self, identity: str) -> bytes:
        return user_key(self.prefix, identity)

    @operation("add a user")
    def add(self, identity: str, psk: bytes, replace: bool) -> Steps[None]:
        identity = check_identity(identity)
        if not isinstance(psk, bytes | bytearray):
            raise InvalidRecord("the PSK must be bytes")
        if not MIN_PSK_LENGTH <= len(psk) <= MAX_PSK_LENGTH:
            raise InvalidRecord(f"the PSK must be {MIN_PSK_LENGTH} to {MAX_PSK_LENGTH} bytes long")
        blob = self.wrapper.wrap(bytes(psk), psk_context(identity))
        created = _time_text(self._clock())
        added = yield Eval(
            _ADD,
            [self.key(identity), self._index],
            [identity.encode(), blob, created, b"1" if replace else b"0"],
        )
        if not added:
            raise UserExists(f"user {quote_identity(identity)} already exists")

    @operation("look up a user")
    def psk(self, identity: str) -> Steps[bytes]:
        if not is_identity(identity):
            raise UnknownUser(f"unknown user {quote_identity(identity)}")
        blob, revoked = yield command("HMGET", self.key(identity), b"psk", b"revoked")
        if blob is None and revoked is None:
            raise UnknownUser(f"unknown user {quote_identity(identity)}")
        if revoked != b"0":
            # Anything but the "0" add() writes counts as revoked: fail closed.
            raise RevokedUser(f"user {quote_identity(identity)} is revoked")
        if not isinstance(blob, bytes):
            raise CorruptRecord(f"user {quote_identity(identity)} has no wrapped key")
        return self.wrapper.unwrap(blob, psk_context(identity))

    @operation("list users")
    def list(self) -> Steps[list[UserInfo]]:
        members: set[bytes] = set()
        cursor = 0
        while True:  # SSCAN of the index to its end
            cursor, found = yield command("SSCAN", self._index, cursor)
            members.update(found)
            if not cursor:
                break
        identities = sorted({bytes(member).decode("utf-8") for member in members})
        rows = yield Pipeline(
            tuple(
                command("HMGET", self.key(identity), b"created", b"revoked", b"revoked_at")
                for identity in identities
            ),
            transaction=False,
        )
        users = []
        for identity, (created, revoked, revoked_at) in zip(identities, rows, strict=True):
            if created is None and revoked is None:
                continue  # removed between the scan and the read
            users.append(
                UserInfo(
                    identity=identity,
                    created=_parse_time(created, "created"),
                    revoked=revoked != b"0",
                    revoked_at=None
                    if revoked_at is None
                    else _parse_time(revoked_at, "revoked_at"),
                )
            )
        return users

    @operation("revoke a user")
    def revoke(self, identity: str) -> Steps[None]:
        if not is_identity(identity):
            raise UnknownUser(f"unknown user {quote_identity(identity)}")
        found = yield Eval(_REVOKE, [self.key(identity)], [_time_text(self._clock())])
        if not found:
            raise UnknownUser(f"unknown user {quote_identity(identity)}")

    @operation("remove a user")
    def remove(self, identity: str) -> Steps[None]:
        if not is_identity(identity):
            raise UnknownUser(f"unknown user {quote_identity(identity)}")
        removed = yield Eval(_REMOVE, [self.key(identity), self._index], [identity.encode()])
        if not removed:
            raise UnknownUser(f"unknown user {quote_identity(identity)}")


class UserStore:
    """KMS users ("sip:alice@example.com") and their pre-shared keys in Redis.

    *client* comes from :func:`secconf.store.redis.connect`; *wrapper* holds the
    KEK the PSKs are wrapped under; *clock* gives UNIX time for ``created`` and
    ``revoked_at`` (tests pass their own).  Every method raises
    :class:`~secconf.core.errors.ServiceUnavailable` when Redis does not answer.
    :class:`UserCommands` runs on *client*.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        wrapper: KeyWrapper,
        prefix: str = "secconf",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._commands = UserCommands(wrapper, prefix, clock)
        self._run = AsyncExecutor(client, errors=redis_errors).run

    def __repr__(self) -> str:
        commands = self._commands
        return f"UserStore(prefix={commands.prefix!r}, wrapper={commands.wrapper!r})"

    def key(self, identity: str) -> bytes:
        """The Redis key of *identity*'s hash (for operators and tests)."""
        return self._commands.key(identity)

    async def add(self, identity: str, psk: bytes, *, replace: bool = False) -> None:
        """Store *identity* with *psk* (16 to 1024 bytes), wrapped.

        Refuses an identity that exists (:class:`UserExists`) unless *replace*,
        which writes a fresh record: new key, new ``created``, not revoked.  The
        check and the write are one atomic step.  Bad input raises
        :class:`InvalidRecord` before anything is written.
        """
        await self._run(self._commands.add(identity, psk, replace))

    async def psk(self, identity: str) -> bytes:
        """The PSK of *identity*, unwrapped.

        Raises :class:`UnknownUser` if there is no such user (including any
        string that could never be an identity), :class:`RevokedUser` if it was
        revoked, :class:`KeyUnwrapError` if the stored blob does not open
        under this KEK for this identity.
        """
        return await self._run(self._commands.psk(identity))

    async def list(self) -> list[UserInfo]:
        """Every user, sorted by identity: identity, created time, revocation; no keys."""
        return await self._run(self._commands.list())

    async def revoke(self, identity: str) -> None:
        """Mark *identity* revoked: :meth:`psk` refuses it from now on.

        The record (and its wrapped key) stays for audit until :meth:`remove`.
        Revoking a revoked user changes nothing.  :class:`UnknownUser` if absent.
        """
        await self._run(self._commands.revoke(identity))

    async def remove(self, identity: str) -> None:
        """Delete *identity* and its wrapped key.  :class:`UnknownUser` if absent."""
        await self._run(self._commands.remove(identity))
