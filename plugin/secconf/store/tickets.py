"""Issued MIKEY-TICKETs (RFC 6043): who asked, for whom, until when, and revocation.

Tickets carry their own (encrypted) keys, so nothing here is key material: this
store answers "was this ticket revoked?" for every process and keeps an audit
trail until the ticket expires.

Key layout (``P`` is the prefix, ``<id>`` the ticket id in lower-case hex)::

    P:ticket:{<id>}           hash    initiator     identity of the requester
                                      recipients    JSON array of identities
                                      issued_at     UNIX time, decimal text
                                      expires_at    UNIX time, decimal text
                                      conference    only if the ticket names one
                                      expiry_ms     when Redis drops the key (ms)
    P:ticket-revoked:{<id>}   string  UNIX time of the revocation
    P:ticket-index:<identity> zset    the initiator's ticket ids (hex), each scored
                                      by its record's expiry_ms

The id in braces is a Redis Cluster hash tag: a ticket's two keys share a
slot, so the revocation script (it reads one, writes the other) works on a
cluster.

Both keys expire at ``expires_at + margin`` (PEXPIREAT, Redis's own clock): the
margin covers clock skew between hosts.  The revocation marker is a key of its
own, so it stays until that moment even if the record is deleted earlier.

**The per-initiator bound.**  :meth:`TicketStore.record` first takes a place in
the initiator's index (one script on that key alone: drop entries whose
records have expired by Redis's clock, refuse if *limit* live entries remain,
else add the id and move the index's expiry to its latest entry), and writes
the record only once it has one.  The index is in the initiator's slot and the
record in the ticket's, so on a Redis Cluster no single script can write both;
the bound holds all the same because an entry is added before its record and
scored with the record's own expiry, so it is never dropped while the record
lives: live records of an initiator <= its live entries <= *limit*.  A failure
between the two writes leaves at worst an entry without a record, which counts
until its expiry (it errs towards refusing), never a record without an entry.
Revocation keeps the record, so a revoked ticket keeps its place until it
expires.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import redis.asyncio

from ._names import (
    check_identity,
    check_prefix,
    ticket_index_key,
    ticket_key,
    ticket_revoked_key,
)
from .commands import Eval, Script, Steps, command, operation
from .errors import (
    CorruptRecord,
    InvalidRecord,
    TicketExists,
    TicketLimitReached,
    UnknownTicket,
    quote_identity,
)
from .executors import AsyncExecutor
from .redis import redis_errors

__all__ = [
    "DEFAULT_MARGIN_SECONDS",
    "DEFAULT_MAX_PER_USER",
    "MAX_TICKET_ID_LENGTH",
    "TicketCommands",
    "TicketRecord",
    "TicketStore",
]

DEFAULT_MARGIN_SECONDS: Final = 300.0
#: Live ticket records one initiator may hold (docs/kms.md "Tickets per user").
DEFAULT_MAX_PER_USER: Final = 256
MAX_TICKET_ID_LENGTH: Final = 256

# KEYS[1] record; ARGV[1] expiry in ms since the epoch, ARGV[2..] field/value pairs.
_RECORD: Final = Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
""")

# KEYS[1] the initiator's index; ARGV[1] ticket id (hex), ARGV[2] its record's expiry in ms
# since the epoch, ARGV[3] the limit.  1: place taken; 0: limit reached, nothing written
# (beyond dropping entries whose records Redis has already expired); 2: the id is already
# in the index, nothing written.  A key expires once Redis's time is past its PEXPIREAT,
# so an entry goes only when its score is below now.
_RESERVE: Final = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 2
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
if tonumber(ARGV[2]) < now then
  return 1
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
""")

# KEYS[1] the initiator's index; ARGV[1] ticket id (hex): take the entry back, and the index's
# expiry back to its latest remaining entry (an emptied zset is deleted by Redis).
_RELEASE: Final = Script("""
redis.call('ZREM', KEYS[1], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], last[2])
end
return 1
""")

# KEYS[1] the initiator's index: its entries not yet expired by Redis's clock (read only).
_COUNT: Final = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
""")

