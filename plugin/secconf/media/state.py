"""What the edge keeps in Redis so that a restarted edge re-creates its legs (docs/edge.md).

Key layout (``P`` = prefix, ``E`` = edge id)::

    P:edge:{E}:conferences           set   conference ids
    P:edge:{E}:conf:<c>:epochs       hash  epoch -> JSON {suite, added, key: base64(wrapped key||salt)}
    P:edge:{E}:conf:<c>:ssrcs        hash  ssrc -> JSON {leg, direction, retired_epoch|null}
    P:edge:{E}:legs                  hash  leg id -> JSON leg record (keys wrapped)

``{E}`` is a Redis Cluster hash tag: one edge's keys share a slot, so its
MULTI blocks (which touch several of them) work on a cluster too.

A leg record holds ``ports`` (participant, internal RTP ports) and
``rtcp_ports`` (the RTCP port of each side without rtcp-mux, null for a muxed
side; a record without the field is muxed on both sides), so a restart binds
the same pairs again.

Every key is wrapped with :class:`~secconf.store.KeyWrapper` under a context
that names the record it belongs to (``edge-epoch:E:<c>:<n>``,
``edge-leg:E:<leg>:<field>``), so a blob moved to another record does not
open.  Every call has the client's timeout; failures become 503
(:func:`~secconf.store.redis_errors`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio

from secconf.core.edge import Direction
from secconf.store import CorruptRecord, KeyWrapper, redis_errors

from .keys import SrtpKey
from .relay import Conference, Leg

__all__ = ["EdgeStore", "LegRecord", "Snapshot"]


@dataclass(slots=True)
class LegRecord:
    """A leg as read back from Redis."""

    leg_id: str
    conference: str
    mode: str
    internal_mode: str
    ports: tuple[int, int]
    tx_epoch: int
    participant_remote: tuple[str, int] | None
    internal_remote: tuple[str, int] | None
    participant_key: SrtpKey | None = field(repr=False)
    asterisk_key: SrtpKey | None = field(repr=False)
    edge_internal_key: SrtpKey | None = field(repr=False)
    rtcp_ports: tuple[int | None, int | None] = (None, None)  # None: that side is muxed
    participant_rtcp_remote: tuple[str, int] | None = None  # a=rtcp; None: RTP port + 1
    internal_rtcp_remote: tuple[str, int] | None = None


@dataclass(slots=True)
class Snapshot:
    epochs: dict[str, dict[int, tuple[SrtpKey, float]]]
    ssrcs: dict[str, dict[int, tuple[str, Direction, int | None]]]
    legs: list[LegRecord]


def _addr(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    return str(value[0]), int(value[1])


def _port(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EdgeStore:
    """The edge's Redis records.  *client* from :func:`secconf.store.connect`."""

    def __init__(
        self, client: redis.asyncio.Redis, wrapper: KeyWrapper, prefix: str, edge_id: str
    ) -> None:
        self.client = client
        self.wrapper = wrapper
        self.edge_id = edge_id
        self.base = f"{prefix}:edge:{{{edge_id}}}"

    def __repr__(self) -> str:
        return f"EdgeStore({self.base!r}, {self.wrapper!r})"

    # -- key names and wrapping --

    def _conferences(self) -> str:
        return f"{self.base}:conferences"

    def _epochs(self, conference: str) -> str:
        return f"{self.base}:conf:{conference}:epochs"

    def _ssrcs(self, conference: str) -> str:
        return f"{self.base}:conf:{conference}:ssrcs"

    def _legs(self) -> str:
        return f"{self.base}:legs"

    def _wrap(self, key: SrtpKey | None, context: str) -> dict[str, str] | None:
        if key is None:
            return None
        blob = self.wrapper.wrap(key.packed(), context.encode())
        return {"suite": key.suite, "wrapped": base64.b64encode(blob).decode()}

    def _unwrap(self, value: Any, context: str) -> SrtpKey | None:
        if value is None:
            return None
        try:
            blob = base64.b64decode(value["wrapped"], validate=True)
            suite = str(value["suite"])
        except (KeyError, TypeError, binascii.Error) as exc:
            raise CorruptRecord(f"edge record {context}: malformed key field") from exc
        return SrtpKey.unpacked(suite, self.wrapper.unwrap(blob, context.encode()))

    # -- writes --

    async def save_epoch(self, conference: str, epoch: int, key: SrtpKey, added: float) -> None:
        record = {
            "added": added,
            **(self._wrap(key, f"edge-epoch:{self.edge_id}:{conference}:{epoch}") or {}),
        }
        with redis_errors("store a key epoch"):
            pipe = self.client.pipeline(transaction=True)
            pipe.sadd(self._conferences(), conference)
            pipe.hset(self._epochs(conference), str(epoch), json.dumps(record))
            await pipe.execute()

    async def delete_epoch(self, conference: str, epoch: int) -> None:
        with redis_errors("delete a key epoch"):
            await self.client.hdel(self._epochs(conference), str(epoch))

    def _leg_record(self, leg: Leg) -> str:
        context = f"edge-leg:{self.edge_id}:{leg.id}"
        return json.dumps(
            {
                "conference": leg.conference.state.conference_id,
                "mode": leg.mode.value,
                "internal_mode": leg.internal_mode,
                "ports": [leg.participant_address[1], leg.internal_address[1]],
                "rtcp_ports": list(leg.rtcp_ports),
                "participant_rtcp_remote": leg.participant_rtcp_remote,
                "internal_rtcp_remote": leg.internal_rtcp_remote,
                "tx_epoch": leg.state.tx_epoch,
                "participant_remote": leg.participant_remote,
                "internal_remote": leg.internal_remote,
                "participant_key": self._wrap(leg.participant_key, f"{context}:participant"),
                "asterisk_key": self._wrap(leg.asterisk_key, f"{context}:asterisk"),
                "edge_internal_key": self._wrap(leg.edge_internal_key, f"{context}:internal"),
            }
        )

    def _ssrc_fields(self, conference: Conference) -> dict[str, str]:
        registry = conference.state.ssrcs
        fields = {
            str(ssrc): json.dumps({"leg": leg, "direction": d.value, "retired_epoch": None})
            for ssrc, (leg, d) in registry.live().items()
        }
        for ssrc, (leg, d, epoch) in registry.retired().items():
            fields[str(ssrc)] = json.dumps(
                {"leg": leg, "direction": d.value, "retired_epoch": epoch}
            )
        return fields

    async def save_leg(self, leg: Leg) -> None:
        """The leg's record and its conference's SSRC registry, in one transaction."""
        record = self._leg_record(leg)
        await self.save_ssrcs(leg.conference, extra=(leg.id, record))

    async def save_ssrcs(
        self, conference: Conference, *, extra: tuple[str, str] | None = None
    ) -> None:
        key = self._ssrcs(conference.state.conference_id)
        fields = self._ssrc_fields(conference)
        with redis_errors("store a media leg"):
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(key)
            if fields:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            if extra is not None:
                pipe.hset(self._legs(), extra[0], extra[1])
            await pipe.execute()

    async def delete_leg(self, leg: Leg) -> None:
        key = self._ssrcs(leg.conference.state.conference_id)
        fields = self._ssrc_fields(leg.conference)
        with redis_errors("delete a media leg"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self._legs(), leg.id)
            pipe.delete(key)
            if fields:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def delete_leg_id(self, leg_id: str) -> None:
        with redis_errors("delete a media leg"):
            await self.client.hdel(self._legs(), leg_id)

    async def delete_conference(self, conference: str, legs: list[str]) -> None:
        with redis_errors("delete a conference"):
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(self._conferences(), conference)
            pipe.delete(self._epochs(conference), self._ssrcs(conference))
            if legs:
                pipe.hdel(self._legs(), *legs)
            await pipe.execute()

    # -- read back --

    async def load(self) -> Snapshot:
        """Everything this edge id has stored (keys unwrapped)."""
        with redis_errors("read the edge's state"):
            members = await self.client.smembers(self._conferences())
            conferences = sorted(_text(m) for m in members)
            epochs: dict[str, dict[int, tuple[SrtpKey, float]]] = {}
            ssrcs: dict[str, dict[int, tuple[str, Direction, int | None]]] = {}
            for conference in conferences:
                raw = await self.client.hgetall(self._epochs(conference))
                table = epochs[conference] = {}
                for name, value in raw.items():
                    epoch = int(name)
                    record = json.loads(value)
                    context = f"edge-epoch:{self.edge_id}:{conference}:{epoch}"
                    key = self._unwrap(record, context)
                    if key is not None:
                        table[epoch] = (key, float(record["added"]))
                owners = ssrcs[conference] = {}
                for name, value in (await self.client.hgetall(self._ssrcs(conference))).items():
                    record = json.loads(value)
                    owners[int(name)] = (
                        str(record["leg"]),
                        Direction(record["direction"]),
                        record["retired_epoch"],
                    )
            raw_legs = await self.client.hgetall(self._legs())
        legs = []
        for name, value in raw_legs.items():
            leg_id = _text(name)
            record = json.loads(value)
            context = f"edge-leg:{self.edge_id}:{leg_id}"
            rtcp_ports = record.get("rtcp_ports") or [None, None]
            legs.append(
                LegRecord(
                    leg_id=leg_id,
                    conference=str(record["conference"]),
                    mode=str(record["mode"]),
                    internal_mode=str(record["internal_mode"]),
                    ports=(int(record["ports"][0]), int(record["ports"][1])),
                    tx_epoch=int(record["tx_epoch"]),
                    participant_remote=_addr(record["participant_remote"]),
                    internal_remote=_addr(record["internal_remote"]),
                    participant_key=self._unwrap(
                        record["participant_key"], f"{context}:participant"
                    ),
                    asterisk_key=self._unwrap(record["asterisk_key"], f"{context}:asterisk"),
                    edge_internal_key=self._unwrap(
                        record["edge_internal_key"], f"{context}:internal"
                    ),
                    rtcp_ports=(_port(rtcp_ports[0]), _port(rtcp_ports[1])),
                    participant_rtcp_remote=_addr(record.get("participant_rtcp_remote")),
                    internal_rtcp_remote=_addr(record.get("internal_rtcp_remote")),
                )
            )
        return Snapshot(epochs, ssrcs, legs)
