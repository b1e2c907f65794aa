"""The focus's gate: who sent a request and what it may do, decided before any state changes.

Pure functions (no sockets, Redis, clock or randomness) used by the Kamailio adapter for every
request it sees (docs/security.md):

* :func:`canonical_user`: a Request-URI user part in its one spelling (RFC 3261 §19.1.4:
  escaped and unescaped characters are equivalent), so ``conf%2Dx`` and ``%63onf-x`` are the
  conference ``conf-x`` to the focus and nothing else reaches the mixer;
* :class:`Flow`, :class:`Peer`, :class:`DialogPeers`: what the focus records per dialog at its
  2xx (RFC 3261 §12.1: Call-ID and both tags identify a dialog; the flow — transport, source
  address and port — and the Contact say who the peers are and where they are reached);
* :func:`in_dialog_direction`: an in-dialog request is accepted only from the recorded peer
  of one side, with that side's tags; the next hop is the other side's recorded contact;
* :func:`route_mac` / :func:`route_mac_ok`: the MAC in the focus's Record-Route parameter
  (conference, Call-ID, the dialog's caller tag under a focus secret), checked in constant time;
* :func:`in_dialog_method_allowed` and :func:`body_allowed`: what each side may send inside a
  conference dialog; an SDP body outside INVITE/ACK would be a key-less renegotiation.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from .errors import Forbidden, MalformedSipMessage

__all__ = [
    "PASSING_METHODS",
    "ROUTE_MAC_HEX",
    "AckHops",
    "DialogPeers",
    "Direction",
    "Flow",
    "Peer",
    "body_allowed",
    "canonical_user",
    "destination_uri",
    "in_dialog_direction",
    "in_dialog_method_allowed",
    "route_mac",
    "route_mac_ok",
    "sender_fingerprint",
]

#: The Record-Route MAC: HMAC-SHA256 truncated to 128 bits (32 hex digits).
ROUTE_MAC_HEX: Final = 32
_ROUTE_LABEL: Final = b"secconf-record-route-v1"

_HEX: Final = frozenset("0123456789abcdefABCDEF")
#: RFC 3261 §25.1 "user" unreserved / user-unreserved characters, plus alphanumerics.
_USER_PLAIN: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
)
_MAX_USER: Final = 256


def canonical_user(raw: str | None) -> str | None:
    """The user part with every ``%HH`` escape decoded (RFC 3261 §19.1.4), or ``None`` if empty.

    A user part that is not RFC 3261 §25.1 syntax — a bad escape, an escape decoding to a
    control character or to non-UTF-8, a character no user part may hold — is refused with
    :class:`MalformedSipMessage` (400): the focus never guesses what a strange spelling means.
    """
    if not raw:
        return None
    if len(raw) > _MAX_USER:
        raise MalformedSipMessage("Request-URI user part too long")
    if _USER_PLAIN.issuperset(raw):
        return raw  # nothing escaped: already its one spelling (and plain ASCII, no controls)
    out = bytearray()
    position = 0
    while position < len(raw):
        char = raw[position]
        if char == "%":
            pair = raw[position + 1 : position + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise MalformedSipMessage("Request-URI user part has a broken escape")
            out.append(int(pair, 16))
            position += 3
            continue
        if char not in _USER_PLAIN:
            raise MalformedSipMessage("Request-URI user part has a character it may not hold")
        out.append(ord(char))
        position += 1
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedSipMessage("Request-URI user part is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise MalformedSipMessage("Request-URI user part escapes a control character")
    return text


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a message came from: transport (``udp``/``tcp``/``tls``), source address and port.

    For TLS and TCP this names the connection (its peer's address and port), so a request on
    another connection, even from the same host, is another flow (RFC 5626 §3.5's sense).
    """

    transport: str
    address: str
    port: int

    @classmethod
    def of(cls, transport: str, address: str, port: int) -> Flow:
        return cls(transport.lower(), address.lower(), int(port))

    @property
    def secure(self) -> bool:
        return self.transport == "tls"

    def __str__(self) -> str:
        return f"{self.transport}:{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class Peer:
    """One side of a conference dialog: its tag, the flow it sends on, its Contact URI."""

    tag: str
    flow: Flow
    contact: str


