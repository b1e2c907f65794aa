"""The conference focus's decisions on SIP requests, without any I/O (SDES mode).

The Kamailio module (:mod:`secconf.kamailio`) reads a request into plain
values, asks the functions here what to do, does the I/O (Redis, the media
edge) and applies the result.  Everything here is pure: no socket, Redis,
clock or randomness; the group key and the conference id are passed in.

What is decided here:

* which requests concern the focus (:func:`classify_target`): the factory URI
  (create) or a conference URI (join), by configurable patterns on the
  Request-URI's user part;
* who is asking (:func:`authenticated_identity`): in SDES mode the identity
  asserted by a trusted source (RFC 3325 P-Asserted-Identity or a configured
  header), never the From header, which anyone can write;
* whether the offer is acceptable (:func:`check_offer`): SDP well-formed and
  within limits, every live RTP stream on SRTP with a crypto line the
  conference's suite can answer (the same checks as
  :func:`~secconf.core.rewrite.apply_group_key`, which does them);
* the two SDP edits: towards the mixer (:func:`offer_to_upstream`: the edge's
  internal leg, clear RTP, no key) and towards the participant
  (:func:`answer_to_participant`: the upstream's answer keyed with the group
  key by :func:`~secconf.core.rewrite.apply_group_key`, pointed at the edge).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from .errors import (
    Forbidden,
    InsecureMedia,
    MalformedMessage,
    MalformedSipMessage,
    NotAcceptable,
    ProtocolError,
    SecconfError,
)
from .gate import Flow, canonical_user
from .keymgmt import key_mgmt_value, mikey_message
from .keys import GroupKey
from .rewrite import REFUSED_SESSION_PARAMS, apply_group_key
from .sdes import CryptoAttribute, CryptoSuite, KeyParam
from .sdp import SessionDescription
from .sip.headers import Address

__all__ = [
    "ConferenceNotFound",
    "FocusTarget",
    "OfferMode",
    "OfferedStream",
    "SsrcCollision",
    "TargetKind",
    "answer_to_participant",
    "answer_to_participant_kms",
    "answered_crypto",
    "authenticated_identity",
    "check_offer",
    "check_offer_kms",
    "classify_target",
    "is_trusted_source",
    "normalize_identity",
    "offer_mode",
    "offer_ssrcs",
    "offer_to_upstream",
    "offered_crypto",
    "offered_remote",
    "offered_sections",
    "refuse_other_live_streams",
    "rejected_answer",
    "warning_header",
]

#: RFC 3261 §20.43: 399 is "miscellaneous warning"; the text is free.
WARNING_CODE = 399


class ConferenceNotFound(ProtocolError):
    """A conference URI that names no live conference: 404."""

    status_code = 404
    reason = "Not Found"


class SsrcCollision(NotAcceptable):
    """An offered SSRC already used in the conference (one group key, many streams): 488."""


class TargetKind(Enum):
    OTHER = "other"
    FACTORY = "factory"
    CONFERENCE = "conference"


@dataclass(frozen=True, slots=True)
class FocusTarget:
    """What a Request-URI user part names: nothing of ours, the factory, or a conference."""

    kind: TargetKind
    conference_id: str | None = None


def classify_target(
    ruri_user: str | None, factory: re.Pattern[str], conference: re.Pattern[str]
) -> FocusTarget:
    """Match the Request-URI user against the factory and conference patterns.

    The user part is compared in its canonical spelling (RFC 3261 §19.1.4: ``%2D`` is
    ``-``; :func:`~secconf.core.gate.canonical_user`, 400 for a broken one), so no spelling
    is a conference to the mixer that is not one to the focus.  The conference pattern must
    have a group named ``id`` (the conference id).  The factory pattern is tried first.
    """
    ruri_user = canonical_user(ruri_user)
    if not ruri_user:
        return FocusTarget(TargetKind.OTHER)
    if factory.fullmatch(ruri_user):
        return FocusTarget(TargetKind.FACTORY)
    match = conference.fullmatch(ruri_user)
    if match is not None:
        return FocusTarget(TargetKind.CONFERENCE, match.group("id"))
    return FocusTarget(TargetKind.OTHER)


def normalize_identity(uri_text: str) -> str:
    """``sip:user@host`` of a SIP URI: scheme and host lower-cased, port and parameters dropped.

    Identities are compared and stored in this form.  Raises
    :class:`MalformedSipMessage` for anything that is not a SIP(S) URI with a user.
    """
    address = Address.parse(uri_text) if "<" in uri_text else Address(uri_text.strip())
    uri = address.sip_uri
    # RFC 3261 §19.1.4: the user part compares after percent-decoding (``%62ob`` is ``bob``),
    # case-sensitively; the host without case.  Refer-To and To targets go through here.
    user = canonical_user(uri.user)
    if not user:
        raise MalformedSipMessage("identity URI has no user part")
    return f"{uri.scheme.lower()}:{user}@{uri.bare_host.lower()}"


def is_trusted_source(source: Flow, trusted_sources: frozenset[str]) -> bool:
    """*source* is a trusted element: ``transport:address:port`` (or ``...:*``) is listed."""
    return (
        str(source) in trusted_sources
        or f"{source.transport}:{source.address}:*" in trusted_sources
    )


def authenticated_identity(
    source: Flow,
    trusted_sources: frozenset[str],
    asserted: str | None,
) -> str:
    """The requester's identity from an asserted identity, or :class:`Forbidden`.

    RFC 3325 §5: an asserted identity is believed only from a trusted element, named by
    transport, address and port (settings ``[identity] trusted_sources``); from anywhere
    else it is ignored, and without digest credentials the request is refused.  *asserted*
    is the header's value (its first element).
    """
    if not is_trusted_source(source, trusted_sources):
        raise Forbidden("identity not authenticated (source is not trusted to assert it)")
    if not asserted:
        raise Forbidden("identity not authenticated (no asserted identity)")
    first = asserted.split(",", 1)[0]
    try:
        return normalize_identity(first)
    except MalformedMessage as exc:
        raise Forbidden(f"asserted identity unusable: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class OfferedStream:
    """One live RTP stream of an accepted offer: what the answer must match."""

    index: int
    proto: str
    tag: int


def _probe_key(suite: CryptoSuite) -> GroupKey:
    # Only for checking: apply_group_key needs a key of the suite, the output is discarded.
    return GroupKey(0, suite, bytes(suite.key_length), bytes(suite.salt_length))


def refuse_other_live_streams(description: SessionDescription) -> None:
    """488 for any live ``m=`` line that is not an RTP stream (issue 12, "SDP").

    The focus keys RTP streams only; a live stream of anything else (``m=application``,
    ``udptl``, an unknown profile) would reach the mixer unprotected, so every live stream
    must be one the focus secures.  Rejected streams (port 0) may stay.
    """
    for index, section in enumerate(description.media):
        if section.port != 0 and not section.is_rtp:
            raise NotAcceptable(
                f"{section.media} stream {index} ({section.proto}) is not a stream the focus secures"
            )


def check_offer(
    body: bytes, suite: CryptoSuite
) -> tuple[SessionDescription, tuple[OfferedStream, ...]]:
    """Parse and check a participant's offer for a conference keyed in *suite*.

    Raises ``MalformedSdp`` (400), ``MessageTooLarge`` (413), ``InsecureMedia``
    (488, plain RTP: no downgrade) or ``NotAcceptable`` (488: no usable
    ``a=crypto``).  An offer without any live RTP stream is refused too (488):
    a conference leg without media protects nothing and is not what was asked.
    """
    description = SessionDescription.parse(body)
    refuse_other_live_streams(description)
    rewrite = apply_group_key(description, _probe_key(suite))
    if not rewrite.streams:
        raise NotAcceptable("offer has no live RTP stream")
    streams = tuple(
        OfferedStream(kept.index, description.media[kept.index].proto, kept.chosen_tag)
        for kept in rewrite.streams
    )
    return description, streams


def offered_crypto(description: SessionDescription, stream: OfferedStream) -> CryptoAttribute:
    """The participant's own crypto attribute chosen for *stream* (its sending key)."""
    for value in description.media[stream.index].attributes("crypto"):
        try:
            attribute = CryptoAttribute.parse(value or "")
        except NotAcceptable:
            continue
        if attribute.tag == stream.tag:
            return attribute
    raise NotAcceptable(f"stream {stream.index}: offered crypto tag {stream.tag} not found")


