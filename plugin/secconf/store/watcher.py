"""What the Asterisk watcher keeps in Redis: leases, rosters, the REFER queue, its journal.

Key layout (``P`` is the prefix; ``<c>`` a ConfBridge bridge, named by the focus's
conference id)::

    P:watcher-lease:<c>   string  the holding watcher's token (``<watcher id>/<random>``),
                                  ``SET NX PX``; renewed (compare-and-``PEXPIRE``) and
                                  released (compare-and-``DEL``) only by its holder, each
                                  one Lua script
    P:roster:<c>          hash    channel -> JSON {uniqueid, caller_id, call_id}: who is
                                  in the bridge, as the watcher follows it over AMI
    P:rekeys:<c>          stream  the watcher's rekey reports (epoch, timings, verdicts; no
                                  key), about REPORTS_MAX entries
    P:dialout:<c>         stream  the dial-outs the watcher made (target, result, ...; no
                                  key), about DIALOUTS_MAX entries
    P:conf:{<c>}:refer    stream  the REFERs the focus accepted
                                  (:meth:`.ReferStream.add`), read here by the
                                  consumer group ``dialout``: each entry to one watcher

Every roster write also increments the conference's change counter
``P:conf:{<c>}:events`` (the event package's notifier polls it; it lives in the
conference's slot, so it is a command of its own after the roster's MULTI, and it is
counted only while the focus's conference record made it exist: a bridge of an ended
conference leaves no counter behind).

Rosters and both streams of the watcher expire :data:`WATCHER_KEY_TTL` seconds after
their last write, so a watcher that died leaves nothing forever.  Every command and
every MULTI names one key, so all of this works on Redis Cluster (the reconcile of
every roster at once is a plain pipeline for that reason: the rosters lie in several
slots).

Every object here is pure command layer (:mod:`.commands`): its methods return
operations, which the watcher runs with an :class:`~.executors.AsyncExecutor` (``await
executor.run(lease.hold(c))``) and tests, operators and the lab with a
:class:`~.executors.SyncExecutor`.  Under the executors' default policy every redis-py
error comes out as a store error (:func:`~secconf.store.redis.all_redis_errors`): an
outage as ``ServiceUnavailable``, anything else Redis refused as ``RedisRefused``; the
watcher's loops log either and go on.  No key material is ever written here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import redis.exceptions

from ._names import (
    check_prefix,
    dialout_stream_key,
    events_key,
    refer_stream_key,
    rekey_report_key,
    roster_key,
    roster_pattern,
    watcher_lease_key,
)
from .commands import Command, Eval, Pipeline, Scan, Script, Steps, command, operation
from .errors import InvalidRecord

__all__ = [
    "DIALOUTS_MAX",
    "REFER_GROUP",
    "REPORTS_MAX",
    "WATCHER_KEY_TTL",
    "ReferQueue",
    "RosterEntry",
    "RosterStore",
    "WatcherJournal",
    "WatcherLease",
]

#: Entries kept in a conference's rekey report stream (approximate trim, ``MAXLEN ~``).
REPORTS_MAX: Final = 100
#: Entries kept in a conference's dial-out stream.
DIALOUTS_MAX: Final = REPORTS_MAX * 10
#: Seconds a roster or a journal stream lives after its last write.
WATCHER_KEY_TTL: Final = 86400
#: The consumer group of every watcher on the REFER streams.
REFER_GROUP: Final = "dialout"
#: REFER entries taken per read.
REFER_BATCH: Final = 16

# KEYS[1] the lease; ARGV[1] the holder's token, ARGV[2] the lease's lifetime (ms).
_RENEW: Final = Script("""
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
""")

# KEYS[1] the lease; ARGV[1] the holder's token.
_RELEASE: Final = Script("""
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
""")


class WatcherLease:
    """``P:watcher-lease:<conference>``: which watcher may rekey a conference.

    Only the holder acts, so two watchers never rekey one conference twice; a lease
    its holder stops renewing lapses after *ttl* seconds and another watcher may take it.
    """

    def __init__(self, prefix: str, owner: str, ttl: float) -> None:
        self._prefix = check_prefix(prefix)
        # The owner name plus a random part: a restarted watcher with the same id is
        # not mistaken for its previous life.
        self.token = f"{owner}/{secrets.token_hex(4)}"
        self._ttl_ms = max(1, int(ttl * 1000))

    def __repr__(self) -> str:
        return f"WatcherLease(prefix={self._prefix!r}, token={self.token!r})"

    def key(self, conference: str) -> str:
        return watcher_lease_key(self._prefix, conference)

    @operation("take or renew a watcher lease")
    def hold(self, conference: str) -> Steps[bool]:
        """Take the lease (``SET NX PX``) or renew ours; False if another watcher holds it."""
        key = self.key(conference)
        if (yield command("SET", key, self.token, "NX", "PX", self._ttl_ms)):
            return True
        return bool((yield Eval(_RENEW, [key], [self.token, self._ttl_ms])))

    @operation("read a watcher lease")
    def holder(self, conference: str) -> Steps[str | None]:
        """The token of the lease's holder, or ``None`` if nobody holds it."""
        value = yield command("GET", self.key(conference))
        return None if value is None else bytes(value).decode()

    @operation("release a watcher lease")
    def release(self, conference: str) -> Steps[None]:
        """Give the lease up if we hold it; another watcher's lease stays as it is."""
        yield Eval(_RELEASE, [self.key(conference)], [self.token])


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One channel of a bridge as the roster hash records it."""

    uniqueid: str
    caller_id: str
    #: the channel's SIP Call-ID (the focus's dialog record is found by it); "" if unknown
    call_id: str

    def to_json(self) -> str:
        return json.dumps(
            {"uniqueid": self.uniqueid, "caller_id": self.caller_id, "call_id": self.call_id}
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> RosterEntry:
        """An entry read back; a field this code did not write is read as ""."""
        fields = json.loads(text)
        return cls(
            uniqueid=str(fields.get("uniqueid") or ""),
            caller_id=str(fields.get("caller_id") or ""),
            call_id=str(fields.get("call_id") or ""),
        )


class RosterStore:
    """``P:roster:<conference>``: channel -> :class:`RosterEntry`, written as AMI tells."""

    def __init__(self, prefix: str) -> None:
        self._prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"RosterStore(prefix={self._prefix!r})"

    def key(self, conference: str) -> str:
        return roster_key(self._prefix, conference)

    def changed(self, conference: str) -> Command | None:
        """The increment of *conference*'s change counter, if it is a conference id."""
        try:
            key = events_key(self._prefix, conference)
        except InvalidRecord:
            return None  # a bridge the focus did not name: no subscriber can watch it
        return command("EVAL", _BUMP, 1, key)

    def _bump(self, conferences: list[str]) -> Pipeline | None:
        bumps = [bump for c in conferences if (bump := self.changed(c)) is not None]
        return Pipeline(tuple(bumps), transaction=False) if bumps else None

    @operation("write a roster")
    def add(self, conference: str, channel: str, entry: RosterEntry) -> Steps[None]:
        """*channel* joined (or its entry changed); the roster lives another day (one MULTI)."""
        key = self.key(conference)
        yield Pipeline(
            (command("HSET", key, channel, entry.to_json()), _expire(key)), transaction=True
        )
        if (bump := self.changed(conference)) is not None:
            yield bump

    @operation("write a roster")
    def remove(self, conference: str, channel: str) -> Steps[None]:
        """*channel* left the bridge."""
        yield command("HDEL", self.key(conference), channel)
        if (bump := self.changed(conference)) is not None:
            yield bump

    @operation("delete a roster")
    def delete(self, conference: str) -> Steps[None]:
        """The bridge ended."""
        yield command("DEL", self.key(conference))
        if (bump := self.changed(conference)) is not None:
            yield bump

    @operation("reconcile the rosters")
    def replace_all(self, rosters: Mapping[str, Mapping[str, RosterEntry]]) -> Steps[None]:
        """Every roster as *rosters* says, and none of a bridge it does not name.

        One pipeline after a ``SCAN`` for the rosters to drop; not a MULTI, since the
        rosters of several conferences lie in several Cluster slots.
        """
        keys: list[bytes] = yield Scan(roster_pattern(self._prefix))
        dropped = [key.decode().rsplit(":", 1)[1] for key in keys]
        dropped = [conference for conference in dropped if conference not in rosters]
        commands = [command("DEL", self.key(conference)) for conference in dropped]
        for conference, members in rosters.items():
            key = self.key(conference)
            commands.append(command("DEL", key))
            if members:
                fields = [part for channel, e in members.items() for part in (channel, e.to_json())]
                commands += [command("HSET", key, *fields), _expire(key)]
        yield Pipeline(tuple(commands), transaction=False)
        # Every roster reconciled may have changed: each conference's counter moves.
        if (bumps := self._bump([*dropped, *rosters])) is not None:
            yield bumps

    @operation("read a roster")
    def members(self, conference: str) -> Steps[dict[str, RosterEntry]]:
        """The roster as stored: channel -> entry (operators, the demo, tests)."""
        raw: dict[bytes, bytes] = yield command("HGETALL", self.key(conference))
        return {channel.decode(): RosterEntry.from_json(value) for channel, value in raw.items()}


