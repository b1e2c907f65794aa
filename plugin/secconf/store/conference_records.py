"""The conference store's records: what its scripts store and answer, checked and decoded.

The values going in (legs, SSRC lists, the peers' fields) are checked here before a
script runs; the script answers coming out (a released dialog, a sender's side and hop,
a wrapped epoch key) are decoded here into the records the focus and the watcher use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from secconf.core.errors import CallDoesNotExist, Forbidden
from secconf.core.gate import AckHops, DialogPeers, Direction
from secconf.core.keys import GroupKey
from secconf.core.sdes import CryptoSuite

from .errors import Conflict, CorruptRecord, InvalidRecord
from .keywrap import KeyWrapper

__all__ = [
    "MAX_SSRCS",
    "PEER_FIELDS",
    "Answered",
    "ConferenceExists",
    "ConferenceInfo",
    "DialogExists",
    "DialogRecord",
    "Released",
    "check_leg",
    "check_ssrcs",
    "epoch_context",
    "epoch_ticket_context",
    "parse_ssrcs",
    "peer_fields",
    "released",
    "sender_result",
    "text",
    "unwrap_epoch_key",
]

_LEG_RE: Final = re.compile(r"^[0-9A-Za-z._-]{1,128}$")
MAX_SSRCS: Final = 64
#: The dialog record's fields for its peers, in the order the scripts take them.
PEER_FIELDS: Final = ("peers", "sent-p", "sent-m", "hops")


class ConferenceExists(Conflict):
    """A conference id already in use (ids are random: mint another)."""


class DialogExists(Conflict):
    """A Call-ID that already has a record (a retransmission that got past the proxy)."""


@dataclass(frozen=True, slots=True)
class DialogRecord:
    """A participant's dialog with the focus."""

    conference_id: str
    identity: str
    leg: str
    state: str = "pending"
    ssrcs: tuple[int, ...] = ()
    creator: bool = False
    epoch: int | None = None  # the epoch its leg sends under (set once its 2xx passed)
    media: str = ""  # JSON: streams, edge addresses (set once its 2xx passed)
    mode: str = ""  # how this leg is keyed ("sdes"/"kms"; "" in records older than this field)
    #: a dial-out dialog (the mixer called the participant: the mixer is the dialog's caller)
    dialout: bool = False
    #: both sides' tags, flows and contacts, recorded at the 2xx (secconf.core.gate.DialogPeers
    #: JSON; no key material): in-dialog requests are accepted only from them
    peers: str = ""


@dataclass(frozen=True, slots=True)
class ConferenceInfo:
    conference_id: str
    state: str
    mode: str
    creator: str
    uri: str
    epoch: int
    suite: str
    created: float
    kms_legs: int = 0  # dialogs keyed in KMS mode (their epochs must come from the KMS)


@dataclass(frozen=True, slots=True)
class Released:
    """What a release of a dialog removed (:class:`~.conference_dialogs.ConferenceDialogs`)."""

    dialog: DialogRecord
    conference_ended: bool


@dataclass(frozen=True, slots=True)
class Answered:
    """A dialog marked up, and the conference key it must get."""

    dialog: DialogRecord
    group_key: GroupKey = field(repr=False)


def epoch_context(conference_id: str, epoch: int) -> bytes:
    """Key-wrapping context of one epoch's key: binds the blob to that conference and epoch."""
    return f"conf-epoch:{conference_id}:{epoch}".encode("ascii")


def epoch_ticket_context(conference_id: str, epoch: int) -> bytes:
    """Key-wrapping context of one KMS epoch's ticket material (GTGK, MPKs, RANDRi)."""
    return f"conf-epoch-ticket:{conference_id}:{epoch}".encode("ascii")


def unwrap_epoch_key(
    wrapper: KeyWrapper, conference_id: str, epoch: int, suite: CryptoSuite, blob: bytes
) -> GroupKey:
    """The group key of *epoch* from its stored blob (key || salt, wrapped under the KEK)."""
    material = wrapper.unwrap(blob, epoch_context(conference_id, epoch))
    return GroupKey(epoch, suite, material[: suite.key_length], material[suite.key_length :])


def check_leg(leg: object) -> None:
    if not isinstance(leg, str) or not _LEG_RE.match(leg):
        raise InvalidRecord("leg id must be 1 to 128 of [0-9A-Za-z._-]")


def check_ssrcs(ssrcs: Sequence[int]) -> list[str]:
    """The SSRCs as the scripts take them: distinct, sorted, decimal; at most :data:`MAX_SSRCS`."""
    values = sorted(set(ssrcs))
    if len(values) > MAX_SSRCS or any(
        isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF for v in values
    ):
        raise InvalidRecord(f"at most {MAX_SSRCS} SSRCs, each 0..2**32-1")
    return [str(v) for v in values]


def peer_fields(peers: DialogPeers | None) -> tuple[str, str, str, str]:
    """The peers' JSON, each side's sender fingerprint and the next hops, as the record keeps them.

    The fingerprints are what the in-dialog scripts compare; the hops (AckHops JSON) are
    what they hand back, so a passing request is relayed without the peers being parsed.
    """
    if peers is None:
        return "", "", "", ""
    hops = peers.hops
    return peers.to_json(), hops.from_participant, hops.from_mixer, hops.encode()


def released(raw: Sequence[bytes]) -> Released:
    """RELEASE's answer ``{'ok', conference, identity, leg, ssrcs, creator, state, ended}``."""
    conference_id, identity, leg, ssrcs, creator, state = (text(item) for item in raw[1:7])
    record = DialogRecord(conference_id, identity, leg, state, parse_ssrcs(ssrcs), creator == "1")
    return Released(record, int(raw[7]) == 1)


def sender_result(raw: Sequence[bytes]) -> tuple[Direction, tuple[str, str], str]:
    """Who sent it, where it goes (Request-URI, destination URI), the state or the outcome."""
    status = text(raw[0])
    if status == "no-dialog":
        raise CallDoesNotExist("no such conference dialog")
    if status == "not-peer":
        raise Forbidden("in-dialog request not from a peer of the dialog")
    side = text(raw[1])
    direction = Direction.FROM_PARTICIPANT if side == "p" else Direction.FROM_MIXER
    recorded = text(raw[2])
    hops = AckHops.decode(recorded)
    if hops is None:  # a record from before the hops were kept: its peers
        hops = DialogPeers.from_json(recorded).hops
    return direction, hops.receiver(direction), (text(raw[3]) if status == "ok" else status)


def text(value: object) -> str:
    """A Redis answer as text (bytes decoded, undecodable bytes kept as surrogates)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def parse_ssrcs(ssrcs: str) -> tuple[int, ...]:
    """A dialog record's ``ssrcs`` field (comma list)."""
    try:
        return tuple(int(part) for part in ssrcs.split(",") if part)
    except ValueError:
        raise CorruptRecord("dialog record: bad SSRC list") from None