def _clear_proto(proto: str) -> str:
    return "/".join({"SAVP": "AVP", "SAVPF": "AVPF"}.get(part, part) for part in proto.split("/"))


def offer_to_upstream(
    description: SessionDescription,
    streams: Sequence[OfferedStream],
    *,
    address: str | None,
    ports: Sequence[int] | None,
) -> SessionDescription:
    """The offer as the mixer sees it: the edge's internal leg, clear RTP, no keys.

    The mixer talks to the media edge only; the participant's key is the
    edge's business.  *address*/*ports* (one per stream) are the edge's
    internal leg; ``None`` leaves addresses as offered.
    """
    if ports is not None and len(ports) != len(streams):
        raise ValueError(f"{len(streams)} streams but {len(ports)} ports")
    upstream = description.copy()
    # Key management is between the participant and the focus: no ticket reaches the mixer.
    upstream.session.remove_attributes("key-mgmt")
    for section in upstream.media:
        section.remove_attributes("key-mgmt")
    for position, stream in enumerate(streams):
        section = upstream.media[stream.index]
        section.remove_attributes("crypto")
        section.set_proto(_clear_proto(section.proto))
        if address is not None:
            section.set_connection(address)
        if ports is not None:
            section.set_port(ports[position])
    return upstream


def answer_to_participant(
    upstream_answer: bytes,
    streams: Sequence[OfferedStream],
    group_key: GroupKey,
    *,
    address: str | None,
    ports: Sequence[int] | None,
) -> SessionDescription:
    """The mixer's answer as the participant gets it: SRTP under the group key, via the edge.

    Each stream goes back on the profile the participant offered, with one
    ``a=crypto`` under the offered tag carrying *group_key*: the crypto line
    is put in by :func:`~secconf.core.rewrite.apply_group_key`, the same edit
    every dialog of the conference gets (R5).  A stream the mixer rejected
    (port 0) stays rejected.  Raises ``MalformedSdp`` for a broken answer.
    """
    answer = SessionDescription.parse(upstream_answer)
    if len(answer.media) < max((s.index for s in streams), default=-1) + 1:
        raise MalformedMessage("upstream answer has fewer media sections than the offer")
    live_ports: list[int] = []
    placeholder = KeyParam(bytes(group_key.suite.key_length), bytes(group_key.suite.salt_length))
    for position, stream in enumerate(streams):
        section = answer.media[stream.index]
        if section.port == 0:
            continue
        section.set_proto(stream.proto)
        # A line for apply_group_key to choose and replace; it never leaves this function.
        section.replace_attributes(
            "crypto", [str(CryptoAttribute(stream.tag, group_key.suite, (placeholder,)))]
        )
        if ports is not None:
            live_ports.append(ports[position])
    offered = {s.index for s in streams}
    for index, section in enumerate(answer.media):
        if section.port != 0 and index not in offered:
            raise NotAcceptable(f"upstream answer opened stream {index} not in the offer")
    return apply_group_key(
        answer,
        group_key,
        media_address=address,
        media_ports=live_ports if ports is not None else None,
    ).description


