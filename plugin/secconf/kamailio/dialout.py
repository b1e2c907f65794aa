"""Dial-out: an INVITE from the mixer to a participant (REFER targets, replacement calls).

The watcher makes Asterisk call a participant (AMI ``Originate`` of
``PJSIP/kamailio-out/<target>`` into ``[secconf-dialout]``); the INVITE goes to
Kamailio (``outbound_proxy``) with ``X-Secconf-Conference: <conference id>``
(``PJSIP_HEADER(add,...)``).  The module turns it into a secure call to the
phone, exactly like a join seen from the other side:

* **who may dial out** (fail closed, nothing written on refusal): only the
  mixer — source address *and* port equal to ``upstream.uri`` (Asterisk's UDP
  transport sends from its bound port) — and only with the header naming an
  **active** conference; the target (the Request-URI, normalised
  ``sip:user@host``) must be in that conference's **allowed set**.  Any other
  INVITE from the mixer is 403, as is the header from anyone else; so Asterisk
  cannot be used to call anywhere.  A KMS-mode conference is 501 "KMS dial-out
  not built" (its offer would need the focus's TRANSFER_INIT; a ``kms`` branch
  calls a builder here, see :func:`check_dialout`).
* **the offer to the phone**: the mixer's clear offer re-profiled to
  ``RTP/SAVP`` at the edge's external address with one ``a=crypto`` (tag 1)
  carrying the conference's current group key epoch — the same rewrite as a
  rekey re-INVITE from the mixer (:func:`secconf.core.focus.answer_to_participant`,
  which calls :func:`secconf.core.rewrite.apply_group_key`).  The edge leg is
  created in ``sdes`` mode with a throw-away participant key (the phone's
  real one is only known from its answer; nothing is ever decrypted with the
  placeholder but stray packets).
* **the phone's 2xx** (:func:`dialout_answered`): exactly one usable
  ``a=crypto`` answer under tag 1 in the conference suite
  (:func:`~secconf.core.focus.answered_crypto`, RFC 4568 §7.1.3); its SSRCs are
  registered (488-style collision check, DESIGN.md §1); the edge gets
  ``participant-key``, ``participant-remote``, ``internal-remote`` (the
  mixer's offer) and ``switch`` at this 2xx; the answer goes to the mixer
  clear, pointed at the edge's internal leg.  If any of it fails the mixer
  gets an answer rejecting every stream and the dialog is released (as on
  the other paths: a proxy cannot turn a 2xx into a failure).
* the dialog record is written like a join's, with ``dialout`` = "1": BYE
  from either side releases it, and rekey re-INVITEs from the mixer work on it
  (the direction test is flipped: the mixer is the caller here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from secconf.core.errors import (
    Forbidden,
    MalformedMessage,
    MessageTooLarge,
    NotAcceptable,
    ProtocolError,
)
from secconf.core.focus import (
    ConferenceNotFound,
    OfferedStream,
    answer_to_participant,
    answered_crypto,
    normalize_identity,
    offer_ssrcs,
    offer_to_upstream,
    offered_remote,
    offered_sections,
)
from secconf.core.sdes import CryptoAttribute, KeyParam
from secconf.core.sdp import SessionDescription
from secconf.store.conferences import DialogExists, DialOutNotBuilt

from .adapter import Relay, ReplyView, RequestView
from .edge_control import LegAddresses, switch_at_answer
from .service import (
    CONFERENCE_HEADER,
    ON_FAILURE,
    ON_REPLY,
    FocusService,
    Retransmission,
    TransactionState,
    _media_remote,
    dialog_media,
)
from .settings import Settings

__all__ = [
    "DIALOUT_HEADER",
    "DialOut",
    "TargetUnavailable",
    "check_dialout",
    "dialout_answered",
    "dialout_relay",
    "from_upstream",
    "wants_dialout",
]

#: Set by the dialplan on the mixer's outgoing INVITE: the conference id (or its URI).
DIALOUT_HEADER: Final = CONFERENCE_HEADER
_ID_RE: Final = re.compile(r"^[0-9a-z]{1,64}$")
#: The crypto tag of the focus's offer to a dial-out target.
OFFER_TAG: Final = 1


class TargetUnavailable(ProtocolError):
    """480: the dial-out target has no registered contact (RFC 3261 §21.4.18)."""

    status_code = 480
    reason = "Temporarily Unavailable"


@dataclass(frozen=True, slots=True)
class DialOut:
    """A checked dial-out request (nothing written yet)."""

    conference_id: str
    target: str
    streams: tuple[OfferedStream, ...]
    description: SessionDescription = field(repr=False)


def from_upstream(settings: Settings, request: RequestView) -> bool:
    """The request comes from the mixer: ``upstream.uri``'s host, and its port if it has one."""
    upstream = settings.upstream
    if request.source_ip != upstream.host:
        return False
    return upstream.port is None or request.source_port == upstream.port


