"""The edge's records in Redis, so that a restarted edge re-creates its legs (docs/edge.md).

Key layout (``P`` = prefix, ``E`` = edge id)::

    P:edge:{E}:conferences           set   conference ids
    P:edge:{E}:conf:<c>:epochs       hash  epoch -> JSON epoch record
    P:edge:{E}:conf:<c>:ssrcs        hash  ssrc -> JSON SSRC record
    P:edge:{E}:legs                  hash  leg id -> JSON leg record

``{E}`` is a Redis Cluster hash tag: one edge's keys share a slot, so its MULTI blocks
(which touch several of them) work on a cluster too.  What a record holds, and the
wrapping of every key in it, is the edge's (:class:`secconf.media.state.EdgeStore`):
here records are plain JSON-able mappings, stored and read back as they are.

Asynchronous (``redis.asyncio`` from :func:`~secconf.store.redis.connect`): every call
has the client's timeout, and an outage is ``ServiceUnavailable`` (503).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from .redis import redis_errors

__all__ = ["EdgeRecords", "EdgeRecordsSnapshot"]

#: A record as stored: a JSON object.
Record = Mapping[str, Any]


@dataclass(slots=True)
class EdgeRecordsSnapshot:
    """Every record of one edge id, as read back (conferences in sorted order)."""

    #: conference -> epoch -> epoch record
    epochs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: conference -> SSRC -> SSRC record
    ssrcs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: leg id -> leg record
    legs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(records: Mapping[int, Record]) -> dict[str, str]:
    return {str(number): json.dumps(record) for number, record in records.items()}


class EdgeRecords:
    """One edge id's keys (``P:edge:{E}:...``); each write one MULTI.  *client* from ``connect``."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str, edge_id: str) -> None:
        self._redis = client
        self.edge_id = edge_id
        self.base = f"{prefix}:edge:{{{edge_id}}}"

    def __repr__(self) -> str:
        return f"EdgeRecords({self.base!r})"

    # -- key names --

    def _conferences(self) -> str:
        return f"{self.base}:conferences"

    def _epochs(self, conference: str) -> str:
        return f"{self.base}:conf:{conference}:epochs"

    def _ssrcs(self, conference: str) -> str:
        return f"{self.base}:conf:{conference}:ssrcs"

    def _legs(self) -> str:
        return f"{self.base}:legs"

    # -- writes --

    async def save_epoch(self, conference: str, epoch: int, record: Record) -> None:
        """The conference is known, and *epoch*'s record is stored (one MULTI)."""
        with redis_errors("store a key epoch"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.sadd(self._conferences(), conference)
            pipe.hset(self._epochs(conference), str(epoch), json.dumps(record))
            await pipe.execute()

    async def delete_epoch(self, conference: str, epoch: int) -> None:
        with redis_errors("delete a key epoch"):
            await self._redis.hdel(self._epochs(conference), str(epoch))

    async def save_ssrcs(
        self,
        conference: str,
        ssrcs: Mapping[int, Record],
        *,
        leg: tuple[str, Record] | None = None,
    ) -> None:
        """The conference's SSRC registry replaced by *ssrcs*, and *leg* (id, record) stored.

        One MULTI: a leg is never stored without the SSRCs it owns.
        """
        key = self._ssrcs(conference)
        fields = _fields(ssrcs)
        with redis_errors("store a media leg"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(key)
            if fields:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            if leg is not None:
                pipe.hset(self._legs(), leg[0], json.dumps(leg[1]))
            await pipe.execute()

    async def delete_leg(self, conference: str, leg_id: str, ssrcs: Mapping[int, Record]) -> None:
        """The leg's record deleted and the SSRC registry replaced by *ssrcs* (one MULTI)."""
        key = self._ssrcs(conference)
        fields = _fields(ssrcs)
        with redis_errors("delete a media leg"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self._legs(), leg_id)
            pipe.delete(key)
            if fields:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def delete_leg_id(self, leg_id: str) -> None:
        """A leg record alone (one that could not be restored)."""
        with redis_errors("delete a media leg"):
            await self._redis.hdel(self._legs(), leg_id)

    async def delete_conference(self, conference: str, legs: Sequence[str]) -> None:
        """The conference, its epochs, its SSRCs and the records of *legs* (one MULTI)."""
        with redis_errors("delete a conference"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.srem(self._conferences(), conference)
            pipe.delete(self._epochs(conference), self._ssrcs(conference))
            if legs:
                pipe.hdel(self._legs(), *legs)
            await pipe.execute()

    # -- read back --

    async def load(self) -> EdgeRecordsSnapshot:
        """Every record this edge id has stored, parsed but not interpreted."""
        snapshot = EdgeRecordsSnapshot()
        with redis_errors("read the edge's state"):
            members = await self._redis.smembers(self._conferences())
            for conference in sorted(_text(m) for m in members):
                raw = await self._redis.hgetall(self._epochs(conference))
                snapshot.epochs[conference] = {
                    int(name): json.loads(value) for name, value in raw.items()
                }
                raw = await self._redis.hgetall(self._ssrcs(conference))
                snapshot.ssrcs[conference] = {
                    int(name): json.loads(value) for name, value in raw.items()
                }
            raw_legs = await self._redis.hgetall(self._legs())
        snapshot.legs = {_text(name): json.loads(value) for name, value in raw_legs.items()}
        return snapshot
