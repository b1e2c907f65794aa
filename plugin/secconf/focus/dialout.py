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
  cannot be used to call anywhere.
* **the leg's mode** (:func:`dialout_mode`): the conference's; with
  ``policy.mixed_modes`` KMS mode for the targets in ``[dialout] kms_users``
  and SDES mode for everyone else.
* **the offer to the phone** (SDES mode): the mixer's clear offer re-profiled to
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
* **KMS mode** (RFC 6043 §4.2.2.1, the focus as the MIKEY Initiator; RFC 4567
  ``a=key-mgmt:mikey`` in the offer): the epoch whose GTGK ticket names the
  target (:meth:`~.kms_keying.KmsKeying.dialout_epoch`: the current one if
  its ticket names the target, else one minted from the KMS naming the
  members and the target, put to Redis and the edge), the edge leg in ``kms``
  mode on that epoch, and the focus's TRANSFER_INIT for the target
  (:meth:`~.kms_keying.KmsKeying.group_transfer_init`: the edge's outbound
  SSRC in crypto session 1, SPI = the epoch).  At the phone's 2xx its
  TRANSFER_RESP must verify
  (:meth:`~.kms_keying.KmsKeying.verify_group_transfer_resp`: MAC under its
  forked MPKr', timestamp, responder = the target); its SSRCs are the
  answer's ``a=ssrc`` plus the TRANSFER_RESP's map; then the edge switches.
  KMS down: 503 and nothing written.
* one flow for both modes (:func:`dialout_relay`, :func:`dialout_answered`): the
  mode's steps above are the leg's :class:`~.keying.Keying`'s.
* the dialog record is written like a join's, with ``dialout`` = "1": BYE
  from either side releases it, and rekey re-INVITEs from the mixer work on it
  (the direction test is flipped: the mixer is the caller here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Protocol

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
    normalize_identity,
    offer_ssrcs,
    offered_remote,
    offered_sections,
    refuse_other_live_streams,
)
from secconf.core.gate import DialogPeers, Peer
from secconf.core.sdp import SessionDescription
from secconf.media.control_client import EdgeControl, LegAddresses, switch_at_answer
from secconf.store.conferences import ConferenceStore, DialogExists

from .keying import OFFER_TAG, Keying, OfferTo, clear_to_mixer
from .messages import Relay, ReplyView, RequestView
from .peer_cache import PeerCache
from .releases import Releases
from .settings import Settings
from .state import (
    CONFERENCE_HEADER,
    ON_FAILURE,
    ON_REPLY,
    Retransmission,
    TransactionState,
    dialog_media,
    leg_id,
    media_remote,
)

__all__ = [
    "DIALOUT_HEADER",
    "DialOut",
    "TargetUnavailable",
    "check_dialout",
    "dialout_answered",
    "dialout_mode",
    "dialout_relay",
    "from_upstream",
    "wants_dialout",
]

#: Set by the dialplan on the mixer's outgoing INVITE: the conference id (or its URI).
DIALOUT_HEADER: Final = CONFERENCE_HEADER
_ID_RE: Final = re.compile(r"^[0-9a-z]{1,64}$")


class Focus(Protocol):
    """What a dial-out needs of the focus (:class:`~.service.FocusService` is one)."""

    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    peer_cache: PeerCache
    releases: Releases

    def log(self, level: str, message: str) -> None: ...

    def keying(self, mode: str) -> Keying: ...

    def route_mac(self, conference_id: str, call_id: str, caller_tag: str) -> str: ...


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
    mode: str = "sdes"  # how the leg is keyed: "sdes" (a=crypto) or "kms" (TRANSFER_INIT)


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


def dialout_mode(settings: Settings, conference_mode: str, target: str) -> str:
    """How a dial-out leg is keyed: ``"sdes"`` (``a=crypto``) or ``"kms"`` (TRANSFER_INIT).

    The conference's mode; with ``policy.mixed_modes`` (a conference takes legs of
    both modes) the target decides: KMS mode for identities in ``[dialout]
    kms_users`` (known to run a MIKEY-TICKET client), SDES mode for the others
    (an ordinary SRTP phone), whatever the conference was created with.
    """
    if settings.mixed_modes:
        return "kms" if target in settings.dialout_kms_users else "sdes"
    return "kms" if conference_mode == "kms" else "sdes"


def check_dialout(focus: Focus, request: RequestView) -> DialOut:
    """Every check of a dial-out before anything is written (RFC 3261 §21 answers).

    403 not from the mixer, no header, target not allowed; 404 no such active
    conference; 400 a Request-URI without a user; 413/488 for the offer (one
    live audio stream on clear RTP, as the mixer sends it); 488 a KMS-mode leg
    on a focus without ``[kms]``.
    """
    settings = focus.settings
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
    refuse_other_live_streams(description)
    streams = tuple(
        OfferedStream(index, "RTP/SAVP", OFFER_TAG)
        for index, section in enumerate(description.media)
        if section.port != 0 and section.is_rtp
    )
    if len(streams) != 1 or description.media[streams[0].index].media != "audio":
        raise NotAcceptable("a dial-out offer has exactly one live audio stream")
    if description.media[streams[0].index].is_secure_rtp:
        raise NotAcceptable("the mixer's offer is clear RTP (its leg is the edge's)")
    info = focus.store.get(conference_id)
    if info is None or info.state != "active":
        raise ConferenceNotFound("no such conference")
    mode = dialout_mode(settings, info.mode, target)
    if mode == "kms" and not settings.kms_mode:
        raise NotAcceptable("KMS mode is not configured on this focus")
    if target not in focus.store.allowed(conference_id):
        raise Forbidden("the dial-out target is not allowed in this conference")
    return DialOut(conference_id, target, streams, description, mode)


def dialout_relay(focus: Focus, request: RequestView, plan: DialOut) -> Relay:
    """Record the dial-out, key its epoch, create its edge leg, and the keyed offer to the phone.

    The Request-URI must already be the target's contact (the handler's
    location lookup).  The record first (a retransmission that slipped past tm
    stops here, before any KMS round trip), then the epoch (KMS mode: the one
    whose ticket names the target, minted from the KMS when the current one
    does not: Redis and the edge), the edge leg, the offer keyed by the leg's
    :class:`~.keying.Keying`.  Any failure after the record releases it and the
    edge leg (KMS down: 503 with nothing written, the mint writes only once the
    KMS granted the ticket); an epoch minted before a later failure stays (a
    rekey nobody switched to yet: harmless, the next re-INVITEs move the members
    to it).
    """
    keying = focus.keying(plan.mode)
    conference_id, call_id = plan.conference_id, request.call_id
    leg = leg_id(conference_id, call_id)
    try:
        recorded = focus.store.dialouts.record(
            conference_id, identity=plan.target, call_id=call_id, leg=leg,
            mixed=focus.settings.mixed_modes, mode=plan.mode,
        )  # fmt: skip
    except DialogExists:
        raise Retransmission("dialog already recorded") from None
    try:
        epoch = keying.dialout_epoch(conference_id, plan.target, recorded)
        section = plan.description.media[plan.streams[0].index]
        edge_plan = keying.dialout_leg(conference_id, leg, section.media, epoch)
        edge_ssrc = None if edge_plan is None else edge_plan.ssrc
        # The SSRCs the epoch's key will protect in this call: the edge's towards the
        # phone (the phone's own come back in its answer).
        ssrcs = (edge_ssrc,) if edge_ssrc is not None else offer_ssrcs(plan.description)
        external = None if edge_plan is None else edge_plan.external
        to = OfferTo(conference_id, plan.target, plan.streams, external, epoch, ssrcs, edge_ssrc)
        keyed = keying.offer(request.body, to)
    except BaseException:
        focus.releases.withdraw(conference_id, call_id, leg)
        raise
    focus.log(
        "info",
        f"secconf: {keying.label}dial-out to {plan.target} into {conference_id} "
        f"(epoch {keyed.epoch})",
    )
    state = TransactionState(
        conference_id,
        leg,
        plan.streams,
        external,
        focus.settings.conference_uri(conference_id),
        False,
        offered_sections(plan.description),
        plan.mode,
        epoch=keyed.epoch,
        internal=None if edge_plan is None else edge_plan.internal,
        kind="dialout",
        remote=media_remote(request.body, plan.streams),
        identity=plan.target,
        edge_ssrc=keyed.edge_ssrc,
        transfer_init=keyed.transfer_init,
        peer=Peer(request.from_tag, request.flow, request.contact),
    )
    return _relay(focus, request, conference_id, keyed.body, state)


def _relay(
    focus: Focus,
    request: RequestView,
    conference_id: str,
    body: bytes,
    state: TransactionState,
) -> Relay:
    """The keyed offer to the phone, and what the reply route needs."""
    uri = focus.settings.conference_uri(conference_id)
    return Relay(
        uri=None,  # the lookup's contact
        body=body,
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
        route_mac=focus.route_mac(conference_id, request.call_id, request.from_tag),
    )


def dialout_answered(focus: Focus, reply: ReplyView, state: TransactionState) -> bytes:
    """The phone's 2xx: its key and SSRCs taken, the edge switched, the mixer's clear answer.

    The answer is accepted by the leg's :class:`~.keying.Keying` (SDES: one
    usable ``a=crypto``; KMS: its TRANSFER_RESP verifies).  Its SSRCs are
    registered by one script (a collision writes nothing); the edge learns the
    phone's key (SDES) and address and the mixer's, and switches the leg to the
    epoch at this 2xx.  Raises otherwise (the caller then sends the mixer an
    answer rejecting every stream and releases the dialog).
    """
    keying = focus.keying(state.mode)
    accepted = keying.accept(reply.body, state, "dial-out")
    if state.peer is None or reply.flow is None or not reply.to_tag:
        raise NotAcceptable("a 2xx without the dialog's peers: not recorded, not keyed")
    keying.answer_transport(reply.flow.secure)
    # The mixer sent the INVITE, the phone answered it.
    peers = DialogPeers(participant=Peer(reply.to_tag, reply.flow, reply.contact), mixer=state.peer)
    focus.store.dialouts.answered(
        state.conference_id,
        reply.call_id,
        media=dialog_media(state.streams, state.external, state.internal, state.edge_ssrc),
        epoch=accepted.epoch,
        ssrcs=accepted.ssrcs,
        peers=peers,
    )
    focus.peer_cache.remember(reply.call_id, peers)
    edge = focus.edge
    if accepted.participant_key is not None:
        edge.set_participant_key(state.leg, accepted.participant_key)
    remote = offered_remote(accepted.answer, state.streams)
    if remote is not None:
        edge.set_participant_remote(state.leg, LegAddresses(*remote))
    switch_at_answer(edge, state.leg, state.remote, accepted.epoch)
    body = clear_to_mixer(accepted.answer, state.streams, state.internal)
    focus.log(
        "info",
        f"secconf: {keying.label}dial-out to {state.identity} answered, leg {state.leg}"
        f"{keying.epoch_note(accepted.epoch)}",
    )
    return body
