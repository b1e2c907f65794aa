"""The focus's request handling with its I/O (Redis, the media edge) but without KSR.

:class:`FocusService` takes plain values (:class:`~.adapter.RequestView`,
:class:`~.adapter.ReplyView`) and returns what to do (:class:`~.adapter.Reply`,
:class:`~.adapter.Relay`, a new reply body).  The decisions that need no I/O
are in :mod:`secconf.core.focus`.  Refusals are raised as
:class:`~secconf.core.errors.SecconfError` and turned into a SIP answer by
:meth:`FocusService.refusal`; nothing is left in Redis or at the edge by a
refused request.

Two modes, chosen by the offer (docs/kamailio.md): SDES (``a=crypto``, the
identity asserted by a trusted source) and KMS (``a=key-mgmt:mikey`` with a
TRANSFER_INIT, resolved at the KMS; the answer carries a TRANSFER_RESP that
delivers the group key).  REFERs to the focus are checked and queued on a
Redis stream for the dial-out watcher.  With ``policy.mixed_modes`` one
conference has legs of both modes; each dialog record keeps its leg's mode,
which decides how each of its flows is keyed: the leg's
:class:`~.keying.Keying` (:meth:`FocusService.keying`, ``a=crypto`` with the group
key or MIKEY-TICKET, :mod:`.kms_keying`).  Authentication is
:class:`~.authenticator.Authenticator`'s, re-INVITEs are :class:`~.reinvite.ReInvites`'.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from secconf.core.digest import (
    challenge,
)
from secconf.core.errors import (
    CallDoesNotExist,
    Forbidden,
    MalformedMessage,
    MalformedMikey,
    MessageTooLarge,
    MikeyError,
    NotAcceptable,
    RateLimited,
    SecconfError,
)
from secconf.core.focus import (
    ConferenceNotFound,
    OfferedStream,
    OfferMode,
    TargetKind,
    check_offer,
    check_offer_kms,
    classify_target,
    normalize_identity,
    offer_mode,
    offer_ssrcs,
    offered_crypto,
    offered_remote,
    offered_sections,
    rejected_answer,
    warning_header,
)
from secconf.core.gate import (
    DialogPeers,
    Direction,
    Peer,
    body_allowed,
    in_dialog_direction,
    in_dialog_method_allowed,
    route_mac,
    route_mac_ok,
)
from secconf.core.keys import GroupKey
from secconf.core.sdes import SUITES
from secconf.core.sdp import SessionDescription
from secconf.core.urilist import split_offer
from secconf.kms.client import TicketResolver
from secconf.media.control_client import EdgeControl, LegAddresses, LegPlan, switch_at_answer
from secconf.store.conferences import (
    ConferenceExists,
    ConferenceStore,
    DialogExists,
    DialogRecord,
    Released,
    dialog_id,
)
from secconf.store.nonces import DigestNonces
from secconf.store.replay import BlockingReplayCache
from secconf.store.sip_users import SipUserStore

from .authenticator import AuthenticationRequired, Authenticator
from .dialout import dialout_answered
from .keying import Keying, SdesKeying, clear_to_mixer
from .kms_keying import KmsAuth, KmsKeying
from .messages import Relay, Reply, ReplyView, RequestView, require_offer
from .mixer_token import HEADER as MIXER_TOKEN_HEADER
from .mixer_token import token_header
from .peer_cache import NoPeerCache, PeerCache
from .reinvite import ReInvites
from .settings import Settings
from .state import (
    CONFERENCE_HEADER,
    ON_FAILURE,
    ON_REPLY,
    Retransmission,
    TransactionState,
    dialog_media,
    media_remote,
)
from .timing import PhaseTimer

__all__ = ["Admitted", "FocusService", "route_secret"]

MIKEY_CONTENT_TYPE = "application/mikey"


ROUTE_SECRET_LABEL = b"secconf record-route v1"


def route_secret(kek: bytes) -> bytes:
    """The Record-Route MAC secret of every worker and node: derived from the KEK, never stored."""
    return hmac.new(kek, ROUTE_SECRET_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Offer:
    description: SessionDescription
    streams: tuple[OfferedStream, ...]
    mode: OfferMode
    ssrcs: tuple[int, ...]
    mikey: bytes | None = field(default=None, repr=False)
    uris: tuple[str, ...] | None = None  # RFC 5366 URI list (multipart create), normalised


def decode_mikey_body(body: bytes) -> bytes:
    """An ``application/mikey`` body: the base64 text of the message (as in ``a=key-mgmt``).

    Kamailio's KEMI hands bodies over as strings (no NUL bytes), so secconf
    sends MIKEY bodies base64-encoded; a raw binary body (first byte 0x01, the
    MIKEY version) is accepted too when it survived the trip.
    """
    data = body.strip()
    if not data:
        raise MalformedMikey("empty application/mikey body")
    if data[:1] == b"\x01":
        return data
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMikey("application/mikey body is neither MIKEY nor base64") from None


@dataclass(frozen=True, slots=True)
class Admitted:
    """A re-INVITE or REFER through the gate: its dialog, the dialog's peers, who sent it."""

    record: DialogRecord
    peers: DialogPeers
    direction: Direction