# KEYS[1] record, KEYS[2] marker; ARGV[1] now, ARGV[2] expiry in ms when no record, or ''.
# A second revocation keeps the first marker and its time.
_REVOKE: Final = Script("""
local expiry = redis.call('HGET', KEYS[1], 'expiry_ms')
if not expiry then
  if ARGV[2] == '' then
    return 0
  end
  expiry = ARGV[2]
end
redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PXAT', expiry)
return 1
""")


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRecord(f"{what} must be a finite UNIX time")
    return float(value)


def _time_text(value: float) -> bytes:
    return repr(float(value)).encode("ascii")


@dataclass(frozen=True, slots=True)
class TicketRecord:
    """What the KMS issued: requester, recipients, validity, optional conference.

    *recipients* may be given as a list or any sequence of identities; it is
    kept as a tuple, so records compare equal whatever sequence built them.
    """

    initiator: str
    recipients: Sequence[str]
    issued_at: float
    expires_at: float
    conference_id: str | None = field(default=None)

    def __post_init__(self) -> None:
        check_identity(self.initiator, "the initiator")
        if isinstance(self.recipients, str | bytes) or not isinstance(self.recipients, Iterable):
            raise InvalidRecord("recipients must be a list of identities")
        recipients = tuple(self.recipients)
        if not recipients:
            raise InvalidRecord("a ticket needs at least one recipient")
        for recipient in recipients:
            check_identity(recipient, "each recipient")
        object.__setattr__(self, "recipients", recipients)
        issued = _finite(self.issued_at, "issued_at")
        expires = _finite(self.expires_at, "expires_at")
        if expires <= issued:
            raise InvalidRecord("expires_at must be after issued_at")
        object.__setattr__(self, "issued_at", issued)
        object.__setattr__(self, "expires_at", expires)
        if self.conference_id is not None:
            check_identity(self.conference_id, "the conference id")


def _check_ticket_id(ticket_id: object) -> bytes:
    if (
        not isinstance(ticket_id, bytes | bytearray)
        or not 0 < len(ticket_id) <= MAX_TICKET_ID_LENGTH
    ):
        raise InvalidRecord(f"a ticket id must be 1 to {MAX_TICKET_ID_LENGTH} bytes")
    return bytes(ticket_id)


def _expiry_ms(expires_at: float, margin: float) -> int:
    return math.ceil((expires_at + margin) * 1000)