def wants_dialout(settings: Settings, request: RequestView) -> bool:
    """An initial INVITE that is the dial-out path's business (to accept or to refuse).

    Every initial INVITE from the mixer (it has no other reason to start a
    call) and every INVITE carrying the dial-out header, wherever from.
    """
    if request.method != "INVITE" or request.in_dialog:
        return False
    return from_upstream(settings, request) or request.headers.get(DIALOUT_HEADER) is not None


def _conference_id(settings: Settings, value: str) -> str:
    """The header's conference: a bare id, or the conference URI (``<sip:conf-<id>@...>``)."""
    text = value.strip()
    if _ID_RE.match(text):
        return text
    try:
        uri = normalize_identity(text)
    except MalformedMessage:
        raise Forbidden("dial-out header names no conference") from None
    user = uri.split(":", 1)[1].rsplit("@", 1)[0]
    match = settings.conference.fullmatch(user)
    if match is None or not _ID_RE.match(match.group("id") or ""):
        raise Forbidden("dial-out header names no conference")
    return match.group("id")


def check_dialout(service: FocusService, request: RequestView) -> DialOut:
    """Every check of a dial-out before anything is written (RFC 3261 §21 answers).

    403 not from the mixer, no header, target not allowed; 404 no such active
    conference; 501 KMS-mode conference ("KMS dial-out not built"); 400 a
    Request-URI without a user; 413/488 for the offer (one live audio stream
    on clear RTP, as the mixer sends it).
    """
    settings = service.settings
    if not from_upstream(settings, request):
        raise Forbidden("dial-out only from the mixer")
    header = request.headers.get(DIALOUT_HEADER)
    if not header:
        raise Forbidden("an INVITE from the mixer must name its conference (dial-out only)")
    conference_id = _conference_id(settings, header)
    try:
        target = normalize_identity(request.ruri)
    except MalformedMessage:
        raise MalformedMessage("dial-out Request-URI is not a SIP URI with a user") from None
    limit = settings.max_body
    if request.content_length > limit or len(request.body) > limit:
        raise MessageTooLarge(f"body over {limit} bytes")
    content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    if not request.body or content_type != "application/sdp":
        raise NotAcceptable("a dial-out INVITE carries the mixer's SDP offer")
    description = SessionDescription.parse(request.body)
    streams = tuple(
        OfferedStream(index, "RTP/SAVP", OFFER_TAG)
        for index, section in enumerate(description.media)
        if section.port != 0 and "RTP" in section.proto.split("/")
    )
    if len(streams) != 1 or description.media[streams[0].index].media != "audio":
        raise NotAcceptable("a dial-out offer has exactly one live audio stream")
    if description.media[streams[0].index].is_secure_rtp:
        raise NotAcceptable("the mixer's offer is clear RTP (its leg is the edge's)")
    info = service.store.get(conference_id)
    if info is None or info.state != "active":
        raise ConferenceNotFound("no such conference")
    if info.mode != "sdes" and not service.settings.mixed_modes:
        # A KMS-only conference: the offer would have to carry the focus's TRANSFER_INIT
        # for the target (RFC 6043 §4.2.2.1), which dial-out does not build (501).  With
        # policy.mixed_modes the target is called in SDES mode, like an SDES joiner.
        raise DialOutNotBuilt("KMS dial-out not built")
    if target not in service.store.allowed(conference_id):
        raise Forbidden("the dial-out target is not allowed in this conference")
    return DialOut(conference_id, target, streams, description)