def offered_sections(description: SessionDescription) -> tuple[tuple[str, str, str], ...]:
    """``(media, proto, first format)`` of every ``m=`` line of an offer (for :func:`rejected_answer`)."""
    return tuple(
        (section.media, section.proto, (section.formats or ["0"])[0])
        for section in description.media
    )


def rejected_answer(sections: Sequence[tuple[str, str, str]]) -> bytes:
    """An answer rejecting every offered stream (RFC 3264 §6: port 0, same m= lines).

    What the focus sends a participant in place of an answer it could not key:
    a 2xx cannot be turned into a failure by a proxy (RFC 3261 §16.7), so the
    participant gets a call without media rather than clear media (R3).
    """
    lines = ["v=0", "o=- 0 0 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0"]
    lines += [f"m={media} 0 {proto} {fmt}" for media, proto, fmt in sections]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def offer_ssrcs(description: SessionDescription) -> tuple[int, ...]:
    """SSRCs declared with ``a=ssrc`` (RFC 5576) in live streams, sorted, without repeats."""
    found: set[int] = set()
    for section in description.media:
        if section.port == 0:
            continue
        for value in section.attributes("ssrc"):
            head = (value or "").split(" ", 1)[0]
            if not head.isdigit() or int(head) > 0xFFFFFFFF:
                raise MalformedMessage("a=ssrc with an invalid SSRC")
            found.add(int(head))
    return tuple(sorted(found))


def warning_header(host: str, error: SecconfError) -> str:
    """A Warning header value (RFC 3261 §20.43) carrying the refusal's message.

    The message is already free of key material (errors quote input only
    through ``redact_line``); quotes and backslashes are escaped here.
    """
    text = error.message.replace("\\", "\\\\").replace('"', '\\"')
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)[:200]
    return f'{WARNING_CODE} {host} "{text}"'


class OfferMode(Enum):
    """How an offer is keyed: SDES (``a=crypto``) or MIKEY-TICKET (``a=key-mgmt:mikey``)."""

    SDES = "sdes"
    KMS = "kms"


def offer_mode(description: SessionDescription) -> OfferMode:
    """KMS mode when the offer carries ``a=key-mgmt`` anywhere (RFC 4567), else SDES."""
    if description.session.has_attribute("key-mgmt"):
        return OfferMode.KMS
    if any(section.has_attribute("key-mgmt") for section in description.media):
        return OfferMode.KMS
    return OfferMode.SDES