class Direction(Enum):
    FROM_PARTICIPANT = "participant"
    FROM_MIXER = "mixer"


@dataclass(frozen=True, slots=True)
class DialogPeers:
    """Both sides of a conference dialog, recorded at its 2xx (no key material)."""

    participant: Peer
    mixer: Peer
    #: The same peers reduced to what passing a request needs (made once, here).
    hops: AckHops = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hops", AckHops.of(self))

    def to_json(self) -> str:
        return json.dumps(
            [[p.tag, p.flow.transport, p.flow.address, p.flow.port, p.contact]
             for p in (self.participant, self.mixer)],
            separators=(",", ":"),
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> DialogPeers:
        try:
            sides = json.loads(text)
            participant, mixer = (
                Peer(str(tag), Flow.of(str(tr), str(addr), int(port)), str(contact))
                for tag, tr, addr, port, contact in sides
            )
        except (ValueError, TypeError):
            raise Forbidden("dialog peers unreadable") from None
        return cls(participant, mixer)

    def fingerprint(self, direction: Direction) -> str:
        """What a request sent in *direction* looks like (:func:`sender_fingerprint`)."""
        sender, receiver = self.sender(direction), self.receiver(direction)
        return sender_fingerprint(sender.flow, sender.tag, receiver.tag)

    def sender(self, direction: Direction) -> Peer:
        return self.participant if direction is Direction.FROM_PARTICIPANT else self.mixer

    def receiver(self, direction: Direction) -> Peer:
        """The next hop of a request sent in *direction*: the other side's recorded peer."""
        return self.mixer if direction is Direction.FROM_PARTICIPANT else self.participant


def destination_uri(flow: Flow) -> str:
    """The SIP URI that sends a request out on *flow* (Kamailio's ``$du``).

    For a TLS/TCP phone this is the connection it opened (its source address and port),
    so nobody else at its Contact address can take its requests (docs/kamailio.md).
    """
    host = f"[{flow.address}]" if ":" in flow.address else flow.address
    return f"sip:{host}:{flow.port};transport={flow.transport}"


@dataclass(frozen=True, slots=True)
class AckHops:
    """A dialog's peers reduced to what passing its ACK needs: per side, who sends and where to.

    Kept by the node that answered the dialog for the ACK's window (the Kamailio adapter's
    peer cache) and checked with string comparisons only: the sender's fingerprint (flow and
    tags, :func:`sender_fingerprint`) must be one side's, the next hop is the other side's
    Contact and flow (:func:`destination_uri`). The same decision as
    :func:`in_dialog_direction` with :meth:`DialogPeers.receiver`, precomputed.
    """

    from_participant: str  # the participant's fingerprint
    from_mixer: str
    to_participant: tuple[str, str]  # Request-URI and destination URI of the participant
    to_mixer: tuple[str, str]
    #: The JSON text (:meth:`encode`), made once: the record and the node's cache both keep it.
    text: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.text:
            fields = [self.from_participant, self.from_mixer, *self.to_participant, *self.to_mixer]
            object.__setattr__(self, "text", json.dumps(fields, separators=(",", ":")))

    @classmethod
    def of(cls, peers: DialogPeers) -> AckHops:
        participant, mixer = peers.participant, peers.mixer
        return cls(
            peers.fingerprint(Direction.FROM_PARTICIPANT),
            peers.fingerprint(Direction.FROM_MIXER),
            (participant.contact, destination_uri(participant.flow)),
            (mixer.contact, destination_uri(mixer.flow)),
        )

    def encode(self) -> str:
        return self.text

    @classmethod
    def decode(cls, text: str) -> AckHops | None:
        """``None`` for anything that is not an encoded :class:`AckHops` (never guessed at)."""
        try:
            fields = json.loads(text)
        except ValueError:
            return None
        if not isinstance(fields, list) or len(fields) != 6:
            return None
        if not all(isinstance(field, str) for field in fields):
            return None
        return cls(fields[0], fields[1], (fields[2], fields[3]), (fields[4], fields[5]), text)

    def receiver(self, direction: Direction) -> tuple[str, str]:
        """Request-URI and destination of a request sent in *direction*: the other side's."""
        return self.to_mixer if direction is Direction.FROM_PARTICIPANT else self.to_participant

    def next_hop(self, fingerprint: str) -> tuple[str, str]:
        """Request-URI and destination for a request with *fingerprint*, or :class:`Forbidden`."""
        if fingerprint == self.from_participant:
            return self.to_mixer
        if fingerprint == self.from_mixer:
            return self.to_participant
        raise Forbidden("in-dialog request not from a peer of the dialog")


def sender_fingerprint(flow: Flow, from_tag: str, to_tag: str | None) -> str:
    """A request's flow and tags in one string: ``transport:address:port|from tag|to tag``.

    Recorded per side at the 2xx and compared by the store's script, so the gate's read
    and the check are one round trip (tags and flows are no secrets: plain comparison).
    """
    return f"{flow}|{from_tag}|{to_tag or ''}"


def in_dialog_direction(
    peers: DialogPeers, flow: Flow, from_tag: str, to_tag: str | None
) -> Direction:
    """Which side sent an in-dialog request, or :class:`Forbidden`.

    RFC 3261 §12.2.1.1: the sender's tag is the From tag, the other side's the To tag. Both
    the flow and the tags must be those recorded for one side; nothing written by the sender
    (Route, Request-URI, rr's ``ftag``) chooses the direction.
    """
    for direction in Direction:
        sender, receiver = peers.sender(direction), peers.receiver(direction)
        if (
            flow == sender.flow
            and hmac.compare_digest(from_tag.encode(), sender.tag.encode())
            and hmac.compare_digest((to_tag or "").encode(), receiver.tag.encode())
        ):
            return direction
    raise Forbidden("in-dialog request not from a peer of the dialog")


#: What each side may send inside a conference dialog (CANCEL and non-2xx ACKs are hop by hop).
_METHODS: Final = {
    Direction.FROM_PARTICIPANT: frozenset(
        {"INVITE", "ACK", "BYE", "REFER", "INFO", "UPDATE", "OPTIONS"}
    ),
    Direction.FROM_MIXER: frozenset({"INVITE", "ACK", "BYE", "INFO", "UPDATE", "OPTIONS"}),
}


def in_dialog_method_allowed(direction: Direction, method: str) -> bool:
    return method in _METHODS[direction]


#: What passes between the peers as it is (no keying, no queueing): either side may send it.
PASSING_METHODS: Final = frozenset({"ACK", "BYE", "INFO", "UPDATE", "OPTIONS"})


def body_allowed(method: str, content_type: str | None, body_length: int) -> bool:
    """An in-dialog body the focus may pass: SDP only where it keys it (INVITE; ACK has none).

    A late-offer ACK or an UPDATE with SDP would renegotiate media around the keying (RFC 3311
    §5.1), so SDP anywhere else is refused; other bodies (DTMF INFO) pass.
    """
    if body_length == 0:
        return True
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if method == "INVITE":
        return True  # checked and rewritten by the re-INVITE path
    return kind not in ("application/sdp", "multipart/mixed", "multipart/alternative")


def _route_message(conference_id: str, call_id: str, caller_tag: str) -> bytes:
    return b"\0".join(
        part.encode("utf-8", "surrogateescape") for part in (conference_id, call_id, caller_tag)
    )


def route_mac(key: bytes, conference_id: str, call_id: str, caller_tag: str) -> str:
    """The Record-Route MAC of a conference dialog (the caller's tag is known at the INVITE)."""
    message = _ROUTE_LABEL + b"\0" + _route_message(conference_id, call_id, caller_tag)
    return hmac.digest(key, message, "sha256").hex()[:ROUTE_MAC_HEX]


def route_mac_ok(
    key: bytes, conference_id: str, call_id: str, tags: tuple[str, str | None], mac: str | None
) -> bool:
    """The Route's MAC is the dialog's: its caller's tag is the From tag or the To tag.

    A request from the caller carries the caller's tag in From, one from the callee in To
    (RFC 3261 §12.2.1.1). Constant-time comparison against both.
    """
    if not mac or len(mac) != ROUTE_MAC_HEX:
        return False
    given = mac.lower().encode()
    # The tags are no secret (they travel in every request): trying the From tag first and
    # stopping at a match leaks nothing; each MAC comparison is constant-time.
    for tag in tags:
        if tag and hmac.compare_digest(route_mac(key, conference_id, call_id, tag).encode(), given):
            return True
    return False