def dialout_relay(service: FocusService, request: RequestView, plan: DialOut) -> Relay:
    """Record the dial-out, create its edge leg, and the keyed offer to the phone.

    The Request-URI must already be the target's contact (the handler's
    location lookup).  Any failure after the record is written releases it
    (nothing left).
    """
    conference_id, call_id = plan.conference_id, request.call_id
    leg = service._leg(conference_id, call_id)
    try:
        epoch = service.store.dialout(
            conference_id, identity=plan.target, call_id=call_id, leg=leg,
            mixed=service.settings.mixed_modes,
        )  # fmt: skip
    except DialogExists:
        raise Retransmission("dialog already recorded") from None
    try:
        key = service.store.group_key(conference_id, epoch)
        suite = service.settings.suite
        # The phone's own key is only known from its answer; the edge needs one now.
        material = service.random_bytes(suite.key_length + suite.salt_length)
        placeholder = CryptoAttribute(
            OFFER_TAG,
            suite,
            (KeyParam(material[: suite.key_length], material[suite.key_length :]),),
        )
        section = plan.description.media[plan.streams[0].index]
        edge_plan = service.edge.create_leg(
            conference_id, leg, [section.media], [str(placeholder)], mode="sdes"
        )
        external = None if edge_plan is None else edge_plan.external
        body = answer_to_participant(
            request.body,
            plan.streams,
            key,
            address=None if external is None else external.address,
            ports=None if external is None else external.ports,
        )
    except BaseException:
        service._release(conference_id, call_id, leg)
        raise
    service.log(
        "info", f"secconf: dial-out to {plan.target} into {conference_id} (epoch {key.epoch})"
    )
    uri = service.settings.conference_uri(conference_id)
    state = TransactionState(
        conference_id,
        leg,
        plan.streams,
        external,
        uri,
        False,
        offered_sections(plan.description),
        "sdes",
        epoch=key.epoch,
        internal=None if edge_plan is None else edge_plan.internal,
        kind="dialout",
        remote=_media_remote(request.body, plan.streams),
        identity=plan.target,
    )
    return Relay(
        uri=None,  # the lookup's contact
        body=bytes(body),
        state=state.to_json(),
        on_reply=ON_REPLY,
        on_failure=ON_FAILURE,
        # The preloaded Route (Asterisk's outbound_proxy) and the conference id go;
        # the phone learns the conference URI instead.
        remove_headers=("Route", DIALOUT_HEADER),
        add_headers=((CONFERENCE_HEADER, f"<{uri}>"),),
        # Our Record-Route names the conference: the phone's and the mixer's in-dialog
        # requests (2xx ACK, BYE, rekey re-INVITEs) find the dialog by it.
        conference_id=conference_id,
    )


def dialout_answered(service: FocusService, reply: ReplyView, state: TransactionState) -> bytes:
    """The phone's 2xx: its key and SSRCs taken, the edge switched, the mixer's clear answer.

    Raises (the caller then sends the mixer an answer rejecting every stream
    and releases the dialog) when the answer has no usable ``a=crypto``, an
    SSRC collides, or Redis/the edge fail.
    """
    if state.epoch is None:
        raise NotAcceptable("dial-out state without its epoch")
    answer = SessionDescription.parse(reply.body)
    crypto = answered_crypto(answer, state.streams, service.settings.suite)
    service.store.dialout_answered(
        state.conference_id,
        reply.call_id,
        media=dialog_media(state.streams, state.external, state.internal),
        epoch=state.epoch,
        ssrcs=offer_ssrcs(answer),
    )
    edge = service.edge
    edge.set_participant_key(state.leg, str(crypto[0]))
    remote = offered_remote(answer, state.streams)
    if remote is not None:
        edge.set_participant_remote(state.leg, LegAddresses(*remote))
    switch_at_answer(edge, state.leg, state.remote, state.epoch)
    internal = state.internal
    body = offer_to_upstream(
        answer,
        state.streams,
        address=None if internal is None else internal.address,
        ports=None if internal is None else internal.ports,
    )
    service.log("info", f"secconf: dial-out to {state.identity} answered, leg {state.leg}")
    return bytes(body)