class ReferQueue:
    """``P:conf:{<conference>}:refer`` read by the consumer group ``dialout``, as *consumer*.

    Redis hands each entry to exactly one consumer (``XREADGROUP``), which acknowledges
    it when its dial-out is done (``XACK``); an entry taken by a watcher that died stays
    pending, never dialled twice.  The group is made on the first read of a stream, from
    the stream's start: REFERs accepted before any watcher saw the conference count too.
    """

    def __init__(self, prefix: str, consumer: str) -> None:
        self._prefix = check_prefix(prefix)
        self.consumer = consumer
        #: streams whose group exists (made here, or found made by another watcher)
        self._groups: set[str] = set()

    def __repr__(self) -> str:
        return f"ReferQueue(prefix={self._prefix!r}, consumer={self.consumer!r})"

    def key(self, conference: str) -> str:
        return refer_stream_key(self._prefix, conference)

    @operation("read a REFER stream")
    def take(self, conference: str) -> Steps[list[tuple[str, dict[str, str]]]]:
        """Up to :data:`REFER_BATCH` entries no consumer was given yet: (entry id, fields).

        Empty while the stream does not exist (no REFER yet: the focus's ``XADD`` makes
        it, and the group is made at the next read).
        """
        key = self.key(conference)
        if key not in self._groups:
            try:
                yield command("XGROUP CREATE", key, REFER_GROUP, "0")
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    return []  # no stream yet
            self._groups.add(key)
        raw: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None = yield command(
            "XREADGROUP", "GROUP", REFER_GROUP, self.consumer,
            "COUNT", REFER_BATCH, "STREAMS", key, ">",
        )  # fmt: skip
        return [
            (
                entry_id.decode(),
                {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()},
            )
            for _stream, items in raw or []
            for entry_id, fields in items
        ]

    @operation("acknowledge a REFER")
    def ack(self, conference: str, entry_id: str) -> Steps[None]:
        """The entry's dial-out is done (whatever its outcome): no longer pending."""
        yield command("XACK", self.key(conference), REFER_GROUP, entry_id)

    def forget(self, conference: str) -> None:
        """The conference ended: its group is looked for again should the stream come back."""
        self._groups.discard(self.key(conference))


