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
which decides how its rekey re-INVITE is keyed (``a=crypto`` or a
TRANSFER_INIT from the focus, :meth:`FocusService.group_transfer_init`).
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
from dataclasses import dataclass, field, replace
from typing import Protocol

from secconf.core.digest import (
    NONCE_SALT_BYTES,
    challenge,
    check_nonce,
    flow_binding,
    make_nonce,
    nonce_count,
    parse_credentials,
    verify,
)
from secconf.core.errors import (
    CallDoesNotExist,
    Forbidden,
    MalformedMessage,
    MalformedMikey,
    MessageTooLarge,
    MikeyError,
    NotAcceptable,
    ProtocolError,
    RateLimited,
    ReplayedMessage,
    SecconfError,
    ServiceUnavailable,
    TicketRejected,
)
from secconf.core.focus import (
    ConferenceNotFound,
    OfferedStream,
    OfferMode,
    TargetKind,
    answer_to_participant,
    answer_to_participant_kms,
    answered_crypto,
    authenticated_identity,
    check_offer,
    check_offer_kms,
    classify_target,
    is_trusted_source,
    normalize_identity,
    offer_mode,
    offer_ssrcs,
    offer_to_upstream,
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
from secconf.core.keymgmt import mikey_message
from secconf.core.keys import GroupKey
from secconf.core.mikey import (
    GenericIdEntry,
    KeyData,
    KeyDataType,
    SpiValidity,
    SrtpSessionData,
    TicketFlags,
)
from secconf.core.mikey import group as mikey_group
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.mikey.srtp import policy_for_suite, suite_for_policy
from secconf.core.sdes import SUITES
from secconf.core.sdp import SessionDescription
from secconf.core.urilist import split_offer
from secconf.store.conferences import (
    ConferenceExists,
    ConferenceStore,
    DialogExists,
    DialogRecord,
    Released,
    dialog_id,
)
from secconf.store.errors import Conflict
from secconf.store.nonces import DigestNonces
from secconf.store.replay import BlockingReplayCache
from secconf.store.sip_users import SipUserStore

from .dialout import dialout_answered
from .edge_control import EdgeControl, LegAddresses, LegPlan, switch_at_answer
from .kms import TicketResolver
from .messages import Relay, Reply, ReplyView, RequestView
from .mixer_token import HEADER as MIXER_TOKEN_HEADER
from .mixer_token import token_header
from .peer_cache import NoPeerCache, PeerCache
from .settings import Settings
from .state import (
    CONFERENCE_HEADER,
    ON_FAILURE,
    ON_REPLY,
    Retransmission,
    TransactionState,
    dialog_edge_ssrc,
    dialog_media,
    media_remote,
    parse_dialog_media,
)
from .timing import PhaseTimer

__all__ = ["Admitted", "FocusService", "digest_secret", "route_secret"]

MIKEY_CONTENT_TYPE = "application/mikey"
#: The group key goes to KMS-mode participants as TEK+SALT, its SPI the epoch (4 bytes).
GROUP_KEY_TYPE = KeyDataType.TEK_SALT
#: Policy number of the conference's SRTP policy in our TRANSFER_RESP sessions.
POLICY_NO = 0


class AuthenticationRequired(ProtocolError):
    """No (usable, fresh) digest credentials: 407 with a new challenge (RFC 3261 §22.3).

    *nonce* is the new challenge's, minted for the request's Call-ID and flow
    (:meth:`FocusService.digest_identity`).
    """

    status_code = 407
    reason = "Proxy Authentication Required"

    def __init__(self, message: str, *, nonce: str, stale: bool = False, call_id: str = "") -> None:
        super().__init__(message)
        self.nonce = nonce
        self.stale = stale
        self.call_id = call_id


class DigestChallenge(Protocol):
    """What :meth:`FocusService.digest_identity` raises for a new challenge (407 or 401)."""

    def __call__(
        self, message: str, *, nonce: str, stale: bool = False, call_id: str = ""
    ) -> ProtocolError: ...


DIGEST_SECRET_LABEL = b"secconf digest nonce v1"


ROUTE_SECRET_LABEL = b"secconf record-route v1"


def route_secret(kek: bytes) -> bytes:
    """The Record-Route MAC secret of every worker and node: derived from the KEK, never stored."""
    return hmac.new(kek, ROUTE_SECRET_LABEL, hashlib.sha256).digest()


def digest_secret(kek: bytes) -> bytes:
    """The nonce HMAC secret of every worker and node: derived from the KEK, never stored."""
    return hmac.new(kek, DIGEST_SECRET_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class KmsAuth:
    """A TRANSFER_INIT verified through the KMS: who sent it, and what to answer it with."""

    identity: str
    transfer: mikey_ticket.TransferInit = field(repr=False)
    resolved: mikey_ticket.ResolvedTicket = field(repr=False)


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
        if request.content_length > limit or len(request.body) > limit:
            raise MessageTooLarge(f"body over {limit} bytes")
        if not request.body:
            raise NotAcceptable(
                "INVITE without an SDP offer (no late offer in a secure conference)"
            )
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

    def _identity(self, request: RequestView) -> str:
        """SDES mode: an asserted identity from a trusted source, else digest (if configured)."""
        asserted = request.headers.get(self.settings.asserted_header)
        trusted = is_trusted_source(request.flow, self.settings.trusted_sources) and asserted
        if not trusted and self.settings.digest is not None:
            return self.digest_identity(request)
        return authenticated_identity(request.flow, self.settings.trusted_sources, asserted)

    def digest_identity(
        self,
        request: RequestView,
        *,
        header: str = "Proxy-Authorization",
        challenge_with: DigestChallenge = AuthenticationRequired,
    ) -> str:
        """RFC 3261 §22.3 / RFC 7616: the user proven by *header*, or *challenge_with* / 403.

        A proxy reads ``Proxy-Authorization`` and challenges with 407
        (:class:`AuthenticationRequired`); the registrar reads ``Authorization``
        and challenges with 401 (``registrar.RegistrationRequired``).  The nonce
        is bound to the Call-ID and to the client's flow (source address, port,
        transport: a captured answer neither opens another dialog nor works from
        elsewhere: a new challenge) and lives ``nonce_lifetime`` seconds (a stale
        one gets a new challenge with ``stale=true``).  A wrong password or
        unknown user is 403 (the same answer: no user enumeration).  Last, once
        the response is proven, the nonce-count is recorded in Redis, atomically
        for every worker and node (:class:`~secconf.store.nonces.DigestNonces`):
        a count not above the last one accepted with that nonce is a replay, a
        new challenge with a fresh nonce (``stale`` false) and nothing else
        happens.  Credentials without ``qop`` (RFC 2069) are 400.  The identity
        is ``sip:<username>@<realm>``.
        """
        digest = self.settings.digest
        if digest is None or self.sip_users is None or self.nonces is None:
            raise Forbidden("identity not authenticated")
        binding = flow_binding(
            request.call_id, request.source_ip, request.source_port, request.transport
        )

        def again(message: str, *, stale: bool = False) -> ProtocolError:
            return self._digest_challenge(challenge_with, message, request, binding, stale=stale)

        value = request.headers.get(header)
        if not value:
            raise again("credentials required")
        credentials = parse_credentials(value)
        count = nonce_count(credentials.nc)
        if credentials.realm != digest.realm:
            raise again("credentials for another realm")
        if credentials.algorithm not in digest.algorithms:
            raise again(f"digest algorithm {credentials.algorithm} not accepted")
        freshness = check_nonce(
            self.digest_key, credentials.nonce, int(self.clock()), digest.nonce_lifetime, binding
        )
        if freshness == "stale":
            raise again("nonce stale", stale=True)
        if freshness != "ok":
            raise again("nonce not issued for this call and flow")
        if credentials.uri != request.ruri:
            raise Forbidden("digest uri is not the Request-URI")
        try:
            identity = normalize_identity(f"sip:{credentials.username}@{digest.realm}")
        except MalformedMessage:
            raise Forbidden("digest authentication failed") from None
        ha1 = self.sip_users.ha1(identity, credentials.algorithm, digest.realm)
        if ha1 is None or not verify(credentials, ha1, request.method):
            raise Forbidden("digest authentication failed")
        # RFC 7616 §3.4: "if the same nc value is seen twice, then the request is a replay";
        # §5.5: one-time use "effectively protects against replay attacks".
        if not self.nonces.use(credentials.nonce, count, digest.nonce_lifetime):
            raise again("nonce count replayed")
        return identity

    def _digest_challenge(
        self,
        challenge_with: DigestChallenge,
        message: str,
        request: RequestView,
        binding: str,
        *,
        stale: bool = False,
    ) -> ProtocolError:
        """*challenge_with* carrying a new nonce for *binding* (the request's Call-ID and flow)."""
        nonce = make_nonce(
            self.digest_key, int(self.clock()), binding, self.random_bytes(NONCE_SALT_BYTES)
        )
        return challenge_with(message, nonce=nonce, stale=stale, call_id=request.call_id)

    # -- KMS mode ---------------------------------------------------------------------

    def _kms_authenticate(self, mikey: bytes, call_id: str, *, group_key: bool) -> KmsAuth:
        """TRANSFER_INIT read, checked early, resolved at the KMS and verified (RFC 6043 §4.2.2.2).

        The identity is the ticket's initiator (IDRi, equal to the ticket's
        initiator and proven by the MAC under MPKi), never a SIP header.
        *group_key*: the answer must deliver the group key, so the ticket must
        allow responder keys (M flag).  Nothing is written here; the replay
        cache is only read (:meth:`_remember` writes once everything passed).
        A seen TRANSFER_INIT is a retransmission (dropped: tm answers) if the
        replay cache remembers it for this *call_id* (its hash is the entry's
        value, one key, any node), else a replay (403).
        """
        kms_settings = self.settings.kms
        if self.kms is None or self.replay is None or kms_settings is None:
            raise NotAcceptable("KMS mode is not configured on this focus")
        transfer = mikey_ticket.TransferInit.read(mikey)
        token = transfer.replay_token
        transfer.early_check(kms_settings.focus_identity, now=self.clock(), skew=kms_settings.skew)
        if transfer.responder is not None and transfer.responder != kms_settings.focus_identity:
            raise TicketRejected("TRANSFER_INIT is addressed to another responder")
        if group_key and TicketFlags.M not in transfer.ticket.flags:
            raise NotAcceptable(
                "the ticket does not let the focus deliver the group key (M flag unset)"
            )
        for policy in transfer.security_policies[:1]:
            if suite_for_policy(policy) != self.settings.suite:
                raise NotAcceptable(f"the conference's SRTP suite is {self.settings.suite.name}")
        holder = self.replay.holder(token)
        if holder is not None:
            if call_id and holder == dialog_id(call_id):
                raise Retransmission("TRANSFER_INIT of a recorded dialog")
            raise ReplayedMessage("TRANSFER_INIT replayed")
        resolved = self.kms.resolve(transfer)
        try:
            identity = normalize_identity(transfer.initiator)
        except MalformedMessage:
            raise Forbidden("the ticket's initiator is not a SIP identity") from None
        return KmsAuth(identity, transfer, resolved)

    @contextmanager
    def _remember(self, auth: KmsAuth | None, call_id: str) -> Iterator[None]:
        """Put the TRANSFER_INIT into the replay cache; forget it if the request is then refused.

        The entry's value is the hash of *call_id*, so a retransmission that
        slips past tm (on this or another node) is told from a replay.
        """
        if auth is None or self.replay is None or self.settings.kms is None:
            yield
            return
        token = auth.transfer.replay_token
        if not self.replay.remember(token, 2 * self.settings.kms.skew, holder=dialog_id(call_id)):
            raise ReplayedMessage("TRANSFER_INIT replayed")
        try:
            yield
        except BaseException:
            try:
                self.replay.forget(token)
            except SecconfError as exc:
                self.log("err", f"secconf: could not undo a replay-cache entry: {exc.message}")
            raise

    def _transfer_resp(self, auth: KmsAuth, key: GroupKey | None, edge_ssrc: int | None) -> bytes:
        """TRANSFER_RESP from the focus (RFC 6043 §4.2.2.3) delivering *key* in its KEMAC."""
        kms_settings = self.settings.kms
        if kms_settings is None:  # pragma: no cover - checked by _kms_authenticate
            raise NotAcceptable("KMS mode is not configured on this focus")
        sessions = list(auth.transfer.sessions)
        responder_keys: list[KeyData] = []
        if key is not None:
            used = {entry.cs_id for entry in sessions}
            cs_id = next(n for n in range(1, 256) if n not in used)
            policies = [POLICY_NO] if auth.transfer.security_policies else []
            sessions.append(
                GenericIdEntry.for_srtp(cs_id, policies, SrtpSessionData(edge_ssrc or 0, 0, 0))
            )
            responder_keys.append(
                KeyData(
                    GROUP_KEY_TYPE, key.key, key.salt, SpiValidity(key.epoch.to_bytes(4, "big"))
                )
            )
        data, _ = mikey_ticket.build_transfer_resp(
            auth.transfer,
            auth.resolved,
            responder=kms_settings.focus_identity,
            sessions=sessions,
            now=self.clock(),
            random_bytes=self.random_bytes,
            responder_keys=responder_keys,
        )
        return data

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
        if offer.mode is OfferMode.SDES:
            self.require_secure_transport(request.flow.secure, "an SDES offer")
        if offer.mode is OfferMode.KMS and offer.mikey is not None:
            auth = self._kms_authenticate(offer.mikey, request.call_id, group_key=True)
            return offer, auth.identity, auth
        return offer, self._identity(request), None

    @contextmanager
    def _holding(self, identity: str, request: RequestView) -> Iterator[None]:
        """One more conference created by *identity* (``[limits] dialogs_per_identity``).

        Creates are counted across conferences (``P:ident:{<hash>}``, one round trip at the
        create and one when the creator's dialog ends); joins are counted per conference
        inside the join script (the roster's count: no extra round trip).  A refusal is
        403 with Retry-After and writes nothing; a failed create gives its count back.
        """
        self.store.hold_dialog(
            identity, "factory", request.call_id, limit=self.settings.dialogs_per_identity
        )
        try:
            yield
        except Retransmission:
            raise
        except BaseException:
            self.store.drop_dialog(identity, "factory", request.call_id)
            raise

    def require_secure_transport(self, secure: bool, what: str) -> None:
        """SDES keys travel only over TLS (RFC 4568 §8.3); 488 otherwise (fail closed)."""
        if not secure and not self.settings.sdes_over_udp:
            raise NotAcceptable(f"{what} without TLS: SDES keys travel only over TLS")

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
        with self._remember(auth, request.call_id), self._holding(identity, request):
            for conference_id in self._conference_ids(request):
                leg = self.leg_id(conference_id, request.call_id)
                try:
                    self.store.create(
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
                    transfer_resp = self._answer_kms(auth, group_key, plan)
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
        with self._remember(auth, request.call_id):
            try:
                epoch = self.store.join(
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
                    transfer_resp = self._answer_kms(auth, key, plan)
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

    def _answer_kms(self, auth: KmsAuth, key: GroupKey, plan: LegPlan | None) -> str:
        data = self._transfer_resp(auth, key, None if plan is None else plan.ssrc)
        return base64.b64encode(data).decode("ascii")

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
            auth = self._kms_authenticate(decode_mikey_body(request.body), "", group_key=False)
            identity = auth.identity
            if self.replay is not None:
                replay_key = self.replay.key(auth.transfer.replay_token)
        elif request.body:
            raise NotAcceptable("a REFER to the focus carries no body, or application/mikey")
        else:
            identity = self._identity(request)
        if dialog_identity is not None and identity != dialog_identity:
            raise Forbidden("the REFER is not from the identity of its dialog")
        mode = "kms" if auth is not None else "sdes"
        kms_settings = self.settings.kms
        entry = self.store.refer(
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
        body = base64.b64encode(self._transfer_resp(auth, None, None))
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
            upstream = bytes(
                offer_to_upstream(
                    offer.description,
                    offer.streams,
                    address=None if plan is None else plan.internal.address,
                    ports=None if plan is None else plan.internal.ports,
                )
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
            return self._reinvite_answered(reply, state, request_body), ()
        if state.kind == "dialout":
            return dialout_answered(self, reply, state), ()
        if state.peer is None or reply.flow is None or not reply.to_tag:
            raise NotAcceptable("a 2xx without the dialog's peers: not recorded, not keyed")
        peers = DialogPeers(
            participant=state.peer, mixer=Peer(reply.to_tag, reply.flow, reply.contact)
        )
        answered = self.store.answered(
            state.conference_id,
            reply.call_id,
            media=dialog_media(state.streams, state.external, state.internal, state.edge_ssrc),
            epoch=state.epoch if state.mode == OfferMode.KMS.value else None,
            peers=peers,
        )
        self.peer_cache.remember(reply.call_id, peers)
        external = state.external
        epoch = answered.group_key.epoch
        if state.mode == OfferMode.KMS.value:
            if state.transfer_resp is None or state.epoch is None:
                raise NotAcceptable("KMS-mode dialog without its TRANSFER_RESP")
            # The epoch delivered in the TRANSFER_RESP (rekeys are not built yet: the same).
            epoch = state.epoch
            body = answer_to_participant_kms(
                reply.body,
                state.streams,
                base64.b64decode(state.transfer_resp),
                address=None if external is None else external.address,
                ports=None if external is None else external.ports,
            )
        else:
            with self._phase("rewrite"):
                body = answer_to_participant(
                    reply.body,
                    state.streams,
                    answered.group_key,
                    address=None if external is None else external.address,
                    ports=None if external is None else external.ports,
                )
        switch_at_answer(self.edge, state.leg, media_remote(reply.body, state.streams), epoch)
        headers = ((CONFERENCE_HEADER, f"<{state.conference_uri}>"),)
        return bytes(body), headers

    def unkeyed_answer(
        self, call_id: str, state_json: str | None, reply: ReplyView | None = None
    ) -> bytes:
        """The body replacing an answer that could not be keyed.

        An initial INVITE's dialog is released (roster, SSRCs, edge leg), and only its peers
        are kept (:meth:`~secconf.store.conferences.ConferenceStore.closing`) so that the
        ACK and BYE of the stream-less call still pass between its two sides; a re-INVITE's
        dialog is kept (its leg stays on the epoch it had) and the failure is reported.
        """
        state = None if state_json is None else TransactionState.from_json(state_json)
        if state is not None and state.kind == "reinvite":
            self._report_rekey_failure(call_id, state, 200, "answer could not be keyed")
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
            self.store.closing(state.conference_id, call_id, peers)
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
            self._report_rekey_failure(call_id, state, status, "re-INVITE refused")
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
            released = self.store.release(conference_id, call_id)
        except SecconfError as exc:
            self.log("err", f"secconf: release of a dialog failed: {exc.message}")
        self.finish_release(call_id, released, leg)

    def finish_release(
        self, call_id: str, released: Released | None, leg: str | None = None
    ) -> None:
        """After the store released a dialog: the creator's count, the edge leg, the end."""
        if released is not None and released.dialog.identity and released.dialog.creator:
            try:
                self.store.drop_dialog(released.dialog.identity, "factory", call_id)
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
            _, hop, released = self.store.release_from(conference_id, call_id, fingerprint)
            self.finish_release(call_id, released)
            return hop
        _, hop, state = self.store.sender(conference_id, call_id, fingerprint)
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

    def on_reinvite(
        self, request: RequestView, record: DialogRecord, *, from_participant: bool
    ) -> Relay:
        """A re-INVITE in a conference dialog: its offer rewritten, never relayed clear.

        From the mixer (the rekey trigger, DESIGN.md §2): the offer goes to the
        participant on its SRTP profile, pointed at the edge, with ``a=crypto``
        under the tag of the original negotiation carrying the conference's
        **current** epoch's group key (a newer one than the leg's makes it a
        rekey; otherwise the leg's key again).  From the participant (hold, a
        new sending key): its offer is checked like a join's and goes to the
        mixer clear, via the edge's internal leg; the mixer's answer is keyed
        with the current epoch.  In both cases the edge switches the leg at
        the 2xx (:meth:`_reinvite_answered`).  A KMS-mode leg (the dialog
        record's mode) from the mixer: :meth:`_kms_reinvite`.  Nothing is
        written here.
        """
        downstream = from_participant  # the gate decided it from the recorded peers
        if record.state != "up" or not record.media:
            raise NotAcceptable("re-INVITE before the dialog was answered")
        info = self.store.get(record.conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        leg_mode = record.mode or info.mode
        if leg_mode == OfferMode.KMS.value and downstream:
            raise NotAcceptable("a participant's re-INVITE in a KMS-mode dialog is not supported")
        limit = self.settings.max_body
        if request.content_length > limit or len(request.body) > limit:
            raise MessageTooLarge(f"body over {limit} bytes")
        if not request.body:
            raise NotAcceptable(
                "re-INVITE without an SDP offer (no late offer in a secure conference)"
            )
        content_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if content_type != "application/sdp":
            raise NotAcceptable("only application/sdp bodies are accepted")
        streams, external, internal = parse_dialog_media(record.media)
        if leg_mode == OfferMode.KMS.value:
            return self._kms_reinvite(request, record, info.epoch, streams, external, internal)
        key = self.store.group_key(record.conference_id)
        base = TransactionState(
            record.conference_id,
            record.leg,
            streams,
            external,
            self.settings.conference_uri(record.conference_id),
            False,
            mode=leg_mode,
            epoch=key.epoch,
            internal=internal,
            kind="reinvite",
            previous=record.epoch,
            identity=record.identity,
        )
        if downstream:
            description, offered = check_offer(request.body, self.settings.suite)
            if [s.index for s in offered] != [s.index for s in streams]:
                raise NotAcceptable("a re-INVITE keeps the conference's streams")
            body = offer_to_upstream(
                description,
                offered,
                address=None if internal is None else internal.address,
                ports=None if internal is None else internal.ports,
            )
            state = replace(
                base, streams=offered, sections=offered_sections(description), downstream=True
            )
        else:
            description = SessionDescription.parse(request.body)
            body = answer_to_participant(
                request.body,
                streams,
                key,
                address=None if external is None else external.address,
                ports=None if external is None else external.ports,
            )
            state = replace(
                base,
                sections=offered_sections(description),
                remote=media_remote(request.body, streams),
            )
        if key.epoch != record.epoch:
            self.log(
                "info",
                f"secconf: rekey re-INVITE for {record.identity} in {record.conference_id}: "
                f"epoch {record.epoch} -> {key.epoch}",
            )
        return Relay(
            body=bytes(body),
            state=state.to_json(),
            record_route=False,
            on_reply=ON_REPLY,
            on_failure=ON_FAILURE,
        )

    def _kms_reinvite(
        self,
        request: RequestView,
        record: DialogRecord,
        epoch: int,
        streams: tuple[OfferedStream, ...],
        external: LegAddresses | None,
        internal: LegAddresses | None,
    ) -> Relay:
        """The mixer's rekey re-INVITE towards a KMS-mode leg: the focus is the MIKEY initiator.

        RFC 4567 §3: the offerer carries the key-management data, so the offer
        to the participant gets ``a=key-mgmt:mikey`` with a TRANSFER_INIT the
        focus builds with the current epoch's GTGK ticket (RFC 6043 §4.2.2.1,
        :meth:`group_transfer_init`); the participant resolves it at the KMS and
        answers with a TRANSFER_RESP, verified at its 2xx.  Refused (488, no
        state change): the leg is already on the current epoch (nothing to
        carry), or that epoch was not minted by the KMS.  The participant's
        identity not a recipient of the epoch's ticket (it joined after the
        ticket was issued): 403 and reported on ``P:conf:{<id>}:rekey-failed``.
        """
        if record.epoch is not None and epoch <= record.epoch:
            raise NotAcceptable("the KMS-mode leg is already on the current key epoch")
        body_offer = SessionDescription.parse(request.body)
        edge_ssrc = dialog_edge_ssrc(record.media)
        ssrcs = [*record.ssrcs, *(() if edge_ssrc is None else (edge_ssrc,))]
        base = TransactionState(
            record.conference_id,
            record.leg,
            streams,
            external,
            self.settings.conference_uri(record.conference_id),
            False,
            sections=offered_sections(body_offer),
            mode=OfferMode.KMS.value,
            epoch=epoch,
            internal=internal,
            kind="reinvite",
            previous=record.epoch,
            remote=media_remote(request.body, streams),
            identity=record.identity,
            edge_ssrc=edge_ssrc,
        )
        try:
            pending = self.group_transfer_init(
                record.conference_id, record.identity, ssrcs, epoch=epoch
            )
        except TicketRejected as exc:
            self._report_rekey_failure(request.call_id, base, 403, exc.message)
            raise
        body = answer_to_participant_kms(
            request.body,
            streams,
            pending.data,
            address=None if external is None else external.address,
            ports=None if external is None else external.ports,
        )
        state = replace(base, transfer_init=base64.b64encode(pending.data).decode("ascii"))
        self.log(
            "info",
            f"secconf: KMS rekey re-INVITE for {record.identity} in {record.conference_id}: "
            f"epoch {record.epoch} -> {epoch}",
        )
        return Relay(
            body=bytes(body),
            state=state.to_json(),
            record_route=False,
            on_reply=ON_REPLY,
            on_failure=ON_FAILURE,
        )

    def group_transfer_init(
        self,
        conference_id: str,
        identity: str,
        ssrcs: list[int] | tuple[int, ...],
        *,
        epoch: int | None = None,
    ) -> mikey_ticket.PendingTransfer:
        """A TRANSFER_INIT from the focus to *identity* carrying the conference's current epoch.

        The reusable builder for every INVITE the focus keys in KMS mode (rekey
        re-INVITEs here; dial-out, RFC 6043 §4.2.2.1 with the focus as
        Initiator): the epoch's GTGK ticket (stored wrapped under the KEK by
        :meth:`rekey`), its fixed CSB ID and RANDRi, IDRi = ``kms.focus_identity``,
        IDRr = *identity*, one GENERIC-ID entry per SSRC in *ssrcs* (the
        participant's and the edge's; SPI = the epoch number) and the
        conference's SRTP policy.  Keep the returned ``PendingTransfer`` (or its
        ``data``: :meth:`verify_group_transfer_resp` rebuilds it) to verify the
        TRANSFER_RESP.  *epoch* defaults to the current one.

        Raises ``NotAcceptable`` (488) when KMS mode is off or the epoch was not
        minted by the KMS (epoch 1, or an SDES-only conference: rekey first,
        e.g. ``rekey(conference_id, include=(identity,))`` for a dial-out target),
        ``TicketRejected`` (403) when *identity* is not a recipient of the
        epoch's ticket, ``ConferenceNotFound`` (404).
        """
        kms_settings = self.settings.kms
        if kms_settings is None:
            raise NotAcceptable("KMS mode is not configured on this focus")
        if epoch is None:
            info = self.store.get(conference_id)
            if info is None or info.state != "active":
                raise ConferenceNotFound("no such conference")
            epoch = info.epoch
        group_epoch = self._group_epoch(conference_id, epoch)
        return mikey_group.build_group_transfer_init(
            group_epoch,
            initiator=kms_settings.focus_identity,
            responder=identity,
            ssrcs=ssrcs,
            policies=[policy_for_suite(POLICY_NO, self.settings.suite)],
            now=self.clock(),
            random_bytes=self.random_bytes,
        )

    def _group_epoch(self, conference_id: str, epoch: int) -> mikey_group.GroupEpochTicket:
        stored = self.store.epoch_ticket(conference_id, epoch)
        if stored is None:
            raise NotAcceptable(f"key epoch {epoch} was not minted by the KMS")
        return mikey_group.GroupEpochTicket.from_bytes(stored)

    def verify_group_transfer_resp(
        self,
        conference_id: str,
        epoch: int,
        identity: str,
        transfer_init: bytes,
        transfer_resp: bytes,
    ) -> mikey_ticket.TransferResult:
        """Verify *identity*'s TRANSFER_RESP to the focus's *transfer_init* of *epoch*.

        RFC 6043 §4.2.2.4: the MAC under the responder's forked MPKr', the
        timestamp, the responder among the ticket's recipients; it must also be
        the identity the TRANSFER_INIT was addressed to.  Raises a
        ``MikeyError`` (403/400) when it does not verify.
        """
        kms_settings = self.settings.kms
        if kms_settings is None:
            raise NotAcceptable("KMS mode is not configured on this focus")
        group_epoch = self._group_epoch(conference_id, epoch)
        pending = mikey_ticket.PendingTransfer(
            transfer_init,
            group_epoch.csb_id,
            group_epoch.randri,
            kms_settings.focus_identity,
            identity,
            group_epoch.issued(),
        )
        result = mikey_ticket.process_transfer_resp(
            pending, transfer_resp, now=self.clock(), skew=kms_settings.skew
        )
        if result.responder != identity:
            raise TicketRejected("the TRANSFER_RESP is from another identity than the dialog's")
        return result

    def _kms_reinvite_answered(self, reply: ReplyView, state: TransactionState) -> bytes:
        """The participant's 2xx to a KMS rekey re-INVITE: TRANSFER_RESP verified, leg switched.

        The edge's leg switches its outbound key and (KMS legs receive under the
        group key) its inbound epochs to the new epoch right now; the old epoch
        stays acceptable inbound for the edge's grace window.  Raises when the
        answer does not verify (the caller reports it and the mixer gets an
        answer rejecting every stream; the leg stays on its old epoch).
        """
        if state.epoch is None or state.transfer_init is None:
            raise NotAcceptable("KMS re-INVITE state without its epoch")
        answer = SessionDescription.parse(reply.body)
        if not state.streams:
            raise NotAcceptable("no stream to key")
        section = answer.media[state.streams[0].index] if len(answer.media) > 0 else None
        if section is None or section.port == 0:
            raise NotAcceptable("the participant rejected the stream")
        try:
            transfer_resp = mikey_message(answer, section)
        except SecconfError:
            raise NotAcceptable("the participant's answer carries no TRANSFER_RESP") from None
        self.verify_group_transfer_resp(
            state.conference_id,
            state.epoch,
            state.identity,
            base64.b64decode(state.transfer_init),
            transfer_resp,
        )
        internal = state.internal
        body = offer_to_upstream(
            answer,
            state.streams,
            address=None if internal is None else internal.address,
            ports=None if internal is None else internal.ports,
        )
        switch_at_answer(self.edge, state.leg, state.remote, state.epoch)
        self.store.switched(state.conference_id, reply.call_id, state.epoch)
        return bytes(body)

    def _reinvite_answered(
        self, reply: ReplyView, state: TransactionState, request_body: Callable[[], bytes]
    ) -> bytes:
        """The 2xx of a re-INVITE: the answer rewritten, the edge leg switched to its epoch.

        The edge switches the leg's outbound key exactly now (linphone switches
        its receive key when it sends this 200 OK); the participant's sending
        key from its answer (or its offer: *request_body* reads the transaction's
        request, ``$T_req($rb)``) goes to the edge, which keeps trying the
        old one for its grace window.  Raises when the answer cannot be used
        (the caller then sends a body rejecting every stream and reports it).
        """
        if state.mode == OfferMode.KMS.value:
            return self._kms_reinvite_answered(reply, state)
        if state.epoch is None:
            raise NotAcceptable("re-INVITE state without its epoch")
        internal, external = state.internal, state.external
        if state.downstream:
            offered_body = request_body()
            offer = SessionDescription.parse(offered_body) if offered_body else None
            key = self.store.group_key(state.conference_id, state.epoch)
            body = answer_to_participant(
                reply.body,
                state.streams,
                key,
                address=None if external is None else external.address,
                ports=None if external is None else external.ports,
            )
            crypto = (
                [str(offered_crypto(offer, s)) for s in state.streams] if offer is not None else []
            )
            remote = media_remote(reply.body, state.streams)
        else:
            answer = SessionDescription.parse(reply.body)
            crypto = [str(c) for c in answered_crypto(answer, state.streams, self.settings.suite)]
            body = offer_to_upstream(
                answer,
                state.streams,
                address=None if internal is None else internal.address,
                ports=None if internal is None else internal.ports,
            )
            remote = state.remote
        if crypto:
            self.edge.set_participant_key(state.leg, crypto[0])
        switch_at_answer(self.edge, state.leg, remote, state.epoch)
        self.store.switched(state.conference_id, reply.call_id, state.epoch)
        return bytes(body)

    def _report_rekey_failure(
        self, call_id: str, state: TransactionState, status: int, what: str
    ) -> None:
        """A re-INVITE carrying a newer epoch failed: the leg keeps its old one; tell the watcher."""
        if state.epoch is None or state.previous is None or state.epoch <= state.previous:
            return
        self.log(
            "warn",
            f"secconf: rekey of {state.identity} in {state.conference_id} to epoch "
            f"{state.epoch} failed ({status} {what}); the leg stays on epoch {state.previous}",
        )
        try:
            self.store.rekey_failed(
                state.conference_id,
                (
                    ("leg", state.leg),
                    ("identity", state.identity),
                    ("call_id", call_id[:256]),
                    ("status", str(status)),
                    ("reason", what),
                    ("epoch", str(state.epoch)),
                    ("leg_epoch", str(state.previous)),
                    ("direction", "participant" if state.downstream else "mixer"),
                    ("time", repr(float(self.clock()))),
                ),
            )
        except SecconfError as exc:
            self.log("err", f"secconf: could not report a failed rekey: {exc.message}")

    def rekey(self, conference_id: str, include: tuple[str, ...] = ()) -> int:
        """Mint the conference's next key epoch, store it wrapped, give it to the edge.

        Returns the new epoch's number.  A conference with KMS-mode legs gets
        the epoch from the KMS (DESIGN.md §1): a GTGK ticket whose recipients
        are the **current members** (plus *include*, e.g. a dial-out target),
        so a departed member cannot resolve it (:meth:`_kms_epoch`); an
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
            group_epoch = self._kms_epoch(conference_id, info.epoch + 1, include)
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

    def dialout_epoch(self, conference_id: str, identity: str) -> int:
        """The epoch a KMS-mode dial-out to *identity* is keyed with (minted if need be).

        RFC 6043 §4.2.2.1: the focus's TRANSFER_INIT carries the epoch's GTGK
        ticket, so *identity* must be one of its recipients.  The current epoch
        is used when it came from the KMS, its ticket names *identity* (a
        replacement call of a member, or someone named when it was minted) and
        stays valid for at least ``2 * kms.skew`` more seconds; otherwise a new
        epoch is minted from the KMS naming the current members and *identity*
        (:meth:`rekey` with ``include``: Redis and the edge).  The other members
        stay on their epoch until their next re-INVITE (the edge keys each leg
        under its own epoch).  A concurrent rekey that took the epoch number
        first (409) is retried once on top of it.  KMS down or refusing: 503,
        nothing written (:meth:`rekey`).
        """
        try:
            return self._dialout_epoch(conference_id, identity)
        except Conflict:  # a rekey took the next number meanwhile: once more, on top of it
            return self._dialout_epoch(conference_id, identity)

    def _dialout_epoch(self, conference_id: str, identity: str) -> int:
        kms_settings = self.settings.kms
        if kms_settings is None:
            raise NotAcceptable("KMS mode is not configured on this focus")
        info = self.store.get(conference_id)
        if info is None or info.state != "active":
            raise ConferenceNotFound("no such conference")
        stored = self.store.epoch_ticket(conference_id, info.epoch)
        if stored is not None:
            current = mikey_group.GroupEpochTicket.from_bytes(stored)
            until = current.valid_until
            fresh = until is None or until > self.clock() + 2 * kms_settings.skew
            if identity in current.recipients and fresh:
                return info.epoch
        return self.rekey(conference_id, include=(identity,))

    def _kms_epoch(
        self, conference_id: str, epoch: int, include: tuple[str, ...]
    ) -> mikey_group.GroupEpochTicket:
        """REQUEST_INIT for a GTGK ticket naming the current members (RFC 6043 §4.2.1, §5.1.1).

        The members are read from Redis now: whoever left is not named, so the
        KMS will not resolve this epoch's ticket for them (forward security).
        """
        kms_settings = self.settings.kms
        if self.kms is None or kms_settings is None:
            raise ServiceUnavailable("a conference with KMS legs needs the KMS to rekey")
        recipients = sorted(set(self.store.members(conference_id)) | set(include))
        if not recipients:
            raise ConferenceNotFound("the conference has no members to key")
        desired = mikey_group.group_ticket_policy(
            recipients, valid_until=self.clock() + kms_settings.epoch_ticket_lifetime
        )
        issued = self.kms.request_ticket(desired)
        if set(issued.policy.recipients) != set(recipients):
            raise TicketRejected("the KMS granted a group ticket for other recipients")
        return mikey_group.new_group_epoch(issued, epoch, self.random_bytes)

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