@dataclass
class FocusService:
    settings: Settings
    store: ConferenceStore
    edge: EdgeControl
    random_hex: Callable[[int], str] = field(default=secrets.token_hex)
    random_bytes: Callable[[int], bytes] = field(default=secrets.token_bytes)
    log: Callable[[str, str], None] = field(default=lambda level, message: None)
    kms: TicketResolver | None = None
    replay: BlockingReplayCache | None = None
    clock: Callable[[], float] = field(default=time.time)
    sip_users: SipUserStore | None = None
    digest_key: bytes = field(default=b"", repr=False)
    nonces: DigestNonces | None = None  # digest nonce-counts (replays), shared in Redis
    timer: PhaseTimer | None = None  # [focus] timing: per-INVITE phase durations
    route_key: bytes = field(default=b"", repr=False)  # the Record-Route MAC (route_secret)
    #: the peers of dialogs this node just answered, for their ACKs (peer_cache.py)
    peer_cache: PeerCache = field(default_factory=NoPeerCache)
    #: how legs are keyed, one object per mode (keying.py, kms_keying.py)
    sdes_keying: SdesKeying = field(init=False, repr=False)
    kms_keying: KmsKeying = field(init=False, repr=False)
    #: the re-INVITE flow (reinvite.py)
    reinvites: ReInvites = field(init=False, repr=False)
    #: who sent a request (authenticator.py)
    auth: Authenticator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.auth = Authenticator(
            self.settings,
            self.clock,
            self.random_bytes,
            self.log,
            self.sip_users,
            self.digest_key,
            self.nonces,
            self.kms,
            self.replay,
        )
        self.sdes_keying = SdesKeying(
            self.settings, self.store, self.edge, self.random_bytes, self._phase
        )
        self.kms_keying = KmsKeying(
            self.settings,
            self.store,
            self.edge,
            self.kms,
            self.clock,
            self.random_bytes,
            self.rekey,
        )
        self.reinvites = ReInvites(
            self.settings, self.store, self.edge, self.keying, self.log, self.clock
        )

    def keying(self, mode: str) -> Keying:
        """The keying of a leg whose record, offer or transaction says *mode*."""
        return self.kms_keying if mode == OfferMode.KMS.value else self.sdes_keying

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        if self.timer is None:
            yield
        else:
            with self.timer.phase(name):
                yield

    # -- requests -----------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _authenticated() -> Iterator[None]:
        """Refusals raised inside may tell the (now authenticated) sender why."""
        try:
            yield
        except SecconfError as exc:
            exc.detailed = True
            raise

    def header_names(self) -> tuple[str, ...]:
        return (self.settings.asserted_header, "Refer-To", "Proxy-Authorization", "Require")

    def on_request(self, request: RequestView) -> Reply | Relay:
        """A request outside a dialog (or a CANCEL): what the focus does with it."""
        target = classify_target(request.ruri_user, self.settings.factory, self.settings.conference)
        if target.kind is TargetKind.OTHER:
            # Default deny: the focus relays nothing it did not authorize (docs/security.md).
            return Reply(404, "Not Found")
        method = request.method
        if method == "OPTIONS":
            return Reply(200, "OK")
        if method == "SUBSCRIBE":
            raise Forbidden("conference event package not offered for secure conferences yet")
        if method == "REFER":
            if target.kind is not TargetKind.CONFERENCE or target.conference_id is None:
                raise Forbidden("REFER goes to a conference, not to the factory")
            return self.on_refer(request, target.conference_id, None)
        if method != "INVITE":
            return Reply(
                405, "Method Not Allowed", (("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),)
            )
        with self._phase("request"):
            if target.kind is TargetKind.FACTORY:
                return self._create(request)
            if target.conference_id is None:
                raise MalformedMessage("conference id missing")
            return self._join(request, target.conference_id)

    def _offer(self, request: RequestView) -> Offer:
        with self._phase("parse"):
            return self._parse_offer(request)

    def _parse_offer(self, request: RequestView) -> Offer:
        """The checked offer; a ``multipart/mixed`` body also yields its RFC 5366 URI list."""
        limit = self.settings.max_body
        require_offer(request, limit, "INVITE")
        split = split_offer(
            request.content_type,
            request.body,
            max_bytes=limit,
            max_entries=self.settings.uri_list_max,
        )
        description = SessionDescription.parse(split.sdp)
        if offer_mode(description) is OfferMode.KMS and self.settings.kms_mode:
            if split.uris is not None:
                raise NotAcceptable(
                    "a URI list with a MIKEY-TICKET offer: the ticket names the allowed set"
                )
            streams, mikey = check_offer_kms(description)
            return Offer(description, streams, OfferMode.KMS, offer_ssrcs(description), mikey)
        description, streams = check_offer(split.sdp, self.settings.suite)
        return Offer(
            description, streams, OfferMode.SDES, offer_ssrcs(description), uris=split.uris
        )

    def _uri_list_allowed(self, offer: Offer, creator: str) -> list[str]:
        """The allowed set a creator named with an RFC 5366 URI list, after policy.

        ``policy.uri_list = false``: any list is refused (403).  Names outside
        ``policy.allowed`` are refused (403, ``policy.uri_list_outside =
        "refuse"``, the default: a list can only narrow the deployment's set)
        or accepted (``"accept"``: the creator's list is the set).  The
        creator is added by the store in any case.
        """
        uris = [uri for uri in offer.uris or () if uri != creator]
        if not self.settings.uri_list:
            raise Forbidden("URI lists are not accepted on this focus")
        if self.settings.uri_list_outside == "refuse":
            outside = [uri for uri in uris if uri not in self.settings.allowed]
            if outside:
                raise Forbidden(f"{len(outside)} URI list entries are not allowed by policy")
        return sorted(set(uris))

    # -- KMS mode ---------------------------------------------------------------------

    def _kms_allowed(self, auth: KmsAuth) -> list[str]:
        """The allowed set of a KMS-mode conference: the ticket's recipients but the focus."""
        focus = self.settings.kms.focus_identity if self.settings.kms else ""
        allowed: set[str] = set()
        for recipient in auth.transfer.policy.recipients:
            try:
                identity = normalize_identity(recipient)
            except MalformedMessage:
                continue  # not a SIP identity: can never be authenticated on a join anyway
            if identity not in (focus, auth.identity):
                allowed.add(identity)
        # A ticket names the allowed set like a URI list does, and is bounded the same way:
        # with policy.uri_list_outside = "refuse" (the default) it can only narrow
        # policy.allowed (issue 12: tickets were not bounded at all).
        if self.settings.uri_list_outside == "refuse":
            outside = sorted(allowed - self.settings.allowed)
            if outside:
                raise Forbidden(f"{len(outside)} ticket recipients are not allowed by policy")
        return sorted(allowed)

    @staticmethod
    def _kms_ssrcs(offer: Offer, auth: KmsAuth | None) -> tuple[int, ...]:
        found = set(offer.ssrcs)
        if auth is not None:
            for entry in auth.transfer.sessions:
                try:
                    session = entry.srtp_session()
                except MikeyError:
                    continue
                if session is not None:
                    found.add(session.ssrc)
        return tuple(sorted(found))

    # -- create and join --------------------------------------------------------------

    def _authenticate(self, request: RequestView) -> tuple[Offer, str, KmsAuth | None]:
        """The checked offer and who sent it: MIKEY (KMS mode) or the asserted identity (SDES).

        An SDES offer must arrive over TLS (RFC 4568 §8.3: the keys are in the clear in the
        SDP; the answer carries the group key of every leg): 488 otherwise, before any
        challenge, unless the lab-only ``[lab] sdes_over_udp`` is on.
        """
        offer = self._offer(request)
        self.keying(offer.mode.value).require_transport(request.flow.secure, "an SDES offer")
        if offer.mode is OfferMode.KMS and offer.mikey is not None:
            auth = self.auth.ticket(offer.mikey, request.call_id, group_key=True)
            return offer, auth.identity, auth
        return offer, self.auth.identity(request), None

    @contextmanager
    def _holding(self, identity: str, request: RequestView) -> Iterator[None]:
        """One more conference created by *identity* (``[limits] dialogs_per_identity``).

        Creates are counted across conferences (``P:ident:{<hash>}``, one round trip at the
        create and one when the creator's dialog ends); joins are counted per conference
        inside the join script (the roster's count: no extra round trip).  A refusal is
        403 with Retry-After and writes nothing; a failed create gives its count back.
        """
        self.store.identity_dialogs.hold(
            identity, "factory", request.call_id, limit=self.settings.dialogs_per_identity
        )
        try:
            yield
        except Retransmission:
            raise
        except BaseException:
            self.store.identity_dialogs.drop(identity, "factory", request.call_id)
            raise

    def _create(self, request: RequestView) -> Reply | Relay:
        offer, identity, auth = self._authenticate(request)
        with self._authenticated():
            return self._create_as(request, offer, identity, auth)

    def _create_as(
        self, request: RequestView, offer: Offer, identity: str, auth: KmsAuth | None
    ) -> Reply | Relay:
        if self.settings.creators and identity not in self.settings.creators:
            raise Forbidden("not allowed to create a conference")
        if auth is not None:
            allowed = self._kms_allowed(auth)
        elif offer.uris is not None:
            allowed = self._uri_list_allowed(offer, identity)
        else:
            allowed = sorted(self.settings.allowed)
        ssrcs = self._kms_ssrcs(offer, auth)
        group_key = GroupKey.generate(1, self.settings.suite, self.random_bytes)
        with self.auth.remember(auth, request.call_id), self._holding(identity, request):
            for conference_id in self._conference_ids(request):
                leg = self.leg_id(conference_id, request.call_id)
                try:
                    self.store.admission.create(
                        conference_id,
                        creator=identity,
                        uri=self.settings.conference_uri(conference_id),
                        group_key=group_key,
                        call_id=request.call_id,
                        leg=leg,
                        allowed=allowed,
                        ssrcs=ssrcs,
                        mode=offer.mode.value,
                    )
                except ConferenceExists:
                    continue
                except DialogExists:
                    raise Retransmission("dialog already recorded") from None
                break
            else:
                raise SecconfError("could not mint a free conference id")
            self.log(
                "info",
                f"secconf: conference {conference_id} ({offer.mode.value}) created by {identity}",
            )
            plan = self._edge_leg(request, conference_id, leg, offer, group_key, created=True)
            transfer_resp = None
            if auth is not None:
                try:
                    transfer_resp = self.kms_keying.join_transfer_resp(auth, group_key, plan)
                except BaseException:
                    self.release(conference_id, request.call_id, leg)
                    self._forget_conference(conference_id)
                    raise
        return self._relay(
            request, conference_id, leg, offer, plan, created=True,
            transfer_resp=transfer_resp, epoch=group_key.epoch if auth else None,
        )  # fmt: skip

    def _join(self, request: RequestView, conference_id: str) -> Reply | Relay:
        offer, identity, auth = self._authenticate(request)
        with self._authenticated():
            return self._join_as(request, conference_id, offer, identity, auth)

    def _join_as(
        self,
        request: RequestView,
        conference_id: str,
        offer: Offer,
        identity: str,
        auth: KmsAuth | None,
    ) -> Reply | Relay:
        if offer.uris is not None:
            raise Forbidden("the allowed set is named at creation, not on a join")
        leg = self.leg_id(conference_id, request.call_id)
        with self.auth.remember(auth, request.call_id):
            try:
                epoch = self.store.admission.join(
                    conference_id,
                    identity=identity,
                    call_id=request.call_id,
                    leg=leg,
                    ssrcs=self._kms_ssrcs(offer, auth),
                    mode=offer.mode.value,
                    mixed=self.settings.mixed_modes,
                    limit=self.settings.dialogs_per_identity,
                )
            except DialogExists:
                raise Retransmission("dialog already recorded") from None
            self.log("info", f"secconf: {identity} joining conference {conference_id}")
            plan = self._edge_leg(request, conference_id, leg, offer, None, created=False)
            transfer_resp = None
            if auth is not None:
                try:
                    key = self.store.group_key(conference_id, epoch)
                    transfer_resp = self.kms_keying.join_transfer_resp(auth, key, plan)
                except BaseException:
                    self.release(conference_id, request.call_id, leg)
                    raise
        return self._relay(
            request, conference_id, leg, offer, plan, created=False,
            transfer_resp=transfer_resp, epoch=epoch if auth else None,
        )  # fmt: skip

    def _conference_ids(self, request: RequestView) -> Iterator[str]:
        """Conference ids to try for a create: first one derived from the request, then random.

        The first is HMAC-SHA256(focus secret, Call-ID, From tag), 16 hex
        digits: unpredictable without the KEK, and the same for a
        retransmission of the create on any node, whose dialog record then
        already exists in that conference (``DialogExists``: dropped, tm
        answers).  If that id is taken by another conference (the Call-ID
        was reused), two random ones follow.
        """
        if self.digest_key:
            message = b"\0".join(
                part.encode("utf-8", "surrogateescape")
                for part in ("secconf-conference-id", request.call_id, request.from_tag)
            )
            yield hmac.new(self.digest_key, message, hashlib.sha256).hexdigest()[:16]
        for _attempt in range(2):
            yield self.random_hex(8)

    # -- REFER to the focus -----------------------------------------------------------

    def on_refer(
        self, request: RequestView, conference_id: str | None, dialog_identity: str | None
    ) -> Reply:
        """A REFER to the focus (RFC 3515): check it, queue it for the dial-out watcher, 202.

        *conference_id* comes from the Request-URI (out of dialog) or from the
        referrer's dialog record (in dialog, then *dialog_identity* is the
        identity that dialog was admitted with, and the REFER must come from
        it).  The referrer is authenticated like an INVITE: in KMS mode by an
        ``application/mikey`` body holding a TRANSFER_INIT built with the
        referrer's ticket for the focus (answered by a TRANSFER_RESP in the
        202, so the focus authenticates itself too); in SDES mode by the
        asserted identity of a trusted source.  The referrer must have a
        dialog in the conference, the Refer-To target must be in the allowed
        set; then one Lua script appends the request to ``P:conf:{<id>}:refer``.
        No implicit subscription (RFC 4488 ``Refer-Sub: false``): Kamailio
        cannot send NOTIFYs in a dialog it does not own.
        """
        if conference_id is None:
            raise MalformedMessage("REFER without a conference")
        refer_to = request.headers.get("Refer-To")
        if not refer_to:
            raise MalformedMessage("REFER without Refer-To")
        try:
            target = normalize_identity(refer_to.split(",", 1)[0].strip())
        except MalformedMessage:
            raise MalformedMessage("Refer-To is not a SIP URI with a user") from None
        limit = self.settings.max_body
        if request.content_length > limit or len(request.body) > limit:
            raise MessageTooLarge(f"body over {limit} bytes")
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        auth: KmsAuth | None = None
        replay_key: str | None = None
        if content_type == MIKEY_CONTENT_TYPE and self.settings.kms_mode:
            # Call-ID "": a repeated TRANSFER_INIT in a REFER is always a replay (403).
            auth = self.auth.ticket(decode_mikey_body(request.body), "", group_key=False)
            identity = auth.identity
            if self.replay is not None:
                replay_key = self.replay.key(auth.transfer.replay_token)
        elif request.body:
            raise NotAcceptable("a REFER to the focus carries no body, or application/mikey")
        else:
            identity = self.auth.identity(request)
        if dialog_identity is not None and identity != dialog_identity:
            raise Forbidden("the REFER is not from the identity of its dialog")
        mode = "kms" if auth is not None else "sdes"
        kms_settings = self.settings.kms
        entry = self.store.refer_stream.add(
            conference_id,
            referrer=identity,
            target=target,
            fields=(
                ("conference", conference_id),
                ("uri", self.settings.conference_uri(conference_id)),
                ("mode", mode),
                ("refer_to", refer_to[:512]),
                ("call_id", request.call_id[:256]),
                ("time", repr(float(self.clock()))),
            ),
            replay_key=replay_key,
            per_minute=self.settings.refers_per_minute,
            replay_ttl=2 * kms_settings.skew if kms_settings is not None else 0.0,
            mode=None if self.settings.mixed_modes else mode,
        )
        self.log(
            "info", f"secconf: REFER by {identity} to {target} in {conference_id} queued ({entry})"
        )
        headers = (("Refer-Sub", "false"),)
        if auth is None:
            return Reply(202, "Accepted", headers)
        body = base64.b64encode(self.kms_keying.transfer_resp(auth, None, None))
        return Reply(202, "Accepted", headers, body, MIKEY_CONTENT_TYPE)

    @staticmethod
    def leg_id(conference_id: str, call_id: str) -> str:
        return f"{conference_id}-{dialog_id(call_id)[:16]}"

    def _edge_leg(
        self,
        request: RequestView,
        conference_id: str,
        leg: str,
        offer: Offer,
        group_key: GroupKey | None,
        *,
        created: bool,
    ) -> LegPlan | None:
        """Ask the edge for the leg; on failure undo the Redis record and refuse (503).

        A new conference's epoch goes to the edge first: a leg is created
        sending under the conference's newest epoch.
        """
        description, streams = offer.description, offer.streams
        remote = offered_remote(description, streams)
        try:
            if group_key is not None:
                self.edge.put_epoch(conference_id, group_key)
            plan = self.edge.create_leg(
                conference_id,
                leg,
                [description.media[s.index].media for s in streams],
                []
                if offer.mode is OfferMode.KMS
                else [str(offered_crypto(description, s)) for s in streams],
                mode=offer.mode.value,
                remote=None if remote is None else LegAddresses(*remote),
                ssrcs=offer.ssrcs,
                rtcp_mux=all(description.media[s.index].has_attribute("rtcp-mux") for s in streams),
            )
        except SecconfError:
            self.release(conference_id, request.call_id, leg)
            if created:
                self._forget_conference(conference_id)
            raise
        return plan

    def _forget_conference(self, conference_id: str) -> None:
        try:
            self.edge.delete_conference(conference_id)
        except SecconfError as exc:
            self.log("err", f"secconf: edge conference release failed: {exc.message}")

    def _relay(
        self,
        request: RequestView,
        conference_id: str,
        leg: str,
        offer: Offer,
        plan: LegPlan | None,
        *,
        created: bool,
        transfer_resp: str | None = None,
        epoch: int | None = None,
    ) -> Relay:
        with self._phase("rewrite"):
            upstream = clear_to_mixer(
                offer.description, offer.streams, None if plan is None else plan.internal
            )
        remove: tuple[str, ...] = ("Proxy-Authorization",) if self.settings.digest else ()
        add: tuple[tuple[str, str], ...] = ()
        require = request.headers.get("Require")
        if require is not None:
            # RFC 5366 §5: the focus handles recipient-list-invite; the mixer must not see it.
            tags = [t.strip() for t in require.split(",") if t.strip()]
            rest = [t for t in tags if t.lower() != "recipient-list-invite"]
            if len(rest) != len(tags):
                remove += ("Require",)
                add = (("Require", ", ".join(rest)),) if rest else ()
        state = TransactionState(
            conference_id,
            leg,
            offer.streams,
            None if plan is None else plan.external,
            self.settings.conference_uri(conference_id),
            created,
            offered_sections(offer.description),
            offer.mode.value,
            transfer_resp,
            epoch,
            None if plan is None else plan.internal,
            edge_ssrc=None if plan is None else plan.ssrc,
            peer=Peer(request.from_tag, request.flow, request.contact),
        )
        return Relay(
            uri=self.settings.upstream_uri(conference_id),
            body=upstream,
            state=state.to_json(),
            on_reply=ON_REPLY,
            on_failure=ON_FAILURE,
            # RFC 3261 §22.3: the focus consumes the credentials of its realm.  The mixer
            # bridges only with the focus's join token (docs/asterisk.md, "Join tokens").
            remove_headers=(*remove, MIXER_TOKEN_HEADER),
            add_headers=(
                *add,
                token_header(self.settings, conference_id, request.call_id, self.clock()),
            ),
            # In-dialog requests (either side, any node) name the conference in their Route.
            conference_id=conference_id,
            route_mac=self.route_mac(conference_id, request.call_id, request.from_tag),
        )

    def route_mac(self, conference_id: str, call_id: str, caller_tag: str) -> str:
        """The MAC our Record-Route carries beside ``sc-conf`` (secconf.core.gate.route_mac)."""
        return route_mac(self.route_key, conference_id, call_id, caller_tag)

    # -- replies ------------------------------------------------------------------

    def on_reply(
        self,
        reply: ReplyView,
        state_json: str | None,
        request_body: Callable[[], bytes] = lambda: b"",
    ) -> tuple[bytes, tuple[tuple[str, str], ...]] | None:
        """A 2xx to a focus INVITE: the participant's answer (body, headers to add).

        ``None`` when the reply is not ours to change.  Raises when the answer
        cannot be keyed: the caller must then drop the reply (fail closed: the
        mixer's clear answer never reaches a participant).
        """
        if self.timer is None:
            return self._on_reply(reply, state_json, request_body)
        with self.timer.phase("reply"):
            result = self._on_reply(reply, state_json, request_body)
        if result is not None:
            self.timer.invite_done()
        return result

    def _on_reply(
        self,
        reply: ReplyView,
        state_json: str | None,
        request_body: Callable[[], bytes],
    ) -> tuple[bytes, tuple[tuple[str, str], ...]] | None:
        if state_json is None or reply.method != "INVITE" or not 200 <= reply.status < 300:
            return None
        state = TransactionState.from_json(state_json)
        if state.kind == "reinvite":
            return self.reinvites.answered(reply, state, request_body), ()
        if state.kind == "dialout":
            return dialout_answered(self, reply, state), ()
        if state.peer is None or reply.flow is None or not reply.to_tag:
            raise NotAcceptable("a 2xx without the dialog's peers: not recorded, not keyed")
        peers = DialogPeers(
            participant=state.peer, mixer=Peer(reply.to_tag, reply.flow, reply.contact)
        )
        keying = self.keying(state.mode)
        answered = self.store.dialogs.answered(
            state.conference_id,
            reply.call_id,
            media=dialog_media(state.streams, state.external, state.internal, state.edge_ssrc),
            epoch=keying.answered_epoch(state),
            peers=peers,
        )
        self.peer_cache.remember(reply.call_id, peers)
        body, epoch = keying.join_answer(reply.body, state, answered.group_key)
        switch_at_answer(self.edge, state.leg, media_remote(reply.body, state.streams), epoch)
        headers = ((CONFERENCE_HEADER, f"<{state.conference_uri}>"),)
        return body, headers

    def unkeyed_answer(
        self, call_id: str, state_json: str | None, reply: ReplyView | None = None
    ) -> bytes:
        """The body replacing an answer that could not be keyed.

        An initial INVITE's dialog is released (roster, SSRCs, edge leg), and only its peers
        are kept (:meth:`~secconf.store.conference_dialogs.ConferenceDialogs.closing`) so that the
        ACK and BYE of the stream-less call still pass between its two sides; a re-INVITE's
        dialog is kept (its leg stays on the epoch it had) and the failure is reported.
        """
        state = None if state_json is None else TransactionState.from_json(state_json)
        if state is not None and state.kind == "reinvite":
            self.reinvites.report_failure(call_id, state, 200, "answer could not be keyed")
        else:
            self.on_failure(call_id, state_json)
            if state is not None and reply is not None:
                self._keep_closing(call_id, state, reply)
        return rejected_answer(() if state is None else state.sections)

    def _keep_closing(self, call_id: str, state: TransactionState, reply: ReplyView) -> None:
        if state.peer is None or reply.flow is None or not reply.to_tag:
            return
        answerer = Peer(reply.to_tag, reply.flow, reply.contact)
        if state.kind == "dialout":
            peers = DialogPeers(participant=answerer, mixer=state.peer)
        else:
            peers = DialogPeers(participant=state.peer, mixer=answerer)
        try:
            self.store.dialogs.closing(state.conference_id, call_id, peers)
            self.peer_cache.remember(call_id, peers)
        except SecconfError as exc:
            self.log("err", f"secconf: closing dialog not recorded: {exc.message}")

    def on_failure(self, call_id: str, state_json: str | None, status: int = 0) -> None:
        """The INVITE failed (or was cancelled): release the roster entry and the edge leg.

        A failed re-INVITE releases nothing: the leg stays on its epoch, and a
        refused rekey is reported on ``P:conf:{<id>}:rekey-failed``.
        """
        state = None if state_json is None else TransactionState.from_json(state_json)
        if state is not None and state.kind == "reinvite":
            self.reinvites.report_failure(call_id, state, status, "re-INVITE refused")
            return
        if state is None:
            self.log("err", "secconf: failed INVITE without its transaction state: not released")
            return
        self.release(state.conference_id, call_id, state.leg)

    def on_bye(self, conference_id: str, call_id: str) -> None:
        """A BYE in a conference dialog (either side): release its record and edge leg."""
        self.release(conference_id, call_id, None)

    def release(self, conference_id: str, call_id: str, leg: str | None) -> None:
        released = None
        try:
            released = self.store.dialogs.release(conference_id, call_id)
        except SecconfError as exc:
            self.log("err", f"secconf: release of a dialog failed: {exc.message}")
        self.finish_release(call_id, released, leg)

    def finish_release(
        self, call_id: str, released: Released | None, leg: str | None = None
    ) -> None:
        """After the store released a dialog: the creator's count, the edge leg, the end."""
        if released is not None and released.dialog.identity and released.dialog.creator:
            try:
                self.store.identity_dialogs.drop(released.dialog.identity, "factory", call_id)
            except SecconfError as exc:
                self.log("err", f"secconf: dialog count not released: {exc.message}")
        leg = leg or (released.dialog.leg if released is not None else None)
        if leg is not None:
            try:
                self.edge.delete_leg(leg)
            except SecconfError as exc:
                self.log("err", f"secconf: edge leg release failed: {exc.message}")
        if released is not None and released.conference_ended:
            self.log("info", f"secconf: conference {released.dialog.conference_id} ended")
            self._forget_conference(released.dialog.conference_id)

    # -- the in-dialog gate (docs/security.md, "In-dialog requests") ---------------------

    def routed(
        self, conference_id: str | None, mac: str | None, call_id: str, tags: tuple[str, str | None]
    ) -> str:
        """Our Route's conference, its MAC checked (403 before any Redis read)."""
        if conference_id is None:
            raise Forbidden("not a conference dialog of this focus")
        if not route_mac_ok(self.route_key, conference_id, call_id, tags, mac):
            raise Forbidden("Record-Route not issued by this focus for this dialog")
        return conference_id

    def pass_in_dialog(
        self, conference_id: str, call_id: str, fingerprint: str, method: str
    ) -> tuple[str, str]:
        """ACK, BYE, INFO, UPDATE, OPTIONS from a recorded peer: the other side's hop.

        One script: the sender's *fingerprint* (flow and tags) must be one side's (403), the
        dialog answered (481); a BYE's release is in the same script. A refused call
        (``closing``) passes only its ACK and BYE. Returns the Request-URI and destination.
        """
        if method == "BYE":
            _, hop, released = self.store.dialogs.release_from(conference_id, call_id, fingerprint)
            self.finish_release(call_id, released)
            return hop
        _, hop, state = self.store.dialogs.sender(conference_id, call_id, fingerprint)
        if state == "closing" and method != "ACK":
            raise CallDoesNotExist("the conference call was refused: only its ACK and BYE pass")
        return hop

    def admit(self, conference_id: str, request: RequestView, method: str) -> Admitted:
        """The gate for a re-INVITE or REFER: the whole record and who sent it, or refused."""
        record = self.store.dialog(conference_id, request.call_id)
        if record is None or record.state != "up" or not record.peers:
            raise CallDoesNotExist("no such conference dialog")
        peers = DialogPeers.from_json(record.peers)
        direction = in_dialog_direction(peers, request.flow, request.from_tag, request.to_tag)
        if not in_dialog_method_allowed(direction, method):
            raise Forbidden(f"{method} is not sent by this side of a conference dialog")
        if not body_allowed(method, request.content_type, len(request.body)):
            raise NotAcceptable(f"an SDP body in {method}: media changes go by re-INVITE only")
        return Admitted(record, peers, direction)

    # -- re-INVITEs in a conference dialog and rekeying -------------------------------

    def rekey(self, conference_id: str, include: tuple[str, ...] = ()) -> int:
        """Mint the conference's next key epoch, store it wrapped, give it to the edge.

        Returns the new epoch's number.  A conference with KMS-mode legs gets
        the epoch from the KMS (DESIGN.md §1): a GTGK ticket whose recipients
        are the **current members** (plus *include*, e.g. a dial-out target),
        so a departed member cannot resolve it (:meth:`.KmsKeying.new_epoch`); an
        SDES-only conference from the local CSPRNG.  No leg switches here:
        each does when its re-INVITE's 2xx passes.  If the KMS refuses or does
        not answer, or the edge refuses the epoch, nothing is left behind
        (503, the epoch removed from Redis again).
        """
        info = self.store.get(conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        suite = SUITES.get(info.suite)
        if suite is None:
            raise NotAcceptable(f"conference suite {info.suite} unknown")
        ticket: bytes | None = None
        if info.kms_legs > 0 or include:
            group_epoch = self.kms_keying.new_epoch(conference_id, info.epoch + 1, include)
            master = group_epoch.srtp_master_key(8 * suite.key_length, 8 * suite.salt_length)
            key = GroupKey(group_epoch.epoch, suite, master.key, master.salt)
            ticket = group_epoch.to_bytes()
        else:
            key = GroupKey.generate(info.epoch + 1, suite, self.random_bytes)
        self.store.add_epoch(conference_id, key, ticket)
        try:
            self.edge.put_epoch(conference_id, key)
        except SecconfError:
            try:
                self.store.drop_epoch(conference_id, key.epoch)
            except SecconfError as exc:
                self.log("err", f"secconf: could not undo epoch {key.epoch}: {exc.message}")
            raise
        source = "the KMS" if ticket is not None else "the local CSPRNG"
        self.log(
            "info", f"secconf: conference {conference_id} rekeyed to epoch {key.epoch} ({source})"
        )
        return key.epoch

    # -- refusals -----------------------------------------------------------------

    def refusal(self, error: SecconfError, *, detailed: bool | None = None) -> Reply:
        """The SIP answer for *error*.

        A Warning (RFC 3261 §20.43) naming the reason only for an authenticated sender
        (*detailed*, default: ``error.detailed``, set by :meth:`_authenticated`); anyone else
        gets the status code alone (the reason is in the log).
        """
        status = error.status_code if 300 <= error.status_code < 700 else 500
        headers: list[tuple[str, str]] = []
        if detailed is None:
            detailed = error.detailed
        if status != 500 and detailed:
            headers.append(("Warning", warning_header(self.settings.server_name, error)))
        if status == 503:
            headers.append(("Retry-After", "1"))
        if isinstance(error, RateLimited):
            headers.append(("Retry-After", str(error.retry_after)))
        if isinstance(error, AuthenticationRequired) and self.settings.digest is not None:
            digest = self.settings.digest
            nonce = error.nonce
            for algorithm in digest.algorithms:
                headers.append(
                    (
                        "Proxy-Authenticate",
                        challenge(digest.realm, nonce, algorithm, stale=error.stale),
                    )
                )
        return Reply(status, error.reason, tuple(headers))
