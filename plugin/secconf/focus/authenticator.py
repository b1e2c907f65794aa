"""Who sent a request to the focus: an asserted identity, digest credentials, or a MIKEY ticket.

:class:`Authenticator` holds what proving a sender needs and nothing else: the
trusted sources and their asserted header (SDES mode), the digest users, nonce
secret and nonce-counts (RFC 3261 §22.3 / RFC 7616), and the KMS and replay cache
for a TRANSFER_INIT (KMS mode, RFC 6043 §4.2.2.2).  It writes nothing but the
nonce-count of proven credentials and, through :meth:`Authenticator.remember`,
a TRANSFER_INIT's replay-cache entry.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from secconf.core.digest import (
    NONCE_SALT_BYTES,
    check_nonce,
    flow_binding,
    make_nonce,
    nonce_count,
    parse_credentials,
    verify,
)
from secconf.core.errors import (
    Forbidden,
    MalformedMessage,
    NotAcceptable,
    ProtocolError,
    ReplayedMessage,
    SecconfError,
    TicketRejected,
)
from secconf.core.focus import authenticated_identity, is_trusted_source, normalize_identity
from secconf.core.mikey import TicketFlags
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.mikey.srtp import suite_for_policy
from secconf.kms.client import TicketResolver
from secconf.store.conferences import dialog_id
from secconf.store.nonces import DigestNonces
from secconf.store.replay import BlockingReplayCache
from secconf.store.sip_users import SipUserStore

from .kms_keying import KmsAuth
from .messages import RequestView
from .offers import decode_mikey_body
from .settings import Settings
from .state import Retransmission

__all__ = [
    "AuthenticationRequired",
    "Authenticator",
    "DigestChallenge",
    "digest_secret",
]


class AuthenticationRequired(ProtocolError):
    """No (usable, fresh) digest credentials: 407 with a new challenge (RFC 3261 §22.3).

    *nonce* is the new challenge's, minted for the request's Call-ID and flow
    (:meth:`Authenticator.digest_identity`).
    """

    status_code = 407
    reason = "Proxy Authentication Required"

    def __init__(self, message: str, *, nonce: str, stale: bool = False, call_id: str = "") -> None:
        super().__init__(message)
        self.nonce = nonce
        self.stale = stale
        self.call_id = call_id


class DigestChallenge(Protocol):
    """What :meth:`Authenticator.digest_identity` raises for a new challenge (407 or 401)."""

    def __call__(
        self, message: str, *, nonce: str, stale: bool = False, call_id: str = ""
    ) -> ProtocolError: ...


DIGEST_SECRET_LABEL = b"secconf digest nonce v1"


def digest_secret(kek: bytes) -> bytes:
    """The nonce HMAC secret of every worker and node: derived from the KEK, never stored."""
    return hmac.new(kek, DIGEST_SECRET_LABEL, hashlib.sha256).digest()


@dataclass
class Authenticator:
    """The focus's authentication of a sender (SDES: asserted or digest; KMS: the ticket)."""

    settings: Settings
    clock: Callable[[], float] = field(repr=False)
    random_bytes: Callable[[int], bytes] = field(repr=False)
    log: Callable[[str, str], None] = field(repr=False)
    sip_users: SipUserStore | None = None
    digest_key: bytes = field(default=b"", repr=False)
    nonces: DigestNonces | None = None  # digest nonce-counts (replays), shared in Redis
    kms: TicketResolver | None = None
    replay: BlockingReplayCache | None = None

    def identity(self, request: RequestView) -> str:
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

    def ticket(self, mikey: bytes, call_id: str, *, group_key: bool) -> KmsAuth:
        """TRANSFER_INIT read, checked early, resolved at the KMS and verified (RFC 6043 §4.2.2.2).

        The identity is the ticket's initiator (IDRi, equal to the ticket's
        initiator and proven by the MAC under MPKi), never a SIP header.
        *group_key*: the answer must deliver the group key, so the ticket must
        allow responder keys (M flag).  Nothing is written here; the replay
        cache is only read (:meth:`remember` writes once everything passed).
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
            if suite_for_policy(policy) not in self.settings.leg_suites:
                if len(self.settings.leg_suites) == 1:
                    raise NotAcceptable(
                        f"the conference's SRTP suite is {self.settings.suite.name}"
                    )
                names = ", ".join(suite.name for suite in self.settings.leg_suites)
                raise NotAcceptable(
                    f"the SRTP policy asks a suite this focus does not allow ({names})"
                )
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

    def mikey_request(self, request: RequestView) -> tuple[KmsAuth, str | None]:
        """A REFER's or SUBSCRIBE's ``application/mikey`` body: its TRANSFER_INIT, resolved.

        The sender's identity is the ticket's initiator (:meth:`ticket`); no key is
        delivered in the answer, so the ticket needs no M flag.  Call-ID "": a repeated
        TRANSFER_INIT outside an INVITE is always a replay (403).  Returns the
        authentication and the replay cache's key for its TRANSFER_INIT, for the one
        script that records the request to set (so that a refused request remembers
        nothing).
        """
        auth = self.ticket(decode_mikey_body(request.body), "", group_key=False)
        replay_key = None if self.replay is None else self.replay.key(auth.transfer.replay_token)
        return auth, replay_key

    @contextmanager
    def remember(self, auth: KmsAuth | None, call_id: str) -> Iterator[None]:
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