def check_limit(limit: object, what: str = "the ticket limit") -> int:
    """*limit* if it is a whole number >= 1, else ValueError naming *what*."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{what} must be a whole number >= 1")
    return limit


class TicketCommands:
    """The ticket records' keys and operations (:mod:`.commands`); see :class:`TicketStore`."""

    def __init__(self, prefix: str, margin: float, clock: Callable[[], float]) -> None:
        self.prefix = check_prefix(prefix)
        self.margin = margin
        self._clock = clock

    def __repr__(self) -> str:
        return f"TicketCommands(prefix={self.prefix!r}, margin_seconds={self.margin!r})"

    def key(self, ticket_id: bytes) -> bytes:
        return ticket_key(self.prefix, _check_ticket_id(ticket_id).hex())

    def revoked_key(self, ticket_id: bytes) -> bytes:
        return ticket_revoked_key(self.prefix, _check_ticket_id(ticket_id).hex())

    def index_key(self, initiator: str) -> bytes:
        return ticket_index_key(self.prefix, initiator)

    @operation("count the initiator's tickets")
    def reserve(self, initiator: str, hex_id: bytes, expiry: int, limit: int) -> Steps[int]:
        """A place in *initiator*'s index: 1 taken, 0 the limit reached, 2 the id is there."""
        placed = yield Eval(
            _RESERVE, [self.index_key(initiator)], [hex_id, str(expiry).encode("ascii"), limit]
        )
        return int(placed)

    @operation("record a ticket")
    def write(self, ticket_id: bytes, expiry: int, fields: Sequence[bytes]) -> Steps[bool]:
        """The record written unless one exists (False then)."""
        created = yield Eval(_RECORD, [self.key(ticket_id)], [str(expiry).encode("ascii"), *fields])
        return bool(created)

    @operation("update the initiator's tickets")
    def release(self, initiator: str, hex_id: bytes | str) -> Steps[None]:
        """*initiator*'s index entry of *hex_id* given back."""
        yield Eval(_RELEASE, [self.index_key(initiator)], [hex_id])

    @operation("discard a ticket record")
    def discard(self, ticket_id: bytes, initiator: str) -> Steps[None]:
        yield command("DEL", self.key(ticket_id))
        yield Eval(_RELEASE, [self.index_key(initiator)], [_check_ticket_id(ticket_id).hex()])

    @operation("count the initiator's tickets")
    def live_count(self, initiator: str) -> Steps[int]:
        return int((yield Eval(_COUNT, [self.index_key(initiator)])))

    @operation("read a ticket record")
    def get(self, ticket_id: bytes) -> Steps[TicketRecord | None]:
        raw: dict[bytes, bytes] = yield command("HGETALL", self.key(ticket_id))
        if not raw:
            return None
        values = {bytes(k) if isinstance(k, bytes) else k.encode(): v for k, v in raw.items()}
        try:
            recipients = json.loads(values[b"recipients"])
            conference = values.get(b"conference")
            return TicketRecord(
                initiator=_text(values[b"initiator"]),
                recipients=tuple(recipients),
                issued_at=float(values[b"issued_at"]),
                expires_at=float(values[b"expires_at"]),
                conference_id=None if conference is None else _text(conference),
            )
        except (KeyError, TypeError, ValueError) as exc:
            # InvalidRecord is a ValueError: a stored record that fails validation is corrupt.
            raise CorruptRecord(
                f"ticket record {ticket_id.hex()} is not in the expected format"
            ) from exc

    @operation("revoke a ticket")
    def revoke(self, ticket_id: bytes, expires_at: float | None) -> Steps[None]:
        fallback = b""
        if expires_at is not None:
            fallback = str(_expiry_ms(_finite(expires_at, "expires_at"), self.margin)).encode()
        done = yield Eval(
            _REVOKE,
            [self.key(ticket_id), self.revoked_key(ticket_id)],
            [_time_text(self._clock()), fallback],
        )
        if not done:
            raise UnknownTicket(f"ticket {_check_ticket_id(ticket_id).hex()} has no record")

    @operation("check a ticket's revocation")
    def is_revoked(self, ticket_id: bytes) -> Steps[bool]:
        return bool((yield command("EXISTS", self.revoked_key(ticket_id))))


