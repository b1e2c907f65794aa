"""What the edge keeps in Redis so that a restarted edge re-creates its legs (docs/edge.md).

The records, as :class:`~secconf.store.edge_state.EdgeRecords` stores them under
``P:edge:{E}:...`` (``P`` = prefix, ``E`` = edge id; the key layout is there)::

    epoch record   {added, suite, wrapped: base64(wrapped key||salt),
                    more: [{suite, wrapped}, ...]}  (the epoch's keys in other suites)
    SSRC record    {leg, direction, retired_epoch|null}
    leg record     conference, modes, ports, remotes, tx epoch, keys wrapped

A leg record holds ``ports`` (participant, internal RTP ports) and
``rtcp_ports`` (the RTCP port of each side without rtcp-mux, null for a muxed
side; a record without the field is muxed on both sides), so a restart binds
the same pairs again.

Every key is wrapped with :class:`~secconf.store.KeyWrapper` under a context
that names the record it belongs to (``edge-epoch:E:<c>:<n>``, a further
suite's key ``edge-epoch:E:<c>:<n>:<suite>``,
``edge-leg:E:<leg>:<field>``), so a blob moved to another record does not
open.  Redis is :class:`~secconf.store.edge_state.EdgeRecords`' (every call with the
client's timeout; failures become 503); here relay objects become records and back.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from secconf.core.edge import Direction
from secconf.store import CorruptRecord, KeyWrapper
from secconf.store.edge_state import EdgeRecords

from .keys import SrtpKey
from .leg import Leg
from .relay import Conference

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
    suite: str | None = None  # the participant side's suite (None: older record, the default)
    participant_rtcp_remote: tuple[str, int] | None = None  # a=rtcp; None: RTP port + 1
    internal_rtcp_remote: tuple[str, int] | None = None


@dataclass(slots=True)
class Snapshot:
    epochs: dict[str, dict[int, tuple[list[SrtpKey], float]]]  # keys: first added first
    ssrcs: dict[str, dict[int, tuple[str, Direction, int | None]]]
    legs: list[LegRecord]


def _addr(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    return str(value[0]), int(value[1])


def _port(value: Any) -> int | None:
    return None if value is None else int(value)


class EdgeStore:
    """The edge's legs, epochs and SSRCs as records in *records*, every key wrapped."""

    def __init__(self, records: EdgeRecords, wrapper: KeyWrapper) -> None:
        self.records = records
        self.wrapper = wrapper
        self.edge_id = records.edge_id

    def __repr__(self) -> str:
        return f"EdgeStore({self.records.base!r}, {self.wrapper!r})"

    # -- wrapping --

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

    def _unwrap_more(self, value: Any, context: str) -> SrtpKey:
        """A further suite's key of an epoch: its context names the suite it claims."""
        suite = value.get("suite") if isinstance(value, dict) else None
        key = self._unwrap(value, f"{context}:{suite}")
        if key is None:
            raise CorruptRecord(f"edge record {context}: empty key")
        return key

    # -- writes --

    async def save_epoch(
        self, conference: str, epoch: int, keys: list[SrtpKey], added: float
    ) -> None:
        """The epoch's record with every key it holds (*keys*: one per suite, first first)."""
        context = f"edge-epoch:{self.edge_id}:{conference}:{epoch}"
        record = {
            "added": added,
            **(self._wrap(keys[0], context) or {}),
            "more": [self._wrap(key, f"{context}:{key.suite}") for key in keys[1:]],
        }
        await self.records.save_epoch(conference, epoch, record)

    async def delete_epoch(self, conference: str, epoch: int) -> None:
        await self.records.delete_epoch(conference, epoch)

    def _leg_record(self, leg: Leg) -> dict[str, Any]:
        context = f"edge-leg:{self.edge_id}:{leg.id}"
        return {
            "conference": leg.conference.state.conference_id,
            "mode": leg.mode.value,
            "internal_mode": leg.internal_mode,
            "ports": [leg.participant_address[1], leg.internal_address[1]],
            "rtcp_ports": list(leg.rtcp_ports),
            "participant_rtcp_remote": leg.participant_rtcp_remote,
            "internal_rtcp_remote": leg.internal_rtcp_remote,
            "tx_epoch": leg.state.tx_epoch,
            "suite": leg.state.suite,
            "participant_remote": leg.participant_remote,
            "internal_remote": leg.internal_remote,
            "participant_key": self._wrap(leg.keys.participant_key, f"{context}:participant"),
            "asterisk_key": self._wrap(leg.keys.asterisk_key, f"{context}:asterisk"),
            "edge_internal_key": self._wrap(leg.keys.edge_internal_key, f"{context}:internal"),
        }

    @staticmethod
    def _ssrc_records(conference: Conference) -> dict[int, dict[str, Any]]:
        registry = conference.state.ssrcs
        records: dict[int, dict[str, Any]] = {
            ssrc: {"leg": leg, "direction": d.value, "retired_epoch": None}
            for ssrc, (leg, d) in registry.live().items()
        }
        for ssrc, (leg, d, epoch) in registry.retired().items():
            records[ssrc] = {"leg": leg, "direction": d.value, "retired_epoch": epoch}
        return records

    async def save_leg(self, leg: Leg) -> None:
        """The leg's record and its conference's SSRC registry, in one transaction."""
        await self.records.save_ssrcs(
            leg.conference.state.conference_id,
            self._ssrc_records(leg.conference),
            leg=(leg.id, self._leg_record(leg)),
        )

    async def save_ssrcs(self, conference: Conference) -> None:
        await self.records.save_ssrcs(
            conference.state.conference_id, self._ssrc_records(conference)
        )

    async def delete_leg(self, leg: Leg) -> None:
        await self.records.delete_leg(
            leg.conference.state.conference_id, leg.id, self._ssrc_records(leg.conference)
        )

    async def delete_leg_id(self, leg_id: str) -> None:
        await self.records.delete_leg_id(leg_id)

    async def delete_conference(self, conference: str, legs: list[str]) -> None:
        await self.records.delete_conference(conference, legs)

    # -- read back --

    async def load(self) -> Snapshot:
        """Everything this edge id has stored (keys unwrapped)."""
        stored = await self.records.load()
        epochs: dict[str, dict[int, tuple[list[SrtpKey], float]]] = {}
        ssrcs: dict[str, dict[int, tuple[str, Direction, int | None]]] = {}
        for conference, records in stored.epochs.items():
            table = epochs[conference] = {}
            for epoch, record in records.items():
                context = f"edge-epoch:{self.edge_id}:{conference}:{epoch}"
                key = self._unwrap(record, context)
                if key is not None:
                    more = record.get("more") or []
                    if not isinstance(more, list):
                        raise CorruptRecord(f"edge record {context}: malformed key list")
                    keys = [key, *(self._unwrap_more(each, context) for each in more)]
                    table[epoch] = (keys, float(record["added"]))
            owners = ssrcs[conference] = {}
            for ssrc, record in stored.ssrcs[conference].items():
                owners[ssrc] = (
                    str(record["leg"]),
                    Direction(record["direction"]),
                    record["retired_epoch"],
                )
        legs = []
        for leg_id, record in stored.legs.items():
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
                    suite=_suite(record.get("suite")),
                )
            )
        return Snapshot(epochs, ssrcs, legs)


def _suite(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CorruptRecord("edge leg record: malformed suite")
    return value
