"""What a conference INVITE transaction carries between its request and its answer.

The focus keeps no memory between a request and its reply routes: what the reply needs
travels with the transaction (Kamailio: an AVP) as :class:`TransactionState` JSON, with no
key material. The dialog record's media description is built and read here too. Shared by
the joins (secconf.focus.admission) and the dial-outs (secconf.focus.dialout).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from secconf.core.errors import SecconfError
from secconf.core.focus import OfferedStream, offered_remote
from secconf.core.gate import Flow, Peer
from secconf.core.sdp import SessionDescription
from secconf.media.control_client import LegAddresses
from secconf.store.conferences import dialog_id

__all__ = [
    "CONFERENCE_HEADER",
    "ON_FAILURE",
    "ON_REPLY",
    "Retransmission",
    "TransactionState",
    "dialog_edge_ssrc",
    "dialog_media",
    "dialog_suite",
    "leg_id",
    "media_remote",
    "parse_dialog_media",
]

ON_REPLY = "ksr_onreply_secconf"
ON_FAILURE = "ksr_failure_secconf"
CONFERENCE_HEADER = "X-Secconf-Conference"


def leg_id(conference_id: str, call_id: str) -> str:
    """The edge leg of a conference dialog (a join's or a dial-out's): named by both ids."""
    return f"{conference_id}-{dialog_id(call_id)[:16]}"


class Retransmission(SecconfError):
    """The dialog is already recorded: a retransmitted INVITE that tm did not absorb."""


@dataclass(frozen=True, slots=True)
class TransactionState:
    """What the reply and failure routes need, kept in an AVP (no key material)."""

    conference_id: str
    leg: str
    streams: tuple[OfferedStream, ...]
    external: LegAddresses | None
    conference_uri: str
    created: bool
    sections: tuple[tuple[str, str, str], ...] = ()
    mode: str = "sdes"
    transfer_resp: str | None = None  # base64 TRANSFER_RESP (KMS mode); its KEMAC is encrypted
    epoch: int | None = None  # the epoch the TRANSFER_RESP (or a re-INVITE) delivers
    internal: LegAddresses | None = None  # the edge's mixer-facing side
    kind: str = "invite"  # or "reinvite" (in a conference dialog)
    downstream: bool = False  # re-INVITE from the participant (else from the mixer)
    previous: int | None = None  # re-INVITE: the epoch the leg sent under before
    remote: LegAddresses | None = None  # re-INVITE from the mixer: its media address
    identity: str = ""  # re-INVITE: who the dialog was admitted as (for reports)
    edge_ssrc: int | None = None  # the edge's outbound SSRC towards this leg
    transfer_init: str | None = None  # base64 TRANSFER_INIT of a KMS rekey (no key in clear)
    #: the initial INVITE's sender (tag, flow, Contact): one side of the dialog's peers
    peer: Peer | None = None
    #: the leg's SRTP suite (SDES: the one its offer chose; "": the conference's), #30
    suite: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "i": _addresses_json(self.internal),
                "K": self.kind,
                "d": self.downstream,
                "p": self.previous,
                "r": _addresses_json(self.remote),
                "w": self.identity,
                "c": self.conference_id,
                "l": self.leg,
                "s": [[s.index, s.proto, s.tag] for s in self.streams],
                "x": None
                if self.external is None
                else [self.external.address, list(self.external.ports)],
                "u": self.conference_uri,
                "n": self.created,
                "m": [list(section) for section in self.sections],
                "k": self.mode,
                "t": self.transfer_resp,
                "e": self.epoch,
                "o": self.edge_ssrc,
                "T": self.transfer_init,
                "P": None if self.peer is None else _peer_json(self.peer),
                "S": self.suite,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> TransactionState:
        data = json.loads(text)
        external = data["x"]
        return cls(
            data["c"],
            data["l"],
            tuple(OfferedStream(int(i), str(p), int(t)) for i, p, t in data["s"]),
            None if external is None else LegAddresses(external[0], tuple(external[1])),
            data["u"],
            bool(data["n"]),
            tuple((str(m), str(p), str(f)) for m, p, f in data.get("m", [])),
            str(data.get("k", "sdes")),
            data.get("t"),
            data.get("e"),
            _addresses_from_json(data.get("i")),
            str(data.get("K", "invite")),
            bool(data.get("d", False)),
            data.get("p"),
            _addresses_from_json(data.get("r")),
            str(data.get("w", "")),
            data.get("o"),
            data.get("T"),
            _peer_from_json(data.get("P")),
            str(data.get("S", "")),
        )


def _peer_json(peer: Peer) -> list[object]:
    return [peer.tag, peer.flow.transport, peer.flow.address, peer.flow.port, peer.contact]


def _peer_from_json(value: object) -> Peer | None:
    if not isinstance(value, list) or len(value) != 5:
        return None
    tag, transport, address, port, contact = value
    return Peer(str(tag), Flow.of(str(transport), str(address), int(port)), str(contact))


def _addresses_json(value: LegAddresses | None) -> list[object] | None:
    return None if value is None else [value.address, list(value.ports)]


def _addresses_from_json(value: object) -> LegAddresses | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    return LegAddresses(str(value[0]), tuple(int(p) for p in value[1]))


def dialog_media(
    streams: tuple[OfferedStream, ...],
    external: LegAddresses | None,
    internal: LegAddresses | None,
    edge_ssrc: int | None = None,
    suite: str = "",
) -> str:
    """The dialog record's ``media`` field (JSON, no key material): what a re-INVITE reuses."""
    return json.dumps(
        {
            "s": [[s.index, s.proto, s.tag] for s in streams],
            "x": _addresses_json(external),
            "i": _addresses_json(internal),
            "o": edge_ssrc,
            "S": suite,
        },
        separators=(",", ":"),
    )


def parse_dialog_media(
    text: str,
) -> tuple[tuple[OfferedStream, ...], LegAddresses | None, LegAddresses | None]:
    data = json.loads(text)
    streams = tuple(OfferedStream(int(i), str(p), int(t)) for i, p, t in data["s"])
    return streams, _addresses_from_json(data.get("x")), _addresses_from_json(data.get("i"))


def dialog_edge_ssrc(text: str) -> int | None:
    """The edge's outbound SSRC towards the leg, from the dialog record's ``media``."""
    value = json.loads(text).get("o") if text else None
    return value if isinstance(value, int) and 0 <= value <= 0xFFFFFFFF else None


def dialog_suite(text: str) -> str:
    """The leg's SRTP suite from the dialog record's ``media`` ("": the conference's)."""
    value = json.loads(text).get("S") if text else None
    return value if isinstance(value, str) else ""


def media_remote(body: bytes, streams: tuple[OfferedStream, ...]) -> LegAddresses | None:
    """Where the mixer's answer says its media is (for the edge's internal leg)."""
    try:
        answer = SessionDescription.parse(body)
    except SecconfError:
        return None
    remote = offered_remote(answer, streams)
    return None if remote is None else LegAddresses(*remote)