class WatcherJournal:
    """``P:rekeys:<conference>`` and ``P:dialout:<conference>``: what the watcher did.

    Each append is one MULTI (``XADD MAXLEN ~`` and ``EXPIRE`` of that one stream).
    Fields are the caller's plain strings; none is ever a key.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = check_prefix(prefix)

    def __repr__(self) -> str:
        return f"WatcherJournal(prefix={self._prefix!r})"

    def report_key(self, conference: str) -> str:
        return rekey_report_key(self._prefix, conference)

    def dialout_key(self, conference: str) -> str:
        return dialout_stream_key(self._prefix, conference)

    @operation("store a rekey report")
    def add_report(self, conference: str, fields: Mapping[str, str]) -> Steps[None]:
        """Append one rekey's report."""
        yield _append(self.report_key(conference), fields, REPORTS_MAX)

    @operation("record a dial-out")
    def add_dialout(self, conference: str, fields: Mapping[str, str]) -> Steps[None]:
        """Append one dial-out's outcome."""
        yield _append(self.dialout_key(conference), fields, DIALOUTS_MAX)


#: INCR the change counter only while it exists (made by the focus's create script, gone
#: with the conference): one key, any slot.
_BUMP: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
return false
"""


def _expire(key: str) -> Command:
    return command("EXPIRE", key, WATCHER_KEY_TTL)


def _append(key: str, fields: Mapping[str, str], most: int) -> Pipeline:
    """``XADD key MAXLEN ~ most * fields...`` and the stream's ``EXPIRE``, one MULTI."""
    flat = [part for item in fields.items() for part in item]
    return Pipeline(
        (command("XADD", key, "MAXLEN", "~", most, "*", *flat), _expire(key)), transaction=True
    )