class TicketStore:
    """Records of issued tickets and their revocation, expiring with the tickets.

    *margin_seconds* is added to each ticket's ``expires_at`` before Redis drops
    its keys; *clock* gives the revocation time; *max_per_user* bounds the live
    records of one initiator (:meth:`record` may name another limit).  Every
    method raises ``ServiceUnavailable`` when Redis does not answer.
    :class:`TicketCommands` runs on *client* (``redis.asyncio``).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str = "secconf",
        *,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
        max_per_user: int = DEFAULT_MAX_PER_USER,
    ) -> None:
        if not (
            isinstance(margin_seconds, int | float)
            and math.isfinite(margin_seconds)
            and margin_seconds >= 0
        ):
            raise ValueError("margin_seconds must be a non-negative number")
        self._commands = TicketCommands(prefix, float(margin_seconds), clock)
        self._run = AsyncExecutor(client, errors=redis_errors).run
        self._max_per_user = check_limit(max_per_user, "max_per_user")

    def __repr__(self) -> str:
        return (
            f"TicketStore(prefix={self._commands.prefix!r}, "
            f"margin_seconds={self._commands.margin!r}, max_per_user={self._max_per_user!r})"
        )

    @property
    def max_per_user(self) -> int:
        return self._max_per_user

    def key(self, ticket_id: bytes) -> bytes:
        """The Redis key of the record of *ticket_id*."""
        return self._commands.key(ticket_id)

    def revoked_key(self, ticket_id: bytes) -> bytes:
        """The Redis key of the revocation marker of *ticket_id*."""
        return self._commands.revoked_key(ticket_id)

    def index_key(self, initiator: str) -> bytes:
        """The Redis key of *initiator*'s index of live tickets."""
        return self._commands.index_key(initiator)

    async def record(
        self, ticket_id: bytes, record: TicketRecord, *, limit: int | None = None
    ) -> None:
        """Record a newly issued ticket; its keys expire at ``expires_at`` + margin.

        Refuses, writing nothing, when the initiator already holds *limit*
        (default: ``max_per_user``) live records (:class:`TicketLimitReached`),
        and an id already recorded (:class:`TicketExists`): ids are unique, and a
        second record would hide the first.  A record whose expiry is already
        past is dropped by Redis at once and takes no place.
        """
        if not isinstance(record, TicketRecord):
            raise TypeError("record must be a TicketRecord")
        limit = self._max_per_user if limit is None else check_limit(limit)
        hex_id = _check_ticket_id(ticket_id).hex().encode("ascii")
        fields: list[bytes] = [
            b"initiator",
            record.initiator.encode(),
            b"recipients",
            json.dumps(list(record.recipients), ensure_ascii=False).encode(),
            b"issued_at",
            _time_text(record.issued_at),
            b"expires_at",
            _time_text(record.expires_at),
        ]
        if record.conference_id is not None:
            fields += [b"conference", record.conference_id.encode()]
        expiry = _expiry_ms(record.expires_at, self._commands.margin)
        fields += [b"expiry_ms", str(expiry).encode("ascii")]
        commands = self._commands
        placed = await self._run(commands.reserve(record.initiator, hex_id, expiry, limit))
        if not placed:
            raise TicketLimitReached(
                f"{quote_identity(record.initiator)} holds {limit} live tickets, the limit"
            )
        if not await self._run(commands.write(ticket_id, expiry, fields)):
            if placed == 1:  # our entry, for a record that is someone else's: take it back
                await self._run(commands.release(record.initiator, hex_id))
            raise TicketExists(f"ticket {ticket_id.hex()} is already recorded")

    async def discard(self, ticket_id: bytes, initiator: str) -> None:
        """Delete the record of a ticket that was never handed out, and its index entry.

        For an issue that failed after :meth:`record` (e.g. a concurrent copy of
        the request won the replay check).  The record goes first, so the entry
        never lives shorter than it.  A revocation marker, if any, stays.
        """
        await self._run(self._commands.discard(ticket_id, initiator))

    async def live_count(self, initiator: str) -> int:
        """How many places *initiator* holds: index entries not yet expired (Redis's clock)."""
        return await self._run(self._commands.live_count(initiator))

    async def get(self, ticket_id: bytes) -> TicketRecord | None:
        """The record of *ticket_id*, or None if never recorded or already expired."""
        return await self._run(self._commands.get(ticket_id))

    async def revoke(self, ticket_id: bytes, *, expires_at: float | None = None) -> None:
        """Mark *ticket_id* revoked until it expires (its ``expires_at`` + margin).

        The expiry comes from the ticket's record; *expires_at* is used only when
        there is no record (e.g. the caller holds the ticket itself).  Without
        either, :class:`UnknownTicket`.  Revoking twice keeps the first marker.
        """
        await self._run(self._commands.revoke(ticket_id, expires_at))

    async def is_revoked(self, ticket_id: bytes) -> bool:
        """True if *ticket_id* was revoked and has not yet expired."""
        return await self._run(self._commands.is_revoked(ticket_id))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError("not text")
