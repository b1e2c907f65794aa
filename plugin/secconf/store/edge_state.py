"""The edge's records in Redis, so that a restarted edge re-creates its legs (docs/edge.md).

Key layout (``P`` = prefix, ``E`` = edge id; named by :class:`._names.EdgeKeys`)::

    P:edge:{E}:conferences           set   conference ids
    P:edge:{E}:conf:<c>:epochs       hash  epoch -> JSON epoch record
    P:edge:{E}:conf:<c>:ssrcs        hash  ssrc -> JSON SSRC record
    P:edge:{E}:legs                  hash  leg id -> JSON leg record

``{E}`` is a Redis Cluster hash tag: one edge's keys share a slot, so its MULTI blocks
(which touch several of them) work on a cluster too.  What a record holds, and the
wrapping of every key in it, is the edge's (:class:`secconf.media.state.EdgeStore`):
here records are plain JSON-able mappings, stored and read back as they are.

The operations are :class:`EdgeRecordCommands`' (:mod:`.commands`); :class:`EdgeRecords`
runs them on the edge's ``redis.asyncio`` client (:func:`~secconf.store.redis.connect`):
every call has the client's timeout, and an outage is ``ServiceUnavailable`` (503).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from ._names import EdgeKeys
from .commands import Command, Pipeline, Steps, command, operation
from .executors import AsyncExecutor
from .redis import redis_errors

__all__ = ["EdgeRecordCommands", "EdgeRecords", "EdgeRecordsSnapshot"]

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


def _registry(key: str, ssrcs: Mapping[int, Record]) -> list[Command]:
    """*key*'s hash made to hold exactly *ssrcs* (SSRC -> JSON record)."""
    fields = [part for n, record in ssrcs.items() for part in (str(n), json.dumps(record))]
    return [command("DEL", key), *([command("HSET", key, *fields)] if fields else [])]


def _records(raw: Mapping[bytes, bytes]) -> dict[int, dict[str, Any]]:
    return {int(name): json.loads(value) for name, value in raw.items()}


class EdgeRecordCommands:
    """One edge id's keys (``P:edge:{E}:...``) and their operations; each write one MULTI."""

    def __init__(self, prefix: str, edge_id: str) -> None:
        self.edge_id = edge_id
        self.keys = EdgeKeys(prefix, edge_id)
        self.base = self.keys.base

    def __repr__(self) -> str:
        return f"EdgeRecordCommands({self.base!r})"

    # -- writes --

    @operation("store a key epoch")
    def save_epoch(self, conference: str, epoch: int, record: Record) -> Steps[None]:
        """The conference is known, and *epoch*'s record is stored (one MULTI)."""
        yield Pipeline(
            (
                command("SADD", self.keys.conferences(), conference),
                command("HSET", self.keys.epochs(conference), str(epoch), json.dumps(record)),
            ),
            transaction=True,
        )

    @operation("delete a key epoch")
    def delete_epoch(self, conference: str, epoch: int) -> Steps[None]:
        yield command("HDEL", self.keys.epochs(conference), str(epoch))

    @operation("store a media leg")
    def save_ssrcs(
        self, conference: str, ssrcs: Mapping[int, Record], leg: tuple[str, Record] | None
    ) -> Steps[None]:
        """The SSRC registry replaced by *ssrcs*, and *leg* (id, record) stored (one MULTI)."""
        commands = _registry(self.keys.ssrcs(conference), ssrcs)
        if leg is not None:
            commands.append(command("HSET", self.keys.legs(), leg[0], json.dumps(leg[1])))
        yield Pipeline(tuple(commands), transaction=True)

    @operation("delete a media leg")
    def delete_leg(self, conference: str, leg_id: str, ssrcs: Mapping[int, Record]) -> Steps[None]:
        """The leg's record deleted and the SSRC registry replaced by *ssrcs* (one MULTI)."""
        commands = [
            command("HDEL", self.keys.legs(), leg_id),
            *_registry(self.keys.ssrcs(conference), ssrcs),
        ]
        yield Pipeline(tuple(commands), transaction=True)

    @operation("delete a media leg")
    def delete_leg_id(self, leg_id: str) -> Steps[None]:
        yield command("HDEL", self.keys.legs(), leg_id)

    @operation("delete a conference")
    def delete_conference(self, conference: str, legs: Sequence[str]) -> Steps[None]:
        """The conference, its epochs, its SSRCs and the records of *legs* (one MULTI)."""
        commands = [
            command("SREM", self.keys.conferences(), conference),
            command("DEL", self.keys.epochs(conference), self.keys.ssrcs(conference)),
        ]
        if legs:
            commands.append(command("HDEL", self.keys.legs(), *legs))
        yield Pipeline(tuple(commands), transaction=True)

    # -- read back --

    @operation("read the edge's state")
    def load(self) -> Steps[EdgeRecordsSnapshot]:
        """Every record this edge id has stored, parsed but not interpreted."""
        snapshot = EdgeRecordsSnapshot()
        members: set[bytes] = yield command("SMEMBERS", self.keys.conferences())
        for conference in sorted(_text(m) for m in members):
            snapshot.epochs[conference] = _records(
                (yield command("HGETALL", self.keys.epochs(conference)))
            )
            snapshot.ssrcs[conference] = _records(
                (yield command("HGETALL", self.keys.ssrcs(conference)))
            )
        raw_legs: dict[bytes, bytes] = yield command("HGETALL", self.keys.legs())
        snapshot.legs = {_text(name): json.loads(value) for name, value in raw_legs.items()}
        return snapshot


class EdgeRecords:
    """:class:`EdgeRecordCommands` run on *client* (from ``connect``): the edge's face."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str, edge_id: str) -> None:
        self._commands = EdgeRecordCommands(prefix, edge_id)
        self._run = AsyncExecutor(client, errors=redis_errors).run
        self.edge_id = edge_id
        self.base = self._commands.base

    def __repr__(self) -> str:
        return f"EdgeRecords({self.base!r})"

    async def save_epoch(self, conference: str, epoch: int, record: Record) -> None:
        """The conference is known, and *epoch*'s record is stored (one MULTI)."""
        await self._run(self._commands.save_epoch(conference, epoch, record))

    async def delete_epoch(self, conference: str, epoch: int) -> None:
        await self._run(self._commands.delete_epoch(conference, epoch))

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
        await self._run(self._commands.save_ssrcs(conference, ssrcs, leg))

    async def delete_leg(self, conference: str, leg_id: str, ssrcs: Mapping[int, Record]) -> None:
        """The leg's record deleted and the SSRC registry replaced by *ssrcs* (one MULTI)."""
        await self._run(self._commands.delete_leg(conference, leg_id, ssrcs))

    async def delete_leg_id(self, leg_id: str) -> None:
        """A leg record alone (one that could not be restored)."""
        await self._run(self._commands.delete_leg_id(leg_id))

    async def delete_conference(self, conference: str, legs: Sequence[str]) -> None:
        """The conference, its epochs, its SSRCs and the records of *legs* (one MULTI)."""
        await self._run(self._commands.delete_conference(conference, legs))

    async def load(self) -> EdgeRecordsSnapshot:
        """Every record this edge id has stored, parsed but not interpreted."""
        return await self._run(self._commands.load())