def check_offer_kms(description: SessionDescription) -> tuple[tuple[OfferedStream, ...], bytes]:
    """Check a KMS-mode offer: every live RTP stream on SRTP, one MIKEY message for them.

    Returns the live RTP streams (tag 0: no ``a=crypto`` in this mode) and the
    MIKEY message (media level of the first stream first, then session level,
    RFC 4567 §3.1).  Raises ``InsecureMedia`` (488) for a clear stream,
    ``NotAcceptable`` (488) without a live stream or without ``a=key-mgmt:mikey``,
    ``MalformedMikey`` (400) when its data is not base64.  Streams of one offer
    share the one TRANSFER_INIT: only the first stream's message is used.
    """
    refuse_other_live_streams(description)
    streams: list[OfferedStream] = []
    for index, section in enumerate(description.media):
        if section.port == 0:
            continue
        if not section.is_secure_rtp:
            raise InsecureMedia(
                f"{section.media} stream {index} uses {section.proto}: "
                "a secure conference takes SRTP only"
            )
        streams.append(OfferedStream(index, section.proto, 0))
    if not streams:
        raise NotAcceptable("offer has no live RTP stream")
    message = mikey_message(description, description.media[streams[0].index])
    return tuple(streams), message


def offered_remote(
    description: SessionDescription, streams: Sequence[OfferedStream]
) -> tuple[str, tuple[int, ...]] | None:
    """Where the participant said its media is: address and one port per stream."""
    address: str | None = None
    ports: list[int] = []
    for stream in streams:
        section = description.media[stream.index]
        connection = section.connection or description.session.connection
        if connection is None:
            return None
        address = address or connection.address
        ports.append(section.port)
    return None if address is None else (address, tuple(ports))


def answer_to_participant_kms(
    upstream_answer: bytes,
    streams: Sequence[OfferedStream],
    transfer_resp: bytes,
    *,
    address: str | None,
    ports: Sequence[int] | None,
) -> SessionDescription:
    """The mixer's answer as a KMS-mode participant gets it.

    Each offered stream goes back on the offered SRTP profile, pointed at the
    edge, with ``a=key-mgmt:mikey`` carrying *transfer_resp* (the TRANSFER_RESP
    that delivers the group key, RFC 4567 §3.1) and no ``a=crypto``.  A stream
    the mixer rejected stays rejected; a stream it opened that was not offered
    is refused.  Raises ``MalformedSdp`` for a broken answer.
    """
    answer = SessionDescription.parse(upstream_answer)
    if len(answer.media) < max((s.index for s in streams), default=-1) + 1:
        raise MalformedMessage("upstream answer has fewer media sections than the offer")
    offered = {s.index for s in streams}
    for index, section in enumerate(answer.media):
        if section.port != 0 and index not in offered:
            raise NotAcceptable(f"upstream answer opened stream {index} not in the offer")
    answer.session.remove_attributes("key-mgmt")
    answer.session.remove_attributes("crypto")
    value = key_mgmt_value(transfer_resp)
    for position, stream in enumerate(streams):
        section = answer.media[stream.index]
        section.remove_attributes("crypto")
        section.remove_attributes("key-mgmt")
        if section.port == 0:
            continue
        section.set_proto(stream.proto)
        section.add_attribute("key-mgmt", value)
        if address is not None:
            section.set_connection(address)
        if ports is not None:
            section.set_port(ports[position])
    return answer


def answered_crypto(
    description: SessionDescription,
    streams: Sequence[OfferedStream],
    suite: CryptoSuite,
) -> tuple[CryptoAttribute, ...]:
    """A participant's SDES answer to a re-INVITE: its sending key per stream (RFC 4568 §7.1.3).

    Every negotiated stream still live must stay on SRTP (488 ``InsecureMedia``
    otherwise: no downgrade in a re-INVITE either) and carry exactly the one
    ``a=crypto`` line of the offered tag in the conference's *suite*, without
    session parameters the edge cannot honour (488 ``NotAcceptable``).
    """
    found: list[CryptoAttribute] = []
    for stream in streams:
        if stream.index >= len(description.media):
            raise NotAcceptable(f"answer has no media section {stream.index}")
        section = description.media[stream.index]
        if section.port == 0:
            raise NotAcceptable(f"stream {stream.index} rejected in the answer")
        if not section.is_secure_rtp:
            raise InsecureMedia(
                f"{section.media} stream {stream.index} answered on {section.proto}: "
                "a secure conference takes SRTP only"
            )
        values = section.attributes("crypto")
        if len(values) != 1:
            raise NotAcceptable(f"stream {stream.index}: an answer has exactly one a=crypto line")
        attribute = CryptoAttribute.parse(values[0] or "")
        if attribute.tag != stream.tag:
            raise NotAcceptable(
                f"stream {stream.index}: answered tag {attribute.tag}, offered {stream.tag}"
            )
        if attribute.suite != suite:
            raise NotAcceptable(
                f"stream {stream.index}: suite {attribute.suite.name} is not the conference's"
            )
        refused = [p.name for p in attribute.session_params if p.name in REFUSED_SESSION_PARAMS]
        if refused:
            raise NotAcceptable(f"stream {stream.index}: session parameters not supported")
        found.append(attribute)
    return tuple(found)
